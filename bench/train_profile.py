"""Train a profile's detectors with the study's values and print AUCs, seconds and the CPU load.

``python bench/train_profile.py PROFILE [model,model,...] [key=value ...]`` trains (or loads from the cache)
each detector exactly as the models chapter does (``get_trained`` with the ``training:`` values
of ``notebooks/study.yml``; ``key=value`` overrides them, e.g. ``threads=1`` on a shared
machine, which changes the cache key) and prints validation/test AUC, steps and training seconds. The
fixed reference workload of ``bench/train_reference.py`` is timed before and after: on a shared
CPU, ``measured seconds x (reference on an idle machine / reference now)`` estimates the solo
time; the process's CPU seconds of the call (one thread) are another estimate. Set ``DFROBUST_DATA_HOME`` to keep the data and checkpoints away from the project's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_reference import reference_seconds  # noqa: E402


def main(profile: str, models: list[str], overrides: dict) -> None:
    import torch

    from dfrobust.data import get_manifest
    from dfrobust.models import quality_gate
    from dfrobust.models.train import get_trained, val_auc

    threads = torch.get_num_threads()
    ref0 = reference_seconds()
    torch.set_num_threads(threads)
    manifest = get_manifest(profile)
    rows = {}
    for m in models:
        t0, c0 = time.perf_counter(), time.process_time()
        td = get_trained(m, manifest, profile=profile, progress=True, **overrides)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        r = td.record
        rows[m] = td
        print(f"RESULT {profile} {m}: {td.input_size}px, val AUC {val_auc(td):.3f}, "
              f"test AUC {float(r['auc'].sel(subset='all')):.3f}, test acc {float(r['accuracy'].sel(subset='all')):.3f}, "
              f"epochs {r.sizes['epoch']} (kept {int(r['best_epoch'])}), steps {r.attrs.get('n_steps')}, "
              f"train {td.train_time_s:.1f} s, call {wall:.1f} s wall / {cpu:.1f} s CPU, cached {td.cached}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    ref1 = reference_seconds()
    print(f"reference workload: {ref0:.2f} s before, {ref1:.2f} s after")
    print(quality_gate(rows).to_string(index=False))


if __name__ == "__main__":
    from dfrobust.models import MODELS

    prof = sys.argv[1] if len(sys.argv) > 1 else "quick"
    names = sys.argv[2].split(",") if len(sys.argv) > 2 and "=" not in sys.argv[2] else list(MODELS)
    from dfrobust.study import parse_override

    main(prof, names, dict(parse_override(a) for a in sys.argv[2:] if "=" in a))
