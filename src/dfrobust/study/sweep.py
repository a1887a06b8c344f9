"""The paper-scale sweep as pure tasks: a grid of cells, one netCDF shard per cell, a merge, an engine.

Generic: nothing here is one chapter's. A chapter's plan (which detectors, attacks, ε grid, shard
size, seed, ``settle_b``) and what it adds to the merged records live beside the chapter (chapter
03: :func:`dfrobust.experiments.robustness.sweep_plan` and
:func:`~dfrobust.experiments.robustness.sweep_records`).

**A cell** is (chapter, detector, attack, ε chunk, data shard, seed). :func:`run_cell` is a pure
function of its inputs: it loads the detector (once per process), the shard's images, runs
:func:`dfrobust.experiments.records.attack_records` on them and writes one shard, named by a
hash of the resolved parameters, the code version
(:func:`dfrobust.study.runner.package_fingerprint`), the data fingerprint (the shard's file
contents and labels) and the checkpoint hash. A cell whose shard exists, opens and names this
cell (its ``cell`` attribute, :func:`shard_problem`) is skipped,
so a sweep that stopped (a killed worker, a lost job, Ctrl-C) resumes with the missing cells
only; shards are written atomically (:func:`dfrobust.core.results.save`), so a cell killed
mid-write leaves nothing a later run would trust.

**Seeds.** A cell's seed is derived from its *key* — (chapter, detector, attack, ε chunk, shard,
study seed) — never from the order in which cells run, so records do not depend on scheduling.
The serial path (``workers=0``) calls the same :func:`run_cell` in a loop, so "serial" and "N
workers" are the same computation and give identical records (a test checks it).

**ε chunks.** :func:`attack_records` keeps, per sample, the worst record found at any radius ≤ ε
(a cumulative maximum over the grid), and its seeds and FGSM's shared gradient are per grid.
Chunking the ε grid would need the raw per-radius records (which the records do not keep) to
redo the cumulative maximum after the merge. So a cell keeps **the whole ε grid** (its ε chunk is
"all") and the grid is parallelised over (detector, attack, data shard) instead: at paper scale
that is 3 detectors x 2-5 attacks x N/shard_size shards, plenty of cells for a few GPUs.

**Merge.** :func:`merge_shards` joins the shards with ``xarray.combine_nested`` along (model,
attack, sample) into exactly the layout :func:`attack_records` returns for the whole set;
:func:`chapter_records` adds what the chapter adds (chapter 03: the worst case) and the provenance
the chapter writes (chapter 03: ``data/results/<profile>/rr_records.nc``).

**One plan for the chapter and the CLI.** Chapter 03 and ``dfrobust sweep`` both set up through
:func:`dfrobust.experiments.robustness.setup`, plan through
``plan_cells(**robustness.sweep_plan(cfg, setup))`` (the chapter's ε grid, attack settings, seed,
shard size and ``settle_b``), then call ``run_chapter(cells, robustness.sweep_records, ...)``; so
the notebook reuses every shard a sweep wrote (and the other way round), runs the rest in the
kernel (``workers=0``) or on local workers, and a sweep cannot drift from the chapter it computes for.

**Engine.** :func:`run_cells` runs the missing cells serially (``workers=0``), on a
``distributed.LocalCluster`` (one single-threaded worker process per 1-2 CPU cores, or one
worker per GPU with ``resources={"GPU": 1}`` and its own ``CUDA_VISIBLE_DEVICES``), on an
existing scheduler by address, or on SLURM through ``dask_jobqueue.SLURMCluster``
(:func:`slurm_job_script` prints the job script without a cluster). Failures (a killed worker
included) are collected, not raised mid-sweep: what finished stays on disk.

Written here: the cell grid, its naming and the merge are this study's; dask.distributed and
dask-jobqueue are the maintained engine and are used as they are.

Left for later: chapters 04 (video-frame records, cells by video shard) and 05 (XAI: cells by
(detector, tool, pair shard), k inside the cell like ε here) plug in as further ``chapter``
values of :class:`Cell` with their own cell function; today :func:`run_cell` builds attack records
(:func:`attack_records`) and only chapter 03 plans its cells.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..core.paths import file_sha256

#: version of the shard layout (part of every shard name)
SHARD_FORMAT = "dfrobust-shard-1"


# ----------------------------------------------------------------------------- the grid

@dataclass(frozen=True)
class DetectorRef:
    """A detector as a cell sees it: its name, weight file and that file's sha256. The file is a
    checkpoint of :func:`dfrobust.models.train.save_checkpoint`, or for a published name
    (:mod:`dfrobust.models.published`) the authors' Keras ``.h5``."""

    name: str
    checkpoint: str
    checkpoint_hash: str


@dataclass(frozen=True)
class Cell:
    """One task of the sweep; everything :func:`run_cell` needs, nothing else."""

    chapter: str
    detector: DetectorRef
    attack: str
    eps: tuple                      # the whole ε grid (see "ε chunks" in the module docstring)
    shard: int                      # index of the data shard
    rows: tuple                     # global sample indices of the shard (positions in the selection)
    meta: tuple                     # the shard's manifest rows as (column, values) pairs
    options: str                    # attack options, JSON
    seed: int                       # the study seed
    size: int                       # image load size
    batch_size: int
    device: str                     # "cpu" or "cuda" (records differ between them)
    ssim: bool = True
    settle_b: float | None = None   # samples settled for every b <= settle_b are not re-attacked (attack_records)
    code: str = ""                  # package fingerprint
    data: str = ""                  # data fingerprint of the shard
    eps_chunk: str = "all"

    @property
    def key(self) -> tuple:
        """The cell's identity: what its seed derives from (not the code or data version)."""
        return (self.chapter, self.detector.name, self.attack, self.eps_chunk, self.shard, self.seed)

    @property
    def cell_seed(self) -> int:
        return int(hashlib.sha256(json.dumps(self.key).encode()).hexdigest()[:7], 16)

    def resolved(self) -> dict[str, Any]:
        """Every input of the cell that its result depends on (hashed into the shard name)."""
        return {"format": SHARD_FORMAT, "chapter": self.chapter, "detector": self.detector.name,
                "checkpoint_hash": self.detector.checkpoint_hash, "attack": self.attack,
                "options": self.options, "eps": [float(e) for e in self.eps], "eps_chunk": self.eps_chunk,
                "shard": self.shard, "rows": list(self.rows), "seed": self.seed, "cell_seed": self.cell_seed,
                "size": self.size, "batch_size": self.batch_size, "device": self.device, "ssim": bool(self.ssim),
                "settle_b": None if self.settle_b is None else float(self.settle_b), "code": self.code,
                "data": self.data}

    @property
    def name(self) -> str:
        h = hashlib.sha256(json.dumps(self.resolved(), sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.chapter[:2]}-{self.detector.name}-{self.attack}-s{self.shard:04d}-{h}"

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({k: list(v) for k, v in self.meta})


def data_fingerprint(df: pd.DataFrame) -> str:
    """Hash of what a shard reads: each image's content and label, in order (not where it lives)."""
    h = hashlib.sha256()
    for path, label in zip(df["path"].astype(str), df["label"].astype(int)):
        h.update(f"{label}:".encode())
        h.update(file_sha256(path).encode() if os.path.isfile(path) else b"missing:" + path.encode())
    return h.hexdigest()[:16]


def detector_ref(name: str, checkpoint: str | os.PathLike) -> DetectorRef:
    """A :class:`DetectorRef` for a checkpoint written by :func:`dfrobust.models.train.save_checkpoint`
    (for a published detector name: its Keras weight file)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint={str(path)!r}: no such file; expected a dfrobust checkpoint "
                                "or, for a published detector, its .h5 weight file")
    return DetectorRef(name, str(path.resolve()), file_sha256(path)[:16])


def plan_cells(chapter: str, detectors: Sequence[DetectorRef] | Mapping[str, str | os.PathLike],
               attacks: Sequence[str], eps_grid: Sequence[float], selection: pd.DataFrame, *, size: int,
               seed: int = 0, shard_size: int = 32, attack_kw: Mapping[str, Mapping] | None = None,
               batch_size: int | None = None, device: str = "cpu", ssim: bool = True,
               settle_b: float | None = None) -> list[Cell]:
    """The cells of a chapter's attack sweep: detectors x attacks x shards of ``selection``.

    ``chapter``: the chapter's sweep name (``NN_name``, e.g. ``03_robustness``; part of every cell's
    key, so of its seed); ``detectors``: :class:`DetectorRef` s, or detector name -> checkpoint (each
    made a :func:`detector_ref`). ``selection``: the manifest rows attacked (``path``, ``label`` and
    the sample coordinates), in the order of the records' ``sample`` axis; ``size`` the size images
    are loaded at; ``settle_b`` as in :func:`attack_records` (the largest bound b the chapter reads).
    A chapter's own plan (e.g. :func:`dfrobust.experiments.robustness.sweep_plan`) gives every
    argument. Validated before anything runs.
    """
    import re

    import torch

    from .. import attacks as _attacks
    from ..core.device import auto_batch_size
    from ..experiments import records
    from .runner import package_fingerprint

    if not isinstance(chapter, str) or not re.fullmatch(r"\d\d_[a-z0-9_]+", chapter):
        raise ValueError(f"chapter={chapter!r}: expected a chapter's sweep name NN_name, e.g. '03_robustness'")
    if isinstance(detectors, Mapping):
        detectors = [detector_ref(name, ck) for name, ck in detectors.items()]
    if not detectors:
        raise ValueError("detectors=[]: expected at least one DetectorRef")
    names, eps = records.check_sweep(list(attacks), list(eps_grid))
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise ValueError(f"shard_size={shard_size!r}: expected an integer >= 1")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: expected 'cpu' or 'cuda' (the device class the records are made on)")
    if not isinstance(selection, pd.DataFrame) or len(selection) == 0 or \
            not {"path", "label"} <= set(selection.columns):
        raise ValueError("selection: expected a non-empty manifest DataFrame with path and label columns")
    settle_b = records.check_settle_b(settle_b)
    kw = {_attacks.check_attack(k): dict(v) for k, v in (attack_kw or {}).items()}
    for a in names:
        _attacks.check_options(a, **kw.get(a, {}))
    bs = int(batch_size or auto_batch_size(torch.device(device), int(size)))
    code = package_fingerprint()
    cols = [c for c in (*records.SAMPLE_COORDS, "label") if c in selection.columns]
    sel = selection.reset_index(drop=True)
    cells = []
    for si, start in enumerate(range(0, len(sel), int(shard_size))):
        part = sel.iloc[start:start + int(shard_size)]
        meta = tuple((c, tuple(part[c].tolist())) for c in cols)
        fp = data_fingerprint(part)
        rows = tuple(range(start, start + len(part)))
        for det in detectors:
            for a in names:
                cells.append(Cell(chapter, det, a, tuple(eps), si, rows, meta,
                                  json.dumps(kw.get(a, {}), sort_keys=True), int(seed), int(size), bs, device,
                                  bool(ssim), settle_b, code, fp))
    return cells


# ----------------------------------------------------------------------------- one cell

#: per-process detector cache: (checkpoint, hash, device) -> model; a worker loads each detector once
_DETECTORS: dict[tuple, Any] = {}
#: how many times this process loaded a checkpoint (tests read it)
LOADS: dict[str, int] = {}


def load_detector(ref: DetectorRef, device: str):
    key = (ref.checkpoint, ref.checkpoint_hash, device)
    if key not in _DETECTORS:
        from ..models import published
        from ..models.train import load_checkpoint

        _DETECTORS[key] = (published.load(ref.checkpoint).to(device).eval() if published.is_published(ref.name)
                           else load_checkpoint(ref.checkpoint, ref.name, device))
        LOADS[ref.name] = LOADS.get(ref.name, 0) + 1
    return _DETECTORS[key]


def shard_path(cell: Cell, out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / f"{cell.name}.nc"


def shard_problem(path: str | os.PathLike) -> str:
    """Why the shard at ``path`` cannot be used ("" when it can): missing, unreadable, another format, no
    records, or another cell's shard (its stored ``cell`` attribute is not the file's name, which hashes
    every input of the cell: a shard copied over another cell's name is not that cell). Read with h5py
    (the file's attributes and variable names only: 0.3 ms against 120 ms for ``xarray.open_dataset`` on a
    default-profile shard), since a sweep asks it of every cell."""
    import h5py

    path = Path(path)
    if not path.is_file():
        return "missing"
    try:
        with h5py.File(path, "r") as f:
            fmt, cell = (f.attrs.get(k) for k in ("shard_format", "cell"))
            has_records = "p_adv" in f
    except Exception as exc:  # noqa: BLE001 - unreadable means recompute
        return f"unreadable ({type(exc).__name__})"
    fmt, cell = (v.decode() if isinstance(v, bytes) else v for v in (fmt, cell))
    if fmt != SHARD_FORMAT or not has_records:
        return f"not a {SHARD_FORMAT} shard with records"
    if cell != path.stem:
        return f"holds cell {cell}, not {path.stem}"
    return ""


def shard_ok(path: str | os.PathLike) -> bool:
    """The shard exists, opens as a shard of this format with records and is this cell's (:func:`shard_problem`)."""
    return not shard_problem(path)


def run_cell(cell: Cell, out_dir: str | os.PathLike, *, torch_threads: int = 1) -> dict[str, Any]:
    """Compute one cell and write its shard (skipped when the shard exists and opens).

    Returns ``{"name", "computed", "wall_s", "batch_size", "pid"}``. On CUDA the batch is halved
    and retried on out-of-memory; the size that worked is kept in the shard's attrs.
    """
    import torch

    from ..core import device as D
    from ..core import results
    from ..experiments import records

    path = shard_path(cell, out_dir)
    why = shard_problem(path)
    if not why:
        return {"name": cell.name, "computed": False, "wall_s": 0.0, "batch_size": cell.batch_size,
                "pid": os.getpid()}
    if why != "missing":
        print(f"NOTICE: shard {path} {why}; recomputing cell {cell.name}")
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if cell.device == "cpu":
        torch.set_num_threads(max(1, int(torch_threads)))  # the same kernels (and floats) in every process
    try:
        dev = D.pick_device(cell.device)
        D.deterministic(dev)
        model = load_detector(cell.detector, cell.device)
        df = cell.frame().assign(_row=list(cell.rows))
        images, labels, kept, skipped = records.load_samples(df, cell.size)
        images = D.pinned(images, dev)
        opts = json.loads(cell.options)

        def job(bs):
            return records.attack_records({cell.detector.name: model}, [cell.attack], list(cell.eps), images,
                                             labels, kept, seed=cell.cell_seed, device=cell.device,
                                             attack_kw={cell.attack: opts} if opts else None, batch_size=bs,
                                             ssim=cell.ssim, settle_b=cell.settle_b)

        rec, bs_used = D.halving_retry(job, cell.batch_size)
    finally:
        torch.set_num_threads(threads)
    rec = rec.assign_coords(sample=np.asarray(kept["_row"], dtype=np.int64))
    wall = time.perf_counter() - t0
    rec.attrs.update(shard_format=SHARD_FORMAT, cell=cell.name, cell_key=json.dumps(cell.key),
                     cell_seed=cell.cell_seed, resolved=json.dumps(cell.resolved(), sort_keys=True),
                     batch_size_used=int(bs_used), skipped=json.dumps(skipped), cell_wall_s=float(wall))
    results.save(rec, path)
    return {"name": cell.name, "computed": True, "wall_s": wall, "batch_size": bs_used, "pid": os.getpid()}


# ----------------------------------------------------------------------------- the engine

@dataclass
class SweepReport:
    """What a sweep did: cells computed, skipped (shard already there) and failed (name -> error)."""

    total: int
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    cell_wall_s: dict[str, float] = field(default_factory=dict)
    workers: int = 0
    where: str = "one process, serially"

    def summary(self) -> str:
        return (f"{self.total} cells: {len(self.computed)} computed, {len(self.skipped)} already there, "
                f"{len(self.failed)} failed ({self.where}, {self.wall_s:.1f} s)")


def run_cells(cells: Sequence[Cell], out_dir: str | os.PathLike, *, client=None, workers: int = 0,
              progress: Callable[[dict, int, int], None] | None = None, gpu: bool | None = None) -> SweepReport:
    """Run the cells whose shard is missing: serially (``client=None, workers=0``), on ``workers``
    local workers (:func:`make_client` on the cells' device), else on ``client`` (a
    ``distributed.Client``). Cells go longest first (:func:`cell_cost`), so no long cell is left
    for the end. ``gpu``: ask for a worker's ``GPU`` resource (default: when the cells are on CUDA and
    the cluster is one this function or :func:`make_client` made). ``progress(info, done, total)``
    is called after each cell. Failures are collected in the report, never raised mid-sweep."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers={workers!r}: expected an integer >= 0 (0: serial)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError("cells: two cells share a shard name; expected a grid of distinct cells")
    rep = SweepReport(total=len(cells))
    todo = []
    for c in cells:
        (rep.skipped.append(c.name) if shard_ok(shard_path(c, out_dir)) else todo.append(c))
    todo.sort(key=cell_cost, reverse=True)  # stable: plan order among equal costs
    done = len(rep.skipped)
    t0 = time.perf_counter()

    def record(info: dict) -> None:
        nonlocal done
        done += 1
        if info.get("error"):
            rep.failed[info["name"]] = info["error"]
        elif info["computed"]:
            rep.computed.append(info["name"])
            rep.cell_wall_s[info["name"]] = round(float(info["wall_s"]), 4)
        else:
            rep.skipped.append(info["name"])
        if progress is not None:
            progress(info, done, rep.total)

    if client is None and workers == 0:
        for c in todo:
            try:
                info = run_cell(c, out_dir)
            except Exception as exc:  # noqa: BLE001 - collected, reported at the end
                info = {"name": c.name, "error": f"{type(exc).__name__}: {exc}"}
            record(info)
        rep.wall_s = time.perf_counter() - t0
        return rep

    from distributed import as_completed

    own = client is None
    cuda = bool(todo) and todo[0].device == "cuda"
    if own:
        client = make_client(workers=workers, device="cuda" if cuda else "cpu")
    try:
        rep.workers = len(client.nthreads())
        rep.where = f"dask ({rep.workers} workers)"
        use_gpu = (cuda and own) if gpu is None else gpu
        kw = {"resources": {"GPU": 1}} if use_gpu else {}
        futures = {client.submit(run_cell, c, str(out_dir), key=f"dfrobust-cell-{c.name}", pure=False, **kw): c
                   for c in todo}
        for fut in as_completed(futures, loop=client.loop):
            c = futures[fut]
            try:
                info = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, a cell's own error, ...
                info = {"name": c.name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            record(info)
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
    rep.wall_s = time.perf_counter() - t0
    return rep


def cell_cost(cell: Cell) -> float:
    """A rough relative cost of a cell, only to run the longest first (never part of a record):
    images x radii x gradient passes per radius x the checkpoint's size (a proxy for the detector's
    work per pass: ResNet-34's 85 MB against MesoNet's 0.07 MB)."""
    steps = int(json.loads(cell.options).get("steps", 1))
    passes = (2 if cell.attack == "rr" else 1) * steps
    size = os.path.getsize(cell.detector.checkpoint) if os.path.isfile(cell.detector.checkpoint) else 1
    return float(len(cell.rows) * len(cell.eps) * passes * size)


def default_workers(device: str = "cpu") -> int:
    """One worker per visible GPU (at least 1); on CPU one single-threaded worker per 2 cores (at least 1)."""
    if device == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, (os.cpu_count() or 1) // 2)


def gpu_worker_specs(n_gpus: int) -> dict[str, dict]:
    """SpecCluster worker specs: one nanny-managed worker per GPU with ``resources={"GPU": 1}`` and
    its own ``CUDA_VISIBLE_DEVICES`` (so ``cuda`` in each worker is its own GPU). Worker i gets the
    i-th GPU *this process* sees: the i-th entry of its own ``CUDA_VISIBLE_DEVICES`` when that is set
    (a SLURM or shared node's allocation, e.g. ``2,3``), else GPU i."""
    from distributed import Nanny

    if isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 1:
        raise ValueError(f"n_gpus={n_gpus!r}: expected an integer >= 1")
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d.strip() for d in mask.split(",") if d.strip()] if mask is not None else [str(i) for i in range(n_gpus)]
    if n_gpus > len(visible):
        raise ValueError(f"n_gpus={n_gpus}: expected at most {len(visible)}, the GPUs in "
                         f"CUDA_VISIBLE_DEVICES={mask!r}")
    return {f"gpu-{i}": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1},
                                                   "env": {"CUDA_VISIBLE_DEVICES": visible[i], "OMP_NUM_THREADS": "1"}}}
            for i in range(n_gpus)}


#: dask config for the workers' nannies: do not set ``MALLOC_TRIM_THRESHOLD_`` in the worker
#: processes. distributed sets it by default (65536, to hand freed memory back to the OS); setting it
#: at all turns off glibc's dynamic mmap threshold, so every large activation tensor of an attack
#: step is a fresh mmap with page faults. Measured on the 2-core dev machine (ResNet-34 PGD cell,
#: 32 images at 128 px): 21.3 s in a worker with it, 14.1 s without, 12.0-13.4 s in-process.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def make_client(*, workers: int = 0, scheduler: str | None = None, device: str = "cpu"):
    """A ``distributed.Client``: to ``scheduler`` (an address) if given, else a local cluster —
    ``workers`` single-threaded worker processes on CPU, one worker per GPU on CUDA
    (workers started with :data:`WORKER_CONFIG`)."""
    import dask
    from distributed import Client, LocalCluster

    # set_as_default=False: the sweep leaves dask's global scheduler alone (xarray asks it for locks)
    if scheduler:
        return Client(scheduler, set_as_default=False)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with dask.config.set(WORKER_CONFIG):
        if device == "cuda":
            import torch
            from distributed import Scheduler, SpecCluster

            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if have == 0:
                raise ValueError("device='cuda': CUDA is not available on this machine; expected device='cpu'")
            n = workers or default_workers("cuda")
            if n > have:  # a worker past the last GPU would see none and fail every cell it gets
                raise ValueError(f"workers={n}: expected at most {have} (one worker per GPU; this machine has {have})")
            cluster = SpecCluster(workers=gpu_worker_specs(n),
                                  scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}})
        else:
            n = workers or default_workers("cpu")
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   env=env)
    return Client(cluster, set_as_default=False)


# ----------------------------------------------------------------------------- SLURM

#: what each text option of a SLURM job may hold: every value lands in a shell script (``#SBATCH`` lines
#: and the worker's command line), so anything else (a newline, ``;``, ``$``, a space) is refused
SLURM_PATTERNS = {
    "queue": (r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*", "a SLURM partition name (letters, digits, _ . -; several "
                                                      "separated by commas)"),
    "account": (r"[A-Za-z0-9_.-]+", "a SLURM account name (letters, digits, _ . -)"),
    "memory": (r"\d+(\.\d+)?\s?([kKMGTP]i?B?|B)?", "a size such as 64GB, 500MB or 1.5TiB"),
    "walltime": (r"\d+(:\d{2}){0,2}|\d+-\d{1,2}(:\d{2}){0,2}", "a SLURM time: minutes, HH:MM:SS or D-HH:MM:SS"),
    "python": (r"[A-Za-z0-9_./+-]+", "a path to a Python interpreter (no spaces or shell characters)"),
    "scheduler": (r"[a-z][a-z0-9+]*://[A-Za-z0-9_.:\[\]-]+", "a scheduler address such as tcp://host:8786"),
}
#: the scheduler address a dry run shows in place of the real one
SCHEDULER_PLACEHOLDER = "tcp://<scheduler-address>:8786"


def _slurm_text(name: str, value: str) -> str:
    """``value`` if it matches :data:`SLURM_PATTERNS` ``[name]`` whole, else a one-line ValueError naming it."""
    import re

    pattern, what = SLURM_PATTERNS[name]
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ValueError(f"{name}={value!r}: expected {what}")
    return value


def slurm_options(*, jobs: int = 1, gpus_per_job: int = 1, cores: int = 8, memory: str = "64GB",
                  walltime: str = "04:00:00", queue: str | None = None, account: str | None = None,
                  python: str | None = None, prologue: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` / ``SLURMJob`` for GPU jobs: one worker
    process per job, one thread, ``--gres=gpu:N`` and the ``GPU`` resource the cells ask for.

    Every value is checked before it reaches the job script (one-line ValueError naming it): the counts
    as integers in a range, the texts against :data:`SLURM_PATTERNS`, ``prologue`` lines on one line each."""
    from dask.utils import parse_bytes

    from ..core.params import check_int

    for name, v, hi in (("jobs", jobs, 10_000), ("gpus_per_job", gpus_per_job, 64), ("cores", cores, 1024)):
        check_int(v, name, 1, hi)
    _slurm_text("memory", memory)
    if parse_bytes(memory) <= 0:
        raise ValueError(f"memory={memory!r}: expected a size above 0")
    _slurm_text("walltime", walltime)
    for name, v in (("queue", queue), ("account", account), ("python", python)):
        if v is not None:
            _slurm_text(name, v)
    for line in prologue:
        if not isinstance(line, str) or not line.isprintable():
            raise ValueError(f"prologue line {line!r}: expected one line of shell")
    return dict(cores=1, processes=1, job_cpu=int(cores), memory=memory, walltime=walltime, queue=queue,
                account=account, python=python or "python", job_name="dfrobust-sweep",
                job_extra_directives=[f"--gres=gpu:{gpus_per_job}"],
                worker_extra_args=["--resources", f"GPU={gpus_per_job}"],
                nanny=False,  # the job is the worker: no nanny setting MALLOC_TRIM_THRESHOLD_ (WORKER_CONFIG)
                job_script_prologue=["export OMP_NUM_THREADS=1", *prologue])


def slurm_job_script(scheduler: str = SCHEDULER_PLACEHOLDER, **kw) -> str:
    """The SLURM job script each worker job would run, without starting a cluster (the dry run)."""
    from dask_jobqueue.slurm import SLURMJob

    if scheduler != SCHEDULER_PLACEHOLDER:
        _slurm_text("scheduler", scheduler)
    return SLURMJob(scheduler=scheduler, name="dfrobust-sweep-worker", **slurm_options(**kw)).job_script()


def slurm_client(**kw):
    """A client on a ``SLURMCluster`` scaled to ``jobs`` GPU jobs (needs SLURM's ``sbatch``)."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    jobs = kw.get("jobs", 1)
    cluster = SLURMCluster(**slurm_options(**kw), scheduler_options={"dashboard_address": ":0"})
    cluster.scale(jobs=jobs)
    return Client(cluster, set_as_default=False)


# ----------------------------------------------------------------------------- merge

def load_shards(cells: Sequence[Cell], out_dir: str | os.PathLike) -> list[xr.Dataset]:
    from ..core import results

    def load(cell: Cell) -> xr.Dataset | None:
        path = shard_path(cell, out_dir)
        try:
            return results.load(path) if shard_ok(path) else None
        except OSError:  # unreadable: counted as missing
            return None

    parts = [load(c) for c in cells]
    missing = [c.name for c, part in zip(cells, parts) if part is None]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(cells)} shards missing or unreadable in {out_dir} "
                                f"(e.g. {missing[0]}); run the sweep to compute them")
    return parts


_CELL_ATTRS = ("shard_format", "cell", "cell_key", "cell_seed", "resolved", "batch_size_used", "skipped",
               "cell_wall_s", "attack_time_s", "attack_kw", "seed")


def merge_shards(cells: Sequence[Cell], out_dir: str | os.PathLike) -> xr.Dataset:
    """The shards of ``cells`` as one records dataset with :func:`attack_records`' layout
    (dims model, attack, eps, sample; detectors, attacks and samples in plan order)."""
    parts = load_shards(cells, out_dir)
    models = list(dict.fromkeys(c.detector.name for c in cells))
    attacks = list(dict.fromkeys(c.attack for c in cells))
    shards = sorted({c.shard for c in cells})
    index = {(c.detector.name, c.attack, c.shard): p for c, p in zip(cells, parts)}
    grid = [[[index[(m, a, s)] for s in shards] for a in attacks] for m in models]
    merged = xr.combine_nested(grid, concat_dim=["model", "attack", "sample"], data_vars="minimal",
                               coords="minimal", compat="equals", join="exact", combine_attrs="override")
    merged = merged.transpose(*[d for d in ("model", "attack", "eps", "sample") if d in merged.dims], ...)
    for var in merged.variables.values():  # the first shard's on-disk encoding (e.g. its string width
        var.encoding = {}                   # 'meso4' -> 5 characters) would truncate longer names
    times: dict[str, float] = {}
    skipped: list = []
    for c, p in zip(cells, parts):
        k = f"{c.detector.name}/{c.attack}"
        times[k] = round(times.get(k, 0.0) + float(p.attrs.get("cell_wall_s", 0.0)), 3)
        skipped += [s for s in json.loads(p.attrs.get("skipped", "[]")) if s not in skipped]
    kw = {c.attack: json.loads(c.options) for c in cells if json.loads(c.options)}
    attrs = {k: v for k, v in merged.attrs.items() if k not in _CELL_ATTRS}
    attrs.update(seed=int(cells[0].seed), attack_kw=str(kw), attack_time_s=str(times),
                 cell_seeds="per cell, derived from (chapter, detector, attack, eps chunk, shard, seed)",
                 n_cells=len(cells), cells_wall_s=round(sum(times.values()), 3), skipped_images=json.dumps(skipped))
    merged.attrs = attrs
    return merged


def chapter_records(cells: Sequence[Cell], out_dir: str | os.PathLike,
                    finish: Callable[[xr.Dataset], xr.Dataset] | None = None, *, params: Mapping[str, Any],
                    profile: str, save_to: str | os.PathLike | None = None, **provenance: Any) -> xr.Dataset:
    """A chapter's records: the merged shards, ``finish`` ed by the chapter (e.g. chapter 03's
    :func:`dfrobust.experiments.robustness.sweep_records` adds the worst case), with provenance (saved
    when ``save_to`` is given), as the notebook writes them."""
    from ..core import results

    if finish is not None and not callable(finish):
        raise ValueError(f"finish={finish!r}: expected None or a callable records -> records (the chapter's)")
    t0 = time.perf_counter()
    rec = merge_shards(cells, out_dir)
    rec = finish(rec) if finish is not None else rec
    wall = float(rec.attrs["cells_wall_s"])
    rec.attrs.update(results.provenance(params, profile=profile, seed=int(cells[0].seed), device=rec.attrs["device"],
                                        wall_time_s=wall + time.perf_counter() - t0, **provenance))
    if save_to is not None:
        results.save(rec, save_to)
    return rec


def sweep_dir(profile: str, chapter: str) -> Path:
    """Where a profile's shards live: ``<data home>/cache/sweep/<profile>/<chapter>``."""
    from ..core.paths import cache_dir

    p = cache_dir() / "sweep" / profile / chapter
    p.mkdir(parents=True, exist_ok=True)
    return p


def describe_plan(cells: Sequence[Cell]) -> dict[str, Any]:
    """Counts of the grid (for the CLI and the bench)."""
    return {"cells": len(cells), "detectors": sorted({c.detector.name for c in cells}),
            "attacks": sorted({c.attack for c in cells}), "shards": len({c.shard for c in cells}),
            "samples": len({r for c in cells for r in c.rows}), "eps": len(cells[0].eps) if cells else 0}


def run_chapter(cells: Sequence[Cell], finish: Callable[[xr.Dataset], xr.Dataset] | None = None, *, profile: str,
                params: Mapping[str, Any], client=None, workers: int = 0,
                progress: Callable[[dict, int, int], None] | None = None, gpu: bool | None = None,
                save_to: str | os.PathLike | None = None, **provenance: Any) -> tuple[xr.Dataset, SweepReport]:
    """Run a chapter's missing cells (in this process, on ``workers`` local dask workers, or on
    ``client``) in its :func:`sweep_dir`, then :func:`chapter_records` with the chapter's ``finish``
    (saved to ``save_to``; ``gpu`` as in :func:`run_cells`): what a chapter and ``dfrobust sweep``
    both call. A failed cell is a one-line RuntimeError after the sweep (the finished shards stay for
    the next run)."""
    if not cells:
        raise ValueError("cells=[]: expected the cells of one chapter (plan_cells)")
    chapters = sorted({c.chapter for c in cells})
    if len(chapters) > 1:
        raise ValueError(f"cells of chapters {chapters}: expected the cells of one chapter")
    out = sweep_dir(profile, chapters[0])
    rep = run_cells(cells, out, client=client, workers=workers, progress=progress, gpu=gpu)
    if rep.failed:
        name, err = next(iter(rep.failed.items()))
        raise RuntimeError(f"{len(rep.failed)} of {rep.total} cells failed (e.g. {name}: {err}); their shards are "
                           "missing, run again to compute only those")
    return chapter_records(cells, out, finish, params=params, profile=profile, save_to=save_to, **provenance), rep
