"""Masked NES: stays in the mask, the ε-ball and [0, 1]; black box; one batch per step; succeeds on a toy model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfrobust.attacks.nes import MaskedNES, nes_attack

torch.set_num_threads(1)


class Linear(nn.Module):
    """Two logits (−z, z) with z = w·(x − 0.5) + b; counts calls; refuses autograd (black box)."""

    def __init__(self, size=12, seed=0, bias=0.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(3 * size * size, generator=g))
        self.b = bias
        self.calls = 0

    def forward(self, x):
        assert not torch.is_grad_enabled(), "NES must query the model without autograd"
        self.calls += 1
        z = (x.flatten(1) - 0.5) @ self.w + self.b
        return torch.stack([-z, z], 1)


def _setup(n=4, size=12, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n, 3, size, size, generator=g)
    mask = torch.zeros(n, size, size, dtype=torch.bool)
    mask[:, 3:9, 2:8] = True
    return x, mask


def test_constraints_mask_eps_range():
    model = Linear()
    x, mask = _setup()
    x[0, :, 3:6, 2:5] = 1.0              # pixels at the [0, 1] border inside the mask
    x[1, :, 6:9, 5:8] = 0.0
    labels = torch.ones(len(x), dtype=torch.long)
    eps = 8 / 255
    adv = MaskedNES(model, eps=eps, alpha=2 / 255, steps=20, n_pairs=5, seed=0)(x, labels, mask)
    d = adv - x
    assert d.abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.all(d.abs().sum(1)[~mask] == 0)         # nothing outside the mask changed
    assert d.abs().sum() > 0                              # ... but something inside did
    assert model.w.grad is None


def test_succeeds_on_toy_linear_model_and_records_queries():
    model = Linear(bias=2.0)
    x, mask = _setup(n=3)
    x = 0.5 + 0.02 * (x - 0.5)        # z ≈ 2 (fake); the masked ε-ball can move z by about 5
    with torch.no_grad():
        labels = model(x).argmax(1)
    assert (labels == 1).all()
    r = nes_attack(model, x, labels, mask, eps=16 / 255, alpha=2 / 255, steps=30, n_pairs=10, seed=1)
    with torch.no_grad():
        pred = model(r.adv).argmax(1)
    assert r.success.all() and (pred != labels).all()
    # early stop: a sample stops once it flips, seen at the centre query of step `steps`
    np.testing.assert_array_equal(r.queries, r.steps * 21 + 1)
    assert not r.censored.any() and r.budget == 30 * 21 + 1
    assert (r.steps < 30).all()


def test_one_model_call_per_step_and_seeded():
    x, mask = _setup(n=5)
    labels = torch.ones(5, dtype=torch.long)
    m1 = Linear(bias=50.0)                     # never flips: all steps run
    a1 = MaskedNES(m1, steps=7, n_pairs=3, seed=2, batch_size=64)  # a chunk holds a step's 5 x 7 queries
    adv1 = a1(x, labels, mask)
    assert m1.calls == 7 + 1                  # one batch per step + one final check
    m4 = Linear(bias=50.0)
    adv4 = MaskedNES(m4, steps=7, n_pairs=3, seed=2, batch_size=4)(x, labels, mask)
    assert m4.calls > m1.calls                # evaluated in chunks of 4 ...
    torch.testing.assert_close(adv4, adv1, rtol=0, atol=1e-6)  # ... without changing the attack
    assert (a1.last_queries == 7 * 7 + 1).all()
    assert not a1.last_success.any()
    adv2 = MaskedNES(Linear(bias=50.0), steps=7, n_pairs=3, seed=2)(x, labels, mask)
    torch.testing.assert_close(adv1, adv2, rtol=0, atol=0)
    adv3 = MaskedNES(Linear(bias=50.0), steps=7, n_pairs=3, seed=3)(x, labels, mask)
    assert not torch.equal(adv1, adv3)


def test_already_misclassified_sample_is_not_changed():
    model = Linear(bias=-50.0)                # predicts real for everything
    x, mask = _setup(n=2)
    r = nes_attack(model, x, torch.ones(2, dtype=torch.long), mask, steps=5, n_pairs=2)
    assert r.success.all() and (r.steps == 0).all() and (r.queries == 1).all()
    assert torch.equal(r.adv, x)


def test_bad_arguments():
    model = Linear()
    x, mask = _setup()
    with pytest.raises(ValueError, match="eps"):
        MaskedNES(model, eps=0)
    with pytest.raises(ValueError, match="n_pairs"):
        MaskedNES(model, n_pairs=0)
    with pytest.raises(ValueError, match="mask shape"):
        MaskedNES(model)(x, torch.ones(4, dtype=torch.long), mask[:, :5])


def test_queries_to_flip_are_censored_at_the_budget():
    x, mask = _setup(n=3)
    labels = torch.ones(3, dtype=torch.long)
    r = nes_attack(Linear(bias=50.0), x, labels, mask, steps=6, n_pairs=2, seed=0)   # never flips
    assert r.budget == 6 * 5 + 1
    assert r.censored.all() and not r.success.any()
    np.testing.assert_array_equal(r.queries, r.budget)
    np.testing.assert_array_equal(r.steps, 6)


class FlipAfter(nn.Module):
    """Calls a sample real once it has been queried `after` times as a centre (the first row of its
    group); an exact, known flip step for the censoring arithmetic."""

    def __init__(self, after):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x):
        self.calls += 1
        z = torch.full((len(x),), 1.0 if self.calls <= self.after else -1.0)
        return torch.stack([-z, z], 1)


def test_a_flip_seen_at_step_t_costs_t_steps_and_one_query():
    x, mask = _setup(n=1)
    r = nes_attack(FlipAfter(3), x, torch.ones(1, dtype=torch.long), mask, steps=10, n_pairs=2, batch_size=1000)
    assert r.success.all() and not r.censored.any()
    assert r.steps.tolist() == [3] and r.queries.tolist() == [3 * 5 + 1]


def test_early_stop_gives_the_first_flip_of_the_full_budget_run():
    """Flipped pairs leave the batch, yet every pair's result equals the full-budget run's first flip
    (same seed): per-sample noise streams, so a pair does not see who else is still running."""
    x, mask = _setup(n=6, seed=3)
    x = 0.5 + 0.05 * (x - 0.5)
    labels = torch.ones(6, dtype=torch.long)
    kw = dict(eps=16 / 255, alpha=2 / 255, steps=12, n_pairs=3, seed=5, batch_size=1000)
    model = Linear(bias=1.0)
    stop = MaskedNES(model, early_stop=True, **kw)
    adv_s = stop(x, labels, mask)
    full = MaskedNES(model, early_stop=False, **kw)
    adv_f = full(x, labels, mask)
    flips = stop.last_steps[stop.last_success]
    assert len(set(flips.tolist())) >= 2          # pairs left the batch at different steps
    np.testing.assert_array_equal(stop.last_success, full.last_success)
    np.testing.assert_array_equal(stop.last_queries, full.last_queries)
    np.testing.assert_array_equal(stop.last_steps, full.last_steps)
    torch.testing.assert_close(adv_s, adv_f, rtol=0, atol=0)
