"""Figures of the "RA vs RR" chapter: the paper's Figure 1 (both readings), operating-region maps,
per-group bars, the claim intervals against their margins, the tightening of one attack's RR bound
by another, the minimal-perturbation (CW-L2) distribution and curves, and a placeholder for detectors that
were not analysed. Inputs are reductions from :mod:`dfrobust.metrics` (DataArrays/Datasets with
model, attack, eps, b dims); every function returns a matplotlib Figure and never shows it."""

from __future__ import annotations

from . import colour, finish, SEQUENTIAL
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

RR_COLOR, RA_COLOR = colour("RR"), colour("RA")


def _grid(models, attacks, *, w=3.3, h=2.6, sharex=True):
    fig, axes = plt.subplots(len(models), len(attacks), figsize=(w * len(attacks), h * len(models)),
                             squeeze=False, sharex=sharex, constrained_layout=True)
    return fig, axes


def _log_eps_axis(ax, eps) -> None:
    """ε on a symmetric-log axis: linear through 0, logarithmic from the smallest radius > 0."""
    pos = np.asarray(eps, float)
    pos = pos[pos > 0]
    if pos.size >= 2 and pos.max() / pos.min() > 20:
        ax.set_xscale("symlog", linthresh=float(pos.min()), linscale=0.5)


def figure1(ra: xr.DataArray, rr: xr.DataArray, *, reading: str = "b", at: float,
            ra_ci: xr.Dataset | None = None, rr_ci: xr.Dataset | None = None,
            title: str | None = None) -> plt.Figure:
    """RR vs tolerance (left axis) with RA (right axis), one panel per model × attack.

    reading="b": tolerance is the bound b on |ΔP(ŷ)|, at the fixed radius ε=``at`` (RA is then
    flat in the tolerance). reading="eps": tolerance is the radius ε, at the fixed bound b=``at``.
    ``ra_ci``/``rr_ci``: bootstrap Datasets (lo, hi) of the same quantities, drawn as bands.
    """
    if reading not in ("b", "eps"):
        raise ValueError(f"reading={reading!r}: expected 'b' (tolerance = bound) or 'eps' (tolerance = radius)")
    fixed = "eps" if reading == "b" else "b"
    sel = {fixed: at}
    rr_ = rr.sel(sel, method="nearest")
    ra_ = ra.sel(eps=at, method="nearest") if reading == "b" else ra
    models, attacks = list(rr.model.values), list(rr.attack.values)
    fig, axes = _grid(models, attacks)
    xs = rr_[reading].values
    for i, m in enumerate(models):
        for j, a in enumerate(attacks):
            ax = axes[i, j]
            y = rr_.sel(model=m, attack=a).values
            ax.plot(xs, y, "-o", ms=3, color=RR_COLOR, label="RR")
            if rr_ci is not None:
                c = rr_ci.sel(sel, method="nearest").sel(model=m, attack=a)
                ax.fill_between(xs, c["lo"].values, c["hi"].values, color=RR_COLOR, alpha=0.2, lw=0)
            ax.set_ylim(-0.03, 1.03)
            ax2 = ax.twinx()
            ra_v = ra_.sel(model=m, attack=a).values
            ra_y = np.full_like(xs, float(ra_v), dtype=float) if np.ndim(ra_v) == 0 else ra_v
            ax2.plot(xs, ra_y, "--s", ms=3, color=RA_COLOR, label="RA")
            if ra_ci is not None:
                c = ra_ci.sel(model=m, attack=a)
                if reading == "b":
                    c = c.sel(eps=at, method="nearest")
                    lo, hi = np.full_like(xs, float(c["lo"]), dtype=float), np.full_like(xs, float(c["hi"]), dtype=float)
                else:
                    lo, hi = c["lo"].values, c["hi"].values
                ax2.fill_between(xs, lo, hi, color=RA_COLOR, alpha=0.15, lw=0)
            ax2.set_ylim(-0.03, 1.03)
            ax.set_title(f"{m} · {a.upper()}", fontsize=9)
            if reading == "eps":
                _log_eps_axis(ax, xs)
            if j == 0:
                ax.set_ylabel("RR", color=RR_COLOR)
            if j == len(attacks) - 1:
                ax2.set_ylabel("RA", color=RA_COLOR)
            else:
                ax2.set_yticklabels([])
            if i == len(models) - 1:
                ax.set_xlabel("tolerance b (bound on |ΔP(ŷ)|)" if reading == "b"
                              else "tolerance ε (L∞ radius, log scale)")
    label = f"ε = {float(rr_['eps']):.3g}" if reading == "b" else f"b = {float(rr_['b']):.3g}"
    fig.suptitle(title or f"RR (left, solid) and RA (right, dashed) vs tolerance; {label}", fontsize=10)
    return finish(fig)


def region_maps(rr: xr.DataArray, level: float) -> plt.Figure:
    """Heatmaps of RR over (ε, b), one per model × attack, with the region RR >= ``level`` outlined."""
    models, attacks = list(rr.model.values), list(rr.attack.values)
    fig, axes = _grid(models, attacks, w=3.2, h=2.8, sharex=False)
    eps, b = rr.eps.values, rr.b.values
    im = None
    for i, m in enumerate(models):
        for j, a in enumerate(attacks):
            ax = axes[i, j]
            z = rr.sel(model=m, attack=a).transpose("eps", "b").values
            rows = np.arange(len(eps))  # one row per radius: the log-spaced grid reads evenly
            im = ax.pcolormesh(b, rows, z, vmin=0, vmax=1, cmap=SEQUENTIAL, shading="nearest")
            if len(eps) > 1 and len(b) > 1 and z.min() < level <= z.max():
                ax.contour(b, rows, z, levels=[level], colors="white", linewidths=1.5)
            ax.set_yticks(rows)
            ax.set_yticklabels([f"{e:.3g}" for e in eps], fontsize=7)
            ax.set_title(f"{m} · {a.upper()}", fontsize=9)
            if j == 0:
                ax.set_ylabel("ε (one row per radius)")
            if i == len(models) - 1:
                ax.set_xlabel("b (bound on |ΔP(ŷ)|)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="RR")
    fig.suptitle(f"RR over (ε, b); white line: RR = {level:g}; the operating region RR >= {level:g} "
                 "lies below/right of it (small ε, large b)", fontsize=9)
    return finish(fig)


def group_bars(table: pd.DataFrame, *, value: str = "value") -> plt.Figure:
    """Bars of RA and RR per demographic group: ``table`` has columns model, attack, group, metric, value
    (and optionally lo, hi for CI whiskers)."""
    import seaborn as sns

    metrics_ = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(1, len(metrics_), figsize=(5.5 * len(metrics_), 3.6), squeeze=False,
                             constrained_layout=True)
    t = table.assign(model_attack=table["model"] + " · " + table["attack"].str.upper())
    for ax, met in zip(axes[0], metrics_):
        sub = t[t["metric"] == met]
        sns.barplot(data=sub, x="group", y=value, hue="model_attack", ax=ax, errorbar=None)
        if {"lo", "hi"} <= set(sub.columns):
            # whiskers at the bar centres, in seaborn's hue order
            for cont, (_, s) in zip(ax.containers, sub.groupby("model_attack", sort=False)):
                centers = [bar.get_x() + bar.get_width() / 2 for bar in cont]
                s = s.set_index("group").reindex([tk.get_text() for tk in ax.get_xticklabels()])
                ax.errorbar(centers, s[value], yerr=[s[value] - s["lo"], s["hi"] - s[value]],
                            fmt="none", ecolor="k", lw=0.8, capsize=2)
        ax.set_ylim(0, 1.05)
        ax.set_title(met)
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=7, loc="lower right")
    return finish(fig)


VERDICT_COLORS = {v: colour(v) for v in ("holds", "refuted", "inconclusive")}


def claim_intervals(table: pd.DataFrame, *, margin: float, value: str = "RR_diff", lo: str = "RR_lo",
                    hi: str = "RR_hi", label: str = "RR difference (simultaneous band)") -> plt.Figure:
    """Each comparison's interval against ±``margin``, coloured by its verdict (one row each).

    ``table``: rows of :func:`dfrobust.experiments.robustness.claim_table` (attack, model_a,
    model_b, verdict and the ``value``/``lo``/``hi`` columns)."""
    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.32 * max(len(t), 1)), constrained_layout=True)
    ax.axvspan(-margin, margin, color="0.9", zorder=0, label=f"±margin {margin:g}")
    ax.axvline(0, color="k", lw=0.8)
    for i, r in t.iterrows():
        c = VERDICT_COLORS.get(r["verdict"], "k")
        if np.isfinite(r[lo]) and np.isfinite(r[hi]):
            ax.plot([r[lo], r[hi]], [i, i], color=c, lw=2.5)
            ax.plot([r[value]], [i], "o", color=c, ms=4)
        else:
            ax.text(0, i, "no compared radius", ha="center", va="center", fontsize=7, color=c)
    ax.set_yticks(range(len(t)))
    ax.set_yticklabels([f"{r['attack'].upper()}: {r['model_a']} − {r['model_b']} ({r['verdict']})"
                        for _, r in t.iterrows()], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    for k, c in VERDICT_COLORS.items():
        ax.plot([], [], color=c, lw=2.5, label=k)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return finish(fig)


def tightening(table: pd.DataFrame, *, b: float) -> plt.Figure:
    """RR(loose) − RR(tight) against ε at bound ``b``, one panel per model, with the paired band.

    ``table``: :func:`dfrobust.experiments.robustness.tightening_table` rows (model, loose, tight,
    eps, b, tightening, lo, hi). Above 0: the tight attack lowered the loose one's RR upper bound."""
    t = table[np.isclose(table["b"], b)]
    models = list(dict.fromkeys(t["model"]))
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(3.4 * max(len(models), 1), 2.8), squeeze=False,
                             sharey=True, constrained_layout=True)
    names = {"rr": "RR attack", "pgd": "PGD-CE", "worst": "worst case"}
    loose = names.get(str(t["loose"].iloc[0]), str(t["loose"].iloc[0]).upper()) if len(t) else "?"
    tight = names.get(str(t["tight"].iloc[0]), str(t["tight"].iloc[0]).upper()) if len(t) else "?"
    for ax, m in zip(axes[0], models):
        s = t[t["model"] == m].sort_values("eps")
        ax.axhline(0, color="k", lw=0.8)
        ax.fill_between(s["eps"], s["lo"], s["hi"], color=RR_COLOR, alpha=0.2, lw=0)
        ax.plot(s["eps"], s["tightening"], "-o", ms=3, color=RR_COLOR)
        if len(s) >= 2 and s["eps"].max() / s["eps"].min() > 20:
            ax.set_xscale("log")
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("ε (L∞ radius, log scale)")
    axes[0, 0].set_ylabel(f"RR({loose}) − RR({tight})")
    fig.suptitle(f"How much the {tight} lowers {loose}'s RR upper bound at b = {b:.3g} (95 % paired band)"
                 if tight == "RR attack" else f"How much {tight} lowers {loose}'s RR upper bound at b = {b:.3g} "
                 "(95 % paired band)", fontsize=9)
    return finish(fig)


def minimal_distribution(minimal: xr.Dataset) -> plt.Figure:
    """Cumulative share of samples whose prediction CW-L2 flipped within ||δ||₂ <= r, per detector
    (an ECDF over all samples: it ends below 1 when some were never flipped), with ticks at each
    sample's minimal ||δ||₂."""
    models = [str(m) for m in minimal.model.values]
    fig, ax = plt.subplots(figsize=(6.0, 3.2), constrained_layout=True)
    top = 0.0
    for i, m in enumerate(models):
        v = np.asarray(minimal["l2_min"].sel(model=m).values, float)
        f = np.sort(v[np.isfinite(v)])
        n = v.size
        col = f"C{i}"
        if f.size:
            top = max(top, float(f.max()))
            ax.step(np.r_[0.0, f], np.r_[0.0, np.arange(1, f.size + 1) / n], where="post", color=col,
                    label=f"{m} ({f.size}/{n} flipped)")
            ax.plot(f, np.full(f.size, -0.04 - 0.03 * i), "|", color=col, ms=6)
        else:
            ax.plot([], [], color=col, label=f"{m} (0/{n} flipped)")
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xlim(0, top * 1.05 if top > 0 else 1.0)
    ax.set_ylim(-0.05 - 0.03 * len(models), 1.02)
    ax.set_xlabel("minimal ||δ||₂ found by CW-L2 (pixel scale [0, 1])")
    ax.set_ylabel("share of samples flipped within r")
    ax.legend(fontsize=7, loc="lower right")
    return finish(fig)


def _banded_panels(df: pd.DataFrame, facet: str, keys: list, x: str, y: str, *, step: bool, log: bool,
                   title, xlabel, width: float) -> tuple[plt.Figure, np.ndarray]:
    """One panel per ``facet`` value in ``keys`` (shared y in [0, 1]), one line per detector (``model``, in the
    rows' order) of ``y`` against ``x`` with its 95 % band (``lo``, ``hi``): a post-step or a marked line,
    ``title(key, rows)`` and ``xlabel(key)`` per panel. The callers add the y label and the legend."""
    fig, axes = plt.subplots(1, len(keys), figsize=(width * len(keys), 3.1), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, key in zip(axes[0], keys):
        sub = df[df[facet] == key]
        for i, (m, t) in enumerate(sub.groupby("model", sort=False)):
            t = t.sort_values(x)
            ax.fill_between(t[x], t["lo"], t["hi"], color=f"C{i}", alpha=0.15, lw=0, step="post" if step else None)
            if step:
                ax.step(t[x], t[y], where="post", color=f"C{i}", label=m)
            else:
                ax.plot(t[x], t[y], "o-", color=f"C{i}", ms=3, label=m)
        if log:
            ax.set_xscale("log")
        ax.set_title(title(key, sub), fontsize=9)
        ax.set_xlabel(xlabel(key))
        ax.set_ylim(-0.03, 1.03)
    return fig, axes


def minimal_curves(curves: pd.DataFrame) -> plt.Figure:
    """RA(r) and RR(r, b) against the L2 radius r, from the minimal records, one panel per metric,
    one line (with its 95 % band) per detector. ``curves``: rows of
    :func:`dfrobust.experiments.robustness.minimal_curves`."""
    mets = [m for m in ("RA", "RR") if m in set(curves["metric"])]
    fig, axes = _banded_panels(
        curves, "metric", mets, "r", "value", step=True, log=False, width=4.2,
        title=lambda met, sub: "RA(r)" if met == "RA" else f"RR(r, b = {float(sub['b'].iloc[0]):.3g})",
        xlabel=lambda met: "L2 radius r (pixel scale [0, 1])")
    axes[0, 0].set_ylabel("share of samples (upper bound)")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    return finish(fig)


def radii_figure(radii: xr.Dataset, temperature: pd.DataFrame, *, b: float) -> plt.Figure:
    """Per detector: the cumulative share of samples whose critical radius (an upper bound) is at most r, for
    r_flip (left) and r_b at bound ``b`` (middle), on a log radius axis up to the largest grid radius (a curve
    ending below 1: the rest met nothing up to it); right: RR(ε_ref, b) against the temperature T (log), the
    fitted T marked (``temperature``: :func:`dfrobust.experiments.radii.temperature_table`)."""
    models = [str(m) for m in radii.model.values]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2), constrained_layout=True)
    cap = float(radii["eps"].max())
    lo = float(radii["eps"].where(radii["eps"] > 0).min()) / 4
    for ax, var, title in ((axes[0], radii["r_flip_upper"], "r_flip: ŷ flips"),
                           (axes[1], radii["r_b_upper"].sel(b=b, method="nearest"), f"r_b: |ΔP(ŷ)| > {b:g}")):
        for i, m in enumerate(models):
            v = np.asarray(var.sel(model=m).values, float)
            f = np.sort(v[np.isfinite(v)])
            ax.step(np.r_[lo, f, cap], np.r_[0.0, np.arange(1, f.size + 1) / v.size, f.size / v.size], where="post",
                    color=f"C{i}", label=m)
        ax.set_xscale("log")
        ax.set_xlim(lo, cap * 1.05)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("L∞ radius r (an upper bound)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("share of samples with radius ≤ r")
    axes[0].legend(fontsize=7, loc="upper left")
    ax = axes[2]
    for i, m in enumerate(models):
        t = temperature[temperature["model"] == m].sort_values("T")
        ax.plot(t["T"], t["RR"], "o-", color=f"C{i}", label=m, ms=3)
        f = t[t["fitted"]]
        ax.plot(f["T"], f["RR"], "*", color=f"C{i}", ms=11)
    ax.set_xscale("log")
    ts = sorted(set(temperature["T"].round(2)))
    ax.set_xticks(ts, [f"{t:g}" for t in ts], minor=False)
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("temperature T (★ fitted on validation)")
    ax.set_ylabel(f"RR at ε_ref, b = {b:g} (RA unchanged)")
    return finish(fig)


def rr_norms_figure(rr: pd.DataFrame) -> plt.Figure:
    """RR(ε, b) against the radius, one panel per norm (L∞ left, L2 right, log radius axis), one line with its
    95 % band per detector: an attack-based upper bound each (``rr``: :func:`dfrobust.experiments.radii.l2_section`'s
    table, rows model, norm, eps, b, RR, lo, hi)."""
    norms = [n for n in ("L∞", "L2") if n in set(rr["norm"])]
    fig, axes = _banded_panels(
        rr, "norm", norms, "eps", "RR", step=False, log=True, width=4.4,
        title=lambda nm, sub: f"RR_{nm}(ε, b = {float(sub['b'].iloc[0]):g}), an upper bound",
        xlabel=lambda nm: f"{nm} radius ε (pixel scale [0, 1])")
    axes[0, 0].set_ylabel("RR (attack-based upper bound)")
    axes[0, -1].legend(fontsize=7, loc="lower left")
    return finish(fig)


def reliability_figure(rel: xr.Dataset) -> plt.Figure:
    """Each detector's reliability diagram on the validation images, one panel per detector: per confidence
    bin, the share predicted correctly against the mean confidence max(P, 1 − P), at T = 1 and at the fitted
    temperature (marker area ∝ images in the bin; the dotted diagonal is perfect calibration), with each
    reading's ECE in the legend. ``rel``: :func:`dfrobust.metrics.calibration.reliability`."""
    models = [str(m) for m in rel["model"].values]
    fig, axes = plt.subplots(1, len(models), figsize=(max(3.3 * len(models), 5.0), 3.6), squeeze=False,
                             sharey=True, constrained_layout=True)
    lo = float(rel["lo"].min())
    styles = {"T = 1": ("o-", "0.45"), "fitted T": ("s-", RR_COLOR)}
    for ax, m in zip(axes[0], models):
        ax.plot([lo, 1], [lo, 1], ":", color="k", lw=0.8)
        for sc in rel["scaling"].values.tolist():
            r = rel.sel(model=m, scaling=sc)
            ok = np.asarray(r["n"].values) > 0
            mk, col = styles.get(sc, ("^-", "C2"))
            lab = "T = 1" if sc == "T = 1" else f"fitted T = {float(r['temperature']):.3g}"
            ax.plot(r["confidence"].values[ok], r["accuracy"].values[ok], mk[1:], color=col, lw=1,
                    label=f"{lab}: ECE {float(r['ece']):.3f}")
            ax.scatter(r["confidence"].values[ok], r["accuracy"].values[ok], marker=mk[0], color=col, zorder=3,
                       s=12 + 120 * np.sqrt(r["n"].values[ok] / max(int(r["n"].sum()), 1)))
        ax.set_xlim(lo - 0.01, 1.01)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("confidence max(P, 1 − P) (bin mean)")
        ax.legend(fontsize=7, loc="lower right")
    axes[0, 0].set_ylabel("accuracy in the bin")
    fig.suptitle(f"Reliability on {int(rel.attrs.get('n_val', 0))} validation images, {int(rel.attrs.get('n_bins', 0))} "
                 "confidence bins\n(below the diagonal: overconfident)", fontsize=9)
    return finish(fig)


def chapter_result(data, analysis, minimal, *, p, decide: pd.DataFrame, radii=None, l2=None, calibration=None,
                   **values):
    """Chapter 03's one ChapterResult: the values and tables of its sections (``data``: the
    ChapterResult of :func:`dfrobust.experiments.robustness.evaluation_set`; ``analysis``:
    :func:`~dfrobust.experiments.robustness.analyse`; ``minimal``:
    :func:`~dfrobust.experiments.robustness.minimal_section`), every figure of the page, and the
    decide table as HTML under ``decide_table`` (the name the landing page quotes). ``values``: more
    quoted values (timings). ``radii``: :func:`dfrobust.experiments.radii.radii_section` (its values, tables and
    figure ``radii_fig``), or None; ``l2``: :func:`dfrobust.experiments.radii.l2_section` (figure ``l2_fig``), or
    None; ``calibration``: :func:`~dfrobust.experiments.robustness.calibration_section` (its values, tables and
    figure ``reliability_fig``), or None."""
    from ..core.results import ChapterResult
    from . import decide_html, not_analysed

    a = analysis
    none = lambda: not_analysed("no detector passed the quality gate: nothing to attack")
    eps_ref, b_ref, t = p["eps_ref"], p["b_ref"], a.result.tables
    figs = {"fig1_b": figure1(a.ra, a.rr, reading="b", at=eps_ref, ra_ci=a.ra_ci, rr_ci=a.rr_ci) if a.rr is not None
            else none(),
            "fig1_eps": figure1(a.ra, a.rr, reading="eps", at=b_ref, ra_ci=a.ra_ci, rr_ci=a.rr_ci) if a.rr is not None
            else none(),
            "region_fig": region_maps(a.rr, p["params"]["rr_level"]) if a.rr is not None else none(),
            "group_fig": group_bars(t["groups"]) if len(t.get("groups", ())) else
            none() if a.rr is None else not_analysed("no demographic groups in this data: no per-group table"),
            "claim_fig": claim_intervals(t["claims"], margin=a.result.values["rr_margin"]) if len(t.get("claims", ()))
            else not_analysed("fewer than two detectors analysed: no pair to compare"),
            "tight_fig": tightening(t["tightening"], b=b_ref) if "tightening" in t else
            none() if a.rr is None else not_analysed("the sweep lacks pgd or rr: no tightening to show"),
            "cw_fig_dist": minimal_distribution(minimal.records) if minimal.records is not None else none(),
            "cw_fig_curves": minimal_curves(minimal.curves) if minimal.records is not None else none()}
    from IPython.display import Markdown

    r_vals, r_tabs = (radii.result.values, radii.result.tables) if radii is not None else ({}, {})
    if radii is not None:
        figs["radii_fig"] = radii_figure(radii.records, r_tabs["radii_temperature"], b=b_ref) \
            if radii.records is not None else none()
    l_vals, l_tabs = (l2.result.values, l2.result.tables) if l2 is not None else ({}, {})
    if l2 is not None:
        figs["l2_fig"] = rr_norms_figure(l2.rr) if l2.rr is not None else none()
    c_vals, c_tabs = (calibration.result.values, calibration.result.tables) if calibration is not None else ({}, {})
    if calibration is not None:
        figs["reliability_fig"] = reliability_figure(calibration.reliability) if calibration.reliability is not None \
            else none() if radii is None or radii.records is None else \
            not_analysed("no validation images: no temperature fitted, no reliability diagram")
        c_vals = {**c_vals, "cal_sentence": Markdown(c_vals["cal_sentence"])}
    vals = {**data.values, **a.result.values, **minimal.result.values, **r_vals, **l_vals, **c_vals, **values}
    vals.update(answer=Markdown(vals["answer"]), decide_table=decide_html(decide))  # {glue:md}: Markdown bullets
    if "radii_answer" in vals:
        vals["radii_answer"] = Markdown(vals["radii_answer"])
    res = ChapterResult(values=vals,
                        tables={**data.tables, **a.result.tables, **minimal.result.tables, **r_tabs, **l_tabs,
                                **c_tabs, "decide": decide},
                        figures=figs)
    return res
