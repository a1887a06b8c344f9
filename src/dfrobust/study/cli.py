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

from .spec import StudyError, declared_parameters, load_study, parse_override

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproducible study of deepfake-detector robustness (RA vs RR, XAI-guided attacks).")
data_app = typer.Typer(no_args_is_help=True, help="Generate the synthetic benchmark or prepare a real dataset.")
app.add_typer(data_app, name="data")
app.command("sweep")(__import__("dfrobust.study.sweep_cli", fromlist=["sweep"]).sweep)  # chapter 03 as dask cells
console = Console(stderr=True)

PROFILE = typer.Option("default", "--profile", help="Study profile: quick, default or paper.")
PARAM = typer.Option(None, "-p", "--param", help="Override a parameter: -p key=value (repeatable).")


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _overrides(params: Optional[List[str]]) -> dict:
    return dict(parse_override(p) for p in params or [])


def _run_with_progress(profile: str, **kw):
    """run_study with a rich progress bar over the notebooks (validated first: a bad value is one line)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .runner import plan_study, run_study

    plan = plan_study(profile, **{k: v for k, v in kw.items() if k in ("only", "overrides", "study")})
    given = (kw.get("overrides") or {}).get("data_root")
    used = next((p["data_root"] for _, p in plan if p.get("data_root")), None)
    if given and used and used != given:  # say where a relative (or ~) data root points
        console.print(f"data_root={given!r} is {used} (relative paths are taken from the current folder)",
                      highlight=False, soft_wrap=True)

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("study", total=None)

        def advance(name: str, i: int, n: int) -> None:
            bar.update(task, total=n, completed=i, description=f"{profile}: {name}")

        def log(line: str) -> None:  # the runner's lines as written: "[run ]", "[skip]" are text, not rich markup
            bar.console.print(line, markup=False, highlight=False, soft_wrap=True)

        def cells(name: str, done: int, total: int, elapsed: float, previous: float | None) -> None:
            text = f"{name}: cell {done}/{total}, {_clock(elapsed)}" + (
                f" (last run {_clock(previous)})" if previous else " (no previous run)")
            bar.update(task, description=f"{profile}: {text}")
            if not bar.console.is_terminal:  # no live bar (a log file, CI): one line per cell
                log(f"[cell] {text}")

        return run_study(profile, log=log, progress=advance, on_cell=cells, **kw)


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes} min {s:02d} s" if minutes else f"{s} s"


@app.command()
def run(notebook: str = typer.Argument(..., help="Notebook name from notebooks/study.yml, e.g. 03_robustness."),
        profile: str = PROFILE, param: Optional[List[str]] = PARAM,
        force: bool = typer.Option(False, help="Execute even when nothing changed.")) -> None:
    """Execute one notebook headless (papermill) into book/generated/."""
    from .runner import NotebookFailed

    try:
        _run_with_progress(profile, only=[notebook], overrides=_overrides(param), force=force)
    except (StudyError, NotebookFailed, OSError, ValueError) as exc:  # expected failures: one line, exit 2
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
    except (StudyError, NotebookFailed, OSError, ValueError) as exc:  # expected failures: one line, exit 2
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
def toc(check: bool = typer.Option(False, "--check", help="Only say whether _toc.yml matches (exit 1 when not).")) -> None:
    """Write _toc.yml from notebooks/study.yml (the book's one source of structure; `book` does it too)."""
    from .runner import write_toc

    try:
        differs = write_toc(write=not check)
    except (StudyError, OSError) as exc:
        _fail(str(exc))
    if check and differs:
        console.print("_toc.yml differs from notebooks/study.yml; run: dfrobust toc", highlight=False)
        raise typer.Exit(1)
    console.print("_toc.yml written from notebooks/study.yml" if differs else "_toc.yml matches notebooks/study.yml")


@app.command()
def params(notebook: str = typer.Argument(..., help="Notebook name from notebooks/study.yml.")) -> None:
    """Show a notebook's parameters, their types, descriptions and per-profile values."""
    try:
        study = load_study()
        nb = study.notebook(notebook)
    except (StudyError, OSError) as exc:
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
    from ..core.profiles import load_spec

    for section, block in (load_spec().get("settings") or {}).items():  # sizes every chapter shares
        shared = Table(title=f"settings.{section} (shared by every chapter that needs them)")
        shared.add_column("setting")
        for prof in study.profiles:
            shared.add_column(prof)
        keys = sorted({k for p in study.profiles for k in (block.get(p) or {})} | set(block.get("common") or {}))
        for key in keys:
            shared.add_row(key, *[str({**(block.get("common") or {}), **(block.get(p) or {})}.get(key, ""))
                                  for p in study.profiles])
        Console().print(shared)


@data_app.command("synth")
def data_synth(profile: str = PROFILE, seed: int = typer.Option(0, help="Generator seed.")) -> None:
    """Generate (or reuse) the synthetic benchmark of a profile; prints the manifest paths."""
    from ..data import get_manifest

    from ..core.params import check_seed
    from ..core.paths import data_home

    try:
        load_study().check_profile(profile)
        check_seed(seed)
        data_home()
        for kind in ("images", "video_frames"):
            df = get_manifest(profile, kind, seed=seed)
            console.print(f"{kind}: {len(df)} rows, {df.attrs.get('meta', {}).get('manifest_path', '')}")
    except (StudyError, ValueError, OSError) as exc:  # expected failures (disk full included): one line, exit 2
        _fail(str(exc))


@data_app.command("prepare")
def data_prepare(root: str = typer.Argument(..., help="Dataset root folder (relative paths work)."),
                 out: Optional[str] = typer.Option(None, "--out", help="Output folder of the crops and the manifest "
                                                   "(default: <data home>/prepared/<layout>-<hash>)."),
                 force: bool = typer.Option(False, "--force", help="Prepare again even if the cache is valid."),
                 layout: str = typer.Option("auto", help="ffpp, dfdc, celebdf, uadfv, folder or auto."),
                 n_frames: int = typer.Option(16, "--n-frames", help="Frames sampled evenly per video."),
                 size: int = typer.Option(256, help="Crop size in pixels (16-1024)."),
                 margin: float = typer.Option(1.3, help="Face box enlargement before cropping (1-4)."),
                 detector: str = typer.Option("auto", help="auto (MTCNN, else Haar), mtcnn, haar or none."),
                 detect_side: int = typer.Option(960, "--detect-side", help="Longest side frames are resized to "
                                                 "before face detection (0: full resolution)."),
                 min_face_rate: float = typer.Option(0.8, "--min-face-rate", help="Warn about videos with a face "
                                                     "in fewer sampled frames than this."),
                 min_face: Optional[int] = typer.Option(None, "--min-face", help="Smallest face kept (pixels on its "
                                                        "short side; default 32); smaller ones are skipped and counted."),
                 crops: Optional[bool] = typer.Option(None, "--crops/--no-crops", help="The images are face crops: "
                                                      "resize without detecting (default: recognised by content)."),
                 names: str = typer.Option("auto", "--names", help="How image names give the video id: auto, "
                                           "video-frame-face (<video>-<frame>-<face>) or video-frame "
                                           "(<video>_<frame>); sub-folders are videos either way."),
                 group_regex: Optional[str] = typer.Option(None, "--group-regex", help="Regex with a group (?P<id>) "
                                                           "giving an image's video id from its file name "
                                                           "(instead of --names).")) -> None:
    """Prepare a real dataset (frames sampled evenly, one face tracked per video and cropped) into a manifest."""
    from ..data import prepare as prep

    kw = {} if min_face is None else {"min_face": min_face}
    try:   # every option is checked by prepare before anything is read
        path = prep.prepare(root, layout=layout, n_frames=n_frames, size=size, margin=margin, detector=detector,
                            detect_side=detect_side, min_face_rate=min_face_rate, crops=crops, names=names,
                            group_regex=group_regex, out_dir=out, force=force, **kw)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    from ..data import detection_report, load_manifest

    df = load_manifest(path)
    meta = df.attrs["meta"]
    low = detection_report(df).query("low")
    console.print(f"{len(df)} crops from {meta['n_media']} files ({meta['n_skipped']} skipped), detector "
                  f"{meta['detection']['detector']}, faces in {meta['face_rate']:.0%} of sampled frames", highlight=False)
    mode = "crops (resized, no detection)" if meta["crops"]["mode"] in ("given", "auto-detected") else "detect faces"
    console.print(f"mode: {mode} ({meta['crops']['mode']}: {meta['crops']['reason']})", highlight=False, markup=False)
    if "video_ids" in meta["notes"]:
        console.print(f"video ids: {meta['notes']['video_ids']}", highlight=False, markup=False)
    for s in meta["skipped"][:3]:
        console.print(f"skipped: {s['path']}: {s['reason']}", highlight=False, markup=False)
    for note in ("fakes_without_original", "missing_files"):
        if note in meta["notes"]:
            console.print(f"note: {note.replace('_', ' ')}: {meta['notes'][note]['count']}", highlight=False)
    if len(low) and meta["detection"]["low_rate_videos"]:
        console.print(f"[yellow]warning:[/] {len(low)} videos under {meta['detection']['min_face_rate']:.0%} faces: "
                      f"{', '.join(low.video_id[:5])}", highlight=False)
    print(path)


@app.command()
def train(model: str = typer.Argument(..., help="meso4, mesoinception4, resnet34, xception, or a robust Meso4: "
                                                 "meso4_adv (PGD training), meso4_ibp (IBP training)."),
          profile: str = PROFILE, seed: int = typer.Option(0, help="Training seed."),
          device: str = typer.Option("auto", help="auto, cpu or cuda.")) -> None:
    """Train (or load the cached checkpoint of) one detector on the profile's data."""
    from .. import experiments  # noqa: F401 - registers the robust detectors' training objectives
    from ..data import get_manifest
    from ..models import MODELS
    from ..models.train import get_trained

    from ..core.device import pick_device
    from ..core.params import check_seed
    from ..core.paths import data_home

    if model not in MODELS:
        _fail(f"model={model!r}: unknown; expected one of {', '.join(MODELS)}")
    try:  # everything checked before the data are generated
        load_study().check_profile(profile)
        check_seed(seed)
        pick_device(device)
        data_home()
        td = get_trained(model, get_manifest(profile, "images", seed=seed), profile=profile, seed=seed, device=device)
    except (StudyError, ValueError, OSError) as exc:
        _fail(str(exc))
    from ..models.train import val_auc

    console.print(f"{model}: checkpoint {td.checkpoint} (trained in {td.train_time_s:.1f} s on {td.device}; "
                  f"validation AUC {val_auc(td):.3f})", highlight=False, soft_wrap=True)  # the path whole, on one line


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
