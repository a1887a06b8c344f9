"""RISE (Petsiuk et al., 2018), written here: no maintained PyTorch implementation is packaged.

Random low-resolution binary masks, bilinearly upsampled with a random shift, score-weighted
average; all masked images evaluated in batches.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Explainer, batched_proba, register


def rise_masks(n: int, size: tuple[int, int], *, cells: int = 7, p: float = 0.5,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """RISE masks [n, 1, H, W]: ``cells x cells`` Bernoulli(p) grids, bilinearly upsampled, randomly shifted."""
    h, w = size
    ch, cw = int(np.ceil(h / cells)), int(np.ceil(w / cells))
    grid = (torch.rand(n, 1, cells, cells, generator=generator) < p).float()
    up = torch.nn.functional.interpolate(grid, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear",
                                         align_corners=False)
    dx = torch.randint(0, ch, (n,), generator=generator)
    dy = torch.randint(0, cw, (n,), generator=generator)
    return torch.stack([up[i, :, dx[i]:dx[i] + h, dy[i]:dy[i] + w] for i in range(n)])


@register
class RISE(Explainer):
    """RISE saliency of the target class."""

    name = 'rise'
    defaults = {"n_masks": 4000, "cells": 7, "p": 0.5}

    def explain(self, model, images, targets, *, seed, batch_size, segments):
        n_masks = self.options['n_masks']
        cells = self.options['cells']
        p = self.options['p']
        n, _, h, w = images.shape
        gen = torch.Generator().manual_seed(seed)
        masks = rise_masks(int(n_masks), (h, w), cells=cells, p=p, generator=gen)
        out = []
        for i, t in enumerate(targets):
            sal = torch.zeros(h, w)
            for j in range(0, len(masks), batch_size):
                m = masks[j:j + batch_size]
                probs = batched_proba(model, images[i:i + 1] * m.to(images.device), batch_size)[:, t].cpu()
                sal += (probs[:, None, None] * m[:, 0]).sum(0)
            out.append((sal / (len(masks) * p)).numpy())
        return np.stack(out).astype(np.float32)
