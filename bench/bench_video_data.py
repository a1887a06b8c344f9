"""Bench: the cost of the video chapter's synthetic clips — this build's default (30 videos per class,
clips as long as the 10 frames prepared, so consecutive frames exist) vs the previous default
(12 per class, 2-s clips at 25 fps with 8 frames spread over each clip).

Both are generated and prepared side by side in one process (one thread, fresh temporary folders),
and the script prints the ratio and the cost per video and per prepared frame.

    OMP_NUM_THREADS=1 python bench/bench_video_data.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from dfrobust.data import synth
from dfrobust.data.manifest import load_manifest
from dfrobust.data.prepare import prepare
from dfrobust.study.perf import bench_parser, finish_bench

SETTINGS = {
    "now": {},  # settings.synthetic.default of notebooks/study.yml
    "before": dict(n_videos=2, video_seconds=2.0, frames_per_video=8, video_splits=("test",)),
}


def _run(profile: str, out: Path, overrides: dict) -> dict:
    kw = synth.resolve(profile, **overrides)
    t0 = time.perf_counter()
    root = synth.generate_videos(profile, 0, out_dir=out, **overrides)
    t1 = time.perf_counter()
    m = load_manifest(prepare(root, layout="ffpp", n_frames=kw["frames_per_video"], size=kw["size"], detector="none",
                              out_dir=out.parent / f"{out.name}_frames", compression="c23"))
    t2 = time.perf_counter()
    return {"generate_s": t1 - t0, "prepare_s": t2 - t1, "videos": int(m["video_id"].nunique()), "frames": len(m),
            "per_class": int(m.drop_duplicates("video_id").groupby("label").size().min())}


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--profile", default="default")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    res = {name: _run(args.profile, tmp / name, ov) for name, ov in SETTINGS.items()}
    for name, r in res.items():
        tot = r["generate_s"] + r["prepare_s"]
        print(f"{name}: {r['videos']} videos ({r['per_class']} per class), {r['frames']} prepared frames; "
              f"generate {r['generate_s']:.1f} s + prepare {r['prepare_s']:.1f} s = {tot:.1f} s; "
              f"{tot / r['videos']:.2f} s per video, {1e3 * tot / r['frames']:.0f} ms per prepared frame")
    total = {k: r["generate_s"] + r["prepare_s"] for k, r in res.items()}
    finish_bench(args, "cpu", [{"what": "video data: this default / previous default (time)",
                                "fast_s": total["before"], "slow_s": total["now"]}], **res)


if __name__ == "__main__":
    main()
