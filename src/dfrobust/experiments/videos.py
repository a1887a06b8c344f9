"""Video-level robustness: per-frame vs progressive attacks, video aggregation, RR-vs-tolerance linearity.

Lyu, Jin and Das (NLDL 2025) observe that the robust ratio (RR) grows more *linearly* with the
tolerance on video data than on image data, and guess why: in a video the perturbation may be
applied *progressively* across frames, so its effect accumulates. This module turns the guess
into a controlled experiment on the same frames, detectors, attacks and budgets:

* **per_frame** (``mode="per_frame"``): every frame is attacked independently — exactly the
  image experiment (:func:`dfrobust.experiments.robustness.attack_records`) run on video frames;
* **progressive** (``mode="progressive"``): frames of a video are attacked in frame order and
  frame *t*'s attack starts from frame *t−1*'s perturbation δ: PGD starts there instead of at a
  random point, FGSM takes its gradient there (one signed step from δ_{t−1}, then projection),
  CW starts its optimisation at ``w = atanh(2(x_t+δ_{t−1})−1)``. Optionally (``ramp=True``) the
  L∞ budget ramps up over the clip, ε_t = ε·(t+1)/T. Every frame keeps ``||δ_t||∞ <= ε_t <= ε``
  and ``x_t+δ_t ∈ [0, 1]`` for FGSM/PGD (checked by ``attack_records``); CW has no budget and
  follows the robustness chapter's CW rule (a frame counts only when ``||δ||₂ <= eps_l2``).

Records of both modes come from the robustness engineer's ``attack_records`` (no second record
builder): the progressive attacks are handed to it as its ``attack_factory`` (see
:func:`progressive_factory`), with the whole clip set as one batch so the attack sees the frame
order.

Video level. A video's score is an aggregate (``mean`` by default, ``median`` or ``max``) of its
frames' P(fake) (:func:`video_scores`); :func:`video_records` reduces frame records to video
records with the same variables, so :mod:`dfrobust.metrics` (RA, RR, bootstrap) applies
unchanged. Frame-level CIs resample *videos* (``metrics.bootstrap(..., by="video_id")``);
video-level records have one sample per video, so resampling samples resamples videos.

The linearity of RR in the tolerance is measured by :mod:`dfrobust.metrics.linearity`; the
carried-over starts of the progressive mode live in :mod:`dfrobust.attacks.progressive`. Written
here: the video reduction of records (a groupby) and the chapter's record builder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from .. import metrics
from ..attacks.progressive import PROGRESSIVE_ATTACKS, _no_progressive, progressive_factory
from ..data.sampling import check_video_meta, select_frames
from . import robustness

AGGREGATES = ("mean", "median", "max")
MODES = ("per_frame", "progressive")
DATA_TYPES = ("image", "video_per_frame", "video_progressive")
_TOL = 1e-6


# ------------------------------------------------------------------------------------ validation

def check_aggregate(aggregate: str) -> str:
    """The canonical aggregation name, or a one-line ValueError."""
    key = str(aggregate).strip().lower()
    if key not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r}: expected one of {', '.join(AGGREGATES)}")
    return key


def check_modes(modes: str | Sequence[str]) -> list[str]:
    """Modes from a list or a comma-separated string; one-line ValueError for an unknown one."""
    if isinstance(modes, str):
        modes = [m.strip() for m in modes.split(",") if m.strip()]
    modes = list(modes)
    if not modes:
        raise ValueError(f"modes={modes!r}: expected at least one of {', '.join(MODES)}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"mode={m!r}: unknown; expected one of {', '.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise ValueError(f"modes={modes!r}: duplicates")
    return modes


# ------------------------------------------------------------------------------------ frames

@dataclass
class VideoFrames:
    """Frames of the videos that could be read, in (video_id, frame_index) order."""

    images: torch.Tensor          # float [N, 3, S, S] in [0, 1]
    labels: torch.Tensor          # int64 [N]
    meta: pd.DataFrame            # manifest rows of the frames (index 0..N-1)
    skipped: list[dict] = field(default_factory=list)  # {"video_id"/"path", "reason"}: unreadable media

    @property
    def n_videos(self) -> int:
        return int(self.meta["video_id"].nunique())


def load_video_frames(manifest: pd.DataFrame, size: int, frames_per_video: int | None = None, *,
                      splits: Sequence[str] | None = None, max_videos: int | None = None) -> VideoFrames:
    """Load the frames of a ``video_frames`` manifest, one video at a time.

    A video with any unreadable frame file is skipped *as a whole* (a partial clip would change
    what progressive attacks and video scores mean); it is listed in ``skipped`` with the reason,
    together with the media the preparation step already skipped (``manifest.attrs['meta']``).
    """
    from ..data.manifest import load_images

    df = select_frames(manifest, frames_per_video, splits=splits, max_videos=max_videos)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size={size!r}: expected an int >= 8 (pixels)")
    meta_in = (manifest.attrs.get("meta") or {})
    skipped = [{"path": s.get("path", ""), "video_id": "", "reason": s.get("reason", ""), "stage": "prepare"}
               for s in meta_in.get("skipped", [])]
    parts, rows = [], []
    for vid, g in df.groupby("video_id", sort=True):
        try:
            parts.append(load_images(g, int(size)))
            rows.append(g)
        except (FileNotFoundError, ValueError, OSError) as exc:
            skipped.append({"path": str(g["path"].iloc[0]), "video_id": str(vid),
                            "reason": str(exc).splitlines()[0], "stage": "load"})
    if not parts:
        raise ValueError(f"no readable video frames ({len(skipped)} videos skipped, first: "
                         f"{skipped[0]['reason'] if skipped else 'none'})")
    meta = pd.concat(rows).reset_index(drop=True)
    for vid, g in meta.groupby("video_id"):
        if g["label"].nunique() != 1:
            raise ValueError(f"video_id={vid!r}: frames carry labels {sorted(g['label'].unique())}; "
                             "expected one label per video")
    meta.attrs = dict(manifest.attrs)
    return VideoFrames(images=torch.cat(parts), labels=torch.as_tensor(meta["label"].to_numpy(np.int64).copy()),
                       meta=meta, skipped=skipped)


def skipped_table(frames: VideoFrames) -> pd.DataFrame:
    """The skipped media as a table (stage, video_id, path, reason)."""
    return pd.DataFrame(frames.skipped, columns=["stage", "video_id", "path", "reason"])


# ------------------------------------------------------------------------------------ video scores

def _aggregate(values: np.ndarray, video_ids: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    how = check_aggregate(how)
    uniq, inv = np.unique(np.asarray(video_ids).astype(str), return_inverse=True)
    out = np.empty(len(uniq))
    for i in range(len(uniq)):
        v = values[inv == i]
        out[i] = {"mean": np.mean, "median": np.median, "max": np.max}[how](v)
    return uniq, out


def video_scores(p_fake: np.ndarray, meta: pd.DataFrame, aggregate: str = "mean",
                 threshold: float = 0.5) -> pd.DataFrame:
    """Per video: label, number of frames, aggregated P(fake) (``score``) and prediction."""
    how = check_aggregate(aggregate)
    p = np.asarray(p_fake, dtype=float).reshape(-1)
    check_video_meta(meta)
    if len(p) != len(meta):
        raise ValueError(f"p_fake has {len(p)} values for {len(meta)} frames; expected one per frame")
    ids, score = _aggregate(p, meta["video_id"].to_numpy(), how)
    first = meta.assign(video_id=meta["video_id"].astype(str)).groupby("video_id", sort=True)
    out = pd.DataFrame({"video_id": ids, "score": score})
    out["label"] = first["label"].first().reindex(ids).to_numpy().astype(int)
    out["n_frames"] = first.size().reindex(ids).to_numpy().astype(int)
    for col in ("group", "manipulation", "dataset"):
        if col in meta.columns:
            out[col] = first[col].first().reindex(ids).to_numpy()
    out["pred"] = (out["score"] >= threshold).astype(int)
    out.attrs["aggregate"] = how
    return out


def video_records(records: xr.Dataset, aggregate: str = "mean") -> xr.Dataset:
    """Reduce frame records (``attack_records`` layout, optional ``mode`` dim) to one sample per video.

    Video P(fake) = ``aggregate`` of the frames' P(fake), clean and under attack; a frame outside
    the radius (CW rule) contributes its clean P(fake). Predictions, P(ŷ) of the video's clean
    prediction ŷ, ``success`` and ``y`` are recomputed at video level; ``in_budget`` is then True
    (the radius is already applied per frame); ``l2``/``linf`` are the largest over the frames,
    ``ssim`` the mean, ``changed`` whether any frame changed. The result feeds
    :func:`dfrobust.metrics.robust_ratio` / ``robust_accuracy`` / ``bootstrap`` unchanged.
    """
    how = check_aggregate(aggregate)
    if "video_id" not in records.coords:
        raise ValueError("records: no 'video_id' sample coordinate; expected records of video frames")
    vids = np.asarray(records["video_id"].values).astype(str)
    if (vids == "").any():
        raise ValueError(f"records: {int((vids == '').sum())} samples have no video_id; expected video frames")
    y = records["y"].values
    for v in np.unique(vids):
        if len(np.unique(y[vids == v])) != 1:
            raise ValueError(f"video_id={v!r}: frames carry different labels; expected one label per video")
    vid = xr.DataArray(vids, dims="sample", name="video_id")

    def grouped(da: xr.DataArray):
        extra = [c for c in da.coords if c not in da.dims and "sample" in da[c].dims]
        return da.drop_vars(extra).assign_coords(video_id=vid).groupby("video_id")

    def agg(da: xr.DataArray) -> xr.DataArray:
        return getattr(grouped(da), how)("sample")

    p_adv_eff = xr.where(records["in_budget"], records["p_adv_fake"], records["p_clean_fake"])
    pa, pc = agg(p_adv_eff), agg(records["p_clean_fake"])
    pred_c, pred_a = (pc >= 0.5).astype(np.int64), (pa >= 0.5).astype(np.int64)
    ds = xr.Dataset({
        "p_adv_fake": pa,
        "p_adv": xr.where(pred_c == 1, pa, 1 - pa),
        "pred_adv": pred_a,
        "l2": grouped(records["l2"].where(records["in_budget"], 0.0)).max("sample"),
        "linf": grouped(records["linf"].where(records["in_budget"], 0.0)).max("sample"),
        "ssim": grouped(records["ssim"]).mean("sample"),
        "changed": grouped((records["changed"] & records["in_budget"]).astype(int)).max("sample").astype(bool),
        "in_budget": xr.ones_like(pa, dtype=bool),
        "y": grouped(records["y"]).max("sample").astype(np.int64),
        "pred_clean": pred_c,
        "p_clean": xr.where(pred_c == 1, pc, 1 - pc),
        "p_clean_fake": pc,
        "x_l2": grouped(records["x_l2"]).mean("sample"),
        "x_linf": grouped(records["x_linf"]).mean("sample"),
        "n_frames": grouped(records["y"]).count("sample"),
    })
    ds["success"] = (ds["pred_clean"] == ds["y"]) & (ds["pred_adv"] != ds["y"])
    if "eps_l2" in records:
        ds["eps_l2"] = records["eps_l2"]
    uniq, idx = np.unique(vids, return_index=True)
    if list(ds["video_id"].values) != list(uniq):
        raise RuntimeError("video_records: groupby order differs from the sorted video ids")
    ds = ds.rename({"video_id": "sample"}).assign_coords(sample=np.arange(len(uniq)))
    ds = ds.assign_coords(video_id=("sample", uniq), frame_index=("sample", np.full(len(uniq), -1)))
    for c in ("group", "manipulation", "identity", "dataset", "split", "manifest_label"):
        if c in records.coords and records[c].dims == ("sample",):
            ds = ds.assign_coords({c: ("sample", np.asarray(records[c].values)[idx])})
    ds.attrs = dict(records.attrs)
    ds.attrs.update(level="video", aggregate=how)
    return ds


# ------------------------------------------------------------------------------------ progressive


def video_attack_records(models: Mapping[str, torch.nn.Module], attacks: Sequence[str],
                         eps_grid: Sequence[float], frames: VideoFrames, *,
                         modes: str | Sequence[str] = MODES, seed: int = 0, device: str = "auto",
                         ramp: bool = False, attack_kw: Mapping[str, Mapping] | None = None,
                         ssim: bool = True, progress: bool = False) -> xr.Dataset:
    """Frame records of every mode, dims (mode, model, attack, eps, sample), via ``attack_records``.

    ``per_frame`` calls :func:`dfrobust.experiments.robustness.attack_records` as the image experiment does;
    ``progressive`` calls it with :func:`progressive_factory` and all frames in one batch.
    Inputs are validated before any attack runs.
    """
    modes = check_modes(modes)
    attack_names, eps = robustness.check_sweep(attacks, eps_grid)
    if "progressive" in modes:
        for a in attack_names:
            if a not in PROGRESSIVE_ATTACKS:
                raise ValueError(_no_progressive(a))
    if not isinstance(frames, VideoFrames):
        raise ValueError(f"frames: expected a VideoFrames (load_video_frames), got {type(frames).__name__}")
    check_video_meta(frames.meta)
    parts, timings = [], {}
    for mode in modes:
        t0 = time.perf_counter()
        kw = dict(seed=seed, device=device, attack_kw=attack_kw, ssim=ssim, progress=progress)
        if mode == "per_frame":
            rec = robustness.attack_records(models, attack_names, eps, frames.images, frames.labels, frames.meta, **kw)
        else:
            factory = progressive_factory(frames.meta, ramp=ramp)
            rec = robustness.attack_records(models, attack_names, eps, frames.images, frames.labels,
                                            frames.meta, batch_size=len(frames.images), attack_factory=factory, **kw)
            used = {a.name for a in factory.built if a.calls}
            if any(e > 0 for e in eps) and used != set(attack_names):
                raise RuntimeError("progressive mode: attack_records did not use the progressive attacks "
                                   "(dfrobust.experiments.robustness ignored attack_factory?)")
        timings[mode] = round(time.perf_counter() - t0, 3)
        parts.append(rec)
    mode_dim = xr.DataArray(np.array(modes, dtype=str), dims="mode", name="mode")
    out = xr.concat(parts, dim=mode_dim, data_vars=list(robustness.RECORD_VARS),
                    coords="minimal", compat="override", combine_attrs="override")
    out.attrs.update(kind="video_attack_records", modes=",".join(modes), ramp=int(bool(ramp)),
                     mode_time_s=str(timings), n_videos=int(frames.n_videos),
                     attack_time_s=str({m: p.attrs.get("attack_time_s", "") for m, p in zip(modes, parts)}))
    return out


# ------------------------------------------------------------------------------------ summaries

def ra_rr_summary(frame_records: xr.Dataset, b_grid: Sequence[float], *, aggregate: str = "mean",
                  n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> xr.Dataset:
    """RA and RR with bootstrap CIs at frame level and video level (dim ``level``).

    Both levels resample VIDEOS: frame level with ``metrics.bootstrap(..., by="video_id")``,
    video level over the video records (one sample per video).
    """
    out = []
    vrec = video_records(frame_records, aggregate)
    for level, rec, by in (("frame", frame_records, "video_id"), ("video", vrec, "sample")):
        w = metrics.bootstrap_weights(rec, by=by, n_boot=n_boot, seed=seed)
        ra = metrics.bootstrap(metrics.correct_adv(rec), weights=w, ci=ci, seed=seed)
        rr = metrics.bootstrap(metrics.robust_per_sample(rec, b_grid), weights=w, ci=ci, seed=seed)
        ds = xr.Dataset({"RA": ra["estimate"], "RA_lo": ra["lo"], "RA_hi": ra["hi"],
                         "RR": rr["estimate"], "RR_lo": rr["lo"], "RR_hi": rr["hi"]})
        ds.attrs.update(n_boot=int(n_boot), ci=float(ci), resampled="videos")
        out.append(ds.expand_dims(level=[level]))
    res = xr.concat(out, dim="level")
    res.attrs.update(n_boot=int(n_boot), ci=float(ci), resampled="videos", aggregate=check_aggregate(aggregate))
    return res


def image_records(profile: str, *, models: Sequence[str] | None = None, attacks: Sequence[str] | None = None,
                  name: str = "robustness_records", compute=None) -> tuple[xr.Dataset | None, str]:
    """The image records saved by the robustness chapter, or ``compute()``'s result, or None.

    Returns (records or None, where they came from). ``compute``: a zero-argument callable that
    runs ``robustness.attack_records`` on the images manifest (called only when no file exists).
    The models/attacks asked for are selected when the saved file has them all.
    """
    from ..core import paths
    from ..core.results import load

    path = paths.results_dir(profile) / f"{name}.nc"
    rec, source = None, ""
    if path.is_file():
        rec = load(path)
        source = f"saved by the robustness chapter ({path.name})"
        have_m = set(map(str, rec["model"].values))
        have_a = set(map(str, rec["attack"].values))
        want_m = list(models) if models else sorted(have_m)
        want_a = list(attacks) if attacks else sorted(have_a)
        if set(want_m) <= have_m and set(want_a) <= have_a:
            rec = rec.sel(model=want_m, attack=want_a)
        else:
            rec, source = None, ""
    if rec is None and compute is not None:
        rec, source = compute(), "computed here with robustness.attack_records"
    return rec, source


# ------------------------------------------------------------------------------------ linearity


def delta_linf_ok(frames: torch.Tensor, adv: torch.Tensor, eps: float | np.ndarray, tol: float = _TOL) -> bool:
    """``||adv − frames||∞ <= eps (+tol)`` for every frame and ``adv`` in [0, 1]."""
    d = (adv - frames).reshape(len(frames), -1).abs().amax(1).double().cpu().numpy()
    e = np.broadcast_to(np.asarray(eps, dtype=float), d.shape)
    return bool((d <= e + tol).all() and float(adv.min()) >= 0 and float(adv.max()) <= 1)
