"""Chapters 01, 02 and 06 (issue 22): one typed parameter object from the notebook's parameters, built by
``from_namespace(check_params, globals())``, and checking has no side effects (threads and seeds are set by
the one visible ``prepare_run`` call)."""

from __future__ import annotations

import pytest
import torch

from dfrobust.core.params import from_namespace
from dfrobust.experiments import data, models
from dfrobust.study import perf

NAMESPACES = {
    "data": (data.check_params, dict(profile="quick", seed=3, data_root="", pairs_per_group=2, strip_frames=6,
                                     train_meso4=True, device="cpu", unrelated=1)),
    "models": (models.check_params, dict(profile="quick", seed=3, models="meso4,resnet34", device="cpu", data_root="",
                                         weights="", port_check=False, min_val_auc=0.7, unrelated=1)),
    "perf": (perf.check_params, dict(profile="quick", run_benchmarks=False, bench_scale="small", device="cpu",
                                     sweep_workers=2, budget_min=10.0, gpu_report="", unrelated=1)),
}


@pytest.mark.parametrize("chapter", NAMESPACES)
def test_check_params_builds_the_typed_object_and_touches_no_global_state(chapter):
    check, namespace = NAMESPACES[chapter]
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # a count prepare_run would cap at 2
    try:
        torch.manual_seed(12345)
        rng = torch.get_rng_state()
        cfg = from_namespace(check, namespace)
        assert torch.get_num_threads() == threads + 1, "check_params set the thread count"
        assert torch.equal(torch.get_rng_state(), rng), "check_params seeded torch"
    finally:
        torch.set_num_threads(threads)
    assert cfg.profile == "quick" and cfg.device == "cpu"
    with pytest.raises(AttributeError):  # frozen: the checked values are what the chapter runs with
        cfg.profile = "paper"


def test_the_typed_objects_carry_the_checked_values():
    cfg = from_namespace(*NAMESPACES["models"])
    assert cfg.models == ["meso4", "resnet34"] and set(cfg.hparams) == {"meso4", "resnet34"}
    assert from_namespace(*NAMESPACES["data"]).data_root is None  # '' means the synthetic benchmark
    assert from_namespace(*NAMESPACES["perf"]).bench_args == ["--device", "cpu"]
