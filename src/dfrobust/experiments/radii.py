"""Per-sample critical radii records (issue #23.1, 23.2, 23.5): what chapter 03 needs to compare
detectors over the whole distribution of radii, to read RR at any temperature and to say whether
its attacks converged.

:func:`radii_records` runs, per detector, the RR attack's grid and bisection rows
(:func:`dfrobust.attacks.radii.attack_rows`, moving away from the clean prediction ŷ) and keeps,
per sample, ``r_flip_upper`` and ``r_b_upper`` (upper bounds, named so) with their last bisection
bracket, and on the ε grid the records RA and RR read (``p_adv``, ``pred_adv``, ``p_clean``,
``pred_clean``, ``y``, ``in_budget``: :func:`dfrobust.metrics.robust_accuracy` and
:func:`~dfrobust.metrics.robust_ratio` take them) and the margins RR at another temperature reads
(:mod:`dfrobust.metrics.calibration`). Both come from the same rows, so
``RA(ε) = mean(ŷ = y ∧ r_flip_upper > ε)`` and ``RR(ε, b) = mean(r_b_upper > ε)`` on the grid
exactly. With validation images it fits each detector's temperature (and its ECE before and
after); with ``convergence_n`` it reruns a seeded subsample with ``convergence_factor`` × the steps,
``convergence_restarts`` random restarts and FAB-L∞ (:func:`convergence`).

**Cost** (``bench/bench_radii.py``: 24 **synthetic** images, Meso4 at 128 px with random weights,
one thread, the shared 2-core dev machine; chapter 03's grid, 0 and 4 radii 0.00196 .. 0.2, and 21
bounds b). A row costs about ``(steps + 1)`` gradient passes per image for the down run and as much
again where the up run runs (one clean forward per batch for every row). With the defaults
``steps=1, n_bisect=2``: 10.7 passes per image (8 to 13 on confident detectors); at 77-82 ms per
pass of the default build's three detectors (bench_ch03_cost) that is 204 x 10.7 x 0.08 s ≈ 180
CPU-s (3 CPU-min) added to the default build. ``steps=2`` costs 17 passes (≈ 290 CPU-s). The
convergence rerun (10x steps, 2 restarts, FAB-L∞ 20 steps) costs about 325 passes per subsample
image: ``convergence_n=4`` adds ≈ 100 CPU-s to the default build.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr
from scipy.special import expit

from ..attacks import radii as _radii
from ..core.device import describe, pick_device
from ..metrics import calibration
from ..metrics.grids import check_b_grid
from .records import _check_inputs, _clean, _resize, _sample_coords, check_sweep


@torch.inference_mode()
def _fake_margin(model, images: torch.Tensor, batch: int, device) -> np.ndarray:
    """z_fake − z_real per image (the two-logit score a temperature divides)."""
    size = int(getattr(model, "input_size", None) or images.shape[-1])
    out = []
    for i in range(0, len(images), batch):
        z = model(_resize(images[i:i + batch].float(), size).to(device)).double()
        out.append((z[:, 1] - z[:, 0]).cpu())
    return torch.cat(out).numpy()


def convergence(model, x: torch.Tensor, yhat: torch.Tensor, reported: dict, eps_grid: Sequence[float],
                b_grid: Sequence[float], *, steps: int, n_bisect: int, factor: int = 10, restarts: int = 2,
                fab_steps: int = 20, seed: int = 0, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Rerun the rows on ``x`` (a subsample, the model's size) with ``factor`` × ``steps`` and ``restarts``
    random restarts, and FAB-L∞; compare with the ``reported`` radii of the same samples
    (:func:`dfrobust.attacks.radii.radii_from_rows` output).

    Returns ``rr_drop`` [E, B]: RR(ε, b) reported minus RR with the stronger search's radii (the smaller
    of the two per sample: both are upper bounds), ``r_b_lowered`` [B]: the share of samples whose r_b the
    stronger search lowered by more than its bisection bracket, ``r_flip_lowered``: the same for r_flip
    with the stronger search or FAB, and ``fab_r_flip`` [n] (FAB's flip radius; inf where none).
    """
    strong = _radii.radii_from_rows(
        _radii.attack_rows(model, x, yhat, eps_grid, b_grid, steps=steps * int(factor), n_bisect=n_bisect,
                           restarts=int(restarts), seed=seed + 1, batch_size=batch_size), b_grid)
    fab = _radii.fab_flip_radius(model, x, yhat, steps=fab_steps, max_radius=max(eps_grid), seed=seed)
    eps = np.asarray(eps_grid, float).reshape(-1, 1, 1)
    r_b = np.minimum(reported["r_b_upper"], strong["r_b_upper"])
    rr_rep = (reported["r_b_upper"][None] > eps).mean(-1)
    rr_strong = (r_b[None] > eps).mean(-1)
    r_flip = np.minimum(strong["r_flip_upper"], fab)

    def below(upper, bracket):   # the largest radius the reported search attacked without meeting it
        return np.where(np.isfinite(upper), upper - np.where(np.isfinite(upper), bracket, 0.0), np.inf)

    return {"rr_drop": rr_rep - rr_strong,
            "r_b_lowered": (r_b < below(reported["r_b_upper"], reported["r_b_bracket"])).mean(-1),
            "r_flip_lowered": float((r_flip < below(reported["r_flip_upper"], reported["r_flip_bracket"])).mean()),
            "fab_r_flip": fab}


def radii_records(models: Mapping[str, torch.nn.Module], images: torch.Tensor, labels: torch.Tensor,
                  meta: pd.DataFrame | None, eps_grid: Sequence[float], b_grid: Sequence[float], *,
                  steps: int = 1, n_bisect: int = 2, temperatures: Sequence[float] = (1.0,),
                  val: tuple[torch.Tensor, torch.Tensor] | None = None, convergence_n: int = 0,
                  convergence_factor: int = 10, convergence_restarts: int = 2, seed: int = 0,
                  device: str = "auto", batch_size: int | None = None, progress: bool = False) -> xr.Dataset:
    """Per-sample critical radii and grid records, dims (model, sample) [× b, × eps]; see the module.

    ``images`` [N, 3, H, W] in [0, 1] (resized per model), ``labels`` the truth y (0 real, 1 fake),
    ``meta`` the manifest rows (their columns, ``identity`` among them, become sample coordinates).
    ``temperatures``: the temperatures at which RR will be read from the margins (the up-run shortcut is
    exact for these). ``val``: validation (images, labels) to fit each detector's temperature.
    ``convergence_n``: size of the seeded subsample rerun by :func:`convergence` (0: none).
    All inputs are checked before any attack runs (one-line ValueError).
    """
    _, eps = check_sweep(["rr"], eps_grid)
    b = [float(v) for v in check_b_grid(b_grid)]
    labels = _check_inputs(models, images, labels, meta)
    calibration._temperatures(temperatures)
    for what, v, lo in (("steps", steps, 1), ("n_bisect", n_bisect, 0), ("convergence_n", convergence_n, 0),
                        ("convergence_factor", convergence_factor, 1), ("convergence_restarts", convergence_restarts, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{what}={v!r}: expected an integer >= {lo}")
    if not any(e > 0 for e in eps):
        raise ValueError(f"eps_grid={list(eps_grid)!r}: expected at least one radius > 0")
    if val is not None:
        _check_inputs(models, val[0], val[1], None)
    dev = pick_device(device)
    n, names = images.shape[0], list(models)
    order = np.argsort(eps, kind="stable")
    eps = [eps[i] for i in order]
    sub = np.sort(np.random.default_rng(seed).choice(n, min(int(convergence_n), n), replace=False))
    out: dict[str, list] = {k: [] for k in ("r_flip_upper", "r_flip_bracket", "r_b_upper", "r_b_bracket", "p_adv",
                                            "pred_adv", "margin_min", "margin_max", "p_clean", "pred_clean",
                                            "margin_clean", "temperature", "ece_val", "ece_val_fitted",
                                            "rr_drop", "r_b_lowered", "r_flip_lowered")}
    timings = {}
    for name in names:
        t0 = time.perf_counter()
        model = models[name].to(dev).eval()
        c = _clean(model, images, batch_size, dev)
        yhat = torch.as_tensor(c["pc"], dtype=torch.long)
        rows = _radii.attack_rows(model, c["x"], yhat, eps, b, steps=steps, n_bisect=n_bisect,
                                  temperatures=temperatures, seed=seed, batch_size=c["bs"])
        rad = _radii.radii_from_rows(rows, b)
        grid = _radii.grid_from_rows(rows, eps)
        for k in ("r_flip_upper", "r_flip_bracket", "r_b_upper", "r_b_bracket"):
            out[k].append(rad[k])
        out["p_adv"].append(grid["p_adv"])
        out["pred_adv"].append(np.where(grid["flipped"], 1 - c["pc"], c["pc"]))
        out["margin_min"].append(grid["margin_min"]), out["margin_max"].append(grid["margin_max"])
        out["p_clean"].append(rows.p0), out["pred_clean"].append(c["pc"]), out["margin_clean"].append(rows.m0)
        if val is not None:
            s, yv = _fake_margin(model, val[0], c["bs"], dev), val[1].numpy()
            t = calibration.fit_temperature(s, yv)
            out["ece_val"].append(calibration.ece(expit(s), yv))
            out["ece_val_fitted"].append(calibration.ece(expit(s / t), yv))
            out["temperature"].append(t)
        else:
            out["temperature"].append(np.nan), out["ece_val"].append(np.nan), out["ece_val_fitted"].append(np.nan)
        if len(sub):
            conv = convergence(model, c["x"][sub], yhat[sub], {k: v[..., sub] for k, v in rad.items()}, eps, b,
                               steps=steps, n_bisect=n_bisect, factor=convergence_factor,
                               restarts=convergence_restarts, seed=seed, batch_size=c["bs"])
        else:
            conv = {"rr_drop": np.full((len(eps), len(b)), np.nan), "r_b_lowered": np.full(len(b), np.nan),
                    "r_flip_lowered": np.nan}
        for k in ("rr_drop", "r_b_lowered", "r_flip_lowered"):
            out[k].append(conv[k])
        timings[name] = round(time.perf_counter() - t0, 3)
        if progress:
            print(f"{name:>16s} radii: {timings[name]:.1f} s", flush=True)

    ms, mbs, mes = ("model", "sample"), ("model", "b", "sample"), ("model", "eps", "sample")
    desc = {
        "r_flip_upper": (ms, "smallest L∞ radius at which the RR attack flipped ŷ (upper bound; inf: none up to "
                             "the largest grid radius)", "pixel [0,1]"),
        "r_flip_bracket": (ms, "width of r_flip_upper's last bisection bracket (the radius below it did not flip)",
                           "pixel [0,1]"),
        "r_b_upper": (mbs, "smallest L∞ radius at which |ΔP(ŷ)| > b was found (upper bound; inf: none)",
                      "pixel [0,1]"),
        "r_b_bracket": (mbs, "width of r_b_upper's last bisection bracket", "pixel [0,1]"),
        "p_adv": (mes, "P(ŷ | x+δ) of the largest |ΔP(ŷ)| found at any radius <= eps", "1"),
        "pred_adv": (mes, "prediction under attack: flipped from ŷ if any radius <= eps flipped it", "1"),
        "margin_min": (mes, "smallest margin z_ŷ − z_other found at any radius <= eps", "logit"),
        "margin_max": (mes, "largest margin z_ŷ − z_other found at any radius <= eps", "logit"),
        "p_clean": (ms, "P(ŷ | x)", "1"),
        "pred_clean": (ms, "clean prediction ŷ (P(fake) >= 0.5)", "1"),
        "margin_clean": (ms, "clean margin z_ŷ − z_other", "logit"),
        "temperature": (("model",), "temperature fitted on validation (NLL; nan: no validation data)", "1"),
        "ece_val": (("model",), "validation ECE at T = 1", "1"),
        "ece_val_fitted": (("model",), "validation ECE at the fitted temperature", "1"),
        "rr_drop": (("model", "eps", "b"), "convergence: RR reported minus RR of a search with more steps and "
                                           "restarts on the subsample (nan: not run)", "1"),
        "r_b_lowered": (("model", "b"), "convergence: share of the subsample whose r_b the stronger search "
                                        "lowered by more than its bracket", "1"),
        "r_flip_lowered": (("model",), "convergence: the same for r_flip, with the stronger search or FAB-L∞", "1"),
    }
    data_vars = {k: (dims, np.stack(out[k]), {"long_name": long, "units": units})
                 for k, (dims, long, units) in desc.items()}
    data_vars["in_budget"] = (mes, np.ones((len(names), len(eps), n), bool),
                              {"long_name": "every row is within its radius (by construction)", "units": "bool"})
    data_vars["y"] = (("sample",), labels.numpy(), {"long_name": "true label (0 real, 1 fake)", "units": "1"})
    ds = xr.Dataset(data_vars, coords={"model": names, "eps": np.asarray(eps), "b": np.asarray(b),
                                       "sample": np.arange(n), **_sample_coords(meta, n)})
    ds["eps"].attrs.update(long_name="L∞ radius ε (images in [0, 1])", units="pixel [0,1]")
    ds.attrs.update(kind="radii_records", attacked_label="y_hat", seed=int(seed), device=describe(dev),
                    steps=int(steps), n_bisect=int(n_bisect), temperatures=str([float(t) for t in temperatures]),
                    convergence=f"{len(sub)} samples, {convergence_factor}x steps, {convergence_restarts} restarts, "
                                f"FAB-Linf" if len(sub) else "not run",
                    convergence_samples=str(sub.tolist()),
                    bound_note="every radius is an upper bound of the critical radius (a perturbation of that "
                               "L∞ norm was found); RA and RR on the grid are reductions of the same rows",
                    attack_time_s=str(timings))
    return ds
