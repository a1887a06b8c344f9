"""One balanced sampler for every chapter: test images, videos and (fake, real) pairs.

:func:`balanced` draws units (rows, videos or pairs) round-robin over strata (label × group by
default) in a seeded random order, interleaving the labels inside each round, so that any
``n`` is as balanced as the data allow: real/fake counts differ by at most one, and every
group is represented before any group gets a second unit. The chapter samplers
(:func:`select_samples`, :func:`select_frames`, :func:`select_pairs`) are thin wrappers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .video import even_indices


def _check_n(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ValueError(f"{what}={n!r}: expected an integer >= 1")
    return int(n)


def balanced(units: pd.DataFrame, n: int, *, by: Sequence[str] = ("label", "group"), seed: int = 0,
             what: str = "n") -> pd.DataFrame:
    """Up to ``n`` rows of ``units`` balanced over the strata ``by`` (seeded, deterministic).

    Within each round every stratum gives one unit; strata are visited group by group with the
    labels interleaved (real, fake, real, fake, …) in a seeded order that changes from round to
    round, so a partial round shares its units fairly between labels and groups.
    """
    n = _check_n(n, what)
    keys = [c for c in by if c in units.columns]
    rng = np.random.default_rng(seed)
    df = units.iloc[rng.permutation(len(units))]
    if not keys:
        return df.head(n).reset_index(drop=True)
    df = df.assign(_rank=df.groupby(keys, sort=False).cumcount().to_numpy())
    outer = [k for k in keys if k != "label"] or keys
    strata = sorted(set(map(tuple, df[outer].astype(str).to_numpy())))
    rounds = int(df["_rank"].max()) + 1
    # per round, a seeded order of the outer strata (groups); labels interleave inside each
    order = {(r, s): i for r in range(rounds) for i, s in enumerate(
        [strata[j] for j in rng.permutation(len(strata))])}
    pos = np.array([order[(r, tuple(v))] for r, v in zip(df["_rank"], df[outer].astype(str).to_numpy())])
    lab = df["label"].to_numpy() if "label" in keys and "label" not in outer else np.zeros(len(df))
    df = df.assign(_pos=pos, _lab=lab).sort_values(["_rank", "_pos", "_lab"], kind="stable")
    return df.drop(columns=["_rank", "_pos", "_lab"]).head(n).reset_index(drop=True)


def select_samples(manifest: pd.DataFrame, n: int, *, seed: int = 0, split: str = "test") -> pd.DataFrame:
    """Up to ``n`` rows of ``split``, balanced over label × group (the image chapters' test set)."""
    _check_n(n, "n_samples")
    df = _split(manifest, [split])
    return balanced(df, n, seed=seed, what="n_samples")


def _split(manifest: pd.DataFrame, splits: Sequence[str] | None) -> pd.DataFrame:
    if splits is None or "split" not in manifest.columns:
        return manifest
    df = manifest[manifest["split"].isin(list(splits))]
    if df.empty:
        raise ValueError(f"split={list(splits)!r}: no rows in the manifest; expected some of "
                         f"{sorted(manifest['split'].unique())}")
    return df


def check_video_meta(meta: pd.DataFrame) -> None:
    """One-line ValueError unless ``meta`` is a video-frames manifest (video_id, frame_index on every row)."""
    for col in ("video_id", "frame_index"):
        if col not in meta.columns:
            raise ValueError(f"manifest lacks column {col!r}; expected a 'video_frames' manifest")
    ids = meta["video_id"].astype(str)
    if (ids == "").any():
        raise ValueError(f"{int((ids == '').sum())} rows have no video_id; expected a 'video_frames' manifest "
                         "(one row per sampled frame of a video)")


def video_order(meta: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each video of ``meta`` in frame order (videos sorted by id)."""
    check_video_meta(meta)
    m = meta.reset_index(drop=True)
    return [g.sort_values("frame_index", kind="stable").index.to_numpy()
            for _, g in m.groupby(m["video_id"].astype(str), sort=True)]


def select_frames(manifest: pd.DataFrame, frames_per_video: int | None = None, *,
                  splits: Sequence[str] | None = None, max_videos: int | None = None,
                  seed: int = 0, frame_stride: int | None = None) -> pd.DataFrame:
    """Rows of a video-frames manifest, sorted by (video_id, frame_index).

    ``frames_per_video``: keep at most this many frames per video; None keeps all.
    ``frame_stride``: None spreads the kept frames evenly over the frames the manifest holds;
    an integer s >= 1 keeps a *window* of ``frames_per_video`` frames whose source frame indices
    are f0, f0 + s, …, f0 + (n−1)·s (f0 the video's first prepared frame) — consecutive frames at
    s = 1, what a progressive attack needs for a carried δ to matter. A video whose prepared
    frames do not contain that window is refused with a one-line error naming it (prepare more
    frames per video). ``splits``: keep only these splits (None: all). ``max_videos``: keep at
    most this many videos per label, balanced over groups (:func:`balanced`).
    """
    check_video_meta(manifest)
    if frames_per_video is not None:
        _check_n(frames_per_video, "frames_per_video")
    if max_videos is not None:
        _check_n(max_videos, "max_videos")
    if frame_stride is not None:
        _check_n(frame_stride, "frame_stride")
        if frames_per_video is None:
            raise ValueError(f"frame_stride={frame_stride!r} needs frames_per_video (the window length); got None")
    df = _split(manifest, splits).sort_values(["video_id", "frame_index"], kind="stable")
    if max_videos is not None:
        vids = df.drop_duplicates("video_id")
        n_labels = vids["label"].nunique()
        keep = balanced(vids, int(max_videos) * n_labels, seed=seed, what="max_videos")
        keep = keep.groupby("label").head(int(max_videos))["video_id"]
        df = df[df["video_id"].isin(set(keep))]
    if frames_per_video is not None and frame_stride is None:
        df = pd.concat([g.iloc[even_indices(len(g), int(frames_per_video))]
                        for _, g in df.groupby("video_id", sort=True)])
    elif frames_per_video is not None:
        parts = []
        for vid, g in df.groupby("video_id", sort=True):
            idx = g["frame_index"].to_numpy(np.int64)
            want = idx.min() + int(frame_stride) * np.arange(int(frames_per_video))
            pos = {int(f): i for i, f in enumerate(idx)}
            missing = [int(f) for f in want if int(f) not in pos]
            if missing:
                raise ValueError(
                    f"video_id={vid!r}: frames_per_video={frames_per_video} at frame_stride={frame_stride} needs "
                    f"source frames {want.tolist()}; the manifest holds {idx.tolist()[:12]}"
                    f"{' ...' if len(idx) > 12 else ''} (prepare more frames per video, or lower frames_per_video)")
            parts.append(g.iloc[[pos[int(f)] for f in want]])
        df = pd.concat(parts)
    out = df.reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    return out


def select_pairs(manifest: pd.DataFrame, n_pairs: int, *, seed: int = 0,
                 split: str | None = "test") -> pd.DataFrame:
    """``n_pairs`` (fake, real) pairs linked by ``pair_id``, balanced over groups and manipulations.

    One row per pair: the fake's manifest columns as they are, the real's prefixed ``real_``.
    Pairs come from ``split`` when it has any (else from all splits).
    """
    need = {"label", "pair_id", "path"}
    if not need <= set(manifest.columns):
        raise ValueError(f"manifest columns {sorted(manifest.columns)}: expected at least {sorted(need)}")
    _check_n(n_pairs, "n_pairs")
    df = manifest
    if split is not None and "split" in df.columns and (df["split"] == split).any():
        df = df[df["split"] == split]
    fakes = df[(df["label"] == 1) & (df["pair_id"].astype(str) != "")]
    reals = df[df["label"] == 0].drop_duplicates("pair_id")
    reals = reals[reals["pair_id"].astype(str) != ""]
    pairs = fakes.merge(reals.add_prefix("real_"), left_on="pair_id", right_on="real_pair_id", how="inner")
    if pairs.empty:
        raise ValueError("manifest has no fake whose pair_id matches a real image; expected paired data")
    pairs = pairs.drop_duplicates("pair_id").sort_values("pair_id", kind="stable")
    out = balanced(pairs, n_pairs, by=("group", "manipulation"), seed=seed, what="n_pairs")
    return out.sort_values("pair_id").reset_index(drop=True)


def identity_subsample(meta: pd.DataFrame, n: int, *, seed: int = 0) -> np.ndarray:
    """Row positions (sorted) of a seeded subsample of **whole identities** of ``meta`` holding about ``n``
    rows: identities are drawn in a seeded order balanced over ``group`` (:func:`balanced`, one identity per
    group per round) and taken until their rows reach ``n`` (so at least ``n`` rows, and never part of an
    identity). ``n = 0`` or ``n >= len(meta)`` keeps every row. Without an ``identity`` column every row is its
    own identity. The same seed gives the same subsample. One-line ValueError for ``n`` not an integer >= 0."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 0:
        raise ValueError(f"cw_n={n!r}: expected an integer >= 0 (images, whole identities; 0 = all)")
    m = meta.reset_index(drop=True)
    if int(n) == 0 or int(n) >= len(m):
        return np.arange(len(m))
    ident = m["identity"].astype(str) if "identity" in m.columns else pd.Series(m.index.astype(str))
    units = pd.DataFrame({"identity": ident}).assign(
        group=m["group"].astype(str) if "group" in m.columns else "")
    units = units.groupby("identity", sort=True).agg(group=("group", "first"), size=("group", "size")).reset_index()
    order = balanced(units, len(units), by=("group",), seed=seed, what="cw_n")
    take = order["size"].cumsum().to_numpy() - order["size"].to_numpy() < int(n)
    keep = set(order["identity"][take])
    return np.flatnonzero(ident.isin(keep).to_numpy())
