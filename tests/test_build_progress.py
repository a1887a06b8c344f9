"""A build that shows progress (issue 22.5): per chapter, cells done / total and elapsed, with the previous
run's time as the estimate; the kernel's own output (dask's shutdown messages, transport warnings) goes to a
log file beside the executed notebook, never to the terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import yaml

NOISE = ("Worker process still alive after 4.0 seconds, killing", "WARNING: kernel transport tcp noise")


def _project(tmp_path):
    """A one-notebook project: three code cells; the kernel writes dask-like noise to its stderr (now and at exit)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile: str = "quick"  # study profile\nn: int = 2  # how many')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny"), params,
                nbformat.v4.new_code_cell(f"import atexit, os\nos.write(2, b'{NOISE[0]}\\n')\n"
                                          f"atexit.register(os.write, 2, b'{NOISE[1]}\\n')"),
                nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("x = n * 2"), nbformat.v4.new_code_cell("")]
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "tiny.ipynb")
    (tmp_path / "notebooks" / "study.yml").write_text(yaml.safe_dump(
        {"profiles": {"quick": "q"}, "notebooks": [{"name": "tiny", "template": "notebooks/tiny.ipynb"}]}))
    env = {**os.environ, "DFROBUST_HOME": str(tmp_path), "DFROBUST_DATA_HOME": str(tmp_path / "data")}
    return env


def _run(env, *extra):
    out = subprocess.run([sys.executable, "-m", "dfrobust.study.cli", "run", "tiny", "--profile", "quick", *extra],
                         capture_output=True, text=True, env=env, cwd=env["DFROBUST_HOME"], timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_a_run_prints_cells_done_elapsed_and_the_last_runs_time_but_not_the_kernels_noise(tmp_path):
    env = _project(tmp_path)
    first = _run(env)
    # papermill injects the parameters cell: 4 code cells run (the empty one is skipped)
    lines = re.findall(r"^\[cell\] tiny: cell (\d)/(\d), \d+ s \((.*)\)$", first, re.M)
    assert [(d, t) for d, t, _ in lines] == [("0", "4"), ("1", "4"), ("2", "4"), ("3", "4"), ("4", "4")], first
    assert all(note == "no previous run" for *_, note in lines)
    log = (tmp_path / "book" / "generated" / "tiny.kernel.log").read_text()
    for noise in NOISE:
        assert noise not in first, f"the kernel's output reached the terminal: {noise!r}"
        assert noise in log, f"the kernel's output is not in its log: {noise!r}"
    wall = __import__("json").loads((tmp_path / "book" / "generated" / "tiny.run.json").read_text())["wall_s"]

    second = _run(env, "--force")
    notes = re.findall(r"^\[cell\] tiny: cell \d/4, \d+ s \(last run (\d+) s\)$", second, re.M)
    assert len(notes) == 5 and {int(n) for n in notes} == {round(wall)}, second
    assert not any(noise in second for noise in NOISE)
