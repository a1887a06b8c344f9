"""A table of bad inputs a careful new user or a hostile tester would try (issue 11).

Each case must fail with a ONE-LINE error that names the offending value, BEFORE any expensive
work. "Before expensive work" is measured, not assumed: the ``guard`` fixture makes every model
constructor (Meso4, MesoInception4, ResNet-34, Xception), training (``get_trained``) and notebook
execution (papermill) raise if reached, and every case must leave no file under the data home.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from dfrobust.core import params as core_params

ROOT = Path(__file__).resolve().parents[1]


class Expensive(AssertionError):
    """Raised by the guard: a case reached work that validation should have prevented."""


@pytest.fixture
def guard(data_home, monkeypatch):
    """Expensive work raises; yields the data home, which must hold no file afterwards."""
    import papermill
    import timm
    import torchvision

    from dfrobust.models import meso, train

    def boom(what):
        def f(*a, **k):
            raise Expensive(f"{what} was reached: validation came too late")
        return f

    monkeypatch.setattr(meso.Meso4Net, "__init__", boom("Meso4Net()"))
    monkeypatch.setattr(meso.MesoInception4Net, "__init__", boom("MesoInception4Net()"))
    monkeypatch.setattr(torchvision.models, "resnet34", boom("resnet34()"))
    monkeypatch.setattr(timm, "create_model", boom("timm.create_model()"))
    monkeypatch.setattr(train, "get_trained", boom("get_trained()"))
    monkeypatch.setattr(train, "fit", boom("fit()"))
    monkeypatch.setattr(papermill, "execute_notebook", boom("papermill.execute_notebook()"))
    yield data_home
    written = [p for p in data_home.rglob("*") if p.is_file()]
    assert not written, f"files written under the data home by a bad input: {written[:5]}"


# ----------------------------------------------------------------------------- helpers for the cases
def _cli(*args, env=None):
    """The CLI with ``args`` (an argument may be a function of the test's tmp folder)."""
    from dfrobust.study.cli import app

    def run(tmp):
        argv = [a(tmp) if callable(a) else a for a in args]
        res = CliRunner().invoke(app, argv, env=env(tmp) if callable(env) else env)
        out = (res.output or "") + (getattr(res, "stderr", "") if _separate_stderr(res) else "")
        if isinstance(res.exception, Expensive):
            raise res.exception
        assert res.exit_code == 2, f"exit {res.exit_code} (expected 2): {out[-500:]} {res.exception!r}"
        lines = [l for l in out.splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("error:")]
        assert len(errors) == 1, f"expected one error line, got: {lines}"
        raise ValueError(errors[0][len("error:"):].strip())
    return run


def _separate_stderr(res) -> bool:
    try:
        return bool(res.stderr) and res.stderr not in (res.output or "")
    except ValueError:
        return False


def _manifest_csv(tmp, mutate):
    from dfrobust.data.manifest import COLUMNS

    row = {"path": "a.jpg", "label": 0, "dataset": "synthetic", "manipulation": "none", "video_id": "",
           "frame_index": -1, "group": "asian_male", "identity": "id0", "pair_id": "p0", "split": "test"}
    assert list(row) == list(COLUMNS)
    df = mutate(pd.DataFrame([row]))
    p = tmp / "m" / "manifest.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(df, bytes):
        p.write_bytes(df)
    else:
        df.to_csv(p, index=False)
    return p


def _load_manifest(mutate):
    def run(tmp):
        from dfrobust.data import load_manifest

        load_manifest(_manifest_csv(tmp, mutate))
    return run


def _toy_manifest(n=4):
    return pd.DataFrame({"path": [f"{i}.jpg" for i in range(n)], "label": [0, 1] * (n // 2),
                         "group": ["asian_male"] * n, "split": ["test"] * n, "pair_id": [""] * n})


def _toy_detector():
    from dfrobust.models import Detector

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    return Detector("toy", net, 8, (0.0,) * 3, (1.0,) * 3, single_logit=False)


def _file_home(tmp):
    f = tmp / "home_is_a_file"
    f.write_text("x")
    return {"DFROBUST_DATA_HOME": str(f)}


def _under_file_home(tmp):
    f = tmp / "plain_file"
    f.write_text("x")
    return {"DFROBUST_DATA_HOME": str(f / "sub")}


def _with_file_home(fn):
    def run(tmp):
        import os

        f = tmp / "home_is_a_file"
        f.write_text("x")
        old = os.environ["DFROBUST_DATA_HOME"]
        os.environ["DFROBUST_DATA_HOME"] = str(f)
        try:
            fn()
        finally:
            os.environ["DFROBUST_DATA_HOME"] = old
    return run


def _symlink_loop(tmp):
    """A path that is a symlink loop (a -> b -> a)."""
    (tmp / "loop_a").symlink_to(tmp / "loop_b")
    (tmp / "loop_b").symlink_to(tmp / "loop_a")
    return str(tmp / "loop_a")


def _closed_port(tmp):
    """The address of a local TCP port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def _truncated_jpeg(tmp):
    import cv2

    from dfrobust.data.manifest import read_rgb

    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    _, buf = cv2.imencode(".jpg", img)
    p = tmp / "cut.jpg"
    p.write_bytes(buf.tobytes()[: len(buf) // 2])
    read_rgb(p)


def _dataset_root(tmp):
    root = tmp / "ds"
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    return root


def _prepare(**kw):
    def run(tmp):
        from dfrobust.data import prepare

        prepare.prepare(_dataset_root(tmp), out_dir=tmp / "prep_out", **kw)
    return run


def _published_name_damaged(tmp):
    from dfrobust.models.keras_h5 import load_pretrained

    p = tmp / "Meso4_DF.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))
    load_pretrained(p)


def call(fn, *a, **k):
    return lambda tmp: fn(*a, **k)


def _lazy(modname, attr):
    return lambda *a, **k: getattr(importlib.import_module(modname), attr)(*a, **k)


# ----------------------------------------------------------------------------- the table
# (id, case(tmp), regex the one-line message must match: it names the value)
CASES = [
    # runner / CLI
    ("cli-unknown-profile", _cli("run", "03_robustness", "--profile", "bogus"), r"profile='bogus'"),
    ("cli-unknown-notebook", _cli("run", "99_nothing"), r"notebook='99_nothing'"),
    ("cli-unknown-key", _cli("run", "03_robustness", "-p", "nokey=1"), r"'nokey'"),
    ("cli-wrong-type-str-for-int", _cli("run", "03_robustness", "-p", "n_samples=abc"), r"n_samples='abc'"),
    ("cli-wrong-type-float-for-int", _cli("run", "03_robustness", "-p", "n_samples=2.5"), r"n_samples=2\.5"),
    ("cli-p-without-equals", _cli("run", "03_robustness", "-p", "n_samples"), r"'n_samples'"),
    ("cli-p-profile", _cli("run", "03_robustness", "-p", "profile=paper"), r"profile='paper'"),
    ("cli-book-p-profile", _cli("book", "--no-build", "-p", "profile=bogus"), r"profile='bogus'"),
    ("cli-book-unknown-key", _cli("book", "--no-build", "-p", "eps_maxx=0.1"), r"'eps_maxx'"),
    ("cli-book-unknown-profile", _cli("book", "--no-build", "--profile", "huge"), r"profile='huge'"),
    ("cli-cw-c-init-negative", _cli("run", "03_robustness", "-p", "cw_c_init=-1"), r"cw_c_init=-1"),
    ("cli-cw-lr-negative", _cli("run", "03_robustness", "-p", "cw_lr=-0.01"), r"cw_lr=-0\.01"),
    ("cli-seed-negative", _cli("run", "03_robustness", "-p", "seed=-1"), r"seed=-1"),
    ("cli-b-max-above-1", _cli("run", "03_robustness", "-p", "b_max=1.5"), r"b_max=1\.5"),
    ("cli-unknown-model", _cli("run", "03_robustness", "-p", "models=meso4,vgg"), r"'vgg'"),
    ("cli-duplicate-attack", _cli("run", "03_robustness", "-p", "attacks=pgd,pgd"), r"duplicate pgd"),
    ("cli-device-tpu", _cli("run", "03_robustness", "-p", "device=tpu"), r"device='tpu'"),
    ("cli-book-late-chapter-error", _cli("book", "--no-build", "-p", "cw_lr=-0.5"), r"cw_lr=-0\.5"),
    ("cli-data-root-missing", _cli("run", "01_data", "-p", "data_root=/no/such/dataset"), r"/no/such/dataset"),
    ("cli-data-home-is-a-file", _cli("run", "01_data", env=_file_home), r"DFROBUST_DATA_HOME=.*home_is_a_file"),
    ("cli-data-home-under-a-file", _cli("run", "01_data", env=_under_file_home), r"plain_file"),
    ("cli-train-unknown-model", _cli("train", "vgg16"), r"model='vgg16'"),
    ("cli-train-device-tpu", _cli("train", "meso4", "--device", "tpu"), r"device='tpu'"),
    ("cli-train-seed-negative", _cli("train", "meso4", "--seed", "-1"), r"seed=-1"),
    ("cli-synth-unknown-profile", _cli("data", "synth", "--profile", "bogus"), r"profile='bogus'"),
    ("cli-synth-seed-negative", _cli("data", "synth", "--seed", "-3"), r"seed=-3"),
    ("cli-synth-data-home-file", _cli("data", "synth", env=_file_home), r"home_is_a_file"),
    ("cli-prepare-missing-root", _cli("data", "prepare", "/no/such/root"), r"/no/such/root"),
    ("cli-prepare-bad-detector", _cli("data", "prepare", str(ROOT / "notebooks"), "--detector", "yolo"),
     r"detector='yolo'"),
    ("cli-prepare-n-frames-0", _cli("data", "prepare", str(ROOT / "notebooks"), "--n-frames", "0"), r"n_frames=0"),
    # issue 27: every chapter's parameters (01 and 06 included) checked before the first chapter starts
    ("cli-01-pairs-per-group-0", _cli("run", "01_data", "-p", "pairs_per_group=0"), r"pairs_per_group=0"),
    ("cli-01-strip-frames-negative", _cli("run", "01_data", "-p", "strip_frames=-1"), r"strip_frames=-1"),
    ("cli-01-device-tpu", _cli("run", "01_data", "-p", "device=tpu"), r"device='tpu'"),
    ("cli-01-seed-negative", _cli("run", "01_data", "-p", "seed=-1"), r"seed=-1"),
    ("cli-06-bench-scale-huge", _cli("run", "06_performance", "-p", "bench_scale=huge"), r"bench_scale='huge'"),
    ("cli-06-budget-negative", _cli("run", "06_performance", "-p", "budget_min=-1"), r"budget_min=-1"),
    ("cli-06-budget-nan", _cli("run", "06_performance", "-p", "budget_min=nan"), r"budget_min=nan"),
    ("cli-06-sweep-workers-negative", _cli("run", "06_performance", "-p", "sweep_workers=-3"), r"sweep_workers=-3"),
    ("cli-book-06-refused-before-01-runs", _cli("book", "--no-build", "-p", "bench_scale=huge"), r"bench_scale='huge'"),
    ("cli-04-eps-max-above-1", _cli("run", "04_videos", "-p", "eps_max=1.5"), r"eps_max=1\.5"),
    ("cli-07-eps-max-above-1", _cli("run", "07_certified", "-p", "eps_max=1.5"), r"eps_max=1\.5"),
    ("cli-07-eps-max-negative-named-as-written", _cli("run", "07_certified", "-p", "eps_max=-0.01"),
     r"^eps_max=-0\.01: expected"),
    ("cli-07-n-eps-70-short", _cli("run", "07_certified", "-p", "n_eps=70"), r"^(?=.{0,160}$)n_eps=70: expected"),
    *[(f"cli-{nb[:2]}-seed-2-32", _cli("run", nb, "-p", "seed=4294967296"), r"seed=4294967296")
      for nb in ("01_data", "02_models", "03_robustness", "04_videos", "05_xai", "07_certified")],
    ("cli-train-seed-2-32", _cli("train", "meso4", "--seed", "4294967296"), r"seed=4294967296"),
    ("cli-synth-seed-2-32", _cli("data", "synth", "--seed", "4294967296"), r"seed=4294967296"),
    ("cli-03-n-b-1e9", _cli("run", "03_robustness", "-p", "n_b=1000000000"), r"n_b=1000000000"),
    ("cli-03-n-eps-1e8", _cli("run", "03_robustness", "-p", "n_eps=100000000"), r"n_eps=100000000"),
    ("cli-07-n-b-1e9", _cli("run", "07_certified", "-p", "n_b=1000000000"), r"n_b=1000000000"),
    ("cli-05-n-boot-1e9", _cli("run", "05_xai", "-p", "n_boot=1000000000"), r"n_boot=1000000000"),
    ("cli-p-hash-kept-in-models", _cli("run", "03_robustness", "-p", "models=meso4 #,resnet34"), r"'meso4 #'"),
    ("cli-p-hash-kept-in-data-root", _cli("run", "01_data", "-p", "data_root=/no/such/x #1"), r"/no/such/x #1"),
    ("cli-p-yaml-bool-not-read", _cli("run", "03_robustness", "-p", "models=no"), r"'no' is unknown"),
    ("cli-data-root-unknown-user", _cli("run", "01_data", "-p", "data_root=~nosuchuser/x"), r"~nosuchuser/x"),
    ("cli-data-home-unknown-user", _cli("run", "01_data", env={"DFROBUST_DATA_HOME": "~nosuchuser/x"}),
     r"DFROBUST_DATA_HOME='~nosuchuser/x'"),
    ("cli-data-root-symlink-loop", _cli("run", "01_data", "-p", lambda tmp: f"data_root={_symlink_loop(tmp)}"),
     r"data_root=.*loop_a.*symlink loop"),
    ("cli-data-home-symlink-loop", _cli("run", "01_data", env=lambda tmp: {"DFROBUST_DATA_HOME": _symlink_loop(tmp)}),
     r"DFROBUST_DATA_HOME=.*loop_a.*symlink loop"),
    ("cli-sweep-memory-abc", _cli("sweep", "--profile", "quick", "--cluster", "slurm", "--dry-run", "--memory", "abc"),
     r"memory='abc'"),
    ("cli-sweep-walltime-bad", _cli("sweep", "--profile", "quick", "--cluster", "slurm", "--dry-run", "--walltime",
                                    "4 hours"), r"walltime='4 hours'"),
    ("cli-sweep-workers-huge", _cli("sweep", "--profile", "quick", "--workers", "100000"), r"workers=100000"),
    ("cli-sweep-scheduler-unreachable", _cli("sweep", "--profile", "quick", "--scheduler", _closed_port),
     r"scheduler='tcp://127\.0\.0\.1:\d+': cannot connect"),
    ("params-seed-2-32", call(_lazy("dfrobust.core.params", "check_seed"), 2 ** 32), r"seed=4294967296"),
    ("params-count-above-bound", call(_lazy("dfrobust.core.params", "check_int"), 10 ** 9, "n_b", 2, 64),
     r"n_b=1000000000"),
    ("paths-data-root-unknown-user", call(_lazy("dfrobust.core.paths", "real_data_root"), "~nosuchuser/x"),
     r"data_root='~nosuchuser/x'"),
    # core.params
    ("params-empty-list", call(core_params.split_list, " , ", "models"), r"models=' , '"),
    ("params-unknown-name", call(core_params.split_list, "a,zz", "tools", allowed=["a", "b"]), r"'zz'"),
    ("params-duplicate-name", call(core_params.split_list, "a,b,a", "tools"), r"duplicate a"),
    ("params-not-an-int", call(core_params.int_list, "1,x", "top_k"), r"'x'"),
    ("params-int-below-minimum", call(core_params.int_list, "0,3", "top_k", minimum=1), r"top_k='0,3'"),
    ("params-duplicate-int", call(core_params.int_list, "3,3", "top_k"), r"top_k='3,3'"),
    ("params-eps-negative", call(core_params.check_eps, -0.1), r"eps=-0\.1"),
    ("params-eps-text", call(core_params.check_eps, "big"), r"eps='big'"),
    ("params-eps-inf", call(core_params.check_eps, float("inf")), r"eps=inf"),
    ("params-seed-negative", call(_lazy("dfrobust.core.params", "check_seed"), -1), r"seed=-1"),
    ("params-seed-float", call(_lazy("dfrobust.core.params", "check_seed"), 1.5), r"seed=1\.5"),
    ("spec-override-no-equals", call(_lazy("dfrobust.study.spec", "parse_override"), "eps_max"), r"'eps_max'"),
    # data
    ("data-manifest-missing", call(_lazy("dfrobust.data", "load_manifest"), "/no/such/manifest.csv"),
     r"/no/such/manifest\.csv"),
    ("data-manifest-missing-column", _load_manifest(lambda d: d.drop(columns="label")), r"manifest\.csv.*'label'"),
    ("data-manifest-bad-label", _load_manifest(lambda d: d.assign(label=2)), r"manifest\.csv.*\[2\]"),
    ("data-manifest-bad-split", _load_manifest(lambda d: d.assign(split="holdout")), r"'holdout'"),
    ("data-manifest-binary", _load_manifest(lambda d: b"\x00\xff\xfe" * 50), r"manifest\.csv"),
    ("data-sampler-n-0", call(_lazy("dfrobust.data.sampling", "select_samples"), _toy_manifest(), 0),
     r"n_samples=0"),
    ("data-sampler-n-negative", call(_lazy("dfrobust.data.sampling", "balanced"), _toy_manifest(), -2), r"n=-2"),
    ("data-sampler-pairs-0", call(_lazy("dfrobust.data.sampling", "select_pairs"), _toy_manifest(), 0),
     r"n_pairs=0"),
    ("data-unknown-profile", call(_lazy("dfrobust.data", "get_manifest"), "bogus"), r"profile='bogus'"),
    ("data-unknown-kind", call(_lazy("dfrobust.data", "get_manifest"), "quick", "audio"), r"kind='audio'"),
    ("data-negative-seed", call(_lazy("dfrobust.data", "get_manifest"), "quick", seed=-1), r"seed=-1"),
    ("data-unknown-synth-option", call(_lazy("dfrobust.data", "get_manifest"), "quick", n_per_grp=3),
     r"n_per_grp"),
    ("data-home-is-a-file", _with_file_home(lambda: importlib.import_module("dfrobust.data").get_manifest("quick")),
     r"DFROBUST_DATA_HOME=.*home_is_a_file"),
    ("data-unknown-layout", _prepare(layout="vimeo"), r"'vimeo'"),
    ("data-unknown-detector", _prepare(detector="yolo"), r"detector='yolo'"),
    ("data-truncated-jpeg", _truncated_jpeg, r"cut\.jpg.*truncated"),
    ("data-load-images-size", call(_lazy("dfrobust.data", "load_images"), _toy_manifest(), 4), r"size=4"),
    # models
    ("models-unknown-model", call(_lazy("dfrobust.models", "build"), "vgg"), r"model='vgg'"),
    ("models-input-size-too-small", call(_lazy("dfrobust.models", "build"), "meso4", 8), r"input_size=8"),
    ("models-device-tpu", call(_lazy("dfrobust.core.device", "pick_device"), "tpu"), r"device='tpu'"),
    ("models-float64-input", lambda tmp: _toy_detector()(torch.rand(2, 3, 8, 8, dtype=torch.float64)),
     r"torch\.float64"),
    ("models-wrong-channels", lambda tmp: _toy_detector()(torch.rand(2, 1, 8, 8)), r"got 1"),
    ("models-wrong-size", lambda tmp: _toy_detector()(torch.rand(2, 3, 16, 16)), r"16x16"),
    ("models-out-of-range", lambda tmp: _toy_detector()(torch.rand(2, 3, 8, 8) * 3), r"range \[0"),
    ("models-damaged-published-weights", _published_name_damaged, r"Meso4_DF\.h5: SHA-256"),
    # attacks
    ("attacks-unknown", call(_lazy("dfrobust.attacks", "check_attack"), "deepfool"), r"attack='deepfool'"),
    ("attacks-cw-c-negative", call(_lazy("dfrobust.attacks", "check_options"), "cw", c_init=-1.0), r"c_init=-1"),
    ("attacks-cw-c-zero", call(_lazy("dfrobust.attacks", "check_options"), "cw", c_min=0.0), r"c_min=0"),
    ("attacks-cw-lr-negative", call(_lazy("dfrobust.attacks", "check_options"), "cw", lr=-0.01), r"lr=-0\.01"),
    ("attacks-steps-0", call(_lazy("dfrobust.attacks", "check_options"), "pgd", steps=0), r"steps=0"),
    ("attacks-unknown-option", call(_lazy("dfrobust.attacks", "check_options"), "pgd", stepz=3), r"stepz"),
    ("attacks-negative-eps", call(_lazy("dfrobust.attacks", "make_attack"), "pgd", None, eps=-0.1), r"eps=-0\.1"),
    # explainers
    ("explainers-unknown-tool", call(_lazy("dfrobust.explainers", "make_explainer"), "shap"), r"tool='shap'"),
    ("explainers-unknown-option", call(_lazy("dfrobust.explainers", "make_explainer"), "lime", samples=3),
     r"'samples'"),
    # metrics
    ("metrics-b-above-1", call(_lazy("dfrobust.metrics", "check_b_grid"), [0.1, 1.5]), r"b=1\.5"),
    ("metrics-b-negative", call(_lazy("dfrobust.metrics", "check_b_grid"), [-0.2]), r"b=-0\.2"),
    ("metrics-n-boot-0", call(_lazy("dfrobust.metrics", "bootstrap_weights"),
                              xr.Dataset(coords={"sample": np.arange(3)}), n_boot=0), r"n_boot=0"),
    ("metrics-grid-n-0", call(_lazy("dfrobust.metrics", "linspace_grid"), 0.2, 0), r"n_eps=0"),
    ("metrics-log-grid-min-0", call(_lazy("dfrobust.metrics", "log_grid"), 0.0, 0.2, 3), r"eps_min=0"),
]


@pytest.mark.parametrize("case,expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_early_in_one_line_naming_the_value(case, expect, guard, tmp_path):
    with pytest.raises((ValueError, OSError)) as info:
        case(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    assert re.search(expect, msg), f"{expect!r} not in {msg!r}"


# ----------------------------------------------------------------------------- the chapters' own checks
def _chapter_cases():
    """(chapter module, parameter, bad value, regex) for the chapters' check_params; skipped if absent."""
    return [
        ("robustness", "cw_c_init", -1.0, r"cw_c_init=-1"), ("robustness", "cw_lr", -0.01, r"cw_lr=-0\.01"),
        ("robustness", "seed", -1, r"seed=-1"), ("robustness", "b_max", 1.5, r"b_max=1\.5"),
        ("robustness", "n_samples", 0, r"n_samples=0"), ("robustness", "attacks", "pgd,pgd", r"duplicate pgd"),
        ("robustness", "device", "tpu", r"device='tpu'"), ("robustness", "eps_max", 1e-3, r"eps_max=0\.001"),
        ("videos", "pgd_steps", 0, r"pgd_steps=0"), ("videos", "seed", -1, r"seed=-1"),
        ("videos", "device", "tpu", r"device='tpu'"), ("videos", "attacks", "fgsm,fgsm", r"fgsm"),
        ("xai", "n_segments", 0, r"n_segments=0"), ("xai", "seed", -1, r"seed=-1"),
        ("xai", "top_k", "1,50", r"top_k.*50"), ("xai", "tools", "lime,lime", r"lime"),
        ("xai", "xception_sizes", "abc", r"xception_sizes"), ("xai", "device", "tpu", r"device='tpu'"),
        ("models", "models", "meso5", r"'meso5' is unknown"), ("models", "min_val_auc", 1.5, r"min_val_auc=1\.5"),
        ("models", "seed", -1, r"seed=-1"), ("certified", "models", "resnet34", r"'resnet34' is unknown"),
        ("certified", "method", "exact", r"method='exact'"), ("certified", "n_eps", 1, r"n_eps=1"),
        ("certified", "crown_budget", -2, r"crown_budget=-2"), ("certified", "b_show", "x", r"b_show='x'"),
        # issue 27
        ("data", "pairs_per_group", 0, r"pairs_per_group=0"), ("data", "strip_frames", -1, r"strip_frames=-1"),
        ("data", "device", "tpu", r"device='tpu'"), ("data", "seed", -1, r"seed=-1"),
        ("data", "seed", 2 ** 32, r"seed=4294967296"), ("data", "train_meso4", "yes", r"train_meso4='yes'"),
        ("robustness", "seed", 2 ** 32, r"seed=4294967296"), ("robustness", "n_b", 10 ** 9, r"n_b=1000000000"),
        ("robustness", "n_eps", 10 ** 8, r"n_eps=100000000"), ("videos", "seed", 2 ** 32, r"seed=4294967296"),
        ("videos", "eps_max", 1.5, r"eps_max=1\.5"), ("videos", "n_b", 10 ** 9, r"n_b=1000000000"),
        ("xai", "seed", 2 ** 32, r"seed=4294967296"), ("xai", "n_boot", 10 ** 9, r"n_boot=1000000000"),
        ("models", "seed", 2 ** 32, r"seed=4294967296"), ("certified", "seed", 2 ** 32, r"seed=4294967296"),
        ("certified", "eps_max", 1.5, r"eps_max=1\.5"), ("certified", "eps_max", -0.01, r"^eps_max=-0\.01"),
        ("certified", "n_eps", 70, r"^(?=.{0,120}$)n_eps=70"), ("certified", "n_b", 10 ** 9, r"n_b=1000000000"),
        # issue 23: the critical radii
        ("robustness", "radii_steps", 0, r"^radii_steps=0: expected an integer"),
        ("robustness", "radii_bisect", 2.5, r"^radii_bisect=2\.5: expected an integer"),
        ("robustness", "convergence_n", -1, r"^convergence_n=-1: expected an integer"),
        ("robustness", "convergence_n", 10 ** 5, r"^convergence_n=100000: expected at most n_samples"),
        # issue 23.5: the L2-ball RR and CW-L2's subsample
        ("robustness", "cw_n", -1, r"^cw_n=-1: expected an integer >= 0"),
        ("robustness", "cw_n", 10 ** 5, r"^cw_n=100000: expected at most n_samples"),
        ("robustness", "l2_eps_min", 0.0, r"^l2_eps_min=0\.0: expected a number"),
        ("robustness", "n_l2", 0, r"^n_l2=0: expected an integer"),
    ]


def _chapter_kwargs(stem: str, check) -> dict:
    """The quick profile's values (study.yml over the template defaults) for ``check``'s arguments."""
    from dfrobust import study

    s = study.load_study()
    nb = next(n for n in s.notebooks if n.name.split("_", 1)[-1] == stem)
    declared = study.declared_parameters(nb.template)
    values = {k: ast.literal_eval(str(v.get("default"))) for k, v in declared.items()}
    values.update(study.resolve_params(s, nb, "quick", {}))
    if stem == "xai":
        values["n_segments"] = 9  # top_k=1,50 must exceed it
    return {k: values[k] for k in inspect.signature(check).parameters if k in values}


@pytest.mark.parametrize("stem,key,value,expect", _chapter_cases(),
                         ids=[f"{c[0]}-{c[1]}={c[2]}" for c in _chapter_cases()])
def test_chapter_check_params_refuses(stem, key, value, expect, guard):
    mod = importlib.import_module(f"dfrobust.experiments.{stem}")
    check = getattr(mod, "check_params", None)
    if check is None:
        pytest.skip(f"dfrobust.experiments.{stem} has no check_params on this branch")
    kwargs = _chapter_kwargs(stem, check)
    if key not in inspect.signature(check).parameters:
        pytest.skip(f"{stem}.check_params takes no {key}")
    check(**kwargs)  # the profile's values pass: the error below is the bad value's
    with pytest.raises(ValueError) as info:
        check(**{**kwargs, key: value})
    msg = str(info.value)
    assert "\n" not in msg.strip() and re.search(expect, msg), msg
