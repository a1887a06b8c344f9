"""Shared fixtures. Tests never write into the project's data/: generated data goes to tmp."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

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


@pytest.fixture
def mini_study():
    """A factory of one-notebook studies: ``mini_study(tmp_path, body="...", extra_params="...")``."""
    from dfrobust import study

    def make(tmp_path: Path, body: str = "", extra_params: str = "") -> "study.Study":
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        p = nbformat.v4.new_code_cell(
            'profile: str = "quick"  # study profile\n'
            "n: int = 2  # how many\n"
            "scale: float = 1.0  # a factor\n"
            f'marker: str = ""  # file to touch when executed\n{extra_params}')
        p.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell("# Mini"), p,
                    nbformat.v4.new_code_cell("import pathlib\nif marker: pathlib.Path(marker).write_text(str(n * scale))\n"
                                              + body)]
        tpl = tmp_path / "mini.ipynb"
        nbformat.write(nb, tpl)
        spec = tmp_path / "study.yml"
        spec.write_text(yaml.safe_dump({"profiles": {"quick": "q", "default": "d"},
                                        "notebooks": [{"name": "mini", "template": str(tpl),
                                                       "params": {"default": {"n": 5}}}]}, sort_keys=False))
        return study.load_study(spec)

    return make


@pytest.fixture(scope="session")
def quick_book():
    """The whole study run on the ``quick`` profile and the book built from it, once per session.

    It runs in the project (data/, book/generated/, _build/), like ``make book PROFILE=quick``;
    tests/test_study_quick.py checks the pages' content and tests/test_browser.py opens them in Chromium.
    """
    from dfrobust import study
    from dfrobust.study import runner

    s = study.load_study()
    results = runner.run_study("quick", study=s)
    index = runner.build_book(ROOT)
    return s, results, index
