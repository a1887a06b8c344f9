"""RA, RR and complementary robustness metrics as reductions of per-sample attack records.

Records come from :func:`dfrobust.experiments.robustness.attack_records` (dims model, attack, eps, sample).
Nothing here runs a model, so any tolerance grid, group split or bootstrap is cheap.

* **RA** (Lyu et al., Eq. 1): fraction of samples whose adversarial prediction equals the label.
* **RR** (Eqs. 2-3): fraction of samples with ``|P(ŷ|x+δ) − P(ŷ|x)| <= b`` for the δ found in the
  ε-ball; ŷ is the clean prediction. Because an attack finds *some* δ, not the worst one, this
  is an upper bound of the formal RR. CW rule: outside the radius (``in_budget`` False) the
  clean outcome stands (change 0, clean prediction).
* **Complementary metrics** (Guo et al. 2023, after DEEPSEC): ACAC (average confidence of the
  adversarial class), ACTC (average confidence of the true class), NTE (noise tolerance
  estimation: P(adv class) − max other), ALD_p (average ‖δ‖_p / ‖x‖_p) and ASS (average SSIM),
  all over *successful* adversarial examples (clean prediction correct, adversarial wrong,
  within budget). With two classes ACTC = 1 − ACAC and NTE = 2·ACAC − 1 exactly, so they carry
  no information beyond ACAC; they are returned for completeness and the book says so.
Bootstrap intervals are in :mod:`.bootstrap`. Written by hand because these are a few lines of
xarray each.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from .grids import check_b_grid


def _check_records(records: xr.Dataset) -> None:
    need = {"p_adv", "p_clean", "pred_adv", "pred_clean", "y", "in_budget"}
    missing = need - set(records.variables)
    if missing:
        raise ValueError(f"records: missing {', '.join(sorted(missing))}; expected the output of attack_records")


def correct_adv(records: xr.Dataset) -> xr.DataArray:
    """Per sample: clean prediction correct AND prediction under attack correct (clean prediction
    outside the radius). The attack moves away from ŷ, so a misclassified sample pushed onto y
    still counts as wrong (RA = mean 1[clean correct ∧ adversarial correct])."""
    _check_records(records)
    pred = xr.where(records["in_budget"], records["pred_adv"], records["pred_clean"])
    return ((records["pred_clean"] == records["y"]) & (pred == records["y"])).rename("correct_adv")


def prob_change(records: xr.Dataset) -> xr.DataArray:
    """Per sample: ``|P(ŷ|x+δ) − P(ŷ|x)|`` (0 outside the radius)."""
    _check_records(records)
    d = np.abs(records["p_adv"] - records["p_clean"])
    return xr.where(records["in_budget"], d, 0.0).rename("prob_change")


def robust_per_sample(records: xr.Dataset, b_grid: Sequence[float]) -> xr.DataArray:
    """Per sample and bound b: ``change <= b`` (the indicator averaged by RR)."""
    b = check_b_grid(b_grid)
    bb = xr.DataArray(b, dims="b", coords={"b": b}, attrs={"long_name": "bound b on |ΔP(ŷ)|"})
    # small slack so that b read from a decimal grid (0.1) is not beaten by float noise
    return (prob_change(records) <= bb + 1e-12).rename("robust")


def _reduce(values: xr.DataArray, groupby: str | None) -> xr.DataArray:
    if groupby is None:
        return values.mean("sample")
    if groupby not in values.coords:
        raise ValueError(f"groupby={groupby!r}: not a sample coordinate; expected one of "
                         f"{', '.join(c for c in values.coords if values.coords[c].dims == ('sample',))}")
    return values.groupby(groupby).mean("sample")


def clean_accuracy(records: xr.Dataset, groupby: str | None = None) -> xr.DataArray:
    _check_records(records)
    return _reduce((records["pred_clean"] == records["y"]).astype(float), groupby).rename("clean_accuracy")


def robust_accuracy(records: xr.Dataset, groupby: str | None = None) -> xr.DataArray:
    """RA per (model, attack, eps) [and group]."""
    ra = _reduce(correct_adv(records).astype(float), groupby).rename("RA")
    ra.attrs.update(long_name="robust accuracy (attack-based upper bound)", units="1")
    return ra


def robust_ratio(records: xr.Dataset, b_grid: Sequence[float], groupby: str | None = None) -> xr.DataArray:
    """RR per (model, attack, eps, b) [and group]."""
    rr = _reduce(robust_per_sample(records, b_grid).astype(float), groupby).rename("RR")
    rr.attrs.update(long_name="robust ratio (attack-based upper bound)", units="1")
    return rr


def complementary(records: xr.Dataset) -> xr.Dataset:
    """Guo et al. (2023) metrics per (model, attack, eps) over successful, in-budget examples."""
    _check_records(records)
    succ = records["success"] & records["in_budget"]
    p_adv_cls = xr.where(records["pred_adv"] == 1, records["p_adv_fake"], 1 - records["p_adv_fake"])
    p_true = xr.where(records["y"] == 1, records["p_adv_fake"], 1 - records["p_adv_fake"])
    n_succ = succ.sum("sample")

    def avg(v):
        return v.where(succ).sum("sample") / n_succ.where(n_succ > 0)

    out = xr.Dataset({
        "attack_success_rate": succ.mean("sample"),
        "n_success": n_succ,
        "ACAC": avg(p_adv_cls),
        "ACTC": avg(p_true),
        "NTE": avg(2 * p_adv_cls - 1),  # two classes: P(adv) − max other = 2P(adv) − 1
        "ALD_2": avg(records["l2"] / records["x_l2"]),
        "ALD_inf": avg(records["linf"] / records["x_linf"]),
        "mean_l2": avg(records["l2"]),
        "mean_linf": avg(records["linf"]),
        "ASS": avg(records["ssim"]),
        "changed_rate": records["changed"].mean("sample"),
    })
    out["ACTC"].attrs["note"] = "two classes: ACTC = 1 - ACAC"
    out["NTE"].attrs["note"] = "two classes: NTE = 2*ACAC - 1"
    return out


