"""The book's structure has one source: notebooks/study.yml (`book:` and each notebook's `part:`); _toc.yml is
generated from it (`dfrobust toc`, and by the runner before every book build)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dfrobust import study
from dfrobust.study import runner
from dfrobust.study.spec import toc_text

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_toc_is_the_one_generated_from_the_study_spec():
    s = study.load_study()
    assert (ROOT / "_toc.yml").read_text() == toc_text(s), "run: dfrobust toc"
    toc = yaml.safe_load(toc_text(s))
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert [f.removeprefix("book/generated/") for f in files if f.startswith("book/generated/")] == \
        [nb.name for nb in s.notebooks if not nb.part] + [nb.name for nb in s.notebooks if nb.part == "Appendix"]
    assert {"book/reproduce", "book/glossary", "book/references"} <= set(files)


def _spec(tmp_path, book=None, part=None) -> Path:
    (tmp_path / "book").mkdir(exist_ok=True)
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "book" / "notes.md").write_text("# Notes\n")
    nbs = [{"name": "01_a", "template": "notebooks/01_a.ipynb"},
           {"name": "09_z", "template": "notebooks/09_z.ipynb", **({"part": part} if part else {})},
           {"name": "02_b", "template": "notebooks/02_b.ipynb"}]
    spec = tmp_path / "notebooks" / "study.yml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text(yaml.safe_dump({"profiles": {"quick": "q"}, "notebooks": nbs,
                                    **({"book": book} if book is not None else {})}, sort_keys=False))
    return spec


BOOK = {"root": "book/intro", "parts": [{"caption": "Study"}, {"caption": "Extra", "pages": ["book/notes"]}]}


def test_parts_take_their_chapters_in_spec_order_then_their_pages(tmp_path):
    toc = yaml.safe_load(toc_text(study.load_study(_spec(tmp_path, BOOK, part="Extra"))))
    assert toc["root"] == "book/intro"
    assert [(p["caption"], [c["file"] for c in p["chapters"]]) for p in toc["parts"]] == [
        ("Study", ["book/generated/01_a", "book/generated/02_b"]),
        ("Extra", ["book/generated/09_z", "book/notes"])]


@pytest.mark.parametrize("book, part, fragment", [
    (BOOK, "Appendix", "notebook '09_z' has part='Appendix'; expected one of Study, Extra"),
    (None, "Extra", "notebook '09_z' has part='Extra'; expected one of The study"),
    ({"root": "book/intro", "parts": [{"caption": "Study", "pages": ["book/missing"]}]}, None,
     "book page 'book/missing' has no book/missing.md"),
    ({"parts": [{"caption": "Study"}]}, None, "book needs 'root'"),
])
def test_a_bad_book_section_is_one_line_when_the_spec_loads(tmp_path, book, part, fragment):
    with pytest.raises(study.StudyError) as err:
        study.load_study(_spec(tmp_path, book, part))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_write_toc_rewrites_a_stale_toc_and_the_cli_check_names_the_fix(tmp_path):
    s = study.load_study(_spec(tmp_path, BOOK, part="Extra"))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nparts: []\n")  # edited by hand
    assert runner.write_toc(tmp_path, s, write=False) and "parts: []" in (tmp_path / "_toc.yml").read_text()
    assert runner.write_toc(tmp_path, s) and (tmp_path / "_toc.yml").read_text() == toc_text(s)
    assert not runner.write_toc(tmp_path, s)
    (tmp_path / "_toc.yml").write_text("format: jb-book\n")
    env = {**os.environ, "DFROBUST_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "dfrobust.study.cli", "toc", "--check"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 1 and "run: dfrobust toc" in out.stderr, out.stderr
    assert (tmp_path / "_toc.yml").read_text() == "format: jb-book\n", "--check writes nothing"
