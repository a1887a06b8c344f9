"""Chapter 07 (the certified Robust Ratio): its parameters and the chapter itself.

The bounds live in :mod:`dfrobust.certify`, their reduction in :mod:`dfrobust.metrics.certified`;
:func:`check_params` checks the parameters (no side effects; the notebook then calls
``core.device.prepare_run``) and builds the radius grid (0, then doubling radii up to ``eps_max``),
:func:`run` computes the chapter on them: data and quality gate, certified records, the attack side
on the same samples (03's records when they match, else FGSM and PGD here), the band per detector and
radius, how far the certificate reaches, provable differences and the "what this build can decide"
rows (:func:`decide_table`). Its figures are drawn a layer up (:mod:`dfrobust.figures.certified`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .. import certify, metrics
from ..metrics import verdicts
from ..core.device import pick_device
from ..core.params import MAX_COUNT, MAX_GRID, check_int, check_number, check_seed, split_list
from ..core.profiles import check_data_root, check_profile
from ..models.published import PUBLISHED_DETECTORS, check_weights
from .records import attack_records, check_sweep, load_samples

#: the detectors whose layers the bounds support
#: (the published MesoNet weights too: dfrobust.models.published)
CERTIFIABLE = ("meso4", "mesoinception4", "meso4_adv", "meso4_ibp", *PUBLISHED_DETECTORS)


def check_params(*, profile: str, seed: int, models: str, method: str, crown_budget: int, eps_max: float,
                 n_eps: int, b_max: float, n_b: int, b_show: str, b_ref: float, n_samples: int, pgd_steps: int,
                 batch_size: int, device: str, data_root: str = "", min_val_auc: float = 0.7,
                 weights: str = "") -> dict:
    """Every parameter checked (one-line ValueError naming it) before any data, bound or attack.

    Returns ``models``, ``eps_grid``, ``b_grid``, ``b_show`` (panel bounds), ``b_ref`` (grid value),
    ``budget`` (None: CROWN everywhere), ``device`` (as given: ``prepare_run`` resolves it) and ``params``
    (the run's provenance). No side effects: no seeding, no thread setting.
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
    pick_device(device)  # a one-line error for CUDA on a machine without it (no side effect)
    b_ref_used = min(b_grid, key=lambda b: abs(b - b_ref))
    params = dict(profile=profile, seed=seed, data_root=str(data_root or ""), models=model_list, method=method,
                  crown_budget=crown_budget, eps_grid=eps_grid, b_grid=b_grid, b_show=b_panels, b_ref=b_ref_used,
                  n_samples=n_samples, pgd_steps=pgd_steps, batch_size=batch_size, min_val_auc=float(min_val_auc),
                  device=str(device), weights=str(weights or ""))
    return {"profile": profile, "seed": seed, "data_root": str(data_root or ""), "weights": str(weights or ""),
            "models": model_list, "method": method, "eps_grid": eps_grid, "b_grid": b_grid, "b_show": b_panels,
            "b_ref": b_ref_used, "budget": None if crown_budget < 0 else int(crown_budget), "n_samples": n_samples,
            "pgd_steps": pgd_steps, "batch_size": batch_size, "min_val_auc": float(min_val_auc), "device": device,
            "params": params}


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


def band_meaning(bands: pd.DataFrame, tol: float = 0.1) -> str:
    """What the open band of :func:`band_table` measures, as a sentence for the page. Where the band is open,
    the first-order estimate (the linearised detector's worst case) is a second, independent guess of the
    worst case: when the attacks' RR is at most ``tol`` above it, the attacks move P(ŷ) at least about as
    much as the linearisation predicts, so the band there is mostly the certificate's looseness; when the
    attacks' RR lies more than ``tol`` above it, the attacks may be too weak. Neither settles the formal RR."""
    if not len(bands):
        return "no band was computed"
    b, n = float(bands["b"].iloc[0]), len(bands)
    open_ = bands[~bands["exact"]]
    if not len(open_):
        return (f"at b = {b:g} the certificate and the attacks agree on every sample in all {n} (detector, ε) cells: "
                "the RR there is exact and no difference between these detectors depends on how strong the attacks are")
    weak = open_["RR attack"] - open_["RR first-order"] > tol
    return (f"at b = {b:g} the band is open in {len(open_)} of {n} (detector, ε) cells, where the formal RR is unknown. "
            f"In {int((~weak).sum())} of them the attacks' RR is at most {tol:g} above the first-order estimate's "
            "(the attacks move P(ŷ) about as far as the linearised detector predicts): there the band mostly measures "
            f"the certificate's looseness. In {int(weak.sum())} the attacks' RR lies more than {tol:g} above it: there "
            "part of the band may be the attacks' weakness")


def reach_table(cert: xr.Dataset, rr_cert: xr.DataArray, b: float) -> pd.DataFrame:
    """Per detector: the largest radius of the grid with a certified sample at bound ``b``, the share certified
    there and the median share of unstable neurons over the radii ε > 0."""
    big = metrics.largest_certified_eps(cert, b)
    rows = []
    for m in cert["model"].values.tolist():
        e = float(big.sel(model=m))
        rows.append({"model": m, "largest certified ε": e if np.isfinite(e) else None,
                     "share certified there": float(rr_cert.sel(model=m, b=b).sel(eps=e)) if np.isfinite(e) else 0.0,
                     "median unstable share": float(cert["unstable_frac"].sel(model=m).where(cert.eps > 0).median())})
    return pd.DataFrame(rows).set_index("model")


def provable_pairs(rr_cert: xr.DataArray, rr_attack: xr.DataArray) -> pd.DataFrame:
    """Per ordered pair of detectors (A, B): the (ε > 0, b) cells where A's certified RR exceeds B's
    attack-based RR, i.e. A's formal RR is provably higher there, out of all such cells."""
    models = rr_cert.model.values.tolist()
    of = int((rr_cert.eps > 0).sum() * rr_cert.sizes["b"])
    rows = [{"provably more robust": a, "than": b, "of": of,
             "cells": int((rr_cert.sel(model=a) > rr_attack.sel(model=b) + 1e-12).where(rr_cert.eps > 0, False).sum())}
            for a in models for b in models if a != b]
    return pd.DataFrame(rows, columns=["provably more robust", "than", "cells", "of"])


def reusable_attack_records(path: Path, models: Sequence[str], sample_meta: pd.DataFrame,
                            eps_grid: Sequence[float]) -> xr.Dataset | None:
    """The RA vs RR chapter's records at ``path`` restricted to FGSM and PGD on ``models`` at the radii of
    ``eps_grid``, when they hold exactly these samples (the same paths in the same order), every model and
    every radius; else None (the caller runs the attacks)."""
    if not path.is_file():
        return None
    from ..core import results

    rec = results.load(path)
    same = (set(models) <= set(rec.model.values.tolist()) and rec.sizes["sample"] == len(sample_meta)
            and "path" in rec.coords
            and list(rec["path"].values.astype(str)) == list(sample_meta["path"].astype(str))
            and all(np.isclose(rec.eps.values, e).any() for e in eps_grid))
    if not same:
        return None
    atk = [a for a in rec.attack.values.tolist() if a in ("fgsm", "pgd")]
    return rec.sel(model=list(models), attack=atk).sel(eps=list(eps_grid), method="nearest").assign_coords(eps=list(eps_grid))


def _attack_side(cfg: Mapping, detectors: dict, images, labels, sample_meta) -> tuple[xr.Dataset, str]:
    """Attack records on the certified samples: 03's when they match, else FGSM and PGD run here."""
    from ..core.paths import results_dir

    for fname in ("robustness_records.nc", "rr_records.nc"):
        atk = reusable_attack_records(results_dir(cfg["profile"]) / fname, list(detectors), sample_meta,
                                      cfg["eps_grid"])
        if atk is not None:
            return atk, f"the RA vs RR chapter's records ({fname})"
    t0 = time.perf_counter()
    atk = attack_records(detectors, ["fgsm", "pgd"], cfg["eps_grid"], images, labels, sample_meta, seed=cfg["seed"],
                         device=cfg["device"], attack_kw={"pgd": {"steps": cfg["pgd_steps"]}}, ssim=False)
    return atk, f"FGSM and PGD ({cfg['pgd_steps']} steps) run in this chapter ({time.perf_counter() - t0:.1f} s)"


class CertifiedRun:
    """The chapter's :class:`~dfrobust.core.results.ChapterResult` (``result``) and what its figures are
    drawn from: ``rr_cert`` and ``rr_attack`` (dims model, eps, b; None when no MesoNet passed the quality
    gate), the panel bounds ``b_show`` and the data label. Figures: :func:`dfrobust.figures.certified.chapter_result`."""

    def __init__(self, result, rr_cert: xr.DataArray | None, rr_attack: xr.DataArray | None,
                 b_show: Sequence[float], data_label: str):
        self.result, self.rr_cert, self.rr_attack = result, rr_cert, rr_attack
        self.b_show, self.data_label = list(b_show), data_label


def run(cfg: Mapping, dev) -> CertifiedRun:
    """The whole chapter on checked parameters ``cfg`` (:func:`check_params`) and the device ``dev``
    (:func:`dfrobust.core.device.prepare_run`): data and quality gate, certified records, the attack side,
    the band (:func:`band_table`, :func:`band_meaning`), the reach (:func:`reach_table`), provable
    differences (:func:`provable_pairs`) and :func:`decide_table`. Writes ``certified_records.nc``,
    ``certified_bands.csv`` and ``certified_verdicts.csv``. With no MesoNet past the gate every value says why."""
    from ..core import results
    from ..core.device import describe
    from ..core.paths import results_dir
    from ..core.results import ChapterResult
    from ..data import dataset_label, get_manifest, sampling
    from ..models import study_gate
    from ..models.gate import gate_sentence
    from ..models.published import detector_provenance, evaluation_manifest, get_detector

    t_start = time.perf_counter()
    profile, seed, eps_grid, b_ref, budget = cfg["profile"], cfg["seed"], cfg["eps_grid"], cfg["b_ref"], cfg["budget"]
    manifest = get_manifest(profile, "images", seed=seed, data_root=cfg["data_root"] or None)
    data_label = dataset_label(manifest)
    trained = {m: get_detector(m, manifest, weights=cfg["weights"], profile=profile, seed=seed, device=cfg["device"])
               for m in cfg["models"]}
    gate = study_gate(trained, cfg["min_val_auc"], profile)   # the single call site: a gated detector is never certified
    requested, analysed = list(trained), gate.loc[gate["analysed"], "model"].tolist()
    none_why = ("" if analysed else "not computed: no MesoNet passed the quality gate ("
                + "; ".join(f"{r.model}: {r.status}" for r in gate.itertuples()) + ")")
    trained = {m: trained[m] for m in (analysed or requested)}
    sizes = {t.input_size for t in trained.values()}
    if len(sizes) != 1:
        raise ValueError(f"models={list(trained)}: input sizes {sorted(sizes)}; expected one size (certify them separately)")
    size = sizes.pop()
    sel = sampling.select_samples(evaluation_manifest(manifest, list(trained)), cfg["n_samples"], seed=seed)
    images, labels, sample_meta, skipped = load_samples(sel, size)
    values = dict(data_label=data_label, n_samples=len(sample_meta), size=int(size), n_skipped=len(skipped),
                  none_why=none_why or gate_sentence(gate, cfg["min_val_auc"]).removesuffix("."),
                  method=cfg["method"].upper() if cfg["method"] == "ibp" else "CROWN", b_ref=b_ref,
                  eps_max=float(max(eps_grid)), time_s=0.0, cost_per_sample_s=float("nan"),
                  budget_text=none_why, attack_source=none_why, violations=none_why, n_cells=none_why,
                  exact_text=none_why, mean_width=float("nan"), largest_eps=0.0, largest_eps_text=none_why,
                  provable_cells=0, band_meaning=none_why)
    tables = dict(gate=gate.round(3), bands=pd.DataFrame({"note": [none_why]}),
                  decide=pd.DataFrame([{"claim": f"certified RR of {m}", "n": 0, "verdict": none_why} for m in requested]))
    if not analysed:
        values["total_time_s"] = round(time.perf_counter() - t_start, 1)
        return CertifiedRun(ChapterResult(values=values, tables=tables), None, None, cfg["b_show"], data_label)

    detectors = {m: t.model.to(dev).eval() for m, t in trained.items()}
    t0 = time.perf_counter()
    cert = certify.certified_records(detectors, images, eps_grid, method=cfg["method"], labels=labels,
                                     coords={"group": sample_meta["group"].astype(str).to_numpy()},
                                     batch_size=cfg["batch_size"], device=dev, crown_budget=budget, progress=True)
    cert_time = time.perf_counter() - t0
    synthetic = int(bool(manifest.attrs.get("meta", {}).get("synthetic", True)))
    cert.attrs.update(results.provenance({**cfg["params"], "device": str(dev)}, profile=profile, seed=seed,
                                         device=describe(dev), wall_time_s=cert_time, synthetic=synthetic,
                                         data=data_label, detectors=detector_provenance(trained)))
    results.save(cert, results_dir(profile) / "certified_records.nc")
    pos = cert["eps"] > 0
    cost = cert["time_s"].where(pos).sum("eps") / max(1, int(pos.sum()) * cert.sizes["sample"])
    tables["cost"] = pd.DataFrame({"method": cert["method"].values.astype(str),
                                   "seconds per (sample, ε)": cost.values.round(3),
                                   "trace gap (logit)": cert["trace_gap"].values}, index=cert.model.values)
    tables["median_change"] = cert["certified_change"].sel(eps=cert.eps[pos]).median("sample").to_pandas().round(4)

    atk, source = _attack_side(cfg, detectors, images, labels, sample_meta)
    change_atk = metrics.prob_change(atk).max("attack")   # the worst change over the attacks: the tightest upper bound
    violations = int((change_atk > cert["certified_change"] + 1e-5).sum())
    if violations:
        raise RuntimeError(f"{violations} (model, eps, sample) cells where an attack beats the certificate: a bound is wrong")
    rr_cert = metrics.rr_certified(cert, cfg["b_grid"])
    rr_atk = metrics.robust_per_sample(atk, cfg["b_grid"]).all("attack").mean("sample").rename("RR_attack")
    bands = band_table(cert, change_atk, first_order_records(detectors, images, eps_grid), b_ref)
    bands.to_csv(results_dir(profile) / "certified_bands.csv", index=False)
    reach = reach_table(cert, rr_cert, b_ref)
    pairs = provable_pairs(rr_cert, rr_atk)
    decide = decide_table(cert, change_atk, b_ref=b_ref, violations=violations)
    decide.to_csv(results_dir(profile) / "certified_verdicts.csv", index=False)
    exact = bands[bands["exact"]]
    finite = reach["largest certified ε"].dropna()
    values.update(time_s=round(cert_time, 1), cost_per_sample_s=round(float(cost.mean()), 2),
                  budget_text="all unstable neurons" if budget is None else f"at most {budget} unstable neurons",
                  attack_source=source, violations=violations, n_cells=int(change_atk.size),
                  exact_text="; ".join(f"{r['model']}: RR = {r['RR certified']:.3f} at ε = {r['ε·255']:g}/255"
                                       for _, r in exact.iterrows()) or "none (the band is open in every cell)",
                  mean_width=round(float((rr_atk - rr_cert).where(rr_atk.eps > 0).mean()), 3),
                  largest_eps=float(finite.max()) if len(finite) else 0.0,
                  largest_eps_text="; ".join(f"{m}: {e:g}" if e is not None and np.isfinite(e) else f"{m}: none"
                                             for m, e in reach["largest certified ε"].items()),
                  provable_cells=int(pairs["cells"].sum()), band_meaning=band_meaning(bands),
                  total_time_s=round(time.perf_counter() - t_start, 1))
    tables.update(bands=bands, reach=reach.round(4), pairs=pairs, decide=decide)
    return CertifiedRun(ChapterResult(values=values, tables=tables, records=cert), rr_cert, rr_atk, cfg["b_show"],
                        data_label)
