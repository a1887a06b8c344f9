"""Certified (IBP) training's loss: the worst-case cross-entropy over the L∞ ball, bounded by :mod:`.bounds`' IBP.

For two classes the worst-case logits given the margin bounds ``m_lo <= z_y − z_other`` over the
ball make the cross-entropy ``softplus(−m_lo)`` (Gowal et al. 2018's IBP loss on the margin). The
bound is :class:`.bounds.Graph`'s IBP on a graph traced with ``differentiable=True`` (weights
attached to the model's parameters, batch-norm at its running statistics), so the loss carries
gradients to the parameters: no second interval implementation. Registered as the ``"ibp"``
objective of :mod:`dfrobust.models.train` (``meso4_ibp``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.train import register_objective
from .bounds import _margin_spec, trace


def ibp_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int = 0,
             hp: dict | None = None) -> torch.Tensor:
    """Mean over the batch of ``softplus(−m_lo)``, ``m_lo`` IBP's lower bound of ``z_y − z_other`` over
    ``[x − eps, x + eps] ∩ [0, 1]`` (``seed`` and ``hp`` unused: the bound is deterministic)."""
    stats = {}
    if model.training:  # batch-norm as in the clean training pass: the clean batch's statistics
        def keep(m, inputs, _out):
            stats[m] = (inputs[0].mean((0, 2, 3)), inputs[0].var((0, 2, 3), unbiased=False))

        # without running statistics the pass neither reads nor updates them (the objects are put back
        # untouched: the clean loss's autograd graph holds them)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        saved = [(m.running_mean, m.running_var, m.num_batches_tracked) for m in bns]
        hooks = [m.register_forward_hook(keep) for m in bns]
        try:
            for m in bns:
                m.running_mean = m.running_var = m.num_batches_tracked = None
            model(x)
        finally:
            for h in hooks:
                h.remove()
            for m, (mean, var, count) in zip(bns, saved):
                m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count
    graph = trace(model, tuple(x.shape[1:]), dtype=x.dtype, differentiable=True, bn_stats=stats)
    spec = _margin_spec(graph, y.long()).to(x.dtype)
    m_lo = graph.bounds((x - eps).clamp(0, 1), (x + eps).clamp(0, 1), "ibp", spec)[0]
    return F.softplus(-m_lo).mean()


register_objective("ibp", ibp_loss)
