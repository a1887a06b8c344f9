"""How linear RR is in the tolerance: line fits of RR curves with bootstrap CIs.

For each data type × model × attack, RR is fitted against the tolerance by least squares in two
readings — tolerance = b at a fixed ε, and tolerance = ε at a fixed b — reporting slope,
intercept, R² and the maximum absolute deviation from the line, each with a percentile
bootstrap CI from the same resampling weights as :func:`dfrobust.metrics.bootstrap`.
Replicates are kept so that differences in R² (video − image, progressive − per_frame) get
CIs too (:func:`r2_difference`). Written by hand: ``scipy.stats.linregress`` fits one line at a
time; here thousands of replicate curves are fitted at once with the closed-form OLS solution.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .bootstrap import bootstrap_weights
from .grids import check_b_grid
from .robustness import robust_per_sample


READINGS = ("b", "eps")



STATS = ("slope", "intercept", "r2", "max_dev")



def fit_lines(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Least-squares lines of ``y[..., k]`` on ``x[k]``: slope, intercept, R², max |residual|.

    R² is NaN where ``y`` is constant (no variance to explain). Vectorised over leading axes.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or y.shape[-1] != x.size or x.size < 2:
        raise ValueError(f"fit_lines: x of shape {x.shape} and y of shape {y.shape}; expected 1-D x "
                         "with >= 2 points matching y's last axis")
    if np.ptp(x) == 0:
        raise ValueError("fit_lines: all tolerance values are equal; expected at least two distinct values")
    xm = x.mean()
    ym = y.mean(-1, keepdims=True)
    sxx = ((x - xm) ** 2).sum()
    slope = ((x - xm) * (y - ym)).sum(-1) / sxx
    intercept = ym[..., 0] - slope * xm
    fit = intercept[..., None] + slope[..., None] * x
    res = y - fit
    ss_res = (res ** 2).sum(-1)
    ss_tot = ((y - ym) ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 1e-15, 1 - ss_res / np.where(ss_tot > 1e-15, ss_tot, 1.0), np.nan)
    return {"slope": slope, "intercept": intercept, "r2": r2, "max_dev": np.abs(res).max(-1)}



def _curves(records: xr.Dataset, b_grid, fixed_eps: float, fixed_b: float, w: np.ndarray
            ) -> dict[str, tuple[np.ndarray, xr.DataArray, np.ndarray, float]]:
    """RR curves for both readings: reading -> (tolerance grid, estimate [..., tol], boot [..., boot, tol], fixed)."""
    b = check_b_grid(b_grid)
    eps_vals = np.asarray(records["eps"].values, dtype=float)
    e_fix = float(eps_vals[np.argmin(np.abs(eps_vals - fixed_eps))])
    b_all = np.unique(np.concatenate([b, [fixed_b]]))
    robust = robust_per_sample(records, b_all).astype(float)
    robust = robust.transpose(..., "sample")
    num = np.tensordot(robust.values, w, axes=([-1], [1]))          # [..., n_boot]
    boots = num / w.sum(1)
    est = robust.mean("sample")
    boot_da = xr.DataArray(boots, dims=robust.dims[:-1] + ("boot",),
                           coords={k: v for k, v in est.coords.items()})
    out = {}
    sel_b = est.sel(eps=e_fix).sel(b=b)
    out["b"] = (b, sel_b.transpose(..., "b"), boot_da.sel(eps=e_fix).sel(b=b).transpose(..., "boot", "b"), e_fix)
    out["eps"] = (eps_vals, est.sel(b=fixed_b).transpose(..., "eps"),
                  boot_da.sel(b=fixed_b).transpose(..., "boot", "eps"), float(fixed_b))
    return out



def linearity(records_by_type: Mapping[str, tuple[xr.Dataset, str]], b_grid: Sequence[float], *,
              fixed_eps: float, fixed_b: float, n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95) -> xr.Dataset:
    """Fit RR against tolerance per data type × model × attack, in both readings, with bootstrap CIs.

    ``records_by_type``: data type → (records, by), where ``by`` is the bootstrap cluster
    ("sample" for images or video-level records, "video_id" for frame records). Readings:
    ``b`` — RR(b) at the grid's ε nearest ``fixed_eps``; ``eps`` — RR(ε) at ``fixed_b``.
    Returns dims (data_type, model, attack, reading[, boot]): for each stat in
    slope/intercept/r2/max_dev the estimate, ``_lo``, ``_hi`` and ``_boot`` replicates, plus the
    curves (``rr``/``tolerance`` on a ``k`` axis) for the figure.
    """
    if not records_by_type:
        raise ValueError("records_by_type={}: expected at least one data type")
    check_b_grid([fixed_b])
    b = check_b_grid(b_grid)
    if len(b) < 2:
        raise ValueError(f"b_grid={list(b_grid)!r}: expected at least two bounds to fit a line")
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci!r}: expected a level in (0, 1)")
    q = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    models = attacks = None
    for rec, _ in records_by_type.values():
        m, a = list(map(str, rec["model"].values)), list(map(str, rec["attack"].values))
        models = m if models is None else [x for x in models if x in m]
        attacks = a if attacks is None else [x for x in attacks if x in a]
    if not models or not attacks:
        raise ValueError("records_by_type: no model/attack common to every data type")
    kmax = max(len(b), max(rec.sizes["eps"] for rec, _ in records_by_type.values()))
    per_type = []
    for dtype, (rec, by) in records_by_type.items():
        if rec.sizes["eps"] < 2:
            raise ValueError(f"{dtype}: {rec.sizes['eps']} eps value(s); expected >= 2 to fit RR against eps")
        rec = rec.sel(model=models, attack=attacks)
        w = bootstrap_weights(rec, by=by, n_boot=n_boot, seed=seed)
        curves = _curves(rec, b, fixed_eps, fixed_b, w)
        readings = []
        for reading in READINGS:
            tol, est, boot, fixed = curves[reading]
            fe = fit_lines(tol, est.values)
            fb = fit_lines(tol, boot.values)
            dims = est.dims[:-1]
            data = {}
            for s in STATS:
                data[s] = (dims, fe[s])
                data[f"{s}_boot"] = (dims + ("boot",), fb[s])
                with warnings.catch_warnings():  # cells where RR is flat have no R²: NaN, not a warning
                    warnings.simplefilter("ignore", RuntimeWarning)
                    lo, hi = np.nanquantile(fb[s], q, axis=-1) if np.isfinite(fb[s]).any() else (np.nan, np.nan)
                data[f"{s}_lo"], data[f"{s}_hi"] = (dims, np.broadcast_to(lo, fe[s].shape)), \
                    (dims, np.broadcast_to(hi, fe[s].shape))
            pad = kmax - len(tol)
            rr = np.concatenate([est.values, np.full(est.shape[:-1] + (pad,), np.nan)], -1)
            data["rr"] = (dims + ("k",), rr)
            data["tolerance"] = (("k",), np.concatenate([tol, np.full(pad, np.nan)]))
            data["fixed"] = ((), fixed)
            coords = {d: est.coords[d].values for d in dims}
            readings.append(xr.Dataset(data, coords=coords).expand_dims(reading=[reading]))
        ds = xr.concat(readings, dim="reading", data_vars="all")
        per_type.append(ds.expand_dims(data_type=[dtype]))
    out = xr.concat(per_type, dim="data_type", data_vars="all")
    out.attrs.update(n_boot=int(n_boot), ci=float(ci), seed=int(seed), fixed_eps=float(fixed_eps),
                     fixed_b=float(fixed_b))
    return out



def linearity_table(lin: xr.Dataset, digits: int = 3) -> pd.DataFrame:
    """One row per data type × model × attack × reading: stats with their CIs."""
    rows = []
    for dt in lin["data_type"].values:
        for m in lin["model"].values:
            for a in lin["attack"].values:
                for r in lin["reading"].values:
                    s = lin.sel(data_type=dt, model=m, attack=a, reading=r)
                    row = {"data type": str(dt), "model": str(m), "attack": str(a),
                           "tolerance": "b" if r == "b" else "ε",
                           "fixed at": (f"ε={float(s['fixed']):g}" if r == "b" else f"b={float(s['fixed']):g}")}
                    for st in STATS:
                        row[st] = round(float(s[st]), digits)
                        row[f"{st} CI"] = f"[{float(s[st + '_lo']):.{digits}f}, {float(s[st + '_hi']):.{digits}f}]"
                    rows.append(row)
    return pd.DataFrame(rows)



def r2_difference(lin: xr.Dataset, a: str, b: str, *, ci: float | None = None) -> xr.Dataset:
    """R²(a) − R²(b) per model × attack × reading, with a percentile CI from the replicates.

    Video types share the same resampled videos (same seed), so their difference is paired;
    image vs video types are independent samples, so their replicates are independent draws.
    """
    for v in (a, b):
        if v not in lin["data_type"].values:
            raise ValueError(f"data_type={v!r}: not in the linearity result; expected one of "
                             f"{list(map(str, lin['data_type'].values))}")
    ci = float(ci if ci is not None else lin.attrs.get("ci", 0.95))
    d = lin["r2"].sel(data_type=a) - lin["r2"].sel(data_type=b)
    db = lin["r2_boot"].sel(data_type=a) - lin["r2_boot"].sel(data_type=b)
    q = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    with warnings.catch_warnings():  # flat-RR cells: NaN intervals, not warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = db.quantile(q[0], dim="boot", skipna=True).drop_vars("quantile")
        hi = db.quantile(q[1], dim="boot", skipna=True).drop_vars("quantile")
    frac = (db > 0).sum("boot") / db.notnull().sum("boot")
    out = xr.Dataset({k: v.drop_vars("data_type", errors="ignore")
                      for k, v in {"diff": d, "lo": lo, "hi": hi, "p_positive": frac}.items()})
    out.attrs.update(a=a, b=b, ci=ci)
    return out



def difference_table(diff: xr.Dataset, digits: int = 3) -> pd.DataFrame:
    rows = []
    for m in diff["model"].values:
        for a in diff["attack"].values:
            for r in diff["reading"].values:
                s = diff.sel(model=m, attack=a, reading=r)
                d, lo, hi = float(s["diff"]), float(s["lo"]), float(s["hi"])
                verdict = ("undefined (flat RR)" if not np.isfinite(d) else
                           f"{diff.attrs['a']} more linear" if lo > 0 else
                           f"{diff.attrs['b']} more linear" if hi < 0 else "no clear difference")
                rows.append({"model": str(m), "attack": str(a), "tolerance": "b" if r == "b" else "ε",
                             "ΔR²": round(d, digits), "CI": f"[{lo:.{digits}f}, {hi:.{digits}f}]",
                             "verdict": verdict})
    return pd.DataFrame(rows)



def verdict_counts(diff: xr.Dataset) -> dict[str, int]:
    """How many (model, attack, reading) cells have a CI above 0, below 0, or covering 0."""
    lo, hi, d = diff["lo"].values, diff["hi"].values, diff["diff"].values
    ok = np.isfinite(d)
    return {"a_more_linear": int((ok & (lo > 0)).sum()), "b_more_linear": int((ok & (hi < 0)).sum()),
            "unclear": int((ok & (lo <= 0) & (hi >= 0)).sum()), "undefined": int((~ok).sum()), "cells": int(d.size)}
