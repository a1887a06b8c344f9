"""Run the study: papermill executes each notebook template headless, then Jupyter Book builds.

A notebook is skipped when its *run key* — a hash of the template, its parameters and the
helper package (version and source) — matches the stamp of the last successful run, so a
second ``make book`` re-executes nothing. The stamp also holds what the run read (:func:`data_context`):
the data home and root, the synthetic data sets and the stamps of the chapters it reads (``reads:``
in ``study.yml``); a change to any of them re-runs it. Every notebook's parameters are validated before
the first one runs: names and types (the spec), the data home and data root, and the chapter's
own ``check_params`` (:func:`preflight`). Results are staged per run (``.stage-<notebook>-<pid>-*``
under the results folder) and committed only on success; the stage of a run whose process is
gone (killed) is removed by the next run (:func:`clean_stale_stages`). A failing cell stops the run with that cell's error in one line; the
partly executed notebook is kept beside the output for inspection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .. import __version__
from ..core.paths import (data_home, file_sha256, generated_book_dir, project_root, real_data_root, results_dir,
                          user_path)
from ..core.results import PRODUCERS, STAGE_ENV
from ..core.profiles import ENV_DATA_ROOT, load_spec
from .pages import present_chapter
from .spec import Study, StudyError, declared_parameters, load_study, params_json, resolve_params, toc_text

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
    params = check_data_context(resolve_params(study, nb, profile, overrides), where=f" (notebook {nb.name})")
    preflight(nb, params)
    return _execute(nb.name, nb.template, params, force=force, out_dir=out_dir, log=log, reads=nb.reads)


def synthetic_fingerprints(params: Mapping[str, Any]) -> dict[str, str]:
    """A content key of each synthetic data set the run could read: ``{<set>/<part>: hash}``.

    ``<set>`` is a folder of ``paths.synth_dir()`` made for the run's profile (and seed, when the run
    has one); ``<part>`` its ``images``, ``videos`` or ``video_frames``. The hash covers every file's
    relative path, size and mtime (ns) and the bytes of the small files that say what the images are
    (``*.csv``, ``*.json``: the manifests and labels), so an edited manifest or a replaced image changes it.
    """
    from ..core.paths import synth_dir

    profile, seed = params.get("profile"), params.get("seed")
    if not profile:
        return {}
    root = synth_dir()
    pattern = f"{profile}-s{int(seed)}-*" if isinstance(seed, int) and not isinstance(seed, bool) else f"{profile}-s*"
    out = {}
    for part in sorted(p for p in root.glob(f"{pattern}/*") if p.is_dir()):
        h = hashlib.sha256()
        for f in sorted(part.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(part).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
                if f.suffix in (".csv", ".json"):
                    h.update(f.read_bytes())
        out[part.relative_to(root).as_posix()] = h.hexdigest()[:16]
    return out


def upstream_stamps(upstream: Sequence[str], out_dir: Path) -> dict[str, str]:
    """``{chapter: hash of its run stamp}`` for the chapters a notebook reads ("absent" when one never
    ran): a chapter that re-ran (new stamp: new key, outputs, timings) changes it."""
    out = {}
    for up in upstream:
        stamp = _stamp_path(out_dir / f"{up}.ipynb")
        out[up] = file_sha256(stamp)[:16] if stamp.is_file() else "absent"
    return out


def data_context(params: Mapping[str, Any], upstream: Sequence[str] = (), out_dir: Path | None = None) -> dict[str, Any]:
    """What a run read besides its parameters: the data home, the data root and a fingerprint of the root,
    the synthetic data sets of its profile (:func:`synthetic_fingerprints`) and the stamps of the chapters
    it reads (:func:`upstream_stamps`; ``reads:`` in the study spec, ``NotebookSpec.reads``).

    The root fingerprint hashes the root's file listing (relative paths, sizes, mtimes), so adding,
    removing or replacing a file of a real dataset re-executes the notebooks that read it.
    """
    root = real_data_root(params.get("data_root") or None)
    h = hashlib.sha256()
    if root is not None and root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(root).as_posix()}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return {"data_home": str(data_home()), "data_root": str(root or ""), "data_fingerprint": h.hexdigest()[:16],
            "synthetic": synthetic_fingerprints(params),
            "upstream": upstream_stamps(upstream, out_dir or generated_book_dir())}


def _why_rerun(stamp: Path, output: Path, key: str, context: Mapping[str, Any]) -> str:
    """Empty when the cached run can be trusted, else the reason it cannot (for the log).

    Synthetic data sets: each one the stamp recorded (those present when the run ended) must be
    unchanged; a set made later (by another chapter) is not one this run read.
    """
    if not output.is_file() or not stamp.is_file():
        return "no previous run"
    try:
        info = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return "run stamp unreadable"
    if info.get("key") != key:
        return "template, parameters, settings or package changed"
    was = info.get("context") or {}
    for k, v in context.items():
        if k == "synthetic":
            if not isinstance(was.get(k), dict):
                return "synthetic data not recorded by the previous run"
            for part, fp in was[k].items():
                if part not in v:
                    return f"synthetic data {part} is gone"
                if v[part] != fp:
                    return f"synthetic data {part} changed since the run"
        elif k == "upstream":
            for up, fp in v.items():
                if (was.get(k) or {}).get(up) != fp:
                    return f"{up} re-ran since this run (this notebook reads its results or stamp)"
        elif was.get(k) != v:
            return f"{k} changed ({was.get(k)!r} -> {v!r})"
    for out in info.get("outputs", []):
        p = Path(out["path"])
        if not p.is_file():
            return f"output {p.name} is missing"
        if file_sha256(p) != out["sha256"]:
            return f"output {p.name} changed since the run"
    try:
        import nbformat

        nbformat.read(str(output), as_version=4)
    except Exception:  # truncated or corrupt executed notebook
        return f"executed notebook {output.name} is unreadable"
    return ""


def _commit_stage(stage: Path, name: str = "", profile: str = "") -> list[dict[str, str]]:
    """Move every result the notebook staged into place; returns them with their hashes.

    Each file's producer (notebook, profile) is recorded in ``results/.producers.json`` so that an
    unreadable result names the command that rebuilds it (:func:`dfrobust.core.results.rebuild_command`).
    """
    root = results_dir()
    outputs = []
    for p in sorted(stage.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            dest = root / p.relative_to(stage)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            outputs.append({"path": str(dest), "sha256": file_sha256(dest)})
    shutil.rmtree(stage, ignore_errors=True)
    if outputs and name:
        index = root / PRODUCERS
        try:
            known = json.loads(index.read_text())
        except (OSError, ValueError):
            known = {}
        for o in outputs:
            known[Path(o["path"]).relative_to(root).as_posix()] = {"notebook": name, "profile": profile}
        fd, tmp = tempfile.mkstemp(prefix=f"{PRODUCERS}.", suffix=".tmp", dir=root)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(known, indent=1, sort_keys=True))
            os.replace(tmp, index)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return outputs


_STAGE = ".stage-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_stages(root: Path | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """Remove the staging folders of runs whose process is gone (killed mid-run); returns them.

    A staging folder is ``.stage-<notebook>-<pid>-<random>``; a folder without a readable pid is
    left alone (it is never read: each run reads only its own stage).
    """
    root = root or results_dir()
    removed = []
    for p in sorted(root.glob(_STAGE + "*")):
        parts = p.name[len(_STAGE):].rsplit("-", 2)
        if not p.is_dir() or len(parts) != 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log(f"[clean] removed the staging folder {p.name} of a run that did not finish (pid {pid} is gone)")
    return removed


#: chapters whose ``check_params`` lives outside ``experiments`` (the appendix measures the study itself)
CHECK_HOMES = {"performance": "dfrobust.study.perf"}


def chapter_check(name: str):
    """The chapter's ``check_params`` (``experiments.<stem>`` of notebook ``NN_<stem>``, or the module
    :data:`CHECK_HOMES` names for the stem), or None."""
    import importlib

    stem = name.split("_", 1)[1] if "_" in name and name.split("_", 1)[0].isdigit() else None
    if not stem or not stem.isidentifier():
        return None
    home = CHECK_HOMES.get(stem, f"dfrobust.experiments.{stem}")
    try:
        mod = importlib.import_module(home)
    except ModuleNotFoundError as exc:
        if exc.name != home:
            raise  # the module exists but a dependency is missing: say so
        return None
    return getattr(mod, "check_params", None)


def check_arguments(nb, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The keyword arguments of the chapter's ``check_params`` for a run with ``params``: the run's
    values, else the template's defaults. None when the chapter has no check, or the check needs
    something only the notebook computes (or a default that is not a literal)."""
    import ast
    import inspect

    check = chapter_check(nb.name)
    if check is None:
        return None
    declared = declared_parameters(nb.template)
    kwargs = {}
    for pname, p in inspect.signature(check).parameters.items():
        if pname in params:
            kwargs[pname] = params[pname]
        elif pname in declared:
            try:
                kwargs[pname] = ast.literal_eval(str(declared[pname].get("default")))
            except (ValueError, SyntaxError):
                return None
        elif p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            return None  # needs something only the notebook computes
    return kwargs


def preflight(nb, params: Mapping[str, Any]) -> None:
    """Run the chapter's own validation call before anything runs, so a bad value in chapter 05 stops
    ``dfrobust book`` before chapter 01 starts. Values the run does not set come from the template's
    defaults; a check whose arguments the template does not declare is left to the notebook."""
    check = chapter_check(nb.name)
    kwargs = check_arguments(nb, params) if check is not None else None
    if kwargs is None:
        return
    try:
        check(**kwargs)
    except (ValueError, OSError) as exc:
        raise StudyError(f"{str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__} "
                         f"(notebook {nb.name}, profile {params.get('profile', '')})") from None


#: path parameters besides ``data_root`` that a run resolves against the folder where the command was typed
USER_PATHS = ("gpu_report", "weights")


def check_data_context(params: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """One-line errors, before anything runs, for a data home that is a file and a data root that is not a
    folder (an unknown ``~user`` and a symlink loop included). Returns ``params`` with ``data_root`` made
    absolute: a relative root is taken from the current folder, where the command was typed (the kernel
    runs in the project root, so it gets the absolute path)."""
    data_home()  # NotADirectoryError naming $DFROBUST_DATA_HOME when it is a file
    try:  # other path parameters: taken from the current folder too, like data_root
        params = {**params, **{k: str(user_path(params[k], k)) for k in USER_PATHS if params.get(k)}}
    except ValueError as exc:
        raise StudyError(f"{exc}{where}") from None
    explicit = params.get("data_root") or None
    env = os.environ.get("DFROBUST_DATA_ROOT") if params.get("profile") in ENV_DATA_ROOT else None
    if not (explicit or env):
        return dict(params)
    try:
        root = real_data_root(explicit or env)
    except ValueError as exc:
        raise StudyError(f"{exc}{where}") from None
    if not root.is_dir():
        what = f"data_root={explicit!r}" if explicit else f"$DFROBUST_DATA_ROOT={env!r}"
        state = "is a file" if root.exists() else "does not exist"
        raise StudyError(f"{what}{where}: {root} {state}; expected the folder of a real dataset")
    return {**params, "data_root": str(root)} if explicit else dict(params)


def notices(notebook: Path) -> list[str]:
    """Lines a notebook printed that the person running it must see: NOTICE/WARNING lines and stderr."""
    try:
        import nbformat

        nb = nbformat.read(str(notebook), as_version=4)
    except Exception:
        return []
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") != "stream":
                continue
            for line in str(o.get("text", "")).splitlines():
                line = line.strip()
                if line and (o.get("name") == "stderr" or line.startswith(("NOTICE", "WARNING"))):
                    out.append(line)
    return out


#: ``on_cell(name, done, total, elapsed_s, previous_s)``: after each code cell of a running notebook (and with
#: ``done == 0`` when the kernel is up); ``previous_s`` is the last run's time (its stamp), or None
CellProgress = Callable[[str, int, int, float, "float | None"], None]


def previous_wall(output: Path) -> float | None:
    """How long the last successful run of the notebook at ``output`` took (its stamp's ``wall_s``), or None."""
    try:
        wall = json.loads(_stamp_path(output).read_text()).get("wall_s")
    except (OSError, ValueError, AttributeError):
        return None
    return float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None


def _cell_hooks(name: str, t0: float, previous: float | None, on_cell: CellProgress) -> dict[str, Callable]:
    """nbclient's ``on_notebook_start`` / ``on_cell_executed`` hooks (papermill passes them on) calling ``on_cell``."""
    state = {"done": 0, "total": 0}

    def start(notebook, **_) -> None:
        state["total"] = sum(c.cell_type == "code" and bool(c.source.strip()) for c in notebook.cells)
        on_cell(name, 0, state["total"], time.perf_counter() - t0, previous)

    def executed(**_) -> None:
        state["done"] += 1
        on_cell(name, state["done"], state["total"], time.perf_counter() - t0, previous)

    return {"on_notebook_start": start, "on_cell_executed": executed}


def kernel_log_path(output: Path) -> Path:
    """Where the kernel's own stdout and stderr go (beside the executed notebook): dask's shutdown messages,
    the kernel's warnings. Kept out of the terminal; a failed run names the file."""
    return output.with_suffix(".kernel.log")


def _logged_kernel_manager(stream):
    """A kernel manager whose kernel (and the processes it starts, dask's workers) write to ``stream``."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            return await super().start_kernel(**{**kw, "stdout": stream, "stderr": stream})

    return LoggedKernelManager


def _execute(name: str, template: Path, params: dict[str, Any], *, force: bool, out_dir: Path | None,
             log: Callable[[str], None], reads: Sequence[str] = (), on_cell: CellProgress | None = None) -> RunResult:
    import papermill

    out_dir = out_dir or generated_book_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.ipynb"
    stamp = _stamp_path(output)
    key = run_key(template, params)
    context = data_context(params, reads, out_dir)
    why = "forced" if force else _why_rerun(stamp, output, key, context)
    if not why:
        log(f"[skip] {name}: unchanged (template, parameters, settings, package, data and outputs verified)")
        return RunResult(name, output, False, 0.0, params)
    log(f"[run ] {name} ({why}) with {params_json(params)}")
    partial = out_dir / f"{name}.partial.ipynb"
    # paths in the environment are the user's, relative to where the command was typed; the kernel runs in
    # the project root, so it gets them absolute
    kernel_env = {}
    if os.environ.get("DFROBUST_DATA_HOME"):
        kernel_env["DFROBUST_DATA_HOME"] = str(data_home())
    from ..models.published import WEIGHTS_ENV, weights_dir

    if os.environ.get(WEIGHTS_ENV):
        kernel_env[WEIGHTS_ENV] = str(weights_dir())
    if os.environ.get("DFROBUST_DATA_ROOT") and params.get("profile") in ENV_DATA_ROOT:
        kernel_env["DFROBUST_DATA_ROOT"] = str(real_data_root())
    clean_stale_stages(log=log)
    stage = Path(tempfile.mkdtemp(prefix=f"{_STAGE}{name}-{os.getpid()}-", dir=results_dir()))
    t0 = time.perf_counter()
    hooks = _cell_hooks(name, t0, previous_wall(output), on_cell) if on_cell else {}
    saved = {k: os.environ.get(k) for k in ("DFROBUST_HOME", STAGE_ENV, *kernel_env)}
    os.environ.update(kernel_env)
    os.environ["DFROBUST_HOME"] = str(project_root())  # the kernel inherits it: notebooks find the project
    os.environ[STAGE_ENV] = str(stage)                  # results go here until the notebook succeeded
    kernel_log = kernel_log_path(output)
    try:
        with open(kernel_log, "w") as stream:
            papermill.execute_notebook(str(template), str(partial), parameters=params, kernel_name=_kernel_name(),
                                       cwd=str(project_root()), progress_bar=False, log_output=False,
                                       kernel_manager_class=_logged_kernel_manager(stream), **hooks)
    except Exception as exc:  # papermill.PapermillExecutionError and kernel failures
        shutil.rmtree(stage, ignore_errors=True)
        for line in notices(partial):
            log(f"[note] {name}: {line}")
        kept = " (the previous results and page are kept)" if output.is_file() else ""
        raise NotebookFailed(_failure_message(name, exc) + f" (executed copy: {partial}; kernel output: "
                             f"{kernel_log}){kept}") from exc
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    stamp.unlink(missing_ok=True)
    outputs = _commit_stage(stage, name, str(params.get("profile", "")))
    present_chapter(partial, name, template, params, results=[Path(o["path"]) for o in outputs])
    os.replace(partial, output)
    for line in notices(output):
        log(f"[note] {name}: {line}")
    wall = time.perf_counter() - t0
    context = data_context(params, reads, out_dir)  # after the run: the data it generated and read
    stamp.write_text(json.dumps({"key": key, "params": params, "template": str(template),
                                 "package": package_fingerprint(), "context": context, "outputs": outputs,
                                 "wall_s": round(wall, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                                indent=1))
    log(f"[done] {name} in {wall:.1f} s")
    return RunResult(name, output, True, wall, params)


@contextlib.contextmanager
def study_lock(profile: str, log: Callable[[str], None] = print):
    """One run per data home and profile at a time: a second run waits for the first, saying so."""
    import fcntl

    home = data_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / f".lock-{profile}"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            log(f"[wait] another run of profile {profile!r} holds {path} ({f.read().strip() or 'pid ?'}); waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def plan_study(profile: str, *, only: list[str] | None = None, overrides: Mapping[str, Any] | None = None,
               study: Study | None = None) -> list[tuple[Any, dict[str, Any]]]:
    """Validate everything a run needs, touching nothing: ``[(notebook spec, parameters)]`` in book order.

    Names, types, ``-p profile``, the data home and data root, and each chapter's ``check_params``;
    the first problem is a one-line :class:`StudyError` (or ``NotADirectoryError`` for the data home).
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
        params = check_data_context(resolve_params(study, nb, profile, mine), where=f" (notebook {nb.name})")
        plan.append((nb, params))
    unknown = [k for k in overrides if k not in accepted]
    if unknown:
        raise StudyError(f"parameter {unknown[0]!r}: no notebook of this run declares it; "
                         f"expected one of {', '.join(accepted)}")
    for nb, params in plan:
        preflight(nb, params)
    return plan


def run_study(profile: str, *, only: list[str] | None = None, overrides: Mapping[str, Any] | None = None,
              force: bool = False, study: Study | None = None, out_dir: Path | None = None,
              log: Callable[[str], None] = print,
              progress: Callable[[str, int, int], None] | None = None,
              on_cell: CellProgress | None = None) -> list[RunResult]:
    """Validate every notebook's parameters (:func:`plan_study`), then execute them in book order.

    ``progress(name, i, n)`` is called before notebook ``i`` of ``n`` (and with ``i == n`` at the end);
    ``on_cell`` after each code cell of a running notebook (:data:`CellProgress`).
    """
    plan = plan_study(profile, only=only, overrides=overrides, study=study)
    results = []
    with study_lock(profile, log):
        for i, (nb, params) in enumerate(plan):
            if progress:
                progress(nb.name, i, len(plan))
            results.append(_execute(nb.name, nb.template, params, force=force, out_dir=out_dir, log=log,
                                    reads=nb.reads, on_cell=on_cell))
    if progress:
        progress("done", len(plan), len(plan))
    return results


def write_toc(root: Path | None = None, study: Study | None = None, *, write: bool = True) -> bool:
    """Write ``<root>/_toc.yml`` from the study spec (:func:`~dfrobust.study.spec.toc_text`) where it differs
    (``write=False``: only compare); True when it differed."""
    path = (root or project_root()) / "_toc.yml"
    text = toc_text(study or load_study())
    if path.is_file() and path.read_text() == text:
        return False
    if write:
        path.write_text(text)
    return True


def build_book(root: Path | None = None, *, study: Study | None = None, log: Callable[[str], None] = print) -> Path:
    """``jupyter-book build`` with warnings as errors, after writing ``_toc.yml`` from the study spec
    (:func:`write_toc`); returns the path of index.html."""
    root = root or project_root()
    if write_toc(root, study):
        log("[toc ] _toc.yml written from notebooks/study.yml")
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


__all__ = ["NotebookFailed", "RunResult", "StudyError", "build_book", "clean_stale_stages", "package_fingerprint",
           "plan_study", "run_notebook", "run_study", "write_toc"]
