"""Faults and stale state: the runner's cache verifies what it trusts, results land as one unit,
notices reach the terminal, and one run per data home and profile at a time."""

from __future__ import annotations

import threading
import time

import pytest

from dfrobust import study
from dfrobust.core import results
from dfrobust.study import runner

WRITE = ("import xarray as xr\nfrom dfrobust.core import paths, results\n"
         "results.save(xr.Dataset({'v': ((), n * scale)}), paths.results_dir(profile) / 'mini.nc')\n")


def _run(s, tmp_path, log=None, **overrides):
    lines = [] if log is None else log
    runner.run_study("quick", study=s, only=["mini"], overrides=overrides, out_dir=tmp_path / "out",
                     log=lines.append)
    return lines


def _last(lines):
    return [l for l in lines if l.startswith(("[run ]", "[skip]"))][-1]


def test_the_cache_reruns_when_an_output_or_the_page_is_missing_or_damaged(tmp_path, data_home, mini_study):
    s = mini_study(tmp_path, body=WRITE)
    nc = data_home / "results" / "quick" / "mini.nc"
    assert _last(_run(s, tmp_path)).startswith("[run ]") and nc.is_file()
    assert _last(_run(s, tmp_path)).startswith("[skip]")
    nc.unlink()
    assert "output mini.nc is missing" in _last(_run(s, tmp_path))
    nc.write_bytes(nc.read_bytes()[:100])  # truncated
    assert "output mini.nc changed" in _last(_run(s, tmp_path))
    assert float(results.load(nc)["v"]) == 2.0  # the re-run rewrote a readable file
    page = tmp_path / "out" / "mini.ipynb"
    page.write_text(page.read_text()[:50])
    assert "unreadable" in _last(_run(s, tmp_path))


def test_the_cache_reruns_when_the_data_home_changes(tmp_path, data_home, mini_study, monkeypatch):
    s = mini_study(tmp_path, body=WRITE)
    _run(s, tmp_path)
    other = tmp_path / "empty_home"
    other.mkdir()
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(other))
    assert "data_home changed" in _last(_run(s, tmp_path))
    assert (other / "results" / "quick" / "mini.nc").is_file()


def test_a_failing_notebook_keeps_the_previous_complete_results(tmp_path, data_home, mini_study):
    s = mini_study(tmp_path, body=WRITE + "if n == 7:\n    raise RuntimeError('boom after writing')\n")
    _run(s, tmp_path)
    with pytest.raises(runner.NotebookFailed, match="previous results and page are kept"):
        _run(s, tmp_path, n=7)
    assert float(results.load(data_home / "results" / "quick" / "mini.nc")["v"]) == 2.0
    assert not list((data_home / "results").glob(".stage-*")), "the staging folder is cleaned up"


def test_notices_printed_by_a_notebook_reach_the_log(tmp_path, data_home, mini_study):
    s = mini_study(tmp_path, body="print('NOTICE: falling back to synthetic data')\n"
                                  "import sys; print('3 unreadable files skipped', file=sys.stderr)\n")
    lines = _run(s, tmp_path)
    assert "[note] mini: NOTICE: falling back to synthetic data" in lines
    assert "[note] mini: 3 unreadable files skipped" in lines


def test_profile_as_a_parameter_is_refused_before_anything_runs(tmp_path, data_home, mini_study):
    s = mini_study(tmp_path)
    marker = tmp_path / "ran.txt"
    with pytest.raises(study.StudyError, match="set the profile with --profile"):
        _run(s, tmp_path, profile="default", marker=str(marker))
    assert not marker.exists()


def test_yaml_style_exponents_are_read_as_floats():
    assert study.parse_override("eps_max=1e-3") == ("eps_max", 0.001)
    assert study.parse_override("c=-2.5E+2") == ("c", -250.0)
    assert study.parse_override("name=e5") == ("name", "e5")


def test_a_second_run_of_the_same_profile_waits_for_the_first(data_home):
    held = threading.Event()
    release = threading.Event()

    def first():
        with runner.study_lock("quick", log=lambda m: None):
            held.set()
            release.wait(5)

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    lines = []
    threading.Timer(0.3, release.set).start()
    t0 = time.perf_counter()
    with runner.study_lock("quick", log=lines.append):
        waited = time.perf_counter() - t0
    t.join()
    assert lines and lines[0].startswith("[wait] another run of profile 'quick'") and waited > 0.2
