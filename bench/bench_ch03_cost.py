"""Bench: the cost of chapter 03 per profile, from the cost of one gradient pass per image.

The chapter's attacks cost (images) × (gradient passes per image) × (one forward + backward of every
detector). Passes per image: the ε sweep fgsm,pgd,cwinf,rr takes ``n_eps * (1 + 4 * pgd_steps)`` (FGSM
one, PGD and CW-L∞ ``pgd_steps`` each, the RR attack two PGD runs), CW-L2 ``cw_search_steps * cw_steps``.
This script times one pass of the three detectors at the quick input size (64 px) and at the default
sizes side by side and prints the ratio, then the passes and the estimated attack seconds of each
profile from ``notebooks/study.yml`` (how notebooks/study.yml's sizes were chosen).

    OMP_NUM_THREADS=1 python bench/bench_ch03_cost.py
"""

from __future__ import annotations

import time

import torch

from dfrobust.core.device import describe, pick_device
from dfrobust.study.perf import bench_parser, finish_bench

SIZES = {"quick": {"meso4": 64, "mesoinception4": 64, "resnet34": 64},
         "default": {"meso4": 128, "mesoinception4": 128, "resnet34": 96}}


def pass_seconds(sizes: dict, dev, batch: int = 16, repeats: int = 3) -> float:
    """Seconds of one forward + backward per image, summed over the detectors."""
    from dfrobust.models import build

    total = 0.0
    for name, size in sizes.items():
        m = build(name, size).to(dev).eval()
        x = torch.rand(batch, 3, size, size, device=dev, requires_grad=True)
        m(x)[:, 0].sum().backward()  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            x.grad = None
            m(x)[:, 0].sum().backward()
        total += (time.perf_counter() - t0) / (repeats * batch)
    return total


def passes_per_image(p: dict) -> tuple[int, int]:
    attacks = [a.strip() for a in str(p["attacks"]).split(",") if a.strip()]
    per_radius = sum({"fgsm": 1, "pgd": p["pgd_steps"], "pgdl2": p["pgd_steps"], "cwinf": p["pgd_steps"],
                      "rr": 2 * p["pgd_steps"]}[a] for a in attacks)
    return int(p["n_eps"]) * per_radius, int(p["cw_search_steps"]) * int(p["cw_steps"])


def main() -> None:
    import ast

    from dfrobust.study import declared_parameters
    from dfrobust.study.spec import load_study, resolve_params

    args = bench_parser(__doc__).parse_args()
    dev = pick_device(args.device)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    quick_s = pass_seconds(SIZES["quick"], dev)
    default_s = pass_seconds(SIZES["default"], dev)
    study = load_study()
    nb = study.notebook("03_robustness")
    template = {k: ast.literal_eval(v["default"]) for k, v in declared_parameters(nb.template).items()}
    estimates = {}
    for profile in ("quick", "default"):
        p = {**template, **resolve_params(study, nb, profile)}
        sweep, cw = passes_per_image(p)
        per = quick_s if profile == "quick" else default_s
        estimates[profile] = {"n_samples": p["n_samples"], "sweep_passes": sweep, "cw_passes": cw,
                              "attack_s": round(p["n_samples"] * (sweep + cw) * per, 1)}
        print(f"{profile}: {p['n_samples']} images x ({sweep} sweep + {cw} CW-L2 passes) x "
              f"{per * 1e3:.1f} ms = {estimates[profile]['attack_s']:.0f} s of attacks")
    finish_bench(args, describe(dev), [{"what": "one pass of the three detectors, default sizes vs quick (64 px)",
                                        "fast_s": quick_s, "slow_s": default_s}], estimates=estimates)


if __name__ == "__main__":
    main()
