"""Grad-CAM through ``pytorch_grad_cam.GradCAM`` (grad-cam), target layer chosen per architecture.

The layer: a ``cam_layer``/``gradcam_layer`` attribute on the model wins; otherwise the last
convolution *executed* in a forward pass, found with hooks by :func:`last_conv_layer`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Explainer, _model_device, register


def last_conv_layer(model: nn.Module, input_size: int | None = None) -> nn.Module:
    """The last ``nn.Conv2d`` executed in a forward pass (found with hooks on one dummy input).

    Execution order, not registration order: blocks may be registered in a different order than
    ``forward`` runs them.  Convolutions whose output is 1x1 are skipped (no spatial map to show).
    """
    size = int(input_size or getattr(model, "input_size", None) or 256)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"model {type(model).__name__} has no nn.Conv2d layer; Grad-CAM needs one")
    order: list[tuple[nn.Module, int]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append((m, o.shape[-1] * o.shape[-2]))) for m in convs]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=_model_device(model)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    spatial = [m for m, area in order if area > 1]
    return (spatial or [m for m, _ in order] or convs)[-1]


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The Grad-CAM target layer: the detector's own choice (``cam_layer`` / ``gradcam_layer``
    attribute, a module or a submodule name: :class:`dfrobust.models.Detector` picks the last
    convolutional block per architecture), else the last convolution executed (:func:`last_conv_layer`)."""
    layer = getattr(model, "cam_layer", None) or getattr(model, "gradcam_layer", None)
    if isinstance(layer, str):
        layer = model.get_submodule(layer)
    if isinstance(layer, nn.Module):
        return layer
    return last_conv_layer(model)


@register
class GradCAM(Explainer):
    """Grad-CAM maps of the target class (needs gradients)."""

    name = 'gradcam'
    defaults = {}
    needs_gradients = True

    def explain(self, model, images, targets, *, seed, batch_size, segments):
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        layer = gradcam_layer(model)
        out = []
        with GradCAM(model=model, target_layers=[layer]) as cam:
            for j in range(0, len(images), batch_size):
                maps = cam(input_tensor=images[j:j + batch_size],
                           targets=[ClassifierOutputTarget(t) for t in targets[j:j + batch_size]])
                out.append(np.asarray(maps, dtype=np.float32))
        return np.concatenate(out)
