"""How linear RR is in the tolerance: the curve's *shape*, not its level, and a rule that decides.

**The shape.** An RR curve on a tolerance grid (the bound b at a fixed radius, or the radius ε at
a fixed bound) is first put on a *normalised* tolerance (:func:`shape_curves`): t₅₀, the
tolerance where the curve crosses the middle of its range on the grid, sets the scale, and the
curve is read at ``N_SHAPE`` points of u = b/b₅₀ ∈ [0, 2] (reading b) or u = log₂(ε/ε₅₀) ∈ [−2, 2]
(reading ε, positive radii, interpolated in log ε). A detector that is more robust by a constant
factor (the same curve at a larger scale) then has the same shape and the same linearity: the
statistic measures how RR grows, not where. (On the raw tolerance, moving the median critical
radius of one curve shape from 0.002 to 0.1 took the deviation from 0.89 to 0.04.) Points of the
window the grid did not measure are left out; t₅₀ is reported (``t50``) as the level.

**The statistic.** :func:`chord_deviation` is the largest absolute distance, in RR units, between
the normalised curve and its *chord* (the line through its end points) over its **non-saturated
part**: the grid points left once the leading run at a bound of RR (0 or 1) and the trailing run at
a bound are cut to their innermost point, and the unmeasured ends dropped. A straight line has
deviation 0. It is *undefined* (NaN) when fewer than ``min_points`` points remain (the grid does
not resolve the transition) or when RR does not move at all. R² is not used: it is scale-free, so
[1, 0, 0, 0, 0], [1, .9, .9, .9, .9] and [1, .99, .99, .99, .99] each give R² = 0.5 (the chord
deviation: undefined, 0.075, 0.0075).

**Bootstrap.** Replicate curves come from the same multinomial weights as
:func:`dfrobust.metrics.bootstrap`, resampling the *units* given (videos, or identities where the
records carry them; never frames of one video apart); replicates where the deviation is undefined
are **counted** (``n_undefined``), never dropped: they count against a decision on both sides (−∞
for the lower quantile, +∞ for the upper), so too many leave the interval unbounded.

**The verdict** (:func:`compare`): the claim "RR is more linear for A than for B" per cell
(model × attack × reading), Δ = dev(B) − dev(A), decided on a percentile bootstrap interval
widened to at least ±h(n), the resolution floor of the study's other rules
(:func:`dfrobust.metrics.verdicts.resolution_floor`):

* *holds* when the interval lies above 0;
* *refuted* when it lies below 0, or inside ±margin and no wider than the margin;
* *inconclusive* otherwise, and always when no resample differs at all (zero discordance: "no
  difference detected at n", never "refuted"), with ``n_needed`` from the width
  (:func:`dfrobust.metrics.verdicts.n_needed`) — none when the interval is unbounded.

Multiplicity: **Holm** over every cell of every claim decided together (:func:`holm_levels`, on
the bootstrap p-values of Δ ≠ 0): the cell with the k-th smallest p-value gets its interval at
level α/(m − k + 1) until the first cell that is not significant, whose level the rest keep.
A claim (:func:`overall`) holds when every cell holds, is refuted when any cell is refuted, and is
inconclusive — with the n needed *unknown* — whenever any of its cells' intervals is unbounded.

:func:`power` estimates by simulation how often a claim would be decided at other sizes, by
resampling the build's own per-unit records.

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
from .ra_rr import robust_per_sample
from .verdicts import (HOLDS, INCONCLUSIVE, REFUTED, VERDICTS, Verdict, n_needed,  # noqa: F401 (re-exported)
                       resolution_floor, verdict_table)

READINGS = ("b", "eps")
MIN_POINTS = 3
N_SHAPE = 9
#: the normalised tolerance: u = b / b50 (reading b), u = log2(eps / eps50) (reading eps)
SHAPE_GRID = {"b": np.linspace(0.0, 2.0, N_SHAPE), "eps": np.linspace(-2.0, 2.0, N_SHAPE)}
SHAPE_LABEL = {"b": "b / b₅₀", "eps": "log₂(ε / ε₅₀)"}
_SAT = 1e-9

RULE = ("Δ = max deviation of the normalised RR curve from its chord (B) − the same (A), percentile bootstrap "
        "interval at the cell's Holm level (family α = {alpha:g} over {m} cells), at least ±h(n) wide; undefined "
        "resamples count against a decision: holds if it lies above 0; refuted if it lies below 0, or inside "
        "±{margin:g} and at most {margin:g} wide; no resample differing is inconclusive; else inconclusive")


# ------------------------------------------------------------------------------------ the statistic

def chord_deviation(t: Sequence[float], y: np.ndarray, *, min_points: int = MIN_POINTS) -> dict[str, np.ndarray]:
    """Max |curve − chord| over the non-saturated, measured part of each curve ``y[..., k]`` on grid ``t[k]``.

    NaN at either end of a curve marks grid points not measured (left out). Returns ``dev`` (NaN
    where undefined), ``lo``/``hi`` (first and last grid index of the part kept) and ``n_points``.
    Vectorised over leading axes.
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
    idx = np.arange(k)
    finite = np.isfinite(y)
    measured = finite.any(-1)
    first = np.argmax(finite, -1)
    last = k - 1 - np.argmax(finite[..., ::-1], -1)
    gap = (~finite & (idx > first[..., None]) & (idx < last[..., None])).any(-1)
    y = np.where(idx < first[..., None], np.take_along_axis(y, first[..., None], -1), y)
    y = np.where(idx > last[..., None], np.take_along_axis(y, last[..., None], -1), y)
    at_bound = (np.abs(y) <= _SAT) | (np.abs(y - 1) <= _SAT)
    same_first = np.abs(y - y[..., :1]) <= _SAT
    same_last = np.abs(y - y[..., -1:]) <= _SAT
    lead = np.cumprod(same_first, axis=-1).sum(-1)                       # length of the leading run
    lo = np.maximum(np.where(at_bound[..., 0], lead - 1, 0), first)
    trail = np.cumprod(same_last[..., ::-1], axis=-1).sum(-1)           # length of the trailing run
    hi = np.minimum(np.where(at_bound[..., -1], k - trail, k - 1), last)
    flat = lead >= k
    n_points = np.where(flat | ~measured, 0, np.maximum(hi - lo + 1, 0))
    lo_c, hi_c = np.clip(lo, 0, k - 1), np.clip(hi, 0, k - 1)
    ylo = np.take_along_axis(y, lo_c[..., None], -1)
    yhi = np.take_along_axis(y, hi_c[..., None], -1)
    tlo, thi = t[lo_c][..., None], t[hi_c][..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        chord = ylo + (yhi - ylo) * (t - tlo) / np.where(thi > tlo, thi - tlo, 1.0)
    inside = (idx >= lo[..., None]) & (idx <= hi[..., None])
    dev = np.where(inside, np.abs(y - chord), 0.0).max(-1)
    dev = np.where(flat | ~measured | gap | (n_points < int(min_points)), np.nan, dev)
    return {"dev": dev, "lo": lo, "hi": hi, "n_points": n_points}


def shape_curves(t: Sequence[float], y: np.ndarray, reading: str) -> tuple[np.ndarray, np.ndarray]:
    """The curves ``y[..., k]`` on the normalised tolerance of ``reading`` (module docstring).

    Returns (curves on ``SHAPE_GRID[reading]``, NaN where the grid did not measure; t₅₀ per curve,
    NaN where RR does not move). Reading b: RR rises with b, u = b/b₅₀; reading ε: RR falls with
    ε, u = log₂(ε/ε₅₀) over the positive radii.
    """
    if reading not in READINGS:
        raise ValueError(f"reading={reading!r}: expected one of {', '.join(READINGS)}")
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if reading == "eps":
        keep = t > 0
        x, y = np.log2(t[keep]), y[..., keep]
    else:
        x = t
    u = SHAPE_GRID[reading]
    flat = y.reshape(-1, x.size)
    out = np.full((len(flat), u.size), np.nan)
    t50 = np.full(len(flat), np.nan)
    rising = reading == "b"
    for i, c in enumerate(flat):
        if not np.isfinite(c).all() or c.max() - c.min() <= _SAT:
            continue
        mid = (c.max() + c.min()) / 2
        j = int(np.argmax(c >= mid)) if rising else int(np.argmax(c <= mid))
        x50 = x[0] if j == 0 else x[j - 1] + (mid - c[j - 1]) / (c[j] - c[j - 1]) * (x[j] - x[j - 1])
        if rising and x50 <= 0:
            continue
        xq = u * x50 if rising else x50 + u
        out[i] = np.interp(xq, x, c, left=np.nan, right=np.nan)
        t50[i] = x50 if rising else 2.0 ** x50
    return out.reshape(y.shape[:-1] + (u.size,)), t50.reshape(y.shape[:-1])


def shape_deviation(t: Sequence[float], y: np.ndarray, reading: str, *, min_points: int = MIN_POINTS) -> dict:
    """:func:`chord_deviation` of the normalised curves (:func:`shape_curves`), with ``curve`` and ``t50``."""
    curve, t50 = shape_curves(t, y, reading)
    out = chord_deviation(SHAPE_GRID[reading], curve, min_points=min_points)
    out.update(curve=curve, t50=t50)
    return out


# ------------------------------------------------------------------------------------ curves

def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


def unit_curves(records: xr.Dataset, b: np.ndarray, e_fix: float, fixed_b: float) -> dict[str, tuple]:
    """Per unit: robust (1.0) or not at each tolerance of each reading, dims (..., sample, k).

    ``b`` reading: over the b grid at radius ``e_fix``; ``eps``: over the radius grid at ``fixed_b``.
    Returns reading → (tolerance grid, indicators [..., sample, k] as a DataArray, the fixed value).
    """
    b_all = np.unique(np.concatenate([b, [fixed_b]]))
    robust = robust_per_sample(records, b_all).astype(float)
    eps_vals = np.asarray(records["eps"].values, dtype=float)
    return {"b": (b, robust.sel(eps=e_fix).sel(b=b).transpose(..., "sample", "b"), e_fix),
            "eps": (eps_vals, robust.sel(b=fixed_b).transpose(..., "sample", "eps"), float(fixed_b))}


def linearity(records_by_type: Mapping[str, tuple], b_grid: Sequence[float], *, fixed_eps: float,
              fixed_b: float, n_boot: int = 1000, seed: int = 0, min_points: int = MIN_POINTS) -> xr.Dataset:
    """Shape linearity of RR against the tolerance per data type × model × attack × reading.

    ``records_by_type``: data type → ``(records, by)`` or ``(records, by, stream)``. ``by`` is the
    bootstrap unit ("sample" for images or video-level records, "video_id" for frame records,
    "identity" where the records carry one); data types with the same ``stream`` (default 0) and
    the same units share their resamples (paired: per-frame and progressive records of the same
    videos); give independent samples (images, pseudo-videos) different streams.

    Returns dims (data_type, model, attack, reading[, boot]): ``dev`` and its replicates
    ``dev_boot`` (NaN = undefined), ``n_undefined``, ``n_points`` (normalised points kept),
    ``t50`` (the scale: b₅₀ or ε₅₀), ``n_units``, ``unit`` (the resampled unit) and the normalised
    curves (``rr`` and ``tolerance`` on a ``k`` axis, ``sat_lo``/``sat_hi`` the kept index range).
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
        if int((rec["eps"].values > 0).sum()) < 2:
            raise ValueError(f"{dtype}: {int((rec['eps'].values > 0).sum())} positive eps value(s); "
                             "expected >= 2 for the ε reading")
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
    per_type = []
    for dtype, (rec, by, stream) in entries.items():
        rec = rec.sel(model=models, attack=attacks)
        w = bootstrap_weights(rec, by=by, n_boot=n_boot, seed=_stream_seed(seed, stream))
        n_units = int(rec.sizes["sample"]) if by == "sample" else int(np.unique(rec[by].values.astype(str)).size)
        readings = []
        for reading, (tol, ind, fixed) in unit_curves(rec, b, e_fix, fixed_b).items():
            est = ind.mean("sample")
            boot = np.einsum("...sk,bs->...bk", ind.values, w) / w.sum(1)[:, None]
            fe = shape_deviation(tol, est.values, reading, min_points=min_points)
            fb = chord_deviation(SHAPE_GRID[reading], shape_curves(tol, boot, reading)[0], min_points=min_points)
            dims = est.dims[:-1]
            data = {"dev": (dims, fe["dev"]), "dev_boot": (dims + ("boot",), fb["dev"]),
                    "n_undefined": (dims, np.isnan(fb["dev"]).sum(-1)), "t50": (dims, fe["t50"]),
                    "n_points": (dims, fe["n_points"]), "sat_lo": (dims, fe["lo"]), "sat_hi": (dims, fe["hi"]),
                    "rr": (dims + ("k",), fe["curve"]), "tolerance": (("k",), SHAPE_GRID[reading]),
                    "fixed": ((), fixed), "n_units": ((), n_units), "unit": ((), str(by))}
            coords = {d: est.coords[d].values for d in dims}
            readings.append(xr.Dataset(data, coords=coords).expand_dims(reading=[reading]))
        ds = xr.concat(readings, dim="reading", data_vars="all")
        per_type.append(ds.expand_dims(data_type=[dtype]).assign(stream=("data_type", [stream])))
    out = xr.concat(per_type, dim="data_type", data_vars="all")
    out.attrs.update(n_boot=int(n_boot), seed=int(seed), fixed_eps=float(e_fix), fixed_b=float(fixed_b),
                     min_points=int(min_points), n_shape=N_SHAPE,
                     statistic="max |RR - chord| of the curve on the normalised tolerance (b/b50, log2 eps/eps50)")
    return out


def linearity_table(lin: xr.Dataset, digits: int = 3) -> pd.DataFrame:
    """One row per data type × model × attack × reading: scale, shape deviation, kept points, undefined replicates."""
    rows = []
    nb = int(lin.attrs.get("n_boot", lin.sizes.get("boot", 0)))
    for dt in lin["data_type"].values:
        for m in lin["model"].values:
            for a in lin["attack"].values:
                for r in lin["reading"].values:
                    s = lin.sel(data_type=dt, model=m, attack=a, reading=r)
                    d, t50 = float(s["dev"]), float(s["t50"])
                    rows.append({"data type": str(dt), "model": str(m), "attack": str(a),
                                 "tolerance": SHAPE_LABEL[str(r)],
                                 "fixed at": (f"ε={float(s['fixed']):g}" if r == "b" else f"b={float(s['fixed']):g}"),
                                 "units": f"{int(s['n_units'])} {'videos' if str(s['unit'].values) == 'video_id' else str(s['unit'].values).replace('sample', 'units')}",
                                 "scale (t₅₀)": round(t50, 4) if np.isfinite(t50) else "RR flat",
                                 "shape deviation": round(d, digits) if np.isfinite(d) else "undefined",
                                 "points kept": f"{int(s['n_points'])}/{N_SHAPE}",
                                 "undefined resamples": f"{int(s['n_undefined'])}/{nb}"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ the verdict


def _check_margin(margin: float, alpha: float) -> None:
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and 0 < margin <= 1):
        raise ValueError(f"margin={margin!r}: expected a number in (0, 1] (RR units)")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 0.5):
        raise ValueError(f"alpha={alpha!r}: expected a level in (0, 0.5)")


def p_value(boots: np.ndarray) -> float:
    """Two-sided bootstrap p-value of Δ ≠ 0; an undefined replicate counts on both sides."""
    bt = np.asarray(boots, dtype=float).ravel()
    und = np.isnan(bt)
    le, ge = (bt[~und] <= 0).sum() + und.sum(), (bt[~und] >= 0).sum() + und.sum()
    return float(min(1.0, 2 * min(le, ge) / max(bt.size, 1)))


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Holm's step-down levels: the k-th smallest p-value (k = 1..m) gets α/(m − k + 1) until the
    first that exceeds its level; that level is kept for it and every later one."""
    p = np.asarray(list(p_values), dtype=float)
    m = p.size
    levels = np.empty(m)
    stop = None
    for k, i in enumerate(np.argsort(p, kind="stable")):
        level = alpha / (m - k)
        if stop is None and not p[i] <= level:
            stop = level
        levels[i] = level if stop is None else stop
    return levels


def decide(estimate: float, boots: np.ndarray, *, n: int, margin: float, level: float = 0.05,
           alpha: float | None = None, m: int = 1, claim: str = "A more linear than B") -> Verdict:
    """The rule of the module docstring on one cell: ``boots`` are replicates of Δ (NaN = undefined),
    the interval at ``level`` (the cell's Holm level; ``alpha``/``m`` name the family in the rule)."""
    _check_margin(margin, level)
    bt = np.asarray(boots, dtype=float).ravel()
    if bt.size < 2:
        raise ValueError(f"boots: {bt.size} replicate(s); expected >= 2")
    rule = RULE.format(alpha=alpha if alpha is not None else level, m=int(m), margin=margin)
    und = int(np.isnan(bt).sum())
    lo = float(np.quantile(np.where(np.isnan(bt), -np.inf, bt), level / 2, method="lower"))
    hi = float(np.quantile(np.where(np.isnan(bt), np.inf, bt), 1 - level / 2, method="higher"))
    note = f"{und}/{bt.size} resamples undefined; interval at level {1 - level:.4g}"
    if not math.isfinite(estimate):
        return Verdict(claim, INCONCLUSIVE, rule, margin, float(estimate), lo, hi, int(n), None,
                       note + "; the estimate itself is undefined (flat RR or a jump the grid does not resolve)")
    h = resolution_floor(n, level)
    lo, hi = min(lo, estimate - h), max(hi, estimate + h)
    if und == 0 and np.all(bt == estimate):
        return Verdict(claim, INCONCLUSIVE, rule, margin, float(estimate), lo, hi, int(n), None,
                       f"no difference detected at n = {int(n)} (every resample gives Δ = {estimate:+.3g}: "
                       "zero discordance is not evidence of no effect)")
    if lo > 0:
        verdict = HOLDS
    elif hi < 0 or (-margin < lo and hi < margin and hi - lo <= margin):
        verdict = REFUTED
    else:
        verdict = INCONCLUSIVE
    need = n_needed(int(n), hi - lo, margin, level) if verdict == INCONCLUSIVE else None
    return Verdict(claim, verdict, rule, margin, float(estimate), lo, hi, int(n), need, note)


def _claim(a: str, b: str, reading: str) -> str:
    return f"RR more linear in {'b' if reading == 'b' else 'ε'} for {a} than {b}"


def _cell_delta(lin: xr.Dataset, a: str, b: str, mo: str, at: str, r: str) -> tuple[float, np.ndarray]:
    sa = lin.sel(data_type=a, model=mo, attack=at, reading=r)
    sb = lin.sel(data_type=b, model=mo, attack=at, reading=r)
    return float(sb["dev"]) - float(sa["dev"]), sb["dev_boot"].values - sa["dev_boot"].values


def compare(lin: xr.Dataset, claims: Sequence[tuple[str, str]], *, margin: float, alpha: float = 0.05,
            readings: Sequence[str] | None = None,
            names: Mapping[str, str] | None = None) -> tuple[dict[tuple[str, str, str], Verdict], pd.DataFrame]:
    """Decide "RR more linear for A than for B" for every (A, B) in ``claims`` and every reading,
    each claim over its model × attack cells, with Holm over ALL cells of all claims.

    Δ = dev(B) − dev(A); a replicate is undefined when either deviation is. Paired when A and B
    share their resamples (same stream and units in :func:`linearity`), independent otherwise.
    Returns {(A, B, reading): the claim's :func:`overall` verdict} and the cells' table.
    """
    _check_margin(margin, alpha)
    dnames = list(map(str, lin["data_type"].values))
    claims = [(str(a), str(b)) for a, b in claims]
    if not claims:
        raise ValueError("claims=[]: expected at least one (A, B) pair of data types")
    for v in {x for c in claims for x in c}:
        if v not in dnames:
            raise ValueError(f"data_type={v!r}: not in the linearity result; expected one of {dnames}")
    reads = list(readings) if readings is not None else list(map(str, lin["reading"].values))
    for r in reads:
        if r not in READINGS:
            raise ValueError(f"reading={r!r}: expected one of {', '.join(READINGS)}")
    label = dict(names or {})
    cells = [(a, b, r, str(mo), str(at)) for a, b in claims for r in reads
             for mo in lin["model"].values for at in lin["attack"].values]
    deltas = [_cell_delta(lin, a, b, mo, at, r) for a, b, r, mo, at in cells]
    levels = holm_levels([p_value(d[1]) for d in deltas], alpha)
    cell_v, ctx = [], {"model": [], "attack": [], "tolerance": []}
    for (a, b, r, mo, at), (est, boots), level in zip(cells, deltas, levels):
        n = int(min(int(lin["n_units"].sel(data_type=a).max()), int(lin["n_units"].sel(data_type=b).max())))
        cell_v.append(decide(est, boots, n=n, margin=margin, level=float(level), alpha=alpha, m=len(cells),
                             claim=_claim(label.get(a, a), label.get(b, b), r)))
        ctx["model"].append(mo)
        ctx["attack"].append(at)
        ctx["tolerance"].append("b" if r == "b" else "ε")
    out = {}
    for a, b in claims:
        for r in reads:
            vs = [v for v, c in zip(cell_v, cells) if c[:3] == (a, b, r)]
            out[(a, b, r)] = overall(vs, _claim(label.get(a, a), label.get(b, b), r))
    return out, verdict_table(cell_v, **ctx)


def overall(verdicts: Sequence[Verdict], claim: str) -> Verdict:
    """All cells decided together: holds if every cell holds, refuted if any is refuted (and none is
    unbounded), else inconclusive; the n needed is unknown whenever a cell's interval is unbounded.
    Interval [min lo, min hi] (the simultaneous interval of the smallest Δ)."""
    vs = list(verdicts)
    if not vs:
        raise ValueError("verdicts=[]: expected at least one cell")
    kinds = [v.verdict for v in vs]
    unbounded = sum(not math.isfinite(v.hi - v.lo) for v in vs)
    verdict = (INCONCLUSIVE if unbounded else HOLDS if all(k == HOLDS for k in kinds)
               else REFUTED if REFUTED in kinds else INCONCLUSIVE)
    need = [v.n_needed for v in vs if v.n_needed is not None]
    counts = {k: kinds.count(k) for k in VERDICTS}
    note = (f"{len(vs)} cells: {counts[HOLDS]} hold, {counts[REFUTED]} refuted, {counts[INCONCLUSIVE]} inconclusive"
            + (f"; {unbounded} unbounded: n needed unknown" if unbounded else ""))
    return Verdict(claim, verdict, "every cell holds → holds; any cell refuted → refuted; any cell unbounded → "
                   f"inconclusive (cells: {vs[0].rule})", vs[0].margin, float(np.min([v.estimate for v in vs])),
                   float(np.min([v.lo for v in vs])), float(np.min([v.hi for v in vs])), int(min(v.n for v in vs)),
                   max(need) if verdict == INCONCLUSIVE and need and not unbounded else None, note)


# ------------------------------------------------------------------------------------ power


def power(records_by_type: Mapping[str, tuple], a: str, b: str, b_grid: Sequence[float], *, fixed_eps: float,
          fixed_b: float, model: str, attack: str, reading: str, margin: float, level: float,
          sizes: Sequence[int], n_sim: int = 200, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """How often one cell of "RR more linear for A than B" would be decided with n units per data type.

    Simulation on the build's own records: each run draws n units with replacement from each data
    type's units (the same draw for both when they share units and stream: paired), computes the
    shape deviations, bootstraps them (``n_boot``) and applies :func:`decide` at ``level`` (the
    claim's level; Holm's first, α/m, is the conservative choice). Returns one row per n: the
    fractions holds / refuted / inconclusive and ``power`` = holds + refuted (decided).
    """
    rng = np.random.default_rng(seed)
    ind, paired = {}, True
    units0 = None
    for key in (a, b):
        rec, by = records_by_type[key][0], records_by_type[key][1]
        stream = int(records_by_type[key][2]) if len(records_by_type[key]) == 3 else 0
        rec = rec.sel(model=[model], attack=[attack])
        e = np.asarray(rec["eps"].values, float)
        e_fix = float(e[np.argmin(np.abs(e - fixed_eps))])
        tol, x, _ = unit_curves(rec, np.asarray(check_b_grid(b_grid), float), e_fix, fixed_b)[reading]
        x = x.isel(model=0, attack=0)
        units = (np.arange(x.sizes["sample"]).astype(str) if by == "sample"
                 else np.asarray(rec[by].values).astype(str))
        uniq, inv = np.unique(units, return_inverse=True)
        per_unit = np.stack([x.values[inv == i].mean(0) for i in range(len(uniq))])   # [units, k]
        ind[key] = (tol, per_unit, stream, tuple(uniq))
        paired = paired and (units0 is None or (units0 == (stream, tuple(uniq))))
        units0 = (stream, tuple(uniq))
    rows = []
    for n in sizes:
        kinds = []
        for _ in range(int(n_sim)):
            draw = {}
            for key in (a, b):
                tol, pu, _, _ = ind[key]
                pick = draw.get(a) if paired and key == b else rng.integers(0, len(pu), int(n))
                draw[key] = pick
            wb = rng.multinomial(int(n), np.full(int(n), 1.0 / int(n)), size=int(n_boot)) / int(n)
            dev, devb = {}, {}
            for key in (a, b):
                tol, pu, _, _ = ind[key]
                sample = pu[draw[key]]
                dev[key] = shape_deviation(tol, sample.mean(0), reading)["dev"]
                devb[key] = chord_deviation(SHAPE_GRID[reading], shape_curves(tol, wb @ sample, reading)[0])["dev"]
            v = decide(float(dev[b] - dev[a]), devb[b] - devb[a], n=int(n), margin=margin, level=level)
            kinds.append(v.verdict)
        frac = {k: kinds.count(k) / len(kinds) for k in VERDICTS}
        rows.append({"n": int(n), **frac, "power": frac[HOLDS] + frac[REFUTED]})
    return pd.DataFrame(rows, columns=["n", *VERDICTS, "power"])
