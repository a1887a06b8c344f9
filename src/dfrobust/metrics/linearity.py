"""How linear RR is in the tolerance, measured so that saturation earns nothing.

**The statistic.** For an RR curve y_0..y_K on a tolerance grid t_0 < … < t_K (tolerance = the
bound b at a fixed radius, or the radius ε at a fixed bound), :func:`chord_deviation` is the
largest absolute distance, in RR units, between the curve and its *chord* (the straight line
through its end points) over the curve's **non-saturated part**: the grid points left once the
leading run at a bound of RR (0 or 1) and the trailing run at a bound are cut to their innermost
point. A straight line has deviation 0; a curve that bends has a positive deviation measured in
the same units as RR. It is *undefined* (NaN) when the non-saturated part has fewer than
``min_points`` grid points (the grid does not resolve the transition: RR jumps from one bound to
the other between two grid points) or when RR does not move at all over the grid.

Why not R²: R² is scale-free, so curves that saturate after the first grid point all look the
same — [1, 0, 0, 0, 0], [1, .9, .9, .9, .9] and [1, .99, .99, .99, .99] each give R² = 0.5. The
chord deviation gives *undefined* (a jump the 5-point grid does not resolve), 0.075 and 0.0075.
A saturated tail (RR = 1 for every b past the largest change, RR = 0 for every ε past the point
where everything changed) depends on where the grid stops, not on the detector, so it is cut.

**Bootstrap.** Replicate curves come from the same multinomial weights as
:func:`dfrobust.metrics.bootstrap`; each replicate's deviation is computed the same way, and
replicates where it is undefined are **counted and reported** (``n_undefined``), never dropped:
:func:`compare` gives an undefined replicate the value least favourable to a decision on each
side (−∞ for the lower quantile, +∞ for the upper), so too many undefined replicates leave the
interval unbounded and the verdict inconclusive.

**The verdict** (:func:`compare`, :func:`overall`): the claim "RR is more linear in the tolerance
for A than for B" per model × attack × reading, with Δ = dev(B) − dev(A) (positive: A closer to a
straight line) and a percentile bootstrap interval at level 1 − α/m (Bonferroni over the m cells
decided together, so the cells' intervals hold simultaneously at 1 − α):

* *holds* when the interval lies above 0;
* *refuted* when it lies below 0 (B is more linear), or inside ±margin and no wider than the
  margin (any advantage of A is smaller than the margin);
* *inconclusive* otherwise — with ``n_needed``, the units at which the interval would be as
  narrow as the margin (width shrinks like 1/√n).

The overall claim over all cells holds when every cell holds and is refuted when any cell is
refuted; its interval is [min lo, min hi], the simultaneous interval of min Δ over the cells.
The vocabulary (holds / refuted / inconclusive, margin, lo, hi, n, n_needed) is that of the
study's verdict rules; this module carries a minimal local :class:`Verdict` so that it does not
depend on a module that is not merged yet.

Written by hand: no maintained package measures the distance of a saturating curve from its
chord or runs this rule on cluster-bootstrap replicates shared across metrics.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .bootstrap import bootstrap_weights
from .grids import check_b_grid
from .robustness import robust_per_sample
from .verdicts import HOLDS, INCONCLUSIVE, REFUTED, VERDICTS, Verdict, verdict_table  # noqa: F401 (re-exported)

READINGS = ("b", "eps")
MIN_POINTS = 3
_SAT = 1e-9

RULE = ("Δ = max deviation of RR from its chord over the non-saturated grid (B) − the same (A), "
        "{lvl:.1%} percentile bootstrap interval (Bonferroni over {m} cells; undefined resamples count "
        "against a decision): holds if the interval lies above 0; refuted if it lies below 0, or inside "
        "±{margin:g} and at most {margin:g} wide; else inconclusive")


# ------------------------------------------------------------------------------------ the statistic

def chord_deviation(t: Sequence[float], y: np.ndarray, *, min_points: int = MIN_POINTS) -> dict[str, np.ndarray]:
    """Max |curve − chord| over the non-saturated part of each curve ``y[..., k]`` on grid ``t[k]``.

    Returns ``dev`` (NaN where undefined), ``lo``/``hi`` (first and last grid index of the
    non-saturated part) and ``n_points`` (its number of grid points). Vectorised over leading axes.
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.ndim != 1 or t.size < 2 or y.shape[-1:] != t.shape:
        raise ValueError(f"chord_deviation: grid of shape {t.shape} and curves of shape {y.shape}; "
                         "expected a 1-D grid of >= 2 points matching the curves' last axis")
    if not (np.diff(t) > 0).all():
        raise ValueError(f"chord_deviation: grid {t.tolist()} is not strictly increasing")
    if int(min_points) < 3:
        raise ValueError(f"min_points={min_points!r}: expected >= 3 (two points always lie on their chord)")
    k = t.size
    at_bound = (np.abs(y) <= _SAT) | (np.abs(y - 1) <= _SAT)
    same_first = np.abs(y - y[..., :1]) <= _SAT
    same_last = np.abs(y - y[..., -1:]) <= _SAT
    # leading run equal to y_0 (only when y_0 is a bound of RR): keep its last point
    lead = np.cumprod(same_first, axis=-1).sum(-1)                       # length of the leading run
    lo = np.where(at_bound[..., 0], lead - 1, 0)
    trail = np.cumprod(same_last[..., ::-1], axis=-1).sum(-1)           # length of the trailing run
    hi = np.where(at_bound[..., -1], k - trail, k - 1)
    flat = lead >= k
    n_points = np.where(flat, 0, hi - lo + 1)
    idx = np.arange(k)
    ylo = np.take_along_axis(y, lo[..., None], -1)
    yhi = np.take_along_axis(y, np.clip(hi, 0, k - 1)[..., None], -1)
    tlo, thi = t[lo][..., None], t[np.clip(hi, 0, k - 1)][..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        chord = ylo + (yhi - ylo) * (t - tlo) / np.where(thi > tlo, thi - tlo, 1.0)
    inside = (idx >= lo[..., None]) & (idx <= hi[..., None])
    dev = np.where(inside, np.abs(y - chord), 0.0).max(-1)
    dev = np.where(flat | (n_points < int(min_points)), np.nan, dev)
    return {"dev": dev, "lo": lo, "hi": hi, "n_points": n_points}


# ------------------------------------------------------------------------------------ curves

def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


def _curves(records: xr.Dataset, b: np.ndarray, e_fix: float, fixed_b: float, w: np.ndarray):
    b_all = np.unique(np.concatenate([b, [fixed_b]]))
    robust = robust_per_sample(records, b_all).astype(float).transpose(..., "sample")
    boots = np.tensordot(robust.values, w, axes=([-1], [1])) / w.sum(1)   # [..., n_boot]
    est = robust.mean("sample")
    boot = xr.DataArray(boots, dims=robust.dims[:-1] + ("boot",), coords=dict(est.coords))
    eps_vals = np.asarray(records["eps"].values, dtype=float)
    return {"b": (b, est.sel(eps=e_fix).sel(b=b).transpose(..., "b"),
                  boot.sel(eps=e_fix).sel(b=b).transpose(..., "boot", "b"), e_fix),
            "eps": (eps_vals, est.sel(b=fixed_b).transpose(..., "eps"),
                    boot.sel(b=fixed_b).transpose(..., "boot", "eps"), float(fixed_b))}


def linearity(records_by_type: Mapping[str, tuple], b_grid: Sequence[float], *, fixed_eps: float,
              fixed_b: float, n_boot: int = 1000, seed: int = 0, min_points: int = MIN_POINTS) -> xr.Dataset:
    """Chord deviation of RR against the tolerance per data type × model × attack × reading.

    ``records_by_type``: data type → ``(records, by)`` or ``(records, by, stream)``. ``by`` is the
    bootstrap unit ("sample" for images or video-level records, "video_id" for frame records);
    data types with the same ``stream`` (default 0) and the same units share their resamples
    (paired: per-frame and progressive records of the same videos); give independent samples
    (images vs videos) different streams. Readings: ``b`` — RR(b) over the whole b grid at the
    grid's ε nearest ``fixed_eps``; ``eps`` — RR(ε) over the ε grid at ``fixed_b``.

    Returns dims (data_type, model, attack, reading[, boot]): ``dev`` and its replicates
    ``dev_boot`` (NaN = undefined), ``n_undefined`` (replicates), ``n_points`` (non-saturated grid
    points of the estimate), ``n_units`` (bootstrap units), plus the curves (``rr`` and
    ``tolerance`` on a ``k`` axis, ``sat_lo``/``sat_hi`` the kept index range) for the figure.
    """
    if not records_by_type:
        raise ValueError("records_by_type={}: expected at least one data type")
    check_b_grid([fixed_b])
    b = np.asarray(check_b_grid(b_grid), dtype=float)
    if len(b) < int(min_points):
        raise ValueError(f"b_grid has {len(b)} bounds; expected >= {min_points} to measure a deviation from a line")
    entries = {}
    for dtype, entry in records_by_type.items():
        if not 2 <= len(entry) <= 3:
            raise ValueError(f"{dtype}: expected (records, by) or (records, by, stream), got {len(entry)} items")
        rec, by = entry[0], entry[1]
        stream = int(entry[2]) if len(entry) == 3 else 0
        if rec.sizes["eps"] < int(min_points):
            raise ValueError(f"{dtype}: {rec.sizes['eps']} eps value(s); expected >= {min_points} for the ε reading")
        entries[dtype] = (rec, by, stream)
    models = attacks = None
    for rec, _, _ in entries.values():
        m, a = list(map(str, rec["model"].values)), list(map(str, rec["attack"].values))
        models = m if models is None else [x for x in models if x in m]
        attacks = a if attacks is None else [x for x in attacks if x in a]
    if not models or not attacks:
        raise ValueError("records_by_type: no model/attack common to every data type")
    grids = [np.asarray(r["eps"].values, float) for r, _, _ in entries.values()]
    if any(len(g) != len(grids[0]) or not np.allclose(g, grids[0]) for g in grids):
        raise ValueError(f"records_by_type: eps grids differ ({[g.round(6).tolist() for g in grids]}); "
                         "expected the same grid for every data type")
    e_fix = float(grids[0][np.argmin(np.abs(grids[0] - fixed_eps))])
    kmax = max(len(b), len(grids[0]))
    per_type = []
    for dtype, (rec, by, stream) in entries.items():
        rec = rec.sel(model=models, attack=attacks)
        w = bootstrap_weights(rec, by=by, n_boot=n_boot, seed=_stream_seed(seed, stream))
        n_units = int(rec.sizes["sample"]) if by == "sample" else int(np.unique(rec[by].values.astype(str)).size)
        curves = _curves(rec, b, e_fix, fixed_b, w)
        readings = []
        for reading in READINGS:
            tol, est, boot, fixed = curves[reading]
            fe = chord_deviation(tol, est.values, min_points=min_points)
            fb = chord_deviation(tol, boot.values, min_points=min_points)
            dims = est.dims[:-1]
            pad = kmax - len(tol)
            data = {"dev": (dims, fe["dev"]), "dev_boot": (dims + ("boot",), fb["dev"]),
                    "n_undefined": (dims, np.isnan(fb["dev"]).sum(-1)),
                    "n_points": (dims, fe["n_points"]), "sat_lo": (dims, fe["lo"]), "sat_hi": (dims, fe["hi"]),
                    "rr": (dims + ("k",), np.concatenate([est.values, np.full(est.shape[:-1] + (pad,), np.nan)], -1)),
                    "tolerance": (("k",), np.concatenate([tol, np.full(pad, np.nan)])),
                    "fixed": ((), fixed), "n_units": ((), n_units)}
            coords = {d: est.coords[d].values for d in dims}
            readings.append(xr.Dataset(data, coords=coords).expand_dims(reading=[reading]))
        ds = xr.concat(readings, dim="reading", data_vars="all")
        per_type.append(ds.expand_dims(data_type=[dtype]))
    out = xr.concat(per_type, dim="data_type", data_vars="all")
    out.attrs.update(n_boot=int(n_boot), seed=int(seed), fixed_eps=float(e_fix), fixed_b=float(fixed_b),
                     min_points=int(min_points), statistic="max |RR - chord| over the non-saturated grid")
    return out


def linearity_table(lin: xr.Dataset, digits: int = 3) -> pd.DataFrame:
    """One row per data type × model × attack × reading: deviation, kept grid points, undefined replicates."""
    rows = []
    nb = int(lin.attrs.get("n_boot", lin.sizes.get("boot", 0)))
    for dt in lin["data_type"].values:
        for m in lin["model"].values:
            for a in lin["attack"].values:
                for r in lin["reading"].values:
                    s = lin.sel(data_type=dt, model=m, attack=a, reading=r)
                    d = float(s["dev"])
                    rows.append({"data type": str(dt), "model": str(m), "attack": str(a),
                                 "tolerance": "b" if r == "b" else "ε",
                                 "fixed at": (f"ε={float(s['fixed']):g}" if r == "b" else f"b={float(s['fixed']):g}"),
                                 "units": int(s["n_units"].max()),
                                 "max deviation from chord": round(d, digits) if np.isfinite(d) else "undefined",
                                 "grid points kept": int(s["n_points"]),
                                 "undefined resamples": f"{int(s['n_undefined'])}/{nb}"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ the verdict


def _check_margin(margin: float, alpha: float) -> None:
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and 0 < margin <= 1):
        raise ValueError(f"margin={margin!r}: expected a number in (0, 1] (RR units)")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 0.5):
        raise ValueError(f"alpha={alpha!r}: expected a level in (0, 0.5)")


def decide(estimate: float, boots: np.ndarray, *, n: int, margin: float, alpha: float = 0.05, m: int = 1,
           claim: str = "A more linear than B") -> Verdict:
    """The rule of the module docstring on one cell: ``boots`` are replicates of Δ (NaN = undefined)."""
    _check_margin(margin, alpha)
    bt = np.asarray(boots, dtype=float).ravel()
    if bt.size < 2:
        raise ValueError(f"boots: {bt.size} replicate(s); expected >= 2")
    a = alpha / max(int(m), 1)
    rule = RULE.format(lvl=1 - a, m=int(m), margin=margin)
    und = int(np.isnan(bt).sum())
    lo = float(np.quantile(np.where(np.isnan(bt), -np.inf, bt), a / 2, method="lower"))
    hi = float(np.quantile(np.where(np.isnan(bt), np.inf, bt), 1 - a / 2, method="higher"))
    note = f"{und}/{bt.size} resamples undefined"
    if not math.isfinite(estimate):
        return Verdict(claim, INCONCLUSIVE, rule, margin, float(estimate), lo, hi, int(n), None,
                       note + "; the estimate itself is undefined (flat RR or a jump the grid does not resolve)")
    width = hi - lo
    if lo > 0:
        verdict = HOLDS
    elif hi < 0 or (-margin < lo and hi < margin and width <= margin):
        verdict = REFUTED
    else:
        verdict = INCONCLUSIVE
    need = max(int(math.ceil(n * (width / margin) ** 2)), int(n)) if math.isfinite(width) else None
    return Verdict(claim, verdict, rule, margin, float(estimate), lo, hi, int(n),
                   need if verdict == INCONCLUSIVE else None, note)


def compare(lin: xr.Dataset, a: str, b: str, *, margin: float, alpha: float = 0.05,
            readings: Sequence[str] | None = None) -> tuple[list[Verdict], pd.DataFrame]:
    """Verdicts of "RR more linear for ``a`` than for ``b``" per model × attack × reading.

    Δ = dev(b) − dev(a); a replicate is undefined when either deviation is. Paired when ``a`` and
    ``b`` share their resamples (same stream and units in :func:`linearity`), independent otherwise.
    Returns the verdicts and a table with model/attack/reading columns.
    """
    _check_margin(margin, alpha)
    names = list(map(str, lin["data_type"].values))
    for v in (a, b):
        if v not in names:
            raise ValueError(f"data_type={v!r}: not in the linearity result; expected one of {names}")
    reads = list(readings) if readings is not None else list(map(str, lin["reading"].values))
    for r in reads:
        if r not in READINGS:
            raise ValueError(f"reading={r!r}: expected one of {', '.join(READINGS)}")
    cells = [(str(mo), str(at), r) for mo in lin["model"].values for at in lin["attack"].values for r in reads]
    n = int(min(int(lin["n_units"].sel(data_type=a).max()), int(lin["n_units"].sel(data_type=b).max())))
    out, ctx = [], {"model": [], "attack": [], "tolerance": []}
    for mo, at, r in cells:
        sa = lin.sel(data_type=a, model=mo, attack=at, reading=r)
        sb = lin.sel(data_type=b, model=mo, attack=at, reading=r)
        est = float(sb["dev"]) - float(sa["dev"])
        boots = sb["dev_boot"].values - sa["dev_boot"].values
        out.append(decide(est, boots, n=n, margin=margin, alpha=alpha, m=len(cells),
                          claim=f"RR more linear in {'b' if r == 'b' else 'ε'} for {a} than {b}"))
        ctx["model"].append(mo)
        ctx["attack"].append(at)
        ctx["tolerance"].append("b" if r == "b" else "ε")
    return out, verdict_table(out, **ctx)


def overall(verdicts: Sequence[Verdict], claim: str) -> Verdict:
    """All cells decided together: holds if every cell holds, refuted if any is refuted, else
    inconclusive; interval [min lo, min hi] (the simultaneous interval of the smallest Δ)."""
    vs = list(verdicts)
    if not vs:
        raise ValueError("verdicts=[]: expected at least one cell")
    kinds = [v.verdict for v in vs]
    verdict = HOLDS if all(k == HOLDS for k in kinds) else REFUTED if REFUTED in kinds else INCONCLUSIVE
    need = [v.n_needed for v in vs if v.n_needed is not None]
    counts = {k: kinds.count(k) for k in VERDICTS}
    return Verdict(claim, verdict, "every cell holds → holds; any cell refuted → refuted; else inconclusive "
                   f"(cells: {vs[0].rule})", vs[0].margin, float(np.min([v.estimate for v in vs])),
                   float(np.min([v.lo for v in vs])), float(np.min([v.hi for v in vs])), int(min(v.n for v in vs)),
                   max(need) if verdict == INCONCLUSIVE and need else None,
                   f"{len(vs)} cells: {counts[HOLDS]} hold, {counts[REFUTED]} refuted, "
                   f"{counts[INCONCLUSIVE]} inconclusive")
