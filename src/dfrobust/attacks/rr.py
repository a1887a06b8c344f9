"""The RR attack: L∞ PGD that maximises ``|P(ŷ|x+δ) − P(ŷ|x)|`` directly, in both directions.

RR(ε, b) asks whether *any* δ in the ε-ball changes the probability of the clean prediction by
more than b. PGD on cross-entropy (and CW) look for a label flip instead, so they only loosely
bound RR: a flip is not the largest change, and pushing P(ŷ) *up* (a change capped at
1 − P(ŷ|x)) is never tried. This attack runs two seeded PGD searches of
:class:`.gradient.SeededPGD` — ``down`` (log-odds of ŷ down) and ``up`` (log-odds up), each
keeping its best iterate by ``|ΔP(ŷ)|`` — and keeps per sample the larger change. The up run
can raise P(ŷ) by at most 1 − P(ŷ|x), so it runs only on the samples where that cap exceeds the
change the down run found (on a confident detector, few): the kept change is the same as running
both everywhere (at every temperature listed in ``temperatures``: the stored margins then give RR
at each, :mod:`dfrobust.metrics.calibration`). It costs at most two PGD runs (one clean forward
shared by both, one more per run for the best-iterate bookkeeping). The smallest and largest
margin over both runs' iterates and their extreme iterates are kept for the radii and calibration
(:mod:`.radii`). No maintained package has
this objective, hence this module (the loop is torchattacks-style, in :mod:`.gradient`).

Its records answer RR; their flip (RA) reading is that of the kept perturbation, so where the up
direction wins a flip found by the down run is not reported — take RA from ``pgd``/``cwinf`` or
from the per-sample worst case over the budgeted attacks.
"""

from __future__ import annotations

import torch

from .gradient import SeededPGD


def _take(v, idx):
    """The entries ``idx`` of a per-sample radius (a float applies to every sample)."""
    return v[idx.to(v.device)] if torch.is_tensor(v) else v


class RRAttack:
    """``atk(images, labels, start=None)``: per sample, the larger |ΔP(label)| of the down and up runs.

    ``eps`` and ``alpha`` are floats or tensors [N] (a radius per sample). ``temperatures``
    (None: only the model's own): the up run also runs wherever, at one of these temperatures T
    (P_T(ŷ) = σ(m/T) for the two-logit margin m), its cap 1 − P_T(ŷ|x) exceeds the down run's
    change at T, so the kept margins give the same change at every T listed as running both
    runs everywhere. ``norm``: ``"linf"`` (sign steps, the L∞ ball: the sweep's) or ``"l2"``
    (normalised-gradient steps, projection onto the L2 ball: the paper's Eq. 2 ball).
    ``start_up`` (default ``start``) starts the up run. After a call, per
    sample (``clean_logits``: the model's logits on the images when the caller has them):
    ``last_direction`` (+1 up kept, −1 down), ``last_change``, ``last_p`` (P(label) of the
    kept iterate), ``last_p0``, the clean, smallest and largest margin over both runs' iterates
    (``last_margin0``, ``last_margin_min``, ``last_margin_max``; the up run's where it ran), and
    the runs' extreme iterates ``last_down_adv`` (smallest margin) and ``last_up_adv`` (largest;
    ``x + start_up`` projected where the up run did not run): temperature-free warm starts.
    """

    def __init__(self, model, *, eps, alpha, steps: int, random_start: bool = True, seed: int = 0,
                 temperatures=None, norm: str = "linf"):
        kw = dict(eps=eps, alpha=alpha, steps=steps, random_start=random_start, keep_best=True, norm=norm)
        self.model = model
        self.down = SeededPGD(model, seed=2 * int(seed), loss="down", **kw)
        self.up = SeededPGD(model, seed=2 * int(seed) + 1, loss="up", **kw)
        self.eps, self.alpha, self.steps = self.down.eps, self.down.alpha, int(steps)
        self.temperatures = None if temperatures is None else [float(t) for t in temperatures]
        self.last_direction = None   # per sample after a call: +1 up kept, -1 down kept
        self.last_change = self.last_p = self.last_p0 = None
        self.last_margin0 = self.last_margin_min = self.last_margin_max = None
        self.last_down_adv = self.last_up_adv = None

    def _needs_up(self, down: SeededPGD) -> torch.Tensor:
        """Samples on which the up run can change the kept |ΔP(ŷ)| (at T = 1, or at any listed T)."""
        need = (1 - down.last_p0) > down.last_change   # the most the up run can gain, against the down change
        for t in self.temperatures or ():
            p0 = torch.sigmoid(down.last_margin0 / t)
            change = torch.maximum(p0 - torch.sigmoid(down.last_margin_min / t),
                                   torch.sigmoid(down.last_margin_max / t) - p0)
            need |= (1 - p0) > change
        return need

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, start=None, start_up=None,
                 clean_logits=None) -> torch.Tensor:
        start_up = start if start_up is None else start_up
        down = self.down(images, labels, start=start, clean_logits=clean_logits).detach()
        clean_logits = self.down.last_logits0                   # one clean forward for both runs
        change, p = self.down.last_change.clone(), self.down.last_p.clone()
        lo, hi = self.down.last_margin_min.clone(), self.down.last_margin_max.clone()
        images, labels = images.to(down.device), labels.to(down.device)
        try_up = torch.nonzero(self._needs_up(self.down)).flatten()
        take_up = torch.zeros_like(change, dtype=torch.bool)
        out = down.clone()
        self.up.eps = self.eps
        up_adv = images.clone() if start_up is None else self.up._project(images, images + start_up.to(images))
        if len(try_up):
            sub = start_up[try_up.to(start_up.device)] if start_up is not None else None
            self.up.eps, self.up.alpha = _take(self.eps, try_up), _take(self.alpha, try_up)
            up = self.up(images[try_up], labels[try_up], start=sub,
                         clean_logits=clean_logits[try_up.to(clean_logits.device)]).detach()
            up_adv[try_up] = self.up.last_extreme
            wins = self.up.last_change > change[try_up]              # |ΔP(label)| of each run's kept iterate
            take_up[try_up[wins]] = True
            out[try_up[wins]] = up[wins]
            change[try_up[wins]], p[try_up[wins]] = self.up.last_change[wins], self.up.last_p[wins]
            lo[try_up] = torch.minimum(lo[try_up], self.up.last_margin_min)
            hi[try_up] = torch.maximum(hi[try_up], self.up.last_margin_max)
        self.last_direction = torch.where(take_up, 1, -1).cpu().numpy()
        self.last_change, self.last_p, self.last_p0 = change, p, self.down.last_p0
        self.last_margin0, self.last_margin_min, self.last_margin_max = self.down.last_margin0, lo, hi
        self.last_down_adv, self.last_up_adv = self.down.last_extreme, up_adv
        return out
