"""The progressive (video) mode: attack frames in order, frame t starting from frame t−1's δ.

A *driver* over the registry's attacks: frame position k of every video is attacked in one
batch, and the perturbation found for frame t−1 is handed on as frame t's start (PGD starts
there instead of at a random point, FGSM takes its gradient there, CW starts its optimisation
at ``w = atanh(2(x_t+δ_{t−1})−1)``). Optionally the L∞ budget ramps up over the clip,
ε_t = ε·(t+1)/T. Every frame keeps ``||δ_t||∞ <= ε_t <= ε`` and ``x_t+δ_t ∈ [0, 1]``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.params import check_eps
from ..data.sampling import video_order
from . import check_attack, make_attack as _make_attack
from .gradient import FixedCW


#: attacks that have a progressive version
PROGRESSIVE_ATTACKS = ("fgsm", "pgd", "cw")



def _no_progressive(name: str) -> str:
    return f"attack={name!r}: no progressive version; expected one of {', '.join(PROGRESSIVE_ATTACKS)}"



def ramp_eps(eps: float, position: int, length: int, ramp: bool) -> float:
    """The budget of the frame at ``position`` (0-based) of a clip of ``length`` frames."""
    if not ramp:
        return float(eps)
    return float(eps) * (position + 1) / max(int(length), 1)



class _CarryCW(FixedCW):
    """FixedCW whose optimisation starts at ``self.start`` (w = atanh(2·start − 1)) when set."""

    start: torch.Tensor | None = None

    def inverse_tanh_space(self, x):  # noqa: D401 - torchattacks API; called once, for the initial w
        if self.start is not None:
            x = self.start.to(x.device, x.dtype)
        return super().inverse_tanh_space(x)



class ProgressiveAttack:
    """Attack the frames of several videos in frame order, carrying δ from frame t−1 to frame t.

    Call with ALL frames at once (``images`` [N, 3, S, S] and ``labels`` [N], rows in the order
    of ``order``'s positions); frame position k of every video is attacked in one batch.
    ``eps``: L∞ radius (FGSM, PGD; ignored by CW). ``carry=False`` gives the per-frame attack
    through the same code path (used by the tests to show the carry-over matters).
    After a call, ``last_deltas`` holds δ per row and ``eps_per_row`` the budget per row.
    """

    def __init__(self, name: str, model: torch.nn.Module, order: Sequence[np.ndarray], *, eps: float,
                 seed: int = 0, ramp: bool = False, carry: bool = True, **attack_kw: Any):
        self.name = check_attack(name)
        if self.name not in PROGRESSIVE_ATTACKS:
            raise ValueError(_no_progressive(name))
        self.eps = check_eps(eps)
        _make_attack(self.name, model, eps=0.0, **attack_kw)  # option check (no model call)
        self.model, self.order, self.seed = model, [np.asarray(o) for o in order], int(seed)
        self.ramp, self.carry, self.attack_kw = bool(ramp), bool(carry), dict(attack_kw)
        self.n_rows = int(sum(len(o) for o in self.order))
        self.calls = 0
        self.last_deltas: torch.Tensor | None = None
        self.eps_per_row: np.ndarray | None = None

    def _pgd(self, x, y, start, eps, first: bool, gen: torch.Generator):
        atk = _make_attack("pgd", self.model, eps=eps, seed=self.seed, **self.attack_kw)
        if start is None:  # first frame: the usual random start (seeded)
            if atk.random_start:
                noise = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device) * 2 * eps - eps
                adv = torch.clamp(x + noise, 0, 1)
            else:
                adv = x.clone()
        else:             # carried start: x_t + δ_{t−1}, projected onto this frame's ball
            adv = torch.clamp(x + torch.clamp(start, -eps, eps), 0, 1)
        loss = torch.nn.CrossEntropyLoss()
        for _ in range(atk.steps):  # torchattacks.PGD.forward's loop, from the given start
            adv = adv.detach().requires_grad_(True)
            cost = loss(atk.get_logits(adv), y)
            grad = torch.autograd.grad(cost, adv)[0]
            adv = adv.detach() + atk.alpha * grad.sign()
            adv = torch.clamp(x + torch.clamp(adv - x, -eps, eps), 0, 1)
        return adv.detach()

    def _fgsm(self, x, y, start, eps):
        atk = _make_attack("fgsm", self.model, eps=eps, seed=self.seed)
        point = x if start is None else torch.clamp(x + start, 0, 1)
        z = atk(point, y)  # torchattacks FGSM: gradient at `point`, one signed step of size eps
        return torch.clamp(x + torch.clamp(z - x, -eps, eps), 0, 1).detach()

    def _cw(self, x, y, start):
        ref = _make_attack("cw", self.model, eps=0.0, **self.attack_kw)
        atk = _CarryCW(self.model, c=ref.c, kappa=ref.kappa, steps=ref.steps, lr=ref.lr)
        atk.start = None if start is None else torch.clamp(x + start, 0, 1)
        return atk(x, y).detach()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(images) != self.n_rows:
            raise RuntimeError(f"progressive attack got {len(images)} frames; expected all {self.n_rows} "
                               "frames of the videos in one batch")
        self.calls += 1
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.calls) % (2**63 - 1))
        adv = images.detach().clone()
        deltas = torch.zeros_like(images)
        eps_row = np.zeros(self.n_rows)
        t_max = max(len(o) for o in self.order)
        for k in range(t_max):
            live = [o for o in self.order if len(o) > k]
            budgets = [ramp_eps(self.eps, k, len(o), self.ramp) for o in live]
            for e in sorted(set(budgets)):
                vids = [o for o, b in zip(live, budgets) if b == e]
                rows = torch.as_tensor(np.array([o[k] for o in vids]), dtype=torch.long)
                prev = (torch.as_tensor(np.array([o[k - 1] for o in vids]), dtype=torch.long)
                        if (k > 0 and self.carry) else None)
                x = images[rows].to(images.device)
                y = labels[rows.to(labels.device)].to(images.device)
                start = deltas[prev] if prev is not None else None
                if self.name == "pgd":
                    a = self._pgd(x, y, start, e, k == 0, gen)
                elif self.name == "fgsm":
                    a = self._fgsm(x, y, start, e)
                else:
                    a = self._cw(x, y, start)
                adv[rows] = a
                deltas[rows] = a - x
                eps_row[rows.numpy()] = e
        self.last_deltas, self.eps_per_row = deltas.detach(), eps_row
        return adv



def progressive_factory(meta: pd.DataFrame, *, ramp: bool = False, carry: bool = True):
    """An ``attack_factory`` for :func:`dfrobust.experiments.robustness.attack_records` that builds
    :class:`ProgressiveAttack` objects over the frame order of ``meta``.

    The factory's ``built`` attribute lists the attacks it made (to check afterwards that they ran).
    """
    order = video_order(meta)
    built: list[ProgressiveAttack] = []

    def factory(name, model, *, eps, seed=0, **kw):
        _make_attack(name, model, eps=eps, seed=seed, **kw)  # the same option checks as per-frame
        if check_attack(name) not in PROGRESSIVE_ATTACKS:
            raise ValueError(_no_progressive(name))
        atk = ProgressiveAttack(name, model, order, eps=eps, seed=seed, ramp=ramp, carry=carry, **kw)
        built.append(atk)
        return atk

    factory.built = built
    return factory
