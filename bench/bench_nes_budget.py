"""NES success against queries: how many iterations the XAI chapter needs to compare tools.

Runs the chapter's experiment (:func:`dfrobust.experiments.xai.run_xai`) with the **random** ranking at
the largest k and NES on the whole image (the ceiling), on the profile's trained Meso4 and its first
``n_pairs`` protocol pairs, with a long NES budget (``--iters``). Queries to flip are recorded per pair
and each pair has its own noise stream, so the run at ``--iters`` also gives, exactly, the result of
every shorter run: the fraction flipped within ``s`` iterations is the fraction with queries to flip
``<= s (1 + 2 nes_pairs) + 1``. Prints that curve side by side for random segments and the whole
image, with the seconds per pair each budget costs here (early stop included), so the default
``nes_iters`` can be read off: random segments at the largest k should flip 20-30 % of the fakes.

    python bench/bench_nes_budget.py [--profile default] [--iters 40] [--pairs 0 (the profile's)]
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from bench_xai import chapter_params

from dfrobust.attacks.nes import nes_budget
from dfrobust.core.device import describe, pick_device
from dfrobust.data import get_manifest
from dfrobust.data.manifest import load_images
from dfrobust.experiments import xai
from dfrobust.models.published import get_detector
from dfrobust.study.perf import bench_parser, finish_bench


def main(argv=None):
    ap = bench_parser(__doc__)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--pairs", type=int, default=0, help="analysed pairs (0: the profile's n_pairs)")
    a = ap.parse_args(argv)
    dev = pick_device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    p = chapter_params(a.profile)
    manifest = get_manifest(a.profile, "images", seed=0)
    td = get_detector("meso4", manifest, profile=a.profile, seed=0, device=str(dev))
    pairs = xai.candidate_pairs(manifest, seed=0)
    k = max(int(v) for v in str(p["top_k"]).split(","))
    nes = dict(steps=a.iters, n_pairs=p["nes_pairs"], sigma=p["nes_sigma"], eps=p["eps"], alpha=p["alpha"])
    t0 = time.perf_counter()
    ds = xai.run_xai({f"meso4@{td.input_size}": td.model}, pairs, tools=["random"], top_k=[k],
                     n_segments=p["n_segments"], seed=0, device=str(dev), nes=nes, deletion_steps=2, keep=0,
                     load=load_images, n_pairs=a.pairs or p["n_pairs"], masks=p["masks"],
                     area_per_k=p["area_per_k"]).records
    wall = time.perf_counter() - t0
    ana = ds["analysed"].values[0] == 1
    q_rand = ds["queries"].values[0, 0, 0, ana]
    q_full = ds["full_queries"].values[0, ana]
    hit_rand = ds["censored"].values[0, 0, 0, ana] == 0          # a censored pair sits at the budget: no flip
    hit_full = ds["full_success"].values[0, ana] == 1
    per_query_s = float(ds["attack_time_s"].values[0, 0, 0, ana].sum() / q_rand.sum())
    rows = []
    for s in sorted({i for i in (1, 2, 3, 4, 6, 8, 10, 12, 15, 20, 25, 30, 35, 40) if i < a.iters} | {a.iters}):
        b = nes_budget(s, p["nes_pairs"])
        rows.append({"iters": s, "budget": b, "random_k%d" % k: float((hit_rand & (q_rand <= b)).mean()),
                     "full_image": float((hit_full & (q_full <= b)).mean()),
                     "attack_s_per_pair": float(np.minimum(q_rand, b).mean() * per_query_s)})
    curve = pd.DataFrame(rows)
    print(f"Meso4 @ {td.input_size} px, {int(ana.sum())} pairs, {a.profile} profile, k = {k}, "
          f"nes_pairs = {p['nes_pairs']}, alpha = {p['alpha']:.4f}, eps = {p['eps']:.4f}; {describe(dev)}")
    print(curve.round(3).to_string(index=False))
    print(f"run: {wall:.0f} s")
    return finish_bench(a, describe(dev), [], profile=a.profile, pairs=int(ana.sum()), k=k,
                        curve=curve.to_dict("records"), wall_s=wall)


if __name__ == "__main__":
    main()
