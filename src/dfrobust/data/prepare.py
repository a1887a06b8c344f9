"""Real-dataset preparation: official layouts → face crops → the manifest.

Readers (``list_media``) for the official folder layouts:

* ``ffpp`` - FaceForensics++: ``original_sequences/youtube/{c0,c23,c40}/videos/{a}.mp4``,
  ``manipulated_sequences/{Deepfakes,Face2Face,FaceSwap,NeuralTextures,...}/{c..}/videos/{a}_{b}.mp4``
  (video ``a`` with the face/expression of ``b``), ``splits/{train,val,test}.json`` (lists of
  ``[a, b]`` pairs);
* ``celebdf`` - Celeb-DF-v2: ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/`` and
  ``List_of_testing_videos.txt`` (the test set; the rest is split train/val by identity);
* ``uadfv`` - UADFV: ``real/`` and ``fake/`` (``{k}.mp4`` and ``{k}_fake.mp4``);
* ``folder`` - any ``real/`` + ``fake/`` folder of images or videos.

An optional ``dfrobust_labels.csv`` at the root (``video_id, group, identity[, split, dataset]``)
adds demographic groups; the synthetic clips ship one.

``prepare`` samples ``n_frames`` frames EVENLY over each video (:func:`video.read_frames`),
finds the face with OpenCV's Haar cascade (:mod:`faces`), crops it with a margin, resizes and
caches the crop as PNG under ``paths.prepared_dir()``. Unreadable files and frames without a
face are skipped, counted and listed in the manifest meta; they never stop the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ..core import paths
from .faces import HaarFaceDetector, crop_face
from .manifest import GROUPS, load_manifest, read_rgb, save_manifest
from .video import read_frames

LAYOUTS = ("ffpp", "celebdf", "uadfv", "folder")
DETECTORS = ("haar", "none")
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
COMPRESSIONS = ("c0", "c23", "c40", "raw")
LABELS_FILE = "dfrobust_labels.csv"
MEDIA_COLUMNS = ["path", "label", "dataset", "manipulation", "video_id", "identity", "pair_video", "split",
                 "group", "media"]


def _hash_split(key: str, seed: int = 0, fractions=(0.7, 0.15, 0.15)) -> str:
    u = int(hashlib.md5(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 2**32
    return "train" if u < fractions[0] else ("val" if u < fractions[0] + fractions[1] else "test")


def _check_root(root: str | os.PathLike) -> Path:
    if root is None or str(root) == "":
        raise ValueError("root is empty: expected the folder of a dataset (FF++, Celeb-DF-v2, UADFV or real/+fake/)")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"dataset root {p} does not exist or is not a folder")
    return p.resolve()


def detect_layout(root: str | os.PathLike) -> str:
    """Which of ``LAYOUTS`` the folder follows; ValueError naming what was found otherwise."""
    root = _check_root(root)
    if (root / "original_sequences").is_dir() or (root / "manipulated_sequences").is_dir():
        return "ffpp"
    if (root / "Celeb-synthesis").is_dir() or (root / "Celeb-real").is_dir():
        return "celebdf"
    if (root / "real").is_dir() and (root / "fake").is_dir():
        vids = [p for p in (root / "fake").iterdir() if p.suffix.lower() in VIDEO_EXT]
        if vids and all(p.stem.endswith("_fake") for p in vids):
            return "uadfv"
        return "folder"
    found = sorted(p.name for p in root.iterdir())[:10]
    raise ValueError(f"unknown dataset layout at {root} (found {found}); expected one of {LAYOUTS}: "
                     "FF++ (original_sequences/, manipulated_sequences/), Celeb-DF-v2 (Celeb-real/, "
                     "Celeb-synthesis/), UADFV or a plain folder (real/ and fake/)")


def _files(folder: Path, exts) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts) if folder.is_dir() else []


def list_ffpp(root: Path, compression: str = "c23", manipulations=None, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression={compression!r}: expected one of {COMPRESSIONS}")
    notes: dict[str, Any] = {}
    split_of: dict[str, str] = {}
    sdir = root / "splits"
    for s in ("train", "val", "test"):
        f = sdir / f"{s}.json"
        if f.is_file():
            for pair in json.loads(f.read_text()):
                for vid in pair:
                    split_of[str(vid)] = s
    if not split_of:
        notes["splits"] = f"no official split files in {sdir}; splits assigned by a hash of the video id"
    rows = []
    for p in _files(root / "original_sequences" / "youtube" / compression / "videos", VIDEO_EXT):
        rows.append({"path": str(p), "label": 0, "manipulation": "none", "video_id": p.stem, "identity": p.stem,
                     "pair_video": p.stem})
    mroot = root / "manipulated_sequences"
    methods = sorted(d.name for d in mroot.iterdir() if d.is_dir()) if mroot.is_dir() else []
    if manipulations:
        methods = [m for m in methods if m in set(manipulations)]
    for m in methods:
        for p in _files(mroot / m / compression / "videos", VIDEO_EXT):
            a = p.stem.split("_")[0]
            rows.append({"path": str(p), "label": 1, "manipulation": m, "video_id": f"{m}/{p.stem}", "identity": a,
                         "pair_video": a})
    if not rows:
        raise ValueError(f"FF++ layout at {root} holds no videos for compression {compression!r} "
                         f"(looked in original_sequences/youtube/{compression}/videos and "
                         f"manipulated_sequences/*/{compression}/videos)")
    df = pd.DataFrame(rows)
    unlisted = [i for i in df.identity.unique() if i not in split_of]
    if split_of and unlisted:
        notes["unlisted_in_splits"] = sorted(unlisted)
    df["split"] = [split_of.get(i) or _hash_split(i, seed) for i in df.identity]
    df["dataset"] = "ffpp"
    return df, notes


def list_celebdf(root: Path, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    notes: dict[str, Any] = {}
    test = set()
    lst = root / "List_of_testing_videos.txt"
    if lst.is_file():
        for line in lst.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                test.add(parts[-1].replace("\\", "/"))
    else:
        notes["splits"] = f"{lst.name} missing; test split assigned by a hash of the identity"
    rows = []
    for sub, label in (("Celeb-real", 0), ("YouTube-real", 0), ("Celeb-synthesis", 1)):
        for p in _files(root / sub, VIDEO_EXT):
            stem = p.stem
            if sub == "Celeb-synthesis":   # id{a}_id{b}_{k}: video k of id a with the face of id b
                m = re.match(r"(id\d+)_(id\d+)_(\d+)", stem)
                ident, pair = (m.group(1), f"{m.group(1)}_{m.group(3)}") if m else (stem, "")
            elif sub == "Celeb-real":
                ident, pair = stem.split("_")[0], stem
            else:
                ident, pair = f"yt{stem}", stem
            rows.append({"path": str(p), "label": label, "manipulation": "celebdf_synthesis" if label else "none",
                         "video_id": f"{sub}/{stem}", "identity": ident, "pair_video": pair,
                         "rel": f"{sub}/{p.name}"})
    if not rows:
        raise ValueError(f"Celeb-DF-v2 layout at {root} holds no videos in Celeb-real/, YouTube-real/, Celeb-synthesis/")
    df = pd.DataFrame(rows)
    test_ids = set(df.identity[df.rel.isin(test)])
    df["split"] = ["test" if (r in test or (not test and _hash_split(i, seed) == "test")) else
                   _hash_split(i, seed, (0.85, 0.15, 0.0)) for r, i in zip(df.rel, df.identity)]
    notes["identities_in_both_test_and_train"] = int(len(test_ids & set(df.identity[df.split != "test"])))
    df["dataset"] = "celebdf"
    return df.drop(columns="rel"), notes


def list_uadfv(root: Path, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    rows = []
    for sub, label in (("real", 0), ("fake", 1)):
        for p in _files(root / sub, VIDEO_EXT):
            k = p.stem[:-5] if p.stem.endswith("_fake") else p.stem
            rows.append({"path": str(p), "label": label, "manipulation": "uadfv_faceswap" if label else "none",
                         "video_id": f"{sub}/{p.stem}", "identity": k, "pair_video": k})
    if not rows:
        raise ValueError(f"UADFV layout at {root} holds no videos in real/ and fake/")
    df = pd.DataFrame(rows)
    df["split"] = [_hash_split(i, seed) for i in df.identity]
    df["dataset"] = "uadfv"
    return df, {"splits": "UADFV has no official split: 70/15/15 by a hash of the clip id"}


def list_folder(root: Path, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    rows = []
    for sub, label in (("real", 0), ("fake", 1)):
        for p in _files(root / sub, VIDEO_EXT + IMAGE_EXT):
            media = "video" if p.suffix.lower() in VIDEO_EXT else "image"
            rel = str(p.relative_to(root / sub).with_suffix(""))
            rows.append({"path": str(p), "label": label, "manipulation": "unknown" if label else "none",
                         "video_id": f"{sub}/{rel}" if media == "video" else "", "identity": rel,
                         "pair_video": "", "media": media})
    if not rows:
        raise ValueError(f"folder layout at {root} holds no images or videos in real/ and fake/")
    df = pd.DataFrame(rows)
    df["split"] = [_hash_split(i, seed) for i in df.identity]
    df["dataset"] = "folder"
    return df, {"splits": "no official split: 70/15/15 by a hash of the file name"}


def list_media(root: str | os.PathLike, layout: str = "auto", *, compression: str = "c23", manipulations=None,
               seed: int = 0) -> pd.DataFrame:
    """One row per video (or image) of a dataset in one of ``LAYOUTS``; ``df.attrs['notes']``."""
    root = _check_root(root)
    if layout in ("auto", "", None):
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected 'auto' or one of {LAYOUTS}")
    if layout == "ffpp":
        df, notes = list_ffpp(root, compression, manipulations, seed)
    elif layout == "celebdf":
        df, notes = list_celebdf(root, seed)
    elif layout == "uadfv":
        df, notes = list_uadfv(root, seed)
    else:
        df, notes = list_folder(root, seed)
    if "media" not in df.columns:
        df["media"] = "video"
    df["group"] = ""
    lab = root / LABELS_FILE
    if lab.is_file():   # optional demographic labels (the synthetic clips ship them)
        labels = pd.read_csv(lab, dtype=str, keep_default_na=False).set_index("video_id")
        key = df.video_id.str.split("/").str[-1]
        for col in ("group", "identity", "split", "dataset"):
            if col in labels.columns:
                vals = key.map(labels[col])
                df[col] = np.where(vals.notna() & (vals != ""), vals, df[col])
        bad = sorted(set(df.group) - set(GROUPS) - {""})
        if bad:
            raise ValueError(f"{lab}: group values {bad}; expected one of {GROUPS}")
        notes["labels_file"] = str(lab)
    df.attrs["notes"] = {"layout": layout, **notes}
    return df[MEDIA_COLUMNS].reset_index(drop=True)


def _prep_key(root: Path, params: dict) -> str:
    return hashlib.sha1(json.dumps({"root": str(root), **params}, sort_keys=True, default=str).encode()).hexdigest()[:10]


def prepare(root: str | os.PathLike, *, layout: str = "auto", n_frames: int = 16, size: int = 256,
            margin: float = 1.3, detector: str = "haar", out_dir: str | os.PathLike | None = None,
            compression: str = "c23", manipulations=None, max_videos: int | None = None, seed: int = 0,
            force: bool = False) -> Path:
    """Sample frames evenly, crop faces, cache PNG crops; return the manifest path (one row per crop).

    ``max_videos`` caps the number of videos per (label, manipulation), chosen evenly over the
    sorted list (reproducible). ``detector='none'`` crops the central square instead of a face
    box (for face-centred frames such as the synthetic clips); it uses the same code path.
    """
    root = _check_root(root)
    for name, v, lo in (("n_frames", n_frames, 1), ("size", size, 16)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name}={v!r}: expected an int >= {lo}")
    if not (isinstance(margin, (int, float)) and margin >= 1.0):
        raise ValueError(f"margin={margin!r}: expected a number >= 1.0 (face box enlargement)")
    if detector not in DETECTORS:
        raise ValueError(f"detector={detector!r}: expected one of {DETECTORS}")
    if max_videos is not None and (not isinstance(max_videos, (int, np.integer)) or max_videos < 1):
        raise ValueError(f"max_videos={max_videos!r}: expected None or an int >= 1")
    media = list_media(root, layout, compression=compression, manipulations=manipulations, seed=seed)
    notes = media.attrs["notes"]
    params = {"layout": notes["layout"], "n_frames": int(n_frames), "size": int(size), "margin": float(margin),
              "detector": detector, "compression": compression, "manipulations": manipulations,
              "max_videos": max_videos, "seed": seed}
    out = Path(out_dir) if out_dir is not None else paths.prepared_dir() / f"{notes['layout']}-{_prep_key(root, params)}"
    mpath = out / "manifest.csv"
    if mpath.is_file() and not force:
        return mpath
    if max_videos is not None:
        parts = []
        for _, g in media.groupby(["label", "manipulation"], sort=True):
            idx = np.unique(np.linspace(0, len(g) - 1, min(max_videos, len(g))).round().astype(int))
            parts.append(g.iloc[idx])
        media = pd.concat(parts).sort_index()
    det = HaarFaceDetector() if detector == "haar" else None
    crops = out / "crops"
    t0 = time.perf_counter()
    rows, skipped, no_face = [], [], []
    n_sampled = 0
    for m in media.itertuples(index=False):
        try:
            if m.media == "video":
                frames, idx = read_frames(m.path, n_frames)
            else:
                frames, idx = read_rgb(m.path)[None], np.array([-1])
        except (ValueError, FileNotFoundError, OSError) as exc:
            skipped.append({"path": m.path, "reason": str(exc)})
            continue
        n_sampled += len(frames)
        sub = m.video_id if m.media == "video" else f"{'real' if m.label == 0 else 'fake'}/{m.identity}"
        d = crops / sub
        d.mkdir(parents=True, exist_ok=True)
        for fr, fi in zip(frames, idx):
            box = det(fr) if det is not None else None
            if det is not None and box is None:
                no_face.append({"path": m.path, "frame_index": int(fi), "reason": "no face detected"})
                continue
            crop = crop_face(fr, box, size=size, margin=margin)
            p = d / (f"{int(fi):05d}.png" if fi >= 0 else "image.png")
            cv2.imwrite(str(p), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            rows.append({"path": str(p), "label": int(m.label), "dataset": m.dataset, "manipulation": m.manipulation,
                         "video_id": m.video_id, "frame_index": int(fi), "group": m.group, "identity": m.identity,
                         "pair_id": f"{m.pair_video}#{int(fi)}" if m.pair_video else "", "split": m.split})
    df = pd.DataFrame(rows, columns=["path", "label", "dataset", "manipulation", "video_id", "frame_index", "group",
                                     "identity", "pair_id", "split"])
    if len(df):   # a pair_id survives only where a real frame and a fake frame share it
        both = df.groupby("pair_id").label.nunique()
        keep = set(both[both == 2].index)
        df["pair_id"] = [p if p in keep else "" for p in df.pair_id]
    synthetic = bool(len(df) and (df.dataset == "synthetic").all())
    meta = {"synthetic": synthetic, "kind": "video_frames", "root": str(root), "params": params, "notes": notes,
            "n_media": int(len(media)), "n_media_skipped": len(skipped), "n_frames_sampled": n_sampled,
            "n_frames_no_face": len(no_face), "face_rate": (n_sampled - len(no_face)) / n_sampled if n_sampled else 0.0,
            "skipped": skipped, "no_face": no_face, "prepare_s": time.perf_counter() - t0}
    if not len(df):
        raise ValueError(f"prepare: no usable frames in {root} ({len(skipped)} unreadable files, "
                         f"{len(no_face)} frames without a face); first problems: {(skipped + no_face)[:3]}")
    return save_manifest(df, mpath, meta)


def prepared_manifest(root: str | os.PathLike, **kw: Any) -> pd.DataFrame:
    """``prepare`` then load: the manifest DataFrame of a prepared dataset."""
    return load_manifest(prepare(root, **kw))
