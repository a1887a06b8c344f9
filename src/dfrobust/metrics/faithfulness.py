"""Faithfulness of explanations as reductions of XAI attack records (dims model, tool, k, pair).

The adversarial accuracy of the detector on fakes attacked inside a tool's top-k segments
(Gowrisankar & Thing, 2023: the lower, the more faithful the ranking), with paired bootstrap CIs
over pairs (:mod:`dfrobust.metrics.bootstrap`: one weight matrix shared by every tool, k and model,
so tool − random differences are paired on the same pairs, segments and NES seed), the verdicts
of the chapter's claims, the deletion/insertion scores (Petsiuk et al., 2018) and the Kendall τ
between the two rankings of tools. Nothing here runs a model.

Only pairs with ``analysed == 1`` enter a reduction (the protocol of
:func:`dfrobust.experiments.xai.run_xai`: the detector calls the fake fake and the real real).
One threshold everywhere: a fake counts as detected when P(fake) ≥ 0.5.

**Comparing tools** uses the queries NES needed to flip each fake, censored at its budget
(:func:`restricted_queries`: the accuracy averaged over every query budget up to the budget), paired
per pair against random on the same pairs, resampling identities, with Holm over the tools; the
rule has one cut point (−margin), so "holds" and "refuted" cannot both be met; a comparison in which
no pair differs is inconclusive; ``n_needed`` and the power of the primary claim are simulated
(:func:`n_needed_sim`, :func:`power_beats_random`;
at the estimated effect, :func:`power_resampled`). Verdicts use the study's vocabulary
(:mod:`dfrobust.metrics.verdicts`); the rules are written in :data:`RULES` and shown on the page.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .bootstrap import bootstrap, bootstrap_weights
from .verdicts import HOLDS, INCONCLUSIVE, REFUTED, Verdict, resolution_floor, simulated_power

THRESHOLD = 0.5  # P(fake) ≥ THRESHOLD: classified fake
VERDICT_COLUMNS = ["claim", "verdict", "rule", "margin", "estimate", "lo", "hi", "n", "n_needed"]
RULES = {
    "beats_random": ("Δ = restricted queries to flip of the tool − of random on the same pairs (per pair: "
                     "min(queries to flip, budget) / budget, mean over k; equally the accuracy on adversarial fakes "
                     "averaged over every query budget up to the NES budget; lower = more faithful); percentile "
                     "bootstrap interval resampling identities, at Holm's level over the tools: holds if it lies wholly below −margin, refuted if wholly above −margin, "
                     "else inconclusive; inconclusive too when no pair differs (the attack cannot separate them; the "
                     "interval shown is then the resolution floor of n identities, as whenever the resamples all agree)"),
    "best_tool": ("the tool with the fewest restricted queries among those that beat random is 'best' only if "
                  "its paired interval (Bonferroni over the rivals) to every other tool lies below 0; else "
                  "'not separable by this attack at n' (the tied tools listed) or 'no tool beats random'"),
    "size": ("Δ = acc(size a) − acc(size b) per tool over pairs analysed at both sizes, paired bootstrap CI: "
             "holds (the size matters by more than the margin) if the CI lies wholly beyond ±margin; refuted "
             "if it lies inside (−margin, margin); else inconclusive"),
}


# ----------------------------------------------------------------------------- per-pair values
def _analysed(ds: xr.Dataset) -> xr.DataArray:
    if "analysed" in ds:
        return ds["analysed"].astype(bool)
    return xr.ones_like(ds["p_fake_clean"], dtype=bool)


def correct_adv(ds: xr.Dataset) -> xr.DataArray:
    """1.0 where the adversarial fake is still classified fake (P(fake) ≥ 0.5), NaN for pairs not analysed."""
    c = (ds["p_fake_adv"] >= THRESHOLD).astype(float)
    return c.where(_analysed(ds) & ds["p_fake_adv"].notnull()).rename("correct_adv")


def pair_score(ds: xr.Dataset) -> xr.DataArray:
    """Per-pair accuracy on the adversarial fakes averaged over k (model, tool, pair): the claims' unit."""
    return correct_adv(ds).mean("k").rename("pair_score")


def adv_accuracy(ds: xr.Dataset, dim: str | Sequence[str] = "pair") -> xr.DataArray:
    """Accuracy on the adversarial fakes over the analysed pairs (fraction still classified fake)."""
    return correct_adv(ds).mean(dim).rename("adv_accuracy")


def clean_accuracy(ds: xr.Dataset, dim: str | Sequence[str] = "pair") -> xr.DataArray:
    """Accuracy on the clean fakes of all candidate pairs (before the protocol keeps the detected ones)."""
    return (ds["p_fake_clean"] >= THRESHOLD).mean(dim).rename("clean_accuracy")


def protocol_counts(ds: xr.Dataset) -> pd.DataFrame:
    """Per model: candidate pairs, how many each protocol rule drops, eligible and analysed pairs."""
    fake_ok = (ds["p_fake_clean"] >= THRESHOLD).values
    real_ok = (ds["p_fake_real"] < THRESHOLD).values
    ana = _analysed(ds).values
    rows = []
    for i, m in enumerate(ds["model"].values):
        rows.append({"model": str(m), "candidates": int(fake_ok.shape[1]),
                     "dropped: fake called real": int((~fake_ok[i]).sum()),
                     "dropped: real called fake": int((~real_ok[i]).sum()),
                     "dropped: both": int((~fake_ok[i] & ~real_ok[i]).sum()),
                     "eligible": int((fake_ok[i] & real_ok[i]).sum()), "analysed": int(ana[i].sum())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- bootstrap
def _weights(ds: xr.Dataset, n_boot: int, seed: int) -> np.ndarray:
    coords = xr.Dataset(coords={"sample": np.arange(ds.sizes["pair"])})
    return bootstrap_weights(coords, n_boot=n_boot, seed=seed)


def _boot(values: xr.DataArray, where: xr.DataArray, w: np.ndarray, seed: int) -> xr.Dataset:
    """Package bootstrap over pairs (renamed ``sample``) restricted to ``where`` (a ratio estimator)."""
    v = values.rename(pair="sample")
    m = where.rename(pair="sample") & v.notnull()
    return bootstrap(v.fillna(0.0), where=m, weights=w, seed=seed)


def _interval(est: float, lo: float, hi: float, values: np.ndarray) -> tuple[float, float]:
    """The bootstrap CI, widened by the rule of three when every paired value is the same.

    A resample of identical values always gives the same mean, so the percentile CI collapses to a
    point; with no discordant pair among n, 3/n bounds the discordance rate at 95 % (Hanley & Lippman-Hand, 1983).
    """
    v = values[np.isfinite(values)]
    if len(v) and np.all(v == v[0]):
        lo, hi = min(lo, est - 3 / len(v)), max(hi, est + 3 / len(v))
    return max(lo, -1.0), min(hi, 1.0)                  # a difference of accuracies lies in [-1, 1]


def _degenerate(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return bool(len(v) and np.all(v == v[0]))


def _n_needed(n: int, lo: float, hi: float, margin: float, degenerate: bool = False) -> int:
    """Pairs at which the CI would be as wide as the margin: width ∝ 1/√n, or 6/n (rule of three, both
    sides) when every paired value is the same."""
    width = hi - lo
    if not np.isfinite(width) or n < 1:
        return 0
    if degenerate:
        return int(max(n, math.ceil(6 / margin)))
    return int(max(n, math.ceil(n * (width / margin) ** 2)))


def accuracy_table(ds: xr.Dataset, *, by: str | None = None, n_boot: int = 1000, seed: int = 0,
                   ci: float = 0.95, n_resamples: int | None = None) -> pd.DataFrame:
    """Tidy table per model, tool, k (and ``by``, e.g. ``dataset``): accuracy on adversarial fakes with its CI.

    ``clean_acc`` is the detector's accuracy on all candidate fakes; on the analysed pairs it is 1 by
    the protocol. ``mask_fraction`` is the pixel fraction actually attacked (mean over analysed pairs).
    """
    n_boot = int(n_resamples or n_boot)
    ana = _analysed(ds)
    corr = correct_adv(ds)
    w = _weights(ds, n_boot, seed)
    rows = []
    groups = [(None, None)] if by is None else [(g, ds[by] == g) for g in np.unique(ds[by].values)]
    for gval, gmask in groups:
        where = ana if gmask is None else ana & gmask
        b = _boot(corr, where.broadcast_like(corr), w, seed)
        for m in ds["model"].values:
            clean = float(clean_accuracy(ds.sel(model=m) if gmask is None else ds.sel(model=m).where(gmask, drop=True)))
            for t in ds["tool"].values:
                for k in ds["k"].values:
                    sel = dict(model=m, tool=t, k=k)
                    keep = where.sel(model=m).values.astype(bool)
                    row = {"model": str(m), "tool": str(t), "k": int(k), "n": int(keep.sum()), "clean_acc": clean,
                           "adv_acc": float(b["estimate"].sel(sel)), "ci_low": float(b["lo"].sel(sel)),
                           "ci_high": float(b["hi"].sel(sel)),
                           "mask_fraction": float(ds["mask_fraction"].sel(sel).values[keep].mean()) if keep.any() else np.nan,
                           "success_rate": float(ds["success"].sel(sel).values[keep].mean()) if keep.any() else np.nan,
                           "mean_queries": float(ds["queries"].sel(sel).values[keep].mean()) if keep.any() else np.nan}
                    if by is not None:
                        row[by] = gval
                    rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- queries to flip (censored)
def restricted_queries(ds: xr.Dataset) -> xr.DataArray:
    """Per (model, tool, k, pair): min(queries to flip, budget) / budget, 1 when censored, NaN off the analysed pairs.

    Its mean over pairs is the **restricted mean queries to flip** as a fraction of the NES budget
    (``attrs["nes_budget"]``), and equally the detector's accuracy on the adversarial fakes averaged over
    every query budget from 0 to the budget (the area under the "still detected" curve): the difference
    of two tools reads as an accuracy difference; lower = the tool's segments flip the fake more often
    or sooner.
    """
    budget = float(ds.attrs["nes_budget"])
    v = xr.where(ds["censored"] == 1, budget, np.minimum(ds["queries"].astype(float), budget)) / budget
    return v.where(_analysed(ds)).rename("restricted_queries")


def success_table(ds: xr.Dataset) -> pd.DataFrame:
    """NES success per model: the whole image (the ceiling, ``tool = "full image"``) and each tool at each k:
    the fraction of analysed fakes flipped within the budget and the median queries to flip of those flipped."""
    ana = _analysed(ds)
    rows = []
    for m in ds["model"].values:
        keep = ana.sel(model=m).values
        n = int(keep.sum())
        q = ds["full_queries"].sel(model=m).values[keep]
        ok = ds["full_success"].sel(model=m).values[keep] == 1
        rows.append({"model": str(m), "tool": "full image", "k": "all", "n": n,
                     "flipped": float(ok.mean()) if n else np.nan,
                     "median queries to flip": float(np.median(q[ok])) if ok.any() else np.nan})
        for t in ds["tool"].values:
            for k in ds["k"].values:
                sel = dict(model=m, tool=t, k=k)
                ok = ds["censored"].sel(sel).values[keep] == 0
                q = ds["queries"].sel(sel).values[keep]
                rows.append({"model": str(m), "tool": str(t), "k": str(int(k)), "n": n,
                             "flipped": float(ok.mean()) if n else np.nan,
                             "median queries to flip": float(np.median(q[ok])) if ok.any() else np.nan})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- verdicts
def beats_verdict(lo: float, hi: float, margin: float, discordant: bool = True) -> str:
    """The rule ``beats_random`` on an interval [lo, hi] of Δ = tool − random (lower = better): holds if the
    interval lies wholly below −margin, refuted if wholly above it, else (or when no pair differs, or
    the interval is undefined) inconclusive. One cut point, so the two criteria cannot both be met."""
    if not discordant or not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if hi < -margin:
        return HOLDS
    if lo > -margin:
        return REFUTED
    return INCONCLUSIVE


def _verdict_row(claim: str, rule_key: str, margin: float, est: float, lo: float, hi: float, n: int,
                 verdict: str, need: int | None) -> dict:
    return {"claim": claim, "verdict": verdict, "rule": RULES[rule_key], "margin": float(margin),
            "estimate": float(est), "lo": float(lo), "hi": float(hi), "n": int(n),
            "n_needed": None if need is None else int(need)}


def _check_margin(margin: float) -> float:
    if not (isinstance(margin, (int, float)) and 0 < float(margin) < 1):
        raise ValueError(f"margin={margin!r}: expected an accuracy difference in (0, 1)")
    return float(margin)


def _units(ds: xr.Dataset, model) -> tuple[np.ndarray, np.ndarray]:
    """The model's analysed pairs and the unit each belongs to: its identity (pairs of one identity are
    resampled together), or the pair itself when the records carry no identity."""
    keep = _analysed(ds).sel(model=model).values
    ids = np.asarray(ds["identity"].values).astype(str)[keep] if "identity" in ds.coords else np.array([])
    if len(ids) != keep.sum() or (ids == "").any():
        ids = np.arange(int(keep.sum())).astype(str)
    return keep, ids


def _cluster_means(values: np.ndarray, ids: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap means [n_boot] of per-pair ``values``, resampling identities (:mod:`.bootstrap`)."""
    coords = xr.Dataset(coords={"sample": np.arange(len(ids)), "unit": ("sample", ids)})
    w = bootstrap_weights(coords, by="unit", n_boot=n_boot, seed=seed)
    return (w @ values) / w.sum(1)


def _normal_verdicts(samples: np.ndarray, margin: float, level: float) -> np.ndarray:
    """The rule on simulated data sets ``samples`` [sims, n]: normal interval at ``level``, undecided when no
    pair differs (vectorised :func:`beats_verdict`)."""
    from scipy.stats import norm

    n = samples.shape[1]
    est = samples.mean(1)
    half = norm.ppf(1 - level / 2) * samples.std(1, ddof=1) / math.sqrt(n)
    disc = ~(samples == samples[:, :1]).all(1)
    return np.where(~disc, INCONCLUSIVE, np.where(est + half < -margin, HOLDS,
                                                  np.where(est - half > -margin, REFUTED, INCONCLUSIVE)))


def _n_grid(n: int, factor: int = 64) -> list[int]:
    return sorted({int(math.ceil(max(n, 2) * 2 ** (i / 2))) for i in range(0, 2 * int(math.log2(factor)) + 1)})


def n_needed_sim(diffs: np.ndarray, margin: float, level: float, *, power: float = 0.8, n_sim: int = 400,
                 seed: int = 0) -> int | None:
    """Pairs at which the rule ``beats_random`` would decide (holds or refuted) in ``power`` of data sets
    like these: simulated by resampling the observed paired differences at growing n (up to 64 x n), each
    decided with a normal interval at ``level``. None: no pair differs (this
    attack cannot separate them at any n) or not decided within 64 x n."""
    d = np.asarray(diffs, float)
    d = d[np.isfinite(d)]
    if len(d) < 2 or np.all(d == d[0]):
        return None
    rng = np.random.default_rng(seed)
    for n2 in _n_grid(len(d)):
        v = _normal_verdicts(rng.choice(d, size=(n_sim, n2)), margin, level)
        if (v != INCONCLUSIVE).mean() >= power:
            return n2
    return None


def _holm(boots: dict, est: dict, discordant: dict, n: int, margin: float, alpha: float) -> dict:
    """Holm's step-down over the tools of one model for the two-sided test of Δ = −margin: the tool with the
    smallest bootstrap p-value is decided on its (1 − α/m) interval, the next on (1 − α/(m − 1)), ...;
    the first undecided one stops the procedure (the rest: inconclusive at that level). A tool whose
    resamples all agree (no discordant pair, or a single identity) has p = 1 and its interval is the
    resolution floor of ``n`` units around the estimate (:func:`~dfrobust.metrics.verdicts.resolution_floor`).
    Returns tool → (verdict, lo, hi, level)."""
    m = len(boots)
    p = {t: 1.0 if not discordant[t] or np.ptp(b) == 0 else
         min(1.0, 2 * (min((b >= -margin).sum(), (b <= -margin).sum()) + 1) / (len(b) + 1)) for t, b in boots.items()}
    order = sorted(boots, key=lambda t: (p[t], list(boots).index(t)))
    out, stop = {}, None
    for j, t in enumerate(order):
        level = alpha / (m - j) if stop is None else stop
        lo, hi = (float(x) for x in np.quantile(boots[t], [level / 2, 1 - level / 2]))
        if np.ptp(boots[t]) == 0:          # the bootstrap collapsed to a point: the resolution of n units
            h = resolution_floor(n, level / 2)
            lo, hi = est[t] - h, est[t] + h
        v = beats_verdict(lo, hi, margin, discordant[t]) if stop is None else INCONCLUSIVE
        if v == INCONCLUSIVE and stop is None:
            stop = level
        out[t] = (v, lo, hi, level)
    return out


def _paired_diffs(rq: xr.DataArray, model, keep: np.ndarray, tools: Sequence[str], baseline: str) -> dict:
    """Per tool: restricted queries (mean over k) of the tool − of ``baseline`` on the model's ``keep`` pairs."""
    base = rq.sel(model=model, tool=baseline).values[keep]
    return {t: rq.sel(model=model, tool=t).values[keep] - base for t in tools}


def _decide_tools(diffs: dict, ids: np.ndarray, margin: float, alpha: float, n_boot: int, seed: int) -> tuple[dict, dict]:
    """The rule ``beats_random`` for every tool of one model: bootstrap by identity (:func:`_cluster_means`, one
    seed so the tools are paired) and Holm (:func:`_holm`). Returns (tool → (verdict, lo, hi, level), tool → Δ)."""
    boots = {t: _cluster_means(d, ids, n_boot, seed) for t, d in diffs.items()}
    est = {t: float(d.mean()) for t, d in diffs.items()}
    disc = {t: bool((np.abs(d) > 0).any()) for t, d in diffs.items()}
    return _holm(boots, est, disc, len(np.unique(ids)), margin, alpha), est


def tool_verdicts(ds: xr.Dataset, *, margin: float = 0.1, baseline: str = "random", alpha: float = 0.05,
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per model × tool: "the tool beats random by more than ``margin``" (rule ``beats_random``).

    Δ = mean over pairs and k of the restricted queries to flip (:func:`restricted_queries`) of the tool
    minus random's, on the same pairs, segments and NES noise; interval: percentile bootstrap resampling
    identities; Holm over the tools of a model (:func:`_holm`); ``n_needed`` by simulation at the level
    used (:func:`n_needed_sim`). Columns: model, tool, the verdict columns, ``level`` and ``discordant``
    (pairs whose values differ).
    """
    margin = _check_margin(margin)
    if baseline not in ds["tool"].values:
        raise ValueError(f"baseline={baseline!r}: not among the tools {list(map(str, ds['tool'].values))}")
    tools = [str(t) for t in ds["tool"].values if str(t) != baseline]
    rq = restricted_queries(ds).mean("k")
    rows = []
    for m in ds["model"].values:
        keep, ids = _units(ds, m)
        n = int(keep.sum())
        diffs = _paired_diffs(rq, m, keep, tools, baseline)
        disc = {t: int((np.abs(d) > 0).sum()) for t, d in diffs.items()}
        if n == 0:
            for t in tools:
                rows.append({"model": str(m), "tool": t, "level": np.nan, "discordant": 0,
                             **_verdict_row(f"{t} beats {baseline} on {m}", "beats_random", margin, np.nan, np.nan,
                                            np.nan, 0, INCONCLUSIVE, None)})
            continue
        held, est = _decide_tools(diffs, ids, margin, alpha, n_boot, seed)
        for t in tools:
            v, lo, hi, level = held[t]
            rows.append({"model": str(m), "tool": t, "level": level, "discordant": disc[t],
                         **_verdict_row(f"{t} beats {baseline} on {m}", "beats_random", margin, est[t], lo, hi, n, v,
                                        n_needed_sim(diffs[t], margin, level, seed=seed))})
    return pd.DataFrame(rows, columns=["model", "tool", *VERDICT_COLUMNS, "level", "discordant"])


def best_tool(ds: xr.Dataset, *, margin: float = 0.1, baseline: str = "random", alpha: float = 0.05,
              n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per model: the best tool, "not separable by this attack at n" or "no tool beats random" (rule
    ``best_tool``), never a bare argmin.

    Columns: model, best, tied (the tools not separated from the lead), and the verdict columns of the
    claim "one tool is the most faithful" (estimate/lo/hi: the lead's difference to its closest rival in
    restricted queries; holds only when a best tool exists).
    """
    margin = _check_margin(margin)
    beats = tool_verdicts(ds, margin=margin, baseline=baseline, alpha=alpha, n_boot=n_boot, seed=seed)
    rq = restricted_queries(ds).mean("k")
    rows = []
    for m in ds["model"].values:
        bm = beats[beats.model == str(m)]
        winners = bm[bm.verdict == HOLDS]["tool"].tolist()
        tools = bm["tool"].tolist()
        keep, ids = _units(ds, m)
        n = int(keep.sum())
        claim = f"one tool is the most faithful on {m}"
        if not winners:
            rows.append({"model": str(m), "best": f"no tool beats {baseline}", "tied": "",
                         **_verdict_row(claim, "best_tool", margin, np.nan, np.nan, np.nan, n, INCONCLUSIVE, None)})
            continue
        val = {t: rq.sel(model=m, tool=t).values[keep] for t in tools}
        lead = min(winners, key=lambda t: (float(val[t].mean()), tools.index(t)))
        others = [t for t in tools if t != lead]
        level = alpha / max(len(others), 1)                                  # Bonferroni over the rivals
        diffs = {t: val[t] - val[lead] for t in others}                      # > 0 when the lead is better
        ci = {t: np.quantile(_cluster_means(d, ids, n_boot, seed), [level / 2, 1 - level / 2]) for t, d in diffs.items()}
        tied = [t for t in others if not (ci[t][0] > 0 and (diffs[t] != 0).any())]
        if others:
            close = min(others, key=lambda t: ci[t][0])
            est, lo, hi = -float(diffs[close].mean()), -float(ci[close][1]), -float(ci[close][0])   # lead − rival
        else:
            close, (est, lo, hi) = None, (np.nan, np.nan, np.nan)
        need = n_needed_sim(-diffs[close], 1e-9, level, seed=seed) if close is not None else None
        if tied:
            rows.append({"model": str(m), "best": f"not separable by this attack at n = {n}",
                         "tied": ", ".join([lead, *tied]),
                         **_verdict_row(claim, "best_tool", margin, est, lo, hi, n, INCONCLUSIVE, need)})
        else:
            rows.append({"model": str(m), "best": lead, "tied": "",
                         **_verdict_row(claim, "best_tool", margin, est, lo, hi, n, HOLDS, need)})
    return pd.DataFrame(rows, columns=["model", "best", "tied", *VERDICT_COLUMNS])


def power_beats_random(ds: xr.Dataset, model, *, ratio: float = 2.0, margin: float = 0.1, alpha: float = 0.05,
                       baseline: str = "random", n_sim: int = 400, seed: int = 0) -> dict:
    """Power of "some tool beats random" on ``model`` by simulation, at the build's n and the n for 80 %.

    The alternative: a tool whose segments flip ``ratio`` times as many fakes as random's at every k
    (capped at all of them) with random's queries to flip; data sets of n pairs are drawn from the
    records' random arm (pairs resampled), the tool arm flips each pair-k random left unflipped with the
    probability that gives that rate, at a flip point drawn from random's (or the whole image's) flips.
    Each data set is decided by the rule at Holm's first level α/m (m: the tools compared with random).
    Returns power, n, n_80 (None: beyond 64 x n), the random flip rate and a note.
    """
    margin = _check_margin(margin)
    keep, _ids = _units(ds, model)
    n = int(keep.sum())
    m = max(1, ds.sizes["tool"] - 1)
    out = {"claim": f"some tool beats {baseline} on {model}", "ratio": float(ratio), "n": n, "level": alpha / m,
           "power": np.nan, "n_80": None, "random_flipped": np.nan, "note": ""}
    if n < 2:
        return {**out, "note": "fewer than 2 analysed pairs"}
    vr = restricted_queries(ds).sel(model=model, tool=baseline).transpose("pair", "k").values[keep]   # [n, K]
    rate = (vr < 1).mean(0)
    out["random_flipped"] = float((vr < 1).mean())
    pool = vr[vr < 1]
    if pool.size == 0 and "full_queries" in ds:
        fq = ds["full_queries"].sel(model=model).values[keep] / float(ds.attrs["nes_budget"])
        pool = fq[ds["full_success"].sel(model=model).values[keep] == 1]
    if pool.size == 0 or not (rate > 0).any():
        return {**out, "note": "random segments flipped no fake: 'twice random' is no effect to detect"}
    pi = np.clip((ratio - 1) * rate / np.maximum(1 - rate, 1e-12), 0, 1)
    rng = np.random.default_rng(seed)

    def power_at(n2: int) -> float:
        r = vr[rng.integers(0, n, size=(n_sim, n2))]                                  # [S, n2, K]
        flip = (r >= 1) & (rng.random(r.shape) < pi)
        t = np.where(flip, rng.choice(pool, size=r.shape), r)
        return float((_normal_verdicts((t - r).mean(-1), margin, alpha / m) == HOLDS).mean())

    out["power"] = power_at(n)
    out["n_80"] = next((n2 for n2 in _n_grid(n) if power_at(n2) >= 0.8), None)
    return out



def power_resampled(ds: xr.Dataset, model, *, margin: float = 0.1, alpha: float = 0.05, baseline: str = "random",
                    n_sim: int = 200, n_boot: int = 200, seed: int = 0) -> dict:
    """Power of "some tool beats random" on ``model`` **at the estimated effect**, at the build's n and at 2n units.

    The records' own units (identities; the pairs of one identity travel together, :func:`_units`) are drawn
    with replacement into ``n_sim`` data sets of n units (n: the build's identities) and of 2n units
    (:func:`~dfrobust.metrics.verdicts.simulated_power`); on each the whole rule of :func:`tool_verdicts` is
    decided again (same margin and α, bootstrap by identity with ``n_boot`` resamples, Holm over the tools),
    and the claim holds when at least one tool holds. Because it resamples the very data that decided the
    verdict, this power is optimistic for a claim that held (and pessimistic for one that did not): read it
    beside the power at a design alternative (:func:`power_beats_random`), which does not depend on the
    estimate. Returns claim, n (identities), n_pairs, power, n_2n, power_2n, n_sim, n_boot and a note.
    """
    margin = _check_margin(margin)
    if isinstance(n_sim, bool) or not isinstance(n_sim, (int, np.integer)) or n_sim < 1:
        raise ValueError(f"n_sim={n_sim!r}: expected an integer >= 1")
    models = [str(x) for x in ds["model"].values]
    if str(model) not in models:
        raise ValueError(f"model={model!r}: not among the models {models}")
    if baseline not in ds["tool"].values:
        raise ValueError(f"baseline={baseline!r}: not among the tools {list(map(str, ds['tool'].values))}")
    tools = [str(t) for t in ds["tool"].values if str(t) != baseline]
    keep, ids = _units(ds, model)
    n = int(len(np.unique(ids)))
    claim = f"some tool beats {baseline} on {model}"
    out = {"claim": claim, "n": n, "n_pairs": int(keep.sum()), "power": np.nan, "n_2n": 2 * n, "power_2n": np.nan,
           "n_sim": int(n_sim), "n_boot": int(n_boot), "note": ""}
    if n < 2 or not tools:
        return {**out, "note": "fewer than 2 identities" if n < 2 else f"no tool besides {baseline}"}
    diffs = _paired_diffs(restricted_queries(ds).mean("k"), model, keep, tools, baseline)
    records = xr.DataArray(np.stack([diffs[t] for t in tools]), dims=("tool", "sample"),
                           coords={"tool": tools, "identity": ("sample", ids)})

    def rule(rec: xr.DataArray) -> Verdict:
        uid = np.asarray(rec["identity"].values).astype(str)
        held, est = _decide_tools({t: rec.sel(tool=t).values for t in tools}, uid, margin, alpha, n_boot, seed)
        verdicts = [v[0] for v in held.values()]
        some = HOLDS if HOLDS in verdicts else REFUTED if all(v == REFUTED for v in verdicts) else INCONCLUSIVE
        lead = min(tools, key=lambda t: est[t])
        _v, lo, hi, _level = held[lead]
        return Verdict(claim, some, RULES["beats_random"], margin, est[lead], lo, hi, len(np.unique(uid)))

    out["power"] = simulated_power(records, rule, by="identity", n=n, n_sim=int(n_sim), seed=seed)
    out["power_2n"] = simulated_power(records, rule, by="identity", n=2 * n, n_sim=int(n_sim), seed=seed + 1)
    return {**out, "note": "identities resampled: at the estimated effect"}

def size_verdicts(ds: xr.Dataset, model_a: str, model_b: str, *, margin: float = 0.1, n_boot: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """Per tool: accuracy at two input sizes of one architecture with CIs, and "the size matters" (rule ``size``).

    Only pairs analysed by both models enter (the same pairs, segments from the same real images, the same NES seed).
    """
    margin = _check_margin(margin)
    for m in (model_a, model_b):
        if m not in ds["model"].values:
            raise ValueError(f"model={m!r}: not in the records; expected one of {list(map(str, ds['model'].values))}")
    w = _weights(ds, n_boot, seed)
    s = pair_score(ds)
    both = _analysed(ds).sel(model=model_a) & _analysed(ds).sel(model=model_b)
    n = int(both.values.sum())
    rows = []
    for t in ds["tool"].values:
        ba = _boot(s.sel(model=model_a, tool=t), both, w, seed)
        bb = _boot(s.sel(model=model_b, tool=t), both, w, seed)
        d = s.sel(model=model_a, tool=t) - s.sel(model=model_b, tool=t)
        bd = _boot(d, both, w, seed)
        est = float(bd["estimate"]) if n else np.nan
        lo, hi = _interval(est, float(bd["lo"]), float(bd["hi"]), d.values[both.values]) if n else (np.nan, np.nan)
        if n == 0 or not np.isfinite(est):
            v = "inconclusive"
        elif lo > margin or hi < -margin:
            v = "holds"
        elif -margin < lo and hi < margin:
            v = "refuted"
        else:
            v = "inconclusive"
        rows.append({"tool": str(t), f"acc {model_a}": float(ba["estimate"]), f"lo {model_a}": float(ba["lo"]),
                     f"hi {model_a}": float(ba["hi"]), f"acc {model_b}": float(bb["estimate"]),
                     f"lo {model_b}": float(bb["lo"]), f"hi {model_b}": float(bb["hi"]),
                     **_verdict_row(f"{t}: accuracy differs between {model_a} and {model_b}", "size", margin,
                                    est, lo, hi, n, v, _n_needed(n, lo, hi, margin, _degenerate(d.values[both.values]))
                                    if n else None)})
    return pd.DataFrame(rows)


def decide_table(*verdicts: pd.DataFrame) -> pd.DataFrame:
    """The "what this build can decide" table: claim, n, interval width, margin, verdict (from verdict tables)."""
    parts = [v for v in verdicts if v is not None and len(v)]
    if not parts:
        return pd.DataFrame(columns=["claim", "n", "interval width", "margin", "verdict", "n_needed"])
    df = pd.concat([p[VERDICT_COLUMNS] for p in parts], ignore_index=True)
    df["interval width"] = df["hi"] - df["lo"]
    return df[["claim", "n", "interval width", "margin", "verdict", "n_needed"]]


# ----------------------------------------------------------------------------- deletion / insertion contrast
def faithfulness_scores(ds: xr.Dataset) -> pd.DataFrame:
    """Per model × tool: attack score (1 − mean adversarial accuracy over k) and deletion/insertion AUCs."""
    ana = _analysed(ds)
    acc = adv_accuracy(ds).mean("k")
    out = xr.Dataset({"attack_score": 1 - acc, "deletion_auc": ds["deletion_auc"].where(ana).mean("pair"),
                      "insertion_auc": ds["insertion_auc"].where(ana).mean("pair")}).to_dataframe().reset_index()
    out["del_ins_score"] = out["insertion_auc"] - out["deletion_auc"]
    return out[["model", "tool", "attack_score", "deletion_auc", "insertion_auc", "del_ins_score"]]


def rank_agreement(ds: xr.Dataset) -> pd.DataFrame:
    """Kendall tau between the attack-based and the deletion/insertion-based rankings of tools, per model."""
    from scipy.stats import kendalltau

    sc = faithfulness_scores(ds)
    rows = []
    for model, sub in sc.groupby("model", sort=False):
        sub = sub.dropna(subset=["attack_score"])
        row = {"model": model, "n_tools": len(sub)}
        for col, sign in (("del_ins_score", 1), ("insertion_auc", 1), ("deletion_auc", -1)):
            name = "deletion" if col == "deletion_auc" else col
            res = kendalltau(sub["attack_score"], sign * sub[col]) if len(sub) > 1 else None
            row[f"tau_{name}"] = float(res.statistic) if res is not None else float("nan")
            row[f"p_{name}"] = float(res.pvalue) if res is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
