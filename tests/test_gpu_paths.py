"""The CUDA branches that can be tested without a GPU (issue 28), and the prepared GPU check's dry run.

Device choice and the one-worker-per-GPU plan with a faked device count; the halve-and-retry loop with an
injected out-of-memory error (alone and inside a sweep cell, records identical to a run at the batch that
worked); pinned memory and non-blocking copies (no-ops on CPU, the CUDA branch with faked tensor methods);
``bench/gpu_check.sh --dry-run`` as CI runs it; the performance appendix's reading of a GPU report.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dfrobust.core import device as D
from dfrobust.study import perf, sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpus(monkeypatch):
    """Fake a machine with ``n`` visible GPUs (``gpus(n)``); CUDA_VISIBLE_DEVICES unset."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def fake(n: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return fake


def gpu_check_module():
    """bench/gpu_check.py as a module (registered: its dataclasses look their module up)."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["gpu_check"]


# --------------------------------------------------------------------------- device selection
def test_pick_device_follows_the_visible_gpus(gpus):
    gpus(2)
    assert D.pick_device("auto") == torch.device("cuda")
    assert D.pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"device='cuda:2': this machine has 2 visible GPUs"):
        D.pick_device("cuda:2")          # past the last GPU: refused now, not at the first kernel
    with pytest.raises(ValueError, match=r"device='cuda:x': expected"):
        D.pick_device("cuda:x")          # torch's own RuntimeError named no parameter
    gpus(0)
    assert D.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        D.pick_device("cuda")


# --------------------------------------------------------------------------- the one-worker-per-GPU plan
def test_default_workers_is_one_per_gpu_and_one_per_two_cores(gpus, monkeypatch):
    gpus(3)
    assert sweep.default_workers("cuda") == 3
    gpus(0)
    assert sweep.default_workers("cuda") == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert sweep.default_workers("cpu") == 4


def test_gpu_worker_specs_take_the_gpus_this_process_sees(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    specs = sweep.gpu_worker_specs(2)
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["0", "1"]
    assert all(s["options"]["resources"] == {"GPU": 1} and s["options"]["nthreads"] == 1 for s in specs.values())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")   # a SLURM allocation: GPUs 0 and 1 belong to another job
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in sweep.gpu_worker_specs(2).values()] == ["2", "3"]
    with pytest.raises(ValueError, match=r"n_gpus=3: expected at most 2"):
        sweep.gpu_worker_specs(3)


class _Fake:
    """Stands for a dask cluster or client: records how it was made, starts nothing."""

    made: list = []

    def __init__(self, *args, **kw):
        self.args, self.kw = args, kw
        _Fake.made.append(self)


def test_make_client_starts_one_worker_per_gpu_and_refuses_more(gpus, monkeypatch):
    import distributed

    for name in ("SpecCluster", "LocalCluster", "Client"):
        monkeypatch.setattr(distributed, name, _Fake)
    _Fake.made = []
    gpus(2)
    client = sweep.make_client(device="cuda")
    cluster = client.args[0]
    assert sorted(cluster.kw["workers"]) == ["gpu-0", "gpu-1"]
    assert [w["options"]["env"]["CUDA_VISIBLE_DEVICES"] for w in cluster.kw["workers"].values()] == ["0", "1"]
    sweep.make_client(device="cuda", workers=1)
    assert list(_Fake.made[-1].args[0].kw["workers"]) == ["gpu-0"]
    n_made = len(_Fake.made)
    with pytest.raises(ValueError, match=r"workers=3: expected at most 2 \(one worker per GPU"):
        sweep.make_client(device="cuda", workers=3)   # the third worker would see no GPU and fail every cell
    gpus(0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        sweep.make_client(device="cuda")
    assert len(_Fake.made) == n_made                  # refused before any cluster was made
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert sweep.make_client(device="cpu").args[0].kw["n_workers"] == 3


def test_run_cells_asks_for_a_gpu_cluster_for_cuda_cells(tmp_path, monkeypatch):
    ck = tmp_path / "m.pt"
    ck.write_bytes(b"not read")
    ref = sweep.DetectorRef("meso4", str(ck), "0" * 16)
    sel = pd.DataFrame({"path": [str(tmp_path / f"{i}.png") for i in range(4)], "label": [0, 1, 0, 1]})
    cells = sweep.plan_cells("03_robustness", [ref], ["fgsm"], [0.0, 0.01], sel, size=32, shard_size=2, device="cuda")
    asked = {}

    def fake_make_client(**kw):
        asked.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(sweep, "make_client", fake_make_client)
    with pytest.raises(RuntimeError, match="stop here"):
        sweep.run_cells(cells, tmp_path / "out", workers=2)
    assert asked == {"workers": 2, "device": "cuda"}


# --------------------------------------------------------------------------- halve and retry
def _oom_above(limit: int, calls: list, *, runaway: int = 20):
    def job(bs):
        calls.append(bs)
        if len(calls) > runaway:   # a loop that never halves, or never stops, fails here instead of hanging
            raise AssertionError(f"runaway retry loop: {calls}")
        if bs > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {bs} GiB")
        return f"done at {bs}"
    return job


def test_halving_retry_halves_frees_the_cache_and_stops(monkeypatch):
    freed, logs = [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))
    calls = []
    assert D.halving_retry(_oom_above(5, calls), 48, log=logs.append) == ("done at 3", 3)
    assert calls == [48, 24, 12, 6, 3] and len(freed) == 4 and len(logs) == 4 and "batch 48" in logs[0]
    calls = []
    with pytest.raises(torch.cuda.OutOfMemoryError):   # nothing fits: re-raised at the smallest batch, not forever
        D.halving_retry(_oom_above(0, calls), 8)
    assert calls == [8, 4, 2, 1]
    calls = []
    with pytest.raises(torch.cuda.OutOfMemoryError):
        D.halving_retry(_oom_above(0, calls), 16, min_batch=4)
    assert calls == [16, 8, 4]


def test_halving_retry_knows_the_runtime_error_form_and_passes_other_errors_through():
    calls = []

    def job(bs):
        calls.append(bs)
        assert len(calls) < 10, f"runaway retry loop: {calls}"
        if bs > 2:
            raise RuntimeError("CUDA error: out of memory")   # the form older kernels raise
        return bs

    assert D.halving_retry(job, 8) == (2, 2) and calls == [8, 4, 2]
    calls = []

    def broken(bs):
        calls.append(bs)
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="a bug"):
        D.halving_retry(broken, 8)
    assert calls == [8]                                    # no retry hides it
    with pytest.raises(ValueError, match="batch_size=0"):
        D.halving_retry(broken, 0)


def test_a_cell_recovers_from_out_of_memory_with_the_records_of_the_batch_that_fit(tmp_path, monkeypatch):
    """run_cell's CUDA path on a CPU: attack_records fails with an injected OOM above 2 images; the cell
    halves 8 -> 4 -> 2, keeps the size in the shard, and its records equal a cell run directly at 2."""
    import cv2

    from dfrobust.experiments import records
    from dfrobust.models import build
    from dfrobust.models.train import save_checkpoint

    torch.manual_seed(0)
    ref = sweep.detector_ref("meso4", save_checkpoint(build("meso4", 32).eval(), tmp_path / "meso4.pt"))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        rows.append({"path": str(p), "label": i % 2})
    sel = pd.DataFrame(rows)

    def cell(bs):
        return sweep.plan_cells("03_robustness", [ref], ["pgd"], [0.0, 0.02], sel, size=32, shard_size=8, batch_size=bs,
                                attack_kw={"pgd": {"steps": 2}})[0]

    real, sizes = records.attack_records, []

    def tight_memory(*args, batch_size=None, **kw):
        sizes.append(batch_size)
        assert len(sizes) < 10, f"runaway retry loop: {sizes}"   # fails (not OOM: passed through) instead of hanging
        if batch_size > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, batch_size=batch_size, **kw)

    monkeypatch.setattr(records, "attack_records", tight_memory)
    info = sweep.run_cell(cell(8), tmp_path / "halved")
    assert info["computed"] and info["batch_size"] == 2 and sizes == [8, 4, 2]
    monkeypatch.setattr(records, "attack_records", real)
    sweep.run_cell(cell(2), tmp_path / "direct")
    halved, direct = sweep.merge_shards([cell(8)], tmp_path / "halved"), sweep.merge_shards([cell(2)], tmp_path / "direct")
    from dfrobust.core import results

    assert int(results.load(sweep.shard_path(cell(8), tmp_path / "halved")).attrs["batch_size_used"]) == 2
    for v in ("p_adv", "p_adv_fake", "l2", "linf", "ssim", "pred_adv", "p_clean"):
        np.testing.assert_array_equal(halved[v].values, direct[v].values)


# --------------------------------------------------------------------------- pinned memory, non-blocking copies
def test_pinned_and_to_device_are_noops_on_cpu_and_never_pin(monkeypatch):
    x = torch.rand(2, 3)

    def no_pin(self):
        raise AssertionError("pin_memory called on the CPU path")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pin)
    assert D.pinned(x, torch.device("cpu")) is x
    assert D.to_device(x, "cpu") is x
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.pinned(x, torch.device("cuda")) is x          # no CUDA: pinning would raise, so it is skipped


def test_to_device_pins_then_copies_without_blocking_on_cuda(monkeypatch):
    """The CUDA branch with faked tensor methods: pin once, then .to(cuda, non_blocking=True)."""
    x = torch.rand(2, 3)
    seen = []
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: False)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: seen.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **kw: seen.append((a, kw)) or self)
    D.to_device(x, torch.device("cuda"))
    assert seen == ["pin", ((torch.device("cuda"),), {"non_blocking": True})]
    seen.clear()
    D.to_device(x, "cuda", pin=False)
    assert seen == [((torch.device("cuda"),), {"non_blocking": True})]
    seen.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    D.pinned(x, "cuda")
    assert seen == ["pin"]


# --------------------------------------------------------------------------- the prepared GPU check
def test_gpu_check_dry_run_lists_every_stage_with_its_cap_and_runs_nothing(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    gc = gpu_check_module()
    a = gc.parse([])
    caps = {s.name: s.cap_s for s in gc.stages(a)}
    for name, cap in caps.items():
        assert re.search(rf"\[\s*{name}\] cap\s+{cap} s", proc.stdout), name
    assert sum(caps.values()) <= gc.TOTAL_S <= 8 * 60
    assert "504 images" in proc.stdout and "13 radii" in proc.stdout     # the paper profile, read from study.yml
    assert "nothing executed" in proc.stdout and not (tmp_path / "out").exists()
    bad = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", "--only", "nope"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--only=nope: expected stage names" in bad.stderr


def test_every_bench_script_with_a_gpu_mode_is_run_or_said_why_not():
    gc = gpu_check_module()
    run = {s.script for s in gc.stages(gc.parse([])) if s.script}
    with_gpu = {p.name for p in (ROOT / "bench").glob("bench_*.py") if "pick_device" in p.read_text()}  # --device used
    assert with_gpu == run | set(gc.NOT_RUN), with_gpu ^ (run | set(gc.NOT_RUN))
    assert set(gc.wheel_list()) and all("==" in w for w in gc.wheel_list())


def test_compare_records_flags_a_difference_beyond_the_tolerance():
    import xarray as xr

    gc = gpu_check_module()
    v = {k: (("sample",), np.array([0.2, 0.7])) for k in ("p_clean", "p_clean_fake", "p_adv", "p_adv_fake", "l2",
                                                            "linf", "ssim")}
    a = xr.Dataset({**v, "pred_adv": (("sample",), np.array([0, 1]))})
    assert gc.compare_records(a, a.copy(deep=True), atol=1e-3)["equal"]
    b = a.copy(deep=True)
    b["p_adv"][1] = 0.71
    out = gc.compare_records(a, b, atol=1e-3)
    assert not out["equal"] and out["p_adv"]["outside"] == 1 and out["p_adv"]["max_abs_diff"] == pytest.approx(0.01)



def test_compare_records_lets_the_l2_norm_part_by_its_own_relative_tolerance_only():
    """A sign-gradient path that parts on a few pixels changes ‖δ‖₂ by a fraction of a percent (H200 vs CPU):
    that passes; the same relative change of a probability, or 2 % of the norm, is a mismatch."""
    import xarray as xr

    gc = gpu_check_module()
    v = {k: (("sample",), np.array([0.2, 0.7])) for k in ("p_clean", "p_clean_fake", "p_adv", "p_adv_fake", "linf",
                                                            "ssim")}
    a = xr.Dataset({**v, "l2": (("sample",), np.array([40.0, 50.0])), "pred_adv": (("sample",), np.array([0, 1]))})
    b = a.copy(deep=True)
    b["l2"][1] = 50.0 * 1.005
    assert gc.compare_records(a, b, atol=2e-3)["equal"]
    b["l2"][1] = 50.0 * 1.02
    assert gc.compare_records(a, b, atol=2e-3)["l2"]["outside"] == 1
    c = a.copy(deep=True)
    c["p_adv"][1] = 0.7 * 1.005
    assert not gc.compare_records(a, c, atol=2e-3)["equal"]

# --------------------------------------------------------------------------- the appendix reads the report
def _report(tmp_path, **over):
    rep = {"format": perf.GPU_REPORT_FORMAT, "device": "cuda: NVIDIA H200", "environment": {"torch": "2.11"},
           "stages": [
               {"name": "env", "script": "", "status": "ok", "report": {"device": "NVIDIA H200"}},
               {"name": "ch03", "script": "", "status": "ok", "report": {"projected_min": 41.0, "basis": "64 images"}},
               {"name": "bench_pgd", "script": "bench_pgd.py", "status": "ok",
                "report": {"ratios": [{"what": "one PGD step vs one forward+backward", "ratio": 1.2}]}},
               {"name": "bench_pgd_resnet34", "script": "bench_pgd.py", "status": "ok",
                "report": {"ratios": [{"what": "one PGD step vs one forward+backward", "ratio": 1.6}]}},
               {"name": "bench_nes", "script": "bench_nes.py", "status": "ok",
                "report": {"ratios": [{"what": "masked NES", "ratio": 25.0}]}},
               {"name": "bench_lime", "script": "bench_lime.py", "status": "ok",
                "report": {"ratios": [{"what": "forward", "ratio": 0.5}, {"what": "lime 100 vs 10", "ratio": 0.9},
                                      {"what": "lime's loop vs tensor", "ratio": 4.0}]}},
               {"name": "bench_rr", "script": "bench_rr.py", "status": "timeout"},
               {"name": "bench_attacks", "script": "bench_attacks.py", "status": "failed (exit 1)"}]}
    rep.update(over)
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(rep))
    return path


def test_gpu_report_table_sets_gpu_ratios_beside_cpu_ones_against_the_goals(tmp_path):
    cpu = pd.DataFrame({"benchmark": ["bench_pgd", "bench_nes", "bench_lime", "bench_lime", "bench_lime"],
                        "ratio": [1.1, 1.3, 0.4, 0.8, 1.5]})
    t = perf.gpu_report_table(_report(tmp_path), cpu=cpu).set_index(["benchmark", "what"])
    assert list(t.columns) == ["gpu", "cpu", "goal", "met", "gpu_device"]
    assert len(t) == 7 and set(t["gpu_device"]) == {"cuda: NVIDIA H200"}
    pgd = t.loc[("bench_pgd", "one PGD step vs one forward+backward")]
    assert (pgd["gpu"], pgd["cpu"], pgd["met"]) == (1.2, 1.1, True)
    r34 = t.loc[("bench_pgd_resnet34", "one PGD step vs one forward+backward")]
    assert r34["met"] is False and np.isnan(r34["cpu"])               # 1.6 > 1/0.7; a variant has no CPU twin
    assert t.loc[("bench_nes", "masked NES")][["cpu", "met"]].tolist() == [1.3, True]
    lime = t.loc[("bench_lime", "lime's loop vs tensor")]
    assert (lime["cpu"], lime["met"]) == (1.5, False)                 # the headline (last) ratio carries the goal
    assert t.loc[("bench_lime", "forward")]["goal"] == ""
    ch03 = t.xs("ch03", level="benchmark").iloc[0]
    assert ch03["gpu"] == 41.0 and ch03["met"] is False and "30 min" in ch03["goal"]
    assert not any(b in ("bench_rr", "bench_attacks") for b, _ in t.index)


def test_a_bad_gpu_report_is_one_line_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match=r"gpu_report='.*nope.json': no such file"):
        perf.gpu_report_table(tmp_path / "nope.json")
    for text in ("{not json", json.dumps({"format": "other", "device": "cuda: x", "stages": []}), json.dumps([1, 2]),
                 json.dumps({"format": perf.GPU_REPORT_FORMAT, "device": "x", "stages": [{"status": "ok"}]})):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match="not a GPU check report"):
            perf.gpu_report_table(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="gpu_report="):
        perf.check_params(bench_scale="small", budget_min=0, device="cpu", gpu_report=str(tmp_path / "bad.json"))
    assert perf.check_params(bench_scale="small", budget_min=0, device="cpu", gpu_report=str(_report(tmp_path)))
    assert perf.check_params(bench_scale="small", budget_min=0, device="cpu")


def test_a_relative_gpu_report_is_taken_from_the_folder_where_the_command_was_typed(tmp_path, monkeypatch, data_home):
    """The kernel runs in the project root: the run passes it the report's absolute path (like data_root)."""
    from dfrobust.study import runner

    report = _report(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = runner.check_data_context({"profile": "quick", "gpu_report": report.name})
    assert out["gpu_report"] == str(report.resolve())
    assert runner.check_data_context({"profile": "quick", "gpu_report": ""})["gpu_report"] == ""


def test_the_gpu_check_markdown_is_the_appendix_table(tmp_path):
    gc = gpu_check_module()
    path = _report(tmp_path)
    gc.write_markdown(json.loads(path.read_text()), path, tmp_path / "gpu_check.md")
    md = (tmp_path / "gpu_check.md").read_text()
    assert "# GPU check on cuda: NVIDIA H200" in md and "| bench_nes | masked NES | 25.00 | >= 20x | True |" in md
    assert "| bench_rr | timeout |" in md


def test_the_appendix_template_reads_a_gpu_report():
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "06_performance.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert re.search(r'^gpu_report: str = ""  # .+', params.source, re.M)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # the parameters reach the appendix through its check (from_namespace) and its chapter function
    assert "from_namespace(perf.check_params, globals())" in code and "perf.run(cfg" in code
    from dfrobust.study import perf

    assert "gpu_report" in inspect.signature(perf.check_params).parameters
    assert "gpu_report_table(cfg.gpu_report" in inspect.getsource(perf.run)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_a_stage_past_its_cap_is_killed_with_its_children_and_reported(tmp_path):
    """The GPU check's stage runner: a stage (here a shell that started a child, as dask starts workers) still
    running at its cap is killed with its whole process group and reported as a timeout; the run goes on."""
    gc = gpu_check_module()
    pid_file = tmp_path / "child.pid"
    with open(tmp_path / "log", "w") as log:
        status, _ = gc._run(["bash", "-c", f"sleep 120 & echo $! > {pid_file}; wait"], 2, log)
        assert status == "timeout"
        assert gc._run([sys.executable, "-c", "print('fine')"], 60, log)[0] == "ok"
        assert gc._run([sys.executable, "-c", "raise SystemExit(3)"], 60, log)[0] == "failed (exit 3)"
    pid = int(pid_file.read_text())
    status_file = Path(f"/proc/{pid}/status")
    assert not status_file.exists() or "zombie" in status_file.read_text()
    assert "fine" in (tmp_path / "log").read_text()


def test_the_gpu_check_names_missing_packages_in_one_line(monkeypatch, capsys):
    gc = gpu_check_module()
    monkeypatch.setitem(gc.REQUIRED, "no_such_module_dfrobust", "no-such-dist")
    assert gc.main(["--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing Python packages: no-such-dist" in err[0] and ".whl" in err[0]
