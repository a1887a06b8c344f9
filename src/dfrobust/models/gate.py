"""The quality gate: which detectors the later chapters analyse.

A detector whose validation AUC (on identities it was not trained on, read from its training
record) is below ``threshold`` is "not analysed: near chance": its robust accuracy, robust
ratio, video or XAI numbers would measure noise, so chapters report the reason instead.
The validation split decides, never the test split the chapters report on.

Published weights (:mod:`dfrobust.models.published`) are gated by the same rule on the data they are
evaluated on: their record's ``val_auc_best`` is the AUC on that data's ``val`` split, or, where that
split lacks a class, on every frame of the data (``gate_data`` in the record; :data:`~.published.GATE_RULE`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

DEFAULT_MIN_VAL_AUC = 0.7


def _val_auc(value: Any) -> float:
    if hasattr(value, "record"):  # a TrainedDetector
        from .train import val_auc

        return val_auc(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"validation AUC {value!r}: expected a number in [0, 1] or a TrainedDetector")
    return float(value)


def quality_gate(val_auc_by_model: Mapping[str, Any], threshold: float = DEFAULT_MIN_VAL_AUC) -> pd.DataFrame:
    """One row per detector: ``model``, ``val_auc``, ``analysed`` (bool), ``status``.

    ``val_auc_by_model``: detector -> validation AUC, or -> :class:`~dfrobust.models.train.TrainedDetector`
    (its record's ``val_auc_best``). ``status`` is ``analysed`` or
    ``not analysed: near chance (val AUC 0.55 < 0.70)``; an undefined (NaN) AUC is not analysed.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold={threshold!r}: expected a number in [0, 1] (minimum validation AUC)")
    if not isinstance(val_auc_by_model, Mapping) or not val_auc_by_model:
        raise ValueError(f"val_auc_by_model={val_auc_by_model!r}: expected a non-empty mapping detector -> "
                         "validation AUC (or TrainedDetector)")
    rows = []
    for model, value in val_auc_by_model.items():
        auc = _val_auc(value)
        if not math.isnan(auc) and not 0 <= auc <= 1:
            raise ValueError(f"validation AUC of {model}={auc!r}: expected a number in [0, 1]")
        if math.isnan(auc):
            ok, status = False, "not analysed: validation AUC undefined"
        elif auc < threshold:
            ok, status = False, f"not analysed: near chance (val AUC {auc:.2f} < {threshold:.2f})"
        else:
            ok, status = True, "analysed"
        rows.append({"model": model, "val_auc": auc, "analysed": ok, "status": status})
    return pd.DataFrame(rows, columns=["model", "val_auc", "analysed", "status"])


def analysed_models(val_auc_by_model: Mapping[str, Any], threshold: float = DEFAULT_MIN_VAL_AUC) -> list[str]:
    """The detectors :func:`quality_gate` lets through, in the given order."""
    gate = quality_gate(val_auc_by_model, threshold)
    return gate.loc[gate["analysed"], "model"].tolist()


__all__ = ["DEFAULT_MIN_VAL_AUC", "analysed_models", "quality_gate"]
