"""Face detection rate and false crops: detector x detection scale, on 1080p synthetic scenes and FF++ samples.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bench_faces.py [--videos 8] [--frames 8]

* **synthetic** 1920x1080 scenes (:func:`dfrobust.data.scenes.scene_frames`): the benchmark's
  faces (~110-160 px wide) pasted into cluttered frames; ground-truth boxes known. A false crop
  is a kept face whose box overlaps the true face box by IoU < 0.3.
* the shared FF++ c23 samples (``../shared/realdata/ffpp``, when present; 1280x720): no
  ground truth, so a false crop is a kept box with IoU < 0.3 against the box MTCNN finds at
  full resolution on the same frame (the reference; its crops were checked by eye).

Rates count frames where the per-video track (:func:`dfrobust.data.faces.track`) kept a face.
Prints one table; nothing is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dfrobust.data import faces as fc
from dfrobust.data.scenes import scene_frames
from dfrobust.data.video import read_frames

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("haar", 360), ("haar", 720), ("haar", 960), ("mtcnn", 480), ("mtcnn", 720), ("mtcnn", 960),
           ("mtcnn", 0)]


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def evaluate(videos, det, raw: bool = False):
    """(frames, kept, false, seconds); ``videos``: list of (frames, truth boxes or None per frame)."""
    n = kept = false = 0
    t0 = time.perf_counter()
    for frames, truth in videos:
        cands = [det.detect(f) for f in frames]
        out = [max(c, key=lambda f: f.w * f.h) if c else None for c in cands] if raw else fc.track(cands)
        for face, tb in zip(out, truth):
            n += 1
            if face is not None:
                kept += 1
                false += tb is not None and iou(face.box, tb) < 0.3
    return n, kept, false, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    a = ap.parse_args()
    sets = {"synthetic 1080p": [tuple(scene_frames(seed=k, n=a.frames)) for k in range(a.videos)]}
    ff = ROOT.parent / "shared" / "realdata" / "ffpp"
    if ff.is_dir():
        ref = fc.MTCNNFaceDetector(detect_side=0)
        vids = []
        for p in sorted(ff.rglob("*.mp4")):
            frames, _ = read_frames(p, a.frames)
            boxes = [r.box if r is not None else None for r in fc.track([ref.detect(f) for f in frames])]
            vids.append((frames, boxes))
        sets["FF++ c23 (real)"] = vids
    print(f"{'data':18s} {'detector':8s} {'side':>5s} {'track':>5s} {'frames':>6s} {'rate':>6s} {'false':>5s} {'s/frame':>7s}")
    for name, vids in sets.items():
        for dname, side in CONFIGS:
            det = fc.HaarFaceDetector(detect_side=side) if dname == "haar" else fc.MTCNNFaceDetector(detect_side=side)
            for raw in ((True, False) if dname == "haar" else (False,)):
                n, kept, false, s = evaluate(vids, det, raw)
                print(f"{name:18s} {dname:8s} {side or 'full':>5} {'no' if raw else 'yes':>5s} {n:6d} "
                      f"{kept / n:6.1%} {false:5d} {s / n:7.3f}")


if __name__ == "__main__":
    main()
