"""A fixed reference workload for reading training times measured on a shared CPU.

Prints the seconds of one fixed job (ResNet-34 forward+backward on a 16 x 3 x 64 x 64 batch,
5 iterations, 1 thread). Run it before and after a measurement: the ratio of its time now to
its time on an idle machine estimates how much the shared CPU inflates the measured seconds.
"""

from __future__ import annotations

import time

import torch


def reference_seconds(iters: int = 5) -> float:
    import torchvision

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torchvision.models.resnet34(num_classes=2)
    x = torch.rand(16, 3, 64, 64)
    y = torch.randint(0, 2, (16,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
    return time.perf_counter() - t0


if __name__ == "__main__":
    import os

    print(f"reference workload: {reference_seconds():.3f} s (load average {os.getloadavg()[0]:.2f})")
