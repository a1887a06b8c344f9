"""Run the study: papermill executes each notebook template headless, then Jupyter Book builds.

A notebook is skipped when its *run key* — a hash of the template, its parameters and the
helper package (version and source) — matches the stamp of the last successful run, so a
second ``make book`` re-executes nothing. Every notebook's parameters are validated before
the first one runs. A failing cell stops the run with that cell's error in one line; the
partly executed notebook is kept beside the output for inspection.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import __version__
from ..core.paths import generated_book_dir, project_root
from ..core.profiles import load_spec
from .spec import Study, StudyError, declared_parameters, load_study, params_json, resolve_params

KERNEL = "dfrobust"


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook, the cell and the error."""


@dataclass
class RunResult:
    name: str
    output: Path
    executed: bool
    wall_s: float
    params: dict[str, Any]


def package_files() -> list[Path]:
    """Every source file of the package (all homes, not only ``study/``), sorted."""
    return sorted(Path(__file__).resolve().parents[1].rglob("*.py"))


def package_fingerprint() -> str:
    """Version plus a hash of the whole package source, so a code change re-executes the notebooks."""
    src = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(__version__.encode())
    for p in package_files():
        h.update(p.relative_to(src).as_posix().encode())
        h.update(p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def run_key(template: Path, params: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(template.read_bytes())
    h.update(params_json(params).encode())
    h.update(params_json(load_spec().get("settings") or {}).encode())  # shared sizes (data, training)
    h.update(package_fingerprint().encode())
    return h.hexdigest()


def _kernel_name() -> str:
    from jupyter_client.kernelspec import find_kernel_specs

    specs = find_kernel_specs()
    if KERNEL in specs:
        return KERNEL
    print(f"note: Jupyter kernel {KERNEL!r} not found; using 'python3' (make install registers it)", file=sys.stderr)
    return "python3"


def _stamp_path(output: Path) -> Path:
    return output.with_suffix(".run.json")


def _failure_message(name: str, exc: Exception) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = str(getattr(exc, "evalue", exc)).strip().splitlines()
    cell = getattr(exc, "exec_count", None)
    where = f" in cell [{cell}]" if cell is not None else ""
    return f"notebook {name} failed{where}: {ename}: {evalue[-1] if evalue else ''}"


def run_notebook(study: Study, name: str, profile: str, overrides: Mapping[str, Any] | None = None, *,
                 force: bool = False, out_dir: Path | None = None, log: Callable[[str], None] = print) -> RunResult:
    """Execute one notebook of the study with the profile's parameters (plus overrides)."""
    nb = study.notebook(name)
    params = resolve_params(study, nb, profile, overrides)
    return _execute(nb.name, nb.template, params, force=force, out_dir=out_dir, log=log)


def _execute(name: str, template: Path, params: dict[str, Any], *, force: bool, out_dir: Path | None,
             log: Callable[[str], None]) -> RunResult:
    import papermill

    out_dir = out_dir or generated_book_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.ipynb"
    stamp = _stamp_path(output)
    key = run_key(template, params)
    if not force and output.is_file() and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("key") == key:
                log(f"[skip] {name}: unchanged (template, parameters and package)")
                return RunResult(name, output, False, 0.0, params)
        except json.JSONDecodeError:
            pass
    log(f"[run ] {name} with {params_json(params)}")
    stamp.unlink(missing_ok=True)
    partial = out_dir / f"{name}.partial.ipynb"
    t0 = time.perf_counter()
    env_before = os.environ.get("DFROBUST_HOME")
    os.environ["DFROBUST_HOME"] = str(project_root())  # the kernel inherits it: notebooks find the project
    try:
        papermill.execute_notebook(str(template), str(partial), parameters=params, kernel_name=_kernel_name(),
                                   cwd=str(project_root()), progress_bar=False, log_output=False)
    except Exception as exc:  # papermill.PapermillExecutionError and kernel failures
        raise NotebookFailed(_failure_message(name, exc) + f" (executed copy: {partial})") from exc
    finally:
        if env_before is None:
            os.environ.pop("DFROBUST_HOME", None)
        else:
            os.environ["DFROBUST_HOME"] = env_before
    os.replace(partial, output)
    wall = time.perf_counter() - t0
    stamp.write_text(json.dumps({"key": key, "params": params, "template": str(template),
                                 "package": package_fingerprint(), "wall_s": round(wall, 2),
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
    log(f"[done] {name} in {wall:.1f} s")
    return RunResult(name, output, True, wall, params)


def run_study(profile: str, *, only: list[str] | None = None, overrides: Mapping[str, Any] | None = None,
              force: bool = False, study: Study | None = None, out_dir: Path | None = None,
              log: Callable[[str], None] = print,
              progress: Callable[[str, int, int], None] | None = None) -> list[RunResult]:
    """Validate every notebook's parameters, then execute them in book order.

    ``progress(name, i, n)`` is called before notebook ``i`` of ``n`` (and with ``i == n`` at the end).
    """
    study = study or load_study()
    study.check_profile(profile)
    names = only or [nb.name for nb in study.notebooks]
    overrides = dict(overrides or {})
    plan, accepted = [], {}
    for name in names:  # validate everything before running anything
        nb = study.notebook(name)
        declared = declared_parameters(nb.template)
        accepted.update(dict.fromkeys(declared))
        # one notebook: every override is its own (unknown names are reported by resolve_params);
        # several: each takes the overrides it declares
        mine = overrides if len(names) == 1 else {k: v for k, v in overrides.items() if k in declared}
        plan.append((nb, resolve_params(study, nb, profile, mine)))
    unknown = [k for k in overrides if k not in accepted]
    if unknown:
        raise StudyError(f"parameter {unknown[0]!r}: no notebook of this run declares it; "
                         f"expected one of {', '.join(accepted)}")
    results = []
    for i, (nb, params) in enumerate(plan):
        if progress:
            progress(nb.name, i, len(plan))
        results.append(_execute(nb.name, nb.template, params, force=force, out_dir=out_dir, log=log))
    if progress:
        progress("done", len(plan), len(plan))
    return results


def build_book(root: Path | None = None, *, log: Callable[[str], None] = print) -> Path:
    """``jupyter-book build`` with warnings as errors; returns the path of index.html."""
    root = root or project_root()
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(root), "-W", "-n", "--keep-going"]
    log("[book] " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n{tail}")
    index = root / "_build" / "html" / "index.html"
    if not index.is_file():
        raise RuntimeError(f"jupyter-book build finished but {index} is missing")
    return index


__all__ = ["NotebookFailed", "RunResult", "StudyError", "build_book", "package_fingerprint", "run_notebook",
           "run_study"]
