"""Training schedule, batch-norm re-estimation, hyper-parameters from the study spec, the quality gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfrobust.models import MODELS, analysed_models, quality_gate
from dfrobust.models.train import (DEFAULTS, _auc, cache_key, fit, predict_proba, recalibrate_bn,
                                   resolve_hparams, study_hparams)

torch.set_num_threads(1)
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- a toy problem

def _toy(n: int, seed: int, size: int = 16, amp: float = 0.1):
    """Separable toy images: per-image colour + noise; fakes (odd rows) add a ±amp checkerboard."""
    g = torch.Generator().manual_seed(seed)
    x = 0.35 + 0.3 * torch.rand(n, 3, 1, 1, generator=g) + 0.05 * torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).float()
    return (x + amp * y.view(-1, 1, 1, 1) * checker).clamp(0, 1), y


def _tiny_net(seed: int, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    layers, c = [], 3
    for stride in (1, 1, 2):
        layers += [nn.Conv2d(c, width, 3, padding=1, stride=stride), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))


TOY = dict(DEFAULTS, input_size=16, epochs=3, patience=2, batch_size=16, threads=1, amp=False)
#: the loop before issue 17: AdamW at a constant 1e-3, no label smoothing, batch-norm running
#: statistics as left by training (momentum 0.1)
OLD = dict(TOY, optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="constant", label_smoothing=0.0,
           bn_recalib=0)
#: the new one: SGD + Nesterov momentum, one-cycle (warm-up + cosine), label smoothing 0.1,
#: batch-norm statistics re-estimated on training images before every validation
NEW = dict(TOY, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle", warmup=0.25,
           label_smoothing=0.1, bn_recalib=64)


def _toy_run(hp: dict, seed: int) -> tuple[float, float]:
    xtr, ytr = _toy(64, seed)
    xv, yv = _toy(64, 100 + seed)
    xt, yt = _toy(128, 200 + seed)
    model = _tiny_net(seed)
    hist = fit(model, xtr, ytr, xv, yv, hp, seed=seed, device=CPU)
    return hist["best_val_auc"], _auc(yt.numpy(), predict_proba(model, xt))


def test_new_schedule_learns_the_toy_set_where_the_old_one_stays_near_chance():
    # 12 optimisation steps (64 images, batch 16, 3 epochs) on 8 seeds, same nets and data for both
    new = [_toy_run(NEW, s)[1] for s in range(8)]
    old = [_toy_run(OLD, s)[1] for s in range(8)]
    assert min(new) >= 0.9, new
    assert sum(a <= 0.65 for a in old) >= 4, old  # near chance on at least half the seeds
    assert np.mean(new) - np.mean(old) >= 0.2, (new, old)


def test_fit_reports_steps_lr_and_best_epoch():
    xtr, ytr = _toy(64, 0)
    xv, yv = _toy(32, 1)
    hist = fit(_tiny_net(0), xtr, ytr, xv, yv, dict(NEW, epochs=4, patience=3), seed=0, device=CPU)
    assert hist["steps"] == 4 * 4 and len(hist["val_auc"]) == 4
    # one-cycle: warm-up to the peak, then cosine down to lr / (25 * 40) at the last step
    assert hist["lr"][-1] == pytest.approx(NEW["lr"] / 1000, rel=1e-3)
    assert hist["best_val_auc"] == max(hist["val_auc"])


def test_early_stopping_fires_before_the_last_epoch():
    xtr, ytr = _toy(64, 0)
    xv, yv = _toy(32, 1)
    # a zero learning rate never improves on epoch 1, so patience 2 stops after epoch 3 of 10
    hp = dict(NEW, lr=0.0, epochs=10, patience=2, schedule="constant")
    hist = fit(_tiny_net(0), xtr, ytr, xv, yv, hp, seed=0, device=CPU)
    assert len(hist["val_auc"]) == 3 and hist["best_epoch"] == 0


def test_recalibrate_bn_sets_the_statistics_of_the_data():
    net = nn.Sequential(nn.BatchNorm2d(3))
    x = torch.rand(40, 3, 8, 8) * 0.5 + 0.3
    net.train()(torch.zeros(4, 3, 8, 8))  # stale statistics from other data
    recalibrate_bn(net, x, batch_size=8, device=CPU)
    torch.testing.assert_close(net[0].running_mean, x.mean((0, 2, 3)), atol=1e-5, rtol=0)
    assert net[0].momentum == 0.1 and net.training  # restored
    x8 = (x * 255).round().to(torch.uint8)  # uint8 training storage is converted
    recalibrate_bn(net, x8, batch_size=8, device=CPU)
    torch.testing.assert_close(net[0].running_mean, (x8.float() / 255).mean((0, 2, 3)), atol=1e-5, rtol=0)


def test_weights_do_not_depend_on_the_callers_thread_count():
    xtr, ytr = _toy(64, 0, size=32)
    xv, yv = _toy(32, 1, size=32)
    states = []
    for caller_threads in (1, 2):
        torch.set_num_threads(caller_threads)
        try:
            m = _tiny_net(0, width=16)
            fit(m, xtr, ytr, xv, yv, dict(NEW, epochs=1, threads=1), seed=0, device=CPU)
        finally:
            torch.set_num_threads(1)
        states.append(m.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert torch.get_num_threads() == 1


# ----------------------------------------------------------------------------- hyper-parameters

def test_study_spec_is_the_source_of_the_profiles_hyper_parameters():
    for profile in ("quick", "default", "paper"):
        spec = study_hparams(profile)
        assert set(spec) == set(MODELS)
        for name in MODELS:
            hp = resolve_hparams(name, profile)
            assert hp == resolve_hparams(name, profile, hparams=spec[name])
            assert all(hp[k] == v for k, v in spec[name].items())  # the spec's values win over DEFAULTS
            assert hp["patience"] < hp["epochs"] or hp["epochs"] == 1, (profile, name)
    assert resolve_hparams("xception", "paper")["input_size"] == 299
    assert resolve_hparams("meso4", "paper")["input_size"] == 256
    assert resolve_hparams("meso4", "default")["input_size"] == study_hparams("default", "meso4")["input_size"]


def test_cache_key_follows_resolved_values_and_threads():
    a = resolve_hparams("meso4", "quick", {"threads": 1})
    b = resolve_hparams("meso4", "quick", {"threads": 2})
    assert cache_key("meso4", "f", a, 0) != cache_key("meso4", "f", b, 0)
    # explicit values equal to the resolved ones give the same key (one checkpoint, two spellings)
    c = resolve_hparams("meso4", "quick", hparams=dict(a))
    assert cache_key("meso4", "f", a, 0) == cache_key("meso4", "f", c, 0)
    # threads=None resolves to the current thread count, which the key then holds
    d = resolve_hparams("meso4", "quick", {"threads": None})
    assert d["threads"] == torch.get_num_threads()


@pytest.mark.parametrize("override, match", [
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop' for meso4: expected one of sgd, adamw"),
    ({"schedule": "step"}, "schedule='step'"),
    ({"bn_recalib": -1}, "bn_recalib=-1"),
    ({"label_smoothing": 1.5}, r"label_smoothing=1.5 for meso4: expected a number in \[0, 1\)"),
    ({"threads": 0}, "threads=0"),
    ({"learning_rate": 0.1}, "unknown"),
])
def test_bad_hyper_parameters_are_one_line_errors(override, match):
    with pytest.raises(ValueError, match=match) as exc:
        resolve_hparams("meso4", "quick", override)
    assert "\n" not in str(exc.value)


def test_unknown_profile_or_spec_keys_are_errors():
    with pytest.raises(ValueError, match="profile='huge'"):
        resolve_hparams("meso4", "huge")
    with pytest.raises(ValueError, match="hparams"):
        resolve_hparams("meso4", "quick", hparams={"epoch": 3})


# ----------------------------------------------------------------------------- quality gate

class _Constant(nn.Module):
    def forward(self, x):
        return torch.zeros(len(x), 2)


def test_gate_excludes_a_constant_detector():
    xv, yv = _toy(64, 1)
    constant_auc = _auc(yv.numpy(), predict_proba(_Constant(), xv))
    assert constant_auc == 0.5
    model = _tiny_net(0)
    xtr, ytr = _toy(64, 0)
    fit(model, xtr, ytr, xv, yv, NEW, seed=0, device=CPU)
    learned_auc = _auc(yv.numpy(), predict_proba(model, xv))
    gate = quality_gate({"constant": constant_auc, "learned": learned_auc}, threshold=0.7).set_index("model")
    assert not gate.loc["constant", "analysed"] and gate.loc["learned", "analysed"]
    assert gate.loc["constant", "status"] == "not analysed: near chance (val AUC 0.50 < 0.70)"
    assert gate.loc["learned", "status"] == "analysed"
    assert analysed_models({"constant": constant_auc, "learned": learned_auc}) == ["learned"]


def test_gate_threshold_nan_and_bad_input():
    gate = quality_gate({"a": 0.69, "b": 0.70, "c": float("nan")}, threshold=0.7)
    assert gate["analysed"].tolist() == [False, True, False]
    assert gate["status"].iloc[2] == "not analysed: validation AUC undefined"
    assert quality_gate({"a": 0.69}, threshold=0.6)["analysed"].tolist() == [True]
    with pytest.raises(ValueError, match="threshold=1.5"):
        quality_gate({"a": 0.9}, threshold=1.5)
    with pytest.raises(ValueError, match="expected a number in"):
        quality_gate({"a": 1.2})
    with pytest.raises(ValueError, match="non-empty mapping"):
        quality_gate({})


def test_training_block_of_the_study_spec_is_checked(tmp_path, monkeypatch):
    from dfrobust.study import StudyError, load_study

    def spec(training: str):
        p = tmp_path / "notebooks" / "study.yml"
        p.parent.mkdir(exist_ok=True)
        p.write_text("profiles: {quick: q, default: d, paper: p}\n"
                     "notebooks: [{name: a, template: notebooks/a.ipynb}]\n"
                     "settings:\n  training: " + training + "\n")
        return p

    monkeypatch.setenv("DFROBUST_HOME", str(tmp_path))
    spec("{quick: {common: {epochs: 4}, meso4: {lr: 0.01}}}")
    assert study_hparams("quick", "meso4") == {"epochs": 4, "lr": 0.01}
    assert study_hparams("quick", "xception") == {"epochs": 4}
    assert study_hparams("default", "meso4") == {}
    spec("{quick: {vgg: {epochs: 1}}}")
    with pytest.raises(ValueError, match=r"names \['vgg'\]"):
        study_hparams("quick", "meso4")
    with pytest.raises(StudyError, match="profile='huge'"):
        load_study(spec("{huge: {meso4: {epochs: 1}}}"))
