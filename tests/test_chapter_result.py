"""The chapter result object and the one-call parameter check every chapter notebook uses."""

from __future__ import annotations

import pandas as pd
import pytest

from dfrobust.core.params import from_namespace
from dfrobust.core.results import ChapterResult


def test_result_refuses_duplicate_and_bad_names():
    with pytest.raises(ValueError, match="'n'"):
        ChapterResult(values={"n": 1}, tables={"n": pd.DataFrame()})
    with pytest.raises(ValueError, match="'Bad name'"):
        ChapterResult(values={"Bad name": 1})
    r = ChapterResult(values={"n": 1})
    with pytest.raises(ValueError, match="'n'"):
        r.add(n=2)


def test_from_namespace_takes_declared_names_and_names_the_missing():
    def check(*, a: int, b: int = 5, **_ignored):
        return a, b

    assert from_namespace(check, {"a": 1, "unrelated": object()}) == (1, 5)
    assert from_namespace(check, {"a": 1, "b": 2}) == (1, 2)
    with pytest.raises(ValueError, match="^parameters a: missing"):
        from_namespace(check, {"b": 2})


def test_glue_result_glues_every_entry_under_the_prefix(monkeypatch):
    import myst_nb

    from dfrobust.study import pages

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: glued.setdefault(name, value))
    r = ChapterResult(values={"n": 3}, tables={"t": pd.DataFrame({"x": [1]})},
                      decide=pd.DataFrame({"claim": ["c"], "verdict": ["holds"]}))
    names = pages.glue_result(r, "ch")
    assert names == ["ch_n", "ch_t", "ch_decide"] and glued["ch_n"] == 3 and "holds" in glued["ch_decide"].data
