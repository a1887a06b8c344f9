"""The data chapter (01_data): its parameters and its chapter function.

The notebook calls ``cfg = from_namespace(check_params, globals())`` (every parameter checked, no side
effects), ``prepare_run``, :func:`manifests` and :func:`run`, which returns the chapter's
:class:`~dfrobust.core.results.ChapterResult` (the manifest tables, the colour baseline and the Meso4 bar,
the "what this build can decide" rows); the figures are drawn from it by ``figures.data.chapter_figures``.
The work itself is done by ``data`` (manifests, the colour baseline), ``models`` (Meso4) and ``metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.device import pick_device
from ..core.params import check_int, check_seed
from ..core.paths import data_home
from ..core.profiles import check_profile
from ..core.results import ChapterResult
from ..data import detection_report, get_manifest, manipulation_counts, split_table, synth
from ..metrics import verdicts

#: the bar the data must clear: Meso4's held-out accuracy in this window, the colour baseline at most its ceiling
MESO4_WINDOW = (0.85, 0.98)
COLOUR_CEILING = 0.65


@dataclass(frozen=True)
class DataParams:
    """The data chapter's parameters, checked (:func:`check_params`)."""

    profile: str
    seed: int
    data_root: str | None  # None: the synthetic benchmark
    pairs_per_group: int
    strip_frames: int
    train_meso4: bool
    device: str


def check_params(*, profile: str, seed: int, pairs_per_group: int, strip_frames: int, train_meso4: bool,
                 device: str, data_root: str = "") -> DataParams:
    """Every parameter of the data chapter checked (one-line ValueError naming it) before any data is made;
    no side effects (the device is validated, not set up: ``core.device.prepare_run`` does that)."""
    check_profile(profile)
    check_seed(seed)
    check_int(pairs_per_group, "pairs_per_group", 1, 50)  # a grid of 6 groups x pairs_per_group pairs
    check_int(strip_frames, "strip_frames", 1, 100)       # one figure row of frames
    if not isinstance(train_meso4, bool):
        raise ValueError(f"train_meso4={train_meso4!r}: expected True or False")
    if not isinstance(data_root, str):
        raise ValueError(f"data_root={data_root!r}: expected a folder path, or '' for the synthetic benchmark")
    pick_device(device)
    return DataParams(profile, seed, data_root or None, pairs_per_group, strip_frames, train_meso4, device)


def manifests(cfg: DataParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The still images' and the video frames' manifests (generated or prepared on first use, then cached)."""
    images = get_manifest(cfg.profile, "images", seed=cfg.seed, data_root=cfg.data_root)
    frames = get_manifest(cfg.profile, "video_frames", seed=cfg.seed, data_root=cfg.data_root)
    return images, frames


def _shown_path(path) -> str:
    """A manifest's path as the page shows it: relative to the data home, never the building machine's path."""
    try:
        return f"<data home>/{Path(path).resolve().relative_to(data_home().resolve()).as_posix()}"
    except ValueError:  # a real dataset's manifest outside the data home
        return Path(path).name


def _claim(acc: float, n: int, target: float, above: bool, claim: str) -> verdicts.Verdict:
    return verdicts.threshold(acc, *verdicts.wilson(round(acc * n), n), n=n, target=target, above=above, claim=claim)


def decide_table(colour: dict, meso4: tuple[float, int] | None) -> pd.DataFrame:
    """"What this build can decide": the bar as threshold claims on Wilson intervals of held-out accuracy
    (the colour baseline's ceiling; Meso4's window when it was trained)."""
    shortcut = f"no colour shortcut: colour-baseline held-out accuracy <= {COLOUR_CEILING:g}"
    rows = [_claim(colour["accuracy"], colour["n_test"], COLOUR_CEILING, False, shortcut) if colour["n_test"] else
            verdicts.threshold(float("nan"), float("nan"), float("nan"), n=0, target=COLOUR_CEILING, above=False,
                               claim=shortcut, note="not run: this data has no test split")]
    if meso4 is not None:
        acc, n = meso4
        rows += [_claim(acc, n, MESO4_WINDOW[0], True, f"learnable: Meso4 held-out accuracy >= {MESO4_WINDOW[0]:g}"),
                 _claim(acc, n, MESO4_WINDOW[1], False, f"not trivial: Meso4 held-out accuracy <= {MESO4_WINDOW[1]:g}")]
    return verdicts.verdict_table(rows)[["claim", "verdict", "estimate", "lo", "hi", "margin", "n", "n_needed", "rule"]]


def run(cfg: DataParams, images: pd.DataFrame, frames: pd.DataFrame) -> ChapterResult:
    """The data chapter: what the manifests hold, the colour baseline and Meso4 on held-out identities."""
    meta, fmeta = images.attrs["meta"], frames.attrs["meta"]
    source = "synthetic" if meta.get("synthetic") else "real"
    by_split = images.groupby(["split", "label"]).size().unstack("label").rename(columns={0: "real", 1: "fake"})
    by_group = images.pivot_table(index="group", columns=["split", "label"], values="path", aggfunc="count",
                                  fill_value=0)
    report = detection_report(frames)
    min_rate = fmeta.get("detection", {}).get("min_face_rate", 0.8)
    # the baseline needs a test split; a real dataset can have none (the shared FF++ samples are train and val)
    colour = (synth.colour_baseline(images, seed=cfg.seed) if {"train", "test"} <= set(images.split)
              else {"accuracy": float("nan"), "n_test": 0})
    bar, meso4, tables = {"colour baseline": colour["accuracy"]}, None, {}
    meso4_line = "Meso4 is not trained on this data (train_meso4=False)"
    if cfg.train_meso4:
        from ..models.train import get_trained

        trained = get_trained("meso4", images, profile=cfg.profile, seed=cfg.seed, device=cfg.device)
        meso4 = (float(trained.record["accuracy"].sel(subset="all")), int(trained.record["n"].sel(subset="all")))
        bar["Meso4"] = meso4[0]
        meso4_line = (f"Meso4 at {trained.input_size} px: held-out accuracy {meso4[0]:.3f} (trained in "
                      f"{trained.train_time_s:.0f} s on {trained.device}; checkpoint {trained.checkpoint.name})")
        tables["meso4_accuracy"] = trained.record["accuracy"].to_series().rename("accuracy").to_frame()
    meso_acc = meso4[0] if meso4 else float("nan")
    bar_line = (f"a Meso4 detector trained on the training identities reaches {meso_acc:.2f} accuracy on held-out "
                "identities" if meso4 else "no detector is trained on this data (the detectors chapter says where its "
                "detectors come from)") + (
        f", while a colour-statistics baseline stays at {colour['accuracy']:.2f}" if colour["n_test"]
        else "; the colour-statistics baseline did not run (this data has no test split)")
    met = MESO4_WINDOW[0] <= meso_acc <= MESO4_WINDOW[1] and colour["accuracy"] <= COLOUR_CEILING
    values = dict(
        source=source, n_images=len(images), n_identities=int(images.identity.nunique()),
        images_per_s=float(meta.get("images_per_s", float("nan"))),
        gen_s=float(meta.get("generation_s", float("nan"))),
        manifest=_shown_path(meta["manifest_path"]), n_videos=int(frames.video_id.nunique()), n_frames=len(frames),
        face_rate=f"{fmeta.get('face_rate', float('nan')):.0%}", n_skipped=int(fmeta.get("n_skipped", 0)),
        n_reported=len(report), n_low=int(report.low.sum()) if len(report) else 0, min_face_rate=f"{min_rate:.0%}",
        colour_acc=colour["accuracy"], meso4_acc=meso_acc, meso4_line=meso4_line, bar_line=bar_line,
        bar_met="met" if met else "NOT met")
    tables.update(by_split=by_split, by_group=by_group, detection=report.head(20), splits=split_table(frames),
                  manipulations=manipulation_counts(frames),
                  bar=pd.Series(bar, name="held-out accuracy").to_frame())
    return ChapterResult(values=values, tables=tables, decide=decide_table(colour, meso4))
