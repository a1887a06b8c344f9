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

Verdicts use the study's vocabulary (claim, verdict, rule, margin, estimate, lo, hi, n, n_needed;
verdict ∈ holds / refuted / inconclusive). A minimal version lives here until the shared
``metrics.verdicts`` lands; the rules are written in :data:`RULES` and shown on the page.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .bootstrap import bootstrap, bootstrap_weights

THRESHOLD = 0.5  # P(fake) ≥ THRESHOLD: classified fake
VERDICT_COLUMNS = ["claim", "verdict", "rule", "margin", "estimate", "lo", "hi", "n", "n_needed"]
RULES = {
    "beats_random": ("Δ = acc(tool) − acc(random) over the same pairs (mean over k; lower = more faithful), "
                     "paired bootstrap CI [lo, hi]: holds if hi < 0; refuted if lo > −margin "
                     "(any gain is smaller than the margin); else inconclusive — and inconclusive whenever the "
                     "attack fooled the detector on no pair for either the tool or random (nothing to compare)"),
    "best_tool": ("the tool with the lowest accuracy is 'best' only if it beats random and the paired CI of "
                  "its difference to every other tool lies below 0; else 'tie' (tools not separated) or "
                  "'no tool beats random'"),
    "size": ("Δ = acc(size a) − acc(size b) per tool over pairs analysed at both sizes, paired bootstrap CI: "
             "holds (the size matters) if the CI excludes 0; refuted if it lies inside (−margin, margin); "
             "else inconclusive"),
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


# ----------------------------------------------------------------------------- verdicts
def _verdict_row(claim: str, rule_key: str, margin: float, est: float, lo: float, hi: float, n: int,
                 verdict: str, degenerate: bool = False) -> dict:
    return {"claim": claim, "verdict": verdict, "rule": RULES[rule_key], "margin": float(margin),
            "estimate": float(est), "lo": float(lo), "hi": float(hi), "n": int(n),
            "n_needed": _n_needed(n, lo, hi, margin, degenerate)}


def _degenerate(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return bool(len(v) and np.all(v == v[0]))


def _check_margin(margin: float) -> float:
    if not (isinstance(margin, (int, float)) and 0 < float(margin) < 1):
        raise ValueError(f"margin={margin!r}: expected an accuracy difference in (0, 1)")
    return float(margin)


def _paired_diffs(ds: xr.Dataset, model, tools: Sequence[str], base: str, w: np.ndarray, seed: int):
    """Paired bootstrap of pair_score(tool) − pair_score(base) for each tool, on the model's analysed pairs."""
    s = pair_score(ds).sel(model=model)
    ana = _analysed(ds).sel(model=model)
    out = {}
    for t in tools:
        d = s.sel(tool=t) - s.sel(tool=base)
        b = _boot(d, ana, w, seed)
        vals = d.values[ana.values]
        est = float(b["estimate"])
        lo, hi = _interval(est, float(b["lo"]), float(b["hi"]), vals)
        out[t] = (est, lo, hi, int(ana.values.sum()), _degenerate(vals))
    return out


def tool_verdicts(ds: xr.Dataset, *, margin: float = 0.1, baseline: str = "random", n_boot: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """Per model × tool: "the tool beats random" as holds / refuted / inconclusive (rule ``beats_random``)."""
    margin = _check_margin(margin)
    tools = [str(t) for t in ds["tool"].values if str(t) != baseline]
    if baseline not in ds["tool"].values:
        raise ValueError(f"baseline={baseline!r}: not among the tools {list(map(str, ds['tool'].values))}")
    w = _weights(ds, n_boot, seed)
    score = pair_score(ds)
    ana = _analysed(ds)
    rows = []
    for m in ds["model"].values:
        keep = ana.sel(model=m).values
        never = lambda t: bool(np.all(score.sel(model=m, tool=t).values[keep] == 1.0))  # noqa: E731
        for t, (est, lo, hi, n, dg) in _paired_diffs(ds, m, tools, baseline, w, seed).items():
            if n == 0 or not np.isfinite(est) or (never(t) and never(baseline)):
                v = "inconclusive"
            elif hi < 0:
                v = "holds"
            elif lo > -margin:
                v = "refuted"
            else:
                v = "inconclusive"
            rows.append({"model": str(m), "tool": t,
                         **_verdict_row(f"{t} beats {baseline} on {m}", "beats_random", margin, est, lo, hi, n, v, dg)})
    return pd.DataFrame(rows, columns=["model", "tool", *VERDICT_COLUMNS])


def best_tool(ds: xr.Dataset, *, margin: float = 0.1, baseline: str = "random", n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Per model: the best tool, "tie" or "no tool beats random" (rule ``best_tool``), never a bare argmin.

    Columns: model, best, tied (the tools not separated from the lowest-accuracy one), and the
    verdict columns of the claim "one tool is the most faithful" (estimate/lo/hi: the best tool's
    difference to its closest rival; holds only when a best tool exists).
    """
    margin = _check_margin(margin)
    beats = tool_verdicts(ds, margin=margin, baseline=baseline, n_boot=n_boot, seed=seed)
    w = _weights(ds, n_boot, seed)
    acc = pair_score(ds).where(_analysed(ds)).mean("pair")
    rows = []
    for m in ds["model"].values:
        bm = beats[beats.model == str(m)]
        winners = bm[bm.verdict == "holds"]["tool"].tolist()
        tools = bm["tool"].tolist()
        n = int(_analysed(ds).sel(model=m).values.sum())
        claim = f"one tool is the most faithful on {m}"
        if not winners:
            rows.append({"model": str(m), "best": f"no tool beats {baseline}", "tied": "",
                         **_verdict_row(claim, "best_tool", margin, np.nan, np.nan, np.nan, n, "inconclusive")})
            continue
        a = acc.sel(model=m)
        lead = min(winners, key=lambda t: (float(a.sel(tool=t)), tools.index(t)))
        others = [t for t in tools if t != lead]
        diffs = _paired_diffs(ds, m, others, lead, w, seed)          # other − lead: > 0 when lead is better
        tied = [t for t, (_e, lo, _h, _n, _d) in diffs.items() if not lo > 0]
        if others:
            close = min(diffs, key=lambda t: diffs[t][1])
            est, lo, hi = (-diffs[close][0], -diffs[close][2], -diffs[close][1])   # lead − closest rival
        else:
            est, lo, hi = (np.nan, np.nan, np.nan)
        if tied:
            rows.append({"model": str(m), "best": "tie", "tied": ", ".join([lead, *tied]),
                         **_verdict_row(claim, "best_tool", margin, est, lo, hi, n, "inconclusive")})
        else:
            rows.append({"model": str(m), "best": lead, "tied": "",
                         **_verdict_row(claim, "best_tool", margin, est, lo, hi, n, "holds")})
    return pd.DataFrame(rows, columns=["model", "best", "tied", *VERDICT_COLUMNS])


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
        elif lo > 0 or hi < 0:
            v = "holds"
        elif -margin < lo and hi < margin:
            v = "refuted"
        else:
            v = "inconclusive"
        rows.append({"tool": str(t), f"acc {model_a}": float(ba["estimate"]), f"lo {model_a}": float(ba["lo"]),
                     f"hi {model_a}": float(ba["hi"]), f"acc {model_b}": float(bb["estimate"]),
                     f"lo {model_b}": float(bb["lo"]), f"hi {model_b}": float(bb["hi"]),
                     **_verdict_row(f"{t}: accuracy differs between {model_a} and {model_b}", "size", margin,
                                    est, lo, hi, n, v, _degenerate(d.values[both.values]) if n else False)})
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
