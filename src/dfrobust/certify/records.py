"""Certified records per (model, ε, sample) and the certified Robust Ratio as their reduction.

A sample is **certified** at (ε, b) when the certified maximum change of the probability of its
clean prediction ŷ over the L∞ ball (clipped to [0, 1]),

    Δ_cert = max(P(ŷ|x) − σ(m_lo), σ(m_hi) − P(ŷ|x)),   P(ŷ|x) = σ(m(x)),

is at most ``b``, with ``[m_lo, m_hi]`` the margin bounds of :mod:`.bounds`. Every δ in the ball
then changes P(ŷ) by at most Δ_cert, so ``RR_certified(ε, b) <= RR(ε, b) <= RR_attack(ε, b)``
sample by sample: the certified RR is a *lower* bound of the formal RR, the attack-based RR of
:mod:`dfrobust.metrics` an upper bound. At ε = 0 the ball is the point x: Δ_cert = 0 exactly.

The records mirror the attack records (sweep axes as dimensions, a ``sample`` dimension, units
and long names on every variable), so RR_certified over any b grid or group split is a
reduction that never re-runs a bound.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from ..core.params import check_eps
from .bounds import METHODS, margin_bounds, trace


def _sigmoid(m: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * m))  # stable for large |m|


def certified_change(m_lo, m_hi, margin_clean):
    """Certified max |ΔP(ŷ)|: ``max(σ(m) − σ(m_lo), σ(m_hi) − σ(m))`` (numpy or xarray)."""
    p = _sigmoid(margin_clean)
    return np.maximum(np.maximum(p - _sigmoid(m_lo), _sigmoid(m_hi) - p), 0.0)


def _check_eps_grid(eps_grid) -> list[float]:
    if eps_grid is None or isinstance(eps_grid, (str, bytes)) or len(eps_grid) == 0:
        raise ValueError(f"eps_grid={eps_grid!r}: expected a non-empty list of radii >= 0")
    out = [check_eps(e) for e in eps_grid]
    if len(set(out)) != len(out):
        raise ValueError(f"eps_grid={list(eps_grid)!r}: duplicate values")
    return out


def certified_records(model_or_models, images: torch.Tensor, eps_grid: Sequence[float], *,
                      method: str | Mapping[str, str] = "crown", labels=None,
                      coords: Mapping[str, Sequence] | None = None, batch_size: int = 8,
                      device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                      max_bytes: int = 256 * 2**20, crown_budget: int | None = None,
                      progress: bool = False) -> xr.Dataset:
    """Certified margin bounds with dims (model, eps, sample).

    ``crown_budget``: CROWN (and alpha-CROWN) refine at most this many intermediate neurons per
    layer and sample (the rest keep their IBP bounds; sound either way, cheaper and looser); None: all.
    ``model_or_models``: a :class:`dfrobust.models.Detector` or a dict name → detector (a MesoNet:
    the layers :mod:`.bounds` supports). ``images`` float [N, 3, S, S] in [0, 1] at every model's
    ``input_size``. ``method``: "crown", "alpha-crown" or "ibp", or a dict name → method. ``labels`` (optional,
    0 real / 1 fake) and ``coords`` (optional sample coordinates, e.g. group) are attached.
    Variables: ``m_lo``, ``m_hi``, ``certified_change`` (model, eps, sample); ``margin_clean``,
    ``p_clean`` (= P(ŷ|x)), ``pred_clean`` (model, sample); ``unstable_frac`` (share of
    pre-activation neurons whose bounds straddle 0); ``time_s`` (model, eps); ``method`` (model).
    Everything is validated (and every model traced) before any bound is computed.
    """
    models = dict(model_or_models) if isinstance(model_or_models, Mapping) else {
        getattr(model_or_models, "name", "model"): model_or_models}
    if not models:
        raise ValueError("model_or_models: expected a detector or a non-empty dict name -> detector")
    eps = _check_eps_grid(eps_grid)
    methods = {m: (method[m] if isinstance(method, Mapping) else method) for m in models}
    for m, meth in methods.items():
        if meth not in METHODS:
            raise ValueError(f"method={meth!r} for {m}: expected one of {', '.join(METHODS)}")
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images: expected a float tensor [N, 3, S, S] in [0, 1], got "
                         f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("images: expected at least one image (N > 0)")
    lo_, hi_ = float(images.min()), float(images.max())
    if lo_ < 0 or hi_ > 1:
        raise ValueError(f"images range [{lo_:.4g}, {hi_:.4g}]: expected values in [0, 1]")
    if crown_budget is not None and (isinstance(crown_budget, bool) or int(crown_budget) < 0):
        raise ValueError(f"crown_budget={crown_budget!r}: expected None or an integer >= 0")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
    if labels is not None:
        labels = np.asarray(torch.as_tensor(labels).view(-1).cpu().numpy(), dtype=np.int64)
        if len(labels) != n or not set(np.unique(labels).tolist()) <= {0, 1}:
            raise ValueError(f"labels: {len(labels)} values {sorted(set(labels.tolist()))[:4]} for {n} images; "
                             "expected one 0 (real) / 1 (fake) label per image")
    coords = dict(coords or {})
    for k, v in coords.items():
        if len(v) != n:
            raise ValueError(f"coords[{k!r}]: {len(v)} values for {n} images; expected one per image")
    graphs = {}
    for name, model in models.items():
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"models[{name!r}]: expected a torch.nn.Module, got {type(model).__name__}")
        size = getattr(model, "input_size", None)
        if size is not None and tuple(images.shape[2:]) != (size, size):
            raise ValueError(f"images are {images.shape[2]}x{images.shape[3]} but {name} takes {size}x{size}; "
                             "load or resize them at the model's input_size first")
        model.eval()
        graphs[name] = trace(model, tuple(images.shape[1:]), dtype=dtype)
    dev = torch.device(device)

    M, E = len(models), len(eps)
    m_lo = np.zeros((M, E, n))
    m_hi = np.zeros((M, E, n))
    unst = np.zeros((M, E, n))
    m_clean = np.zeros((M, n))
    pred = np.zeros((M, n), dtype=np.int64)
    gap = np.zeros(M)
    t_s = np.zeros((M, E))
    bs = int(batch_size)
    for mi, (name, model) in enumerate(models.items()):
        g = graphs[name].to(device=dev)
        # ŷ as the detector itself predicts it (p_fake >= 0.5), so records line up with attack records
        with torch.no_grad():
            mdev = next(model.parameters()).device
            logits32 = torch.cat([model(images[s:s + 64].to(mdev)).float().cpu() for s in range(0, n, 64)])
        pr = (torch.softmax(logits32, 1)[:, 1] >= 0.5).long()
        pred[mi] = pr.numpy()
        for ei, e in enumerate(eps):
            t0 = time.perf_counter()
            for s in range(0, n, bs):
                xb = images[s:s + bs].to(dev)
                r = margin_bounds(g, xb, e, method=methods[name], pred=pr[s:s + bs].to(dev), dtype=dtype,
                                  max_bytes=max_bytes, crown_budget=crown_budget)
                m_lo[mi, ei, s:s + bs] = r.m_lo.cpu().numpy()
                m_hi[mi, ei, s:s + bs] = r.m_hi.cpu().numpy()
                unst[mi, ei, s:s + bs] = r.unstable_frac.cpu().numpy()
                if ei == 0:
                    m_clean[mi, s:s + bs] = r.margin_clean.cpu().numpy()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t_s[mi, ei] = time.perf_counter() - t0
            if progress:
                print(f"{name:>16s} {methods[name]:>5s} eps={e:<8g}: {t_s[mi, ei]:.1f} s", flush=True)
        # the traced graph must reproduce the detector (a mis-traced op would make every bound wrong)
        m32 = (logits32[torch.arange(n), pr] - logits32[torch.arange(n), 1 - pr]).double().numpy()
        gap[mi] = float(np.abs(m32 - m_clean[mi]).max())
        if gap[mi] > 1e-3 * max(1.0, float(np.abs(m32).max())):
            raise RuntimeError(f"{name}: the traced graph's margin differs from the detector's by {gap[mi]:.3g}; "
                               "an operation is not reproduced (report this as a bug)")

    dims = ("model", "eps", "sample")
    change = certified_change(m_lo, m_hi, m_clean[:, None, :])
    data_vars = {
        "m_lo": (dims, m_lo, {"long_name": "certified lower bound of the margin z_ŷ − z_other", "units": "logit"}),
        "m_hi": (dims, m_hi, {"long_name": "certified upper bound of the margin z_ŷ − z_other", "units": "logit"}),
        "certified_change": (dims, change, {"long_name": "certified max |P(ŷ|x+δ) − P(ŷ|x)| over the ball",
                                            "units": "1"}),
        "unstable_frac": (dims, unst, {"long_name": "share of pre-activation neurons with bounds straddling 0",
                                       "units": "1"}),
        "margin_clean": (("model", "sample"), m_clean, {"long_name": "clean margin z_ŷ − z_other", "units": "logit"}),
        "p_clean": (("model", "sample"), _sigmoid(m_clean), {"long_name": "P(ŷ | x)", "units": "1"}),
        "pred_clean": (("model", "sample"), pred, {"long_name": "clean prediction ŷ (0 real, 1 fake)", "units": "1"}),
        "time_s": (("model", "eps"), t_s, {"long_name": "wall time of the bounds at this radius", "units": "s"}),
        "method": (("model",), np.array([methods[m] for m in models], dtype=object),
                   {"long_name": "bound method (crown: CROWN ∩ IBP; alpha-crown: CROWN with optimised ReLU lower "
                                 "slopes ∩ CROWN; ibp: interval bound propagation)"}),
        "trace_gap": (("model",), gap, {"long_name": "max |margin(traced graph) − margin(detector)| on clean inputs",
                                        "units": "logit"}),
    }
    if labels is not None:
        data_vars["y"] = (("sample",), labels, {"long_name": "true label (0 real, 1 fake)", "units": "1"})
    crd = {"model": list(models), "eps": np.asarray(eps, dtype=float), "sample": np.arange(n)}
    crd.update({k: ("sample", np.asarray(v)) for k, v in coords.items()})
    ds = xr.Dataset(data_vars, coords=crd)
    ds["eps"].attrs.update(long_name="L∞ radius ε (images in [0, 1])", units="pixel [0,1]")
    ds.attrs.update(kind="certified_records", dtype=str(dtype).replace("torch.", ""), batch_size=bs,
                    crown_budget=-1 if crown_budget is None else int(crown_budget),
                    device=str(dev), box="L-inf ball clipped to [0, 1]",
                    bound_note="certified RR is a lower bound of the formal RR (sound in real arithmetic)")
    return ds


def first_order_change(model: torch.nn.Module, images: torch.Tensor, eps_grid: Sequence[float], *,
                       batch_size: int = 32) -> xr.DataArray:
    """The first-order estimate of the largest change of P(ŷ) over each ball: ``Σ_i max(g_i·lo_i, g_i·hi_i)``
    with ``g = ∇_x P(ŷ|x)`` at the clean point and ``[lo_i, hi_i] = [max(−ε, −x_i), min(ε, 1 − x_i)]``
    (the linearised detector's exact worst case over the clipped ball), capped at 1. An estimate, neither a
    bound nor an attack: beside the certificate (a bound above) and the attacks (points below) it shows
    whether the detector is close to linear at that radius. Dims (eps, sample)."""
    eps = _check_eps_grid(eps_grid)
    dev = next(model.parameters()).device
    out = np.zeros((len(eps), len(images)))
    model.eval()
    for s in range(0, len(images), batch_size):
        x = images[s:s + batch_size].to(dev).clone().requires_grad_(True)
        p = torch.softmax(model(x).float(), 1)
        p_hat = torch.where(p[:, 1] >= 0.5, p[:, 1], p[:, 0])
        g, = torch.autograd.grad(p_hat.sum(), x)
        g, x = g.detach().double(), x.detach().double()
        for ei, e in enumerate(eps):
            lo, hi = (-x).clamp(min=-e), (1 - x).clamp(max=e)
            out[ei, s:s + len(x)] = torch.maximum(g * lo, g * hi).flatten(1).sum(1).clamp(max=1).cpu().numpy()
    return xr.DataArray(out, dims=("eps", "sample"), coords={"eps": np.asarray(eps, float)},
                        name="first_order_change",
                        attrs={"long_name": "first-order estimate of max |ΔP(ŷ)| over the ball", "units": "1"})


__all__ = ["certified_records", "certified_change", "first_order_change"]
