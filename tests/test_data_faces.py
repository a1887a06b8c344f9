"""Face detection on real-looking footage: MTCNN on our torch, Haar fallback, one tracked face per video."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dfrobust.data import faces as fc
from dfrobust.data import load_manifest
from dfrobust.data import prepare as prep
from dfrobust.data.scenes import face_clip, scene_frames
from dfrobust.data.video import write_mp4


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def test_mtcnn_runs_on_our_torch_and_finds_a_benchmark_face():
    pytest.importorskip("facenet_pytorch")
    det = fc.MTCNNFaceDetector()
    frame = face_clip(3, 1, 160)[0]
    found = det.detect(frame)
    assert found and found[0].score > 0.95
    x, y, w, h = found[0].box
    assert 20 < x + w / 2 < 140 and 20 < y + h / 2 < 140 and 40 < w < 140
    assert det.detect(np.full((240, 320, 3), 127, np.uint8)) == []     # a flat frame has no face


def test_detector_falls_back_to_haar_when_mtcnn_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)     # import now raises ImportError
    det, note = fc.make_detector("auto")
    assert isinstance(det, fc.HaarFaceDetector) and "MTCNN unavailable" in note and "ModuleNotFoundError" in note
    det, note = fc.make_detector("haar")
    assert isinstance(det, fc.HaarFaceDetector) and note is None
    assert fc.make_detector("none") == (None, None)


@pytest.mark.parametrize("kw, word", [(dict(name="retina"), "detector"), (dict(detect_side=50), "detect_side"),
                                      (dict(detect_side=True), "detect_side")])
def test_bad_detector_options(kw, word):
    with pytest.raises(ValueError, match=word):
        fc.make_detector(**kw)


def test_implausible_boxes_are_rejected():
    faces = [fc.Face(0, 0, 90, 30, 0.99), fc.Face(0, 0, 40, 50, 0.99), fc.Face(0, 0, 40, 50, 0.5)]
    assert fc._plausible(faces, 0.9) == [faces[1]]      # too wide (3:1), too unsure (0.5 < 0.9)


def test_track_keeps_one_consistent_face_and_rejects_strays():
    face = lambda k: fc.Face(500 + 10 * k, 200, 100, 120, 0.99)            # drifting face
    other = lambda k: fc.Face(1200, 300, 60, 70, 0.98)                     # a smaller second person
    shirt = fc.Face(520, 500, 160, 160, 0.97)                              # one-off false hit, larger than the face
    cands = [[face(0), other(0)], [other(1), face(1), shirt], [shirt], [face(3)], [], [other(5), face(5)]]
    out = fc.track(cands)
    assert [o is not None and o.x == 500 + 10 * k for k, o in enumerate(out)] == [True, True, False, True, False, True]
    assert out[2] is None and out[4] is None                               # the shirt alone is not the face
    assert fc.track([[], []]) == [None, None]


def test_1080p_small_faces_found_without_false_crops(tmp_path):
    """Full-HD frames with a ~130 px face in clutter: >= 90 % of frames give a crop, all on the face."""
    pytest.importorskip("facenet_pytorch")
    root = tmp_path / "hd"
    truth = {}
    for k in range(3):
        frames, boxes = scene_frames(seed=k, n=5, face_px=220)
        sub = "real" if k < 2 else "fake"
        write_mp4(frames, root / sub / f"clip{k}.mp4", fps=5)
        truth[f"{sub}/clip{k}"] = boxes
    df = load_manifest(prep.prepare(root, n_frames=5, size=64, out_dir=tmp_path / "p"))
    meta = df.attrs["meta"]
    assert meta["detection"]["detector"] == "mtcnn" and meta["face_rate"] >= 0.9
    assert len(meta["detection"]["per_video"]) == 3 and not meta["detection"]["low_rate_videos"]
    for r in df.itertuples():
        box = tuple(int(v) for v in r.face_box.split(","))
        assert _iou(box, truth[r.video_id][r.frame_index]) > 0.4, (r.video_id, r.frame_index, box)


def test_low_rate_videos_are_reported_per_video(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    write_mp4(face_clip(1, 4, 64), root / "real" / "a.mp4", fps=5)
    write_mp4(face_clip(2, 4, 64), root / "fake" / "b.mp4", fps=5)
    calls = {"n": 0}

    def detect(self, rgb):                     # a face in all frames of a.mp4, one frame of b.mp4
        calls["n"] += 1
        return [fc.Face(10, 10, 40, 46, 0.99)] if calls["n"] <= 5 else []

    monkeypatch.setattr(fc.HaarFaceDetector, "detect", detect)
    df = load_manifest(prep.prepare(root, n_frames=4, size=32, detector="haar", out_dir=tmp_path / "p"))
    rep = {r["video_id"]: r for r in df.attrs["meta"]["detection"]["per_video"]}
    assert rep["real/a"]["rate"] == 1.0 and not rep["real/a"]["low"]
    assert rep["fake/b"]["rate"] == 0.25 and rep["fake/b"]["low"]
    assert df.attrs["meta"]["detection"]["low_rate_videos"] == ["fake/b"]


def test_scenes_are_seeded_and_check_their_input():
    a, ba = scene_frames(seed=4, n=2, width=640, height=360, face_px=96)
    b, bb = scene_frames(seed=4, n=2, width=640, height=360, face_px=96)
    c, _ = scene_frames(seed=5, n=2, width=640, height=360, face_px=96)
    assert np.array_equal(a, b) and np.array_equal(ba, bb) and not np.array_equal(a, c)
    assert a.shape == (2, 360, 640, 3) and (ba[:, 2] < 96).all()
    with pytest.raises(ValueError, match="face_px=20"):
        scene_frames(face_px=20)
