"""Videos that decide (issue 24): an accumulating progressive budget, pseudo-videos (aggregation vs
time), linearity of the shape not the level, the resolution floor, Holm over the chapter's claims,
and the power simulation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from dfrobust import metrics
from dfrobust.experiments import videos

torch.set_num_threads(1)


class SignModel(torch.nn.Module):
    """logits = [0, 0.01·(<w, x> − c)]: the CE gradient has the constant sign of ±w, so PGD reaches
    the corner ε·sign(w) of its ball from any start."""

    def __init__(self, size=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(3 * size * size, generator=g), requires_grad=False)
        self.c = float(self.w.sum() * 0.5)
        self.input_size = size

    def forward(self, x):
        z = x.flatten(1) @ self.w - self.c
        return torch.stack([torch.zeros_like(z), z * 0.01], 1)


def _frames(n_videos=4, T=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n_videos * T, 3, size, size, generator=g)
    meta = pd.DataFrame({"video_id": [f"v{i // T}" for i in range(n_videos * T)],
                         "frame_index": [i % T for i in range(n_videos * T)],
                         "label": [(i // T) % 2 for i in range(n_videos * T)],
                         "group": "asian_male", "manipulation": "none", "path": ""})
    return videos.VideoFrames(images=x, labels=torch.as_tensor(meta.label.to_numpy().copy()), meta=meta)


# --------------------------------------------------------------------------- 1. accumulating budget

def test_progressive_mode_accumulates_by_default_and_differs_from_per_frame():
    """PGD on a sign model reaches ε·sign(w) from any start: a carried start inside the same ball
    (the old default) gives the per-frame records exactly. The chapter's progressive mode must
    accumulate (ε_t = ε(t+1)/T) and so differ, every frame within its own budget."""
    T, eps = 4, 0.04
    fr = _frames(n_videos=4, T=T)
    kw = dict(device="cpu", seed=0, ssim=False, attack_kw={"pgd": {"steps": 3}})
    rec = videos.video_attack_records({"sign": SignModel(8)}, ["pgd"], [0.0, eps], fr, **kw)
    pos = fr.meta["frame_index"].to_numpy()
    linf_pf = rec["linf"].sel(mode="per_frame", model="sign", attack="pgd", eps=eps).values
    linf_pr = rec["linf"].sel(mode="progressive", model="sign", attack="pgd", eps=eps).values
    budget = eps * (pos + 1) / T
    assert np.allclose(linf_pf, eps, atol=1e-6)                 # per-frame: the whole ball on every frame
    assert (linf_pr <= budget + 1e-6).all()                     # each frame within its accumulated budget
    assert np.allclose(linf_pr, budget, atol=1e-6)              # ... and using it (sign model: the corner)
    p_pf = rec["p_adv_fake"].sel(mode="per_frame", eps=eps).values
    p_pr = rec["p_adv_fake"].sel(mode="progressive", eps=eps).values
    early = pos < T - 1
    assert not np.allclose(p_pf[..., early], p_pr[..., early])  # the records differ where the budgets do
    np.testing.assert_allclose(p_pf[..., ~early], p_pr[..., ~early], rtol=1e-5)  # last frame: the same ball
    assert int(rec.attrs["ramp"]) == 1


# --------------------------------------------------------------------------- 2. pseudo-videos

def _binary_records(n_videos=8, T=4, seed=0):
    """Frame records of fake videos whose frames either flip completely under attack (P(fake)
    0.9 → 0.1, a change of 0.8) or not at all, at one radius: near-binary frame changes."""
    rng = np.random.default_rng(seed)
    n = n_videos * T
    flip = rng.random(n) < 0.5
    p_adv = np.where(flip, 0.1, 0.9)
    shape = (1, 1, 1, n)
    v = lambda a: (("model", "attack", "eps", "sample"), np.asarray(a).reshape(shape))
    s = lambda a: (("model", "sample"), np.asarray(a).reshape(1, n))
    ds = xr.Dataset({"p_adv_fake": v(p_adv), "p_adv": v(p_adv), "pred_adv": v((p_adv >= .5).astype(int)),
                     "in_budget": v(np.ones(n, bool)), "changed": v(flip), "l2": v(np.ones(n)),
                     "linf": v(np.ones(n)), "ssim": v(np.ones(n)), "y": (("sample",), np.ones(n, int)),
                     "pred_clean": s(np.ones(n, int)), "p_clean": s(np.full(n, .9)),
                     "p_clean_fake": s(np.full(n, .9)), "x_l2": s(np.ones(n)), "x_linf": s(np.ones(n))},
                    coords={"model": ["m"], "attack": ["pgd"], "eps": [0.1], "sample": np.arange(n),
                            "video_id": ("sample", np.array([f"v{i // T}" for i in range(n)])),
                            "frame_index": ("sample", np.arange(n) % T)})
    return ds, flip


def test_pseudo_videos_of_binary_frame_changes_reproduce_the_staircase():
    T = 4
    rec, flip = _binary_records(n_videos=8, T=T)
    pseudo = videos.pseudo_videos(rec, seed=1)
    vid = np.asarray(rec["video_id"].values)
    pid = np.asarray(pseudo["video_id"].values)
    groups = pd.Series(vid).groupby(pid)
    assert len(groups) == 8 and (groups.size() == T).all()
    assert (groups.nunique() == T).all()                       # T frames from T different videos
    pos = pd.Series(np.asarray(rec["frame_index"].values)).groupby(pid)
    assert (pos.nunique() == T).all()                         # each at its own position
    pv = videos.video_records(pseudo, "mean")
    change = (pv["p_clean_fake"] - pv["p_adv_fake"]).values.ravel()
    n_flip = pd.Series(flip).groupby(pid).sum().to_numpy()
    np.testing.assert_allclose(np.sort(change), np.sort(0.8 * n_flip / T))   # steps of 0.8/T
    # RR(b) of the pseudo-videos is the same staircase as the videos': jumps only at multiples of 0.8/T
    b = np.linspace(0, 0.8, 161)
    rr = metrics.robust_ratio(pv, b).values.ravel()
    jumps = b[1:][np.diff(rr) > 0]
    steps = 0.8 * np.arange(1, T + 1) / T
    assert all(np.min(np.abs(steps - j)) < 0.8 / 160 + 1e-9 for j in jumps)
    assert len(np.unique(rr)) > 2                              # a staircase, not a single jump
    # the same frames: frame-level records are unchanged
    xr.testing.assert_equal(pseudo.drop_vars("video_id"), rec.drop_vars("video_id"))
    with pytest.raises(ValueError, match="at least as many videos"):
        videos.pseudo_videos(_binary_records(n_videos=3, T=4)[0])


# --------------------------------------------------------------------------- 5. a thin chapter 04

def test_chapter_04_is_thin_and_check_params_has_no_side_effects():
    import ast
    from pathlib import Path

    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "04_videos.ipynb", 4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    assert sum(len(c.source.splitlines()) for c in code) <= 120
    assert max(len(c.source.splitlines()) for c in code if c not in params) <= 15
    for c in code:
        assert not c.get("outputs") and not any(isinstance(n, (ast.FunctionDef, ast.Lambda))
                                                for n in ast.walk(ast.parse(c.source)))
    assert sum(c.source.count("glue_result(") for c in code) == 1 and "glue(" not in "".join(c.source for c in code)
    # check_params sets no seed and no thread count
    torch.manual_seed(123)
    before = (torch.get_num_threads(), torch.initial_seed(), np.random.get_state()[1][:4].tolist())
    from dfrobust.core.params import from_namespace
    ns: dict = {}
    exec(params[0].source, {}, ns)
    cfg = from_namespace(videos.check_params, ns)
    assert (torch.get_num_threads(), torch.initial_seed(), np.random.get_state()[1][:4].tolist()) == before
    assert "dev" not in cfg and cfg["ramp"] is True and len(cfg["eps_grid"]) == ns["n_eps"] + 1


def test_too_few_videos_for_pseudo_videos_skips_those_claims_with_the_reason():
    """Four real FF++ samples (2 per label, 4 frames each) cannot make pseudo-videos: the chapter
    must go on without those claims and say why, not stop."""
    few = _binary_records(n_videos=3, T=4)[0].expand_dims(mode=["per_frame"])
    cfg = {"modes": ["per_frame"], "aggregate": "mean", "level": "video", "seed": 0}
    out = videos._by_type(few, _binary_records()[0], cfg)
    assert isinstance(out["video_pseudo"], str) and "at least as many videos" in out["video_pseudo"]
    enough = videos._by_type(_binary_records(n_videos=8, T=4)[0].expand_dims(mode=["per_frame"]),
                             _binary_records()[0], cfg)
    assert enough["video_pseudo"][0].sizes["sample"] == 8 and enough["video_pseudo"][2] == 2
