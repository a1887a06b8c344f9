"""Chapter 07 (the certified Robust Ratio): its one validation call.

The bounds live in :mod:`dfrobust.certify`, their reduction in :mod:`dfrobust.metrics.certified`;
the chapter checks its parameters, builds its radius grid (0, then doubling radii up to
``eps_max``: certificates of these detectors only exist far below the attack chapters' radii)
and prepares the run; :func:`decide_table` gives the chapter's "what this build can decide" rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .. import certify, metrics
from ..metrics import verdicts
from ..core.device import prepare_run
from ..core.params import MAX_COUNT, MAX_GRID, check_int, check_number, check_seed, split_list
from ..core.profiles import check_data_root, check_profile
from ..models.published import PUBLISHED_DETECTORS, check_weights
from .robustness import check_sweep

#: the detectors whose layers the bounds support
#: (the published MesoNet weights too: dfrobust.models.published)
CERTIFIABLE = ("meso4", "mesoinception4", "meso4_adv", "meso4_ibp", *PUBLISHED_DETECTORS)


def check_params(*, profile: str, seed: int, models: str, method: str, crown_budget: int, eps_max: float,
                 n_eps: int, b_max: float, n_b: int, b_show: str, b_ref: float, n_samples: int, pgd_steps: int,
                 batch_size: int, device: str, data_root: str = "", min_val_auc: float = 0.7,
                 weights: str = "") -> dict:
    """Every parameter checked (one-line ValueError naming it) before any data, bound or attack.

    Returns ``models``, ``eps_grid``, ``b_grid``, ``b_show`` (panel bounds), ``b_ref`` (grid value),
    ``budget`` (None: CROWN everywhere), ``device`` (threads capped, seeds set) and ``params``.
    """
    check_profile(profile)
    check_seed(seed)
    model_list = split_list(models, "models", allowed=CERTIFIABLE)
    check_number(eps_max, "eps_max", 0, 1, lo_open=True)
    if isinstance(n_eps, bool) or not isinstance(n_eps, int) or n_eps < 2:
        raise ValueError(f"n_eps={n_eps!r}: expected an integer >= 2 (0 and at least one radius)")
    def grid(n):
        return [0.0] + [round(eps_max / 2 ** k, 8) for k in range(n - 2, -1, -1)]

    def distinct(n):
        return len(set(grid(n))) == n

    if n_eps > MAX_GRID or not distinct(n_eps):  # halving below the grid's 1e-8 precision repeats radii
        most = max(n for n in range(2, MAX_GRID + 1) if distinct(n))
        raise ValueError(f"n_eps={n_eps!r}: expected an integer in [2, {most}] for eps_max={eps_max!r} (the radii "
                         "eps_max/2**k repeat below 1e-8)")
    eps_grid = grid(n_eps)
    check_int(n_b, "n_b", 2, MAX_GRID)
    b_grid = metrics.linspace_grid(b_max, n_b, what="b")
    try:
        b_panels = [float(v) for v in split_list(b_show, "b_show")]
    except ValueError:
        raise ValueError(f"b_show={b_show!r}: expected comma-separated bounds in [0, 1]") from None
    check_sweep(["fgsm", "pgd"], eps_grid, b_grid=b_grid + b_panels + [b_ref], models=model_list,
                known_models=CERTIFIABLE)
    if method not in certify.METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(certify.METHODS)}")
    if isinstance(crown_budget, bool) or not isinstance(crown_budget, int) or crown_budget < -1:
        raise ValueError(f"crown_budget={crown_budget!r}: expected an integer >= -1 (-1: every neuron)")
    for name, v in {"n_samples": n_samples, "pgd_steps": pgd_steps, "batch_size": batch_size}.items():
        check_int(v, name, 1, MAX_COUNT)
    check_number(min_val_auc, "min_val_auc", 0, 1)
    check_data_root(profile, data_root)
    check_weights(model_list, weights)
    dev = prepare_run(device, seed)
    b_ref_used = min(b_grid, key=lambda b: abs(b - b_ref))
    params = dict(profile=profile, seed=seed, data_root=str(data_root or ""), models=model_list, method=method,
                  crown_budget=crown_budget, eps_grid=eps_grid, b_grid=b_grid, b_show=b_panels, b_ref=b_ref_used,
                  n_samples=n_samples, pgd_steps=pgd_steps, batch_size=batch_size, min_val_auc=float(min_val_auc),
                  device=str(dev), weights=str(weights or ""))
    return {"models": model_list, "eps_grid": eps_grid, "b_grid": b_grid, "b_show": b_panels, "b_ref": b_ref_used,
            "budget": None if crown_budget < 0 else int(crown_budget), "device": dev, "params": params}


def decide_table(cert: xr.Dataset, change_atk: xr.DataArray, *, b_ref: float, violations: int,
                 band_margin: float = 0.1) -> pd.DataFrame:
    """"What this build can decide" for the certified chapter.

    * soundness: no attack exceeds a certified change (exact, over every (model, ε, sample) cell);
    * per detector and radius ε > 0: "certificate and attack agree within ``band_margin``": the band
      RR_attack − RR_certified at (ε, ``b_ref``) is the share of samples the attacks could not move by
      more than b but no certificate covers, a proportion whose 95 % Wilson interval must lie at or
      below the margin. It measures the certificate's looseness *and* the attacks' weakness together:
      a refuted row says the two methods disagree, not which one is off;
    * with two or more detectors: "A is provably more robust than B", holding when A's certified
      RR exceeds B's attack-based RR at some (ε, b_ref); exact for these samples.
    """
    cert_ok = metrics.certified_per_sample(cert, [b_ref]).isel(b=0, drop=True)
    atk_ok = change_atk <= b_ref + 1e-12
    gap = atk_ok & ~cert_ok                                      # robust to the attacks, not certified
    n_cells = int(change_atk.size)
    rows = [verdicts.Verdict("no attack exceeds a certified change (soundness)",
                             verdicts.HOLDS if violations == 0 else verdicts.REFUTED,
                             "holds if no (model, ε, sample) cell has an attack change above its certificate "
                             "(exact, no interval)", 0.0, float(violations), 0.0, float(violations), n_cells, None,
                             "estimate: cells violated")]
    n = int(cert.sizes["sample"])
    for m in cert["model"].values.tolist():
        for e in (float(e) for e in cert["eps"].values if e > 0):
            k = int(gap.sel(model=m, eps=e).sum())
            rows.append(verdicts.threshold(k / n, *verdicts.wilson(k, n), n=n, target=band_margin, above=False,
                                           claim=f"{m}: certificate and attack agree within {band_margin:g} at "
                                                 f"ε = {e * 255:.3g}/255, b = {b_ref:g}",
                                           note="estimate: the band RR_attack − RR_certified"))
    models = cert["model"].values.tolist()
    if len(models) < 2:
        rows.append(verdicts.Verdict("one detector provably more robust than another", verdicts.INCONCLUSIVE,
                                     "holds if a certified RR exceeds another detector's attack-based RR at some "
                                     "(ε, b_ref)", 0.0, np.nan, np.nan, np.nan, n, None,
                                     f"only {len(models)} MesoNet analysed (see the quality gate)"))
    else:
        rr_c, rr_a = cert_ok.mean("sample"), atk_ok.mean("sample")
        for a in models:
            for b in models:
                if a == b:
                    continue
                d = (rr_c.sel(model=a) - rr_a.sel(model=b)).where(cert["eps"] > 0)
                best = float(d.max())
                rows.append(verdicts.Verdict(f"{a} provably more robust than {b} (b = {b_ref:g})",
                                             verdicts.HOLDS if best > 0 else verdicts.INCONCLUSIVE,
                                             "holds if the certified RR of the first exceeds the attack-based RR of "
                                             "the second at some ε > 0 (exact for these samples); else "
                                             "inconclusive (the bounds cannot tell)", 0.0, best, best, best, n, None,
                                             "estimate: the largest excess"))
    return verdicts.verdict_table(rows)[["claim", "verdict", "estimate", "lo", "hi", "margin", "n", "n_needed",
                                         "rule", "note"]]


def first_order_records(detectors: dict, images, eps_grid) -> xr.DataArray:
    """:func:`dfrobust.certify.first_order_change` of every detector, dims (model, eps, sample)."""
    parts = [certify.first_order_change(d, images, eps_grid) for d in detectors.values()]
    return xr.concat(parts, dim=pd.Index(list(detectors), name="model"))


def band_table(cert: xr.Dataset, change_atk: xr.DataArray, first_order: xr.DataArray, b: float) -> pd.DataFrame:
    """Per detector and radius ε > 0 at bound ``b``: the certified RR (a lower bound of the formal RR), the
    attack-based RR (an upper bound), the band between them with its 95 % Wilson interval (the share of
    samples in the gap), the first-order estimate's RR beside them, and ``exact``: the band is closed, so the
    RR there is known exactly for these samples (the only exact RR of the book)."""
    cert_ok = metrics.certified_per_sample(cert, [b]).isel(b=0, drop=True)
    atk_ok = change_atk <= b + 1e-12
    fo_ok = first_order <= b + 1e-12
    n = int(cert.sizes["sample"])
    rows = []
    for m in cert["model"].values.tolist():
        for e in (float(e) for e in cert["eps"].values if e > 0):
            k = int((atk_ok & ~cert_ok).sel(model=m, eps=e).sum())
            lo, hi = verdicts.wilson(k, n)
            rows.append({"model": m, "ε·255": round(e * 255, 4), "b": b, "n": n,
                         "RR certified": float(cert_ok.sel(model=m, eps=e).mean()),
                         "RR attack": float(atk_ok.sel(model=m, eps=e).mean()),
                         "band": k / n, "band 95% lo": lo, "band 95% hi": hi,
                         "RR first-order": float(fo_ok.sel(model=m, eps=e).mean()), "exact": k == 0})
    return pd.DataFrame(rows)
