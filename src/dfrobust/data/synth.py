"""Embedded synthetic deepfake benchmark: still images and H.264 videos, six demographic groups.

Everything is generated from a seed, without downloads:

* **real faces** come from :mod:`dfrobust.data.render` (identities drawn from per-group
  distributions of skin tone and facial proportions, per-image pose, expression, lighting,
  background, camera noise and JPEG compression);
* **fakes** reproduce the traces deepfake pipelines leave:
  ``faceswap`` - the inner face of a *source* identity, rendered under the target frame's
  pose/expression/lighting at reduced resolution, upsampled with generator-like checkerboard
  artefacts, colour-mismatched, blended into the target frame with a feathered or hard mask;
  ``reenactment`` - the target's own mouth/expression region re-rendered with another
  expression, at reduced resolution, slightly warped and blended back.
  A per-sample ``strength`` in [0, 1] scales every artefact, so detection is learnable but not
  trivial; the range is a parameter (``strength``);
* every fake records the real frame it was made from (``pair_id``);
* **videos** are short clips (length and ``fps`` per profile in study.yml) with smooth head motion, blinks and mouth
  movement; fake clips are swapped frame by frame with temporally jittered masks and colour
  (flicker); they are written as H.264 mp4 (CRF 23, like FF++ c23) in the FaceForensics++
  folder layout, so the *same* preparation code (:mod:`dfrobust.data.prepare`) reads them;
* splits are by identity (train/val/test, 60/20/20 within every group); videos use held-out
  identities (``video_splits``, test by default) because they serve video-level evaluation.

Why hand-written: no maintained package generates labelled, demographically balanced
face-swap data offline. The parts that exist are used: OpenCV for drawing/warping/JPEG,
PyAV for H.264, scikit-learn for the colour baseline.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ..core import paths
from ..core.profiles import settings
from .manifest import GROUPS, atomic_write, load_manifest, read_rgb, save_manifest
from .render import SIZE, Conditions, Identity, _background, camera, render, sample_conditions, sample_identity

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2"

#: n_per_group = real images per group (as many fakes again); n_jobs = worker processes (results do
#: not depend on it: every sample has its own seed).
#: defaults for direct library use; the per-profile sizes are ``settings.synthetic`` in notebooks/study.yml
COMMON: dict[str, Any] = dict(strength=(0.3, 1.0), split_fractions=(0.6, 0.2, 0.2),
                              manipulations=("faceswap", "reenactment"), video_splits=("test",), n_jobs=1)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


_CHECKER = None


def _checker() -> np.ndarray:
    """Period-2 checkerboard plus a period-4 grid: the print of transposed-convolution upsampling."""
    global _CHECKER
    if _CHECKER is None:
        y, x = np.mgrid[0:SIZE, 0:SIZE]
        c2 = ((x + y) % 2) * 2.0 - 1.0
        c4 = (((x // 2) + (y // 2)) % 2) * 2.0 - 1.0
        _CHECKER = (0.6 * c2 + 0.4 * c4).astype(np.float32)
    return _CHECKER


def _mask(m: np.ndarray, rng: np.random.Generator, strength: float, hard_p: float | None = None,
          sigma: float | None = None) -> np.ndarray:
    hard = rng.random() < (0.15 + 0.35 * strength if hard_p is None else hard_p)
    if hard:
        return (m > 0.5).astype(np.float32)
    s = rng.uniform(1.5, 6.0) if sigma is None else sigma
    return cv2.GaussianBlur((m > 0.5).astype(np.float32), (0, 0), s)


def _generator_look(img: np.ndarray, rng: np.random.Generator, strength: float, res_lo: float, res_hi: float,
                    checker: float) -> tuple[np.ndarray, float]:
    """Downsample to a generator's working resolution and upsample back with checkerboard artefacts."""
    r = _lerp(res_hi, res_lo, strength) * rng.uniform(0.9, 1.1)
    n = max(16, int(SIZE * r))
    lo = cv2.resize(img, (n, n), interpolation=cv2.INTER_AREA)
    up = cv2.resize(lo, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    amp = checker * strength * rng.uniform(0.5, 1.5)
    up = up + amp * _checker()[..., None] * (0.3 + up)
    return up, r


def faceswap(target: Identity, source: Identity, c: Conditions, rng: np.random.Generator, strength: float,
             base: tuple[np.ndarray, dict] | None = None, jitter: dict | None = None) -> tuple[np.ndarray, dict]:
    """Swap ``source``'s inner face into ``target``'s frame (clean float image, artefact info).

    ``base`` is the target's clean render (reused from the real frame); ``jitter`` (videos)
    fixes the clip-level colour shift/mask softness and adds per-frame flicker.
    """
    T, geo = base if base is not None else render(target, c)
    S, _ = render(source, c)
    up, r = _generator_look(S, rng, strength, 0.16, 0.42, 0.08)
    if jitter is None:
        delta = rng.normal(0, 0.04 + 0.08 * strength, 3)
        m = _mask(geo["inner_mask"], rng, strength)
    else:
        delta = jitter["delta"] + rng.normal(0, jitter["flicker"], 3)
        mm = geo["inner_mask"]
        k = int(rng.integers(-2, 3))
        if k:
            mm = (cv2.dilate if k > 0 else cv2.erode)(mm, np.ones((abs(k) * 2 + 1,) * 2, np.uint8))
        m = _mask(mm, rng, strength, hard_p=float(jitter["hard"]), sigma=jitter["sigma"] * rng.uniform(0.7, 1.3))
    up = up * (1 + delta.astype(np.float32))[None, None]
    m = m[..., None]
    out = m * up + (1 - m) * T
    return np.clip(out, 0, 1).astype(np.float32), {"resolution": r, "colour_delta": float(np.abs(delta).mean())}


def reenactment(target: Identity, c: Conditions, rng: np.random.Generator, strength: float,
                base: tuple[np.ndarray, dict] | None = None) -> tuple[np.ndarray, dict]:
    """Re-render ``target``'s mouth/expression region with another expression, warp and blend it back."""
    T, geo = base if base is not None else render(target, c)
    c2 = copy.copy(c)
    c2.mouth_open = float(np.clip(1 - c.mouth_open + rng.normal(0, 0.2), 0, 1))
    c2.smile = float(np.clip(rng.uniform(-0.3, 1.0), -0.3, 1.0))
    c2.brow_raise = float(rng.uniform(-0.6, 1.0))
    R, geo2 = render(target, c2, background=None)
    up, r = _generator_look(R, rng, strength, 0.16, 0.42, 0.08)
    # smooth random warp of the edited region
    amp = 1.0 + 3.0 * strength
    field = cv2.resize(rng.normal(0, amp, (2, 6, 6)).astype(np.float32).transpose(1, 2, 0), (SIZE, SIZE),
                       interpolation=cv2.INTER_CUBIC)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    up = cv2.remap(up, x + field[..., 0], y + field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    region = np.maximum(geo["mouth_mask"], geo2["mouth_mask"])
    m = _mask(region, rng, strength)
    delta = rng.normal(0, 0.03 + 0.06 * strength, 3).astype(np.float32)
    m = m[..., None]
    out = m * up * (1 + delta)[None, None] + (1 - m) * T
    return np.clip(out, 0, 1).astype(np.float32), {"resolution": r, "colour_delta": float(np.abs(delta).mean())}


def _finish(img: np.ndarray, c: Conditions, rng: np.random.Generator, size: int) -> np.ndarray:
    if size != SIZE:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return camera(img, c, rng, jpeg=False)


def _write_jpg(path: Path, rgb: np.ndarray, quality: int) -> None:
    """Encode with OpenCV, write with Python, so a failed write (disk full) raises instead of
    returning False; the error is one line naming the file."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    try:
        Path(path).write_bytes(buf.tobytes())
    except OSError as exc:
        raise OSError(exc.errno, f"{path}: cannot write ({exc.strerror or exc})") from None


def _removing_on_error(folder: Path, what: str):
    """Context: on OSError (disk full, permissions) remove the half-written ``folder`` and re-raise one
    line naming the file, saying nothing was kept."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            msg = str(exc.strerror or exc) if exc.filename is None else f"{exc.filename}: {exc.strerror or exc}"
            raise OSError(exc.errno, f"{msg}; the partial {what} under {folder} was removed "
                          "(free space and run again)") from None
    return guard()


# ---------------------------------------------------------------------------------------- images

def _pair_job(job: dict) -> dict:
    """Render one real image and its fake; write both JPEGs (same camera quality)."""
    rng = np.random.default_rng(np.random.SeedSequence(job["seed_key"]))
    c = sample_conditions(rng)
    strength = float(rng.uniform(*job["strength"]))
    target = job["identity"]
    base = render(target, c)
    real = _finish(base[0], c, rng, job["size"])
    if job["manipulation"] == "faceswap":
        fake, info = faceswap(target, job["source"], c, rng, strength, base=base)
    else:
        fake, info = reenactment(target, c, rng, strength, base=base)
    fake = _finish(fake, c, rng, job["size"])
    _write_jpg(job["real_path"], real, c.jpeg)
    _write_jpg(job["fake_path"], fake, c.jpeg)
    return {"strength": strength, "jpeg_quality": c.jpeg, "yaw": c.yaw, "roll": c.roll,
            "resolution": info["resolution"], "colour_delta": info["colour_delta"]}


def _identities(seed: int, n_identities: int, split_fractions) -> pd.DataFrame:
    """Identities per group with their split (by identity, the same fractions in every group)."""
    rows = []
    fr = np.asarray(split_fractions, float)
    n_val = max(1, int(round(fr[1] * n_identities)))
    n_test = max(1, int(round(fr[2] * n_identities)))
    n_train = n_identities - n_val - n_test
    if n_train < 1:
        raise ValueError(f"n_identities={n_identities}: too few for train/val/test splits {tuple(fr)}; expected >= 3")
    gi = 0
    for g_idx, g in enumerate(GROUPS):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, g_idx]))
        splits = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)[rng.permutation(n_identities)]
        for k in range(n_identities):
            ident = sample_identity(rng, g, f"id{gi:03d}")
            rows.append({"identity": ident.name, "group": g, "split": splits[k], "index": gi, "obj": ident})
            gi += 1
    return pd.DataFrame(rows)


def _check_kwargs(kw: dict) -> None:
    for k in ("n_per_group", "n_identities", "size", "n_videos", "fps", "frames_per_video"):
        v = kw[k]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if k == "n_videos" else 1):
            raise ValueError(f"{k}={v!r}: expected a positive int")
    if kw["n_per_group"] < kw["n_identities"]:
        raise ValueError(f"n_per_group={kw['n_per_group']} < n_identities={kw['n_identities']}: "
                         "expected at least one image per identity")
    if not (16 <= kw["size"] <= SIZE):
        raise ValueError(f"size={kw['size']}: expected 16..{SIZE} pixels")
    lo, hi = kw["strength"]
    if not (0 <= lo <= hi <= 1):
        raise ValueError(f"strength={kw['strength']!r}: expected (lo, hi) with 0 <= lo <= hi <= 1")
    bad = set(kw["manipulations"]) - {"faceswap", "reenactment"}
    if bad or not kw["manipulations"]:
        raise ValueError(f"manipulations={kw['manipulations']!r}: expected a subset of ('faceswap', 'reenactment')")
    if not (isinstance(kw["video_seconds"], (int, float)) and kw["video_seconds"] > 0):
        raise ValueError(f"video_seconds={kw['video_seconds']!r}: expected a positive number")


def resolve(profile: str, **overrides: Any) -> dict[str, Any]:
    """Generator kwargs of ``profile`` with ``overrides`` applied and checked (no work done)."""
    kw = {**COMMON, **settings("synthetic", profile)}
    unknown = set(overrides) - set(kw)
    if unknown:
        raise ValueError(f"unknown synthetic-data option(s) {sorted(unknown)}; expected some of {sorted(kw)}")
    kw.update(overrides)
    kw["strength"] = tuple(float(x) for x in kw["strength"])
    kw["manipulations"] = tuple(kw["manipulations"])
    kw["video_splits"] = tuple(kw["video_splits"])
    kw["split_fractions"] = tuple(float(x) for x in kw["split_fractions"])
    _check_kwargs(kw)
    return kw


def _key(seed: int, kw: dict, what: str) -> str:
    spec = {k: v for k, v in kw.items() if k != "n_jobs"}
    spec.update(seed=seed, what=what, version=GENERATOR_VERSION)
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


def dataset_dir(profile: str, seed: int = 0, **overrides: Any) -> Path:
    """Folder (under ``paths.synth_dir()``) that holds the synthetic data of these parameters."""
    kw = resolve(profile, **overrides)
    return paths.synth_dir() / f"{profile}-s{seed}-{_key(seed, kw, 'data')}"


def _run_jobs(fn, jobs: list[dict], n_jobs: int) -> list[dict]:
    if n_jobs <= 1 or len(jobs) < 8:
        return [fn(j) for j in jobs]
    import multiprocessing as mp

    # spawn, not fork: the caller may be a Jupyter kernel with torch's thread pools already running
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(fn, jobs, chunksize=max(1, len(jobs) // (8 * n_jobs))))


def generate_images(profile: str = "quick", seed: int = 0, *, out_dir: str | os.PathLike | None = None,
                    force: bool = False, **overrides: Any) -> Path:
    """Generate (or reuse) the synthetic still images; return the manifest path.

    Real/fake pairs per group = ``n_per_group``; identities split 60/20/20 per group.
    """
    kw = resolve(profile, **overrides)
    root = Path(out_dir) if out_dir is not None else dataset_dir(profile, seed, **overrides)
    mpath = root / "images" / "manifest.csv"
    if mpath.is_file() and not force:
        return mpath
    t0 = time.perf_counter()
    img_dir = root / "images"
    if img_dir.exists():
        shutil.rmtree(img_dir)
    with _removing_on_error(img_dir, "synthetic images"):
        return _generate_images(profile, seed, kw, root, img_dir, mpath, t0)


def _generate_images(profile: str, seed: int, kw: dict, root: Path, img_dir: Path, mpath: Path, t0: float) -> Path:
    (img_dir / "real").mkdir(parents=True)
    (img_dir / "fake").mkdir(parents=True)
    ids = _identities(seed, kw["n_identities"], kw["split_fractions"])
    jobs, rows = [], []
    for g_idx, g in enumerate(GROUPS):
        gid = ids[ids.group == g].reset_index(drop=True)
        pick = np.random.default_rng(np.random.SeedSequence([seed, 2, g_idx]))
        for i in range(kw["n_per_group"]):
            t = gid.iloc[i % len(gid)]
            manip = kw["manipulations"][(i + i // len(gid)) % len(kw["manipulations"])]
            same = gid[(gid.split == t.split) & (gid.identity != t.identity)]
            if manip == "faceswap" and len(same) == 0:
                same = gid[gid.identity != t.identity]
            src = same.iloc[int(pick.integers(len(same)))] if manip == "faceswap" else None
            name = f"{g}_{i:04d}"
            jobs.append({"seed_key": [seed, 3, g_idx, i], "identity": t.obj, "source": None if src is None else src.obj,
                         "manipulation": manip, "strength": kw["strength"], "size": kw["size"],
                         "real_path": img_dir / "real" / f"{name}.jpg", "fake_path": img_dir / "fake" / f"{name}.jpg"})
            common = {"dataset": "synthetic", "video_id": "", "frame_index": -1, "group": g,
                      "identity": t.identity, "pair_id": name, "split": t.split}
            rows.append({"path": str(img_dir / "real" / f"{name}.jpg"), "label": 0, "manipulation": "none",
                         **common, "source_identity": ""})
            rows.append({"path": str(img_dir / "fake" / f"{name}.jpg"), "label": 1, "manipulation": manip,
                         **common, "source_identity": "" if src is None else src.identity})
    infos = _run_jobs(_pair_job, jobs, kw["n_jobs"])
    for k, info in enumerate(infos):
        for row in rows[2 * k: 2 * k + 2]:
            row.update({key: (info[key] if row["label"] == 1 or key in ("jpeg_quality", "yaw", "roll") else 0.0)
                        for key in info})
    df = pd.DataFrame(rows)
    elapsed = time.perf_counter() - t0
    meta = {"synthetic": True, "kind": "images", "profile": profile, "seed": seed, "generator": kw,
            "generator_version": GENERATOR_VERSION, "identities": ids.drop(columns="obj").to_dict("records"),
            "n_images": len(df), "generation_s": elapsed, "images_per_s": len(df) / max(elapsed, 1e-9),
            "n_jobs": kw["n_jobs"], "skipped": []}
    text = json.dumps([asdict(o) for o in ids.obj], default=lambda o: o.tolist() if isinstance(o, np.ndarray)
                      else str(o), indent=0)
    atomic_write(root / "identities.json", lambda tmp: Path(tmp).write_text(text))
    return save_manifest(df, mpath, meta)  # written last: the manifest marks complete data


# ---------------------------------------------------------------------------------------- videos

def _clip_conditions(rng: np.random.Generator, n: int, fps: int) -> list[Conditions]:
    """Per-frame conditions of a clip: smooth head motion, blinks, talking mouth."""
    base = sample_conditions(rng)
    t = np.arange(n) / fps
    yaw = base.yaw * 0.5 + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6.3))
    roll = base.roll * 0.5 + rng.uniform(2, 6) * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 6.3))
    dx = base.dx + rng.uniform(2, 6) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    dy = base.dy + rng.uniform(1, 4) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    talk = rng.uniform(0.3, 1.0)
    mouth = np.clip(talk * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6.3)), 0, 1)
    eye = np.ones(n)
    dur = t[-1] + 1 / fps
    for tb in rng.uniform(0, dur, max(1, int(round(dur / 2)))):      # ~ one blink every 2 s
        eye = np.minimum(eye, np.clip(np.abs(t - tb) / 0.12, 0, 1))
    out = []
    for k in range(n):
        c = copy.copy(base)
        c.yaw, c.roll, c.dx, c.dy = float(np.clip(yaw[k], -0.6, 0.6)), float(roll[k]), float(dx[k]), float(dy[k])
        c.mouth_open, c.eye_open = float(mouth[k]), float(eye[k])
        out.append(c)
    return out


def _video_job(job: dict) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence(job["seed_key"]))
    n = max(2, int(round(job["seconds"] * job["fps"])))
    conds = _clip_conditions(rng, n, job["fps"])
    strength = float(rng.uniform(*job["strength"]))
    jitter = {"delta": rng.normal(0, 0.04 + 0.08 * strength, 3), "flicker": 0.01 + 0.02 * strength,
              "hard": float(rng.random() < 0.15 + 0.35 * strength), "sigma": rng.uniform(1.5, 6.0)}
    bg = _background(conds[0])
    size = job["size"] + job["size"] % 2
    real, fake = [], []
    for c in conds:
        base = render(job["identity"], c, background=bg)
        real.append(_finish(base[0], c, rng, size))
        f, _ = faceswap(job["identity"], job["source"], c, rng, strength, base=base, jitter=jitter)
        fake.append(_finish(f, c, rng, size))
    from .video import write_mp4
    write_mp4(np.stack(real), job["real_path"], job["fps"])
    write_mp4(np.stack(fake), job["fake_path"], job["fps"])
    return {"strength": strength, "n_frames": n}


def generate_videos(profile: str = "quick", seed: int = 0, *, out_dir: str | os.PathLike | None = None,
                    force: bool = False, **overrides: Any) -> Path:
    """Generate (or reuse) the synthetic clips in the FaceForensics++ layout; return that root.

    Layout: ``original_sequences/youtube/c23/videos/{t}.mp4``,
    ``manipulated_sequences/faceswap/c23/videos/{t}_{s}.mp4`` (identity ``t``'s clip with the face of
    identity ``s``), ``splits/{train,val,test}.json`` (pairs ``[t, s]``) and
    ``dfrobust_labels.csv`` (video_id → group, identity) that the FF++ reader picks up.
    """
    kw = resolve(profile, **overrides)
    root = (Path(out_dir) if out_dir is not None else dataset_dir(profile, seed, **overrides)) / "videos"
    done = root / "dfrobust_labels.csv"
    if done.is_file() and not force:
        return root
    t0 = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    with _removing_on_error(root, "synthetic videos"):
        return _generate_videos(profile, seed, kw, root, done, t0)


def _generate_videos(profile: str, seed: int, kw: dict, root: Path, done: Path, t0: float) -> Path:
    ids = _identities(seed, kw["n_identities"], kw["split_fractions"])
    real_dir = root / "original_sequences" / "youtube" / "c23" / "videos"
    fake_dir = root / "manipulated_sequences" / "faceswap" / "c23" / "videos"
    jobs, labels, splits = [], [], {s: [] for s in ("train", "val", "test")}
    for g_idx, g in enumerate(GROUPS):
        gid = ids[ids.group == g].reset_index(drop=True)
        pool = gid[gid.split.isin(kw["video_splits"])].reset_index(drop=True)
        if kw["n_videos"] > len(pool):
            raise ValueError(f"n_videos={kw['n_videos']}: only {len(pool)} identities per group in splits "
                             f"{kw['video_splits']}; raise n_identities or lower n_videos")
        pick = np.random.default_rng(np.random.SeedSequence([seed, 4, g_idx]))
        for v in range(kw["n_videos"]):
            t = pool.iloc[v]
            cand = gid[(gid.split == t.split) & (gid.identity != t.identity)]
            if len(cand) == 0:
                cand = gid[gid.identity != t.identity]
            s = cand.iloc[int(pick.integers(len(cand)))]
            tv, sv = f"{t['index']:03d}", f"{s['index']:03d}"
            jobs.append({"seed_key": [seed, 5, g_idx, v], "identity": t.obj, "source": s.obj, "fps": kw["fps"],
                         "seconds": kw["video_seconds"], "strength": kw["strength"], "size": kw["size"],
                         "real_path": real_dir / f"{tv}.mp4", "fake_path": fake_dir / f"{tv}_{sv}.mp4"})
            labels.append({"video_id": tv, "group": g, "identity": t.identity, "split": t.split})
            labels.append({"video_id": f"{tv}_{sv}", "group": g, "identity": t.identity, "split": t.split})
            splits[t.split].append([tv, sv])
    infos = _run_jobs(_video_job, jobs, kw["n_jobs"])
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for s, pairs in splits.items():
        (root / "splits" / f"{s}.json").write_text(json.dumps(pairs, indent=1))
    (root / "dfrobust_meta.json").write_text(json.dumps(
        {"synthetic": True, "profile": profile, "seed": seed, "generator": kw, "generator_version": GENERATOR_VERSION,
         "videos": [{"real": str(j["real_path"].name), "fake": str(j["fake_path"].name), **i} for j, i in zip(jobs, infos)],
         "generation_s": time.perf_counter() - t0}, indent=1, default=str))
    lab = pd.DataFrame(labels)
    lab["dataset"] = "synthetic"
    lab.to_csv(done, index=False)
    return root


def generate(profile: str = "quick", seed: int = 0, kind: str = "images", **overrides: Any) -> Path:
    """Generate (or reuse) the synthetic data of ``profile``; return the manifest path of ``kind``.

    ``kind`` is ``images`` or ``video_frames`` (clips generated, then prepared by the same code
    path as real FF++ videos). Overrides are any keys of ``settings.synthetic`` in study.yml / ``COMMON``.
    """
    if kind not in ("images", "video_frames"):
        raise ValueError(f"kind={kind!r}: expected 'images' or 'video_frames'")
    resolve(profile, **overrides)
    if kind == "images":
        return generate_images(profile, seed, **overrides)
    from .prepare import prepare

    kw = resolve(profile, **overrides)
    root = generate_videos(profile, seed, **overrides)
    return prepare(root, layout="ffpp", n_frames=kw["frames_per_video"], size=kw["size"], detector="none",
                   out_dir=root.parent / "video_frames", compression="c23")


def dataset_for_profile(profile: str, kind: str = "images", *, seed: int = 0, **overrides: Any) -> pd.DataFrame:
    """The synthetic manifest of ``profile`` (generated on first use) as a DataFrame."""
    return load_manifest(generate(profile, seed, kind, **overrides))


# ---------------------------------------------------------------------------------------- baseline

def colour_features(df: pd.DataFrame) -> np.ndarray:
    """Per-channel mean and standard deviation of every whole image: [N, 6]."""
    feats = np.empty((len(df), 6), np.float64)
    for i, p in enumerate(df["path"]):
        x = read_rgb(p).reshape(-1, 3).astype(np.float64) / 255.0
        feats[i, :3], feats[i, 3:] = x.mean(0), x.std(0)
    return feats


def colour_baseline(df: pd.DataFrame, *, train_splits=("train", "val"), test_split: str = "test",
                    seed: int = 0) -> dict[str, float]:
    """Trivial baseline: logistic regression on per-channel colour means/stds of the whole image.

    Trained on ``train_splits`` identities, scored on ``test_split`` (held-out identities).
    A benchmark where this baseline does well leaks the label through global colour statistics.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, te = df[df.split.isin(train_splits)], df[df.split == test_split]
    if len(tr) == 0 or len(te) == 0:
        raise ValueError(f"colour_baseline: need rows in splits {train_splits} and {test_split!r}; "
                         f"got {len(tr)} and {len(te)}")
    if tr.label.nunique() < 2:
        raise ValueError("colour_baseline: the training rows hold only one class")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    clf.fit(colour_features(tr), tr.label.to_numpy())
    pred = clf.predict(colour_features(te))
    return {"accuracy": float((pred == te.label.to_numpy()).mean()), "n_train": int(len(tr)), "n_test": int(len(te))}
