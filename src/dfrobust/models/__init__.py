"""Deepfake detectors behind one interface.

Every detector built by :func:`build` is a :class:`Detector`: it takes a float batch in
**[0, 1], NCHW, RGB** at its own ``input_size`` and returns **two logits (real, fake)**;
normalisation happens inside; ``p_fake = softmax(logits)[:, 1]``. Wrong inputs (range,
channels, spatial size, rank) raise a one-line ``ValueError`` naming what was expected.

=================  ==========================================  ==========  ============
name               architecture                                input size  normalisation
=================  ==========================================  ==========  ============
``meso4``          Meso4 (Afchar et al. 2018), port of Keras   256         none (x/255)
``mesoinception4`` MesoInception4, port of Keras               256         none (x/255)
``resnet34``       torchvision ResNet-34, 2-class head         256         ImageNet mean/std
``xception``       timm ``legacy_xception``, 2-class head      299         mean/std 0.5
``meso4_adv``      Meso4, adversarially trained (PGD, L∞)      256         none (x/255)
``meso4_ibp``      Meso4, certifiably trained (IBP, L∞)        256         none (x/255)
=================  ==========================================  ==========  ============

The robust detectors are the Meso4 architecture trained with a robust objective
(:data:`dfrobust.models.train.OBJECTIVES`), for the radius ``train_eps`` of their training settings.

MesoNet's single sigmoid unit (P(real) in the published weights) is exposed as logits
``[z, 0]``: ``softmax([z, 0])[0] = sigmoid(z)``, so the Keras probabilities are unchanged.
Nothing is ever downloaded: ResNet-34 and Xception start from random weights unless a
*local* ImageNet state-dict file is given (``init_weights=``); their heads are always new.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .gate import DEFAULT_MIN_VAL_AUC, analysed_models, gate_rule, quality_gate, study_gate
from .meso import Meso4Net, MesoInception4Net
from .published import PUBLISHED_DETECTORS

MODELS = ("meso4", "mesoinception4", "resnet34", "xception", "meso4_adv", "meso4_ibp")
#: every detector name a chapter accepts: the architectures it trains, then the published MesoNet weights
#: (:mod:`dfrobust.models.published`: ``meso4_df`` ... resolved against the ``weights`` folder)
DETECTORS = MODELS + tuple(PUBLISHED_DETECTORS)

#: name -> (default input size, smallest accepted input size, mean, std, description)
SPECS: dict[str, dict] = {
    "meso4": dict(input_size=256, min_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                  source="Afchar et al. 2018, port of the authors' Keras classifiers.py"),
    "mesoinception4": dict(input_size=256, min_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                           source="Afchar et al. 2018, port of the authors' Keras classifiers.py"),
    "resnet34": dict(input_size=256, min_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     source="He et al. 2016, torchvision.models.resnet34"),
    "xception": dict(input_size=299, min_size=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                     source="Chollet 2017, timm legacy_xception"),
    # robust detectors (issue 25): the Meso4 architecture trained with a robust objective (models.train.OBJECTIVES)
    "meso4_adv": dict(input_size=256, min_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), arch="meso4",
                      objective="pgd", source="Meso4, adversarially trained (PGD in the L∞ ball, ε ramped)"),
    "meso4_ibp": dict(input_size=256, min_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), arch="meso4",
                      objective="ibp", source="Meso4, certifiably trained (IBP worst-case loss, ε ramped)"),
}

# head parameters that a local ImageNet state dict must not overwrite
_HEAD_PREFIX = {"resnet34": "fc.", "xception": "fc."}


def _autocast_on() -> bool:
    """Whether mixed precision (CUDA or CPU autocast) is active: then input and weight dtypes may differ."""
    try:
        return torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu")
    except TypeError:  # older torch: no device argument
        return torch.is_autocast_enabled()


class Detector(nn.Module):
    """A detector: validates its input, normalises, runs ``net`` and returns (real, fake) logits.

    Attributes: ``name``, ``input_size``, ``net`` (the wrapped network), ``single_logit``
    (MesoNet: ``net`` returns the sigmoid logit ``z`` of P(real), exposed as ``[z, 0]``),
    ``check_inputs`` (set False to skip the range check in hot loops that guarantee it),
    ``cam_layer`` (the last convolutional block, for Grad-CAM).
    """

    def __init__(self, name: str, net: nn.Module, input_size: int, mean, std, *, single_logit: bool):
        super().__init__()
        self.name = name
        self.input_size = int(input_size)
        self.net = net
        self.single_logit = single_logit
        self.check_inputs = True
        self._normalise = any(m != 0 for m in mean) or any(s != 1 for s in std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def cam_layer(self) -> nn.Module:
        if isinstance(self.net, (Meso4Net, MesoInception4Net)):
            return self.net.bn4
        if self.name == "resnet34":
            return self.net.layer4[-1]
        return self.net.act4

    def validate(self, x: torch.Tensor) -> None:
        """Raise a one-line ValueError unless ``x`` is a float [N, 3, S, S] batch in [0, 1], S = input_size,
        of the model's dtype (float64 into a float32 model is refused, naming the conversion)."""
        s = self.input_size
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"{self.name}: input must be a float tensor [N, 3, {s}, {s}] in [0, 1], "
                             f"got {type(x).__name__} {getattr(x, 'dtype', '')}")
        want = next((p.dtype for p in self.net.parameters()), x.dtype)
        if x.dtype != want and not _autocast_on():  # float64 would reach a raw torch dtype error
            raise ValueError(f"{self.name}: input dtype {x.dtype} differs from the model's {want}; "
                             f"convert it first (x.to({want})), expected a {want} tensor [N, 3, {s}, {s}] in [0, 1]")
        if x.dim() != 4:
            raise ValueError(f"{self.name}: input must be NCHW [N, 3, {s}, {s}], got shape {tuple(x.shape)}")
        if x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected 3 (RGB) channels in NCHW [N, 3, {s}, {s}], "
                             f"got {x.shape[1]} (shape {tuple(x.shape)})")
        if x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"{self.name}: expected spatial size {s}x{s} (the model's input_size), "
                             f"got {x.shape[2]}x{x.shape[3]}; resize first (dfrobust.data.manifest.load_images)")
        if self.check_inputs and x.numel():
            lo, hi = torch.aminmax(x.detach())
            lo, hi = float(lo), float(hi)
            if lo < -1e-6 or hi > 1 + 1e-6 or lo != lo or hi != hi:
                raise ValueError(f"{self.name}: input values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.validate(x)
        if self._normalise:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = self.net(x)
        if self.single_logit:
            return torch.stack([out, torch.zeros_like(out)], dim=1)
        return out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}"


def check_name(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"model={name!r}: unknown; expected one of {', '.join(MODELS)}")
    return name


def build(name: str, input_size: int | None = None, *, init_weights: str | os.PathLike | None = None) -> Detector:
    """Build detector ``name`` (random init) at ``input_size`` (default: its published size).

    ``init_weights``: optional *local* ImageNet state-dict file for ``resnet34``/``xception``
    (e.g. torchvision's ``resnet34-b627a593.pth`` or timm's ``xception-43020ad28.pth``); the
    2-class head stays freshly initialised. Nothing is downloaded.
    """
    check_name(name)
    spec = SPECS[name]
    size = spec["input_size"] if input_size is None else input_size
    if isinstance(size, bool) or not isinstance(size, int) or size < spec["min_size"]:
        raise ValueError(f"input_size={input_size!r} for {name}: expected an int >= {spec['min_size']}")
    if spec.get("arch", name) == "meso4":
        net, single = Meso4Net(size), True
    elif name == "mesoinception4":
        net, single = MesoInception4Net(size), True
    elif name == "resnet34":
        import torchvision

        net, single = torchvision.models.resnet34(weights=None, num_classes=2), False
    else:
        import timm

        net, single = timm.create_model("legacy_xception", pretrained=False, num_classes=2), False
    if init_weights is not None:
        _load_local_init(name, net, init_weights)
    return Detector(name, net, size, spec["mean"], spec["std"], single_logit=single)


def _load_local_init(name: str, net: nn.Module, path: str | os.PathLike) -> None:
    if name not in _HEAD_PREFIX:
        raise ValueError(f"init_weights for {name}: only resnet34 and xception take a local ImageNet init; "
                         "MesoNet weights load with dfrobust.models.keras_h5.load_pretrained")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_weights={str(path)!r}: no such file; expected a local ImageNet "
                                f"state dict for {name} (nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"init_weights={str(path)!r}: cannot read ({type(exc).__name__}); "
                         "expected a torch state dict") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    head = _HEAD_PREFIX[name]
    body = {k: v for k, v in state.items() if not k.startswith(head)}
    own = net.state_dict()
    bad = [k for k, v in body.items() if k not in own or own[k].shape != v.shape]
    if bad or not body:
        raise ValueError(f"init_weights={str(path)!r}: not an ImageNet state dict of {name} "
                         f"({len(bad)} unexpected or mis-shaped keys, e.g. {bad[:2]})")
    net.load_state_dict(body, strict=False)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def architecture_table(sizes: dict[str, int] | None = None):
    """A ``pandas.DataFrame``: name, source, input size, normalisation, trainable parameters.

    ``sizes`` maps a model to the input size it is used at (defaults to the published size);
    parameters are counted at the published size and at the used one.
    """
    import pandas as pd

    rows = []
    for name in MODELS:
        spec = SPECS[name]
        used = (sizes or {}).get(name, spec["input_size"])
        rows.append({
            "model": name,
            "source": spec["source"],
            "input size (published)": spec["input_size"],
            "parameters (published size)": count_parameters(build(name)),
            "input size (this run)": used,
            "parameters (this run)": count_parameters(build(name, used)),
            "normalisation": "none" if spec["std"] == (1.0, 1.0, 1.0)
            else f"mean {spec['mean']}, std {spec['std']}",
        })
    return pd.DataFrame(rows)


__all__ = ["MODELS", "DETECTORS", "SPECS", "Detector", "build", "check_name", "count_parameters", "architecture_table",
           "quality_gate", "study_gate", "gate_rule", "analysed_models", "DEFAULT_MIN_VAL_AUC"]
