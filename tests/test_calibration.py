"""Calibration (issue #23.2): RR at a temperature from stored margins equals a fresh attack at that
temperature, RA does not move with T; ECE, reliability bins and the fitted temperature on constructed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit

from toys import SmallNet

from dfrobust import metrics
from dfrobust.experiments import radii as rx
from dfrobust.metrics import calibration

torch.set_num_threads(1)

EPS = [0.0, 0.01, 0.03, 0.1]
B = [0.05, 0.1, 0.2, 0.3]


class Tempered(torch.nn.Module):
    """A detector's logits divided by T: P_T(ŷ) = σ(m/T)."""

    def __init__(self, net, t):
        super().__init__()
        self.net, self.t, self.input_size = net, float(t), net.input_size

    def forward(self, x):
        return self.net(x) / self.t


def _data(n=16):
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    return x, torch.tensor([0, 1] * (n // 2))


def test_rr_at_a_temperature_from_stored_margins_equals_a_fresh_attack_at_that_temperature():
    base = Tempered(SmallNet(2, 8), 6.0)                     # a detector that is not saturated
    x, y = _data()
    temps = [0.5, 1.0, 2.0]
    kw = dict(steps=3, n_bisect=0, device="cpu")
    stored = rx.radii_records({"m": base}, x, y, None, EPS, B, temperatures=temps, **kw)
    read = calibration.rr_at_temperature(stored, B, temps)
    ras = set()
    for t in temps:
        fresh = rx.radii_records({"m": Tempered(base, t)}, x, y, None, EPS, B, **kw)
        rr_fresh = metrics.robust_ratio(fresh, B).transpose("model", "eps", "b").values
        np.testing.assert_array_equal(read["RR"].sel(T=t).transpose("model", "eps", "b").values, rr_fresh)
        change = calibration.change_at_temperature(stored["margin_clean"], stored["margin_min"],
                                                   stored["margin_max"], t)
        dims = ("model", "eps", "sample")
        np.testing.assert_allclose(change.transpose(*dims).values, metrics.prob_change(fresh).transpose(*dims).values,
                                   atol=2e-6)
        ra = metrics.robust_accuracy(fresh).values
        np.testing.assert_array_equal(ra, read["RA"].values)   # RA does not move with T
        ras.add(tuple(ra.ravel()))
    assert len(ras) == 1
    rr = read["RR"].sel(model="m", eps=0.03)
    assert not np.allclose(rr.sel(T=0.5), rr.sel(T=2.0))     # the temperature does move RR
    unflipped = read["RR_unflipped"]
    assert ((unflipped >= read["RR"] - 1e-12) | unflipped.isnull()).all()


class Kink(torch.nn.Module):
    """Margin u = 20·(mean(x) − 0.39) + 3·relu(u − 2.2): at x = 0.5 it is 2.2 and rises four times faster
    than it falls, so at T = 1 the down run wins (the up run is skipped) and at T = 2 the up run does."""

    input_size = 8

    def forward(self, x):
        u = 20.0 * (x.flatten(1).mean(1) - 0.39)
        return torch.stack([torch.zeros_like(u), u + 3.0 * torch.relu(u - 2.2)], 1)


def test_the_up_run_shortcut_stays_exact_at_every_temperature_listed():
    x, y = torch.full((2, 3, 8, 8), 0.5), torch.tensor([1, 1])
    kw = dict(steps=3, n_bisect=0, device="cpu")
    eps, b = [0.0, 0.075], [0.2]
    fresh = rx.radii_records({"m": Tempered(Kink(), 2.0)}, x, y, None, eps, b, **kw)
    assert not metrics.robust_per_sample(fresh, b).sel(eps=0.075).any()     # at T = 2 the up run moves P by > 0.2
    for temps, exact in (([1.0, 2.0], True), ([1.0], False)):
        stored = rx.radii_records({"m": Kink()}, x, y, None, eps, b, temperatures=temps, **kw)
        rr = calibration.rr_at_temperature(stored, b, [2.0])["RR"].sel(eps=0.075).values.ravel()
        assert (rr == 0.0).all() == exact                 # without T = 2 listed the up run was skipped


def test_fit_temperature_recovers_the_temperature_of_overconfident_scores():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)                                # calibrated log-odds
    y = (rng.random(z.size) < expit(z)).astype(int)
    t = calibration.fit_temperature(3.0 * z, y)                # scores 3x too confident
    assert t == pytest.approx(3.0, rel=0.05)
    before, after = calibration.ece(expit(3.0 * z), y), calibration.ece(expit(3.0 * z / t), y)
    assert after < 0.02 < before


def test_reliability_bins_and_ece_by_hand():
    p = np.array([0.9, 0.8, 0.2, 0.6, 0.45])                   # confidences 0.9, 0.8, 0.8, 0.6, 0.55
    y = np.array([1, 0, 0, 1, 1])                              # correct: yes, no, yes, yes, no
    bins = calibration.reliability_bins(p, y, n_bins=5)        # edges 0.5, 0.6, ..., 1.0
    assert bins["n"].tolist() == [1, 1, 0, 2, 1]
    assert bins.loc[3, "accuracy"] == 0.5 and bins.loc[3, "confidence"] == pytest.approx(0.8)
    expected = (abs(0 - 0.55) + abs(1 - 0.6) + 2 * abs(0.5 - 0.8) + abs(1 - 0.9)) / 5
    assert calibration.ece(p, y, n_bins=5) == pytest.approx(expected)


@pytest.mark.parametrize("call, match", [
    (lambda: calibration.ece([0.5, 1.2], [0, 1]), "probabilities"),
    (lambda: calibration.ece([0.5], [0, 1]), "1 probabilities for 2 labels"),
    (lambda: calibration.reliability_bins([0.5], [2]), "expected 0"),
    (lambda: calibration.reliability_bins([0.5], [1], n_bins=0), "n_bins=0"),
    (lambda: calibration.fit_temperature([1.0, np.nan], [0, 1]), "probabilities"),
])
def test_bad_calibration_input_is_one_line(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_radii_records_fit_each_detectors_temperature_on_validation():
    x, y = _data(n=8)
    xv = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    net = SmallNet(2, 8)
    with torch.no_grad():
        yv = net(xv).argmax(1)                                 # labels the detector gets right: T should rise
    yv[:16] = 1 - yv[:16]                                      # ... a quarter wrong: overconfident at T = 1
    ds = rx.radii_records({"m": net}, x, y, None, EPS, B, steps=1, n_bisect=0, device="cpu", val=(xv, yv))
    t = float(ds["temperature"].sel(model="m"))
    assert t > 1 and float(ds["ece_val_fitted"].sel(model="m")) < float(ds["ece_val"].sel(model="m"))
    no_val = rx.radii_records({"m": net}, x, y, None, EPS, B, steps=1, n_bisect=0, device="cpu")
    assert no_val["temperature"].isnull().all()
