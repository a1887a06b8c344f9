"""The MesoNet authors' published Keras weights, read with h5py (no TensorFlow), mapped BY NAME.

Why by hand: the files are Keras 2.1.5 *weights-only* HDF5 files (no model config), so
neither Keras' own loader (needs TensorFlow and the model code) nor any converter applies;
h5py reads the arrays and this module maps them onto :mod:`dfrobust.models.meso`.

Mapping by name: Keras names layers ``<kind>_<n>`` with one counter per kind in creation
order (the Meso4 files hold ``conv2d_5..8``, ``batch_normalization_5..8``, ``dense_3..4``;
the MesoInception files ``conv2d_1..16`` in the order x1, x2(1x1), x2(3x3), x3(1x1),
x3(3x3, d2), x4(1x1), x4(3x3, d3) per inception block). Groups are sorted by that counter and
assigned to the port's modules in the same creation order. The file's ``layer_names`` order
(topological, branch by branch) and shapes are *not* used: MesoInception has two pairs of
same-shaped convolutions per block that a shape- or position-based loader can swap.

Conversions: conv kernel ``(kh, kw, in, out)`` → ``(out, in, kh, kw)``; dense kernel
``(in, out)`` → ``(out, in)`` (no permutation needed because the port flattens NHWC);
batch-norm ``gamma, beta, moving_mean, moving_variance`` → ``weight, bias, running_mean,
running_var`` with Keras' ``eps = 1e-3``.

The published models output **P(real)**; preprocessing is :func:`keras_preprocess` (PIL
``NEAREST`` resize to 256x256, ``x * (1/255)`` in float32, no mean/std).

Integrity: :data:`PUBLISHED` holds the SHA-256 of the four weight files of the authors' repository
(github.com/DariusAf/MesoNet, ``weights/``). A file bearing one of those names whose digest differs
(bit rot, a partial download, an edit) is refused in one line before any layer is read — a
same-size file with flipped bits otherwise loads and gives logits in the thousands. A file of any
other name still loads, with a warning that it could not be verified.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from . import Detector, build

#: file name -> SHA-256 of the published MesoNet weights (facts about public files; the files are not shipped)
PUBLISHED: dict[str, str] = {
    "Meso4_DF.h5": "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5",
    "Meso4_F2F.h5": "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7",
    "MesoInception_DF.h5": "234586d40058e76ef8b6f27ca4b63c06e31c2a5a69c0d8ba6f30b1468ab7bafa",
    "MesoInception_F2F.h5": "d4533ac8a3197dc35c47405d23d99e888c1d0135e267e03540c7451feaccff3f",
}


class UnverifiedWeightsWarning(UserWarning):
    """A weights file that is not one of the published MesoNet files (loaded anyway)."""


def verify_weights(path: str | os.PathLike) -> str:
    """Check ``path`` against :data:`PUBLISHED`; returns ``'verified'`` or ``'unverified'``.

    A published name with another digest is a one-line ValueError; an unknown file (name and
    digest) warns with :class:`UnverifiedWeightsWarning` and is accepted.
    """
    import hashlib
    import warnings

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras weights file {path} does not exist; expected a MesoNet .h5 file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest in PUBLISHED.values():
        return "verified"
    if path.name in PUBLISHED:
        raise ValueError(f"{path}: SHA-256 {digest[:16]}... differs from the published {path.name} "
                         f"({PUBLISHED[path.name][:16]}...); the file is damaged or modified - fetch it again "
                         "from the MesoNet authors' repository")
    warnings.warn(f"{path}: not one of the published MesoNet weight files ({', '.join(PUBLISHED)}); "
                  "loading it without verification", UnverifiedWeightsWarning, stacklevel=3)
    return "unverified"


_KINDS = ("conv2d", "batch_normalization", "dense")
_NAME = re.compile(r"^(conv2d|batch_normalization|dense)_(\d+)$")


def _open(path: str | os.PathLike):
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras weights file {path} does not exist; expected a MesoNet .h5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: cannot open as HDF5 ({exc}); expected a Keras weights .h5 file") from None
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in root.attrs:
        f.close()
        raise ValueError(f"{path}: no 'layer_names' attribute; expected a Keras (2.x) weights .h5 file")
    return f, root


def _layer_weights(root, layer: str) -> list[np.ndarray]:
    g = root[layer]
    return [np.asarray(g[_decode(w)], dtype=np.float32) for w in g.attrs.get("weight_names", [])]


def _decode(s) -> str:
    return s.decode("utf8") if isinstance(s, bytes) else str(s)


def read_keras_weights(path: str | os.PathLike) -> dict[str, dict[str, list[np.ndarray]]]:
    """``{kind: {layer_name: [arrays]}}`` for the conv/bn/dense layers of a Keras weights file,
    each kind ordered by Keras' naming counter (= creation order)."""
    f, root = _open(path)
    try:
        names = [_decode(n) for n in root.attrs["layer_names"]]
        out: dict[str, dict[str, list[np.ndarray]]] = {k: {} for k in _KINDS}
        for kind in _KINDS:
            matched = sorted((int(m.group(2)), n) for n in names
                             if (m := _NAME.match(n)) and m.group(1) == kind)
            for _, n in matched:
                out[kind][n] = _layer_weights(root, n)
        return out
    finally:
        f.close()


def detect_architecture(path: str | os.PathLike) -> str:
    """``mesoinception4`` when the file holds 16 convolutions, ``meso4`` when it holds 4."""
    n_conv = len(read_keras_weights(path)["conv2d"])
    arch = {4: "meso4", 16: "mesoinception4"}.get(n_conv)
    if arch is None:
        raise ValueError(f"{path}: {n_conv} conv2d layers; expected 4 (Meso4) or 16 (MesoInception4)")
    return arch


def _assign(module: torch.nn.Module, kind: str, name: str, arrays: list[np.ndarray], path) -> None:
    def put(param: torch.Tensor, value: np.ndarray, what: str) -> None:
        t = torch.from_numpy(np.ascontiguousarray(value))
        if tuple(param.shape) != tuple(t.shape):
            raise ValueError(f"{path}: layer {name} {what} has shape {tuple(t.shape)} after conversion; "
                             f"the port expects {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(t)

    if kind == "conv2d":
        kernel, bias = arrays
        put(module.weight, kernel.transpose(3, 2, 0, 1), "kernel")
        put(module.bias, bias, "bias")
    elif kind == "dense":
        kernel, bias = arrays
        put(module.weight, kernel.T, "kernel")
        put(module.bias, bias, "bias")
    else:
        gamma, beta, mean, var = arrays
        put(module.weight, gamma, "gamma")
        put(module.bias, beta, "beta")
        put(module.running_mean, mean, "moving_mean")
        put(module.running_var, var, "moving_variance")


def load_keras_weights(model: Detector, path: str | os.PathLike, *, verify: bool = True) -> Detector:
    """Copy the weights of a MesoNet Keras ``.h5`` file into ``model`` (a meso4/mesoinception4
    :class:`Detector` at input size 256), mapping layers by name. Returns ``model`` in eval mode."""
    if getattr(model, "name", None) not in ("meso4", "mesoinception4"):
        raise ValueError(f"model {getattr(model, 'name', type(model).__name__)!r}: Keras weights load only "
                         "into meso4 or mesoinception4")
    if verify:
        verify_weights(path)
    arch = detect_architecture(path)
    if arch != model.name:
        raise ValueError(f"{path}: holds {arch} weights; expected {model.name}")
    weights = read_keras_weights(path)
    targets = model.net.keras_layers()
    for kind in _KINDS:
        layers = list(weights[kind].items())
        if len(layers) != len(targets[kind]):
            raise ValueError(f"{path}: {len(layers)} {kind} layers; {model.name} expects {len(targets[kind])}")
        for (name, arrays), module in zip(layers, targets[kind]):
            _assign(module, kind, name, arrays, path)
    return model.eval()


def load_pretrained(path: str | os.PathLike) -> Detector:
    """Build the right MesoNet (from the file's layers) at 256x256 and load the published weights.

    The returned detector's logits are ``[z, 0]`` with ``sigmoid(z) = P(real)`` of the Keras model.
    The file is checked against the published digests first (:func:`verify_weights`).
    """
    verify_weights(path)
    return load_keras_weights(build(detect_architecture(path), 256), path, verify=False)


def keras_preprocess(paths, size: int = 256) -> torch.Tensor:
    """The authors' Keras preprocessing: PIL open → RGB → NEAREST resize to ``size`` (only when
    the size differs) → float32 ``x * (1/255)`` → NCHW tensor in [0, 1]."""
    from PIL import Image

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    arrays = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"image {p} does not exist")
        with Image.open(p) as img:
            img = img.convert("RGB") if img.mode != "RGB" else img
            if img.size != (size, size):
                img = img.resize((size, size), Image.NEAREST)
            x = np.asarray(img, dtype=np.float32)
        x = x * np.float32(1.0 / 255.0)
        arrays.append(x)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def p_real(model: Detector, images: torch.Tensor) -> np.ndarray:
    """P(real) of a MesoNet detector, as the Keras model's sigmoid output."""
    with torch.no_grad():
        return torch.softmax(model.eval()(images), dim=1)[:, 0].double().numpy()


def reference_check(root: str | os.PathLike | None = None):
    """Compare the port with ``keras_reference.json`` of the shared MesoNet folder.

    Returns a ``pandas.DataFrame`` (weights, image, keras P(real), port P(real), abs diff), or
    None when the folder is absent. ``root``: the ``mesonet`` folder (default: the shared realdata).
    """
    import json

    import pandas as pd

    if root is None:
        from ..core.paths import shared_realdata

        base = shared_realdata()
        if base is None or not (base / "mesonet").is_dir():
            return None
        root = base / "mesonet"
    root = Path(root)
    ref = json.loads((root / "keras_reference.json").read_text())
    rows = []
    for wfile, per_image in ref.items():
        if wfile.startswith("_"):
            continue
        model = load_pretrained(root / "weights" / wfile)
        images = list(per_image)
        probs = p_real(model, keras_preprocess([root / im for im in images]))
        for im, pk, pp in zip(images, per_image.values(), probs):
            rows.append({"weights": wfile, "image": im, "keras_p_real": float(pk), "port_p_real": float(pp),
                         "abs_diff": abs(float(pk) - float(pp))})
    return pd.DataFrame(rows)
