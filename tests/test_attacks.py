"""Attacks: the CW margin fix, budgets, [0, 1] range, seeded random starts, equality with torchattacks, validation."""

import pytest
import torch
import torchattacks

from toys import SmallNet

from dfrobust import attacks

torch.set_num_threads(1)


class Linear2(torch.nn.Module):
    """Two logits from the mean pixel: Z0 = -1, Z1 = -3 + 6*mean(x). Both negative near the flip."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([torch.full_like(m, -1.0), -3.0 + 6.0 * m], dim=1)


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
    fixed = attacks.FixedCW(Linear2(), kappa=10.0)
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
    adv = attacks.FixedCW(model, **kw)(x, y)
    assert (model(adv).argmax(1) == 1).all()
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("name", ["fgsm", "pgd", "cwinf", "rr"])
@pytest.mark.parametrize("eps", [0.0, 0.03, 0.2])
def test_linf_attacks_respect_budget_and_range(name, eps):
    x, y = _data()
    kw = {} if name == "fgsm" else {"steps": 3}
    adv = attacks.make_attack(name, SmallNet(), eps=eps, **kw)(x, y)
    assert attacks.NORM[name] == "linf"
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
    (dict(name="cw", eps=0.1, c_min=0), "c_min=0"),
    (dict(name="cw", eps=0.1, c_init=1e5), "c_init=100000"),
    (dict(name="cw", eps=0.1, search_steps=0), "search_steps=0"),
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


@pytest.mark.parametrize("name, upstream", [
    ("pgd", lambda m: torchattacks.PGD(m, eps=0.05, alpha=0.01, steps=4)),
    ("pgdl2", lambda m: torchattacks.PGDL2(m, eps=0.8, alpha=0.2, steps=4)),
])
def test_seeded_pgd_family_equals_torchattacks_for_the_same_random_numbers(name, upstream):
    x, y = _data()
    model = SmallNet(2)
    eps, alpha = (0.05, 0.01) if name == "pgd" else (0.8, 0.2)
    ours = attacks.make_attack(name, model, eps=eps, seed=0, steps=4, alpha=alpha)
    torch.manual_seed(1)          # SeededPGD's first call draws under manual_seed(seed * 1_000_003 + 1)
    ref = upstream(model)(x, y)
    torch.testing.assert_close(ours(x, y), ref, rtol=0, atol=1e-6)


def test_fgsm_is_the_one_step_pgd_case():
    x, y = _data()
    model = SmallNet(1)
    torch.testing.assert_close(attacks.make_attack("fgsm", model, eps=0.05)(x, y),
                               torchattacks.FGSM(model, eps=0.05)(x, y), rtol=0, atol=1e-6)


def test_start_begins_the_search_at_x_plus_start():
    x, y = _data()
    model = SmallNet(3)
    start = torch.full_like(x, 0.02)
    # zero steps: the output is the start projected onto the ball and [0, 1]
    pgd0 = attacks.SeededPGD(model, eps=0.05, alpha=0.01, steps=0)
    torch.testing.assert_close(pgd0(x, y, start=start), (x + 0.02).clamp(0, 1))
    torch.testing.assert_close(pgd0(x, y, start=10 * start), (x + 0.05).clamp(0, 1))   # projected
    for name in ("fgsm", "pgd", "cwinf", "rr", "pgdl2"):
        eps = 0.05 if attacks.NORM[name] == "linf" else attacks.l2_radius(0.05, x.shape[1:])
        kw = {} if name == "fgsm" else {"steps": 2}
        atk = attacks.make_attack(name, model, eps=eps, **kw)
        a, b = atk(x, y, start=start), atk(x, y, start=-start)
        assert not torch.equal(a, b), name           # the start matters
        assert a.min() >= 0 and a.max() <= 1


def test_cwinf_keeps_linf_within_eps_and_uses_the_cw_margin():
    x, y = _data(n=8)
    model = Linear2()
    with torch.no_grad():
        yhat = model(x).argmax(1)
    atk = attacks.make_attack("cwinf", model, eps=0.03, steps=5)
    assert atk.loss == "cw" and atk.norm == "linf"
    adv = atk(x, yhat)
    assert (adv - x).abs().max().item() <= 0.03 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    # on this model the margin's gradient moves every pixel against the clean class
    with torch.no_grad():
        m0 = attacks.cw_margin(model(x), yhat, kappa=float("inf"))
        m1 = attacks.cw_margin(model(adv), yhat, kappa=float("inf"))
    assert (m1 < m0).all()


def test_fixed_cw_starts_at_x_plus_start_and_takes_a_per_sample_c():
    x = torch.full((2, 3, 4, 4), 0.2)
    y = torch.zeros(2, dtype=torch.long)
    model = Linear2()
    # one Adam step from the clean image cannot flip; started near the flip it does (x + start is flipped)
    start = torch.full_like(x, 0.2)
    cw = attacks.FixedCW(model, c=10.0, steps=1, lr=0.01)
    assert torch.equal(cw(x, y), x)
    adv = cw(x, y, start=start)
    assert (model(adv).argmax(1) == 1).all() and (adv - x).abs().max() <= 0.2 + 1e-3
    # c as a tensor [N]: sample 0 gets no margin weight, so it never moves; sample 1 flips
    adv = attacks.FixedCW(model, c=torch.tensor([0.0, 10.0]), steps=200, lr=0.01)(x, y)
    assert torch.equal(adv[0], x[0]) and model(adv[1:]).argmax(1).item() == 1
