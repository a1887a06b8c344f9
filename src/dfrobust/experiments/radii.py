"""Per-sample critical radii records (issue #23.1, 23.2, 23.5): what chapter 03 needs to compare
detectors over the whole distribution of radii, to read RR at any temperature and to say whether
its attacks converged.

:func:`radii_records` runs, per detector, the RR attack's grid and bisection rows
(:func:`dfrobust.attacks.radii.attack_rows`, moving away from the clean prediction ŷ) and keeps,
per sample, ``r_flip_upper`` and ``r_b_upper`` (upper bounds, named so) with their last bisection
bracket, and on the ε grid the records RA and RR read (``p_adv``, ``pred_adv``, ``p_clean``,
``pred_clean``, ``y``, ``in_budget``: :func:`dfrobust.metrics.robust_accuracy` and
:func:`~dfrobust.metrics.robust_ratio` take them) and the margins RR at another temperature reads
(:mod:`dfrobust.metrics.calibration`). Both come from the same rows, so
``RA(ε) = mean(ŷ = y ∧ r_flip_upper > ε)`` and ``RR(ε, b) = mean(r_b_upper > ε)`` on the grid
exactly. With validation images it fits each detector's temperature (and its ECE before and
after); with ``convergence_n`` it reruns a seeded subsample with ``convergence_factor`` × the steps,
``convergence_restarts`` random restarts and FAB-L∞ (:func:`convergence`).

**Cost** (``bench/bench_radii.py``: 24 **synthetic** images, Meso4 at 128 px with random weights,
one thread, the shared 2-core dev machine; chapter 03's grid, 0 and 4 radii 0.00196 .. 0.2, and 21
bounds b). A row costs about ``(steps + 1)`` gradient passes per image for the down run and as much
again where the up run runs (one clean forward per batch for every row). With the defaults
``steps=1, n_bisect=2``: 10.7 passes per image (8 to 13 on confident detectors); at 77-82 ms per
pass of the default build's three detectors (bench_ch03_cost) that is 204 x 10.7 x 0.08 s ≈ 180
CPU-s (3 CPU-min) added to the default build. ``steps=2`` costs 17 passes (≈ 290 CPU-s). The
convergence rerun (10x steps, 2 restarts, FAB-L∞ 20 steps) costs about 325 passes per subsample
image: ``convergence_n=4`` adds ≈ 100 CPU-s to the default build.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr
from scipy.special import expit

from .. import metrics
from ..attacks import radii as _radii
from ..core import results
from ..core.device import describe, pick_device
from ..core.results import ChapterResult
from ..data import sampling
from ..metrics import calibration
from ..metrics import verdicts as V
from ..metrics.bootstrap import bootstrap_weights, n_units
from ..metrics.grids import check_b_grid
from .records import _check_inputs, _clean, _resize, _sample_coords, check_sweep, load_samples


@torch.inference_mode()
def _fake_margin(model, images: torch.Tensor, batch: int, device) -> np.ndarray:
    """z_fake − z_real per image (the two-logit score a temperature divides)."""
    size = int(getattr(model, "input_size", None) or images.shape[-1])
    out = []
    for i in range(0, len(images), batch):
        z = model(_resize(images[i:i + batch].float(), size).to(device)).double()
        out.append((z[:, 1] - z[:, 0]).cpu())
    return torch.cat(out).numpy()


def convergence(model, x: torch.Tensor, yhat: torch.Tensor, reported: dict, eps_grid: Sequence[float],
                b_grid: Sequence[float], *, steps: int, n_bisect: int, factor: int = 10, restarts: int = 2,
                fab_steps: int = 20, seed: int = 0, batch_size: int = 32, norm: str = "linf") -> dict[str, np.ndarray]:
    """Rerun the rows on ``x`` (a subsample, the model's size) with ``factor`` × ``steps`` and ``restarts``
    random restarts, and FAB (in ``norm``); compare with the ``reported`` radii of the same samples
    (:func:`dfrobust.attacks.radii.radii_from_rows` output).

    Returns ``rr_drop`` [E, B]: RR(ε, b) reported minus RR with the stronger search's radii (the smaller
    of the two per sample: both are upper bounds), ``r_b_lowered`` [B]: the share of samples whose r_b the
    stronger search lowered by more than its bisection bracket, ``r_flip_lowered``: the same for r_flip
    with the stronger search or FAB, and ``fab_r_flip`` [n] (FAB's flip radius; inf where none).
    """
    strong = _radii.radii_from_rows(
        _radii.attack_rows(model, x, yhat, eps_grid, b_grid, steps=steps * int(factor), n_bisect=n_bisect,
                           restarts=int(restarts), seed=seed + 1, batch_size=batch_size, norm=norm), b_grid)
    fab = _radii.fab_flip_radius(model, x, yhat, steps=fab_steps, max_radius=max(eps_grid), seed=seed, norm=norm)
    eps = np.asarray(eps_grid, float).reshape(-1, 1, 1)
    r_b = np.minimum(reported["r_b_upper"], strong["r_b_upper"])
    rr_rep = (reported["r_b_upper"][None] > eps).mean(-1)
    rr_strong = (r_b[None] > eps).mean(-1)
    r_flip = np.minimum(strong["r_flip_upper"], fab)

    def below(upper, bracket):   # the largest radius the reported search attacked without meeting it
        return np.where(np.isfinite(upper), upper - np.where(np.isfinite(upper), bracket, 0.0), np.inf)

    return {"rr_drop": rr_rep - rr_strong,
            "r_b_lowered": (r_b < below(reported["r_b_upper"], reported["r_b_bracket"])).mean(-1),
            "r_flip_lowered": float((r_flip < below(reported["r_flip_upper"], reported["r_flip_bracket"])).mean()),
            "fab_r_flip": fab}


def radii_records(models: Mapping[str, torch.nn.Module], images: torch.Tensor, labels: torch.Tensor,
                  meta: pd.DataFrame | None, eps_grid: Sequence[float], b_grid: Sequence[float], *,
                  steps: int = 1, n_bisect: int = 2, temperatures: Sequence[float] = (1.0,),
                  val: tuple[torch.Tensor, torch.Tensor] | None = None, convergence_n: int = 0,
                  convergence_factor: int = 10, convergence_restarts: int = 2, seed: int = 0,
                  device: str = "auto", batch_size: int | None = None, progress: bool = False,
                  norm: str = "linf") -> xr.Dataset:
    """Per-sample critical radii and grid records, dims (model, sample) [× b, × eps]; see the module.

    ``norm``: the ball of the RR attack and of every radius, ``"linf"`` (default: the sweep's ball) or
    ``"l2"`` (the paper's Eq. 2 ball; ``eps_grid`` then holds L2 radii, :func:`dfrobust.attacks.radii.attack_rows`).

    ``images`` [N, 3, H, W] in [0, 1] (resized per model), ``labels`` the truth y (0 real, 1 fake),
    ``meta`` the manifest rows (their columns, ``identity`` among them, become sample coordinates).
    ``temperatures``: the temperatures at which RR will be read from the margins (the up-run shortcut is
    exact for these). ``val``: validation (images, labels) to fit each detector's temperature.
    ``convergence_n``: size of the seeded subsample rerun by :func:`convergence` (0: none).
    All inputs are checked before any attack runs (one-line ValueError).
    """
    _radii.check_norm(norm)
    _, eps = check_sweep(["rr"], eps_grid)
    b = [float(v) for v in check_b_grid(b_grid)]
    labels = _check_inputs(models, images, labels, meta)
    calibration._temperatures(temperatures)
    for what, v, lo in (("steps", steps, 1), ("n_bisect", n_bisect, 0), ("convergence_n", convergence_n, 0),
                        ("convergence_factor", convergence_factor, 1), ("convergence_restarts", convergence_restarts, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{what}={v!r}: expected an integer >= {lo}")
    if not any(e > 0 for e in eps):
        raise ValueError(f"eps_grid={list(eps_grid)!r}: expected at least one radius > 0")
    if val is not None:
        _check_inputs(models, val[0], val[1], None)
    dev = pick_device(device)
    n, names = images.shape[0], list(models)
    order = np.argsort(eps, kind="stable")
    eps = [eps[i] for i in order]
    sub = np.sort(np.random.default_rng(seed).choice(n, min(int(convergence_n), n), replace=False))
    out: dict[str, list] = {k: [] for k in ("r_flip_upper", "r_flip_bracket", "r_b_upper", "r_b_bracket", "p_adv",
                                            "pred_adv", "margin_min", "margin_max", "p_clean", "pred_clean",
                                            "margin_clean", "temperature", "ece_val", "ece_val_fitted",
                                            "rr_drop", "r_b_lowered", "r_flip_lowered")}
    timings = {}
    for name in names:
        t0 = time.perf_counter()
        model = models[name].to(dev).eval()
        c = _clean(model, images, batch_size, dev)
        yhat = torch.as_tensor(c["pc"], dtype=torch.long)
        rows = _radii.attack_rows(model, c["x"], yhat, eps, b, steps=steps, n_bisect=n_bisect,
                                  temperatures=temperatures, seed=seed, batch_size=c["bs"], norm=norm)
        rad = _radii.radii_from_rows(rows, b)
        grid = _radii.grid_from_rows(rows, eps)
        for k in ("r_flip_upper", "r_flip_bracket", "r_b_upper", "r_b_bracket"):
            out[k].append(rad[k])
        out["p_adv"].append(grid["p_adv"])
        out["pred_adv"].append(np.where(grid["flipped"], 1 - c["pc"], c["pc"]))
        out["margin_min"].append(grid["margin_min"]), out["margin_max"].append(grid["margin_max"])
        out["p_clean"].append(rows.p0), out["pred_clean"].append(c["pc"]), out["margin_clean"].append(rows.m0)
        if val is not None:
            s, yv = _fake_margin(model, val[0], c["bs"], dev), val[1].numpy()
            t = calibration.fit_temperature(s, yv)
            out["ece_val"].append(calibration.ece(expit(s), yv))
            out["ece_val_fitted"].append(calibration.ece(expit(s / t), yv))
            out["temperature"].append(t)
        else:
            out["temperature"].append(np.nan), out["ece_val"].append(np.nan), out["ece_val_fitted"].append(np.nan)
        if len(sub):
            conv = convergence(model, c["x"][sub], yhat[sub], {k: v[..., sub] for k, v in rad.items()}, eps, b,
                               steps=steps, n_bisect=n_bisect, factor=convergence_factor,
                               restarts=convergence_restarts, seed=seed, batch_size=c["bs"], norm=norm)
        else:
            conv = {"rr_drop": np.full((len(eps), len(b)), np.nan), "r_b_lowered": np.full(len(b), np.nan),
                    "r_flip_lowered": np.nan}
        for k in ("rr_drop", "r_b_lowered", "r_flip_lowered"):
            out[k].append(conv[k])
        timings[name] = round(time.perf_counter() - t0, 3)
        if progress:
            print(f"{name:>16s} radii: {timings[name]:.1f} s", flush=True)

    ms, mbs, mes = ("model", "sample"), ("model", "b", "sample"), ("model", "eps", "sample")
    nm = {"linf": "L∞", "l2": "L2"}[norm]
    desc = {
        "r_flip_upper": (ms, f"smallest {nm} radius at which the RR attack flipped ŷ (upper bound; inf: none up to "
                             "the largest grid radius)", "pixel [0,1]"),
        "r_flip_bracket": (ms, "width of r_flip_upper's last bisection bracket (the radius below it did not flip)",
                           "pixel [0,1]"),
        "r_b_upper": (mbs, f"smallest {nm} radius at which |ΔP(ŷ)| > b was found (upper bound; inf: none)",
                      "pixel [0,1]"),
        "r_b_bracket": (mbs, "width of r_b_upper's last bisection bracket", "pixel [0,1]"),
        "p_adv": (mes, "P(ŷ | x+δ) of the largest |ΔP(ŷ)| found at any radius <= eps", "1"),
        "pred_adv": (mes, "prediction under attack: flipped from ŷ if any radius <= eps flipped it", "1"),
        "margin_min": (mes, "smallest margin z_ŷ − z_other found at any radius <= eps", "logit"),
        "margin_max": (mes, "largest margin z_ŷ − z_other found at any radius <= eps", "logit"),
        "p_clean": (ms, "P(ŷ | x)", "1"),
        "pred_clean": (ms, "clean prediction ŷ (P(fake) >= 0.5)", "1"),
        "margin_clean": (ms, "clean margin z_ŷ − z_other", "logit"),
        "temperature": (("model",), "temperature fitted on validation (NLL; nan: no validation data)", "1"),
        "ece_val": (("model",), "validation ECE at T = 1", "1"),
        "ece_val_fitted": (("model",), "validation ECE at the fitted temperature", "1"),
        "rr_drop": (("model", "eps", "b"), "convergence: RR reported minus RR of a search with more steps and "
                                           "restarts on the subsample (nan: not run)", "1"),
        "r_b_lowered": (("model", "b"), "convergence: share of the subsample whose r_b the stronger search "
                                        "lowered by more than its bracket", "1"),
        "r_flip_lowered": (("model",), f"convergence: the same for r_flip, with the stronger search or FAB-{nm}", "1"),
    }
    data_vars = {k: (dims, np.stack(out[k]), {"long_name": long, "units": units})
                 for k, (dims, long, units) in desc.items()}
    data_vars["in_budget"] = (mes, np.ones((len(names), len(eps), n), bool),
                              {"long_name": "every row is within its radius (by construction)", "units": "bool"})
    data_vars["y"] = (("sample",), labels.numpy(), {"long_name": "true label (0 real, 1 fake)", "units": "1"})
    ds = xr.Dataset(data_vars, coords={"model": names, "eps": np.asarray(eps), "b": np.asarray(b),
                                       "sample": np.arange(n), **_sample_coords(meta, n)})
    ds["eps"].attrs.update(long_name=f"{nm} radius ε (images in [0, 1])", units="pixel [0,1]")
    ds.attrs.update(kind="radii_records", norm=norm, attacked_label="y_hat", seed=int(seed), device=describe(dev),
                    steps=int(steps), n_bisect=int(n_bisect), temperatures=str([float(t) for t in temperatures]),
                    convergence=f"{len(sub)} samples, {convergence_factor}x steps, {convergence_restarts} restarts, "
                                f"FAB-{nm}" if len(sub) else "not run",
                    convergence_samples=json.dumps(sub.tolist()),
                    bound_note=f"every radius is an upper bound of the critical radius (a perturbation of that "
                               f"{nm} norm was found); RA and RR on the grid are reductions of the same rows",
                    attack_time_s=str(timings))
    return ds


# ----------------------------------------------------------------------------- chapter 03's section

#: temperatures at which chapter 03 reads RR beside each detector's fitted one (the up-run shortcut is exact at all)
T_GRID = (0.5, 1.0, 2.0)


def log_radii(ds: xr.Dataset, b: float | None = None) -> xr.Dataset:
    """Per (model, sample): log of the critical radius, r_b at bound ``b`` (nearest grid value) or r_flip
    (``b`` None), **censored at the largest grid radius** (inf, none found up to it, reads as that radius:
    the comparison then understates a difference beyond the grid). Keeps the sample coordinates."""
    r = ds["r_flip_upper"] if b is None else ds["r_b_upper"].sel(b=b, method="nearest", drop=True)
    cap = float(ds["eps"].max())
    return xr.Dataset({"log_r": np.log(r.clip(min=1e-12).where(np.isfinite(r), cap).clip(max=cap))})


def log_radius_verdict(lr: xr.Dataset, a: str, b: str, *, margin: float, alpha: float, by: str, n_boot: int,
                       seed: int = 0, what: str = "r_b"):
    """"Detectors a and b differ in mean log critical radius by more than ±margin on the same images": the
    paired per-sample difference log r(a) − log r(b), averaged, bootstrap resampling ``by`` (identities),
    decided by :func:`dfrobust.metrics.verdicts.difference` (a one-cell band: holds if it excludes ±margin,
    refuted if inside ±margin and at most margin wide with some unit discordant, else inconclusive)."""

    d = (lr["log_r"].sel(model=a) - lr["log_r"].sel(model=b)).values.astype(float)
    w = bootstrap_weights(lr, by=by, n_boot=n_boot, seed=seed)
    boots = (w @ d) / w.sum(1)
    return V.difference(boots[:, None], np.array([d.mean()]), n=n_units(lr, by), margin=margin, alpha=alpha,
                        moved=bool(np.any(d != 0)), claim=f"{a} vs {b}: mean Δlog {what} beyond ±{margin:g}",
                        grid=f"mean Δlog {what}")


def compare_radii(lr: xr.Dataset, *, margin: float, alpha: float, by: str, n_boot: int, seed: int = 0,
                  what: str = "r_b", n_sim: int = 50, sim_boot: int = 200,
                  primary: Sequence[str] | None = None) -> dict:
    """Every detector pair by :func:`log_radius_verdict`, Holm over the pairs at family-wise ``alpha``, the
    existential headline (:func:`dfrobust.metrics.verdicts.overall`) and the simulated power (resampling
    ``by`` from the data, :func:`~dfrobust.metrics.verdicts.simulated_power`) of the deciding pair's rule at
    its level. The deciding pair is ``primary`` (a, b), fixed before the run in ``study.yml``, when both were
    analysed (``out["primary"]`` True); otherwise the pair held with the largest |estimate|, else the one
    closest to a decision (chosen after the run, and said so on the page)."""

    models = [str(m) for m in lr["model"].values]
    keys = [(m1, m2) for i, m1 in enumerate(models) for m2 in models[i + 1:]]
    if primary is not None and set(primary) <= set(models):   # the primary pair in the order study.yml gives it
        keys = [tuple(primary)] + [k for k in keys if set(k) != set(primary)]
    rule = lambda rec, k, level, nb: log_radius_verdict(rec, *k, margin=margin, alpha=level, by=by, n_boot=nb,
                                                         seed=seed, what=what)
    decided = V.holm(lambda k, level: rule(lr, k, level, n_boot), keys, alpha) if keys else {}
    rows = [{"model_a": k[0], "model_b": k[1], "verdict": v.verdict, "estimate": v.estimate, "lo": v.lo, "hi": v.hi,
             "ratio": float(np.exp(v.estimate)), "level": level, "n": v.n, "note": v.note, "v": v}
            for k, (v, level) in decided.items()]
    table = pd.DataFrame(rows, columns=["model_a", "model_b", "verdict", "estimate", "lo", "hi", "ratio", "level", "n",
                                        "note", "v"])
    head = V.overall(list(table["v"]), f"detectors differ in mean log {what} by more than ±{margin:g} (some pair)")
    out = {"table": table.drop(columns="v"), "verdicts": list(table["v"]), "headline": head, "deciding": None,
           "power": None, "primary": False}
    if len(table):
        held = table[table["verdict"] == V.HOLDS]
        is_primary = primary is not None and set(primary) <= set(models)
        j = table.index[(table["model_a"] == primary[0]) & (table["model_b"] == primary[1])][0] if is_primary else held["estimate"].abs().idxmax() if len(held) else \
            table["v"].map(lambda v: v.n_needed if v.n_needed is not None else np.inf).astype(float).idxmin()
        k, level = (table.loc[j, "model_a"], table.loc[j, "model_b"]), float(table.loc[j, "level"])
        out.update(deciding=k, level=level, primary=is_primary,
                   power=V.simulated_power(lr, lambda rec: rule(rec, k, level, sim_boot), by=by, n_sim=n_sim, seed=seed))
    return out


def convergence_verdicts(ds: xr.Dataset, *, margin: float) -> list:
    """One verdict per detector: "10× the steps with restarts (and FAB) lower no reported RR(ε, b) by more
    than ``margin``", decided on the subsample by the Wilson interval of the largest share of samples whose
    RR status the stronger search lowered (:func:`dfrobust.metrics.verdicts.threshold`, at or below
    ``margin``): too few samples to bound it under the margin read *inconclusive*, and the note says how many
    would be needed when none is lowered."""

    n = len(json.loads(ds.attrs.get("convergence_samples", "[]")))  # never eval a file's attribute
    if n == 0:
        return []
    z2 = 1.959963984540054 ** 2
    need0 = int(np.ceil(z2 * (1 - margin) / margin))      # 0 of n has a Wilson upper bound <= margin from here
    out = []
    for m in ds["model"].values.tolist():
        drop = ds["rr_drop"].sel(model=m)
        k = int(round(float(drop.max()) * n))
        at = drop.where(drop == drop.max(), drop=True)
        lo, hi = V.wilson(k, n)
        note = (f"{k} of {n} samples lowered at ε = {float(at['eps'][0]):.4g}, b = {float(at['b'][0]):g}"
                if k else f"no sample lowered; 0 of {n} bounds the share only below {hi:.2f} (≤ {margin:g} from "
                          f"n = {need0})")
        note += (f"; r_b lowered beyond its bracket for {float(ds['r_b_lowered'].sel(model=m).max()):.0%} at the "
                 f"worst b, r_flip for {float(ds['r_flip_lowered'].sel(model=m)):.0%}")
        out.append(V.threshold(k / n, lo, hi, n=n, target=margin, above=False, claim=f"convergence: {m}'s RR "
                               f"lowered by ≤ {margin:g} by 10× steps + restarts + FAB (n: images)", note=note))
    return out


def convergence_caution(models: Sequence[str], conv: Sequence) -> str:
    """The sentence the radii answer carries when a convergence row is refuted for some detector (its radii are
    then loose upper bounds, and a verdict built on them could move with a stronger search); "" otherwise."""
    loose = [m for m, v in zip(models, conv) if v.verdict == V.REFUTED]
    return (f" Caution: 10× the steps with restarts lowered RR by more than the margin for {', '.join(loose)} "
            f"(convergence refuted), so their radii are loose upper bounds and a stronger search could move this "
            f"verdict." if loose else "")


def reductions_gap(ds: xr.Dataset) -> float:
    """Largest |RA − mean(ŷ = y ∧ r_flip > ε)| and |RR − mean(r_b > ε)| over every grid cell (0 by construction)."""

    ra, rr = metrics.robust_accuracy(ds), metrics.robust_ratio(ds, ds["b"].values)
    ra_r = ((ds["pred_clean"] == ds["y"]) & (ds["r_flip_upper"] > ds["eps"])).mean("sample")
    rr_r = (ds["r_b_upper"] > ds["eps"]).mean("sample")
    return float(max(abs(ra - ra_r).max(), abs(rr - rr_r).max()))


def temperature_table(ds: xr.Dataset, *, eps: float, b: float) -> pd.DataFrame:
    """RA, RR and RR among the non-flipped samples at (ε, b) per detector and temperature (:data:`T_GRID` and
    the detector's fitted one), with its validation ECE at T = 1 and at the fitted T."""
    temps = sorted(set(T_GRID) | {float(t) for t in ds["temperature"].values if np.isfinite(t)})
    rr = calibration.rr_at_temperature(ds.sel(eps=[eps], method="nearest"), [b], temps).isel(eps=0, b=0)
    rows = []
    for m in ds["model"].values.tolist():
        t_fit = float(ds["temperature"].sel(model=m))
        for t in temps:
            if t in T_GRID or t == t_fit:
                r = rr.sel(model=m, T=t)
                rows.append({"model": m, "T": t, "fitted": bool(t == t_fit), "RA": float(r["RA"]), "RR": float(r["RR"]),
                             "RR_unflipped": float(r["RR_unflipped"]),
                             "ECE_val": float(ds["ece_val"].sel(model=m)) if t == 1.0 else
                             float(ds["ece_val_fitted"].sel(model=m)) if t == t_fit else np.nan})
    return pd.DataFrame(rows)


@dataclass
class RadiiSection:
    """Chapter 03's "Critical radii" section: the records (None when fewer than one detector was analysed),
    what the page quotes (``result``), the comparison (:func:`compare_radii`) and the verdict rows it adds to
    the chapter's decide table (``verdicts``)."""

    result: object
    records: xr.Dataset | None = None
    compared: dict | None = None
    verdicts: list = field(default_factory=list)


def _val_images(s, n: int, seed: int):
    """Up to ``n`` validation images (balanced over label × group) for the temperature fit; None without any."""

    if "split" not in s.manifest.columns or not (s.manifest["split"] == "val").any():
        return None
    sel = sampling.select_samples(s.manifest, min(int(n), int((s.manifest["split"] == "val").sum())), seed=seed,
                                  split="val")
    images, labels, _, _ = load_samples(sel, s.size)
    return images, labels


def radii_section(p: Mapping, s, samples, *, by: str, n_boot: int, seed: int, device: str, out_dir,
                  provenance: Mapping, n_sim: int = 50) -> RadiiSection:
    """The section "Critical radii" (issue #23): per-sample r_flip and r_b of the analysed detectors on the
    attacked images (:func:`radii_records`, saved as ``rr_radii.nc``), the check that the grid's RA and RR
    are reductions of them, the paired comparison of mean log r_b at ``b_ref`` between detectors (identity
    bootstrap, Holm, margin and α from ``study.yml``'s ``claims.log_radius``, simulated power), RR against the
    temperature with each detector's fitted T and ECE, and the convergence rows (:func:`convergence_verdicts`).
    The attacks use the kernel's torch threads (``prepare_run``). Side by side on the 2-core machine
    (2026-12-04): idle, 48 images x Meso4 and MesoInception4 at 128 px took 8.1 s on two threads and 13.8 s on
    one; under load (average 4.4, another process on a core) quick's 24 images took 125-142 s on two and 9.3 s
    on one: on a shared machine, one thread."""

    q, claims = p["radii"], p["claims"]
    lrc = claims["log_radius"]
    values = {"radii_settings": f"{q['steps']} step(s) per radius, {q['n_bisect']} bisection round(s)",
              "radii_margin": lrc["margin"], "radii_ratio": f"{np.exp(lrc['margin']) - 1:.0%}",
              "radii_conv_n": q["convergence_n"]}
    empty = dict(radii_answer="No detector passed the quality gate: no radius was measured.", radii_gap="not computed",
                 radii_medians="not computed", radii_verdict="inconclusive", radii_interval="no interval",
                 radii_power="not computed", radii_conv="not run", radii_time_s=0.0, radii_fitted="not computed",
                 radii_n_units="no records")
    if not s.analysed:
        return RadiiSection(ChapterResult(values={**values, **empty}))
    t0 = time.perf_counter()
    detectors = {m: s.trained[m].model for m in s.analysed}
    dev = pick_device(device)
    val = _val_images(s, 2 * len(samples.meta), seed)
    temps = set(T_GRID)
    if val is not None:   # fit first, so that the up-run shortcut is exact at each fitted T as well
        for m, net in detectors.items():
            net = net.to(dev).eval()
            temps.add(calibration.fit_temperature(_fake_margin(net, val[0], 64, dev), val[1].numpy()))
    ds = radii_records(detectors, samples.images, samples.labels, samples.meta, p["eps_grid"], p["b_grid"],
                       steps=q["steps"], n_bisect=q["n_bisect"], temperatures=sorted(temps), val=val,
                       convergence_n=q["convergence_n"], seed=seed, device=device)
    ds.attrs.update(results.provenance(p["params"], profile=p["params"]["profile"], seed=seed,
                                       wall_time_s=time.perf_counter() - t0, **provenance))
    results.save(ds, out_dir / "rr_radii.nc")
    b_ref, eps_ref = p["b_ref"], p["eps_ref"]
    lr = log_radii(ds, b_ref).assign_attrs(unit=by)
    cmp = compare_radii(lr, margin=lrc["margin"], alpha=claims["alpha"], by=by, n_boot=n_boot, seed=seed,
                        what=f"r_b (b = {b_ref:g})", n_sim=n_sim, primary=lrc.get("primary"))
    conv = convergence_verdicts(ds, margin=claims["sub_claims"]["different_rr"]["margin"])
    temp = temperature_table(ds, eps=eps_ref, b=b_ref)
    rb = ds["r_b_upper"].sel(b=b_ref, method="nearest")
    summary = pd.DataFrame([{
        "model": m, "median r_flip (upper bound)": float(np.median(ds["r_flip_upper"].sel(model=m))),
        "flipped within ε_max": float(np.isfinite(ds["r_flip_upper"].sel(model=m)).mean()),
        f"median r_b, b = {b_ref:g} (upper bound)": float(np.median(rb.sel(model=m))),
        "moved by > b within ε_max": float(np.isfinite(rb.sel(model=m)).mean()),
        "T fitted": float(ds["temperature"].sel(model=m)), "ECE (val, T = 1)": float(ds["ece_val"].sel(model=m)),
        "ECE (val, fitted T)": float(ds["ece_val_fitted"].sel(model=m))} for m in s.analysed])
    head, units = cmp["headline"], f"{n_units(ds, by)} " + ("identities" if by == "identity" else by + "s")
    num = lambda v: "∞ (none up to ε_max)" if not np.isfinite(v) else f"{v:.4g}"
    power = "not computed (fewer than two detectors)" if cmp["power"] is None else \
        f"{cmp['power']:.0%} ({n_sim} data sets of {units} resampled from these records, at the level of " \
        f"{cmp['deciding'][0]} vs {cmp['deciding'][1]})"
    interval = lambda v: "no interval" if not np.isfinite(v.lo) else \
        f"mean Δlog r_b = {v.estimate:+.3f} [{v.lo:+.3f}, {v.hi:+.3f}] (radius ratio {np.exp(v.estimate):.2f})"
    iv = interval(head)
    conv_txt = "; ".join(f"{m}: {v.verdict} ({v.note})" for m, v in zip(s.analysed, conv)) \
        or "not run (convergence_n = 0)"
    fitted = temp[temp["fitted"]]
    values.update(
        radii_gap=f"{reductions_gap(ds):.3g}", radii_n_units=units,
        radii_medians="; ".join(f"{r['model']}: r_flip {num(r['median r_flip (upper bound)'])}, r_b "
                                f"{num(r[f'median r_b, b = {b_ref:g} (upper bound)'])}" for _, r in summary.iterrows()),
        radii_verdict=head.verdict, radii_interval=iv, radii_power=power, radii_conv=conv_txt,
        radii_counts=", ".join(f"{sum(v.verdict == k for v in cmp['verdicts'])} {k}" for k in V.VERDICTS),
        radii_fitted="; ".join(f"{r.model}: T = {r.T:.2f}, RR {r.RR:.2f} (RA {r.RA:.2f}, RR among non-flipped "
                                    f"{r.RR_unflipped:.2f})" for r in fitted.itertuples()) or "no validation images",
        radii_time_s=round(time.perf_counter() - t0, 1))
    prim = None
    if cmp["primary"]:
        a, b = cmp["deciding"]
        pv = next(v for v, (x, y) in zip(cmp["verdicts"], zip(cmp["table"]["model_a"], cmp["table"]["model_b"]))
                  if (x, y) == (a, b))
        prim = (f"Primary sub-claim (the pair fixed in study.yml before the run): {a} and {b} differ in mean log r_b "
                f"at b = {b_ref:g} by more than ±{lrc['margin']:g}: **{pv.verdict}**, {interval(pv)}, n = {units}, "
                f"simulated power {power}. ")
        values["radii_primary_verdict"] = pv.verdict
    where = head.note.split("numbers from: ")[-1]
    values["radii_answer"] = (prim or "") + (
        f"Some pair of detectors differs in mean log r_b at b = {b_ref:g} by more than ±{lrc['margin']:g} (a "
        f"{values['radii_ratio']} radius ratio): **{head.verdict}** ({values['radii_counts']} of "
        f"{len(cmp['verdicts'])} pairs, Holm at α = {claims['alpha']:g}); {iv} ({where}), n = {units}"
        + ("." if prim else f"; simulated power {power}.")
        + convergence_caution(ds["model"].values.tolist(), conv) if cmp["deciding"] else
        "Fewer than two detectors passed the quality gate: no pair of radii to compare.")
    return RadiiSection(ChapterResult(values=values, tables={"radii_summary": summary, "radii_pairs": cmp["table"],
                                                             "radii_temperature": temp,
                                                             "radii_convergence": V.verdict_table(conv)}),
                        ds, cmp, [*cmp["verdicts"], *conv])


# ----------------------------------------------------------------------------- the L2 ball (the paper's Eq. 2)

@dataclass
class L2Section:
    """Chapter 03's "RR on the L2 ball" section: the L2 radii records (None when no detector was analysed), what
    the page quotes (``result``) and the long table of RR_L2 and RR_L∞ on the same images (``rr``)."""

    result: object
    records: xr.Dataset | None = None
    rr: pd.DataFrame | None = None


def rr_from_radii(ds: xr.Dataset, b: float, *, by: str, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """RR(ε, b) = mean(r_b_upper > ε) per detector at every grid radius ε > 0 of ``ds`` (an exact reduction of the
    radii, an upper bound of the formal RR), with a 95 % bootstrap interval resampling ``by``: long table
    (model, norm, eps, b, RR, lo, hi, n)."""
    rb = ds["r_b_upper"].sel(b=b, method="nearest")
    w = bootstrap_weights(ds, by=by, n_boot=n_boot, seed=seed)
    norm = {"linf": "L∞", "l2": "L2"}[ds.attrs.get("norm", "linf")]
    rows = []
    for m in ds["model"].values.tolist():
        r = np.asarray(rb.sel(model=m).values, float)
        for e in (float(v) for v in ds["eps"].values if v > 0):
            hit = (r > e).astype(float)
            boots = (w @ hit) / w.sum(1)
            rows.append({"model": m, "norm": norm, "eps": e, "b": float(rb["b"]), "RR": float(hit.mean()),
                         "lo": float(np.quantile(boots, 0.025)), "hi": float(np.quantile(boots, 0.975)),
                         "n": n_units(ds, by)})
    return pd.DataFrame(rows, columns=["model", "norm", "eps", "b", "RR", "lo", "hi", "n"])


def l2_section(p: Mapping, s, samples, *, linf: xr.Dataset | None, minimal: xr.Dataset | None = None, by: str,
               n_boot: int, seed: int, device: str, out_dir, provenance: Mapping) -> L2Section:
    """The section "RR on the L2 ball": the paper's RR (its Eq. 2) is defined on an L2 ball, the sweep on the L∞
    ball. Per detector, the RR attack's L2 rows (:func:`radii_records` with ``norm="l2"``, the L∞ section's
    steps and bisection, no convergence rerun) on the L2 grid ``p["l2_grid"]``, on the CW-L2 section's seeded
    subsample of whole identities (:func:`dfrobust.experiments.records.identity_subset` with ``p["cw_n"]``),
    saved as ``rr_radii_l2.nc``; RR_L2(ε, b_ref) beside RR_L∞(ε, b_ref) read from the L∞ radii ``linf``
    (:func:`radii_section`'s records) on the same images, both exact reductions of radii and both upper bounds;
    with CW-L2's ``minimal`` records (same images) the median L2 r_flip beside CW-L2's median minimal ||δ||₂."""

    from .records import identity_subset, units_label

    q, b_ref = p["radii"], p["b_ref"]
    values = {"l2_grid": ", ".join(f"{e:g}" for e in p["l2_grid"] if e > 0)}
    if not s.analysed or samples is None:
        return L2Section(ChapterResult(values={**values, "l2_answer": "No detector passed the quality gate: no "
                                               "L2-ball RR was measured.", "l2_n_units": "no images",
                                               "l2_time_s": 0.0}))
    t0 = time.perf_counter()
    sub, pos = identity_subset(samples, int(p.get("cw_n", 0)), seed=seed)
    detectors = {m: s.trained[m].model for m in s.analysed}
    ds = radii_records(detectors, sub.images, sub.labels, sub.meta, p["l2_grid"], p["b_grid"], steps=q["steps"],
                       n_bisect=q["n_bisect"], seed=seed, device=device, norm="l2")
    ds.attrs.update(results.provenance(p["params"], profile=p["params"]["profile"], seed=seed,
                                       wall_time_s=time.perf_counter() - t0, **provenance))
    results.save(ds, out_dir / "rr_radii_l2.nc")
    units = units_label(sub.meta, len(sub.labels))
    rr = [rr_from_radii(ds, b_ref, by=by, n_boot=n_boot, seed=seed)]
    if linf is not None:
        rr.append(rr_from_radii(linf.isel(sample=pos), b_ref, by=by, n_boot=n_boot, seed=seed))
    rr = pd.concat(rr, ignore_index=True)

    def curve(norm, m):
        t = rr[(rr["norm"] == norm) & (rr["model"] == m)]
        return " / ".join(f"{v:.2f}" for v in t["RR"])

    def grid(norm):
        return " / ".join(f"{e:.3g}" for e in rr.loc[rr["norm"] == norm, "eps"].drop_duplicates())

    models = ds["model"].values.tolist()
    text = (f"On the L2 ball of the paper's Eq. 2, RR_L2(ε, b = {b_ref:g}), an attack-based upper bound, at ε = "
            f"{grid('L2')} reads " + "; ".join(f"{m} {curve('L2', m)}" for m in models))
    if linf is not None:
        text += (f". On the L∞ ball of the sweep, RR_L∞(ε, b = {b_ref:g}), also an upper bound, on the same images at "
                 f"ε = {grid('L∞')} reads " + "; ".join(f"{m} {curve('L∞', m)}" for m in models))
    num = lambda v: "∞ (none found)" if not np.isfinite(v) else f"{v:.3g}"
    med = {m: float(np.median(ds["r_flip_upper"].sel(model=m))) for m in models}
    if minimal is not None and minimal.sizes["sample"] == ds.sizes["sample"]:
        cw = {m: float(np.median(minimal["l2_min"].sel(model=m))) for m in models if m in minimal["model"].values}
        text += ". Median L2 r_flip of the RR attack against CW-L2's median minimal ||δ||₂ (both upper bounds): " + \
            "; ".join(f"{m} {num(med[m])} vs {num(cw[m])}" for m in models if m in cw)
    values.update(l2_answer=f"{text}; n = {units}.", l2_n_units=units, l2_time_s=round(time.perf_counter() - t0, 1),
                  l2_medians="; ".join(f"{m}: r_flip {num(med[m])}" for m in models))
    return L2Section(ChapterResult(values=values, tables={"rr_l2": rr}), ds, rr)
