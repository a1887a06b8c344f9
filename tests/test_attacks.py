"""Attacks: the CW margin fix, budgets, [0, 1] range, seeded random starts, validation."""

import pytest
import torch
import torchattacks

from dfrobust import attacks

torch.set_num_threads(1)


class Linear2(torch.nn.Module):
    """Two logits from the mean pixel: Z0 = -1, Z1 = -3 + 6*mean(x). Both negative near the flip."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([torch.full_like(m, -1.0), -3.0 + 6.0 * m], dim=1)


class SmallNet(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 4 * 4, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)) * 3


def _data(n=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_cw_margin_handles_negative_logits():
    logits = torch.tensor([[-1.0, -3.0], [-5.0, -2.0], [2.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # max(Z_y - Z_other, -kappa), by hand
    assert torch.allclose(attacks.cw_margin(logits, labels), torch.tensor([2.0, 0.0, 0.0]))
    assert torch.allclose(attacks.cw_margin(logits, labels, kappa=0.5), torch.tensor([2.0, -0.5, -0.5]))
    assert torch.allclose(attacks.cw_margin(logits, labels, kappa=10), torch.tensor([2.0, -3.0, -1.0]))
    assert torch.allclose(attacks.cw_margin(logits, labels, targeted=True), torch.tensor([0.0, 3.0, 1.0]))
    fixed = attacks.make_attack("cw", Linear2(), eps=0.0, kappa=10.0)
    assert torch.allclose(fixed.f(logits, labels), torch.tensor([2.0, -3.0, -1.0]))
    # the upstream defect this guards against: the masked max reads 0 instead of the other logit
    upstream = torchattacks.CW(Linear2())
    assert upstream.f(logits[:1], labels[:1]).item() == pytest.approx(0.0)


def test_fixed_cw_flips_where_upstream_returns_the_image_unchanged():
    x = torch.full((2, 3, 4, 4), 0.2)  # Z = (-1, -1.8): class 0, both logits negative
    y = torch.zeros(2, dtype=torch.long)
    model = Linear2()
    assert (model(x).argmax(1) == 0).all()
    kw = dict(c=10.0, steps=200, lr=0.01)
    adv_up = torchattacks.CW(model, **kw)(x, y)
    assert torch.equal(adv_up, x)  # upstream: zero margin gradient, nothing found
    adv = attacks.make_attack("cw", model, eps=0.0, **kw)(x, y)
    assert (model(adv).argmax(1) == 1).all()
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [0.0, 0.03, 0.2])
def test_linf_attacks_respect_budget_and_range(name, eps):
    x, y = _data()
    adv = attacks.make_attack(name, SmallNet(), eps=eps, steps=3)(x, y) if name == "pgd" else \
        attacks.make_attack(name, SmallNet(), eps=eps)(x, y)
    assert adv.shape == x.shape
    assert (adv - x).abs().max().item() <= eps + 1e-6
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
    if eps > 0:
        assert (adv != x).any()


def test_pgdl2_respects_l2_budget():
    x, y = _data()
    r = attacks.l2_radius(0.05, x.shape[1:])
    assert r == pytest.approx(0.05 * (3 * 8 * 8) ** 0.5)
    adv = attacks.make_attack("pgdl2", SmallNet(), eps=r, steps=4)(x, y)
    assert (adv - x).flatten(1).norm(dim=1).max().item() <= r + 1e-5
    assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_random_start_is_reproducible_with_the_seed():
    x, y = _data()
    model = SmallNet()
    # steps=1 with a tiny step keeps the random start visible in the output
    run = lambda s: attacks.make_attack("pgd", model, eps=0.1, seed=s, steps=1, alpha=1e-4)(x, y)
    state = torch.get_rng_state()
    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())  # caller's RNG untouched
    atk = attacks.make_attack("pgd", model, eps=0.1, seed=3, steps=1, alpha=1e-4)
    first, second = atk(x, y), atk(x, y)  # successive batches get fresh noise
    assert not torch.equal(first, second)


def test_pgd_alpha_scales_with_eps():
    atk = attacks.make_attack("pgd", SmallNet(), eps=0.2, steps=10)
    assert atk.alpha == pytest.approx(0.05)


@pytest.mark.parametrize("bad, match", [
    (dict(name="deepfool", eps=0.1), "attack='deepfool'"),
    (dict(name="pgd", eps=-0.1), "eps=-0.1"),
    (dict(name="pgd", eps=float("nan")), "eps=nan"),
    (dict(name="pgd", eps=0.1, c=3), "unknown option"),
    (dict(name="cw", eps=0.1, c=0), "expected c > 0"),
])
def test_make_attack_rejects_bad_input(bad, match):
    name = bad.pop("name")
    with pytest.raises(ValueError, match=match):
        attacks.make_attack(name, SmallNet(), **bad)


def test_fgsm_sweep_equals_torchattacks_fgsm_at_each_eps():
    x, y = _data()
    model = SmallNet(1)
    eps = [0.01, 0.05, 0.2]
    sweep = attacks.fgsm_sweep(model, x, y, eps)
    for e, adv in zip(eps, sweep):
        assert torch.equal(adv, torchattacks.FGSM(model, eps=e)(x, y))
