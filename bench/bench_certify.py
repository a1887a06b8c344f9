"""Bench: the cost of each bound per (sample, ε), side by side in one run, on a random-weight detector.

Lines (slow / fast = ratio): IBP vs CROWN with a budget of ``--budget`` neurons per layer; that
budgeted CROWN vs full CROWN (every neuron whose bound can tighten a relaxation: unstable
pre-activations and the candidates of inexact max-pool windows); full CROWN vs alpha-CROWN (CROWN's
intermediate bounds, then ``alpha_steps`` Adam steps on the ReLU lower slopes of the margin's
bound); and the batch (all ``--n`` samples in one call) vs the same samples one call each. Also
CROWN's backward pass with rows chunked per sample (relaxations broadcast) vs mixed (gathered per
row), on the same rows (both checked equal to 1e-9). The printed bounds (mean lower bound per
method) show what each price buys.

    python bench/bench_certify.py                       # Meso4 at 32 px, 2 images, ~1 min on a CPU
    python bench/bench_certify.py --model mesoinception4 --size 128 --n 1 --eps 0.002  # the chapter's size
    python bench/bench_certify.py --full --device cuda  # 128 px, 8 images
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
    ap.add_argument("--eps", type=float, default=0.002)
    ap.add_argument("--budget", type=int, default=8)
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

    def timed(fn):
        sync(dev)
        t0 = time.perf_counter()
        out = fn()
        sync(dev)
        return out, time.perf_counter() - t0

    runs = {
        "ibp": lambda: margin_bounds(g, x, args.eps, method="ibp"),
        f"crown-b{args.budget}": lambda: margin_bounds(g, x, args.eps, method="crown", crown_budget=args.budget),
        "crown": lambda: margin_bounds(g, x, args.eps, method="crown"),
        "alpha-crown": lambda: margin_bounds(g, x, args.eps, method="alpha-crown"),
    }
    t, lo = {}, {}
    for name, fn in runs.items():
        r, s = timed(fn)
        t[name], lo[name] = s / args.n, float(r.m_lo.mean())
    one = [timed(lambda i=i: margin_bounds(g, x[i:i + 1], args.eps, method="crown"))[1] for i in range(args.n)]

    # the rows CROWN refines at the last convolution's pre-activation, from IBP bounds below it
    lo_, hi_ = (x - args.eps).clamp(0, 1), (x + args.eps).clamp(0, 1)
    B, cache = {}, {}
    for j, n in enumerate(g.nodes):
        B[j] = (lo_, hi_) if n.op == "input" else g._ibp(n, B)
    j = g.preact[-2]
    unst = (B[j][0] < 0) & (B[j][1] > 0)
    s_i, pos = unst.flatten(1).nonzero(as_tuple=True)
    A = torch.zeros(len(s_i), B[j][0][0].numel(), dtype=x.dtype, device=dev)
    A[torch.arange(len(s_i), device=dev), pos] = 1.0
    A = A.view(len(s_i), *g.nodes[j].shape)
    out = {}
    for per_sample in (True, False):
        g._crown(j, A[:4], s_i[:4], B, cache, lo_, hi_, 256 * 2**20, per_sample=per_sample)  # warm-up
        out[per_sample] = timed(lambda: g._crown(j, A, s_i, B, cache, lo_, hi_, 256 * 2**20, per_sample=per_sample))
    (a, t_fast), (b, t_slow) = out[True], out[False]
    assert torch.allclose(a[0], b[0], atol=1e-9) and torch.allclose(a[1], b[1], atol=1e-9)
    b8 = f"crown-b{args.budget}"
    print("mean lower bound of the margin: " + ", ".join(f"{k} {v:+.4f}" for k, v in lo.items()))
    return finish_bench(args, describe(dev), [
        {"what": f"IBP vs CROWN budget {args.budget}, seconds per (sample, eps)", "fast_s": t["ibp"], "slow_s": t[b8]},
        {"what": f"CROWN budget {args.budget} vs full CROWN, seconds per (sample, eps)", "fast_s": t[b8], "slow_s": t["crown"]},
        {"what": "full CROWN vs alpha-CROWN, seconds per (sample, eps)", "fast_s": t["crown"], "slow_s": t["alpha-crown"]},
        {"what": f"full CROWN: {args.n} samples in one batch vs one call each, seconds per sample",
         "fast_s": t["crown"], "slow_s": sum(one) / args.n},
        {"what": f"CROWN rows per sample vs mixed ({len(s_i)} rows, layer {g.nodes[j].name})",
         "fast_s": t_fast, "slow_s": t_slow}],
        model=args.model, size=args.size, n=args.n, eps=args.eps, mean_lower_bound=lo)


if __name__ == "__main__":
    main()
