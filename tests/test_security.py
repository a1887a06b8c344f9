"""Security (issue 27): what a user types never becomes a line of a shell script or markup on a page.

* SLURM options land in a job script (``#SBATCH`` lines, the worker's command line): each is matched
  whole against a strict pattern, so a newline, ``;`` or ``$(...)`` is a one-line error naming it.
* Parameters are shown on the chapter's page (the re-run box's "Parameters used" table and command):
  a value holding a newline and HTML stays one table row, its markup shown as text, never interpreted.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import nbformat
import pytest
from typer.testing import CliRunner

from dfrobust import study
from dfrobust.study import pages, sweep

ROOT = Path(__file__).resolve().parents[1]
INJECTIONS = ["gpu\nrm -rf ~", "gpu;rm -rf ~", "gpu $(rm -rf ~)", "gpu`id`", "gpu\r\n#SBATCH --uid=0"]


# ----------------------------------------------------------------------------- SLURM job scripts
@pytest.mark.parametrize("option", ["queue", "account", "memory", "walltime", "python"])
@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
def test_no_slurm_option_reaches_the_job_script_unchecked(option, value):
    with pytest.raises(ValueError) as err:
        sweep.slurm_job_script(**{option: value})
    msg = str(err.value)
    assert msg.startswith(f"{option}={value!r}: expected") and "\n" not in msg


def test_the_scheduler_address_and_prologue_cannot_inject_either():
    with pytest.raises(ValueError, match=r"^scheduler='tcp://h:1 >x"):
        sweep.slurm_job_script(scheduler="tcp://h:1 >x")
    with pytest.raises(ValueError, match=r"^prologue line"):
        sweep.slurm_job_script(prologue=["module load cuda\nrm -rf ~"])


def test_ordinary_slurm_options_still_make_a_job_script():
    script = sweep.slurm_job_script(queue="gpu,gpu-long", account="proj_1", memory="1.5TiB", walltime="1-12:00:00",
                                    scheduler="tcp://10.0.0.1:8786")
    lines = script.splitlines()
    assert "#SBATCH -p gpu,gpu-long" in lines and "#SBATCH -A proj_1" in lines and "#SBATCH -t 1-12:00:00" in lines
    assert any("tcp://10.0.0.1:8786" in ln for ln in lines)


def test_cli_dry_run_refuses_a_queue_with_a_newline_and_writes_no_script():
    from dfrobust.study.cli import app

    res = CliRunner().invoke(app, ["sweep", "--profile", "quick", "--cluster", "slurm", "--dry-run",
                                   "--queue", "gpu\nrm -rf ~"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: queue='gpu\\nrm -rf ~': expected"), lines
    assert "#SBATCH" not in res.output and "rm -rf ~\n" not in res.output


# ----------------------------------------------------------------------------- the page
EVIL = "x\n\n<img src=x onerror=alert(1)>\n| a | b |"


def _box(tmp_path: Path, data_root: str) -> str:
    """The re-run box of chapter 01 presented with ``data_root`` (its Markdown source)."""
    tpl = ROOT / "notebooks" / "01_data.ipynb"
    path = tmp_path / "01_data.ipynb"
    path.write_text(tpl.read_text())
    pages.present_chapter(path, "01_data", tpl, {"profile": "quick", "data_root": data_root})
    return next(c.source for c in nbformat.read(path, as_version=4).cells if pages.RERUN_CLASS in c.source)


def _render(markdown: str) -> str:
    """HTML of ``markdown`` as the book's parser reads it (markdown-it: CommonMark with raw HTML, and tables)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_a_data_root_with_a_newline_and_html_stays_one_row_shown_as_text(tmp_path):
    box = _box(tmp_path, EVIL)
    lines = box.splitlines()
    start = lines.index("| parameter | value | set by | description |")
    end = lines.index(":::", start)
    table = "\n".join(lines[start:end])
    declared = study.declared_parameters(ROOT / "notebooks" / "01_data.ipynb")
    html = _render(table)
    # one table: a header and one row per parameter, nothing after it
    assert html.count("<table>") == 1 and html.count("<tr>") == len(declared) + 1, html
    assert html.strip().endswith("</table>")
    # the markup is text in a code span: no element (no <img>, no onerror) reaches the page
    assert not re.search(r"<img", html) and "&lt;img src=x onerror=alert(1)&gt;" in html
    row = next(ln for ln in lines[start:end] if ln.startswith("| `data_root` |"))
    assert "\\n\\n<img" in row and "\\| a \\| b \\|" in row, row
    # the re-run command is on one line and reads back as the same value
    cmd = next(ln for ln in lines if ln.startswith(".venv/bin/dfrobust run 01_data"))
    argv = shlex.split(cmd)
    assert study.parse_override(argv[argv.index("-p") + 1]) == ("data_root", EVIL)
    # the whole box rendered: still no element from the value
    assert "<img" not in _render(box)


def test_decide_tables_escape_html_in_their_text():
    """Verdict tables go to the page as HTML (figures.decide_html): text in them is escaped."""
    import pandas as pd

    from dfrobust.figures import decide_html

    html = decide_html(pd.DataFrame({"claim": ["<img src=x onerror=alert(1)> holds"], "verdict": ["holds"]})).data
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt; holds" in html
