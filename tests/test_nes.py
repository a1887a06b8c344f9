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
    # early stop: a sample stops once it flips, so its queries are (steps + 1) * (1 + 2 * pairs)
    np.testing.assert_array_equal(r.queries, (r.steps + 1) * 21)
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
    assert r.success.all() and (r.steps == 0).all() and (r.queries == 5).all()
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
