"""Certified margin bounds (IBP, CROWN) and certified records.

Soundness: on toy networks (every layer kind the MesoNets use) and on random-weight MesoNets at
32 px, no point found in the ball — 10^4 uniform samples plus the box corners reachable by sign
patterns on the toy nets; fewer on the MesoNets (400 per image, they are ~100x bigger) — PGD on
the margin in both directions (the attack that maximises |ΔP(ŷ)|, since P(ŷ) = σ(m) is monotone
in m), and the package's PGD on cross-entropy, ever leaves [m_lo, m_hi] or exceeds the certified
change. Exactness: on a linear network CROWN equals the extremes over all 2^12 box corners.
Ordering: CROWN is never looser than IBP, and strictly tighter where IBP is loose.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from dfrobust.certify import METHODS, certified_records, margin_bounds, trace
from dfrobust.metrics import largest_certified_eps, rr_certified
from dfrobust.certify.records import certified_change
from dfrobust.models import build

TOL = 1e-7  # float64 bounds vs float64 forward passes


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Inception(nn.Module):
    """Two branches (one dilated) concatenated on channels, as MesoInception4's layers."""

    def __init__(self, cin):
        super().__init__()
        self.a = nn.Conv2d(cin, 2, 1)
        self.b1 = nn.Conv2d(cin, 2, 1)
        self.b2 = nn.Conv2d(2, 3, 3, padding=2, dilation=2)

    def forward(self, x):
        return torch.cat([torch.relu(self.a(x)), torch.relu(self.b2(torch.relu(self.b1(x))))], dim=1)


class Head(nn.Module):
    """NHWC flatten, dense, LeakyReLU, dropout, dense to one logit, squeezed (MesoNet's head)."""

    def __init__(self, features, out=1):
        super().__init__()
        self.d1, self.d2, self.drop = nn.Linear(features, 6), nn.Linear(6, out), nn.Dropout(0.5)
        self.out = out

    def forward(self, x):
        x = x.permute(0, 2, 3, 1).flatten(1)
        x = nn.functional.leaky_relu(self.d1(self.drop(x)), 0.1)
        y = self.d2(x)
        return y.squeeze(1) if self.out == 1 else y


def _bn(c):
    bn = nn.BatchNorm2d(c, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.3, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return bn


def toy_nets():
    torch.manual_seed(0)
    meso_like = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), _bn(4), nn.MaxPool2d(2, ceil_mode=True),
                              nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), _bn(4), nn.MaxPool2d(2, ceil_mode=True),
                              Head(4 * 2 * 2))
    incep = nn.Sequential(Inception(3), _bn(5), nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(5, 3, 3, padding=1),
                          nn.LeakyReLU(0.2), nn.MaxPool2d(3, ceil_mode=True), nn.Flatten(), nn.Linear(12, 2))
    return {"meso_like": (meso_like.double().eval(), 1), "inception_two_logits": (incep.double().eval(), 2)}


def _margin(net, n_out, x, pred):
    out = net(x).reshape(len(x), -1)
    logits = torch.cat([out, torch.zeros_like(out)], 1) if n_out == 1 else out
    idx = torch.arange(len(x))
    return logits[idx, pred] - logits[idx, 1 - pred]


def _images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    x[:, :, 0, :] = 0.0  # pixels on the border of [0, 1] exercise the clipping of the box
    x[:, :, -1, :] = 1.0
    return x


def _box(x, eps):
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def _pgd_margin(f, x, lo, hi, direction, steps=40, seed=0):
    """Extreme of direction·m found by sign-gradient steps inside the box (random start)."""
    g = torch.Generator().manual_seed(seed)
    z = lo + (hi - lo) * torch.rand(x.shape, generator=g, dtype=x.dtype)
    best = torch.full((len(x),), -np.inf, dtype=x.dtype)
    step = (hi - lo).amax() / 8
    for _ in range(steps):
        z = z.detach().requires_grad_(True)
        val = direction * f(z)
        best = torch.maximum(best, val.detach())
        (grad,) = torch.autograd.grad(val.sum(), z)
        z = torch.max(torch.min(z + step * grad.sign(), hi), lo)
    return direction * torch.maximum(best, direction * f(z).detach())


def _sampled_extremes(f, x, lo, hi, n_points, seed=0, chunk=500):
    """min/max of the margin over uniform points and random corners of the box, per sample."""
    g = torch.Generator().manual_seed(seed)
    mins, maxs = [], []
    for i in range(len(x)):
        vals = []
        for s in range(0, n_points, chunk):
            k = min(chunk, n_points - s)
            u = torch.rand(k, *x.shape[1:], generator=g, dtype=x.dtype)
            if s % (2 * chunk) == 0:
                u = (u > 0.5).to(x.dtype)  # every other chunk: corners of the box
            pts = lo[i] + (hi[i] - lo[i]) * u
            vals.append(f(pts, i))
        v = torch.cat(vals)
        mins.append(v.min())
        maxs.append(v.max())
    return torch.stack(mins), torch.stack(maxs)


# ---------------------------------------------------------------------------- toy networks

@pytest.mark.parametrize("name", ["meso_like", "inception_two_logits"])
@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2])
def test_toy_bounds_sound_against_sampling_and_pgd(name, eps):
    net, n_out = toy_nets()[name]
    x = _images(3, 7, seed=1)
    pred = (_margin(net, n_out, x, torch.zeros(3, dtype=torch.long)) <= 0).long()  # ŷ = argmax (ties → fake)
    lo, hi = _box(x, eps)
    g = trace(net, (3, 7, 7))
    res = {m: margin_bounds(g, x, eps, method=m, pred=pred) for m in METHODS}
    m_clean = _margin(net, n_out, x, pred).detach()
    assert torch.allclose(res["crown"].margin_clean, m_clean, atol=1e-12)

    f_i = lambda pts, i: _margin(net, n_out, pts, pred[i].expand(len(pts))).detach()  # noqa: E731
    s_lo, s_hi = _sampled_extremes(f_i, x, lo, hi, 10_000)
    f = lambda z: _margin(net, n_out, z, pred)  # noqa: E731
    p_lo, p_hi = _pgd_margin(f, x, lo, hi, -1.0), _pgd_margin(f, x, lo, hi, +1.0)
    found_lo, found_hi = torch.minimum(s_lo, p_lo), torch.maximum(s_hi, p_hi)
    for m, r in res.items():
        assert (r.m_lo <= found_lo + TOL).all(), (m, r.m_lo, found_lo)
        assert (r.m_hi >= found_hi - TOL).all(), (m, r.m_hi, found_hi)
        # the probability change that any found point makes is within the certified change
        cert = certified_change(r.m_lo.numpy(), r.m_hi.numpy(), m_clean.numpy())
        p = torch.sigmoid(m_clean)
        found = torch.maximum(p - torch.sigmoid(found_lo), torch.sigmoid(found_hi) - p).numpy()
        assert (found <= cert + TOL).all()
    # CROWN never looser than IBP, and strictly tighter somewhere (else it is IBP in disguise)
    w_c = res["crown"].m_hi - res["crown"].m_lo
    w_i = res["ibp"].m_hi - res["ibp"].m_lo
    assert (w_c <= w_i + 1e-12).all()
    assert (w_c < w_i - 1e-9).any()
    # alpha-CROWN never looser than CROWN, and its lower bound strictly tighter (its slopes move)
    w_a = res["alpha-crown"].m_hi - res["alpha-crown"].m_lo
    assert (w_a <= w_c + 1e-12).all()
    assert (res["alpha-crown"].m_lo > res["crown"].m_lo + 1e-6).any()


def test_crown_budget_is_sound_and_between_ibp_and_full_crown():
    net, n_out = toy_nets()["meso_like"]
    x = _images(3, 7, seed=11)
    g = trace(net, (3, 7, 7))
    pred = torch.zeros(3, dtype=torch.long)
    eps = 0.05
    w = {}
    for budget in (0, 2, None):
        r = margin_bounds(g, x, eps, method="crown", pred=pred, crown_budget=budget)
        w[budget] = r.m_hi - r.m_lo
        lo, hi = _box(x, eps)
        f_i = lambda pts, i: _margin(net, n_out, pts, pred[i].expand(len(pts))).detach()  # noqa: E731
        s_lo, s_hi = _sampled_extremes(f_i, x, lo, hi, 2000, seed=3)
        assert (r.m_lo <= s_lo + TOL).all() and (r.m_hi >= s_hi - TOL).all()
    ibp = margin_bounds(g, x, eps, method="ibp", pred=pred)
    assert ((w[0] <= ibp.m_hi - ibp.m_lo + 1e-12)).all()
    assert (w[None] <= w[0] + 1e-12).all() and (w[None] < w[0] - 1e-9).any()


def test_pgd_ce_from_the_package_stays_within_the_certificate():
    from dfrobust.attacks import make_attack

    net, n_out = toy_nets()["meso_like"]
    net = copy.deepcopy(net).float()

    class TwoLogits(nn.Module):  # the detector interface torchattacks expects
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            z = self.inner(x)
            return torch.stack([z, torch.zeros_like(z)], 1)

    det = TwoLogits(net).eval()
    x = _images(4, 7, seed=2).float()
    with torch.no_grad():
        pred = (det(x).softmax(1)[:, 1] >= 0.5).long()
    for eps in (0.02, 0.1):
        r = margin_bounds(net, x, eps, method="crown", pred=pred, input_shape=(3, 7, 7))
        cert = certified_change(r.m_lo.numpy(), r.m_hi.numpy(), r.margin_clean.numpy())
        adv = make_attack("pgd", det, eps=eps, seed=0, steps=20)(x, pred)
        assert float((adv - x).abs().max()) <= eps + 1e-6
        with torch.no_grad():
            p0 = det(x).softmax(1)[torch.arange(4), pred]
            p1 = det(adv).softmax(1)[torch.arange(4), pred]
        assert ((p1 - p0).abs().numpy() <= cert + 1e-5).all()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.1)])
def test_one_hidden_layer_against_a_dense_grid(act):
    """Two inputs: a 301x301 grid finds the true extremes (to the grid's resolution), where a
    sound-looking but wrong relaxation (e.g. a chord without its intercept) would fall short."""
    u = torch.linspace(0, 1, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).view(-1, 1, 1, 2)
    for seed in range(6):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Flatten(), nn.Linear(2, 6), act, nn.Linear(6, 1)).double().eval()
        x = torch.rand(1, 1, 1, 2, dtype=torch.float64) * 0.6 + 0.2
        for eps in (0.05, 0.2):
            lo, hi = _box(x, eps)
            with torch.no_grad():
                z = net(lo + (hi - lo) * grid).view(-1)
            with torch.no_grad():
                step = float((hi - lo).max()) / 300 * float(net[1].weight.abs().sum(1).max() * net[3].weight.abs().sum())
            for method in ("ibp", "crown"):
                r = margin_bounds(net, x, eps, method=method, pred=torch.zeros(1, dtype=torch.long),
                                  input_shape=(1, 1, 2))
                assert float(r.m_lo) <= float(z.min()) + TOL, (seed, eps, method)
                assert float(r.m_hi) >= float(z.max()) - TOL, (seed, eps, method)
                if method == "crown":  # and not absurdly loose: within the relaxation's reach
                    assert float(r.m_hi - r.m_lo) <= 4 * float(z.max() - z.min()) + step + 1e-9


def test_linear_network_matches_corner_enumeration():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 3, 2, padding=1), _bn(3), nn.MaxPool2d(1), nn.Flatten(),
                        nn.Linear(27, 5), nn.Dropout(0.3), nn.Linear(5, 1)).double().eval()
    x = _images(2, 2, seed=4)  # 12 input values -> 4096 corners
    x[1, 0] = 0.003  # partly clipped box
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=12)), dtype=torch.float64).view(-1, 3, 2, 2)
    for eps in (0.01, 0.1):
        lo, hi = _box(x, eps)
        g = trace(net, (3, 2, 2))
        for i in range(2):
            pts = lo[i] + (hi[i] - lo[i]) * corners
            with torch.no_grad():
                z = net(pts).view(-1)
            pred = torch.zeros(1, dtype=torch.long)  # margin = z (ŷ = real)
            c = margin_bounds(g, x[i:i + 1], eps, method="crown", pred=pred)
            b = margin_bounds(g, x[i:i + 1], eps, method="ibp", pred=pred)
            assert float(c.m_lo) == pytest.approx(float(z.min()), abs=1e-10)
            assert float(c.m_hi) == pytest.approx(float(z.max()), abs=1e-10)
            # IBP is sound but loose through two dense layers
            assert float(b.m_lo) <= float(z.min()) + 1e-12 and float(b.m_hi) >= float(z.max()) - 1e-12
            assert float(b.m_hi - b.m_lo) > float(c.m_hi - c.m_lo) + 1e-6


def test_single_layer_ibp_is_exact_and_eps_zero_is_the_point():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 1)).double()
    x = _images(1, 2, seed=6)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=12)), dtype=torch.float64).view(-1, 3, 2, 2)
    lo, hi = _box(x, 0.05)
    z = net(lo + (hi - lo) * corners).detach().view(-1)
    b = margin_bounds(net, x, 0.05, method="ibp", pred=torch.zeros(1, dtype=torch.long), input_shape=(3, 2, 2))
    assert float(b.m_lo) == pytest.approx(float(z.min()), abs=1e-12)
    assert float(b.m_hi) == pytest.approx(float(z.max()), abs=1e-12)
    r = margin_bounds(net, x, 0.0, method="crown", input_shape=(3, 2, 2))
    assert torch.equal(r.m_lo, r.margin_clean) and torch.equal(r.m_hi, r.margin_clean)


# ---------------------------------------------------------------------------- random graphs, overlapping pools

_POOLS = [dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2, padding=1),
          dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=(1, 2), stride=1),
          dict(kernel_size=2, stride=1), dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2, ceil_mode=True)]


class RandomNet(nn.Module):
    """conv → BN (scales of both signs) → ReLU/LeakyReLU → max-pool → two concatenated branches →
    max-pool → dense head, every size, slope and pool geometry drawn from ``seed``."""

    def __init__(self, seed, size=7):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def draw(n):
            return int(torch.randint(n, (1,), generator=g))

        def act():
            return nn.ReLU() if draw(2) else nn.LeakyReLU(float(torch.rand(1, generator=g)))

        torch.manual_seed(seed)
        c1, k = 2 + draw(3), 1 + 2 * draw(2)
        self.conv = nn.Conv2d(3, c1, k, padding=k // 2 + draw(2))
        self.bn = nn.BatchNorm2d(c1)
        with torch.no_grad():
            self.bn.weight.uniform_(-1.5, 1.5)
            self.bn.bias.uniform_(-0.3, 0.3)
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.3, 2.0)
        self.act1, self.act2, self.act3 = act(), act(), act()
        self.pool1 = nn.MaxPool2d(**_POOLS[draw(len(_POOLS))])
        self.b1 = nn.Conv2d(c1, 1 + draw(2), 1)
        self.b2 = nn.Conv2d(c1, 2, 3, padding=2, dilation=2)
        self.pool2 = nn.MaxPool2d(**_POOLS[draw(len(_POOLS))])
        with torch.no_grad():
            feat = self._features(torch.zeros(1, 3, size, size)).shape[1]
        self.n_out = 1 + draw(2)
        self.d1, self.d2 = nn.Linear(feat, 5), nn.Linear(5, self.n_out)

    def _features(self, x):
        x = self.pool1(self.act1(self.bn(self.conv(x))))
        x = torch.cat([torch.relu(self.b1(x)), self.act2(self.b2(x))], dim=1)
        return self.pool2(x).flatten(1)

    def forward(self, x):
        y = self.d2(self.act3(self.d1(self._features(x))))
        return y.squeeze(1) if self.n_out == 1 else y


@pytest.mark.parametrize("seed", range(8))
def test_random_graphs_sound_and_ordered(seed):
    """Random supported graphs (negative BN scales, overlapping and padded pools, concatenations,
    LeakyReLU slopes in [0, 1]): no sampled point or PGD point leaves any method's bounds, and each
    method is never looser than the one it refines (IBP ≥ CROWN ≥ alpha-CROWN in width)."""
    net = RandomNet(seed).double().eval()
    x = _images(2, 7, seed=seed)
    pred = (_margin(net, net.n_out, x, torch.zeros(2, dtype=torch.long)) <= 0).long().detach()
    g = trace(net, (3, 7, 7))
    for eps in (0.02, 0.1):
        lo, hi = _box(x, eps)
        s_lo, s_hi = _sampled_extremes(lambda p, i: _margin(net, net.n_out, p, pred[i].expand(len(p))).detach(),
                                       x, lo, hi, 3000, seed=seed)
        f = lambda z: _margin(net, net.n_out, z, pred)  # noqa: E731
        found_lo = torch.minimum(s_lo, _pgd_margin(f, x, lo, hi, -1.0, steps=20))
        found_hi = torch.maximum(s_hi, _pgd_margin(f, x, lo, hi, +1.0, steps=20))
        width = {}
        for m in METHODS:
            r = margin_bounds(g, x, eps, method=m, pred=pred)
            assert (r.m_lo <= found_lo + TOL).all(), (m, eps, r.m_lo, found_lo)
            assert (r.m_hi >= found_hi - TOL).all(), (m, eps, r.m_hi, found_hi)
            width[m] = r.m_hi - r.m_lo
        for looser, tighter in zip(METHODS, METHODS[1:]):
            assert (width[tighter] <= width[looser] + 1e-12).all(), (looser, tighter)


class _OverlapPool(nn.Module):
    """x → diag affine → MaxPool((1, 2), stride 1) over three values → z = first window's max."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.diag(torch.tensor([1.0, 5.5, 1.0])))
            self.lin.bias.copy_(torch.tensor([0.0, -2.25, 0.0]))
        self.pool = nn.MaxPool2d((1, 2), stride=1)
        self.out = nn.Linear(2, 1)
        with torch.no_grad():
            self.out.weight.copy_(torch.tensor([[1.0, 0.0]]))
            self.out.bias.zero_()

    def forward(self, x):
        return self.out(self.pool(self.lin(x.flatten(1)).view(-1, 1, 1, 3)).flatten(1)).squeeze(1)


def test_overlapping_pool_windows_are_bounded_per_window():
    """Window 1 = (y0 ∈ [0.3, 0.4], y1 ∈ [0.225, 0.775]), window 2 = (y1, y2 ∈ [0, 0.1]): y0 has
    the larger lower bound in window 1 and y1 in window 2. Removing window 2's pick from window 1
    made CROWN call window 1 exact (z = y0, z ≤ 0.4) although z = 0.775 at y1's upper end (and
    0.5 at the clean point)."""
    net = _OverlapPool().double().eval()
    x = torch.tensor([0.35, 0.5, 0.05], dtype=torch.float64).view(1, 1, 1, 3)
    eps = 0.05
    top = x.clone()
    top[..., 1] += eps
    assert float(net(top).detach()) == pytest.approx(0.775)
    for m in METHODS:
        r = margin_bounds(net, x, eps, method=m, pred=torch.zeros(1, dtype=torch.long), input_shape=(1, 1, 3))
        assert float(r.m_hi) == pytest.approx(0.775, abs=1e-9), m  # sound, and tight
        assert float(r.m_lo) == pytest.approx(0.3, abs=1e-9), m


@pytest.mark.parametrize("act", [nn.LeakyReLU(2.0), nn.LeakyReLU(-0.5)])
def test_leaky_relu_slope_outside_unit_interval_is_refused(act):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 2), act, nn.Linear(2, 1))
    slope = act.negative_slope
    with pytest.raises(ValueError, match=rf"LeakyReLU\(negative_slope={slope}\) at .*supports negative slopes in \[0, 1\]$"):
        margin_bounds(net, torch.full((1, 1, 1, 3), 0.5), 0.1, input_shape=(1, 1, 3))


# ---------------------------------------------------------------------------- MesoNets

def _random_meso(name, size=32, seed=0):
    torch.manual_seed(seed)
    det = build(name, size).eval()
    for m in det.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.05, 0.3)  # a small variance amplifies: margins move visibly
    return det


@pytest.mark.parametrize("name,eps_list", [("meso4", (0.002, 0.01)), ("mesoinception4", (0.01,))])
def test_mesonet_bounds_sound(name, eps_list):
    det = _random_meso(name)
    det64 = copy.deepcopy(det).double()
    x = _images(2, 32, seed=7)
    with torch.no_grad():
        pred = (det(x.float()).softmax(1)[:, 1] >= 0.5).long()
    g = trace(det)
    f = lambda z: _margin_det(det64, z, pred)  # noqa: E731
    for eps in eps_list:
        lo, hi = _box(x, eps)
        c = margin_bounds(g, x, eps, method="crown", pred=pred)
        b = margin_bounds(g, x, eps, method="ibp", pred=pred)
        assert torch.allclose(c.margin_clean, f(x).detach(), atol=1e-9)
        # fewer points than on the toy nets (400 per image): each forward pass is ~100x bigger
        s_lo, s_hi = _sampled_extremes(lambda p, i: _margin_det(det64, p, pred[i].expand(len(p))).detach(),
                                       x, lo, hi, 400, chunk=100)
        p_lo, p_hi = _pgd_margin(f, x, lo, hi, -1.0, steps=15), _pgd_margin(f, x, lo, hi, +1.0, steps=15)
        for r in (c, b):
            assert (r.m_lo <= torch.minimum(s_lo, p_lo) + TOL).all()
            assert (r.m_hi >= torch.maximum(s_hi, p_hi) - TOL).all()
        assert ((c.m_hi - c.m_lo) <= (b.m_hi - b.m_lo) + 1e-12).all()
        assert ((c.m_hi - c.m_lo) < 0.9 * (b.m_hi - b.m_lo)).all()
        assert (torch.maximum(p_hi - p_lo, s_hi - s_lo) > 0).all()  # the ball really moves the margin


def _margin_det(det, x, pred):
    logits = det(x)
    idx = torch.arange(len(x))
    return logits[idx, pred] - logits[idx, 1 - pred]


def test_certified_records_never_beat_the_attacks():
    from dfrobust import metrics
    from dfrobust.experiments import records

    det = _random_meso("meso4", seed=1)
    x = _images(4, 32, seed=8).float()
    labels = torch.tensor([0, 1, 0, 1])
    eps = [0.0, 0.002, 0.01]
    b = np.round(np.linspace(0, 0.2, 21), 6)
    cert = certified_records({"meso4": det}, x, eps, method="crown", labels=labels, batch_size=2, crown_budget=64,
                             coords={"group": ["a", "b", "a", "b"]})
    atk = records.attack_records({"meso4": det}, ["fgsm", "pgd"], eps, x, labels, seed=0,
                                    attack_kw={"pgd": {"steps": 10}}, ssim=False)
    assert set(cert.dims) == {"model", "eps", "sample"}
    np.testing.assert_array_equal(cert["pred_clean"].values, atk["pred_clean"].values)
    np.testing.assert_allclose(cert["p_clean"].values, atk["p_clean"].values, atol=1e-5)
    change = metrics.prob_change(atk)
    assert (change <= cert["certified_change"] + 1e-5).all()
    rr_c = rr_certified(cert, b)
    rr_a = metrics.robust_ratio(atk, b)
    assert (rr_c <= rr_a + 1e-12).all()
    assert float(rr_c.sel(eps=0.0).min()) == 1.0  # the point itself: nothing changes
    assert (rr_c.diff("b") >= 0).all()  # a larger bound certifies more
    assert rr_certified(cert, b, groupby="group").sizes["group"] == 2
    assert str(cert["method"].values[0]) == "crown"
    assert float(cert["trace_gap"].max()) < 1e-4
    big = float(largest_certified_eps(cert, 0.2).sel(model="meso4"))
    assert big == pytest.approx(0.01) or big == pytest.approx(0.002) or np.isnan(big)


def test_records_are_deterministic_and_ibp_is_looser():
    det = _random_meso("mesoinception4", seed=2)
    x = _images(2, 32, seed=9).float()
    a = certified_records(det, x, [0.0, 0.002, 0.005], method="ibp")
    b = certified_records(det, x, [0.0, 0.002, 0.005], method="ibp")
    np.testing.assert_array_equal(a["m_lo"].values, b["m_lo"].values)
    # interval arithmetic is monotone: a larger ball never certifies a smaller change
    assert (a["certified_change"].diff("eps") >= 0).all()
    assert (a["certified_change"].isel(eps=-1) > 0).all()
    c = certified_records(det, x, [0.005], method="crown")
    assert (c["certified_change"].values <= a["certified_change"].sel(eps=[0.005]).values + 1e-12).all()
    assert list(a.model.values) == ["mesoinception4"]


# ---------------------------------------------------------------------------- bad input

def test_bad_input_is_a_one_line_error_before_any_work():
    det = _random_meso("meso4")
    x = _images(1, 32).float()
    with pytest.raises(ValueError, match=r"eps=-0.1: expected a finite number >= 0"):
        certified_records(det, x, [0.0, -0.1])
    with pytest.raises(ValueError, match=r"method=.alpha. for meso4: expected one of ibp, crown, alpha-crown"):
        certified_records(det, x, [0.01], method="alpha")
    with pytest.raises(ValueError, match=r"images range .*expected values in \[0, 1\]"):
        certified_records(det, x * 2, [0.01])
    with pytest.raises(ValueError, match=r"images are 16x16 but meso4 takes 32x32"):
        certified_records(det, x[:, :, :16, :16], [0.01])
    with pytest.raises(ValueError, match=r"duplicate"):
        certified_records(det, x, [0.01, 0.01])
    with pytest.raises(ValueError, match=r"b=1.5: expected a probability bound"):
        rr_certified(certified_records(det, x, [0.0]), [0.1, 1.5])
    with pytest.raises(ValueError, match=r"unsupported operation .*AvgPool2d"):
        trace(nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3, 1)), (3, 2, 2))
    with pytest.raises(ValueError, match=r"expected 1 .* or 2 logits"):
        trace(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), (3, 2, 2))
