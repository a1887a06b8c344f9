"""XAI explainers behind one interface: Grad-CAM, LIME, RISE, SOBOL, XRAI and a random baseline.

``explain(name, model, images, target, *, seed, batch_size, device)`` returns attribution maps
``[N, H, W]`` (float32, finite, the images' size) for a detector with the study's two-logit
interface (``(real, fake)``, inputs in [0, 1] NCHW RGB).

Which code does the work:

* **gradcam** — ``pytorch_grad_cam.GradCAM`` (grad-cam 1.5.7), target layer chosen per architecture
  by :func:`gradcam_layer` (a ``gradcam_layer`` attribute on the model wins; otherwise the last
  convolution *executed* in a forward pass, found with hooks by :func:`last_conv_layer`).
* **lime** — ``lime.lime_image.LimeImageExplainer`` with a batched classifier function, the study's
  shared SLIC segmentation as LIME's superpixels and explicit seeds for the explainer's
  ``random_state`` (sampling) and ``random_seed`` (segmentation); the per-segment weights of the
  target class become a pixel map.  ``hide_color=None`` (lime's default) replaces a switched-off
  segment by its mean colour, which hides texture but not colour; pass ``hide_color=0`` to black it out.
* **xrai** — ``saliency.core.XRAI`` (PAIR-code saliency, framework agnostic) on integrated gradients
  computed by a torch ``call_model_function``; XRAI keeps its own Felzenszwalb segments.
* **rise** and **sobol** are written here: no maintained package in this environment implements them
  for PyTorch (RISE's reference code is a research notebook; the Sobol attribution method's reference
  implementation lives in Xplique, which is TensorFlow-only).  RISE (Petsiuk et al., 2018): random
  low-resolution binary masks, bilinearly upsampled with a random shift, score-weighted average,
  all masked images evaluated in batches.  SOBOL (Fel et al., 2021): a scrambled Sobol
  quasi-Monte-Carlo design from ``scipy.stats.qmc`` on a ``grid x grid`` mask, the Saltelli
  A/B/C_i matrices, images multiplied by the upsampled masks, and the Jansen estimator of the
  total-order indices; all masked images evaluated in batches.
* **random** — a seeded baseline: one uniform random value per segment when ``segments`` are given
  (so the segment ranking is a random permutation), else per pixel.

Same seed → same maps on CPU.  Per-tool options (``num_samples`` ...) are keyword arguments; their
defaults are in :data:`DEFAULTS`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .device import auto_batch_size, pick_device

TOOLS = ("gradcam", "lime", "rise", "sobol", "xrai", "random")

#: Default per-tool options (our paper-profile values; smaller profiles override them).
DEFAULTS: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "lime": {"num_samples": 1000, "n_segments": 100, "hide_color": None},
    "rise": {"n_masks": 4000, "cells": 7, "p": 0.5},
    "sobol": {"grid": 11, "nb_design": 32},
    "xrai": {"steps": 100, "algorithm": "full"},
    "random": {},
}


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


@torch.no_grad()
def batched_proba(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """softmax(model(x)) on ``x`` (already on the model's device) in chunks of ``batch_size`` → [n, 2]."""
    outs = [torch.softmax(model(x[i:i + batch_size]), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, 2, device=x.device)


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


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


# ----------------------------------------------------------------------------- tools
def _gradcam(model, images, targets, *, batch_size, **_):
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


def _lime(model, images, targets, *, seed, batch_size, segments=None, num_samples=1000,
          n_segments=100, hide_color=None, **_):
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


def _rise(model, images, targets, *, seed, batch_size, n_masks=4000, cells=7, p=0.5, **_):
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


def _sobol(model, images, targets, *, seed, batch_size, grid=11, nb_design=32, **_):
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


def _xrai(model, images, targets, *, batch_size, steps=100, algorithm="full", **_):
    import saliency.core as saliency

    dev = _model_device(model)

    def call_model_function(batch, call_model_args=None, expected_keys=None):
        t = call_model_args["target"]
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(batch).transpose(0, 3, 1, 2))).float().to(dev)
        x.requires_grad_(True)
        logits = model(x)
        score = torch.log_softmax(logits, dim=1)[:, t].sum()
        (grad,) = torch.autograd.grad(score, x)
        return {saliency.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).detach().cpu().numpy()}

    xrai = saliency.XRAI()
    params = saliency.XRAIParameters(steps=int(steps), algorithm=algorithm)
    out = []
    for i, t in enumerate(targets):
        img = images[i].permute(1, 2, 0).cpu().numpy().astype(np.float32)
        m = xrai.GetMask(img, call_model_function, call_model_args={"target": t},
                         extra_parameters=params, batch_size=batch_size)
        out.append(np.nan_to_num(np.asarray(m, dtype=np.float32), neginf=0.0, posinf=0.0))
    return np.stack(out)


def _random(model, images, targets, *, seed, segments=None, **_):
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


_IMPL: dict[str, Callable[..., np.ndarray]] = {
    "gradcam": _gradcam, "lime": _lime, "rise": _rise, "sobol": _sobol, "xrai": _xrai, "random": _random,
}


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


def explain(name: str, model: nn.Module, images: torch.Tensor, target: int | Sequence[int] = 1, *,
            seed: int = 0, batch_size: int | None = None, device: str = "auto",
            segments: np.ndarray | None = None, **options: Any) -> np.ndarray:
    """Attribution maps [N, H, W] (float32) of ``images`` for class ``target`` (0 real, 1 fake).

    ``segments`` ([N, H, W] int, e.g. :func:`dfrobust.segments.slic_segments`) are LIME's superpixels
    and the random baseline's units; other tools ignore them.  ``options`` are per-tool settings
    (see :data:`DEFAULTS`); unknown ones raise.  Grad-CAM and XRAI need gradients; RISE, SOBOL,
    LIME and random only query the model's scores.
    """
    if name not in TOOLS:
        raise ValueError(f"tool={name!r}: expected one of {', '.join(TOOLS)}")
    unknown = set(options) - set(DEFAULTS[name])
    if unknown:
        raise ValueError(f"options {sorted(unknown)} not understood by {name}; expected some of {sorted(DEFAULTS[name])}")
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
    opts = {**DEFAULTS[name], **options}
    maps = _IMPL[name](model, images.to(dev), targets, seed=seed, batch_size=bs, segments=segments, **opts)
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return maps
