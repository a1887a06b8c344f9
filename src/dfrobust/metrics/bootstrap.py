"""Bootstrap confidence intervals of means of per-sample values, paired across models.

Percentile intervals of means of per-sample values, resampling samples or whole clusters
(``by="video_id"`` for frames of videos). Resampling is done with multinomial weights, so one
weight matrix serves every metric at once and differences between models are *paired* (the
same resample for both models). Vectorised with numpy instead of ``scipy.stats.bootstrap``
because it must resample clusters (videos) and share resamples across models for paired
differences, which scipy's API does not do.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr


def bootstrap_weights(records_or_coords, *, by: str = "sample", n_boot: int = 1000,
                      seed: int = 0) -> np.ndarray:
    """Resampling weights [n_boot, n_sample]: how often each sample enters each resample."""
    if int(n_boot) < 1:
        raise ValueError(f"n_boot={n_boot!r}: expected an integer >= 1")
    n = records_or_coords.sizes["sample"]
    rng = np.random.default_rng(seed)
    if by == "sample":
        return rng.multinomial(n, np.full(n, 1.0 / n), size=int(n_boot)).astype(np.float64)
    if by not in records_or_coords.coords or records_or_coords.coords[by].dims != ("sample",):
        raise ValueError(f"by={by!r}: not a sample coordinate; expected 'sample' or e.g. 'video_id'")
    ids = np.asarray(records_or_coords.coords[by].values).astype(str)
    if (ids == "").any() or (ids == "-1").any():
        raise ValueError(f"by={by!r}: {int(((ids == '') | (ids == '-1')).sum())} samples have no {by}; "
                         "expected every sample to belong to a cluster (use by='sample' for still images)")
    uniq, inv = np.unique(ids, return_inverse=True)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=int(n_boot))
    return counts[:, inv].astype(np.float64)



def cluster_unit(records_or_coords, prefer: Sequence[str] = ("identity", "video_id")) -> str:
    """The resampling unit of records: the first of ``prefer`` that is a sample coordinate filled for
    every sample (identities: the reals and fakes of one person are not independent), else "sample"."""
    for by in prefer:
        c = records_or_coords.coords.get(by)
        if c is not None and c.dims == ("sample",):
            ids = np.asarray(c.values).astype(str)
            if ids.size and not ((ids == "") | (ids == "-1")).any():
                return by
    return "sample"


def n_units(records_or_coords, by: str) -> int:
    """How many units ``by`` resamples: samples, or distinct values of the cluster coordinate."""
    if by == "sample":
        return int(records_or_coords.sizes["sample"])
    return int(len(np.unique(np.asarray(records_or_coords.coords[by].values).astype(str))))


def bootstrap(values: xr.DataArray, *, by: str = "sample", n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95, where: xr.DataArray | None = None,
              weights: np.ndarray | None = None) -> xr.Dataset:
    """Mean over ``sample`` of per-sample ``values`` with a percentile bootstrap CI.

    ``values``: e.g. ``correct_adv(records)`` (→ RA) or ``robust_per_sample(records, b)`` (→ RR).
    ``by``: "sample" or a sample coordinate naming clusters ("video_id"). ``where``: optional
    per-sample mask (ratio estimator over the masked samples). Returns estimate, lo, hi, se.
    Pass the same ``weights`` (from :func:`bootstrap_weights`) to pair two bootstraps.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci!r}: expected a level in (0, 1)")
    if "sample" not in values.dims:
        raise ValueError("values: expected a 'sample' dimension")
    w = weights if weights is not None else bootstrap_weights(values, by=by, n_boot=n_boot, seed=seed)
    v = values.astype(float).transpose(..., "sample")
    m = (where.astype(float).broadcast_like(v).transpose(..., "sample") if where is not None
         else xr.ones_like(v))
    vv, mm = np.nan_to_num(v.values * m.values), m.values
    num = np.tensordot(vv, w, axes=([-1], [1]))  # [..., n_boot]
    den = np.tensordot(mm, w, axes=([-1], [1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = num / den
        est = vv.sum(-1) / mm.sum(-1)
    lo, hi = np.nanquantile(boots, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=-1)
    dims = v.dims[:-1]
    coords = {k: c for k, c in v.coords.items() if "sample" not in c.dims}
    out = xr.Dataset({"estimate": (dims, est), "lo": (dims, lo), "hi": (dims, hi),
                      "se": (dims, np.nanstd(boots, axis=-1, ddof=1) if boots.shape[-1] > 1
                             else np.full(est.shape, np.nan))}, coords=coords)
    out.attrs.update(by=by, n_boot=int(w.shape[0]), ci=float(ci), seed=int(seed))
    return out



def bootstrap_difference(values: xr.DataArray, dim: str, a, b, *, by: str = "sample",
                         n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> xr.Dataset:
    """Paired bootstrap of ``mean(values[dim=a]) − mean(values[dim=b])`` (same resamples)."""
    for v in (a, b):
        if v not in values.coords[dim].values:
            raise ValueError(f"{dim}={v!r}: not in the records; expected one of {list(values.coords[dim].values)}")
    diff = values.sel({dim: a}).astype(float) - values.sel({dim: b}).astype(float)
    return bootstrap(diff, by=by, n_boot=n_boot, seed=seed, ci=ci)
