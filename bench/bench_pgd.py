"""Bench: PGD throughput vs the model's own forward+backward throughput at the same batch.

A k-step PGD costs about k forward+backward passes (+ one forward for the result), so
``PGD images/s × k ≈ fwd+bwd images/s`` when torchattacks adds little overhead. Both are timed
side by side in one process; batch size and device come from dfrobust.core.device.

    python bench/bench_pgd.py                         # small CPU defaults, < 2 min
    python bench/bench_pgd.py --model resnet34 --size 256 --steps 10 --device cuda --repeats 5
"""

from __future__ import annotations

import time

import torch

from dfrobust.attacks import make_attack
from dfrobust.study.perf import bench_parser, finish_bench, sync
from dfrobust.core.device import auto_batch_size, describe, pick_device


def main(argv=None) -> dict:
    ap = bench_parser(__doc__)
    ap.add_argument("--model", default="meso4")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=0, help="0: dfrobust.core.device.auto_batch_size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.full:
        args.size, args.steps = 256, 10
    torch.set_num_threads(args.threads)
    from dfrobust.models import build

    dev = pick_device(args.device)
    model = build(args.model, args.size).to(dev).eval()
    bs = args.batch or auto_batch_size(dev, args.size)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs, 3, args.size, args.size, generator=g).to(dev)
    y = torch.randint(0, 2, (bs,), generator=g).to(dev)
    loss = torch.nn.CrossEntropyLoss()

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(loss(model(xi), y), xi)

    atk = make_attack("pgd", model, eps=8 / 255, steps=args.steps, seed=0)
    fwd_bwd(); atk(x, y); sync(dev)  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.repeats * args.steps):
        fwd_bwd()
    sync(dev)
    t_fb = (time.perf_counter() - t0) / (args.repeats * args.steps)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        atk(x, y)
    sync(dev)
    t_pgd = (time.perf_counter() - t0) / args.repeats
    return finish_bench(args, describe(dev), [
        {"what": f"one PGD step vs one forward+backward (batch {bs})", "fast_s": t_fb, "slow_s": t_pgd / args.steps}],
        model=args.model, size=args.size, batch=bs, steps=args.steps,
        fwd_bwd_img_per_s=round(bs / t_fb, 1), pgd_img_per_s=round(bs / t_pgd, 1))


if __name__ == "__main__":
    main()
