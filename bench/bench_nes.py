"""Batched masked NES (one model call per step for all samples and antithetic pairs) vs a per-sample
loop with the same queries (same seed per sample, same number of queries), on a MesoNet-sized
detector. Prints both timings and the ratio (JSON with --json). < 1 min on 2 CPU cores by default.

    python bench/bench_nes.py [--device cpu] [--n 8] [--steps 10] [--pairs 20] [--size 128]
    python bench/bench_nes.py --full --device cuda      # 256 px, 16 images, 20 steps, 40 pairs
"""

from __future__ import annotations

import time

import torch

from dfrobust.core.device import describe, pick_device
from dfrobust.models import build
from dfrobust.attacks.nes import MaskedNES
from dfrobust.study.perf import bench_parser, finish_bench, sync


def main(argv=None):
    ap = bench_parser(__doc__)
    ap.add_argument("--model", default="meso4")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args(argv)
    if a.full:
        a.n, a.steps, a.pairs, a.size = 16, 20, 40, 256
    dev = pick_device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(a.model, a.size).to(dev).eval()
    x = torch.rand(a.n, 3, a.size, a.size, device=dev)
    mask = torch.zeros(a.n, a.size, a.size, dtype=torch.bool)
    mask[:, a.size // 4: a.size // 2, a.size // 4: 3 * a.size // 4] = True
    with torch.no_grad():
        labels = model(x).argmax(1)        # correctly classified at the start ...
    kw = dict(steps=a.steps, n_pairs=a.pairs, eps=1e-6, alpha=1e-7)  # ... and tiny steps: no early stop, equal queries
    MaskedNES(model, **kw)(x[:1], labels[:1], mask[:1])              # warm-up
    sync(dev)
    t0 = time.perf_counter()
    atk = MaskedNES(model, **kw)
    atk(x, labels, mask)
    sync(dev)                                                        # queued GPU work counts
    t_batched = time.perf_counter() - t0
    q_batched = int(atk.last_queries.sum())
    t0 = time.perf_counter()
    q_loop = 0
    for i in range(a.n):
        atk1 = MaskedNES(model, **kw)
        atk1(x[i:i + 1], labels[i:i + 1], mask[i:i + 1])
        q_loop += int(atk1.last_queries.sum())
    sync(dev)
    t_loop = time.perf_counter() - t0
    return finish_bench(a, describe(dev), [
        {"what": f"masked NES, {a.n} images: per-sample loop vs one batch per step", "fast_s": t_batched,
         "slow_s": t_loop}], model=a.model, size=a.size, n=a.n, steps=a.steps, pairs=a.pairs,
        queries_batched=q_batched, queries_loop=q_loop)


if __name__ == "__main__":
    main()
