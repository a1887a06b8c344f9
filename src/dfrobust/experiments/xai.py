"""XAI-guided adversarial evaluation (Gowrisankar & Thing, 2023) as tidy xarray records.

Protocol, per detector and image pair (a fake and the real frame it was made from):

0. the pair is analysed only when the detector calls the fake fake (P(fake) ≥ 0.5: otherwise there
   is nothing to attack) and the real real (otherwise "explain real" explains a wrong decision);
   the first ``n_pairs`` such pairs in the candidates' balanced order, per detector; the
   records keep every candidate's clean predictions, so the drops per rule are counted;
1. one SLIC segmentation of the **real** image (:mod:`dfrobust.explainers.segments`), shared by all tools;
2. each tool explains the real image for its own class (``target = 0``, real) and ranks the segments
   by mean attribution (:mod:`dfrobust.explainers`); one explanation serves every k;
3. the **paired fake** is attacked with the black-box masked NES attack (:mod:`dfrobust.attacks.nes`)
   inside the tool's top segments: by default until they cover the same pixel budget for every
   tool (``masks="area"``: k mean-sized segments' worth, so no tool wins by attacking more pixels),
   or the paper's k segments (``masks="count"``); the lower the detector's accuracy on these
   adversarial fakes, the more faithful the tool's ranking (a random ranking is the baseline);
4. contrast: deletion/insertion AUCs (Petsiuk et al., 2018) of P(real) on the real image when the
   same ranked segments are removed (set to 0) or inserted (into a blurred copy), and the Kendall
   tau (``scipy.stats.kendalltau``) between the two rankings of tools.

NES stops on a pair once its fake is called real and records the queries to flip, censored at the
budget (``censored``, ``attrs["nes_budget"]``); NES on the whole image (``full_success``,
``full_queries``) is the ceiling no choice of segments can beat.

The chapter is three calls (the notebook narrates them): :func:`setup` (data, detectors, the quality
gate), :func:`experiment` (:func:`run_xai`, records saved) and :func:`analyse` (a
:class:`~dfrobust.core.results.ChapterResult` of every value, table and verdict the page shows).

Records have dims ``(model, tool, k, pair)`` with pair coords from the manifest (group,
manipulation, dataset, ...), per-stage wall times per pair (where the chapter's time goes), and
``analysed``; the faithfulness metrics and verdicts are reductions in :mod:`dfrobust.metrics.faithfulness`.
Forwards without gradients run under ``torch.inference_mode`` in small CPU chunks (:data:`CPU_CHUNK`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from .. import explainers as _explain
from ..attacks import MaskedNES
from ..attacks.nes import nes_budget
from ..core.device import auto_batch_size, describe, pick_device
from ..core.results import ChapterResult
from ..core.params import MAX_BOOT, MAX_COUNT, check_int, check_number, check_seed, int_list, split_list
from ..data.sampling import balanced, select_pairs
from ..explainers.segments import area_budget, area_mask, rank_segments, slic_segments, topk_mask
from ..metrics.faithfulness import THRESHOLD

#: NES defaults — our choice; the paper's exact values are not public.
NES_DEFAULTS = {"sigma": 0.001, "n_pairs": 40, "steps": 50, "alpha": 1 / 255, "eps": 16 / 255}
TOP_K = (1, 2, 3, 5, 10)
PAIR_COORDS = ("pair_id", "group", "manipulation", "dataset", "identity", "video_id", "frame_index", "split")


# ----------------------------------------------------------------------------- deletion / insertion
def _blur(images: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    k = max(3, (images.shape[-1] // 8) | 1)
    return gaussian_blur(images, kernel_size=[k, k], sigma=[k / 3, k / 3])


@torch.inference_mode()
def deletion_insertion(model: nn.Module, images: torch.Tensor, segments: np.ndarray,
                       rankings: Sequence[np.ndarray], target: int = 0, *, n_steps: int = 10,
                       batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUCs [N] of P(target) as ranked segments are removed / inserted.

    Step ``j`` of ``n_steps`` removes (sets to 0) or inserts (into a blurred copy) the first
    ``round(j / n_steps * S)`` ranked segments; the AUC is the trapezoid mean over the fractions.
    Lower deletion and higher insertion mean a more faithful ranking.
    """
    dev = next(model.parameters()).device
    blurred = _blur(images)
    dels, ins = [], []
    for i, (seg, rank) in enumerate(zip(segments, rankings)):
        s = len(rank)
        counts = [int(round(j / n_steps * s)) for j in range(n_steps + 1)]
        masks = torch.from_numpy(np.stack([topk_mask(seg, rank, c) for c in counts])).to(images.device)
        m = masks[:, None].float()
        x = images[i:i + 1]
        deleted = x * (1 - m)
        inserted = blurred[i:i + 1] * (1 - m) + x * m
        p = _explain.batched_proba(model, torch.cat([deleted, inserted]).to(dev), batch_size)[:, target].cpu().numpy()
        frac = np.asarray(counts) / max(s, 1)
        dels.append(np.trapezoid(p[: n_steps + 1], frac))
        ins.append(np.trapezoid(p[n_steps + 1:], frac))
    return np.asarray(dels, dtype=np.float32), np.asarray(ins, dtype=np.float32)


# ----------------------------------------------------------------------------- experiment
#: images per forward on a CPU: measured with ``bench/bench_lime.py`` (forward alone, Meso4, one thread),
#: a 100-image batch costs about twice as much per image as a 10-image one at 128-256 px (activations
#: fall out of cache), so the chapter's many small forwards (LIME, RISE, SOBOL, NES) use small chunks.
CPU_CHUNK = 8


def chunk_size(device: torch.device, size: int) -> int:
    """Images per forward for the XAI chapter: :data:`CPU_CHUNK` on a CPU, the device's automatic size on a GPU."""
    return CPU_CHUNK if torch.device(device).type == "cpu" else auto_batch_size(torch.device(device), size)


@dataclass
class XAIRun:
    """Records of one experiment plus a small gallery per model (first ``keep`` analysed pairs)."""
    records: xr.Dataset
    gallery: dict[str, xr.Dataset] = field(default_factory=dict)


def candidate_pairs(manifest: pd.DataFrame, n: int | None = None, *, seed: int = 0) -> pd.DataFrame:
    """All (fake, real) test pairs in a balanced order (group × manipulation, :func:`balanced`), first ``n``.

    Any prefix is balanced, so taking the first pairs the detector gets right keeps the balance
    as far as the detector's errors allow.
    """
    allp = select_pairs(manifest, max(len(manifest), 1), seed=seed)
    return balanced(allp, int(n or len(allp)), by=("group", "manipulation"), seed=seed, what="n_pairs")


def _per_model(value, names: Sequence[str], what: str) -> dict[str, int | None]:
    if value is None or isinstance(value, (int, np.integer)):
        out = {n: value for n in names}
    else:
        out = {n: value.get(n, value.get(n.split("@")[0])) for n in names}
    for n, v in out.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{what}[{n!r}]={v!r}: expected an integer >= 1 or None (all eligible pairs)")
    return out


def run_xai(models: Mapping[str, nn.Module], pairs: pd.DataFrame, *, tools: Sequence[str] = _explain.TOOLS,
            top_k: str | Sequence[int] = TOP_K, n_segments: int = 100, seed: int = 0, device: str = "auto",
            nes: Mapping[str, Any] | None = None, explain_options: Mapping[str, Mapping[str, Any]] | None = None,
            batch_size: int | None = None, deletion_steps: int = 10, keep: int = 2,
            n_pairs: int | Mapping[str, int] | None = None, masks: str = "area", area_per_k: float = 0.0,
            load: Callable[[pd.DataFrame, int], torch.Tensor] | None = None,
            progress: Callable[[str], None] | None = None) -> XAIRun:
    """Explain the real image, attack the paired fake on the top-k segments, for every model × tool × k.

    ``models``: name → detector (``.input_size`` gives the image size; the name may carry the size,
    e.g. ``"xception@299"``).  ``pairs``: candidate pairs (:func:`candidate_pairs` / :func:`select_pairs`
    output) in the order they are taken.  ``load(df, size)`` returns [N,3,size,size] in [0,1]
    (default :func:`dfrobust.data.manifest.load_images`; the real images from ``real_path``).

    Protocol: a pair is analysed by a model only when the detector calls its fake fake (else there
    is nothing to attack) and its real real (else "explain real" explains a wrong decision); the
    first ``n_pairs`` such pairs per model are analysed (None: all; an int or name → int), the rest
    keep their clean predictions and ``analysed = 0``.  ``masks="area"``: each tool attacks its top
    segments until they cover :func:`~dfrobust.explainers.segments.area_budget` (k, segments,
    ``area_per_k``) of the pixels, so every tool attacks the same area within one segment;
    ``masks="count"``: the paper's k segments whatever their size.  Either way ``mask_fraction``
    records the area attacked and ``count_mask_fraction`` the area of the top-k segments.
    """
    tools = list(tools)
    bad = [t for t in tools if t not in _explain.TOOLS]
    if bad or not tools:
        raise ValueError(f"tools={tools!r}: expected some of {', '.join(_explain.TOOLS)}")
    ks = int_list(top_k, "top_k", minimum=1)
    if not models:
        raise ValueError("models is empty: expected at least one detector")
    if masks not in ("area", "count"):
        raise ValueError(f"masks={masks!r}: expected 'area' (equal pixel budget) or 'count' (k segments)")
    area_budget(1, 1, area_per_k)  # checks area_per_k
    if "real_path" not in pairs.columns or "path" not in pairs.columns:
        raise ValueError("pairs: expected the output of select_pairs (columns path and real_path)")
    nes_kw = {**NES_DEFAULTS, **dict(nes or {})}
    unknown = set(nes_kw) - set(NES_DEFAULTS) - {"batch_size"}
    if unknown:
        raise ValueError(f"nes options {sorted(unknown)}: expected some of {sorted(NES_DEFAULTS)}")
    explain_options = {t: dict((explain_options or {}).get(t, {})) for t in tools}
    for t, o in explain_options.items():
        _explain.make_explainer(t, **o)          # unknown options raise here, before any model runs
    names = list(models)
    quota = _per_model(n_pairs, names, "n_pairs")
    if load is None:
        from ..data.manifest import load_images as load
    dev = pick_device(device)
    _explain.warmup(tools)
    say = progress or (lambda _m: None)

    real_df = pairs[[c for c in pairs.columns if c.startswith("real_")]].rename(columns=lambda c: c[5:])
    fake_df = pairs[[c for c in pairs.columns if not c.startswith("real_")]]
    n = len(pairs)
    shape_t = (len(names), len(tools), len(ks), n)
    shape_p = (len(names), n)
    shape_e = (len(names), len(tools), n)
    rec = {
        "p_fake_clean": np.full(shape_p, np.nan, np.float32),
        "p_fake_real": np.full(shape_p, np.nan, np.float32),
        "analysed": np.zeros(shape_p, np.int8),
        "n_segments_actual": np.zeros(shape_p, np.int32),
        "p_fake_adv": np.full(shape_t, np.nan, np.float32),
        "success": np.zeros(shape_t, np.int8),
        "queries": np.zeros(shape_t, np.int64),
        "censored": np.zeros(shape_t, np.int8),
        "steps": np.zeros(shape_t, np.int32),
        "mask_fraction": np.full(shape_t, np.nan, np.float32),
        "count_mask_fraction": np.full(shape_t, np.nan, np.float32),
        "attack_time_s": np.zeros(shape_t, np.float32),
        "explain_time_s": np.zeros(shape_e, np.float32),
        "deletion_time_s": np.zeros(shape_e, np.float32),
        "deletion_auc": np.full(shape_e, np.nan, np.float32),
        "insertion_auc": np.full(shape_e, np.nan, np.float32),
        "full_success": np.zeros(shape_p, np.int8),
        "full_queries": np.zeros(shape_p, np.int64),
    }
    setup_s = np.zeros(len(names), np.float32)
    sizes, gallery, images = [], {}, {}
    for mi, name in enumerate(names):
        t_setup = time.perf_counter()
        model = models[name].to(dev).eval()
        size = int(getattr(model, "input_size", None) or 256)
        sizes.append(size)
        bs = int(batch_size or chunk_size(dev, size))
        nes_run = {"batch_size": bs, **nes_kw}
        if size not in images:                                   # one load per size, shared by its models
            images[size] = (load(real_df, size), load(fake_df, size))
        real_all, fake_all = images[size]
        p_fake = _explain.batched_proba(model, fake_all.to(dev), bs)[:, 1].cpu().numpy()
        p_real = _explain.batched_proba(model, real_all.to(dev), bs)[:, 1].cpu().numpy()
        rec["p_fake_clean"][mi], rec["p_fake_real"][mi] = p_fake, p_real
        eligible = np.flatnonzero((p_fake >= THRESHOLD) & (p_real < THRESHOLD))
        idx = eligible[: quota[name]] if quota[name] is not None else eligible
        rec["analysed"][mi, idx] = 1
        m_ = len(idx)
        say(f"{name}: {m_} of {n} pairs analysed ({n - len(eligible)} dropped by the protocol)")
        if m_ == 0:
            setup_s[mi] = time.perf_counter() - t_setup
            continue
        real, fake = real_all[idx].to(dev), fake_all[idx].to(dev)
        seg = slic_segments(real.cpu(), n_segments)
        s_act = seg.reshape(m_, -1).max(1) + 1
        rec["n_segments_actual"][mi, idx] = s_act
        setup_s[mi] = time.perf_counter() - t_setup
        g_att, g_mask, g_adv = [], [], []
        labels = torch.ones(m_, dtype=torch.long)
        for ti, tool in enumerate(tools):
            say(f"{name}: {tool}")
            t0 = time.perf_counter()
            att = _explain.explain(tool, model, real, 0, seed=seed, batch_size=bs, device=str(dev),
                                   segments=seg, **explain_options[tool])
            rec["explain_time_s"][mi, ti, idx] = (time.perf_counter() - t0) / m_
            ranks = [rank_segments(a, s) for a, s in zip(att, seg)]       # one explanation serves every k
            t0 = time.perf_counter()
            d, ins = deletion_insertion(model, real, seg, ranks, 0, n_steps=deletion_steps, batch_size=bs)
            rec["deletion_time_s"][mi, ti, idx] = (time.perf_counter() - t0) / m_
            rec["deletion_auc"][mi, ti, idx], rec["insertion_auc"][mi, ti, idx] = d, ins
            masks_k, adv_k = [], []
            for ki, k in enumerate(ks):
                by_count = np.stack([topk_mask(s, r, k) for s, r in zip(seg, ranks)])
                if masks == "area":
                    mask = np.stack([area_mask(s, r, area_budget(k, sa, area_per_k))
                                     for s, r, sa in zip(seg, ranks, s_act)])
                else:
                    mask = by_count
                atk = MaskedNES(model, seed=seed, **nes_run)
                t0 = time.perf_counter()
                adv = atk(fake, labels, torch.from_numpy(mask))
                rec["attack_time_s"][mi, ti, ki, idx] = (time.perf_counter() - t0) / m_
                rec["p_fake_adv"][mi, ti, ki, idx] = _explain.batched_proba(model, adv, bs)[:, 1].cpu().numpy()
                rec["success"][mi, ti, ki, idx] = atk.last_success
                rec["queries"][mi, ti, ki, idx] = atk.last_queries
                rec["censored"][mi, ti, ki, idx] = atk.last_censored
                rec["steps"][mi, ti, ki, idx] = atk.last_steps
                rec["mask_fraction"][mi, ti, ki, idx] = mask.reshape(m_, -1).mean(1)
                rec["count_mask_fraction"][mi, ti, ki, idx] = by_count.reshape(m_, -1).mean(1)
                masks_k.append(mask[:keep])
                adv_k.append(adv[:keep].cpu().numpy())
            g_att.append(att[:keep])
            g_mask.append(np.stack(masks_k))
            g_adv.append(np.stack(adv_k))
        say(f"{name}: NES on the whole image (the ceiling)")
        atk = MaskedNES(model, seed=seed, **nes_run)
        atk(fake, labels, None)
        rec["full_success"][mi, idx], rec["full_queries"][mi, idx] = atk.last_success, atk.last_queries
        gallery[name] = xr.Dataset(
            {"real": (("pair", "channel", "y", "x"), real[:keep].cpu().numpy()),
             "fake": (("pair", "channel", "y", "x"), fake[:keep].cpu().numpy()),
             "segments": (("pair", "y", "x"), seg[:keep]),
             "attribution": (("tool", "pair", "y", "x"), np.stack(g_att)),
             "mask": (("tool", "k", "pair", "y", "x"), np.stack(g_mask).astype(np.int8)),
             "adv": (("tool", "k", "pair", "channel", "y", "x"), np.stack(g_adv))},
            coords={"tool": tools, "k": ks, "pair": pairs["pair_id"].astype(str).to_numpy()[idx[:keep]]},
            attrs={"model": name, "input_size": size})

    dims_t, dims_p, dims_e = ("model", "tool", "k", "pair"), ("model", "pair"), ("model", "tool", "pair")
    units = {"p_fake_clean": ("1", "P(fake) of the clean fake"), "p_fake_real": ("1", "P(fake) of the real image"),
             "analysed": ("1", "pair analysed (fake called fake and real called real, within n_pairs)"),
             "n_segments_actual": ("1", "SLIC segments of the real image"),
             "p_fake_adv": ("1", "P(fake) of the adversarial fake"), "success": ("1", "fake classified real after NES"),
             "queries": ("1", "NES queries to flip the fake (the budget when censored)"),
             "censored": ("1", "no flip within the NES budget (queries = budget)"),
             "full_success": ("1", "fake classified real after NES on the whole image (the ceiling)"),
             "full_queries": ("1", "queries to flip with NES on the whole image (the budget when censored)"),
             "steps": ("1", "NES update steps"),
             "mask_fraction": ("1", "fraction of pixels attacked"),
             "count_mask_fraction": ("1", "fraction of pixels in the top-k segments (count rule)"),
             "attack_time_s": ("s", "NES wall time per image"), "explain_time_s": ("s", "explanation wall time per image"),
             "deletion_time_s": ("s", "deletion/insertion wall time per image"),
             "deletion_auc": ("1", "deletion AUC of P(real) (lower = more faithful)"),
             "insertion_auc": ("1", "insertion AUC of P(real) (higher = more faithful)")}
    data_vars = {}
    for k_, v in rec.items():
        dims = dims_p if v.shape == shape_p else dims_e if v.ndim == 3 else dims_t
        data_vars[k_] = (dims, v, {"units": units[k_][0], "long_name": units[k_][1]})
    data_vars["setup_time_s"] = ("model", setup_s, {"units": "s", "long_name": "load, clean predictions, SLIC"})
    coords: dict[str, Any] = {"model": names, "tool": tools, "k": ks, "pair": np.arange(n),
                              "input_size": ("model", np.asarray(sizes, np.int32)),
                              "arch": ("model", [nm.split("@")[0] for nm in names])}
    for c in PAIR_COORDS:
        if c in pairs.columns:
            vals = pairs[c].to_numpy()
            coords[c] = ("pair", vals.astype(str) if vals.dtype == object else vals)
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({"device": describe(dev), "n_segments": int(n_segments), "seed": int(seed),
                     "nes": {k_: float(v) for k_, v in nes_kw.items() if v is not None},
                     "nes_budget": nes_budget(nes_kw["steps"], nes_kw["n_pairs"]),
                     "explain_options": explain_options, "explain_target": 0, "attack_label": 1,
                     "masks": masks, "area_per_k": float(area_per_k), "threshold": THRESHOLD})
    return XAIRun(records=ds, gallery=gallery)


def time_table(ds: xr.Dataset) -> pd.DataFrame:
    """Where the time goes, per model × tool: seconds per analysed pair of the explanation, the
    deletion/insertion contrast and the NES attack (mean over k and summed over k), the total over the
    pairs, and its share of the experiment (setup: loading, clean predictions and SLIC, per model)."""
    ana = ds["analysed"].astype(bool) if "analysed" in ds else xr.ones_like(ds["p_fake_clean"], dtype=bool)
    n = ana.sum("pair")
    per_pair = lambda v: v.where(ana).mean("pair")
    ex = per_pair(ds["explain_time_s"])
    de = per_pair(ds["deletion_time_s"]) if "deletion_time_s" in ds else xr.zeros_like(ex)
    at = per_pair(ds["attack_time_s"])
    df = xr.Dataset({"explain_s": ex, "deletion_s": de, "attack_s": at.mean("k"),
                     "attack_all_k_s": at.sum("k")}).to_dataframe().reset_index()
    df["n_pairs"] = [int(n.sel(model=m)) for m in df["model"]]
    df["total_s"] = (df["explain_s"] + df["deletion_s"] + df["attack_all_k_s"]).fillna(0) * df["n_pairs"]
    setup = ds["setup_time_s"].to_series() if "setup_time_s" in ds else pd.Series(0.0, index=ds["model"].values)
    grand = float(df["total_s"].sum() + setup.sum())
    df["share"] = df["total_s"] / grand if grand > 0 else np.nan
    df["input_size"] = [int(ds["input_size"].sel(model=m)) for m in df["model"]]
    df["device"] = ds.attrs.get("device", "")
    return df[["model", "input_size", "tool", "n_pairs", "explain_s", "deletion_s", "attack_s", "attack_all_k_s",
               "total_s", "share", "device"]]


# ----------------------------------------------------------------------------- the chapter's parameters
@dataclass(frozen=True)
class XAISettings:
    """The chapter's parameters, checked and parsed (:func:`check_params`)."""
    models: list[str]
    xception_sizes: list[int]
    tools: list[str]
    top_k: list[int]
    nes: dict[str, float]
    explain_options: dict[str, dict[str, Any]]
    n_pairs: dict[str, int]
    profile: str = "quick"
    seed: int = 0
    data_root: str = ""
    weights: str = ""
    n_segments: int = 30
    masks: str = "area"
    area_per_k: float = 0.0
    deletion_steps: int = 10
    n_boot: int = 1000
    margin: float = 0.1
    power_ratio: float = 2.0
    min_val_auc: float = 0.7
    gallery_k: int = 1
    device: str = "auto"


def _int(name: str, value, lo: int = 1, hi: int = MAX_COUNT) -> int:
    return check_int(value, name, lo, hi)


def _float(name: str, value, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    return check_number(value, name, lo, hi, lo_open=lo_open, hi_open=hi_open)


def check_params(*, data_root: str = "", models: str, xception_sizes: str, tools: str, top_k: str, n_pairs: int, xception_pairs: int,
                 n_segments: int, nes_iters: int, nes_pairs: int, nes_sigma: float, eps: float, alpha: float,
                 lime_samples: int, rise_masks: int, sobol_grid: int, sobol_design: int, xrai_steps: int,
                 xrai_algorithm: str, deletion_steps: int, n_boot: int, gallery_k: int, margin: float,
                 masks: str, area_per_k: float, min_val_auc: float, device: str, seed: int = 0,
                 weights: str = "", profile: str = "quick", power_ratio: float = 2.0,
                 **_ignored: Any) -> XAISettings:
    """Every parameter of the XAI chapter checked before any data or model: one-line errors naming it.
    No side effects: the device is only validated (:func:`~dfrobust.core.device.pick_device`); seeds and
    threads are set by the notebook's one ``prepare_run`` call."""
    from ..models import DETECTORS as MODELS
    from ..models.published import check_weights

    model_names = split_list(models, "models", allowed=MODELS)
    check_weights(model_names, weights)
    sizes = int_list(xception_sizes, "xception_sizes", minimum=8) if str(xception_sizes).strip() else []
    for size in sizes:  # an input of size x size pixels per image, per explainer sample
        check_int(size, "xception_sizes", 8, 1024)
    tool_names = split_list(tools, "tools", allowed=_explain.TOOLS)
    if "random" not in tool_names:
        raise ValueError(f"tools={tools!r}: expected the 'random' baseline among them (every verdict is against it)")
    n_segments = _int("n_segments", n_segments)
    ks = int_list(top_k, "top_k", minimum=1)
    if max(ks) > n_segments:
        raise ValueError(f"top_k={top_k!r}: {max(ks)} exceeds n_segments={n_segments}; expected k <= n_segments")
    n_pairs = _int("n_pairs", n_pairs)
    xception_pairs = _int("xception_pairs", xception_pairs, lo=0)
    check_seed(seed)
    nes = dict(steps=_int("nes_iters", nes_iters), n_pairs=_int("nes_pairs", nes_pairs),
               sigma=_float("nes_sigma", nes_sigma, 0, 1, lo_open=True),
               eps=_float("eps", eps, 0, 1, lo_open=True), alpha=_float("alpha", alpha, 0, 1, lo_open=True))
    if xrai_algorithm not in ("full", "fast"):
        raise ValueError(f"xrai_algorithm={xrai_algorithm!r}: expected 'full' or 'fast'")
    explain_options = {"lime": dict(num_samples=_int("lime_samples", lime_samples, lo=2)),
                       "rise": dict(n_masks=_int("rise_masks", rise_masks)),
                       "sobol": dict(grid=_int("sobol_grid", sobol_grid), nb_design=_int("sobol_design", sobol_design)),
                       "xrai": dict(steps=_int("xrai_steps", xrai_steps), algorithm=xrai_algorithm)}
    _int("deletion_steps", deletion_steps)
    _int("n_boot", n_boot, lo=100, hi=MAX_BOOT)
    if gallery_k not in ks:
        raise ValueError(f"gallery_k={gallery_k!r}: expected one of top_k={ks}")
    _float("margin", margin, 0, 1, lo_open=True, hi_open=True)
    _float("power_ratio", power_ratio, 1, 100, lo_open=True)
    if masks not in ("area", "count"):
        raise ValueError(f"masks={masks!r}: expected 'area' (equal pixel budget per k) or 'count' (k segments)")
    per_k = _float("area_per_k", area_per_k, 0, 1, hi_open=True)
    if per_k * max(ks) > 1:
        raise ValueError(f"area_per_k={area_per_k!r}: {max(ks)} x {per_k:g} exceeds the image; expected area_per_k <= {1 / max(ks):.3g}")
    _float("min_val_auc", min_val_auc, 0, 1)
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device={device!r}: expected auto, cpu or cuda")
    pick_device(device)                     # validated only (a one-line error when absent); prepare_run sets it up
    quota = {m: n_pairs for m in model_names}
    quota["xception"] = xception_pairs or n_pairs
    return XAISettings(models=model_names, xception_sizes=sizes, tools=tool_names, top_k=ks, nes=nes,
                       explain_options=explain_options, n_pairs=quota, profile=str(profile), seed=int(seed),
                       data_root=str(data_root or ""), weights=str(weights or ""), n_segments=n_segments,
                       masks=masks, area_per_k=per_k, deletion_steps=int(deletion_steps), n_boot=int(n_boot),
                       margin=float(margin), power_ratio=float(power_ratio), min_val_auc=float(min_val_auc),
                       gallery_k=int(gallery_k), device=str(device))


# ----------------------------------------------------------------------------- the chapter, section by section
@dataclass
class XAIInputs:
    """What the chapter analyses: the data's label, the candidate pairs, the detectors that passed the gate."""
    data_label: str
    candidates: pd.DataFrame
    analysed: dict[str, nn.Module]
    near_chance: list[str]
    detectors: pd.DataFrame          # the gate table shown on the page
    trained: dict[str, Any]          # name -> TrainedDetector (provenance)
    sizes: dict[str, int]


def setup(cfg: XAISettings, device: torch.device) -> XAIInputs:
    """The manifest, the candidate pairs in balanced order, the detectors (trained or published) and the
    quality gate: the one call site of ``min_val_auc`` (:func:`dfrobust.models.study_gate`: validation AUC and
    chapter 02's learned verdicts)."""
    from ..data import dataset_label, get_manifest
    from ..models import study_gate
    from ..models.published import evaluation_manifest, get_detector

    manifest = get_manifest(cfg.profile, "images", seed=cfg.seed, data_root=cfg.data_root or None)
    candidates = candidate_pairs(evaluation_manifest(manifest, cfg.models), seed=cfg.seed)
    detectors, val_auc, rows, trained, gated = {}, {}, [], {}, {}
    for name, size in [(m, None) for m in cfg.models] + [("xception", s) for s in cfg.xception_sizes]:
        kw = {} if size is None else {"input_size": size}
        td = get_detector(name, manifest, weights=cfg.weights, profile=cfg.profile, seed=cfg.seed,
                          device=str(device), **kw)
        trained[name] = td
        key = f"{name}@{td.input_size}"
        if key in detectors:
            continue
        detectors[key] = td.model
        val_auc[key] = float(np.nanmax(td.record["val_auc"].values)) if td.record["val_auc"].size else float("nan")
        gated[key] = td
        rows.append((key, td.input_size, val_auc[key], td.cached))
    # validation AUC and chapter 02's learned verdicts (matched by checkpoint: another size is not checked)
    gate = study_gate(gated, cfg.min_val_auc, cfg.profile).set_index("model")
    near = gate.index[~gate["analysed"]].tolist()
    table = pd.DataFrame(rows, columns=["detector", "input size", "validation AUC", "from cache"])
    table["learned (chapter 02)"] = [gate.loc[k, "learned"] for k in table["detector"]]
    table["status"] = [gate.loc[k, "status"] for k in table["detector"]]
    return XAIInputs(data_label=dataset_label(manifest), candidates=candidates,
                     analysed={k: m for k, m in detectors.items() if k not in near}, near_chance=near,
                     detectors=table, trained=trained, sizes={k: int(m.input_size) for k, m in detectors.items()})


def experiment(cfg: XAISettings, inputs: XAIInputs, device: torch.device) -> XAIRun | None:
    """Run the experiment on the analysed detectors and save the records (``xai.nc``); None when no
    detector passed the gate."""
    from ..core import paths, results
    from ..data.manifest import load_images
    from ..models.published import detector_provenance

    if not inputs.analysed:
        return None
    quota = {k: cfg.n_pairs["xception" if k.startswith("xception@") else k.split("@")[0]] for k in inputs.analysed}
    t0 = time.perf_counter()
    run = run_xai(inputs.analysed, inputs.candidates, tools=cfg.tools, top_k=cfg.top_k, n_segments=cfg.n_segments,
                  seed=cfg.seed, device=str(device), nes=cfg.nes, explain_options=cfg.explain_options,
                  deletion_steps=cfg.deletion_steps, keep=2, load=load_images, n_pairs=quota, masks=cfg.masks,
                  area_per_k=cfg.area_per_k)
    wall = time.perf_counter() - t0
    settings = dict(n_candidates=len(inputs.candidates), n_pairs=quota, n_segments=cfg.n_segments, top_k=cfg.top_k,
                    masks=cfg.masks, area_per_k=cfg.area_per_k, nes=cfg.nes, explain_options=cfg.explain_options,
                    margin=cfg.margin, min_val_auc=cfg.min_val_auc, near_chance=inputs.near_chance,
                    detectors=inputs.sizes, device=describe(device))
    run.records.attrs.update(results.provenance(settings, profile=cfg.profile, seed=cfg.seed, device=describe(device),
                                                wall_time_s=wall, data=inputs.data_label,
                                                detectors=detector_provenance(inputs.trained)))
    results.save(run.records, paths.results_dir(cfg.profile) / "xai.nc")
    return run


def _best_line(r: Mapping[str, Any]) -> str:
    if r["best"].startswith("not separable"):
        return f"{r['model']}: {r['tied']} {r['best']} pairs"
    if r["best"].startswith("no tool"):
        return f"{r['model']}: {r['best']} (n = {r['n']} pairs)"
    return (f"{r['model']}: **{r['best']}** beats every other tool (lead {r['estimate']:+.2f}, "
            f"95 % CI [{r['lo']:+.2f}, {r['hi']:+.2f}], n = {r['n']} pairs)")


def analyse(cfg: XAISettings, inputs: XAIInputs, run: XAIRun | None, device: torch.device) -> ChapterResult:
    """Every table, value and verdict the page shows (figures: :func:`dfrobust.figures.xai.chapter_figures`)."""
    from IPython.display import Markdown

    from ..metrics import faithfulness as faith
    from ..models.gate import gate_sentence

    ds = run.records if run is not None else None
    counts = faith.protocol_counts(ds) if ds is not None else pd.DataFrame(columns=["model", "analysed"])
    no_pairs = [m for m, k in zip(counts["model"], counts["analysed"]) if k == 0]
    kept = [m for m in counts["model"] if m not in no_pairs]
    da = ds.sel(model=kept) if kept else None
    gate_status = dict(zip(inputs.detectors.get("detector", []), inputs.detectors.get("status", [])))
    gated = inputs.detectors.rename(columns={"detector": "model", "learned (chapter 02)": "learned"})
    gate_text = gate_sentence(gated.assign(analysed=gated["status"].str.startswith("analysed")), cfg.min_val_auc) \
        if len(gated) else "no detector requested"
    why_not = {**{m: gate_status.get(m, "not analysed: near chance") for m in inputs.near_chance},
               **{m: "not analysed: no pair passes the protocol" for m in no_pairs}}
    nan = float("nan")
    v: dict[str, Any] = {
        "data": inputs.data_label, "gate": gate_text, "device": describe(device), "n_candidates": len(inputs.candidates),
        "wall_s": float(ds.attrs.get("wall_time_s", nan)) if ds is not None else 0.0, "margin": cfg.margin,
        "pairs_meso": int(cfg.n_pairs[cfg.models[0]] if cfg.models[0] != "xception" else cfg.n_pairs["xception"]),
        "pairs_xception": str(int(cfg.n_pairs["xception"])) if "xception" in cfg.models or cfg.xception_sizes
        else "none in this build (models without xception: at the paper profile)",
        "nes_iters": int(cfg.nes["steps"]), "nes_budget": nes_budget(cfg.nes["steps"], cfg.nes["n_pairs"]),
        "power_ratio": cfg.power_ratio}
    t: dict[str, pd.DataFrame] = {"detectors": inputs.detectors.round(3), "protocol": counts}
    beats = best = sizes_v = None
    if da is not None:
        t["accuracy"] = faith.accuracy_table(da, n_boot=cfg.n_boot, seed=cfg.seed)
        t["accuracy_wide"] = t["accuracy"].pivot_table(index=["model", "tool"], columns="k", values="adv_acc").round(3)
        if "dataset" in da.coords and da["dataset"].to_series().nunique() > 1:
            t["accuracy_by_dataset"] = faith.accuracy_table(da, by="dataset", n_boot=cfg.n_boot, seed=cfg.seed)
        beats = faith.tool_verdicts(da, margin=cfg.margin, n_boot=cfg.n_boot, seed=cfg.seed)
        best = faith.best_tool(da, margin=cfg.margin, n_boot=cfg.n_boot, seed=cfg.seed)
        t["beats"], t["best"] = beats.drop(columns=["rule"]).round(3), best.drop(columns=["rule"]).round(3)
        succ = faith.success_table(da)
        t["success"] = succ.round(3)
        first_model = str(da["model"].values[0])
        pw = faith.power_beats_random(da, first_model, ratio=cfg.power_ratio, margin=cfg.margin, seed=cfg.seed)
        pe = faith.power_resampled(da, first_model, margin=cfg.margin, seed=cfg.seed)
        t["power_table"] = pd.DataFrame([
            {"alternative": f"design: a tool flipping {cfg.power_ratio:g} x random's fakes", "unit": "pairs", **pw},
            {"alternative": "estimated effect: identities resampled", "unit": "identities",
             **{k: pe[k] for k in ("claim", "n", "power", "n_2n", "power_2n", "n_sim", "note")}}]).round(3)
        kmax = str(max(cfg.top_k))
        s0 = succ[succ.model == first_model].set_index(["tool", "k"])["flipped"]
        v.update(power=pw["power"], power_n=pw["n"], power_n80=(str(pw["n_80"]) if pw["n_80"] else "no n (nothing to simulate)"
                                                     if not np.isfinite(pw["power"]) else f"more than {64 * pw['n']}"),
                 power_note=pw["note"] or "simulated", power_est=pe["power"], power_est_2n=pe["power_2n"],
                 power_est_n=pe["n"], power_est_n2=pe["n_2n"], power_est_sims=pe["n_sim"],
                 success_full=float(s0.get(("full image", "all"), nan)),
                 success_random_kmax=float(s0.get(("random", kmax), nan)), success_rate=float(da["success"].where(
                     da["analysed"] == 1).mean()),
                 success_tools=", ".join(f"{tl} {s0.get((tl, kmax), nan):.2f}" for tl in cfg.tools if tl != "random"))
        ana = da["analysed"] == 1
        area = pd.DataFrame({"count rule": da["count_mask_fraction"].where(ana).mean("pair").to_series(),
                             "attacked": da["mask_fraction"].where(ana).mean("pair").to_series()}).reset_index()
        spread = area.groupby(["model", "k"])[["count rule", "attacked"]].agg(lambda x: x.max() - x.min())
        t["area"] = area.pivot_table(index=["model", "tool"], columns="k", values=["count rule", "attacked"]).round(3)
        v.update(area_spread_count=float(spread["count rule"].max()), area_spread_attacked=float(spread["attacked"].max()))
        t["times"] = time_table(da)
        per_tool = t["times"].groupby("tool")["explain_s"].mean()
        pert = [x for x in ("lime", "rise", "sobol") if x in per_tool.index]
        v["cost_ratio"] = float(per_tool[pert].mean() / per_tool["gradcam"]) if pert and "gradcam" in per_tool.index else nan
        xc = [str(m) for m in da["model"].values if str(m).startswith("xception@")]
        if len(xc) >= 2:
            sizes_v = faith.size_verdicts(da, xc[0], xc[-1], margin=cfg.margin, n_boot=cfg.n_boot, seed=cfg.seed)
            t["sizes"] = sizes_v.drop(columns=["rule"]).round(3)
        t["scores"] = faith.faithfulness_scores(da).round(3)
        t["agreement"] = faith.rank_agreement(da).round(3)
        v["tau_mean"] = float(t["agreement"]["tau_del_ins_score"].mean())
        rq = faith.restricted_queries(da).mean("k").where(ana).mean("pair")
        first = best.iloc[0]
        v["best_acc"] = float(rq.sel(model=first["model"], tool=first["best"])) if first["best"] in cfg.tools else nan
        v["random_acc"] = float(rq.sel(model=first["model"], tool="random"))
        v["best_tool"] = str(first["best"])
        rnd = t["accuracy"][t["accuracy"].tool == "random"]
        v["sol_rand_width"] = float((rnd["ci_high"] - rnd["ci_low"]).mean())
        b0 = beats[beats.model == beats.model.iloc[0]]
        widest = b0.loc[(b0["hi"] - b0["lo"]).fillna(-1).idxmax()]
        need = widest["n_needed"]
        v["sol_n_needed"] = (f"{widest['tool']} on {widest['model']}: about {int(need)} pairs (now {int(widest['n'])})"
                             if need is not None and np.isfinite(need) else
                             f"{widest['tool']} on {widest['model']}: no n within 64 x {int(widest['n'])} pairs "
                             "decides it with this attack")
    else:
        v.update(power=nan, power_n=0, power_n80="not computed", power_note="no detector analysed",
                 power_est=nan, power_est_2n=nan, power_est_n=0, power_est_n2=0, power_est_sims=0,
                 success_full=nan, success_random_kmax=nan, success_rate=nan, success_tools="none",
                 area_spread_count=nan, area_spread_attacked=nan, cost_ratio=nan, tau_mean=nan, best_acc=nan,
                 random_acc=nan, best_tool="not analysed", sol_rand_width=nan,
                 sol_n_needed="no detector was analysed in this build")
        t["gated"] = pd.DataFrame([{"model": m, "claim": f"XAI-guided attack on {m}", "verdict": why, "n": 0}
                                   for m, why in why_not.items()])
    lines = [_best_line(r) for _, r in best.iterrows()] if best is not None else []
    lines += [f"{m}: {why}" for m, why in why_not.items()]
    text = ("; ".join(lines) if lines else "no detector analysed") + f" ({inputs.data_label} data)"
    v.update(best_line=Markdown(text), verdict_text=text.replace("**", ""),
             n_holds=int((beats["verdict"] == "holds").sum()) if beats is not None else 0,
             n_claims=int(len(beats)) if beats is not None else 0,
             gallery_model=next(iter(run.gallery), "none") if run is not None else "none")
    decide = faith.decide_table(best, beats, sizes_v)
    if why_not:
        decide = pd.concat([decide, pd.DataFrame([{"claim": f"XAI-guided attack on {m}", "n": 0, "verdict": why}
                                                  for m, why in why_not.items()])], ignore_index=True)
    t["rules"] = pd.DataFrame({"rule": list(faith.RULES), "text": list(faith.RULES.values())})
    return ChapterResult(values=v, tables=t, decide=decide, records=ds)
