"""The seeded random baseline: one uniform value per segment (a random ranking), else per pixel."""

from __future__ import annotations

import numpy as np

from .base import Explainer, register



@register
class RandomBaseline(Explainer):
    """Random attributions: the baseline every tool must beat."""

    name = 'random'
    defaults = {}
    uses_segments = True

    def explain(self, model, images, targets, *, seed, batch_size, segments):
        rng = np.random.default_rng(seed)
        n, _, h, w = images.shape
        if segments is None:
            return rng.random((n, h, w), dtype=np.float32)
        segments = np.asarray(segments)
        out = []
        for i in range(n):
            vals = rng.random(int(segments[i].max()) + 1).astype(np.float32)
            out.append(vals[segments[i]])
        return np.stack(out)
