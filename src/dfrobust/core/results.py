"""Results store: tidy ``xarray.Dataset`` in netCDF (h5netcdf), with provenance, atomic writes.

Conventions every experiment follows:

* sweep axes (model, attack, eps, b, tool, k, ...) are *dimensions with coordinates*;
  per-sample records keep a ``sample`` dimension so every metric is a reduction;
* each data variable carries ``units`` and ``long_name`` attrs;
* dataset attrs carry provenance (see :func:`provenance`); nested values are JSON strings
  because netCDF attributes must be scalars, strings or 1-D arrays;
* files are written to a temporary name in the same folder and renamed into place, so a
  crash never leaves a half-written result that a later run would trust.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .. import __version__
from .paths import project_root, results_dir

ENGINE = "h5netcdf"


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


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` atomically (temporary file in the same folder, then rename).

    Under the study runner the file goes to the run's staging folder (:func:`staged`) and is
    moved to ``path`` when the notebook has succeeded. Returns ``path`` either way.
    """
    final = Path(path)
    path = staged(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs = _clean_attrs(ds.attrs)
    for name in list(ds.variables):
        ds[name].attrs = _clean_attrs(ds[name].attrs)
        if ds[name].dtype == object:  # strings: h5netcdf wants str, not mixed objects
            ds[name] = ds[name].astype(str)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine=ENGINE)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary readable files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a result fully into memory (the file is closed afterwards); one-line errors name the file."""
    path = Path(path)
    if staged(path).is_file():  # written earlier by the running notebook itself
        path = staged(path)
    if not path.is_file():
        raise FileNotFoundError(f"no result file at {path}; run the notebook that produces it first")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            return ds.load()
    except (OSError, ValueError) as exc:
        raise OSError(f"{path}: unreadable result file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                      "re-run the notebook that writes it (dfrobust run NOTEBOOK --force)") from None


def parameters(ds: xr.Dataset) -> dict[str, Any]:
    """The parameters recorded in a result's provenance."""
    return json.loads(ds.attrs.get("parameters", "{}"))
