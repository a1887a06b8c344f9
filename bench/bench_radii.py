"""Bench: the cost of per-sample critical radii (experiments.radii.radii_records) in gradient passes per image.

Times ``radii_records`` on quick-size data (24 images, Meso4 at 128 px, random weights, **synthetic**
uniform images, one thread) at chapter 03's ε grid (0 and 4 log-spaced radii 0.00196 .. 0.2) and its 21
bounds b, for a few (steps, n_bisect) settings, against one forward + backward of Meso4 over the same
images; the ratio is the passes per image (the faster of two runs each). Then, from one pass of the three default detectors
(bench_ch03_cost.pass_seconds at the default sizes), the CPU seconds it would add to the default build
(204 images). The last setting adds the convergence rerun on a 4-image subsample (10x steps, 2 restarts, FAB) to the default (1, 2), counted per rerun image (its cost does not grow with the 204 images). Random weights put P(ŷ) near 0.5, where the up run runs on every sample: a worst case.

    OMP_NUM_THREADS=1 python bench/bench_radii.py

``--norms``: instead, the L2 rows (``norm="l2"``, chapter 03's L2 grid 0.05 .. 2) against the L∞ rows (its ε grid)
side by side on the same 24 images at the default (steps 1, n_bisect 2), alternating, the faster of two runs each
(process CPU time too); the ratio is L2 / L∞, and the L2 rows' CPU seconds on the default build's CW-L2 subsample
(cw_n = 100 images x 3 detectors).
"""

from __future__ import annotations

import time

import torch

from bench_ch03_cost import SIZES, pass_seconds
from dfrobust.core.device import describe, pick_device
from dfrobust.experiments.radii import radii_records
from dfrobust.metrics import linspace_grid, log_grid
from dfrobust.models import build
from dfrobust.study.perf import bench_parser, finish_bench

SETTINGS = [(1, 1), (1, 2), (2, 2)]


def norms(args, dev) -> None:
    """L2 rows against L∞ rows, side by side on the same images (see the module's ``--norms``)."""
    n = 24
    x = torch.rand(n, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1] * (n // 2))
    model = build("meso4", 128).to(dev).eval()
    b = linspace_grid(0.2, 21, what="b")
    grids = {"linf": log_grid(0.00196, 0.2, 4), "l2": log_grid(0.05, 2.0, 4)}
    one_pass = pass_seconds({"meso4": 128}, dev, batch=n) * n
    three = pass_seconds(SIZES["default"], dev)
    wall, cpu = {k: [] for k in grids}, {k: [] for k in grids}
    for _ in range(2):
        for norm, eps in grids.items():            # alternating: both see the same load
            t0, c0 = time.perf_counter(), time.process_time()
            radii_records({"meso4": model}, x, y, None, eps, b, steps=1, n_bisect=2, device=str(dev), norm=norm)
            wall[norm].append(time.perf_counter() - t0)
            cpu[norm].append(time.process_time() - c0)
    t = {k: min(v) for k, v in wall.items()}
    details = {k: {"wall_s": round(t[k], 2), "cpu_s": round(min(cpu[k]), 2), "passes_per_image": round(t[k] / one_pass, 1),
                   "default_cw_subsample_cpu_s": round(100 * t[k] / one_pass * three, 1)} for k in grids}
    for k, d in details.items():
        print(f"  {k}: {d['wall_s']} s wall, {d['cpu_s']} s CPU, {d['passes_per_image']} passes/image -> on 100 "
              f"images x 3 detectors ({three * 1e3:.0f} ms per pass): {d['default_cw_subsample_cpu_s']:.0f} CPU-s")
    finish_bench(args, describe(dev), [{"what": "radii_records L2 rows vs L∞ rows (24 images, meso4@128, steps 1, "
                                                "bisect 2)", "fast_s": t["linf"], "slow_s": t["l2"]}], settings=details)


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--norms", action="store_true", help="L2 rows against L∞ rows, side by side")
    args = ap.parse_args()
    dev = pick_device(args.device)
    if args.norms:
        torch.set_num_threads(1)
        return norms(args, dev)
    torch.set_num_threads(1)
    n = 24
    x = torch.rand(n, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1] * (n // 2))
    model = build("meso4", 128).to(dev).eval()
    eps, b = log_grid(0.00196, 0.2, 4), linspace_grid(0.2, 21, what="b")
    one_pass = pass_seconds({"meso4": 128}, dev, batch=n) * n
    three = pass_seconds(SIZES["default"], dev)
    ratios, details = [], {}
    for steps, n_bisect, conv in [(s, k, 0) for s, k in SETTINGS] + [(1, 2, 4)]:
        times = []
        for _ in range(2):                 # the faster of two runs: the machine is shared
            t0 = time.perf_counter()
            radii_records({"meso4": model}, x, y, None, eps, b, steps=steps, n_bisect=n_bisect, device=str(dev),
                          convergence_n=conv)
            times.append(time.perf_counter() - t0)
        t = min(times)
        passes = t / one_pass
        what = f"radii_records steps={steps} n_bisect={n_bisect} convergence_n={conv} vs one pass (24 images, meso4@128)"
        ratios.append({"what": what, "fast_s": one_pass, "slow_s": t})
        base = details.get(f"{steps}x{n_bisect}+0")
        if conv and base:   # the rerun costs per subsample image, whatever n: add it to the same setting without it
            per_sub = (t - base["seconds"]) / one_pass * n / conv
            cpu = base["default_build_cpu_s"] + conv * per_sub * three
        else:
            per_sub, cpu = None, 204 * passes * three
        details[f"{steps}x{n_bisect}+{conv}"] = {"seconds": round(t, 2), "passes_per_image": round(passes, 1),
                                                 "default_build_cpu_s": round(cpu, 1)}
        print(f"  steps={steps} n_bisect={n_bisect} convergence_n={conv}: {t:.1f} s, {passes:.1f} passes/image"
              + (f" ({per_sub:.0f} passes per rerun image)" if per_sub else "") + " -> default build "
              f"(204 images x 3 detectors, {three * 1e3:.0f} ms per pass): {cpu:.0f} CPU-s")
    finish_bench(args, describe(dev), ratios, settings=details)


if __name__ == "__main__":
    main()
