"""Video-level robustness: per-frame vs progressive attacks, video aggregation, RR-vs-tolerance linearity.

Lyu, Jin and Das (NLDL 2025) observe that the robust ratio (RR) grows more *linearly* with the
tolerance on video data than on image data, and guess why: in a video the perturbation may be
applied *progressively* across frames, so its effect accumulates. This module turns the guess
into a controlled experiment on the same frames, detectors, attacks and budgets:

* **per_frame** (``mode="per_frame"``): every frame is attacked independently — exactly the
  image experiment (:func:`dfrobust.experiments.records.attack_records`) run on video frames;
* **progressive** (``mode="progressive"``): frames of a video are attacked in frame order and
  frame *t*'s attack starts from frame *t−1*'s perturbation δ: PGD starts there instead of at a
  random point, FGSM takes its gradient there (one signed step from δ_{t−1}, then projection),
  CW starts its optimisation at ``w = atanh(2(x_t+δ_{t−1})−1)``. The budget **accumulates**
  (``ramp=True``, the default): ε_t = ε·(t+1)/T, so frame t carries what frames 0..t added, at most
  ε/T more per frame, and the mode differs from per-frame by construction (with ``ramp=False`` the
  carried δ is only a warm start inside the same ball, a no-op for an attack that reaches the
  ball's optimum from anywhere). Every frame keeps ``||δ_t||∞ <= ε_t <= ε``
  and ``x_t+δ_t ∈ [0, 1]`` for FGSM/PGD (checked by ``attack_records``); CW has no budget and
  follows the robustness chapter's CW rule (a frame counts only when ``||δ||₂ <= eps_l2``).

Records of both modes come from the record engine's ``attack_records``
(:mod:`dfrobust.experiments.records`; no second record builder): the progressive attacks are handed to it as its ``attack_factory`` (see
:func:`progressive_factory`), with the whole clip set as one batch so the attack sees the frame
order.

Video level. A video's score is an aggregate (``mean`` by default, ``median`` or ``max``) of its
frames' P(fake) (:func:`video_scores`); :func:`video_records` reduces frame records to video
records with the same variables, so :mod:`dfrobust.metrics` (RA, RR, bootstrap) applies
unchanged. Frame-level CIs resample *videos* (``metrics.bootstrap(..., by="video_id")``);
video-level records have one sample per video, so resampling samples resamples videos.

Frames. A progressive attack needs frames close in time for a carried δ to matter, so the
chapter keeps a window of consecutive frames (``frame_stride`` 1, :func:`load_video_frames`);
the synthetic clips are as long as the frames prepared from them.

Images on equal terms. The image-vs-video comparison uses image records with this chapter's ε
grid, attack settings and seed, and as many images as videos (:func:`image_records` refuses or
recomputes records made otherwise, :func:`match_units` balances the subset). :func:`check_params`
checks every chapter parameter before any data or model is touched; :func:`quality_gate` is the
stand-in gate that keeps near-chance detectors out.

Pseudo-videos (:func:`pseudo_videos`): the per-frame records regrouped so that each pseudo-video
holds one frame from each of T videos of its label; same aggregation, same attacked frames. They
separate what aggregation does (pseudo-videos vs images) from a temporal effect (videos vs
pseudo-videos).

The chapter (:func:`run`, called once by notebook 04 after :func:`check_params` and
``core.device.prepare_run``) returns a :class:`VideoResult`: the page's ``ChapterResult`` (values,
tables, the decide rows, the records) and the datasets its figures are drawn from. Its claims
(:data:`CLAIMS`) are decided together (Holm over every cell) and the primary one gets a simulated
power (:data:`PRIMARY`).

The linearity of RR in the tolerance is measured by :mod:`dfrobust.metrics.linearity`; the
carried-over starts of the progressive mode live in :mod:`dfrobust.attacks.progressive`. Written
here: the video reduction of records (a groupby), the pseudo-video regrouping, the chapter's record
builder and the chapter itself.
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
from ..core.device import pick_device
from ..core.params import MAX_BOOT, MAX_COUNT, MAX_GRID, check_int, check_number, check_seed
from ..data.sampling import check_video_meta, select_frames
from .records import RECORD_VARS, attack_options, attack_records, check_sweep, load_samples

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
                      splits: Sequence[str] | None = None, max_videos: int | None = None,
                      frame_stride: int | None = None, seed: int = 0) -> VideoFrames:
    """Load the frames of a ``video_frames`` manifest, one video at a time.

    ``frame_stride``: None spreads ``frames_per_video`` frames evenly over the prepared frames; an
    integer s keeps a window of consecutive (s = 1) or every s-th source frame
    (:func:`dfrobust.data.sampling.select_frames`). A video with any unreadable frame file is skipped *as a whole* (a partial clip would change
    what progressive attacks and video scores mean); it is listed in ``skipped`` with the reason,
    together with the media the preparation step already skipped (``manifest.attrs['meta']``).
    """
    from ..data.manifest import load_images

    df = select_frames(manifest, frames_per_video, splits=splits, max_videos=max_videos,
                       frame_stride=frame_stride, seed=seed)
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


def frame_steps(frames: VideoFrames) -> pd.DataFrame:
    """Per pair of successive kept frames of a video: source-frame gap, mean and max |x_t − x_{t−1}|.

    Shows how far a perturbation carried from frame t−1 lands from where it was found: when the
    frames barely move (mean step far below ε) the carried δ meets nearly the same image.
    """
    from ..data.sampling import video_order

    rows = []
    fi = frames.meta["frame_index"].to_numpy()
    vids = frames.meta["video_id"].astype(str).to_numpy()
    for idx in video_order(frames.meta):
        for a, b in zip(idx[:-1], idx[1:]):
            d = (frames.images[b] - frames.images[a]).abs()
            rows.append({"video_id": vids[a], "gap": int(fi[b] - fi[a]), "mean_abs": float(d.mean()),
                         "max_abs": float(d.max())})
    return pd.DataFrame(rows, columns=["video_id", "gap", "mean_abs", "max_abs"])


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


# ------------------------------------------------------------------------------------ pseudo-videos

def pseudo_videos(records: xr.Dataset, *, seed: int = 0) -> xr.Dataset:
    """Per-frame records regrouped into *pseudo-videos*: the frames of one label, each pseudo-video
    holding one frame from each of T different videos of that label (T = the clips' length).

    A video's score averages its frames' P(fake), so near-binary frame changes average into a
    staircase however the frames are grouped. Pseudo-videos keep the aggregation, the frame count,
    the labels and the very same attacked frames (per-frame attacks do not see the grouping, so no
    attack re-runs) and remove what a real clip adds: frames of one scene, one identity, one moment.
    Videos vs pseudo-videos then isolates the temporal effect; pseudo-videos vs images the
    aggregation. Within a label the videos are shuffled (``seed``) and pseudo-video j takes frame
    position k from video (j + k) mod n: each frame is used once, at its own position.
    Only per-frame records qualify (a progressive attack saw the real clip); a label with fewer
    videos than frames per video cannot be regrouped: one-line ValueError.
    """
    if "mode" in records.coords and records["mode"].ndim == 0 and str(records["mode"].values) != "per_frame":
        raise ValueError(f"mode={str(records['mode'].values)!r}: pseudo-videos regroup per-frame records only "
                         "(a progressive attack saw the real clip)")
    if "mode" in records.dims:
        raise ValueError("records have a mode dimension; expected per-frame records (records.sel(mode='per_frame'))")
    meta = pd.DataFrame({"video_id": np.asarray(records["video_id"].values).astype(str),
                         "frame_index": np.asarray(records["frame_index"].values),
                         "label": np.asarray(records["y"].values).astype(int)})
    from ..data.sampling import video_order

    order = video_order(meta)
    rng = np.random.default_rng(seed)
    new_id = np.empty(len(meta), dtype=object)
    for label in sorted(meta["label"].unique()):
        clips = [o for o in order if meta["label"].iloc[o[0]] == label]
        n, t_max = len(clips), max(len(o) for o in clips)
        if n < t_max:
            raise ValueError(f"label {label}: {n} videos for {t_max} frames per video; expected at least as many "
                             "videos as frames to draw each pseudo-video's frames from different videos")
        clips = [clips[i] for i in rng.permutation(n)]
        for j in range(n):
            for k in range(t_max):
                clip = clips[(j + k) % n]
                if k < len(clip):
                    new_id[clip[k]] = f"pseudo{label}_{j:04d}"
    out = records.assign_coords(video_id=("sample", new_id.astype(str)))
    out.attrs = dict(records.attrs, grouping="pseudo-videos", pseudo_seed=int(seed))
    return out


# ------------------------------------------------------------------------------------ progressive


def video_attack_records(models: Mapping[str, torch.nn.Module], attacks: Sequence[str],
                         eps_grid: Sequence[float], frames: VideoFrames, *,
                         modes: str | Sequence[str] = MODES, seed: int = 0, device: str = "auto",
                         ramp: bool = True, attack_kw: Mapping[str, Mapping] | None = None,
                         ssim: bool = True, progress: bool = False, settle_b: float | None = None) -> xr.Dataset:
    """Frame records of every mode, dims (mode, model, attack, eps, sample), via ``attack_records``.

    ``per_frame`` calls :func:`dfrobust.experiments.records.attack_records` as the image experiment does
    (with ``settle_b``: frames settled at a smaller radius are not attacked again);
    ``progressive`` calls it with :func:`progressive_factory` and all frames in one batch (every frame
    attacked at every radius: the carried δ needs the whole clip).
    Inputs are validated before any attack runs.
    """
    modes = check_modes(modes)
    attack_names, eps = check_sweep(attacks, eps_grid)
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
            rec = attack_records(models, attack_names, eps, frames.images, frames.labels, frames.meta,
                                            settle_b=settle_b, **kw)
        else:
            factory = progressive_factory(frames.meta, ramp=ramp)
            rec = attack_records(models, attack_names, eps, frames.images, frames.labels,
                                            frames.meta, batch_size=len(frames.images), attack_factory=factory, **kw)
            used = {a.name for a in factory.built if a.calls}
            if any(e > 0 for e in eps) and used != set(attack_names):
                raise RuntimeError("progressive mode: attack_records did not use the progressive attacks "
                                   "(dfrobust.experiments.robustness ignored attack_factory?)")
        timings[mode] = round(time.perf_counter() - t0, 3)
        parts.append(rec)
    mode_dim = xr.DataArray(np.array(modes, dtype=str), dims="mode", name="mode")
    out = xr.concat(parts, dim=mode_dim, data_vars=list(RECORD_VARS),
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


def _attack_kw_of(records: xr.Dataset) -> dict:
    import ast

    raw = records.attrs.get("attack_kw", "{}")
    try:
        kw = ast.literal_eval(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"image records: attack_kw attribute {raw!r} is not readable; expected a dict literal") from None
    return {str(k): dict(v) for k, v in kw.items()}


def image_mismatch(records: xr.Dataset, *, eps_grid: Sequence[float], attack_kw: Mapping[str, Mapping],
                   seed: int, models: Sequence[str], attacks: Sequence[str], n_units: int,
                   b_max: float | None = None) -> str:
    """Why image records cannot be compared with this chapter's videos on equal terms ("" when they can).

    Equal terms: the same ε grid, the same attack settings for every attack used, the same seed,
    every model and attack present, at least ``n_units`` images (one per video) and, when the
    records skipped settled samples (``settle_b``), a ``settle_b`` of at least this chapter's ``b_max``.
    """
    have_m = list(map(str, records["model"].values))
    have_a = list(map(str, records["attack"].values))
    if [m for m in models if m not in have_m]:
        return f"models {[m for m in models if m not in have_m]} missing (records have {have_m})"
    if [a for a in attacks if a not in have_a]:
        return f"attacks {[a for a in attacks if a not in have_a]} missing (records have {have_a})"
    e = np.asarray(records["eps"].values, float)
    want = np.asarray(list(eps_grid), float)
    if len(e) != len(want) or not np.allclose(e, want, rtol=0, atol=1e-9):
        return f"eps grid {e.round(6).tolist()} differs from this chapter's {want.round(6).tolist()}"
    rs = int(records.attrs.get("seed", -1))
    if rs != int(seed):
        return f"seed {rs} differs from this chapter's seed {int(seed)}"
    have_kw = _attack_kw_of(records)
    for a in attacks:
        mine, theirs = dict(attack_kw.get(a, {})), have_kw.get(a, {})
        if mine != theirs:
            return f"attack {a!r} settings {theirs} differ from this chapter's {mine}"
    settle = str(records.attrs.get("settle_b", "none")).split(":")[0]
    if b_max is not None and settle != "none" and float(settle) < float(b_max) - 1e-12:
        return f"records skip samples settled at b = {settle}, below this chapter's b_max = {float(b_max):g}"
    n = int(records.sizes["sample"])
    if n < int(n_units):
        return f"{n} images, fewer than the {int(n_units)} units (videos) to match"
    return ""


def match_units(records: xr.Dataset, n: int, *, seed: int = 0) -> xr.Dataset:
    """``n`` samples of ``records`` balanced over label × group (the sampler's rule), in sample order."""
    from ..data.sampling import balanced

    n_have = int(records.sizes["sample"])
    if int(n) > n_have:
        raise ValueError(f"n={n!r}: only {n_have} samples in the records; expected n <= {n_have}")
    units = pd.DataFrame({"pos": np.arange(n_have), "label": np.asarray(records["y"].values).astype(int)})
    if "group" in records.coords and records["group"].dims == ("sample",):
        units["group"] = np.asarray(records["group"].values).astype(str)
    pick = np.sort(balanced(units, int(n), seed=seed, what="n_units")["pos"].to_numpy())
    return records.isel(sample=pick)


def image_records(profile: str, *, eps_grid: Sequence[float], attack_kw: Mapping[str, Mapping], seed: int,
                  models: Sequence[str], attacks: Sequence[str], n_units: int,
                  name: str = "rr_records", compute=None, b_max: float | None = None) -> tuple[xr.Dataset, str]:
    """Image records for the image-vs-video comparison, on this chapter's terms, with ``n_units`` images.

    The robustness chapter's saved records are used when :func:`image_mismatch` finds nothing;
    otherwise ``compute()`` (a zero-argument callable running ``attack_records`` on
    ``n_units`` balanced test images with this chapter's grid, settings and seed) recomputes them,
    and without ``compute`` a one-line ValueError names the difference. Returns (records with
    exactly ``n_units`` images, where they came from).
    """
    from ..core import paths
    from ..core.results import load

    path = paths.results_dir(profile) / f"{name}.nc"
    why = f"no saved image records ({path.name})"
    if path.is_file():
        rec = load(path)
        why = image_mismatch(rec, eps_grid=eps_grid, attack_kw=attack_kw, seed=seed, models=models,
                             attacks=attacks, n_units=n_units, b_max=b_max)
        if not why:
            rec = match_units(rec.sel(model=list(models), attack=list(attacks)), n_units, seed=seed)
            return rec, f"saved by the robustness chapter ({path.name}), {n_units} of its images"
    if compute is None:
        raise ValueError(f"image records {path.name}: {why}; expected records on this chapter's terms "
                         "(or pass compute= to recompute them)")
    rec = compute()
    why_new = image_mismatch(rec, eps_grid=eps_grid, attack_kw=attack_kw, seed=seed, models=models,
                             attacks=attacks, n_units=n_units, b_max=b_max)
    if why_new:
        raise RuntimeError(f"recomputed image records are not on this chapter's terms: {why_new}")
    return match_units(rec, n_units, seed=seed), f"computed here ({why})"


# ------------------------------------------------------------------------------------ parameters

def _log_grid(eps_min: float, eps_max: float, n: int) -> list[float]:
    """0 plus ``n`` log-spaced radii: the robustness chapter's grid (:func:`dfrobust.metrics.grids.log_grid`)."""
    return list(metrics.grids.log_grid(eps_min, eps_max, n))


def check_params(*, data_root: str = "", profile: str, seed: int, models: str, attacks: str, modes: str, aggregate: str,
                 eps_min: float, eps_max: float, n_eps: int, b_max: float, n_b: int, eps_ref: float, b_ref: float,
                 frames_per_video: int, frame_stride: int, max_videos: int, pgd_steps: int,
                 n_boot: int, level: str, ramp: bool, lin_margin: float,
                 alpha: float, target_videos: int, min_val_auc: float, real_frames: int, device: str,
                 weights: str = "", use_real_ffpp: bool = True, power_sims: int = 0) -> dict:
    """Every parameter of the images-vs-videos chapter checked before any data or model is touched.

    One-line ValueError naming the parameter and what is expected. Returns the canonical values:
    model, attack and mode lists, the ε grid (0 plus ``n_eps`` log-spaced radii, the robustness
    chapter's grid), the b grid (``n_b`` bounds from 0 to ``b_max``, at least 21 so that the b
    reading of linearity has a fine grid), the grid values nearest ``eps_ref``/``b_ref`` and the
    attack settings. No side effect: the device, threads and seeds are set by
    :func:`dfrobust.core.device.prepare_run` afterwards.
    """
    from ..core import params as core_params
    from ..models import DETECTORS
    from ..core.profiles import check_data_root
    from ..models.published import check_weights

    if not isinstance(profile, str) or not profile:
        raise ValueError(f"profile={profile!r}: expected a profile name such as 'quick' or 'default'")
    seed = check_seed(seed)
    model_list = core_params.split_list(models, "models", allowed=DETECTORS)
    attack_list = core_params.split_list(attacks, "attacks", allowed=PROGRESSIVE_ATTACKS)
    mode_list = check_modes(modes)
    agg = check_aggregate(aggregate)
    check_number(eps_min, "eps_min", 0, 1, lo_open=True)
    check_number(eps_max, "eps_max", 0, 1, lo_open=True)
    if eps_max <= eps_min:
        raise ValueError(f"eps_max={eps_max!r}: expected a radius above eps_min={eps_min!r}")
    n_eps = check_int(n_eps, "n_eps", 2, MAX_GRID)
    eps_grid = _log_grid(eps_min, eps_max, n_eps)
    n_b = check_int(n_b, "n_b", 21, MAX_GRID)
    b_max = check_number(b_max, "b_max", 0, 1, lo_open=True)
    b_grid = metrics.linspace_grid(b_max, n_b, what="b")
    attack_list, eps_grid = check_sweep(attack_list, eps_grid, b_grid=b_grid)
    check_number(eps_ref, "eps_ref", 0, 1)
    check_number(b_ref, "b_ref", 0, 1)
    if level not in ("video", "frame"):
        raise ValueError(f"level={level!r}: expected 'video' or 'frame'")
    if not isinstance(ramp, (bool, np.bool_)):
        raise ValueError(f"ramp={ramp!r}: expected True or False")
    frames_per_video = check_int(frames_per_video, "frames_per_video", 2, MAX_COUNT)
    frame_stride = check_int(frame_stride, "frame_stride", 0, MAX_COUNT)
    max_videos = check_int(max_videos, "max_videos", 0, MAX_COUNT)
    pgd_steps = check_int(pgd_steps, "pgd_steps", 1, MAX_COUNT)
    n_boot = check_int(n_boot, "n_boot", 100, MAX_BOOT)
    lin_margin = check_number(lin_margin, "lin_margin", 0, 1, lo_open=True)
    alpha = check_number(alpha, "alpha", 0, 0.5, lo_open=True)
    if alpha >= 0.5:
        raise ValueError(f"alpha={alpha!r}: expected a level in (0, 0.5)")
    target_videos = check_int(target_videos, "target_videos", 1, MAX_COUNT)
    min_val_auc = check_number(min_val_auc, "min_val_auc", 0, 1)
    real_frames = check_int(real_frames, "real_frames", 1, MAX_COUNT)
    if not isinstance(use_real_ffpp, (bool, np.bool_)):
        raise ValueError(f"use_real_ffpp={use_real_ffpp!r}: expected True or False")
    power_sims = check_int(power_sims, "power_sims", 0, MAX_COUNT)
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device={device!r}: expected auto, cpu or cuda")
    pick_device(device)  # a one-line error for CUDA on a machine without it (no side effect)
    check_data_root(profile, data_root)
    check_weights(model_list, weights)
    out = dict(profile=profile, seed=seed, data_root=str(data_root or ""), models=model_list, attacks=attack_list,
               modes=mode_list, aggregate=agg, eps_grid=list(eps_grid), b_grid=list(b_grid),
               eps_ref=min(eps_grid, key=lambda e: abs(e - eps_ref)), b_ref=min(b_grid, key=lambda b: abs(b - b_ref)),
               frames_per_video=frames_per_video, frame_stride=frame_stride or None, max_videos=max_videos,
               attack_kw=attack_options(attack_list, steps=pgd_steps),
               n_boot=n_boot, level=level, ramp=bool(ramp), lin_margin=lin_margin, alpha=alpha,
               target_videos=target_videos, min_val_auc=min_val_auc, real_frames=real_frames, device=str(device),
               weights=str(weights or ""), use_real_ffpp=bool(use_real_ffpp), power_sims=power_sims)
    out["params"] = dict(out)  # the provenance of the run (JSON-serialisable)
    return out


# ------------------------------------------------------------------------------------ what this build decides

def half_width(summary: xr.Dataset, *, eps: float, b: float, level: str = "video") -> pd.DataFrame:
    """Half-widths of the RA and RR intervals at the reference cell (ε, b), per mode × model × attack."""
    s = summary.sel(level=level, eps=eps, b=b)
    df = ((s[["RA_hi", "RR_hi"]] - s[["RA_lo", "RR_lo"]].rename(RA_lo="RA_hi", RR_lo="RR_hi")) / 2) \
        .rename(RA_hi="RA half-width", RR_hi="RR half-width").to_dataframe()
    keep = [c for c in ("RA half-width", "RR half-width")]
    return df[keep].round(3)


def decide_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """The chapter's "what this build can decide" table from verdict-like rows
    (claim, n, interval, width, margin, verdict, n_needed)."""
    cols = ["claim", "n", "interval", "width", "margin", "verdict", "n needed", "note"]
    out = []
    for r in rows:
        lo, hi = float(r.get("lo", np.nan)), float(r.get("hi", np.nan))
        out.append({"claim": r["claim"], "n": r.get("n", ""),
                    "interval": f"[{lo:.3f}, {hi:.3f}]" if np.isfinite([lo, hi]).all() else
                    (f"[{lo:.3g}, {hi:.3g}]" if not (np.isnan(lo) or np.isnan(hi)) else "—"),
                    "width": round(hi - lo, 3) if np.isfinite([lo, hi]).all() else "unbounded" if not np.isnan(hi - lo) else "—",
                    "margin": r.get("margin", ""), "verdict": r["verdict"],
                    "n needed": (int(r["n_needed"]) if r.get("n_needed") not in (None, "") and not pd.isna(r["n_needed"])
                                 else "unknown (interval unbounded)" if r["verdict"] == "inconclusive"
                                 and not np.isfinite(hi - lo) else ""),
                    "note": r.get("note", "")})
    return pd.DataFrame(out, columns=cols)


# ------------------------------------------------------------------------------------ linearity


def delta_linf_ok(frames: torch.Tensor, adv: torch.Tensor, eps: float | np.ndarray, tol: float = _TOL) -> bool:
    """``||adv − frames||∞ <= eps (+tol)`` for every frame and ``adv`` in [0, 1]."""
    d = (adv - frames).reshape(len(frames), -1).abs().amax(1).double().cpu().numpy()
    e = np.broadcast_to(np.asarray(eps, dtype=float), d.shape)
    return bool((d <= e + tol).all() and float(adv.min()) >= 0 and float(adv.max()) <= 1)


# ------------------------------------------------------------------------------------ the chapter

#: the chapter's claims: (A, B, short tag) for "RR more linear for A than for B", decided together (Holm)
CLAIMS = (("video_per_frame", "image", "pf_img"),        # the paper's observation
          ("video_pseudo", "image", "ps_img"),           # what aggregation alone does
          ("video_per_frame", "video_pseudo", "pf_ps"),  # the temporal effect: real clips vs pseudo-videos
          ("video_progressive", "video_per_frame", "pr_pf"))   # accumulation over the clip
NAMES = {"video_per_frame": "videos (per-frame attacks)", "video_progressive": "videos (progressive attacks)",
         "video_pseudo": "pseudo-videos (per-frame attacks)", "image": "images"}
#: the primary video claim, whose power is simulated
PRIMARY = ("video_per_frame", "video_pseudo", "b")


class VideoResult:
    """The chapter's :class:`~dfrobust.core.results.ChapterResult` (``result``) and the datasets its
    figures are drawn from (``summary``: RA/RR with intervals; ``linearity``: the shape deviations with
    their replicates), plus the analysed detectors and modes. Figures live a layer up
    (:func:`dfrobust.figures.videos.chapter_figures`)."""

    def __init__(self, result, summary: xr.Dataset | None, linearity: xr.Dataset | None,
                 analysed: Sequence[str], modes: Sequence[str], eps_ref: float):
        self.result, self.summary, self.linearity = result, summary, linearity
        self.analysed, self.modes, self.eps_ref = list(analysed), list(modes), float(eps_ref)


def _unit(records: xr.Dataset) -> str:
    """Resample identities where every sample has one (a person's videos are not independent), else samples."""
    if "identity" in records.coords and records["identity"].dims == ("sample",):
        ids = np.asarray(records["identity"].values).astype(str)
        if ids.size and not (ids == "").any() and np.unique(ids).size < ids.size:
            return "identity"
    return "sample"


def _sentence(v) -> str:
    iv = (f"smallest Δ over the cells {v.estimate:+.3f}, interval [{v.lo:+.3g}, {v.hi:+.3g}]"
          if np.isfinite(v.estimate) else "Δ undefined in some cell")
    need = f"; about {v.n_needed} units per data type would decide it" if v.n_needed else ""
    return f"{v.verdict} ({v.note}; {iv}, n = {v.n}{need})"


def _load(cfg: Mapping, dev) -> dict:
    """Manifests, detectors behind the quality gate, the video frames and the data section's values/tables."""
    from ..data import dataset_label, get_manifest
    from ..models import study_gate
    from ..models.gate import gate_sentence
    from ..models.published import evaluation_manifest, get_detector, origin

    profile, seed, root = cfg["profile"], cfg["seed"], cfg["data_root"] or None
    img_manifest = get_manifest(profile, "images", seed=seed, data_root=root)
    vid_manifest = get_manifest(profile, "video_frames", seed=seed, data_root=root)
    trained = {m: get_detector(m, img_manifest, weights=cfg["weights"], profile=profile, seed=seed,
                               device=cfg["device"]) for m in cfg["models"]}
    gate = study_gate(trained, cfg["min_val_auc"], profile)   # the single call site: near-chance and unlearned stop here
    analysed = [m for m in cfg["models"] if bool(gate.set_index("model").loc[m, "analysed"])]
    size = max(t.input_size for t in trained.values())
    frames = load_video_frames(vid_manifest, size, cfg["frames_per_video"], max_videos=cfg["max_videos"] or None,
                               frame_stride=cfg["frame_stride"], seed=seed)
    per_class = frames.meta.drop_duplicates("video_id").groupby("label").size()
    steps = frame_steps(frames)
    data_label = dataset_label(vid_manifest)
    values = dict(data_label=data_label, detector_origin=origin(trained), n_videos=frames.n_videos,
                  n_frames=len(frames.meta), n_skipped=len(frames.skipped),
                  frame_stride=cfg["frame_stride"] or "spread", frames_per_video=cfg["frames_per_video"],
                  per_class=f"{int(per_class.min())}", target=cfg["target_videos"],
                  gate=gate_sentence(gate, cfg["min_val_auc"]).removesuffix("."),
                  step_gap=int(steps.gap.median()) if len(steps) else 0,
                  step_mean=float(steps.mean_abs.median()) if len(steps) else float("nan"),
                  step_max=float(steps.max_abs.median()) if len(steps) else float("nan"),
                  data_summary=(f"{frames.n_videos} {data_label} videos ({per_class.get(0, 0)} real, "
                                f"{per_class.get(1, 0)} fake), {len(frames.meta)} frames at {size}px; "
                                f"{len(frames.skipped)} video(s) skipped; detectors analysed: {analysed or 'none'}"))
    tables = dict(gate_table=gate.round(3), skipped=skipped_table(frames),
                  groups=frames.meta.groupby(["label", "group"]).video_id.nunique().unstack(fill_value=0))
    return dict(img_manifest=evaluation_manifest(img_manifest, cfg["models"]), trained=trained, analysed=analysed,
                size=size, frames=frames, values=values, tables=tables, data_label=data_label,
                synthetic=bool(vid_manifest.attrs.get("meta", {}).get("synthetic", True)))


def _clean_table(d: dict) -> pd.DataFrame:
    """Clean accuracy per analysed detector: frame level and video level under each aggregate."""
    from ..models.train import predict_proba

    rows, frames = [], d["frames"]
    for m in d["analysed"]:
        t = d["trained"][m]
        x = torch.nn.functional.interpolate(frames.images, size=(t.input_size,) * 2, mode="bilinear",
                                            align_corners=False, antialias=True).clamp(0, 1)
        pf = predict_proba(t.model, x.to(t.device))
        row = {"model": m, "frame accuracy": round(float(((pf >= 0.5).astype(int) == frames.meta.label.to_numpy()).mean()), 3)}
        for how in AGGREGATES:
            vs = video_scores(pf, frames.meta, how, threshold=0.5)
            row[f"video accuracy ({how})"] = round(float((vs.pred == vs.label).mean()), 3)
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "frame accuracy"] + [f"video accuracy ({h})" for h in AGGREGATES])


def run(cfg: Mapping, dev) -> VideoResult:
    """The whole chapter on checked parameters ``cfg`` (:func:`check_params`) and the device ``dev``
    (:func:`dfrobust.core.device.prepare_run`): data and gate, per-frame and progressive records,
    RA/RR of videos, the linearity claims of :data:`CLAIMS` (Holm over all their cells), the power
    of the primary claim, the "what this build can decide" table, the exercises' answers and the
    real FF++ section (:func:`real_ffpp`). Writes ``video_records.nc``, ``video_metrics.nc``, ``video_linearity.nc``, ``video_verdicts.csv``."""
    from ..core import results
    from ..core.device import describe
    from ..core.paths import results_dir
    from ..core.results import ChapterResult
    from ..data import sampling
    from ..metrics import linearity as linfit
    from ..models.published import detector_provenance

    t_start = time.perf_counter()
    profile, seed, params = cfg["profile"], cfg["seed"], cfg["params"]
    d = _load(cfg, dev)
    values, tables = dict(d["values"]), dict(d["tables"])
    analysed, frames, modes = d["analysed"], d["frames"], cfg["modes"]
    eps_grid, b_grid, eps_ref, b_ref = cfg["eps_grid"], cfg["b_grid"], cfg["eps_ref"], cfg["b_ref"]
    n_units = int(frames.n_videos)
    prov = dict(profile=profile, seed=seed, synthetic=int(d["synthetic"]))
    tables["clean"] = _clean_table(d)
    records = summary = lin = None
    attack_time, img_source, headline, why_not = 0.0, "not used (no detector passed the quality gate)", {}, {}
    if analysed:
        detectors = {m: d["trained"][m].model for m in analysed}
        t0 = time.perf_counter()
        records = video_attack_records(detectors, cfg["attacks"], eps_grid, frames, modes=modes, seed=seed,
                                       device=cfg["device"], ramp=cfg["ramp"], attack_kw=cfg["attack_kw"],
                                       settle_b=cfg["b_grid"][-1])
        attack_time = time.perf_counter() - t0
        records.attrs.update(results.provenance(params, device=describe(dev), wall_time_s=attack_time,
                                                data=d["data_label"], detectors=detector_provenance(d["trained"]),
                                                skipped=frames.skipped, **prov))
        results.save(records, results_dir(profile) / "video_records.nc")
        within = bool((records["linf"] <= records["eps"] + 1e-6).all())
        n_work = len(analysed) * len(cfg["attacks"]) * len(modes) * (len(eps_grid) - 1) * len(frames.meta)
        values["attack_note"] = (f"attacks: {attack_time:.1f} s on {describe(dev)} ({records.attrs['mode_time_s']}); "
                                 f"{1e3 * attack_time / max(n_work, 1):.2f} ms per attacked frame; every frame within "
                                 f"its L-inf budget: {within}")
        summary = ra_rr_summary(records, b_grid, aggregate=cfg["aggregate"], n_boot=cfg["n_boot"], seed=seed)
        summary.attrs.update(results.provenance(params, **prov))
        results.save(summary, results_dir(profile) / "video_metrics.nc")
        tab = summary.sel(eps=eps_ref, b=b_ref)[["RA", "RA_lo", "RA_hi", "RR", "RR_lo", "RR_hi"]]
        tables["ra_rr"] = tab.to_dataframe()[["RA", "RA_lo", "RA_hi", "RR", "RR_lo", "RR_hi"]].round(3).unstack("level")

        def compute_images():
            sel = sampling.select_samples(d["img_manifest"], n_units, seed=seed)
            x, y, meta_s, _ = load_samples(sel, d["size"])
            return attack_records(detectors, cfg["attacks"], eps_grid, x, y, meta_s, seed=seed,
                                             device=cfg["device"], attack_kw=cfg["attack_kw"], settle_b=b_grid[-1])

        img, img_source = image_records(profile, eps_grid=eps_grid, attack_kw=cfg["attack_kw"], seed=seed,
                                        models=analysed, attacks=cfg["attacks"], n_units=n_units,
                                        compute=compute_images, b_max=b_grid[-1])
        by_type = _by_type(records, img, cfg)
        why_not[("video_pseudo",)] = by_type.pop("video_pseudo") if isinstance(by_type.get("video_pseudo"), str) else ""
        lin = linfit.linearity(by_type, b_grid, fixed_eps=eps_ref, fixed_b=b_ref, n_boot=cfg["n_boot"], seed=seed)
        results.save(lin.drop_vars("dev_boot").assign_attrs(results.provenance(params, **prov)),
                     results_dir(profile) / "video_linearity.nc")
        tables["linearity"] = linfit.linearity_table(lin)
        claims = [(a, b) for a, b, _ in CLAIMS if a in by_type and b in by_type]
        headline, cells = linfit.compare(lin, claims, margin=cfg["lin_margin"], alpha=cfg["alpha"], names=NAMES)
        tables["cells"] = cells[["model", "attack", "tolerance", "claim", "verdict", "estimate", "lo", "hi", "n",
                                 "n_needed", "note"]].round(3)
        tables["power"], values["power_sentence"] = _power(by_type, cfg, analysed, len(cells))
        values.update(_exercises(records, img, headline, cfg, analysed))
    else:
        values["attack_note"] = "no detector passed the quality gate: no attacks run"
        values["power_sentence"] = "not simulated: no detector passed the quality gate"
        values.update(ex1_answer="not computed: no detector passed the quality gate",
                      ex2_answer="not computed: no detector passed the quality gate",
                      ex3_answer="not computed: no detector passed the quality gate")
    for a, b, tag in CLAIMS:
        for r in ("b", "eps"):
            v = headline.get((a, b, r))
            pseudo = why_not.get(("video_pseudo",)) if "video_pseudo" in (a, b) else ""
            values[f"claim_{tag}_{r}"] = (_sentence(v) if v is not None else
                                          "not analysed (no detector passed the quality gate)" if not analysed
                                          else f"not run (no pseudo-videos: {pseudo})" if pseudo
                                          else f"not run (modes={','.join(modes)})")
    real = real_ffpp(cfg, dev)
    values.update(real.values)
    tables.update(real.tables)
    decide = _decide_rows(headline, summary, cfg, n_units, analysed)
    decide.to_csv(results_dir(profile) / "video_verdicts.csv", index=False)
    values.update(attack_time_s=round(attack_time, 1), eps_ref=eps_ref, b_ref=b_ref, n_b=len(b_grid),
                  n_eps=len(eps_grid) - 1, lin_margin=cfg["lin_margin"], alpha=cfg["alpha"], n_units=n_units,
                  img_source=img_source, n_cells=int(len(tables.get("cells", []))),
                  wall_time_s=round(time.perf_counter() - t_start, 1))
    result = ChapterResult(values=values, tables=tables, decide=decide, records=records)
    return VideoResult(result, summary, lin, analysed, modes, eps_ref)


def _by_type(records: xr.Dataset, img: xr.Dataset, cfg: Mapping) -> dict:
    """The data types of the linearity claims: images, each mode's videos and the pseudo-videos, with
    their resampling unit and stream (per-frame and progressive videos paired; the others independent)."""
    out = {"image": (img, _unit(img), 1)}
    for m in cfg["modes"]:
        r = records.sel(mode=m)
        out[f"video_{m}"] = ((video_records(r, cfg["aggregate"]), _unit(r), 0) if cfg["level"] == "video"
                             else (r, "video_id", 0))
    if "per_frame" in cfg["modes"]:
        try:
            ps = pseudo_videos(records.sel(mode="per_frame"), seed=cfg["seed"])
        except ValueError as exc:  # too few videos of a label (e.g. four real FF++ samples): claims not run
            out["video_pseudo"] = str(exc)
            return out
        out["video_pseudo"] = ((video_records(ps, cfg["aggregate"]), "sample", 2) if cfg["level"] == "video"
                               else (ps, "video_id", 2))
    return out


def _power(by_type: dict, cfg: Mapping, analysed: Sequence[str], m_cells: int) -> tuple[pd.DataFrame, str]:
    """Simulated power of the primary claim (first analysed detector, PGD or the first attack) at this
    build's n and at 2n, 4n, at Holm's strictest level α/m."""
    from ..metrics import linearity as linfit

    a, b, reading = PRIMARY
    if cfg["power_sims"] == 0 or a not in by_type or b not in by_type:
        return pd.DataFrame(), "not simulated (power_sims=0 or the claim's data types were not built)"
    attack = "pgd" if "pgd" in cfg["attacks"] else cfg["attacks"][0]
    n = int(min(by_type[a][0].sizes["sample"], by_type[b][0].sizes["sample"]))
    level = cfg["alpha"] / max(m_cells, 1)
    tab = linfit.power(by_type, a, b, cfg["b_grid"], fixed_eps=cfg["eps_ref"], fixed_b=cfg["b_ref"],
                       model=analysed[0], attack=attack, reading=reading, margin=cfg["lin_margin"], level=level,
                       sizes=[n, 2 * n, 4 * n], n_sim=cfg["power_sims"], n_boot=min(cfg["n_boot"], 200),
                       seed=cfg["seed"])
    ok = tab[tab["power"] >= 0.8]
    decides = (f"about {int(ok['n'].iloc[0])} units per data type decide it in ≥ 80 % of simulated builds"
               if len(ok) else f"none of n = {', '.join(map(str, tab['n']))} reaches 80 % power")
    sentence = (f"{linfit._claim(NAMES[a], NAMES[b], reading)} ({analysed[0]}, {attack.upper()}): decided in "
                f"{tab['power'].iloc[0]:.0%} of {cfg['power_sims']} simulated builds at this build's n = {n}; "
                f"{decides} (resampling this build's units, level α/m = {level:.2g})")
    return tab, sentence


def _decide_rows(headline: Mapping, summary: xr.Dataset | None, cfg: Mapping, n_units: int,
                 analysed: Sequence[str]) -> pd.DataFrame:
    """The "what this build can decide" table: one row per claim (overall over its cells) and the precision target."""
    rows = []
    for a, b, _ in CLAIMS:
        for r in ("b", "eps"):
            v = headline.get((a, b, r))
            if v is not None:
                rows.append(dict(claim=v.claim, n=v.n, lo=v.lo, hi=v.hi, margin=v.margin, verdict=v.verdict,
                                 n_needed=v.n_needed, note=v.note))
            elif not analysed:
                rows.append(dict(claim=f"RR more linear in {'b' if r == 'b' else 'ε'} for {NAMES[a]} than {NAMES[b]}",
                                 n=n_units, margin=cfg["lin_margin"], verdict="not analysed: near chance",
                                 n_needed=None))
    if summary is not None:
        worst = float(half_width(summary, eps=cfg["eps_ref"], b=cfg["b_ref"], level="video").to_numpy().max())
        rows.append(dict(claim="video RA and RR at the reference cell known to ±0.07 (95 %)", n=n_units,
                         lo=-worst, hi=worst, margin=0.07, verdict="holds" if worst <= 0.07 else "inconclusive",
                         n_needed=None if worst <= 0.07 else int(np.ceil(n_units * (worst / 0.07) ** 2))))
    return decide_table(rows)


def _exercises(records: xr.Dataset, img: xr.Dataset, headline: Mapping, cfg: Mapping,
               analysed: Sequence[str]) -> dict:
    """The exercises' answers from this build's records: aggregation max vs mean, frame-level curves,
    the n the least decided image-vs-video claim needs."""
    from ..metrics import linearity as linfit

    m0, modes = analysed[0], cfg["modes"]
    a0 = "pgd" if "pgd" in cfg["attacks"] else cfg["attacks"][0]
    r0 = records.sel(mode=modes[0], model=[m0], attack=[a0], eps=[cfg["eps_ref"]])
    out = {}
    for how in ("mean", "max"):
        v = video_records(r0, how)
        out[how] = (float(metrics.robust_accuracy(v).squeeze()), float(metrics.robust_ratio(v, [cfg["b_ref"]]).squeeze()))
    ex1 = (f"{m0}, {a0.upper()}, ε = {cfg['eps_ref']:g}, b = {cfg['b_ref']:g}: RA {out['mean'][0]:.3f} → "
           f"{out['max'][0]:.3f}, RR {out['mean'][1]:.3f} → {out['max'][1]:.3f}")
    key = f"video_{modes[0]}"
    frame_types = {"image": (img, _unit(img), 1), key: (records.sel(mode=modes[0]), "video_id", 0)}
    lin_f = linfit.linearity(frame_types, cfg["b_grid"], fixed_eps=cfg["eps_ref"], fixed_b=cfg["b_ref"],
                             n_boot=cfg["n_boot"], seed=cfg["seed"])
    ov_f = linfit.compare(lin_f, [(key, "image")], margin=cfg["lin_margin"], alpha=cfg["alpha"], readings=["b"])[0]
    ov_f = ov_f[(key, "image", "b")]
    v_lvl = headline.get((key, "image", "b"))
    ex2 = f"{cfg['level']} level: {v_lvl.verdict if v_lvl else 'n/a'}; frame level: {ov_f.verdict} ({ov_f.note})"
    img_claims = [v for (a, b, r), v in headline.items() if b == "image"]
    need = [v.n_needed for v in img_claims if v.n_needed]
    open_claims = [v for v in img_claims if v.verdict == "inconclusive"]
    if need:
        ex3 = (f"about {max(need)} units per data type, i.e. {int(np.ceil(max(need) / 2))} videos per class "
               f"(this build: {records.attrs.get('n_videos', '?')} videos)")
    elif open_claims:
        ex3 = (f"unknown on this build: {len(open_claims)} image-vs-video claim(s) are inconclusive with an unbounded "
               "interval or no difference detected, so there is no width to scale; the power simulation above "
               "estimates it instead")
    else:
        ex3 = "none: every image-vs-video claim is decided at this build's size"
    return dict(ex1_answer=ex1, ex2_answer=ex2, ex3_answer=ex3)


def real_ffpp(cfg: Mapping, dev):
    """The same experiment on the team's real FaceForensics++ samples with the published Meso4 (Deepfakes)
    when ``../shared/realdata`` holds them and ``use_real_ffpp``; a smoke check, not evidence.
    Returns a ChapterResult (``real_done`` and the section's tables)."""
    from ..core.paths import shared_realdata
    from ..core.results import ChapterResult
    from ..data import get_manifest
    from ..metrics import linearity as linfit

    real_root = shared_realdata()
    weights = (real_root / "mesonet" / "weights" / "Meso4_DF.h5") if real_root else None
    if not cfg["use_real_ffpp"]:
        return ChapterResult(values={"real_done": "was skipped (use_real_ffpp=False)"})
    if real_root is None or not (real_root / "ffpp").is_dir() or not weights.is_file():
        return ChapterResult(values={"real_done": "was skipped (samples absent)"})
    from ..models.keras_h5 import load_pretrained

    manifest = get_manifest(cfg["profile"], "video_frames", seed=cfg["seed"], data_root=str(real_root / "ffpp"),
                            n_frames=cfg["real_frames"])
    meso = load_pretrained(weights).to(dev).eval()
    real_set = load_video_frames(manifest, meso.input_size)
    attacks = list(cfg["attacks"])
    rec = video_attack_records({"meso4_DF": meso}, attacks, cfg["eps_grid"], real_set, modes=cfg["modes"],
                               seed=cfg["seed"], device=cfg["device"], ramp=cfg["ramp"],
                               attack_kw=cfg["attack_kw"], settle_b=cfg["b_grid"][-1])
    clean = rec["p_clean_fake"].sel(model="meso4_DF")
    pr = (clean.isel(mode=0) if "mode" in clean.dims else clean).values
    by_type = {f"video_{m}": (rec.sel(mode=m), "video_id", 0) for m in cfg["modes"]}
    lin = linfit.linearity(by_type, cfg["b_grid"], fixed_eps=cfg["eps_ref"], fixed_b=cfg["b_ref"],
                           n_boot=cfg["n_boot"], seed=cfg["seed"])
    tables = {"real_scores": video_scores(pr, real_set.meta, cfg["aggregate"], threshold=0.5),
              "real_linearity": linfit.linearity_table(lin)}
    if len(cfg["modes"]) == 2:
        _, cells = linfit.compare(lin, [("video_progressive", "video_per_frame")], margin=cfg["lin_margin"],
                                  alpha=cfg["alpha"])
        tables["real_cells"] = cells[["model", "attack", "tolerance", "verdict", "estimate", "lo", "hi", "n", "note"]].round(3)
    return ChapterResult(values={"real_done": "was run", "real_summary": (
        f"real FF++: {real_set.n_videos} videos, {len(real_set.meta)} face crops; skipped {len(real_set.skipped)}")},
        tables=tables)
