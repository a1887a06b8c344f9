"""The published MesoNet weights as detectors, and the ``real`` profile (issue 26, items 1, 2 and 4).

The tests that read real media use ``../shared/realdata`` (the ``realdata`` fixture skips, with the
reason, where it is absent); nothing they read or write lands in the repository.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfrobust.models import published
from dfrobust.models.keras_h5 import PUBLISHED, keras_preprocess

ROOT = Path(__file__).resolve().parents[1]
REF_FILE = {name: file for name, file in published.PUBLISHED_DETECTORS.items()}


def _reference_manifest(mesonet: Path, split: str = "val") -> tuple[pd.DataFrame, dict]:
    """The four reference crops as a manifest (label from the folder: df = fake) and the Keras P(real)."""
    ref = json.loads((mesonet / "keras_reference.json").read_text())
    images = list(ref["Meso4_DF.h5"])
    df = pd.DataFrame({"path": [str(mesonet / im) for im in images],
                       "label": [0 if "/real/" in im else 1 for im in images],
                       "split": split, "group": "", "identity": images, "dataset": "folder",
                       "manipulation": ["none" if "/real/" in im else "Deepfakes" for im in images]})
    df.attrs["meta"] = {"synthetic": False}
    return df, ref


@pytest.mark.parametrize("name", sorted(published.PUBLISHED_DETECTORS))
def test_published_detector_equals_the_keras_reference_through_the_detector_path(name, realdata, data_home):
    """get_detector (what every chapter calls) and the sweep's load_detector give the Keras model's
    P(real) on the reference crops to 1e-5, read the right way round (p_fake = 1 - P(real))."""
    import torch

    from dfrobust.study import sweep

    mesonet = realdata / "mesonet"
    df, ref = _reference_manifest(mesonet)
    td = published.get_detector(name, df, weights=str(mesonet / "weights"), device="cpu")
    x = keras_preprocess(df["path"].tolist())  # the authors' preprocessing: 256 px, NEAREST, x/255
    keras = np.array([ref[REF_FILE[name]][im] for im in df["identity"]], float)
    with torch.no_grad():
        p_fake = torch.softmax(td.model(x), 1)[:, 1].double().numpy()
        p_fake_sweep = torch.softmax(sweep.load_detector(sweep.detector_ref(name, td.checkpoint), "cpu")(x), 1)[:, 1]
    assert np.abs((1 - p_fake) - keras).max() < 1e-5
    assert np.abs(p_fake_sweep.double().numpy() - p_fake).max() < 1e-6
    # the record the chapters and the gate read: accuracy at 0.5 from the same probabilities
    acc = float(((p_fake >= 0.5).astype(int) == df["label"].to_numpy()).mean())
    assert float(td.record["accuracy"].sel(subset="all")) == pytest.approx(acc)
    assert td.input_size == 256 and td.record.attrs["gate_data"] == "val"


def test_the_weights_hash_lands_in_the_record_and_the_results_provenance(realdata, data_home):
    mesonet = realdata / "mesonet"
    df, _ = _reference_manifest(mesonet)
    trained = {n: published.get_detector(n, df, weights=str(mesonet / "weights"), device="cpu")
               for n in ("meso4_df", "mesoinception_df")}
    prov = json.loads(published.detector_provenance(trained))
    for n, td in trained.items():
        digest = PUBLISHED[REF_FILE[n]]
        assert td.record.attrs["weights_sha256"] == digest
        assert prov[n] == {"file": REF_FILE[n], "sha256": digest, "published": 1}
    # a second call reads the cached record (keyed by the file's digest and the data) and says so
    assert published.get_detector("meso4_df", df, weights=str(mesonet / "weights"), device="cpu").cached


def test_the_gate_reads_every_frame_when_the_data_has_no_validation_split(realdata, data_home):
    from dfrobust.models import quality_gate

    mesonet = realdata / "mesonet"
    df, _ = _reference_manifest(mesonet, split="test")
    td = published.get_detector("meso4_df", df, weights=str(mesonet / "weights"), device="cpu")
    assert td.record.attrs["gate_data"] == "all"
    assert float(td.record["val_auc_best"]) == pytest.approx(float(td.record["auc"].sel(subset="all")))
    assert quality_gate({"meso4_df": td}).loc[0, "val_auc"] == pytest.approx(float(td.record["val_auc_best"]))


def test_published_only_chapters_evaluate_every_split_and_mixed_ones_the_test_split():
    df = pd.DataFrame({"path": list("abcd"), "label": [0, 1, 0, 1], "split": ["train", "train", "val", "test"]})
    out = published.evaluation_manifest(df, ["meso4_df", "mesoinception_df"])
    assert (out["split"] == "test").all() and out["split_official"].tolist() == df["split"].tolist()
    assert published.evaluation_manifest(df, ["meso4", "meso4_df"]) is df


def test_published_names_without_weights_are_one_line_errors_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv(published.WEIGHTS_ENV, raising=False)
    with pytest.raises(ValueError, match=r"models=meso4_df: published detectors need their weights folder; set weights="):
        published.check_weights(["meso4", "meso4_df"], "")
    with pytest.raises(ValueError, match=r"weights='.*nowhere': .* does not exist"):
        published.check_weights(["meso4_df"], str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"no MesoInception_F2F.h5 in"):
        published.check_weights(["mesoinception_f2f"], str(tmp_path))
    assert published.check_weights(["meso4", "resnet34"], "") == {}  # trained detectors need no folder
    monkeypatch.setenv(published.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=r"\$DFROBUST_WEIGHTS=.*: no Meso4_DF.h5"):
        published.check_weights(["meso4_df"], "")


def test_a_relative_weights_folder_is_taken_from_where_the_command_was_typed(tmp_path, monkeypatch, data_home):
    """The kernel runs in the project root: the run passes it the folder's absolute path (like data_root), and a
    ``~user`` that does not exist is one line, not expanduser's RuntimeError."""
    from dfrobust.study import runner

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "Meso4_DF.h5").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert runner.check_data_context({"profile": "quick", "weights": "w"})["weights"] == str(tmp_path / "w")
    assert published.check_weights(["meso4_df"], "w") == {"meso4_df": tmp_path / "w" / "Meso4_DF.h5"}
    with pytest.raises(ValueError, match=r"weights='~nosuchuser_dfr/w': ~nosuchuser_dfr is not a known user"):
        published.check_weights(["meso4_df"], "~nosuchuser_dfr/w")


def test_the_real_profile_checks_a_data_root_from_the_environment_like_paper(tmp_path, monkeypatch, data_home):
    """$DFROBUST_DATA_ROOT is read by the real profile as by paper: checked before anything runs."""
    from dfrobust.study import runner
    from dfrobust.study.spec import StudyError

    monkeypatch.setenv("DFROBUST_DATA_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(StudyError, match=r"\$DFROBUST_DATA_ROOT=.*nowhere.*does not exist"):
        runner.check_data_context({"profile": "real"})


def _cli(*args):
    from typer.testing import CliRunner

    from dfrobust.study.cli import app

    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output or ""


def test_the_real_profile_without_a_data_root_or_weights_stops_in_one_line(data_home, monkeypatch):
    monkeypatch.delenv("DFROBUST_DATA_ROOT", raising=False)
    monkeypatch.delenv(published.WEIGHTS_ENV, raising=False)
    code, out = _cli("book", "--profile", "real")
    assert code == 2, out
    assert "profile='real' runs on a real dataset: set data_root=PATH" in out and "Traceback" not in out
    code, out = _cli("run", "03_robustness", "--profile", "quick", "-p", "models=meso4_df")
    assert code == 2 and "published detectors need their weights folder" in out, out
    assert not (data_home / "results").exists()  # nothing ran


def _text(page: Path) -> str:
    t = re.sub(r"<script.*?</script>|<style.*?</style>|<pre.*?</pre>", "", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


def test_the_real_profile_book_builds_on_the_shared_ffpp_samples(realdata, data_home, tmp_path):
    """The whole study on the four FF++ sample videos with the published weights: every chapter runs or says
    why it cannot, the pages and the landing page name the data, the weights' digests are in the results.

    Cost (2 cores): preparation of 4 videos x 4 frames, then the chapters; the published detectors do not pass
    the quality gate on the samples' one validation pair, so the attack chapters say so instead of attacking."""
    from dfrobust import study
    from dfrobust.core import results
    from dfrobust.study import runner

    book = tmp_path / "book_root"  # the book's skeleton, so the project's own book/generated is left alone
    book.mkdir()
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / f, book / f)
    shutil.copytree(ROOT / "_static", book / "_static")
    shutil.copytree(ROOT / "book", book / "book", ignore=shutil.ignore_patterns("generated"))
    weights = realdata / "mesonet" / "weights"
    runs = runner.run_study("real", study=study.load_study(), out_dir=book / "book" / "generated",
                            overrides={"data_root": str(realdata / "ffpp"), "weights": str(weights)}, log=lambda s: None)
    assert len(runs) == 7
    index = runner.build_book(book, log=lambda s: None)
    label = "real FaceForensics++ (ffpp)"
    intro = _text(index.parent / "book" / "intro.html")
    assert label in intro and "synthetic" not in intro
    pages = {p.stem: _text(p) for p in (index.parent / "book" / "generated").glob("0*.html")}
    for stem in ("02_models", "03_robustness", "04_videos", "05_xai", "07_certified"):
        assert label in pages[stem], stem
        assert "synthetic data" not in pages[stem], stem
    # the published detectors are named, their origin stated, and the gate's reason is on the attack pages
    assert "the MesoNet authors' published weights Meso4_DF.h5" in pages["03_robustness"].replace("’", "'")
    models = results.load(data_home / "results" / "real" / "models.nc")
    passed = [str(m) for m in models.model.values if float(models["val_auc_best"].sel(model=m)) >= 0.7]
    if passed:  # the gate let a detector through: its RA/RR are in the results
        assert (data_home / "results" / "real" / "rr_metrics.nc").is_file()
    else:       # none passed on these samples: each attack chapter says why on its page, nothing crashed
        for stem in ("03_robustness", "04_videos", "05_xai"):
            assert "not analysed: near chance" in pages[stem], stem
        assert "not computed: no MesoNet passed the quality gate" in pages["07_certified"]
    prov = json.loads(models.attrs["detectors"])
    assert prov["meso4_df"]["sha256"] == PUBLISHED["Meso4_DF.h5"]
    assert prov["mesoinception_df"]["sha256"] == PUBLISHED["MesoInception_DF.h5"]


def test_the_group_table_of_data_without_demographic_groups_is_empty_not_an_error():
    """Real datasets carry no demographic labels (group ""): chapter 03 said "No objects to concatenate"."""
    from test_metrics import _records

    from dfrobust.experiments import robustness

    rec = _records([0.9, 0.2, 0.6, 0.3], [[0.85, 0.25, 0.3, 0.3]], [1, 0, 1, 1])
    empty = robustness.group_table(rec.assign_coords(group=("sample", [""] * 4)), eps=0.1, b=0.1, n_boot=100)
    assert empty.empty and list(empty.columns) == ["model", "attack", "group", "metric", "value", "lo", "hi", "n"]
    two = robustness.group_table(rec.assign_coords(group=("sample", ["a", "a", "b", "b"])), eps=0.1, b=0.1, n_boot=100)
    assert sorted(two["group"].unique()) == ["a", "b"] and set(two["metric"]) == {"RA", "RR"}
