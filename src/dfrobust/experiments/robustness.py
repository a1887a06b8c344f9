"""Chapter 03 (RA and RR of the detectors under attack): its parameters, sections, tables and verdicts.

What the notebook calls: :func:`check_params` (the typed parameters, no side effects), :func:`setup`
(manifest, detectors, quality gate, selection), :func:`evaluation_set`, :func:`analyse`,
:func:`minimal_section` and :func:`decide_rows`; each section returns what its page shows. The
records they read come from the record engine (:mod:`dfrobust.experiments.records`: what a record
is, the label attacked, the ε-monotone worst case, why attack-based RR is an upper bound), run per
cell by the generic sweep engine (:mod:`dfrobust.study.sweep`) on the chapter's own plan
(:func:`sweep_plan`; :func:`sweep_records` adds the worst case to the merged shards).

Chapter 03's tables: :func:`claim_table` (the verdicts), :func:`bound_table` (each attack against
the worst case), :func:`tightening_table` (how much the RR attack lowers PGD's RR bound, paired),
and the readings of the minimal records against an L2 radius (:func:`minimal_per_sample`,
:func:`minimal_curves`, :func:`minimal_summary`, :func:`radius_grid`). Every attack-based RR here
is an upper bound of the formal RR and is called one. The bootstrap median of the minimal ||δ||₂ is
a weighted quantile on the study's shared multinomial resamples (``metrics.bootstrap_weights``),
written by hand because ``scipy.stats.bootstrap`` neither shares resamples across metrics nor takes
the cluster weights, and it must keep ``inf`` (never flipped) as a value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from .. import attacks as _attacks
from .. import metrics
from ..core.device import pick_device
from ..metrics.bootstrap import n_units
from ..metrics.grids import check_b_grid
from .records import (attack_options, budgeted_linf, check_sweep, cw_options, identity_subset, load_samples,
                      minimal_records, units_label, with_worst_case)


# ----------------------------------------------------------------------------- analysis tables

def ra_rr_with_ci(records: xr.Dataset, b_grid: Sequence[float], *, by: str = "sample",
                  n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> tuple[xr.Dataset, xr.Dataset]:
    """RA and RR with bootstrap CIs from one shared set of resamples (by sample or by video)."""


    w = metrics.bootstrap_weights(records, by=by, n_boot=n_boot, seed=seed)
    ra = metrics.bootstrap(metrics.correct_adv(records), weights=w, ci=ci, seed=seed, by=by)
    rr = metrics.bootstrap(metrics.robust_per_sample(records, b_grid), weights=w, ci=ci, seed=seed, by=by)
    return ra, rr


def group_table(records: xr.Dataset, *, eps: float, b: float, by: str = "sample", n_boot: int = 1000,
                seed: int = 0, coord: str = "group") -> pd.DataFrame:
    """RA and RR(ε, b) per demographic group with bootstrap CIs (long table; empty, with the columns,
    when no sample has a group: real data without demographic labels)."""
    columns = ["model", "attack", "group", "metric", "value", "lo", "hi", "n"]
    if coord not in records.coords:
        raise ValueError(f"coord={coord!r}: not a sample coordinate of the records")
    rec = records.sel(eps=[eps], method="nearest")
    rows = []
    for g in sorted(set(rec[coord].values.tolist())):
        if g == "":
            continue
        sub = rec.isel(sample=np.flatnonzero(rec[coord].values == g))
        ra, rr = ra_rr_with_ci(sub, [b], by=by, n_boot=n_boot, seed=seed)
        for name, ds in (("RA", ra), ("RR", rr.isel(b=0, drop=True))):
            df = ds.isel(eps=0, drop=True).to_dataframe()[["estimate", "lo", "hi"]].reset_index()
            rows.append(df.assign(group=g, metric=name, n=n_units(sub, by)))
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.concat(rows, ignore_index=True).rename(columns={"estimate": "value"})
    return out[columns]


def claim_table(records: xr.Dataset, b_grid: Sequence[float], *, ra_margin: float = 0.05,
                rr_margin: float = 0.05, alpha: float = 0.05, ra_window: tuple[float, float] = (0.2, 0.8),
                radii: str = "informative", by: str = "sample", n_boot: int = 1000, seed: int = 0,
                attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Decide the paper's claim "similar RA, different RR" for every attack and model pair.

    One row per (attack, model pair) with the verdict of the claim and of its two parts (RA
    similar by TOST, RR different by a simultaneous band over b ∈ (0, b_max] that must exclude
    ±``rr_margin``); the rule, margin, interval, n (units of ``by``) and n needed of each come from
    :func:`dfrobust.metrics.verdicts.similar_ra_different_rr`. The comparisons are one family at
    family-wise level ``alpha``, decided by Holm's step-down (:func:`dfrobust.metrics.verdicts.holm`;
    column ``level``: the level a row was decided or last tested at). All pairs share one set of
    bootstrap resamples.
    """
    from ..metrics import verdicts as V

    models = [str(m) for m in records.model.values]
    names = [str(a) for a in records.attack.values] if attacks is None else list(attacks)
    w = metrics.bootstrap_weights(records, by=by, n_boot=n_boot, seed=seed)
    keys = [(a, m1, m2) for a in names for i, m1 in enumerate(models) for m2 in models[i + 1:]]
    decide = lambda k, level: V.similar_ra_different_rr(
        records, k[1], k[2], k[0], b_grid, ra_margin=ra_margin, rr_margin=rr_margin, alpha=level,
        ra_window=ra_window, radii=radii, weights=w, by=by)
    rows = []
    for (a, m1, m2), (r, level) in (V.holm(decide, keys, alpha).items() if keys else []):
        c, ra, rr = r["claim"], r["ra"], r["rr"]
        rows.append({
            "attack": a, "model_a": m1, "model_b": m2, "verdict": c.verdict, "eps": r["eps"], "b": r["b"],
            "n_radii": len(r["radii"]), "level": level,
            "RA_diff": ra.estimate, "RA_lo": ra.lo, "RA_hi": ra.hi, "RA_verdict": ra.verdict,
            "RR_diff": rr.estimate, "RR_lo": rr.lo, "RR_hi": rr.hi, "RR_verdict": rr.verdict,
            "n": c.n, "unit": by, "n_needed": c.n_needed, "note": c.note, "claim_verdict": c,
        })
    cols = ["attack", "model_a", "model_b", "verdict", "eps", "b", "n_radii", "level", "RA_diff", "RA_lo", "RA_hi",
            "RA_verdict", "RR_diff", "RR_lo", "RR_hi", "RR_verdict", "n", "unit", "n_needed", "note", "claim_verdict"]
    out = pd.DataFrame(rows, columns=cols)
    out["n_needed"] = out["n_needed"].astype("Int64")
    return out


SUB_CLAIM_PARTS = {"similar_ra": "ra", "different_rr": "rr", "literal": "claim"}
SUB_CLAIM_TITLES = {"similar_ra": "Similar RA", "different_rr": "Different RR", "literal": "The literal claim"}


def decide_claims(records: xr.Dataset, b_grid: Sequence[float], claims: Mapping, *, by: str, n_boot: int = 1000,
                  seed: int = 0, n_sim: int = 50, sim_boot: int = 200) -> dict:
    """Chapter 03's verdicts under the sub-claims fixed in ``study.yml`` (:func:`subclaims`).

    Returns ``table`` (:func:`claim_table`, Holm over the comparisons), ``headline`` (the literal claim
    over every comparison, :func:`dfrobust.metrics.verdicts.overall`), ``deciding`` (the comparison
    whose numbers the headline quotes) and, for it, ``sub`` (name → its :class:`Verdict`), ``power``
    (name → share of ``n_sim`` data sets resampled by ``by`` from these records at this n on which the
    sub-claim holds, with ``sim_boot`` resamples each) and ``n_needed`` (the identities at which the
    literal claim's simulated power reaches ``claims["power"]``, None when 16× the units do not).
    """
    from ..metrics import verdicts as V

    subs = claims["sub_claims"]
    kw = dict(ra_margin=subs["similar_ra"]["margin"], rr_margin=subs["different_rr"]["margin"],
              ra_window=tuple(claims["ra_window"]), radii=claims["radii"])
    table = claim_table(records, b_grid, alpha=claims["alpha"], by=by, n_boot=n_boot, seed=seed, **kw)
    out = {"table": table, "headline": V.overall(list(table["claim_verdict"]), "similar RA, different RR "
                                                  "(some attack and model pair)"),
           "deciding": None, "sub": {}, "power": {}, "n_needed": None, "level": claims["alpha"]}
    if not len(table):
        return out
    held = table[table["verdict"] == V.HOLDS]
    pick = held if len(held) else table
    row = pick.loc[pick["n_needed"].astype("Float64").fillna(np.inf).astype(float).idxmin()] if not len(held) \
        else held.loc[held["RR_diff"].abs().idxmax()]
    key = (row["attack"], row["model_a"], row["model_b"])
    level = float(row["level"])
    rule = lambda rec: {k: v for k, v in V.similar_ra_different_rr(
        rec, key[1], key[2], key[0], b_grid, alpha=level, by=by, n_boot=sim_boot, seed=seed, **kw).items()
        if k in SUB_CLAIM_PARTS.values()}
    r = V.similar_ra_different_rr(records, key[1], key[2], key[0], b_grid, alpha=level, by=by, n_boot=n_boot,
                                  seed=seed, **kw)
    power = V.simulated_power(records, rule, by=by, n_sim=n_sim, seed=seed)
    lit = lambda rec: rule(rec)["claim"]
    need, _ = V.n_needed_by_simulation(records, lit, by=by, power=claims["power"], n_sim=n_sim, seed=seed)
    out.update(deciding=key, level=level, n_needed=need,
               sub={name: r[part] for name, part in SUB_CLAIM_PARTS.items()},
               power={name: power[part] for name, part in SUB_CLAIM_PARTS.items()})
    return out


def claim_sentences(decided: Mapping, claims: Mapping, *, unit: str = "identity") -> str:
    """One plain sentence per sub-claim (verdict, statistic, interval, n in units, simulated power) for
    the comparison that decides (or comes closest to deciding) the claim, as Markdown bullets."""
    if decided["deciding"] is None:
        return "No comparison: fewer than two detectors were analysed, so no sub-claim was decided."
    units = unit if unit == "sample" else unit.replace("identity", "identities") if unit == "identity" else unit + "s"
    a, m1, m2 = decided["deciding"]
    lines = []
    for name, v in decided["sub"].items():
        sc = claims["sub_claims"][name]
        iv = "no interval" if not np.isfinite(v.lo) else f"{v.estimate:+.3f} [{v.lo:+.3f}, {v.hi:+.3f}]"
        lines.append(f"- **{SUB_CLAIM_TITLES[name]}** ({m1} vs {m2}, {a.upper()}): **{v.verdict}**. "
                     f"{sc['statistic']} = {iv}, margin ±{sc['margin']:g}, n = {v.n} {units}; simulated power "
                     f"{decided['power'][name]:.0%} at this n.")
    need, n0 = decided["n_needed"], decided["sub"]["literal"].n
    goal = f"- Power {claims['power']:.0%} for the literal claim (simulated at the estimated effect): "
    lines.append(goal + (f"reached at this build's n = {n0} {units}." if need == n0 else
                         f"needs more than {need // 2} and at most about {need} {units}." if need is not None else
                         f"not reached at {16 * n0} {units} (16× this build)."))
    return "\n".join(lines)


def bound_table(records: xr.Dataset, *, eps: float, b: float, worst: str = "worst", by: str = "sample",
                n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """How much the worst case tightens each attack's RR upper bound at (ε, b): paired bootstrap
    of RR(attack) − RR(worst) per model (0 where the attack already is the worst case)."""
    if worst not in records.attack.values:
        raise ValueError(f"worst={worst!r}: not an attack of the records; expected the output of with_worst_case")
    rec = records.sel(eps=[eps], method="nearest")
    w = metrics.bootstrap_weights(rec, by=by, n_boot=n_boot, seed=seed)
    rps = metrics.robust_per_sample(rec, [b]).isel(eps=0, b=0, drop=True).astype(float)
    rows = []
    for a in [str(x) for x in rec.attack.values if x != worst]:
        d = metrics.bootstrap(rps.sel(attack=a) - rps.sel(attack=worst), weights=w, ci=ci)
        for m in rec.model.values:
            dm = d.sel(model=m)
            rows.append({"model": str(m), "attack": a, "eps": float(rec.eps.values[0]), "b": float(b),
                         "RR_attack": float(rps.sel(attack=a, model=m).mean()),
                         "RR_worst": float(rps.sel(attack=worst, model=m).mean()),
                         "tightening": float(dm["estimate"]), "lo": float(dm["lo"]), "hi": float(dm["hi"]),
                         "n": n_units(rec, by)})
    return pd.DataFrame(rows)


def tightening_table(records: xr.Dataset, b_grid: Sequence[float], *, loose: str = "pgd", tight: str = "rr",
                     by: str = "sample", n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """How much attack ``tight`` lowers attack ``loose``'s RR upper bound: RR(loose) − RR(tight) per
    (model, ε > 0, b > 0) with a paired bootstrap interval (one set of resamples for every cell).

    A positive value means ``tight`` found a larger |ΔP(ŷ)| than ``loose`` on that share of samples,
    so ``loose`` alone overstates RR by that much; a negative one that ``loose`` was the stronger.
    """
    have = [str(a) for a in records.attack.values]
    for k, a in (("loose", loose), ("tight", tight)):
        if a not in have:
            raise ValueError(f"{k}={a!r}: not an attack of the records; expected one of {', '.join(have)}")
    b_pos = [float(b) for b in check_b_grid(b_grid) if b > 0]
    if not b_pos:
        raise ValueError(f"b_grid={list(b_grid)!r}: expected at least one bound b > 0")
    rec = records.isel(eps=np.flatnonzero(records.eps.values > 0))
    if rec.sizes["eps"] == 0:
        raise ValueError("records: no radius ε > 0; expected an ε sweep")
    w = metrics.bootstrap_weights(rec, by=by, n_boot=n_boot, seed=seed)
    rps = metrics.robust_per_sample(rec.sel(attack=[loose, tight]), b_pos).astype(float)
    d = metrics.bootstrap(rps.sel(attack=loose) - rps.sel(attack=tight), weights=w, ci=ci)
    rr = rps.mean("sample")
    out = d[["estimate", "lo", "hi"]].to_dataframe().reset_index().rename(columns={"estimate": "tightening"})
    out = out.merge(rr.sel(attack=loose, drop=True).to_dataframe("RR_loose").reset_index(), on=["model", "eps", "b"])
    out = out.merge(rr.sel(attack=tight, drop=True).to_dataframe("RR_tight").reset_index(), on=["model", "eps", "b"])
    out = out.assign(loose=loose, tight=tight, n=n_units(rec, by))
    return out[["model", "loose", "tight", "eps", "b", "RR_loose", "RR_tight", "tightening", "lo", "hi", "n"]]


# ----------------------------------------------------------------------------- minimal perturbations

def radius_grid(minimal: xr.Dataset, n: int = 41) -> np.ndarray:
    """L2 radii from 0 to just past the largest minimal ||δ||₂ found by any model (``n`` points;
    up to 1 when nothing was found): the axis on which the minimal records are read."""
    if isinstance(n, bool) or int(n) < 2:
        raise ValueError(f"n={n!r}: expected an integer >= 2 radii")
    v = np.asarray(minimal["l2_min"].values, float)
    top = float(v[np.isfinite(v)].max()) * 1.05 if np.isfinite(v).any() else 1.0
    return np.linspace(0.0, top if top > 0 else 1.0, int(n))


def minimal_per_sample(minimal: xr.Dataset, radii: Sequence[float], b_grid: Sequence[float]) -> xr.Dataset:
    """Per-sample readings of minimal records at L2 radius r (a reduction, no attack):

    * ``correct`` [model, r, sample]: clean correct and no flip within r (``l2_min > r``) → mean is RA(r);
    * ``robust`` [model, r, b, sample]: no perturbation of ||δ||₂ <= r found that moves P(ŷ) by more
      than b (``not (l2_min <= r and |ΔP(ŷ)| at it > b)``) → mean is RR(r, b).

    Both are **upper bounds** (CW finds one perturbation per sample, the smallest flip it can); RR(r, b)
    for b below P(ŷ|x) − 0.5 is bounded only by that one flip.
    """
    r = np.asarray(radii, float)
    if r.ndim != 1 or r.size == 0 or (r < 0).any() or not np.isfinite(r).all():
        raise ValueError(f"radii={list(np.atleast_1d(r))!r}: expected finite L2 radii >= 0")
    b = check_b_grid(b_grid)
    r_da = xr.DataArray(r, dims="r", coords={"r": r})
    b_da = xr.DataArray(b, dims="b", coords={"b": b})
    within = minimal["l2_min"] <= r_da                                     # flip found inside radius r
    change = abs(minimal["p_adv"] - minimal["p_clean"])
    correct = (minimal["pred_clean"] == minimal["y"]) & ~within
    robust = ~(within & (change > b_da + 1e-12))
    out = xr.Dataset({"correct": correct.transpose("model", "r", "sample"),
                      "robust": robust.transpose("model", "r", "b", "sample")})
    out["r"].attrs.update(long_name="L2 radius r of the minimal perturbation", units="pixel [0,1]")
    return out


def minimal_curves(minimal: xr.Dataset, radii: Sequence[float], b: float, *, by: str = "sample",
                   n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """RA(r) and RR(r, b) of the minimal records with bootstrap intervals, long table
    (model, metric, r, value, lo, hi, n); both metrics share one set of resamples."""
    ps = minimal_per_sample(minimal, radii, [b])
    w = metrics.bootstrap_weights(minimal, by=by, n_boot=n_boot, seed=seed)
    rows = []
    for name, v in (("RA", ps["correct"]), ("RR", ps["robust"].isel(b=0, drop=True))):
        d = metrics.bootstrap(v, weights=w, ci=ci).to_dataframe()[["estimate", "lo", "hi"]].reset_index()
        rows.append(d.assign(metric=name))
    out = pd.concat(rows, ignore_index=True).rename(columns={"estimate": "value"})
    return out.assign(b=float(b), n=n_units(minimal, by))[["model", "metric", "r", "b", "value", "lo",
                                                                   "hi", "n"]]


def _weighted_quantile(values: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Per resample (rows of integer weights ``w``) the ``q`` quantile of ``values`` (inverted CDF,
    so an infinite value is a value, not a nan)."""
    order = np.argsort(values, kind="stable")
    v, cw = values[order], np.cumsum(w[:, order], axis=1)
    k = np.argmax(cw >= q * cw[:, -1:] - 1e-9, axis=1)
    return v[k]


def minimal_summary(minimal: xr.Dataset, *, by: str = "sample", n_boot: int = 1000, seed: int = 0,
                    ci: float = 0.95) -> pd.DataFrame:
    """Per model: median minimal ||δ||₂ (inf when fewer than half the samples were flipped) and
    the share of samples flipped, each with a bootstrap interval; the resamples are shared."""
    w = metrics.bootstrap_weights(minimal, by=by, n_boot=n_boot, seed=seed)
    one = np.ones((1, minimal.sizes["sample"]))
    qs = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    rows = []
    for m in minimal.model.values:
        v = np.asarray(minimal["l2_min"].sel(model=m).values, float)
        f = np.isfinite(v).astype(float)
        med = _weighted_quantile(v, w, 0.5)
        share = (w @ f) / w.sum(1)
        rows.append({"model": str(m), "median_l2": float(_weighted_quantile(v, one, 0.5)[0]),
                     "median_lo": float(np.quantile(med, qs[0], method="inverted_cdf")),
                     "median_hi": float(np.quantile(med, qs[1], method="inverted_cdf")),
                     "found": float(f.mean()), "found_lo": float(np.quantile(share, qs[0])),
                     "found_hi": float(np.quantile(share, qs[1])),
                     "median_linf": float(np.median(np.asarray(minimal["linf_at_min"].sel(model=m).values)[f > 0]))
                     if f.any() else float("nan"),
                     "n": n_units(minimal, by)})
    return pd.DataFrame(rows)


def subclaims(spec: Mapping | None = None) -> dict:
    """Chapter 03's sub-claims as ``study.yml`` fixes them before any run (the ``claims:`` block of the
    ``03_robustness`` entry; ``spec``: a parsed study.yml, else the project's), checked: ``alpha``,
    ``ra_window``, ``radii``, ``power``, ``sub_claims`` (name → statistic, margin, direction,
    primary) and ``by_construction``. One-line ValueError naming the bad entry."""
    from ..core.params import check_number
    from ..core.profiles import load_spec

    spec = load_spec() if spec is None else spec
    entry = next((e for e in spec.get("notebooks") or [] if isinstance(e, Mapping) and e.get("name") == "03_robustness"),
                 None)
    c = (entry or {}).get("claims")
    if not isinstance(c, Mapping):
        raise ValueError("study.yml: 03_robustness has no claims: block; expected the sub-claims fixed before the run")
    alpha = check_number(c.get("alpha"), "claims.alpha", 0, 0.25, lo_open=True)
    power = check_number(c.get("power"), "claims.power", 0, 1, lo_open=True)
    win = c.get("ra_window")
    if not (isinstance(win, (list, tuple)) and len(win) == 2 and all(isinstance(v, (int, float)) for v in win)
            and 0 <= win[0] < win[1] <= 1):
        raise ValueError(f"claims.ra_window={win!r}: expected [lo, hi] with 0 <= lo < hi <= 1")
    if c.get("radii") not in ("informative", "all"):
        raise ValueError(f"claims.radii={c.get('radii')!r}: expected 'informative' (both RAs in ra_window) or 'all'")
    subs = {}
    for sc in c.get("sub_claims") or []:
        name = sc.get("name") if isinstance(sc, Mapping) else None
        if name not in ("similar_ra", "different_rr", "literal"):
            raise ValueError(f"claims.sub_claims name={name!r}: expected similar_ra, different_rr or literal")
        for k in ("statistic", "direction"):
            if not isinstance(sc.get(k), str) or not sc[k]:
                raise ValueError(f"claims.sub_claims[{name}].{k}={sc.get(k)!r}: expected a sentence")
        subs[name] = {"statistic": sc["statistic"], "direction": sc["direction"], "primary": bool(sc.get("primary")),
                      "margin": check_number(sc.get("margin"), f"claims.sub_claims[{name}].margin", 0, 1, lo_open=True)}
    if set(subs) != {"similar_ra", "different_rr", "literal"}:
        raise ValueError(f"claims.sub_claims: {sorted(subs)}; expected similar_ra, different_rr and literal")
    lr = c.get("log_radius")
    if not isinstance(lr, Mapping):
        raise ValueError(f"claims.log_radius={lr!r}: expected {{margin, statistic, direction}} for the radii comparison")
    for k in ("statistic", "direction"):
        if not isinstance(lr.get(k), str) or not lr[k]:
            raise ValueError(f"claims.log_radius.{k}={lr.get(k)!r}: expected a sentence")
    prim = lr.get("primary")
    if prim is not None and not (isinstance(prim, (list, tuple)) and len(prim) == 2
                                 and all(isinstance(m, str) and m for m in prim) and prim[0] != prim[1]):
        raise ValueError(f"claims.log_radius.primary={prim!r}: expected two different detector names [a, b]")
    log_radius = {"statistic": lr["statistic"], "direction": lr["direction"],
                  "primary": None if prim is None else [str(m) for m in prim],
                  "margin": check_number(lr.get("margin"), "claims.log_radius.margin", 0, 5, lo_open=True)}
    return {"alpha": float(alpha), "power": float(power), "ra_window": [float(win[0]), float(win[1])],
            "radii": c["radii"], "sub_claims": subs, "log_radius": log_radius,
            "by_construction": [str(x) for x in c.get("by_construction") or []]}


def check_params(*, data_root: str = "", profile: str, seed: int, models: str, attacks: str, eps_min: float, eps_max: float,
                 n_eps: int, b_max: float, n_b: int, n_samples: int, pgd_steps: int, cw_c_init: float,
                 cw_search_steps: int, cw_steps: int, cw_lr: float, n_boot: int, rr_level: float, eps_ref: float,
                 b_ref: float, target_half_width: float, min_val_auc: float, device: str, shard_size: int = 32,
                 workers: int = 0, weights: str = "", radii_steps: int = 1, radii_bisect: int = 2,
                 convergence_n: int = 0, cw_n: int = 0, l2_eps_min: float = 0.05, l2_eps_max: float = 2.0,
                 n_l2: int = 4) -> dict:
    """Every parameter of the RA-vs-RR chapter checked before any data or model is touched, and the
    sub-claims read from ``study.yml`` (:func:`subclaims`). No side effect: the device is checked
    (a one-line error when it is absent) but seeds and threads are :func:`prepare_run`'s job.

    One-line ValueError naming the parameter and what is expected. Returns the canonical values:
    ``models`` and ``attacks`` lists, ``eps_grid`` (0 plus ``n_eps`` log-spaced radii), ``b_grid``,
    the grid values ``eps_ref``/``b_ref`` nearest the requested ones, ``attack_kw`` (for
    :func:`attack_records`), ``cw_kw`` (for :func:`minimal_records`), ``device`` (a torch.device)
    and ``params``, the provenance dict of the run (JSON-serialisable). ``shard_size`` and
    ``workers`` say how the sweep is cut into cells and run (:mod:`dfrobust.study.sweep`):
    ``shard_size`` images per cell (part of every cell's identity), ``workers`` 0 for the cells in
    this process, N for a local dask cluster of N single-threaded workers (records identical).
    ``radii_steps``, ``radii_bisect`` and ``convergence_n`` set the critical-radii section
    (:func:`dfrobust.experiments.radii.radii_section`; returned as ``radii``). ``cw_n``: images (whole
    identities, seeded; 0: all) of the CW-L2 and L2-ball RR sections; ``l2_eps_min``, ``l2_eps_max``, ``n_l2``:
    the L2 radius grid of the L2-ball RR (0 plus ``n_l2`` log-spaced radii; returned as ``l2_grid``).
    """
    from ..core.params import MAX_BOOT, MAX_COUNT, MAX_GRID, check_int, check_number, check_seed, split_list
    from ..core.profiles import check_profile
    from ..models import DETECTORS
    from ..core.profiles import check_data_root
    from ..models.published import check_weights

    check_profile(profile)
    check_seed(seed)
    model_list = split_list(models, "models", allowed=DETECTORS)
    attack_list = split_list(attacks, "attacks", allowed=_attacks.ATTACKS)
    for a in attack_list:
        if a in _attacks.UNBUDGETED:
            raise ValueError(f"attacks={attacks!r}: {a} has no budget and is not part of the ε sweep; it runs in "
                             "the minimal-perturbation section (cw_* parameters); use cwinf in the sweep")
    check_number(eps_min, "eps_min", 0, 1, lo_open=True)
    check_number(eps_max, "eps_max", 0, 1, lo_open=True)
    if eps_max <= eps_min:
        raise ValueError(f"eps_max={eps_max!r}: expected a radius above eps_min={eps_min!r}")
    check_int(n_eps, "n_eps", 1, MAX_GRID)
    check_int(shard_size, "shard_size", 1, MAX_COUNT)
    check_int(workers, "workers", 0, 256)
    eps_grid = metrics.log_grid(eps_min, eps_max, n_eps)
    check_number(b_max, "b_max", 0, 1, lo_open=True)
    n_b = check_int(n_b, "n_b", 2, MAX_GRID)
    b_grid = metrics.linspace_grid(b_max, n_b, what="b")
    for name, v in {"n_samples": n_samples, "pgd_steps": pgd_steps, "cw_search_steps": cw_search_steps,
                    "cw_steps": cw_steps, "n_boot": n_boot}.items():
        check_int(v, name, 2 if name == "n_boot" else 1, MAX_BOOT if name == "n_boot" else MAX_COUNT)
    c_lo, c_hi = _attacks.DEFAULTS["cw"]["c_min"], _attacks.DEFAULTS["cw"]["c_max"]
    check_number(cw_c_init, "cw_c_init", c_lo, c_hi)
    check_number(cw_lr, "cw_lr", 0, 10, lo_open=True)
    check_number(rr_level, "rr_level", 0, 1)
    check_number(eps_ref, "eps_ref", 0, 1, lo_open=True)
    check_number(b_ref, "b_ref", 0, 1, lo_open=True)
    check_number(target_half_width, "target_half_width", 0, 0.5, lo_open=True)
    check_number(min_val_auc, "min_val_auc", 0, 1)
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device={device!r}: expected auto, cpu or cuda")
    names, eps = check_sweep(attack_list, eps_grid, b_grid=b_grid, models=model_list, known_models=DETECTORS)
    attack_kw = attack_options(names, steps=pgd_steps)
    for a in names:
        _attacks.check_options(a, **attack_kw.get(a, {}))
    cw_kw = cw_options(c_init=cw_c_init, search_steps=cw_search_steps, steps=cw_steps, lr=cw_lr)
    check_int(radii_steps, "radii_steps", 1, 100)
    check_int(radii_bisect, "radii_bisect", 0, 20)
    check_int(convergence_n, "convergence_n", 0, MAX_COUNT)
    if convergence_n > n_samples:
        raise ValueError(f"convergence_n={convergence_n!r}: expected at most n_samples={n_samples!r} (a subsample "
                         "of the attacked images)")
    radii = {"steps": int(radii_steps), "n_bisect": int(radii_bisect), "convergence_n": int(convergence_n)}
    if isinstance(cw_n, bool) or not isinstance(cw_n, (int, np.integer)) or cw_n < 0:
        raise ValueError(f"cw_n={cw_n!r}: expected an integer >= 0 (images, whole identities; 0 = all)")
    if cw_n > n_samples:
        raise ValueError(f"cw_n={cw_n!r}: expected at most n_samples={n_samples!r} (a subsample of the attacked images)")
    check_number(l2_eps_min, "l2_eps_min", 0, 1000, lo_open=True)
    check_number(l2_eps_max, "l2_eps_max", 0, 1000, lo_open=True)
    if l2_eps_max <= l2_eps_min:
        raise ValueError(f"l2_eps_max={l2_eps_max!r}: expected an L2 radius above l2_eps_min={l2_eps_min!r}")
    check_int(n_l2, "n_l2", 1, MAX_GRID)
    l2_grid = metrics.log_grid(l2_eps_min, l2_eps_max, n_l2, what="l2_eps")
    check_data_root(profile, data_root)
    check_weights(model_list, weights)
    claims = subclaims()
    dev = pick_device(device)  # one-line error if absent; seeds and threads: prepare_run
    positive = [e for e in eps if e > 0]
    eps_ref_used = min(positive, key=lambda e: abs(e - eps_ref))
    b_ref_used = min(b_grid, key=lambda b: abs(b - b_ref))
    params = dict(profile=profile, seed=int(seed), data_root=str(data_root or ""), models=model_list, attacks=names, eps_grid=eps,
                  b_grid=[float(b) for b in b_grid], n_samples=int(n_samples), pgd_steps=int(pgd_steps),
                  attack_kw=attack_kw, cw_kw={k: (float(v) if isinstance(v, float) else v) for k, v in cw_kw.items()},
                  n_boot=int(n_boot), rr_level=float(rr_level), eps_ref=float(eps_ref_used),
                  b_ref=float(b_ref_used), claims=claims,
                  target_half_width=float(target_half_width), min_val_auc=float(min_val_auc), device=str(dev),
                  shard_size=int(shard_size), workers=int(workers), weights=str(weights or ""),
                  radii_steps=radii["steps"], radii_bisect=radii["n_bisect"], convergence_n=radii["convergence_n"],
                  cw_n=int(cw_n), l2_grid=l2_grid)
    return {"models": model_list, "attacks": names, "eps_grid": eps, "b_grid": b_grid, "radii": radii,
            "cw_n": int(cw_n), "l2_grid": l2_grid,
            "eps_ref": eps_ref_used, "b_ref": b_ref_used, "attack_kw": attack_kw, "cw_kw": cw_kw,
            "device": dev, "claims": claims, "params": params}


# ----------------------------------------------------------------------------- evaluation set


@dataclass
class Setup:
    """What chapter 03 attacks: its data, detectors (trained or loaded), the quality gate's verdict,
    the test selection and the size images are loaded at."""

    manifest: pd.DataFrame
    synthetic: bool
    trained: dict            # detector name -> TrainedDetector (every requested detector)
    gate: pd.DataFrame       # dfrobust.models.study_gate
    analysed: list           # the detectors that passed it, in the requested order
    selection: pd.DataFrame  # the test rows attacked (balanced over label x group)
    size: int                # the largest input size of the analysed detectors

    @property
    def data_label(self) -> str:
        """``synthetic``, or ``real`` and the dataset's name (:func:`dfrobust.data.dataset_label`)."""
        from ..data import dataset_label

        return dataset_label(self.manifest)


def setup(p: Mapping, *, profile: str) -> Setup:
    """Chapter 03's set-up from its checked parameters (:func:`check_params`): the manifest, the
    detectors (cached checkpoints, else trained), the quality gate and the selection. The chapter
    and ``dfrobust sweep`` both call it, so they attack the same images with the same weights."""
    from ..data import get_manifest, sampling
    from ..models import study_gate
    from ..models.published import evaluation_manifest, get_detector

    q = p["params"]
    seed = int(q["seed"])
    manifest = get_manifest(profile, "images", seed=seed, data_root=q["data_root"] or None)
    synthetic = bool(manifest.attrs.get("meta", {}).get("synthetic", True))
    trained = {m: get_detector(m, manifest, weights=q.get("weights", ""), profile=profile, seed=seed,
                               device=str(p["device"])) for m in p["models"]}
    gate = study_gate(trained, q["min_val_auc"], profile)  # validation AUC and chapter 02's learned verdicts
    analysed = [m for m in p["models"] if bool(gate.set_index("model").loc[m, "analysed"])]
    # published detectors only: every split is held out for them (dfrobust.models.published)
    manifest = evaluation_manifest(manifest, p["models"])
    sel = sampling.select_samples(manifest, q["n_samples"], seed=seed)
    size = max(trained[m].input_size for m in (analysed or p["models"]))
    return Setup(manifest, synthetic, trained, gate, analysed, sel, int(size))


# ----------------------------------------------------------------------------- chapter 03's sweep plan

#: chapter 03's name in the sweep: part of every cell's key, so of every cell's seed (never change it)
SWEEP_CHAPTER = "03_robustness"


def sweep_plan(p: Mapping, s: Setup) -> dict:
    """Chapter 03's sweep plan from its checked parameters (:func:`check_params`) and :func:`setup`: the
    keyword arguments of :func:`dfrobust.study.sweep.plan_cells` — the analysed detectors' checkpoints x
    attacks x shards of the selection, at the chapter's size, ε grid, attack settings, seed and shard
    size, settled samples skipped for every b the chapter reads (``settle_b`` = its largest b). The
    chapter and ``dfrobust sweep`` both plan through here, so each reuses every shard the other wrote."""
    return dict(chapter=SWEEP_CHAPTER, detectors={m: s.trained[m].checkpoint for m in s.analysed},
                attacks=p["attacks"], eps_grid=p["eps_grid"], selection=s.selection, size=s.size,
                seed=int(p["params"]["seed"]), shard_size=int(p["params"]["shard_size"]), attack_kw=p["attack_kw"],
                device=p["device"].type, settle_b=float(max(p["b_grid"])))


def sweep_records(merged: xr.Dataset) -> xr.Dataset:
    """Chapter 03's records from its merged sweep shards: plus the per-sample worst case over the budgeted
    L∞ attacks (:func:`dfrobust.experiments.records.with_worst_case`); the ``finish`` of
    :func:`dfrobust.study.sweep.run_chapter`."""
    return with_worst_case(merged)


# ----------------------------------------------------------------------------- chapter 03's sections
# What the notebook calls: each section returns what its page shows (values the prose quotes and tables,
# as a ChapterResult glued under the prefix ``rr``) and what later sections need. Figures are drawn by
# dfrobust.figures.robustness.chapter_figures (figures sit above experiments).


@dataclass
class Samples:
    """The attacked images: tensors at the analysed detectors' size, their manifest rows, and the
    unreadable files skipped (path relative to the data home, reason)."""

    images: torch.Tensor
    labels: torch.Tensor
    meta: pd.DataFrame
    skipped: list


def evaluation_set(p: Mapping, s: Setup, *, target_half_width: float, min_val_auc: float):
    """The section "Data, detectors and the sample size": the quality gate, the power target and the
    loaded images. Returns (ChapterResult, :class:`Samples`)."""
    from ..core.results import ChapterResult
    from ..data import data_note
    from ..metrics import verdicts as V
    from ..models.gate import gate_sentence as gate_text
    from ..models.published import origin

    gate_sentence = gate_text(s.gate, min_val_auc)  # who is not analysed and why, and the rule applied
    strata = int(s.manifest.query("split == 'test'").groupby(["label", "group"]).ngroups) or 1
    images, labels, meta, skipped = load_samples(s.selection, s.size)
    res = ChapterResult(values=dict(
        data_label=s.data_label, data_note=data_note(s.manifest), detector_origin=origin(s.trained),
        n_samples=int(len(meta)), n_skipped=int(len(skipped)), power_n=V.power_n(target_half_width),
        power_n_strata=f"{V.power_n(target_half_width, multiple=strata)} ({strata} strata)",
        target_hw=float(target_half_width), min_val_auc=float(min_val_auc), gate_sentence=gate_sentence,
        eps_ref=float(p["eps_ref"]), b_ref=float(p["b_ref"]), level=float(p["params"]["rr_level"]),
        n_eps=len(p["eps_grid"]) - 1, eps_min=float(p["eps_grid"][1]), eps_max=float(p["eps_grid"][-1]),
        b_max=float(p["b_grid"][-1]), shard_size=int(p["params"]["shard_size"])),
        tables=dict(gate=s.gate.round(3), strata_counts=meta.groupby(["label", "group"]).size().unstack(fill_value=0)))
    return res, Samples(images, labels, meta, skipped)


@dataclass
class Analysis:
    """The ε sweep's readings: RA/RR and their intervals, the tables and the verdicts (``decided``,
    :func:`decide_claims`), with the ChapterResult of what the page quotes (``result``)."""

    result: object
    unit: str
    ra: xr.DataArray | None = None
    rr: xr.DataArray | None = None
    ra_ci: xr.Dataset | None = None
    rr_ci: xr.Dataset | None = None
    decided: dict | None = None


def _interval(v) -> str:
    return "no interval" if not np.isfinite(v.lo) else \
        f"ΔRR = {v.estimate:+.3f} [{v.lo:+.3f}, {v.hi:+.3f}] at n = {v.n}"


def analyse(p: Mapping, records: xr.Dataset | None, *, analysed: Sequence[str], n_boot: int, seed: int,
            out_dir, n_sim: int = 50) -> Analysis:
    """Every reading of the ε-sweep records (no attack runs): RA and RR with identity-bootstrap
    intervals (saved as ``rr_metrics.nc`` in ``out_dir``), the per-group table, the verdicts under
    the sub-claims of ``study.yml`` with their simulated power, the tightening and worst-case tables and
    the complementary metrics (``rr_complementary.nc``). ``records`` None: no detector was analysed."""
    from ..core import results
    from ..core.results import ChapterResult
    from ..metrics.bootstrap import cluster_unit

    claims, b_grid = p["claims"], p["b_grid"]
    eps_ref, b_ref = p["eps_ref"], p["b_ref"]
    subs = claims["sub_claims"]
    values = dict(alpha=claims["alpha"], ra_margin=subs["similar_ra"]["margin"],
                  rr_margin=subs["different_rr"]["margin"], ra_lo=claims["ra_window"][0], ra_hi=claims["ra_window"][1],
                  worst_of=", ".join(a.upper() for a in budgeted_linf(p["attacks"])))
    if records is None:
        values.update(n_units="no records", claim_verdict="inconclusive", claim_counts="no comparison",
                      claim_interval="no interval", claim_n_needed="no interval to extrapolate", claim_from="—",
                      answer="No detector passed the quality gate: nothing was attacked, no sub-claim was decided.",
                      tight_ref="not computed (no analysed detector)", tight_max="not computed",
                      bound_max="no worst case computed", n_comparisons=0, group_attack="—",
                      ex1_answer="not computed: no detector passed the quality gate",
                      ex2_answer="not computed: no comparison with an interval")
        return Analysis(ChapterResult(values=values), "sample")
    unit = cluster_unit(records)
    values["n_units"] = f"{n_units(records, unit)} {'identities' if unit == 'identity' else unit + 's'}"
    ra, rr = metrics.robust_accuracy(records), metrics.robust_ratio(records, b_grid)
    ra_ci, rr_ci = ra_rr_with_ci(records, b_grid, by=unit, n_boot=n_boot, seed=seed)
    summary = ra_ci.rename({k: f"RA_{k}" for k in ra_ci.data_vars}).merge(
        rr_ci.rename({k: f"RR_{k}" for k in rr_ci.data_vars}))
    summary["clean_accuracy"] = metrics.clean_accuracy(records)
    summary.attrs.update(records.attrs, unit=unit)
    results.save(summary, out_dir / "rr_metrics.nc")
    tables = {"ra": ra.to_dataframe().unstack("eps")["RA"].round(3)}
    atk = "worst" if "worst" in records.attack.values else str(records.attack.values[-1])
    groups = group_table(records, eps=eps_ref, b=b_ref, by=unit, n_boot=n_boot, seed=seed)
    tables["groups"] = groups[groups["attack"] == atk]
    values["group_attack"] = atk.upper()
    decided = {"table": pd.DataFrame(columns=["attack", "model_a", "model_b", "verdict", "claim_verdict"]),
               "headline": None, "deciding": None}
    if len(analysed) >= 2:
        decided = decide_claims(records, b_grid, claims, by=unit, n_boot=n_boot, seed=seed, n_sim=n_sim)
    claim_vs = list(decided["table"]["claim_verdict"])
    from ..metrics import verdicts as V

    head = V.overall(claim_vs, "similar RA, different RR (some attack and model pair)")
    decided["headline"] = head
    tables["claims"] = decided["table"].drop(columns=["claim_verdict"])
    counts = ", ".join(f"{sum(v.verdict == k for v in claim_vs)} {k}" for k in V.VERDICTS)
    frm = head.note.split("numbers from: ")[-1] if "numbers from" in head.note else "—"
    values.update(
        n_comparisons=len(claim_vs), claim_verdict=head.verdict, claim_counts=f"{counts} of {len(claim_vs)}",
        claim_interval=_interval(head),
        claim_n_needed=("no interval to extrapolate" if head.n_needed is None else
                        f"this build's n = {head.n} decides it" if head.verdict != V.INCONCLUSIVE else
                        f"a narrow enough interval would take about {int(head.n_needed)} {unit_plural(unit)} (this "
                        f"build: {head.n}; width extrapolation, see the simulated power above)"),
        claim_from=frm,
        ex2_answer=(f"about {head.n_needed} {unit_plural(unit)} for {frm} "
                    f"(this build: n = {head.n})" if head.n_needed is not None else
                    "not computed: no comparison with an interval"),
        answer=claim_sentences(decided, claims, unit=unit) if decided["deciding"] else
        "Fewer than two detectors passed the quality gate: no pair to compare, no sub-claim decided.")
    if {"pgd", "rr"} <= set(p["attacks"]):
        tight = tightening_table(records, [b_ref], loose="pgd", tight="rr", by=unit, n_boot=n_boot, seed=seed)
        at = tight[np.isclose(tight["eps"], eps_ref)]
        top = tight.loc[tight["tightening"].idxmax()]
        values.update(tight_ref="; ".join(f"{r.model}: {r.tightening:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] (RR "
                                          f"{r.RR_loose:.2f} → {r.RR_tight:.2f})" for r in at.itertuples()),
                      tight_max=f"{top['tightening']:+.3f} [{top['lo']:+.3f}, {top['hi']:+.3f}] for {top['model']} "
                                f"at ε = {top['eps']:.4g}")
        tables["tightening"] = tight
    else:
        values.update(tight_ref="not computed (pgd or rr not in the sweep)", tight_max="not computed")
    values["bound_max"] = "no worst case computed"
    if "worst" in records.attack.values:
        bounds = bound_table(records, eps=eps_ref, b=b_ref, by=unit, n_boot=n_boot, seed=seed)
        k = bounds["tightening"].idxmax()
        values["bound_max"] = f"{bounds['tightening'].max():.3f} ({bounds.loc[k, 'attack'].upper()}, {bounds.loc[k, 'model']})"
        tables["bounds"] = bounds
    comp = metrics.complementary(records.drop_sel(attack="worst") if "worst" in records.attack.values else records)
    results.save(comp.assign_attrs(records.attrs), out_dir / "rr_complementary.nc")
    tables["complementary"] = comp.sel(eps=eps_ref).to_dataframe()[
        ["attack_success_rate", "n_success", "ACAC", "ACTC", "NTE", "ALD_2", "ALD_inf", "ASS", "changed_rate"]]
    reach = rr.sel(b=b_ref, method="nearest") >= p["params"]["rr_level"]
    best = reach.eps.where(reach).max("eps").to_dataframe("e").reset_index().sort_values("e", ascending=False).iloc[0]
    values["ex1_answer"] = (f"{best['model']} under {str(best['attack']).upper()} (up to ε = {float(best['e']):.4g})"
                            if np.isfinite(best["e"]) else "no panel reaches the level")
    return Analysis(ChapterResult(values=values, tables=tables), unit, ra, rr, ra_ci, rr_ci, decided)


def unit_plural(unit: str) -> str:
    """'identities', 'video_ids', 'samples': how the page counts the resampled units."""
    return "identities" if unit == "identity" else unit + "s"


def decide_rows(a: Analysis, p: Mapping, *, target_half_width: float, out_dir, extra: Sequence = ()) -> pd.DataFrame:
    """"What this build can decide": every comparison, the precision target at the reference cell
    (a design check on n, not a claim of the paper), the overall verdict and the ``extra`` verdicts of
    other sections (the critical radii's pairs and convergence rows); saved as ``rr_verdicts.csv``."""
    from ..metrics import verdicts as V

    rows = list(a.decided["table"]["claim_verdict"]) if a.decided else []
    if a.ra_ci is not None:
        p_eps, p_b = p["eps_ref"], p["b_ref"]
        hw = [(a.ra_ci["hi"] - a.ra_ci["lo"]).sel(eps=p_eps, method="nearest").values.ravel() / 2,
              (a.rr_ci["hi"] - a.rr_ci["lo"]).sel(eps=p_eps, method="nearest").sel(b=p_b, method="nearest").values.ravel() / 2]
        n = int(a.result.values["n_units"].split()[0])
        rows.append(V.precision(np.concatenate(hw), n=n, target=target_half_width,
                                claim=f"design check: RA and RR at the reference cell known to ±{target_half_width:g} (95 %)"))
    if a.decided and a.decided.get("headline") is not None:
        rows.append(a.decided["headline"])
    rows.extend(extra)
    decide = V.verdict_table(rows)[["claim", "verdict", "n", "lo", "hi", "width", "margin", "n_needed", "note"]]
    decide = decide.rename(columns={"lo": "interval lo", "hi": "interval hi", "n": f"n ({unit_plural(a.unit)})"})
    decide.to_csv(out_dir / "rr_verdicts.csv", index=False)
    return decide


# ----------------------------------------------------------------------------- calibration (issue 23.2)

#: each sub-claim's statistic as the calibrated table names it (the literal claim quotes ΔRR at its radius)
CAL_STATISTICS = {"similar_ra": "ΔRA", "different_rr": "ΔRR", "literal": "ΔRR"}


def calibrated_claims(radii: xr.Dataset, b_grid: Sequence[float], claims: Mapping, *, by: str, n_boot: int = 1000,
                      seed: int = 0) -> dict:
    """The sub-claims of ``study.yml`` decided on the radii records (``rr_radii.nc``) twice: at T = 1 (the
    attack's own probabilities) and at each detector's fitted temperature (``radii["temperature"]``, read from
    the stored margins by :func:`dfrobust.metrics.calibration.records_at_temperature`), with the same rule,
    margins, Holm family (the model pairs) and identity bootstrap (:func:`claim_table`, same ``seed``: the same
    resamples in both readings).

    Returns ``long`` (one row per comparison, sub-claim and reading: verdict, estimate, lo, hi, n, eps, b,
    level; the comparison "some pair (headline)" is the headline, :func:`dfrobust.metrics.verdicts.overall`), ``table``
    (the two readings side by side), ``headline`` (reading → Verdict), ``changed`` (the rows whose verdict
    differs), ``exact`` (model → whether its fitted T is one at which the attack kept its up-run shortcut
    exact) and ``t1_gap`` (the largest |RR| gap between the stored probabilities and the margins read at
    T = 1 over every grid cell with b > 0: 0 unless a change lies within float32 noise of a bound), or only ``reason`` when nothing can be decided."""
    from ..metrics import calibration
    from ..metrics import verdicts as V

    models = [str(m) for m in radii["model"].values]
    t = radii["temperature"]
    if len(models) < 2:
        return {"reason": "fewer than two detectors were analysed: no pair to re-decide at the fitted temperatures"}
    if not np.isfinite(t.values).all():
        return {"reason": "no validation images: no temperature was fitted, so the claim is not re-decided"}
    subs = claims["sub_claims"]
    kw = dict(ra_margin=subs["similar_ra"]["margin"], rr_margin=subs["different_rr"]["margin"],
              ra_window=tuple(claims["ra_window"]), radii=claims["radii"], alpha=claims["alpha"], by=by,
              n_boot=n_boot, seed=seed)
    readings = {"T = 1": calibration.records_at_temperature(radii),
                "fitted T": calibration.records_at_temperature(radii, t)}
    b_all = [float(b) for b in radii["b"].values if b > 0]      # b = 0 tests float equality (the rule excludes it)
    t1 = metrics.robust_ratio(calibration.records_at_temperature(radii, 1.0), b_all)
    rows, heads = [], {}
    for reading, rec in readings.items():
        tab = claim_table(rec, b_grid, **kw)
        heads[reading] = V.overall(list(tab["claim_verdict"]), "similar RA, different RR (some pair)")
        for r in tab.itertuples():
            c = r.claim_verdict
            parts = {"similar_ra": (r.RA_verdict, r.RA_diff, r.RA_lo, r.RA_hi),
                     "different_rr": (r.RR_verdict, r.RR_diff, r.RR_lo, r.RR_hi),
                     "literal": (c.verdict, c.estimate, c.lo, c.hi)}
            rows += [dict(comparison=f"{r.model_a} vs {r.model_b}", sub_claim=k, reading=reading, verdict=v,
                          estimate=float(e), lo=float(lo), hi=float(hi), n=int(r.n), eps=r.eps, b=r.b, level=r.level)
                     for k, (v, e, lo, hi) in parts.items()]
        h = heads[reading]
        rows.append(dict(comparison="some pair (headline)", sub_claim="literal", reading=reading, verdict=h.verdict,
                         estimate=h.estimate, lo=h.lo, hi=h.hi, n=h.n, eps=np.nan, b=np.nan, level=claims["alpha"]))
    long = pd.DataFrame(rows)
    key = ["comparison", "sub_claim"]
    one, fit = (long[long["reading"] == k].set_index(key) for k in readings)
    fit = fit.loc[one.index]
    unit = unit_plural(by)
    iv = lambda d: [("no interval" if not np.isfinite(lo) else f"[{lo:+.3f}, {hi:+.3f}]")
                    for lo, hi in zip(d["lo"], d["hi"])]
    cell = lambda d: ["—" if not np.isfinite(e) else f"({e:.3g}, {b:.2g})" for e, b in zip(d["eps"], d["b"])]
    table = pd.DataFrame({
        "comparison": [k[0] for k in one.index],
        "sub-claim": [f"{SUB_CLAIM_TITLES[k[1]]} ({CAL_STATISTICS[k[1]]})" for k in one.index],
        "verdict at T = 1": one["verdict"].values, "estimate at T = 1": one["estimate"].round(3).values,
        "interval at T = 1": iv(one), "(ε, b) at T = 1": cell(one), "verdict at fitted T": fit["verdict"].values,
        "estimate at fitted T": fit["estimate"].round(3).values, "interval at fitted T": iv(fit),
        "(ε, b) at fitted T": cell(fit), f"n ({unit})": one["n"].values})
    changed = table[table["verdict at T = 1"] != table["verdict at fitted T"]]
    exact = calibration.exact_at(radii, t)
    rr_stored = metrics.robust_ratio(readings["T = 1"], b_all)
    return {"long": long, "table": table, "headline": heads, "changed": changed,
            "exact": {m: bool(exact.sel(model=m)) for m in models},
            "t1_gap": float(abs(t1 - rr_stored).max()), "temperature": {m: float(t.sel(model=m)) for m in models}}


def calibrated_sentence(decided: Mapping) -> str:
    """The page's sentence on whether calibration changes the verdict (from :func:`calibrated_claims`)."""
    if "reason" in decided:
        return decided["reason"][0].upper() + decided["reason"][1:] + "."
    h1, ht, ch, n = decided["headline"]["T = 1"], decided["headline"]["fitted T"], decided["changed"], \
        len(decided["table"])
    temps = ", ".join(f"{m} T = {v:.3g}" for m, v in decided["temperature"].items())
    head = (f"At each detector's fitted temperature ({temps}) the headline \"similar RA, different RR\" is "
            f"**{ht.verdict}**, at T = 1 **{h1.verdict}**: calibration "
            + ("does not change it" if h1.verdict == ht.verdict else "changes it"))
    rows = "; ".join(f"{r['comparison']}, {r['sub-claim']}: {r['verdict at T = 1']} → {r['verdict at fitted T']}"
                     for _, r in ch.iterrows())
    return head + (f", and changes {len(ch)} of {n} verdicts ({rows})." if len(ch) else
                   f", nor any of the {n} verdicts.")


def exactness_sentence(decided: Mapping) -> str:
    """What the page says about how exact RR at the fitted temperatures is (from :func:`calibrated_claims`)."""
    if "reason" in decided:
        return "not read (no re-decision)"
    loose = [m for m, ok in decided["exact"].items() if not ok]
    return ("exact for every detector and grid cell: each fitted T is one of the temperatures at which the RR "
            "attack kept its up-run shortcut exact" if not loose else
            f"not exact for {', '.join(loose)}: its fitted T is not one the attack listed, so where the up run was "
            "skipped its RR at the fitted T may miss the largest change (a looser upper bound)")


@dataclass
class Calibration:
    """The calibration section: what the page quotes (``result``), each detector's reliability diagram before
    and after its fitted temperature (``reliability``, :func:`dfrobust.metrics.calibration.reliability`; None
    without validation images) and the claim re-decided (``decided``, :func:`calibrated_claims`)."""

    result: object
    reliability: xr.Dataset | None = None
    decided: dict | None = None


def calibration_section(p: Mapping, s: Setup, samples: Samples, rad, *, by: str, n_boot: int, seed: int,
                        device: str, n_bins: int = 10) -> Calibration:
    """The section "Calibration": the analysed detectors' scores on the validation images the radii section
    fitted their temperatures on (the same selection), their reliability diagrams at T = 1 and at the fitted T
    (ECE with ``n_bins`` bins, checked against the ECE stored in the radii records) and
    :func:`calibrated_claims` on the radii records ``rad.records`` (:func:`dfrobust.experiments.radii.radii_section`).
    Cost: one forward pass of each detector over the validation images, and the claim rule twice."""
    from ..core.results import ChapterResult
    from ..metrics import calibration
    from .radii import _fake_margin, _val_images

    t0 = time.perf_counter()
    ds = None if rad is None else rad.records
    values = dict(cal_sentence="No detector passed the quality gate: nothing to calibrate.", cal_exact="not read",
                  cal_summary="not decided: no detector passed the quality gate",
                  cal_ece="not computed", cal_ece_gap="not computed", cal_t1_gap="not computed", cal_n_val=0,
                  cal_bins=int(n_bins))
    if ds is None:
        return Calibration(ChapterResult(values={**values, "cal_time_s": 0.0}))
    models = [str(m) for m in ds["model"].values]
    val = _val_images(s, 2 * len(samples.meta), seed)
    rel, tables = None, {}
    if val is not None and np.isfinite(ds["temperature"].values).all():
        dev = pick_device(device)
        scores = xr.DataArray(np.stack([_fake_margin(s.trained[m].model.to(dev).eval(), val[0], 64, dev)
                                        for m in models]), dims=("model", "sample"), coords={"model": ds["model"].values})
        rel = calibration.reliability(scores, val[1].numpy(), ds["temperature"], n_bins)
        stored = xr.concat([ds["ece_val"], ds["ece_val_fitted"]], dim=rel["scaling"])
        values.update(cal_n_val=int(scores.sizes["sample"]), cal_ece_gap=f"{float(abs(rel['ece'] - stored).max()):.2g}",
                      cal_ece="; ".join(f"{m}: T = {float(rel['temperature'].sel(model=m)):.3g}, ECE "
                                        f"{float(rel['ece'].sel(model=m, scaling='T = 1')):.3f} → "
                                        f"{float(rel['ece'].sel(model=m, scaling='fitted T')):.3f}" for m in models))
        tables["cal_reliability"] = rel[["n", "confidence", "accuracy", "gap"]].to_dataframe().reset_index()
    decided = calibrated_claims(ds, p["b_grid"], p["claims"], by=by, n_boot=n_boot, seed=seed)
    values.update(cal_sentence=calibrated_sentence(decided), cal_exact=exactness_sentence(decided),
                  cal_summary=decided.get("reason", "not decided"))
    if "reason" not in decided:
        h, ch = decided["headline"], decided["changed"]
        values.update(cal_t1_gap=f"{decided['t1_gap']:.2g}",
                      cal_summary=f"{h['T = 1'].verdict} at T = 1, {h['fitted T'].verdict} at the fitted temperatures "
                                  f"({len(ch)} of {len(decided['table'])} verdicts changed)")
        tables["cal_claims"] = decided["table"]
    values["cal_time_s"] = round(time.perf_counter() - t0, 1)
    return Calibration(ChapterResult(values=values, tables=tables), rel, decided)


@dataclass
class Minimal:
    """The CW-L2 section's records (None when no detector was analysed), curves and summary."""

    result: object
    records: xr.Dataset | None = None
    curves: pd.DataFrame | None = None


def minimal_section(p: Mapping, s: Setup, samples: Samples, *, by: str, n_boot: int, seed: int, device: str,
                    out_dir, provenance: Mapping) -> Minimal:
    """The section "Minimal perturbations (CW-L2)": minimal records of the analysed detectors on a seeded
    subsample of whole identities of the attacked images (``p["cw_n"]`` images, 0: all;
    :func:`~dfrobust.experiments.records.identity_subset`, the L2-ball RR's images too), saved as
    ``rr_minimal.nc``, RA(r)/RR(r, b_ref) curves and the median summary."""
    from ..core import results
    from ..core.results import ChapterResult

    kw = p["cw_kw"]
    values = {"cw_settings": f"c starts at {kw['c_init']:g} and is searched in [{kw['c_min']:g}, {kw['c_max']:g}] over "
                             f"{kw['search_steps']} steps of {kw['steps']} Adam iterations at learning rate {kw['lr']:g}"}
    if not s.analysed:
        return Minimal(ChapterResult(values={**values, "cw_medians": "not computed: no detector analysed",
                                             "cw_time_s": 0.0, "cw_n_units": "no images"}))
    t0 = time.perf_counter()
    detectors = {m: s.trained[m].model for m in s.analysed}
    cw_n = int(p.get("cw_n", 0))
    samples, _ = identity_subset(samples, cw_n, seed=seed)
    values["cw_n_units"] = units_label(samples.meta, len(samples.labels)) + (
        f" of the images above, a seeded subsample of whole identities (cw_n = {cw_n})" if cw_n else
        ", every image above")
    minimal = minimal_records(detectors, samples.images, samples.labels, samples.meta, seed=seed, device=device,
                              cw_kw=kw)
    minimal.attrs.update(results.provenance(p["params"], profile=p["params"]["profile"], seed=seed,
                                            wall_time_s=time.perf_counter() - t0, **provenance))
    results.save(minimal, out_dir / "rr_minimal.nc")
    curves = minimal_curves(minimal, radius_grid(minimal), p["b_ref"], by=by, n_boot=n_boot, seed=seed)
    msum = minimal_summary(minimal, by=by, n_boot=n_boot, seed=seed)
    num = lambda v: "∞" if not np.isfinite(v) else f"{v:.3g}"
    med = lambda r: ("not reached (fewer than half flipped)" if not np.isfinite(r.median_l2) else
                     f"{num(r.median_l2)} [{num(r.median_lo)}, {num(r.median_hi)}]")
    values.update(cw_medians="; ".join(f"{r.model}: {med(r)}, {r.found:.0%} flipped [{r.found_lo:.0%}, "
                                       f"{r.found_hi:.0%}]" for r in msum.itertuples()),
                  cw_time_s=round(time.perf_counter() - t0, 1))
    return Minimal(ChapterResult(values=values, tables={"cw_summary": msum}), minimal, curves)

