"""The robust Meso4 detectors (issue 25): adversarial (PGD) and certified (IBP) training.

The acceptance toy: on tiny separable images, a Meso4 trained adversarially or with the IBP worst-case loss
keeps a higher robust accuracy (PGD at the training radius) than the same Meso4 trained for clean accuracy,
while still classifying the clean images.
"""

from __future__ import annotations

import pytest
import torch

from dfrobust import attacks, certify  # noqa: F401 - they register the "pgd" and "ibp" objectives
from dfrobust.attacks.gradient import SeededPGD
from dfrobust.models import SPECS, build
from dfrobust.models.train import (DEFAULTS, OBJECTIVES, ROBUST_DEFAULTS, cache_key, fit, get_trained,
                                   predict_proba, resolve_hparams)

torch.set_num_threads(1)
CPU = torch.device("cpu")
SIZE = 32


def _toy(n: int, seed: int, amp: float = 0.15):
    """Per-image colour + noise; fakes (odd rows) add a ±amp checkerboard (a high-frequency artefact)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.35 + 0.3 * torch.rand(n, 3, 1, 1, generator=g) + 0.05 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    y = torch.arange(n) % 2
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).float()
    return (x + amp * y.view(-1, 1, 1, 1) * checker).clamp(0, 1), y


BASE = dict(DEFAULTS, input_size=SIZE, epochs=6, patience=6, batch_size=16, threads=1, amp=False, lr=3e-3,
            bn_recalib=64, channels_last=False)


def _accuracy(model, x, y) -> float:
    return float(((torch.as_tensor(predict_proba(model, x)) >= 0.5).long() == y).float().mean())


def _train(name: str, eps: float, **hp):
    objective = SPECS[name].get("objective", "standard")
    hp = {**BASE, **hp} if objective == "standard" else {**BASE, **ROBUST_DEFAULTS, **hp, "objective": objective,
                                                         "train_eps": eps}
    torch.manual_seed(0)
    model = build(name, SIZE)
    fit(model, *_toy(128, 0), *_toy(64, 1), hp, seed=0, device=CPU)
    return model.eval()


# IBP training needs more, larger steps than the clean task (at 10 epochs, or lr 3e-3, it stays near 0.7 clean)
@pytest.mark.parametrize("name,eps,hp", [("meso4_adv", 0.03, {}),
                                         ("meso4_ibp", 0.03, {"epochs": 20, "patience": 20, "lr": 1e-2})])
def test_robust_training_beats_a_standard_meso4_at_the_training_radius(name, eps, hp):
    x, y = _toy(128, 2)
    ra = {}
    for m in ("meso4", name):
        model = _train(m, eps, **hp)
        adv = SeededPGD(model, eps=eps, alpha=eps / 4, steps=10, seed=1)(x, y)
        ra[m] = (_accuracy(model, x, y), _accuracy(model, adv, y))
    clean, robust = ra[name]
    assert clean >= 0.8, f"{name} did not learn the clean task: {ra}"
    assert robust >= ra["meso4"][1] + 0.2, f"{name} is not more robust than the standard Meso4: {ra}"


def test_robust_detectors_are_registered_and_their_cache_key_holds_objective_and_radius():
    hp = resolve_hparams("meso4_adv", "default")
    assert hp["objective"] == "pgd" and hp["train_eps"] == pytest.approx(1 / 255)
    assert resolve_hparams("meso4_ibp", "default")["objective"] == "ibp"
    # the standard detectors take no robust keys: their resolved values, and so their cached checkpoints, are unchanged
    assert not set(ROBUST_DEFAULTS) & set(resolve_hparams("meso4", "default"))
    with pytest.raises(ValueError, match=r"^training override\(s\) \['train_eps'\] for meso4: unknown"):
        resolve_hparams("meso4", "default", {"train_eps": 0.01})
    keys = {cache_key("meso4_ibp", "f", resolve_hparams("meso4_ibp", "default", {"train_eps": e}), 0)
            for e in (1 / 255, 2 / 255)}
    assert len(keys) == 2
    with pytest.raises(ValueError, match=r"^train_eps=2 for meso4_adv: expected a number in \[0, 1\]$"):
        resolve_hparams("meso4_adv", "default", {"train_eps": 2})


def test_an_unregistered_objective_is_one_line_before_any_data(monkeypatch):
    monkeypatch.delitem(OBJECTIVES, "ibp")
    with pytest.raises(ValueError, match=r"^model='meso4_ibp': its training objective 'ibp' is not registered; "
                                         r"import dfrobust.certify"):
        get_trained("meso4_ibp", manifest=None, profile="quick")   # the manifest is never looked at


def test_the_ibp_loss_is_the_certify_ibp_bound_and_reaches_the_parameters():
    from dfrobust.certify.training import ibp_loss

    x, y = _toy(8, 3)
    model = build("meso4_ibp", SIZE).eval()
    loss = ibp_loss(model, x, y, eps=0.01)
    m_lo = certify.margin_bounds(model, x, 0.01, method="ibp", pred=y, dtype=torch.float32).m_lo
    assert float(loss.detach()) == pytest.approx(float(torch.nn.functional.softplus(-m_lo).mean()), rel=1e-4)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    # in training mode batch-norm uses the batch's statistics, and the running ones are left as they were
    model.train()
    before = [b.clone() for b in model.buffers()]
    ibp_loss(model, x, y, eps=0.01).backward()
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))


def test_band_table_finds_the_exact_cells_and_the_first_order_estimate_is_the_linear_worst_case():
    import numpy as np
    import xarray as xr

    from dfrobust.experiments import certified as ch07

    # a linear detector: z_real = w·x + c, so the first-order estimate is the exact largest change of P(ŷ)
    # for small radii (the sigmoid's slope barely moves), and never above it by more than the curvature
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(12, 1)

        def forward(self, x):
            z = self.lin(x.flatten(1))
            return torch.cat([z, torch.zeros_like(z)], 1)

    torch.manual_seed(0)
    model = Linear()
    x = torch.rand(5, 3, 2, 2)
    est = certify.first_order_change(model, x, [0.0, 1e-3])
    w = model.lin.weight.detach().view(-1)
    p_real = torch.sigmoid(model(x)[:, 0]).detach()
    slope = p_real * (1 - p_real)
    lo, hi = (-x.flatten(1)).clamp(min=-1e-3), (1 - x.flatten(1)).clamp(max=1e-3)
    # P(ŷ) moves with the margin: its gradient is ±slope·w, and the worst case takes the larger end per pixel
    sign = torch.where(p_real >= 0.5, 1.0, -1.0).view(-1, 1)
    expected = torch.maximum(sign * slope.view(-1, 1) * w * lo, sign * slope.view(-1, 1) * w * hi).sum(1)
    assert np.allclose(est.sel(eps=1e-3).values, expected.numpy(), rtol=1e-5)
    assert np.all(est.sel(eps=0.0).values == 0)

    n, eps = 40, [0.0, 0.001, 0.004]
    change = np.zeros((1, 3, n))
    change[0, 2, :10] = 0.5                       # at the largest radius 10 samples lose their certificate
    cert = xr.Dataset({"certified_change": (("model", "eps", "sample"), change)},
                      coords={"model": ["meso4_ibp"], "eps": eps, "sample": np.arange(n)})
    atk = xr.zeros_like(cert["certified_change"])
    fo = xr.zeros_like(atk)
    t = ch07.band_table(cert, atk, fo, 0.1)
    assert t["exact"].tolist() == [True, False]
    assert t["band"].tolist() == [0.0, 0.25] and t["RR certified"].tolist() == [1.0, 0.75]
    assert t["band 95% hi"].iloc[0] == pytest.approx(0.0876, abs=1e-3)   # Wilson upper bound of 0/40


def _certified_accuracy(model, x, y, eps: float) -> float:
    """Share of images whose CROWN lower bound (budget 8, as chapter 07) of the true class's margin stays > 0."""
    b = certify.margin_bounds(model, x, eps, method="crown", pred=y, dtype=torch.float64, crown_budget=8)
    return float((b.m_lo > 0).double().mean())


def test_a_warm_started_ibp_fine_tune_certifies_more_than_the_standard_meso4_it_starts_from():
    # the recipe of the default profile: a trained standard Meso4, then a short IBP fine-tune with the radius ramped
    eps = 0.01
    standard = _train("meso4", eps)
    hp = {**BASE, **ROBUST_DEFAULTS, "objective": "ibp", "train_eps": eps, "epochs": 6, "patience": 6, "lr": 3e-3,
          "warm_start": "meso4"}
    tuned = build("meso4_ibp", SIZE)
    tuned.load_state_dict(standard.state_dict())
    fit(tuned, *_toy(128, 0), *_toy(64, 1), hp, seed=0, device=CPU)
    tuned.eval()
    x, y = _toy(32, 2)
    cert = {m: _certified_accuracy(model, x, y, eps) for m, model in (("meso4", standard), ("meso4_ibp", tuned))}
    assert _accuracy(tuned, x, y) >= 0.8, f"the fine-tune lost the clean task: {_accuracy(tuned, x, y)}"
    assert cert["meso4_ibp"] >= cert["meso4"] + 0.3, f"the IBP fine-tune certifies no more than its parent: {cert}"


def _toy_manifest(root):
    """The toy images as PNGs in a manifest split by identity (train 6, val 3, test 3 of 12 identities)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from dfrobust.data.manifest import load_manifest, save_manifest

    x, y = _toy(96, 4)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(len(x)):
        p = root / "img" / f"{i}.png"
        Image.fromarray((x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(p)
        ident = i // 8
        rows.append(dict(path=str(p), label=int(y[i]), dataset="synthetic", manipulation="faceswap" if y[i] else "none",
                         video_id="", frame_index=-1, group="asian_male", identity=f"id{ident}", pair_id=f"{i // 2}",
                         split=(("train",) * 6 + ("val",) * 3 + ("test",) * 3)[ident]))
    save_manifest(pd.DataFrame(rows), root, {"synthetic": True})
    return load_manifest(root)


PARENT = dict(input_size=SIZE, epochs=2, patience=2, batch_size=16, lr=3e-3, threads=1, bn_recalib=32)


def test_a_warm_start_starts_from_the_parents_checkpoint_and_its_key_follows_that_checkpoint(tmp_path, monkeypatch):
    from dfrobust.models.train import file_digest, load_checkpoint, save_checkpoint

    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / "home"))
    df = _toy_manifest(tmp_path / "data")
    # lr 0: the fine-tune changes no weight, so the child's convolutions are exactly the parent's
    child_hp = dict(PARENT, epochs=1, patience=1, lr=0.0, train_eps=0.01, warm_start="meso4")

    def child():
        return get_trained("meso4_ibp", df, profile="quick", seed=0, device="cpu", hparams=child_hp,
                           parent_hparams=PARENT)

    td = child()
    parent = get_trained("meso4", df, profile="quick", seed=0, device="cpu", hparams=PARENT)
    assert parent.cached and not td.cached
    assert torch.equal(td.model.net.conv1.conv.weight, parent.model.net.conv1.conv.weight)
    assert td.record.attrs["warm_start_digest"] == file_digest(parent.checkpoint)
    assert td.hparams["warm_start"] == "meso4" and child().cached
    # another checkpoint at the parent's cached path (same metadata, other weights): the child is trained again from it
    torch.manual_seed(9)
    other = build("meso4", SIZE).eval()
    meta = {"profile": "quick", "seed": 0, "hparams": parent.hparams,
            "data_fingerprint": parent.record.attrs["data_fingerprint"]}
    save_checkpoint(other, parent.checkpoint, **meta)
    again = child()
    assert not again.cached and again.checkpoint != td.checkpoint
    assert torch.equal(again.model.net.conv1.conv.weight, other.net.conv1.conv.weight)
    # the old child's checkpoint, read with the new parent's digest, is refused as not this cache entry
    with pytest.raises(ValueError, match="saved with warm_start_digest="):
        load_checkpoint(td.checkpoint, "meso4_ibp", expect={"warm_start_digest": file_digest(parent.checkpoint)})
    # without a warm start the robust detectors' keys are what they were (the key holds no warm_start)
    plain = resolve_hparams("meso4_adv", "default")
    assert "warm_start" not in plain
    assert resolve_hparams("meso4_adv", "default", {"warm_start": None}) == plain
    assert resolve_hparams("meso4_ibp", "default")["warm_start"] == "meso4"   # the default profile's recipe
    assert len({cache_key("meso4_adv", "f", plain, 0, parent=p) for p in (None, "a", "b")}) == 3


@pytest.mark.parametrize("name,value,match", [
    ("meso4_ibp", "resnet34", r"^warm_start='resnet34' for meso4_ibp: expected one of meso4 \(a standard detector of "
                              r"its architecture\) or unset$"),
    ("meso4_ibp", "meso4_adv", r"^warm_start='meso4_adv' for meso4_ibp: expected one of meso4 "),
    ("meso4_adv", "vgg", r"^warm_start='vgg' for meso4_adv: expected one of meso4 "),
    ("meso4", "meso4", r"^training override\(s\) \['warm_start'\] for meso4: unknown"),
])
def test_a_bad_warm_start_is_one_line(name, value, match):
    with pytest.raises(ValueError, match=match):
        resolve_hparams(name, "default", {"warm_start": value})


def test_a_parent_at_another_input_size_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / "home"))
    df = _toy_manifest(tmp_path / "data")
    with pytest.raises(ValueError, match=r"^warm_start='meso4' for meso4_ibp: it is trained at 32 px; expected "
                                         r"meso4_ibp's input_size 48 px$"):
        get_trained("meso4_ibp", df, profile="quick", device="cpu", parent_hparams=dict(PARENT, epochs=1),
                    hparams=dict(PARENT, input_size=48, train_eps=0.01, warm_start="meso4"))
