"""The claim rules: holds / refuted / inconclusive on records written by hand (issue 10 acceptance)."""

import math

import numpy as np
import pytest
import xarray as xr

from dfrobust import metrics
from dfrobust.experiments import robustness
from dfrobust.metrics import verdicts as V

B_GRID = metrics.linspace_grid(0.2, 21, what="b")


def _records(p_clean, p_adv, y, eps=(0.0, 0.05, 0.1), models=("a", "b"), attack="pgd"):
    """Records for models × eps × samples; ``p_clean`` [M, n] and ``p_adv`` [M, E, n] are P(fake)."""
    pcf = np.asarray(p_clean, float)
    paf = np.asarray(p_adv, float)
    M, n = pcf.shape
    y = np.asarray(y)
    pc = (pcf >= 0.5).astype(int)
    pa = (paf >= 0.5).astype(int)
    d4 = ("model", "attack", "eps", "sample")
    ex = lambda v: v[:, None]  # add the attack dim
    return xr.Dataset(
        {
            "p_adv_fake": (d4, ex(paf)),
            "p_adv": (d4, ex(np.where(pc[:, None] == 1, paf, 1 - paf))),
            "pred_adv": (d4, ex(pa)),
            "in_budget": (d4, ex(np.ones_like(paf, bool))),
            "success": (d4, ex((pc[:, None] == y) & (pa != y))),
            "changed": (d4, ex(paf != pcf[:, None])),
            "y": (("sample",), y),
            "pred_clean": (("model", "sample"), pc),
            "p_clean": (("model", "sample"), np.where(pc == 1, pcf, 1 - pcf)),
            "p_clean_fake": (("model", "sample"), pcf),
        },
        coords={"model": list(models), "attack": [attack], "eps": list(eps), "sample": np.arange(n)},
    )


def _constant(n, p=0.7):
    y = np.arange(n) % 2
    pc = np.full((2, n), p)
    pa = np.full((2, 3, n), p)
    return _records(pc, pa, y)


@pytest.mark.parametrize("n", [18, 400])
def test_two_constant_detectors_are_inconclusive(n):
    # the quick build: every detector at chance and no attack changes anything
    r = V.similar_ra_different_rr(_constant(n), "a", "b", "pgd", B_GRID, n_boot=300)
    assert r["claim"].verdict == "inconclusive"
    assert r["rr"].verdict != "refuted"  # equal upper bounds of 1 do not show equal RR


def test_n18_with_one_discordant_sample_is_inconclusive():
    n = 18
    y = np.ones(n, int)
    pc = np.full((2, n), 0.9)
    pa = np.full((2, 3, n), 0.6)  # RA = 1 for both, changes 0.3 ...
    pa[0, 1:, 0] = 0.3  # ... except one sample model a loses at every radius > 0
    rec = _records(pc, pa, y)
    r = V.similar_ra_different_rr(rec, "a", "b", "pgd", B_GRID, radii="all", n_boot=500)
    assert r["ra"].verdict == "inconclusive"
    assert r["ra"].hi - r["ra"].lo > 0.05  # one discordant sample of 18: the interval is wider than the margin
    assert r["claim"].verdict == "inconclusive"
    assert r["ra"].n_needed > n  # the RA part says how many samples would decide it ...
    # ... but no sample differs in RR (both lose P(ŷ) by 0.3 > b_max everywhere): no n resampled from
    # these records would show a difference, so the claim names none
    assert "no difference detected at n = 18" in r["rr"].note and r["claim"].n_needed is None


def _equal_ra_different_rr(n=200, rr_b=0.15):
    """RA 0.5 for both models on the same samples; a moves P by 0.01, b by ``rr_b``."""
    y = np.ones(n, int)
    h = n // 2
    pc = np.empty((2, n))
    pa = np.empty((2, 3, n))
    pc[:, :h], pc[:, h:] = 0.9, 0.52  # robust half / flipped half
    pa[:, 0] = pc
    pa[0, 1:, :h], pa[0, 1:, h:] = 0.89, 0.45  # changes 0.01 / 0.07
    pa[1, 1:, :h], pa[1, 1:, h:] = 0.9 - rr_b, 0.52 - rr_b
    return _records(pc, pa, y)


def test_equal_ra_different_rr_holds():
    rec = _equal_ra_different_rr()
    ra = metrics.robust_accuracy(rec).sel(eps=0.05)
    assert np.allclose(ra.values, 0.5)
    r = V.similar_ra_different_rr(rec, "a", "b", "pgd", B_GRID, n_boot=500)
    assert r["ra"].verdict == "holds"
    assert r["rr"].verdict == "holds"
    assert r["claim"].verdict == "holds"
    assert r["claim"].lo > 0 and r["b"] > 0
    assert r["radii"] == [0.05, 0.1]


def _identical(n):
    """Model b is a copy of model a (which the attack moves)."""
    rec = _equal_ra_different_rr(n=n)
    for v in ("p_adv", "p_adv_fake", "pred_adv", "success", "changed"):
        vals = rec[v].values.copy()
        vals[1] = vals[0]
        rec[v] = (rec[v].dims, vals)
    return rec


def test_identical_models_are_no_difference_detected_not_refuted():
    # zero discordance: every resample gives ΔRR = 0, the band collapses to the resolution floor.
    # The old rule called that "refuted" at n = 400; it only says no difference was detected.
    rec = _identical(400)
    r = V.similar_ra_different_rr(rec, "a", "b", "pgd", B_GRID, n_boot=300)
    assert r["ra"].verdict == "holds" and r["rr"].verdict == "inconclusive"
    assert r["claim"].verdict == "inconclusive" and "no difference detected at n = 400" in r["claim"].note
    assert r["claim"].n_needed is None  # more of the same units never differ


def test_discordant_models_with_equal_rr_refute_different_rr():
    # 4 units where only b loses P(ŷ) by 0.05 and 4 where only a does: ΔRR = 0 with a real spread
    rec = _identical(400)
    for m, idx in ((1, slice(0, 4)), (0, slice(4, 8))):
        v = rec["p_adv"].values.copy()
        v[m, :, 1:, idx] = 0.85
        rec["p_adv"] = (rec["p_adv"].dims, v)
    r = V.similar_ra_different_rr(rec, "a", "b", "pgd", B_GRID, n_boot=500)
    assert r["ra"].verdict == "holds" and r["rr"].verdict == "refuted"
    assert r["claim"].verdict == "refuted"


def test_difference_inside_the_margin_does_not_hold():
    # ΔRR = 0.03 measured tightly: nonzero (the old rule: holds) but inside ±0.05 (refuted now)
    boots = np.random.default_rng(0).normal(0, 0.002, (1000, 3)) + np.array([0.0, 0.03, 0.0])
    v = V.difference(boots, np.array([0.0, 0.03, 0.0]), n=1000, margin=0.05)
    assert v.verdict == "refuted"
    assert V.difference(boots + 0.05, np.array([0.05, 0.08, 0.05]), n=1000, margin=0.05).verdict == "holds"


def test_b_zero_is_excluded_from_the_rr_band():
    # a never moves, b moves by 1e-9 (float noise): only RR(b=0) differs; RA 0.5 for both
    n = 400
    y = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    pc = np.full((2, n), 0.9)
    pa = np.full((2, 3, n), 0.9)
    pa[1, 1:] -= 1e-9
    rec = _records(pc, pa, y)
    assert metrics.robust_ratio(rec, [0.0]).sel(eps=0.05).squeeze().values.tolist() == [1.0, 0.0]
    r = V.similar_ra_different_rr(rec, "a", "b", "pgd", B_GRID, n_boot=300)
    assert r["rr"].verdict != "holds" and r["claim"].verdict != "holds"
    assert "no difference detected" in r["rr"].note  # at every b > 0 both RRs are 1


def test_no_informative_radius_is_inconclusive():
    rec = _equal_ra_different_rr()
    rec["pred_adv"] = xr.ones_like(rec["pred_adv"])  # RA = 1 everywhere: outside (0.2, 0.8)
    r = V.similar_ra_different_rr(rec, "a", "b", "pgd", B_GRID, n_boot=100)
    assert r["claim"].verdict == "inconclusive" and "no radius" in r["claim"].note
    assert V.similar_ra_different_rr(rec, "a", "b", "pgd", B_GRID, n_boot=100, radii="all")["radii"] == [0.05, 0.1]


def test_equivalence_rule():
    rng = np.random.default_rng(0)
    inside = rng.normal(0.0, 0.005, 2000)
    assert V.equivalence(inside, 0.0, n=1000, margin=0.05).verdict == "holds"
    far = rng.normal(0.3, 0.02, 2000)
    assert V.equivalence(far, 0.3, n=1000, margin=0.05).verdict == "refuted"
    wide = rng.normal(0.0, 0.03, 2000)  # inside ±0.05 at 90 % but ~0.1 wide
    v = V.equivalence(wide, 0.0, n=100, margin=0.05)
    assert v.verdict == "inconclusive" and v.note == "interval wider than the margin"
    # width 0.1 at n = 100 reaches 0.05 at about 4 x 100
    assert 330 < v.n_needed < 470


def test_threshold_n_needed_only_when_undecided():
    # a decided row (either side) needs no more units; an undecided one says how many would decide it
    assert V.threshold(0.9, 0.8, 1.0, n=10, target=0.5).n_needed is None
    assert V.threshold(1.0, 0.51, 1.0, n=4, target=0.05, above=False).verdict == "refuted"
    assert V.threshold(1.0, 0.51, 1.0, n=4, target=0.05, above=False).n_needed is None
    v = V.threshold(0.625, 0.375, 0.875, n=25, target=0.5)
    assert v.verdict == "inconclusive" and v.n_needed == 100  # half-width 0.25 -> gap 0.125: 4 x 25


def test_resolution_floor_and_n_needed():
    assert V.resolution_floor(18) == pytest.approx(1 - 0.05 ** (1 / 18))
    assert V.resolution_floor(100) == pytest.approx(3 / 100, rel=0.05)  # the rule of three
    assert 2 * V.resolution_floor(V.n_for_floor(0.05)) <= 0.05 < 2 * V.resolution_floor(V.n_for_floor(0.05) - 1)
    assert V.n_needed(100, 0.1, 0.05) == 400
    # a degenerate bootstrap (all resamples 0) is not a zero-width interval
    v = V.equivalence(np.zeros(500), 0.0, n=18, margin=0.05)
    assert v.verdict == "inconclusive" and v.hi == pytest.approx(V.resolution_floor(18))


def test_simultaneous_band_covers_every_cell():
    rng = np.random.default_rng(1)
    boots = rng.normal(0, 1, (4000, 10)) * np.linspace(0.01, 0.05, 10)
    est = np.zeros(10)
    c = V.simultaneous_band(boots, est, n=10 ** 6)
    pointwise = np.quantile(np.abs(boots), 0.95, axis=0)
    assert c >= pointwise.max()
    assert np.mean((np.abs(boots) <= c).all(1)) == pytest.approx(0.95, abs=0.01)


def test_difference_rule():
    rng = np.random.default_rng(2)
    boots = rng.normal(0, 0.01, (1000, 5))
    est = np.array([0.0, 0.0, 0.1, 0.0, 0.0])
    v = V.difference(boots + est, est, n=1000, margin=0.05, labels=list("abcde"))
    assert v.verdict == "holds" and "at c" in v.note
    v = V.difference(np.zeros((1000, 5)), np.zeros(5), n=1000, margin=0.05)
    assert v.verdict == "inconclusive" and "no difference detected" in v.note  # a collapsed band
    v = V.difference(boots, np.zeros(5), n=1000, margin=0.05)
    assert v.verdict == "refuted"
    v = V.difference(boots, np.zeros(5), n=1000, margin=0.05, moved=False)
    assert v.verdict == "inconclusive" and "upper bound" in v.note


def test_verdict_vocabulary_and_table():
    with pytest.raises(ValueError, match="verdict='maybe'"):
        V.Verdict("c", "maybe", "r", 0.05, 0, 0, 0, 1)
    vs = [V.Verdict("x", "holds", "r", 0.05, 0.01, -0.01, 0.03, 200, 150),
          V.Verdict("y", "inconclusive", "r", 0.05, 0.0, -0.1, 0.1, 18, None)]
    t = V.verdict_table(vs, attack=["pgd", "fgsm"])
    assert list(t.columns[:3]) == ["attack", "claim", "verdict"]
    assert t["width"].tolist() == pytest.approx([0.04, 0.2])
    o = V.overall(vs, "some pair")
    assert o.verdict == "holds" and "1 holds, 0 refuted, 1 inconclusive" in o.note
    assert V.overall([vs[1]], "one").verdict == "inconclusive"


def test_power_n_matches_the_target():
    n = V.power_n(0.07)
    assert n == math.ceil((1.959964 * 0.5 / 0.07) ** 2) == 196
    assert 1.96 * 0.5 / math.sqrt(n) <= 0.07
    assert V.power_n(0.07, multiple=12) == 204


def test_claim_table_rows_per_attack_and_pair():
    rec = _equal_ra_different_rr()
    three = xr.concat([rec, rec.sel(model=["b"]).assign_coords(model=["c"])], dim="model",
                      data_vars="minimal", coords="minimal", compat="override")
    t = robustness.claim_table(three, B_GRID, n_boot=200)
    assert len(t) == 3 and set(t["verdict"]) <= set(V.VERDICTS)
    row = t[(t.model_a == "b") & (t.model_b == "c")].iloc[0]
    assert row["verdict"] == "refuted" or row["verdict"] == "inconclusive"  # identical models never "hold"
    assert t[(t.model_a == "a") & (t.model_b == "b")].iloc[0]["verdict"] == "holds"


def test_precision_uses_the_resolution_floor():
    # 24 images that never vary give zero-width bootstrap intervals: not a precision of ±0
    v = V.precision([0.0, 0.0], n=24, target=0.07)
    assert v.verdict == "refuted" and v.estimate == pytest.approx(V.resolution_floor(24, 0.025))
    assert V.precision([0.05, 0.068], n=204, target=0.07).verdict == "holds"


# ----------------------------------------------------------------------------- threshold claims (02, 01, 07)

def test_wilson_matches_known_values_and_stays_in_unit_interval():
    lo, hi = V.wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)   # Wilson 95 % for 0/20
    lo, hi = V.wilson(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-3)
    with pytest.raises(ValueError, match="k=5, n=3"):
        V.wilson(5, 3)


def test_auc_interval_shrinks_with_n_and_is_hanley_mcneil():
    # Hanley & McNeil (1982) by hand: AUC 0.9, 50 + 50 cases: Q1 = 0.9/1.1, Q2 = 1.62/1.9,
    # var = (0.09 + 49 (Q1 - 0.81) + 49 (Q2 - 0.81)) / 2500 = 1.0306e-3, SE = 0.0321
    lo, hi = V.auc_interval(0.9, 50, 50)
    assert (hi - lo) / 2 / 1.959964 == pytest.approx(0.0321, abs=2e-4)
    lo2, hi2 = V.auc_interval(0.9, 200, 200)
    assert hi2 - lo2 < (hi - lo) * 0.6


def test_threshold_rule_holds_refutes_and_abstains():
    holds = V.threshold(0.95, 0.93, 0.97, n=400, target=0.85)
    refuted = V.threshold(0.70, 0.65, 0.75, n=400, target=0.85)
    near = V.threshold(0.86, 0.82, 0.90, n=400, target=0.85)
    at_most = V.threshold(0.55, 0.50, 0.60, n=400, target=0.65, above=False)
    assert (holds.verdict, refuted.verdict, near.verdict, at_most.verdict) == ("holds", "refuted", "inconclusive",
                                                                               "holds")
    assert near.n_needed == math.ceil(400 * (0.04 / 0.01) ** 2)    # half-width 0.04 must shrink to the gap 0.01
    assert "at or above 0.85" in holds.rule and holds.margin == 0.85


def _trained(auc, n=400, n_fake=200):
    from types import SimpleNamespace

    rec = xr.Dataset({"auc": ("subset", [auc]), "n": ("subset", [n]), "n_fake": ("subset", [n_fake])},
                     coords={"subset": ["all"]})
    return SimpleNamespace(record=rec)


def test_models_decide_table_applies_each_target_and_the_port_check():
    import pandas as pd

    from dfrobust.experiments import models as ch02

    trained = {"meso4": _trained(0.997), "mesoinception4": _trained(0.66), "resnet34": _trained(0.86)}
    gate = pd.DataFrame({"model": list(trained), "status": ["analysed", "not analysed: near chance", "analysed"]})
    port = pd.DataFrame({"abs_diff": [1e-7, 3e-6]})
    t = ch02.decide_table(trained, gate, port).set_index("claim")
    verdict = {c.split(" learned")[0]: v for c, v in t["verdict"].items()}
    # meso4 clears 0.95, mesoinception4 is far under it, resnet34 sits on its 0.85 target with a ±0.035 interval
    assert verdict["meso4"] == "holds" and verdict["mesoinception4"] == "refuted"
    assert verdict["resnet34"] == "inconclusive"
    assert verdict["the MesoNet port reproduces the published Keras probabilities"] == "holds"
    assert "near chance" in t.loc["mesoinception4 learned: held-out test AUC >= 0.95", "note"]
    bad_port = ch02.decide_table(trained, gate, pd.DataFrame({"abs_diff": [2e-5]}))
    assert bad_port["verdict"].iloc[-1] == "refuted"


def test_certified_decide_table_band_soundness_and_single_detector():
    from dfrobust.experiments import certified as ch07

    n, eps = 40, [0.0, 0.001, 0.004]
    cert_change = np.zeros((1, 3, n))
    cert_change[0, 2, :20] = 0.5                 # at the largest radius half the samples lose their certificate
    cert = xr.Dataset({"certified_change": (("model", "eps", "sample"), cert_change)},
                      coords={"model": ["meso4"], "eps": eps, "sample": np.arange(n)})
    atk = xr.DataArray(np.zeros((1, 3, n)), dims=("model", "eps", "sample"), coords=cert.coords)
    t = ch07.decide_table(cert, atk, b_ref=0.1, violations=0)
    assert t["verdict"].tolist() == ["holds", "holds", "refuted", "inconclusive"]
    assert t["estimate"].iloc[2] == pytest.approx(0.5)       # 20 of 40 robust to the attacks, not certified
    assert "only 1 MesoNet" in t["note"].iloc[-1]
    two = xr.concat([cert, cert.assign_coords(model=["meso4b"])], "model")
    atk2 = xr.concat([atk, (atk + 0.3).assign_coords(model=["meso4b"])], "model")  # meso4b broken by attacks
    t2 = ch07.decide_table(two, atk2, b_ref=0.1, violations=0).set_index("claim")
    assert t2.loc["meso4 provably more robust than meso4b (b = 0.1)", "verdict"] == "holds"
    assert t2.loc["meso4b provably more robust than meso4 (b = 0.1)", "verdict"] == "inconclusive"


def test_decide_html_keeps_whole_claims_and_marks_missing_values():
    import pandas as pd

    from dfrobust.figures import decide_html

    claim = "no colour shortcut: colour-baseline held-out accuracy <= 0.65 (a claim longer than 50 characters)"
    t = pd.DataFrame({"claim": [claim], "lo": [0.12345], "n_needed": pd.array([None], dtype="Int64")})
    html = decide_html(t).data
    assert claim.replace("<", "&lt;") in html and "0.123<" in html and "—" in html and "<NA>" not in html
    assert "<th></th>" not in html                                   # no index column


def test_holm_steps_down_where_bonferroni_stops():
    # rules decided at a level with known p-values: Holm decides all three, Bonferroni (α/3) only one
    p = {"x": 0.001, "y": 0.015, "z": 0.024, "w": 0.5}
    rule = lambda k, level: V.Verdict(k, "holds" if p[k] <= level else "inconclusive", "p <= level", 0.05,
                                      p[k], 0, 0, 10)
    out = V.holm(rule, list(p), 0.05)
    assert {k for k, (v, _) in out.items() if v.verdict == "holds"} == {"x", "y", "z"}
    assert out["x"][1] == pytest.approx(0.05 / 4) and out["z"][1] == pytest.approx(0.05 / 2)
    assert out["w"][0].verdict == "inconclusive" and out["w"][1] == pytest.approx(0.05)
    assert sum(p[k] <= 0.05 / 4 for k in p) == 1


def _clustered(n_id=12, per_id=10, seed=0):
    """Per-sample 0/1 values constant within each identity (a fully clustered toy)."""
    rng = np.random.default_rng(seed)
    per = rng.integers(0, 2, n_id)
    ids = np.repeat([f"id{i:02d}" for i in range(n_id)], per_id)
    return xr.DataArray(np.repeat(per, per_id).astype(float), dims="sample",
                        coords={"sample": np.arange(ids.size), "identity": ("sample", ids)})


def test_identity_bootstrap_is_wider_than_image_bootstrap_on_clustered_data():
    from dfrobust.metrics.bootstrap import cluster_unit, n_units

    v = _clustered()
    img = metrics.bootstrap(v, by="sample", n_boot=2000, seed=1)
    ids = metrics.bootstrap(v, by="identity", n_boot=2000, seed=1)
    w_img, w_id = float(img.hi - img.lo), float(ids.hi - ids.lo)
    assert w_id > 2 * w_img  # 12 independent units, not 120: about sqrt(10) wider
    assert cluster_unit(v) == "identity" and n_units(v, "identity") == 12 and n_units(v, "sample") == 120
    v2 = v.assign_coords(identity=("sample", np.where(np.arange(120) == 3, "", v.identity.values)))
    assert cluster_unit(v2) == "sample"  # an identity missing somewhere: no cluster to resample


def _bernoulli_units(k_one=60, n=100, per_unit=1):
    v = np.repeat(np.r_[np.ones(k_one), np.zeros(n - k_one)], per_unit)
    ids = np.repeat([f"id{i:03d}" for i in range(n)], per_unit)
    return xr.Dataset({"v": ("sample", v)}, coords={"sample": np.arange(v.size), "identity": ("sample", ids)})


def _above_half(ds):
    """Holds if the Wilson 95 % lower bound of the unit mean lies above 0.5 (units of equal size)."""
    k, n = int(round(ds["v"].values.sum() / 2)), ds.sizes["sample"] // 2
    lo, hi = V.wilson(k, n)
    return V.threshold(k / n, lo, hi, n=n, target=0.5, claim="above")


def test_simulated_power_matches_the_exact_binomial_power():
    from scipy.stats import binom

    ds = _bernoulli_units(per_unit=2)  # 100 identities, 60 % ones, two images each
    n = 80
    exact = sum(binom.pmf(k, n, 0.6) for k in range(n + 1) if V.wilson(k, n)[0] >= 0.5)
    sim = V.simulated_power(ds, _above_half, by="identity", n=n, n_sim=1000, seed=3)
    assert sim == pytest.approx(exact, abs=0.05)  # resampling 60 % ones is Binomial(n, 0.6)
    assert V.simulated_power(_bernoulli_units(k_one=50, per_unit=2), _above_half, by="identity", n=n,
                             n_sim=500, seed=3) <= 0.06  # no effect: about the rule's one-sided level


def test_n_needed_by_simulation_climbs_the_doubling_ladder():
    from scipy.stats import binom

    ds = _bernoulli_units(per_unit=2)
    exact = lambda n: sum(binom.pmf(k, n, 0.6) for k in range(n + 1) if V.wilson(k, n)[0] >= 0.5)
    n, pw = V.n_needed_by_simulation(ds, _above_half, by="identity", power=0.8, n_sim=300, seed=1)
    assert n == 200 and pw >= 0.8  # exact power: 0.52 at 100 identities, 0.84 at 200
    assert exact(100) < 0.8 <= exact(200)
    r = V.resample_units(ds, "identity", 7, np.random.default_rng(0))
    assert r.sizes["sample"] == 14 and len(set(r.identity.values)) == 7  # a unit keeps its images
