"""SOBOL attribution (Fel et al., 2021), written here: the reference implementation (Xplique) is TensorFlow-only.

A scrambled Sobol quasi-Monte-Carlo design from ``scipy.stats.qmc`` on a ``grid x grid`` mask,
the Saltelli A/B/C_i matrices, images multiplied by the upsampled masks, and the Jansen
estimator of the total-order indices; all masked images evaluated in batches.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Explainer, batched_proba, register


def sobol_design(grid: int, nb_design: int, seed: int) -> np.ndarray:
    """Saltelli design [nb_design * (d + 2), d] (d = grid²) from a scrambled Sobol sequence: A, B, C_1..C_d."""
    from scipy.stats import qmc

    d = grid * grid
    ab = qmc.Sobol(d=2 * d, scramble=True, seed=seed).random(nb_design)
    a, b = ab[:, :d], ab[:, d:]
    cs = []
    for i in range(d):
        c = a.copy()
        c[:, i] = b[:, i]
        cs.append(c)
    return np.concatenate([a, b, *cs]).astype(np.float32)


def jansen_total_order(y: np.ndarray, nb_design: int, d: int) -> np.ndarray:
    """Jansen estimator of total-order Sobol indices from outputs ordered as :func:`sobol_design`."""
    fa, fb = y[:nb_design], y[nb_design:2 * nb_design]
    fc = y[2 * nb_design:].reshape(d, nb_design)
    var = np.var(np.concatenate([fa, fb]), ddof=1)
    if not np.isfinite(var) or var <= 0:
        return np.zeros(d, dtype=np.float32)
    return (np.mean((fa[None, :] - fc) ** 2, axis=1) / (2 * var)).astype(np.float32)


@register
class Sobol(Explainer):
    """Total-order Sobol indices of a grid of masks for the target class."""

    name = 'sobol'
    defaults = {"grid": 11, "nb_design": 32}

    def explain(self, model, images, targets, *, seed, batch_size, segments):
        grid = self.options['grid']
        nb_design = self.options['nb_design']
        n, _, h, w = images.shape
        design = sobol_design(int(grid), int(nb_design), seed)
        masks = torch.from_numpy(design).reshape(-1, 1, grid, grid)
        masks = torch.nn.functional.interpolate(masks, size=(h, w), mode="nearest")
        out = []
        for i, t in enumerate(targets):
            ys = []
            for j in range(0, len(masks), batch_size):
                m = masks[j:j + batch_size].to(images.device)
                ys.append(batched_proba(model, images[i:i + 1] * m, batch_size)[:, t].cpu())
            sti = jansen_total_order(torch.cat(ys).double().numpy(), int(nb_design), grid * grid)
            st = torch.from_numpy(sti).reshape(1, 1, grid, grid)
            out.append(torch.nn.functional.interpolate(st, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy())
        return np.stack(out).astype(np.float32)
