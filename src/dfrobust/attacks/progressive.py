"""The progressive (video) mode: attack frames in order, frame t starting from frame t−1's δ.

A *driver* over the registry's attacks, not a second implementation of them: frame position k of
every video is attacked in one batch by the registry's attack (built with
:func:`dfrobust.attacks.make_attack`), called as ``atk(x_t, ŷ_t, start=δ_{t−1})`` — the seeded PGD
family (PGD, PGD-L2, CW-L∞) starts its iteration at ``x_t + δ_{t−1}`` (projected onto frame t's
ball) instead of at a random point, FGSM takes its gradient there, the RR attack starts both of
its directions there. The first frame gets no start (the attack's own seeded random start).
Every budgeted attack registered with ``start=True`` has a progressive version.

**An accumulating budget** (``ramp=True``, the chapter's progressive mode and the default of
:func:`progressive_factory`): the budget ramps up over the clip, ε_t = ε·(t+1)/T, so frame t holds
the perturbation accumulated over frames 0..t — a fresh increment of at most ε/T per frame on top of
the carried δ_{t−1}. The mode then differs from the per-frame attack *by construction* (every frame
but the last gets less than ε). Without the ramp, a carried start inside the same ball is only a
warm start: an attack that reaches its ball's optimum from any start (PGD on a near-linear model)
gives the per-frame records exactly, so that mode cannot test accumulation. Every frame keeps
``||δ_t|| <= ε_t <= ε`` in the attack's norm and ``x_t+δ_t ∈ [0, 1]``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.params import check_eps
from ..data.sampling import video_order
from . import budgeted_attacks, check_attack, make_attack as _make_attack

#: attacks that have a progressive version (budgeted and taking a start), at import time;
#: :func:`dfrobust.attacks.budgeted_attacks` (``start=True``) gives the live list
PROGRESSIVE_ATTACKS = tuple(budgeted_attacks(start=True))


def _no_progressive(name: str) -> str:
    return f"attack={name!r}: no progressive version; expected one of {', '.join(budgeted_attacks(start=True))}"


def ramp_eps(eps: float, position: int, length: int, ramp: bool) -> float:
    """The budget of the frame at ``position`` (0-based) of a clip of ``length`` frames."""
    if not ramp:
        return float(eps)
    return float(eps) * (position + 1) / max(int(length), 1)


class ProgressiveAttack:
    """Attack the frames of several videos in frame order, carrying δ from frame t−1 to frame t.

    Call with ALL frames at once (``images`` [N, 3, S, S] and ``labels`` [N] — the labels to move
    away from, i.e. the clean predictions —, rows in the order of ``order``'s positions); frame
    position k of every video is attacked in one batch. ``eps``: the radius in the attack's norm.
    ``carry=False`` gives the per-frame attack through the same code path (used by the tests to
    show the carry-over matters). After a call, ``last_deltas`` holds δ per row and
    ``eps_per_row`` the budget per row.
    """

    def __init__(self, name: str, model: torch.nn.Module, order: Sequence[np.ndarray], *, eps: float,
                 seed: int = 0, ramp: bool = False, carry: bool = True, **attack_kw: Any):
        self.name = check_attack(name)
        if self.name not in budgeted_attacks(start=True):
            raise ValueError(_no_progressive(name))
        self.eps = check_eps(eps)
        _make_attack(self.name, model, eps=self.eps, seed=seed, **attack_kw)  # option check (no model call)
        self.model, self.order, self.seed = model, [np.asarray(o) for o in order], int(seed)
        self.ramp, self.carry, self.attack_kw = bool(ramp), bool(carry), dict(attack_kw)
        self.n_rows = int(sum(len(o) for o in self.order))
        self.calls = 0                          # how many times the driver ran (read by the video chapter)
        self._attacks: dict[float, Any] = {}   # one registry attack per budget (its seeded call counter)
        self.last_deltas: torch.Tensor | None = None
        self.eps_per_row: np.ndarray | None = None

    def _attack(self, e: float):
        if e not in self._attacks:
            self._attacks[e] = _make_attack(self.name, self.model, eps=e, seed=self.seed, **self.attack_kw)
        return self._attacks[e]

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(images) != self.n_rows:
            raise RuntimeError(f"progressive attack got {len(images)} frames; expected all {self.n_rows} "
                               "frames of the videos in one batch")
        self.calls += 1
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
                x = images[rows].to(images.device)
                y = labels[rows.to(labels.device)].to(images.device)
                if e == 0:
                    a = x
                elif k > 0 and self.carry:
                    prev = torch.as_tensor(np.array([o[k - 1] for o in vids]), dtype=torch.long)
                    a = self._attack(e)(x, y, start=deltas[prev])
                else:
                    a = self._attack(e)(x, y)
                adv[rows] = a.detach()
                deltas[rows] = a.detach() - x
                eps_row[rows.numpy()] = e
        self.last_deltas, self.eps_per_row = deltas.detach(), eps_row
        return adv


def progressive_factory(meta: pd.DataFrame, *, ramp: bool = True, carry: bool = True):
    """An ``attack_factory`` for :func:`dfrobust.experiments.records.attack_records` that builds
    :class:`ProgressiveAttack` objects over the frame order of ``meta``.

    The factory's ``built`` attribute lists the attacks it made (to check afterwards that they ran).
    """
    order = video_order(meta)
    built: list[ProgressiveAttack] = []

    def factory(name, model, *, eps, seed=0, **kw):
        if check_attack(name) not in budgeted_attacks(start=True):
            raise ValueError(_no_progressive(name))
        atk = ProgressiveAttack(name, model, order, eps=eps, seed=seed, ramp=ramp, carry=carry, **kw)
        built.append(atk)
        return atk

    factory.built = built
    return factory
