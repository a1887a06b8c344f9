"""A toy attack and a toy explainer registered as docs/ARCHITECTURE.md shows run end to end."""

from __future__ import annotations

import numpy as np
import torch

from dfrobust import attacks, explainers
from dfrobust.experiments.records import attack_records


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)
        self.input_size = 16

    def forward(self, x):
        return self.conv(x).mean((2, 3))


class _Nudge:
    def __init__(self, eps, step):
        self.eps, self.step = eps, step

    def __call__(self, x, y):
        return (x + min(self.step, self.eps)).clamp(0, 1)


def test_a_registered_toy_attack_runs_through_the_record_builder():
    torch.manual_seed(0)
    attacks.register("nudge", norm="linf", defaults={"step": 0.01},
                     build=lambda model, *, eps, seed, step: _Nudge(eps, step))
    try:
        assert "nudge" in attacks.ATTACKS
        x = torch.rand(6, 3, 16, 16) * 0.5
        rec = attack_records({"tiny": _Tiny()}, ["nudge"], [0.0, 0.005, 0.02], x, torch.tensor([0, 1] * 3),
                             attack_kw={"nudge": {"step": 0.01}}, ssim=False)
        linf = rec["linf"].sel(model="tiny", attack="nudge").values
        assert np.allclose(linf[0], 0) and np.allclose(linf[1], 0.005, atol=1e-6) and np.allclose(linf[2], 0.01, atol=1e-6)
    finally:
        for view in (attacks.REGISTRY, attacks.NORM, attacks.DEFAULTS):
            view.pop("nudge", None)
        attacks.ATTACKS.remove("nudge")


def test_a_registered_toy_explainer_is_called_by_name():
    @explainers.register
    class Brightness(explainers.Explainer):
        name, defaults = "brightness", {"power": 1.0}

        def explain(self, model, images, targets, *, seed, batch_size, segments):
            return images.mean(1).cpu().numpy() ** self.options["power"]

    try:
        x = torch.rand(2, 3, 16, 16)
        maps = explainers.explain("brightness", _Tiny(), x, 1, power=2.0)
        assert maps.shape == (2, 16, 16) and np.allclose(maps, x.mean(1).numpy() ** 2, atol=1e-6)
    finally:
        explainers.EXPLAINERS.pop("brightness")
        explainers.DEFAULTS.pop("brightness")
        explainers.TOOLS.remove("brightness")
