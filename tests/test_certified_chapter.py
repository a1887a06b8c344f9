"""Chapter 07 as a thin chapter (issue 22): the notebook narrates, :func:`experiments.certified.run` computes,
:func:`figures.certified.chapter_result` adds the figures, one ``glue_result`` glues; the band's sentence is
computed from the band table (issue 25: name what the band measures)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from dfrobust.experiments import certified

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "notebooks" / "07_certified.ipynb"


def _notebook():
    import nbformat

    return nbformat.read(TEMPLATE, 4)


def test_chapter_07_is_thin_and_check_params_has_no_side_effects():
    from dfrobust.core.params import from_namespace

    code = [c for c in _notebook().cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    assert max(len(c.source.splitlines()) for c in code if c not in params) <= 15
    for c in code:
        assert not c.get("outputs") and not any(isinstance(n, (ast.FunctionDef, ast.Lambda))
                                                for n in ast.walk(ast.parse(c.source)))
    src = "".join(c.source for c in code)
    assert src.count("glue_result(") == 1 and "glue(" not in src and src.count("prepare_run(") == 1
    assert "from_namespace(certified.check_params, globals())" in src
    torch.manual_seed(123)
    before = (torch.get_num_threads(), torch.initial_seed(), np.random.get_state()[1][:4].tolist())
    ns: dict = {}
    exec(params[0].source, {}, ns)
    cfg = from_namespace(certified.check_params, ns)
    assert (torch.get_num_threads(), torch.initial_seed(), np.random.get_state()[1][:4].tolist()) == before
    assert cfg["device"] == ns["device"] and cfg["models"] == ns["models"].split(",")


def _bands(rows):
    return pd.DataFrame([{"model": m, "b": 0.1, "exact": ex, "RR attack": atk, "RR first-order": fo}
                         for m, ex, atk, fo in rows])


def test_band_meaning_says_what_the_open_band_measures():
    # one closed cell; one open cell where the attacks move P(ŷ) as far as the linearisation predicts (the
    # certificate is loose); one where the attacks' RR is far above the first-order RR (the attacks may be weak)
    s = certified.band_meaning(_bands([("a", True, 1.0, 1.0), ("a", False, 0.9, 0.85), ("b", False, 0.9, 0.4)]))
    assert "open in 2 of 3 (detector, ε) cells" in s
    assert re.search(r"In 1 of them .* certificate's looseness\. In 1 .* attacks' weakness", s)
    closed = certified.band_meaning(_bands([("a", True, 1.0, 1.0), ("b", True, 0.5, 0.2)]))
    assert "agree on every sample in all 2" in closed and "exact" in closed


def test_the_page_computes_the_band_sentence_instead_of_typing_it():
    text = "".join(c.source for c in _notebook().cells if c.cell_type == "markdown")
    assert "a statement about the attacks" not in text and "{glue:text}`cert_band_meaning`" in text


def test_provable_pairs_count_cells_where_a_certified_rr_beats_an_attack_rr():
    eps, b = [0.0, 0.001, 0.002], [0.0, 0.1]
    cert = np.array([[[1, 1], [0.9, 0.9], [0.2, 0.2]], [[1, 1], [0.1, 0.1], [0.0, 0.0]]])
    atk = np.array([[[1, 1], [1, 1], [1, 1]], [[1, 1], [0.5, 0.5], [0.1, 0.1]]])
    coords = {"model": ["a", "b"], "eps": eps, "b": b}
    rr_c = xr.DataArray(cert, dims=("model", "eps", "b"), coords=coords)
    rr_a = xr.DataArray(atk, dims=("model", "eps", "b"), coords=coords)
    t = certified.provable_pairs(rr_c, rr_a).set_index(["provably more robust", "than"])
    # a's certified RR 0.9 > b's attack RR 0.5 at ε = 0.001 (both b), 0.2 > 0.1 at 0.002 (both b); ε = 0 never counts
    assert t.loc[("a", "b"), "cells"] == 4 and t.loc[("b", "a"), "cells"] == 0
    assert (t["of"] == 4).all()


def test_attack_records_are_reused_only_for_the_same_samples_and_radii(tmp_path):
    from dfrobust.core import results

    paths = ["x/0.png", "x/1.png", "x/2.png"]
    rec = xr.Dataset({"p": (("model", "attack", "eps", "sample"), np.random.rand(2, 3, 3, 3))},
                     coords={"model": ["meso4", "other"], "attack": ["fgsm", "pgd", "rr"],
                             "eps": [0.0, 0.00196078431, 0.00392156863], "sample": np.arange(3),
                             "path": ("sample", paths)})
    f = results.save(rec, tmp_path / "robustness_records.nc")
    meta = pd.DataFrame({"path": paths})
    grid = [0.0, 0.00196078, 0.00392157]
    got = certified.reusable_attack_records(f, ["meso4"], meta, grid)
    assert got.model.values.tolist() == ["meso4"] and got.attack.values.tolist() == ["fgsm", "pgd"]
    assert got.eps.values.tolist() == grid
    assert certified.reusable_attack_records(f, ["meso4"], meta.iloc[::-1], grid) is None        # other order
    assert certified.reusable_attack_records(f, ["meso4"], meta, grid + [0.008]) is None          # a radius missing
    assert certified.reusable_attack_records(f, ["meso4_adv"], meta, grid) is None               # a model missing
    assert certified.reusable_attack_records(tmp_path / "absent.nc", ["meso4"], meta, grid) is None


def test_a_build_with_no_gated_mesonet_glues_every_name_the_pages_quote(monkeypatch):
    """No MesoNet past the quality gate: run() stops before any bound and still gives every value, table and
    figure the chapter's Markdown and the landing page quote, each saying why."""
    import dfrobust.data as data
    import dfrobust.data.sampling as sampling
    import dfrobust.models as models
    import dfrobust.models.published as published
    from dfrobust.core.params import from_namespace
    from dfrobust.figures import certified as cfig

    class Trained:
        input_size = 32

    meta = pd.DataFrame({"path": ["a.png", "b.png"], "group": ["g", "g"]})
    monkeypatch.setattr(data, "get_manifest", lambda *a, **k: meta)
    monkeypatch.setattr(data, "dataset_label", lambda m: "synthetic")
    monkeypatch.setattr(sampling, "select_samples", lambda m, n, seed: m)
    monkeypatch.setattr(published, "get_detector", lambda *a, **k: Trained())
    monkeypatch.setattr(published, "evaluation_manifest", lambda m, names: m)
    monkeypatch.setattr(models, "study_gate", lambda trained, auc, profile: pd.DataFrame(
        {"model": list(trained), "learned": "holds", "analysed": False, "status": "near chance"}))
    monkeypatch.setattr(certified, "load_samples", lambda sel, size: (torch.zeros(2, 3, size, size),
                                                                       torch.zeros(2), sel, []))
    monkeypatch.setattr(certified.certify, "certified_records", lambda *a, **k: _no_bounds())
    ns: dict = {}
    exec(next(c for c in _notebook().cells if "parameters" in c.metadata.get("tags", [])).source, {}, ns)
    res = cfig.chapter_result(certified.run(from_namespace(certified.check_params, ns), torch.device("cpu")))
    glued = {f"cert_{n}" for g in (res.values, res.tables, res.figures) for n in g}
    pages = "".join(c.source for c in _notebook().cells if c.cell_type == "markdown")
    pages += (ROOT / "book" / "intro.md").read_text()
    quoted = set(re.findall(r"\b(cert_[a-z0-9_]+)", pages))
    assert quoted and quoted <= glued, sorted(quoted - glued)
    assert "no MesoNet passed the quality gate" in res.values["largest_eps_text"]


def _no_bounds():
    raise AssertionError("a bound was computed although no MesoNet passed the quality gate")
