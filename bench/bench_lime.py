"""LIME: where its time goes and what the tensor neighbourhood saves, side by side on the same inputs.

Three ways to get the same LIME map (same seeds, segments, ``num_samples``; maps compared):

* ``lime, batch 10``  — lime's own per-sample loop with its default ``batch_size=10``;
* ``lime, batch B``   — the same loop with a batched classifier of B images (what the study used to do);
* ``tensor``          — :class:`dfrobust.explainers.lime` default: lime's draws, the neighbourhood built by
  indexing in torch and scored in chunks of the device's batch size under ``inference_mode``.

and the breakdown that explains the first two: lime's mask-building loop alone (no model) and the
model's forward alone at batch 10 and at batch B (seconds per ``num_samples`` images). Each timing
is the best of ``--repeats`` after one warm-up call. Plus one timing per explainer for the chapter's
table. < 1 min on 2 CPU cores by default.

    python bench/bench_lime.py [--device cpu] [--samples 300] [--size 128] [--batch 100]
    python bench/bench_lime.py --full --device cuda      # 1000 samples at 256 px
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from dfrobust.core.device import describe, pick_device
from dfrobust.explainers import TOOLS, batched_proba, explain, warmup
from dfrobust.explainers.segments import slic_segments
from dfrobust.experiments.xai import chunk_size
from dfrobust.models import build
from dfrobust.study.perf import bench_parser, finish_bench


def _best(fn, repeats):
    fn()                                                    # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), out


def _lime_masks_only(img, seg, n, seed):
    """lime 0.2's data_labels loop without the classifier: what building the neighbourhood costs."""
    rs = np.random.RandomState(seed)
    s = int(seg.max()) + 1
    data = rs.randint(0, 2, n * s).reshape(n, s)
    fudged = np.zeros_like(img)
    for row in data:
        temp = copy.deepcopy(img)
        mask = np.zeros(seg.shape).astype(bool)
        for z in np.where(row == 0)[0]:
            mask[seg == z] = True
        temp[mask] = fudged[mask]


def main(argv=None):
    ap = bench_parser(__doc__)
    ap.add_argument("--model", default="meso4")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--segments", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-tools", action="store_true", help="skip the per-explainer timings")
    a = ap.parse_args(argv)
    if a.full:
        a.samples, a.size = 1000, 256
    dev = pick_device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    warmup()
    torch.manual_seed(0)
    model = build(a.model, a.size).to(dev).eval()
    x = torch.rand(1, 3, a.size, a.size)
    seg = slic_segments(x, a.segments)
    chunk = chunk_size(dev, a.size)                 # what the chapter uses

    def run(loop, bs):
        return lambda: explain("lime", model, x, 0, seed=0, batch_size=bs, device=str(dev), segments=seg,
                               num_samples=a.samples, loop=loop)

    t_lime10, m_lime10 = _best(run("lime", 10), a.repeats)
    t_limeB, m_limeB = _best(run("lime", a.batch), a.repeats)
    t_tensor, m_tensor = _best(run("tensor", chunk), a.repeats)
    same = bool(np.allclose(m_lime10, m_tensor, atol=1e-4) and np.allclose(m_lime10, m_limeB, atol=1e-4))
    # the breakdown: mask building alone, and the forward alone at batch 10 and B
    img = x[0].permute(1, 2, 0).numpy().astype(np.float64)
    t_masks, _ = _best(lambda: _lime_masks_only(img, seg[0], a.samples, 0), a.repeats)
    xs = x.to(dev).expand(a.samples, -1, -1, -1).contiguous()
    t_fwd10, _ = _best(lambda: batched_proba(model, xs, 10), a.repeats)
    t_fwdB, _ = _best(lambda: batched_proba(model, xs, a.batch), a.repeats)
    print(f"breakdown ({a.samples} samples, {a.size} px): lime's mask loop alone {t_masks:.3f} s; "
          f"forward alone at batch 10 {t_fwd10:.3f} s, at batch {a.batch} {t_fwdB:.3f} s; "
          f"tensor chunk {chunk}; same maps: {same}")
    tool_s = {}
    if not a.no_tools:
        small = {"lime": {"num_samples": a.samples}, "rise": {"n_masks": 4 * a.samples},
                 "sobol": {"grid": 8, "nb_design": 16}, "xrai": {"steps": 20, "algorithm": "fast"}}
        for tool in TOOLS:
            t0 = time.perf_counter()
            explain(tool, model, x, 0, seed=0, batch_size=chunk, device=str(dev), segments=seg, **small.get(tool, {}))
            tool_s[tool] = round(time.perf_counter() - t0, 3)
            print(f"explainer {tool}: {tool_s[tool]:.3f} s per image")
    # the headline ratio last: the appendix glues one ratio per script, the last one printed
    return finish_bench(a, describe(dev), [
        {"what": f"forward alone, {a.samples} images: batch {a.batch} vs batch 10",
         "fast_s": t_fwd10, "slow_s": t_fwdB},
        {"what": f"LIME, {a.samples} samples: lime's loop at batch {a.batch} vs at batch 10 (why batching alone lost)",
         "fast_s": t_lime10, "slow_s": t_limeB},
        {"what": f"LIME, {a.samples} samples: lime's loop at batch 10 (its default) vs tensor neighbourhood",
         "fast_s": t_tensor, "slow_s": t_lime10}],
        model=a.model, size=a.size, same_maps=same, explainer_seconds_per_image=tool_s,
        lime_mask_loop_s=t_masks, forward_batch10_s=t_fwd10, forward_batchB_s=t_fwdB)


if __name__ == "__main__":
    main()
