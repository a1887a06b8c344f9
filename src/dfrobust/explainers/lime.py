"""LIME through ``lime.lime_image.LimeImageExplainer`` with a batched classifier function.

The study's shared SLIC segmentation is LIME's superpixels; explicit seeds for the explainer's
``random_state`` (sampling) and ``random_seed`` (segmentation); the per-segment weights of the
target class become a pixel map. ``hide_color=None`` (lime's default) replaces a switched-off
segment by its mean colour, which hides texture but not colour; ``hide_color=0`` blacks it out.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .base import Explainer, _model_device, batched_proba, register


@contextlib.contextmanager
def _quiet_lime():
    """lime 0.2 wraps its sampling loop in tqdm with no switch; silence it for notebooks."""
    from lime import lime_image

    orig = lime_image.tqdm
    lime_image.tqdm = lambda it, *a, **k: it
    try:
        yield
    finally:
        lime_image.tqdm = orig


@register
class LIME(Explainer):
    """LIME weights of the target class per segment, as a pixel map."""

    name = 'lime'
    defaults = {"num_samples": 1000, "n_segments": 100, "hide_color": None}
    uses_segments = True

    def explain(self, model, images, targets, *, seed, batch_size, segments):
        num_samples = self.options['num_samples']
        n_segments = self.options['n_segments']
        hide_color = self.options['hide_color']
        from lime.lime_image import LimeImageExplainer

        from .segments import slic_segments

        if segments is None:
            segments = slic_segments(images, n_segments=n_segments)
        dev = _model_device(model)

        def classifier_fn(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).float().to(dev)
            return batched_proba(model, x, batch_size).cpu().numpy()

        out = []
        for i, t in enumerate(targets):
            img = images[i].permute(1, 2, 0).cpu().numpy().astype(np.float64)
            seg = np.asarray(segments[i])
            explainer = LimeImageExplainer(random_state=seed)
            with _quiet_lime():
                exp = explainer.explain_instance(
                    img, classifier_fn, labels=(t,), top_labels=None, hide_color=hide_color,
                    num_features=int(seg.max()) + 1, num_samples=int(num_samples), batch_size=batch_size,
                    segmentation_fn=lambda _img, s=seg: s, random_seed=seed)
            weights = np.zeros(int(seg.max()) + 1, dtype=np.float32)
            for sid, w in exp.local_exp[t]:
                weights[sid] = w
            out.append(weights[seg])
        return np.stack(out)
