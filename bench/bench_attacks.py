"""Bench: the cost of the RR attack and of CW-L∞ against PGD on cross-entropy, side by side.

All three are the seeded L∞ PGD loop of dfrobust.attacks.gradient; the RR attack runs it twice
(P(ŷ) down and up, with best-iterate bookkeeping), so expect a ratio near 2. Also prints the mean
|ΔP(ŷ)| each attack finds at the same ε and steps on the same images (the bound the RR attack
tightens), on a detector with random weights and **synthetic** random images.

    python bench/bench_attacks.py                      # small CPU defaults, < 1 min on one core
    python bench/bench_attacks.py --full --device cuda # 256 px, 64 images
"""

from __future__ import annotations

import time

import torch

from dfrobust import attacks
from dfrobust.core.device import describe, pick_device, seed_everything
from dfrobust.study.perf import bench_parser, finish_bench, sync


def main(argv=None) -> dict:
    ap = bench_parser(__doc__)
    ap.add_argument("--model", default="meso4", help="detector from dfrobust.models.MODELS")
    ap.add_argument("--size", type=int, default=64, help="input size")
    ap.add_argument("--n", type=int, default=8, help="images")
    ap.add_argument("--eps", type=float, default=0.03, help="L∞ radius")
    ap.add_argument("--steps", type=int, default=5, help="PGD steps")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.full:
        args.size, args.n = 256, 64
    torch.set_num_threads(args.threads)
    seed_everything(0)
    dev = pick_device(args.device)
    from dfrobust.models import build

    model = build(args.model, args.size).eval().to(dev)
    x = torch.rand(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.no_grad():
        yhat = model(x).argmax(1)
        p0 = attacks.prob_of(model(x), yhat)
    times, change = {}, {}
    for name in ("pgd", "cwinf", "rr"):
        atk = attacks.make_attack(name, model, eps=args.eps, seed=0, steps=args.steps)
        atk(x[:1], yhat[:1])  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        adv = atk(x, yhat)
        sync(dev)             # queued GPU work counts
        times[name] = time.perf_counter() - t0
        with torch.no_grad():
            change[name] = round(float((attacks.prob_of(model(adv), yhat) - p0).abs().mean()), 4)
    for name, c in change.items():
        print(f"mean |ΔP(ŷ)| found by {name:>5s} at eps={args.eps}, {args.steps} steps: {c}  (synthetic images)")
    return finish_bench(args, describe(dev), [
        {"what": "RR attack vs PGD-CE (same steps)", "fast_s": times["pgd"], "slow_s": times["rr"]},
        {"what": "CW-L∞ vs PGD-CE (same steps)", "fast_s": times["pgd"], "slow_s": times["cwinf"]}],
        model=args.model, size=args.size, n=args.n, eps=args.eps, steps=args.steps, mean_change=change,
        data="synthetic")


if __name__ == "__main__":
    main()
