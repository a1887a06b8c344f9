"""The record engine: attack sweeps that produce per-sample records (the raw material of every
robustness metric), shared by chapters 03 (images), 04 (video frames) and 07 (certified vs attacked).

**A record** is one (model, attack, ε, sample): :func:`attack_records` runs each budgeted attack
once per (model, ε) and keeps, per sample, what every metric needs — the clean and adversarial
probability of the clean-predicted class, labels and predictions, the perturbation's norms, SSIM,
whether the attack changed the image and whether it flipped a correct prediction — with the
manifest's sample coordinates (group, manipulation, video_id, frame_index, ...; ``path`` relative
to the data home, :func:`home_relative`). RA, RR over any tolerance grid and the complementary
metrics are reductions of these records (:mod:`dfrobust.metrics`), so a new tolerance grid never
re-runs an attack; the same function takes still images and video-frame records.
:func:`minimal_records` is the other record kind: per (model, sample), the smallest CW-L2
perturbation that flips ŷ. Also here: the sweep's checks (:func:`check_sweep`,
:func:`check_settle_b`), the attack options a chapter passes (:func:`attack_options`,
:func:`cw_options`), the worst case over the budgeted L∞ attacks (:func:`with_worst_case`) and
the image loader the record builders share (:func:`load_samples`).

**Label attacked: the clean prediction ŷ** (computed here, for every attack, the progressive and
factory-built ones included; attrs ``attacked_label="y_hat"``). RR is defined on P(ŷ|x+δ);
attacking the true label y instead would push P(ŷ) *up* on a misclassified sample, a change
capped at 1 − P(ŷ|x), and over-estimate RR. Where the clean prediction is correct ŷ = y, so one
pass serves RA and RR: RA = mean 1[clean correct ∧ adversarial correct]. Records keep ``y`` and
``pred_clean``.

Budgets and the ``eps`` axis. ``eps`` is an L∞ radius on images in [0, 1]; every budgeted attack
(FGSM, PGD, CW-L∞, RR) uses it directly, PGD-L2 the matched L2 radius ``eps_l2 = ε·sqrt(C·H·W)``
(stored per model). Every perturbation is checked against its budget. CW-L2 has no budget: it is
the minimal-perturbation analysis of :func:`minimal_records`, not part of the sweep.

**ε-monotone records.** A perturbation found at a smaller radius is admissible at a larger one,
so at each ε the stored record of a sample is the worst found at any radius ≤ ε of the grid (a
cumulative maximum, no new attacks): ``p_adv``/``p_adv_fake``/``l2``/``linf``/``ssim``/
``changed`` come from the record with the largest ``|P(ŷ|x+δ) − P(ŷ|x)|`` (the first such radius;
``eps_found`` names it), ``pred_adv``/``success`` are the worst prediction found (flipped from ŷ
at any radius ≤ ε). The two can come from different radii when a larger change did not flip the
prediction (e.g. the RR attack pushing P(ŷ) up): RR and RA are separate worst cases.

An attack-based RR is an **upper bound** of the formal RR (Eqs. 2-3 quantify over *every*
δ in the ball; an attack finds some of them), and attack-based RA is an upper bound of the
true robust accuracy. At ε = 0 no attack runs: the only admissible δ is 0, so RR = 1 exactly.
``changed`` means ``||δ||∞ > 1e-6`` (dtype round trips are not changes).

Chapter 03's tables and sections live in :mod:`dfrobust.experiments.robustness`; the sweep that
runs :func:`attack_records` per (detector, attack, data shard) cell in :mod:`dfrobust.study.sweep`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr

from .. import attacks as _attacks
from .. import metrics
from ..core.device import auto_batch_size, describe, pick_device
from ..metrics.grids import check_b_grid

#: manifest columns copied onto the ``sample`` dimension, with the fill for a missing column
SAMPLE_COORDS = {"group": "", "manipulation": "", "video_id": "", "frame_index": -1,
                 "identity": "", "pair_id": "", "dataset": "", "split": "", "path": ""}
#: per-sample variables with (model, attack, eps, sample) dims
RECORD_VARS = ("p_adv", "p_adv_fake", "pred_adv", "l2", "linf", "ssim", "changed", "success",
               "in_budget", "eps_found")
_TOL = 1e-6
#: ``changed`` means ``||δ||∞ > CHANGED_TOL``
CHANGED_TOL = 1e-6


def _no_cw_in_sweep(name: str) -> None:
    if name in _attacks.UNBUDGETED:
        raise ValueError(f"attack={name!r}: {name} is the minimal-perturbation analysis (minimal_records); "
                         "use cwinf in the sweep")


def check_sweep(attacks: Sequence[str], eps_grid: Sequence[float],
                b_grid: Sequence[float] | None = None, models: Sequence[str] | None = None,
                known_models: Sequence[str] | None = None) -> tuple[list[str], list[float]]:
    """Validate sweep parameters; one-line ValueError naming the bad value. Returns canonical lists."""
    if isinstance(attacks, str):
        attacks = [a for a in attacks.split(",") if a.strip()]
    if not attacks:
        raise ValueError("attacks=[]: expected at least one of " + ", ".join(_attacks.ATTACKS))
    names = [_attacks.check_attack(a) for a in attacks]
    for a in names:
        _no_cw_in_sweep(a)
    if len(set(names)) != len(names):
        raise ValueError(f"attacks={list(attacks)!r}: duplicates")
    if eps_grid is None or len(eps_grid) == 0:
        raise ValueError("eps_grid=[]: expected at least one ε >= 0")
    eps = [_attacks.check_eps(e) for e in eps_grid]
    if len(set(eps)) != len(eps):
        raise ValueError(f"eps_grid={list(eps_grid)!r}: duplicate values")
    if b_grid is not None:
        check_b_grid(b_grid)
    if models is not None:
        if isinstance(models, str):
            models = [m for m in models.split(",") if m.strip()]
        if not models:
            raise ValueError("models=[]: expected at least one model name")
        if known_models is not None:
            for m in models:
                if m not in known_models:
                    raise ValueError(f"model={m!r}: unknown; expected one of {', '.join(known_models)}")
    return names, eps


def home_relative(path) -> str:
    """``path`` as the records and pages show it: relative to the data home (``synth/...``,
    ``prepared/...``), so no absolute path of the building machine reaches a result; a path outside
    the data home keeps only its last two parts (``…/folder/file``)."""
    from ..core.paths import data_home

    if not path:
        return ""
    p = Path(str(path))
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(data_home().resolve()).as_posix()
    except ValueError:
        return "…/" + "/".join(p.parts[-2:])


def _sample_coords(meta: pd.DataFrame | None, n: int) -> dict[str, tuple]:
    coords: dict[str, tuple] = {}
    meta = meta if meta is not None else pd.DataFrame(index=range(n))
    for col, fill in SAMPLE_COORDS.items():
        if col in meta.columns:
            vals = meta[col].to_numpy()
            if isinstance(fill, str):
                vals = np.array(["" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v)
                                 for v in vals], dtype=object)
                if col == "path":  # relative to the data home: no absolute path of this machine in a result
                    vals = np.array([home_relative(v) for v in vals], dtype=object)
            else:
                vals = pd.to_numeric(meta[col], errors="coerce").fillna(fill).astype(int).to_numpy()
        else:
            vals = np.array([fill] * n, dtype=object if isinstance(fill, str) else int)
        coords[col] = ("sample", vals)
    if "label" in meta.columns:
        coords["manifest_label"] = ("sample", meta["label"].astype(int).to_numpy())
    return coords


def _ssim(clean: torch.Tensor, adv: torch.Tensor) -> np.ndarray:
    """SSIM per image (skimage, channel axis first, data range 1)."""
    from skimage.metrics import structural_similarity

    a = clean.detach().cpu().numpy()
    b = adv.detach().cpu().numpy()
    out = np.empty(len(a), dtype=np.float32)
    for i in range(len(a)):
        if np.array_equal(a[i], b[i]):
            out[i] = 1.0
        else:
            win = min(7, *a[i].shape[1:]) | 1
            out[i] = structural_similarity(a[i], b[i], channel_axis=0, data_range=1.0, win_size=win)
    return out


@torch.inference_mode()
def _proba(model, x: torch.Tensor, batch: int, device) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch].to(device))
        out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    return torch.cat(out).numpy().astype(np.float64)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0, 1)


def _measure(model, xb, adv, pf_b):
    delta = (adv - xb).reshape(len(xb), -1).double()
    linf = delta.abs().amax(dim=1).cpu().numpy()
    changed = linf > CHANGED_TOL
    with torch.inference_mode():
        pa = torch.softmax(model(adv).float(), 1)[:, 1].cpu().numpy().astype(np.float64)
    pa = np.where(changed, pa, pf_b)  # no change, the clean output
    return pa, delta.norm(dim=1).cpu().numpy(), linf, changed


def _run_attack(aname, model, x_all, yhat, pf, eps, eps_l2, bs, dev, *, seed, kw, ssim, factory=None,
                settle_b=None):
    """Per ε: (p_adv_fake, l2, linf, ssim, changed) arrays over all samples (attacking ``yhat``).

    ``settle_b``: radii are attacked in increasing order and a sample already *settled* at a
    smaller radius (prediction flipped and |ΔP(ŷ)| > ``settle_b``) is not attacked at larger ones:
    its record there is the clean one, so the ε-monotone record keeps the smaller radius' worst.
    Settled samples are settled for every b ≤ ``settle_b`` at every larger radius, so RA and
    RR(b ≤ ``settle_b``) are those of attacking every sample whenever the attack treats each sample
    independently; with random starts the samples still attacked draw other starts than in a
    full batch (as with any other batch size), an equally strong attack.
    """
    n = len(x_all)
    identity = (pf.copy(), np.zeros(n), np.zeros(n), np.ones(n, np.float32), np.zeros(n, bool))
    todo = [ei for ei, e in enumerate(eps) if e > 0]
    make = factory or _attacks.make_attack
    pc = (pf >= 0.5).astype(np.int64)
    p0 = np.where(pc == 1, pf, 1 - pf)

    def measure(xb, adv, pf_b):
        pa, l2, linf, changed = _measure(model, xb, adv, pf_b)
        ss = _ssim(xb, adv) if ssim else np.full(len(xb), np.nan, np.float32)
        return pa, l2, linf, ss, changed

    if aname == "fgsm" and factory is None:   # one shared gradient serves every radius
        parts = {ei: [] for ei in todo}
        for s in range(0, n, bs):
            xb, yb = x_all[s:s + bs].to(dev), yhat[s:s + bs].to(dev)
            for ei, adv in zip(todo, _attacks.fgsm_sweep(model, xb, yb, [eps[ei] for ei in todo])):
                parts[ei].append(measure(xb, adv, pf[s:s + bs]))
        done = {ei: tuple(np.concatenate(p) for p in zip(*parts[ei])) for ei in todo}
        return [done.get(ei, identity) for ei in range(len(eps))]

    done, settled = {}, np.zeros(n, dtype=bool)
    best, flipped = np.zeros(n), np.zeros(n, dtype=bool)
    for ei in sorted(todo, key=lambda i: eps[i]):
        radius = eps_l2[ei] if _attacks.NORM[aname] == "l2" else eps[ei]
        atk = make(aname, model, eps=float(radius), seed=seed + ei, **kw)
        active = np.flatnonzero(~settled) if settle_b is not None else np.arange(n)
        rec = [a.copy() for a in identity]
        for s in range(0, len(active), bs):
            idx = active[s:s + bs]
            xb, yb = x_all[torch.as_tensor(idx)].to(dev), yhat[torch.as_tensor(idx)].to(dev)
            for field, v in zip(rec, measure(xb, atk(xb, yb).detach(), pf[idx])):
                field[idx] = v
        done[ei] = tuple(rec)
        if settle_b is not None:
            p_hat = np.where(pc == 1, rec[0], 1 - rec[0])
            best = np.maximum(best, np.abs(p_hat - p0))
            flipped |= (rec[0] >= 0.5).astype(np.int64) != pc
            settled = flipped & (best > settle_b)
    return [done.get(ei, identity) for ei in range(len(eps))]


def _monotone(raw: list[tuple], eps: Sequence[float], pf: np.ndarray, pc: np.ndarray):
    """The cumulative worst over radii ≤ ε (no new attacks).

    ``raw[ei]`` = (p_adv_fake, l2, linf, ssim, changed) per sample at ``eps[ei]``. Returns, per ε
    index, the kept record (the one with the largest |ΔP(ŷ)| at any radius ≤ ε, the first such
    radius on ties), the index of the radius it came from, and whether the prediction flipped
    away from ŷ at any radius ≤ ε.
    """
    n, m = len(pc), len(eps)
    p0 = np.where(pc == 1, pf, 1 - pf)
    fields = [np.stack([r[f] for r in raw]) for f in range(len(raw[0]))]   # each [eps, sample]
    p_hat = np.where(pc == 1, fields[0], 1 - fields[0])
    change = np.abs(p_hat - p0)
    flip = (fields[0] >= 0.5).astype(np.int64) != pc
    src = np.zeros((m, n), dtype=int)
    flipped = np.zeros((m, n), dtype=bool)
    best, cur, seen = np.full(n, -np.inf), np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
    for ei in np.argsort(np.asarray(eps, dtype=float), kind="stable"):
        better = change[ei] > best
        best, cur = np.where(better, change[ei], best), np.where(better, ei, cur)
        seen |= flip[ei]
        src[ei], flipped[ei] = cur, seen
    rows = np.arange(n)
    kept = [tuple(f[src[ei], rows] for f in fields) for ei in range(m)]
    return kept, src, flipped


def _check_inputs(models, images, labels, meta):
    """Shared input checks of the record builders (one-line ValueErrors); returns labels [N] long."""
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models: expected a non-empty dict name -> nn.Module")
    for name, m in models.items():
        if not isinstance(m, torch.nn.Module):
            raise ValueError(f"models[{name!r}]: expected a torch.nn.Module, got {type(m).__name__}")
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images shape {tuple(getattr(images, 'shape', ()))}: expected a tensor [N, 3, H, W]")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images range [{images.min():.3g}, {images.max():.3g}]: expected values in [0, 1]")
    labels = torch.as_tensor(labels).long().view(-1)
    n = images.shape[0]
    if labels.numel() != n or n == 0:
        raise ValueError(f"labels: {labels.numel()} for {n} images; expected one label per image (N > 0)")
    if not set(labels.unique().tolist()) <= {0, 1}:
        raise ValueError(f"labels {sorted(set(labels.unique().tolist()))}: expected 0 (real) / 1 (fake)")
    if meta is not None and len(meta) != n:
        raise ValueError(f"meta: {len(meta)} rows for {n} images; expected the manifest rows of the images")
    return labels


def _clean(model, images, batch_size, dev):
    """A model's view of the images: inputs at its size, batch size, P(fake|x), ŷ, P(ŷ|x), ||x||."""
    n = len(images)
    size = int(getattr(model, "input_size", None) or images.shape[-1])
    x_all = _resize(images.float(), size)
    bs = int(batch_size or auto_batch_size(dev, size))
    pf = _proba(model, x_all, bs, dev)
    pc = (pf >= 0.5).astype(np.int64)
    flat = x_all.reshape(n, -1).double()
    return dict(size=size, x=x_all, bs=bs, pf=pf, pc=pc, p=np.where(pc == 1, pf, 1 - pf),
                x_l2=flat.norm(dim=1).numpy(), x_linf=flat.abs().amax(dim=1).numpy())


_CLEAN_VARS = {
    "pred_clean": ("clean prediction ŷ (P(fake) >= 0.5)", "1"),
    "p_clean": ("P(ŷ | x)", "1"),
    "p_clean_fake": ("P(fake | x)", "1"),
    "x_l2": ("||x||₂ at the model's input size", "pixel [0,1]"),
    "x_linf": ("||x||∞", "pixel [0,1]"),
}


def _clean_vars(clean: list[dict], y: np.ndarray) -> dict:
    key = {"pred_clean": "pc", "p_clean": "p", "p_clean_fake": "pf", "x_l2": "x_l2", "x_linf": "x_linf"}
    out = {"y": (("sample",), y, {"long_name": "true label (0 real, 1 fake)", "units": "1"})}
    for v, (long, units) in _CLEAN_VARS.items():
        out[v] = (("model", "sample"), np.stack([c[key[v]] for c in clean]), {"long_name": long, "units": units})
    out["input_size"] = (("model",), np.asarray([c["size"] for c in clean], dtype=int),
                         {"long_name": "model input size (images resized to it)", "units": "pixel"})
    return out


def check_settle_b(settle_b: float | None) -> float | None:
    """``settle_b`` of :func:`attack_records` checked: None or the largest bound b read, in [0, 1)."""
    if settle_b is not None and (isinstance(settle_b, bool) or not isinstance(settle_b, (int, float))
                                 or not 0 <= settle_b < 1):
        raise ValueError(f"settle_b={settle_b!r}: expected None or the largest bound b read, in [0, 1)")
    return None if settle_b is None else float(settle_b)


def attack_records(models: Mapping[str, torch.nn.Module], attacks: Sequence[str],
                   eps_grid: Sequence[float], images: torch.Tensor, labels: torch.Tensor,
                   meta: pd.DataFrame | None = None, *, seed: int = 0, device: str = "auto",
                   attack_kw: Mapping[str, Mapping] | None = None, batch_size: int | None = None,
                   ssim: bool = True, progress: bool = False,
                   attack_factory: Callable | None = None, settle_b: float | None = None) -> xr.Dataset:
    """Per-sample, ε-monotone attack records with dims (model, attack, eps, sample).

    ``images`` float [N,3,H,W] in [0, 1] (resized per model to ``model.input_size`` when that
    differs); ``labels`` [N] with 0 real, 1 fake (the truth y; the attacks get the clean
    prediction ŷ); ``meta`` the manifest rows of the samples (same order) whose columns become
    sample coordinates. ``attacks``: budgeted attacks of :mod:`dfrobust.attacks` (``cw`` is an
    error: it is :func:`minimal_records`). ``attack_kw`` maps attack name → options for
    :func:`dfrobust.attacks.make_attack` (e.g. ``{"pgd": {"steps": 20}}``).
    ``attack_factory(name, model, *, eps, seed, **kw)`` replaces
    :func:`dfrobust.attacks.make_attack` (e.g. video-aware attacks); with it, FGSM is built per ε
    by the factory instead of the shared-gradient :func:`dfrobust.attacks.fgsm_sweep`.
    ``settle_b`` (the largest bound b the caller will read, or None): a sample whose prediction
    flipped with |ΔP(ŷ)| > ``settle_b`` at some radius is not attacked at larger radii (FGSM, one
    shared gradient, always runs). It stays non-robust for every b ≤ ``settle_b`` and wrong, so RA
    and RR(b ≤ ``settle_b``) do not change (see ``_run_attack`` for random starts); its stored change
    at larger radii is the smaller radius' (``eps_found``), less than a full attack may find. Not
    for factory attacks, which may carry state across samples (progressive).
    All inputs are validated before any attack runs.
    """
    attack_names, eps = check_sweep(attacks, eps_grid)
    labels = _check_inputs(models, images, labels, meta)
    n = images.shape[0]
    attack_kw = {_attacks.check_attack(k): dict(v) for k, v in (attack_kw or {}).items()}
    for a in attack_names:  # option names checked now, not after an hour of attacks
        _attacks.check_options(a, **attack_kw.get(a, {}))
    check_settle_b(settle_b)
    if settle_b is not None and attack_factory is not None:
        raise ValueError("settle_b with attack_factory: a factory attack may carry state across samples; "
                         "expected settle_b=None")
    if attack_factory is not None and not callable(attack_factory):
        raise ValueError(f"attack_factory={attack_factory!r}: expected a callable like dfrobust.attacks.make_attack")
    dev = pick_device(device)

    model_names = list(models)
    shape4 = (len(model_names), len(attack_names), len(eps), n)
    rec = {k: np.zeros(shape4, dtype=np.float64) for k in ("p_adv", "p_adv_fake", "l2", "linf", "ssim", "eps_found")}
    rec.update({k: np.zeros(shape4, dtype=np.int64) for k in ("pred_adv",)})
    rec.update({k: np.zeros(shape4, dtype=bool) for k in ("changed", "success", "in_budget")})
    eps_l2 = np.zeros((len(model_names), len(eps)))
    clean, timings = [], {}
    y = labels.numpy()
    eps_arr = np.asarray(eps, dtype=float)

    for mi, mname in enumerate(model_names):
        model = models[mname].to(dev).eval()
        c = _clean(model, images, batch_size, dev)
        clean.append(c)
        pf, pc = c["pf"], c["pc"]
        yhat = torch.as_tensor(pc, dtype=torch.long)     # the label every attack moves away from
        eps_l2[mi] = [_attacks.l2_radius(e, c["x"].shape[1:]) for e in eps]
        for ai, aname in enumerate(attack_names):
            t0 = time.perf_counter()
            raw = _run_attack(aname, model, c["x"], yhat, pf, eps, eps_l2[mi], c["bs"], dev,
                              seed=seed * 7919 + mi * 131 + ai * 17, kw=attack_kw.get(aname, {}), ssim=ssim,
                              factory=attack_factory, settle_b=settle_b)
            for ei, e in enumerate(eps):
                _, l2, linf, _, _ = raw[ei]
                l2_norm = _attacks.NORM[aname] == "l2"
                inb = l2 <= eps_l2[mi, ei] * (1 + 1e-5) + _TOL if l2_norm else linf <= e + _TOL
                if not inb.all():
                    raise RuntimeError(f"{aname} at eps={e}: perturbation outside its budget "
                                       f"(max {l2.max() if l2_norm else linf.max():.6g})")
            kept, src, flipped = _monotone(raw, eps, pf, pc)
            for ei in range(len(eps)):
                pa, l2, linf, ss, changed = kept[ei]
                idx = (mi, ai, ei)
                rec["p_adv_fake"][idx] = pa
                rec["p_adv"][idx] = np.where(pc == 1, pa, 1 - pa)
                rec["pred_adv"][idx] = np.where(flipped[ei], 1 - pc, pc)
                rec["l2"][idx], rec["linf"][idx], rec["ssim"][idx] = l2, linf, ss
                rec["changed"][idx] = changed
                rec["success"][idx] = (pc == y) & flipped[ei]
                rec["in_budget"][idx] = True
                rec["eps_found"][idx] = eps_arr[src[ei]]
            timings[f"{mname}/{aname}"] = round(time.perf_counter() - t0, 3)
            if progress:
                print(f"{mname:>16s} {aname:>6s}: {timings[f'{mname}/{aname}']:.1f} s", flush=True)

    dims4 = ("model", "attack", "eps", "sample")
    desc = {
        "p_adv": ("P(ŷ | x+δ): adversarial probability of the clean-predicted class (largest |ΔP(ŷ)| "
                  "at any radius <= eps)", "1"),
        "p_adv_fake": ("P(fake | x+δ) of the kept perturbation", "1"),
        "pred_adv": ("worst adversarial prediction at any radius <= eps (0 real, 1 fake): flipped from ŷ "
                     "if any radius <= eps flipped it", "1"),
        "l2": ("||δ||₂ of the kept perturbation", "pixel [0,1]"),
        "linf": ("||δ||∞ of the kept perturbation", "pixel [0,1]"),
        "ssim": ("SSIM(clean, adversarial) of the kept perturbation", "1"),
        "changed": ("the kept perturbation changed the image (||δ||∞ > 1e-6)", "bool"),
        "success": ("clean prediction correct and adversarial prediction wrong (at any radius <= eps)", "bool"),
        "in_budget": ("perturbation within the radius of this eps (always, checked)", "bool"),
        "eps_found": ("radius of the grid at which the kept perturbation was found (<= eps)", "pixel [0,1]"),
    }
    data_vars = {k: (dims4, rec[k], {"long_name": desc[k][0], "units": desc[k][1]}) for k in RECORD_VARS}
    data_vars.update(_clean_vars(clean, y))
    data_vars["eps_l2"] = (("model", "eps"), eps_l2, {"long_name": "L2 radius matched to eps: eps*sqrt(C*H*W)",
                                                      "units": "pixel [0,1]"})
    coords = {"model": model_names, "attack": attack_names, "eps": eps_arr,
              "sample": np.arange(n), **_sample_coords(meta, n)}
    ds = xr.Dataset(data_vars, coords=coords)
    ds["eps"].attrs.update(long_name="L∞ radius ε (images in [0, 1])", units="pixel [0,1]")
    ds.attrs.update(kind="attack_records", attacked_label="y_hat", seed=int(seed), device=describe(dev),
                    attack_kw=str({k: dict(v) for k, v in attack_kw.items()}),
                    eps_monotone="per sample the worst record found at any radius <= eps (cumulative max)",
                    changed_tol=CHANGED_TOL,
                    settle_b="none (every sample attacked at every radius)" if settle_b is None else
                    f"{settle_b:g}: samples flipped with |ΔP(ŷ)| > {settle_b:g} at a smaller radius are not "
                    "attacked at larger ones (RA and RR(b <= settle_b) exact)",
                    bound_note="attack-based RR and RA are upper bounds of the formal quantities",
                    attack_time_s=str(timings))
    return ds


def minimal_records(models: Mapping[str, torch.nn.Module], images: torch.Tensor, labels: torch.Tensor,
                    meta: pd.DataFrame | None = None, *, seed: int = 0, device: str = "auto",
                    cw_kw: Mapping | None = None, batch_size: int | None = None,
                    progress: bool = False) -> xr.Dataset:
    """Minimal-perturbation records of CW-L2 (binary search over c), dims (model, sample).

    Per (model, sample): the smallest ``||δ||₂`` that flipped the clean prediction ŷ
    (``l2_min``, inf when none was found), its ``||δ||∞``, P(ŷ|x+δ) and P(fake|x+δ) at it (the
    clean values when none), the c that found it (nan when none) and ``found``. ``cw_kw``: options
    of the registry's ``cw`` (``c_init``, ``c_min``, ``c_max``, ``search_steps``, ``steps``,
    ``lr``, ``kappa``). RA against a radius r is then mean 1[clean correct ∧ l2_min > r].
    """
    labels = _check_inputs(models, images, labels, meta)
    opts = _attacks.check_options("cw", **dict(cw_kw or {}))
    dev = pick_device(device)
    n, model_names = images.shape[0], list(models)
    out = {k: np.zeros((len(model_names), n)) for k in ("l2_min", "linf_at_min", "p_adv", "p_adv_fake", "c")}
    found = np.zeros((len(model_names), n), dtype=bool)
    clean, timings = [], {}
    for mi, mname in enumerate(model_names):
        model = models[mname].to(dev).eval()
        c = _clean(model, images, batch_size, dev)
        clean.append(c)
        yhat = torch.as_tensor(c["pc"], dtype=torch.long)
        atk = _attacks.make_attack("cw", model, eps=0.0, seed=seed, **opts)
        t0 = time.perf_counter()
        for s in range(0, n, c["bs"]):
            xb, yb = c["x"][s:s + c["bs"]].to(dev), yhat[s:s + c["bs"]].to(dev)
            adv = atk(xb, yb)
            pa, _, linf, _ = _measure(model, xb, adv, c["pf"][s:s + c["bs"]])
            sl = slice(s, s + len(xb))
            ok = atk.last_found
            found[mi, sl] = ok
            out["l2_min"][mi, sl] = np.where(ok, atk.last_l2, np.inf)
            out["linf_at_min"][mi, sl] = np.where(ok, linf, np.inf)
            out["c"][mi, sl] = atk.last_c
            out["p_adv_fake"][mi, sl] = np.where(ok, pa, c["pf"][sl])
        out["p_adv"][mi] = np.where(c["pc"] == 1, out["p_adv_fake"][mi], 1 - out["p_adv_fake"][mi])
        timings[mname] = round(time.perf_counter() - t0, 3)
        if progress:
            print(f"{mname:>16s}     cw: {timings[mname]:.1f} s", flush=True)
    desc = {"l2_min": ("minimal ||δ||₂ found that flips ŷ (inf: none found)", "pixel [0,1]"),
            "linf_at_min": ("||δ||∞ of that perturbation (inf: none found)", "pixel [0,1]"),
            "p_adv": ("P(ŷ | x+δ) at the minimal perturbation (P(ŷ | x) when none)", "1"),
            "p_adv_fake": ("P(fake | x+δ) at the minimal perturbation", "1"),
            "c": ("CW trade-off constant c that found it (nan: none)", "1")}
    dims = ("model", "sample")
    data_vars = {k: (dims, out[k], {"long_name": desc[k][0], "units": desc[k][1]}) for k in desc}
    data_vars["found"] = (dims, found, {"long_name": "a perturbation flipping ŷ was found", "units": "bool"})
    data_vars.update(_clean_vars(clean, labels.numpy()))
    ds = xr.Dataset(data_vars, coords={"model": model_names, "sample": np.arange(n), **_sample_coords(meta, n)})
    ds.attrs.update(kind="minimal_records", attack="cw", attacked_label="y_hat", seed=int(seed),
                    device=describe(dev), cw_kw=str(opts), attack_time_s=str(timings),
                    note="CW-L2 with a binary search over c (Carlini & Wagner 2017); no budget")
    return ds


def attack_options(attack_names: Sequence[str], *, steps: int) -> dict[str, dict]:
    """``attack_kw`` for :func:`attack_records`: ``steps`` for every iterative attack of the sweep
    (those whose registry defaults have ``steps``: PGD, PGD-L2, CW-L∞, RR); FGSM takes none."""
    return {a: {"steps": int(steps)} for a in attack_names if "steps" in _attacks.DEFAULTS.get(a, {})}


def cw_options(*, c_init: float, search_steps: int, steps: int, lr: float) -> dict:
    """``cw_kw`` for :func:`minimal_records` (the registry's ``cw`` options; c range and κ keep their
    defaults), checked now."""
    return _attacks.check_options("cw", c_init=float(c_init), search_steps=int(search_steps), steps=int(steps),
                                  lr=float(lr))


def budgeted_linf(attack_names: Sequence[str]) -> list[str]:
    """The attacks of a sweep that share the L∞ ball of radius ε (the worst case is over these)."""
    unbudgeted = set(getattr(_attacks, "UNBUDGETED", ()))
    return [a for a in attack_names if _attacks.NORM.get(a) == "linf" and a not in unbudgeted]


def with_worst_case(records: xr.Dataset, name: str = "worst") -> xr.Dataset:
    """``records`` plus the per-sample worst case over its budgeted L∞ attacks (when there are two
    or more; with one, the worst case is that attack and nothing is added)."""
    names = budgeted_linf([str(a) for a in records.attack.values])
    if len(names) < 2:
        return records
    return metrics.worst_case(records, names, name=name)


def load_samples(df: pd.DataFrame, size: int) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame, list[dict]]:
    """Images and labels of ``df`` at ``size``; unreadable files are skipped, counted and returned."""
    from ..data.manifest import load_images

    imgs, keep, skipped = [], [], []
    for i in range(len(df)):
        row = df.iloc[[i]]
        try:
            imgs.append(load_images(row, size))
            keep.append(i)
        except (OSError, ValueError) as err:
            path = str(row["path"].iloc[0])
            skipped.append({"path": home_relative(path), "reason": str(err).replace(path, home_relative(path))})
    if not keep:
        raise FileNotFoundError(f"none of the {len(df)} selected images could be read "
                                f"(e.g. {skipped[0]['path'] if skipped else '?'})")
    kept = df.iloc[keep].reset_index(drop=True)
    return (torch.cat(imgs), torch.tensor(kept["label"].to_numpy(np.int64).copy()), kept, skipped)


def identity_subset(samples, n: int, *, seed: int = 0):
    """The attacked images restricted to a seeded subsample of whole identities holding about ``n`` images
    (:func:`dfrobust.data.sampling.identity_subsample`; ``n = 0``: all): ``(samples, positions)``, the same
    dataclass with ``images``, ``labels`` and ``meta`` cut to ``positions`` (rows of the full set, sorted).
    Chapter 03's CW-L2 and L2-ball RR sections both call it, so they attack the same images."""
    from dataclasses import replace

    from ..data.sampling import identity_subsample

    pos = identity_subsample(samples.meta, n, seed=seed)
    if len(pos) == len(samples.meta):
        return samples, pos
    idx = torch.as_tensor(pos)
    return replace(samples, images=samples.images[idx], labels=samples.labels[idx],
                   meta=samples.meta.iloc[pos].reset_index(drop=True)), pos


def units_label(meta: pd.DataFrame | None, n_images: int) -> str:
    """"k identities (n images)" for the rows ``meta`` (n images alone without an identity column)."""
    if meta is None or "identity" not in meta.columns:
        return f"{n_images} images"
    return f"{meta['identity'].astype(str).nunique()} identities ({n_images} images)"
