"""XAI experiment records: pairing, dims/coords, reductions, deletion/insertion, rank agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch import nn

from dfrobust.experiments import xai
from dfrobust.core.results import load, save
from dfrobust.data import sampling
from dfrobust.metrics import faithfulness as faith

torch.set_num_threads(1)


class Toy(nn.Module):
    """P(fake) rises with the mean brightness: a 1x1 conv (Grad-CAM's layer), a mean, two logits."""

    def __init__(self, size, slope=20.0):
        super().__init__()
        self.input_size = size
        self.c = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.c.weight.fill_(1 / 3)
            self.c.bias.fill_(-0.5)
        self.slope = slope

    def forward(self, x):
        z = self.slope * self.c(x).mean((1, 2, 3))
        return torch.stack([-z, z], 1)


def _manifest(n=4):
    rows = []
    for i in range(n):
        for lab in (1, 0):
            rows.append(dict(path=f"{'fr'[lab == 0]}{i}", label=lab, pair_id=f"p{i}", split="test",
                             group=["asian_male", "african_female"][i % 2], dataset="synthetic",
                             manipulation="faceswap" if lab else "none", identity=f"id{i}"))
    # one fake the detectors call real, one real they call fake: the protocol drops both pairs
    rows += [dict(path="fdim", label=1, pair_id="q0", split="test", group="asian_male", dataset="synthetic",
                  manipulation="faceswap", identity="q0"),
             dict(path="rq0", label=0, pair_id="q0", split="test", group="asian_male", dataset="synthetic",
                  manipulation="none", identity="q0"),
             dict(path="fq1", label=1, pair_id="q1", split="test", group="african_female", dataset="synthetic",
                  manipulation="faceswap", identity="q1"),
             dict(path="rbright", label=0, pair_id="q1", split="test", group="african_female", dataset="synthetic",
                  manipulation="none", identity="q1")]
    rows.append(dict(path="lonely", label=1, pair_id="", split="test", group="", dataset="synthetic",
                     manipulation="faceswap", identity="x"))
    return pd.DataFrame(rows)


def _load(df, size):
    out = []
    for p in df["path"]:
        g = torch.Generator().manual_seed(sum(map(ord, p)) * 1000 + size)
        base = {"fdim": 0.3, "rbright": 0.7}.get(p, 0.53 if p.startswith("f") else 0.4)
        x = base + 0.3 * (torch.rand(3, size, size, generator=g) - 0.5)
        x[:, : size // 3] += 0.1                               # unequal SLIC segments
        out.append(x.clamp(0, 1))
    return torch.stack(out)


def test_select_pairs_links_fake_to_its_real():
    pairs = sampling.select_pairs(_manifest(), 10)
    assert len(pairs) == 6                                     # the unpaired fake is left out
    assert (pairs["label"] == 1).all() and (pairs["real_label"] == 0).all()
    assert (pairs["pair_id"] == pairs["real_pair_id"]).all()
    assert set(pairs["path"]) == {"f0", "f1", "f2", "f3", "fdim", "fq1"}
    with pytest.raises(ValueError, match="pair_id"):
        sampling.select_pairs(_manifest().assign(pair_id=""), 2)


NES = {"steps": 4, "n_pairs": 2, "eps": 0.3, "alpha": 0.05}


@pytest.fixture(scope="module")
def run():
    pairs = xai.candidate_pairs(_manifest())
    return xai.run_xai({"a": Toy(24), "b@28": Toy(28, 30.0)}, pairs, tools=["gradcam", "rise", "random"],
                       top_k="1,4", n_segments=12, seed=0, device="cpu", keep=1, load=_load, nes=NES,
                       explain_options={"rise": {"n_masks": 16, "cells": 3}})


def test_records_dims_coords_and_roundtrip(run, tmp_path):
    ds = run.records
    assert dict(ds["p_fake_adv"].sizes) == {"model": 2, "tool": 3, "k": 2, "pair": 6}
    assert list(ds["input_size"].values) == [24, 28] and list(ds["arch"].values) == ["a", "b"]
    assert set(ds["group"].values) == {"asian_male", "african_female"}
    ana = ds["analysed"].values.astype(bool)
    mf = ds["mask_fraction"].values
    assert (mf[:, :, 1][np.broadcast_to(ana[:, None], mf[:, :, 1].shape)]
            >= mf[:, :, 0][np.broadcast_to(ana[:, None], mf[:, :, 0].shape)]).all()
    assert ((ds["p_fake_adv"] >= 0) & (ds["p_fake_adv"] <= 1)).where(ds["analysed"] == 1, True).all()
    assert run.gallery["b@28"]["adv"].shape == (3, 2, 1, 3, 28, 28)
    back = load(save(ds, tmp_path / "xai.nc"))
    xr.testing.assert_allclose(back["p_fake_adv"], ds["p_fake_adv"])


def test_protocol_attacks_detected_fakes_and_explains_recognised_reals(run):
    ds = run.records
    pid = ds["pair_id"].values
    ana = ds["analysed"].values.astype(bool)
    for mi in range(2):
        assert not ana[mi, list(pid).index("q0")] and not ana[mi, list(pid).index("q1")]
        assert ana[mi, [not p.startswith("q") for p in pid]].all()
    assert ds["p_fake_adv"].values[:, :, :, ~ana[0]].size and np.isnan(ds["p_fake_adv"].values[:, :, :, ~ana[0]]).all()
    counts = faith.protocol_counts(ds).set_index("model")
    assert (counts["dropped: fake called real"] == 1).all() and (counts["dropped: real called fake"] == 1).all()
    assert (counts["analysed"] == 4).all() and (counts["candidates"] == 6).all()
    # a quota takes the first eligible pairs in candidate order, per model
    pairs = xai.candidate_pairs(_manifest())
    small = xai.run_xai({"a": Toy(24)}, pairs, tools=["random"], top_k="1", n_segments=12, device="cpu",
                        load=_load, nes={"steps": 1, "n_pairs": 1}, n_pairs=2).records
    first = [i for i, p in enumerate(pairs["pair_id"]) if not p.startswith("q")][:2]
    assert list(np.flatnonzero(small["analysed"].values[0])) == first


def test_equal_area_masks_across_tools_in_the_run(run):
    ds = run.records
    ana = ds["analysed"].values.astype(bool)
    seg_frac = 1.0 / np.maximum(ds["n_segments_actual"].values, 1)        # mean segment area
    for mi in range(2):
        for ki, k in enumerate(ds["k"].values):
            f = ds["mask_fraction"].values[mi, :, ki][:, ana[mi]]           # [tool, pair]
            budget = k * seg_frac[mi, ana[mi]]
            assert (f >= budget - 1e-6).all()
            assert (f.max(0) - f.min(0) < 0.5).all()                        # never far apart (loose: SLIC sizes vary)
    np.testing.assert_array_equal(ds["count_mask_fraction"].notnull().values, ds["mask_fraction"].notnull().values)


def test_reductions_match_direct_computation(run):
    ds = run.records
    ana = ds["analysed"].values.astype(bool)
    acc = faith.adv_accuracy(ds)
    for mi in range(2):
        manual = (ds["p_fake_adv"].values[mi][..., ana[mi]] >= 0.5).mean(-1)
        np.testing.assert_allclose(acc.values[mi], manual)
    table = faith.accuracy_table(ds, n_boot=200)
    assert len(table) == 2 * 3 * 2
    row = table[(table.model == "b@28") & (table.tool == "rise") & (table.k == 4)].iloc[0]
    assert row.adv_acc == pytest.approx((ds["p_fake_adv"].values[1, 1, 1, ana[1]] >= 0.5).mean())
    assert row.ci_low <= row.adv_acc <= row.ci_high and row.n == 4
    assert row.clean_acc == pytest.approx((ds["p_fake_clean"].values[1] >= 0.5).mean())
    by = faith.accuracy_table(ds, by="group", n_boot=100)
    assert set(by["group"]) == {"asian_male", "african_female"} and by["n"].sum() == 2 * 3 * 2 * 4
    tt = xai.time_table(ds)
    assert len(tt) == 6 and (tt["explain_s"] >= 0).all() and (tt["n_pairs"] == 4).all()
    assert tt["share"].sum() <= 1 + 1e-9


def test_attack_never_raises_fake_accuracy_above_clean(run):
    ds = run.records
    # NES only moves a fake toward "real" and stops once it is classified real
    assert (faith.adv_accuracy(ds) <= 1 + 1e-9).all()
    ana = ds["analysed"] == 1
    assert (((ds["success"] == 1) == (ds["p_fake_adv"] < 0.5)) | ~ana).all()


# ----------------------------------------------------------------------------- verdicts on hand-made records
def _records(correct: dict, models=("m",), identity=None, budget=101) -> xr.Dataset:
    """Records where tool t leaves the fake detected on pair i iff correct[t][i] (one k): a detected fake
    is censored at the NES budget, a fooled one flipped at half of it."""
    tools = list(correct)
    n = len(next(iter(correct.values())))
    c = np.array([[np.asarray(correct[t])[None] > 0 for t in tools]] * len(models))
    p = np.where(c, 0.9, 0.1)
    coords = {"model": list(models), "tool": tools, "k": [1], "pair": np.arange(n)}
    if identity is not None:
        coords["identity"] = ("pair", np.asarray(identity))
    return xr.Dataset({"p_fake_adv": (("model", "tool", "k", "pair"), p),
                       "censored": (("model", "tool", "k", "pair"), c.astype(np.int8)),
                       "queries": (("model", "tool", "k", "pair"), np.where(c, budget, budget // 2)),
                       "p_fake_clean": (("model", "pair"), np.full((len(models), n), 0.9)),
                       "p_fake_real": (("model", "pair"), np.full((len(models), n), 0.1)),
                       "analysed": (("model", "pair"), np.ones((len(models), n), np.int8))},
                      coords=coords, attrs={"nes_budget": budget})


def test_best_tool_is_tie_for_equal_accuracies():
    rng = np.random.default_rng(0)
    n = 60
    good = (rng.random(n) < 0.2).astype(int)                    # accuracy ≈ 0.2
    ds = _records({"t1": good, "t2": good.copy(), "random": np.ones(n, int)})
    beats = faith.tool_verdicts(ds, margin=0.1, n_boot=500)
    assert (beats["verdict"] == "holds").all()
    bt = faith.best_tool(ds, margin=0.1, n_boot=500).iloc[0]
    assert bt["best"] == "not separable by this attack at n = 60"
    assert set(bt["tied"].split(", ")) == {"t1", "t2"} and bt["verdict"] == "inconclusive"
    # the first name does not win by default: a clearly better second tool is "best"
    worse = np.where(rng.random(n) < 0.6, 1, good)
    bt2 = faith.best_tool(_records({"t1": worse, "t2": np.zeros(n, int), "random": np.ones(n, int)}), n_boot=500).iloc[0]
    assert bt2["best"] == "t2" and bt2["verdict"] == "holds" and bt2["hi"] < 0


def test_no_tool_beats_random_and_small_n_is_inconclusive():
    ones = np.ones(4, int)                                        # every attack failed for every tool
    ds = _records({"t1": ones, "t2": ones, "random": ones})
    v = faith.tool_verdicts(ds, margin=0.1, n_boot=200)
    assert (v["verdict"] == "inconclusive").all()                 # 4 pairs cannot rule out a gain of 0.1
    assert v["n_needed"].isna().all()                             # no pair differs: no n decides it
    assert faith.best_tool(ds, n_boot=200).iloc[0]["best"] == "no tool beats random"
    big = _records({"t1": np.ones(100, int), "random": np.ones(100, int)})
    assert faith.tool_verdicts(big, margin=0.1, n_boot=200).iloc[0]["verdict"] == "inconclusive"  # attack never won
    some = (np.arange(100) % 3 == 0).astype(int)                  # the same pairs fooled by both: no pair differs
    same = faith.tool_verdicts(_records({"t1": some, "random": some.copy()}), n_boot=200).iloc[0]
    assert same["verdict"] == "inconclusive" and same["discordant"] == 0   # "no difference detected", never refuted
    assert set(faith.tool_verdicts(ds).columns) >= set(faith.VERDICT_COLUMNS)


def test_size_verdicts_paired_over_common_pairs():
    rng = np.random.default_rng(1)
    a = (rng.random(80) < 0.5).astype(int)
    ds = _records({"t": a, "random": np.ones(80, int)}, models=("x@256", "x@299"))
    same = faith.size_verdicts(ds, "x@256", "x@299", margin=0.1, n_boot=300)
    assert (same["verdict"] == "refuted").all() and (same["estimate"] == 0).all()
    p = ds["p_fake_adv"].values.copy()
    p[1, 0] = 0.1                                                # the tool fools x@299 on every pair
    diff = faith.size_verdicts(ds.assign(p_fake_adv=(ds["p_fake_adv"].dims, p)), "x@256", "x@299", n_boot=300)
    row = diff.set_index("tool").loc["t"]
    assert row["verdict"] == "holds" and row["lo"] > 0
    table = faith.decide_table(diff, faith.tool_verdicts(ds, n_boot=200))
    assert list(table.columns[:5]) == ["claim", "n", "interval width", "margin", "verdict"] and len(table) == 4


def test_check_params_rejects_bad_values_before_any_work():
    base = dict(models="meso4", xception_sizes="", tools="gradcam,random", top_k="1,3", n_pairs=5,
                xception_pairs=0, n_segments=30, nes_iters=3, nes_pairs=2, nes_sigma=0.001, eps=0.06, alpha=0.004,
                lime_samples=40, rise_masks=32, sobol_grid=3, sobol_design=8, xrai_steps=2, xrai_algorithm="fast",
                deletion_steps=10, n_boot=200, gallery_k=3, margin=0.1, masks="area", area_per_k=0.0,
                min_val_auc=0.7, device="cpu")
    s = xai.check_params(**base)
    assert s.top_k == [1, 3] and s.tools == ["gradcam", "random"] and s.n_pairs["meso4"] == 5
    for bad, match in [({"tools": "gradcam,gradcam,random"}, "tools.*duplicate"), ({"top_k": "1,1"}, "top_k.*duplicate"),
                       ({"top_k": "1,40"}, "top_k.*n_segments"), ({"n_segments": 0}, "n_segments=0"),
                       ({"tools": "gradcam"}, "random"), ({"margin": 1.5}, "margin"), ({"gallery_k": 2}, "gallery_k"),
                       ({"models": "meso5"}, "models"), ({"eps": 0}, "eps"), ({"masks": "pixels"}, "masks"),
                       ({"area_per_k": 0.5}, "area_per_k"), ({"min_val_auc": 2}, "min_val_auc"),
                       ({"xception_sizes": "96,x"}, "xception_sizes"), ({"nes_iters": 0}, "nes_iters"),
                       ({"lime_samples": 1}, "lime_samples"), ({"xrai_algorithm": "slow"}, "xrai_algorithm")]:
        with pytest.raises(ValueError, match=match):
            xai.check_params(**{**base, **bad})


def test_rank_agreement_on_hand_made_scores():
    tools, n = ["t1", "t2", "t3", "t4"], 2
    acc = np.array([0.9, 0.6, 0.3, 0.1])                      # t4 most faithful by the attack
    p_adv = np.repeat(np.where(np.arange(10)[None] < (acc * 10)[:, None], 0.9, 0.1)[:, None, :], 1, 1)
    ds = xr.Dataset({"p_fake_adv": (("model", "tool", "k", "pair"), p_adv[None]),
                     "p_fake_clean": (("model", "pair"), np.ones((1, 10))),
                     "deletion_auc": (("model", "tool", "pair"), np.tile([0.8, 0.6, 0.5, 0.2], (1, 10, 1)).transpose(0, 2, 1)),
                     "insertion_auc": (("model", "tool", "pair"), np.tile([0.1, 0.3, 0.4, 0.9], (1, 10, 1)).transpose(0, 2, 1))},
                    coords={"model": ["m"], "tool": tools, "k": [1], "pair": np.arange(10)})
    sc = faith.faithfulness_scores(ds)
    np.testing.assert_allclose(sc["attack_score"], 1 - acc)
    ra = faith.rank_agreement(ds).iloc[0]
    assert ra["tau_del_ins_score"] == pytest.approx(1.0) and ra["tau_deletion"] == pytest.approx(1.0)
    ds2 = ds.assign(insertion_auc=ds["insertion_auc"][:, ::-1].assign_coords(tool=tools),
                    deletion_auc=ds["deletion_auc"][:, ::-1].assign_coords(tool=tools))
    assert faith.rank_agreement(ds2).iloc[0]["tau_del_ins_score"] == pytest.approx(-1.0)


def test_deletion_insertion_rewards_the_right_segment():
    class Left(nn.Module):      # P(real) rises with the brightness of the left half only
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            z = 8 * (x[:, :, :, :4].mean((1, 2, 3)) - 0.25)
            return torch.stack([z, -z], 1)

    x = torch.full((1, 3, 8, 8), 0.6)
    seg = np.zeros((1, 8, 8), int)
    seg[:, :, 4:] = 1
    good, bad = [np.array([0, 1])], [np.array([1, 0])]
    d_good, i_good = xai.deletion_insertion(Left(), x, seg, good, 0, n_steps=2)
    d_bad, i_bad = xai.deletion_insertion(Left(), x, seg, bad, 0, n_steps=2)
    assert d_good[0] < d_bad[0]
    assert i_good[0] >= i_bad[0]


def test_bad_parameters_raise():
    pairs = sampling.select_pairs(_manifest(), 2)
    with pytest.raises(ValueError, match="tools"):
        xai.run_xai({"a": Toy(16)}, pairs, tools=["shap"], load=_load)
    with pytest.raises(ValueError, match="top_k"):
        xai.run_xai({"a": Toy(16)}, pairs, top_k="1,x", load=_load)
    with pytest.raises(ValueError, match="nes options"):
        xai.run_xai({"a": Toy(16)}, pairs, nes={"iters": 3}, load=_load)


def _template():
    from pathlib import Path

    import nbformat

    return nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "05_xai.ipynb", as_version=4)


def test_chapter_template_is_thin_checks_first_and_sets_up_once():
    import ast

    nb = _template()
    pi = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    after = [c.source for c in nb.cells[pi + 1:] if c.cell_type == "code"]
    assert "from_namespace(xai.check_params, globals())" in after[0] and "get_manifest" not in after[0]
    joined = "\n".join(code)
    assert joined.count("prepare_run(") == 1 and joined.count("glue_result(") == 1 and "glue(" not in \
        joined.replace("glue_result(", "")
    assert not any(ast.walk(ast.parse(c)) and any(isinstance(n, ast.FunctionDef) for n in ast.walk(ast.parse(c)))
                   for c in code), "no def in the notebook"
    assert sum(len(c.split("\n")) for c in code) <= 120
    assert all(len(c.split("\n")) <= 15 for i, c in enumerate(code) if c is not nb.cells[pi].source)
    check = xai.check_params.__code__
    assert "prepare_run" not in check.co_names and "seed_everything" not in check.co_names, "checking has no side effects"
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "{glue:} xai_decide" in md and "idxmin()" not in joined


def test_chapter_analysis_runs_on_toy_records_and_gives_every_quoted_value():
    """The chapter's analysis on toy records: a gated detector, one whose every pair the protocol drops, and
    two sizes of one architecture (so every section, the size verdicts included, runs); every name the
    page quotes is in the result."""
    import ast
    import re

    import matplotlib
    matplotlib.use("Agg")
    from dfrobust.figures import xai as xfig

    nb = _template()
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns = {n.target.id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body}
    ns.update(tools="gradcam,random", top_k="1,4", gallery_k=4, n_segments=12, n_boot=100, device="cpu")
    cfg = xai.check_params(**ns)
    models = {"xception@24": Toy(24), "xception@28": Toy(28, 30.0), "meso4@20": Toy(20, -5.0)}
    cand = xai.candidate_pairs(_manifest())
    run = xai.run_xai(models, cand, tools=cfg.tools, top_k=cfg.top_k, n_segments=12,
                      device="cpu", keep=1, load=_load, nes={"steps": 1, "n_pairs": 1})
    inputs = xai.XAIInputs(data_label="synthetic", candidates=cand, analysed=models, near_chance=["resnet34@96"],
                           detectors=pd.DataFrame(), trained={}, sizes={k: m.input_size for k, m in models.items()})
    res = xai.analyse(cfg, inputs, run, torch.device("cpu"))
    res.figures.update(xfig.chapter_figures(res, run.gallery, k=4, tools=cfg.tools))
    decide = res.decide
    assert {"not analysed: near chance", "not analysed: no pair passes the protocol"} <= set(decide["verdict"])
    assert decide["claim"].str.contains("differs between xception@24 and xception@28").any()
    assert set(decide["verdict"]) <= {"holds", "refuted", "inconclusive", "not analysed: near chance",
                                      "not analysed: no pair passes the protocol"}
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    quoted = set(re.findall(r"xai_([a-z0-9_]+)", md)) - {"decide"}
    have = set(res.values) | set(res.tables) | set(res.figures)
    assert quoted <= have, f"quoted but not produced: {quoted - have}"
    assert "verdict_text" in res.values                       # the landing page quotes it


def test_records_keep_queries_to_flip_censored_at_the_budget_and_the_full_image_ceiling(run):
    ds = run.records
    budget = ds.attrs["nes_budget"]
    assert budget == NES["steps"] * (1 + 2 * NES["n_pairs"]) + 1
    ana = (ds["analysed"] == 1).broadcast_like(ds["queries"])
    cens, succ, q = ds["censored"].values[ana.values], ds["success"].values[ana.values], ds["queries"].values[ana.values]
    np.testing.assert_array_equal(cens, 1 - succ)
    assert (q[cens == 1] == budget).all() and (q[cens == 0] <= budget).all() and (q[cens == 0] >= 1).all()
    a = ds["analysed"].values == 1
    fq = ds["full_queries"].values
    assert (fq[a] >= 1).all() and (fq[a] <= budget).all() and (fq[~a] == 0).all()
    assert set(np.unique(ds["full_success"].values[a])) <= {0, 1}


# ----------------------------------------------------------------------------- issue 24: rules, paired censored statistic, power
def test_the_beats_random_criteria_are_exclusive_on_a_grid_of_intervals():
    grid = np.linspace(-0.6, 0.6, 49)
    for margin in (0.02, 0.1, 0.3):
        for lo in grid:
            for hi in grid[grid >= lo]:
                v = faith.beats_verdict(lo, hi, margin)
                holds, refuted = hi < -margin, lo > -margin
                assert not (holds and refuted)                      # one cut point: never both
                assert v == ("holds" if holds else "refuted" if refuted else "inconclusive")
                assert faith.beats_verdict(lo, hi, margin, discordant=False) == "inconclusive"
    # the old rule (holds if hi < 0, refuted if lo > -margin) met both criteria here and said "holds"
    assert faith.beats_verdict(-0.05, -0.01, 0.1) == "refuted"


def test_paired_restricted_queries_difference_has_the_known_answer():
    n = 60
    tool = np.r_[np.zeros(30, int), np.ones(30, int)]         # fools pairs 0-29 at half the budget
    ds = _records({"t": tool, "random": np.ones(n, int)}, identity=[f"id{i}" for i in range(n)])
    rq = faith.restricted_queries(ds)
    np.testing.assert_allclose(rq.sel(tool="t").values.ravel(), np.r_[np.full(30, 50 / 101), np.ones(30)])
    row = faith.tool_verdicts(ds, margin=0.1, n_boot=2000).iloc[0]
    assert row["estimate"] == pytest.approx(0.5 * (50 / 101 - 1))  # half the pairs, each 51/101 sooner
    assert row["lo"] < row["estimate"] < row["hi"] < -0.1 and row["verdict"] == "holds"
    assert row["level"] == pytest.approx(0.05) and row["discordant"] == 30
    # identities are the resampled unit: the same pairs from ONE identity cannot decide anything
    one = faith.tool_verdicts(_records({"t": tool, "random": np.ones(n, int)}, identity=["a"] * n), n_boot=500).iloc[0]
    assert one["verdict"] == "inconclusive" and one["hi"] - one["lo"] > 1


def test_holm_levels_step_down_over_the_tools():
    n = 80
    rng = np.random.default_rng(3)
    strong = (rng.random(n) < 0.2).astype(int)                 # fools about 80 % of the pairs
    ds = _records({"weak": np.ones(n, int), "strong": strong, "mid": np.where(np.arange(n) < 40, strong, 1),
                   "random": np.ones(n, int)})
    v = faith.tool_verdicts(ds, margin=0.1, n_boot=1000).set_index("tool")
    assert v.loc["strong", "verdict"] == "holds" and v.loc["strong", "level"] == pytest.approx(0.05 / 3)
    assert v.loc["mid", "verdict"] == "holds" and v.loc["mid", "level"] == pytest.approx(0.05 / 2)
    assert v.loc["weak", "verdict"] == "inconclusive"          # no pair differs


def test_n_needed_and_power_by_simulation():
    assert faith.n_needed_sim(np.zeros(50), 0.1, 0.05) is None  # no discordant pair: never decided
    assert faith.n_needed_sim(np.r_[np.full(40, -0.5), np.zeros(10)], 0.1, 0.05) == 50   # decided already
    later = faith.n_needed_sim(np.r_[np.full(5, -0.5), np.zeros(45)], 0.02, 0.05)
    assert later is not None and later > 50
    rng = np.random.default_rng(0)
    rand = (rng.random(60) > 0.3).astype(int)                  # random fools 30 % of the pairs
    ds = _records({"t": rand, "random": rand.copy()})
    null = faith.power_beats_random(ds, "m", ratio=1.0, margin=0.05, n_sim=200)
    assert null["power"] == 0 and null["n_80"] is None          # no effect: never "holds"
    alt = faith.power_beats_random(ds, "m", ratio=2.0, margin=0.05, n_sim=200)
    big = faith.power_beats_random(ds, "m", ratio=3.0, margin=0.05, n_sim=200)
    assert 0 < alt["power"] < big["power"] and alt["random_flipped"] == pytest.approx(1 - rand.mean())
    assert alt["n_80"] is not None and alt["n_80"] >= (60 if alt["power"] < 0.8 else 0)
    none = faith.power_beats_random(_records({"t": np.ones(20, int), "random": np.ones(20, int)}), "m", n_sim=50)
    assert np.isnan(none["power"]) and "flipped no fake" in none["note"]


def test_a_collapsed_comparison_does_not_stop_holm_for_the_others():
    n = 60
    rng = np.random.default_rng(5)
    strong = (rng.random(n) < 0.2).astype(int)
    ds = _records({"same": np.ones(n, int), "strong": strong, "random": np.ones(n, int)},
                  identity=[f"id{i // 2}" for i in range(n)])
    v = faith.tool_verdicts(ds, margin=0.1, n_boot=1000).set_index("tool")
    assert v.loc["same", "verdict"] == "inconclusive" and v.loc["strong", "verdict"] == "holds"
    assert v.loc["strong", "level"] == pytest.approx(0.05 / 2)        # decided first: the collapsed one has p = 1
    floor = 1 - (0.05 / 2) ** (1 / 30)                               # 30 identities, at the last step (level 0.05)
    assert v.loc["same", "hi"] - v.loc["same", "lo"] == pytest.approx(2 * floor)
