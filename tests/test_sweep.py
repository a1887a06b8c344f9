"""The sweep as pure tasks (dfrobust.study.sweep): grid, shard names, merge, the dask engine, SLURM dry run.

Tiny on purpose: two random-weight MesoNets at 32 px, 6 **synthetic** noise images, 2 shards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from dfrobust.core import device as D
from dfrobust.experiments import records, robustness
from dfrobust.models import build
from dfrobust.models.train import save_checkpoint
from dfrobust.study import sweep

ROOT = Path(__file__).resolve().parents[1]
EPS = [0.0, 0.01, 0.05]
ATTACKS = ["fgsm", "pgd"]
KW = {"pgd": {"steps": 2}}


def _toy(tmp: Path, n: int = 6):
    """Random-weight detectors as checkpoints and a manifest of synthetic noise PNGs."""
    import cv2

    torch.manual_seed(0)
    refs = []
    for name in ("meso4", "mesoinception4"):
        ck = save_checkpoint(build(name, 32).eval(), tmp / f"{name}.pt")
        refs.append(sweep.detector_ref(name, ck))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        p = tmp / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        rows.append({"path": str(p), "label": i % 2, "group": f"g{i % 3}", "split": "test", "dataset": "synthetic"})
    return refs, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    refs, sel = _toy(tmp)
    cells = sweep.plan_cells("03_robustness", refs, ATTACKS, EPS, sel, size=32, seed=3, shard_size=4, attack_kw=KW)
    return tmp, refs, sel, cells


@pytest.fixture(scope="module")
def serial(toy):
    tmp, _, _, cells = toy
    out = tmp / "serial"
    rep = sweep.run_cells(cells, out, workers=0)
    assert not rep.failed, rep.failed
    return out, sweep.merge_shards(cells, out)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes; a killed task is not retried (so the kill test sees it)."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        c = sweep.make_client(workers=2)
        yield c
        cluster = c.cluster
        c.close()
        cluster.close()


# --------------------------------------------------------------------------- the grid
def test_grid_is_detectors_x_attacks_x_shards_with_seeds_from_the_cell_key(toy):
    _, refs, sel, cells = toy
    assert len(cells) == 2 * 2 * 2 and {c.shard for c in cells} == {0, 1}
    assert sorted(r for c in cells if c.detector.name == "meso4" and c.attack == "pgd" for r in c.rows) == list(range(6))
    assert len({c.name for c in cells}) == len(cells) and len({c.cell_seed for c in cells}) == len(cells)
    again = sweep.plan_cells("03_robustness", list(reversed(refs)), list(reversed(ATTACKS)), EPS, sel, size=32, seed=3,
                             shard_size=4, attack_kw=KW)
    assert {c.name: c.cell_seed for c in again} == {c.name: c.cell_seed for c in cells}, \
        "a cell's name and seed must not depend on the order of the grid"
    other_seed = sweep.plan_cells("03_robustness", refs, ATTACKS, EPS, sel, size=32, seed=4, shard_size=4, attack_kw=KW)
    assert not {c.name for c in other_seed} & {c.name for c in cells}


def test_shard_name_changes_with_data_checkpoint_options_and_code(toy, tmp_path):
    _, refs, sel, cells = toy
    names = {c.name for c in cells}
    more_steps = sweep.plan_cells("03_robustness", refs, ATTACKS, EPS, sel, size=32, seed=3, shard_size=4,
                                  attack_kw={"pgd": {"steps": 3}})
    assert {c.name for c in more_steps if c.attack == "fgsm"} <= names
    assert not {c.name for c in more_steps if c.attack == "pgd"} & names
    import cv2
    changed = sel.copy()
    p = tmp_path / "other.png"
    cv2.imwrite(str(p), np.zeros((32, 32, 3), np.uint8))
    changed.loc[0, "path"] = str(p)  # new content in shard 0 only
    c2 = sweep.plan_cells("03_robustness", refs, ATTACKS, EPS, changed, size=32, seed=3, shard_size=4, attack_kw=KW)
    assert {c.name for c in c2 if c.shard == 1} <= names and not {c.name for c in c2 if c.shard == 0} & names
    torch.manual_seed(1)
    ck = save_checkpoint(build("meso4", 32).eval(), tmp_path / "meso4.pt")
    c3 = sweep.plan_cells("03_robustness", [sweep.detector_ref("meso4", ck), refs[1]], ATTACKS, EPS, sel, size=32,
                          seed=3, shard_size=4, attack_kw=KW)
    assert not {c.name for c in c3 if c.detector.name == "meso4"} & names
    from dataclasses import replace
    assert replace(cells[0], code=cells[0].code + "x").name != cells[0].name


@pytest.mark.parametrize("kw, fragment", [
    ({"shard_size": 0}, "shard_size=0"),
    ({"device": "tpu"}, "device='tpu'"),
    ({"attack_kw": {"pgd": {"stepz": 2}}}, "stepz"),
    ({"attacks": ["cw"]}, "attack='cw'"),
    ({"chapter": "robustness"}, "chapter='robustness'"),
    ({"chapter": ""}, "chapter=''"),
])
def test_bad_plan_input_is_one_line_before_anything_runs(toy, kw, fragment):
    _, refs, sel, _ = toy
    args = dict(chapter="03_robustness", attacks=ATTACKS, size=32, seed=3, attack_kw=KW) | kw
    with pytest.raises(ValueError) as err:
        sweep.plan_cells(args.pop("chapter"), refs, args.pop("attacks"), EPS, sel, **args)
    assert fragment in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- cells, merge
def test_merged_shards_have_attack_records_layout_and_fgsm_values(serial, toy):
    """FGSM draws no random numbers: the merged shards equal one attack_records call on all samples."""
    _, refs, sel, cells = toy
    _, merged = serial
    from dfrobust.models.train import load_checkpoint

    models = {r.name: load_checkpoint(r.checkpoint, r.name) for r in refs}
    images, labels, kept, _ = records.load_samples(sel, 32)
    torch.set_num_threads(1)
    whole = records.attack_records(models, ATTACKS, EPS, images, labels, kept, seed=0, device="cpu",
                                      attack_kw=KW, batch_size=cells[0].batch_size)
    assert set(merged.data_vars) == set(whole.data_vars)
    for v in whole.data_vars:
        assert merged[v].dims == whole[v].dims, v
    assert set(merged.coords) == set(whole.coords)
    assert list(merged.model.values) == ["meso4", "mesoinception4"] and list(merged.attack.values) == ATTACKS
    np.testing.assert_array_equal(merged.sample.values, np.arange(6))
    for c in ("group", "path", "manifest_label"):
        np.testing.assert_array_equal(merged[c].values.astype(str), whole[c].values.astype(str))
    for v in ("p_adv", "p_adv_fake", "l2", "linf", "pred_adv", "success", "changed", "eps_found"):
        np.testing.assert_allclose(merged[v].sel(attack="fgsm").values.astype(float),
                                   whole[v].sel(attack="fgsm").values.astype(float), rtol=0, atol=1e-6, err_msg=v)
    for v in ("pred_clean", "p_clean", "y", "eps_l2", "input_size"):
        np.testing.assert_allclose(merged[v].values.astype(float), whole[v].values.astype(float), atol=1e-6)
    assert merged.attrs["kind"] == "attack_records" and merged.attrs["n_cells"] == 8


def test_a_cell_is_skipped_when_its_shard_opens_and_recomputed_when_it_does_not(serial, toy):
    out, _ = serial
    _, _, _, cells = toy
    rep = sweep.run_cells(cells, out, workers=0)
    assert rep.computed == [] and len(rep.skipped) == 8
    victim, corrupt = cells[1], cells[5]
    sweep.shard_path(victim, out).unlink()
    sweep.shard_path(corrupt, out).write_bytes(b"half-written")
    before = sweep.LOADS.copy()
    rep = sweep.run_cells(cells, out, workers=0)
    assert sorted(rep.computed) == sorted([victim.name, corrupt.name]) and len(rep.skipped) == 6
    assert sweep.LOADS == before, "this process had loaded both detectors already: no reload"


def test_chapter_records_add_the_chapters_worst_case_and_provenance(serial, toy, tmp_path):
    out, merged = serial
    _, _, _, cells = toy
    rec = sweep.chapter_records(cells, out, robustness.sweep_records, params={"n_samples": 6}, profile="quick",
                                save_to=tmp_path / "rr_records.nc", synthetic=1, data="synthetic")
    assert list(rec.attack.values) == [*ATTACKS, "worst"]
    back = xr.open_dataset(tmp_path / "rr_records.nc", engine="h5netcdf").load()
    assert back.attrs["profile"] == "quick" and back.attrs["data"] == "synthetic"
    xr.testing.assert_equal(back["p_adv"].sel(attack=ATTACKS), merged["p_adv"])


# --------------------------------------------------------------------------- dask
def test_two_workers_give_records_identical_to_serial(serial, toy, client, tmp_path):
    _, _, _, cells = toy
    _, reference = serial
    seen = []
    rep = sweep.run_cells(cells, tmp_path / "dask", client=client, progress=lambda info, d, t: seen.append((d, t)))
    assert not rep.failed and len(rep.computed) == 8 and rep.workers == 2
    import dask
    assert dask.config.get("scheduler", None) != "dask.distributed", \
        "the sweep's client must not become dask's default (xarray's writes would then need it alive)"
    assert seen[-1] == (8, 8)
    merged = sweep.merge_shards(cells, tmp_path / "dask")
    for v in reference.data_vars:
        np.testing.assert_array_equal(merged[v].values, reference[v].values, err_msg=v)
    loads = client.run(lambda: dict(__import__("dfrobust.study.sweep", fromlist=["LOADS"]).LOADS))
    assert all(n <= 1 for w in loads.values() for n in w.values()), f"a worker reloaded a detector: {loads}"


def test_killing_a_worker_mid_sweep_then_rerunning_computes_only_the_missing_cells(serial, toy, client, tmp_path):
    _, _, _, cells = toy
    _, reference = serial
    out = tmp_path / "killed"
    pids = client.run(os.getpid)
    killed = []

    def kill_one(info, done, total):
        if killed:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            killed.append(pids[busy[0]])
            os.kill(pids[busy[0]], signal.SIGKILL)

    rep = sweep.run_cells(cells, out, client=client, progress=kill_one)
    assert killed, "no worker was busy after the first cell: nothing was killed"
    present = {c.name for c in cells if sweep.shard_ok(sweep.shard_path(c, out))}
    missing = {c.name for c in cells} - present
    assert missing and set(rep.failed) == missing, (rep.summary(), rep.failed)
    again = sweep.run_cells(cells, out, workers=0)
    assert set(again.computed) == missing and set(again.skipped) == present
    merged = sweep.merge_shards(cells, out)
    for v in reference.data_vars:
        np.testing.assert_array_equal(merged[v].values, reference[v].values, err_msg=v)


# --------------------------------------------------------------------------- SLURM, GPU specs
def test_slurm_dry_run_prints_a_job_script_without_a_cluster():
    script = sweep.slurm_job_script(jobs=4, gpus_per_job=1, cores=8, memory="32GB", walltime="02:00:00", queue="gpu")
    lines = script.splitlines()
    assert lines[0].startswith("#!") and "#SBATCH --gres=gpu:1" in lines and "#SBATCH -p gpu" in lines
    assert "#SBATCH --cpus-per-task=8" in lines and "#SBATCH -t 02:00:00" in lines
    worker = [ln for ln in lines if "distributed.cli.dask_worker" in ln]
    assert len(worker) == 1 and "--resources GPU=1" in worker[0] and "--nthreads 1" in worker[0]
    assert "#SBATCH -J dfrobust-sweep" in lines
    # no nanny: it would set MALLOC_TRIM_THRESHOLD_ in the worker (attack steps ~1.5x slower, WORKER_CONFIG)
    assert "--no-nanny" in worker[0] and "MALLOC_TRIM" not in script
    with pytest.raises(ValueError, match="jobs=0"):
        sweep.slurm_job_script(jobs=0)


def test_cli_sweep_dry_run_prints_the_job_script():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-m", "dfrobust.study.sweep_cli", "--profile", "quick", "--cluster",
                          "slurm", "--jobs", "2", "--dry-run"], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --gres=gpu:1" in out.stdout and "dask_worker" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "dfrobust.study.sweep_cli", "--profile", "quick", "--cluster", "pbs"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert bad.returncode == 2 and "cluster='pbs'" in bad.stderr


def test_gpu_worker_specs_give_each_worker_its_own_gpu():
    specs = sweep.gpu_worker_specs(3)
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["0", "1", "2"]
    assert all(s["options"]["resources"] == {"GPU": 1} and s["options"]["nthreads"] == 1 for s in specs.values())


# --------------------------------------------------------------------------- core.device
def test_batch_from_memory_scales_with_free_memory_and_checks_input():
    assert D.batch_from_memory("cpu", 1000, free=100_000, fraction=0.5) == 50
    assert D.batch_from_memory("cpu", 1000, free=10, fraction=0.5) == 1
    assert D.batch_from_memory("cpu", 1, free=10**12, cap=64) == 64
    with pytest.raises(ValueError, match="bytes_per_sample=0"):
        D.batch_from_memory("cpu", 0)
    assert D.free_memory(torch.device("cpu")) > 0


def test_halving_retry_halves_on_oom_until_the_batch_fits():
    calls = []

    def job(bs):
        calls.append(bs)
        if bs > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return bs * 10

    assert D.halving_retry(job, 40) == (50, 5) and calls == [40, 20, 10, 5]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        D.halving_retry(job, 12, min_batch=6)
    with pytest.raises(KeyError):  # not an OOM: no retry
        D.halving_retry(lambda bs: {}[bs], 8)


def test_pinned_and_to_device_are_noops_on_cpu():
    x = torch.rand(2, 3)
    assert D.pinned(x, torch.device("cpu")) is x
    assert torch.equal(D.to_device(x, torch.device("cpu")), x)


def test_chapter03_plans_its_cells_from_its_parameters_and_reuses_every_shard(toy, data_home):
    """The chapter and `dfrobust sweep` plan through robustness.sweep_plan: the chapter's grid, attack settings,
    settle_b (its largest b), seed and shard size; a second run computes nothing and merges the same records."""
    from types import SimpleNamespace

    from test_chapter03 import _defaults

    _, refs, sel, _ = toy
    p = robustness.check_params(**{**_defaults(), "models": "meso4,mesoinception4", "attacks": "fgsm,pgd",
                                   "pgd_steps": 2, "n_eps": 2, "eps_min": 0.01, "eps_max": 0.05, "b_max": 0.3,
                                   "shard_size": 4, "seed": 3, "device": "cpu"})
    setup = SimpleNamespace(trained={r.name: SimpleNamespace(checkpoint=r.checkpoint) for r in refs},
                            analysed=["mesoinception4"], selection=sel, size=32)
    cells = sweep.plan_cells(**robustness.sweep_plan(p, setup))
    assert len(cells) == 2 * 2  # the analysed detector only x 2 attacks x 2 shards of 4 and 2 images
    assert {c.settle_b for c in cells} == {0.3} and {c.seed for c in cells} == {3}
    assert {c.options for c in cells} == {"{}", '{"steps": 2}'} and cells[0].eps == tuple(p["eps_grid"])
    first, rep1 = sweep.run_chapter(cells, robustness.sweep_records, profile="quick", params=p["params"])
    second, rep2 = sweep.run_chapter(cells, robustness.sweep_records, profile="quick", params=p["params"])
    assert len(rep1.computed) == 4 and rep2.computed == [] and len(rep2.skipped) == 4
    assert str(sweep.sweep_dir("quick", "03_robustness")).startswith(str(data_home))
    assert first.attrs["settle_b"].startswith("0.3:") and "worst" in first.attack.values
    xr.testing.assert_identical(first.drop_attrs(), second.drop_attrs())
    unsettled = sweep.plan_cells("03_robustness", refs[1:], ["fgsm", "pgd"], p["eps_grid"], sel, size=32, seed=3,
                                 shard_size=4, attack_kw=p["attack_kw"])
    assert {c.name for c in unsettled}.isdisjoint(c.name for c in cells)  # settle_b is part of a cell's identity

def test_local_workers_are_single_threaded_and_keep_glibcs_dynamic_malloc_thresholds(client):
    """distributed's nannies set MALLOC_TRIM_THRESHOLD_, which turns off glibc's dynamic mmap threshold:
    every large tensor of an attack step is then a fresh mmap (a cell 1.5x slower, see WORKER_CONFIG)."""
    env = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
    assert len(env) == 2 and set(env.values()) == {(None, "1")}, env


def test_a_cells_key_and_seed_are_pinned():
    """A cell's seed derives from its key only; moving the sweep's code (issue 22: one job per module) must
    not change a key or a seed, or every record of the study changes. Values computed before the move."""
    det = sweep.DetectorRef("meso4", "/nowhere/meso4.pt", "0123456789abcdef")
    cell = sweep.Cell("03_robustness", det, "pgd", (0.0, 0.01), 2, (8, 9), (("label", (0, 1)),), '{"steps": 2}',
                      3, 32, 4, "cpu")
    assert robustness.SWEEP_CHAPTER == "03_robustness", "chapter 03's cells keep their keys, so their seeds"
    assert cell.key == ("03_robustness", "meso4", "pgd", "all", 2, 3)
    assert cell.cell_seed == 116682077
    other = sweep.Cell("03_robustness", sweep.DetectorRef("meso4", "/elsewhere.pt", "f" * 16), "pgd", (0.05,), 2,
                       (0,), (), "{}", 3, 64, 1, "cuda", code="another version", data="other data")
    assert other.cell_seed == cell.cell_seed, "only the key (not paths, hashes, grid or code) makes the seed"
