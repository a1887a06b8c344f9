"""``dfrobust sweep``: chapter 03's RA/RR sweep as cells on dask.distributed (mounted by ``study/cli.py``).

    dfrobust sweep --profile quick                        # serial (the same cell functions)
    dfrobust sweep --profile default --workers 2          # LocalCluster, 2 single-threaded workers
    dfrobust sweep --profile paper --scheduler tcp://host:8786
    dfrobust sweep --profile paper --cluster slurm --jobs 8 --queue gpu
    dfrobust sweep --profile paper --cluster slurm --jobs 8 --dry-run   # print the job script only
    dfrobust sweep --profile paper -p shard_size=64 -p n_samples=1000    # chapter 03's parameters

The cells are chapter 03's own (:func:`dfrobust.experiments.robustness.sweep_plan`, the same set-up
and parameters as the notebook's), so the chapter reuses every shard a sweep wrote, and the other way round.

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
    if dry_run and cluster != "slurm":
        _fail("--dry-run: expected --cluster slurm (the dry run prints the SLURM job script)")
    if device not in ("auto", "cpu", "cuda"):
        _fail(f"device={device!r}: expected auto, cpu or cuda")
    from ..core.params import check_int
    from ..experiments import robustness
    from . import sweep as S

    slurm = dict(jobs=jobs, gpus_per_job=gpus_per_job, cores=cores, memory=memory, walltime=walltime, queue=queue,
                 account=account)
    try:  # every option checked before any data, model or cluster: one line naming it
        check_int(workers, "workers", 0, 256)
        S.slurm_options(**slurm)  # counts in range, texts against a strict pattern (they land in a shell script)
        if scheduler and cluster != "slurm":
            check_scheduler(scheduler)
    except ValueError as exc:
        _fail(str(exc))
    if dry_run:
        print(S.slurm_job_script(**slurm))
        return
    try:
        plan = _plan(profile, param, device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(str(exc))
    cells, params, prov, dev = plan
    info = S.describe_plan(cells)
    console.print(f"{profile}: {info['cells']} cells = {len(info['detectors'])} detectors x {len(info['attacks'])} "
                  f"attacks x {info['shards']} shards ({info['samples']} images, {info['eps']} radii, eps grid whole "
                  "in each cell)", highlight=False)
    out = S.sweep_dir(profile, robustness.SWEEP_CHAPTER)
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

    from ..core.paths import results_dir

    path = results_dir(profile) / "rr_records.nc"

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("cells", total=len(cells))

            def advance(info, done, total):
                bar.update(task, completed=done, description=f"cells ({info['name'].split('-s')[0]})")

            gpu = dev == "cuda" and (cluster == "slurm" or (not scheduler and workers > 0))
            _, rep = S.run_chapter(cells, robustness.sweep_records, profile=profile, params=params, client=client,
                                   progress=advance, gpu=gpu, save_to=path, **prov)
    except (RuntimeError, OSError) as exc:  # failed cells (the finished shards stay) or the records not written
        _fail(str(exc), code=1)
    finally:
        if client is not None:
            c = getattr(client, "cluster", None)
            client.close()
            if c is not None:
                c.close()
    console.print(rep.summary(), highlight=False)
    print(path)


def check_scheduler(address: str, timeout: float = 5.0) -> str:
    """``address`` if a TCP connection to it opens within ``timeout`` seconds, else a one-line ValueError:
    an unreachable scheduler is found before any detector is trained, not after."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, loc = parse_address(address)
        host, port = parse_host_port(loc)
    except (ValueError, TypeError):
        raise ValueError(f"scheduler={address!r}: expected an address such as tcp://host:8786") from None
    if scheme not in ("tcp", "tls"):
        raise ValueError(f"scheduler={address!r}: expected a tcp:// or tls:// address")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ValueError(f"scheduler={address!r}: cannot connect to {host}:{port} within {timeout:g} s "
                         f"({exc.strerror or exc}); expected a running dask scheduler") from None
    return address


def _plan(profile: str, param, device: str):
    """Chapter 03's parameters resolved (template defaults, the profile, ``-p`` overrides) and checked,
    its set-up (detectors trained or loaded, here, once) and its cells: the notebook's own."""
    from ..experiments import robustness
    from . import sweep as S
    from .runner import check_arguments, check_data_context
    from .spec import load_study, parse_override, resolve_params

    study = load_study()
    nb = study.notebook("03_robustness")
    overrides = dict(parse_override(p) for p in param or [])
    if device != "auto":
        overrides["device"] = device
    resolved = check_data_context(resolve_params(study, nb, profile, overrides))  # data root: absolute, a folder
    q = check_arguments(nb, {**resolved, "profile": profile})
    p = robustness.check_params(**q)  # the run's values, else the template's defaults (as the runner's preflight)
    setup = robustness.setup(p, profile=profile)
    if not setup.analysed:
        raise ValueError(f"models={p['models']}: none passed the quality gate (val AUC >= {q['min_val_auc']}); "
                         "nothing to attack")
    prov = dict(synthetic=int(setup.synthetic), data=setup.data_label, analysed=",".join(setup.analysed),
                engine="dfrobust sweep")
    return S.plan_cells(**robustness.sweep_plan(p, setup)), p["params"], prov, p["device"].type


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
app.command()(sweep)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
