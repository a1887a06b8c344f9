"""Real-dataset preparation: official layouts → face crops → the manifest.

Readers (``list_media``) for the official folder layouts:

* ``ffpp`` - FaceForensics++: ``original_sequences/youtube/{c0,c23,c40}/videos/{a}.mp4``,
  ``manipulated_sequences/{Deepfakes,Face2Face,FaceSwap,NeuralTextures,...}/{c..}/videos/{a}_{b}.mp4``
  (video ``a`` with the face/expression of ``b``), ``splits/{train,val,test}.json`` (lists of
  ``[a, b]`` pairs);
* ``celebdf`` - Celeb-DF-v2: ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/`` and
  ``List_of_testing_videos.txt`` (the test set; the rest is split train/val by identity);
* ``uadfv`` - UADFV: ``real/`` and ``fake/`` (``{k}.mp4`` and ``{k}_fake.mp4``);
* ``ffpp`` also reads ``original_sequences/actors`` + ``manipulated_sequences/DeepFakeDetection``
  (``{t}__{scene}.mp4``; fake ``{t}_{s}__{scene}__{code}.mp4``: actor t's scene with actor s's face);
* ``dfdc`` - DFDC: ``dfdc_train_part_*/metadata.json`` (or ``metadata.json`` at the root), each entry
  ``{"label": "FAKE"|"REAL", "split": ..., "original": "<real>.mp4"}``; ``original`` is the pair,
  listed files that are absent are reported;
* ``folder`` - any ``real/`` + ``fake/`` folder of images or videos; images are grouped into
  videos by sub-folder or by a video id read from the file name (``names``: ``<video>-<frame>-<face>``
  or ``<video>_<frame>``, recognised from the names, an ambiguous mixture refused; or ``group_regex``).

Every listed file stays inside the root: a ``metadata.json`` entry that is absolute or climbs out
with ``..`` is skipped, not read (listed under ``skipped`` with the reason). Folders that cannot be
listed are skipped and counted the same way, never taken for empty ones.

Splits never leak: every frame of a video and every image of an identity (or of one parsed
video id) gets one split; official split files win when present. Fakes whose original is
absent are flagged in the manifest meta with a count. ``crops=True`` (or auto-detection: a face
spanning most of the image in most sampled images, :func:`looks_cropped`) resizes
already-cropped faces without re-detecting them.

An optional ``dfrobust_labels.csv`` at the root (``video_id, group, identity[, split, dataset]``)
adds demographic groups; the synthetic clips ship one. It is checked (columns, split and group
values, duplicate ids) before any crop is written.

``prepare`` samples ``n_frames`` frames EVENLY over each video (:func:`video.read_frames`),
finds the face (MTCNN, or OpenCV's Haar cascade as the fallback; :mod:`faces`), keeps one
consistent face per video (:func:`faces.track`), crops it with a margin, resizes and caches
the crop as PNG under ``paths.prepared_dir()`` (or ``out_dir``): ``crops/<source path>.png`` for an
image, ``crops/<source path>/<frame>.png`` for a video (one crop name per source file). The cache
is keyed by the folder's content (relative paths, sizes, mtimes) and the options. Unreadable or
undecodable files (decompression bombs included), faces under ``min_face`` pixels and frames
without a face are skipped, counted and listed in the manifest meta (with a per-video detection
report and a warning for videos under ``min_face_rate``); they never stop the run. A run that
fails after it started writing crops removes what it wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ..core import paths
from .faces import (
    DETECTORS,
    HaarFaceDetector,  # noqa: F401 - tests patch its detect
    check_detect_side,
    crop_face,
    make_detector,
    resize_image,
    track,
)
from .manifest import GROUPS, META_NAME, SPLITS, load_manifest, read_rgb, save_manifest
from .video import read_frames

log = logging.getLogger(__name__)

LAYOUTS = ("ffpp", "dfdc", "celebdf", "uadfv", "folder")
PREPARE_VERSION = "3"
_NUMBER = r"[-_. ](?:frame|frm|img|face|f)?[-_]?\d+"
#: ``names=``: the video id of an image file name is what precedes its trailing number(s):
#: ``video-frame-face``: ``abc-0012-0`` → ``abc``; ``video-frame``: ``abc_0012`` → ``abc``,
#: ``000_003_frame45`` → ``000_003`` (``0001`` has no id and stays ``0001``)
NAMES = {"video-frame-face": rf"^(?P<id>.+?)(?:{_NUMBER}){{2}}$", "video-frame": rf"^(?P<id>.+?){_NUMBER}$"}
#: a number ending a name below this is read as a face index (``<video>-<frame>-<face>``), else as a frame
FACE_INDEX_MAX = 10
#: crops auto-detection: images at most this many pixels on their longest side ...
CROPS_MAX_SIDE = 512
#: ... where a detected face's longest side spans at least this share of the image's short side
#: (a 1.3x crop: 0.77; a face in a full frame: typically under 0.3) ...
CROPS_COVER = 0.5
#: ... in at least half of this many images sampled evenly over the dataset; smaller images are enlarged
#: to this short side before detection (MesoNet's 4 sample faces cut to 8 crops 50-80 px wide: MTCNN found a
#: covering face in 4 of 8 as they are, 6 of 8 enlarged)
CROPS_SAMPLE = 16
CROPS_DETECT_SHORT = 160
#: smallest face kept (pixels on the short side of the face box, or of the whole image in crops mode
#: and with ``detector='none'``): a smaller face upscaled to ``size`` carries no detail to classify
MIN_FACE = 32
#: crop size range: the detectors read 256 px (MesoNet) to 299 px (Xception) and faces in the video
#: datasets are rarely above 500 px, so a larger crop only upsamples (1024 px: 3 MB per crop in memory)
SIZE_RANGE = (16, 1024)
#: face box enlargement: 1 = the box itself, FF++ uses 1.3; at 4 the face fills 1/16 of the crop
MARGIN_RANGE = (1.0, 4.0)
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


def _dfdc_metadata(root: Path) -> list[Path]:
    return [root / "metadata.json"] if (root / "metadata.json").is_file() else sorted(root.glob("*/metadata.json"))


def detect_layout(root: str | os.PathLike) -> str:
    """Which of ``LAYOUTS`` the folder follows; ValueError naming what was found otherwise."""
    root = _check_root(root)
    if (root / "original_sequences").is_dir() or (root / "manipulated_sequences").is_dir():
        return "ffpp"
    if _dfdc_metadata(root):
        return "dfdc"
    if (root / "Celeb-synthesis").is_dir() or (root / "Celeb-real").is_dir():
        return "celebdf"
    if (root / "real").is_dir() and (root / "fake").is_dir():
        vids = [p for p in (root / "fake").iterdir() if p.suffix.lower() in VIDEO_EXT]
        if vids and all(p.stem.endswith("_fake") for p in vids):
            return "uadfv"
        return "folder"
    found = sorted(p.name for p in root.iterdir())[:10]
    raise ValueError(f"unknown dataset layout at {root} (found {found}); expected one of {LAYOUTS}: "
                     "FF++ (original_sequences/, manipulated_sequences/), DFDC (*/metadata.json), Celeb-DF-v2 (Celeb-real/, "
                     "Celeb-synthesis/), UADFV or a plain folder (real/ and fake/)")


def _files(folder: Path, exts, unreadable: list[dict]) -> list[Path]:
    """Files under ``folder`` ending in one of ``exts``, sorted; folders that cannot be listed go to ``unreadable``.

    ``os.walk`` reports a folder it cannot list (``pathlib``'s ``rglob`` silently skips it, so an
    unreadable folder looked empty). Symbolic links to folders are not followed (as ``rglob``).
    """
    def fail(exc: OSError) -> None:
        why = exc.strerror or type(exc).__name__
        unreadable.append({"path": str(exc.filename or folder),
                           "reason": f"folder not readable ({why}); its files were not listed"})

    if not folder.is_dir():
        return []
    return sorted(Path(d) / f for d, _, names in os.walk(folder, onerror=fail) for f in names
                  if Path(f).suffix.lower() in exts)


def _unreadable_note(unreadable: list[dict]) -> dict:
    return {"unreadable": unreadable} if unreadable else {}


def _unreadable_tail(unreadable: list[dict]) -> str:
    return f"; {len(unreadable)} folders could not be read, first {unreadable[0]['path']}" if unreadable else ""


def _components(links: list[tuple[str, str]]) -> dict[str, str]:
    """Union-find: every id mapped to the smallest id of its linked group."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in links:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    return {x: find(x) for x in parent}


_DFD_FAKE = re.compile(r"^(\d+)_(\d+)__(.+?)__[^_]+$")


def list_ffpp(root: Path, compression: str = "c23", manipulations=None, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression={compression!r}: expected one of {COMPRESSIONS}")
    notes: dict[str, Any] = {}
    unreadable: list[dict] = []
    split_of: dict[str, str] = {}
    sdir = root / "splits"
    for s in ("train", "val", "test"):
        f = sdir / f"{s}.json"
        if f.is_file():
            for pair in json.loads(f.read_text()):
                for vid in pair:
                    split_of[str(vid)] = s
    rows = []
    for p in _files(root / "original_sequences" / "youtube" / compression / "videos", VIDEO_EXT, unreadable):
        rows.append({"path": str(p), "label": 0, "manipulation": "none", "video_id": p.stem, "identity": p.stem,
                     "pair_video": p.stem, "source": "", "split": split_of.get(p.stem, "")})
    for p in _files(root / "original_sequences" / "actors" / compression / "videos", VIDEO_EXT, unreadable):
        actor = p.stem.split("__")[0]
        rows.append({"path": str(p), "label": 0, "manipulation": "none", "video_id": f"actors/{p.stem}",
                     "identity": f"actor{actor}", "pair_video": f"actors/{p.stem}", "source": "", "split": ""})
    mroot = root / "manipulated_sequences"
    methods = sorted(d.name for d in mroot.iterdir() if d.is_dir()) if mroot.is_dir() else []
    if manipulations:
        methods = [m for m in methods if m in set(manipulations)]
    unparsed = []
    for m in methods:
        for p in _files(mroot / m / compression / "videos", VIDEO_EXT, unreadable):
            hit = _DFD_FAKE.match(p.stem)
            if m == "DeepFakeDetection" or hit:   # actors: {t}_{s}__{scene}__{code}
                if not hit:
                    unparsed.append(str(p.relative_to(root)))
                    continue
                t, src, scene = hit.groups()
                rows.append({"path": str(p), "label": 1, "manipulation": m, "video_id": f"{m}/{p.stem}",
                             "identity": f"actor{t}", "pair_video": f"actors/{t}__{scene}", "source": f"actor{src}",
                             "split": ""})
                continue
            a, _, b = p.stem.partition("_")
            rows.append({"path": str(p), "label": 1, "manipulation": m, "video_id": f"{m}/{p.stem}", "identity": a,
                         "pair_video": a, "source": b, "split": split_of.get(a, "")})
    if unparsed:
        notes["unparsed_files"] = unparsed
    notes.update(_unreadable_note(unreadable))
    if not rows:
        raise ValueError(f"FF++ layout at {root} holds no videos for compression {compression!r} "
                         f"(looked in original_sequences/{{youtube,actors}}/{compression}/videos and "
                         f"manipulated_sequences/*/{compression}/videos{_unreadable_tail(unreadable)})")
    df = pd.DataFrame(rows)
    yt = ~df.identity.str.startswith("actor")
    if not split_of and yt.any():
        notes["splits"] = f"no official split files in {sdir}; splits assigned by a hash of the linked video ids"
    unlisted = sorted(i for i in df.identity[yt].unique() if i not in split_of)
    if split_of and unlisted:
        notes["unlisted_in_splits"] = unlisted
    # without an official split, a fake a_b and the originals a and b share one split
    comp = _components([(i, s) for i, s in zip(df.identity[yt], df.source[yt]) if s] +
                       [(i, i) for i in df.identity[yt]])
    df["split_key"] = [comp.get(i, i) for i in df.identity]
    if (~yt).any():
        notes["actors_splits"] = ("actors / DeepFakeDetection have no official split: 70/15/15 by a hash of the "
                                  "actor in the video (the swapped-in face may belong to an actor of another split)")
    df["dataset"] = "ffpp"
    return df.drop(columns="source"), notes


def list_dfdc(root: Path, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """DFDC: one ``metadata.json`` per part folder (or at the root): file → label, split, original."""
    metas = _dfdc_metadata(root)
    if not metas:
        raise ValueError(f"DFDC layout at {root}: no metadata.json at the root or in its sub-folders")
    rows, missing, unlisted, outside, unreadable = [], [], [], [], []
    for mf in metas:
        try:
            entries = json.loads(mf.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{mf} is not valid JSON ({exc}); expected DFDC's metadata.json") from None
        if not isinstance(entries, dict):
            raise ValueError(f"{mf}: expected an object of file name -> {{label, split, original}}, "
                             f"got {type(entries).__name__}")
        part = "" if mf.parent == root else mf.parent.name
        for fname, e in sorted(entries.items()):
            lab = str(e.get("label", "")).upper() if isinstance(e, dict) else ""
            if lab not in ("FAKE", "REAL"):
                raise ValueError(f"{mf}: entry {fname!r} has label {e.get('label') if isinstance(e, dict) else e!r}; "
                                 "expected 'FAKE' or 'REAL'")
            if Path(fname).is_absolute() or ".." in Path(fname).parts:   # never read outside the root
                outside.append({"path": f"{mf.relative_to(root)}: {fname}", "reason": "listed in metadata.json "
                                "outside the dataset root (absolute or '..'); not read"})
                continue
            p = mf.parent / fname
            if not p.is_file():
                missing.append(f"{part}/{fname}" if part else fname)
                continue
            stem = Path(fname).stem
            orig = Path(str(e.get("original") or "")).stem if lab == "FAKE" else stem
            split = str(e.get("split") or "")
            rows.append({"path": str(p), "label": int(lab == "FAKE"), "manipulation": "dfdc" if lab == "FAKE" else "none",
                         "video_id": f"{part}/{stem}" if part else stem, "identity": orig or stem,
                         "pair_video": orig, "split": split if split in ("train", "val", "test") else ""})
        listed = set(entries)
        unlisted += [str(p.relative_to(root)) for p in _files(mf.parent, VIDEO_EXT, unreadable)
                     if p.parent == mf.parent and p.name not in listed]
    notes: dict[str, Any] = {"metadata_files": [str(m.relative_to(root)) for m in metas],
                             **_unreadable_note(unreadable)}
    if outside:
        notes["outside_root"] = outside
    if missing:
        notes["missing_files"] = {"count": len(missing), "files": missing}
    if unlisted:
        notes["unlisted_files"] = {"count": len(unlisted), "files": unlisted}
    if not rows:
        raise ValueError(f"DFDC layout at {root}: none of the files listed in {len(metas)} metadata.json exists")
    df = pd.DataFrame(rows)
    if df.split.replace("", np.nan).nunique() < 2:   # DFDC's training parts say 'train' for every video
        if (df.split != "").any():
            notes["splits"] = (f"metadata.json gives every video split {sorted(set(df.split) - {''})}; "
                               "splits assigned 70/15/15 by a hash of the original video (fakes with it)")
        df["split"] = ""
    df["dataset"] = "dfdc"
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
    rows, unreadable = [], []
    for sub, label in (("Celeb-real", 0), ("YouTube-real", 0), ("Celeb-synthesis", 1)):
        for p in _files(root / sub, VIDEO_EXT, unreadable):
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
    notes.update(_unreadable_note(unreadable))
    if not rows:
        raise ValueError(f"Celeb-DF-v2 layout at {root} holds no videos in Celeb-real/, YouTube-real/, "
                         f"Celeb-synthesis/{_unreadable_tail(unreadable)}")
    df = pd.DataFrame(rows)
    test_ids = set(df.identity[df.rel.isin(test)])
    df["split"] = ["test" if (r in test or (not test and _hash_split(i, seed) == "test")) else
                   _hash_split(i, seed, (0.85, 0.15, 0.0)) for r, i in zip(df.rel, df.identity)]
    notes["identities_in_both_test_and_train"] = int(len(test_ids & set(df.identity[df.split != "test"])))
    df["dataset"] = "celebdf"
    return df.drop(columns="rel"), notes


def list_uadfv(root: Path, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    rows, unreadable = [], []
    for sub, label in (("real", 0), ("fake", 1)):
        for p in _files(root / sub, VIDEO_EXT, unreadable):
            k = p.stem[:-5] if p.stem.endswith("_fake") else p.stem
            rows.append({"path": str(p), "label": label, "manipulation": "uadfv_faceswap" if label else "none",
                         "video_id": f"{sub}/{p.stem}", "identity": k, "pair_video": k})
    if not rows:
        raise ValueError(f"UADFV layout at {root} holds no videos in real/ and fake/{_unreadable_tail(unreadable)}")
    df = pd.DataFrame(rows)
    df["split"] = [_hash_split(i, seed) for i in df.identity]
    df["dataset"] = "uadfv"
    return df, {"splits": "UADFV has no official split: 70/15/15 by a hash of the clip id",
                **_unreadable_note(unreadable)}


def _image_group(rel: Path, regex: re.Pattern) -> str:
    """The video id of an image: its sub-folder, else the id parsed from its name, else its stem."""
    if len(rel.parts) > 1:
        return str(rel.parent)
    m = regex.match(rel.stem)
    if not m:
        return rel.stem
    return m.group("id") if "id" in regex.groupindex else m.group(1)


def read_names(stems: list[str], names: str = "auto") -> tuple[str, str]:
    """Which of :data:`NAMES` gives the video id of these file names, and why; ValueError when ambiguous.

    ``auto``: names ending in one number are ``<video>_<frame>``; names all ending in two numbers
    are ``<video>-<frame>-<face>`` when every last number is a face index (< ``FACE_INDEX_MAX``), else
    ``<video>_<frame>`` (the video id holding a number, as FF++'s ``000_003``). A mixture of
    one-number and two-number names whose last numbers are all small reads both ways: refused.
    """
    if names != "auto":
        return names, f"names={names!r}"
    two = [x for x in stems if re.match(NAMES["video-frame-face"], x)]
    if not two:
        return "video-frame", "no name ends in two numbers: <video>_<frame>"
    last = {x: int(re.search(r"\d+$", x).group()) for x in two}
    big = [x for x in two if last[x] >= FACE_INDEX_MAX]
    if big:
        return "video-frame", (f"{big[0]!r} ends in {last[big[0]]} (a frame, not a face index "
                               f"< {FACE_INDEX_MAX}): <video>_<frame>")
    two_set = set(two)
    one = [x for x in stems if x not in two_set and re.match(NAMES["video-frame"], x)]
    if one:
        vid = re.match(NAMES["video-frame"], two[0]).group("id")
        raise ValueError(f"names='auto': image names read two ways: {one[0]!r} is <video>_<frame> and {two[0]!r} "
                         f"is <video>-<frame>-<face> or <video>_<frame> of video {vid!r}; set "
                         "names='video-frame-face' or names='video-frame' (dfrobust data prepare --names ...), "
                         "or group_regex")
    return "video-frame-face", (f"every numbered name ends in two numbers, the last a face index "
                                f"< {FACE_INDEX_MAX}: <video>-<frame>-<face>")


def list_folder(root: Path, seed: int = 0, group_regex: str | None = None,
                names: str = "auto") -> tuple[pd.DataFrame, dict]:
    found, unreadable = [], []
    for sub, label in (("real", 0), ("fake", 1)):
        found += [(sub, label, p) for p in _files(root / sub, VIDEO_EXT + IMAGE_EXT, unreadable)]
    if not found:
        raise ValueError(f"folder layout at {root} holds no images or videos in real/ and fake/"
                         f"{_unreadable_tail(unreadable)}")
    if group_regex is not None:
        regex, how = _compile_group_regex(group_regex), f"group_regex={group_regex!r}"
    else:
        names, why = read_names([p.stem for sub, _, p in found if p.parent == root / sub
                                 and p.suffix.lower() in IMAGE_EXT], _check_names(names))
        regex, how = re.compile(NAMES[names]), f"names={names!r} ({why})"
    rows = []
    for sub, label, p in found:
        media = "video" if p.suffix.lower() in VIDEO_EXT else "image"
        rel = p.relative_to(root / sub)
        if media == "video":
            vid, ident = str(rel.with_suffix("")), _image_group(rel, regex)
        else:
            vid = ident = _image_group(rel, regex)
        rows.append({"path": str(p), "label": label, "manipulation": "unknown" if label else "none",
                     "video_id": f"{sub}/{vid}", "identity": ident, "pair_video": "", "media": media,
                     "split": ""})
    df = pd.DataFrame(rows)
    df["dataset"] = "folder"
    return df, {"splits": "no official split: 70/15/15 by a hash of the video id (sub-folder or name read with "
                          f"{how}); images of one video or identity share a split",
                "video_ids": how, **_unreadable_note(unreadable)}


def _check_names(names: str) -> str:
    if names != "auto" and names not in NAMES:
        raise ValueError(f"names={names!r}: expected 'auto' or one of {tuple(NAMES)} "
                         "(how image names give the video id)")
    return names


def _compile_group_regex(group_regex: str) -> re.Pattern:
    try:
        regex = re.compile(group_regex)
    except (re.error, TypeError) as exc:
        raise ValueError(f"group_regex={group_regex!r} is not a regular expression ({exc})") from None
    if regex.groups < 1:
        raise ValueError(f"group_regex={group_regex!r}: expected a group (?P<id>...) capturing the video id")
    return regex


def _finish_splits(df: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict]:
    """Official splits stay; every other row takes the split of its identity (or of its split_key hash)."""
    notes: dict[str, Any] = {}
    key = df["split_key"] if "split_key" in df.columns else df["identity"]
    official = df[df.split != ""].groupby("identity").split.agg(lambda s: s.mode().iloc[0])
    df["split"] = [s or official.get(i) or _hash_split(k, seed) for s, i, k in zip(df.split, df.identity, key)]
    both = df.groupby("identity").split.nunique()
    if (both > 1).any():   # only official lists can do this (Celeb-DF's test list names some train identities)
        notes["identities_straddling_splits"] = {"count": int((both > 1).sum()),
                                                 "identities": sorted(both[both > 1].index)[:50]}
    return df.drop(columns=[c for c in ("split_key",) if c in df.columns]), notes


def _orphans(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Fakes whose original is not in the dataset lose their pair and are counted."""
    reals = set(df.pair_video[df.label == 0])
    orphan = (df.label == 1) & (df.pair_video != "") & ~df.pair_video.isin(reals)
    no_orig = (df.label == 1) & (df.pair_video == "") & (df.dataset != "folder")
    bad = orphan | no_orig
    df.loc[bad, "pair_video"] = ""
    if not bad.any():
        return df, {}
    return df, {"fakes_without_original": {"count": int(bad.sum()), "videos": sorted(df.video_id[bad])[:200]}}


def _read_labels(lab: Path) -> pd.DataFrame:
    """``dfrobust_labels.csv`` indexed by video_id, checked whole (one line naming the file and the value)."""
    expected = "expected CSV columns video_id, group, identity[, split, dataset]"
    try:
        labels = pd.read_csv(lab, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, OSError) as exc:   # pandas' ParserError/EmptyDataError are ValueErrors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{lab}: not a readable labels file ({first}); {expected}") from None
    if "video_id" not in labels.columns:
        raise ValueError(f"{lab}: no video_id column (found {list(labels.columns)[:8]}); {expected}")
    dup = sorted(labels.video_id[labels.video_id.duplicated()].unique())
    if dup:
        raise ValueError(f"{lab}: video_id {dup[:5]} listed more than once; expected one row per video")
    for col, allowed in (("split", SPLITS), ("group", GROUPS)):
        bad = sorted(set(labels[col]) - set(allowed) - {""}) if col in labels.columns else []
        if bad:
            raise ValueError(f"{lab}: {col} value(s) {bad[:5]}; expected one of {allowed} or empty")
    return labels.set_index("video_id")


def list_media(root: str | os.PathLike, layout: str = "auto", *, compression: str = "c23", manipulations=None,
               seed: int = 0, group_regex: str | None = None, names: str = "auto") -> pd.DataFrame:
    """One row per video (or image) of a dataset in one of ``LAYOUTS``; ``df.attrs['notes']``."""
    root = _check_root(root)
    if layout in ("auto", "", None):
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected 'auto' or one of {LAYOUTS}")
    if layout == "ffpp":
        df, notes = list_ffpp(root, compression, manipulations, seed)
    elif layout == "dfdc":
        df, notes = list_dfdc(root, seed)
    elif layout == "celebdf":
        df, notes = list_celebdf(root, seed)
    elif layout == "uadfv":
        df, notes = list_uadfv(root, seed)
    else:
        df, notes = list_folder(root, seed, group_regex, names)
    if "media" not in df.columns:
        df["media"] = "video"
    df["group"] = ""
    lab = root / LABELS_FILE
    if lab.is_file():   # optional demographic labels (the synthetic clips ship them)
        labels = _read_labels(lab)
        key = df.video_id.str.split("/").str[-1]
        for col in ("group", "identity", "split", "dataset"):
            if col in labels.columns:
                vals = key.map(labels[col])
                df[col] = np.where(vals.notna() & (vals != ""), vals, df[col])
                if col == "identity" and "split_key" in df.columns:
                    df["split_key"] = np.where(vals.notna() & (vals != ""), vals, df["split_key"])
        notes["labels_file"] = str(lab)
    df, split_notes = _finish_splits(df, seed)
    df, orphan_notes = _orphans(df)
    df.attrs["notes"] = {"layout": layout, **notes, **split_notes, **orphan_notes}
    return df[MEDIA_COLUMNS].reset_index(drop=True)


def fingerprint(root: str | os.PathLike, exclude: Path | None = None) -> str:
    """Hash of a folder's content listing: relative path, size and mtime of every file (no reading)."""
    root = Path(root)
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if exclude is not None and (p == exclude or exclude in p.parents):
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        if p.is_file():
            h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _prep_key(root: Path, params: dict) -> str:
    return hashlib.sha1(json.dumps({"root": str(root), **params}, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _image_size(path: str) -> tuple[int, int] | None:
    """(height, width) from the image header (Pillow opens lazily: nothing is decoded); None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001 - any unreadable header: the file is judged (and skipped) when it is read
        return None


def looks_cropped(media: pd.DataFrame, detector, max_side: int = CROPS_MAX_SIDE,
                  sample: int = CROPS_SAMPLE) -> tuple[bool, str]:
    """Whether a dataset is already face crops, judged by content, and why.

    Crops: only images, every sampled one at most ``max_side`` pixels, and in at least half of
    ``sample`` images chosen evenly, ``detector`` (a :mod:`faces` detector) finds a face whose
    longest side spans at least ``CROPS_COVER`` of the image's short side. The aspect ratio does
    not matter (MTCNN crops are typically 4:5 or narrower).
    """
    if not len(media) or (media.media != "image").any():
        return False, "not every file is an image"
    idx = np.unique(np.linspace(0, len(media) - 1, min(sample, len(media))).round().astype(int))
    paths = list(media.path.iloc[idx])
    for p in paths:
        hw = _image_size(p)
        if hw is not None and max(hw) > max_side:
            return False, f"{Path(p).name} is {hw[1]}x{hw[0]} (crops are <= {max_side} px)"
    hits = n = 0
    for p in paths:
        try:
            rgb = read_rgb(p)
        except (ValueError, OSError):
            continue
        n += 1
        h, w = rgb.shape[:2]
        up = max(1.0, CROPS_DETECT_SHORT / min(h, w))
        if up > 1:
            rgb = cv2.resize(rgb, (round(w * up), round(h * up)), interpolation=cv2.INTER_LINEAR)
        hits += any(f.side >= CROPS_COVER * min(rgb.shape[:2]) for f in detector.detect(rgb))
    verdict = bool(n and 2 * hits >= n)
    return verdict, (f"a face spans >= {CROPS_COVER:.0%} of the short side in {hits} of {n} sampled images "
                     f"({detector.name}; crops need at least half)")


def _check_options(n_frames, size, margin, min_face, detector, min_face_rate, min_confidence, crops,
                   max_videos) -> None:
    for name, v, (lo, hi) in (("n_frames", n_frames, (1, None)), ("size", size, SIZE_RANGE),
                              ("min_face", min_face, (1, None))):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"{name}={v!r}: expected an int " + (f">= {lo}" if hi is None else f"in [{lo}, {hi}]")
                             + (" (crop side in pixels)" if name == "size" else ""))
    lo, hi = MARGIN_RANGE
    if not (isinstance(margin, (int, float, np.number)) and not isinstance(margin, bool) and math.isfinite(margin)
            and lo <= margin <= hi):
        raise ValueError(f"margin={margin!r}: expected a finite number in [{lo}, {hi}] (face box enlargement)")
    if detector not in DETECTORS:
        raise ValueError(f"detector={detector!r}: expected one of {DETECTORS}")
    if not (isinstance(min_face_rate, (int, float)) and 0.0 <= min_face_rate <= 1.0):
        raise ValueError(f"min_face_rate={min_face_rate!r}: expected a fraction in [0, 1]")
    if min_confidence is not None and not (isinstance(min_confidence, (int, float)) and 0 <= min_confidence <= 1):
        raise ValueError(f"min_confidence={min_confidence!r}: expected None or a probability in [0, 1]")
    if crops not in (None, True, False):
        raise ValueError(f"crops={crops!r}: expected True, False or None (auto-detect)")
    if max_videos is not None and (not isinstance(max_videos, (int, np.integer)) or max_videos < 1):
        raise ValueError(f"max_videos={max_videos!r}: expected None or an int >= 1")


@contextlib.contextmanager
def _no_partial_output(out: Path):
    """Yield a list to append every written crop to; if the block fails, they are removed, with ``out`` (or
    ``out/crops``) when this run created it: a refused run leaves no crops without a manifest."""
    made = [d for d in (out, out / "crops") if not d.exists()][:1]
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
        raise


def prepare(root: str | os.PathLike, *, layout: str = "auto", n_frames: int = 16, size: int = 256,
            margin: float = 1.3, detector: str = "auto", detect_side: int = 960,
            min_confidence: float | None = None, min_face_rate: float = 0.8, min_face: int = MIN_FACE,
            crops: bool | None = None, group_regex: str | None = None, names: str = "auto",
            out_dir: str | os.PathLike | None = None, compression: str = "c23", manipulations=None,
            max_videos: int | None = None, seed: int = 0, force: bool = False) -> Path:
    """Sample frames evenly, crop one tracked face per video, cache PNG crops; return the manifest path.

    ``detector``: ``auto`` (MTCNN, else Haar), ``mtcnn``, ``haar`` or ``none`` (the central
    square, for face-centred frames such as the synthetic clips). ``detect_side``: the longest
    side frames are resized to before detection (0: full resolution). ``min_face_rate``: videos
    where a smaller share of sampled frames gave a face are warned about. ``min_face``: faces (or,
    without detection, images) under this many pixels on the short side are skipped (``MIN_FACE``).
    ``crops``: the images are already face crops - resize them, do not detect (None: recognised by
    content, see :func:`looks_cropped`; ``detector='none'`` recognises with ``auto``). ``names`` /
    ``group_regex``: how image file names give the video id (:func:`read_names`). ``max_videos``
    caps the number of videos per (label, manipulation), chosen evenly over the sorted list
    (reproducible). The result is cached under ``out_dir`` (default
    ``paths.prepared_dir()/<layout>-<hash>``) and re-prepared when the folder's content or an
    option changes, or with ``force``. Every option is checked before anything is read.
    """
    root = _check_root(root)
    _check_options(n_frames, size, margin, min_face, detector, min_face_rate, min_confidence, crops, max_videos)
    check_detect_side(detect_side)
    _check_names(names)
    if group_regex is not None:
        _compile_group_regex(group_regex)
    out_given = out_dir is not None
    out = Path(out_dir).expanduser().resolve() if out_given else None
    media = list_media(root, layout, compression=compression, manipulations=manipulations, seed=seed,
                       group_regex=group_regex, names=names)
    notes = media.attrs["notes"]
    params = {"layout": notes["layout"], "n_frames": int(n_frames), "size": int(size), "margin": float(margin),
              "detector": detector, "detect_side": int(detect_side), "min_confidence": min_confidence,
              "min_face_rate": float(min_face_rate), "min_face": int(min_face), "crops": crops,
              "group_regex": group_regex, "names": names, "compression": compression,
              "manipulations": manipulations, "max_videos": max_videos, "seed": seed, "version": PREPARE_VERSION}
    if out is None:
        out = paths.prepared_dir() / f"{notes['layout']}-{_prep_key(root, params)}"
    content = fingerprint(root, exclude=out)
    cache_key = hashlib.sha1(json.dumps({"params": params, "content": content, "root": str(root)}, sort_keys=True,
                                        default=str).encode()).hexdigest()
    mpath = out / "manifest.csv"
    if mpath.is_file() and not force:
        try:
            old = json.loads((out / META_NAME).read_text()).get("cache_key")
        except (OSError, json.JSONDecodeError):
            old = None
        if old == cache_key:
            return mpath
    if max_videos is not None:
        parts = []
        for _, g in media.groupby(["label", "manipulation"], sort=True):
            idx = np.unique(np.linspace(0, len(g) - 1, min(max_videos, len(g))).round().astype(int))
            parts.append(g.iloc[idx])
        media = pd.concat(parts).sort_index()
    det, det_note = (None, None)
    if crops is None:
        if len(media) and (media.media == "image").all():
            det, det_note = make_detector("auto" if detector == "none" else detector, detect_side=detect_side,
                                          min_confidence=min_confidence)
        is_crops, crops_reason = looks_cropped(media, det)
        crops_mode = {"mode": "auto-detected" if is_crops else "detect", "reason": crops_reason}
    else:
        is_crops = bool(crops)
        crops_mode = {"mode": "given" if is_crops else "detect", "reason": f"crops={crops}"}
    if is_crops and (media.media != "image").any():
        raise ValueError(f"crops=True but {int((media.media != 'image').sum())} files are videos; "
                         "crops mode takes folders of face images")
    if is_crops or detector == "none":
        det, det_note = None, None
    elif det is None:
        det, det_note = make_detector(detector, detect_side=detect_side, min_confidence=min_confidence)
    crops_dir = out / "crops"
    if (out / META_NAME).is_file():   # an earlier preparation: its manifest goes first (it names these crops)
        mpath.unlink(missing_ok=True)
        (out / META_NAME).unlink()
        shutil.rmtree(crops_dir, ignore_errors=True)
    with _no_partial_output(out) as written:
        t0 = time.perf_counter()
        rows, no_face, per_video = [], [], {}
        skipped = notes.get("unreadable", []) + notes.get("outside_root", [])
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
            h, w = frames.shape[1:3]
            if det is None and min(h, w) < min_face:   # the whole image (crops mode) or its central square is the face
                skipped.append({"path": m.path, "reason": f"{w}x{h} px: under the minimum face size of {min_face} px "
                                                          "on the short side"})
                continue
            n_sampled += len(frames)
            if det is None:
                cands, faces = [[] for _ in frames], [None] * len(frames)
            else:
                cands = [det.detect(fr) for fr in frames]
                faces = track(cands)
            vr = per_video.setdefault(m.video_id, {"video_id": m.video_id, "label": int(m.label),
                                                   "manipulation": m.manipulation, "split": m.split, "n_sampled": 0,
                                                   "n_faces": 0, "n_candidates": 0, "n_off_track": 0})
            vr["n_sampled"] += len(frames)
            rel = Path(m.path).relative_to(root)          # one crop name per source file: its path in the root
            d = crops_dir / rel if m.media == "video" else (crops_dir / rel).parent
            d.mkdir(parents=True, exist_ok=True)
            for fr, fi, cs, face in zip(frames, idx, cands, faces):
                vr["n_candidates"] += len(cs)
                vr["n_off_track"] += len(cs) - (face is not None)
                if det is not None and (face is None or min(face.w, face.h) < min_face):
                    no_face.append({"path": m.path, "frame_index": int(fi),
                                    "reason": "no face detected" if not cs else
                                    "no candidate on the video's face track" if face is None else
                                    f"face {face.box[2]}x{face.box[3]} px: under the minimum face size of "
                                    f"{min_face} px"})
                    continue
                vr["n_faces"] += 1
                crop = resize_image(fr, size) if is_crops else crop_face(fr, None if face is None else face.box,
                                                                          size=size, margin=margin)
                p = d / (f"{int(fi):05d}.png" if fi >= 0 else f"{rel.name}.png")
                written.append(p)
                if not cv2.imwrite(str(p), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):  # False, not an exception
                    raise OSError(f"{p}: could not write the face crop (disk full or not writable); nothing was cached")
                rows.append({"path": str(p), "label": int(m.label), "dataset": m.dataset, "manipulation": m.manipulation,
                             "video_id": m.video_id, "frame_index": int(fi), "group": m.group, "identity": m.identity,
                             "pair_id": f"{m.pair_video}#{int(fi)}" if m.pair_video else "", "split": m.split,
                             "face_box": "" if face is None else ",".join(str(v) for v in face.box),
                             "face_score": float("nan") if face is None else round(face.score, 4)})
        df = pd.DataFrame(rows, columns=["path", "label", "dataset", "manipulation", "video_id", "frame_index", "group",
                                         "identity", "pair_id", "split", "face_box", "face_score"])
        if len(df):   # a pair_id survives only where a real frame and a fake frame share it
            both = df.groupby("pair_id").label.nunique()
            keep = set(both[both == 2].index)
            df["pair_id"] = [p if p in keep else "" for p in df.pair_id]
        report = []
        for vr in per_video.values():
            vr["rate"] = vr["n_faces"] / vr["n_sampled"] if vr["n_sampled"] else 0.0
            vr["low"] = bool(vr["rate"] < min_face_rate)
            report.append(vr)
        low = [v["video_id"] for v in report if v["low"]]
        if low and det is not None:
            msg = (f"prepare: {len(low)} of {len(report)} videos gave a face in fewer than {min_face_rate:.0%} of "
                   f"their sampled frames (first: {low[:5]}); see meta['detection']['per_video']")
            log.warning(msg)
        synthetic = bool(len(df) and (df.dataset == "synthetic").all())
        detection = {"detector": "none (crops mode)" if is_crops else (det.name if det is not None else "none"),
                     "requested": detector, "fallback": det_note, "detect_side": int(detect_side),
                     "min_confidence": None if det is None else det.min_confidence,
                     "min_face_rate": float(min_face_rate), "min_face": int(min_face),
                     "per_video": report, "low_rate_videos": low if det is not None else [],
                     "n_off_track": int(sum(v["n_off_track"] for v in report))}
        meta = {"synthetic": synthetic, "kind": "video_frames", "root": str(root), "params": params, "notes": notes,
                "cache_key": cache_key, "content_fingerprint": content, "crops": crops_mode, "detection": detection,
                "n_media": int(len(media)), "n_media_skipped": len(skipped), "n_frames_sampled": n_sampled,
                "n_frames_no_face": len(no_face), "face_rate": (n_sampled - len(no_face)) / n_sampled if n_sampled else 0.0,
                "skipped": skipped, "no_face": no_face, "prepare_s": time.perf_counter() - t0}
        if not len(df):
            raise ValueError(f"prepare: no usable frames in {root} ({len(skipped)} files skipped, "
                             f"{len(no_face)} frames without a face); first problems: {(skipped + no_face)[:3]}")
        return save_manifest(df, mpath, meta)


def prepared_manifest(root: str | os.PathLike, **kw: Any) -> pd.DataFrame:
    """``prepare`` then load: the manifest DataFrame of a prepared dataset."""
    return load_manifest(prepare(root, **kw))
