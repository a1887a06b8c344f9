"""Side-by-side: one training step (forward + backward) per detector, contiguous vs channels-last.

Alternates the two layouts ``rounds`` times on the same batch and prints the median seconds of
each and their ratio (measured side by side, so a shared CPU's load affects both alike).
``python bench/channels_last.py [size] [batch] [rounds] [model,...]``.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch


def step_seconds(name: str, size: int, batch: int, rounds: int) -> tuple[float, float]:
    from dfrobust.models import build

    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    times = {False: [], True: []}
    models = {cl: build(name, size) for cl in (False, True)}
    models[True] = models[True].to(memory_format=torch.channels_last)
    for r in range(rounds + 1):
        for cl in (False, True):
            m = models[cl].train()
            xb = x.contiguous(memory_format=torch.channels_last) if cl else x
            t0 = time.perf_counter()
            m.zero_grad()
            torch.nn.functional.cross_entropy(m(xb), y).backward()
            if r:  # round 0 warms up
                times[cl].append(time.perf_counter() - t0)
    return statistics.median(times[False]), statistics.median(times[True])


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else ["meso4", "resnet34", "xception"]
    torch.set_num_threads(1)
    for n in names:
        a, b = step_seconds(n, size, batch, rounds)
        print(f"{n} at {size}px, batch {batch}: contiguous {a:.3f} s, channels_last {b:.3f} s, ratio {b / a:.2f}")
