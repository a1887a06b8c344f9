"""Image segments shared by all XAI tools: SLIC segmentation, ranking by attribution, top-k and equal-area masks.

One SLIC segmentation (``skimage.segmentation.slic``) of each *real* image is computed once and
shared by every tool, so tools differ only in how they rank the same segments.  A segment's score
is the mean attribution over its pixels; ranking is by decreasing score, ties broken by the
smaller segment id (deterministic).  The written code here is only the bookkeeping around
scikit-image (ranking with ``np.bincount``, greedy equal-area masks), which no package provides.
"""

from __future__ import annotations

import numpy as np
import torch


def _to_hwc(images) -> np.ndarray:
    """[N, 3, H, W] tensor/array or [H, W, 3] array → float64 [N, H, W, 3]."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3 and images.shape[-1] == 3:
        images = images[None]
    elif images.ndim == 4 and images.shape[1] == 3:
        images = images.transpose(0, 2, 3, 1)
    else:
        raise ValueError(f"images shape {images.shape}: expected [N, 3, H, W] or [H, W, 3]")
    return images


def slic_segments(images, n_segments: int = 100, *, compactness: float = 10.0,
                  sigma: float = 1.0) -> np.ndarray:
    """SLIC superpixels of each image → int32 [N, H, W], labels 0..S-1 consecutive per image.

    ``n_segments`` is SLIC's target (the actual count can differ by a few segments).
    """
    from skimage.segmentation import slic

    if int(n_segments) < 1:
        raise ValueError(f"n_segments={n_segments!r}: expected a positive int")
    imgs = _to_hwc(images)
    out = np.empty(imgs.shape[:3], dtype=np.int32)
    for i, img in enumerate(imgs):
        seg = slic(img, n_segments=int(n_segments), compactness=compactness, sigma=sigma,
                   start_label=0, channel_axis=-1)
        out[i] = _relabel(seg)
    return out


def _relabel(seg: np.ndarray) -> np.ndarray:
    _, inv = np.unique(seg, return_inverse=True)
    return inv.reshape(seg.shape).astype(np.int32)


def segment_scores(attribution: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mean attribution per segment id (length max id + 1; empty ids get -inf)."""
    attribution = np.asarray(attribution, dtype=np.float64)
    segments = np.asarray(segments)
    if attribution.shape != segments.shape:
        raise ValueError(f"attribution shape {attribution.shape} != segments shape {segments.shape}")
    n = int(segments.max()) + 1
    sums = np.bincount(segments.ravel(), weights=attribution.ravel(), minlength=n)
    counts = np.bincount(segments.ravel(), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    return means


def rank_segments(attribution: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Segment ids of one image by decreasing mean attribution (ties: smaller id first)."""
    scores = segment_scores(attribution, segments)
    present = np.flatnonzero(np.isfinite(scores))
    order = np.lexsort((present, -scores[present]))
    return present[order]


def topk_mask(segments: np.ndarray, ranking: np.ndarray, k: int) -> np.ndarray:
    """Boolean [H, W] mask of the ``k`` first segments of ``ranking``."""
    if int(k) < 0:
        raise ValueError(f"k={k!r}: expected a non-negative int")
    return np.isin(np.asarray(segments), np.asarray(ranking)[: int(k)])


def topk_masks(attributions: np.ndarray, segments: np.ndarray, k: int) -> np.ndarray:
    """Boolean [N, H, W] masks of each image's top-``k`` segments by mean attribution."""
    attributions, segments = np.asarray(attributions), np.asarray(segments)
    if attributions.shape != segments.shape or attributions.ndim != 3:
        raise ValueError(f"attributions {attributions.shape} and segments {segments.shape}: expected equal [N, H, W]")
    return np.stack([topk_mask(s, rank_segments(a, s), k) for a, s in zip(attributions, segments)])


def area_mask(segments: np.ndarray, ranking: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean [H, W] mask of the first ranked segments until they cover ``fraction`` of the pixels.

    Segments are added in rank order while the covered fraction is below ``fraction``; the last
    one may overshoot, so two rankings of the same segments give masks whose areas differ by less
    than one segment (the equal-area protocol: tools compete on *where*, not on *how much*).
    ``fraction`` 0 gives an empty mask, 1 the whole image.
    """
    f = float(fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"fraction={fraction!r}: expected a pixel fraction in [0, 1]")
    segments = np.asarray(segments)
    ranking = np.asarray(ranking)
    counts = np.bincount(segments.ravel(), minlength=int(segments.max()) + 1)
    cum = np.cumsum(counts[ranking])
    need = f * segments.size
    n = 0 if need <= 0 else min(int(np.searchsorted(cum, need - 1e-9)) + 1, len(ranking))
    return np.isin(segments, ranking[:n])


def area_budget(k: int, n_segments: int, per_k: float = 0.0) -> float:
    """Pixel fraction attacked at ``k``: ``k * per_k``, or ``k / n_segments`` (k mean-sized segments) when ``per_k`` is 0."""
    if int(k) < 0:
        raise ValueError(f"k={k!r}: expected a non-negative int")
    if not 0.0 <= float(per_k) < 1.0:
        raise ValueError(f"area_per_k={per_k!r}: expected a pixel fraction in [0, 1) (0: k / segments)")
    f = k * float(per_k) if per_k > 0 else k / max(int(n_segments), 1)
    return float(min(f, 1.0))
