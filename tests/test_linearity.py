"""Linearity of RR in the tolerance: a statistic that saturation cannot fool, counted undefined
resamples, and the holds / refuted / inconclusive rule."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import linregress

from dfrobust.metrics import linearity as lin

GRID5 = np.array([0.0, 0.05, 0.1, 0.15, 0.2])


def test_issue_curves_that_r2_confuses_are_told_apart():
    curves = np.array([[1, 0, 0, 0, 0], [1, .9, .9, .9, .9], [1, .99, .99, .99, .99]], float)
    # the defect: R² calls all three the same
    assert [round(linregress(GRID5, c).rvalue ** 2, 6) for c in curves] == [0.5, 0.5, 0.5]
    dev = lin.chord_deviation(GRID5, curves)["dev"]
    assert np.isnan(dev[0])                                   # a jump the 5-point grid does not resolve
    assert dev[1] == pytest.approx(0.075) and dev[2] == pytest.approx(0.0075)
    assert len({round(float(d), 6) if np.isfinite(d) else "nan" for d in dev}) == 3


def test_saturated_tail_is_cut_and_a_bend_is_measured():
    t = np.linspace(0, 0.2, 21)
    straight_then_zero = np.clip(1 - t / 0.1, 0, 1)           # falls linearly, then sits at RR = 0
    r = lin.chord_deviation(t, straight_then_zero)
    assert r["dev"] == pytest.approx(0.0, abs=1e-12)          # the saturated tail earns nothing...
    assert (r["lo"], r["hi"]) == (0, 10)
    full_chord = np.abs(straight_then_zero - (1 - t / 0.2)).max()
    assert full_chord > 0.4                                    # ...a chord over the whole grid would call it bent
    bent = np.clip(1 - (t / 0.1) ** 2, 0, 1)                   # concave fall to 0 at t = 0.1
    assert lin.chord_deviation(t, bent)["dev"] == pytest.approx(0.25, abs=1e-9)
    rising = np.clip(0.2 + 8 * t, 0, 1)                        # the b reading: rises to 1 and stays
    assert lin.chord_deviation(t, rising)["dev"] == pytest.approx(0.0, abs=1e-12)


def test_flat_curves_and_too_few_points_are_undefined():
    t = np.linspace(0, 0.2, 21)
    out = lin.chord_deviation(t, np.array([np.ones(21), np.full(21, 0.4), np.r_[1.0, 0.5, np.zeros(19)]]))
    assert np.isnan(out["dev"][0]) and np.isnan(out["dev"][1])      # RR does not move
    assert out["n_points"][2] == 3 and out["dev"][2] == pytest.approx(0.0)  # [1, .5, 0]: 3 points kept
    two = lin.chord_deviation(t, np.r_[1.0, np.zeros(20)])
    assert two["n_points"] == 2 and np.isnan(two["dev"])                # a jump between two grid points
    with pytest.raises(ValueError, match="strictly increasing"):
        lin.chord_deviation([0, 0, 1], np.ones(3))
    with pytest.raises(ValueError, match="min_points"):
        lin.chord_deviation(GRID5, np.ones(5), min_points=2)


def _records(change: np.ndarray, eps: np.ndarray, model: str = "m") -> xr.Dataset:
    """Records whose sample s changes P(ŷ) by change[e, s] at radius eps[e] (P(ŷ|x) = 0.9)."""
    ne, n = change.shape
    p_adv = 0.9 - change
    shape = (1, 1, ne, n)
    ds = xr.Dataset({
        "p_adv": (("model", "attack", "eps", "sample"), p_adv.reshape(shape)),
        "p_clean": (("model", "sample"), np.full((1, n), 0.9)),
        "in_budget": (("model", "attack", "eps", "sample"), np.ones(shape, bool)),
        "pred_adv": (("model", "attack", "eps", "sample"), np.ones(shape, int)),
        "pred_clean": (("model", "sample"), np.ones((1, n), int)),
        "y": (("sample",), np.ones(n, int)),
    }, coords={"model": [model], "attack": ["pgd"], "eps": eps, "sample": np.arange(n)})
    return ds


EPS = np.linspace(0, 0.2, 9)
B = np.round(np.linspace(0, 0.2, 21), 3)


def _linear_records(n=60, seed=0):
    """Changes spread uniformly: RR(b) and RR(ε) are close to straight lines."""
    rng = np.random.default_rng(seed)
    slope = rng.uniform(0.2, 1.0, n)                  # change = slope * eps
    return _records(np.outer(EPS, slope), EPS)


def _step_records(n=60):
    """Half the samples change by 0.03, half by 0.15 at every ε > 0: RR(b) is a staircase 0, 0.5, 1."""
    ch = np.where(EPS[:, None] > 0, 1.0, 0.0) * np.where(np.arange(n) % 2, 0.15, 0.03)[None]
    return _records(ch, EPS)


def test_linearity_result_and_table():
    res = lin.linearity({"line": (_linear_records(), "sample"), "step": (_step_records(), "sample", 1)}, B,
                        fixed_eps=0.2, fixed_b=0.1, n_boot=200, seed=0)
    dev_b = res["dev"].sel(reading="b", model="m", attack="pgd")
    assert float(dev_b.sel(data_type="line")) < 0.1
    assert float(dev_b.sel(data_type="step")) > 0.3            # a step at b50 = 0.03, then flat at 0.5
    assert res["n_undefined"].sizes == {"data_type": 2, "reading": 2, "model": 1, "attack": 1}
    assert float(res["t50"].sel(data_type="step", reading="b", model="m", attack="pgd")) == pytest.approx(0.03)
    tab = lin.linearity_table(res)
    assert len(tab) == 4 and {"shape deviation", "undefined resamples", "points kept", "scale (t₅₀)"} <= set(tab.columns)
    with pytest.raises(ValueError, match="eps grids differ"):
        lin.linearity({"a": (_linear_records(), "sample"), "b": (_records(np.zeros((5, 4)), GRID5), "sample")},
                      B, fixed_eps=0.2, fixed_b=0.1, n_boot=10)


def test_verdict_holds_for_the_straighter_curve_and_is_refuted_the_other_way():
    res = lin.linearity({"line": (_linear_records(), "sample"), "step": (_step_records(), "sample", 1)}, B,
                        fixed_eps=0.2, fixed_b=0.1, n_boot=300, seed=0)
    out, tab = lin.compare(res, [("line", "step"), ("step", "line")], margin=0.05, readings=["b"])
    fwd, back = out[("line", "step", "b")], out[("step", "line", "b")]
    assert fwd.verdict == "holds" and fwd.lo > 0
    assert back.verdict == "refuted" and back.hi < 0
    assert {"verdict", "margin", "lo", "hi", "n", "n_needed", "rule"} <= set(tab.columns)
    assert len(tab) == 2 and "Holm" in tab["rule"].iloc[0]
    assert lin.overall([fwd, back], "both").verdict == "refuted"


def test_undefined_resamples_are_counted_and_block_a_decision():
    # 1 of 20 samples changes at all: about (19/20)^20 = 36 % of resamples draw none -> RR flat -> undefined
    n = 20
    ch = np.zeros((len(EPS), n))
    ch[:, 0] = 0.5 * EPS
    rare = _records(ch, EPS)
    res = lin.linearity({"rare": (rare, "sample"), "line": (_linear_records(), "sample", 1)}, B,
                        fixed_eps=0.2, fixed_b=0.05, n_boot=400, seed=0)
    und = int(res["n_undefined"].sel(data_type="rare", reading="b").item())
    assert 0.05 * 400 < und < 400                              # counted, not dropped
    out, tab = lin.compare(res, [("rare", "line")], margin=0.05, readings=["b"])
    v = out[("rare", "line", "b")]
    assert v.verdict == "inconclusive" and np.isinf(v.lo) and v.n_needed is None
    assert "n needed unknown" in v.note
    assert f"{und}/400 resamples undefined" in tab["note"].iloc[0]


def test_decide_rule_edges():
    rng = np.random.default_rng(0)
    near0 = rng.normal(0.0, 0.005, 1000)
    assert lin.decide(0.0, near0, n=400, margin=0.05).verdict == "refuted"    # inside ±margin, narrow
    assert lin.decide(0.0, near0, n=100, margin=0.05).verdict == "inconclusive"  # the floor ±h(100) is wider
    wide = rng.normal(0.0, 0.2, 1000)
    v = lin.decide(0.0, wide, n=100, margin=0.05)
    assert v.verdict == "inconclusive" and v.n_needed > 100
    assert lin.decide(np.nan, near0, n=10, margin=0.05).verdict == "inconclusive"
    with pytest.raises(ValueError, match="margin"):
        lin.decide(0.0, near0, n=10, margin=0.0)
    # a stricter (Holm) level: the same replicates decide less easily
    barely = rng.normal(0.03, 0.0125, 4000)
    assert lin.decide(0.03, barely, n=500, margin=0.2, level=0.05).verdict == "holds"
    assert lin.decide(0.03, barely, n=500, margin=0.2, level=0.05 / 40).verdict != "holds"


# --------------------------------------------------------------------------- issue 24: shape, floor, Holm

def _cdf_curve(t, scale):
    """RR(b) of changes spread as a gamma-like law of a given scale (the same shape at any scale)."""
    from scipy.stats import gamma
    return gamma.cdf(np.asarray(t) / scale, a=3.0)


def test_a_curve_shifted_in_scale_keeps_its_linearity():
    b = np.linspace(0, 0.2, 41)
    small, large = _cdf_curve(b, 0.004), _cdf_curve(b, 0.012)      # the same shape, 3x the level
    raw = lin.chord_deviation(b, np.stack([small, large]))["dev"]
    assert abs(raw[0] - raw[1]) > 0.1                               # the raw statistic reads the level
    d = lin.shape_deviation(b, np.stack([small, large]), "b")
    assert abs(d["dev"][0] - d["dev"][1]) < 0.02                     # the normalised one reads the shape
    assert d["t50"][1] / d["t50"][0] == pytest.approx(3.0, rel=0.05)
    eps = np.r_[0.0, np.geomspace(1e-3, 0.256, 9)]                   # ratio 2 per radius
    fall = lambda s: 1 - _cdf_curve(eps, s)
    e = lin.shape_deviation(eps, np.stack([fall(0.004), fall(0.016)]), "eps")   # shifted by 2 grid steps
    assert np.isfinite(e["dev"]).all() and abs(e["dev"][0] - e["dev"][1]) < 0.005
    straight = lin.shape_deviation(b, np.clip(b / 0.1, 0, 1), "b")
    assert straight["dev"] == pytest.approx(0.0, abs=1e-9)


def test_floor_turns_a_zero_discordance_comparison_into_inconclusive():
    # per-frame and progressive records identical per video: every resample gives Δ = 0
    v = lin.decide(0.0, np.zeros(1000), n=400, margin=0.05, level=0.05)
    assert v.verdict == "inconclusive" and "no difference detected at n = 400" in v.note
    assert v.lo <= -lin.resolution_floor(400, 0.05) and v.hi >= lin.resolution_floor(400, 0.05)
    # the old rule called the collapsed interval [0, 0] "refuted"
    assert (v.lo, v.hi) != (0.0, 0.0)
    # a tiny real spread is decided as before, but never narrower than the floor
    w = lin.decide(0.0, np.random.default_rng(0).normal(0, 1e-4, 1000), n=400, margin=0.05, level=0.05)
    assert w.verdict == "refuted" and w.hi - w.lo >= 2 * lin.resolution_floor(400, 0.05) - 1e-12


def test_holm_levels_step_down_and_stop():
    levels = lin.holm_levels([0.001, 0.04, 0.012, 0.5], alpha=0.05)
    assert levels.tolist() == pytest.approx([0.05 / 4, 0.05 / 2, 0.05 / 3, 0.05 / 2])
    assert lin.holm_levels([0.2, 0.3], 0.05).tolist() == pytest.approx([0.025, 0.025])
    assert lin.p_value(np.r_[np.ones(90), -np.ones(10)]) == pytest.approx(0.2)
    assert lin.p_value(np.r_[np.ones(95), np.full(5, np.nan)]) == pytest.approx(0.1)   # NaN counts both ways


def test_power_simulation_on_records_with_a_known_difference():
    res_in = {"line": (_linear_records(n=60), "sample", 0), "step": (_step_records(n=60), "sample", 1)}
    tab = lin.power(res_in, "line", "step", B, fixed_eps=0.2, fixed_b=0.1, model="m", attack="pgd", reading="b",
                    margin=0.05, level=0.05, sizes=[60], n_sim=20, n_boot=100, seed=0)
    assert tab["power"].iloc[0] >= 0.9 and tab["holds"].iloc[0] >= 0.9
    same = {"a": (_step_records(n=60), "sample", 0), "b": (_step_records(n=60), "sample", 0)}
    tab0 = lin.power(same, "a", "b", B, fixed_eps=0.2, fixed_b=0.1, model="m", attack="pgd", reading="b",
                     margin=0.05, level=0.05, sizes=[60], n_sim=10, n_boot=50, seed=0)
    assert tab0["power"].iloc[0] == 0.0                         # paired identical records: never decided
