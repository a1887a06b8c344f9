"""Bench: CW-L2 settings against the reference search (issue #23.5), side by side in one run.

Runs chapter 03's CW-L2 minimal-perturbation records (``experiments.records.minimal_records``) on the
first ``--n`` test images that chapter 03 attacks at ``--profile`` (its trained detectors, loaded from
the data home: run the chapter, or ``dfrobust train``, first), for the reference setting of Carlini &
Wagner (9 binary-search steps x 100 Adam steps at lr 0.01, the registry's defaults) and cheaper ones.
Prints, per setting, the median minimal ||δ||₂ over the images (per detector, pooled) as a ratio of the
reference's, the share flipped and the seconds; the cheapest setting within ~1.1x of the reference is
what ``notebooks/study.yml`` uses at default and real.

    OMP_NUM_THREADS=1 python bench/bench_cw_settings.py --profile quick --n 16
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dfrobust.core.device import describe, pick_device
from dfrobust.study.perf import bench_parser, finish_bench

#: (search_steps, steps, lr): the reference first
SETTINGS = [(9, 100, 0.01), (3, 10, 0.05), (2, 30, 0.01), (2, 40, 0.01), (2, 50, 0.01), (3, 30, 0.01)]


def main() -> None:
    from dfrobust.experiments import records, robustness
    from dfrobust.study.runner import check_arguments
    from dfrobust.study.spec import load_study, resolve_params

    ap = bench_parser(__doc__)
    ap.add_argument("--profile", default="quick", help="whose trained detectors and test images to use")
    ap.add_argument("--n", type=int, default=16, help="test images attacked")
    args = ap.parse_args()
    dev = pick_device(args.device)
    torch.set_num_threads(1)
    study = load_study()
    nb = study.notebook("03_robustness")
    q = check_arguments(nb, {**resolve_params(study, nb, args.profile, {"device": str(dev)}), "profile": args.profile})
    p = robustness.check_params(**q)
    s = robustness.setup(p, profile=args.profile)
    names = s.analysed or p["models"][:1]
    images, labels, meta, _ = records.load_samples(s.selection.iloc[:args.n], s.size)
    detectors = {m: s.trained[m].model for m in names}
    ref, ratios, details = None, [], {}
    for search, steps, lr in SETTINGS:
        kw = records.cw_options(c_init=1.0, search_steps=search, steps=steps, lr=lr)
        t0 = time.perf_counter()
        rec = records.minimal_records(detectors, images, labels, meta, device=str(dev), cw_kw=kw)
        t = time.perf_counter() - t0
        l2 = rec["l2_min"].values
        med = {m: float(np.median(l2[i])) for i, m in enumerate(names)}
        pooled = float(np.median(l2))
        if ref is None:
            ref = (pooled, t, med)
        key = f"{search}x{steps}@{lr:g}"
        details[key] = {"seconds": round(t, 2), "median_l2": round(pooled, 4), "ratio_to_reference": round(pooled / ref[0], 3),
                        "per_detector_ratio": {m: round(med[m] / ref[2][m], 3) for m in names},
                        "flipped": float(rec["found"].values.mean())}
        ratios.append({"what": f"CW-L2 {key} vs reference 9x100@0.01 ({args.n} images, {','.join(names)})",
                       "fast_s": t, "slow_s": ref[1]})
        print(f"  {key:>12s}: median ||δ||₂ {pooled:.4f} = {pooled / ref[0]:.2f}x reference "
              f"({details[key]['per_detector_ratio']}), flipped {details[key]['flipped']:.0%}, {t:.1f} s", flush=True)
    finish_bench(args, describe(dev), ratios, settings=details)


if __name__ == "__main__":
    main()
