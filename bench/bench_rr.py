"""Bench: RR over a tolerance grid from ONE attack pass vs re-attacking per tolerance level.

RR(ε, b) for every b is a reduction of the per-sample records of one attack pass
(dfrobust.experiments.records.attack_records + dfrobust.metrics.robust_ratio). The naive protocol re-runs
the attack for each tolerance level and thresholds that run. Both are timed side by side in one
process and printed as a ratio (expect ≈ number of levels). Also checks that both give the same
RR when the attack is deterministic (FGSM) — the speed-up costs nothing.

    python bench/bench_rr.py                      # small CPU defaults, < 2 min
    python bench/bench_rr.py --full --device cuda # 256 px, 64 images, PGD
    python bench/bench_rr.py --model meso4 --n 64 --size 256 --levels 21 --attack pgd --device cuda
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dfrobust import metrics
from dfrobust.experiments import records
from dfrobust.core.device import describe, pick_device, seed_everything
from dfrobust.study.perf import bench_parser, finish_bench


def build_model(name: str, size: int):
    from dfrobust.models import build

    return build(name, size).eval()


def main(argv=None) -> dict:
    ap = bench_parser(__doc__)
    ap.add_argument("--model", default="meso4", help="detector from dfrobust.models.MODELS")
    ap.add_argument("--size", type=int, default=64, help="input size")
    ap.add_argument("--n", type=int, default=16, help="images")
    ap.add_argument("--levels", type=int, default=21, help="tolerance levels b in [0, 0.2]")
    ap.add_argument("--attack", default="fgsm", help="a budgeted attack: fgsm, pgd, pgdl2, cwinf or rr")
    ap.add_argument("--eps", type=float, default=0.03, help="L∞ radius")
    ap.add_argument("--steps", type=int, default=5, help="PGD/CW steps")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.full:
        args.size, args.n, args.attack = 256, 64, "pgd"
    torch.set_num_threads(args.threads)
    seed_everything(0)
    dev = pick_device(args.device)
    b_grid = metrics.linspace_grid(0.2, args.levels, what="b")
    attack, _ = records.check_sweep([args.attack], [args.eps], b_grid=b_grid)
    model = build_model(args.model, args.size)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, args.size, args.size, generator=g)
    y = torch.randint(0, 2, (args.n,), generator=g)
    kw = {a: {"steps": args.steps} for a in ("pgd", "pgdl2", "cwinf", "rr")}
    run = lambda: records.attack_records({args.model: model}, attack, [args.eps], x, y, seed=0,  # noqa: E731
                                            device=str(dev), attack_kw=kw, ssim=False)
    run()  # warm-up
    t0 = time.perf_counter()
    rr_once = metrics.robust_ratio(run(), b_grid)
    t_once = time.perf_counter() - t0
    t0 = time.perf_counter()
    rr_each = [metrics.robust_ratio(run(), [b]).isel(b=0) for b in b_grid]
    t_each = time.perf_counter() - t0
    same = bool(np.array_equal(rr_once.squeeze().values, np.array([float(r.squeeze()) for r in rr_each])))
    return finish_bench(args, describe(dev), [
        {"what": f"RR at {len(b_grid)} tolerance levels: re-attack per level vs one pass", "fast_s": t_once,
         "slow_s": t_each}], model=args.model, size=args.size, n=args.n, attack=attack[0], identical_rr=same)


if __name__ == "__main__":
    main()
