"""The prepared GPU check (issue 28): every CUDA path of the study and the paper-scale figures, in one run.

Run from the repository root of a fresh copy, on one GPU, through ``bash bench/gpu_check.sh`` (which
installs carried wheels and sets ``PYTHONPATH``; see bench/README.md). Stages, each in its own
process under its own time cap (a stage past its cap is killed and reported as ``timeout``; the
others still run), in this order:

* ``env`` — torch, CUDA, cuDNN, the driver, the device's name, memory and capability;
* ``ch03`` — chapter 03's sweep cells at the ``paper`` profile's settings (attacks, ε grid, PGD
  steps, shard size, detector sizes, from notebooks/study.yml) on a reduced sample of **synthetic**
  noise images with random-weight detectors, on one dask GPU worker (:func:`dfrobust.study.sweep.make_client`),
  every sample attacked at every radius (the worst case: no sample settles); CW-L2 minimal
  perturbations timed on a few images; both extrapolated linearly to the profile's images;
* ``ch03_check`` — the records of a small subset (a few images, three radii, random starts off)
  computed on CUDA (TF32 off) and on the CPU must agree within ``--atol`` (else a mismatch: exit 1);
* ``oom`` — the out-of-memory path for real: a ResNet-34 PGD cell runs once, the process's GPU memory is
  then capped (``torch.cuda.set_per_process_memory_fraction``) below its peak, and the same cell must
  recover by halving its batch (:func:`dfrobust.core.device.halving_retry`) with records identical to a
  run made directly at the batch size that worked;
* the ``bench/`` scripts with a GPU mode, each with ``--device cuda --full`` (its own fast vs slow path
  side by side, as the script defines), JSON kept.

Writes ``gpu_check.json`` (every stage's status, cap, wall time and report), ``gpu_check.md`` (the
goals table, :func:`dfrobust.study.perf.gpu_report_table`) and ``gpu_check.log`` into ``--out`` (default
``$OUT``, else ``bench/out/gpu_check``). Exit 1 on any mismatch or failed stage, 2 on bad arguments or
missing packages; a stage that ran out of time is reported, not an error. ``--dry-run`` plans every
stage with its cap and executes nothing (runs on a CPU; CI runs it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: seconds for the whole run (the issue's 8 minutes); stage caps are cut to what is left of it
TOTAL_S = 465
#: modules the stages import -> the distribution that provides them (a missing one is named in one line)
REQUIRED = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "pandas": "pandas",
            "xarray": "xarray", "h5netcdf": "h5netcdf", "h5py": "h5py", "scipy": "scipy", "skimage": "scikit-image",
            "cv2": "opencv-python-headless", "yaml": "PyYAML", "dask": "dask", "distributed": "distributed",
            "torchattacks": "torchattacks", "lime": "lime", "saliency": "saliency", "pytorch_grad_cam": "grad-cam",
            "ttach": "ttach", "lazy_importer": "lazy-importer", "tornado": "tornado", "zict": "zict", "tblib": "tblib",
            "locket": "locket", "papermill": "papermill"}
#: the device of the stages (a constant, so a rehearsal on a CPU can swap it)
DEVICE = "cuda"
#: the options a stage run in a child gets from the driver
STAGE_ARGS = ("ch03_images", "cw_images", "check_images", "oom_images", "atol")
#: the distributions the H200 image lacks (KINDS.md's package list): carried as wheels (bench/README.md)
CARRIED = ["torchattacks", "lime", "saliency", "grad-cam", "ttach", "lazy-importer", "h5netcdf", "dask", "distributed",
           "tornado", "zict", "tblib", "locket", "importlib_metadata",
           # papermill reads the templates' parameters (study.spec); the rest is what it needs beyond the image
           "papermill", "nbclient", "nbformat", "jupyter_client", "jupyter_core", "traitlets", "platformdirs",
           "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "fastjsonschema", "tenacity",
           "entrypoints", "pyzmq"]


@dataclass
class Stage:
    name: str
    cap_s: int
    what: str
    script: str = ""                       # a bench/ script (run with --device cuda --full), else a stage here
    args: list = field(default_factory=list)


def stages(a) -> list[Stage]:
    """The stages in run order: the ones the issue's goals and checks need first, so a short run still answers them."""
    return [
        Stage("env", 20, "torch, CUDA, cuDNN, driver, device name, memory and capability"),
        Stage("ch03", 150, f"chapter 03 at paper settings on {a.ch03_images} synthetic images, one GPU worker; "
              f"CW-L2 on {a.cw_images}; projected to the paper profile"),
        Stage("ch03_check", 60, f"chapter 03 cells on {a.check_images} images: CUDA records vs CPU records"),
        Stage("oom", 30, "GPU memory capped below a ResNet-34 PGD cell's peak: halving recovers, identical records"),
        Stage("bench_pgd", 25, "one PGD step vs one forward+backward (Meso4, 256 px)", "bench_pgd.py"),
        Stage("bench_pgd_resnet34", 20, "the same for ResNet-34 (chapter 03's dominant detector)", "bench_pgd.py",
              ["--model", "resnet34", "--batch", "128"]),
        Stage("bench_nes", 35, "masked NES: one query batch per step vs a per-sample loop", "bench_nes.py"),
        Stage("bench_lime", 35, "LIME: tensor neighbourhood vs lime's loop", "bench_lime.py", ["--no-tools"]),
        Stage("bench_rr", 20, "RR at 21 tolerances: one attack pass vs one per level", "bench_rr.py"),
        Stage("bench_attacks", 15, "RR attack and CW-Linf vs PGD-CE", "bench_attacks.py"),
        Stage("bench_certify", 45, "CROWN chunking; IBP vs CROWN", "bench_certify.py"),
    ]


#: bench scripts whose --device picks where they run (``pick_device``) that are not run here, and why (the dry run lists them)
NOT_RUN = {"bench_sweep.py": "its ratio is N workers vs 1: needs several GPUs (the ch03 stage times one GPU worker)",
           "bench_ch03_cost.py": "sizes the CPU profiles (quick, default); the ch03 stage measures the paper one",
           "bench_xai.py": "minutes per pair at a profile's settings: longer than the whole check",
           "bench_nes_budget.py": "a success-vs-queries curve that sizes the CPU default's NES budget; "
                                  "bench_nes times the NES step on the GPU",
           "bench_cw_settings.py": "compares CW-L2 settings with the 9x100 reference on trained CPU-profile "
                                   "detectors (sizes the CPU default); minutes, not in the check's 8 minutes",
           "bench_radii.py": "sizes the radii bisection of the CPU default (cost vs the grid); not in the "
                             "check's 8 minutes"}


# ----------------------------------------------------------------------------- the paper settings

def paper_plan(a) -> dict:
    """Chapter 03's paper-profile parameters, resolved and checked as the runner does (template defaults,
    then notebooks/study.yml), plus the detectors' input sizes of the paper profile."""
    from dfrobust.core.profiles import settings
    from dfrobust.experiments import robustness
    from dfrobust.study.runner import check_arguments
    from dfrobust.study.spec import load_study, resolve_params

    study = load_study()
    nb = study.notebook("03_robustness")
    q = check_arguments(nb, {**resolve_params(study, nb, "paper", {"device": "cpu"}), "profile": "paper"})
    p = robustness.check_params(**q)
    training = settings("training", "paper")
    sizes = {m: int(training[m]["input_size"]) for m in p["models"]}
    return {"models": p["models"], "attacks": p["attacks"], "eps_grid": [float(e) for e in p["eps_grid"]],
            "attack_kw": p["attack_kw"], "cw_kw": p["cw_kw"], "n_samples": int(q["n_samples"]),
            "shard_size": int(q["shard_size"]), "seed": int(q["seed"]), "sizes": sizes}


# ----------------------------------------------------------------------------- stages run in a child

def _toy(tmp: Path, n: int, sizes: dict, seed: int = 0):
    """Random-weight detectors (one checkpoint each, at its paper size) and ``n`` **synthetic** noise PNGs."""
    import cv2
    import numpy as np
    import pandas as pd
    import torch

    from dfrobust.models import build
    from dfrobust.models.train import save_checkpoint
    from dfrobust.study import sweep

    torch.manual_seed(seed)
    refs = [sweep.detector_ref(m, save_checkpoint(build(m, s).eval(), tmp / f"{m}-{s}.pt")) for m, s in sizes.items()]
    size = max(sizes.values())
    rng = np.random.default_rng(seed)
    (tmp / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = tmp / "img" / f"{i:05d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        rows.append({"path": str(path), "label": i % 2, "group": f"g{i % 6}", "dataset": "synthetic"})
    return refs, pd.DataFrame(rows)


#: relative tolerance of the perturbation's L2 norm: a sign-gradient step moves a pixel by ±α whose sign the
#: device's rounding decides where that pixel's gradient is near zero, so the paths part on a few pixels; the
#: L∞ norm and the probabilities stay within ``--atol`` (H200, 2026-12-04: 5 of 144 L2 records differed by
#: up to 0.12 absolute, under 0.3 % of their value, with every probability within 7.5e-4 and L∞ equal)
L2_RTOL = 1e-2


def compare_records(a, b, *, atol: float, rtol: float = 1e-3) -> dict:
    """CPU vs CUDA (or two CUDA runs): per continuous record, the largest difference and the number of
    records outside ``atol + rtol*|a|`` (``L2_RTOL`` for the L2 norm); decisions (``pred_adv``) that
    differ are counted apart (a probability within the tolerance of 0.5 may fall either side)."""
    import numpy as np

    out, bad = {}, 0
    for v in ("p_clean", "p_clean_fake", "p_adv", "p_adv_fake", "l2", "linf", "ssim"):
        x, y = np.asarray(a[v].values, float), np.asarray(b[v].values, float)
        n = int((~np.isclose(x, y, rtol=max(rtol, L2_RTOL) if v == "l2" else rtol, atol=atol,
                             equal_nan=True)).sum())
        out[v] = {"max_abs_diff": float(np.nanmax(np.abs(x - y))) if x.size else 0.0, "outside": n}
        bad += n
    out["pred_adv_differs"] = int((a["pred_adv"].values != b["pred_adv"].values).sum())
    out["records"] = int(a["p_adv"].size)
    out["equal"] = bad == 0
    return out


def stage_env(a) -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"not run: {exc}"
    if info["cuda_available"]:
        prop = torch.cuda.get_device_properties(0)
        info.update(device=prop.name, memory_gib=round(prop.total_memory / 2**30, 1),
                    capability=f"{prop.major}.{prop.minor}", multiprocessors=prop.multi_processor_count,
                    devices=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version(),
                    tf32_conv=torch.backends.cudnn.allow_tf32, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    for k, v in info.items():
        print(f"  {k}: {v}")
    if not info["cuda_available"]:
        _save(a, "env", info)
        raise SystemExit(f"env: torch {torch.__version__} sees no CUDA device; the GPU stages are skipped")
    return info


def _save(a, name: str, result: dict) -> dict:
    """Write a stage's result so far (a stage killed at its cap still reports what it finished)."""
    Path(a.work, f"stage-{name}.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def stage_ch03(a) -> dict:
    import dataclasses

    import torch

    from dfrobust.core.device import deterministic
    from dfrobust.experiments import records
    from dfrobust.study import sweep
    from dfrobust.study.perf import sync

    plan = paper_plan(a)
    tmp = Path(a.work) / "ch03"
    shutil.rmtree(tmp, ignore_errors=True)
    refs, sel = _toy(tmp, a.ch03_images, plan["sizes"])
    size = max(plan["sizes"].values())
    common = dict(size=size, seed=plan["seed"], shard_size=plan["shard_size"], attack_kw=plan["attack_kw"])
    cells = sweep.plan_cells("03_robustness", refs, plan["attacks"], plan["eps_grid"], sel, device=DEVICE, **common)
    print(f"  {len(cells)} cells: {sweep.describe_plan(cells)}", flush=True)
    scale = plan["n_samples"] / a.ch03_images
    out = {"images": a.ch03_images, "paper_images": plan["n_samples"], "cells": len(cells),
           "plan": {k: v for k, v in plan.items() if k != "cw_kw"}, "cw_kw": plan["cw_kw"], "mismatch": False}

    # 1) the sweep on one GPU worker, as `dfrobust sweep --profile paper` runs it on this machine
    t0 = time.perf_counter()
    client = sweep.make_client(workers=1, device=DEVICE)
    try:
        warm = sweep.plan_cells("03_robustness", refs, ["fgsm"], plan["eps_grid"][:2], sel.head(2), device=DEVICE,
                                **{**common, "shard_size": 2, "seed": 99})
        sweep.run_cells(warm, tmp / "warm", client=client, gpu=DEVICE == "cuda")  # worker start, imports, CUDA context
        start_s = time.perf_counter() - t0
        rep = sweep.run_cells(cells, tmp / "gpu", client=client, gpu=DEVICE == "cuda")
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    if rep.failed:
        raise RuntimeError(f"{len(rep.failed)} of {rep.total} cells failed: {next(iter(rep.failed.items()))}")
    print(f"  sweep: {rep.summary()}; worker start {start_s:.1f} s", flush=True)
    sweep_min = rep.wall_s * scale / 60
    out.update(sweep_wall_s=round(rep.wall_s, 2), worker_start_s=round(start_s, 2),
               sweep_projected_min=round(sweep_min, 2), cell_wall_s=rep.cell_wall_s)
    _save(a, "ch03", out)

    # 2) CW-L2 minimal perturbations (in the chapter's kernel, all images at once per detector)
    n_cw = min(a.cw_images, a.ch03_images)
    models = {r.name: sweep.load_detector(r, DEVICE) for r in refs}
    images, labels, _, _ = records.load_samples(sel.head(n_cw), size)
    deterministic(torch.device(DEVICE))
    records.minimal_records(models, images[:2], labels[:2], device=DEVICE,
                               cw_kw={**plan["cw_kw"], "steps": 2, "search_steps": 1})  # warm-up
    sync(torch.device(DEVICE))
    t1 = time.perf_counter()
    records.minimal_records(models, images, labels, device=DEVICE, cw_kw=plan["cw_kw"])
    sync(torch.device(DEVICE))
    cw_s = time.perf_counter() - t1
    cw_min = cw_s * plan["n_samples"] / n_cw / 60
    print(f"  CW-L2 on {n_cw} images: {cw_s:.1f} s", flush=True)
    out.update(cw_images=n_cw, cw_wall_s=round(cw_s, 2), cw_projected_min=round(cw_min, 2),
               projected_min=round(sweep_min + cw_min, 2),
               basis=f"{a.ch03_images} synthetic images x {plan['n_samples']}/{a.ch03_images}, random-weight "
                     f"detectors, every sample attacked at every radius; CW-L2 from {n_cw} images")
    _save(a, "ch03", out)

    # what SSIM (skimage, on the CPU, per record) costs in a cell: the costliest cell again, without it
    worst = max(cells, key=lambda c: rep.cell_wall_s.get(c.name, 0.0))
    info = sweep.run_cell(dataclasses.replace(worst, ssim=False), tmp / "nossim")
    out["ssim_probe"] = {"cell": worst.name, "with_ssim_s": rep.cell_wall_s.get(worst.name),
                         "without_ssim_s": round(float(info["wall_s"]), 2)}
    print(f"  costliest cell {worst.name}: {out['ssim_probe']}", flush=True)
    _save(a, "ch03", out)
    return out


def stage_ch03_check(a) -> dict:
    """CUDA vs CPU on a few images: chapter 03's cells at the paper's attacks and steps on three radii,
    random starts off (their draws differ between devices); CUDA with TF32 off must agree within ``--atol``."""
    import torch

    from dfrobust.study import sweep

    plan = paper_plan(a)
    tmp = Path(a.work) / "ch03_check"
    shutil.rmtree(tmp, ignore_errors=True)
    refs, sub = _toy(tmp, a.check_images, plan["sizes"])
    eps = sorted({0.0, plan["eps_grid"][len(plan["eps_grid"]) // 2], plan["eps_grid"][-1]})
    kw = {k: {**v, "random_start": False} for k, v in plan["attack_kw"].items()}  # the iterative attacks
    check = dict(size=max(plan["sizes"].values()), seed=plan["seed"], attack_kw=kw, shard_size=a.check_images,
                 batch_size=a.check_images)
    by_dev, tf32 = {}, (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    for label, device, strict in (("cpu", "cpu", True), ("cuda", DEVICE, True), ("cuda_tf32", DEVICE, False)):
        cs = sweep.plan_cells("03_robustness", refs, plan["attacks"], eps, sub, device=device, **check)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = (False, False) if strict else tf32
        t2 = time.perf_counter()
        for c in cs:
            sweep.run_cell(c, tmp / label, torch_threads=os.cpu_count() or 1)
        by_dev[label] = (sweep.merge_shards(cs, tmp / label), time.perf_counter() - t2)
        print(f"  {len(cs)} cells on {label}: {by_dev[label][1]:.1f} s", flush=True)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    strict_cmp = compare_records(by_dev["cpu"][0], by_dev["cuda"][0], atol=a.atol)
    tf32_cmp = compare_records(by_dev["cpu"][0], by_dev["cuda_tf32"][0], atol=a.atol)
    print(f"  CPU vs CUDA (TF32 off): {json.dumps(strict_cmp)}", flush=True)
    print(f"  CPU vs CUDA (TF32 as torch's default, information only): {json.dumps(tf32_cmp)}", flush=True)
    return {"images": a.check_images, "eps": eps, "atol": a.atol, "rtol": 1e-3, "l2_rtol": L2_RTOL, "tf32_off": strict_cmp,
            "tf32_default": tf32_cmp, "seconds": {k: round(v[1], 2) for k, v in by_dev.items()},
            "mismatch": not strict_cmp["equal"]}


def stage_oom(a) -> dict:
    import numpy as np
    import torch

    from dfrobust.study import sweep
    from dfrobust.study.perf import sync

    tmp = Path(a.work) / "oom"
    shutil.rmtree(tmp, ignore_errors=True)
    refs, sel = _toy(tmp, a.oom_images, {"resnet34": 256})
    kw = {"pgd": {"steps": 10}}

    def cell(bs):
        return sweep.plan_cells("03_robustness", refs, ["pgd"], [0.0, 0.03], sel, size=256, seed=0,
                                shard_size=a.oom_images, attack_kw=kw, batch_size=bs, device=DEVICE)[0]

    big = cell(a.oom_images)
    sweep.load_detector(big.detector, DEVICE)
    sync(torch.device(DEVICE))
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    full = sweep.run_cell(big, tmp / "full")
    peak = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    allowed = base + 0.6 * (peak - base)         # the batch of oom_images does not fit, half of it does
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(allowed / total)
    try:
        capped = sweep.run_cell(big, tmp / "capped")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    used = int(capped["batch_size"])
    print(f"  peak {peak / 2**20:.0f} MiB at batch {a.oom_images}; capped at {allowed / 2**20:.0f} MiB: "
          f"batch {a.oom_images} -> {used}", flush=True)
    direct = cell(used)
    sweep.run_cell(direct, tmp / "direct")
    parts = [sweep.merge_shards([c], tmp / d) for c, d in ((big, "capped"), (direct, "direct"), (big, "full"))]
    same = all(bool(np.array_equal(parts[0][v].values.astype(float), parts[1][v].values.astype(float), equal_nan=True))
               for v in ("p_adv", "p_adv_fake", "l2", "linf", "ssim", "pred_adv"))
    vs_full = compare_records(parts[2], parts[0], atol=a.atol)
    print(f"  halved run == direct run at batch {used}: {same}; vs batch {a.oom_images} (random starts are drawn "
          f"per batch, so not expected equal): {vs_full['p_adv']}", flush=True)
    triggered = used < a.oom_images
    return {"images": a.oom_images, "peak_mib": round(peak / 2**20), "cap_mib": round(allowed / 2**20),
            "batch_full": int(full["batch_size"]), "batch_used": used, "oom_triggered": triggered,
            "identical_to_direct_run": same, "vs_full_batch": vs_full,
            "mismatch": not (triggered and same)}


# ----------------------------------------------------------------------------- the driver

def _run(cmd: list[str], cap: float, log) -> tuple[str, float]:
    """Run ``cmd`` in its own process group, its output echoed and logged; kill the group at ``cap``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
                                [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])})

    def pump():
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=cap)
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the stage and its dask workers
        proc.wait()
        status = "timeout"
    reader.join(timeout=5)
    return status, time.perf_counter() - t0


def missing_modules() -> list[str]:
    return sorted({dist for mod, dist in REQUIRED.items() if importlib.util.find_spec(mod) is None})


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "out" / "gpu_check"),
                    help="folder of gpu_check.json, gpu_check.md and gpu_check.log (default: $OUT if set)")
    ap.add_argument("--dry-run", action="store_true", help="plan every stage with its cap; execute nothing")
    ap.add_argument("--only", default="", help="comma-separated stage names (default: all)")
    ap.add_argument("--total", type=float, default=TOTAL_S, help="seconds for the whole run")
    ap.add_argument("--ch03-images", type=int, default=32,
                    help="synthetic images of the chapter-03 sweep (its cells' SSIM runs on one CPU thread: "
                         "1-2 s per image at the paper's grid, so 32 fit the stage's cap)")
    ap.add_argument("--cw-images", type=int, default=8,
                    help="images of the CW-L2 timing (9 x 100 steps per detector: 32 did not fit the stage's cap "
                         "after the sweep on the H200, 2026-12-04)")
    ap.add_argument("--check-images", type=int, default=4, help="images of the CPU vs CUDA comparison")
    ap.add_argument("--oom-images", type=int, default=64, help="images (= first batch) of the out-of-memory cell")
    ap.add_argument("--atol", type=float, default=2e-3, help="tolerance of CPU vs CUDA records (probabilities, SSIM)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "dfrobust-gpu-check"),
                    help="scratch folder (images, checkpoints, shards, the bench JSONs)")
    ap.add_argument("--wheel-list", action="store_true",
                    help="print NAME==VERSION (requirements/constraints.txt) of the packages to carry as wheels")
    ap.add_argument("--stage", default="", help=argparse.SUPPRESS)  # internal: run one stage in this process
    a = ap.parse_args(argv)
    for name in ("ch03_images", "cw_images", "check_images", "oom_images"):
        if getattr(a, name) < 2:
            ap.error(f"--{name.replace('_', '-')}={getattr(a, name)}: expected an integer >= 2")
    if a.atol <= 0 or a.total <= 0:
        ap.error(f"--atol={a.atol}, --total={a.total}: expected positive numbers")
    known = [s.name for s in stages(a)]
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    if bad := [s for s in a.only if s not in known]:
        ap.error(f"--only={','.join(bad)}: expected stage names among {', '.join(known)}")
    return a


def wheel_list() -> list[str]:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = f"{name.strip()}=={version.split(';')[0].strip()}"
    return [pins[n.lower().replace("_", "-")] for n in CARRIED if n.lower().replace("_", "-") in pins]


def main(argv=None) -> int:
    from dfrobust.study.perf import GPU_REPORT_FORMAT

    a = parse(argv)
    if a.wheel_list:
        print("\n".join(wheel_list()))
        return 0
    if a.stage:  # a child: one stage, its result as JSON
        _save(a, a.stage, {"env": stage_env, "ch03": stage_ch03, "ch03_check": stage_ch03_check,
                        "oom": stage_oom}[a.stage](a))
        return 0
    if missing := missing_modules():
        print(f"missing Python packages: {', '.join(missing)}; expected them installed or carried as wheels in .whl/ "
              "(bench/README.md, 'The GPU check')", file=sys.stderr)
        return 2
    # env always runs (first): the report names the device and skips the rest where CUDA is missing
    plan = [s for s in stages(a) if not a.only or s.name in a.only or s.name == "env"]
    print(f"GPU check: {len(plan)} stages, {sum(s.cap_s for s in plan)} s of caps within {a.total:g} s; out: {a.out}")
    if {"ch03", "ch03_check"} & {s.name for s in plan}:
        p = paper_plan(a)  # read and checked now, also in the dry run
        print(f"  chapter 03 paper settings: {p['n_samples']} images, attacks {','.join(p['attacks'])}, "
              f"{len(p['eps_grid'])} radii {p['eps_grid'][1]:.5f}..{p['eps_grid'][-1]:g}, attack options "
              f"{p['attack_kw']}, shard {p['shard_size']}, sizes {p['sizes']}")
    for s in plan:
        cmd = ["bench/" + s.script, "--device", "cuda", "--full", "--json", f"{a.work}/{s.name}.json", *s.args] \
            if s.script else ["bench/gpu_check.py", "--stage", s.name, "..."]
        print(f"  [{s.name:>18s}] cap {s.cap_s:4d} s  {s.what}\n  {'':20s} python {' '.join(cmd)}")
    for script, why in NOT_RUN.items():
        print(f"  [{'not run':>18s}] {script}: {why}")
    if a.dry_run:
        print("dry run: nothing executed")
        return 0

    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t_end = time.perf_counter() + a.total
    report = {"format": None, "device": "unknown", "environment": {}, "stages": []}
    with open(out / "gpu_check.log", "w") as log:
        for s in plan:
            left = t_end - time.perf_counter()
            entry = {"name": s.name, "script": s.script, "what": s.what, "cap_s": s.cap_s, "wall_s": 0.0}
            report["stages"].append(entry)
            if report["environment"].get("cuda_available") is False:
                entry["status"] = "skipped: no CUDA"
                continue
            if left < 10:
                entry["status"] = "skipped: the run's time is spent"
                continue
            cap = min(s.cap_s, left)
            result = work / (f"{s.name}.json" if s.script else f"stage-{s.name}.json")
            result.unlink(missing_ok=True)
            cmd = [sys.executable, str(ROOT / "bench" / s.script), "--device", "cuda", "--full", "--json", str(result),
                   *s.args] if s.script else [sys.executable, __file__, "--stage", s.name, "--work", str(work),
                                              *(f"--{k.replace('_', '-')}={getattr(a, k)}" for k in STAGE_ARGS)]
            head = f"== {s.name} (cap {cap:.0f} s)"
            print(head, flush=True)
            log.write(head + "\n")
            entry["status"], entry["wall_s"] = _run(cmd, cap, log)
            entry["wall_s"] = round(entry["wall_s"], 1)
            if result.is_file():  # a stage stopped at its cap (or failed) reports what it had saved
                entry["report"] = json.loads(result.read_text())
                if entry["status"] != "ok":
                    entry["report"]["partial"] = True
                elif entry["report"].get("mismatch"):
                    entry["status"] = "mismatch"
            if s.name == "env":
                report["environment"] = entry.get("report") or {"cuda_available": False}
                report["device"] = f"cuda: {report['environment'].get('device', 'none')}"
            print(f"== {s.name}: {entry['status']} in {entry['wall_s']} s", flush=True)
    bad = [e["name"] for e in report["stages"] if e["status"] not in ("ok", "timeout") and
           not e["status"].startswith("skipped: the run")]
    report.update(format=GPU_REPORT_FORMAT, ok=not bad,
                  failed=bad, total_s=round(a.total - (t_end - time.perf_counter()), 1))
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    write_markdown(report, out / "gpu_check.json", out / "gpu_check.md")
    print((out / "gpu_check.md").read_text())
    return 0 if not bad else 1


def write_markdown(report: dict, json_path: Path, md_path: Path) -> None:
    from dfrobust.study.perf import gpu_report_table

    table = gpu_report_table(json_path)
    lines = [f"# GPU check on {report['device']}", "", f"torch {report['environment'].get('torch')}, CUDA "
             f"{report['environment'].get('cuda')}, {report['environment'].get('nvidia_smi', '')}", "",
             "| benchmark | what | GPU | goal | met |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.benchmark} | {r.what} | {r.gpu:.2f} | {r.goal} | {'' if r.met is None else r.met} |")
    lines += ["", "| stage | status | wall s | cap s |", "|---|---|---|---|"]
    lines += [f"| {e['name']} | {e['status']} | {e.get('wall_s', '')} | {e.get('cap_s', '')} |" for e in report["stages"]]
    md_path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
