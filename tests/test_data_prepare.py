"""Real-dataset preparation: layouts, even sampling, face crops, bad input; FF++ samples when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dfrobust.data import manifest as mf
from dfrobust.data import prepare as prep
from dfrobust.data.faces import Face
from dfrobust.data.video import even_indices, read_frames, write_mp4


def _index_video(path: Path, n: int, size: int = 64, fps: int = 10) -> Path:
    """Frame k is a flat grey of brightness 4k + 20 (decodable back to its index)."""
    frames = np.stack([np.full((size, size, 3), 20 + 4 * k, np.uint8) for k in range(n)])
    return write_mp4(frames, path, fps=fps, crf=10)


def test_even_indices_cover_the_whole_video():
    idx = even_indices(100, 4)
    assert list(idx) == sorted(idx) and len(idx) == 4
    assert idx[0] < 25 and idx[-1] >= 75
    assert np.ptp(np.diff(idx)) <= 1
    assert list(even_indices(3, 8)) == [0, 1, 2]


def test_read_frames_samples_evenly_not_the_first_n(tmp_path):
    p = _index_video(tmp_path / "v.mp4", 40)
    frames, idx = read_frames(p, 5)
    assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8
    assert idx[-1] >= 30 and idx[0] < 8
    decoded = np.round((frames.reshape(5, -1).mean(1) - 20) / 4).astype(int)
    assert np.abs(decoded - idx).max() <= 1


def _folder_dataset(root: Path) -> Path:
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir(parents=True)
    _index_video(root / "real" / "a.mp4", 12)
    _index_video(root / "fake" / "a.mp4", 12)
    (root / "fake" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    good = (root / "real" / "a.mp4").read_bytes()
    (root / "fake" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    cv2.imwrite(str(root / "real" / "img.png"), np.full((40, 50, 3), 128, np.uint8))
    (root / "real" / "broken.png").write_bytes(b"not a png")
    return root


def test_folder_layout_skips_and_lists_unreadable_files(tmp_path):
    root = _folder_dataset(tmp_path / "ds")
    assert prep.detect_layout(root) == "folder"
    out = prep.prepare(root, n_frames=3, size=32, detector="none", out_dir=tmp_path / "prep")
    df = mf.load_manifest(out)
    meta = df.attrs["meta"]
    skipped = {Path(s["path"]).name: s["reason"] for s in meta["skipped"]}
    assert set(skipped) == {"corrupt.mp4", "truncated.mp4", "broken.png"}
    assert "truncated" in skipped["truncated.mp4"] or "corrupt" in skipped["truncated.mp4"]
    assert meta["n_skipped"] == 3 and meta["n_media"] == 6
    assert len(df) == 3 + 3 + 1
    assert all(cv2.imread(p).shape == (32, 32, 3) for p in df.path)
    assert set(df.dataset) == {"folder"} and set(df.label) == {0, 1}
    assert Path(out).resolve().is_relative_to(tmp_path.resolve())


def test_frames_without_a_face_are_counted_not_crashing(tmp_path):
    root = tmp_path / "ds"
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir(parents=True)
    _index_video(root / "real" / "blank.mp4", 10)
    face = np.zeros((64, 64, 3), np.uint8)
    cv2.imwrite(str(root / "fake" / "blank.png"), face)
    with pytest.raises(ValueError, match="no usable frames"):
        prep.prepare(root, n_frames=2, size=32, detector="haar", out_dir=tmp_path / "prep")


def test_no_face_frames_listed_in_meta(tmp_path, monkeypatch):
    root = _folder_dataset(tmp_path / "ds")
    calls = {"n": 0}

    def every_other(self, rgb):          # a detector that finds a face in every second frame
        calls["n"] += 1
        return [Face(0, 0, 36, 36, 0.99)] if calls["n"] % 2 else []

    monkeypatch.setattr(prep.HaarFaceDetector, "detect", every_other)
    df = mf.load_manifest(prep.prepare(root, n_frames=4, size=32, detector="haar", out_dir=tmp_path / "p"))
    meta = df.attrs["meta"]
    assert meta["n_frames_no_face"] == calls["n"] // 2 > 0
    assert len(df) + meta["n_frames_no_face"] == meta["n_frames_sampled"] == calls["n"]
    assert all(r["reason"] == "no face detected" for r in meta["no_face"])


@pytest.mark.parametrize("make, exc, word", [
    (lambda p: p / "missing", FileNotFoundError, "does not exist"),
    (lambda p: (p / "x").mkdir() or p, ValueError, "unknown dataset layout"),
])
def test_bad_roots(tmp_path, make, exc, word):
    with pytest.raises(exc, match=word):
        prep.prepare(make(tmp_path), out_dir=tmp_path / "out")


def test_bad_parameters_fail_before_work(tmp_path):
    root = _folder_dataset(tmp_path / "ds")
    for kw, word in ((dict(layout="youtube"), "layout"), (dict(n_frames=0), "n_frames"), (dict(margin=0.5), "margin"),
                     (dict(detector="retina"), "detector"), (dict(size=4), "size")):
        with pytest.raises(ValueError, match=word):
            prep.prepare(root, out_dir=tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="n="):
        read_frames(root / "real" / "a.mp4", 0)


def test_ffpp_layout_reader_pairs_and_official_splits(tmp_path):
    root = tmp_path / "ff"
    real = root / "original_sequences" / "youtube" / "c23" / "videos"
    fake = root / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"
    for v in ("000", "003", "010"):
        _index_video(real / f"{v}.mp4", 8)
    _index_video(fake / "000_003.mp4", 8)
    _index_video(fake / "003_000.mp4", 8)
    (root / "splits").mkdir()
    (root / "splits" / "train.json").write_text(json.dumps([["000", "003"]]))
    (root / "splits" / "test.json").write_text(json.dumps([["010", "011"]]))
    media = prep.list_media(root)
    assert media.attrs["notes"]["layout"] == "ffpp"
    assert dict(zip(media.video_id, media.split)) == {"000": "train", "003": "train", "010": "test",
                                                     "Deepfakes/000_003": "train", "Deepfakes/003_000": "train"}
    df = mf.load_manifest(prep.prepare(root, n_frames=2, size=32, detector="none", out_dir=tmp_path / "p"))
    f = df[df.video_id == "Deepfakes/000_003"]
    r = df[df.video_id == "000"]
    assert list(f.pair_id) == list(r.pair_id) and (f.pair_id != "").all()
    assert (df[df.video_id == "010"].pair_id == "").all()   # no fake made from it
    assert set(df.manipulation) == {"none", "Deepfakes"}


def test_celebdf_and_uadfv_layouts(tmp_path):
    c = tmp_path / "celeb"
    _index_video(c / "Celeb-real" / "id0_0001.mp4", 6)
    _index_video(c / "Celeb-synthesis" / "id0_id1_0001.mp4", 6)
    _index_video(c / "YouTube-real" / "00001.mp4", 6)
    (c / "List_of_testing_videos.txt").write_text("1 YouTube-real/00001.mp4\n")
    m = prep.list_media(c)
    assert m.attrs["notes"]["layout"] == "celebdf"
    assert dict(zip(m.video_id, m.label)) == {"Celeb-real/id0_0001": 0, "Celeb-synthesis/id0_id1_0001": 1,
                                             "YouTube-real/00001": 0}
    assert m.set_index("video_id").loc["YouTube-real/00001", "split"] == "test"
    assert m.set_index("video_id").loc["Celeb-synthesis/id0_id1_0001", "pair_video"] == "id0_0001"
    u = tmp_path / "uadfv"
    _index_video(u / "real" / "0001.mp4", 6)
    _index_video(u / "fake" / "0001_fake.mp4", 6)
    m = prep.list_media(u)
    assert m.attrs["notes"]["layout"] == "uadfv" and set(m.identity) == {"0001"}
    assert m.split.nunique() == 1


def test_manifest_roundtrip_relative_paths(tmp_path):
    img = tmp_path / "d" / "x.png"
    img.parent.mkdir()
    cv2.imwrite(str(img), np.zeros((10, 12, 3), np.uint8))
    df = pd.DataFrame([{"path": str(img), "label": 1, "dataset": "folder", "manipulation": "m", "video_id": "",
                        "frame_index": -1, "group": "", "identity": "x", "pair_id": "", "split": "test"}])
    p = mf.save_manifest(df, tmp_path / "d", {"note": 1})
    assert pd.read_csv(p).path.iloc[0] == "x.png"
    back = mf.load_manifest(p)
    assert back.path.iloc[0] == str(img.resolve()) and back.attrs["meta"]["note"] == 1
    x = mf.load_images(back, 16)
    assert tuple(x.shape) == (1, 3, 16, 16) and float(x.max()) == 0.0
    with pytest.raises(ValueError, match="label"):
        mf.save_manifest(df.assign(label=2), tmp_path / "e")
    with pytest.raises(ValueError, match="column"):
        mf.save_manifest(df.drop(columns="split"), tmp_path / "e")


def test_real_ffpp_samples_faces_found_and_crops_sized(tmp_path, realdata):
    """Two real FF++ c23 pairs (../shared/realdata): Haar finds a face in >= 95% of sampled frames."""
    src = realdata / "ffpp"
    root = tmp_path / "ffpp"      # link the 004 pair only (keeps the test fast); nothing lands in the repo
    for rel in ("original_sequences/youtube/c23/videos/004.mp4",
                "manipulated_sequences/NeuralTextures/c23/videos/004_982.mp4",
                "splits/train.json", "splits/val.json", "splits/test.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(src / rel)
    df = mf.load_manifest(prep.prepare(root, n_frames=6, size=128, out_dir=tmp_path / "prep"))
    meta = df.attrs["meta"]
    assert meta["n_frames_sampled"] == 12 and meta["n_skipped"] == 0
    assert meta["face_rate"] >= 0.95
    assert all(cv2.imread(p).shape == (128, 128, 3) for p in df.path)
    assert (df.frame_index.groupby(df.video_id).max() > 200).all()      # sampled over the whole clip
    official = {v: s for s in ("train", "val", "test")
                for pair in json.loads((src / "splits" / f"{s}.json").read_text()) for v in pair}
    assert set(df.split) == {official["004"]}
    assert set(df.manipulation) == {"none", "NeuralTextures"} and (df.pair_id != "").sum() >= 10
    det = meta["detection"]
    assert {r["video_id"] for r in det["per_video"]} == set(df.video_id) and not det["low_rate_videos"]
    assert all(r["rate"] >= 0.95 for r in det["per_video"])
    # one face per video: the crop boxes of a video stay on one face (the 004 pair: one seated speaker)
    for _, g in df.groupby("video_id"):
        boxes = np.array([[int(v) for v in b.split(",")] for b in g.face_box], float)
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        assert (np.ptp(centres, axis=0) < boxes[:, 2:].max(axis=0)).all()
        assert (boxes[:, 2] >= 60).all() and (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 1290).all()
