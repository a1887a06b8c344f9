"""LIME with the batched classifier (one model call per ``batch`` perturbed images) vs lime's
default batch_size=10, at equal num_samples, same seeds and segments; plus one timing per explainer
for the chapter's table. Prints the ratio and the timings (JSON with --json). < 1 min on 2 CPU cores by default.

    python bench/bench_lime.py [--device cpu] [--samples 300] [--size 128] [--batch 100]
    python bench/bench_lime.py --full --device cuda      # 1000 samples at 256 px
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dfrobust.core.device import describe, pick_device
from dfrobust.explainers import TOOLS, explain, warmup
from dfrobust.models import build
from dfrobust.study.perf import bench_parser, finish_bench
from dfrobust.explainers.segments import slic_segments


def main(argv=None):
    ap = bench_parser(__doc__)
    ap.add_argument("--model", default="meso4")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--no-tools", action="store_true", help="skip the per-explainer timings")
    a = ap.parse_args(argv)
    if a.full:
        a.samples, a.size = 1000, 256
    dev = pick_device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    warmup()
    torch.manual_seed(0)
    model = build(a.model, a.size).to(dev).eval()
    x = torch.rand(1, 3, a.size, a.size)
    seg = slic_segments(x, 50)
    res = {}
    for label, bs in (("batched", a.batch), ("lime_default", 10)):
        t0 = time.perf_counter()
        m = explain("lime", model, x, 0, seed=0, batch_size=bs, device=str(dev), segments=seg, num_samples=a.samples)
        res[label] = (time.perf_counter() - t0, m)
    same = bool(np.allclose(res["batched"][1], res["lime_default"][1], atol=1e-5))
    tool_s = {}
    if not a.no_tools:
        small = {"lime": {"num_samples": a.samples}, "rise": {"n_masks": 4 * a.samples},
                 "sobol": {"grid": 8, "nb_design": 16}, "xrai": {"steps": 20, "algorithm": "fast"}}
        for tool in TOOLS:
            t0 = time.perf_counter()
            explain(tool, model, x, 0, seed=0, batch_size=a.batch, device=str(dev), segments=seg, **small.get(tool, {}))
            tool_s[tool] = round(time.perf_counter() - t0, 3)
            print(f"explainer {tool}: {tool_s[tool]:.3f} s per image")
    return finish_bench(a, describe(dev), [
        {"what": f"LIME, {a.samples} samples: batch 10 (lime's default) vs batch {a.batch}",
         "fast_s": res["batched"][0], "slow_s": res["lime_default"][0]}],
        model=a.model, size=a.size, same_maps=same, explainer_seconds_per_image=tool_s)


if __name__ == "__main__":
    main()
