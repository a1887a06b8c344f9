"""Calibration in chapter 03 (issue #23.2): reliability tables with a known answer, RR at a temperature from the
stored margins equal to RR from σ(m/T) computed by hand, the sub-claims re-decided at the fitted temperatures
(the same as the uncalibrated ones at T = 1; changed when one detector is a sharper copy of the other), the
exactness of the up-run shortcut at the temperatures shown, and one-line errors for bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from scipy.special import expit

from toys import SmallNet

from dfrobust import metrics
from dfrobust.experiments import radii as rx
from dfrobust.experiments import robustness
from dfrobust.metrics import calibration

torch.set_num_threads(1)
B = [0.0, 0.05, 0.1, 0.15, 0.2]


# ----------------------------------------------------------------------------- reliability


def test_a_perfectly_calibrated_detector_has_ece_near_0_and_bins_on_the_diagonal():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)                   # P(fake) is the true probability
    rel = calibration.reliability_table(p, y, n_bins=10)
    assert int(rel["n"].sum()) == p.size and rel.sizes["bin"] == 10
    assert float(rel["ece"]) < 0.01
    assert float(abs(rel["gap"]).max()) < 0.015                # accuracy = confidence in every bin
    np.testing.assert_allclose(rel["lo"], np.linspace(0.5, 0.95, 10))
    assert float(rel["ece"]) == pytest.approx(calibration.ece(p, y, 10))


def test_an_overconfident_detector_sits_below_the_diagonal_with_the_ece_by_hand():
    p = np.r_[np.full(10, 0.9), np.full(10, 0.1)]              # confidence 0.9 everywhere
    y = np.r_[np.ones(7), np.zeros(3), np.zeros(7), np.ones(3)].astype(int)   # 70 % correct
    rel = calibration.reliability_table(p, y, n_bins=5)
    k = int(np.argmax(rel["n"].values))
    assert int(rel["n"][k]) == 20 and float(rel["confidence"][k]) == pytest.approx(0.9)
    assert float(rel["accuracy"][k]) == pytest.approx(0.7) and float(rel["gap"][k]) == pytest.approx(-0.2)
    assert float(rel["ece"]) == pytest.approx(0.2)
    assert rel["accuracy"].isnull().sum() == 4                 # the empty bins: nan, not 0


def test_reliability_before_and_after_the_fitted_temperature():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 20_000)
    y = (rng.random(z.size) < expit(z)).astype(int)
    s = xr.DataArray(np.stack([3.0 * z, z]), dims=("model", "sample"), coords={"model": ["sharp", "calibrated"]})
    t = {"sharp": calibration.fit_temperature(3.0 * z, y), "calibrated": 1.0}
    rel = calibration.reliability(s, y, t, n_bins=10)
    assert rel["ece"].dims == ("model", "scaling") and list(rel["scaling"].values) == list(calibration.SCALINGS)
    e = rel["ece"].sel(model="sharp")
    assert float(e.sel(scaling="fitted T")) < 0.02 < float(e.sel(scaling="T = 1"))
    # the same ECE as metrics.calibration.ece on σ(s) and σ(s/T)
    assert float(e.sel(scaling="T = 1")) == pytest.approx(calibration.ece(expit(3.0 * z), y))
    assert float(e.sel(scaling="fitted T")) == pytest.approx(calibration.ece(expit(3.0 * z / t["sharp"]), y))
    r = rel.sel(model="sharp", scaling="T = 1")
    full = r["n"].values > 500
    assert (r["gap"].values[full] < 0).all()                   # too sharp: below the diagonal
    from dfrobust.figures import robustness as rfig

    fig = rfig.reliability_figure(rel)
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == f"T = 1: ECE {float(e.sel(scaling='T = 1')):.3f}" and labels[1].startswith("fitted T = ")


def test_reliability_matches_the_ece_stored_by_radii_records():
    xv = torch.rand(48, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    net = SmallNet(2, 8)
    with torch.no_grad():
        yv = net(xv).argmax(1)
    yv[:12] = 1 - yv[:12]
    x, y = xv[:8], yv[:8]
    ds = rx.radii_records({"m": net}, x, y, None, [0.0, 0.01], [0.0, 0.1], steps=1, n_bisect=0, device="cpu",
                          val=(xv, yv))
    s = xr.DataArray(rx._fake_margin(net, xv, 16, "cpu")[None], dims=("model", "sample"), coords={"model": ["m"]})
    rel = calibration.reliability(s, yv.numpy(), ds["temperature"])
    assert float(rel["ece"].sel(model="m", scaling="T = 1")) == pytest.approx(float(ds["ece_val"].sel(model="m")))
    assert float(rel["ece"].sel(model="m", scaling="fitted T")) == \
        pytest.approx(float(ds["ece_val_fitted"].sel(model="m")))


# ----------------------------------------------------------------------------- RR at a temperature


def _radii_ds(m0, mmin, mmax, *, temperature, ids, listed=None) -> xr.Dataset:
    """Radii records built by hand: margins [model, (eps,) sample], p_adv/p_clean the attack's own at T = 1."""
    m0, mmin, mmax = (np.asarray(v, float) for v in (m0, mmin, mmax))
    models = [f"m{i}" for i in range(m0.shape[0])]
    n, e = m0.shape[1], mmin.shape[1]
    p0 = expit(m0)
    down, up = expit(mmin), expit(mmax)
    p_adv = np.where(p0[:, None] - down >= up - p0[:, None], down, up)
    pred0 = np.ones_like(m0, dtype=int)                        # ŷ = fake, the margin is z_fake − z_real
    pred_adv = np.where(mmin < 0, 0, 1)
    mes, ms = ("model", "eps", "sample"), ("model", "sample")
    ds = xr.Dataset({"margin_clean": (ms, m0), "margin_min": (mes, mmin), "margin_max": (mes, mmax),
                     "p_clean": (ms, p0), "p_adv": (mes, p_adv), "pred_clean": (ms, pred0), "pred_adv": (mes, pred_adv),
                     "in_budget": (mes, np.ones(mmin.shape, bool)), "y": ("sample", np.ones(n, int)),
                     "temperature": ("model", np.asarray(temperature, float))},
                    coords={"model": models, "eps": np.linspace(0, 0.02, e), "b": B, "sample": np.arange(n),
                            "identity": ("sample", np.asarray(ids))})
    ds.attrs["temperatures"] = str(sorted({1.0, *map(float, temperature)}) if listed is None else listed)
    return ds


def _random_margins(seed=0, models=2, n=30, e=3):
    rng = np.random.default_rng(seed)
    m0 = rng.normal(0.5, 2.0, (models, n))
    grow = np.cumsum(np.abs(rng.normal(0, 1.0, (models, e, n))), axis=1) * (np.arange(e) > 0)[None, :, None]
    return m0, m0[:, None] - grow, m0[:, None] + 0.5 * grow


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_rr_at_a_temperature_from_margins_equals_rr_from_sigma_m_over_t(t):
    m0, mmin, mmax = _random_margins()
    ds = _radii_ds(m0, mmin, mmax, temperature=[t, t], ids=np.arange(30) // 2)
    rec = calibration.records_at_temperature(ds, t)
    p0 = expit(m0 / t)[:, None]                                # by hand, from the margins
    change = np.maximum(p0 - expit(mmin / t), expit(mmax / t) - p0)
    by_hand = (change[..., None] <= np.asarray(B) + 1e-12).mean(2)       # [model, eps, b]
    rr = metrics.robust_ratio(rec, B).sel(attack="rr").transpose("model", "eps", "b").values
    np.testing.assert_array_equal(rr, by_hand)
    read = calibration.rr_at_temperature(ds, B, [t])["RR"].sel(T=t).transpose("model", "eps", "b").values
    np.testing.assert_array_equal(read, by_hand)
    np.testing.assert_array_equal(metrics.robust_accuracy(rec).values,      # RA does not move with T
                                  metrics.robust_accuracy(calibration.records_at_temperature(ds)).values)


def test_a_temperature_per_model_reads_each_model_at_its_own():
    m0, mmin, mmax = _random_margins(seed=3)
    ds = _radii_ds(m0, mmin, mmax, temperature=[0.5, 2.0], ids=np.arange(30) // 2)
    both = metrics.robust_ratio(calibration.records_at_temperature(ds, ds["temperature"]), B)
    for m, t in (("m0", 0.5), ("m1", 2.0)):
        alone = metrics.robust_ratio(calibration.records_at_temperature(ds, t), B)
        xr.testing.assert_equal(both.sel(model=m), alone.sel(model=m))
    at1 = metrics.robust_ratio(calibration.records_at_temperature(ds, 1.0), B)
    stored = metrics.robust_ratio(calibration.records_at_temperature(ds), B)
    xr.testing.assert_equal(at1, stored)                        # margins at T = 1 = the attack's probabilities


def test_records_at_a_listed_temperature_equal_a_fresh_attack_at_it():
    from test_calibration import Tempered, _data

    base = Tempered(SmallNet(2, 8), 6.0)
    x, y = _data()
    eps, b = [0.0, 0.01, 0.03, 0.1], [0.05, 0.1, 0.2, 0.3]
    stored = rx.radii_records({"a": base, "b": base}, x, y, None, eps, b, temperatures=[0.5, 1.0, 2.0], steps=3,
                              n_bisect=0, device="cpu")
    read = metrics.robust_ratio(calibration.records_at_temperature(stored, {"a": 0.5, "b": 2.0}), b)
    assert calibration.exact_at(stored, {"a": 0.5, "b": 2.0}).all()
    for m, t in (("a", 0.5), ("b", 2.0)):
        fresh = rx.radii_records({m: Tempered(base, t)}, x, y, None, eps, b, steps=3, n_bisect=0, device="cpu")
        np.testing.assert_array_equal(read.sel(model=m, attack="rr").transpose("eps", "b").values,
                                      metrics.robust_ratio(fresh, b).sel(model=m).transpose("eps", "b").values)


# ----------------------------------------------------------------------------- the claim re-decided


def _sharper_copy(t_b: float, listed=None) -> xr.Dataset:
    """Two detectors on 200 images of 100 identities (enough for RA to be shown similar: an interval is never
    narrower than about 3/n); m1's margins are exactly 2x m0's. Half the images flip at every radius > 0 (RA 0.5
    for both), with m0's P(ŷ) moving by 0.12 and m1's by 0.25."""
    n = 200
    flip = np.arange(n) % 2 == 0
    m0 = np.where(flip, 0.2, 3.0)[None].repeat(2, 0)
    lo = np.where(flip, -0.3, 2.9)
    hi = np.where(flip, 0.25, 3.05)
    mmin = np.stack([np.r_[[m0[0]], [lo, lo]]] * 2)
    mmax = np.stack([np.r_[[m0[0]], [hi, hi]]] * 2)
    scale = np.array([1.0, 2.0])[:, None]
    return _radii_ds(m0 * scale, mmin * scale[..., None], mmax * scale[..., None], temperature=[1.0, t_b],
                     ids=np.arange(n) // 2, listed=listed)


def test_the_calibrated_re_decision_at_t_1_is_the_uncalibrated_one():
    ds = _sharper_copy(1.0)                                    # both fitted temperatures 1
    d = robustness.calibrated_claims(ds, B, robustness.subclaims(), by="identity", n_boot=300, seed=0)
    t = d["table"]
    for col in ("verdict", "estimate", "interval", "(ε, b)"):
        assert (t[f"{col} at T = 1"] == t[f"{col} at fitted T"]).all()
    assert len(d["changed"]) == 0 and d["t1_gap"] == 0.0
    # ... and the T = 1 column is the chapter's rule on the stored probabilities
    direct = robustness.claim_table(calibration.records_at_temperature(ds), B, by="identity", n_boot=300, seed=0,
                                    radii="informative", alpha=0.05)
    assert t.loc[t["sub-claim"].str.startswith("Different RR"), "verdict at T = 1"].tolist() == \
        direct["RR_verdict"].tolist()
    assert "does not change it, nor any" in robustness.calibrated_sentence(d)


def test_calibration_changes_the_verdict_when_one_detector_is_a_sharper_copy():
    ds = _sharper_copy(2.0)                                    # m1 fitted at T = 2: the same detector as m0
    d = robustness.calibrated_claims(ds, B, robustness.subclaims(), by="identity", n_boot=300, seed=0)
    t = d["table"].set_index(["comparison", "sub-claim"])
    rr = t.loc[("m0 vs m1", "Different RR (ΔRR)")]
    assert rr["verdict at T = 1"] == "holds" and rr["estimate at T = 1"] == pytest.approx(0.5)
    assert rr["verdict at fitted T"] != "holds" and rr["estimate at fitted T"] == 0.0
    ra = t.loc[("m0 vs m1", "Similar RA (ΔRA)")]
    assert ra["verdict at T = 1"] == ra["verdict at fitted T"] and ra["estimate at fitted T"] == 0.0
    assert t.loc[("m0 vs m1", "The literal claim (ΔRR)"), "verdict at T = 1"] == "holds"
    assert d["headline"]["T = 1"].verdict == "holds" and d["headline"]["fitted T"].verdict != "holds"
    assert (t["n (identities)"] == 100).all()
    s = robustness.calibrated_sentence(d)
    assert "changes it" in s and "m0 vs m1, Different RR (ΔRR): holds → " in s
    assert d["exact"] == {"m0": True, "m1": True} and robustness.exactness_sentence(d).startswith("exact for every")


def test_a_fitted_temperature_the_attack_did_not_list_is_said_to_be_inexact():
    ds = _sharper_copy(2.0, listed=[1.0])
    assert calibration.exact_at(ds, ds["temperature"]).values.tolist() == [True, False]
    d = robustness.calibrated_claims(ds, B, robustness.subclaims(), by="identity", n_boot=100, seed=0)
    assert d["exact"] == {"m0": True, "m1": False}
    assert robustness.exactness_sentence(d).startswith("not exact for m1")


def test_nothing_to_re_decide_without_a_pair_or_a_fitted_temperature():
    one = _sharper_copy(2.0).isel(model=[0])
    d = robustness.calibrated_claims(one, B, robustness.subclaims(), by="identity", n_boot=10)
    assert "fewer than two detectors" in d["reason"]
    nan = _sharper_copy(2.0).assign(temperature=("model", [np.nan, np.nan]))
    d = robustness.calibrated_claims(nan, B, robustness.subclaims(), by="identity", n_boot=10)
    assert "no validation images" in d["reason"] and robustness.calibrated_sentence(d).startswith("No validation")


def test_calibration_section_on_two_tiny_detectors(tmp_path, monkeypatch):
    n = 12
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 2
    xv, yv = torch.rand(32, 3, 8, 8, generator=g), torch.arange(32) % 2
    monkeypatch.setattr(rx, "_val_images", lambda s, k, seed: (xv, yv))
    meta = pd.DataFrame({"identity": [f"id{i // 2}" for i in range(n)], "group": "g", "label": labels.numpy(),
                         "path": [f"synth/img{i}.png" for i in range(n)]})
    nets = {"m1": SmallNet(1), "m2": SmallNet(2)}
    s = SimpleNamespace(analysed=list(nets), trained={m: SimpleNamespace(model=v) for m, v in nets.items()},
                        manifest=pd.DataFrame({"label": [0, 1]}), size=8)
    p = {"claims": robustness.subclaims(), "eps_grid": [0.0, 0.01, 0.05, 0.2], "b_grid": [0.0, 0.05, 0.1, 0.2],
         "eps_ref": 0.05, "b_ref": 0.1, "radii": {"steps": 1, "n_bisect": 1, "convergence_n": 0},
         "params": {"profile": "quick", "seed": 0}}
    samples = robustness.Samples(images, labels, meta, [])
    rad = rx.radii_section(p, s, samples, by="identity", n_boot=50, seed=0, device="cpu", out_dir=tmp_path,
                           provenance={}, n_sim=2)
    cal = robustness.calibration_section(p, s, samples, rad, by="identity", n_boot=50, seed=0, device="cpu")
    v = cal.result.values
    assert v["cal_n_val"] == 32 and v["cal_ece_gap"] == "0"     # the stored ECE, recomputed
    assert v["cal_t1_gap"] == "0" and v["cal_exact"].startswith("exact for every")
    assert len(cal.result.tables["cal_claims"]) == 4           # 3 sub-claims of the pair + the headline
    assert set(cal.reliability["scaling"].values) == set(calibration.SCALINGS)
    assert "at T = 1" in v["cal_summary"] and "verdicts changed" in v["cal_summary"]
    none = robustness.calibration_section(p, s, samples, None, by="identity", n_boot=50, seed=0, device="cpu")
    assert none.reliability is None and "No detector" in none.result.values["cal_sentence"]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, match", [
    (lambda ds: calibration.reliability_table([0.5, 0.7], [0, 1], n_bins=0), r"^n_bins=0: expected an integer >= 1$"),
    (lambda ds: calibration.records_at_temperature(ds, 0.0),
     r"^temperature=0\.0 for model 'm0': expected a finite temperature > 0$"),
    (lambda ds: calibration.records_at_temperature(ds, {"m0": 1.0, "m1": -2.0}),
     r"^temperature=-2\.0 for model 'm1': expected a finite temperature > 0$"),
    (lambda ds: calibration.records_at_temperature(ds, {"m0": 1.0}), r"^temperature: no value for model 'm1'"),
    (lambda ds: calibration.exact_at(ds, float("nan")), r"^temperature=nan for model 'm0'"),
    (lambda ds: calibration.reliability(xr.DataArray([[0.1, 2.0]], dims=("model", "sample"),
                                                     coords={"model": ["m0"]}), [0, 1], -1.0),
     r"^temperature=-1\.0 for model 'm0'"),
    (lambda ds: calibration.records_at_temperature(ds.drop_vars("margin_min")), r"^radii records: missing margin_min"),
])
def test_bad_calibration_input_is_a_one_line_error_naming_the_value(call, match):
    ds = _sharper_copy(2.0)
    with pytest.raises(ValueError, match=match) as e:
        call(ds)
    assert "\n" not in str(e.value)
