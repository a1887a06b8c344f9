"""Explainers: finite maps of the image's size, deterministic per seed, Grad-CAM finds a planted patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfrobust.explainers import TOOLS, explain, gradcam_layer, jansen_total_order, last_conv_layer, sobol_design
from dfrobust.explainers.segments import rank_segments, slic_segments

torch.set_num_threads(1)
SMALL = {"lime": {"num_samples": 40}, "rise": {"n_masks": 48, "cells": 4}, "sobol": {"grid": 3, "nb_design": 8},
         "xrai": {"steps": 3, "algorithm": "fast"}}


class RedPatch(nn.Module):
    """P(fake) grows with the amount of pure red: conv(1x1 R-G-B) → ReLU → 3x3 conv → mean → logits."""

    def __init__(self):
        super().__init__()
        self.input_size = 32
        self.c1 = nn.Conv2d(3, 1, 1)
        self.c2 = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.c1.weight.copy_(torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1))
            self.c1.bias.fill_(-0.2)
            self.c2.weight.zero_()
            self.c2.weight[1, 0, 1, 1] = 1.0
            self.c2.bias.zero_()

    def forward(self, x):
        h = self.c2(torch.relu(self.c1(x)))
        return 20 * h.mean((2, 3))          # (real, fake) logits; real logit stays 0


def _images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.4 + 0.2 * torch.rand(n, 3, size, size, generator=g)
    x[:, 0, 8:16, 18:26] = 1.0
    x[:, 1:, 8:16, 18:26] = 0.0
    return x


@pytest.mark.parametrize("tool", TOOLS)
def test_explainer_shape_finite_and_seeded(tool):
    model, x = RedPatch(), _images()
    seg = slic_segments(x, 12)
    a = explain(tool, model, x, 1, seed=3, segments=seg, device="cpu", batch_size=16, **SMALL.get(tool, {}))
    b = explain(tool, model, x, 1, seed=3, segments=seg, device="cpu", batch_size=16, **SMALL.get(tool, {}))
    assert a.shape == (2, 32, 32) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert a.std() > 0                     # not a constant map
    if tool in ("rise", "sobol", "random", "lime"):   # stochastic tools: the seed matters
        c = explain(tool, model, x, 1, seed=4, segments=seg, device="cpu", batch_size=16, **SMALL.get(tool, {}))
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("tool", ["gradcam", "rise", "sobol", "lime"])
def test_tools_highlight_planted_patch(tool):
    # LIME hides segments in black here: lime's default (segment mean colour) leaves a flat red patch unchanged
    model, x = RedPatch(), _images(1)
    seg = slic_segments(x, 16)
    a = explain(tool, model, x, 1, seed=0, segments=seg, device="cpu", batch_size=32,
                **{**SMALL.get(tool, {}), **({"n_masks": 300} if tool == "rise" else {}),
                   **({"grid": 4, "nb_design": 16} if tool == "sobol" else {}),
                   **({"num_samples": 150, "hide_color": 0} if tool == "lime" else {})})[0]
    patch = np.zeros((32, 32), bool)
    patch[8:16, 18:26] = True
    top = seg[0] == rank_segments(a, seg[0])[0]        # the best-ranked SLIC segment
    assert patch[top].mean() > 0.5                      # ... lies mostly on the patch
    assert a[patch].mean() > a[~patch].mean()


def test_gradcam_target_layer_per_architecture():
    model = RedPatch()
    assert last_conv_layer(model) is model.c2
    model.cam_layer = model.c1                 # a detector's own choice wins
    assert gradcam_layer(model) is model.c1


def test_jansen_estimator_finds_the_only_input_that_matters():
    d, nd = 4, 64
    design = sobol_design(2, nd, seed=0)
    assert design.shape == (nd * (d + 2), d)
    y = design[:, 2] ** 2                      # only variable 2 matters
    st = jansen_total_order(y.astype(float), nd, d)
    assert st.argmax() == 2 and st[2] > 0.5 and np.all(np.delete(st, 2) < 1e-9)


def test_bad_inputs_raise_before_work():
    model = RedPatch()
    with pytest.raises(ValueError, match="tool='shap'"):
        explain("shap", model, _images())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        explain("rise", model, _images() * 3)
    with pytest.raises(ValueError, match="target"):
        explain("gradcam", model, _images(), 2)
    with pytest.raises(ValueError, match="not understood"):
        explain("rise", model, _images(), 1, num_samples=5)


def test_lime_tensor_neighbourhood_gives_lime_own_maps():
    model, x = RedPatch(), _images(1)
    seg = slic_segments(x, 12)
    for hide in (None, 0):
        kw = dict(seed=5, segments=seg, device="cpu", num_samples=60, hide_color=hide)
        own = explain("lime", model, x, 1, batch_size=10, loop="lime", **kw)
        fast = explain("lime", model, x, 1, batch_size=7, loop="tensor", **kw)   # chunking must not matter
        np.testing.assert_allclose(fast, own, atol=1e-5)
    with pytest.raises(ValueError, match="loop"):
        explain("lime", model, x, 1, loop="fast")
