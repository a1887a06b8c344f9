"""Figures of the "XAI-guided attacks" chapter. Inputs are reductions from :mod:`dfrobust.experiments.xai` and :mod:`dfrobust.metrics.faithfulness`
(tidy DataFrames) or a gallery Dataset from :func:`dfrobust.experiments.xai.run_xai`; every function returns a
matplotlib Figure and never shows it."""

from __future__ import annotations

from . import colour, finish, palette, QUALITATIVE, SEQUENTIAL
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

TOOL_ORDER = ("gradcam", "lime", "rise", "sobol", "xrai", "random")


def _palette(tools):
    colors = dict(zip(TOOL_ORDER, palette(len(TOOL_ORDER))))
    colors["random"] = colour("random")
    return {t: colors.get(t, "k") for t in tools}


def accuracy_vs_k(table: pd.DataFrame, *, title: str | None = None) -> plt.Figure:
    """Accuracy on adversarial fakes vs number of attacked segments k, one panel per model, CI bars."""
    models = list(dict.fromkeys(table["model"]))
    tools = [t for t in TOOL_ORDER if t in set(table["tool"])] + sorted(set(table["tool"]) - set(TOOL_ORDER))
    pal = _palette(tools)
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.0), squeeze=False,
                             sharey=True, constrained_layout=True)
    for ax, model in zip(axes[0], models):
        sub = table[table["model"] == model]
        for tool in tools:
            t = sub[sub["tool"] == tool].sort_values("k")
            ax.errorbar(t["k"], t["adv_acc"], yerr=[t["adv_acc"] - t["ci_low"], t["ci_high"] - t["adv_acc"]],
                        marker="o", ms=3, capsize=2, lw=1.2, color=pal[tool], label=tool,
                        ls="--" if tool == "random" else "-")
        ax.axhline(sub["clean_acc"].iloc[0], color="k", lw=0.8, ls=":", label="clean")
        ax.set(title=model, xlabel="top-k segments attacked", ylim=(-0.05, 1.05))
        ax.set_xticks(sorted(sub["k"].unique()))
    axes[0, 0].set_ylabel("accuracy on adversarial fakes")
    axes[0, -1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return finish(fig)


def time_bars(times: pd.DataFrame) -> plt.Figure:
    """Explanation and attack wall time per image (log scale), per tool, one row of bars per model."""
    long = times.melt(id_vars=["model", "tool"], value_vars=["explain_s", "attack_s"],
                      var_name="stage", value_name="seconds")
    long["stage"] = long["stage"].map({"explain_s": "explanation", "attack_s": "NES attack (mean over k)"})
    g = sns.catplot(data=long, x="seconds", y="tool", hue="stage", col="model", kind="bar",
                    height=2.8, aspect=1.1, sharex=True, palette=QUALITATIVE)
    for ax in g.axes.flat:
        ax.set_xscale("log")
    g.set_axis_labels("seconds per image (log)", "")
    return finish(g.figure)


def faithfulness_scatter(scores: pd.DataFrame) -> plt.Figure:
    """Attack-based score (1 − adversarial accuracy) vs deletion/insertion score, per model."""
    models = list(dict.fromkeys(scores["model"]))
    pal = _palette(list(dict.fromkeys(scores["tool"])))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.0), squeeze=False,
                             constrained_layout=True)
    for ax, model in zip(axes[0], models):
        sub = scores[scores["model"] == model]
        for _, r in sub.iterrows():
            ax.scatter(r["del_ins_score"], r["attack_score"], color=pal[r["tool"]], s=30)
            ax.annotate(r["tool"], (r["del_ins_score"], r["attack_score"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set(title=model, xlabel="insertion − deletion AUC", ylabel="1 − accuracy on adv. fakes")
    return finish(fig)


def gallery(g: xr.Dataset, *, k: int, tools=None, max_pairs: int = 2) -> plt.Figure:
    """Per pair: real image, fake, and for each tool its attribution on the real image with the
    top-k segments outlined, then the adversarial fake's perturbation (amplified)."""
    from skimage.segmentation import find_boundaries

    tools = list(tools or g["tool"].values)
    pairs = list(g["pair"].values)[:max_pairs]
    ncol = 2 + 2 * len(tools)
    fig, axes = plt.subplots(len(pairs), ncol, figsize=(1.35 * ncol, 1.45 * len(pairs) + 0.3),
                             squeeze=False, constrained_layout=True)
    for r, pid in enumerate(pairs):
        real = g["real"].sel(pair=pid).values.transpose(1, 2, 0)
        fake = g["fake"].sel(pair=pid).values.transpose(1, 2, 0)
        axes[r, 0].imshow(real)
        axes[r, 1].imshow(fake)
        axes[r, 0].set_title("real" if r == 0 else "", fontsize=7)
        axes[r, 1].set_title("fake" if r == 0 else "", fontsize=7)
        for j, tool in enumerate(tools):
            att = g["attribution"].sel(tool=tool, pair=pid).values
            mask = g["mask"].sel(tool=tool, k=k, pair=pid).values.astype(bool)
            adv = g["adv"].sel(tool=tool, k=k, pair=pid).values.transpose(1, 2, 0)
            ax = axes[r, 2 + 2 * j]
            ax.imshow(real)
            ax.imshow(att, cmap=SEQUENTIAL, alpha=0.5)
            edge = find_boundaries(mask, mode="outer")
            ax.imshow(np.ma.masked_where(~edge, edge), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{tool}" if r == 0 else "", fontsize=7)
            delta = np.abs(adv - fake).sum(-1)
            ax2 = axes[r, 3 + 2 * j]
            ax2.imshow(delta / max(delta.max(), 1e-8), cmap="magma")
            ax2.set_title(f"|δ| k={k}" if r == 0 else "", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return finish(fig)




def chapter_figures(result, galleries: dict | None, *, k: int, tools) -> dict:
    """The chapter's figures from its :class:`~dfrobust.core.results.ChapterResult` (tables ``accuracy``,
    ``times``, ``scores``) and the run's gallery: ``fig_acc``, ``fig_time``, ``fig_faith``, ``fig_gallery``;
    a "not analysed" panel for each one the build has nothing for."""
    from . import not_analysed

    t, label = result.tables, result.values.get("data", "")
    if "accuracy" not in t:
        return {name: not_analysed("not analysed: no detector passed the gate and the protocol")
                for name in ("fig_acc", "fig_time", "fig_faith", "fig_gallery")}
    return {"fig_acc": accuracy_vs_k(t["accuracy"], title=f"{label} data"), "fig_time": time_bars(t["times"]),
            "fig_faith": faithfulness_scatter(t["scores"]),
            "fig_gallery": gallery(next(iter(galleries.values())), k=k, tools=tools) if galleries else not_analysed()}
