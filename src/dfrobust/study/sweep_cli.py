"""``dfrobust sweep``: chapter 03's RA/RR sweep as cells on dask.distributed (mounted by ``study/cli.py``).

    dfrobust sweep --profile quick                        # serial (the same cell functions)
    dfrobust sweep --profile default --workers 2          # LocalCluster, 2 single-threaded workers
    dfrobust sweep --profile paper --scheduler tcp://host:8786
    dfrobust sweep --profile paper --cluster slurm --jobs 8 --queue gpu
    dfrobust sweep --profile paper --cluster slurm --jobs 8 --dry-run   # print the job script only

Shards go to ``<data home>/cache/sweep/<profile>/03_robustness``; the merged records to
``<data home>/results/<profile>/rr_records.nc``. Re-running computes only missing cells.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def sweep(profile: str = typer.Option("default", "--profile", help="Study profile: quick, default or paper."),
          workers: int = typer.Option(0, "--workers", help="Local dask workers (0: serial, no cluster)."),
          scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a running dask scheduler."),
          cluster: Optional[str] = typer.Option(None, "--cluster", help="'slurm': workers as SLURM GPU jobs (dask-jobqueue)."),
          jobs: int = typer.Option(1, "--jobs", help="SLURM jobs (one worker each)."),
          gpus_per_job: int = typer.Option(1, "--gpus-per-job", help="GPUs per SLURM job."),
          cores: int = typer.Option(8, "--cores", help="CPU cores per SLURM job (data loading)."),
          memory: str = typer.Option("64GB", "--memory", help="Memory per SLURM job."),
          walltime: str = typer.Option("04:00:00", "--walltime", help="Wall time per SLURM job."),
          queue: Optional[str] = typer.Option(None, "--queue", help="SLURM partition."),
          account: Optional[str] = typer.Option(None, "--account", help="SLURM account."),
          dry_run: bool = typer.Option(False, "--dry-run", help="With --cluster slurm: print the job script and stop."),
          shard_size: int = typer.Option(32, "--shard-size", help="Images per data shard (one cell each per detector x attack)."),
          device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
          param: Optional[List[str]] = typer.Option(None, "-p", "--param", help="Override a 03_robustness parameter.")) -> None:
    """Run chapter 03's attack sweep as cells (resumable), merge the shards into rr_records.nc."""
    from ..core.profiles import check_profile

    try:
        check_profile(profile)
    except ValueError as exc:
        _fail(str(exc))
    if cluster not in (None, "local", "slurm"):
        _fail(f"cluster={cluster!r}: expected 'slurm' (or omit it for a local cluster)")
    for name, v, lo in (("workers", workers, 0), ("jobs", jobs, 1), ("shard_size", shard_size, 1),
                        ("gpus_per_job", gpus_per_job, 1), ("cores", cores, 1)):
        if v < lo:
            _fail(f"{name}={v!r}: expected an integer >= {lo}")
    if dry_run and cluster != "slurm":
        _fail("--dry-run: expected --cluster slurm (the dry run prints the SLURM job script)")
    if device not in ("auto", "cpu", "cuda"):
        _fail(f"device={device!r}: expected auto, cpu or cuda")
    from . import sweep as S

    slurm = dict(jobs=jobs, gpus_per_job=gpus_per_job, cores=cores, memory=memory, walltime=walltime, queue=queue,
                 account=account)
    if dry_run:
        print(S.slurm_job_script(**slurm))
        return
    try:
        plan = _plan(profile, param, shard_size, device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(str(exc))
    cells, params, prov, dev = plan
    info = S.describe_plan(cells)
    console.print(f"{profile}: {info['cells']} cells = {len(info['detectors'])} detectors x {len(info['attacks'])} "
                  f"attacks x {info['shards']} shards ({info['samples']} images, {info['eps']} radii, eps grid whole "
                  "in each cell)", highlight=False)
    out = S.sweep_dir(profile)
    client = None
    todo = sum(not S.shard_ok(S.shard_path(c, out)) for c in cells)
    if todo == 0:
        pass  # every shard is there: no cluster to start, straight to the merge
    elif cluster == "slurm":
        client = S.slurm_client(**slurm)
    elif scheduler:
        client = S.make_client(scheduler=scheduler)
    elif workers > 0:
        client = S.make_client(workers=workers, device=dev)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("cells", total=len(cells))

            def advance(info, done, total):
                bar.update(task, completed=done, description=f"cells ({info['name'].split('-s')[0]})")

            rep = S.run_cells(cells, out, client=client, progress=advance, gpu=dev == "cuda" and client is not None
                              and (cluster == "slurm" or not scheduler))
    finally:
        if client is not None:
            c = getattr(client, "cluster", None)
            client.close()
            if c is not None:
                c.close()
    console.print(rep.summary(), highlight=False)
    if rep.failed:
        name, err = next(iter(rep.failed.items()))
        _fail(f"{len(rep.failed)} of {rep.total} cells failed (e.g. {name}: {err}); their shards are missing, "
              "re-run the same command to compute only those", code=1)
    from ..core.paths import results_dir

    path = results_dir(profile) / "rr_records.nc"
    S.chapter03_records(cells, out, params=params, profile=profile, save_to=path, **prov)
    print(path)


def _plan(profile: str, param, shard_size: int, device: str):
    """Resolve chapter 03's parameters, train/load its detectors (here, once), and plan the cells."""
    from ..core.device import pick_device
    from ..data import get_manifest, sampling
    from ..experiments import robustness
    from ..models.train import get_trained
    from . import sweep as S
    from .spec import declared_parameters, load_study, parse_override, resolve_params

    study = load_study()
    nb = study.notebook("03_robustness")
    overrides = dict(parse_override(p) for p in param or [])
    if device != "auto":
        overrides["device"] = device
    import ast

    q = {k: ast.literal_eval(v["default"]) for k, v in declared_parameters(nb.template).items()}  # template defaults
    q.update(resolve_params(study, nb, profile, overrides))
    q.pop("profile", None)
    p = robustness.check_params(profile=profile, **q)
    dev = pick_device(q["device"]).type
    seed = int(q["seed"])
    manifest = get_manifest(profile, "images", seed=seed)
    meta = manifest.attrs.get("meta", {})
    synthetic = bool(meta.get("synthetic", True))
    trained = {m: get_trained(m, manifest, profile=profile, seed=seed, device=dev) for m in p["models"]}
    gate = robustness.quality_gate({m: robustness.validation_auc(t.record) for m, t in trained.items()},
                                   q["min_val_auc"])
    analysed = [m for m in p["models"] if bool(gate.set_index("model").loc[m, "analysed"])]
    if not analysed:
        raise ValueError(f"models={p['models']}: none passed the quality gate (val AUC >= {q['min_val_auc']}); "
                         "nothing to attack")
    sel = sampling.select_samples(manifest, q["n_samples"], seed=seed)
    size = max(trained[m].input_size for m in analysed)
    refs = [S.detector_ref(m, trained[m].checkpoint) for m in analysed]
    kw = robustness.attack_options(p["attacks"], steps=q["pgd_steps"],
                                   cw={"c": q["cw_c"], "steps": q["cw_steps"], "lr": q["cw_lr"]})
    cells = S.plan_chapter03(refs, p["attacks"], p["eps_grid"], sel, size=size, seed=seed, shard_size=shard_size,
                             attack_kw=kw, device=dev)
    params = dict(profile=profile, seed=seed, models=p["models"], attacks=p["attacks"], eps_grid=p["eps_grid"],
                  b_grid=p["b_grid"], n_samples=q["n_samples"], pgd_steps=q["pgd_steps"], cw_c=q["cw_c"],
                  cw_steps=q["cw_steps"], cw_lr=q["cw_lr"], n_boot=q["n_boot"], rr_level=q["rr_level"],
                  eps_ref=p["eps_ref"], b_ref=p["b_ref"], ra_margin=q["ra_margin"], rr_margin=q["rr_margin"],
                  alpha=q["alpha"], ra_window=[q["ra_lo"], q["ra_hi"]], radii=q["radii"],
                  target_half_width=q["target_half_width"], min_val_auc=q["min_val_auc"], device=dev,
                  sweep_shard_size=shard_size)
    prov = dict(synthetic=int(synthetic), data="synthetic" if synthetic else "real", analysed=",".join(analysed),
                engine="dfrobust sweep")
    return cells, params, prov, dev


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
app.command()(sweep)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
