"""Figures of the "Certified Robust Ratio" chapter: the band RR_certified <= RR <= RR_attack.

Inputs are reductions: ``rr_cert`` from :func:`dfrobust.metrics.rr_certified` and ``rr_attack``
(the attack-based RR, worst case over the attacks run) with dims (model, eps, b). Every function
returns a matplotlib Figure and never shows it.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from . import colour, finish

CERT_COLOR, ATTACK_COLOR = colour("target"), colour("RR")  # certified lower bound, attack-based upper bound


def _check(rr_cert: xr.DataArray, rr_attack: xr.DataArray) -> None:
    for name, da in (("rr_cert", rr_cert), ("rr_attack", rr_attack)):
        if set(da.dims) != {"model", "eps", "b"}:
            raise ValueError(f"{name}: dims {da.dims}; expected (model, eps, b)")
    if list(rr_cert.model.values) != list(rr_attack.model.values):
        raise ValueError(f"models differ: {list(rr_cert.model.values)} vs {list(rr_attack.model.values)}")


def band(rr_cert: xr.DataArray, rr_attack: xr.DataArray, b_show: Sequence[float],
         data_label: str = "synthetic") -> plt.Figure:
    """RR against ε, one row per detector and one column per bound b: the certified lower bound
    (green), the attack-based upper bound (blue) and the band between them, where the formal RR lies."""
    _check(rr_cert, rr_attack)
    models = list(rr_cert.model.values)
    fig, axes = plt.subplots(len(models), len(b_show), figsize=(3.2 * len(b_show), 2.6 * len(models)),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    eps = rr_cert.eps.values
    for i, m in enumerate(models):
        for j, b in enumerate(b_show):
            ax = axes[i, j]
            lo = rr_cert.sel(model=m).sel(b=b, method="nearest").values
            hi = rr_attack.sel(model=m).sel(b=b, method="nearest").values
            ax.fill_between(eps, lo, hi, color="0.85", lw=0, label="formal RR lies here")
            ax.plot(eps, hi, "-o", ms=3, color=ATTACK_COLOR, label="RR attack (upper bound)")
            ax.plot(eps, lo, "-s", ms=3, color=CERT_COLOR, label="RR certified (lower bound)")
            ax.set_ylim(-0.03, 1.03)
            pos = eps[eps > 0]
            if len(pos) > 1 and pos.max() / pos.min() > 8:  # radii spanning decades: log scale past the first
                ax.set_xscale("symlog", linthresh=float(pos.min()))
            bb = float(rr_cert.b.sel(b=b, method="nearest"))
            ax.set_title(f"{m} · b = {bb:.3g}", fontsize=9)
            if j == 0:
                ax.set_ylabel("RR")
            if i == len(models) - 1:
                ax.set_xlabel("ε (L∞ radius)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Certified and attack-based RR ({data_label} data): the band holds the formal RR",
                 fontsize=10)
    return finish(fig)


def band_width_maps(rr_cert: xr.DataArray, rr_attack: xr.DataArray,
                    data_label: str = "synthetic") -> plt.Figure:
    """Heatmaps of the band width RR_attack − RR_certified over (ε, b), one per detector:
    0 (dark) means the attacks and the certificate agree, so the RR there is known exactly."""
    _check(rr_cert, rr_attack)
    models = list(rr_cert.model.values)
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.0), squeeze=False,
                             constrained_layout=True)
    width = (rr_attack - rr_cert).transpose("model", "eps", "b")
    im = None
    for ax, m in zip(axes[0], models):
        z = width.sel(model=m).values
        rows = np.arange(width.sizes["eps"])  # one row per radius of the grid, evenly spaced whatever the grid
        im = ax.pcolormesh(width.b.values, rows, z, vmin=0, vmax=1, cmap="magma", shading="nearest")
        ax.set_yticks(rows, [f"{e:g}" for e in width.eps.values], fontsize=7)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("b (bound on |ΔP(ŷ)|)")
        ax.set_ylabel("ε (L∞ radius)")
        if np.nanmin(z) < -1e-9:  # cannot happen for sound bounds; make it visible if it does
            ax.text(0.5, 0.5, "certificate above attack!", transform=ax.transAxes, color=colour("refuted"), ha="center")
    fig.colorbar(im, ax=axes, shrink=0.85, label="RR attack − RR certified")
    fig.suptitle(f"Width of the RR band over (ε, b) ({data_label} data)", fontsize=10)
    return finish(fig)


def chapter_result(chapter):
    """Chapter 07's one ChapterResult: :func:`dfrobust.experiments.certified.run`'s result with the band
    figure and the width maps (``band_fig``, ``width_fig``; a stand-in saying why when no MesoNet passed
    the quality gate) and the band and decide tables as HTML (``band_table``, ``decide_table``: the names
    the page and the landing page quote)."""
    from . import decide_html, not_analysed

    res = chapter.result
    if chapter.rr_cert is None:
        why = res.values["none_why"]
        res.figures.update(band_fig=not_analysed(why), width_fig=not_analysed(why))
    else:
        res.figures.update(band_fig=band(chapter.rr_cert, chapter.rr_attack, chapter.b_show, chapter.data_label),
                           width_fig=band_width_maps(chapter.rr_cert, chapter.rr_attack, chapter.data_label))
    return res.add(band_table=decide_html(res.tables["bands"], digits=3),
                   decide_table=decide_html(res.tables["decide"], digits=4))
