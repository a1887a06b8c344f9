"""Verdicts: each claim of the study is decided as *holds*, *refuted* or *inconclusive* by a rule
that is written down, and every verdict carries its margin, interval, n and the n it would need.

The vocabulary is :class:`Verdict` (claim, verdict, rule, margin, estimate, lo, hi, n, n_needed,
note), and :func:`verdict_table` turns a list of them into a tidy table. The rules work on paired
bootstrap resamples, where one resample of the samples serves both models:

* **Equivalence (TOST)**, :func:`equivalence`. The claim "A and B are similar" *holds* when the
  (1 − 2α) interval of the difference lies inside ±margin and is no wider than the margin. That is
  two one-sided tests at level α, plus a precision requirement. It is *refuted* when the (1 − α)
  interval lies wholly outside ±margin. Otherwise it is *inconclusive*.
* **Difference (simultaneous band)**, :func:`difference`. The claim "A and B differ somewhere on a
  grid" uses a max-|Δ| bootstrap band over the whole grid. The band's half-width is the (1 − α)
  quantile of max_k |Δ*_k − Δ̂_k|, so one band covers every grid cell at once (no multiplicity
  left). The claim *holds* when the band excludes ±margin at some cell (a difference larger than
  the margin, not merely a nonzero one). It is *refuted* when the band lies inside ±margin at every
  cell, is no wider than the margin, the measurement moved at all (``moved``) and the resamples
  vary at all. Otherwise it is *inconclusive*.
* **No difference detected is not "the same"**, :func:`degenerate`. When no unit differs between the
  models (zero discordance), every resample gives the same difference and the band collapses to a
  point ([0, 0] before the resolution floor). Such a comparison is "no difference detected at n":
  *inconclusive*, never *refuted*, however large n is.
* **Resolution floor**, :func:`resolution_floor`. An interval from n samples is never narrower than
  ±h(n), with h(n) = 1 − α^(1/n) ≈ 3/n. When no sample differs, the percentile bootstrap collapses
  to [0, 0] and would claim a precision that n samples cannot give. h(n) is the exact one-sided
  binomial bound for "0 events in n" (the rule of three).
* **n needed**, :func:`n_needed`. The interval width shrinks like 1/√n, so the width would reach the
  margin at n·(width/margin)². The answer is never less than the n whose resolution floor fits the
  margin. Every inconclusive verdict therefore says what sample size would decide it. That is a
  width extrapolation; :func:`simulated_power` and :func:`n_needed_by_simulation` instead re-run the
  rule on units resampled from the records (identities), which also accounts for the estimated
  difference and discordance the rule must fit.
* **Holm per family**, :func:`holm`. A family of comparisons is decided by Holm's step-down: every
  undecided comparison is tested at α / (number undecided); the decided ones leave the family and
  the rest are tested again at the larger level, until a round decides none.
* **Threshold**, :func:`threshold`. "The quantity is at least (at most) t" *holds* when its whole
  interval lies on the claimed side of t and is *refuted* when it lies wholly on the other side.
  The intervals are Wilson's for an accuracy (:func:`wilson`) and Hanley & McNeil's for an ROC AUC
  (:func:`auc_interval`), so a chapter without per-sample resamples can still decide.

:func:`similar_ra_different_rr` applies these rules to attack records for the claim of Lyu et al.:
"despite similar RA, the models show different RR". The comparison uses the radii where both RAs
lie in (0.2, 0.8), or every radius ε > 0, and the bounds b ∈ (0, b_max], so the float-equality
test at b = 0 is excluded. Its unit is what the bootstrap resamples (``by``): identities in chapter
03, because the images of one identity (its reals and the fakes made from them) are not independent;
every ``n`` it reports is a number of those units.

These rules are written by hand. statsmodels' ``ttost_paired`` is a t-test, and scipy's
``bootstrap`` gives pointwise intervals. Neither gives TOST on the paired (or video-clustered)
bootstrap resamples the study shares across metrics, nor a max-|Δ| simultaneous band.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .bootstrap import bootstrap_weights, n_units as _n_units
from .grids import check_b_grid
from .ra_rr import correct_adv, prob_change, robust_per_sample

HOLDS, REFUTED, INCONCLUSIVE = "holds", "refuted", "inconclusive"
VERDICTS = (HOLDS, REFUTED, INCONCLUSIVE)

RULE_EQUIVALENCE = ("TOST: holds if the {lvl:.0%} paired-bootstrap interval lies inside ±{m:g} and is at most "
                    "{m:g} wide; refuted if the {lvl2:.0%} interval lies wholly outside ±{m:g}; else inconclusive")
RULE_DIFFERENCE = ("simultaneous {lvl:.0%} max-|Δ| bootstrap band over {grid}: holds if it excludes ±{m:g} somewhere; "
                   "refuted if it lies inside ±{m:g} everywhere (at most {m:g} wide, attack moved P(ŷ), some unit "
                   "discordant); else inconclusive (no discordant unit: no difference detected at n)")
RULE_CLAIM = ("at radii where both RAs lie in ({lo:g}, {hi:g}): holds if RA is similar (TOST, ±{mra:g}) and the RR "
              "band over b ∈ (0, {bmax:g}] excludes ±{mrr:g} at one such radius; refuted if at every such radius RA "
              "is similar and RR the same (band inside ±{mrr:g}, some unit discordant); else inconclusive")
NO_DIFFERENCE = "no difference detected at n = {n} (no discordant unit): not evidence of equality"


@dataclass(frozen=True)
class Verdict:
    """One decided claim. ``lo``/``hi`` is the interval the rule used, ``n`` the number of
    resampled units, and ``n_needed`` the units at which the interval width would reach
    ``margin`` (None when no interval is defined)."""

    claim: str
    verdict: str
    rule: str
    margin: float
    estimate: float
    lo: float
    hi: float
    n: int
    n_needed: int | None = None
    note: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r}: expected one of {', '.join(VERDICTS)}")

    @property
    def width(self) -> float:
        return float(self.hi - self.lo)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["width"] = self.width
        return d


def verdict_table(verdicts: Iterable[Verdict], **columns: Sequence) -> pd.DataFrame:
    """Tidy table of verdicts (one row each). ``columns`` adds context columns (same length)."""
    rows = [v.as_dict() for v in verdicts]
    cols = ["claim", "verdict", "estimate", "lo", "hi", "width", "margin", "n", "n_needed", "rule", "note"]
    df = pd.DataFrame(rows, columns=cols)
    for k, v in columns.items():
        v = list(v)
        if len(v) != len(df):
            raise ValueError(f"{k}: {len(v)} values for {len(df)} verdicts; expected one per verdict")
        df.insert(0, k, v)
    df["n_needed"] = df["n_needed"].astype("Int64")
    return df


def _check(margin: float, alpha: float, n: int) -> None:
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and 0 < margin <= 1):
        raise ValueError(f"margin={margin!r}: expected a number in (0, 1]")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha!r}: expected a level in (0, 0.5)")
    if int(n) < 1:
        raise ValueError(f"n={n!r}: expected at least one sample")


def resolution_floor(n: int, alpha: float = 0.05) -> float:
    """h(n) = 1 − α^(1/n): the narrowest half-width n samples can support (≈ 3/n at α = 0.05)."""
    if int(n) < 1:
        raise ValueError(f"n={n!r}: expected at least one sample")
    return float(1.0 - alpha ** (1.0 / int(n)))


def degenerate(boots: np.ndarray, estimate) -> bool:
    """True when no bootstrap resample differs from the estimate at any cell: zero discordance
    (every unit gives the same paired difference), an interval collapsed to a point."""
    b = np.asarray(boots, float).reshape(len(boots), -1)
    e = np.asarray(estimate, float).reshape(-1)
    dev = np.abs(b - e)
    return bool(np.all(~np.isfinite(dev) | (dev <= 1e-12)))


def n_for_floor(margin: float, alpha: float = 0.05) -> int:
    """The smallest n whose resolution interval (width 2·h(n)) fits the margin."""
    return int(math.ceil(math.log(alpha) / math.log1p(-margin / 2)))


def n_needed(n: int, width: float, margin: float, alpha: float = 0.05) -> int | None:
    """Units at which a bootstrap interval of ``width`` (at ``n``) would be ``margin`` wide."""
    if not math.isfinite(width):
        return None
    return max(int(math.ceil(n * (width / margin) ** 2)), n_for_floor(margin, alpha))


def _finite(boots: np.ndarray, what: str) -> np.ndarray:
    b = np.asarray(boots, float)
    return b[np.isfinite(b).all(axis=tuple(range(1, b.ndim)))] if b.ndim > 1 else b[np.isfinite(b)]


def equivalence(boots: np.ndarray, estimate: float, *, n: int, margin: float, alpha: float = 0.05,
                claim: str = "similar") -> Verdict:
    """TOST on bootstrap resamples ``boots`` of a paired difference (see the module docstring)."""
    _check(margin, alpha, n)
    rule = RULE_EQUIVALENCE.format(lvl=1 - 2 * alpha, lvl2=1 - alpha, m=margin)
    b = _finite(boots, "boots")
    if b.size < 2 or not math.isfinite(estimate):
        return Verdict(claim, INCONCLUSIVE, rule, margin, float(estimate), np.nan, np.nan, int(n), None,
                       f"{b.size} defined resamples")
    h = resolution_floor(n, alpha)
    lo, hi = np.quantile(b, [alpha, 1 - alpha])
    lo2, hi2 = np.quantile(b, [alpha / 2, 1 - alpha / 2])
    lo, hi = min(lo, estimate - h), max(hi, estimate + h)
    lo2, hi2 = min(lo2, estimate - h), max(hi2, estimate + h)
    need = n_needed(n, float(np.quantile(b, 1 - alpha) - np.quantile(b, alpha)), margin, alpha)
    if -margin <= lo and hi <= margin and hi - lo <= margin:
        return Verdict(claim, HOLDS, rule, margin, float(estimate), float(lo), float(hi), int(n), need)
    if lo2 > margin or hi2 < -margin:
        return Verdict(claim, REFUTED, rule, margin, float(estimate), float(lo2), float(hi2), int(n), need)
    note = "interval wider than the margin" if hi - lo > margin else "interval overlaps ±margin"
    return Verdict(claim, INCONCLUSIVE, rule, margin, float(estimate), float(lo), float(hi), int(n), need, note)


def simultaneous_band(boots: np.ndarray, estimate: np.ndarray, *, n: int, alpha: float = 0.05) -> float:
    """Half-width c of the max-|Δ| band: P(max_k |Δ*_k − Δ̂_k| <= c) = 1 − α over the resamples,
    never below the resolution floor. ``boots`` [n_boot, K], ``estimate`` [K]."""
    b = np.asarray(boots, float).reshape(len(boots), -1)
    est = np.asarray(estimate, float).reshape(-1)
    if b.shape[1] != est.size:
        raise ValueError(f"boots: {b.shape[1]} cells for {est.size} estimates; expected [n_boot, K] and [K]")
    dev = np.nanmax(np.abs(b - est), axis=1)
    dev = dev[np.isfinite(dev)]
    c = float(np.quantile(dev, 1 - alpha)) if dev.size else float("nan")
    return max(c, resolution_floor(n, alpha))


def difference(boots: np.ndarray, estimate: np.ndarray, *, n: int, margin: float, alpha: float = 0.05,
               labels: Sequence[str] | None = None, moved: bool = True, claim: str = "different",
               grid: str = "the grid") -> Verdict:
    """"A and B differ at some grid cell", decided by a simultaneous band (module docstring)."""
    _check(margin, alpha, n)
    rule = RULE_DIFFERENCE.format(lvl=1 - alpha, grid=grid, m=margin)
    est = np.asarray(estimate, float).reshape(-1)
    b = np.asarray(boots, float).reshape(len(boots), -1)
    ok = np.isfinite(est)
    if not ok.any() or len(b) < 2:
        return Verdict(claim, INCONCLUSIVE, rule, margin, np.nan, np.nan, np.nan, int(n), None, "no defined cell")
    c = simultaneous_band(b[:, ok], est[ok], n=n, alpha=alpha)
    e = est[ok]
    k = int(np.argmax(np.abs(e)))
    where = f" at {np.asarray(labels, dtype=object)[ok][k]}" if labels is not None else ""
    raw = simultaneous_band(b[:, ok], e, n=10 ** 9, alpha=alpha)  # without the floor, for n_needed
    need = n_needed(n, 2 * raw, margin, alpha)
    lo, hi = float(e[k] - c), float(e[k] + c)
    if (np.abs(e) - c > margin).any():
        j = int(np.argmax(np.abs(e) - c))
        where = f" at {np.asarray(labels, dtype=object)[ok][j]}" if labels is not None else ""
        return Verdict(claim, HOLDS, rule, margin, float(e[j]), float(e[j] - c), float(e[j] + c), int(n), need,
                       f"band excludes ±margin{where}")
    if (np.abs(e) + c <= margin).all() and 2 * c <= margin:
        if degenerate(b[:, ok], e):
            return Verdict(claim, INCONCLUSIVE, rule, margin, float(e[k]), lo, hi, int(n), need,
                           NO_DIFFERENCE.format(n=int(n)))
        if moved:
            return Verdict(claim, REFUTED, rule, margin, float(e[k]), lo, hi, int(n), need,
                           f"band inside ±margin everywhere (largest{where})")
        return Verdict(claim, INCONCLUSIVE, rule, margin, float(e[k]), lo, hi, int(n), need,
                       "the attack changed no P(ŷ) of either model: an RR of 1 is only an upper bound")
    note = "band wider than the margin" if 2 * c > margin else "band overlaps ±margin"
    return Verdict(claim, INCONCLUSIVE, rule, margin, float(e[k]), lo, hi, int(n), need, note + where)


def precision(half_widths: Sequence[float], *, n: int, target: float, level: float = 0.95,
              claim: str = "precision") -> Verdict:
    """"Every interval is at most ±target": holds/refuted by the largest half-width (no third case).
    Half-widths below the resolution floor of n samples (two-sided ``level``) count as the floor."""
    hw = np.asarray(list(half_widths), float)
    hw = np.maximum(hw[np.isfinite(hw)], resolution_floor(n, (1 - level) / 2))
    rule = f"holds if the largest {level:.0%} half-width (at least the resolution floor) is <= {target:g}"
    if hw.size == 0:
        return Verdict(claim, INCONCLUSIVE, rule, target, np.nan, np.nan, np.nan, int(n), None, "no interval")
    worst = float(hw.max())
    need = int(math.ceil(n * (worst / target) ** 2))
    return Verdict(claim, HOLDS if worst <= target else REFUTED, rule, target, worst, float(hw.min()), worst,
                   int(n), need, "lo/hi: smallest/largest half-width")


def power_n(target_half_width: float, *, level: float = 0.95, p: float = 0.5, multiple: int = 1) -> int:
    """Samples for a normal-approximation CI half-width <= target at proportion ``p`` (0.5: the
    worst case), rounded up to a multiple of ``multiple`` (e.g. label × group strata)."""
    from scipy.stats import norm

    if not 0 < target_half_width < 1:
        raise ValueError(f"target_half_width={target_half_width!r}: expected a number in (0, 1)")
    z = norm.ppf(0.5 + level / 2)
    n = math.ceil((z * math.sqrt(p * (1 - p)) / target_half_width) ** 2)
    m = max(1, int(multiple))
    return int(math.ceil(n / m) * m)


RULE_THRESHOLD = ("holds if the {lvl:.0%} interval lies {side} {t:g}; refuted if it lies wholly {other} {t:g}; "
                  "else inconclusive (margin column: the target)")


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (exact enough at every n, never outside [0, 1])."""
    from scipy.stats import norm

    if int(n) < 1 or not 0 <= int(k) <= int(n):
        raise ValueError(f"k={k!r}, n={n!r}: expected 0 <= k <= n and n >= 1")
    z, p = float(norm.ppf(0.5 + level / 2)), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def auc_interval(auc: float, n_pos: int, n_neg: int, level: float = 0.95) -> tuple[float, float]:
    """Normal interval of an ROC AUC from its Hanley & McNeil (1982) standard error; needs only the
    AUC and the class counts (the training records keep no per-sample scores)."""
    from scipy.stats import norm

    if int(n_pos) < 1 or int(n_neg) < 1 or not 0 <= auc <= 1:
        raise ValueError(f"auc={auc!r}, n_pos={n_pos!r}, n_neg={n_neg!r}: expected an AUC in [0, 1] and both classes")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def threshold(estimate: float, lo: float, hi: float, *, n: int, target: float, above: bool = True,
              level: float = 0.95, claim: str = "threshold", note: str = "") -> Verdict:
    """"The quantity is at least (``above``) / at most ``target``", decided by its interval [lo, hi]:
    holds when the whole interval is on the claimed side, refuted when it is wholly on the other,
    else inconclusive. ``n_needed`` (inconclusive only: a decided row needs no more units): the n at
    which the half-width would shrink to the distance between the estimate and the target (the
    interval narrows like 1/√n)."""
    rule = RULE_THRESHOLD.format(lvl=level, t=target, side="at or above" if above else "at or below",
                                 other="below" if above else "above")
    if not all(math.isfinite(v) for v in (estimate, lo, hi)):
        return Verdict(claim, INCONCLUSIVE, rule, target, float(estimate), float(lo), float(hi), int(n), None,
                       note or "no interval")
    ok, bad = (lo >= target, hi < target) if above else (hi <= target, lo > target)
    gap = abs(estimate - target)
    verdict = HOLDS if ok else REFUTED if bad else INCONCLUSIVE
    need = int(math.ceil(n * ((hi - lo) / 2 / gap) ** 2)) if gap > 0 and verdict == INCONCLUSIVE else None
    return Verdict(claim, verdict, rule, float(target), float(estimate), float(lo), float(hi), int(n), need, note)


# ----------------------------------------------------------------------------- records → verdicts

def _boot_means(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[..., sample] per-sample values → [n_boot, ...] resample means (weights [n_boot, sample])."""
    return np.moveaxis(np.tensordot(values, w, axes=([-1], [1])) / w.sum(1), -1, 0)


def similar_ra_different_rr(records: xr.Dataset, model_a: str, model_b: str, attack: str,
                            b_grid: Sequence[float], *, ra_margin: float = 0.05, rr_margin: float = 0.05,
                            alpha: float = 0.05, ra_window: tuple[float, float] = (0.2, 0.8),
                            radii: str = "informative", weights: np.ndarray | None = None,
                            by: str = "sample", n_boot: int = 1000, seed: int = 0) -> dict:
    """Decide "similar RA, different RR" for one attack and model pair from attack records.

    Compared radii: ε > 0 with both RAs in the open ``ra_window`` (``radii="informative"``) or
    every ε > 0 (``"all"``). RA similarity at each radius by TOST on a simultaneous (1 − 2α) band
    over the radii; RR difference by one simultaneous (1 − α) band over (radius, b ∈ (0, b_max]).
    Returns ``{"claim", "ra", "rr"}`` verdicts, the deciding ``eps`` and ``b``, and the ``radii``.
    """
    for m in (model_a, model_b):
        if m not in records.model.values:
            raise ValueError(f"model={m!r}: not in the records; expected one of {list(records.model.values)}")
    if attack not in records.attack.values:
        raise ValueError(f"attack={attack!r}: not in the records; expected one of {list(records.attack.values)}")
    if radii not in ("informative", "all"):
        raise ValueError(f"radii={radii!r}: expected 'informative' or 'all'")
    lo_w, hi_w = ra_window
    if not 0 <= lo_w < hi_w <= 1:
        raise ValueError(f"ra_window={ra_window!r}: expected 0 <= lo < hi <= 1")
    _check(ra_margin, alpha, 1)
    _check(rr_margin, alpha, 1)
    b_all = check_b_grid(b_grid)
    b_pos = b_all[b_all > 0]
    if b_pos.size == 0:
        raise ValueError(f"b_grid={list(b_grid)!r}: expected at least one bound b > 0 (b = 0 is excluded)")
    rec = records.sel(model=[model_a, model_b], attack=attack)
    rec = rec.isel(eps=np.flatnonzero(rec.eps.values > 0))
    n = int(rec.sizes["sample"])
    w = weights if weights is not None else bootstrap_weights(rec, by=by, n_boot=n_boot, seed=seed)
    n_units = _n_units(rec, by)
    ca = correct_adv(rec).astype(float).transpose("model", "eps", "sample").values  # [2, E, n]
    ra = ca.mean(-1)
    eps = rec.eps.values
    if radii == "informative":
        keep = ((ra > lo_w) & (ra < hi_w)).all(0)
    else:
        keep = np.ones(eps.size, bool)
    rule = RULE_CLAIM.format(lo=lo_w, hi=hi_w, mra=ra_margin, bmax=float(b_pos.max()), mrr=rr_margin)
    name = f"similar RA, different RR: {model_a} vs {model_b}, {attack}"
    out = {"radii": [float(e) for e in eps[keep]], "eps": float("nan"), "b": float("nan")}
    if not keep.any():
        note = f"no radius ε > 0 where both RAs lie in ({lo_w:g}, {hi_w:g})"
        none = lambda c, m: Verdict(c, INCONCLUSIVE, rule, m, np.nan, np.nan, np.nan, n_units, None, note)
        out.update(claim=none(name, rr_margin), ra=none(f"similar RA: {model_a} vs {model_b}, {attack}", ra_margin),
                   rr=none(f"different RR: {model_a} vs {model_b}, {attack}", rr_margin))
        return out
    eps_k = eps[keep]
    # RA: paired differences per radius, TOST on a simultaneous band over the kept radii
    d_ra = ca[0, keep] - ca[1, keep]  # [E, n]
    est_ra = d_ra.mean(-1)
    bt_ra = _boot_means(d_ra, w)  # [B, E]
    c90 = simultaneous_band(bt_ra, est_ra, n=n_units, alpha=2 * alpha)
    c95 = simultaneous_band(bt_ra, est_ra, n=n_units, alpha=alpha)
    raw90 = simultaneous_band(bt_ra, est_ra, n=10 ** 9, alpha=2 * alpha)
    ra_ok = (np.abs(est_ra) + c90 <= ra_margin) & (2 * c90 <= ra_margin)
    ra_far = np.abs(est_ra) - c95 > ra_margin
    # RR: one simultaneous band over (kept radius, b > 0)
    rps = robust_per_sample(rec, b_pos).astype(float).transpose("model", "eps", "b", "sample").values
    d_rr = rps[0, keep] - rps[1, keep]  # [E, K, n]
    est_rr = d_rr.mean(-1)
    bt_rr = _boot_means(d_rr, w)  # [B, E, K]
    c_rr = simultaneous_band(bt_rr.reshape(len(bt_rr), -1), est_rr.reshape(-1), n=n_units, alpha=alpha)
    raw_rr = simultaneous_band(bt_rr.reshape(len(bt_rr), -1), est_rr.reshape(-1), n=10 ** 9, alpha=alpha)
    change = prob_change(rec).transpose("model", "eps", "sample").values[:, keep]
    moved = (change > 1e-12).any(axis=(0, 2))  # per kept radius
    differs = (np.abs(est_rr) - c_rr > rr_margin).any(-1)  # a difference beyond ±margin, not merely nonzero
    # zero discordance at a radius (every unit gives the same paired difference): no difference detected
    flat = np.array([degenerate(bt_rr[:, e], est_rr[e]) for e in range(eps_k.size)])
    same = (np.abs(est_rr) + c_rr <= rr_margin).all(-1) & (2 * c_rr <= rr_margin) & moved & ~flat
    holds_e = ra_ok & differs
    need_ra = n_needed(n_units, 2 * raw90, ra_margin, alpha)
    need_rr = n_needed(n_units, 2 * raw_rr, rr_margin, alpha)

    # deciding radius: a radius where the claim holds (largest RR gap), else the most RA-similar one
    if holds_e.any():
        cand = np.flatnonzero(holds_e)
        i = int(cand[np.argmax((np.abs(est_rr[cand]) - c_rr).max(-1))])
    else:
        cand = np.flatnonzero(ra_ok) if ra_ok.any() else np.arange(eps_k.size)
        i = int(cand[np.argmin(np.abs(est_ra[cand]))])
    k = int(np.argmax(np.abs(est_rr[i])))
    e_i, b_k = float(eps_k[i]), float(b_pos[k])
    out.update(eps=e_i, b=b_k)
    ra_lo, ra_hi = float(est_ra[i] - c90), float(est_ra[i] + c90)
    rr_est, rr_lo, rr_hi = float(est_rr[i, k]), float(est_rr[i, k] - c_rr), float(est_rr[i, k] + c_rr)
    at = f"ε={e_i:.4g}, b={b_k:.3g}"

    if holds_e.any():
        verdict, note = HOLDS, f"RA similar and RR band excludes ±{rr_margin:g} at {at}"
    elif ra_ok.any() and (ra_far | (ra_ok & same)).all():
        verdict, note = REFUTED, f"RA similar and RR the same at every such radius (largest gap at {at})"
    elif ra_far.all():
        verdict, note = INCONCLUSIVE, "RA differ at every compared radius: the pair does not test the claim"
    elif ra_ok.any() and not moved[ra_ok].any():
        verdict, note = INCONCLUSIVE, "the attack changed no P(ŷ) of either model: an RR of 1 is only an upper bound"
    elif ra_ok.any() and flat[ra_ok].any():
        verdict, note = INCONCLUSIVE, NO_DIFFERENCE.format(n=n_units) + f" (at {at})"
    else:
        why = "RA not shown similar" if not ra_ok.any() else "RR band overlaps 0 and ±margin"
        verdict, note = INCONCLUSIVE, f"{why} (at {at})"
    if flat[i] and not differs[i]:
        need_rr = None  # zero discordance: more units resampled from these records never differ
    # n needed: that of the part still undecided at the deciding radius (both when neither is)
    parts = [nd for nd, done in ((need_ra, ra_ok[i] or ra_far[i]), (need_rr, differs[i] or same[i])) if not done]
    parts = parts or [need_ra, need_rr]
    need = None if any(p is None for p in parts) else max(parts)
    out["claim"] = Verdict(name, verdict, rule, rr_margin, rr_est, rr_lo, rr_hi, n_units, need, note)

    ra_rule = RULE_EQUIVALENCE.format(lvl=1 - 2 * alpha, lvl2=1 - alpha, m=ra_margin) + \
        " (simultaneous over the compared radii)"
    if ra_ok[i]:
        ra_v = HOLDS
    elif ra_far[i]:
        ra_v, ra_lo, ra_hi = REFUTED, float(est_ra[i] - c95), float(est_ra[i] + c95)
    else:
        ra_v = INCONCLUSIVE
    out["ra"] = Verdict(f"similar RA: {model_a} vs {model_b}, {attack}", ra_v, ra_rule, ra_margin,
                        float(est_ra[i]), ra_lo, ra_hi, n_units, need_ra, f"at ε={e_i:.4g}")
    rr_rule = RULE_DIFFERENCE.format(lvl=1 - alpha, grid=f"the compared radii × b ∈ (0, {float(b_pos.max()):g}]",
                                     m=rr_margin)
    if differs[i]:
        rr_v = HOLDS
    elif same[i]:
        rr_v = REFUTED
    else:
        rr_v = INCONCLUSIVE
    rr_note = f"at {at}" + ("" if moved[i] else "; the attack changed no P(ŷ)") + \
        (f"; {NO_DIFFERENCE.format(n=n_units)}" if flat[i] and not differs[i] else "")
    out["rr"] = Verdict(f"different RR: {model_a} vs {model_b}, {attack}", rr_v, rr_rule, rr_margin, rr_est,
                        rr_lo, rr_hi, n_units, need_rr, rr_note)
    return out


def overall(verdicts: Sequence[Verdict], claim: str) -> Verdict:
    """An existential claim over comparisons ("some pair shows it"): holds if any holds, refuted if
    all are refuted, else inconclusive; the numbers are those of the deciding (or widest-margin) one."""
    vs = list(verdicts)
    rule = "holds if it holds for some comparison; refuted if refuted for every one; else inconclusive"
    if not vs:
        return Verdict(claim, INCONCLUSIVE, rule, np.nan, np.nan, np.nan, np.nan, 0, None, "no comparison")
    held = [v for v in vs if v.verdict == HOLDS]
    if held:
        v, verdict = max(held, key=lambda v: abs(v.estimate)), HOLDS
    elif all(v.verdict == REFUTED for v in vs):
        v, verdict = max(vs, key=lambda v: abs(v.estimate)), REFUTED
    else:
        pool = [v for v in vs if v.verdict == INCONCLUSIVE]
        v = min(pool, key=lambda v: v.n_needed if v.n_needed is not None else math.inf)
        verdict = INCONCLUSIVE
    counts = ", ".join(f"{sum(x.verdict == k for x in vs)} {k}" for k in VERDICTS)
    return Verdict(claim, verdict, rule, v.margin, v.estimate, v.lo, v.hi, v.n, v.n_needed,
                   f"{counts} of {len(vs)}; numbers from: {v.claim}")


def holm(decide, keys: Sequence, alpha: float) -> dict:
    """Holm's step-down over a family of comparisons decided at a level.

    ``decide(key, level)`` returns a :class:`Verdict` (or a dict with one under ``"claim"``). Each
    round tests every undecided key at ``alpha / (number undecided)``; keys decided (holds or refuted)
    leave the family, the rest are tested again at the larger level; a round that decides none ends
    it. For rules whose decisions only get easier as the level grows this is Holm's procedure (a
    key decided at α/k is decided at every larger level). Returns ``{key: (result, level)}`` with
    the level each key was decided, or last tested, at.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha!r}: expected a level in (0, 0.5)")
    verdict = lambda r: (r["claim"] if isinstance(r, dict) else r).verdict
    left, out = list(keys), {}
    while left:
        level = alpha / len(left)
        res = {k: decide(k, level) for k in left}
        out.update({k: (r, level) for k, r in res.items()})
        done = {k for k, r in res.items() if verdict(r) != INCONCLUSIVE}
        if not done:
            break
        left = [k for k in left if k not in done]
    return out


# ----------------------------------------------------------------------------- power by simulation

def resample_units(records, by: str, n: int, rng: np.random.Generator):
    """``records`` with ``n`` units of ``by`` drawn with replacement (every sample of a drawn unit comes
    along) and relabelled, so a unit drawn twice counts as two units (``sample`` renumbered)."""
    ids = np.asarray(records.coords[by].values).astype(str) if by != "sample" else \
        np.arange(records.sizes["sample"]).astype(str)
    uniq, inv = np.unique(ids, return_inverse=True)
    members = [np.flatnonzero(inv == u) for u in range(len(uniq))]
    draw = rng.integers(0, len(uniq), int(n))
    idx = np.concatenate([members[u] for u in draw])
    labels = np.concatenate([np.full(len(members[u]), f"u{j}") for j, u in enumerate(draw)])
    out = records.isel(sample=idx).assign_coords(sample=np.arange(idx.size))
    return out.assign_coords({by: ("sample", labels)}) if by != "sample" else out


def simulated_power(records, rule, *, by: str, n: int | None = None, n_sim: int = 100, seed: int = 0,
                    outcome: str = HOLDS) -> float:
    """Share of ``n_sim`` data sets of ``n`` units (default: as many as the records hold), each drawn
    with replacement from the records' own units (:func:`resample_units`), on which
    ``rule(records) -> Verdict`` decides ``outcome`` (a rule returning a dict of verdicts gives a dict
    of shares, one simulation for all). The data's own differences and discordance are
    what is resampled, so this is the power of the rule *at the estimated effect*, not at a chosen one."""
    from .bootstrap import n_units

    if isinstance(n_sim, bool) or int(n_sim) < 1:
        raise ValueError(f"n_sim={n_sim!r}: expected an integer >= 1")
    if outcome not in VERDICTS:
        raise ValueError(f"outcome={outcome!r}: expected one of {', '.join(VERDICTS)}")
    n = n_units(records, by) if n is None else int(n)
    if n < 1:
        raise ValueError(f"n={n!r}: expected at least one unit")
    rng = np.random.default_rng(seed)
    outs = [rule(resample_units(records, by, n, rng)) for _ in range(int(n_sim))]
    if isinstance(outs[0], Verdict):
        return sum(v.verdict == outcome for v in outs) / int(n_sim)
    return {k: sum(o[k].verdict == outcome for o in outs) / int(n_sim) for k in outs[0]}


def n_needed_by_simulation(records, rule, *, by: str, power: float = 0.8, n_sim: int = 50, seed: int = 0,
                           max_factor: int = 16) -> tuple[int | None, float]:
    """The smallest n of units on the doubling ladder n0, 2·n0, ... (up to ``max_factor``·n0, n0 the
    records' units) at which :func:`simulated_power` reaches ``power``; returns (n, its power), or
    (None, the power at the largest n tried). Because the ladder doubles, the answer is reported as
    "at least" the previous rung; because it resamples the records, it holds at the estimated effect."""
    from .bootstrap import n_units

    if not 0 < power < 1:
        raise ValueError(f"power={power!r}: expected a probability in (0, 1)")
    n0 = n_units(records, by)
    n, pw = n0, 0.0
    while n <= max_factor * n0:
        pw = simulated_power(records, rule, by=by, n=n, n_sim=n_sim, seed=seed)
        if pw >= power:
            return n, pw
        n *= 2
    return None, pw
