"""Results store: tidy ``xarray.Dataset`` in netCDF (h5netcdf), with provenance, atomic writes.

Conventions every experiment follows:

* sweep axes (model, attack, eps, b, tool, k, ...) are *dimensions with coordinates*;
  per-sample records keep a ``sample`` dimension so every metric is a reduction;
* each data variable carries ``units`` and ``long_name`` attrs;
* dataset attrs carry provenance (see :func:`provenance`); nested values are JSON strings
  because netCDF attributes must be scalars, strings or 1-D arrays;
* files are made in memory, written to a temporary name in the same folder and renamed into
  place, so a crash never leaves a half-written result that a later run would trust, and a full
  disk is one plain ``OSError`` (HDF5 writing to a full disk reports it in destructors, or crashes);
* the bytes are reproducible: the same data and attributes give the same file (HDF5 object
  times are not recorded by h5netcdf); only the provenance attributes in :data:`VOLATILE`
  (when and how long) differ between two runs of the same computation
  (tests/test_faults.py checks both).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .. import __version__
from .paths import project_root, results_dir

ENGINE = "h5netcdf"

#: provenance attributes that differ between two runs of the same computation (everything else,
#: data and attributes, is byte-for-byte reproducible)
VOLATILE = ("created_utc", "wall_time_s")

#: beside the results, the runner records which notebook wrote each file (``{relative path:
#: {"notebook", "profile"}}``), so that an unreadable file names the command that rebuilds it
PRODUCERS = ".producers.json"


def git_commit() -> str:
    """Current git commit of the project (``+dirty`` when the tree has changes), or 'unknown'."""
    try:
        root = project_root()
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - provenance must never break a run
        return "unknown"


def provenance(params: Mapping[str, Any] | None = None, *, profile: str | None = None,
               seed: int | None = None, device: str | None = None,
               wall_time_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance attrs for a result: parameters, profile, seed, device, versions, commit, time."""
    import torch

    attrs: dict[str, Any] = {
        "parameters": json.dumps(dict(params or {}), sort_keys=True, default=str),
        "profile": profile or "",
        "seed": -1 if seed is None else int(seed),
        "device": device or "",
        "dfrobust_version": __version__,
        "torch_version": str(torch.__version__),
        "xarray_version": xr.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if wall_time_s is not None:
        attrs["wall_time_s"] = float(wall_time_s)
    for k, v in extra.items():
        attrs[k] = v if isinstance(v, (str, int, float, np.integer, np.floating)) else json.dumps(v, default=str)
    return attrs


def _clean_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, (bool, np.bool_)):
            v = int(v)
        elif isinstance(v, str):
            v = str(v)  # plain str: subclasses such as torch's TorchVersion do not serialise
        elif isinstance(v, (dict, list, tuple)) or v is None:
            v = json.dumps(v, default=str)
        out[k] = v
    return out


#: set by the study runner while a notebook runs: results are written into this staging folder and
#: moved into place only when the whole notebook succeeded (a failed run keeps the previous set)
STAGE_ENV = "DFROBUST_STAGE_DIR"


def staged(path: str | os.PathLike) -> Path:
    """Where ``path`` is written while a notebook runs under the runner (``path`` itself otherwise).

    A path under ``paths.results_dir()`` maps to the same relative path in ``$DFROBUST_STAGE_DIR``.
    """
    path = Path(path)
    stage = os.environ.get(STAGE_ENV)
    if not stage:
        return path
    root = results_dir().resolve()
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        return path
    return Path(stage) / rel


#: attribute naming what a file under the results folder is (``<profile>/<name>.nc``, written by :func:`save`,
#: checked by :func:`load`): a result copied over another one's name is refused, not read as that one
IDENTITY = "result"


def identity(path: str | os.PathLike) -> str | None:
    """``<profile>/<name>.nc`` for a file under the results folder, else None (no identity to check)."""
    try:
        return Path(path).resolve().relative_to(results_dir().resolve()).as_posix()
    except (OSError, ValueError):
        return None


def _write_error(exc: Exception, tmp: str | None) -> tuple[int | None, str]:
    """``(errno, cause in a few words, one line)`` of a failed write: the OS's (HDF5 puts its ``errno`` and
    ``error message`` inside the text of an OSError or RuntimeError, over several lines), else the error's
    text; never the temporary file's name."""
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())
    code = getattr(exc, "errno", None)
    if code is None and (m := re.search(r"errno = (\d+)", text)):
        code = int(m.group(1))
    if hdf5 := re.search(r"error message = '([^']*)'", text):
        reason = hdf5.group(1)
    else:
        reason = text if getattr(exc, "strerror", None) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return code, reason.replace(str(tmp), "the temporary file") if tmp else reason


def _in_memory(ds: xr.Dataset) -> memoryview:
    """The netCDF bytes of ``ds``. Under a dask.distributed worker (the sweep's cells) xarray would lock the
    in-memory target with a distributed lock, which refuses a non-file key: the local scheduler's lock is
    the right one for a write that never leaves this process."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        return ds.to_netcdf(engine=ENGINE)


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` atomically (temporary file in the same folder, then rename).

    Under the study runner the file goes to the run's staging folder (:func:`staged`) and is
    moved to ``path`` when the notebook has succeeded. Returns ``path`` either way. A file under the
    results folder carries its identity (:data:`IDENTITY`). Any error while writing (disk full, HDF5's
    own errors) is one ``OSError`` line naming ``path`` and the cause; the temporary file is removed.
    """
    final = Path(path)
    path = staged(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs = _clean_attrs(ds.attrs)
    ds.attrs.pop(IDENTITY, None)  # a loaded result saved under another name is that other file
    if (ident := identity(final)) is not None:
        ds.attrs[IDENTITY] = ident
    for name in list(ds.variables):
        ds[name].attrs = _clean_attrs(ds[name].attrs)
        if ds[name].dtype == object:  # strings: h5netcdf wants str, not mixed objects
            ds[name] = ds[name].astype(str)
    tmp = None
    try:
        # into memory first: HDF5 writing to a full disk reports it late (in its object destructors, as
        # "Exception ignored" tracebacks) and can crash the process; a plain write fails with ENOSPC
        data = _in_memory(ds)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary readable files
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - disk full, permissions, HDF5's RuntimeErrors: one line naming the file
        code, reason = _write_error(exc, tmp)
        msg = f"{final}: cannot write the result ({reason}); nothing was written there"
        raise (OSError(msg) if code is None else OSError(code, msg)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return final


def rebuild_command(path: str | os.PathLike) -> str:
    """The command that writes ``path`` again: the notebook recorded by the runner (:data:`PRODUCERS`),
    ``dfrobust train`` for a training record, else the generic notebook command."""
    from .paths import checkpoints_dir

    path = Path(path).resolve()
    try:
        root = results_dir().resolve()
        rel = path.relative_to(root)
    except (OSError, ValueError):
        rel = None
    if rel is not None:
        try:
            who = json.loads((root / PRODUCERS).read_text()).get(rel.as_posix())
        except (OSError, ValueError):
            who = None
        if who:
            return f"dfrobust run {who['notebook']} --profile {who['profile']} --force"
        profile = rel.parts[0] if len(rel.parts) > 1 else "PROFILE"
        return f"dfrobust run NOTEBOOK --profile {profile} --force (the notebook that writes {rel.name})"
    try:
        in_ckpt = path.parent == checkpoints_dir().resolve()
    except OSError:
        in_ckpt = False
    if in_ckpt and path.stem.count("-") >= 2:  # <model>-<profile>-<key>: delete it, training rebuilds it
        model, profile = path.stem.split("-")[:2]
        return f"rm {path} {path.with_suffix('.pt')} && dfrobust train {model} --profile {profile}"
    return "the command that wrote it"


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a result fully into memory (the file is closed afterwards); one-line errors name the file.

    A file under the results folder must carry its own identity (:data:`IDENTITY`, written by :func:`save`):
    another result copied over its name (``video_records.nc`` as ``rr_records.nc``), or one copied from
    another profile's folder, is refused in one line naming the file and the command that rebuilds it.
    """
    want = identity(path)  # what the file at ``path`` must be (checked below)
    path = Path(path)
    if staged(path).is_file():  # written earlier by the running notebook itself
        path = staged(path)
    if not path.is_file():
        raise FileNotFoundError(f"no result file at {path}; run the notebook that produces it first")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            ds = ds.load()
    except (OSError, ValueError, KeyError, IndexError, TypeError, RuntimeError) as exc:  # h5py/netCDF errors
        raise OSError(f"{path}: unreadable result file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                      f"rebuild it with: {rebuild_command(path)}") from None
    have = ds.attrs.get(IDENTITY)
    if want is not None and have != want:
        what = f"holds {have}" if have else "carries no identity (written before results were labelled, or not by dfrobust)"
        raise OSError(f"{path}: this file {what}, not {want}; rebuild it with: {rebuild_command(path)}")
    return ds


def parameters(ds: xr.Dataset) -> dict[str, Any]:
    """The parameters recorded in a result's provenance."""
    return json.loads(ds.attrs.get("parameters", "{}"))


class ChapterResult:
    """What a chapter function returns (``dfrobust.experiments.<chapter>.run``): everything its page shows.

    ``values``: scalars and sentences the prose quotes; ``tables``: pandas DataFrames; ``figures``:
    matplotlib figures (each with a caption on the page); ``decide``: the chapter's verdict rows (claim,
    verdict, interval, n, rule) or None; ``records``: the per-sample ``xarray.Dataset`` the chapter wrote,
    or None. The notebook narrates and calls ``dfrobust.study.pages.glue_result`` once, which glues every
    entry under the chapter's prefix (``<prefix>_<name>``); names are unique across the three mappings.
    """

    def __init__(self, values: Mapping[str, Any] | None = None, tables: Mapping[str, Any] | None = None,
                 figures: Mapping[str, Any] | None = None, decide=None, records: xr.Dataset | None = None):
        self.values, self.tables, self.figures = dict(values or {}), dict(tables or {}), dict(figures or {})
        self.decide, self.records = decide, records
        self._check_names()

    def _check_names(self) -> None:
        seen: set[str] = set()
        for group in (self.values, self.tables, self.figures):
            for name in group:
                if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in seen:
                    raise ValueError(f"result entry {name!r}: expected a unique lower-case identifier")
                seen.add(name)

    def add(self, **values: Any) -> "ChapterResult":
        """Add quoted values (returns self); a name already used is refused."""
        for name in values:
            if name in self.values or name in self.tables or name in self.figures:
                raise ValueError(f"result entry {name!r}: expected a unique lower-case identifier")
        self.values.update(values)
        self._check_names()
        return self

    def __repr__(self) -> str:
        return (f"ChapterResult({len(self.values)} values, tables {sorted(self.tables)}, figures "
                f"{sorted(self.figures)}, decide {'none' if self.decide is None else len(self.decide)} rows)")
