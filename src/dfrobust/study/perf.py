"""Performance bookkeeping for the book's appendix.

* :func:`notebook_timings` reads the stamps the runner writes next to each executed notebook
  (wall time, parameters), so the appendix reports what building this book actually cost.
* :func:`unit_costs` reads the timings each chapter stores in its results (per model × attack,
  mode, tool or radius) and divides by the work done, so the appendix shows the cost per unit of
  work from the same run as the per-chapter times.
* :func:`run_bench` runs one of the ``bench/`` scripts in a fresh interpreter and returns its
  JSON report. The scripts measure their ratios side by side in one run (never as timed
  tests); running them as subprocesses keeps their timings free of the notebook's own state.
* :func:`check_params` and :func:`run` are the appendix's chapter (``PerfParams`` in, ``ChapterResult`` out).
* :func:`gpu_report_table` reads the report of the prepared GPU check (``bench/gpu_check.sh``,
  ``gpu_check.json``) and lays its ratios beside this build's CPU ones, each against its goal
  (:data:`GPU_GOALS`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.paths import generated_book_dir, project_root


def sync(dev) -> None:
    """Wait for queued GPU work before reading a clock (no-op on CPU): what every bench times."""
    if getattr(dev, "type", "") == "cuda":
        import torch

        torch.cuda.synchronize(dev)


def notebook_timings(out_dir: Path | None = None) -> pd.DataFrame:
    """One row per executed notebook: name, profile, wall time (s), when it finished."""
    rows = []
    for stamp in sorted((out_dir or generated_book_dir()).glob("*.run.json")):
        info = json.loads(stamp.read_text())
        rows.append({"notebook": stamp.name.removesuffix(".run.json"),
                     "profile": info.get("params", {}).get("profile", ""),
                     "wall_s": float(info.get("wall_s", float("nan"))),
                     "finished": info.get("finished", "")})
    return pd.DataFrame(rows, columns=["notebook", "profile", "wall_s", "finished"])


@dataclass(frozen=True)
class PerfParams:
    """The performance appendix's parameters, checked (:func:`check_params`)."""

    profile: str
    run_benchmarks: bool
    bench_scale: str
    budget_min: float
    device: str
    sweep_workers: int
    gpu_report: str

    @property
    def device_name(self) -> str:
        from ..core import device as D

        return D.describe(D.pick_device(self.device))

    @property
    def bench_args(self) -> list[str]:
        """The arguments every bench script gets."""
        from ..core.device import pick_device

        return ["--device", str(pick_device(self.device))] + (["--full"] if self.bench_scale == "full" else [])


def check_params(*, bench_scale: str, budget_min: float, device: str, sweep_workers: int = 2,
                 gpu_report: str = "", profile: str = "default", run_benchmarks: bool = True) -> PerfParams:
    """The performance appendix's parameters checked (one-line ValueError naming the value), no side effects."""
    from ..core import device as D
    from ..core.params import check_int, check_number

    if bench_scale not in ("small", "full"):
        raise ValueError(f"bench_scale={bench_scale!r}: expected 'small' or 'full'")
    check_number(budget_min, "budget_min", 0, 7 * 24 * 60)  # minutes; 0: no budget
    check_int(sweep_workers, "sweep_workers", 1, 256)     # dask workers of bench_sweep.py
    if not isinstance(run_benchmarks, bool):
        raise ValueError(f"run_benchmarks={run_benchmarks!r}: expected True or False")
    if gpu_report:
        gpu_report_table(gpu_report)  # the GPU check's report (bench/gpu_check.sh) read and validated now
    D.pick_device(device)
    return PerfParams(profile, run_benchmarks, bench_scale, float(budget_min), device, int(sweep_workers), gpu_report)


#: the benchmarks the appendix runs (one ratio table each); ``bench_sweep.py`` is the scaling section
BENCHES = ("bench_rr.py", "bench_pgd.py", "bench_nes.py", "bench_lime.py")


def _budget_verdict(cfg: PerfParams, build_min: float, n: int, device_name: str):
    from ..metrics import verdicts

    if cfg.budget_min > 0:
        row = verdicts.Verdict(
            f"the {cfg.profile} build fits its budget of {cfg.budget_min:g} minutes",
            verdicts.HOLDS if build_min <= cfg.budget_min else verdicts.REFUTED,
            "holds if the chapters' measured wall time (this appendix included) is at most the budget; exact",
            cfg.budget_min, round(build_min, 2), round(build_min, 2), round(build_min, 2), n, None,
            f"estimate: minutes on {device_name}")
    else:
        row = verdicts.Verdict(f"the {cfg.profile} build fits a budget", verdicts.INCONCLUSIVE,
                               "no budget set (budget_min = 0)", 0.0, round(build_min, 2), float("nan"), float("nan"),
                               n, None, "estimate: minutes")
    return verdicts.verdict_table([row])[["claim", "verdict", "estimate", "margin", "n", "rule", "note"]]


def run(cfg: PerfParams, started: float):
    """The performance appendix (``started``: ``time.perf_counter()`` when it began): the chapters' timings,
    the cost per unit of work, the benchmarks (when ``run_benchmarks``), the GPU report, the sweep's scaling and
    the budget verdict, as a :class:`~dfrobust.core.results.ChapterResult`."""
    import time

    from ..core.paths import results_dir
    from ..core.results import ChapterResult
    from ..figures import perf as figs

    device_name = cfg.device_name
    timings = notebook_timings()
    timings = timings[timings.notebook != "06_performance"].reset_index(drop=True)
    units = unit_costs(results_dir(cfg.profile))
    rows = []
    for script in BENCHES if cfg.run_benchmarks else ():
        report = run_bench(script, *cfg.bench_args)
        rows += [{"benchmark": script.removesuffix(".py"), **r, "device": report.get("device", device_name)}
                 for r in report["ratios"]]
    bench = pd.DataFrame(rows, columns=["benchmark", "what", "fast_s", "slow_s", "ratio", "device"])
    values = {f"{r.benchmark}_ratio": float(r.ratio)  # one key per script: its first (headline) ratio
              for r in bench.drop_duplicates("benchmark").itertuples()}
    sweep = run_bench("bench_sweep.py", "--workers", str(cfg.sweep_workers), *cfg.bench_args) if cfg.run_benchmarks else None
    if sweep is not None:
        scaling = pd.DataFrame({"run": ["serial", "1 worker", f"{sweep['workers']} workers"],
                                "wall_s": [sweep["serial_s"], sweep["worker_s"]["1"],
                                           sweep["worker_s"][str(sweep["workers"])]]})
        efficiency, sweep_device = float(sweep["scaling_efficiency"]), sweep["device"]
        estimate = f"{sweep['estimate']['chapter03_paper_h_1_worker']} h on one worker"
    else:
        scaling = pd.DataFrame({"run": [], "wall_s": []})
        efficiency, sweep_device = float("nan"), f"{device_name} (benchmarks not run in this build)"
        estimate = "not measured in this build"
    if len(units):
        top = units.loc[units["seconds"].idxmax()]
        ex_unit = (f"{top['chapter']}, {top['work']}: {top['seconds']:.0f} s for {top['units']} units ({top['unit']}); "
                   f"twice the units would add about {top['seconds']:.0f} s")
    else:
        ex_unit = "no chapter stored timings in this build"
    total_min = float(timings.wall_s.sum() / 60)
    build_min = total_min + (time.perf_counter() - started) / 60  # this appendix included
    values.update(total_min=total_min, device=device_name, sweep_workers=cfg.sweep_workers,
                  sweep_efficiency=efficiency, sweep_device=sweep_device, sweep_estimate=estimate,
                  build_min=round(build_min, 1), ex_unit=ex_unit)
    gpu = gpu_report_table(cfg.gpu_report, cpu=bench) if cfg.gpu_report else None
    return ChapterResult(values=values,
                         tables={"timings": timings, "units": units, "bench": bench, "scaling": scaling,
                                 **({"gpu": gpu} if gpu is not None else {})},
                         figures={"fig_timings": figs.timings_bar(timings, cfg.profile),
                                  "fig_sweep": figs.sweep_bars(scaling)},
                         decide=_budget_verdict(cfg, build_min, len(timings) + 1, device_name))


def _timing_dict(text) -> dict:
    import ast

    try:
        out = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        return {}
    return out if isinstance(out, dict) else {}


def unit_costs(results: Path) -> pd.DataFrame:
    """Cost per unit of work of this build, one row per (chapter, work): the seconds a chapter
    stored in its results (``results`` = a profile's results folder) over the units it worked on.
    Files that are missing (a chapter not run, nothing analysed) give no rows."""
    import xarray as xr

    rows = []

    def add(chapter, work, unit, units, seconds):
        if units > 0 and seconds == seconds:
            rows.append({"chapter": chapter, "work": work, "unit": unit, "units": int(units),
                         "seconds": round(float(seconds), 2), "ms per unit": round(1e3 * float(seconds) / units, 2)})

    def opened(name):
        path = Path(results) / f"{name}.nc"
        return xr.open_dataset(path) if path.is_file() else None

    if (ds := opened("models")) is not None:
        with ds:
            n_train = int(ds.attrs.get("n_train", 0))
            for m in ds["model"].values.tolist():
                add("02_models", f"train {m}", "training image (all epochs run)", n_train,
                    float(ds["train_time_s"].sel(model=m)))
    if (ds := opened("rr_records")) is not None:
        with ds:
            units = int((ds["eps"] > 0).sum()) * ds.sizes["sample"]
            for key, sec in _timing_dict(ds.attrs.get("attack_time_s")).items():
                add("03_robustness", f"{key}", "image × radius ε > 0", units, sec)
    if (ds := opened("rr_minimal")) is not None:
        with ds:
            for key, sec in _timing_dict(ds.attrs.get("attack_time_s")).items():
                add("03_robustness", f"{key}/cw-l2 (c search)", "image", ds.sizes["sample"], sec)
    if (ds := opened("rr_radii")) is not None:
        with ds:
            for key, sec in _timing_dict(ds.attrs.get("attack_time_s")).items():
                add("03_robustness", f"{key}/critical radii (grid, bisection, convergence)", "image",
                    ds.sizes["sample"], sec)
    if (ds := opened("rr_radii_l2")) is not None:
        with ds:
            for key, sec in _timing_dict(ds.attrs.get("attack_time_s")).items():
                add("03_robustness", f"{key}/L2-ball radii (grid, bisection)", "image", ds.sizes["sample"], sec)
    if (ds := opened("video_records")) is not None:
        with ds:
            units = int((ds["eps"] > 0).sum()) * ds.sizes["sample"]
            for mode, inner in _timing_dict(ds.attrs.get("attack_time_s")).items():
                for key, sec in _timing_dict(inner).items():
                    add("04_videos", f"{key} ({mode})", "frame × radius ε > 0", units, sec)
    if (ds := opened("xai")) is not None:
        with ds:
            for m in ds["model"].values.tolist():
                for t in ds["tool"].values.tolist():
                    cell = ds.sel(model=m, tool=t)
                    n = int(ds["analysed"].sel(model=m).sum())   # the times are per analysed pair, 0 elsewhere
                    sec = sum(float(cell[v].sum()) for v in ("explain_time_s", "deletion_time_s", "attack_time_s")
                              if v in ds)
                    add("05_xai", f"{m}/{t}", "pair (explanation, deletion, NES over every k)", n, sec)
    if (ds := opened("certified_records")) is not None:
        with ds:
            pos = ds["eps"] > 0
            for m in ds["model"].values.tolist():
                sec = float(ds["time_s"].sel(model=m).where(pos).sum())
                add("07_certified", f"{m}", "image × radius ε > 0", int(pos.sum()) * ds.sizes["sample"], sec)
    return pd.DataFrame(rows, columns=["chapter", "work", "unit", "units", "seconds", "ms per unit"])


def run_bench(script: str, *args: str, timeout: float = 1800) -> dict[str, Any]:
    """Run ``bench/<script>`` with ``--json FILE`` plus ``args``; return the parsed report."""
    path = project_root() / "bench" / script
    if not path.is_file():
        raise FileNotFoundError(f"bench script {path} does not exist; expected one of "
                                f"{', '.join(p.name for p in sorted(path.parent.glob('bench_*.py')))}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        proc = subprocess.run([sys.executable, str(path), "--json", str(out), *args], cwd=project_root(),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"bench {script} failed (exit {proc.returncode}): {tail[0]}")
        report = json.loads(out.read_text())
    report.setdefault("script", script)
    report["stdout"] = proc.stdout
    return report


def bench_parser(doc: str | None) -> "argparse.ArgumentParser":
    """The argument parser every ``bench/`` script starts from: ``--json PATH``, ``--full``, ``--device``."""
    import argparse

    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--json", default="", help="also write the report as JSON to this file")
    ap.add_argument("--full", action="store_true", help="the large sizes (meant for a GPU) instead of the small defaults")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return ap


def finish_bench(args, device: str, ratios: list[dict[str, Any]], **details: Any) -> dict[str, Any]:
    """Print each ratio (slow path / fast path, measured in this run) and write the JSON report if asked.

    Each ratio is ``{"what": str, "fast_s": float, "slow_s": float}``; ``ratio`` is added here.
    """
    rows = []
    for r in ratios:
        row = {"what": r["what"], "fast_s": round(float(r["fast_s"]), 4), "slow_s": round(float(r["slow_s"]), 4)}
        row["ratio"] = round(row["slow_s"] / row["fast_s"], 2) if row["fast_s"] > 0 else float("nan")
        rows.append(row)
        print(f"{row['what']}: {row['slow_s']:.3f} s / {row['fast_s']:.3f} s = {row['ratio']:.2f}x  [{device}]")
    report = {"device": device, "ratios": rows, **details}
    if getattr(args, "json", ""):
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return report


#: format tag of ``gpu_check.json`` (written by ``bench/gpu_check.py``)
GPU_REPORT_FORMAT = "dfrobust-gpu-check-1"
#: the GPU check's goals (issue 28): (bench script stem, index of its ratio; -1 = the last, the headline)
#: -> (comparison, threshold, text). A ratio is slow path / fast path (:func:`finish_bench`); bench_pgd's
#: is one PGD step over one forward+backward, so "at least 0.7 of that roofline" is a ratio <= 1/0.7.
#: ``("ch03", "projected_min")``: chapter 03 at the paper profile on one GPU, projected in minutes.
GPU_GOALS = {("bench_pgd", 0): ("<=", 1 / 0.7, "<= 1.43: a step at >= 0.7 of the forward+backward roofline"),
             ("bench_nes", 0): (">=", 20.0, ">= 20x"),
             ("bench_lime", -1): (">=", 5.0, ">= 5x"),
             ("ch03", "projected_min"): ("<=", 30.0, "<= 30 min on one GPU")}
GPU_TABLE_COLUMNS = ["benchmark", "what", "gpu", "cpu", "goal", "met", "gpu_device"]


def gpu_report_table(path: str | Path, cpu: pd.DataFrame | None = None) -> pd.DataFrame:
    """The GPU check's report as one table: every ratio of its benchmark stages (``gpu``) beside the
    same script's ratio of this build (``cpu``: rows ``benchmark``, ``ratio`` as the appendix's
    benchmark table, matched by script and position; NaN when absent), the projected chapter-03
    time, each with its goal (:data:`GPU_GOALS`) and whether it is met. A failed stage gives no row;
    one stopped at its cap gives what it saved (a bench script saves nothing before its end). One-line ValueError when ``path`` is not a readable ``gpu_check.json``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"gpu_report={str(path)!r}: no such file; expected the gpu_check.json written by "
                         "bench/gpu_check.sh")
    try:
        rep = json.loads(p.read_text())
        if rep.get("format") != GPU_REPORT_FORMAT or not isinstance(rep.get("stages"), list):
            raise ValueError
        device = str(rep["device"])
        stages = [(str(s["name"]), str(s.get("script", "")), str(s["status"]), s.get("report") or {})
                  for s in rep["stages"]]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise ValueError(f"gpu_report={str(path)!r}: not a GPU check report; expected a gpu_check.json "
                         f"of format {GPU_REPORT_FORMAT!r} (bench/gpu_check.sh)") from None
    cpu_ratios: dict[str, list] = {}
    if cpu is not None and len(cpu):
        for b, r in zip(cpu["benchmark"], cpu["ratio"]):
            cpu_ratios.setdefault(str(b), []).append(float(r))

    def goal(key, value):
        if key not in GPU_GOALS or value != value:
            return "", None
        op, thr, text = GPU_GOALS[key]
        return text, bool(value <= thr if op == "<=" else value >= thr)

    rows = []
    for name, script, status, r in stages:
        if status not in ("ok", "timeout", "mismatch"):
            continue
        stem = script.removesuffix(".py")
        if stem and isinstance(r.get("ratios"), list):
            n = len(r["ratios"])
            own = cpu_ratios.get(stem, []) if name == stem else []  # a variant run (other model) has no CPU twin
            for i, ratio in enumerate(r["ratios"]):
                value = float(ratio["ratio"])
                text, met = goal((stem, i), value) if (stem, i) in GPU_GOALS else goal((stem, i - n), value)
                rows.append({"benchmark": name, "what": str(ratio["what"]), "gpu": value,
                             "cpu": own[i] if i < len(own) else float("nan"), "goal": text, "met": met,
                             "gpu_device": device})
        elif "projected_min" in r:
            value = float(r["projected_min"])
            text, met = goal(("ch03", "projected_min"), value)
            rows.append({"benchmark": name, "what": "chapter 03 at the paper profile, projected minutes "
                         f"({r.get('basis', '')})", "gpu": round(value, 1), "cpu": float("nan"), "goal": text,
                         "met": met, "gpu_device": device})
    return pd.DataFrame(rows, columns=GPU_TABLE_COLUMNS)
