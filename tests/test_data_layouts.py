"""Official layouts from synthetic fixtures, crops mode, leak-free splits, the content-keyed cache, relative paths."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dfrobust.data import (
    detection_report,
    get_manifest,
    leaks,
    load_manifest,
    manipulation_counts,
    split_table,
)
from dfrobust.data import prepare as prep
from dfrobust.data.faces import resize_image
from dfrobust.data.scenes import write_layout


def _prep(root, tmp_path, name="p", **kw):
    kw = {"n_frames": 2, "size": 32, "detector": "none", **kw}
    return load_manifest(prep.prepare(root, out_dir=tmp_path / name, **kw))


def test_dfdc_official_layout_pairs_missing_and_orphans(tmp_path):
    root = write_layout(tmp_path / "dfdc", "dfdc")
    assert prep.detect_layout(root) == "dfdc"
    df = _prep(root, tmp_path)
    notes = df.attrs["meta"]["notes"]
    assert notes["missing_files"] == {"count": 1, "files": ["dfdc_train_part_0/gone.mp4"]}
    assert notes["fakes_without_original"] == {"count": 1, "videos": ["dfdc_train_part_0/eeee"]}
    v = df.groupby("video_id")
    assert set(df.video_id) == {f"dfdc_train_part_0/{k}" for k in ("aaaa", "bbbb", "cccc", "dddd", "eeee")}
    pair = {k: set(g.pair_id) for k, g in v}
    assert pair["dfdc_train_part_0/cccc"] == pair["dfdc_train_part_0/aaaa"] == pair["dfdc_train_part_0/dddd"]
    assert pair["dfdc_train_part_0/eeee"] == {""} and pair["dfdc_train_part_0/bbbb"] == {""}
    assert set(df.manipulation) == {"none", "dfdc"}
    # every entry says 'train': the split is by original video, fakes with their original
    assert "splits" in notes and v.split.first()["dfdc_train_part_0/cccc"] == v.split.first()["dfdc_train_part_0/aaaa"]


def test_dfdc_bad_label_is_named(tmp_path):
    part = tmp_path / "d" / "dfdc_train_part_1"
    part.mkdir(parents=True)
    (part / "metadata.json").write_text(json.dumps({"x.mp4": {"label": "MAYBE"}}))
    with pytest.raises(ValueError, match="'x.mp4' has label 'MAYBE'; expected 'FAKE' or 'REAL'"):
        prep.list_media(tmp_path / "d")


def test_ffpp_actors_and_deepfakedetection(tmp_path):
    root = write_layout(tmp_path / "ff", "ffpp_actors")
    df = _prep(root, tmp_path)
    assert set(df.manipulation) == {"none", "DeepFakeDetection", "Deepfakes"}
    f = df[df.video_id == "DeepFakeDetection/01_02__talk__ABCD1234"]
    r = df[df.video_id == "actors/01__talk"]
    assert list(f.pair_id) == list(r.pair_id) and (f.pair_id != "").all()
    assert set(f.identity) == set(r.identity) == {"actor01"} and set(f.split) == set(r.split)
    assert df.attrs["meta"]["notes"]["fakes_without_original"]["videos"] == ["Deepfakes/777_778"]
    assert (df[df.video_id == "Deepfakes/777_778"].pair_id == "").all()


def test_celebdf_and_uadfv_fixtures_prepare(tmp_path):
    c = _prep(write_layout(tmp_path / "c", "celebdf"), tmp_path, "pc")
    assert set(c[c.video_id == "YouTube-real/00000"].split) == {"test"}
    assert (c[c.video_id.str.startswith("Celeb-synthesis")].pair_id != "").all()
    u = _prep(write_layout(tmp_path / "u", "uadfv"), tmp_path, "pu")
    assert u.attrs["meta"]["notes"]["layout"] == "uadfv" and (u.pair_id != "").all()
    assert not leaks(c)["video_id"] and not leaks(u)["identity"]


def test_crops_mode_equals_the_resized_originals(tmp_path, monkeypatch):
    """Given crops are resized, never detected; recognised crops (a detector looks, content decides) likewise."""
    pytest.importorskip("facenet_pytorch")
    root = write_layout(tmp_path / "crops", "crops")
    made = prep.make_detector
    for crops, name in ((True, "given"), (None, "auto")):
        monkeypatch.setattr(prep, "make_detector", (lambda *a, **k: pytest.fail("crops mode must not detect"))
                            if crops else made)
        df = _prep(root, tmp_path, name, crops=crops, size=64)
        assert df.attrs["meta"]["crops"]["mode"] == ("given" if crops else "auto-detected")
        assert len(df) == 24 and (df.frame_index == -1).all() and (df.face_box == "").all()
        for r in df.itertuples():
            src = root / r.video_id / Path(r.path).stem      # crops/<source path>.png
            want = resize_image(cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB), 64)
            got = cv2.cvtColor(cv2.imread(r.path), cv2.COLOR_BGR2RGB)
            assert np.array_equal(got, want), r.path


def test_large_frames_are_not_taken_for_crops(tmp_path):
    root = tmp_path / "f"
    for sub in ("real", "fake"):
        (root / sub).mkdir(parents=True)
        cv2.imwrite(str(root / sub / "a_0001.png"), np.zeros((720, 1280, 3), np.uint8))
    is_crops, why = prep.looks_cropped(prep.list_media(root), detector=None)   # the size rule: nothing detected
    assert not is_crops and "1280x720" in why


def _frame_folder(root: Path, n_videos: int = 30, n_frames: int = 5) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("real", "fake"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for v in range(n_videos):
            for j in range(n_frames):
                cv2.imwrite(str(root / sub / f"clip{v:03d}_frame{j:04d}.png"), rng.integers(0, 255, (32, 32, 3), np.uint8))
        for j in range(n_frames):     # a video as a sub-folder of frames
            (root / sub / "subvid").mkdir(exist_ok=True)
            cv2.imwrite(str(root / sub / "subvid" / f"{j:03d}.png"), rng.integers(0, 255, (32, 32, 3), np.uint8))
    return root


def test_no_leak_frames_of_a_video_share_one_split(tmp_path):
    root = _frame_folder(tmp_path / "frames")
    m = prep.list_media(root)
    assert m.video_id.nunique() == 62 and (m.groupby("video_id").size() == 5).all()
    assert set(m[m.video_id == "real/subvid"].identity) == {"subvid"}
    assert m.groupby("video_id").split.nunique().max() == 1 and m.groupby("identity").split.nunique().max() == 1
    assert set(m.split) == {"train", "val", "test"}           # the hash still spreads the videos
    df = _prep(root, tmp_path, crops=True, size=16)
    assert leaks(df) == {"video_id": [], "identity": []}
    t = split_table(df)
    assert list(t.index) == ["train", "val", "test"] and t.rows.sum() == len(df) == 310
    # a custom regex: the id is the first 6 characters ('clip00' groups clip000..clip009)
    m2 = prep.list_media(root, group_regex=r"^(?P<id>clip\d\d)")
    assert m2[m2.video_id.str.startswith("real/clip")].video_id.nunique() == 3
    with pytest.raises(ValueError, match="group_regex"):
        prep.list_media(root, group_regex="no group")


def test_labels_file_identities_keep_their_videos_together(tmp_path):
    root = _frame_folder(tmp_path / "frames", n_videos=12, n_frames=1)
    rows = [{"video_id": f"clip{v:03d}", "identity": f"person{v % 2}"} for v in range(12)]
    pd.DataFrame(rows).to_csv(root / prep.LABELS_FILE, index=False)
    m = prep.list_media(root)
    assert m[m.identity.isin(["person0", "person1"])].groupby("identity").split.nunique().max() == 1


def test_ffpp_official_splits_win(tmp_path):
    root = write_layout(tmp_path / "ff", "ffpp_actors")
    real = root / "original_sequences" / "youtube" / "c23" / "videos"
    real.mkdir(parents=True)
    (real / "777.mp4").write_bytes((root / "original_sequences/actors/c23/videos/01__talk.mp4").read_bytes())
    (root / "splits").mkdir()
    (root / "splits" / "val.json").write_text(json.dumps([["777", "778"]]))
    m = prep.list_media(root).set_index("video_id")
    assert m.loc["777", "split"] == m.loc["Deepfakes/777_778", "split"] == "val"
    assert m.loc["Deepfakes/777_778", "pair_video"] == "777"


def test_cache_follows_the_folder_content_and_the_options(tmp_path):
    root = write_layout(tmp_path / "u", "uadfv", n=3)
    out = tmp_path / "p"
    first = prep.prepare(root, n_frames=2, size=32, detector="none", out_dir=out)
    stamp = first.stat().st_mtime_ns
    assert prep.prepare(root, n_frames=2, size=32, detector="none", out_dir=out).stat().st_mtime_ns == stamp
    (root / "real" / "0000.mp4").rename(root / "real" / "0009.mp4")          # content changed: re-prepared
    df = load_manifest(prep.prepare(root, n_frames=2, size=32, detector="none", out_dir=out))
    assert "real/0009" in set(df.video_id) and "real/0000" not in set(df.video_id)
    assert (out / "crops" / "real" / "0009.mp4").is_dir()                 # crops/<source path>/<frame>.png
    assert not (out / "crops" / "real" / "0000.mp4").exists()              # stale crops removed
    stamp = (out / "manifest.csv").stat().st_mtime_ns
    df = load_manifest(prep.prepare(root, n_frames=3, size=32, detector="none", out_dir=out))   # option changed
    assert (out / "manifest.csv").stat().st_mtime_ns != stamp and df.frame_index.nunique() == 3
    stamp = (out / "manifest.csv").stat().st_mtime_ns
    prep.prepare(root, n_frames=3, size=32, detector="none", out_dir=out, force=True)
    assert (out / "manifest.csv").stat().st_mtime_ns != stamp


def test_relative_out_and_root_work(tmp_path, monkeypatch):
    write_layout(tmp_path / "ds", "uadfv", n=2)
    monkeypatch.chdir(tmp_path)
    df = load_manifest(prep.prepare("ds", n_frames=2, size=32, detector="none", out_dir="rel/out"))
    assert all(Path(p).is_file() for p in df.path)
    assert Path(df.attrs["meta"]["manifest_path"]) == (tmp_path / "rel" / "out" / "manifest.csv").resolve()


def test_cli_prepare_with_relative_out_and_force(tmp_path, monkeypatch, data_home):
    from typer.testing import CliRunner

    from dfrobust.study.cli import app

    write_layout(tmp_path / "ds", "uadfv", n=2)
    monkeypatch.chdir(tmp_path)
    args = ["data", "prepare", "ds", "--out", "prep", "--n-frames", "2", "--size", "32", "--detector", "none",
            "--layout", "uadfv"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert Path(r.stdout.strip().splitlines()[-1]) == (tmp_path / "prep" / "manifest.csv").resolve()
    assert len(load_manifest(tmp_path / "prep")) == 8 and not any(data_home.rglob("manifest.csv"))
    stamp = (tmp_path / "prep" / "manifest.csv").stat().st_mtime_ns
    assert CliRunner().invoke(app, args + ["--force"]).exit_code == 0
    assert (tmp_path / "prep" / "manifest.csv").stat().st_mtime_ns != stamp
    r = CliRunner().invoke(app, args + ["--detector", "retina"])
    assert r.exit_code == 2 and "detector='retina'" in r.output


def test_get_manifest_with_a_data_root_carries_the_chapter_tables(tmp_path, data_home):
    root = write_layout(tmp_path / "dfdc", "dfdc")
    df = get_manifest("quick", "video_frames", data_root=str(root), detector="none", size=32)
    meta = df.attrs["meta"]
    assert len(meta["detection_report"]) == 5 and {r["video_id"] for r in meta["detection_report"]} == set(df.video_id)
    assert sum(r["rows"] for r in meta["split_table"]) == len(df)
    counts = manipulation_counts(df)
    assert counts.loc["dfdc", "videos"] == 3 and counts.loc["none", "videos"] == 2
    rep = detection_report(df)
    assert list(rep.columns[:3]) == ["video_id", "label", "manipulation"] and (rep.rate == 1.0).all()
