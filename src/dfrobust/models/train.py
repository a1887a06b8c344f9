"""Seeded training of the detectors on a manifest, with cached checkpoints and a metrics record.

:func:`get_trained` is the one entry point (the CLI's ``dfrobust train`` and the notebooks call
it): it trains ``name`` on the manifest's ``train`` split, early-stops on the ``val`` split's
AUC (splits are by identity, built by the data module), evaluates on ``test`` overall, per
demographic group and per manipulation, and caches the checkpoint and its record under
:func:`dfrobust.core.paths.checkpoints_dir` keyed by (architecture, data fingerprint,
hyper-parameters, seed; for a robust detector warm-started from a standard one, ``warm_start``, also
the digest of the checkpoint it starts from). A second call with the same key loads the checkpoint
(``torch.load(weights_only=True)``) instead of training.

Reproducibility: the same seed, data and hyper-parameters give identical checkpoints on the
same CPU. The torch thread count changes the summation order (and early stopping can then keep
another epoch), so it is a hyper-parameter: :func:`fit` trains with ``threads`` threads whatever
the caller's setting (and restores it), and the cache key holds the number.

Training is plain PyTorch: SGD with Nesterov momentum or AdamW, a warm-up + cosine ("one-cycle")
learning-rate schedule stepped per batch, cross-entropy with label smoothing on the two logits,
random horizontal flips drawn from a seeded generator, batch-norm statistics re-estimated on
training images (``torch.optim.swa_utils.update_bn``) before every validation so that
evaluation-mode batch-norm does not use running averages that lag the weights, bf16/fp16
autocast only on CUDA. The loop is a few lines, so a trainer framework would add a dependency
without removing code. Metrics use scikit-learn.

Hyper-parameters: the study's per-profile values live in the ``training:`` block of
``notebooks/study.yml`` (:func:`study_hparams`), the one place the book's values are written;
:data:`DEFAULTS` fill whatever it (or a caller outside the project) leaves unset, and
:func:`resolve_hparams` checks and resolves them. Each trained detector's record keeps the
validation AUC of the weights kept (``val_auc_best``), which :func:`dfrobust.models.quality_gate`
reads to exclude near-chance detectors from the later chapters.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import reprlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr

from . import MODELS, Detector, build, check_name

CHECKPOINT_FORMAT = "dfrobust-checkpoint-1"
TRAIN_CODE_VERSION = 3  # bump when the training loop changes results, to invalidate caches

#: Library defaults for direct use: any key that neither the study spec's ``training:`` block
#: (``notebooks/study.yml``, per profile and detector) nor the caller sets. ``input_size`` None:
#: the detector's published size; ``threads`` None: torch's current thread count (resolved, so
#: the cache key holds the number that was used).
DEFAULTS: dict[str, Any] = dict(
    input_size=None, epochs=10, batch_size=32, optimizer="adamw", lr=1e-3, momentum=0.9, weight_decay=1e-4,
    schedule="onecycle", warmup=0.25, label_smoothing=0.1, patience=3, bn_recalib=512, augment=True,
    max_train=None, init_weights=None, amp=True, channels_last=False, threads=None)

#: what each key means (the models chapter prints it next to the values)
HPARAM_DOC: dict[str, str] = {
    "input_size": "training/evaluation input size in px (None: the published size)",
    "epochs": "maximum passes over the training images",
    "batch_size": "images per optimisation step",
    "optimizer": "sgd (Nesterov momentum) or adamw",
    "lr": "peak learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "decoupled (AdamW) or L2 (SGD) weight decay on weights (not on biases/batch-norm)",
    "schedule": "onecycle (linear warm-up, then cosine decay to lr/1000) or constant",
    "warmup": "fraction of the steps spent warming up (onecycle)",
    "label_smoothing": "cross-entropy label smoothing",
    "patience": "epochs without a validation-AUC gain before stopping (keep it < epochs)",
    "bn_recalib": "training images used to re-estimate batch-norm statistics before each validation (0: off)",
    "augment": "random horizontal flips",
    "max_train": "cap on training images, stratified by label (None: all)",
    "init_weights": "local ImageNet state dict for resnet34/xception (None: random init)",
    "amp": "bf16/fp16 autocast (CUDA only)",
    "channels_last": "channels-last memory format during training",
    "threads": "torch CPU threads while training (results depend on it; None: the current setting)",
}

_CHOICES = {"optimizer": ("sgd", "adamw"), "schedule": ("onecycle", "constant")}

#: Robust training (issue 25): what a robust detector (``SPECS[name]["objective"]`` not "standard") adds to
#: :data:`DEFAULTS`. Only robust detectors take these keys, so the standard detectors' cache keys are unchanged.
ROBUST_DEFAULTS: dict[str, Any] = dict(train_eps=1 / 255, eps_ramp=0.5, robust_weight=0.5, attack_steps=5)
HPARAM_DOC.update({
    "train_eps": "L-inf radius the detector is trained for (robust detectors)",
    "eps_ramp": "fraction of the steps over which the training radius and the robust loss's weight ramp up from 0",
    "robust_weight": "weight of the robust loss (PGD or IBP worst case) against the clean loss, after the ramp",
    "attack_steps": "PGD steps of the adversarial examples trained on (adversarial training)",
    "warm_start": "robust detectors: a standard detector of the same architecture whose trained checkpoint (same "
                  "profile, seed, data and input size) the robust training starts from (unset: random init)",
})
#: optional robust keys: in the resolved values (and so the cache key) only when set, so the robust detectors that
#: do not use them keep their cache keys
ROBUST_OPTIONAL = ("warm_start",)

#: objective name -> ``loss(model, x, y, *, eps, seed, hp) -> tensor``: the robust part of the training loss (the
#: worst case, or an attack's estimate of it, over the L-inf ball of radius eps). The homes that own the
#: searches register them (``dfrobust.attacks``: "pgd", ``dfrobust.certify``: "ibp"), as they sit above models.
OBJECTIVES: dict[str, Any] = {}


def register_objective(name: str, loss) -> None:
    """Register a robust training objective (see :data:`OBJECTIVES`)."""
    OBJECTIVES[name] = loss


def _objective(name: str):
    from . import SPECS

    kind = SPECS[name].get("objective", "standard")
    if kind != "standard" and kind not in OBJECTIVES:
        home = {"pgd": "dfrobust.attacks", "ibp": "dfrobust.certify"}.get(kind, "the home that defines it")
        raise ValueError(f"model={name!r}: its training objective {kind!r} is not registered; import {home} "
                         "(it registers it) before training")
    return kind


def study_hparams(profile: str, name: str | None = None) -> dict[str, Any]:
    """The study spec's training hyper-parameters for ``profile`` (``common`` merged under ``name``'s).

    Read from ``settings.training`` in ``notebooks/study.yml`` (:mod:`dfrobust.core.profiles`, the
    single source of truth for the book's values); ``{}`` when no study spec can be found (library
    use outside the project), so :data:`DEFAULTS` apply. ``name=None``: ``{detector: values}``.
    """
    from ..core.profiles import check_profile, load_spec

    check_profile(profile)
    try:
        training = (load_spec().get("settings") or {}).get("training") or {}
    except (ValueError, FileNotFoundError):  # no study spec: library use outside the project
        training = {}
    block = dict(training.get(profile) or {})
    unknown = sorted(set(block) - set(MODELS) - {"common"})
    if unknown:
        raise ValueError(f"study.yml: settings.training.{profile} names {unknown}; expected 'common' or some of "
                         f"{', '.join(MODELS)}")
    common = dict(block.get("common") or {})
    if name is None:
        return {m: {**common, **dict(block.get(m) or {})} for m in MODELS}
    check_name(name)
    return {**common, **dict(block.get(name) or {})}


def resolve_hparams(name: str, profile: str = "quick", overrides: dict[str, Any] | None = None, *,
                    hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULTS`, then ``hparams`` (default: :func:`study_hparams` of ``profile``), then
    ``overrides``; every value checked (one-line ValueError naming it) and ``None`` sizes/threads resolved."""
    from ..core.profiles import check_profile

    from . import SPECS

    check_name(name)
    check_profile(profile)
    overrides = dict(overrides or {})
    base = study_hparams(profile, name) if hparams is None else dict(hparams)
    objective = SPECS[name].get("objective", "standard")
    hp = dict(DEFAULTS) if objective == "standard" else dict(DEFAULTS, **ROBUST_DEFAULTS)
    for where, values in (("hparams", base), ("override", overrides)):
        values = dict(values)
        if values.pop("objective", objective) != objective:  # resolved hparams passed back in carry it
            raise ValueError(f"objective={dict(base, **overrides)['objective']!r} for {name}: expected "
                             f"{objective!r} (set by the detector's name)")
        known = set(hp) | (set(ROBUST_OPTIONAL) if objective != "standard" else set())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"training {where}(s) {unknown} for {name}: unknown; expected some of {sorted(hp)}")
        hp.update(values)
    if hp["input_size"] is None:
        from . import SPECS

        hp["input_size"] = SPECS[name]["input_size"]
    if hp["threads"] is None:
        hp["threads"] = torch.get_num_threads()
    for key in ("input_size", "epochs", "batch_size", "patience", "threads"):
        v = hp[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key}={v!r} for {name}: expected a positive int")
    for key in ("lr", "weight_decay", "momentum", "label_smoothing", "warmup"):
        v = hp[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"{key}={v!r} for {name}: expected a non-negative number")
    for key in ("momentum", "label_smoothing", "warmup"):
        if hp[key] >= 1:
            raise ValueError(f"{key}={hp[key]!r} for {name}: expected a number in [0, 1)")
    for key, choices in _CHOICES.items():
        if hp[key] not in choices:
            raise ValueError(f"{key}={hp[key]!r} for {name}: expected one of {', '.join(choices)}")
    if objective != "standard":
        for key, lo, hi in (("train_eps", 0, 1), ("eps_ramp", 0, 1), ("robust_weight", 0, 1)):
            v = hp[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{key}={v!r} for {name}: expected a number in [{lo}, {hi}]")
        v = hp["attack_steps"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"attack_steps={v!r} for {name}: expected a positive int")
        if hp.get("warm_start", None) is None:
            hp.pop("warm_start", None)
        else:
            arch = SPECS[name].get("arch", name)
            parents = [m for m in MODELS if SPECS[m].get("objective", "standard") == "standard"
                       and SPECS[m].get("arch", m) == arch]
            if hp["warm_start"] not in parents:
                raise ValueError(f"warm_start={hp['warm_start']!r} for {name}: expected one of "
                                 f"{', '.join(parents)} (a standard detector of its architecture) or unset")
        hp["objective"] = objective
    v = hp["bn_recalib"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"bn_recalib={v!r} for {name}: expected an int >= 0 (training images; 0 = off)")
    for key in ("augment", "amp", "channels_last"):
        if not isinstance(hp[key], bool):
            raise ValueError(f"{key}={hp[key]!r} for {name}: expected true or false")
    if hp["max_train"] is not None and (isinstance(hp["max_train"], bool) or not isinstance(hp["max_train"], int)
                                        or hp["max_train"] < 2):
        raise ValueError(f"max_train={hp['max_train']!r}: expected None or an int >= 2")
    if hp["init_weights"] is not None and not Path(hp["init_weights"]).is_file():
        raise FileNotFoundError(f"init_weights={hp['init_weights']!r}: no such local file (nothing is downloaded)")
    return hp


@dataclass
class TrainedDetector:
    """A trained (or cache-loaded) detector and its clean metrics."""

    model: Detector
    input_size: int
    record: xr.Dataset
    checkpoint: Path
    train_time_s: float
    device: str
    cached: bool = False
    hparams: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(model: Detector, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``model`` (state dict + architecture + input size + ``meta`` strings) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "arch": model.name, "input_size": int(model.input_size),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "meta": json.dumps(meta, sort_keys=True, default=str)}
    buf = io.BytesIO()
    # into memory first: torch names the zip's inner folder after the file it writes, so saving to the
    # temporary file directly would bake its random name into the bytes (identical training must give
    # identical checkpoint bytes)
    torch.save(payload, buf)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are shared like any other output
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class CheckpointMismatch(ValueError):
    """A valid checkpoint whose stored metadata is not what the caller expects (another profile, seed, ...)."""


def load_checkpoint(path: str | os.PathLike, name: str | None = None, device: str | torch.device = "cpu", *,
                    expect: Mapping[str, Any] | None = None) -> Detector:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``) into a new detector.

    ``name``: the architecture expected; a checkpoint of another one is a ValueError. ``expect``: metadata
    the checkpoint must have been saved with (e.g. profile, seed, hparams, data_fingerprint: what
    :func:`get_trained` keys its cache on); the first difference is a :class:`CheckpointMismatch` naming it.
    """
    path = Path(path)
    if name is not None:
        check_name(name)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"checkpoint {path} is corrupt or not a torch file ({type(exc).__name__}); "
                         "expected a dfrobust checkpoint; delete it to retrain") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} file; expected one written by "
                         "dfrobust.models.train.save_checkpoint")
    arch = payload.get("arch")
    if name is not None and arch != name:
        raise ValueError(f"checkpoint {path} holds architecture {arch!r}; expected {name!r}")
    if expect:
        try:
            meta = json.loads(payload.get("meta") or "{}")
        except (TypeError, ValueError):
            meta = {}
        for k, v in json.loads(json.dumps(dict(expect), sort_keys=True, default=str)).items():
            if meta.get(k) != v:
                raise CheckpointMismatch(f"checkpoint {path} was saved with {k}={reprlib.repr(meta.get(k))}; "
                                         f"expected {k}={reprlib.repr(v)}")
    model = build(arch, int(payload["input_size"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"checkpoint {path} does not fit {arch} at {payload['input_size']} px: {first}") from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- prediction

def predict_proba(model: torch.nn.Module, images: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
    """``p_fake = softmax(model(x))[:, 1]`` for a [N, 3, S, S] batch in [0, 1], in batches, as numpy [N]."""
    from ..core.device import auto_batch_size

    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a tensor [N, 3, S, S] in [0, 1], got {got}")
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    if batch_size is None:
        batch_size = auto_batch_size(dev, int(getattr(model, "input_size", images.shape[-1])), cpu=64, gpu=512)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected a positive int")
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            logits = model(images[i:i + batch_size].to(dev, non_blocking=True))
            out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


# ----------------------------------------------------------------------------- metrics

def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def clean_metrics(meta: pd.DataFrame, p_fake: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """Accuracy and AUC overall, per demographic group and per manipulation.

    Per group: all test rows of the group. Per manipulation: accuracy on that manipulation's
    rows (for ``none``, the reals); AUC of that manipulation's fakes against all reals.
    """
    y = meta["label"].to_numpy(np.int64)
    pred = (p_fake >= threshold).astype(np.int64)
    rows = [("all", "overall", np.ones(len(y), bool), np.ones(len(y), bool))]
    for g in sorted(set(meta["group"]) - {""}):
        m = (meta["group"] == g).to_numpy()
        rows.append((g, "group", m, m))
    real = (y == 0)
    for man in sorted(set(meta["manipulation"])):
        m = (meta["manipulation"] == man).to_numpy()
        rows.append((man if man not in {r[0] for r in rows} else f"manipulation:{man}", "manipulation",
                     m, m | real if man != "none" else m))
    out = []
    for name, kind, acc_mask, auc_mask in rows:
        out.append({"subset": name, "subset_kind": kind, "n": int(acc_mask.sum()),
                    "n_fake": int(y[acc_mask].sum()),
                    "accuracy": float((pred[acc_mask] == y[acc_mask]).mean()) if acc_mask.any() else float("nan"),
                    "auc": _auc(y[auc_mask], p_fake[auc_mask])})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- data

_REQUIRED = ("path", "label", "split", "group", "manipulation", "identity")


def _check_manifest(manifest: pd.DataFrame) -> None:
    if not isinstance(manifest, pd.DataFrame):
        raise ValueError("manifest must be a pandas.DataFrame (dfrobust.data.get_manifest), "
                         f"got {type(manifest).__name__}")
    missing = [c for c in _REQUIRED if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}; expected at least {list(_REQUIRED)}")
    for split in ("train", "val", "test"):
        labels = set(manifest.loc[manifest["split"] == split, "label"].astype(int))
        if labels != {0, 1}:
            raise ValueError(f"manifest split {split!r} has labels {sorted(labels)}; expected both 0 (real) "
                             "and 1 (fake) in each of train, val and test")


def data_fingerprint(manifest: pd.DataFrame) -> str:
    """Hash of what training sees: paths relative to their common folder, sizes, labels, splits, groups.

    Independent of where the data home lives, so a moved data folder keeps its checkpoints.
    """
    paths = [str(p) for p in manifest["path"]]
    try:
        common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    except ValueError:
        common = ""
    h = hashlib.sha256()
    cols = ["label", "split", "group", "manipulation", "identity"]
    for p, *vals in sorted(zip(paths, *(manifest[c].astype(str) for c in cols))):
        size = os.path.getsize(p) if os.path.isfile(p) else -1
        h.update(json.dumps([os.path.relpath(p, common) if common else p, size, *vals]).encode())
    return h.hexdigest()[:16]


def _load_chunk(df: pd.DataFrame, size: int) -> tuple[torch.Tensor, list[int], list[dict[str, str]]]:
    from ..data.manifest import load_images

    try:
        return load_images(df, size), list(range(len(df))), []
    except (FileNotFoundError, ValueError, OSError):
        pass
    keep, tensors, skipped = [], [], []
    for i in range(len(df)):
        try:
            tensors.append(load_images(df.iloc[[i]], size))
            keep.append(i)
        except (FileNotFoundError, ValueError, OSError) as exc:
            skipped.append({"path": str(df["path"].iloc[i]), "reason": str(exc).splitlines()[0]})
    x = torch.cat(tensors) if tensors else torch.empty((0, 3, size, size))
    return x, keep, skipped


def _load_split(df: pd.DataFrame, size: int, *, as_uint8: bool = False,
                chunk: int = 512) -> tuple[torch.Tensor, pd.DataFrame, list[dict[str, str]]]:
    """Images of ``df`` (chunked); unreadable files are skipped and returned as ``[{path, reason}]``.

    ``as_uint8`` stores the batch as uint8 (x 255, rounded): a quarter of the memory, used for
    the training split, which :func:`fit` converts back to [0, 1] floats batch by batch.
    """
    parts, keep, skipped = [], [], []
    for start in range(0, len(df), chunk):
        x, k, sk = _load_chunk(df.iloc[start:start + chunk], size)
        parts.append(x.mul(255).round_().to(torch.uint8) if as_uint8 else x)
        keep += [start + i for i in k]
        skipped += sk
    dtype = torch.uint8 if as_uint8 else torch.float32
    x = torch.cat(parts) if parts else torch.empty((0, 3, size, size), dtype=dtype)
    return x, df.iloc[keep].reset_index(drop=True), skipped


def _subsample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or len(df) <= n:
        return df
    frac = n / len(df)
    parts = [g.sample(n=max(1, int(round(len(g) * frac))), random_state=seed) for _, g in df.groupby("label")]
    return pd.concat(parts).sort_index()


# ----------------------------------------------------------------------------- training

def cache_key(name: str, fingerprint: str, hp: dict[str, Any], seed: int, parent: str | None = None) -> str:
    """``parent``: the warm start's checkpoint digest (:func:`file_digest`), so a warm-started detector's key
    changes whenever the checkpoint it starts from does (None: no warm start, the key as before)."""
    hp = dict(hp)
    if hp.get("init_weights"):
        p = Path(hp["init_weights"])
        hp["init_weights"] = f"{p.name}:{p.stat().st_size}"
    payload = {"arch": name, "data": fingerprint, "hparams": hp, "seed": int(seed), "code": TRAIN_CODE_VERSION}
    if parent is not None:
        payload["parent"] = parent
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (first 16 hex digits) of a file's bytes: what a warm start's cache key trusts."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    return torch.autocast("cpu", enabled=False), torch.float32


def _make_optimizer(model: torch.nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    # no weight decay on batch-norm/bias parameters (1-d tensors): decaying a BN scale only fights the
    # normalisation that follows it
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["momentum"] > 0)
    return torch.optim.AdamW(groups, lr=hp["lr"])


def _make_schedule(opt: torch.optim.Optimizer, hp: dict[str, Any], total_steps: int):
    """``onecycle``: linear warm-up from lr/25 to ``lr`` over the first ``warmup`` of the steps, then
    cosine decay to lr/1000 at the last step; ``constant``: ``lr`` throughout (returns None).

    The shape of ``torch.optim.lr_scheduler.OneCycleLR`` (without momentum cycling), written as
    a ``LambdaLR`` because OneCycleLR divides by zero when the warm-up is under two steps
    (tiny runs: the quick profile, the tests).
    """
    if hp["schedule"] == "constant" or total_steps < 2:
        return None
    import math

    warm = max(1, int(round(hp["warmup"] * total_steps))) if hp["warmup"] > 0 else 0
    start, final = 1 / 25, 1 / 1000

    def factor(step: int) -> float:
        if step < warm:
            return start + (1 - start) * step / warm
        t = (step - warm) / max(1, total_steps - 1 - warm)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def recalibrate_bn(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> None:
    """Re-estimate every batch-norm layer's running mean/variance on ``x`` (training images, no flips).

    ``torch.optim.swa_utils.update_bn`` resets the statistics and averages them over the batches
    (cumulative, not the 0.1-momentum running average that lags the weights during fast training);
    the weights do not change. ``x``: float in [0, 1] or uint8.
    """
    from torch.optim.swa_utils import update_bn

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return

    def batches():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            if len(xb) < 2:
                continue
            yield (xb.float().div_(255) if xb.dtype == torch.uint8 else xb).to(device)

    was_training = model.training
    with torch.no_grad():
        update_bn(batches(), model, device=None)
    model.train(was_training)


def fit(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
        y_val: torch.Tensor, hp: dict[str, Any], *, seed: int, device: torch.device,
        progress: bool = False) -> dict[str, Any]:
    """Train ``model`` in place; early stopping on val AUC; restore the best epoch's weights.

    The optimiser (``sgd`` with Nesterov momentum, or ``adamw``), the schedule (``onecycle``:
    warm-up then cosine, stepped per batch; or ``constant``), ``label_smoothing`` and
    ``bn_recalib`` (batch-norm statistics re-estimated on up to that many training images
    before every validation, and so before the test) come from ``hp``. Runs with
    ``hp['threads']`` torch threads on CPU (restored afterwards): the thread count changes the
    summation order and so the weights, which is why it is a hyper-parameter (and in the cache key).

    ``x_train``: float in [0, 1] or uint8 (0..255, converted per batch); ``x_val``: float in [0, 1].
    Returns the history: ``train_loss``, ``val_auc``, ``lr`` per epoch, ``best_epoch``,
    ``best_val_auc`` (of the weights kept, with their recalibrated statistics), ``steps``.

    Robust detectors (``hp['objective']`` "pgd" or "ibp", :data:`OBJECTIVES`): the loss is
    ``(1 − w)·clean + w·robust(ε)`` with ε and w ramped linearly from 0 to ``train_eps`` and
    ``robust_weight`` over the first ``eps_ramp`` of the steps; only epochs that end at the full
    radius are candidates for the weights kept.
    """
    from ..core.device import seed_everything

    threads_before = torch.get_num_threads()
    if device.type == "cpu" and hp.get("threads"):
        torch.set_num_threads(int(hp["threads"]))
    try:
        return _fit(model, x_train, y_train, x_val, y_val, hp, gen=seed_everything(seed), device=device,
                    progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _fit(model, x_train, y_train, x_val, y_val, hp, *, gen, device, progress) -> dict[str, Any]:
    model.to(device)
    if hp["channels_last"]:
        model.to(memory_format=torch.channels_last)
    n, bs = len(x_train), hp["batch_size"]
    steps_per_epoch = sum(1 for i in range(0, n, bs) if min(bs, n - i) >= 2)
    opt = _make_optimizer(model, hp)
    sched = _make_schedule(opt, hp, steps_per_epoch * hp["epochs"])
    robust = OBJECTIVES[hp["objective"]] if hp.get("objective", "standard") != "standard" else None
    ramp_steps = max(1, round(float(hp.get("eps_ramp", 0)) * steps_per_epoch * hp["epochs"]))
    ctx_dtype = _autocast(device, hp["amp"])[1]
    scaler = torch.amp.GradScaler("cuda") if ctx_dtype == torch.float16 else None
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=float(hp["label_smoothing"]))
    history: dict[str, Any] = {"train_loss": [], "val_auc": [], "lr": []}
    best_auc, best_state, best_epoch, bad, steps = -np.inf, None, 0, 0, 0
    lr_used = float(opt.param_groups[0]["lr"])
    y_val_np = y_val.numpy()
    # BN statistics come from a fixed, seeded subset of the training images
    n_bn = min(n, int(hp["bn_recalib"] or 0))
    bn_idx = torch.randperm(n, generator=gen)[:n_bn].sort().values if n_bn else None
    for epoch in range(hp["epochs"]):
        model.train()
        perm = torch.randperm(n, generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        total, seen = 0.0, 0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            if len(idx) < 2:  # batch-norm needs two samples
                continue
            xb = x_train[idx]
            if xb.dtype == torch.uint8:
                xb = xb.float().div_(255)
            if hp["augment"]:
                f = flips[idx]
                xb = torch.where(f.view(-1, 1, 1, 1), xb.flip(-1), xb)
            xb, yb = xb.to(device, non_blocking=True), y_train[idx].to(device, non_blocking=True)
            if hp["channels_last"]:
                xb = xb.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            ctx, _ = _autocast(device, hp["amp"])
            with ctx:
                loss = loss_fn(model(xb).float(), yb)
                if robust is not None:  # eps and the robust loss's weight ramp up linearly, then stay
                    ramp = min(1.0, (steps + 1) / ramp_steps)
                    w = float(hp["robust_weight"]) * ramp
                    loss = (1 - w) * loss + w * robust(model, xb, yb, eps=float(hp["train_eps"]) * ramp, seed=steps, hp=hp)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            lr_used = float(opt.param_groups[0]["lr"])
            if sched is not None:
                sched.step()
            steps += 1
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        if bn_idx is not None:
            recalibrate_bn(model, x_train[bn_idx], max(bs, 64), device)
        val_auc = _auc(y_val_np, predict_proba(model, x_val))
        history["train_loss"].append(total / max(seen, 1))
        history["val_auc"].append(val_auc)
        history["lr"].append(lr_used)  # the rate of the epoch's last step
        if progress:
            print(f"  {getattr(model, 'name', 'model')} epoch {epoch + 1}/{hp['epochs']}: "
                  f"loss {total / max(seen, 1):.4f}, val AUC {val_auc:.4f}", flush=True)
        if robust is not None and steps < ramp_steps:  # only weights trained at the full radius are kept
            continue
        if val_auc > best_auc + 1e-6:
            best_auc, best_epoch, bad = val_auc, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            bad += 1
            if bad >= hp["patience"]:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:  # the ramp took every epoch: the last weights are kept
        best_auc, best_epoch = history["val_auc"][-1], len(history["val_auc"]) - 1
    if hp["channels_last"]:
        model.to(memory_format=torch.contiguous_format)
    history["best_epoch"], history["best_val_auc"], history["steps"] = best_epoch, float(best_auc), steps
    return history


def _record(name: str, metrics: pd.DataFrame, history: dict[str, Any], *, hp, profile, seed, device,
            train_time_s, fingerprint, checkpoint: Path, counts: dict[str, int], skipped, synthetic) -> xr.Dataset:
    from ..core.results import provenance

    m = metrics.set_index("subset")

    def var(dim, values, units, long_name):
        return (dim, values, {"units": units, "long_name": long_name})

    ds = xr.Dataset(
        {
            "accuracy": var("subset", m["accuracy"].to_numpy(float), "1",
                            "clean accuracy (threshold 0.5) on the test split"),
            "auc": var("subset", m["auc"].to_numpy(float), "1", "ROC AUC on the test split"),
            "n": var("subset", m["n"].to_numpy(np.int64), "1", "test samples"),
            "n_fake": var("subset", m["n_fake"].to_numpy(np.int64), "1", "fake test samples"),
            "train_loss": var("epoch", np.asarray(history["train_loss"], float), "1", "mean training cross-entropy"),
            "val_auc": var("epoch", np.asarray(history["val_auc"], float), "1", "validation ROC AUC"),
            "train_time_s": var((), float(train_time_s), "s", "training wall time"),
            "best_epoch": var((), int(history["best_epoch"]) + 1, "1", "epoch kept (1-based)"),
            "val_auc_best": var((), float(history["best_val_auc"]), "1",
                                "validation ROC AUC of the weights kept (what the quality gate reads)"),
        },
        coords={"subset": list(m.index), "subset_kind": ("subset", m["subset_kind"].tolist()),
                "epoch": np.arange(1, len(history["train_loss"]) + 1), "model": name},
    )
    attrs = provenance(hp, profile=profile, seed=seed, device=device, wall_time_s=train_time_s,
                       model=name, input_size=int(hp["input_size"]), data_fingerprint=fingerprint,
                       checkpoint=checkpoint.name, synthetic=int(bool(synthetic)),
                       n_train=counts["train"], n_val=counts["val"], n_test=counts["test"],
                       n_skipped=len(skipped), skipped=skipped, n_steps=int(history.get("steps", 0)),
                       objective=hp.get("objective", "standard"), train_eps=float(hp.get("train_eps", 0.0)))
    ds.attrs.update(attrs)
    return ds


def _warm_imports() -> None:
    """Import what the loop imports lazily (sklearn; torch._dynamo via the optimizer) so one-time
    import costs (seconds on a busy CPU) are not counted as training time."""
    import sklearn.metrics  # noqa: F401

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


def get_trained(name: str, manifest: pd.DataFrame, *, profile: str = "quick", seed: int = 0,
                device: str = "auto", progress: bool = False, hparams: dict[str, Any] | None = None,
                parent_hparams: dict[str, Any] | None = None, **overrides: Any) -> TrainedDetector:
    """Train detector ``name`` on ``manifest`` (or load its cached checkpoint) and evaluate it.

    Hyper-parameters: :data:`DEFAULTS`, then ``hparams`` (default: the study spec's
    ``training:`` values for ``profile`` and ``name``, :func:`study_hparams`), then
    ``overrides`` (unknown keys are an error). The checkpoint ``<name>-<profile>-<key>.pt`` and
    its record ``.nc`` live in ``dfrobust.core.paths.checkpoints_dir()``; ``key`` hashes
    architecture, data fingerprint, the *resolved* hyper-parameters (thread count included)
    and seed.

    Warm start (robust detectors, ``warm_start``: a standard detector of the same architecture): that
    detector is got first (trained or loaded from its own cache, with ``parent_hparams``, default its study
    values), its weights are the starting point, and its checkpoint's digest is part of ``key`` and of the
    metadata the cached checkpoint is verified against, so a changed parent retrains the child.
    """
    from ..core.device import describe, pick_device
    from ..core.paths import checkpoints_dir
    from ..core.results import load, save

    hp = resolve_hparams(name, profile, overrides, hparams=hparams)
    _objective(name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r}: expected an int")
    dev = pick_device(device)
    _check_manifest(manifest)
    fingerprint = data_fingerprint(manifest)
    parent = parent_digest = None
    if hp.get("warm_start"):  # the parent first: its checkpoint's bytes enter this detector's key
        parent = get_trained(hp["warm_start"], manifest, profile=profile, seed=seed, device=device,
                             progress=progress, hparams=parent_hparams)
        if parent.input_size != hp["input_size"]:
            raise ValueError(f"warm_start={hp['warm_start']!r} for {name}: it is trained at {parent.input_size} px; "
                             f"expected {name}'s input_size {hp['input_size']} px")
        parent_digest = file_digest(parent.checkpoint)
    key = cache_key(name, fingerprint, hp, seed, parent=parent_digest)
    ckpt = checkpoints_dir() / f"{name}-{profile}-{key}.pt"
    rec_path = ckpt.with_suffix(".nc")
    identity = {"profile": profile, "seed": seed, "hparams": hp, "data_fingerprint": fingerprint}
    if parent_digest is not None:
        identity["warm_start_digest"] = parent_digest
    if ckpt.is_file() and rec_path.is_file():
        try:
            model = load_checkpoint(ckpt, name, dev, expect=identity)
        except CheckpointMismatch as exc:  # another run's checkpoint at this key's path: not this cache entry
            print(f"NOTICE: {exc}; retraining {name} for this key")
        else:
            record = load(rec_path)
            return TrainedDetector(model=model, input_size=model.input_size, record=record, checkpoint=ckpt,
                                   train_time_s=float(record["train_time_s"]), device=str(dev), cached=True,
                                   hparams=hp)

    size = hp["input_size"]
    parts, skipped = {}, []
    for split in ("train", "val", "test"):
        df = manifest[manifest["split"] == split]
        if split == "train":
            df = _subsample(df, hp["max_train"], seed)
        x, kept, sk = _load_split(df, size, as_uint8=(split == "train"))
        skipped += sk
        if set(kept["label"].astype(int)) != {0, 1}:
            raise ValueError(f"split {split!r}: after skipping {len(sk)} unreadable file(s) it lacks a class; "
                             "expected real and fake images")
        parts[split] = (x, torch.tensor(kept["label"].to_numpy(np.int64)), kept)
    if skipped:
        print(f"{name}: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]['path']}: {skipped[0]['reason']}")

    _warm_imports()
    torch.manual_seed(seed)
    model = build(name, size, init_weights=hp["init_weights"])
    if parent is not None:
        model.load_state_dict(parent.model.state_dict())
    t0 = time.perf_counter()
    history = fit(model, parts["train"][0], parts["train"][1], parts["val"][0], parts["val"][1], hp,
                  seed=seed, device=dev, progress=progress)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    train_time = time.perf_counter() - t0
    model.eval()
    p_test = predict_proba(model, parts["test"][0])
    metrics = clean_metrics(parts["test"][2], p_test)
    meta = manifest.attrs.get("meta") or {}
    if "synthetic" in meta:
        synthetic = bool(meta["synthetic"])
    else:
        synthetic = "dataset" in manifest.columns and bool((manifest["dataset"] == "synthetic").all())
    save_checkpoint(model, ckpt, **identity)
    record = _record(name, metrics, history, hp=hp, profile=profile, seed=seed, device=describe(dev),
                     train_time_s=train_time, fingerprint=fingerprint, checkpoint=ckpt,
                     counts={s: len(parts[s][2]) for s in parts}, skipped=skipped, synthetic=synthetic)
    if parent is not None:  # train_time_s is the fine-tune's; the parent's own record holds its time
        record.attrs.update(warm_start_checkpoint=parent.checkpoint.name, warm_start_digest=parent_digest)
    save(record, rec_path)
    return TrainedDetector(model=model, input_size=size, record=record, checkpoint=ckpt,
                           train_time_s=train_time, device=str(dev), cached=False, hparams=hp)


def train_all(manifest: pd.DataFrame, models=MODELS, **kw: Any) -> dict[str, TrainedDetector]:
    """:func:`get_trained` for each name in ``models`` (same keyword arguments)."""
    return {m: get_trained(m, manifest, **kw) for m in models}


def val_auc(td: TrainedDetector) -> float:
    """Validation AUC of the weights a trained detector kept (from its record)."""
    r = td.record
    if "val_auc_best" in r:
        return float(r["val_auc_best"])
    return float(np.nanmax(r["val_auc"].values)) if r.sizes.get("epoch") else float("nan")


def records_table(trained: dict[str, TrainedDetector]) -> pd.DataFrame:
    """Long table of every detector's clean metrics: model, subset, subset_kind, accuracy, auc, n, train_time_s."""
    rows = []
    for name, td in trained.items():
        r = td.record
        for i, s in enumerate(r["subset"].values):
            rows.append({"model": name, "subset": str(s), "subset_kind": str(r["subset_kind"].values[i]),
                         "accuracy": float(r["accuracy"].values[i]), "auc": float(r["auc"].values[i]),
                         "n": int(r["n"].values[i]), "input_size": td.input_size,
                         "val_auc": val_auc(td),
                         "train_time_s": float(td.train_time_s)})
    return pd.DataFrame(rows)


def combined_record(trained: dict[str, TrainedDetector]) -> xr.Dataset:
    """All detectors' clean metrics in one Dataset with a ``model`` dimension (for results/<profile>/models.nc)."""
    parts = []
    for name, td in trained.items():
        keep = [v for v in ("accuracy", "auc", "n", "n_fake", "train_time_s", "val_auc_best") if v in td.record]
        r = td.record[keep].copy()
        r = r.drop_vars("model", errors="ignore").expand_dims(model=[name])
        r["input_size"] = ("model", [td.input_size])
        parts.append(r)
    ds = xr.concat(parts, dim="model", join="outer")
    ds["input_size"].attrs.update(units="px", long_name="training/evaluation input size")
    return ds
