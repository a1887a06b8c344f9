"""Figures of the "Images vs videos" chapter: the video panels of Figure 1 (through the robustness
chapter's :func:`dfrobust.figures.robustness.figure1`), RR-vs-tolerance lines per data type, and
the shape deviation of RR from its chord (normalised tolerance) with bootstrap intervals. Every function returns a matplotlib Figure and never shows it."""

from __future__ import annotations

from . import colour, finish, palette
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from ..metrics.linearity import SHAPE_LABEL

#: colour per data type (pseudo-videos: the palette's third colour, no shared role)
COLORS = {**{k: colour(k) for k in ("image", "video_per_frame", "video_progressive")}, "video_pseudo": palette()[2]}
LABELS = {"image": "images", "video_per_frame": "video, per-frame attack",
          "video_progressive": "video, progressive attack", "video_pseudo": "pseudo-video, per-frame attack"}


def video_figure1(summary: xr.Dataset, *, level: str = "video", mode: str = "per_frame", reading: str = "b",
                  at: float, title: str | None = None) -> plt.Figure:
    """Figure 1 (RR and RA vs tolerance) for one level × mode of :func:`dfrobust.experiments.videos.ra_rr_summary`."""
    from .robustness import figure1

    for dim, v in (("level", level), ("mode", mode)):
        if dim in summary.dims and v not in summary[dim].values:
            raise ValueError(f"{dim}={v!r}: not in the summary; expected one of {list(summary[dim].values)}")
    s = summary.sel(level=level)
    if "mode" in s.dims:
        s = s.sel(mode=mode)
    ra_ci = xr.Dataset({"lo": s["RA_lo"], "hi": s["RA_hi"]})
    rr_ci = xr.Dataset({"lo": s["RR_lo"], "hi": s["RR_hi"]})
    return figure1(s["RA"], s["RR"], reading=reading, at=at, ra_ci=ra_ci, rr_ci=rr_ci,
                   title=title or f"{level} level, {mode.replace('_', '-')} attacks: RR (solid) and RA (dashed)")


def linearity_figure(lin: xr.Dataset, model: str | None = None, *, data_types=None) -> plt.Figure:
    """RR against the normalised tolerance (b/b₅₀, log₂ ε/ε₅₀; points) and its chord over the
    non-saturated part (dashed) per data type; rows = readings, columns = attacks; the legend gives
    the shape deviation and the scale t₅₀."""
    models = list(map(str, lin["model"].values))
    model = model or models[0]
    if model not in models:
        raise ValueError(f"model={model!r}: not in the linearity result; expected one of {models}")
    dts = [d for d in (data_types or lin["data_type"].values) if d in lin["data_type"].values]
    attacks = list(map(str, lin["attack"].values))
    readings = list(map(str, lin["reading"].values))
    fig, axes = plt.subplots(len(readings), len(attacks), figsize=(3.3 * len(attacks), 2.7 * len(readings)),
                             squeeze=False, constrained_layout=True)
    for i, r in enumerate(readings):
        for j, a in enumerate(attacks):
            ax = axes[i, j]
            for dt in dts:
                s = lin.sel(data_type=dt, model=model, attack=a, reading=r)
                x, y = s["tolerance"].values, s["rr"].values
                ok = np.isfinite(x) & np.isfinite(y)
                if not ok.any():
                    continue
                c = COLORS.get(str(dt), None)
                d, t50 = float(s["dev"]), float(s["t50"])
                lab = (f"{LABELS.get(str(dt), dt)} (dev {d:.3f}, t₅₀ {t50:.3g})" if np.isfinite(d)
                       else f"{LABELS.get(str(dt), dt)} (undefined)")
                ax.plot(x[ok], y[ok], "o-", ms=3, lw=0.6, color=c, label=lab)
                lo, hi = int(s["sat_lo"]), int(s["sat_hi"])
                if np.isfinite(d) and 0 <= lo < hi < len(x):
                    ax.plot([x[lo], x[hi]], [y[lo], y[hi]], "--", lw=1, color=c)
            ax.set_ylim(-0.03, 1.03)
            fixed = float(lin.sel(reading=r)["fixed"].isel(data_type=0))
            ax.set_title(f"{a.upper()} · " + (f"ε = {fixed:g}" if r == "b" else f"b = {fixed:g}"), fontsize=9)
            ax.set_xlabel(SHAPE_LABEL[r])
            if j == 0:
                ax.set_ylabel("RR")
            ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{model}: RR vs the normalised tolerance and the chord over the non-saturated part", fontsize=10)
    return finish(fig)


def deviation_figure(lin: xr.Dataset, *, ci: float = 0.95) -> plt.Figure:
    """Max deviation of RR from its chord with a percentile bootstrap interval of the defined
    resamples (the count of undefined ones in the tick label); rows = readings, columns = models,
    x = attack, colour = data type. Lower is straighter."""
    models = list(map(str, lin["model"].values))
    attacks = list(map(str, lin["attack"].values))
    readings = list(map(str, lin["reading"].values))
    dts = list(map(str, lin["data_type"].values))
    q = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    fig, axes = plt.subplots(len(readings), len(models), figsize=(3.2 * len(models), 2.6 * len(readings)),
                             squeeze=False, sharey=True, constrained_layout=True)
    width = 0.8 / max(len(dts), 1)
    for i, r in enumerate(readings):
        for j, m in enumerate(models):
            ax = axes[i, j]
            for k, dt in enumerate(dts):
                s = lin.sel(data_type=dt, model=m, reading=r)
                x = np.arange(len(attacks)) + (k - (len(dts) - 1) / 2) * width
                est = s["dev"].sel(attack=attacks).values
                boots = s["dev_boot"].sel(attack=attacks).transpose("attack", "boot").values
                lo = np.array([np.nanquantile(b, q[0]) if np.isfinite(b).any() else np.nan for b in boots])
                hi = np.array([np.nanquantile(b, q[1]) if np.isfinite(b).any() else np.nan for b in boots])
                err = np.vstack([np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)])
                ax.errorbar(x, est, yerr=np.nan_to_num(err), fmt="o", ms=4, capsize=2,
                            color=COLORS.get(dt), label=LABELS.get(dt, dt))
            und = lin["n_undefined"].sel(model=m, reading=r).sum("data_type").sel(attack=attacks).values
            ax.set_xticks(range(len(attacks)), [f"{a.upper()}\n{int(u)} undef." for a, u in zip(attacks, und)],
                          fontsize=7)
            ax.set_ylim(bottom=0)
            ax.set_title(f"{m} · tolerance {'b' if r == 'b' else 'ε'}", fontsize=9)
            if j == 0:
                ax.set_ylabel("shape deviation")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"How far is the normalised RR curve from a straight line? {ci:.0%} bootstrap interval",
                 fontsize=10)
    return finish(fig)




def chapter_figures(chapter) -> dict[str, plt.Figure]:
    """The chapter's figures from a :class:`dfrobust.experiments.videos.VideoResult`, named as its page
    quotes them (``fig1_<mode>``, ``lin_fig``, ``dev_fig``); a stand-in that says why when no detector
    passed the quality gate."""
    from . import not_analysed

    why = "no detector passed the quality gate"
    figs = {f"fig1_{m}": (video_figure1(chapter.summary, level="video", mode=m, reading="b", at=chapter.eps_ref)
                          if chapter.summary is not None else not_analysed(why)) for m in chapter.modes}
    lin = chapter.linearity
    figs["lin_fig"] = linearity_figure(lin, chapter.analysed[0]) if lin is not None else not_analysed(why)
    figs["dev_fig"] = deviation_figure(lin) if lin is not None else not_analysed(why)
    return figs
