"""``dfrobust`` command line. Subcommands mirror the pipeline: data → train → run/book.

The Makefile calls this CLI; the CLI calls the package. Errors in parameters are reported as
one line (exit 2) before any computation.
"""

from __future__ import annotations

import sys
import time
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .study import StudyError, declared_parameters, load_study, parse_override

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproducible study of deepfake-detector robustness (RA vs RR, XAI-guided attacks).")
data_app = typer.Typer(no_args_is_help=True, help="Generate the synthetic benchmark or prepare a real dataset.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)

PROFILE = typer.Option("default", "--profile", help="Study profile: quick, default or paper.")
PARAM = typer.Option(None, "-p", "--param", help="Override a parameter: -p key=value (repeatable).")


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _overrides(params: Optional[List[str]]) -> dict:
    return dict(parse_override(p) for p in params or [])


def _run_with_progress(profile: str, **kw):
    """run_study with a rich progress bar over the notebooks."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .runner import run_study

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("study", total=None)

        def advance(name: str, i: int, n: int) -> None:
            bar.update(task, total=n, completed=i, description=f"{profile}: {name}")

        return run_study(profile, log=bar.console.print, progress=advance, **kw)


@app.command()
def run(notebook: str = typer.Argument(..., help="Notebook name from notebooks/study.yml, e.g. 03_robustness."),
        profile: str = PROFILE, param: Optional[List[str]] = PARAM,
        force: bool = typer.Option(False, help="Execute even when nothing changed.")) -> None:
    """Execute one notebook headless (papermill) into book/generated/."""
    from .runner import NotebookFailed

    try:
        _run_with_progress(profile, only=[notebook], overrides=_overrides(param), force=force)
    except (StudyError, NotebookFailed) as exc:
        _fail(str(exc))


@app.command()
def book(profile: str = PROFILE, param: Optional[List[str]] = PARAM,
         force: bool = typer.Option(False, help="Re-execute every notebook."),
         build: bool = typer.Option(True, help="Build the HTML book after running the notebooks.")) -> None:
    """Run every notebook of the study with a profile, then build the HTML book."""
    from .runner import NotebookFailed, build_book

    t0 = time.perf_counter()
    try:
        results = _run_with_progress(profile, overrides=_overrides(param), force=force)
    except (StudyError, NotebookFailed) as exc:
        _fail(str(exc))
    ran = sum(r.executed for r in results)
    console.print(f"notebooks: {ran} executed, {len(results) - ran} unchanged ({time.perf_counter() - t0:.0f} s)")
    if build:
        try:
            index = build_book(log=console.print)
        except RuntimeError as exc:
            _fail(str(exc))
        console.print(f"book built in {time.perf_counter() - t0:.0f} s total")
        print(index)


@app.command()
def params(notebook: str = typer.Argument(..., help="Notebook name from notebooks/study.yml.")) -> None:
    """Show a notebook's parameters, their types, descriptions and per-profile values."""
    try:
        study = load_study()
        nb = study.notebook(notebook)
    except StudyError as exc:
        _fail(str(exc))
    table = Table(title=f"{nb.name} — {nb.title}")
    table.add_column("parameter")
    table.add_column("type")
    table.add_column("template default")
    for prof in study.profiles:
        table.add_column(prof)
    table.add_column("description")
    for name, info in declared_parameters(nb.template).items():
        row = [name, info.get("inferred_type_name", ""), str(info.get("default"))]
        row += [str(nb.params.get(p, {}).get(name, "")) if name != "profile" else p for p in study.profiles]
        row.append(info.get("help", ""))
        table.add_row(*row)
    Console().print(table)


@data_app.command("synth")
def data_synth(profile: str = PROFILE, seed: int = typer.Option(0, help="Generator seed.")) -> None:
    """Generate (or reuse) the synthetic benchmark of a profile; prints the manifest paths."""
    from .data import get_manifest

    try:
        load_study().check_profile(profile)
        for kind in ("images", "video_frames"):
            df = get_manifest(profile, kind, seed=seed)
            console.print(f"{kind}: {len(df)} rows, {df.attrs.get('meta', {}).get('manifest_path', '')}")
    except (StudyError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


@data_app.command("prepare")
def data_prepare(root: str = typer.Argument(..., help="Dataset root folder."),
                 layout: str = typer.Option("auto", help="ffpp, celebdf, uadfv, folder or auto."),
                 n_frames: int = typer.Option(16, help="Frames sampled evenly per video."),
                 size: int = typer.Option(256, help="Crop size in pixels."),
                 margin: float = typer.Option(1.3, help="Face box enlargement before cropping.")) -> None:
    """Prepare a real dataset (frames sampled evenly, faces detected and cropped) into a manifest."""
    from .data import prepare as prep

    try:
        path = prep.prepare(root, layout=layout, n_frames=n_frames, size=size, margin=margin)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    print(path)


@app.command()
def train(model: str = typer.Argument(..., help="meso4, mesoinception4, resnet34 or xception."),
          profile: str = PROFILE, seed: int = typer.Option(0, help="Training seed."),
          device: str = typer.Option("auto", help="auto, cpu or cuda.")) -> None:
    """Train (or load the cached checkpoint of) one detector on the profile's data."""
    from .data import get_manifest
    from .models import MODELS
    from .models.train import get_trained

    if model not in MODELS:
        _fail(f"model={model!r}: unknown; expected one of {', '.join(MODELS)}")
    try:
        load_study().check_profile(profile)
        td = get_trained(model, get_manifest(profile, "images", seed=seed), profile=profile, seed=seed, device=device)
    except (StudyError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    from .models.train import val_auc

    console.print(f"{model}: checkpoint {td.checkpoint} (trained in {td.train_time_s:.1f} s on {td.device}; "
                  f"validation AUC {val_auc(td):.3f})")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
