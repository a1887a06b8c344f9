"""Issue 10, the attack side: each test fails on the defect it names.

ŷ as the label; the RR attack; ε-monotone records; CW-L∞ budget; CW-L2's binary search over c;
``changed`` after a round trip; the progressive driver over the registry; NES sampling/early stop.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import torch

from toys import SmallNet

from dfrobust import attacks, metrics
from dfrobust.attacks import progressive
from dfrobust.attacks.nes import MaskedNES
from dfrobust.data import sampling
from dfrobust.experiments import records

torch.set_num_threads(1)


class MeanLogit(torch.nn.Module):
    """Logits (0, k·(mean(x) − c)): P(fake) = σ(k·(mean − c)). Linear, so attacks reach the corner."""

    def __init__(self, k=20.0, p_fake_at_half=0.73, size=8, at=0.5):
        super().__init__()
        self.k = float(k)   # P(fake) = p_fake_at_half where mean(x) = at
        self.c = at - math.log(p_fake_at_half / (1 - p_fake_at_half)) / self.k
        self.input_size = size

    def forward(self, x):
        s = self.k * (x.flatten(1).mean(1) - self.c)
        return torch.stack([torch.zeros_like(s), s], 1)


def _p_hat(model, x, yhat):
    with torch.no_grad():
        return attacks.prob_of(model(x), yhat)


# ------------------------------------------------------------------------- 1. ŷ is the label

def test_yhat_attack_gives_mislabelled_samples_the_larger_change_and_rr_zero():
    # the toy: four samples with P(ŷ) = 0.73, two mislabelled; ε = 0.05
    model = MeanLogit()
    x = torch.full((4, 3, 8, 8), 0.5)
    y = torch.tensor([1, 1, 0, 0])
    yhat = model(x).argmax(1)
    assert yhat.tolist() == [1, 1, 1, 1]
    p0 = _p_hat(model, x, yhat)
    assert torch.allclose(p0, torch.tensor(0.73))
    for name in ("fgsm", "pgd"):
        atk = attacks.make_attack(name, model, eps=0.05)
        ch_y = (_p_hat(model, atk(x, y), yhat) - p0).abs()        # the old convention
        ch_hat = (_p_hat(model, atk(x, yhat), yhat) - p0).abs()   # the clean prediction
        assert (ch_hat[2:] > ch_y[2:] + 0.05).all()                # mislabelled: larger change under ŷ
        assert (ch_y[2:] <= 0.2).all() and (ch_hat > 0.2).all()
    rec = records.attack_records({"m": model}, ["fgsm", "pgd", "cwinf", "rr"], [0.0, 0.05], x, y,
                                    device="cpu", ssim=False)
    assert rec.attrs["attacked_label"] == "y_hat"
    assert rec["y"].values.tolist() == y.tolist() and rec["pred_clean"].values.tolist() == [[1, 1, 1, 1]]
    rr = metrics.robust_ratio(rec, [0.2]).sel(model="m", eps=0.05, b=0.2)
    np.testing.assert_array_equal(rr.values, 0.0)                  # the truth; attacking y gave 0.5
    # success = clean correct ∧ adversarial wrong; RA = mean 1[clean correct ∧ adversarial correct]
    assert rec["success"].sel(eps=0.05).values[0, :, :2].all() and not rec["success"].values[..., 2:].any()
    assert (metrics.correct_adv(rec).sel(eps=0.05) == False).all()  # noqa: E712 - pushed onto y still wrong
    np.testing.assert_array_equal(metrics.robust_accuracy(rec).sel(eps=0.0).values, 0.5)


# ------------------------------------------------------------------------- 2. the RR attack

def test_rr_attack_finds_at_least_pgd_ce_change_and_tries_the_up_direction():
    # linear model, P(ŷ = fake) = 0.6; half the pixels at 0 cannot go down, so pushing P(ŷ) down
    # (what PGD-CE does) moves the mean by ε/2, pushing it up moves it by ε: up is the larger change
    model = MeanLogit(k=20.0, p_fake_at_half=0.6, at=0.25)
    x = torch.zeros(4, 3, 8, 8)
    x[..., 4:] = 0.5
    yhat = model(x).argmax(1)
    assert yhat.tolist() == [1, 1, 1, 1]
    p0 = _p_hat(model, x, yhat)
    eps = 0.05
    pgd = attacks.make_attack("pgd", model, eps=eps, steps=10)(x, yhat)
    rr_atk = attacks.make_attack("rr", model, eps=eps, steps=10)
    rr = rr_atk(x, yhat)
    ch_pgd = (_p_hat(model, pgd, yhat) - p0).abs()
    ch_rr = (_p_hat(model, rr, yhat) - p0).abs()
    np.testing.assert_allclose(ch_pgd.numpy(), 0.6 - 1 / (1 + math.exp(-(math.log(1.5) - 0.5))), atol=1e-4)
    np.testing.assert_allclose(ch_rr.numpy(), 1 / (1 + math.exp(-(math.log(1.5) + 1.0))) - 0.6, atol=1e-4)
    assert (ch_rr > ch_pgd + 0.05).all() and rr_atk.last_direction.tolist() == [1, 1, 1, 1]
    assert (rr - x).abs().max() <= eps + 1e-6 and rr.min() >= 0 and rr.max() <= 1
    # on a small CNN: at least as large on average, and per sample nearly always
    net = SmallNet(1)
    xs = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        yh = net(xs).argmax(1)
    q0 = _p_hat(net, xs, yh)
    c_pgd = (_p_hat(net, attacks.make_attack("pgd", net, eps=0.05, steps=10)(xs, yh), yh) - q0).abs()
    c_rr = (_p_hat(net, attacks.make_attack("rr", net, eps=0.05, steps=10)(xs, yh), yh) - q0).abs()
    assert float(c_rr.mean()) >= float(c_pgd.mean()) - 1e-5
    assert float((c_rr >= c_pgd - 1e-3).float().mean()) >= 0.9


# ------------------------------------------------------------------------- 3. ε-monotone records

class _Flaky:
    """A non-monotone toy attack: lowers every pixel by ε at ε in {0.025, 0.1}, nothing at 0.05."""

    def __init__(self, eps):
        self.eps = eps

    def __call__(self, x, y):
        if abs(self.eps - 0.05) < 1e-12:
            return x.clone()
        return (x - self.eps).clamp(0, 1)


def test_records_are_monotone_in_eps_for_a_non_monotone_attack():
    model = MeanLogit(k=60.0)                              # flips at ε = 0.025
    x = torch.full((3, 3, 8, 8), 0.5)
    y = torch.ones(3, dtype=torch.long)
    eps = [0.0, 0.025, 0.05, 0.1]
    factory = lambda name, m, *, eps, seed=0, **kw: _Flaky(eps)  # noqa: E731
    rec = records.attack_records({"m": model}, ["pgd"], eps, x, y, device="cpu", ssim=False,
                                    attack_factory=factory)
    rr = metrics.robust_ratio(rec, [0.05]).sel(model="m", attack="pgd", b=0.05).values
    ra = metrics.robust_accuracy(rec).sel(model="m", attack="pgd").values
    np.testing.assert_array_equal(rr, [1, 0, 0, 0])   # raw: 1, 0, 1, 0
    np.testing.assert_array_equal(ra, [1, 0, 0, 0])   # raw: 1, 0, 1, 0
    at = rec.sel(model="m", attack="pgd", eps=0.05)
    np.testing.assert_allclose(at["linf"].values, 0.025, atol=1e-6)   # the norms of the kept record
    np.testing.assert_allclose(at["eps_found"].values, 0.025)
    assert at["changed"].all() and at["success"].all()
    np.testing.assert_allclose(rec["eps_found"].sel(eps=0.1).values, 0.1)   # a larger change at 0.1


def test_unsorted_eps_grid_is_cumulated_in_radius_order():
    model = MeanLogit(k=60.0)
    x = torch.full((2, 3, 8, 8), 0.5)
    factory = lambda name, m, *, eps, seed=0, **kw: _Flaky(eps)  # noqa: E731
    rec = records.attack_records({"m": model}, ["pgd"], [0.05, 0.0, 0.025], x, torch.ones(2), device="cpu",
                                    ssim=False, attack_factory=factory)
    np.testing.assert_allclose(rec["eps_found"].sel(eps=0.05).values[0, 0], 0.025)
    np.testing.assert_allclose(rec["eps_found"].sel(eps=0.0).values[0, 0], 0.0)


# ------------------------------------------------------------------------- 4. CW

def test_cw_c_search_finds_a_smaller_l2_than_a_fixed_c():
    model = MeanLogit(k=20.0)                 # flips when mean(x) < c ≈ 0.45: minimal L2 = (0.5 − c)·sqrt(d)
    x = torch.full((2, 3, 8, 8), 0.5)
    yhat = torch.ones(2, dtype=torch.long)
    d = 3 * 8 * 8
    exact = (0.5 - model.c) * math.sqrt(d)

    def l2_of(atk):
        adv = atk(x, yhat)
        flipped = model(adv).argmax(1) != yhat
        l2 = (adv - x).flatten(1).norm(dim=1)
        return torch.where(flipped, l2, torch.full_like(l2, float("inf")))

    small = l2_of(attacks.FixedCW(model, c=0.01, steps=100, lr=0.01))   # finds nothing: c too small
    large = l2_of(attacks.FixedCW(model, c=100.0, steps=100, lr=0.01))  # overshoots
    search = attacks.make_attack("cw", model, eps=0.0, c_init=0.01, c_min=1e-3, c_max=1e3, search_steps=8,
                                 steps=100, lr=0.01)
    adv = search(x, yhat)
    assert torch.isinf(small).all()
    found = torch.as_tensor(search.last_l2)
    assert search.last_found.all() and (found < small).all() and (found <= large * 1.01).all()
    assert (found < 1.5 * exact).all() and (found >= exact * 0.999).all()
    assert (model(adv).argmax(1) != yhat).all()
    assert np.isfinite(search.last_c).all()


def test_minimal_records_layout_and_inf_when_nothing_found():
    model = MeanLogit(k=20.0)
    x = torch.full((3, 3, 8, 8), 0.5)
    x[2] = 1.0                                      # P(fake) ≈ 1: no flip within a short search
    y = torch.tensor([1, 0, 1])
    rec = records.minimal_records({"m": model}, x, y, device="cpu",
                                     cw_kw={"c_init": 0.1, "search_steps": 2, "steps": 30, "lr": 0.01})
    assert rec.attrs["kind"] == "minimal_records" and rec.attrs["attacked_label"] == "y_hat"
    assert dict(rec["l2_min"].sizes) == {"model": 1, "sample": 3}
    found = rec["found"].values[0]
    assert found[:2].all() and not found[2]
    assert np.isinf(rec["l2_min"].values[0, 2]) and np.isnan(rec["c"].values[0, 2])
    assert rec["p_adv"].values[0, 2] == pytest.approx(rec["p_clean"].values[0, 2])
    assert (rec["p_adv"].values[0, :2] < 0.5).all()          # P(ŷ) at the minimal δ: flipped
    with pytest.raises(ValueError, match="c_min"):
        records.minimal_records({"m": model}, x, y, device="cpu", cw_kw={"c_min": -1})


def test_cw_in_the_sweep_is_an_error_naming_cwinf():
    with pytest.raises(ValueError, match="use cwinf in the sweep"):
        records.attack_records({"m": MeanLogit()}, ["cw"], [0.1], torch.rand(2, 3, 8, 8), torch.ones(2))


def test_changed_is_false_for_an_untouched_image_after_a_round_trip():
    model = MeanLogit()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    cw = attacks.FixedCW(model)
    trip = cw.tanh_space(cw.inverse_tanh_space(x)).float()           # CW's tanh-space round trip
    assert 0 < (trip - x).abs().max() < 1e-6
    for untouched in (trip, x.double().float()):
        factory = lambda name, m, *, eps, seed=0, **kw: (lambda a, b: untouched.clone())  # noqa: E731
        rec = records.attack_records({"m": model}, ["pgd"], [0.0, 0.05], x, torch.ones(4), device="cpu",
                                        ssim=False, attack_factory=factory)
        assert not rec["changed"].any()
        assert (metrics.prob_change(rec) == 0).all()


# ------------------------------------------------------------------------- 5. progressive driver

def _video_meta(n_videos=2, T=3):
    return pd.DataFrame({"video_id": [f"v{i}" for i in range(n_videos) for _ in range(T)],
                         "frame_index": [t for _ in range(n_videos) for t in range(T)]})


class _Spy:
    calls: list = []

    def __init__(self, eps):
        self.eps = eps

    def __call__(self, x, y, start=None):
        _Spy.calls.append(None if start is None else start.clone())
        return (x + self.eps).clamp(0, 1)


def test_progressive_calls_the_registry_attack_with_the_previous_delta():
    attacks.register("spy", norm="linf", build=lambda model, *, eps, seed: _Spy(eps), start=True)
    try:
        meta = _video_meta(2, 3)
        x = torch.full((6, 3, 8, 8), 0.5)
        _Spy.calls = []
        atk = progressive.ProgressiveAttack("spy", MeanLogit(), sampling.video_order(meta), eps=0.03)
        atk(x, torch.ones(6, dtype=torch.long))
        assert len(_Spy.calls) == 3 and _Spy.calls[0] is None            # one batch per frame position
        for s in _Spy.calls[1:]:
            torch.testing.assert_close(s, torch.full((2, 3, 8, 8), 0.03))  # δ of frame t−1
    finally:
        for view in (attacks.REGISTRY, attacks.NORM, attacks.DEFAULTS):
            view.pop("spy", None)
        attacks.ATTACKS.remove("spy")


@pytest.mark.parametrize("name", attacks.budgeted_attacks(start=True))
def test_progressive_accepts_every_budgeted_attack(name):
    meta = _video_meta(2, 3)
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    model = SmallNet(3)
    with torch.no_grad():
        yhat = model(x).argmax(1)
    eps = 0.04 if attacks.NORM[name] == "linf" else attacks.l2_radius(0.04, x.shape[1:])
    kw = {} if name == "fgsm" else {"steps": 2}
    order = sampling.video_order(meta)
    prog = progressive.ProgressiveAttack(name, model, order, eps=eps, seed=0, **kw)
    fresh = progressive.ProgressiveAttack(name, model, order, eps=eps, seed=0, carry=False, **kw)
    a, b = prog(x, yhat), fresh(x, yhat)
    d = (a - x).flatten(1)
    norm = d.abs().amax(1) if attacks.NORM[name] == "linf" else d.norm(dim=1)
    assert (norm <= eps * (1 + 1e-5) + 1e-6).all() and a.min() >= 0 and a.max() <= 1
    first = [o[0] for o in order]
    later = np.concatenate([o[1:] for o in order])
    assert torch.equal(a[first], b[first])
    assert not torch.allclose(a[later], b[later])
    # and through the record builder, with the same budget checks
    rec = records.attack_records({"m": model}, [name], [0.0, 0.04], x, yhat, meta, device="cpu", ssim=False,
                                    attack_kw={name: kw}, attack_factory=progressive.progressive_factory(meta))
    assert rec.sizes["sample"] == 6


def test_progressive_refuses_cw():
    with pytest.raises(ValueError, match="no progressive version"):
        progressive.ProgressiveAttack("cw", MeanLogit(), sampling.video_order(_video_meta()), eps=0.1)


# ------------------------------------------------------------------------- 6. NES

class _Recorder(torch.nn.Module):
    """Linear black box that records each query batch and requires inference mode."""

    def __init__(self, bias, size=8):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3 * size * size, generator=torch.Generator().manual_seed(0)))
        self.bias = bias
        self.batches, self.queries = [], []

    def forward(self, x):
        assert torch.is_inference_mode_enabled(), "NES forwards must run under torch.inference_mode"
        self.batches.append(len(x))
        self.queries.append(x.clone())
        z = (x.flatten(1) - 0.5) @ self.w * 0.01 + self.bias
        return torch.stack([-z, z], 1)


def test_nes_early_stop_drops_finished_samples_and_runs_in_inference_mode():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = _Recorder(bias=50.0)            # every image is "fake" and stays so
    labels = torch.tensor([0, 1])           # sample 0 (label real) is already flipped: it stops at once
    atk = MaskedNES(model, steps=4, n_pairs=3, seed=0, batch_size=1000)
    adv = atk(x, labels)
    q = 3
    assert model.batches[0] == 2 * (1 + 2 * q)              # step 1: both samples
    assert all(b == 1 + 2 * q for b in model.batches[1:-1])  # later steps: sample 1 only
    assert atk.last_steps.tolist() == [0, 4] and atk.last_success.tolist() == [True, False]
    assert not adv.is_inference()                            # usable in the caller's autograd
    adv.requires_grad_(True)


def test_nes_samples_are_symmetric_unclipped_and_only_queries_are_clipped():
    x = torch.full((1, 3, 8, 8), 0.5)
    x[..., :4] = 1.0                                        # saturated pixels
    x[..., 4:6] = 0.0
    u = torch.randn((1, 5, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    plus, minus = MaskedNES.antithetic(x, u, 0.01)
    torch.testing.assert_close(plus + minus, 2 * x[:, None].expand_as(plus), rtol=0, atol=1e-7)  # symmetric
    assert plus.max() > 1 and minus.min() < 0                # not clipped
    model = _Recorder(bias=50.0)
    MaskedNES(model, steps=1, n_pairs=5, sigma=0.01, seed=0, batch_size=1000)(x, torch.ones(1, dtype=torch.long))
    step = model.queries[0]
    assert step.min() >= 0 and step.max() <= 1              # the queries are clipped
    # the query pair is the clipped symmetric pair: where one side is clipped, the other is not
    gen = MaskedNES.generators(0, 1, "cpu")[0]               # the sample's own noise stream
    u0 = torch.randn((5, 3, 8, 8), generator=gen)[None]
    p0, m0 = MaskedNES.antithetic(x, u0, 0.01)
    torch.testing.assert_close(step[1:6], p0[0].clamp(0, 1))
    torch.testing.assert_close(step[6:], m0[0].clamp(0, 1))
    # the estimate uses u itself (not the clipped displacement): a score linear in the sample
    lp = (p0.flatten(2) * 1.0).sum(-1)
    lm = (m0.flatten(2) * 1.0).sum(-1)
    g = MaskedNES.estimate(lp, lm, u0, 0.01)
    torch.testing.assert_close(g, (u0.flatten(2).sum(-1)[..., None, None, None] * u0).mean(1), rtol=1e-3, atol=1e-3)


class _CountingNet(torch.nn.Module):
    """Wraps a model and counts the images it is asked to score."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.input_size, self.seen = inner, inner.input_size, 0

    def forward(self, x):
        self.seen += len(x)
        return self.inner(x)


def test_settled_samples_are_not_attacked_at_larger_radii_and_ra_rr_do_not_change():
    torch.manual_seed(0)
    x = torch.rand(24, 3, 8, 8)
    y = torch.randint(0, 2, (24,))
    eps = [0.0, 0.02, 0.1, 0.3]
    b_grid = metrics.linspace_grid(0.2, 21, what="b")
    kw = {"pgd": {"steps": 5, "random_start": False}, "rr": {"steps": 5, "random_start": False}}
    out = {}
    for settle in (None, 0.2):
        net = _CountingNet(SmallNet(2))
        rec = records.attack_records({"m": net}, ["pgd", "rr"], eps, x, y, device="cpu", ssim=False,
                                        attack_kw=kw, batch_size=8, settle_b=settle)
        out[settle] = (rec, net.seen)
    full, part = out[None][0], out[0.2][0]
    assert out[0.2][1] < 0.8 * out[None][1]           # fewer images scored: settled ones were skipped
    xr.testing.assert_equal(metrics.robust_accuracy(full), metrics.robust_accuracy(part))
    xr.testing.assert_equal(metrics.robust_ratio(full, b_grid), metrics.robust_ratio(part, b_grid))
    assert (part["eps_found"].sel(eps=0.3) < 0.3).any()   # kept records of settled samples: a smaller radius
    assert part.attrs["settle_b"].startswith("0.2")
    with pytest.raises(ValueError, match="settle_b=1.5"):
        records.attack_records({"m": SmallNet(2)}, ["pgd"], eps, x, y, device="cpu", settle_b=1.5)


def test_rr_attack_runs_up_only_where_it_can_win_and_keeps_the_same_change():
    net = _CountingNet(MeanLogit(k=60.0))
    x = torch.linspace(0.45, 0.52, 16).view(16, 1, 1, 1).expand(16, 3, 8, 8).clone()   # P(ŷ) from 0.5 to 0.9
    with torch.no_grad():
        yhat = net.inner(x).argmax(1)
    kw = dict(eps=0.02, alpha=0.008, steps=4, random_start=False)
    rr = attacks.RRAttack(net, **kw)
    adv = rr(x, yhat)
    # reference: both directions on every sample, the larger kept change per sample
    ref = [attacks.SeededPGD(net.inner, loss=loss, keep_best=True, **kw) for loss in ("down", "up")]
    for r in ref:
        r(x, yhat)
    want = torch.maximum(ref[0].last_change, ref[1].last_change)
    got = (_p_hat(net.inner, adv, yhat) - _p_hat(net.inner, x, yhat)).abs()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert rr.up.last_change is not None and 0 < len(rr.up.last_change) < len(x)   # up ran on some, not all
