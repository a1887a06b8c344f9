"""Detectors: one interface, Keras-faithful MesoNet shapes, checkpoints, training, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dfrobust.models import MODELS, build, count_parameters, quality_gate
from dfrobust.models.train import (clean_metrics, get_trained, load_checkpoint, predict_proba,
                                   save_checkpoint, val_auc)

torch.set_num_threads(1)
SMALL = {"meso4": 32, "mesoinception4": 32, "resnet34": 32, "xception": 48, "meso4_adv": 32, "meso4_ibp": 32}


# ----------------------------------------------------------------------------- architectures

def test_registry_and_published_sizes():
    assert MODELS == ("meso4", "mesoinception4", "resnet34", "xception", "meso4_adv", "meso4_ibp")
    sizes = {"meso4": 256, "mesoinception4": 256, "resnet34": 256, "xception": 299, "meso4_adv": 256, "meso4_ibp": 256}
    for name, size in sizes.items():
        m = build(name)
        assert m.name == name and m.input_size == size


def test_meso_parameter_counts_equal_keras():
    # Keras model.summary() of the authors' classifiers: 27,977 and 28,615 trainable parameters
    assert count_parameters(build("meso4")) == 27_977
    assert count_parameters(build("mesoinception4")) == 28_615


@pytest.mark.parametrize("name", MODELS)
def test_every_detector_maps_images_to_two_logits(name):
    torch.manual_seed(0)
    m = build(name, SMALL[name]).eval()
    x = torch.rand(3, 3, SMALL[name], SMALL[name])
    with torch.no_grad():
        out = m(x)
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    p = predict_proba(m, x, batch_size=2)
    np.testing.assert_allclose(p, torch.softmax(out, 1)[:, 1].numpy(), atol=1e-4)  # batching: float32 noise
    # gradients reach the input (attacks and saliency need them)
    x.requires_grad_(True)
    logits = m(x)
    (logits[:, 1] - logits[:, 0]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_meso_two_logits_keep_the_sigmoid_probability():
    torch.manual_seed(1)
    m = build("meso4", 64).eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        z = m.net(x)
        logits = m(x)
    assert torch.equal(logits[:, 0], z) and torch.all(logits[:, 1] == 0)
    torch.testing.assert_close(torch.softmax(logits, 1)[:, 0], torch.sigmoid(z))


def test_normalisation_is_inside_the_model():
    m = build("resnet34", 32)
    x = torch.full((1, 3, 32, 32), 0.5)
    seen = {}
    m.net.conv1.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
    m.eval()(x)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(seen["x"][0, :, 0, 0], expected)


def test_keras_same_pooling_when_size_does_not_divide():
    # Keras MaxPooling2D(padding='same') pads right/bottom with -inf; ceil_mode must agree
    x = torch.randn(1, 2, 5, 7)
    ours = torch.nn.MaxPool2d(2, ceil_mode=True)(x)
    keras = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2)
    torch.testing.assert_close(ours, keras)
    m = build("meso4", 100).eval()  # 100 → 50 → 25 → 13 → 4
    assert m.net.head.dense1.in_features == 16 * 4 * 4
    assert m(torch.rand(1, 3, 100, 100)).shape == (1, 2)


@pytest.mark.parametrize("bad, match", [
    (torch.rand(2, 3, 64, 64) * 1.5 + 0.1, r"\[0, 1\]"),
    (torch.rand(2, 3, 64, 64) - 0.5, r"\[0, 1\]"),
    (torch.rand(2, 3, 32, 32), "64x64"),
    (torch.rand(2, 1, 64, 64), "3 \\(RGB\\) channels"),
    (torch.rand(3, 64, 64), "NCHW"),
    ((torch.rand(2, 3, 64, 64) * 255).to(torch.uint8), "float tensor"),
])
def test_wrong_inputs_raise_one_line_errors(bad, match):
    m = build("meso4", 64)
    with pytest.raises(ValueError, match=match) as exc:
        m(bad)
    assert "\n" not in str(exc.value)


def test_build_rejects_unknown_names_and_sizes(tmp_path):
    with pytest.raises(ValueError, match="expected one of meso4"):
        build("efficientnet")
    with pytest.raises(ValueError, match="input_size"):
        build("xception", 16)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build("resnet34", 64, init_weights=tmp_path / "none.pth")
    with pytest.raises(ValueError, match="only resnet34 and xception"):
        build("meso4", init_weights=tmp_path / "none.pth")


def test_local_imagenet_init_loads_body_and_keeps_a_new_head(tmp_path):
    torch.manual_seed(0)
    src = build("resnet34", 32).net.state_dict()
    src = {k: v for k, v in src.items() if not k.startswith("fc.")}
    src["fc.weight"], src["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # ImageNet head
    torch.save(src, tmp_path / "r34.pth")
    torch.manual_seed(1)
    m = build("resnet34", 32, init_weights=tmp_path / "r34.pth")
    torch.testing.assert_close(m.net.conv1.weight, src["conv1.weight"])
    assert m.net.fc.weight.shape == (2, 512)


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    m = build("mesoinception4", 32).eval()
    x = torch.rand(2, 3, 32, 32)
    path = save_checkpoint(m, tmp_path / "m.pt", note="x")
    back = load_checkpoint(path, "mesoinception4")
    assert back.input_size == 32 and not back.training
    torch.testing.assert_close(back(x), m(x))
    with pytest.raises(ValueError, match="holds architecture 'mesoinception4'; expected 'meso4'"):
        load_checkpoint(path, "meso4")
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(corrupt, "mesoinception4")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a dfrobust-checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- metrics

def test_clean_metrics_subsets():
    meta = pd.DataFrame({
        "label": [0, 0, 1, 1, 0, 1],
        "group": ["asian_male", "asian_male", "asian_male", "asian_male", "african_female", "african_female"],
        "manipulation": ["none", "none", "faceswap", "reenactment", "none", "faceswap"],
    })
    # perfect on asian_male, inverted on african_female
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.3])
    m = clean_metrics(meta, p).set_index("subset")
    assert m.loc["asian_male", "accuracy"] == 1 and m.loc["asian_male", "auc"] == 1
    assert m.loc["african_female", "accuracy"] == 0 and m.loc["african_female", "auc"] == 0
    assert m.loc["all", "accuracy"] == pytest.approx(4 / 6)
    assert m.loc["none", "accuracy"] == pytest.approx(2 / 3) and np.isnan(m.loc["none", "auc"])
    # reenactment fake (0.8) ranks above every real (0.1, 0.2, 0.7)
    assert m.loc["reenactment", "auc"] == 1 and m.loc["reenactment", "n"] == 1
    assert set(m["subset_kind"]) == {"overall", "group", "manipulation"}


# ----------------------------------------------------------------------------- training

def _tiny_manifest(root, n_ids=12, per_id=4, size=32, seed=0, corrupt=0):
    """Synthetic PNGs with an easy cue (fakes carry a bright square), split by identity."""
    import cv2

    from dfrobust.data.manifest import load_manifest, save_manifest

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    groups = ("asian_male", "caucasian_female", "african_male")
    rows = []
    for i in range(n_ids):
        split = ("train",) * 6 + ("val",) * 3 + ("test",) * 3
        for j in range(per_id):
            real = np.clip(rng.uniform(0.2, 0.6, (1, 1, 3)) + rng.normal(0, 0.05, (size, size, 3)), 0, 1)
            fake = real.copy()
            fake[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
            for label, img, man in ((0, real, "none"), (1, fake, ("faceswap", "reenactment")[j % 2])):
                p = root / "img" / f"{i}_{j}_{label}.png"
                cv2.imwrite(str(p), (img[..., ::-1] * 255).astype(np.uint8))
                rows.append(dict(path=str(p), label=label, dataset="synthetic", manipulation=man, video_id="",
                                 frame_index=-1, group=groups[i % 3], identity=f"id{i}", pair_id=f"{i}_{j}",
                                 split=split[i % 12]))
    for k in range(corrupt):
        (root / "img" / f"0_{k}_0.png").write_bytes(b"broken")
    save_manifest(pd.DataFrame(rows), root, {"synthetic": True})
    return load_manifest(root)


FAST = dict(input_size=32, epochs=6, batch_size=16, lr=3e-3, threads=1)


def test_training_learns_caches_and_records(tmp_path, monkeypatch):
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / "home"))
    df = _tiny_manifest(tmp_path / "data")
    td = get_trained("meso4", df, profile="quick", seed=0, device="cpu", **FAST)
    assert not td.cached and td.checkpoint.is_file() and td.checkpoint.with_suffix(".nc").is_file()
    assert str(td.checkpoint).startswith(str(tmp_path / "home"))
    rec = td.record
    assert float(rec["auc"].sel(subset="all")) > 0.9  # the cue is easy: a working loop finds it
    assert {"all", "asian_male", "caucasian_female", "african_male", "faceswap", "reenactment", "none"} \
        <= set(rec["subset"].values)
    assert int(rec["n"].sel(subset="all")) == int((df["split"] == "test").sum())
    assert rec.attrs["synthetic"] == 1 and rec.sizes["epoch"] >= 1 and td.train_time_s > 0
    # the validation AUC of the kept weights is stored for the quality gate
    assert float(rec["val_auc_best"]) == pytest.approx(float(rec["val_auc"].max())) and val_auc(td) > 0.9
    assert quality_gate({"meso4": td})["analysed"].tolist() == [True]
    assert not td.model.training and td.input_size == 32

    again = get_trained("meso4", df, profile="quick", seed=0, device="cpu", **FAST)
    assert again.cached and again.checkpoint == td.checkpoint
    x = torch.rand(4, 3, 32, 32)
    np.testing.assert_array_equal(predict_proba(again.model, x), predict_proba(td.model, x))
    other = get_trained("meso4", df, profile="quick", seed=0, device="cpu", **{**FAST, "epochs": 1})
    assert other.checkpoint != td.checkpoint and not other.cached


def test_training_is_deterministic_per_seed(tmp_path, monkeypatch):
    df = _tiny_manifest(tmp_path / "data")
    states = []
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / run))  # no cache shared between runs
        td = get_trained("mesoinception4", df, profile="quick", seed=seed, device="cpu",
                         **{**FAST, "epochs": 2})
        states.append(td.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_unreadable_images_are_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / "home"))
    df = _tiny_manifest(tmp_path / "data", corrupt=2)
    td = get_trained("meso4", df, profile="quick", seed=0, device="cpu", **{**FAST, "epochs": 1})
    assert td.record.attrs["n_skipped"] == 2
    assert td.record.attrs["n_train"] == int((df["split"] == "train").sum()) - 2


def test_training_rejects_bad_arguments_before_work(tmp_path, monkeypatch):
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / "home"))
    df = _tiny_manifest(tmp_path / "data", n_ids=12, per_id=1)
    with pytest.raises(ValueError, match="unknown; expected one of meso4"):
        get_trained("vgg", df)
    with pytest.raises(ValueError, match="profile='huge'"):
        get_trained("meso4", df, profile="huge")
    with pytest.raises(ValueError, match="override"):
        get_trained("meso4", df, learning_rate=0.1)
    with pytest.raises(ValueError, match="epochs=0"):
        get_trained("meso4", df, epochs=0)
    with pytest.raises(ValueError, match="split 'val'"):
        get_trained("meso4", df[~((df["split"] == "val") & (df["label"] == 1))])
    with pytest.raises(ValueError, match="lacks column"):
        get_trained("meso4", df.drop(columns=["split"]))
    assert not any((tmp_path / "home").rglob("*.pt"))


def test_figures_and_tables_from_records(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from dfrobust.figures import models as mfig
    from dfrobust.models.train import combined_record, records_table

    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / "home"))
    df = _tiny_manifest(tmp_path / "data")
    trained = {m: get_trained(m, df, profile="quick", seed=0, device="cpu", **{**FAST, "epochs": 1})
               for m in ("meso4", "mesoinception4")}
    table = records_table(trained)
    assert set(table["model"]) == {"meso4", "mesoinception4"}
    wide = mfig.metrics_table(table)
    assert wide.index[0] == ("overall", "all") and wide.shape[1] == 4
    fig = mfig.clean_metrics(table, "synthetic")
    assert len(fig.axes) == 6 and "synthetic" in fig._suptitle.get_text()
    assert len(mfig.validation_curves(trained).axes) == 1
    ds = combined_record(trained)
    assert list(ds["model"].values) == ["meso4", "mesoinception4"] and ds["accuracy"].dims == ("model", "subset")
    with pytest.raises(ValueError, match="records_table"):
        mfig.clean_metrics(table.drop(columns=["auc"]))
