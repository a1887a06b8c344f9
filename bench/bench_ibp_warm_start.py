"""Certified training of Meso4 at the default profile (issue 25): a warm-started IBP fine-tune, measured.

Trains (or loads from the cache) the standard Meso4 of the profile, then ``meso4_ibp`` with the study's values
and the overrides given as JSON (e.g. ``'{"warm_start": "meso4", "epochs": 3}'``), and reports the fine-tune's
wall and CPU seconds, its clean val/test AUC, and chapter 07's band at its default settings (CROWN, budget 8,
batch 6, the radii 0.5/255 ... 2/255, FGSM and PGD 10 steps for the attack side, ``n`` test images picked as the
chapter picks them) for the standard Meso4 and the certified one side by side.

    DFROBUST_HOME=$PWD PYTHONPATH=$PWD/src nice -n 5 .venv/bin/python bench/bench_ibp_warm_start.py \
        '{"warm_start": "meso4", "epochs": 3, "lr": 1e-3}' --n 36
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dfrobust import attacks, certify, metrics  # noqa: F401 - registers the "ibp" and "pgd" objectives
from dfrobust.data import get_manifest, sampling
from dfrobust.experiments import certified as ch07
from dfrobust.experiments.records import attack_records, load_samples
from dfrobust.models.published import evaluation_manifest
from dfrobust.models.train import get_trained, val_auc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("overrides", nargs="?", default="{}", help="JSON training overrides for meso4_ibp")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--n", type=int, default=36, help="test images certified (chapter 07 default: 36)")
    ap.add_argument("--skip-meso4", action="store_true", help="certify only the IBP-trained detector")
    args = ap.parse_args()
    torch.set_num_threads(2)
    manifest = get_manifest(args.profile, "images", seed=0)
    trained = {"meso4": get_trained("meso4", manifest, profile=args.profile, seed=0, device="cpu")}
    c0, t0 = time.process_time(), time.perf_counter()
    trained["meso4_ibp"] = td = get_trained("meso4_ibp", manifest, profile=args.profile, seed=0, device="cpu",
                                            progress=True, **json.loads(args.overrides))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for name, t in trained.items():
        auc = float(t.record["auc"].sel(subset="all"))
        print(f"{name}: val AUC {val_auc(t):.3f}, test AUC {auc:.3f}, train_time_s {t.train_time_s:.0f}"
              f"{' (cached)' if t.cached else ''}, epochs run {t.record.sizes['epoch']}")
    print(f"meso4_ibp get_trained: {wall:.0f} s wall, {cpu:.0f} s CPU (this process), hparams {td.hparams}")
    if args.skip_meso4:
        trained.pop("meso4")
    eps_grid = [0.0, 0.5 / 255, 1 / 255, 2 / 255]
    sel = sampling.select_samples(evaluation_manifest(manifest, list(trained)), args.n, seed=0)
    images, labels, sample_meta, _ = load_samples(sel, td.input_size)
    detectors = {m: t.model.eval() for m, t in trained.items()}
    t0 = time.perf_counter()
    cert = certify.certified_records(detectors, images, eps_grid, method="crown", labels=labels, batch_size=6,
                                     device="cpu", crown_budget=8)
    print(f"certification: {time.perf_counter() - t0:.0f} s wall")
    atk = attack_records(detectors, ["fgsm", "pgd"], eps_grid, images, labels, sample_meta, seed=0, device="cpu",
                         attack_kw={"pgd": {"steps": 10}}, ssim=False)
    change_atk = metrics.prob_change(atk).max("attack")
    viol = int((change_atk > cert["certified_change"] + 1e-5).sum())
    bands = ch07.band_table(cert, change_atk, ch07.first_order_records(detectors, images, eps_grid), 0.1)
    print(f"attack beats certificate in {viol} cells")
    print(bands.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
