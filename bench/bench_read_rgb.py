"""Bench: reading an image with the truncation check (read_rgb: Pillow full decode, then OpenCV) vs
OpenCV alone (the reader before issue 11, which accepts truncated JPEGs half-grey).

Same files, same process, one thread; the arrays of both readers are checked identical. The ratio
is the price of never training or attacking on half an image.

    OMP_NUM_THREADS=1 python bench/bench_read_rgb.py            # 200 JPEGs at 256 px
    OMP_NUM_THREADS=1 python bench/bench_read_rgb.py --full     # 1000 JPEGs at 512 px
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from dfrobust.data.manifest import read_rgb
from dfrobust.study.perf import bench_parser, finish_bench


def _cv2_only(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    if args.full:
        args.n, args.size = 1000, 512
    cv2.setNumThreads(1)
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.n):  # smooth images with noise, like camera JPEGs (not white noise)
        base = cv2.resize(rng.random((8, 8, 3)).astype(np.float32), (args.size, args.size))
        img = np.clip((base + rng.normal(0, 0.05, base.shape)) * 255, 0, 255).astype(np.uint8)
        p = tmp / f"{i:04d}.jpg"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(p)
    for p in paths[:5]:  # warm the caches and check agreement
        np.testing.assert_array_equal(read_rgb(p), _cv2_only(p))
    secs = {}
    for name, fn in (("cv2", _cv2_only), ("checked", read_rgb), ("cv2 again", _cv2_only)):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        secs[name] = time.perf_counter() - t0
    same = all(np.array_equal(read_rgb(p), _cv2_only(p)) for p in paths)
    print(f"{args.n} JPEGs at {args.size} px; identical arrays from both readers: {same}")
    fast = min(secs["cv2"], secs["cv2 again"])
    finish_bench(args, "cpu", [{"what": "read_rgb (truncation check) / OpenCV alone", "fast_s": fast,
                                "slow_s": secs["checked"]}], n=args.n, size=args.size, identical=same,
                 per_image_ms={k: round(1000 * v / args.n, 3) for k, v in secs.items()})


if __name__ == "__main__":
    main()
