"""Video-level robustness: per-frame vs progressive attacks, video aggregation, RR-vs-tolerance linearity.

Lyu, Jin and Das (NLDL 2025) observe that the robust ratio (RR) grows more *linearly* with the
tolerance on video data than on image data, and guess why: in a video the perturbation may be
applied *progressively* across frames, so its effect accumulates. This module turns the guess
into a controlled experiment on the same frames, detectors, attacks and budgets:

* **per_frame** (``mode="per_frame"``): every frame is attacked independently — exactly the
  image experiment (:func:`dfrobust.robustness.attack_records`) run on video frames;
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

Linearity (:func:`linearity`): for each data type × model × attack, RR is fitted against the
tolerance by least squares in two readings — tolerance = b at a fixed ε, and tolerance = ε at a
fixed b — reporting slope, intercept, R² and the maximum absolute deviation from the line, each
with a percentile bootstrap CI from the same resampling weights as ``metrics.bootstrap``
(:func:`dfrobust.metrics.bootstrap_weights`). Replicates are kept so that differences in R²
(video − image, progressive − per_frame) get CIs too (:func:`r2_difference`).

Hand-written here, and why: the carried-over starts (torchattacks attacks always start at the
clean image or a fresh random point; PGD's projection loop is reproduced for a given start, FGSM
and CW reuse torchattacks with a shifted start), the video reduction of records (a groupby), and
the vectorised line fits over bootstrap replicates (``scipy.stats.linregress`` fits one line at a
time; here thousands of replicate curves are fitted at once with the closed-form OLS solution).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from . import attacks as _attacks
from . import metrics, robustness
from .attacks import make_attack as _make_attack

AGGREGATES = ("mean", "median", "max")
MODES = ("per_frame", "progressive")
#: attacks that have a progressive version
PROGRESSIVE_ATTACKS = ("fgsm", "pgd", "cw")
DATA_TYPES = ("image", "video_per_frame", "video_progressive")
READINGS = ("b", "eps")
STATS = ("slope", "intercept", "r2", "max_dev")
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


def split_list(value: str | Sequence[str], what: str) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` → ``["a", "b"]`` (non-empty), else a one-line ValueError."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    items = [v for v in items if v]
    if not items:
        raise ValueError(f"{what}={value!r}: expected a non-empty comma-separated list")
    return items


def _no_progressive(name: str) -> str:
    return f"attack={name!r}: no progressive version; expected one of {', '.join(PROGRESSIVE_ATTACKS)}"


def _check_video_meta(meta: pd.DataFrame) -> None:
    for col in ("video_id", "frame_index"):
        if col not in meta.columns:
            raise ValueError(f"manifest lacks column {col!r}; expected a 'video_frames' manifest")
    ids = meta["video_id"].astype(str)
    if (ids == "").any():
        raise ValueError(f"{int((ids == '').sum())} rows have no video_id; expected a 'video_frames' manifest "
                         "(one row per sampled frame of a video)")


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


def select_frames(manifest: pd.DataFrame, frames_per_video: int | None = None, *,
                  splits: Sequence[str] | None = None, max_videos: int | None = None) -> pd.DataFrame:
    """Rows of a video-frames manifest, sorted by (video_id, frame_index).

    ``frames_per_video``: keep at most this many frames per video, spread evenly over the frames
    the manifest holds (``dfrobust.data.video.even_indices``); None keeps all.
    ``splits``: keep only these splits (None: all). ``max_videos``: keep at most this many
    videos per label, taking one per group in turn (sorted ids) so groups stay balanced.
    """
    from .data.video import even_indices

    _check_video_meta(manifest)
    if frames_per_video is not None and (isinstance(frames_per_video, bool) or int(frames_per_video) < 1):
        raise ValueError(f"frames_per_video={frames_per_video!r}: expected an int >= 1")
    if max_videos is not None and (isinstance(max_videos, bool) or int(max_videos) < 1):
        raise ValueError(f"max_videos={max_videos!r}: expected None or an int >= 1 (videos per label)")
    df = manifest
    if splits is not None:
        df = df[df["split"].isin(list(splits))]
        if df.empty:
            raise ValueError(f"splits={list(splits)!r}: no frames; the manifest has "
                             f"{sorted(manifest['split'].unique())}")
    df = df.sort_values(["video_id", "frame_index"], kind="stable")
    if max_videos is not None:
        vids = df.groupby("video_id", sort=True).agg(label=("label", "first"),
                                                      group=("group", "first") if "group" in df else ("label", "first"))
        vids["rank"] = vids.groupby(["label", "group"]).cumcount()
        vids = vids.reset_index().sort_values(["label", "rank", "group", "video_id"], kind="stable")
        keep = vids.groupby("label").head(int(max_videos))["video_id"]
        df = df[df["video_id"].isin(set(keep))]
    if frames_per_video is not None:
        parts = []
        for _, g in df.groupby("video_id", sort=True):
            parts.append(g.iloc[even_indices(len(g), int(frames_per_video))])
        df = pd.concat(parts)
    out = df.reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    return out


def load_video_frames(manifest: pd.DataFrame, size: int, frames_per_video: int | None = None, *,
                      splits: Sequence[str] | None = None, max_videos: int | None = None) -> VideoFrames:
    """Load the frames of a ``video_frames`` manifest, one video at a time.

    A video with any unreadable frame file is skipped *as a whole* (a partial clip would change
    what progressive attacks and video scores mean); it is listed in ``skipped`` with the reason,
    together with the media the preparation step already skipped (``manifest.attrs['meta']``).
    """
    from .data.manifest import load_images

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
    _check_video_meta(meta)
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

def _video_order(meta: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each video in frame order."""
    _check_video_meta(meta)
    m = meta.reset_index(drop=True)
    order = []
    for _, g in m.groupby(m["video_id"].astype(str), sort=True):
        order.append(g.sort_values("frame_index", kind="stable").index.to_numpy())
    return order


def ramp_eps(eps: float, position: int, length: int, ramp: bool) -> float:
    """The budget of the frame at ``position`` (0-based) of a clip of ``length`` frames."""
    if not ramp:
        return float(eps)
    return float(eps) * (position + 1) / max(int(length), 1)


class _CarryCW(_attacks.FixedCW):
    """FixedCW whose optimisation starts at ``self.start`` (w = atanh(2·start − 1)) when set."""

    start: torch.Tensor | None = None

    def inverse_tanh_space(self, x):  # noqa: D401 - torchattacks API; called once, for the initial w
        if self.start is not None:
            x = self.start.to(x.device, x.dtype)
        return super().inverse_tanh_space(x)


class ProgressiveAttack:
    """Attack the frames of several videos in frame order, carrying δ from frame t−1 to frame t.

    Call with ALL frames at once (``images`` [N, 3, S, S] and ``labels`` [N], rows in the order
    of ``order``'s positions); frame position k of every video is attacked in one batch.
    ``eps``: L∞ radius (FGSM, PGD; ignored by CW). ``carry=False`` gives the per-frame attack
    through the same code path (used by the tests to show the carry-over matters).
    After a call, ``last_deltas`` holds δ per row and ``eps_per_row`` the budget per row.
    """

    def __init__(self, name: str, model: torch.nn.Module, order: Sequence[np.ndarray], *, eps: float,
                 seed: int = 0, ramp: bool = False, carry: bool = True, **attack_kw: Any):
        self.name = _attacks.check_attack(name)
        if self.name not in PROGRESSIVE_ATTACKS:
            raise ValueError(_no_progressive(name))
        self.eps = _attacks.check_eps(eps)
        _make_attack(self.name, model, eps=0.0, **attack_kw)  # option check (no model call)
        self.model, self.order, self.seed = model, [np.asarray(o) for o in order], int(seed)
        self.ramp, self.carry, self.attack_kw = bool(ramp), bool(carry), dict(attack_kw)
        self.n_rows = int(sum(len(o) for o in self.order))
        self.calls = 0
        self.last_deltas: torch.Tensor | None = None
        self.eps_per_row: np.ndarray | None = None

    def _pgd(self, x, y, start, eps, first: bool, gen: torch.Generator):
        atk = _make_attack("pgd", self.model, eps=eps, seed=self.seed, **self.attack_kw)
        if start is None:  # first frame: the usual random start (seeded)
            if atk.random_start:
                noise = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device) * 2 * eps - eps
                adv = torch.clamp(x + noise, 0, 1)
            else:
                adv = x.clone()
        else:             # carried start: x_t + δ_{t−1}, projected onto this frame's ball
            adv = torch.clamp(x + torch.clamp(start, -eps, eps), 0, 1)
        loss = torch.nn.CrossEntropyLoss()
        for _ in range(atk.steps):  # torchattacks.PGD.forward's loop, from the given start
            adv = adv.detach().requires_grad_(True)
            cost = loss(atk.get_logits(adv), y)
            grad = torch.autograd.grad(cost, adv)[0]
            adv = adv.detach() + atk.alpha * grad.sign()
            adv = torch.clamp(x + torch.clamp(adv - x, -eps, eps), 0, 1)
        return adv.detach()

    def _fgsm(self, x, y, start, eps):
        atk = _make_attack("fgsm", self.model, eps=eps, seed=self.seed)
        point = x if start is None else torch.clamp(x + start, 0, 1)
        z = atk(point, y)  # torchattacks FGSM: gradient at `point`, one signed step of size eps
        return torch.clamp(x + torch.clamp(z - x, -eps, eps), 0, 1).detach()

    def _cw(self, x, y, start):
        ref = _make_attack("cw", self.model, eps=0.0, **self.attack_kw)
        atk = _CarryCW(self.model, c=ref.c, kappa=ref.kappa, steps=ref.steps, lr=ref.lr)
        atk.start = None if start is None else torch.clamp(x + start, 0, 1)
        return atk(x, y).detach()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(images) != self.n_rows:
            raise RuntimeError(f"progressive attack got {len(images)} frames; expected all {self.n_rows} "
                               "frames of the videos in one batch")
        self.calls += 1
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.calls) % (2**63 - 1))
        adv = images.detach().clone()
        deltas = torch.zeros_like(images)
        eps_row = np.zeros(self.n_rows)
        t_max = max(len(o) for o in self.order)
        for k in range(t_max):
            live = [o for o in self.order if len(o) > k]
            budgets = [ramp_eps(self.eps, k, len(o), self.ramp) for o in live]
            for e in sorted(set(budgets)):
                vids = [o for o, b in zip(live, budgets) if b == e]
                rows = torch.as_tensor(np.array([o[k] for o in vids]), dtype=torch.long)
                prev = (torch.as_tensor(np.array([o[k - 1] for o in vids]), dtype=torch.long)
                        if (k > 0 and self.carry) else None)
                x = images[rows].to(images.device)
                y = labels[rows.to(labels.device)].to(images.device)
                start = deltas[prev] if prev is not None else None
                if self.name == "pgd":
                    a = self._pgd(x, y, start, e, k == 0, gen)
                elif self.name == "fgsm":
                    a = self._fgsm(x, y, start, e)
                else:
                    a = self._cw(x, y, start)
                adv[rows] = a
                deltas[rows] = a - x
                eps_row[rows.numpy()] = e
        self.last_deltas, self.eps_per_row = deltas.detach(), eps_row
        return adv


def progressive_factory(meta: pd.DataFrame, *, ramp: bool = False, carry: bool = True):
    """An ``attack_factory`` for :func:`dfrobust.robustness.attack_records` that builds
    :class:`ProgressiveAttack` objects over the frame order of ``meta``.

    The factory's ``built`` attribute lists the attacks it made (to check afterwards that they ran).
    """
    order = _video_order(meta)
    built: list[ProgressiveAttack] = []

    def factory(name, model, *, eps, seed=0, **kw):
        _make_attack(name, model, eps=eps, seed=seed, **kw)  # the same option checks as per-frame
        if _attacks.check_attack(name) not in PROGRESSIVE_ATTACKS:
            raise ValueError(_no_progressive(name))
        atk = ProgressiveAttack(name, model, order, eps=eps, seed=seed, ramp=ramp, carry=carry, **kw)
        built.append(atk)
        return atk

    factory.built = built
    return factory


def video_attack_records(models: Mapping[str, torch.nn.Module], attacks: Sequence[str],
                         eps_grid: Sequence[float], frames: VideoFrames, *,
                         modes: str | Sequence[str] = MODES, seed: int = 0, device: str = "auto",
                         ramp: bool = False, attack_kw: Mapping[str, Mapping] | None = None,
                         ssim: bool = True, progress: bool = False) -> xr.Dataset:
    """Frame records of every mode, dims (mode, model, attack, eps, sample), via ``attack_records``.

    ``per_frame`` calls :func:`dfrobust.robustness.attack_records` as the image experiment does;
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
    _check_video_meta(frames.meta)
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
                                   "(dfrobust.robustness ignored attack_factory?)")
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
    from . import paths
    from .results import load

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

def fit_lines(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Least-squares lines of ``y[..., k]`` on ``x[k]``: slope, intercept, R², max |residual|.

    R² is NaN where ``y`` is constant (no variance to explain). Vectorised over leading axes.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or y.shape[-1] != x.size or x.size < 2:
        raise ValueError(f"fit_lines: x of shape {x.shape} and y of shape {y.shape}; expected 1-D x "
                         "with >= 2 points matching y's last axis")
    if np.ptp(x) == 0:
        raise ValueError("fit_lines: all tolerance values are equal; expected at least two distinct values")
    xm = x.mean()
    ym = y.mean(-1, keepdims=True)
    sxx = ((x - xm) ** 2).sum()
    slope = ((x - xm) * (y - ym)).sum(-1) / sxx
    intercept = ym[..., 0] - slope * xm
    fit = intercept[..., None] + slope[..., None] * x
    res = y - fit
    ss_res = (res ** 2).sum(-1)
    ss_tot = ((y - ym) ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 1e-15, 1 - ss_res / np.where(ss_tot > 1e-15, ss_tot, 1.0), np.nan)
    return {"slope": slope, "intercept": intercept, "r2": r2, "max_dev": np.abs(res).max(-1)}


def _curves(records: xr.Dataset, b_grid, fixed_eps: float, fixed_b: float, w: np.ndarray
            ) -> dict[str, tuple[np.ndarray, xr.DataArray, np.ndarray, float]]:
    """RR curves for both readings: reading -> (tolerance grid, estimate [..., tol], boot [..., boot, tol], fixed)."""
    b = robustness.check_b_grid(b_grid)
    eps_vals = np.asarray(records["eps"].values, dtype=float)
    e_fix = float(eps_vals[np.argmin(np.abs(eps_vals - fixed_eps))])
    b_all = np.unique(np.concatenate([b, [fixed_b]]))
    robust = metrics.robust_per_sample(records, b_all).astype(float)
    robust = robust.transpose(..., "sample")
    num = np.tensordot(robust.values, w, axes=([-1], [1]))          # [..., n_boot]
    boots = num / w.sum(1)
    est = robust.mean("sample")
    boot_da = xr.DataArray(boots, dims=robust.dims[:-1] + ("boot",),
                           coords={k: v for k, v in est.coords.items()})
    out = {}
    sel_b = est.sel(eps=e_fix).sel(b=b)
    out["b"] = (b, sel_b.transpose(..., "b"), boot_da.sel(eps=e_fix).sel(b=b).transpose(..., "boot", "b"), e_fix)
    out["eps"] = (eps_vals, est.sel(b=fixed_b).transpose(..., "eps"),
                  boot_da.sel(b=fixed_b).transpose(..., "boot", "eps"), float(fixed_b))
    return out


def linearity(records_by_type: Mapping[str, tuple[xr.Dataset, str]], b_grid: Sequence[float], *,
              fixed_eps: float, fixed_b: float, n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95) -> xr.Dataset:
    """Fit RR against tolerance per data type × model × attack, in both readings, with bootstrap CIs.

    ``records_by_type``: data type → (records, by), where ``by`` is the bootstrap cluster
    ("sample" for images or video-level records, "video_id" for frame records). Readings:
    ``b`` — RR(b) at the grid's ε nearest ``fixed_eps``; ``eps`` — RR(ε) at ``fixed_b``.
    Returns dims (data_type, model, attack, reading[, boot]): for each stat in
    slope/intercept/r2/max_dev the estimate, ``_lo``, ``_hi`` and ``_boot`` replicates, plus the
    curves (``rr``/``tolerance`` on a ``k`` axis) for the figure.
    """
    if not records_by_type:
        raise ValueError("records_by_type={}: expected at least one data type")
    robustness.check_b_grid([fixed_b])
    b = robustness.check_b_grid(b_grid)
    if len(b) < 2:
        raise ValueError(f"b_grid={list(b_grid)!r}: expected at least two bounds to fit a line")
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci!r}: expected a level in (0, 1)")
    q = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    models = attacks = None
    for rec, _ in records_by_type.values():
        m, a = list(map(str, rec["model"].values)), list(map(str, rec["attack"].values))
        models = m if models is None else [x for x in models if x in m]
        attacks = a if attacks is None else [x for x in attacks if x in a]
    if not models or not attacks:
        raise ValueError("records_by_type: no model/attack common to every data type")
    kmax = max(len(b), max(rec.sizes["eps"] for rec, _ in records_by_type.values()))
    per_type = []
    for dtype, (rec, by) in records_by_type.items():
        if rec.sizes["eps"] < 2:
            raise ValueError(f"{dtype}: {rec.sizes['eps']} eps value(s); expected >= 2 to fit RR against eps")
        rec = rec.sel(model=models, attack=attacks)
        w = metrics.bootstrap_weights(rec, by=by, n_boot=n_boot, seed=seed)
        curves = _curves(rec, b, fixed_eps, fixed_b, w)
        readings = []
        for reading in READINGS:
            tol, est, boot, fixed = curves[reading]
            fe = fit_lines(tol, est.values)
            fb = fit_lines(tol, boot.values)
            dims = est.dims[:-1]
            data = {}
            for s in STATS:
                data[s] = (dims, fe[s])
                data[f"{s}_boot"] = (dims + ("boot",), fb[s])
                with warnings.catch_warnings():  # cells where RR is flat have no R²: NaN, not a warning
                    warnings.simplefilter("ignore", RuntimeWarning)
                    lo, hi = np.nanquantile(fb[s], q, axis=-1) if np.isfinite(fb[s]).any() else (np.nan, np.nan)
                data[f"{s}_lo"], data[f"{s}_hi"] = (dims, np.broadcast_to(lo, fe[s].shape)), \
                    (dims, np.broadcast_to(hi, fe[s].shape))
            pad = kmax - len(tol)
            rr = np.concatenate([est.values, np.full(est.shape[:-1] + (pad,), np.nan)], -1)
            data["rr"] = (dims + ("k",), rr)
            data["tolerance"] = (("k",), np.concatenate([tol, np.full(pad, np.nan)]))
            data["fixed"] = ((), fixed)
            coords = {d: est.coords[d].values for d in dims}
            readings.append(xr.Dataset(data, coords=coords).expand_dims(reading=[reading]))
        ds = xr.concat(readings, dim="reading", data_vars="all")
        per_type.append(ds.expand_dims(data_type=[dtype]))
    out = xr.concat(per_type, dim="data_type", data_vars="all")
    out.attrs.update(n_boot=int(n_boot), ci=float(ci), seed=int(seed), fixed_eps=float(fixed_eps),
                     fixed_b=float(fixed_b))
    return out


def linearity_table(lin: xr.Dataset, digits: int = 3) -> pd.DataFrame:
    """One row per data type × model × attack × reading: stats with their CIs."""
    rows = []
    for dt in lin["data_type"].values:
        for m in lin["model"].values:
            for a in lin["attack"].values:
                for r in lin["reading"].values:
                    s = lin.sel(data_type=dt, model=m, attack=a, reading=r)
                    row = {"data type": str(dt), "model": str(m), "attack": str(a),
                           "tolerance": "b" if r == "b" else "ε",
                           "fixed at": (f"ε={float(s['fixed']):g}" if r == "b" else f"b={float(s['fixed']):g}")}
                    for st in STATS:
                        row[st] = round(float(s[st]), digits)
                        row[f"{st} CI"] = f"[{float(s[st + '_lo']):.{digits}f}, {float(s[st + '_hi']):.{digits}f}]"
                    rows.append(row)
    return pd.DataFrame(rows)


def r2_difference(lin: xr.Dataset, a: str, b: str, *, ci: float | None = None) -> xr.Dataset:
    """R²(a) − R²(b) per model × attack × reading, with a percentile CI from the replicates.

    Video types share the same resampled videos (same seed), so their difference is paired;
    image vs video types are independent samples, so their replicates are independent draws.
    """
    for v in (a, b):
        if v not in lin["data_type"].values:
            raise ValueError(f"data_type={v!r}: not in the linearity result; expected one of "
                             f"{list(map(str, lin['data_type'].values))}")
    ci = float(ci if ci is not None else lin.attrs.get("ci", 0.95))
    d = lin["r2"].sel(data_type=a) - lin["r2"].sel(data_type=b)
    db = lin["r2_boot"].sel(data_type=a) - lin["r2_boot"].sel(data_type=b)
    q = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    with warnings.catch_warnings():  # flat-RR cells: NaN intervals, not warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = db.quantile(q[0], dim="boot", skipna=True).drop_vars("quantile")
        hi = db.quantile(q[1], dim="boot", skipna=True).drop_vars("quantile")
    frac = (db > 0).sum("boot") / db.notnull().sum("boot")
    out = xr.Dataset({k: v.drop_vars("data_type", errors="ignore")
                      for k, v in {"diff": d, "lo": lo, "hi": hi, "p_positive": frac}.items()})
    out.attrs.update(a=a, b=b, ci=ci)
    return out


def difference_table(diff: xr.Dataset, digits: int = 3) -> pd.DataFrame:
    rows = []
    for m in diff["model"].values:
        for a in diff["attack"].values:
            for r in diff["reading"].values:
                s = diff.sel(model=m, attack=a, reading=r)
                d, lo, hi = float(s["diff"]), float(s["lo"]), float(s["hi"])
                verdict = ("undefined (flat RR)" if not np.isfinite(d) else
                           f"{diff.attrs['a']} more linear" if lo > 0 else
                           f"{diff.attrs['b']} more linear" if hi < 0 else "no clear difference")
                rows.append({"model": str(m), "attack": str(a), "tolerance": "b" if r == "b" else "ε",
                             "ΔR²": round(d, digits), "CI": f"[{lo:.{digits}f}, {hi:.{digits}f}]",
                             "verdict": verdict})
    return pd.DataFrame(rows)


def verdict_counts(diff: xr.Dataset) -> dict[str, int]:
    """How many (model, attack, reading) cells have a CI above 0, below 0, or covering 0."""
    lo, hi, d = diff["lo"].values, diff["hi"].values, diff["diff"].values
    ok = np.isfinite(d)
    return {"a_more_linear": int((ok & (lo > 0)).sum()), "b_more_linear": int((ok & (hi < 0)).sum()),
            "unclear": int((ok & (lo <= 0) & (hi >= 0)).sum()), "undefined": int((~ok).sum()), "cells": int(d.size)}


def delta_linf_ok(frames: torch.Tensor, adv: torch.Tensor, eps: float | np.ndarray, tol: float = _TOL) -> bool:
    """``||adv − frames||∞ <= eps (+tol)`` for every frame and ``adv`` in [0, 1]."""
    d = (adv - frames).reshape(len(frames), -1).abs().amax(1).double().cpu().numpy()
    e = np.broadcast_to(np.asarray(eps, dtype=float), d.shape)
    return bool((d <= e + tol).all() and float(adv.min()) >= 0 and float(adv.max()) <= 1)


__all__ = ["AGGREGATES", "MODES", "DATA_TYPES", "VideoFrames", "ProgressiveAttack", "check_aggregate",
           "check_modes", "select_frames", "load_video_frames", "skipped_table", "video_scores", "video_records",
           "progressive_factory", "video_attack_records", "ra_rr_summary", "image_records", "fit_lines", "linearity",
           "linearity_table", "r2_difference", "difference_table", "verdict_counts", "ramp_eps", "delta_linf_ok"]
