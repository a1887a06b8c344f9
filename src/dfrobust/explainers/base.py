"""The explainer interface, the registry and the shared helpers.

Every tool is an :class:`Explainer` subclass in its own module (pytorch-grad-cam / torchattacks
style): method parameters are constructor arguments, checked there, and one uniform call
``explainer(model, images, target, *, seed, batch_size, device, segments)`` returns attribution
maps ``[N, H, W]`` (float32, finite, the images' size) for a detector with the study's
two-logit interface (``(real, fake)``, inputs in [0, 1] NCHW RGB). ``@register`` adds a class
to :data:`EXPLAINERS`; :func:`explain` is the one-call shortcut by name.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..core.device import auto_batch_size, pick_device

#: name -> Explainer subclass, in registration order (the order of every table and figure)
EXPLAINERS: dict[str, type["Explainer"]] = {}
#: views kept for callers: tool names, and default options per tool
TOOLS: list[str] = []
DEFAULTS: dict[str, dict[str, Any]] = {}


def register(cls: type["Explainer"]) -> type["Explainer"]:
    """Class decorator: add an explainer to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: an explainer needs a non-empty `name`")
    EXPLAINERS[cls.name] = cls
    if cls.name not in TOOLS:
        TOOLS.append(cls.name)
    DEFAULTS[cls.name] = dict(cls.defaults)
    return cls


# ----------------------------------------------------------------------------- helpers
def _as_targets(target: int | Sequence[int] | torch.Tensor, n: int) -> list[int]:
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    if isinstance(target, (int, np.integer)):
        target = [int(target)] * n
    target = [int(t) for t in target]
    if len(target) != n:
        raise ValueError(f"target has {len(target)} entries for {n} images; expected one int or one per image")
    bad = [t for t in target if t not in (0, 1)]
    if bad:
        raise ValueError(f"target={bad[0]!r}: expected 0 (real) or 1 (fake)")
    return target


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images {shape}: expected a float tensor [N, 3, H, W] in [0, 1]")
    if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise ValueError(f"images range [{float(images.min()):.3g}, {float(images.max()):.3g}]: expected [0, 1]")
    return images.float()


def batched_proba(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """softmax(model(x)) on ``x`` (already on the model's device) in chunks of ``batch_size`` → [n, 2].

    Runs under ``torch.inference_mode`` (no autograd bookkeeping); the result is cloned out of
    inference mode so that callers may use it anywhere.
    """
    with torch.inference_mode():
        outs = [torch.softmax(model(x[i:i + batch_size]), dim=1) for i in range(0, len(x), batch_size)]
        out = torch.cat(outs) if outs else torch.empty(0, 2, device=x.device)
    return out.clone()


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


class Explainer:
    """Base class: options in the constructor, one call for a batch of images.

    Subclasses set ``name`` and ``defaults`` and implement :meth:`explain` on validated inputs
    (images on the model's device, ``targets`` a list of 0/1, ``batch_size`` an int, ``segments``
    an int array [N, H, W] or None). ``needs_gradients`` and ``uses_segments`` describe the tool.
    """

    name: str = ""
    defaults: dict[str, Any] = {}
    needs_gradients: bool = False
    uses_segments: bool = False

    def __init__(self, **options: Any):
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise ValueError(f"options {sorted(unknown)} not understood by {self.name}; "
                             f"expected some of {sorted(self.defaults)}")
        self.options = {**self.defaults, **options}

    def explain(self, model: nn.Module, images: torch.Tensor, targets: list[int], *, seed: int,
                batch_size: int, segments: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, model: nn.Module, images: torch.Tensor, target: int | Sequence[int] = 1, *,
                 seed: int = 0, batch_size: int | None = None, device: str = "auto",
                 segments: np.ndarray | None = None) -> np.ndarray:
        images = _check_images(images)
        targets = _as_targets(target, len(images))
        if segments is not None:
            segments = np.asarray(segments)
            if segments.shape != (images.shape[0], *images.shape[2:]):
                raise ValueError(f"segments shape {segments.shape}: expected {(images.shape[0], *images.shape[2:])}")
        dev = pick_device(device)
        model = model.to(dev).eval()
        bs = int(batch_size or auto_batch_size(dev, images.shape[-1]))
        if bs < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
        maps = self.explain(model, images.to(dev), targets, seed=seed, batch_size=bs, segments=segments)
        return np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def check_tool(name: str) -> str:
    """The tool name, or a one-line ValueError listing the registered ones."""
    if name not in EXPLAINERS:
        raise ValueError(f"tool={name!r}: expected one of {', '.join(TOOLS)}")
    return name


def make_explainer(name: str, **options: Any) -> Explainer:
    """The registered explainer ``name`` with ``options`` (checked now, before any model runs)."""
    return EXPLAINERS[check_tool(name)](**options)


def explain(name: str, model: nn.Module, images: torch.Tensor, target: int | Sequence[int] = 1, *,
            seed: int = 0, batch_size: int | None = None, device: str = "auto",
            segments: np.ndarray | None = None, **options: Any) -> np.ndarray:
    """Attribution maps [N, H, W] (float32) of ``images`` for class ``target`` (0 real, 1 fake).

    ``segments`` ([N, H, W] int, e.g. :func:`dfrobust.explainers.segments.slic_segments`) are
    LIME's superpixels and the random baseline's units; other tools ignore them. ``options`` are
    the tool's constructor arguments (see :data:`DEFAULTS`); unknown ones raise.
    """
    return make_explainer(name, **options)(model, images, target, seed=seed, batch_size=batch_size,
                                           device=device, segments=segments)


def warmup(tools: Sequence[str] = TOOLS) -> None:
    """Import the libraries behind ``tools`` once, so that timings measure explanations, not imports."""
    if "gradcam" in tools:
        import pytorch_grad_cam  # noqa: F401
    if "lime" in tools:
        import lime.lime_image  # noqa: F401
    if "xrai" in tools:
        import saliency.core  # noqa: F401
    if "sobol" in tools:
        import scipy.stats.qmc  # noqa: F401
    import skimage.segmentation  # noqa: F401
