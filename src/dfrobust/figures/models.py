"""Figures of "The detectors" chapter: clean accuracy/AUC per subset, validation curves."""

from __future__ import annotations

from . import QUALITATIVE, finish
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

_KINDS = (("overall", "overall"), ("group", "per demographic group"), ("manipulation", "per manipulation"))


def clean_metrics(table: pd.DataFrame, data_label: str = "synthetic") -> plt.Figure:
    """Bars of accuracy (top row) and AUC (bottom row) per detector, overall / per group / per manipulation.

    ``table``: :func:`dfrobust.models.train.records_table` (columns model, subset, subset_kind,
    accuracy, auc). The chance level 0.5 is drawn as a dashed line.
    """
    need = {"model", "subset", "subset_kind", "accuracy", "auc"}
    if not need <= set(table.columns):
        raise ValueError(f"clean_metrics: table lacks {sorted(need - set(table.columns))}; "
                         "expected dfrobust.models.train.records_table(...)")
    kinds = [k for k in _KINDS if (table["subset_kind"] == k[0]).any()]
    widths = [max(1, table.loc[table["subset_kind"] == k, "subset"].nunique()) for k, _ in kinds]
    fig, axes = plt.subplots(2, len(kinds), figsize=(3 + 1.3 * sum(widths), 6.2), squeeze=False,
                             gridspec_kw={"width_ratios": widths}, sharey=True)
    order = list(dict.fromkeys(table["model"]))
    palette = dict(zip(order, sns.color_palette(QUALITATIVE, len(order))))
    for c, (kind, title) in enumerate(kinds):
        d = table[table["subset_kind"] == kind].copy()
        d["subset"] = d["subset"].str.replace("_", " ")
        for r, metric in enumerate(("accuracy", "auc")):
            ax = axes[r, c]
            sns.barplot(data=d, x="subset", y=metric, hue="model", hue_order=order, palette=palette, ax=ax)
            ax.axhline(0.5, color="grey", ls="--", lw=1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("")
            ax.set_ylabel({"accuracy": "clean accuracy", "auc": "ROC AUC"}[metric] if c == 0 else "")
            if r == 0:
                ax.set_title(title)
            ax.tick_params(axis="x", rotation=30 if kind != "overall" else 0)
            for t in ax.get_xticklabels():
                t.set_ha("right" if kind != "overall" else "center")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[m]) for m in order]
    fig.legend(handles, order, loc="upper center", ncol=len(order), frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"Clean test-split performance ({data_label} data)", y=1.05)
    fig.tight_layout()
    return finish(fig)


def validation_curves(trained: dict, data_label: str = "synthetic") -> plt.Figure:
    """Validation AUC per epoch for each detector; the kept (best) epoch is marked."""
    if not trained:
        raise ValueError("validation_curves: no trained detectors given")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colours = sns.color_palette(QUALITATIVE, len(trained))
    for colour, (name, td) in zip(colours, trained.items()):
        rec = td.record
        ep, auc = rec["epoch"].values, rec["val_auc"].values
        ax.plot(ep, auc, marker="o", color=colour, label=f"{name} ({td.input_size}px)")
        best = int(rec["best_epoch"])
        ax.plot([best], [auc[best - 1]], marker="*", ms=14, color=colour, mec="black")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ROC AUC")
    ax.set_ylim(0, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Early stopping on validation AUC ({data_label} data)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return finish(fig)


def metrics_table(table: pd.DataFrame) -> pd.DataFrame:
    """Wide table: rows = (subset kind, subset) in the order overall, groups, manipulations;
    columns = (metric, model)."""
    wide = table.pivot_table(index=["subset_kind", "subset"], columns="model", values=["accuracy", "auc"])
    rank = {k: i for i, (k, _) in enumerate(_KINDS)}
    order = sorted(wide.index, key=lambda ks: (rank.get(ks[0], len(rank)), ks[1]))
    models = list(dict.fromkeys(table["model"]))
    cols = [(m, name) for m in ("accuracy", "auc") for name in models]
    return wide.reindex(index=order, columns=cols).round(3)


def chapter_figures(result, trained: dict) -> dict[str, plt.Figure]:
    """The detectors chapter's figures from its result (``experiments.models.run``) and detectors:
    ``fig_metrics`` (clean accuracy and AUC), ``fig_curves`` (validation AUC per epoch)."""
    label = result.values["data_label"]
    return {"fig_metrics": finish(clean_metrics(result.tables["metrics"], label)),
            "fig_curves": finish(validation_curves(trained, label))}
