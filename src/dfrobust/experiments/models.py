"""Chapter 02 (the detectors): its parameters and its chapter function.

Training itself lives in :mod:`dfrobust.models.train`; :func:`check_params` checks the chapter's parameters
(no side effects) and resolves each detector's training values from ``settings.training`` in
``notebooks/study.yml`` (the values every later chapter's ``get_trained`` resolves too, so all load the same
checkpoints); :func:`detectors` trains or loads them; :func:`run` returns the chapter's
:class:`~dfrobust.core.results.ChapterResult` (architectures, the port check, clean metrics, timings, the
quality gate, the verdicts of :func:`decide_table`) and saves the combined record (``models.nc``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..core.device import describe, pick_device
from ..core.params import check_number, check_seed, split_list
from ..core.profiles import check_data_root, check_profile
from ..core.results import ChapterResult
from ..models import DETECTORS
from ..models.published import check_weights, is_published
from ..metrics import verdicts
from ..models.train import resolve_hparams

#: the AUC each detector must reach on held-out identities (issue 17): MesoNets 0.95, the others 0.85
AUC_TARGETS = {"meso4": 0.95, "mesoinception4": 0.95, "resnet34": 0.85, "xception": 0.85}
#: the training values the hyper-parameter table shows, in this order
HP_COLUMNS = ["input_size", "epochs", "patience", "batch_size", "optimizer", "lr", "schedule", "warmup",
              "label_smoothing", "weight_decay", "bn_recalib", "max_train", "threads"]


@dataclass(frozen=True)
class ModelsParams:
    """The detectors chapter's parameters, checked (:func:`check_params`)."""

    profile: str
    seed: int
    models: list[str]
    device: str
    data_root: str
    weights: str
    port_check: bool
    min_val_auc: float
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # trained detectors' resolved values


def check_params(*, profile: str, seed: int, models: str, device: str, data_root: str = "",
                 port_check: bool = True, min_val_auc: float = 0.7, weights: str = "") -> ModelsParams:
    """Every parameter checked (one-line ValueError naming it) before any data or model work; no side
    effects (``core.device.prepare_run`` sets the device up)."""
    check_profile(profile)
    check_seed(seed)
    model_list = split_list(models, "models", allowed=DETECTORS)
    check_data_root(profile, data_root)
    check_weights(model_list, weights)
    if not isinstance(port_check, bool):
        raise ValueError(f"port_check={port_check!r}: expected True or False")
    check_number(min_val_auc, "min_val_auc", 0, 1)
    pick_device(device)
    hparams = {m: resolve_hparams(m, profile) for m in model_list if not is_published(m)}  # trained ones
    return ModelsParams(profile, seed, model_list, device, str(data_root or ""), str(weights or ""), port_check,
                        float(min_val_auc), hparams)


def detectors(cfg: ModelsParams):
    """The manifest and every detector of ``cfg.models`` (trained, loaded from its cache, or published and
    evaluated on the data): ``(manifest, {name: TrainedDetector}, wall seconds)``."""
    from ..data import get_manifest
    from ..models.published import get_detector

    t0 = time.perf_counter()
    manifest = get_manifest(cfg.profile, "images", seed=cfg.seed, data_root=cfg.data_root or None)
    trained = {m: get_detector(m, manifest, weights=cfg.weights, profile=cfg.profile, seed=cfg.seed,
                               device=cfg.device, hparams=cfg.hparams.get(m)) for m in cfg.models}
    return manifest, trained, time.perf_counter() - t0


def run(cfg: ModelsParams, manifest: pd.DataFrame, trained: dict, wall_s: float) -> ChapterResult:
    """The detectors chapter from its trained detectors: tables, quoted values, the verdicts; the combined
    record is saved to ``models.nc`` and the verdicts to ``models_verdicts.csv`` (results folder, with each detector
    row's model and checkpoint: the later chapters' quality gate excludes a detector whose learned claim is refuted,
    :mod:`dfrobust.models.gate`)."""
    from ..core import results
    from ..core.paths import results_dir
    from ..data import dataset_label
    from ..models import architecture_table, gate_rule, quality_gate
    from ..models.gate import VERDICTS_FILE, gate_sentence, keep_unlearned
    from ..models.keras_h5 import reference_check
    from ..models.published import detector_provenance, origin
    from ..models.train import HPARAM_DOC, combined_record, records_table

    data_label = dataset_label(manifest)
    arch = architecture_table({m: h["input_size"] for m, h in cfg.hparams.items()})
    arch = arch[arch["model"].isin(cfg.models)].reset_index(drop=True)
    values: dict[str, Any] = {f"{r['model']}_params": f"{r['parameters (published size)']:,}" for _, r in arch.iterrows()}
    port = reference_check() if cfg.port_check else None
    tables = {"arch": arch, "metrics": records_table(trained)}
    if port is None:
        values["port_result"] = "not run here (reference folder absent)"
    else:
        worst = float(port["abs_diff"].max())
        values.update(port_result=f"{len(port)} of {len(port)} Keras probabilities reproduced, largest absolute "
                                  f"difference {worst:.1e} (tolerance 1e-5)", port_max_diff=f"{worst:.1e}")
        tables["port"] = port.pivot_table(index="image", columns="weights", values="abs_diff").map(lambda v: f"{v:.1e}")
    hp = pd.DataFrame(cfg.hparams).T.reindex(columns=HP_COLUMNS)
    tables.update(hparams=hp, hparam_doc=pd.Series({k: HPARAM_DOC[k] for k in hp.columns}, name="meaning").to_frame())
    for m, td in trained.items():
        rec = td.record.sel(subset="all")
        values.update({f"{m}_acc": round(float(rec["accuracy"]), 3), f"{m}_auc": round(float(rec["auc"]), 3),
                       f"{m}_train_s": round(td.train_time_s, 1)})
    timing = tables["metrics"].groupby("model", sort=False)[["input_size", "train_time_s"]].first()
    timing["epochs run"] = [trained[m].record.sizes["epoch"] for m in timing.index]
    timing["epoch kept"] = [int(trained[m].record["best_epoch"]) for m in timing.index]
    timing["device"] = [trained[m].record.attrs.get("device", "") for m in timing.index]
    # the gate the later chapters apply: validation AUC, then this chapter's own learned verdicts (models.gate)
    by_val = quality_gate(trained, threshold=cfg.min_val_auc)
    learned = learned_table(trained, decide_table(trained, by_val))
    gate = quality_gate(trained, threshold=cfg.min_val_auc, learned=learned, keep=keep_unlearned(cfg.profile))
    gate["test_auc"] = [float(trained[m].record["auc"].sel(subset="all")) for m in gate["model"]]
    values.update({f"{r.model}_val_auc": round(r.val_auc, 3) for r in gate.itertuples()})
    tables.update(timing=timing.round(1), gate=gate.round(3))
    n_ok = int(gate["analysed"].sum())
    first = trained[cfg.models[0]].record.attrs
    splits = ", ".join(f"{s} {int((manifest['split'] == s).sum())}" for s in ("train", "val", "test"))
    values.update(
        setup_line=f"profile {cfg.profile}: " + ", ".join(
            f"{m} at {cfg.hparams[m]['input_size']} px" if m in cfg.hparams else f"{m} (published weights)"
            for m in cfg.models) + f" on {describe(pick_device(cfg.device))}", device=describe(pick_device(cfg.device)),
        data_line=f"{len(manifest)} {data_label} images: {splits}",
        trained_line="; ".join(f"{m}: {'loaded cached' if td.cached else 'trained'} {td.checkpoint.name} (training "
                               f"took {td.train_time_s:.1f} s, {td.input_size} px)" for m, td in trained.items()),
        data_label=data_label, origin=origin(trained), n_train=int(first["n_train"]), n_test=int(first["n_test"]),
        total_train_s=round(sum(td.train_time_s for td in trained.values()), 1),
        best=max(trained, key=lambda m: float(trained[m].record["auc"].sel(subset="all"))),
        min_val_auc=f"{cfg.min_val_auc:.2f}", gate_rule=gate_rule(gate, cfg.min_val_auc),
        gate_summary=f"{n_ok} of {len(gate)} detectors pass. " + gate_sentence(gate, cfg.min_val_auc).removesuffix("."))
    decide = decide_table(trained, gate, port)
    # the detector rows carry their model and checkpoint: the later chapters' gate reads them (models.gate)
    names = [*trained, *([None] * (len(decide) - len(trained)))]
    decide.assign(model=names, checkpoint=[trained[m].checkpoint.name if m else None for m in names]).to_csv(
        results_dir(cfg.profile) / VERDICTS_FILE, index=False)
    ds = combined_record(trained)
    ds.attrs.update(results.provenance(
        {"models": cfg.models, "hparams": cfg.hparams}, profile=cfg.profile, seed=cfg.seed, device=values['device'],
        wall_time_s=wall_s, synthetic=int(bool(manifest.attrs.get("meta", {}).get("synthetic", True))),
        data=data_label, checkpoints={m: td.checkpoint.name for m, td in trained.items()},
        detectors=detector_provenance(trained)))
    results.save(ds, results_dir(cfg.profile) / "models.nc")
    return ChapterResult(values=values, tables=tables, decide=decide, records=ds)


def learned_table(trained, decide: pd.DataFrame) -> pd.DataFrame:
    """The detector rows of :func:`decide_table` as :func:`dfrobust.models.quality_gate` reads them (its
    ``learned``): model, checkpoint, verdict, estimate, lo, hi, margin (the target)."""
    rows = decide.iloc[:len(trained)]
    return rows.assign(model=list(trained), checkpoint=[td.checkpoint.name for td in trained.values()])[
        ["model", "checkpoint", "verdict", "estimate", "lo", "hi", "margin"]].reset_index(drop=True)


def decide_table(trained, gate: pd.DataFrame, port: pd.DataFrame | None = None, *,
                 port_tol: float = 1e-5) -> pd.DataFrame:
    """"What this build can decide" for the detectors chapter.

    One row per detector: "test AUC >= target" (:data:`AUC_TARGETS`) decided by the 95 %
    Hanley & McNeil interval of the held-out AUC (:func:`dfrobust.metrics.verdicts.threshold`),
    with the quality-gate status as note. One row for the MesoNet port when ``port`` (the Keras
    reference check) ran: holds when every probability is within ``port_tol``, exact (no interval).
    """
    status = dict(zip(gate["model"], gate["status"]))
    rows = []
    for m, td in trained.items():
        rec = td.record.sel(subset="all")
        auc, n, n_fake = float(rec["auc"]), int(rec["n"]), int(rec["n_fake"])
        lo, hi = verdicts.auc_interval(auc, n_fake, n - n_fake)
        rows.append(verdicts.threshold(auc, lo, hi, n=n, target=AUC_TARGETS.get(m, 0.85),
                                       claim=f"{m} learned: held-out test AUC >= {AUC_TARGETS.get(m, 0.85):g}",
                                       note=f"gate: {status.get(m, 'not gated')}"))
    if port is not None and len(port):
        worst = float(port["abs_diff"].max())
        rows.append(verdicts.Verdict(
            "the MesoNet port reproduces the published Keras probabilities",
            verdicts.HOLDS if worst <= port_tol else verdicts.REFUTED,
            f"holds if every |P_torch - P_keras| <= {port_tol:g} (exact comparison, no interval)",
            port_tol, worst, 0.0, worst, len(port), None, "estimate: the largest absolute difference"))
    return verdicts.verdict_table(rows)[["claim", "verdict", "estimate", "lo", "hi", "margin", "n", "n_needed",
                                         "rule", "note"]]
