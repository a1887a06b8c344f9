"""Tiny seeded models shared by the attack tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch


class SmallNet(torch.nn.Module):
    """A two-logit CNN with seeded random weights; ``input_size`` as the detectors declare it."""

    def __init__(self, seed=0, size=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 4 * 4, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.input_size = size

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)) * 3
