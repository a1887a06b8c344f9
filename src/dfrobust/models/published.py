"""The MesoNet authors' published weights as detectors of the study, beside the ones it trains.

Design: a detector *name* says which published file it is — ``meso4_df``, ``meso4_f2f``,
``mesoinception_df``, ``mesoinception_f2f`` (:data:`PUBLISHED_DETECTORS`, the authors' file names
``Meso4_DF.h5`` ...) — and one *folder*, the ``weights`` parameter of every chapter (or
``$DFROBUST_WEIGHTS``), holds the files. Names rather than paths because a name is what every
chapter's ``models=`` list, the quality gate, the records' ``model`` coordinate and the sweep's cells
already carry: ``models=meso4,meso4_df`` compares a trained and a published Meso4 in one table, and
no chapter needs a second parameter per detector. The folder is resolved (and each file checked,
:func:`check_weights`) before any data or model work; the file's SHA-256 is checked against the
published digests when it loads (:func:`.keras_h5.verify_weights`) and lands in every result's
attrs (:func:`detector_provenance`).

:func:`get_detector` is the one entry point of the chapters: a published name is loaded and
*evaluated* on the data (:func:`evaluate`), any other name is trained or loaded by
:func:`.train.get_trained`; both return a :class:`.train.TrainedDetector` whose record has the same
variables (clean metrics per subset, ``val_auc_best``), so :func:`dfrobust.models.quality_gate`, the
records tables and the sweep treat them alike.

Preprocessing is the authors' (:func:`.keras_h5.keras_preprocess`): 256 px, nearest-neighbour
resize, ``x * (1/255)``, no mean/std. The clean metrics and the gate's AUC read the image files
through exactly that function. The chapters load images with :func:`dfrobust.data.load_images` at
the detector's 256 px; prepared crops are stored at 256 px (``settings.real.size``), so no resize
happens there and both paths give the same tensor. The sigmoid output is P(real)
(:class:`~dfrobust.models.Detector` exposes it as logits ``[z, 0]``), so ``p_fake`` is
``1 - P(real)`` as everywhere else.

Which data: the published weights were trained on the authors' own faces, never on the data the
book runs on, so every split of that data is held out for them. The quality gate reads the AUC on
the data's ``val`` split (:data:`GATE_RULE`); where that split lacks a class, on every frame of the
data (stated in the record's ``gate_data`` attribute and the gate's table). When every detector of a
chapter is published (nothing is trained on the data), the chapter evaluates on every split
(:func:`evaluation_manifest`); when one is trained there, on the ``test`` split as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ..core.paths import file_sha256, user_path

#: detector name -> the authors' weight file (github.com/DariusAf/MesoNet, ``weights/``)
PUBLISHED_DETECTORS: dict[str, str] = {
    "meso4_df": "Meso4_DF.h5",
    "meso4_f2f": "Meso4_F2F.h5",
    "mesoinception_df": "MesoInception_DF.h5",
    "mesoinception_f2f": "MesoInception_F2F.h5",
}
#: the environment variable naming the weights folder when no ``weights`` parameter is given
WEIGHTS_ENV = "DFROBUST_WEIGHTS"
#: the rule the quality gate applies to a published detector (shown on the pages)
GATE_RULE = ("published weights: the gate reads the AUC on the data's val split, or on every frame "
             "where the val split lacks a class (the weights never saw this data)")
INPUT_SIZE = 256  # the authors' input size


def is_published(name: str) -> bool:
    return str(name) in PUBLISHED_DETECTORS


def weights_dir(weights: str | os.PathLike | None = "") -> Path | None:
    """The weights folder: ``weights``, else ``$DFROBUST_WEIGHTS``, else None."""
    value = str(weights or "") or os.environ.get(WEIGHTS_ENV, "")
    return user_path(value, "weights" if weights else f"${WEIGHTS_ENV}") if value else None


def check_weights(names: Iterable[str], weights: str | os.PathLike | None = "") -> dict[str, Path]:
    """``{published name: weight file}`` for the published names among ``names``; one-line errors first.

    A published name with no folder (``weights`` empty and ``$DFROBUST_WEIGHTS`` unset), a folder that
    is not one, or a folder without the name's file are refused naming the value and what is expected.
    """
    if not isinstance(weights, (str, os.PathLike)) and weights is not None:
        raise ValueError(f"weights={weights!r}: expected the path of a folder of MesoNet .h5 files (or '')")
    wanted = [n for n in names if is_published(n)]
    if not wanted:
        return {}
    folder = weights_dir(weights)
    what = f"weights={str(weights)!r}" if weights else f"${WEIGHTS_ENV}={os.environ.get(WEIGHTS_ENV, '')!r}"
    if folder is None:
        raise ValueError(f"models={','.join(wanted)}: published detectors need their weights folder; set "
                         f"weights=PATH (or ${WEIGHTS_ENV}) to the folder holding {PUBLISHED_DETECTORS[wanted[0]]}")
    if not folder.is_dir():
        raise ValueError(f"{what}: {folder} {'is a file' if folder.exists() else 'does not exist'}; "
                         f"expected the folder holding {', '.join(PUBLISHED_DETECTORS[n] for n in wanted)}")
    out = {}
    for n in wanted:
        f = folder / PUBLISHED_DETECTORS[n]
        if not f.is_file():
            raise ValueError(f"{what}: no {PUBLISHED_DETECTORS[n]} in {folder}; expected the MesoNet authors' "
                             f"file for detector {n}")
        out[n] = f
    return out


def load(path: str | os.PathLike):
    """The published detector of weight file ``path`` (checked against the published digests)."""
    from .keras_h5 import load_pretrained

    return load_pretrained(path)


def _p_fake(model, paths: list[str], batch: int = 64) -> tuple[np.ndarray, list[int], list[dict[str, str]]]:
    """P(fake) of ``model`` on the files, read with the authors' preprocessing; unreadable files are
    skipped and returned with their reasons."""
    import torch

    from .keras_h5 import keras_preprocess

    dev = next(model.parameters()).device
    probs, kept, skipped = [], [], []
    for start in range(0, len(paths), batch):
        xs = []
        for i in range(start, min(start + batch, len(paths))):
            try:
                xs.append(keras_preprocess(paths[i], INPUT_SIZE))
                kept.append(i)
            except (OSError, ValueError) as exc:
                skipped.append({"path": str(paths[i]), "reason": str(exc).splitlines()[0]})
        if xs:
            with torch.no_grad():
                probs.append(torch.softmax(model(torch.cat(xs).to(dev)), 1)[:, 1].double().cpu().numpy())
    return (np.concatenate(probs) if probs else np.zeros(0)), kept, skipped


def evaluate(name: str, manifest: pd.DataFrame, *, weights: str | os.PathLike | None = "", profile: str = "quick",
             seed: int = 0, device: str = "auto"):
    """Load published detector ``name`` and evaluate it on ``manifest``: a :class:`.train.TrainedDetector`.

    Its record holds the clean metrics per subset on the evaluation rows (:func:`evaluation_manifest`
    of this one detector: every split), ``val_auc_best`` (what the gate reads, :data:`GATE_RULE`),
    and in its attrs the weight file, its SHA-256 and ``gate_data`` (``val`` or ``all``). The record
    is cached beside the checkpoints, keyed by the file's digest and the data's fingerprint.
    """
    import xarray as xr

    from ..core.device import describe, pick_device
    from ..core.paths import checkpoints_dir
    from ..core.results import load as load_result
    from ..core.results import provenance, save
    from .train import TrainedDetector, _auc, clean_metrics, data_fingerprint

    path = check_weights([name], weights)[name] if is_published(name) else None
    if path is None:
        raise ValueError(f"model={name!r}: not a published detector; expected one of {', '.join(PUBLISHED_DETECTORS)}")
    dev = pick_device(device)
    model = load(path).to(dev).eval()
    digest = file_sha256(path)
    fingerprint = data_fingerprint(manifest)
    rec_path = checkpoints_dir() / f"{name}-published-{digest[:12]}-{fingerprint}.nc"
    if rec_path.is_file():
        record = load_result(rec_path)
        return TrainedDetector(model=model, input_size=INPUT_SIZE, record=record, checkpoint=path, train_time_s=0.0,
                               device=str(dev), cached=True, hparams={"input_size": INPUT_SIZE})
    df = manifest.reset_index(drop=True)
    p, kept, skipped = _p_fake(model, [str(x) for x in df["path"]])
    if skipped:
        print(f"{name}: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]['path']}: {skipped[0]['reason']}")
    rows = df.iloc[kept].reset_index(drop=True)
    y = rows["label"].to_numpy(np.int64)
    val = (rows["split"] == "val").to_numpy()
    gate_data = "val" if len(set(y[val].tolist())) == 2 else "all"
    gate_auc = _auc(y[val], p[val]) if gate_data == "val" else _auc(y, p)
    metrics = clean_metrics(rows, p).set_index("subset")

    def var(dim, values, units, long_name):
        return (dim, values, {"units": units, "long_name": long_name})

    record = xr.Dataset(
        {"accuracy": var("subset", metrics["accuracy"].to_numpy(float), "1",
                         "clean accuracy (threshold 0.5) on every evaluated frame"),
         "auc": var("subset", metrics["auc"].to_numpy(float), "1", "ROC AUC on every evaluated frame"),
         "n": var("subset", metrics["n"].to_numpy(np.int64), "1", "evaluated samples"),
         "n_fake": var("subset", metrics["n_fake"].to_numpy(np.int64), "1", "evaluated fake samples"),
         "train_loss": var("epoch", np.asarray([np.nan]), "1", "none: published weights, not trained here"),
         "val_auc": var("epoch", np.asarray([gate_auc]), "1", f"ROC AUC the gate reads ({gate_data} frames)"),
         "train_time_s": var((), 0.0, "s", "none: published weights"),
         "best_epoch": var((), 0, "1", "none: published weights"),
         "val_auc_best": var((), gate_auc, "1", f"ROC AUC the quality gate reads ({GATE_RULE})")},
        coords={"subset": list(metrics.index), "subset_kind": ("subset", metrics["subset_kind"].tolist()),
                "epoch": np.arange(1, 2), "model": name})
    record.attrs.update(provenance({"weights_file": PUBLISHED_DETECTORS[name]}, profile=profile, seed=seed,
                                   device=describe(dev), wall_time_s=0.0, model=name, input_size=INPUT_SIZE,
                                   data_fingerprint=fingerprint, checkpoint=path.name, weights_sha256=digest,
                                   published=1, gate_data=gate_data, gate_rule=GATE_RULE,
                                   synthetic=int(bool((manifest.attrs.get("meta") or {}).get("synthetic", False))),
                                   n_train=0, n_val=int(val.sum()), n_test=len(rows), n_skipped=len(skipped),
                                   skipped=skipped))
    save(record, rec_path)
    return TrainedDetector(model=model, input_size=INPUT_SIZE, record=record, checkpoint=path, train_time_s=0.0,
                           device=str(dev), cached=False, hparams={"input_size": INPUT_SIZE})


def get_detector(name: str, manifest: pd.DataFrame, *, weights: str | os.PathLike | None = "", profile: str = "quick",
                 seed: int = 0, device: str = "auto", hparams: Mapping[str, Any] | None = None, **kw: Any):
    """The chapters' one call for a detector: :func:`evaluate` for a published name, else
    :func:`.train.get_trained` (trained on ``manifest``, or its cached checkpoint) with ``hparams`` and ``kw``."""
    if is_published(name):
        if kw or hparams:
            raise ValueError(f"model={name!r}: published weights take no training options "
                             f"(got {sorted(kw) or sorted(hparams or {})})")
        return evaluate(name, manifest, weights=weights, profile=profile, seed=seed, device=device)
    from .train import get_trained

    return get_trained(name, manifest, profile=profile, seed=seed, device=device,
                       hparams=dict(hparams) if hparams else None, **kw)


def evaluation_manifest(manifest: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """The rows a chapter evaluates on, as a manifest whose ``split`` says ``test`` for them.

    Every detector of ``names`` published (nothing trained on this data): every row, its own split
    kept in ``split_official`` and the rule in ``attrs['meta']['evaluation']``. Otherwise ``manifest``
    itself (the chapters then read its ``test`` split)."""
    names = list(names)
    if not names or not all(is_published(n) for n in names):
        return manifest
    out = manifest.assign(split_official=manifest["split"], split="test")
    out.attrs["meta"] = {**(manifest.attrs.get("meta") or {}),
                         "evaluation": "every split: the published weights were trained on none of this data"}
    return out


def detector_provenance(trained: Mapping[str, Any]) -> str:
    """JSON ``{name: {file, sha256}}`` of the weight files behind ``trained`` (name -> TrainedDetector):
    the published .h5 or the trained checkpoint, for the results' attrs."""
    return json.dumps({n: {"file": Path(td.checkpoint).name, "sha256": file_sha256(td.checkpoint),
                           "published": int(is_published(n))} for n, td in trained.items()}, sort_keys=True)


__all__ = ["GATE_RULE", "PUBLISHED_DETECTORS", "WEIGHTS_ENV", "check_weights", "detector_provenance",
           "evaluate", "evaluation_manifest", "get_detector", "is_published", "load", "origin", "weights_dir"]


def origin(trained: Mapping[str, Any]) -> str:
    """One sentence per detector saying where its weights come from (for the pages): the published file
    and its digest, or the split of this data it was trained on."""
    parts = []
    for n, td in trained.items():
        if is_published(n):
            parts.append(f"{n}: the MesoNet authors' published weights {PUBLISHED_DETECTORS[n]} (SHA-256 "
                         f"{td.record.attrs.get('weights_sha256', file_sha256(td.checkpoint))[:12]}…), trained by them on "
                         "their own faces, none of this data; not trained here")
        else:
            parts.append(f"{n}: trained here on the train split of this data "
                         f"({int(td.record.attrs.get('n_train', 0))} images)")
    return "; ".join(parts)
