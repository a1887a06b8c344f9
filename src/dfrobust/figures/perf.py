"""Figures of the performance appendix: where the build's time went, the sweep on dask workers."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from . import finish, palette


def timings_bar(timings: pd.DataFrame, profile: str) -> plt.Figure:
    """Wall time of each chapter (``perf.notebook_timings``) as horizontal bars."""
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.barh(timings["notebook"], timings["wall_s"], color=palette(1)[0])
    ax.invert_yaxis()
    ax.set(xlabel="wall time (s)", ylabel="", title=f"profile {profile}")
    fig.tight_layout()
    return finish(fig)


def sweep_bars(scaling: pd.DataFrame) -> plt.Figure:
    """Wall time of one grid of chapter-03 cells run serially and on dask workers (``run``, ``wall_s``)."""
    fig, ax = plt.subplots(figsize=(6, 2.4))
    if len(scaling):
        ax.barh(scaling["run"], scaling["wall_s"], color=palette(3)[2])
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "benchmarks not run in this build", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="wall time of the same grid of cells (s)", ylabel="", title="sweep on dask workers (synthetic data)")
    fig.tight_layout()
    return finish(fig)
