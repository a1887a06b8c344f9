"""Caches that verify what they trust (issue 29): each cached artefact — a chapter's run stamp, a sweep
shard, a chapter's records, a trained checkpoint — is checked against what it claims to be before use;
a mismatch re-runs (the reason in the log) or is refused in one line naming the file and the command
that rebuilds it. Writing a result fails in one line naming the final file."""

from __future__ import annotations

import errno
import os
import shutil

import nbformat
import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from dfrobust.core import paths, results
from dfrobust.study import load_study, runner, sweep
from dfrobust.study.spec import StudyError

WRITE = ("import xarray as xr\nfrom dfrobust.core import paths, results\n"
         "results.save(xr.Dataset({'v': ((), n * scale)}), paths.results_dir(profile) / 'mini.nc')\n")


def _last(lines):
    return [line for line in lines if line.startswith(("[run ]", "[skip]"))][-1]


def _run(s, tmp_path, name="mini", **overrides):
    lines = []
    runner.run_study("quick", study=s, only=[name], overrides=overrides, out_dir=tmp_path / "out", log=lines.append)
    return _last(lines)


# --------------------------------------------------------------------------- 1. the data a chapter reads
def _synthetic_set(home, labels):
    """A stand-in for ``data.synth``'s output: ``synth/quick-s0-<key>/images/manifest.csv`` and two images."""
    folder = home / "synth" / "quick-s0-0123456789" / "images"
    (folder / "real").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (folder / "real" / f"{i}.jpg").write_bytes(b"jpeg bytes")
    (folder / "manifest.csv").write_text("path,label,split\n" + "".join(f"real/{i}.jpg,{y},test\n"
                                                                        for i, y in enumerate(labels)))
    return folder


def test_edited_synthetic_data_reruns_the_chapter(tmp_path, data_home, mini_study):
    s = mini_study(tmp_path, body=WRITE)
    folder = _synthetic_set(data_home, [0, 1])
    assert _run(s, tmp_path).startswith("[run ]")
    assert _run(s, tmp_path).startswith("[skip]")
    manifest = folder / "manifest.csv"
    stat = manifest.stat()
    manifest.write_text(manifest.read_text().replace(",0,", ",1,"))  # a flipped label: same size
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime: only the content says
    assert "synthetic data quick-s0-0123456789/images changed" in _run(s, tmp_path)
    assert _run(s, tmp_path).startswith("[skip]")
    (folder / "real" / "1.jpg").write_bytes(b"other jpeg")  # a replaced image
    assert "images changed" in _run(s, tmp_path)


def test_data_generated_during_or_after_a_run_does_not_rerun_it(tmp_path, data_home, mini_study):
    # the run itself makes the set (as chapter 01 does): the stamp, written after the run, records it
    s = mini_study(tmp_path, body=WRITE + "from pathlib import Path\n"
                   "from dfrobust.core import paths\n"
                   "d = paths.synth_dir() / 'quick-s0-abc' / 'images'\nd.mkdir(parents=True, exist_ok=True)\n"
                   "(d / 'manifest.csv').write_text('path,label\\n')\n")
    assert _run(s, tmp_path).startswith("[run ]")
    assert _run(s, tmp_path).startswith("[skip]")
    other = data_home / "synth" / "quick-s0-abc" / "video_frames"  # made later by another chapter
    other.mkdir()
    (other / "manifest.csv").write_text("path,label\n")
    assert _run(s, tmp_path).startswith("[skip]")


# --------------------------------------------------------------------------- 5. chapters that summarise others
def _two_chapter_study(tmp_path):
    """``up`` writes a result; ``summary`` reads ``up``'s stamp (``reads: [up]`` in the spec)."""
    specs = []
    for name, body in (("up", WRITE), ("summary", "import json, pathlib\n")):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        p = nbformat.v4.new_code_cell('profile: str = "quick"  # study profile\nn: int = 2  # how many\n'
                                      "scale: float = 1.0  # a factor\n")
        p.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), p, nbformat.v4.new_code_cell(body)]
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
        specs.append({"name": name, "template": str(tmp_path / f"{name}.ipynb"), "params": {}})
    specs[1]["reads"] = ["up"]
    (tmp_path / "study.yml").write_text(yaml.safe_dump({"profiles": {"quick": "q"}, "notebooks": specs}))
    return load_study(tmp_path / "study.yml")


def test_a_summarising_chapter_reruns_when_a_chapter_it_reads_reran(tmp_path, data_home):
    s = _two_chapter_study(tmp_path)
    _run(s, tmp_path, "up")
    assert _run(s, tmp_path, "summary").startswith("[run ]")
    assert _run(s, tmp_path, "summary").startswith("[skip]")
    assert _run(s, tmp_path, "up", n=3).startswith("[run ]")
    assert "up re-ran since this run" in _run(s, tmp_path, "summary")
    assert _run(s, tmp_path, "summary").startswith("[skip]")


def test_the_performance_appendix_reads_every_other_chapter():
    s = load_study()
    others = [nb.name for nb in s.notebooks if nb.name != "06_performance"]
    assert sorted(s.notebook("06_performance").reads) == sorted(others)
    assert s.notebook("04_videos").reads == ("03_robustness",)


# --------------------------------------------------------------------------- 2. sweep shards
@pytest.fixture(scope="module")
def toy_cells(tmp_path_factory):
    """One random-weight Meso4 at 32 px, FGSM and PGD, 4 **synthetic** noise images in one shard."""
    import cv2
    import pandas as pd

    from dfrobust.models import build
    from dfrobust.models.train import save_checkpoint

    tmp = tmp_path_factory.mktemp("shards")
    torch.manual_seed(0)
    ref = sweep.detector_ref("meso4", save_checkpoint(build("meso4", 32).eval(), tmp / "meso4.pt"))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        p = tmp / f"{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        rows.append({"path": str(p), "label": i % 2, "group": "g", "split": "test", "dataset": "synthetic"})
    cells = sweep.plan_cells("03_robustness", [ref], ["fgsm", "pgd"], [0.0, 0.02], pd.DataFrame(rows), size=32, seed=0,
                             attack_kw={"pgd": {"steps": 2}}, batch_size=4)
    return tmp, cells


def test_a_shard_copied_over_another_cells_name_is_recomputed(toy_cells):
    tmp, cells = toy_cells
    out = tmp / "sweep"
    assert not sweep.run_cells(cells, out).failed
    before = sweep.merge_shards(cells, out)
    fgsm, pgd = (next(c for c in cells if c.attack == a) for a in ("fgsm", "pgd"))
    shutil.copy(sweep.shard_path(fgsm, out), sweep.shard_path(pgd, out))
    rep = sweep.run_cells(cells, out)
    assert rep.computed == [pgd.name] and rep.skipped == [fgsm.name], "a foreign shard counted as already there"
    xr.testing.assert_identical(sweep.merge_shards(cells, out).drop_attrs(), before.drop_attrs())
    shutil.copy(sweep.shard_path(fgsm, out), sweep.shard_path(pgd, out))
    assert sweep.shard_problem(sweep.shard_path(pgd, out)) == f"holds cell {fgsm.name}, not {pgd.name}"


# --------------------------------------------------------------------------- 3. a chapter's records
def test_records_copied_over_another_results_name_are_refused_in_one_line(data_home):
    from dfrobust.experiments import videos

    res = paths.results_dir("quick")
    results.save(xr.Dataset({"v": (("sample",), [1.0, 2.0])}), res / "video_records.nc")
    shutil.copy(res / "video_records.nc", res / "rr_records.nc")
    with pytest.raises(OSError) as info:
        results.load(res / "rr_records.nc")
    msg = str(info.value)
    assert "\n" not in msg and "rr_records.nc: this file holds quick/video_records.nc, not quick/rr_records.nc" in msg
    assert "rebuild it with: dfrobust run" in msg
    computed = []
    with pytest.raises(OSError, match="holds quick/video_records.nc"):  # chapter 04's loader of 03's records
        videos.image_records("quick", eps_grid=[0.0, 0.01], attack_kw={}, seed=0, models=["meso4"],
                             attacks=["fgsm"], n_units=2, compute=lambda: computed.append(1))
    assert not computed
    # another profile's records copied into this profile's folder
    other = paths.results_dir("default") / "rr_records.nc"
    shutil.copy(res / "video_records.nc", other)
    with pytest.raises(OSError, match="not default/rr_records.nc"):
        results.load(other)
    assert results.load(res / "video_records.nc").attrs["result"] == "quick/video_records.nc"  # its own name: read


# --------------------------------------------------------------------------- 4. checkpoints
def test_a_checkpoint_made_for_another_profile_and_seed_is_not_loaded_as_the_cached_one(tmp_path, monkeypatch,
                                                                                      capsys):
    from test_models import FAST, _tiny_manifest

    from dfrobust.models import build
    from dfrobust.models.train import get_trained, load_checkpoint, predict_proba, save_checkpoint

    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path / "home"))
    df = _tiny_manifest(tmp_path / "data")
    td = get_trained("meso4", df, profile="quick", seed=0, device="cpu", **{**FAST, "epochs": 2})
    torch.manual_seed(5)  # another detector, saved as made for profile default, seed 7, other data
    save_checkpoint(build("meso4", 32).eval(), td.checkpoint, profile="default", seed=7, hparams=td.hparams,
                    data_fingerprint="elsewhere")
    capsys.readouterr()
    again = get_trained("meso4", df, profile="quick", seed=0, device="cpu", **{**FAST, "epochs": 2})
    assert not again.cached, "a foreign checkpoint at the cached path was trusted"
    assert "NOTICE: checkpoint" in capsys.readouterr().out
    x = torch.rand(4, 3, 32, 32)
    np.testing.assert_array_equal(predict_proba(again.model, x), predict_proba(td.model, x))  # retrained: the same
    assert get_trained("meso4", df, profile="quick", seed=0, device="cpu", **{**FAST, "epochs": 2}).cached
    with pytest.raises(ValueError, match="saved with data_fingerprint='.*'; expected data_fingerprint='mine'"):
        load_checkpoint(td.checkpoint, "meso4", expect={"data_fingerprint": "mine"})  # CheckpointMismatch


# --------------------------------------------------------------------------- 6. writing a result
@pytest.mark.parametrize("kind", [RuntimeError, OSError])
def test_an_hdf5_error_while_writing_a_result_is_one_line_naming_the_final_file(data_home, monkeypatch, kind):
    target = paths.results_dir("quick") / "rr_records.nc"

    def hdf5_full(self, *a, **k):  # HDF5's text (h5py raises it as an OSError without errno, or a RuntimeError)
        tmp = target.parent / ".rr_records.nc.abcd1234.tmp"
        raise kind(f"Can't close file (file write failed: time = Thu Dec  3 17:58:18 2026\n, filename = '{tmp}', "
                   f"file descriptor = 3, errno = {errno.ENOSPC}, error message = 'No space left on device', "
                   "buf = 0x1, total write size = 2048, bytes this sub-write = 2048, offset = 4096)")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", hdf5_full)
    with pytest.raises(OSError) as info:
        results.save(xr.Dataset({"v": ((), 1.0)}), target)
    msg = str(info.value)
    assert "\n" not in msg and info.value.errno == errno.ENOSPC
    assert f"{target}: cannot write the result (No space left on device); nothing was written there" in msg
    assert ".tmp" not in msg
    assert not list(target.parent.iterdir()), "the temporary file is removed"


def test_a_full_disk_while_writing_a_result_is_one_line_and_leaves_nothing(data_home, monkeypatch):
    """The bytes are made in memory and written with plain I/O, so a full disk is the OS's ENOSPC (HDF5
    writing to a full disk itself reports it in object destructors, or crashes the process)."""
    target = paths.results_dir("quick") / "rr_records.nc"
    results.save(xr.Dataset({"v": ((), 1.0)}), target)
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data)[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError) as info:
        results.save(xr.Dataset({"v": ((), 2.0)}), target)
    assert f"{target}: cannot write the result (No space left on device)" in str(info.value)
    monkeypatch.undo()
    assert [p.name for p in target.parent.iterdir()] == ["rr_records.nc"], "no temporary file left"
    assert float(results.load(target)["v"]) == 1.0, "the previous result is kept"


def test_dfrobust_sweep_says_a_records_write_error_in_one_line(monkeypatch, data_home):
    """results.save's one-line OSError (a full disk) reaches the user of ``dfrobust sweep`` as one line, exit 1."""
    from typer.testing import CliRunner

    from dfrobust.study import sweep as S
    from dfrobust.study import sweep_cli

    monkeypatch.setattr(sweep_cli, "_plan", lambda profile, param, device: ([], {}, {}, "cpu"))
    monkeypatch.setattr(S, "describe_plan", lambda cells: {"cells": 0, "detectors": [], "attacks": [], "shards": 0,
                                                           "samples": 0, "eps": 0})

    def full(*a, **k):
        raise OSError("[Errno 28] /x/results/quick/rr_records.nc: cannot write the result (No space left on device)")

    monkeypatch.setattr(S, "run_chapter", full)
    res = CliRunner().invoke(sweep_cli.app, ["--profile", "quick"])
    assert res.exit_code == 1, res.output
    errors = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "rr_records.nc" in errors[0] and "No space left" in errors[0]
    assert "Traceback" not in res.output


def test_a_reads_entry_naming_no_notebook_is_refused_when_the_spec_loads(tmp_path):
    s = _two_chapter_study(tmp_path)
    spec = yaml.safe_load((tmp_path / "study.yml").read_text())
    spec["notebooks"][1]["reads"] = ["up", "uq"]
    (tmp_path / "study.yml").write_text(yaml.safe_dump(spec))
    with pytest.raises(StudyError, match=r"notebook 'summary' reads \['uq'\]; expected notebooks of the study"):
        load_study(tmp_path / "study.yml")
    assert s.notebook("summary").reads == ("up",)
