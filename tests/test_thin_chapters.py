"""Thin chapters (issue 22): a notebook narrates and calls its chapter function; the plumbing lives in the package.

Counted per template, over its code cells (lines as written, blank lines included):
no ``def`` anywhere, no code cell over 15 lines (the ``parameters`` cell excepted: it is the chapter's one list
of parameters, one literal per line, collapsed on the page), chapters 03-05 at most 120 code lines in total.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_CELL = 15
MAX_TOTAL = 120
COUNTED = ("03_", "04_", "05_")  # the chapters with a total line goal


def counts(path: Path) -> dict:
    """``{"code_lines", "longest": (lines, cell index), "defs": [names]}`` of a template's code cells."""
    nb = nbformat.read(path, as_version=4)
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    sizes = [(len(c.source.splitlines()), i) for i, c in code if "parameters" not in c.metadata.get("tags", [])]
    defs = []
    for _, c in code:
        lines = [line for line in c.source.splitlines() if not line.lstrip().startswith(("%", "!"))]  # IPython magics
        defs += [n.name for n in ast.walk(ast.parse("\n".join(lines)))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return {"code_lines": sum(len(c.source.splitlines()) for _, c in code),
            "longest": max(sizes, default=(0, -1)), "defs": defs}


def test_the_counter_counts_lines_cells_and_defs(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("\n".join(f"p{i}: int = {i}  # p" for i in range(20)))
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# T\n" + "text\n" * 40), params,
                nbformat.v4.new_code_cell("def f(x):\n    return x\n\n%matplotlib inline\ny = f(2)"),
                nbformat.v4.new_code_cell("\n".join(["z = 1"] * 16))]
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    assert counts(path) == {"code_lines": 20 + 5 + 16, "longest": (16, 3), "defs": ["f"]}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_no_def_in_a_notebook(path):
    assert not counts(path)["defs"], f"{path.name} defines {counts(path)['defs']}: move them to the package"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_no_code_cell_over_15_lines(path):
    lines, cell = counts(path)["longest"]
    assert lines <= MAX_CELL, f"{path.name}: cell {cell} has {lines} lines; expected at most {MAX_CELL}"


@pytest.mark.parametrize("path", [p for p in TEMPLATES if p.name.startswith(COUNTED)], ids=lambda p: p.stem)
def test_chapters_03_to_05_within_120_code_lines(path):
    total = counts(path)["code_lines"]
    assert total <= MAX_TOTAL, f"{path.name}: {total} code lines; expected at most {MAX_TOTAL}"
