"""Synthetic benchmark: determinism, pairing, balance, identity splits, the detectability bar."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dfrobust.data import GROUPS, get_manifest, synth
from dfrobust.data.manifest import load_images, load_manifest, read_rgb

SMALL = dict(n_per_group=3, n_identities=3, size=64, n_videos=1, video_seconds=0.5, fps=8, frames_per_video=2)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".jpg", ".mp4", ".png")}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("DFROBUST_DATA_HOME", str(home))
    df = load_manifest(synth.generate("quick", 0, "images", **SMALL))
    frames = load_manifest(synth.generate("quick", 0, "video_frames", **SMALL))
    yield df, frames, home
    mp.undo()


def test_same_seed_identical_files_other_seed_differs(tmp_path, data_home):
    a = synth.generate_images("quick", 3, out_dir=tmp_path / "a", **SMALL)
    b = synth.generate_images("quick", 3, out_dir=tmp_path / "b", **SMALL)
    c = synth.generate_images("quick", 4, out_dir=tmp_path / "c", **SMALL)
    da, db, dc = _digest(a.parent), _digest(b.parent), _digest(c.parent)
    assert len(da) == 2 * 3 * len(GROUPS)
    assert da == db
    assert sum(da[k] == dc.get(k) for k in da) == 0
    va = synth.generate_videos("quick", 3, out_dir=tmp_path / "a", **SMALL)
    vb = synth.generate_videos("quick", 3, out_dir=tmp_path / "b", **SMALL)
    assert _digest(va) == _digest(vb) and len(_digest(va)) == 2 * len(GROUPS)


def test_every_fake_is_paired_with_the_real_frame_it_was_made_from(small):
    df = small[0]
    real = df[df.label == 0].set_index("pair_id")
    fake = df[df.label == 1].set_index("pair_id")
    assert set(real.index) == set(fake.index) and real.index.is_unique and fake.index.is_unique
    for col in ("identity", "group", "split"):
        assert (fake[col] == real.loc[fake.index, col]).all()
    assert set(fake.manipulation) == {"faceswap", "reenactment"} and set(real.manipulation) == {"none"}
    fs = fake[fake.manipulation == "faceswap"]
    assert (fs.source_identity != fs.identity).all() and (fs.source_identity != "").all()
    # made FROM that real: the background (corners) matches, the face centre does not
    for pid in fake.index:
        r = read_rgb(real.loc[pid, "path"]).astype(float)
        f = read_rgb(fake.loc[pid, "path"]).astype(float)
        corner = np.abs(r[:8, :8] - f[:8, :8]).mean()
        centre = np.abs(r[20:52, 16:48] - f[20:52, 16:48]).mean()
        assert corner < 4.0 < centre, (pid, corner, centre)


def test_groups_balanced_and_splits_by_identity(small):
    df = small[0]
    counts = df.groupby(["group", "label"]).size()
    assert set(df.group) == set(GROUPS) and counts.nunique() == 1 and counts.iloc[0] == 3
    assert (df.groupby("identity").split.nunique() == 1).all()
    per = df.groupby(["split", "group"]).identity.nunique().unstack()
    assert set(per.index) == {"train", "val", "test"} and (per == 1).all().all()


def test_video_frames_come_through_the_ffpp_reader(small):
    _, frames, home = small
    meta = frames.attrs["meta"]
    assert meta["synthetic"] is True and meta["notes"]["layout"] == "ffpp"
    assert set(frames.dataset) == {"synthetic"} and set(frames.group) == set(GROUPS)
    assert (frames.frame_index >= 0).all() and (frames.video_id != "").all()
    assert frames.groupby("video_id").size().eq(2).all()
    fake = frames[frames.label == 1]
    real_pairs = set(frames[frames.label == 0].pair_id)
    assert len(fake) and all(p in real_pairs for p in fake.pair_id)
    mp4 = list(Path(meta["root"]).rglob("*.mp4"))
    assert len(mp4) == 2 * len(GROUPS) and all(p.stat().st_size > 0 for p in mp4)
    x = load_images(frames.head(3), 32)
    import torch
    assert tuple(x.shape) == (3, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_get_manifest_generates_once_and_reuses(data_home):
    df = get_manifest("quick", "images", seed=1, **SMALL)
    path = Path(df.attrs["meta"]["manifest_path"])
    assert path.is_relative_to(data_home)
    mtime = path.stat().st_mtime_ns
    again = get_manifest("quick", "images", seed=1, **SMALL)
    assert path.stat().st_mtime_ns == mtime and again.equals(df)
    assert df.attrs["meta"]["synthetic"] is True


def test_paper_without_root_falls_back_to_synthetic_with_notice(monkeypatch, capsys, data_home):
    monkeypatch.delenv("DFROBUST_DATA_ROOT", raising=False)
    seen = {}

    def fake_dataset(profile, kind, *, seed=0, **kw):
        seen.update(profile=profile, kind=kind)
        import pandas as pd
        df = pd.DataFrame()
        df.attrs["meta"] = {"synthetic": True}
        return df

    monkeypatch.setattr(synth, "dataset_for_profile", fake_dataset)
    df = get_manifest("paper", "images")
    assert seen == {"profile": "paper", "kind": "images"}
    assert "SYNTHETIC" in capsys.readouterr().out and "notice" in df.attrs["meta"]
    get_manifest("default", "images")
    assert "SYNTHETIC" not in capsys.readouterr().out


def test_paper_scale_matches_the_spec():
    kw = synth.resolve("paper")
    assert kw["n_per_group"] * 2 * len(GROUPS) == 7680
    assert kw["n_videos"] == 5 and kw["video_seconds"] == 2.0 and kw["fps"] == 25


@pytest.mark.parametrize("kw, word", [
    (dict(n_identities=2), "n_identities"), (dict(size=8), "size"), (dict(strength=(0.8, 0.2)), "strength"),
    (dict(manipulations=("morph",)), "manipulations"), (dict(bogus=1), "bogus"), (dict(n_per_group=2), "n_per_group"),
    (dict(n_videos=9), "n_videos"),
])
def test_bad_generator_options_fail_fast(kw, word, tmp_path, data_home):
    with pytest.raises(ValueError, match=word):
        synth.generate_images("quick", 0, out_dir=tmp_path, **kw) if "n_videos" not in kw else \
            synth.generate_videos("quick", 0, out_dir=tmp_path, **kw)
    assert not any(tmp_path.rglob("*.jpg"))


def test_bad_profile_and_kind():
    with pytest.raises(ValueError, match="profile"):
        get_manifest("huge")
    with pytest.raises(ValueError, match="kind"):
        get_manifest("quick", "audio")


def test_bar_colour_baseline_near_chance_but_pixels_learnable(tmp_path, data_home):
    """Weaker, fast version of the chapter's bar (which trains Meso4 at 256 px): with strong
    artefacts, global colour statistics still do not give the label away, while a tiny CNN on the
    central face crop learns it on held-out identities."""
    import torch

    torch.set_num_threads(1)
    p = synth.generate_images("quick", 0, out_dir=tmp_path, n_per_group=30, n_identities=10, strength=(0.8, 1.0))
    df = load_manifest(p)
    base = synth.colour_baseline(df)
    assert base["n_test"] == 2 * 30 * 6 // 5
    assert base["accuracy"] <= 0.70
    acc, auc = _tiny_cnn(df)
    assert acc >= base["accuracy"] + 0.12 and auc >= 0.7, (acc, auc, base)


def _tiny_cnn(df) -> tuple[float, float]:
    import torch
    from sklearn.metrics import roc_auc_score
    from torch import nn

    torch.manual_seed(0)
    x = nn.functional.avg_pool2d(load_images(df, 256)[:, :, 64:192, 64:192], 2)   # central face, 64 px
    tr = torch.as_tensor((df.split != "test").to_numpy().copy())
    xtr, xte = x[tr], x[~tr]
    ytr, yte = torch.as_tensor(df.label.to_numpy().copy())[tr], df.label.to_numpy()[~tr.numpy()]
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                        nn.Flatten(), nn.Linear(16, 2))
    epochs, bs = 15, 16
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=epochs * ((len(xtr) + bs - 1) // bs))
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(perm), bs):
            b = perm[i:i + bs]
            loss = nn.functional.cross_entropy(net(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        logits = net(xte)
    return float((logits.argmax(1).numpy() == yte).mean()), float(roc_auc_score(yte, logits.softmax(1)[:, 1].numpy()))


def test_worker_processes_do_not_change_a_single_byte(tmp_path):
    """The default profile generates with n_jobs=2: the images must be those of one process."""
    import hashlib

    from dfrobust.data import synth

    kw = {"n_per_group": 3, "n_identities": 3, "size": 32}
    digests = []
    for jobs in (1, 2):
        out = tmp_path / f"j{jobs}"
        synth.generate_images("quick", 0, out_dir=out, n_jobs=jobs, **kw)
        digests.append({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted((out / "images").rglob("*.jpg"))})
    assert len(digests[0]) == 36 and digests[0] == digests[1]
