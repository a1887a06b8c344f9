"""XAI-guided adversarial evaluation (Gowrisankar & Thing, 2023) as tidy xarray records.

Protocol, per detector and image pair (a fake and the real frame it was made from):

1. one SLIC segmentation of the **real** image (:mod:`dfrobust.explainers.segments`), shared by all tools;
2. each tool explains the real image for its own class (``target = 0``, real) and ranks the segments
   by mean attribution (:mod:`dfrobust.explainers`);
3. the **paired fake** is attacked with the black-box masked NES attack (:mod:`dfrobust.attacks.nes`) on the
   top-k segments only; the lower the detector's accuracy on these adversarial fakes, the more
   faithful the tool's ranking (a random ranking is the baseline);
4. contrast: deletion/insertion AUCs (Petsiuk et al., 2018) of P(real) on the real image when the
   same ranked segments are removed (set to 0) or inserted (into a blurred copy), and the Kendall
   tau (``scipy.stats.kendalltau``) between the two rankings of tools.

Records have dims ``(model, tool, k, pair)`` with pair coords from the manifest (group,
manipulation, dataset, ...); the faithfulness metrics are reductions in
:mod:`dfrobust.metrics.faithfulness`.
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
from ..core.device import auto_batch_size, describe, pick_device
from ..core.params import int_list
from ..data.sampling import select_pairs
from ..explainers.segments import rank_segments, slic_segments, topk_mask

#: NES defaults — our choice; the paper's exact values are not public.
NES_DEFAULTS = {"sigma": 0.001, "n_pairs": 40, "steps": 50, "alpha": 1 / 255, "eps": 16 / 255}
TOP_K = (1, 2, 3, 5, 10)
PAIR_COORDS = ("pair_id", "group", "manipulation", "dataset", "identity", "video_id", "frame_index", "split")


# ----------------------------------------------------------------------------- deletion / insertion
def _blur(images: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    k = max(3, (images.shape[-1] // 8) | 1)
    return gaussian_blur(images, kernel_size=[k, k], sigma=[k / 3, k / 3])


@torch.no_grad()
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
@dataclass
class XAIRun:
    """Records of one experiment plus a small gallery per model (first ``keep`` pairs)."""
    records: xr.Dataset
    gallery: dict[str, xr.Dataset] = field(default_factory=dict)


def run_xai(models: Mapping[str, nn.Module], pairs: pd.DataFrame, *, tools: Sequence[str] = _explain.TOOLS,
            top_k: str | Sequence[int] = TOP_K, n_segments: int = 100, seed: int = 0, device: str = "auto",
            nes: Mapping[str, Any] | None = None, explain_options: Mapping[str, Mapping[str, Any]] | None = None,
            batch_size: int | None = None, deletion_steps: int = 10, keep: int = 2,
            load: Callable[[pd.DataFrame, int], torch.Tensor] | None = None,
            progress: Callable[[str], None] | None = None) -> XAIRun:
    """Explain the real image, attack the paired fake on the top-k segments, for every model × tool × k.

    ``models``: name → detector (``.input_size`` gives the image size; the name may carry the size,
    e.g. ``"xception@299"``).  ``pairs``: :func:`select_pairs` output.  ``load(df, size)`` returns
    [N,3,size,size] in [0,1] (default :func:`dfrobust.data.manifest.load_images`; the real images
    are loaded from the ``real_path`` column).
    """
    tools = list(tools)
    bad = [t for t in tools if t not in _explain.TOOLS]
    if bad or not tools:
        raise ValueError(f"tools={tools!r}: expected some of {', '.join(_explain.TOOLS)}")
    ks = int_list(top_k, "top_k", minimum=1)
    if not models:
        raise ValueError("models is empty: expected at least one detector")
    if "real_path" not in pairs.columns or "path" not in pairs.columns:
        raise ValueError("pairs: expected the output of select_pairs (columns path and real_path)")
    nes_kw = {**NES_DEFAULTS, **dict(nes or {})}
    unknown = set(nes_kw) - set(NES_DEFAULTS) - {"batch_size"}
    if unknown:
        raise ValueError(f"nes options {sorted(unknown)}: expected some of {sorted(NES_DEFAULTS)}")
    explain_options = {t: dict((explain_options or {}).get(t, {})) for t in tools}
    for t, o in explain_options.items():
        unknown = set(o) - set(_explain.DEFAULTS[t])
        if unknown:
            raise ValueError(f"explain_options[{t!r}] {sorted(unknown)}: expected some of {sorted(_explain.DEFAULTS[t])}")
    if load is None:
        from .data.manifest import load_images as load
    dev = pick_device(device)
    _explain.warmup(tools)
    say = progress or (lambda _m: None)

    real_df = pairs[[c for c in pairs.columns if c.startswith("real_")]].rename(columns=lambda c: c[5:])
    fake_df = pairs[[c for c in pairs.columns if not c.startswith("real_")]]
    n, names = len(pairs), list(models)
    shape_t = (len(names), len(tools), len(ks), n)
    shape_p = (len(names), n)
    rec = {
        "p_fake_clean": np.full(shape_p, np.nan, np.float32),
        "p_fake_real": np.full(shape_p, np.nan, np.float32),
        "n_segments_actual": np.zeros(shape_p, np.int32),
        "p_fake_adv": np.full(shape_t, np.nan, np.float32),
        "success": np.zeros(shape_t, np.int8),
        "queries": np.zeros(shape_t, np.int64),
        "steps": np.zeros(shape_t, np.int32),
        "mask_fraction": np.zeros(shape_t, np.float32),
        "attack_time_s": np.zeros(shape_t, np.float32),
        "explain_time_s": np.zeros(shape_t[:2] + (n,), np.float32),
        "deletion_auc": np.zeros(shape_t[:2] + (n,), np.float32),
        "insertion_auc": np.zeros(shape_t[:2] + (n,), np.float32),
    }
    sizes, gallery = [], {}
    for mi, name in enumerate(names):
        model = models[name].to(dev).eval()
        size = int(getattr(model, "input_size", None) or 256)
        sizes.append(size)
        bs = int(batch_size or auto_batch_size(dev, size))
        real = load(real_df, size).to(dev)
        fake = load(fake_df, size).to(dev)
        seg = slic_segments(real.cpu(), n_segments)
        rec["n_segments_actual"][mi] = seg.reshape(n, -1).max(1) + 1
        rec["p_fake_clean"][mi] = _explain.batched_proba(model, fake, bs)[:, 1].cpu().numpy()
        rec["p_fake_real"][mi] = _explain.batched_proba(model, real, bs)[:, 1].cpu().numpy()
        g_att, g_mask, g_adv = [], [], []
        for ti, tool in enumerate(tools):
            say(f"{name}: {tool}")
            t0 = time.perf_counter()
            att = _explain.explain(tool, model, real, 0, seed=seed, batch_size=bs, device=str(dev),
                                   segments=seg, **explain_options[tool])
            rec["explain_time_s"][mi, ti] = (time.perf_counter() - t0) / n
            ranks = [rank_segments(a, s) for a, s in zip(att, seg)]
            d, ins = deletion_insertion(model, real, seg, ranks, 0, n_steps=deletion_steps, batch_size=bs)
            rec["deletion_auc"][mi, ti], rec["insertion_auc"][mi, ti] = d, ins
            masks_k, adv_k = [], []
            for ki, k in enumerate(ks):
                mask = np.stack([topk_mask(s, r, k) for s, r in zip(seg, ranks)])
                atk = MaskedNES(model, seed=seed, **nes_kw)
                t0 = time.perf_counter()
                adv = atk(fake, torch.ones(n, dtype=torch.long), torch.from_numpy(mask))
                rec["attack_time_s"][mi, ti, ki] = (time.perf_counter() - t0) / n
                rec["p_fake_adv"][mi, ti, ki] = _explain.batched_proba(model, adv, bs)[:, 1].cpu().numpy()
                rec["success"][mi, ti, ki] = atk.last_success
                rec["queries"][mi, ti, ki] = atk.last_queries
                rec["steps"][mi, ti, ki] = atk.last_steps
                rec["mask_fraction"][mi, ti, ki] = mask.reshape(n, -1).mean(1)
                masks_k.append(mask[:keep])
                adv_k.append(adv[:keep].cpu().numpy())
            g_att.append(att[:keep])
            g_mask.append(np.stack(masks_k))
            g_adv.append(np.stack(adv_k))
        gallery[name] = xr.Dataset(
            {"real": (("pair", "channel", "y", "x"), real[:keep].cpu().numpy()),
             "fake": (("pair", "channel", "y", "x"), fake[:keep].cpu().numpy()),
             "segments": (("pair", "y", "x"), seg[:keep]),
             "attribution": (("tool", "pair", "y", "x"), np.stack(g_att)),
             "mask": (("tool", "k", "pair", "y", "x"), np.stack(g_mask).astype(np.int8)),
             "adv": (("tool", "k", "pair", "channel", "y", "x"), np.stack(g_adv))},
            coords={"tool": tools, "k": ks, "pair": pairs["pair_id"].astype(str).to_numpy()[:keep]},
            attrs={"model": name, "input_size": size})

    dims_t, dims_p, dims_e = ("model", "tool", "k", "pair"), ("model", "pair"), ("model", "tool", "pair")
    units = {"p_fake_clean": ("1", "P(fake) of the clean fake"), "p_fake_real": ("1", "P(fake) of the real image"),
             "n_segments_actual": ("1", "SLIC segments of the real image"),
             "p_fake_adv": ("1", "P(fake) of the adversarial fake"), "success": ("1", "fake classified real after NES"),
             "queries": ("1", "model queries of NES"), "steps": ("1", "NES update steps"),
             "mask_fraction": ("1", "fraction of pixels in the top-k segments"),
             "attack_time_s": ("s", "NES wall time per image"), "explain_time_s": ("s", "explanation wall time per image"),
             "deletion_auc": ("1", "deletion AUC of P(real) (lower = more faithful)"),
             "insertion_auc": ("1", "insertion AUC of P(real) (higher = more faithful)")}
    data_vars = {}
    for k_, v in rec.items():
        dims = dims_p if v.shape == shape_p else dims_e if v.ndim == 3 else dims_t
        data_vars[k_] = (dims, v, {"units": units[k_][0], "long_name": units[k_][1]})
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
                     "explain_options": explain_options, "explain_target": 0, "attack_label": 1})
    return XAIRun(records=ds, gallery=gallery)


def time_table(ds: xr.Dataset) -> pd.DataFrame:
    """Mean explanation and attack (mean over k) wall time per image, per model × tool, with the device."""
    ex = ds["explain_time_s"].mean("pair")
    at = ds["attack_time_s"].mean(("k", "pair"))
    df = xr.Dataset({"explain_s": ex, "attack_s": at}).to_dataframe().reset_index()
    df["input_size"] = [int(ds["input_size"].sel(model=m)) for m in df["model"]]
    df["device"] = ds.attrs.get("device", "")
    return df[["model", "input_size", "tool", "explain_s", "attack_s", "device"]]


