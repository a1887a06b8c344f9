"""Shared fixtures. Tests never write into the project's data/: generated data goes to tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """Point generated content (synthetic data, checkpoints, results) at a temporary folder."""
    home = tmp_path / "data_home"
    home.mkdir()
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(home))
    return home


@pytest.fixture
def realdata():
    """../shared/realdata beside the project root, or skip with the reason."""
    p = ROOT.parent / "shared" / "realdata"
    if not p.is_dir():
        pytest.skip(f"real validation samples not present at {p} (they are not part of the repository)")
    return p


@pytest.fixture(scope="session")
def quick_book():
    """The whole study run on the ``quick`` profile and the book built from it, once per session.

    It runs in the project (data/, book/generated/, _build/), like ``make book PROFILE=quick``;
    tests/test_study_quick.py checks the pages' content and tests/test_browser.py opens them in Chromium.
    """
    from dfrobust import runner, study

    s = study.load_study()
    results = runner.run_study("quick", study=s)
    index = runner.build_book(ROOT)
    return s, results, index
