"""LIME through ``lime.lime_image.LimeImageExplainer``, with its neighbourhood built as tensors.

The study's shared SLIC segmentation is LIME's superpixels; explicit seeds for the explainer's
``random_state`` (sampling) and ``random_seed`` (segmentation); the per-segment weights of the
target class become a pixel map. ``hide_color=None`` (lime's default) replaces a switched-off
segment by its mean colour, which hides texture but not colour; ``hide_color=0`` blacks it out.

Why the study's batched LIME was slower than lime's own loop (``bench/bench_lime.py`` measures each
part side by side): on a one-thread CPU most of LIME's time is the detector's forward passes, and a
100-image forward costs more *per image* than a 10-image one (activations fall out of cache), so
handing lime's loop a 100-image classifier batch made LIME slower; lime's per-sample mask building
(a deep copy of the image and one full-image comparison per switched-off segment) is the smaller
part. Hence: small forward chunks on a CPU (the caller's ``batch_size``), and :class:`_TensorLime`,
which overrides only ``data_labels`` — the same random draws from lime's ``random_state`` (so the
same samples, distances and ridge fit by lime), the perturbed images built by indexing
``data[:, segments]`` in torch chunk by chunk on the model's device (no Python loop per sample, no
float64 copies; large chunks where the device gains from them, a GPU) and scored under
``torch.inference_mode``. ``loop="lime"`` keeps lime's own loop (the bench's reference).
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


def _tensor_lime_class():
    from lime.lime_image import LimeImageExplainer

    class _TensorLime(LimeImageExplainer):
        """lime's explainer whose neighbourhood images are built and scored as tensors (same draws)."""

        def __init__(self, model, chunk: int, **kw):
            super().__init__(**kw)
            self._model, self._chunk = model, int(chunk)

        def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10,
                        progress_bar=True):
            uniq, inv = np.unique(segments, return_inverse=True)
            n_features = uniq.shape[0]
            data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
            data[0, :] = 1                                      # exactly lime's draws
            dev = _model_device(self._model)
            img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().to(dev)
            fud = torch.from_numpy(np.ascontiguousarray(fudged_image.transpose(2, 0, 1))).float().to(dev)
            seg = torch.from_numpy(inv.reshape(segments.shape)).long().to(dev)
            rows = torch.from_numpy(data).to(dev)
            out = []
            with torch.inference_mode():
                for j in range(0, num_samples, self._chunk):
                    keep = rows[j:j + self._chunk][:, seg].unsqueeze(1).float()      # [c, 1, H, W]
                    x = fud + keep * (img - fud)
                    out.append(torch.softmax(self._model(x), dim=1).cpu())
            return data, torch.cat(out).double().numpy()

    return _TensorLime


@register
class LIME(Explainer):
    """LIME weights of the target class per segment, as a pixel map."""

    name = 'lime'
    defaults = {"num_samples": 1000, "n_segments": 100, "hide_color": None, "loop": "tensor"}
    uses_segments = True

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["loop"] not in ("tensor", "lime"):
            raise ValueError(f"loop={self.options['loop']!r}: expected 'tensor' (batched neighbourhood) or "
                             "'lime' (lime's own per-sample loop)")
        if int(self.options["num_samples"]) < 2:
            raise ValueError(f"num_samples={self.options['num_samples']!r}: expected an integer >= 2")

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
            if self.options["loop"] == "tensor":
                explainer = _tensor_lime_class()(model, batch_size, random_state=seed)
            else:
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
