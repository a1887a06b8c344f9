"""Chapter 02 (the detectors): its one validation call.

Training itself lives in :mod:`dfrobust.models.train`; the chapter only checks its parameters,
resolves each detector's training values from ``settings.training`` in ``notebooks/study.yml``
(the values every later chapter's ``get_trained`` resolves too, so all load the same checkpoints)
and prepares the run, and :func:`decide_table` turns the trained records into the chapter's
"what this build can decide" rows (one threshold verdict per detector, plus the port check).
"""

from __future__ import annotations

import pandas as pd

from ..core.device import prepare_run
from ..core.params import check_number, check_seed, split_list
from ..core.profiles import check_data_root, check_profile
from ..models import DETECTORS
from ..models.published import check_weights, is_published
from ..metrics import verdicts
from ..models.train import resolve_hparams

#: the AUC each detector must reach on held-out identities (issue 17): MesoNets 0.95, the others 0.85
AUC_TARGETS = {"meso4": 0.95, "mesoinception4": 0.95, "resnet34": 0.85, "xception": 0.85}


def check_params(*, profile: str, seed: int, models: str, device: str, data_root: str = "",
                 port_check: bool = True, min_val_auc: float = 0.7, weights: str = "") -> dict:
    """Every parameter checked (one-line ValueError naming it) before any data or model work.

    Returns ``models`` (list), ``hparams`` (detector -> resolved training values), ``device``
    (a torch.device, threads capped and seeds set) and ``params`` (provenance of the run).
    """
    check_profile(profile)
    check_seed(seed)
    model_list = split_list(models, "models", allowed=DETECTORS)
    check_data_root(profile, data_root)
    check_weights(model_list, weights)
    if not isinstance(port_check, bool):
        raise ValueError(f"port_check={port_check!r}: expected True or False")
    check_number(min_val_auc, "min_val_auc", 0, 1)
    hparams = {m: resolve_hparams(m, profile) for m in model_list if not is_published(m)}  # trained ones
    dev = prepare_run(device, seed)
    params = dict(profile=profile, seed=seed, models=model_list, data_root=str(data_root or ""),
                  min_val_auc=float(min_val_auc), device=str(dev), weights=str(weights or ""))
    return {"models": model_list, "hparams": hparams, "device": dev, "params": params}


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
