"""RA, RR and complementary robustness metrics as reductions of per-sample attack records.

Records come from :func:`dfrobust.experiments.records.attack_records` (dims model, attack, eps, sample).
Nothing here runs a model, so any tolerance grid, group split or bootstrap is cheap.

* **RA** (Lyu et al., Eq. 1): fraction of samples whose clean *and* adversarial predictions equal
  the label, mean 1[ŷ = y ∧ ŷ_adv = y]. Attacks move away from the clean prediction ŷ, so for a
  misclassified sample an attack may "repair" the prediction; that never counts as robust.
* **RR** (Eqs. 2-3): fraction of samples with ``|P(ŷ|x+δ) − P(ŷ|x)| <= b`` for the δ found in the
  ε-ball; ŷ is the clean prediction. Because an attack finds *some* δ, not the worst one, this
  is an upper bound of the formal RR. Budget rule: a record whose δ lies outside the radius
  (``in_budget`` False) keeps the clean outcome (change 0, clean prediction).
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
    """Per sample: clean prediction correct and prediction under attack correct (the clean
    prediction stands outside the radius)."""
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




def worst_case(records: xr.Dataset, attacks: Sequence[str] | None = None, *, name: str = "worst") -> xr.Dataset:
    """The records with one more attack ``name``: per sample the worst case over ``attacks``
    (default: all), as AutoAttack reports robustness.

    Per (model, ε, sample): the prediction counts as wrong if *any* of the attacks made it wrong
    (so RA(worst) <= every attack's RA), and the probability change is the *largest* any of them
    found (so RR(worst) <= every attack's RR at every b). ``p_adv``, ``p_adv_fake``, norms and
    SSIM are those of the attack with the largest change; ``pred_adv`` is the label's opposite
    when any attack flipped it, so ``pred_adv`` and ``p_adv_fake`` may come from different
    attacks (``success``/``changed`` are "any"). Pass only attacks that share one threat model
    (the L∞ ball of radius ε).
    """
    _check_records(records)
    have = [str(a) for a in records.attack.values]
    names = have if attacks is None else [str(a) for a in attacks]
    if not names:
        raise ValueError("attacks=[]: expected at least one attack of the records")
    for a in names:
        if a not in have:
            raise ValueError(f"attack={a!r}: not in the records; expected some of {', '.join(have)}")
    if name in have:
        raise ValueError(f"name={name!r}: already an attack of the records; expected a new name")
    sub = records.sel(attack=names)
    change = prob_change(sub)
    pick = change.fillna(-1.0).argmax("attack")
    per_attack = [v for v in sub.data_vars if "attack" in sub[v].dims]
    worst = sub[per_attack].isel(attack=pick)
    eff = xr.where(sub["in_budget"], sub["pred_adv"], sub["pred_clean"])
    flipped = (eff != sub["y"]).any("attack")
    # the kept record's change was 0 outside its radius: there P(ŷ) stays the clean one, and the
    # worst-case record itself is admissible (its flips and changes all come from in-budget records)
    worst["p_adv"] = xr.where(worst["in_budget"], worst["p_adv"], sub["p_clean"])
    worst["pred_adv"] = xr.where(flipped, 1 - sub["y"], sub["y"]).astype(sub["pred_adv"].dtype)
    worst["in_budget"] = xr.ones_like(worst["in_budget"], dtype=bool)
    for v in ("success", "changed"):
        if v in sub:
            worst[v] = sub[v].any("attack")
    worst = worst.drop_vars("attack", errors="ignore").expand_dims(attack=[name])
    for v in per_attack:
        worst[v] = worst[v].transpose(*sub[v].dims)
        worst[v].attrs = dict(records[v].attrs)
    out = xr.concat([records, worst], dim="attack", data_vars="minimal", coords="minimal", compat="override")
    out.attrs = dict(records.attrs)
    out.attrs["worst_case"] = f"{name} = per-sample worst case over {','.join(names)}"
    return out
