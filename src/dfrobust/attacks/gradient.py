"""FGSM / PGD (L∞) / PGD (L2) / CW (L2) on the two-logit detector interface, through torchattacks.

Everything here is a thin layer over torchattacks 3.5.1 (the maintained implementation); only
what torchattacks gets wrong or leaves out is written by hand, each with a test:

* **CW margin (upstream issue #184).** ``torchattacks.CW.f`` takes ``max((1 - onehot) * Z)`` for
  the best other logit and ``max(onehot * Z)`` for the label logit. Masking by multiplication
  puts a 0 where the masked entry was, so with negative logits the "other" max is 0 instead of
  the other logit (and the label logit reads 0 when it is negative). With two classes the margin
  is then wrong whenever a logit is negative, and its gradient can vanish so CW returns the
  image unchanged. :class:`FixedCW` overrides ``f`` with :func:`cw_margin`, which gathers the
  label logit and masks the others with ``-inf``. The installed package is never edited.
* **CW returns the clean image** for every sample it never misclassified (it keeps the best
  *successful* iterate only); with a small ``c`` that is most samples. ``c``, ``steps``, ``lr``
  and ``kappa`` are exposed, and :mod:`dfrobust.experiments.robustness` records per sample whether the
  attack changed the image at all (``changed``).
* **Seeded random starts.** torchattacks draws PGD's random start from torch's global RNG.
  :class:`SeededPGD` / :class:`SeededPGDL2` draw it inside ``torch.random.fork_rng`` seeded with
  ``seed`` and a per-attack call counter, so the same seed, batch size and device give the same
  adversarial images without touching the caller's RNG state.
* **Step size scales with ε.** torchattacks' default ``alpha=2/255`` is tuned for ε=8/255; for
  a sweep up to ε=0.2 the default here is Madry et al.'s ``alpha = 2.5 ε / steps``.

Budgets: FGSM and PGD are L∞ attacks with radius ``eps`` on images in [0, 1]. PGD-L2 takes an
L2 radius; :func:`l2_radius` maps an L∞ ε to the L2 radius ``ε·sqrt(d)`` (d = C·H·W), i.e. the
L2 ball whose root-mean-square per-pixel change is ε — the L2 norm of an FGSM step of size ε
before clipping. CW has no budget at all (it minimises ``||δ||₂² + c·f``); see
:mod:`dfrobust.experiments.robustness` for how its found ``||δ||₂`` is compared with a grid of radii.
"""

from __future__ import annotations

import math

import torch
import torchattacks

from ..core.params import check_eps


def l2_radius(eps: float, shape) -> float:
    """L2 radius matched to an L∞ ε for images of ``shape`` (C, H, W): ``ε·sqrt(C·H·W)``."""
    d = 1
    for s in tuple(shape)[-3:]:
        d *= int(s)
    return float(eps) * math.sqrt(d)


def cw_margin(logits: torch.Tensor, labels: torch.Tensor, *, kappa: float = 0.0,
              targeted: bool = False) -> torch.Tensor:
    """Carlini–Wagner margin ``f`` done right for any sign of the logits.

    untargeted: ``max(Z_y - max_{j≠y} Z_j, -κ)``; targeted: ``max(max_{j≠t} Z_j - Z_t, -κ)``.
    """
    labels = labels.long().view(-1, 1)
    real = logits.gather(1, labels).squeeze(1)
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, labels, True)
    other = logits.masked_fill(mask, float("-inf")).amax(dim=1)
    if targeted:
        return torch.clamp(other - real, min=-kappa)
    return torch.clamp(real - other, min=-kappa)


class _Seeded:
    """Mixin: run ``forward`` under a forked, seeded torch RNG (reproducible random starts)."""

    seed: int = 0

    def forward(self, images, labels):  # noqa: D401 - torchattacks API
        calls = self.__dict__.get("_calls", 0) + 1
        object.__setattr__(self, "_calls", calls)
        devices = [images.device.index or 0] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((int(self.seed) * 1_000_003 + calls) % (2**63 - 1))
            return super().forward(images, labels)


class SeededPGD(_Seeded, torchattacks.PGD):
    """torchattacks.PGD (L∞) with a seeded random start."""

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True, seed=0):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.seed = int(seed)


class SeededPGDL2(_Seeded, torchattacks.PGDL2):
    """torchattacks.PGDL2 with a seeded random start."""

    def __init__(self, model, eps=1.0, alpha=0.2, steps=10, random_start=True, seed=0):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.seed = int(seed)


class FixedCW(torchattacks.CW):
    """torchattacks.CW with the margin of :func:`cw_margin` (fixes upstream issue #184)."""

    def f(self, outputs, labels):  # noqa: D401 - torchattacks API
        return cw_margin(outputs, labels, kappa=self.kappa, targeted=self.targeted)


def fgsm_sweep(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               eps_list) -> list[torch.Tensor]:
    """FGSM at every ε of ``eps_list`` from ONE gradient.

    FGSM's step ``sign(∇ₓ CE)`` does not depend on ε, so this returns exactly what
    ``torchattacks.FGSM(model, eps=e)(images, labels)`` returns for each ``e`` (same loss, same
    expression ``clamp(x + e·sign(g), 0, 1)``; a test checks equality) at the cost of one
    forward+backward instead of one per ε.
    """
    eps_list = [check_eps(e) for e in eps_list]
    atk = torchattacks.FGSM(model, eps=0.0)  # for torchattacks' model-mode handling and device
    given = model.training
    atk._change_model_mode(given)
    try:
        x = images.clone().detach().to(atk.device)
        y = labels.clone().detach().to(atk.device)
        x.requires_grad = True
        cost = torch.nn.CrossEntropyLoss()(atk.get_logits(x), y)
        grad = torch.autograd.grad(cost, x, retain_graph=False, create_graph=False)[0]
        return [torch.clamp(x + e * grad.sign(), min=0, max=1).detach() for e in eps_list]
    finally:
        atk._recover_model_mode(given)
