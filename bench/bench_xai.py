"""Where the XAI chapter's time goes: seconds per pair per model × tool at a profile's settings.

Runs :func:`dfrobust.experiments.xai.run_xai` on a few synthetic-noise pairs with untrained detectors
whose decision is forced by brightness (so the protocol keeps every pair and NES never flips a fake:
no early stop, the **worst case** of the attack's cost), at the notebook parameters of a profile
from ``notebooks/study.yml``, and prints per model × tool the seconds per pair of the explanation,
the deletion/insertion contrast and the NES attack over all k, then the chapter's projected total
for the profile's pair counts. Slow by nature (XceptionNet dominates): about 11 min for 2 pairs at the default
profile's settings on a loaded 2-core CPU; `--pairs 1` halves it.

    python bench/bench_xai.py [--profile default] [--pairs 2] [--device cpu]
"""

from __future__ import annotations

import time

import pandas as pd
import torch
from torch import nn

from dfrobust.core.device import describe, pick_device
from dfrobust.experiments import xai
from dfrobust.models import build
from dfrobust.study.perf import bench_parser, finish_bench


class Forced(nn.Module):
    """The detector's forward (its cost) with the decision forced by mean brightness (fake: bright)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.input_size = model, model.input_size
        for a in ("cam_layer", "gradcam_layer"):
            if hasattr(model, a):
                setattr(self, a, getattr(model, a))

    def forward(self, x):
        z = 1e-3 * self.model(x)
        d = 40 * (x.mean((1, 2, 3)) - 0.5)
        return z + torch.stack([-d, d], 1)


def _load(df, size):
    g = torch.Generator().manual_seed(size)
    out = []
    for p in df["path"]:
        base = 0.4 if str(p).startswith("r") else 0.62
        out.append((base + 0.3 * (torch.rand(3, size, size, generator=g) - 0.5)).clamp(0, 1))
    return torch.stack(out)


def chapter_params(profile: str) -> dict:
    """The 05_xai parameters of ``profile``: the template's parameters cell overlaid with study.yml."""
    import ast
    import json

    from dfrobust.core.profiles import load_spec, spec_path

    root = spec_path().parent.parent
    nb = json.loads((root / "notebooks" / "05_xai.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params = {}
    for node in ast.parse("".join(cell["source"])).body:
        params[node.target.id] = ast.literal_eval(node.value)
    entry = next(e for e in load_spec()["notebooks"] if e["name"] == "05_xai")
    params.update(entry["params"].get(profile) or {})
    return params


def main(argv=None):
    ap = bench_parser(__doc__)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--pairs", type=int, default=2)
    a = ap.parse_args(argv)
    dev = pick_device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    p = chapter_params(a.profile)
    p["device"] = str(dev)
    cfg = xai.check_params(**p)
    from dfrobust.models.train import HPARAMS

    hp = HPARAMS[a.profile]
    models = {}
    for m in cfg.models:
        size = int(hp[m]["input_size"])
        models[f"{m}@{size}"] = Forced(build(m, size).eval())
    for s_ in cfg.xception_sizes:
        models.setdefault(f"xception@{s_}", Forced(build("xception", s_).eval()))
    pairs = pd.DataFrame({"path": [f"f{i}" for i in range(a.pairs)], "real_path": [f"r{i}" for i in range(a.pairs)],
                          "pair_id": [f"p{i}" for i in range(a.pairs)]})
    t0 = time.perf_counter()
    ds = xai.run_xai(models, pairs, tools=cfg.tools, top_k=cfg.top_k, n_segments=p["n_segments"], seed=0,
                     device=str(dev), nes=cfg.nes, explain_options=cfg.explain_options,
                     deletion_steps=p["deletion_steps"], keep=1, load=_load, masks=p["masks"],
                     area_per_k=p["area_per_k"]).records
    wall = time.perf_counter() - t0
    t = xai.time_table(ds)
    t["per_pair_s"] = t["explain_s"] + t["deletion_s"] + t["attack_all_k_s"]
    quota = {k: cfg.n_pairs["xception" if k.startswith("xception@") else k.split("@")[0]] for k in models}
    t["chapter_pairs"] = [quota[m] for m in t["model"]]
    t["projected_s"] = t["per_pair_s"] * t["chapter_pairs"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(t[["model", "tool", "explain_s", "deletion_s", "attack_all_k_s", "per_pair_s", "chapter_pairs",
                 "projected_s"]].round(3).to_string(index=False))
    per_model = t.groupby("model")["projected_s"].sum()
    print("projected seconds per model:", per_model.round(1).to_dict())
    print(f"projected chapter experiment (worst case, no NES early stop): {per_model.sum():.0f} s "
          f"on {describe(dev)}; this bench took {wall:.1f} s for {a.pairs} pairs")
    return finish_bench(a, describe(dev), [], profile=a.profile, projected_s=float(per_model.sum()),
                        per_model_s=per_model.to_dict(), table=t.to_dict("records"))


if __name__ == "__main__":
    main()
