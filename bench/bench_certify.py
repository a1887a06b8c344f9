"""Bench: CROWN's backward pass with rows chunked per sample (relaxations broadcast) vs rows of all
samples mixed (relaxations gathered per row), on the same rows; plus IBP vs CROWN cost per sample.

Both chunkings compute the same bounds (checked to 1e-9); the per-sample one avoids copying every
per-sample relaxation tensor once per row, which dominates on a CPU. The second line is the price
of the tighter method: seconds per (sample, ε) of CROWN over IBP on a random-weight detector.

    python bench/bench_certify.py                      # Meso4 at 32 px, 2 images, < 1 min on a CPU
    python bench/bench_certify.py --full --device cuda # 128 px, 8 images
"""

from __future__ import annotations

import time

import torch

from dfrobust.core.device import describe, pick_device
from dfrobust.study.perf import bench_parser, finish_bench, sync


def main(argv=None) -> dict:
    ap = bench_parser(__doc__)
    ap.add_argument("--model", default="meso4")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--eps", type=float, default=0.005)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.full:
        args.size, args.n = 128, 8
    torch.set_num_threads(args.threads)
    from dfrobust.certify import margin_bounds, trace
    from dfrobust.models import build

    dev = pick_device(args.device)
    torch.manual_seed(0)
    det = build(args.model, args.size).eval()
    g = trace(det).to(device=dev)
    x = torch.rand(args.n, 3, args.size, args.size, dtype=torch.float64, device=dev)
    lo, hi = (x - args.eps).clamp(0, 1), (x + args.eps).clamp(0, 1)
    # the rows CROWN refines at the last convolution's pre-activation, from IBP bounds below it
    B, cache = {}, {}
    for j, n in enumerate(g.nodes):
        B[j] = (lo, hi) if n.op == "input" else g._ibp(n, B)
    j = g.preact[-2]
    unst = (B[j][0] < 0) & (B[j][1] > 0)
    s_i, pos = unst.flatten(1).nonzero(as_tuple=True)
    A = torch.zeros(len(s_i), B[j][0][0].numel(), dtype=x.dtype, device=dev)
    A[torch.arange(len(s_i), device=dev), pos] = 1.0
    A = A.view(len(s_i), *g.nodes[j].shape)
    out = {}
    for per_sample in (True, False):
        g._crown(j, A[:4], s_i[:4], B, cache, lo, hi, 256 * 2**20, per_sample=per_sample)  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        out[per_sample] = g._crown(j, A, s_i, B, cache, lo, hi, 256 * 2**20, per_sample=per_sample)
        sync(dev)
        out[per_sample] = (out[per_sample], time.perf_counter() - t0)
    (a, t_fast), (b, t_slow) = out[True], out[False]
    assert torch.allclose(a[0], b[0], atol=1e-9) and torch.allclose(a[1], b[1], atol=1e-9)
    t = {}
    for method in ("ibp", "crown"):
        sync(dev)
        t0 = time.perf_counter()
        margin_bounds(g, x, args.eps, method=method)
        sync(dev)
        t[method] = (time.perf_counter() - t0) / args.n
    return finish_bench(args, describe(dev), [
        {"what": f"CROWN rows per sample vs mixed ({len(s_i)} rows, layer {g.nodes[j].name})",
         "fast_s": t_fast, "slow_s": t_slow},
        {"what": "IBP vs CROWN, seconds per (sample, eps)", "fast_s": t["ibp"], "slow_s": t["crown"]}],
        model=args.model, size=args.size, n=args.n, eps=args.eps)


if __name__ == "__main__":
    main()
