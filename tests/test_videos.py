"""Video evaluation: frame sampling and stride, aggregation, progressive carry-over, video bootstrap, skips,
image records on equal terms, parameters and the quality gate."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from dfrobust import metrics
from dfrobust.experiments import videos
from dfrobust.data.video import even_indices, write_mp4
from dfrobust.attacks import progressive
from dfrobust.data import sampling

torch.set_num_threads(1)


# --------------------------------------------------------------------------- helpers

def _clip(level_of_frame, n=12, size=48):
    """A clip whose frame i is a flat grey of value level_of_frame(i) (uint8 [n, size, size, 3])."""
    return np.stack([np.full((size, size, 3), level_of_frame(i), np.uint8) for i in range(n)])


def _ffpp(root, *, truncated=False):
    """A tiny FF++-layout folder: 2 real + 2 fake clips (+ one truncated fake)."""
    real = root / "original_sequences" / "youtube" / "c23" / "videos"
    fake = root / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"
    write_mp4(_clip(lambda i: 20 + 15 * i), real / "000.mp4", fps=8)
    write_mp4(_clip(lambda i: 200 - 10 * i), real / "001.mp4", fps=8)
    write_mp4(_clip(lambda i: 60 + 5 * i), fake / "000_001.mp4", fps=8)
    write_mp4(_clip(lambda i: 90), fake / "001_000.mp4", fps=8)
    if truncated:
        data = (fake / "001_000.mp4").read_bytes()
        (fake / "002_003.mp4").write_bytes(data[: len(data) // 3])
    return root


def _prepared(tmp_path, **kw):
    from dfrobust.data.prepare import prepare
    from dfrobust.data.manifest import load_manifest

    root = _ffpp(tmp_path / "ffpp", **kw)
    return load_manifest(prepare(root, layout="ffpp", n_frames=4, size=32, detector="none",
                                 out_dir=tmp_path / "prepared"))


class SignModel(torch.nn.Module):
    """logits = [0, <w, x> - c]: the CE gradient of label 0 has the constant sign of w."""

    def __init__(self, size=8, seed=0, c=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(3 * size * size, generator=g), requires_grad=False)
        self.c = float(self.w.sum() * 0.5) if c is None else c
        self.input_size = size
        self.name = "sign"

    def forward(self, x):
        z = x.flatten(1) @ self.w - self.c
        return torch.stack([torch.zeros_like(z), z * 0.01], 1)


class Tiny(torch.nn.Module):
    def __init__(self, size=8, seed=0, scale=4.0):
        super().__init__()
        self.scale = scale
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.input_size = size
        self.name = "tiny"

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3))) * self.scale


class Exploding(Tiny):
    def forward(self, x):  # pragma: no cover - must never be reached
        raise AssertionError("validation must stop before the model runs")


def _frames(n_videos=3, T=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n_videos * T, 3, size, size, generator=g)   # interior: no [0,1] clipping
    meta = pd.DataFrame({"video_id": [f"v{i // T}" for i in range(n_videos * T)],
                         "frame_index": [10 * (i % T) for i in range(n_videos * T)],
                         "label": [(i // T) % 2 for i in range(n_videos * T)],
                         "group": "asian_male", "manipulation": "none", "path": ""})
    return videos.VideoFrames(images=x, labels=torch.as_tensor(meta.label.to_numpy().copy()), meta=meta)


def _records(correct_by_video: dict[str, tuple[int, bool]], change=None):
    """Hand-made frame records: video -> (n_frames, all frames correct under attack)."""
    vids, corr = [], []
    for v, (n, ok) in correct_by_video.items():
        vids += [v] * n
        corr += [ok] * n
    n = len(vids)
    y = np.ones(n, int)
    pred_adv = np.where(corr, 1, 0)
    p_adv_fake = np.where(corr, 0.9, 0.1) if change is None else 0.9 - np.asarray(change)
    shape = (1, 1, 1, n)
    ds = xr.Dataset({
        "p_adv_fake": (("model", "attack", "eps", "sample"), p_adv_fake.reshape(shape)),
        "p_adv": (("model", "attack", "eps", "sample"), p_adv_fake.reshape(shape)),
        "pred_adv": (("model", "attack", "eps", "sample"), pred_adv.reshape(shape)),
        "in_budget": (("model", "attack", "eps", "sample"), np.ones(shape, bool)),
        "changed": (("model", "attack", "eps", "sample"), np.ones(shape, bool)),
        "l2": (("model", "attack", "eps", "sample"), np.ones(shape)),
        "linf": (("model", "attack", "eps", "sample"), np.ones(shape)),
        "ssim": (("model", "attack", "eps", "sample"), np.ones(shape)),
        "y": (("sample",), y),
        "pred_clean": (("model", "sample"), np.ones((1, n), int)),
        "p_clean": (("model", "sample"), np.full((1, n), 0.9)),
        "p_clean_fake": (("model", "sample"), np.full((1, n), 0.9)),
        "x_l2": (("model", "sample"), np.ones((1, n))),
        "x_linf": (("model", "sample"), np.ones((1, n))),
    }, coords={"model": ["m"], "attack": ["pgd"], "eps": [0.1], "sample": np.arange(n),
               "video_id": ("sample", np.array(vids)), "frame_index": ("sample", np.arange(n))})
    return ds


# --------------------------------------------------------------------------- frames & aggregation

def test_frame_sampling_and_video_aggregation(tmp_path, data_home):
    df = _prepared(tmp_path)
    fr = videos.load_video_frames(df, 16)
    assert fr.n_videos == 4 and fr.skipped == []
    assert fr.images.shape == (16, 3, 16, 16)
    levels = {"000": lambda i: 20 + 15 * i, "001": lambda i: 200 - 10 * i,
              "Deepfakes/000_001": lambda i: 60 + 5 * i, "Deepfakes/001_000": lambda i: 90}
    for vid, g in fr.meta.groupby("video_id"):
        # frames spread evenly over the whole 12-frame clip, in order
        assert list(g.frame_index) == list(even_indices(12, 4))
        got = fr.images[torch.as_tensor(g.index.to_numpy().copy())].mean((1, 2, 3)).numpy() * 255
        want = np.array([levels[vid](int(i)) for i in g.frame_index])
        assert np.allclose(got, want, atol=6), (vid, got, want)
    p = fr.images.mean((1, 2, 3)).numpy()   # a stand-in "P(fake)" per frame
    for how, fn in (("mean", np.mean), ("median", np.median), ("max", np.max)):
        vs = videos.video_scores(p, fr.meta, how).set_index("video_id")
        for vid, g in fr.meta.groupby("video_id"):
            assert vs.loc[vid, "score"] == pytest.approx(fn(p[g.index.to_numpy()]))
            assert vs.loc[vid, "n_frames"] == 4 and vs.loc[vid, "label"] == g.label.iloc[0]
    with pytest.raises(ValueError, match="aggregate='mode'"):
        videos.video_scores(p, fr.meta, "mode")
    sub = sampling.select_frames(df, 2)
    assert sub.groupby("video_id").size().eq(2).all()


def test_unreadable_video_is_reported_and_the_others_are_kept(tmp_path, data_home):
    df = _prepared(tmp_path, truncated=True)
    # the truncated mp4 was skipped at preparation; now also break one crop of a good video
    bad = df[df.video_id == "001"].path.iloc[2]
    open(bad, "wb").write(b"not a png")
    fr = videos.load_video_frames(df, 8)
    tab = videos.skipped_table(fr)
    assert any("002_003" in p for p in tab.path[tab.stage == "prepare"])
    assert list(tab.video_id[tab.stage == "load"]) == ["001"]
    assert sorted(fr.meta.video_id.unique()) == ["000", "Deepfakes/000_001", "Deepfakes/001_000"]
    rec = videos.video_attack_records({"tiny": Tiny(8)}, ["fgsm"], [0.0, 0.05], fr, device="cpu", ssim=False)
    assert sorted(set(rec.video_id.values)) == sorted(fr.meta.video_id.unique())
    assert rec.sizes["sample"] == 12 and np.isfinite(rec["p_adv_fake"].values).all()


# --------------------------------------------------------------------------- progressive attacks

def test_progressive_pgd_carries_delta_over_and_stays_in_budget():
    fr = _frames(n_videos=2, T=4)
    model = SignModel(8)
    order = sampling.video_order(fr.meta)
    eps, alpha = 0.05, 0.01
    atk = progressive.ProgressiveAttack("pgd", model, order, eps=eps, seed=0, steps=1, alpha=alpha)
    labels = torch.zeros(len(fr.images), dtype=torch.long)  # gradient sign = sign(w) for every frame
    adv = atk(fr.images, labels)
    d = atk.last_deltas.reshape(len(adv), -1)
    s = torch.sign(model.w)
    assert videos.delta_linf_ok(fr.images, adv, eps)
    for o in order:
        for k in range(1, len(o)):
            want = torch.clamp(d[o[k - 1]] + alpha * s, -eps, eps)   # start at δ_{t-1}, one step
            assert torch.allclose(d[o[k]], want, atol=1e-6)
        # the projection onto sign(w) accumulates along the clip
        proj = [float((d[i] * s).mean()) for i in o]
        assert proj[-1] > proj[0] + 1.5 * alpha
    # without the carry-over every frame starts afresh: no accumulation
    direct = progressive.ProgressiveAttack("pgd", model, order, eps=eps, seed=0, steps=1, alpha=alpha, carry=False)
    direct(fr.images, labels)
    dd = direct.last_deltas.reshape(len(adv), -1)
    for o in order:
        proj = [float((dd[i] * s).mean()) for i in o]
        assert abs(proj[-1] - proj[0]) < alpha


@pytest.mark.parametrize("name", ["fgsm", "cwinf"])
def test_progressive_fgsm_and_cw_start_from_previous_delta(name):
    fr = _frames(n_videos=2, T=3)
    model = Tiny(8, seed=1) if name == "fgsm" else SignModel(8)
    order = sampling.video_order(fr.meta)
    with torch.no_grad():
        labels = model(fr.images).argmax(1)   # attack the clean predictions
    kw = {"steps": 3} if name == "cwinf" else {}
    prog = progressive.ProgressiveAttack(name, model, order, eps=0.04, seed=0, **kw)
    fresh = progressive.ProgressiveAttack(name, model, order, eps=0.04, seed=0, carry=False, **kw)
    a, b = prog(fr.images, labels), fresh(fr.images, labels)
    first = [o[0] for o in order]
    later = np.concatenate([o[1:] for o in order])
    assert torch.equal(a[first], b[first])          # frame 0: no previous δ, same attack
    assert not torch.allclose(a[later], b[later])   # later frames depend on the carried δ
    if name == "fgsm":
        assert videos.delta_linf_ok(fr.images, a, 0.04)
        # FGSM from δ_{t-1}: gradient taken at x_t + δ_{t-1}, δ_t = Π_ε(δ_{t-1} + ε·sign(g))
        d = prog.last_deltas
        for o in order:
            for k in range(1, len(o)):
                x = (fr.images[o[k]] + d[o[k - 1]]).clamp(0, 1)[None].requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(model(x), labels[o[k]][None])
                g, = torch.autograd.grad(loss, x)
                want = (fr.images[o[k]] + torch.clamp(x[0].detach() + 0.04 * g[0].sign() - fr.images[o[k]],
                                                      -0.04, 0.04)).clamp(0, 1) - fr.images[o[k]]
                assert torch.allclose(d[o[k]], want, atol=1e-6)


def test_ramp_budget_grows_over_the_clip():
    fr = _frames(n_videos=2, T=4)
    order = sampling.video_order(fr.meta)
    atk = progressive.ProgressiveAttack("pgd", Tiny(8), order, eps=0.08, seed=0, ramp=True, steps=2)
    adv = atk(fr.images, fr.labels)
    for o in order:
        assert np.allclose(atk.eps_per_row[o], 0.08 * np.arange(1, 5) / 4)
    assert videos.delta_linf_ok(fr.images, adv, atk.eps_per_row)
    assert not videos.delta_linf_ok(fr.images, adv, 0.02 - 1e-3)   # the late frames really use more


def test_video_attack_records_modes_budget_and_determinism():
    fr = _frames(n_videos=3, T=3)
    kw = dict(device="cpu", seed=3, ssim=False, ramp=False,  # the carry alone (the ramp: test_videos_decide)
              attack_kw={"pgd": {"steps": 2}, "cwinf": {"steps": 2}})
    rec = videos.video_attack_records({"tiny": Tiny(8)}, ["fgsm", "pgd", "cwinf"], [0.0, 0.03, 0.06], fr, **kw)
    assert list(rec["mode"].values) == ["per_frame", "progressive"]
    lin = rec["linf"].sel(attack=["fgsm", "pgd"])
    assert (lin <= lin["eps"] + 1e-6).all()
    assert (rec["linf"].sel(eps=0.0, attack=["fgsm", "pgd"]) == 0).all()
    # the progressive hook was really used: the modes differ on later frames
    later = rec["frame_index"].values > 0
    for atk in ("fgsm", "pgd"):
        a = rec["l2"].sel(mode="per_frame", attack=atk, eps=0.06).values[..., later]
        b = rec["l2"].sel(mode="progressive", attack=atk, eps=0.06).values[..., later]
        assert not np.allclose(a, b), atk
    first = ~later  # frame 0 of each video: FGSM has nothing to carry, so both modes agree
    np.testing.assert_allclose(rec["l2"].sel(mode="per_frame", attack="fgsm").values[..., first],
                               rec["l2"].sel(mode="progressive", attack="fgsm").values[..., first], rtol=1e-6)
    again = videos.video_attack_records({"tiny": Tiny(8)}, ["fgsm", "pgd", "cwinf"], [0.0, 0.03, 0.06], fr, **kw)
    xr.testing.assert_equal(rec[["p_adv_fake", "linf"]], again[["p_adv_fake", "linf"]])
    # the module's make_attack is restored afterwards
    from dfrobust import attacks
    assert attacks.make_attack.__module__ == "dfrobust.attacks"


def test_validation_before_any_attack():
    fr = _frames()
    with pytest.raises(ValueError, match="mode='sideways'"):
        videos.video_attack_records({"x": Exploding(8)}, ["pgd"], [0.1], fr, modes="per_frame,sideways")
    with pytest.raises(ValueError, match="attack='cw'"):
        videos.video_attack_records({"x": Exploding(8)}, ["cw"], [0.1], fr, modes="progressive")
    with pytest.raises(ValueError, match="aggregate='avg'"):
        videos.check_aggregate("avg")
    with pytest.raises(ValueError, match="video_id"):
        sampling.select_frames(pd.DataFrame({"video_id": ["", "a"], "frame_index": [0, 1]}))


# --------------------------------------------------------------------------- video level & bootstrap

def test_video_records_aggregate_frames():
    rec = _records({"a": (3, True), "b": (2, False)}, change=[0.0, 0.1, 0.5, 0.8, 0.8])
    v = videos.video_records(rec, "mean")
    assert list(v.video_id.values) == ["a", "b"]
    assert np.allclose(v["p_adv_fake"].values.ravel(), [0.9 - 0.2, 0.1])
    assert list(v["n_frames"].values) == [3, 2]
    rr = metrics.robust_ratio(v, [0.25]).values.ravel()
    assert rr == pytest.approx([0.5])            # video a changed by 0.2, video b by 0.8
    vmax = videos.video_records(rec, "max")
    assert np.allclose(vmax["p_adv_fake"].values.ravel(), [0.9, 0.1])


def test_bootstrap_resamples_whole_videos():
    # video A: 9 frames all correct; video B: 1 frame wrong. Resampling VIDEOS gives RA in {1, 0.9, 0}
    # (B drawn twice -> 0); resampling frames would never get near 0.
    rec = _records({"A": (9, True), "B": (1, False)})
    s = videos.ra_rr_summary(rec, [0.0, 0.5], n_boot=400, seed=0)
    fr = s.sel(level="frame")
    assert (fr["RA"]).item() == pytest.approx(0.9)
    assert (fr["RA_lo"]).item() == 0.0 and (fr["RA_hi"]).item() == 1.0
    vid = s.sel(level="video")
    assert (vid["RA"]).item() == pytest.approx(0.5)


# --------------------------------------------------------------------------- consecutive frames

def _frame_manifest(indices_by_video: dict[str, list[int]]) -> pd.DataFrame:
    rows = []
    for i, (v, idx) in enumerate(indices_by_video.items()):
        rows += [{"video_id": v, "frame_index": f, "label": i % 2, "group": "asian_male", "path": f"{v}_{f}.png"}
                 for f in idx]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)   # shuffled: the sampler must sort


def test_select_frames_keeps_consecutive_frames_at_stride():
    df = _frame_manifest({"a": list(range(3, 13)), "b": list(range(0, 10))})
    one = sampling.select_frames(df, 8, frame_stride=1)
    assert one.groupby("video_id").frame_index.apply(list).to_dict() == {"a": list(range(3, 11)),
                                                                         "b": list(range(0, 8))}
    two = sampling.select_frames(df, 4, frame_stride=2)
    assert list(two[two.video_id == "b"].frame_index) == [0, 2, 4, 6]
    spread = sampling.select_frames(df, 4)             # no stride: spread over the prepared frames
    assert list(spread[spread.video_id == "b"].frame_index) == list(even_indices(10, 4))
    # frames prepared evenly over a clip are not consecutive: refused, naming the video
    sparse = _frame_manifest({"c": [0, 6, 12, 18, 24, 30, 36, 42]})
    with pytest.raises(ValueError, match=r"video_id='c': frames_per_video=8 at frame_stride=1 needs"):
        sampling.select_frames(sparse, 8, frame_stride=1)
    with pytest.raises(ValueError, match="frame_stride=0"):
        sampling.select_frames(df, 4, frame_stride=0)
    with pytest.raises(ValueError, match="needs frames_per_video"):
        sampling.select_frames(df, None, frame_stride=1)


# --------------------------------------------------------------------------- image records on equal terms

def _img_records(n=12, eps=(0.0, 0.01, 0.1), seed=0, attack_kw=None):
    ds = xr.Dataset({"p_adv": (("model", "attack", "eps", "sample"), np.full((1, 1, len(eps), n), 0.5))},
                    coords={"model": ["m"], "attack": ["pgd"], "eps": list(eps), "sample": np.arange(n),
                            "group": ("sample", np.array(["g1", "g2"] * (n // 2)))})
    ds["y"] = ("sample", np.arange(n) % 2)
    ds.attrs.update(seed=seed, attack_kw=str(attack_kw if attack_kw is not None else {"pgd": {"steps": 3}}))
    return ds


def test_image_records_on_other_terms_are_refused_or_recomputed(tmp_path, data_home):
    from dfrobust.core import paths
    from dfrobust.core.results import save

    terms = dict(eps_grid=[0.0, 0.01, 0.1], attack_kw={"pgd": {"steps": 3}}, seed=0, models=["m"], attacks=["pgd"])
    assert videos.image_mismatch(_img_records(), n_units=6, **terms) == ""
    assert "eps grid [0.0, 0.02, 0.1] differs" in videos.image_mismatch(_img_records(eps=(0.0, 0.02, 0.1)),
                                                                        n_units=6, **terms)
    assert "seed 1 differs" in videos.image_mismatch(_img_records(seed=1), n_units=6, **terms)
    assert "attack 'pgd' settings {'steps': 10} differ" in videos.image_mismatch(
        _img_records(attack_kw={"pgd": {"steps": 10}}), n_units=6, **terms)
    assert "fewer than the 20 units" in videos.image_mismatch(_img_records(), n_units=20, **terms)
    settled = _img_records()
    settled.attrs["settle_b"] = "0.1: samples flipped with ... are not attacked at larger ones"
    assert "settled at b = 0.1, below this chapter's b_max = 0.2" in videos.image_mismatch(
        settled, n_units=6, b_max=0.2, **terms)
    assert videos.image_mismatch(settled, n_units=6, b_max=0.1, **terms) == ""
    save(_img_records(eps=(0.0, 0.02, 0.1)), paths.results_dir("quick") / "rr_records.nc")
    with pytest.raises(ValueError, match=r"rr_records.nc: eps grid .* differs"):
        videos.image_records("quick", n_units=6, **terms)
    rec, src = videos.image_records("quick", n_units=6, compute=lambda: _img_records(), **terms)
    assert rec.sizes["sample"] == 6 and src.startswith("computed here (eps grid")
    save(_img_records(), paths.results_dir("quick") / "rr_records.nc")
    rec, src = videos.image_records("quick", n_units=6, **terms)
    assert src.startswith("saved by the robustness chapter") and rec.sizes["sample"] == 6


def test_match_units_is_balanced_and_seeded():
    rec = _img_records(n=40)
    sub = videos.match_units(rec, 10, seed=0)
    assert sub.sizes["sample"] == 10
    assert (sub["y"].values == 1).sum() == 5
    assert pd.Series(sub["group"].values).value_counts().min() >= 4
    xr.testing.assert_equal(sub, videos.match_units(rec, 10, seed=0))
    with pytest.raises(ValueError, match="n=41: only 40 samples"):
        videos.match_units(rec, 41)


# --------------------------------------------------------------------------- parameters and gate

GOOD = dict(profile="quick", seed=0, models="meso4", attacks="fgsm,pgd", modes="per_frame,progressive",
            aggregate="mean", eps_min=0.00196, eps_max=0.2, n_eps=4, b_max=0.2, n_b=21, eps_ref=0.02, b_ref=0.1,
            frames_per_video=8, frame_stride=1, max_videos=0, pgd_steps=3,
            n_boot=200, level="video", ramp=True, lin_margin=0.05, alpha=0.05, target_videos=30,
            min_val_auc=0.7, real_frames=8, device="auto")


def test_check_params_returns_the_canonical_grid_and_refuses_bad_values():
    p = videos.check_params(**GOOD)
    assert p["eps_grid"][0] == 0.0 and len(p["eps_grid"]) == 5 and p["eps_grid"][-1] == 0.2
    assert np.allclose(np.diff(np.log(p["eps_grid"][1:])), np.log(0.2 / 0.00196) / 3, rtol=1e-3)
    assert len(p["b_grid"]) == 21 and p["frame_stride"] == 1
    assert p["eps_ref"] in p["eps_grid"] and p["b_ref"] == pytest.approx(0.1)
    for key, bad, msg in (("n_b", 11, r"n_b=11: expected an integer in [21, 64]"),
                          ("frames_per_video", 1, "frames_per_video=1"),
                          ("models", "meso5", "'meso5' is unknown"),
                          ("attacks", "cw", "'cw' is unknown"),
                          ("lin_margin", 0.0, "lin_margin=0.0"),
                          ("min_val_auc", 1.5, "min_val_auc=1.5"),
                          ("level", "clip", "level='clip'"),
                          ("eps_min", 0.3, "eps_max=0.2: expected a radius above")):
        with pytest.raises(ValueError, match=re.escape(msg)):
            videos.check_params(**{**GOOD, key: bad})


# --------------------------------------------------------------------------- the study's sizes

def test_default_profile_has_power_and_consecutive_frames():
    """Default: >= 30 videos per class from identities never trained on, >= 8 radii for the shape of RR(ε)
    (issue 24) at no more frames x radii than before (8 x 4), clips of >= 4 consecutive prepared frames for
    the chapter's window; quick stays small; each profile's window fits its prepared frames."""
    import yaml

    from dfrobust.data import synth
    from dfrobust.data.manifest import GROUPS

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "notebooks" / "study.yml").read_text())
    entry = next(e for e in spec["notebooks"] if e["name"] == "04_videos")
    template = {"frames_per_video": 8, "frame_stride": 1, "n_eps": 8}
    for profile in ("quick", "default", "paper"):
        kw = synth.resolve(profile)
        clip = round(kw["video_seconds"] * kw["fps"])
        prepared = min(kw["frames_per_video"], clip)
        nb = {**template, **entry["params"][profile]}
        need = 1 + (nb["frames_per_video"] - 1) * nb["frame_stride"]
        # the preparation keeps every frame only when it is asked for at least the whole clip
        assert kw["frames_per_video"] >= clip or nb["frame_stride"] == 0, profile
        assert need <= prepared, (profile, need, prepared)
        assert "train" not in kw["video_splits"], profile
        per_class = kw["n_videos"] * len(GROUPS)
        if profile == "default":
            assert nb["frames_per_video"] * nb["n_eps"] <= 8 * 4, "default: the attack cost of issue 23's build"
        if profile != "quick":
            assert per_class >= 30 and nb["frames_per_video"] >= 4 and nb["n_eps"] >= 8, profile
        else:
            assert per_class * nb["frames_per_video"] <= 48, "keep the quick profile small"


def test_frame_steps_measure_successive_kept_frames():
    fr = _frames(n_videos=2, T=3)
    fr.images[1] = fr.images[0] + 0.01          # video v0: frame 1 = frame 0 + 0.01 everywhere
    st = videos.frame_steps(fr)
    assert len(st) == 2 * 2 and set(st.gap) == {10}
    first = st.iloc[0]
    assert first.video_id == "v0" and first.mean_abs == pytest.approx(0.01, abs=1e-6)
    assert first.max_abs == pytest.approx(0.01, abs=1e-6)
