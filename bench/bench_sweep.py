"""Sweep throughput with 1 vs N dask workers (scaling efficiency), and a paper-scale time estimate.

The same grid of chapter-03 cells (random-weight MesoNets on **synthetic** noise images, so the
benchmark needs no training) runs three times into fresh shard folders: serially in this process
(``workers=0``), on a LocalCluster with 1 worker and on one with N workers. Cluster start-up and
worker warm-up (imports) are excluded: each cluster first runs one warm-up cell outside the
timed grid, and the variants run interleaved ``--repeats`` times (fastest kept). ``ratio`` = t(1 worker) / t(N workers); scaling efficiency = ratio / N.

The estimate times one PGD cell per architecture at the paper's input size (2 images, 1 radius,
2 steps), takes seconds per (image x radius x gradient step) from it and multiplies by the
paper grid: chapter 03's ``paper`` profile (504 images, 12 radii, PGD 10 steps + FGSM, 3
detectors) and the issue's full scale (7,680 images x 3 detectors x 4 attacks x 11 radii x 10
steps), for 1 worker and for N workers at the measured efficiency. On a shared CPU every number
is inflated by the other load; compare ratios, and use ``--device cuda`` on a GPU machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfrobust.study.perf import bench_parser, finish_bench  # noqa: E402


def _toy(tmp: Path, n: int, size: int, archs=("meso4", "mesoinception4")):
    import cv2
    import numpy as np
    import pandas as pd
    import torch

    from dfrobust.models import build
    from dfrobust.models.train import save_checkpoint
    from dfrobust.study import sweep

    torch.manual_seed(0)
    refs = [sweep.detector_ref(a, save_checkpoint(build(a, size).eval(), tmp / f"{a}-{size}.pt")) for a in archs]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        p = tmp / "img" / f"{size}-{i}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        rows.append({"path": str(p), "label": i % 2, "group": f"g{i % 3}", "dataset": "synthetic"})
    return refs, pd.DataFrame(rows)


def _timed(cells, out, client=None):
    from dfrobust.study import sweep

    t0 = time.perf_counter()
    rep = sweep.run_cells(cells, out, client=client)
    if rep.failed:
        raise RuntimeError(f"bench sweep: {len(rep.failed)} cells failed: {next(iter(rep.failed.values()))}")
    return time.perf_counter() - t0, rep


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--workers", type=int, default=2, help="N, the workers of the scaled run")
    ap.add_argument("--samples", type=int, default=32, help="images in the timed grid")
    ap.add_argument("--shard-size", type=int, default=8, help="images per cell")
    ap.add_argument("--size", type=int, default=64, help="input size of the toy detectors (quick profile: 64)")
    ap.add_argument("--steps", type=int, default=6, help="PGD steps")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats (the fastest of each is kept)")
    args = ap.parse_args()
    if args.full:
        args.samples, args.size, args.steps = max(args.samples, 64), 256, 10
    if args.workers < 1:
        raise SystemExit(f"--workers={args.workers}: expected an integer >= 1")

    import torch

    from dfrobust.core.device import describe, pick_device
    from dfrobust.study import sweep

    dev = pick_device(args.device)
    device = describe(dev) + f"; {args.workers} workers requested"
    eps = [0.0, 0.004, 0.016, 0.06]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        refs, sel = _toy(tmp, args.samples, args.size)
        plan = dict(size=args.size, seed=0, shard_size=args.shard_size, attack_kw={"pgd": {"steps": args.steps}},
                    device=dev.type)
        cells = sweep.plan_cells("03_robustness", refs, ["fgsm", "pgd"], eps, sel, **plan)
        warm = sweep.plan_cells("03_robustness", refs, ["fgsm"], eps, sel.head(2),
                                **{**plan, "shard_size": 2, "seed": 99})
        torch.set_num_threads(1)
        clients = {}
        times = {n: [] for n in sorted({1, args.workers})}
        serial = []
        try:
            for n in times:  # both clusters up and warm before anything is timed
                clients[n] = sweep.make_client(workers=n, device=dev.type)
                clients[n].run(lambda: __import__("dfrobust.study.sweep"))
                sweep.run_cells(warm, tmp / f"warm{n}", client=clients[n])  # imports and detector loads
            for r in range(args.repeats):  # interleaved, so a burst of outside load hits every variant
                serial.append(_timed(cells, tmp / f"serial{r}")[0])
                for n in times:
                    times[n].append(_timed(cells, tmp / f"w{n}-{r}", client=clients[n])[0])
        finally:
            for c in clients.values():
                cl = c.cluster
                c.close()
                cl.close()
        t_serial = min(serial)
        times = {n: min(v) for n, v in times.items()}

        # ---- per-step cost of the real architectures at the paper's input size
        per_step = {}
        for arch, size in (("meso4", 256), ("mesoinception4", 256), ("resnet34", 256)):
            r, s = _toy(tmp, 2, size, archs=(arch,))
            one = sweep.plan_cells("03_robustness", r, ["pgd"], [0.0, 0.03], s, size=size, seed=0, shard_size=2,
                                   attack_kw={"pgd": {"steps": 2}}, device=dev.type)
            sweep.run_cells(sweep.plan_cells("03_robustness", r, ["fgsm"], [0.0, 0.03], s, size=size, seed=1,
                                             shard_size=2, device=dev.type), tmp / f"warm-{arch}")
            wall, _ = _timed(one, tmp / f"est-{arch}")
            per_step[arch] = wall / (2 * 1 * (2 + 1))  # images x radii x (steps + the measuring pass)

    n = args.workers
    speedup = times[1] / times[n]
    eff = speedup / n
    step_sum = sum(per_step.values())
    ch03_s = step_sum * 504 * 12 * (10 + 1)            # PGD 10 steps + FGSM per radius, 3 detectors
    issue_s = step_sum * 7680 * 4 * 11 * 10            # 4 attacks x 11 radii x 10 steps, 3 detectors
    est = {"per_step_s": {k: round(v, 4) for k, v in per_step.items()},
           "chapter03_paper_h_1_worker": round(ch03_s / 3600, 2),
           f"chapter03_paper_h_{n}_workers": round(ch03_s / 3600 / max(n * eff, 1e-9), 2),
           "issue_scale_h_1_worker": round(issue_s / 3600, 1),
           f"issue_scale_h_{n}_workers": round(issue_s / 3600 / max(n * eff, 1e-9), 1)}
    print(f"grid: {len(cells)} cells ({args.samples} synthetic images, shard {args.shard_size}, {len(eps)} radii, "
          f"PGD {args.steps} steps, {args.size}px); serial {t_serial:.2f} s, 1 worker {times[1]:.2f} s, "
          f"{n} workers {times[n]:.2f} s; scaling efficiency {eff:.2f}")
    print("seconds per image x radius x step at 256 px: " + ", ".join(f"{k} {v:.4f}" for k, v in per_step.items()))
    print(f"paper-scale estimate: chapter 03 paper profile {est['chapter03_paper_h_1_worker']} h on 1 worker, "
          f"{est[f'chapter03_paper_h_{n}_workers']} h on {n}; the issue's scale {est['issue_scale_h_1_worker']} h on 1, "
          f"{est[f'issue_scale_h_{n}_workers']} h on {n} (this device, at the measured efficiency)")
    finish_bench(args, device, [
        {"what": f"sweep throughput, {n} workers vs 1 worker (cells/s ratio)", "fast_s": times[n], "slow_s": times[1]},
        {"what": "sweep, 1 dask worker vs serial in-process (dask overhead)", "fast_s": t_serial, "slow_s": times[1]},
    ], workers=n, scaling_efficiency=round(eff, 3), cells=len(cells), serial_s=round(t_serial, 3),
        worker_s={str(k): round(v, 3) for k, v in times.items()}, estimate=est,
        note="synthetic images, random-weight detectors; shared machines inflate times")


if __name__ == "__main__":
    main()
