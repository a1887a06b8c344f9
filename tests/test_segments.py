"""Segments: SLIC shared labels, ranking by mean attribution checked by hand, top-k masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfrobust.explainers.segments import rank_segments, segment_scores, slic_segments, topk_mask, topk_masks


def test_ranking_matches_hand_computed_example():
    seg = np.array([[0, 0, 1, 1],
                    [0, 0, 1, 1],
                    [2, 2, 3, 3],
                    [2, 2, 3, 3]])
    att = np.array([[1, 3, 0, 0],      # seg 0 mean 2
                    [2, 2, 0, 4],      # seg 1 mean 1
                    [5, 5, 9, -1],     # seg 2 mean 5, seg 3 mean 2 (tie with 0 → smaller id first)
                    [5, 5, 0, 0]], dtype=float)
    np.testing.assert_allclose(segment_scores(att, seg), [2, 1, 5, 2])
    np.testing.assert_array_equal(rank_segments(att, seg), [2, 0, 3, 1])
    m = topk_mask(seg, rank_segments(att, seg), 2)
    np.testing.assert_array_equal(m, np.isin(seg, [2, 0]))
    assert topk_mask(seg, rank_segments(att, seg), 0).sum() == 0


def test_topk_masks_batched_and_nested():
    rng = np.random.default_rng(0)
    seg = np.stack([np.repeat(np.arange(8), 8).reshape(8, 8)] * 2)
    att = rng.random((2, 8, 8))
    m1, m3 = topk_masks(att, seg, 1), topk_masks(att, seg, 3)
    assert m1.shape == (2, 8, 8) and m1.dtype == bool
    assert np.all(m3[m1])                    # top-1 is inside top-3
    assert (m3.sum((1, 2)) == 3 * 8).all()  # three rows of 8 pixels


def test_slic_labels_consecutive_and_deterministic():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 40, generator=g)
    x[:, :, :20] *= 0.2
    a, b = slic_segments(x, 20), slic_segments(x, 20)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 40, 40)
    for s in a:
        assert np.array_equal(np.unique(s), np.arange(s.max() + 1))
        assert 5 <= s.max() + 1 <= 40


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        rank_segments(np.zeros((4, 4)), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="n_segments"):
        slic_segments(np.zeros((8, 8, 3)), 0)


def test_equal_area_masks_cover_the_same_fraction_within_one_segment():
    from dfrobust.explainers.segments import area_budget, area_mask

    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 48, 48, generator=g)
    x[:, :, :, :16] *= 0.3                        # segments of unequal sizes
    seg = slic_segments(x, 30)[0]
    sizes = np.bincount(seg.ravel())
    assert sizes.max() > 1.5 * sizes.min()
    rng = np.random.default_rng(0)
    rankings = [np.argsort(-sizes), np.argsort(sizes)] + [rng.permutation(len(sizes)) for _ in range(4)]
    for k in (1, 3, 5):
        f = area_budget(k, len(sizes))
        fracs = [area_mask(seg, r, f).mean() for r in rankings]
        assert min(fracs) >= f - 1e-9                               # the budget is met ...
        assert max(fracs) - min(fracs) <= sizes.max() / seg.size    # ... and areas agree within one segment
        # the count rule (k segments) does not: largest-first vs smallest-first
        cnt = [topk_mask(seg, r, k).mean() for r in rankings[:2]]
        assert cnt[0] - cnt[1] > 0
    # nested in k for one ranking, empty at 0, everything at 1
    r = rankings[2]
    assert np.all(area_mask(seg, r, area_budget(5, len(sizes)))[area_mask(seg, r, area_budget(3, len(sizes)))])
    assert area_mask(seg, r, 0.0).sum() == 0 and area_mask(seg, r, 1.0).all()
    assert area_budget(3, 30, per_k=0.05) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="fraction"):
        area_mask(seg, r, 1.5)
    with pytest.raises(ValueError, match="area_per_k"):
        area_budget(1, 30, per_k=-0.1)
