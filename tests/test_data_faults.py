"""Data preparation under hostile or careless input (issues 26, 27): paths outside the root, crop names that
collide, unreadable folders, tiny faces, late label checks, decompression bombs, out-of-range options,
crop folders by content, video ids from file names."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dfrobust.data import leaks, load_manifest
from dfrobust.data import prepare as prep
from dfrobust.data.faces import resize_image
from dfrobust.data.scenes import face_clip, scene_frames, write_layout
from dfrobust.data.video import write_mp4


def _img(path: Path, h: int = 40, w: int = 40, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8))
    return path


def _folder(root: Path, names=("a_0001.png", "a_0002.png"), fake=("b_0001.png",)) -> Path:
    for k, n in enumerate(names):
        _img(root / "real" / n, seed=k)
    for k, n in enumerate(fake):
        _img(root / "fake" / n, seed=100 + k)
    return root


def _prepared(root, tmp_path, **kw):
    return load_manifest(prep.prepare(root, out_dir=tmp_path / "out", **{"size": 32, "crops": True, **kw}))


def _cli(*args):
    from dfrobust.study.cli import app

    return CliRunner().invoke(app, ["data", "prepare", *map(str, args)])


# ------------------------------------------------------------------ issue 27: paths, names, folders, sizes

def test_dfdc_metadata_cannot_reach_outside_the_root(tmp_path, monkeypatch):
    """`../../outside/secret.mp4` (and an absolute name) in metadata.json: skipped with the reason, never read."""
    root = write_layout(tmp_path / "ds", "dfdc", n=2)
    secret = write_mp4(face_clip(7, 2, 64), tmp_path / "outside" / "secret.mp4", fps=5)
    mfile = root / "dfdc_train_part_0" / "metadata.json"
    meta = json.loads(mfile.read_text())
    meta["../../outside/secret.mp4"] = {"label": "REAL", "split": "train"}
    meta[str(secret)] = {"label": "REAL", "split": "train"}
    mfile.write_text(json.dumps(meta))
    opened = []
    read = prep.read_frames
    monkeypatch.setattr(prep, "read_frames", lambda p, n: opened.append(Path(p).resolve()) or read(p, n))
    df = _prepared(root, tmp_path, crops=None, detector="none")
    assert opened and all(root.resolve() in p.parents for p in opened)
    assert not any("secret" in p for p in df.path) and not any("secret" in v for v in df.video_id)
    out = [s for s in df.attrs["meta"]["skipped"] if "secret" in s["path"]]
    assert len(out) == 2 and all("outside the dataset root" in s["reason"] for s in out)
    assert df.attrs["meta"]["n_skipped"] == 2


def test_same_stem_with_two_extensions_gives_two_crops(tmp_path):
    """real/dup_0001.png and real/dup_0001.jpg: two crop files, each the resized image of its own source."""
    root = _folder(tmp_path / "ds", names=())
    _img(root / "real" / "dup_0001.png", seed=1)
    _img(root / "real" / "dup_0001.jpg", seed=2)
    df = _prepared(root, tmp_path, size=40)
    real = df[df.label == 0]
    assert len(real) == 2 and real.path.nunique() == 2
    for r in real.itertuples():
        src = root / "real" / Path(r.path).stem                     # crops/real/dup_0001.jpg.png
        want = cv2.imread(str(src))
        assert np.array_equal(cv2.imread(r.path), want), r.path


def test_an_unreadable_sub_folder_is_counted_not_taken_for_empty(tmp_path, monkeypatch, data_home):
    """chmod 000 as an unprivileged user (we run as root: listing that folder raises PermissionError, and so does
    reading one file); the command line says "2 skipped" and why, where it said "0 skipped"."""
    root = _folder(tmp_path / "ds", names=())
    for j in range(2):
        _img(root / "real" / "vid_a" / f"{j:04d}.png", seed=j)
        _img(root / "real" / "vid_b" / f"{j:04d}.png", seed=10 + j)
    _img(root / "fake" / "vid_c" / "0000.png")
    locked, closed = (root / "real" / "vid_b").resolve(), (root / "fake" / "vid_c" / "0000.png").resolve()
    scandir, read_bytes = os.scandir, Path.read_bytes

    def guarded(path="."):
        if Path(os.fsdecode(path)) == locked:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return scandir(path)

    def guarded_read(self):
        if self.resolve() == closed:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(os, "scandir", guarded)
    monkeypatch.setattr(Path, "read_bytes", guarded_read)
    r = _cli(root, "--out", tmp_path / "out", "--crops", "--size", "32")
    assert r.exit_code == 0, r.output
    assert "(2 skipped)" in r.output and "folder not readable (Permission denied)" in r.output
    df = load_manifest(tmp_path / "out")
    meta = df.attrs["meta"]
    assert not (df.video_id == "real/vid_b").any() and (df.video_id == "real/vid_a").sum() == 2
    why = {Path(s["path"]).resolve(): s["reason"] for s in meta["skipped"]}
    assert set(why) == {locked, closed} and "not readable" in why[locked] and "Permission denied" in why[closed]


@pytest.mark.parametrize("kw", [{"crops": True}, {"crops": False, "detector": "none"}])
def test_a_one_pixel_image_is_not_a_face(tmp_path, kw):
    root = _folder(tmp_path / "ds")
    _img(root / "real" / "tiny_0001.png", 1, 1)
    _img(root / "real" / "thin_0001.png", 20, 300)          # short side 20 < MIN_FACE
    df = _prepared(root, tmp_path, **kw)
    skipped = {Path(s["path"]).name: s["reason"] for s in df.attrs["meta"]["skipped"]}
    assert set(skipped) == {"tiny_0001.png", "thin_0001.png"}
    assert "1x1 px" in skipped["tiny_0001.png"] and f"minimum face size of {prep.MIN_FACE} px" in skipped["tiny_0001.png"]
    assert len(df) == 3 and not df.path.str.contains("tiny|thin").any()


def test_a_detected_face_under_the_minimum_is_counted(tmp_path, monkeypatch):
    from dfrobust.data import faces as fc

    root = tmp_path / "ds"
    for sub in ("real", "fake"):
        _img(root / sub / "a_0001.png", 64, 64)
    sizes = iter([40, 12])                                # real: a 40 px face, fake: a 12 px face

    def detect(self, rgb):
        s = next(sizes)
        return [fc.Face(5, 5, s, s, 0.99)]

    monkeypatch.setattr(fc.HaarFaceDetector, "detect", detect)
    df = _prepared(root, tmp_path, crops=False, detector="haar")
    assert list(df.label) == [0]
    (nf,) = df.attrs["meta"]["no_face"]
    assert Path(nf["path"]).parts[-2] == "fake" and "12x12 px: under the minimum face size of 32 px" in nf["reason"]


def test_a_bad_labels_file_is_refused_before_any_crop(tmp_path, monkeypatch):
    """split=holdout: one line naming the file and the value; nothing read, nothing written."""
    root = _folder(tmp_path / "ds")
    pd.DataFrame([{"video_id": "a", "group": "", "identity": "p1", "split": "holdout"}]).to_csv(
        root / prep.LABELS_FILE, index=False)
    monkeypatch.setattr(prep, "read_rgb", lambda p: pytest.fail("an image was read before the labels were checked"))
    with pytest.raises(ValueError, match=r"dfrobust_labels\.csv: split value\(s\) \['holdout'\]") as err:
        _prepared(root, tmp_path)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    (root / prep.LABELS_FILE).write_text("video_id,group\na,\na,\n")
    with pytest.raises(ValueError, match=r"video_id \['a'\] listed more than once"):
        _prepared(root, tmp_path)


def test_a_run_that_fails_midway_removes_its_crops(tmp_path, monkeypatch):
    root = _folder(tmp_path / "ds")
    write = cv2.imwrite
    calls = []

    def second_fails(path, img):
        calls.append(path)
        return len(calls) < 2 and write(path, img)

    monkeypatch.setattr(cv2, "imwrite", second_fails)
    with pytest.raises(OSError, match="could not write the face crop"):
        _prepared(root, tmp_path)
    assert len(calls) == 2 and Path(calls[0]).is_relative_to(tmp_path / "out")
    assert not (tmp_path / "out").exists()                 # the first crop went with the refused run


def _png_header(path: Path, w: int, h: int) -> Path:
    """A PNG that claims w x h pixels (a few hundred bytes on disk)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_skipped_not_fatal(tmp_path):
    from dfrobust.data.manifest import read_rgb

    root = _folder(tmp_path / "ds")
    bomb = _png_header(root / "real" / "bomb_0001.png", 20000, 20000)
    with pytest.raises(ValueError, match="too large to decode"):
        read_rgb(bomb)
    df = _prepared(root, tmp_path)
    (s,) = df.attrs["meta"]["skipped"]
    assert Path(s["path"]).name == "bomb_0001.png" and "too large to decode" in s["reason"]
    assert len(df) == 3


@pytest.mark.parametrize("args, word", [
    (["--margin", "inf"], "margin=inf"), (["--margin", "nan"], "margin=nan"), (["--margin", "5"], "margin=5.0"),
    (["--size", "60000"], "size=60000"), (["--size", "8"], "size=8"), (["--min-face", "0"], "min_face=0"),
    (["--names", "frames"], "names='frames'"),
])
def test_out_of_range_options_are_one_line_before_any_listing(tmp_path, monkeypatch, data_home, args, word):
    root = _folder(tmp_path / "ds")
    monkeypatch.setattr(prep, "list_media", lambda *a, **k: pytest.fail("the dataset was listed before the check"))
    r = _cli(root, "--out", tmp_path / "out", "--crops", *args)
    assert r.exit_code == 2, r.output
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert line.startswith("error:") and word in line


@pytest.mark.parametrize("kw, word", [({"margin": float("inf")}, r"margin=inf: expected a finite number in \[1.0, 4.0\]"),
                                      ({"size": 60000}, r"size=60000: expected an int in \[16, 1024\]")])
def test_the_data_layer_checks_the_ranges_for_every_caller(tmp_path, monkeypatch, kw, word):
    monkeypatch.setattr(prep, "list_media", lambda *a, **k: pytest.fail("the dataset was listed before the check"))
    with pytest.raises(ValueError, match=word):
        prep.prepare(_folder(tmp_path / "ds"), out_dir=tmp_path / "out", **kw)


# ------------------------------------------------------------------ issue 26: crops by content, video ids

def test_non_square_face_crops_are_recognised_by_content(tmp_path, data_home):
    """MTCNN-style crops (50-130 px, width/height ~0.7) of the synthetic faces: crops mode, said on the CLI."""
    pytest.importorskip("facenet_pytorch")
    root = tmp_path / "crops"
    for k, (w, h) in enumerate([(50, 70), (60, 84), (90, 130), (66, 92), (80, 112), (56, 80)]):
        sub = "real" if k % 2 else "fake"
        im = cv2.resize(face_clip(k, 1, 256)[0], (w, h), interpolation=cv2.INTER_AREA)
        (root / sub / f"v{k}").mkdir(parents=True)
        cv2.imwrite(str(root / sub / f"v{k}" / "0000.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    r = _cli(root, "--out", tmp_path / "out", "--size", "64")
    assert r.exit_code == 0, r.output
    meta = load_manifest(tmp_path / "out").attrs["meta"]
    assert meta["crops"]["mode"] == "auto-detected" and meta["detection"]["detector"] == "none (crops mode)"
    assert "mode: crops" in r.output and "a face spans" in r.output
    for p in load_manifest(tmp_path / "out").path:                  # resized whole, not re-cropped
        src = root / Path(p).relative_to(tmp_path / "out" / "crops").parent / Path(p).stem
        assert np.array_equal(cv2.imread(p), cv2.cvtColor(resize_image(cv2.cvtColor(cv2.imread(str(src)),
                              cv2.COLOR_BGR2RGB), 64), cv2.COLOR_RGB2BGR))


def test_frames_with_a_small_face_are_not_taken_for_crops(tmp_path):
    pytest.importorskip("facenet_pytorch")
    from dfrobust.data import faces as fc

    root = tmp_path / "frames"
    frames, _ = scene_frames(seed=0, n=2, width=480, height=360, face_px=120)
    for sub, fr in zip(("real", "fake"), frames):
        (root / sub).mkdir(parents=True)
        cv2.imwrite(str(root / sub / "s_0001.png"), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    is_crops, why = prep.looks_cropped(prep.list_media(root), fc.MTCNNFaceDetector())
    assert not is_crops and "of 2 sampled images" in why


def _vff(root: Path, n_videos: int = 12, n_frames: int = 4) -> Path:
    for sub in ("real", "fake"):
        for v in range(n_videos):
            for f in range(n_frames):
                _img(root / sub / f"{sub}{v:02d}-{f * 7:04d}-0.png", 32, 32, seed=v * 10 + f)
    return root


def test_video_frame_face_names_keep_one_video_in_one_split(tmp_path):
    root = _vff(tmp_path / "ds")
    df = _prepared(root, tmp_path)
    truth = df.path.map(lambda p: Path(p).name.split("-")[0])
    assert df.groupby(truth).video_id.nunique().max() == 1 and df.video_id.nunique() == 24
    assert df.groupby(truth).split.nunique().max() == 1 and set(df.split) == {"train", "val", "test"}
    assert "video-frame-face" in df.attrs["meta"]["notes"]["video_ids"]
    # the leak check sees a frame of one video moved to another split
    moved = df.copy()
    i = moved.index[moved.video_id == "real/real03"][0]
    moved.loc[i, "split"] = "test" if moved.loc[i, "split"] != "test" else "train"
    assert leaks(moved)["video_id"] == ["real/real03"]


def test_video_frame_names_with_a_numbered_video_id(tmp_path):
    """FF++ frame dumps: 000_003_0012.png is video 000_003, frame 12 (the last number is no face index)."""
    root = tmp_path / "ds"
    for f in (0, 12, 24):
        _img(root / "real" / f"000_{f:04d}.png")
        _img(root / "fake" / f"000_003_{f:04d}.png")
    m = prep.list_media(root)
    assert set(m.video_id) == {"real/000", "fake/000_003"}


def test_an_ambiguous_name_layout_is_refused_with_the_option_to_set(tmp_path, data_home):
    root = _folder(tmp_path / "ds", names=("a_0001.png", "b-0001-0.png"))
    r = _cli(root, "--out", tmp_path / "out", "--crops")
    assert r.exit_code == 2
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert "read two ways" in line and "--names" in line and not (tmp_path / "out").exists()
    r = _cli(root, "--out", tmp_path / "out", "--crops", "--names", "video-frame")
    assert r.exit_code == 0, r.output
    assert "video ids: names='video-frame'" in r.output
    assert set(load_manifest(tmp_path / "out").video_id) == {"real/a", "real/b-0001", "fake/b"}
