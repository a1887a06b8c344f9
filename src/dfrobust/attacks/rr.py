"""The RR attack: L∞ PGD that maximises ``|P(ŷ|x+δ) − P(ŷ|x)|`` directly, in both directions.

RR(ε, b) asks whether *any* δ in the ε-ball changes the probability of the clean prediction by
more than b. PGD on cross-entropy (and CW) look for a label flip instead, so they only loosely
bound RR: a flip is not the largest change, and pushing P(ŷ) *up* (a change capped at
1 − P(ŷ|x)) is never tried. This attack runs two seeded PGD searches of
:class:`.gradient.SeededPGD` — ``down`` (log-odds of ŷ down) and ``up`` (log-odds up), each
keeping its best iterate by ``|ΔP(ŷ)|`` — and keeps per sample the larger change. The up run
can raise P(ŷ) by at most 1 − P(ŷ|x), so it runs only on the samples where that cap exceeds the
change the down run found (on a confident detector, few): the kept change is the same as running
both everywhere. It costs at most two PGD runs (two more forwards per run for the best-iterate
bookkeeping). No maintained package has
this objective, hence this module (the loop is torchattacks-style, in :mod:`.gradient`).

Its records answer RR; their flip (RA) reading is that of the kept perturbation, so where the up
direction wins a flip found by the down run is not reported — take RA from ``pgd``/``cwinf`` or
from the per-sample worst case over the budgeted attacks.
"""

from __future__ import annotations

import torch

from .gradient import SeededPGD


class RRAttack:
    """``atk(images, labels, start=None)``: per sample, the larger |ΔP(label)| of the down and up runs."""

    def __init__(self, model, *, eps: float, alpha: float, steps: int, random_start: bool = True, seed: int = 0):
        kw = dict(eps=eps, alpha=alpha, steps=steps, random_start=random_start, keep_best=True)
        self.model = model
        self.down = SeededPGD(model, seed=2 * int(seed), loss="down", **kw)
        self.up = SeededPGD(model, seed=2 * int(seed) + 1, loss="up", **kw)
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)
        self.last_direction = None   # per sample after a call: +1 up kept, -1 down kept

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, start=None) -> torch.Tensor:
        down = self.down(images, labels, start=start).detach()
        change = self.down.last_change
        images, labels = images.to(down.device), labels.to(down.device)
        cap = 1 - self.down.last_p0   # the most the up run can gain
        try_up = torch.nonzero(cap > change).flatten()
        take_up = torch.zeros_like(change, dtype=torch.bool)
        out = down.clone()
        if len(try_up):
            sub = start[try_up.to(start.device)] if start is not None else None
            up = self.up(images[try_up], labels[try_up], start=sub).detach()
            wins = self.up.last_change > change[try_up]              # |ΔP(label)| of each run's kept iterate
            take_up[try_up[wins]] = True
            out[try_up[wins]] = up[wins]
        self.last_direction = torch.where(take_up, 1, -1).cpu().numpy()
        return out
