"""The quality gate: which detectors the later chapters analyse.

Two rules, both decided before any attack:

* **validation AUC** — a detector whose validation AUC (on identities it was not trained on, read from its
  training record) is below ``threshold`` is "not analysed: near chance": its robust accuracy, robust ratio,
  video or XAI numbers would measure noise. The validation split decides, never the test split the chapters
  report on.
* **chapter 02's "learned" claim** — the detectors chapter decides "<m> learned: held-out test AUC >= target"
  (:func:`dfrobust.experiments.models.decide_table`) and writes the verdicts to ``models_verdicts.csv`` in the
  profile's results folder (:data:`VERDICTS_FILE`). A detector whose claim is *refuted* (the whole 95 %
  interval under the target) is "not analysed: chapter 02's learned claim refuted (...)": an attack chapter
  would otherwise report the robustness of a failed training run as that architecture's. *Holds* and
  *inconclusive* pass. The ``keep_unlearned`` block of the ``02_models`` entry in ``notebooks/study.yml``
  keeps named detectors of a profile anyway, with a reason the pages print (:func:`keep_unlearned`).
  Verdicts are matched to a detector by its checkpoint file, so a verdict about other weights never decides;
  without chapter 02's verdicts (a chapter run alone) the gate is the validation-AUC rule only, and the
  ``learned`` column and :func:`gate_rule` say so.

Published weights (:mod:`dfrobust.models.published`) are gated by the same rules on the data they are
evaluated on: their record's ``val_auc_best`` is the AUC on that data's ``val`` split, or, where that
split lacks a class, on every frame of the data (``gate_data`` in the record; :data:`~.published.GATE_RULE`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

DEFAULT_MIN_VAL_AUC = 0.7
#: chapter 02's verdict table in the profile's results folder (written by dfrobust.experiments.models.run)
VERDICTS_FILE = "models_verdicts.csv"
#: the columns the gate reads from it
VERDICT_COLUMNS = ("model", "checkpoint", "verdict", "estimate", "lo", "hi", "margin")
_VERDICTS = ("holds", "refuted", "inconclusive")
GATE_COLUMNS = ["model", "val_auc", "learned", "analysed", "status"]


def _val_auc(value: Any) -> float:
    if hasattr(value, "record"):  # a TrainedDetector
        from .train import val_auc

        return val_auc(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"validation AUC {value!r}: expected a number in [0, 1] or a TrainedDetector")
    return float(value)


def learned_verdicts(profile: str) -> pd.DataFrame | str:
    """Chapter 02's "learned" verdicts of ``profile`` (its ``models_verdicts.csv``): one row per detector with
    :data:`VERDICT_COLUMNS`, or, when there are none to read, the reason as a string (the gate then falls back
    to the validation-AUC rule and says why). A file that is not chapter 02's table is a one-line ValueError."""
    from ..core.paths import results_dir

    path = results_dir(profile) / VERDICTS_FILE
    if not path.is_file():
        return "chapter 02's learned verdicts absent (02_models not run for this profile)"
    return read_verdicts(path)


def read_verdicts(path: str | Path) -> pd.DataFrame | str:
    """The detector rows of a ``models_verdicts.csv`` (see :func:`learned_verdicts`)."""
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({type(exc).__name__}); expected chapter 02's verdict table "
                         "(rerun 02_models)") from None
    if "model" not in table.columns or "checkpoint" not in table.columns:
        return "chapter 02's verdicts predate the learned rule (no model/checkpoint columns: rerun 02_models)"
    if missing := [c for c in VERDICT_COLUMNS if c not in table.columns]:
        raise ValueError(f"{path}: columns {missing} missing; expected chapter 02's verdict table (rerun 02_models)")
    table = table.dropna(subset=["model"]).reset_index(drop=True)  # the port row names no detector
    if bad := sorted(set(table["verdict"]) - set(_VERDICTS)):
        raise ValueError(f"{path}: verdict {bad[0]!r}; expected one of {', '.join(_VERDICTS)}")
    return table[list(VERDICT_COLUMNS)]


def keep_unlearned(profile: str, spec: Mapping | None = None) -> dict[str, str]:
    """Detectors ``profile`` keeps in the attack chapters although chapter 02's learned claim is refuted:
    ``{detector: reason}`` from the ``keep_unlearned`` block of the ``02_models`` entry in ``study.yml``
    (``spec``: a parsed study.yml, else the project's). One-line ValueError on a malformed block."""
    from ..core.profiles import check_profile, load_spec

    check_profile(profile)
    spec = load_spec() if spec is None else spec
    entry = next((e for e in spec.get("notebooks") or [] if isinstance(e, Mapping) and e.get("name") == "02_models"),
                 None)
    block = (entry or {}).get("keep_unlearned") or {}
    if not isinstance(block, Mapping):
        raise ValueError(f"study.yml: 02_models keep_unlearned={block!r}; expected profile -> {{detector: reason}}")
    keep = block.get(profile) or {}
    if not isinstance(keep, Mapping) or not all(isinstance(r, str) and r.strip() for r in keep.values()):
        raise ValueError(f"study.yml: 02_models keep_unlearned.{profile}={keep!r}; expected {{detector: reason}} "
                         "with a non-empty reason for each")
    return {str(m): str(r) for m, r in keep.items()}


def _learned_row(model: str, value: Any, learned: pd.DataFrame) -> tuple[Any, str]:
    """(the verdict row deciding ``model``, or None; the ``learned`` column's text)."""
    ckpt = Path(value.checkpoint).name if hasattr(value, "checkpoint") else None
    rows = learned[learned["checkpoint"].astype(str) == ckpt] if ckpt else learned[learned["model"] == model]
    if len(rows):
        r = rows.iloc[0]
        return r, str(r["verdict"])
    if ckpt and (learned["model"] == model.split("@")[0]).any():
        return None, "not checked: chapter 02 judged other weights of it (rerun 02_models)"
    return None, "not checked: not among chapter 02's detectors"


def refuted_text(row: Any) -> str:
    """"test AUC 0.76 < 0.95, 95 % interval [0.70, 0.82]" for a refuted verdict row."""
    return (f"test AUC {float(row['estimate']):.2f} < {float(row['margin']):.2f}, 95 % interval "
            f"[{float(row['lo']):.2f}, {float(row['hi']):.2f}]")


def quality_gate(val_auc_by_model: Mapping[str, Any], threshold: float = DEFAULT_MIN_VAL_AUC, *,
                 learned: pd.DataFrame | str | None = None,
                 keep: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per detector: ``model``, ``val_auc``, ``learned``, ``analysed`` (bool), ``status``.

    ``val_auc_by_model``: detector -> validation AUC, or -> :class:`~dfrobust.models.train.TrainedDetector`
    (its record's ``val_auc_best``). ``learned``: chapter 02's verdicts (:func:`learned_verdicts`; a detector
    given as a TrainedDetector is matched by its checkpoint file, a bare AUC by name), or the reason they are
    absent (a string), or None (the validation-AUC rule only, nothing said). ``keep``: detector -> reason to
    analyse it although its learned claim is refuted (:func:`keep_unlearned`).

    ``status`` is ``analysed``, ``not analysed: near chance (val AUC 0.55 < 0.70)``, ``not analysed: chapter
    02's learned claim refuted (test AUC 0.76 < 0.95, 95 % interval [0.70, 0.82])`` or ``analysed although
    chapter 02's learned claim is refuted (...): <reason>``; an undefined (NaN) AUC is not analysed.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold={threshold!r}: expected a number in [0, 1] (minimum validation AUC)")
    if not isinstance(val_auc_by_model, Mapping) or not val_auc_by_model:
        raise ValueError(f"val_auc_by_model={val_auc_by_model!r}: expected a non-empty mapping detector -> "
                         "validation AUC (or TrainedDetector)")
    if learned is not None and not isinstance(learned, (str, pd.DataFrame)):
        raise ValueError(f"learned={learned!r}: expected chapter 02's verdict table, the reason it is absent, or None")
    if isinstance(learned, pd.DataFrame) and (missing := [c for c in VERDICT_COLUMNS if c not in learned.columns]):
        raise ValueError(f"learned: columns {missing} missing; expected chapter 02's verdict table ({', '.join(VERDICT_COLUMNS)})")
    keep = dict(keep or {})
    rows = []
    for model, value in val_auc_by_model.items():
        auc = _val_auc(value)
        if not math.isnan(auc) and not 0 <= auc <= 1:
            raise ValueError(f"validation AUC of {model}={auc!r}: expected a number in [0, 1]")
        row, verdict = (None, "not checked") if learned is None else \
            (None, f"not checked: {learned}") if isinstance(learned, str) else _learned_row(model, value, learned)
        if math.isnan(auc):
            ok, status = False, "not analysed: validation AUC undefined"
        elif auc < threshold:
            ok, status = False, f"not analysed: near chance (val AUC {auc:.2f} < {threshold:.2f})"
        elif verdict == "refuted" and model.split("@")[0] in keep:
            ok, status = True, (f"analysed although chapter 02's learned claim is refuted ({refuted_text(row)}): "
                                f"{keep[model.split('@')[0]]}")
        elif verdict == "refuted":
            ok, status = False, f"not analysed: chapter 02's learned claim refuted ({refuted_text(row)})"
        else:
            ok, status = True, "analysed"
        rows.append({"model": model, "val_auc": auc, "learned": verdict, "analysed": ok, "status": status})
    return pd.DataFrame(rows, columns=GATE_COLUMNS)


def study_gate(detectors: Mapping[str, Any], threshold: float, profile: str) -> pd.DataFrame:
    """:func:`quality_gate` as every chapter applies it: the validation-AUC rule and chapter 02's learned
    verdicts of ``profile`` (:func:`learned_verdicts`; absent: the validation-AUC rule only, said in the
    ``learned`` column), with the profile's ``keep_unlearned`` reasons."""
    return quality_gate(detectors, threshold, learned=learned_verdicts(profile), keep=keep_unlearned(profile))


def gate_rule(gate: pd.DataFrame, threshold: float) -> str:
    """The rule a gate table applied, as the pages state it: "validation AUC ≥ 0.70 and chapter 02's learned
    claim not refuted", or "validation AUC ≥ 0.70 only: <why the learned verdicts are absent>"."""
    checked = [v for v in gate["learned"] if not str(v).startswith("not checked")]
    if checked:
        return f"validation AUC ≥ {threshold:.2f} and chapter 02's learned claim not refuted"
    why = next((str(v).removeprefix("not checked: ") for v in gate["learned"] if str(v) != "not checked"), "")
    return f"validation AUC ≥ {threshold:.2f} only" + (f" ({why})" if why else "")


def gate_sentence(gate: pd.DataFrame, threshold: float) -> str:
    """What a page says about a gate table: who is not analysed and why, who is kept despite a refuted learned
    claim and why, and the rule applied (:func:`gate_rule`, which says when chapter 02's verdicts are absent)."""
    excluded = gate[~gate["analysed"]]
    kept = gate[gate["analysed"] & (gate["status"] != "analysed")]
    first = ("Every detector passed the quality gate" if excluded.empty else "Not analysed: " + "; ".join(
        f"{r.model} ({r.status.removeprefix('not analysed: ')})" for r in excluded.itertuples()))
    text = f"{first} (rule: {gate_rule(gate, threshold)})."
    if len(kept):
        text += " Kept: " + "; ".join(f"{r.model} ({r.status.removeprefix('analysed ')})" for r in kept.itertuples()) + "."
    return text


def analysed_models(val_auc_by_model: Mapping[str, Any], threshold: float = DEFAULT_MIN_VAL_AUC, **kw: Any) -> list[str]:
    """The detectors :func:`quality_gate` lets through, in the given order (``kw``: its ``learned``, ``keep``)."""
    gate = quality_gate(val_auc_by_model, threshold, **kw)
    return gate.loc[gate["analysed"], "model"].tolist()


__all__ = ["DEFAULT_MIN_VAL_AUC", "GATE_COLUMNS", "VERDICTS_FILE", "VERDICT_COLUMNS", "analysed_models",
           "gate_rule", "gate_sentence", "keep_unlearned", "learned_verdicts", "quality_gate", "read_verdicts", "refuted_text",
           "study_gate"]
