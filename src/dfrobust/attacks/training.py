"""Adversarial training's loss: cross-entropy on PGD examples in the L∞ ball (Madry et al. 2018).

The examples come from :class:`.gradient.SeededPGD` (the study's PGD, seeded per training step),
with the true label as the one to move away from, a random start and step 2.5·ε/steps. Registered
as the ``"pgd"`` objective of :mod:`dfrobust.models.train` (``meso4_adv``); ``attack_steps`` of the
training settings (``hp``) is the number of PGD steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.train import register_objective
from .gradient import SeededPGD


def adversarial_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int,
                     hp: dict) -> torch.Tensor:
    """Mean cross-entropy of ``model`` (in its current mode) on PGD examples of radius ``eps`` around ``x``
    (``hp["attack_steps"]`` steps, seeded by ``seed``)."""
    steps = int(hp["attack_steps"])
    if eps <= 0:
        return F.cross_entropy(model(x).float(), y)
    atk = SeededPGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True, seed=seed)
    x_adv = atk(x, y)  # torchattacks runs the search in eval mode and restores the model's mode
    return F.cross_entropy(model(x_adv).float(), y)


register_objective("pgd", adversarial_loss)
