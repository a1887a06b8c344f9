"""Faults (issue 11): every expected failure is one line naming the file, nothing half-written is
left or trusted, media and weights are verified, result bytes are reproducible, and a run killed
with SIGKILL re-runs to the same results with no staging or temporary files left."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from dfrobust.core import results

ROOT = Path(__file__).resolve().parents[1]


def _one_line(exc) -> str:
    msg = str(exc.value if hasattr(exc, "value") else exc)
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    return msg


# ----------------------------------------------------------------------------- unreadable files name themselves
def test_a_corrupt_result_names_the_file_and_the_notebook_that_rebuilds_it(data_home):
    nc = data_home / "results" / "quick" / "rr_records.nc"
    results.save(xr.Dataset({"v": ("s", np.arange(4.0))}), nc)
    (data_home / "results" / results.PRODUCERS).write_text(
        json.dumps({"quick/rr_records.nc": {"notebook": "03_robustness", "profile": "quick"}}))
    raw = bytearray(nc.read_bytes())
    raw[: len(raw) // 2] = bytes(len(raw) // 2)  # header destroyed
    nc.write_bytes(bytes(raw))
    with pytest.raises(OSError) as info:
        results.load(nc)
    msg = _one_line(info)
    assert str(nc) in msg and "dfrobust run 03_robustness --profile quick --force" in msg


def test_a_corrupt_training_record_offers_the_train_command(data_home):
    from dfrobust.core.paths import checkpoints_dir

    rec = checkpoints_dir() / "meso4-quick-0123abcd.nc"
    rec.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))  # an HDF5 signature and nothing else
    with pytest.raises(OSError) as info:
        results.load(rec)
    msg = _one_line(info)
    assert str(rec) in msg and "dfrobust train meso4 --profile quick" in msg


def test_the_runner_records_who_wrote_each_result(tmp_path, data_home, mini_study):
    from dfrobust.study import runner

    s = mini_study(tmp_path, body="import xarray as xr\nfrom dfrobust.core import paths, results\n"
                                  "results.save(xr.Dataset({'v': ((), n * scale)}), paths.results_dir(profile) / 'm.nc')\n")
    runner.run_study("quick", study=s, only=["mini"], out_dir=tmp_path / "out", log=lambda m: None)
    nc = data_home / "results" / "quick" / "m.nc"
    assert results.rebuild_command(nc) == "dfrobust run mini --profile quick --force"


def test_a_data_home_that_is_a_file_is_one_line_and_exit_2(tmp_path, monkeypatch):
    from dfrobust.study.cli import app

    f = tmp_path / "not_a_folder"
    f.write_text("")
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(f))
    for args in (["run", "01_data"], ["data", "synth"], ["train", "meso4"]):
        res = CliRunner().invoke(app, args)
        lines = [l for l in res.output.splitlines() if l.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and "not_a_folder" in lines[0], (args, res.output)


# ----------------------------------------------------------------------------- disk full
def _enospc_after(n_ok: int):
    """A ``Path.write_bytes`` that succeeds ``n_ok`` times, then fails as a full disk does."""
    real = pathlib.Path.write_bytes
    calls = {"n": 0}

    def write_bytes(self, data):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    return write_bytes


def test_disk_full_during_synth_is_one_line_and_leaves_nothing_half_written(data_home, monkeypatch):
    from dfrobust.data import synth

    kw = {"n_per_group": 3, "n_identities": 3, "size": 32, "n_jobs": 1}
    monkeypatch.setattr(pathlib.Path, "write_bytes", _enospc_after(5))
    with pytest.raises(OSError) as info:
        synth.generate_images("quick", 0, **kw)
    msg = _one_line(info)
    assert "No space left on device" in msg and ".jpg" in msg and "removed" in msg
    root = synth.dataset_dir("quick", 0, **kw)
    assert not (root / "images").exists(), "the partial images are removed"
    assert not [p for p in data_home.rglob("*") if p.is_file()], "no file (temporary or partial) is left"
    monkeypatch.undo()  # space again: the next run generates the complete set
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(data_home))
    df = synth.dataset_for_profile("quick", "images", **kw)
    assert len(df) == 2 * 3 * 6 and all(Path(p).is_file() for p in df["path"])


def test_disk_full_while_writing_a_manifest_or_a_result_removes_the_temporary_file(tmp_path, data_home, monkeypatch):
    import pandas as pd

    from dfrobust.data.manifest import save_manifest

    df = pd.DataFrame([{"path": "a.jpg", "label": 0, "dataset": "synthetic", "manipulation": "none",
                        "video_id": "", "frame_index": -1, "group": "", "identity": "i", "pair_id": "p",
                        "split": "test"}])

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(OSError) as info:
        save_manifest(df, tmp_path / "m")
    assert "manifest.csv: cannot write (No space left on device)" in _one_line(info)
    assert not (tmp_path / "m" / "manifest.csv").exists()
    assert not list((tmp_path / "m").glob(".*.tmp")), "temporary file removed"

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full)
    target = data_home / "results" / "quick" / "x.nc"
    with pytest.raises(OSError) as info:
        results.save(xr.Dataset({"v": ((), 1.0)}), target)
    assert f"{target}: cannot write the result (No space left on device)" in _one_line(info)
    assert not list(target.parent.iterdir())


# ----------------------------------------------------------------------------- media and weights
def test_a_truncated_jpeg_is_rejected_not_decoded_half_grey(tmp_path):
    import cv2

    from dfrobust.data.manifest import load_images, read_rgb

    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    full, cut = tmp_path / "full.jpg", tmp_path / "cut.jpg"
    full.write_bytes(buf.tobytes())
    cut.write_bytes(buf.tobytes()[: int(len(buf) * 0.6)])
    assert cv2.imread(str(cut)) is not None, "OpenCV alone accepts the truncated file (the defect)"
    np.testing.assert_array_equal(read_rgb(full), cv2.cvtColor(cv2.imread(str(full)), cv2.COLOR_BGR2RGB))
    with pytest.raises(ValueError) as info:
        read_rgb(cut)
    assert str(cut) in _one_line(info) and "truncated" in str(info.value)
    import pandas as pd

    with pytest.raises(ValueError, match="cut.jpg"):
        load_images(pd.DataFrame({"path": [str(full), str(cut)]}), 32)


def test_published_weights_are_verified_by_sha256(tmp_path, realdata):
    from dfrobust.models.keras_h5 import (
        PUBLISHED,
        UnverifiedWeightsWarning,
        load_pretrained,
        verify_weights,
    )

    src = realdata / "mesonet" / "weights"
    for name in PUBLISHED:  # the table matches the published files
        assert verify_weights(src / name) == "verified"
    flipped = bytearray((src / "Meso4_DF.h5").read_bytes())
    flipped[-8192:-4096] = bytes(b ^ 0xFF for b in flipped[-8192:-4096])  # 4 KB bit-flipped, same size
    bad = tmp_path / "Meso4_DF.h5"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError) as info:
        load_pretrained(bad)
    assert "Meso4_DF.h5: SHA-256" in _one_line(info)
    mine = tmp_path / "my_finetuned_meso4.h5"
    own = bytearray((src / "Meso4_DF.h5").read_bytes())
    own[-1] ^= 0xFF  # any other file: not one of the published ones
    mine.write_bytes(bytes(own))
    with pytest.warns(UnverifiedWeightsWarning, match="without verification"):
        assert verify_weights(mine) == "unverified"
    renamed = tmp_path / "renamed.h5"
    renamed.write_bytes((src / "Meso4_F2F.h5").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a published file under another name is still verified
        load_pretrained(renamed)


def test_a_damaged_file_under_a_published_name_is_refused_without_the_real_files(tmp_path):
    from dfrobust.models.keras_h5 import UnverifiedWeightsWarning, verify_weights

    p = tmp_path / "MesoInception_F2F.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))
    with pytest.raises(ValueError, match="MesoInception_F2F.h5: SHA-256 .* differs from the published"):
        verify_weights(p)
    other = tmp_path / "other.h5"
    other.write_bytes(p.read_bytes())
    with pytest.warns(UnverifiedWeightsWarning):
        verify_weights(other)


def test_float64_input_is_refused_clearly_and_float32_runs():
    from dfrobust.models import Detector

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    det = Detector("toy", net, 8, (0.0,) * 3, (1.0,) * 3, single_logit=False)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError) as info:
        det(x)
    assert "torch.float64" in _one_line(info) and "x.to(torch.float32)" in str(info.value)
    assert det(x.to(torch.float32)).shape == (2, 2)
    assert det.double()(x).dtype == torch.float64  # a float64 model takes float64 input


# ----------------------------------------------------------------------------- reproducible bytes
def test_netcdf_bytes_are_identical_for_identical_data_except_the_volatile_provenance(data_home):
    def record(created, wall):
        ds = xr.Dataset({"p": (("model", "sample"), np.arange(6.0).reshape(2, 3), {"units": "1", "long_name": "p"})},
                        coords={"model": ["a", "b"], "sample": np.arange(3), "group": ("sample", ["x", "y", "z"])})
        ds.attrs = results.provenance({"eps": [0, 0.1]}, profile="quick", seed=0, device="cpu", wall_time_s=wall)
        ds.attrs["created_utc"] = created
        return ds

    a = results.save(record("2026-01-01T00:00:00+00:00", 1.5), data_home / "a.nc")
    time.sleep(1.1)  # HDF5 object times, if they were recorded, would now differ
    b = results.save(record("2026-01-01T00:00:00+00:00", 1.5), data_home / "b.nc")
    assert a.read_bytes() == b.read_bytes()
    c = results.save(record("2027-06-30T12:00:00+00:00", 99.0), data_home / "c.nc")
    assert c.read_bytes() != a.read_bytes()
    la, lc = results.load(a), results.load(c)
    xr.testing.assert_identical(la.drop_attrs(), lc.drop_attrs())
    differ = {k for k in la.attrs if la.attrs[k] != lc.attrs[k]}
    assert differ == set(results.VOLATILE)


# ----------------------------------------------------------------------------- kill and re-run
TWO_WRITES = ("import time, xarray as xr\nfrom dfrobust.core import paths, results\n"
              "results.save(xr.Dataset({'v': ((), n * scale)}), paths.results_dir(profile) / 'first.nc')\n"
              "time.sleep(float(pause))\n"
              "results.save(xr.Dataset({'w': ((), n + scale)}), paths.results_dir(profile) / 'second.nc')\n")
RUN = ("import pathlib, sys\nfrom dfrobust import study\nfrom dfrobust.study import runner\n"
       "s = study.load_study(sys.argv[1])\n"
       "runner.run_study('quick', study=s, only=['mini'], overrides={'pause': sys.argv[3]}, out_dir=pathlib.Path(sys.argv[2]))\n")


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    kids = [int(k) for k in out]
    return kids + [g for k in kids for g in _descendants(k)]


def _runner(spec: Path, out: Path, home: Path, pause: str) -> subprocess.Popen:
    env = {**os.environ, "DFROBUST_DATA_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-c", RUN, str(spec), str(out), pause], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _values(home: Path) -> dict:
    res = home / "results" / "quick"
    return {p.name: results.load(p).drop_attrs().to_dict() for p in sorted(res.glob("*.nc"))}


def _leftovers(home: Path, out: Path) -> list[Path]:
    found = [p for p in home.rglob("*") if p.name.startswith(".stage-") or p.name.endswith(".tmp")]
    return found + list(out.glob("*.partial.ipynb"))


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_results(tmp_path, mini_study):
    s = mini_study(tmp_path, body=TWO_WRITES, extra_params='pause: str = "0"  # seconds between the writes\n')
    clean_home, home = tmp_path / "clean_home", tmp_path / "home"
    p = _runner(s.path, tmp_path / "out_clean", clean_home, "0")
    assert p.wait(120) == 0, p.stdout.read()
    want = _values(clean_home)
    assert set(want) == {"first.nc", "second.nc"}

    p = _runner(s.path, tmp_path / "out", home, "60")
    res = home / "results"
    deadline = time.time() + 90
    while time.time() < deadline and not list(res.glob(".stage-*/quick/first.nc")):
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.2)
    stage = list(res.glob(".stage-*"))
    assert stage and list(res.glob(".stage-*/quick/first.nc")), "the first result is staged mid-run"
    kids = _descendants(p.pid)
    os.kill(p.pid, signal.SIGKILL)  # by pid, mid-run
    p.wait(10)
    for k in kids:  # the kernel notices its parent is gone; make sure before re-running
        for _ in range(50):
            try:
                os.kill(k, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(k, signal.SIGKILL)
    assert not (res / "quick" / "first.nc").exists(), "nothing of the killed run was committed"
    assert stage[0].is_dir(), "the killed run left its stage behind"

    p = _runner(s.path, tmp_path / "out", home, "0")
    log = p.communicate(timeout=120)[0]
    assert p.returncode == 0, log
    assert f"removed the staging folder {stage[0].name}" in log and "(no previous run)" in log
    assert _values(home) == want
    assert not _leftovers(home, tmp_path / "out"), _leftovers(home, tmp_path / "out")


def test_a_stage_of_a_live_run_is_left_alone(data_home):
    from dfrobust.study.runner import clean_stale_stages

    res = data_home / "results"
    res.mkdir()
    live = res / f".stage-mini-{os.getppid()}-abc"
    dead_pid = 2 ** 22 + 12345  # above pid_max's default: never a live process
    dead = res / f".stage-mini-{dead_pid}-xyz"
    foreign = res / ".stage-mini-notapid"
    for d in (live, dead, foreign):
        (d / "quick").mkdir(parents=True)
    assert clean_stale_stages(res, log=lambda m: None) == [dead]
    assert live.is_dir() and foreign.is_dir() and not dead.exists()


def test_identical_training_gives_identical_checkpoint_bytes(tmp_path):
    import torch

    from dfrobust.models import build
    from dfrobust.models.train import save_checkpoint

    torch.manual_seed(0)
    model = build("meso4", input_size=32)
    a = save_checkpoint(model, tmp_path / "a" / "m.pt", seed=0)
    b = save_checkpoint(model, tmp_path / "b" / "m.pt", seed=0)
    assert a.read_bytes() == b.read_bytes()


def test_a_crop_that_cannot_be_written_stops_prepare_without_a_manifest(tmp_path, monkeypatch):
    import cv2

    from dfrobust.data import prepare, scenes

    root = scenes.write_layout(tmp_path / "crops", "crops", n=2)
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: False)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="could not write the face crop"):
        prepare.prepare(root, out_dir=out, crops=True)
    assert not list(out.rglob("manifest.csv"))


def test_every_chapter_that_reads_data_takes_the_data_root():
    import json

    from dfrobust import study

    for nb in study.load_study().notebooks:
        cells = json.loads(nb.template.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        if "get_manifest(" in code:
            assert "data_root" in study.declared_parameters(nb.template), nb.name
            calls = re.findall(r"get_manifest\([^)]*\)", code)
            assert calls and all("data_root=" in c for c in calls), (nb.name, calls)


# ----------------------------------------------------------------------------- issue 27 (and 26): the command line
TINY_STUDY = """\
profiles: {quick: "tiny: the smallest benchmark and training dfrobust train accepts"}
settings:
  synthetic:
    quick: {n_per_group: 5, n_identities: 5, size: 64, n_videos: 1, video_seconds: 0.5, fps: 8, frames_per_video: 4}
  training:
    quick:
      meso4: {input_size: 32, epochs: 1, patience: 1, batch_size: 8, bn_recalib: 0, threads: 1}
notebooks:
  - {name: 01_data, template: notebooks/01_data.ipynb}
"""


def test_dfrobust_train_runs_end_to_end_writes_the_checkpoint_and_exits_0(tmp_path, monkeypatch):
    """Issue 26: ``dfrobust train`` trained and saved, then crashed on a relative import
    (``dfrobust.study.models``). Run on a tiny project (its own study.yml: 60 images, one epoch at 32 px)."""
    from dfrobust.study.cli import app

    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "notebooks" / "study.yml").write_text(TINY_STUDY)
    monkeypatch.setenv("DFROBUST_HOME", str(project))
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(app, ["train", "meso4", "--profile", "quick"])
    assert res.exit_code == 0, (res.output, res.exception)
    ckpts = list((tmp_path / "home" / "checkpoints").glob("meso4-quick-*.pt"))
    assert len(ckpts) == 1 and ckpts[0].with_suffix(".nc").is_file()
    assert f"checkpoint {ckpts[0]} " in res.output and "validation AUC" in res.output


def test_a_relative_data_root_and_data_home_are_taken_from_the_cwd_and_reach_the_kernel_absolute(
        tmp_path, monkeypatch, mini_study):
    """Issue 27: the preflight checked a relative data_root against the shell's cwd, the kernel (which runs
    in the project root) read it against the project root. Both now get the path from where the command
    was typed, resolved once and passed on absolute; so does a relative $DFROBUST_DATA_HOME."""
    import json

    from dfrobust.study import runner

    here = tmp_path / "where_the_user_is"
    (here / "ds").mkdir(parents=True)
    monkeypatch.chdir(here)  # outside the project (found through DFROBUST_HOME)
    monkeypatch.setenv("DFROBUST_HOME", str(ROOT))
    monkeypatch.setenv("DFROBUST_DATA_HOME", "home_rel")
    s = mini_study(tmp_path, extra_params='data_root: str = ""  # a dataset folder\n',
                   body="import json\nfrom dfrobust.core import paths\n"
                        "pathlib.Path(marker).write_text(json.dumps({'root': str(pathlib.Path(data_root).resolve()), "
                        "'is_dir': pathlib.Path(data_root).is_dir(), 'home': str(paths.data_home())}))\n")
    marker = tmp_path / "seen.json"
    plan = runner.plan_study("quick", study=s, overrides={"data_root": "ds", "marker": str(marker)})
    assert plan[0][1]["data_root"] == str((here / "ds").resolve())
    runner.run_study("quick", study=s, overrides={"data_root": "ds", "marker": str(marker)}, out_dir=tmp_path / "out",
                     log=lambda m: None)
    seen = json.loads(marker.read_text())
    assert seen == {"root": str((here / "ds").resolve()), "is_dir": True, "home": str((here / "home_rel").resolve())}


def test_the_cli_shows_where_a_relative_data_root_points(tmp_path, monkeypatch, data_home):
    from dfrobust.study import runner
    from dfrobust.study.cli import app

    (tmp_path / "ds").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DFROBUST_HOME", str(ROOT))
    monkeypatch.setattr(runner, "run_study", lambda *a, **k: [])  # the plan is real; nothing runs
    res = CliRunner().invoke(app, ["run", "01_data", "-p", "data_root=ds"])
    assert res.exit_code == 0, res.output
    assert f"data_root='ds' is {(tmp_path / 'ds').resolve()}" in " ".join(res.output.split())


def test_the_cli_prints_the_runners_log_lines_as_written(monkeypatch, data_home):
    """rich read "[skip]" and "[run ]" as markup and dropped them: the log lines lost their prefixes."""
    from typer.testing import CliRunner

    from dfrobust.study import cli, runner

    monkeypatch.setattr(runner, "plan_study", lambda profile, **kw: [])

    def run_study(profile, *, log, progress, **kw):
        log("[skip] 01_data: unchanged (template, parameters verified)")
        log("[run ] 03_robustness (package changed)")
        return []

    monkeypatch.setattr(runner, "run_study", run_study)
    res = CliRunner().invoke(cli.app, ["book", "--profile", "quick", "--no-build"])
    assert "[skip] 01_data: unchanged" in res.output and "[run ] 03_robustness" in res.output, res.output
