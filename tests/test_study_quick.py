"""End to end: the runner executes the whole study on the `quick` profile and builds the book.

This is what `make book PROFILE=quick` does. It runs in the project (generated data under data/,
executed notebooks under book/generated/, HTML under _build/), so a second run of the suite
reuses everything the first one made. The build itself is the session fixture ``quick_book``
(tests/conftest.py), which tests/test_browser.py opens in Chromium.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dfrobust.study import runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_study_builds_the_book_with_figures_and_glued_numbers(quick_book):
    s, results, index = quick_book
    assert index == ROOT / "_build" / "html" / "index.html" and index.is_file()
    html_dir = index.parent
    for nb in s.notebooks:
        page = html_dir / "book" / "generated" / f"{nb.name}.html"
        assert page.is_file(), f"chapter {nb.name} missing from the book"
        html = page.read_text()
        assert re.search(r"<img [^>]*src=\"[^\"]+\.png\"", html), f"{nb.name}: no figure in the page"
        assert "Figure size" not in html, f"{nb.name}: a figure was pasted as text (no image formatter)"
        assert html.count("<img") == html.count("<figcaption>"), \
            f"{nb.name}: every image must be a captioned figure, shown once"
        assert "Traceback (most recent call last)" not in html, f"{nb.name}: an error was rendered"
        leaked = re.findall(r"np\.(?:float|int|bool|str)\w*\(", html)
        assert not leaked, f"{nb.name}: a glued value shows its numpy repr ({leaked[0]}...); glue plain Python values"
    # the landing page pastes numbers glued by the chapters: no unresolved glue, at least one number
    intro = (html_dir / "book" / "intro.html").read_text()  # index.html redirects to the root page
    assert "{glue" not in intro
    spans = re.findall(r'class="pasted-text"[^>]*>([^<]+)<', intro)
    assert spans and all(sp.strip() for sp in spans), "the landing page pastes nothing, or empty values"
    numbers = [sp for sp in spans if re.fullmatch(r"-?\d+(\.\d+)?", sp.strip())]
    assert numbers, f"the landing page shows no glued number: {spans}"
    # "what this build can decide" for the whole book: every chapter's table pasted, with verdict words
    section = intro[intro.index('id="what-this-build-can-decide"'):intro.index('id="how-the-book-is-organised"')]
    n_tables = section.count("<table")
    assert n_tables >= 6, f"the landing page pastes {n_tables} decide tables; expected one per chapter"
    assert re.search(r">\s*(holds|refuted|inconclusive)\s*<", section), "no verdict in the landing page's tables"


@pytest.mark.slow
def test_second_run_reexecutes_nothing(quick_book):
    s, _, _ = quick_book
    again = runner.run_study("quick", study=s, log=lambda m: None)
    assert [r.executed for r in again] == [False] * len(s.notebooks)
    for nb in s.notebooks:
        stamp = json.loads((ROOT / "book" / "generated" / f"{nb.name}.run.json").read_text())
        assert stamp["params"]["profile"] == "quick"


@pytest.mark.slow
def test_dfrobust_sweep_plans_the_chapters_own_cells(quick_book):
    """`dfrobust sweep` sets up and plans through the chapter's own functions: after the quick book it
    finds every shard chapter 03 wrote, computes none, and merges exactly the chapter's records.
    (The CLI once planned with parameter names the chapter no longer had and could not run at all.)"""
    import shutil
    import subprocess
    import sys

    import numpy as np

    from dfrobust.core import results

    path = ROOT / "data" / "results" / "quick" / "rr_records.nc"
    chapter = results.load(path)
    keep = path.with_suffix(".chapter.nc")
    shutil.copy2(path, keep)
    try:
        out = subprocess.run([sys.executable, "-m", "dfrobust.study.cli", "sweep", "--profile", "quick"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        shards = -(-chapter.sizes["sample"] // results.parameters(chapter)["shard_size"])
        n = chapter.sizes["model"] * (chapter.sizes["attack"] - ("worst" in chapter.attack.values)) * shards
        assert re.search(rf"\b{n} cells: 0 computed, {n} already there, 0 failed", out.stderr), out.stderr[-2000:]
        swept = results.load(path)
        assert swept.attrs["engine"] == "dfrobust sweep"
        assert list(swept.data_vars) == list(chapter.data_vars)
        for v in chapter.data_vars:
            np.testing.assert_array_equal(swept[v].values, chapter[v].values, err_msg=v)
    finally:
        shutil.move(keep, path)  # the chapter's own file (and provenance) back
