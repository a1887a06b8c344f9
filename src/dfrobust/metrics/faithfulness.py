"""Faithfulness of explanations as reductions of XAI attack records (dims model, tool, k, pair).

The adversarial accuracy of the detector on fakes attacked inside a tool's top-k segments
(Gowrisankar & Thing, 2023: the lower, the more faithful the ranking), with bootstrap CIs over
pairs, the deletion/insertion scores (Petsiuk et al., 2018) and the Kendall τ between the two
rankings of tools. Nothing here runs a model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr


# ----------------------------------------------------------------------------- reductions
def adv_accuracy(ds: xr.Dataset, dim: str | Sequence[str] = "pair") -> xr.DataArray:
    """Accuracy on the adversarial fakes (fraction still classified fake, P(fake) > 0.5)."""
    return (ds["p_fake_adv"] > 0.5).mean(dim).rename("adv_accuracy")



def clean_accuracy(ds: xr.Dataset, dim: str | Sequence[str] = "pair") -> xr.DataArray:
    """Accuracy on the clean fakes of the same pairs."""
    return (ds["p_fake_clean"] > 0.5).mean(dim).rename("clean_accuracy")



def bootstrap_ci(values: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of 1-D ``values`` (``scipy.stats.bootstrap``)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.all(values == values[0]):
        m = float(values.mean()) if len(values) else float("nan")
        return m, m
    res = bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=level,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)



def accuracy_table(ds: xr.Dataset, *, by: str | None = None, n_resamples: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """Tidy table: model, tool, k (and ``by``, e.g. ``dataset``), clean/adversarial accuracy with 95% CI."""
    rows = []
    groups = [(None, ds)] if by is None else list(ds.groupby(by))
    for gval, sub in groups:
        for model in sub["model"].values:
            clean = (sub["p_fake_clean"].sel(model=model).values > 0.5)
            for tool in sub["tool"].values:
                for k in sub["k"].values:
                    correct = sub["p_fake_adv"].sel(model=model, tool=tool, k=k).values > 0.5
                    lo, hi = bootstrap_ci(correct, n_resamples=n_resamples, seed=seed)
                    row = {"model": str(model), "tool": str(tool), "k": int(k), "n": int(correct.size),
                           "clean_acc": float(clean.mean()), "adv_acc": float(correct.mean()),
                           "ci_low": lo, "ci_high": hi,
                           "success_rate": float(sub["success"].sel(model=model, tool=tool, k=k).mean()),
                           "mean_queries": float(sub["queries"].sel(model=model, tool=tool, k=k).mean())}
                    if by is not None:
                        row[by] = gval
                    rows.append(row)
    return pd.DataFrame(rows)



def faithfulness_scores(ds: xr.Dataset) -> pd.DataFrame:
    """Per model × tool: attack score (1 − mean adversarial accuracy over k) and deletion/insertion AUCs."""
    acc = adv_accuracy(ds).mean("k")
    out = xr.Dataset({"attack_score": 1 - acc, "deletion_auc": ds["deletion_auc"].mean("pair"),
                      "insertion_auc": ds["insertion_auc"].mean("pair")}).to_dataframe().reset_index()
    out["del_ins_score"] = out["insertion_auc"] - out["deletion_auc"]
    return out[["model", "tool", "attack_score", "deletion_auc", "insertion_auc", "del_ins_score"]]



def rank_agreement(ds: xr.Dataset) -> pd.DataFrame:
    """Kendall tau between the attack-based and the deletion/insertion-based rankings of tools, per model."""
    from scipy.stats import kendalltau

    sc = faithfulness_scores(ds)
    rows = []
    for model, sub in sc.groupby("model", sort=False):
        row = {"model": model, "n_tools": len(sub)}
        for col in ("del_ins_score", "insertion_auc"):
            res = kendalltau(sub["attack_score"], sub[col]) if len(sub) > 1 else None
            row[f"tau_{col}"] = float(res.statistic) if res is not None else float("nan")
            row[f"p_{col}"] = float(res.pvalue) if res is not None else float("nan")
        res = kendalltau(sub["attack_score"], -sub["deletion_auc"]) if len(sub) > 1 else None
        row["tau_deletion"] = float(res.statistic) if res is not None else float("nan")
        row["p_deletion"] = float(res.pvalue) if res is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
