"""Figures of "The data" chapter: real/fake pairs per group, a video strip, the detectability bar."""

from __future__ import annotations

from . import colour, finish, palette
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..data.manifest import GROUPS, read_rgb


def _label(g: str) -> str:
    return g.replace("_", " ")


def pair_grid(df: pd.DataFrame, n_per_group: int = 2, seed: int = 0, title: str | None = None) -> plt.Figure:
    """Rows = groups; each pair shows the real frame, its fake and |fake - real| (x3)."""
    if "pair_id" not in df.columns:
        raise ValueError("pair_grid: expected a manifest with a 'pair_id' column")
    groups = [g for g in GROUPS if g in set(df.group)] or [""]   # real data may carry no group labels
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(groups), 3 * n_per_group, figsize=(1.6 * 3 * n_per_group, 1.7 * len(groups)),
                             squeeze=False)
    for r, g in enumerate(groups):
        d = df[(df.group == g) & (df.pair_id != "")]
        paired = d.groupby("pair_id").label.nunique()
        ids = list(paired[paired == 2].index)
        pick = rng.choice(ids, size=min(n_per_group, len(ids)), replace=False) if ids else []
        for k in range(n_per_group):
            ax3 = axes[r, 3 * k: 3 * k + 3]
            for ax in ax3:
                ax.set_axis_off()
            if k >= len(pick):
                continue
            pr = d[d.pair_id == pick[k]]
            real = read_rgb(pr[pr.label == 0].path.iloc[0])
            fk = pr[pr.label == 1].iloc[0]
            fake = read_rgb(fk.path)
            diff = np.clip(np.abs(fake.astype(int) - real.astype(int)) * 3, 0, 255).astype(np.uint8)
            for ax, im, t in zip(ax3, (real, fake, diff), ("real", f"fake: {fk.manipulation}", "|diff| x3")):
                ax.imshow(im)
                ax.set_title(t, fontsize=7)
        axes[r, 0].text(-0.08, 0.5, _label(g) or "all", transform=axes[r, 0].transAxes, rotation=90, ha="right",
                        va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return finish(fig)


def video_strip(frames: pd.DataFrame, video_id: str | None = None, n: int = 6, title: str | None = None) -> plt.Figure:
    """Sampled frames of one real clip (top) and of its fake (bottom), same frame indices."""
    fakes = frames[(frames.label == 1) & (frames.pair_id != "")]
    if video_id is None:
        if fakes.empty:
            raise ValueError("video_strip: no fake frame with a paired real frame in the manifest")
        video_id = fakes.video_id.iloc[0]
    fk = frames[frames.video_id == video_id].sort_values("frame_index")
    if fk.empty:
        raise ValueError(f"video_strip: video_id={video_id!r} is not in the manifest")
    fk = fk.iloc[np.unique(np.linspace(0, len(fk) - 1, min(n, len(fk))).round().astype(int))]
    real_by_pair = frames[frames.label == 0].set_index("pair_id").path
    fig, axes = plt.subplots(2, len(fk), figsize=(1.8 * len(fk), 4.0), squeeze=False)
    for k, row in enumerate(fk.itertuples()):
        rp = real_by_pair.get(row.pair_id) if row.pair_id else None
        for r, (p, name) in enumerate(((rp, "real"), (row.path, "fake"))):
            ax = axes[r, k]
            ax.set_axis_off()
            if p is not None:
                ax.imshow(read_rgb(p))
            ax.set_title(f"{name}, frame {row.frame_index}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return finish(fig)


def bar_chart(values: dict[str, float], lower: float = 0.85, upper: float = 0.98, chance: float = 0.5,
              title: str | None = None) -> plt.Figure:
    """Held-out accuracies against the target window [lower, upper] and chance."""
    fig, ax = plt.subplots(figsize=(5, 2.6))
    names = list(values)
    ax.barh(names, [values[k] for k in names], color=palette(len(names)))
    ax.axvspan(lower, upper, color=colour("target"), alpha=0.12, label=f"target window [{lower}, {upper}]")
    ax.axvline(chance, color="grey", ls="--", lw=1, label="chance")
    for i, k in enumerate(names):
        ax.text(values[k] + 0.01, i, f"{values[k]:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("accuracy on held-out identities")
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return finish(fig)


def chapter_figures(cfg, images: pd.DataFrame, frames: pd.DataFrame, result) -> dict[str, plt.Figure]:
    """The data chapter's figures from its parameters, manifests and result (``experiments.data.run``):
    ``pairs_fig``, ``video_fig``, ``bar_fig``."""
    source = result.values["source"]
    bar = result.tables["bar"]["held-out accuracy"].to_dict()
    return {"pairs_fig": pair_grid(images, n_per_group=cfg.pairs_per_group, seed=cfg.seed,
                                   title=f"{source} real/fake pairs per group"),
            "video_fig": video_strip(frames, n=cfg.strip_frames, title=f"{source} clip: real (top) and its fake (bottom)"),
            "bar_fig": bar_chart(bar, title=f"held-out accuracy ({source} data, profile {cfg.profile})")}
