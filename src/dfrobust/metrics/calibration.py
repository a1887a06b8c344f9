"""Calibration (issue #23.2): RR at any temperature as a reduction of stored margins, reliability
diagrams, ECE and a temperature fitted on validation data.

**RR depends on the temperature, RA does not.** With two logits, P_T(ŷ|x) = σ(m/T) for the margin
``m = z_ŷ − z_other``; a temperature T changes every probability and no prediction. The RR attack's
down and up runs push m itself with sign-gradient steps, and a sign gradient is the same for any
increasing transform of the loss, so their path, and the smallest and largest margin they reach,
do not depend on T (:mod:`dfrobust.attacks.radii` keeps them per sample and grid radius:
``margin_clean``, ``margin_min``, ``margin_max``). The largest change of P_T(ŷ) found is then

    |ΔP_T| = max(σ(m₀/T) − σ(m_min/T), σ(m_max/T) − σ(m₀/T)),

so RR(ε, b) at any T is a reduction, no new attack (the attack's up-run shortcut is kept exact
for the temperatures it was given: ``RRAttack(temperatures=...)``). RR among the samples whose
prediction did not flip is reported beside it: a flipped sample can still count as RR-robust
when its probability moves by less than b. :func:`records_at_temperature` turns the radii records
into RA/RR records at a temperature per detector, so the chapter's claim rules run on calibrated
detectors unchanged; :func:`exact_at` says whether a temperature is one the attack listed (only
there is its up-run shortcut exact).

**Reliability and ECE** (Guo et al. 2017): equal-width bins of the confidence max(P, 1 − P) of
the predicted class; ``ECE = Σ_k n_k/n · |accuracy_k − confidence_k|`` (:func:`reliability_table`,
:func:`reliability`: each detector's diagram before and after its temperature). **Temperature scaling**:
T minimising the validation NLL of P(fake) = σ(s/T), ``s = z_fake − z_real``, by L-BFGS-B on
log T (scipy's; the metrics layer runs no torch, so not ``torch.optim.LBFGS``, which minimises the
same one-parameter convex objective). Nothing here runs a model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from .grids import check_b_grid


def _temperatures(temperatures: Sequence[float]) -> xr.DataArray:
    t = np.atleast_1d(np.asarray(temperatures, float))
    if t.size == 0 or not np.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"temperatures={list(t)!r}: expected finite temperatures > 0")
    return xr.DataArray(t, dims="T", coords={"T": t}, attrs={"long_name": "temperature T of σ(m/T)"})


def change_at_temperature(m0, m_min, m_max, temperature):
    """The largest |ΔP_T(ŷ)| the stored margins give at ``temperature`` (arrays or DataArrays broadcast)."""
    p0 = expit(m0 / temperature)
    return np.maximum(p0 - expit(m_min / temperature), expit(m_max / temperature) - p0)


def _check_radii(ds: xr.Dataset) -> None:
    need = {"margin_clean", "margin_min", "margin_max", "pred_adv", "pred_clean"}
    missing = need - set(ds.variables)
    if missing:
        raise ValueError(f"radii records: missing {', '.join(sorted(missing))}; expected the output of "
                         "experiments.radii.radii_records")


def robust_at_temperature(ds: xr.Dataset, b_grid: Sequence[float], temperatures: Sequence[float]) -> xr.DataArray:
    """Per sample, grid radius, b and T: ``|ΔP_T(ŷ)| <= b`` (the indicator RR averages; the slack of
    :func:`dfrobust.metrics.robust_per_sample`)."""
    _check_radii(ds)
    b = check_b_grid(b_grid)
    bb = xr.DataArray(b, dims="b", coords={"b": b})
    change = change_at_temperature(ds["margin_clean"], ds["margin_min"], ds["margin_max"], _temperatures(temperatures))
    return (change <= bb + 1e-12).rename("robust")


def rr_at_temperature(ds: xr.Dataset, b_grid: Sequence[float], temperatures: Sequence[float]) -> xr.Dataset:
    """RR(ε, b) at each temperature T, and RR among the samples not flipped at ε (``RR_unflipped``; nan
    where every sample flipped), beside RA(ε) (the same at every T)."""
    robust = robust_at_temperature(ds, b_grid, temperatures)
    unflipped = ds["pred_adv"] == ds["pred_clean"]
    kept = unflipped.sum("sample")
    return xr.Dataset({
        "RR": robust.mean("sample"),
        "RR_unflipped": robust.where(unflipped).sum("sample") / kept.where(kept > 0),
        "RA": ((ds["pred_clean"] == ds["y"]) & unflipped).mean("sample"),
    })


def _check_probs(p, y) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(p, float).ravel(), np.asarray(y).ravel()
    if p.size == 0 or p.size != y.size:
        raise ValueError(f"p: {p.size} probabilities for {y.size} labels; expected one per label (n > 0)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("p: expected probabilities P(fake) in [0, 1]")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError(f"y {sorted(set(np.unique(y).tolist()))}: expected 0 (real) / 1 (fake)")
    return p, y.astype(int)


def reliability_bins(p_fake, y, n_bins: int = 10) -> pd.DataFrame:
    """The reliability diagram's bins: equal-width bins of the confidence max(P, 1 − P) in [0.5, 1]; per
    bin its edges, ``n``, mean ``confidence`` and ``accuracy`` (nan in an empty bin)."""
    p, y = _check_probs(p_fake, y)
    if isinstance(n_bins, bool) or int(n_bins) < 1:
        raise ValueError(f"n_bins={n_bins!r}: expected an integer >= 1")
    conf = np.maximum(p, 1 - p)
    correct = ((p >= 0.5).astype(int) == y).astype(float)
    edges = np.linspace(0.5, 1.0, int(n_bins) + 1)
    k = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, int(n_bins) - 1)
    n = np.bincount(k, minlength=int(n_bins))
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(k, conf, int(n_bins)) / n
        acc = np.bincount(k, correct, int(n_bins)) / n
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "n": n, "confidence": mean_conf, "accuracy": acc})


def ece(p_fake, y, n_bins: int = 10) -> float:
    """Expected calibration error over :func:`reliability_bins`."""
    bins = reliability_bins(p_fake, y, n_bins).query("n > 0")
    return float((bins["n"] * (bins["accuracy"] - bins["confidence"]).abs()).sum() / bins["n"].sum())


def fit_temperature(margin_fake, y) -> float:
    """The temperature T minimising the NLL of P(fake) = σ(s/T) on validation (``s = z_fake − z_real``)."""
    s = np.asarray(margin_fake, float).ravel()
    _check_probs(expit(s), y)
    t = np.where(np.asarray(y).ravel() == 1, 1.0, -1.0) * s       # log-likelihood of each label: log σ(t/T)

    def nll(log_t):
        inv = np.exp(-log_t[0])
        value = -log_expit(t * inv).sum()
        grad = (expit(-t * inv) * t * inv).sum()                   # d/d log T of the NLL
        return value, np.array([grad])

    res = minimize(nll, x0=np.zeros(1), jac=True, method="L-BFGS-B", bounds=[(np.log(1e-2), np.log(1e2))])
    return float(np.exp(res.x[0]))


def reliability_table(p_fake, y, n_bins: int = 10) -> xr.Dataset:
    """The reliability diagram of P(fake) against the labels as a tidy Dataset over ``bin`` (coordinates
    ``lo``/``hi``, the bin's edges of the confidence max(P, 1 − P)): ``n``, mean ``confidence``,
    ``accuracy`` (nan in an empty bin), ``gap`` = accuracy − confidence, and the scalar ``ece``
    (:func:`ece`: Σ n_k/n · |gap_k| over the non-empty bins)."""
    bins = reliability_bins(p_fake, y, n_bins)
    k = np.arange(len(bins))
    return xr.Dataset(
        {"n": ("bin", bins["n"].to_numpy(), {"long_name": "images in the bin", "units": "1"}),
         "confidence": ("bin", bins["confidence"].to_numpy(), {"long_name": "mean confidence max(P, 1 − P)",
                                                               "units": "1"}),
         "accuracy": ("bin", bins["accuracy"].to_numpy(), {"long_name": "share predicted correctly", "units": "1"}),
         "gap": ("bin", (bins["accuracy"] - bins["confidence"]).to_numpy(),
                 {"long_name": "accuracy − confidence (< 0: overconfident)", "units": "1"}),
         "ece": ((), ece(p_fake, y, n_bins), {"long_name": "expected calibration error", "units": "1"})},
        coords={"bin": k, "lo": ("bin", bins["lo"].to_numpy()), "hi": ("bin", bins["hi"].to_numpy())})


SCALINGS = ("T = 1", "fitted T")


def _per_model(models, temperature, what: str = "temperature") -> xr.DataArray:
    """``temperature`` (a number, a {model: T} mapping or a DataArray over ``model``) as a DataArray over
    ``models``, each finite and > 0 (one-line ValueError naming the value otherwise)."""
    names = [str(m) for m in np.asarray(models).tolist()]
    if isinstance(temperature, xr.DataArray):
        if temperature.ndim == 0:
            temperature = float(temperature)
        else:
            temperature = {str(m): float(t) for m, t in zip(temperature["model"].values, temperature.values)}
    if isinstance(temperature, dict):
        missing = [m for m in names if m not in temperature]
        if missing:
            raise ValueError(f"{what}: no value for model {missing[0]!r}; expected one per model of {names}")
        values = [temperature[m] for m in names]
    else:
        values = [temperature] * len(names)
    for m, t in zip(names, values):
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not np.isfinite(t) \
                or t <= 0:
            raise ValueError(f"{what}={t!r} for model {m!r}: expected a finite temperature > 0")
    return xr.DataArray(np.asarray(values, float), dims="model", coords={"model": list(models)})


def reliability(scores: xr.DataArray, y, temperature, n_bins: int = 10) -> xr.Dataset:
    """Each detector's reliability diagram before and after its temperature: ``scores`` [model, sample] the
    two-logit score s = z_fake − z_real on validation images, ``y`` their labels, ``temperature`` per model
    (as :func:`records_at_temperature`). Dims (model, scaling ∈ :data:`SCALINGS`, bin): :func:`reliability_table`
    of P(fake) = σ(s) and σ(s/T), with ``ece`` (model, scaling) and ``temperature`` (model)."""
    t = _per_model(scores["model"].values, temperature)
    out = []
    for m in scores["model"].values:
        s = np.asarray(scores.sel(model=m).values, float)
        tables = [reliability_table(expit(s / tt), y, n_bins) for tt in (1.0, float(t.sel(model=m)))]
        out.append(xr.concat(tables, dim=xr.DataArray(list(SCALINGS), dims="scaling", name="scaling")))
    ds = xr.concat(out, dim=scores["model"])
    ds["temperature"] = t
    ds.attrs.update(n_bins=int(n_bins), n_val=int(scores.sizes["sample"]))
    return ds


def listed_temperatures(ds: xr.Dataset) -> list[float]:
    """The temperatures at which the radii records' RR attack kept its up-run shortcut exact
    (``attrs["temperatures"]``, a JSON list; [1.0] when absent: the attack's own T)."""
    import json

    raw = ds.attrs.get("temperatures")
    return [1.0] if raw is None else [float(t) for t in json.loads(raw)]   # never eval a file's attribute


def exact_at(ds: xr.Dataset, temperature) -> xr.DataArray:
    """Per model: is RR read at ``temperature`` exact, i.e. is that T one of :func:`listed_temperatures`
    (the attack ran its up run wherever the up run could change |ΔP_T| at each listed T; at another T
    a skipped up run may have missed the largest change, and the reading is a looser upper bound)."""
    t = _per_model(ds["model"].values, temperature)
    listed = np.asarray(listed_temperatures(ds), float)
    return xr.DataArray([bool(np.isclose(listed, v, rtol=1e-12, atol=0).any()) for v in t.values], dims="model",
                        coords={"model": ds["model"].values})


def records_at_temperature(ds: xr.Dataset, temperature=None, *, attack: str = "rr") -> xr.Dataset:
    """The radii records (:func:`dfrobust.experiments.radii.radii_records`) as RA/RR records with dims
    (model, attack, eps, sample), the input of :func:`dfrobust.metrics.robust_ratio` and the claim rules.

    ``temperature`` None: the attack's own readings (``p_adv``, ``p_clean``: T = 1). Otherwise a T per model
    (a number, a {model: T} mapping or a DataArray over ``model``): ``p_clean`` = σ(m₀/T) and ``p_adv`` the
    extreme margin's σ(m/T) with the larger change, so ``|p_adv − p_clean|`` is :func:`change_at_temperature`
    and RR is that of :func:`robust_at_temperature`. Predictions, labels and RA do not depend on T."""
    _check_radii(ds)
    keep = ["pred_adv", "pred_clean", "in_budget"]
    if temperature is None:
        per_model = ds[keep + ["p_adv", "p_clean"]]
    else:
        t = _per_model(ds["model"].values, temperature)
        p0, lo, hi = (expit(ds[k] / t) for k in ("margin_clean", "margin_min", "margin_max"))
        per_model = ds[keep].assign(p_clean=p0, p_adv=xr.where(p0 - lo >= hi - p0, lo, hi))
    out = per_model.expand_dims(attack=[attack]).transpose("model", "attack", ...)
    out["y"] = ds["y"]
    out.attrs.update(ds.attrs, temperature="1 (the attack's own)" if temperature is None else
                     str({str(m): float(v) for m, v in zip(t["model"].values, t.values)}))
    return out
