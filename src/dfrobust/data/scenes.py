"""Synthetic full-HD scenes and dataset-layout fixtures built from the benchmark's faces.

Real footage differs from the benchmark's 256x256 face-centred frames: the face is small
in a large frame with clutter around it (furniture, a shirt, the floor). ``scene_frames``
renders a clip of one benchmark identity (:mod:`render`, the same faces the study uses) pasted
at a known box into a cluttered 1920x1080 frame, so a detector's hit rate and false crops can
be measured against ground truth. ``write_layout`` writes small clips in the official layouts
(DFDC, FF++ incl. actors/DeepFakeDetection, Celeb-DF-v2, UADFV, plain folders, crop folders)
for the tests; everything is generated (no real data) and labelled **synthetic**.

Hand-written because no package renders these faces; composition uses OpenCV only.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import cv2
import numpy as np

from .manifest import GROUPS
from .render import camera, render, sample_conditions, sample_identity


def _clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A room-like background: wall gradient, floor, furniture boxes, soft blobs (uint8 RGB)."""
    img = np.empty((h, w, 3), np.float32)
    wall, floor = rng.uniform(0.3, 0.85, 3), rng.uniform(0.15, 0.6, 3)
    horizon = int(h * rng.uniform(0.6, 0.8))
    t = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = wall * (0.85 + 0.15 * t)
    img[horizon:] = floor
    for _ in range(int(rng.integers(4, 9))):   # furniture, frames, a lamp
        x0, y0 = int(rng.uniform(0, w * 0.9)), int(rng.uniform(0, h * 0.9))
        bw, bh = int(rng.uniform(60, 420)), int(rng.uniform(60, 420))
        col = tuple(float(v) for v in rng.uniform(0.05, 0.95, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bh), col, -1)
        else:
            cv2.ellipse(img, (x0, y0), (bw // 2, bh // 2), float(rng.uniform(0, 180)), 0, 360, col, -1)
    tex = cv2.resize(rng.normal(0, 0.03, (h // 8, w // 8)).astype(np.float32), (w, h))
    img = np.clip(img + tex[..., None], 0, 1)
    return (img * 255).astype(np.uint8)


def scene_frames(seed: int = 0, n: int = 8, *, width: int = 1920, height: int = 1080, face_px: int = 220,
                 group: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames [n, H, W, 3] of one synthetic person in a cluttered scene, and the true face boxes.

    The 256x256 render is scaled to ``face_px`` (the face itself spans about 60 % of it, so
    the face is ~0.6 * face_px wide) and drifts slowly across the frame. Boxes are
    ``(x, y, w, h)`` of the face ellipse in frame pixels, one per frame.
    """
    if not (isinstance(face_px, (int, np.integer)) and 48 <= face_px <= min(width, height)):
        raise ValueError(f"face_px={face_px!r}: expected an int in [48, {min(width, height)}]")
    if width % 2 or height % 2:
        raise ValueError(f"frame size {width}x{height}: expected even sizes (H.264)")
    rng = np.random.default_rng(seed)
    group = group or GROUPS[seed % len(GROUPS)]
    ident = sample_identity(rng, group, f"scene{seed}")
    base = sample_conditions(rng)
    bg = _clutter(rng, height, width)
    # shoulders / shirt under the head: a typical false-positive region for a cascade
    cx0 = rng.uniform(0.25, 0.75) * width
    cy0 = rng.uniform(0.25, 0.55) * height
    shirt = None
    frames, boxes = [], []
    for k in range(n):
        c = copy.copy(base)
        c.yaw = float(np.clip(base.yaw * 0.5 + 0.15 * np.sin(k / 3), -0.5, 0.5))
        c.mouth_open = float(np.clip(np.sin(k), 0, 1))
        img, geo = render(ident, c)
        face = camera(img, c, rng, jpeg=False)
        cx = cx0 + 40 * np.sin(k / 4)
        cy = cy0 + 15 * np.cos(k / 5)
        x0, y0 = int(round(cx - face_px / 2)), int(round(cy - face_px / 2))
        x0 = int(np.clip(x0, 0, width - face_px))
        y0 = int(np.clip(y0, 0, height - face_px))
        fr = bg.copy()
        if shirt is None:     # drawn after the first frame's camera noise (keeps the measured scenes)
            shirt = tuple(int(v) for v in rng.uniform(20, 230, 3))
        cv2.ellipse(fr, (x0 + face_px // 2, y0 + int(face_px * 1.25)), (int(face_px * 0.75), int(face_px * 0.45)),
                    0, 0, 360, shirt, -1)
        patch = cv2.resize(face, (face_px, face_px), interpolation=cv2.INTER_AREA)
        # paste the whole render (its own background is the out-of-focus wall behind the head)
        fr[y0:y0 + face_px, x0:x0 + face_px] = patch
        m = cv2.resize(geo["face_mask"], (face_px, face_px))
        ys, xs = np.nonzero(m > 0.5)
        boxes.append((x0 + int(xs.min()), y0 + int(ys.min()), int(xs.max() - xs.min() + 1),
                      int(ys.max() - ys.min() + 1)))
        frames.append(fr)
    return np.stack(frames), np.array(boxes)


def face_clip(seed: int = 0, n: int = 6, size: int = 96) -> np.ndarray:
    """``n`` face-centred frames [n, size, size, 3] of one synthetic identity (uint8; size even)."""
    rng = np.random.default_rng(seed)
    ident = sample_identity(rng, GROUPS[seed % len(GROUPS)], f"clip{seed}")
    base = sample_conditions(rng)
    out = []
    for k in range(n):
        c = copy.copy(base)
        c.mouth_open = float(np.clip(np.sin(k), 0, 1))
        img, _ = render(ident, c)
        out.append(cv2.resize(camera(img, c, rng, jpeg=False), (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _clip(path: Path, seed: int, n: int, size: int) -> Path:
    from .video import write_mp4

    return write_mp4(face_clip(seed, n, size), path, fps=10, crf=18)


def write_layout(root: str | os.PathLike, layout: str, *, n: int = 4, size: int = 96, seed: int = 0) -> Path:
    """A tiny **synthetic** dataset in an official layout under ``root`` (for tests); returns ``root``.

    * ``dfdc``: ``dfdc_train_part_0/`` with 2 reals, 2 fakes of the first real, 1 fake whose
      original is absent, 1 listed file that is missing; every entry says split ``train``;
    * ``ffpp_actors``: ``original_sequences/actors`` + ``manipulated_sequences/DeepFakeDetection``
      (2 actors, 2 scenes) and one youtube fake whose original is absent;
    * ``celebdf``: Celeb-real, YouTube-real, Celeb-synthesis + ``List_of_testing_videos.txt``;
    * ``uadfv``: ``real/{k}.mp4`` and ``fake/{k}_fake.mp4``;
    * ``frames``: ``real/`` + ``fake/`` of PNG frames named ``vid{k}_{frame}.png`` (3 videos each);
    * ``crops``: ``real/vid{k}/{frame}.png`` + ``fake/vid{k}/{frame}.png`` face crops (not square-resized).
    """
    root = Path(root)
    s = seed * 100
    if layout == "dfdc":
        part = root / "dfdc_train_part_0"
        meta = {}
        for k, name in enumerate(("aaaa.mp4", "bbbb.mp4")):
            _clip(part / name, s + k, n, size)
            meta[name] = {"label": "REAL", "split": "train", "original": None}
        for k, name in enumerate(("cccc.mp4", "dddd.mp4")):
            _clip(part / name, s + 10 + k, n, size)
            meta[name] = {"label": "FAKE", "split": "train", "original": "aaaa.mp4"}
        _clip(part / "eeee.mp4", s + 20, n, size)
        meta["eeee.mp4"] = {"label": "FAKE", "split": "train", "original": "zzzz.mp4"}   # original absent
        meta["gone.mp4"] = {"label": "FAKE", "split": "train", "original": "bbbb.mp4"}   # listed, missing
        part.mkdir(parents=True, exist_ok=True)
        (part / "metadata.json").write_text(json.dumps(meta))
    elif layout == "ffpp_actors":
        o = root / "original_sequences" / "actors" / "c23" / "videos"
        f = root / "manipulated_sequences" / "DeepFakeDetection" / "c23" / "videos"
        for k, (a, scene) in enumerate((("01", "talk"), ("01", "walk"), ("02", "talk"), ("02", "walk"))):
            _clip(o / f"{a}__{scene}.mp4", s + k, n, size)
        _clip(f / "01_02__talk__ABCD1234.mp4", s + 10, n, size)
        _clip(f / "02_01__walk__EFGH5678.mp4", s + 11, n, size)
        _clip(root / "manipulated_sequences" / "Deepfakes" / "c23" / "videos" / "777_778.mp4", s + 12, n, size)
    elif layout == "celebdf":
        _clip(root / "Celeb-real" / "id0_0000.mp4", s, n, size)
        _clip(root / "Celeb-real" / "id1_0000.mp4", s + 1, n, size)
        _clip(root / "YouTube-real" / "00000.mp4", s + 2, n, size)
        _clip(root / "Celeb-synthesis" / "id0_id1_0000.mp4", s + 3, n, size)
        _clip(root / "Celeb-synthesis" / "id1_id0_0000.mp4", s + 4, n, size)
        (root / "List_of_testing_videos.txt").write_text("1 YouTube-real/00000.mp4\n")
    elif layout == "uadfv":
        for k in range(2):
            _clip(root / "real" / f"{k:04d}.mp4", s + k, n, size)
            _clip(root / "fake" / f"{k:04d}_fake.mp4", s + 10 + k, n, size)
    elif layout in ("frames", "crops"):
        for sub, off in (("real", 0), ("fake", 50)):
            for v in range(3):
                fr = face_clip(s + off + v, n, size)
                for j, im in enumerate(fr):
                    if layout == "crops":   # 4:5 crops of varying size, as public crop sets ship them
                        h = size + 2 * v
                        im = cv2.resize(im, (int(h * 0.9), h), interpolation=cv2.INTER_LINEAR)
                        p = root / sub / f"vid{v}" / f"{j:04d}.png"
                    else:
                        p = root / sub / f"vid{v}_{j:04d}.png"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(p), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    else:
        raise ValueError(f"layout={layout!r}: expected dfdc, ffpp_actors, celebdf, uadfv, frames or crops")
    return root
