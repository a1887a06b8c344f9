"""Bench: H.264 writing with x264's AVX-512 kernels off (as write_mp4 does) vs x264's default kernels.

``dfrobust.data.video.write_mp4`` clears x264's AVX-512 flag because those kernels made the
bytes of small clips differ between calls. This times both encoders side by side on the same
synthetic clips (one thread each) and counts the clips whose bytes agree between them and
between repeats. Where the CPU has no AVX-512 both paths are the same encoder (ratio ≈ 1).

    OMP_NUM_THREADS=1 python bench/bench_x264.py             # 256 px, 16-frame synthetic clips
    OMP_NUM_THREADS=1 python bench/bench_x264.py --size 64   # the tests' size, where AVX-512 varied
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from dfrobust.data import synth, video
from dfrobust.study.perf import bench_parser, finish_bench


def _clips(size: int, seconds: float, out: Path) -> list[np.ndarray]:
    """The uint8 frame stacks the synthetic generator hands to write_mp4 (6 real + 6 fake clips)."""
    clips, real_write = [], video.write_mp4
    video.write_mp4 = lambda frames, path, fps=25, crf=23: (clips.append(np.array(frames)),
                                                            real_write(frames, path, fps, crf))[1]
    try:
        synth.generate_videos("quick", 3, out_dir=out, n_per_group=3, n_identities=3, size=size, n_videos=1,
                              video_seconds=seconds, fps=8, frames_per_video=2)
    finally:
        video.write_mp4 = real_write
    return clips


def _fixed(options: dict[str, str]):
    """A stand-in for video._x264_options that returns ``options``."""
    return lambda: options


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.full:
        args.size, args.seconds = 256, 4.0
    tmp = Path(tempfile.mkdtemp())
    clips = _clips(args.size, args.seconds, tmp / "gen")
    masked_opts = video._x264_options()
    hashes = {"masked": [set() for _ in clips], "default": [set() for _ in clips]}
    secs = {"masked": 0.0, "default": 0.0}
    for rep in range(args.repeats):
        for k, frames in enumerate(clips):
            for name in ("default", "masked"):
                video._x264_options = _fixed({} if name == "default" else masked_opts)
                t0 = time.perf_counter()
                p = video.write_mp4(frames, tmp / f"{name}_{k}_{rep}.mp4", fps=8)
                secs[name] += time.perf_counter() - t0
                hashes[name][k].add(hashlib.sha256(p.read_bytes()).hexdigest())
    varying = {n: sum(len(h) > 1 for h in hs) for n, hs in hashes.items()}
    agree = sum(hashes["masked"][k] == hashes["default"][k] for k in range(len(clips)))
    print(f"{len(clips)} clips {clips[0].shape}, {args.repeats} repeats; x264 options {masked_opts or '{} (no AVX-512)'}")
    print(f"clips whose bytes varied between repeats: default {varying['default']}, AVX-512 off {varying['masked']}")
    print(f"clips with the same bytes from both encoders: {agree} of {len(clips)}")
    finish_bench(args, "cpu", [{"what": "x264 AVX-512 off / default (time)", "fast_s": secs["default"],
                                "slow_s": secs["masked"]}],
                 varying=varying, same_bytes_both=agree, n_clips=len(clips), shape=list(clips[0].shape),
                 x264_options=masked_opts)


if __name__ == "__main__":
    main()
