"""The MesoNet port against the authors' Keras models (reference outputs in the shared folder).

Everything here that reads ../shared/realdata skips when that folder is absent (fresh clone);
nothing is copied from it into the project.
"""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch

from dfrobust.models import build
from dfrobust.models.keras_h5 import (detect_architecture, keras_preprocess, load_keras_weights,
                                      load_pretrained, p_real, read_keras_weights)
from dfrobust.core.paths import shared_realdata

torch.set_num_threads(1)
WEIGHTS = ("Meso4_DF.h5", "Meso4_F2F.h5", "MesoInception_DF.h5", "MesoInception_F2F.h5")


@pytest.fixture(scope="module")
def mesonet():
    base = shared_realdata()
    if base is None or not (base / "mesonet" / "keras_reference.json").is_file():
        pytest.skip("MesoNet reference data absent (../shared/realdata/mesonet is not part of the repository)")
    return base / "mesonet"


@pytest.fixture(scope="module")
def reference(mesonet):
    return json.loads((mesonet / "keras_reference.json").read_text())


@pytest.fixture(scope="module")
def images(mesonet, reference):
    names = list(reference["Meso4_DF.h5"])
    return names, keras_preprocess([mesonet / n for n in names])


def test_preprocessing_is_bit_identical_to_keras(mesonet, reference, images):
    names, x = images
    nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    for i, name in enumerate(names):
        digest = hashlib.sha256(np.ascontiguousarray(nhwc[i]).tobytes()).hexdigest()
        assert digest == reference["_inputs"][name]["input_float32_sha256"], name


@pytest.mark.parametrize("wfile", WEIGHTS)
def test_port_reproduces_keras_probabilities(mesonet, reference, images, wfile):
    names, x = images
    model = load_pretrained(mesonet / "weights" / wfile)
    got = p_real(model, x)
    want = np.array([reference[wfile][n] for n in names])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the two-logit interface keeps the probabilities: p_fake = 1 - P(real), logits = [z, 0]
    with torch.no_grad():
        logits = model(x)
    assert torch.all(logits[:, 1] == 0)
    np.testing.assert_allclose(torch.softmax(logits, 1)[:, 1].double().numpy(), 1 - want, atol=1e-5)


def test_architecture_is_read_from_the_file(mesonet):
    assert detect_architecture(mesonet / "weights" / "Meso4_DF.h5") == "meso4"
    assert detect_architecture(mesonet / "weights" / "MesoInception_F2F.h5") == "mesoinception4"


def _naive_shape_loader(model, path):
    """What a loader without names does: h5 groups in h5py's iteration order, each into the
    first still-empty layer of the port with the same converted shape."""
    layers = model.net.keras_layers()
    free = {k: list(v) for k, v in layers.items()}
    with h5py.File(path, "r") as f:
        for gname in f:  # h5py iterates alphabetically: conv2d_1, conv2d_10, ..., conv2d_2, ...
            g = f[gname]
            arrays = [np.asarray(g[w]) for w in g.attrs.get("weight_names", [])]
            kind = gname.rsplit("_", 1)[0]
            if not arrays or kind not in free:
                continue
            if kind == "batch_normalization":
                target = next(m for m in free[kind] if m.weight.shape[0] == arrays[0].shape[0])
                vals = [torch.from_numpy(a) for a in arrays]
                target.weight.data, target.bias.data = vals[0], vals[1]
                target.running_mean.data, target.running_var.data = vals[2], vals[3]
            else:
                k = arrays[0].transpose(3, 2, 0, 1) if kind == "conv2d" else arrays[0].T
                target = next(m for m in free[kind] if tuple(m.weight.shape) == k.shape)
                target.weight.data = torch.from_numpy(np.ascontiguousarray(k))
                target.bias.data = torch.from_numpy(arrays[1])
            free[kind].remove(target)
    return model.eval()


def test_loading_by_shape_or_position_would_fail_for_mesoinception(mesonet, reference, images):
    path = mesonet / "weights" / "MesoInception_DF.h5"
    w = read_keras_weights(path)["conv2d"]
    shapes = {n: a[0].shape for n, a in w.items()}
    # the ambiguity: same-shaped pairs inside each inception block
    assert shapes["conv2d_2"] == shapes["conv2d_4"] and shapes["conv2d_3"] == shapes["conv2d_5"]
    # the file lists layers branch by branch, not in creation order: position is not creation order
    with h5py.File(path, "r") as f:
        listed = [n.decode() for n in f.attrs["layer_names"] if n.decode().startswith("conv2d_")]
    assert listed != sorted(listed, key=lambda n: int(n.split("_")[1]))
    names, x = images
    want = np.array([reference["MesoInception_DF.h5"][n] for n in names])
    naive = p_real(_naive_shape_loader(build("mesoinception4"), path), x)
    assert np.max(np.abs(naive - want)) > 1e-2  # shapes fit, numbers do not
    by_name_model = load_keras_weights(build("mesoinception4"), path)
    by_name = p_real(by_name_model, x)
    assert np.max(np.abs(by_name - want)) <= 1e-5
    # swapping the same-shaped pairs (x2 <-> x3 branches) loads without any shape error ...
    inc = by_name_model.net.inc1
    for a, b in ((inc.x2a, inc.x3a), (inc.x2b, inc.x3b)):
        wa, ba = a.conv.weight.data.clone(), a.conv.bias.data.clone()
        a.conv.weight.data.copy_(b.conv.weight.data)
        a.conv.bias.data.copy_(b.conv.bias.data)
        b.conv.weight.data.copy_(wa)
        b.conv.bias.data.copy_(ba)
    # ... but the 3x3 convolutions then run with the other dilation: the outputs move
    assert np.max(np.abs(p_real(by_name_model, x) - want)) > 1e-3


def test_meso4_leakyrelu_and_keras_flatten_matter(mesonet, reference, images):
    names, x = images
    model = load_pretrained(mesonet / "weights" / "Meso4_DF.h5")
    model.net.head.negative_slope = 1.0  # drop the LeakyReLU: gives the reference's alternative
    alt = np.array([reference["_meso4_without_leakyrelu"]["Meso4_DF.h5"][n] for n in names])
    np.testing.assert_allclose(p_real(model, x), alt, atol=1e-5)
    model.net.head.negative_slope = 0.1
    model.net.head.keras_flatten = False  # torch's NCHW flatten order
    want = np.array([reference["Meso4_DF.h5"][n] for n in names])
    assert np.max(np.abs(p_real(model, x) - want)) > 1e-3


def test_keras_bn_epsilon():
    for name in ("meso4", "mesoinception4"):
        bns = [m for m in build(name).modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(bns) == 4 and all(m.eps == 1e-3 for m in bns)


def test_wrong_files_give_clear_errors(tmp_path, mesonet):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="HDF5"):
        load_pretrained(junk)
    with pytest.raises(ValueError, match="expected mesoinception4"):
        load_keras_weights(build("mesoinception4"), mesonet / "weights" / "Meso4_DF.h5")
    with pytest.raises(ValueError, match="meso4 or mesoinception4"):
        load_keras_weights(build("resnet34", 64), mesonet / "weights" / "Meso4_DF.h5")


def test_non_keras_hdf5_is_rejected(tmp_path):
    p = tmp_path / "plain.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="layer_names"):
        load_pretrained(p)
