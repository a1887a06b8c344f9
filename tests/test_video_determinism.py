"""Same seed, same synthetic clips: the frames are a pure function of the seed, and so are the mp4 bytes.

The defect these guard against: ``synth.generate_videos`` called twice in one process gave
identical frames but different H.264 files (decoded pixels up to 32/255 apart). Rendering was
pure; libx264's AVX-512 kernels made the bytes of the same small frames vary from call to call
(:func:`dfrobust.data.video.write_mp4` now turns them off). Content matters (smooth generator
frames triggered it, random test patterns did not), so the tests encode the generator's own
frames, many times, interleaved with other clips.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

import av
import av.logging
import numpy as np

from dfrobust.data import render, synth, video

SMALL = dict(n_per_group=3, n_identities=3, size=64, n_videos=1, video_seconds=0.5, fps=8, frames_per_video=2)


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _generator_clips(tmp_path, monkeypatch) -> list[np.ndarray]:
    """The uint8 frame stacks the generator hands to write_mp4 (6 real + 6 fake clips)."""
    clips = []
    real_write = video.write_mp4

    def capture(frames, path, fps=25, crf=23):
        clips.append(np.array(frames))
        return real_write(frames, path, fps, crf)

    monkeypatch.setattr(video, "write_mp4", capture)
    synth.generate_videos("quick", 3, out_dir=tmp_path / "gen", **SMALL)
    monkeypatch.undo()
    return clips


def test_write_mp4_same_frames_same_bytes_whatever_was_encoded_before(tmp_path, monkeypatch):
    clips = _generator_clips(tmp_path, monkeypatch)
    assert len(clips) == 2 * 6
    hashes = [set() for _ in clips]
    for rnd in range(6):                       # round robin: every encode follows other clips
        for k, frames in enumerate(clips):
            hashes[k].add(_sha(video.write_mp4(frames, tmp_path / f"c{k}_{rnd}.mp4", fps=8)))
    varying = [k for k, h in enumerate(hashes) if len(h) > 1]
    assert not varying, f"clips {varying} encoded to different bytes from identical frames"
    # and the decoded pixels are those of one file, not merely equal in size
    a, _ = video.read_frames(tmp_path / "c0_0.mp4", 100)
    b, _ = video.read_frames(tmp_path / "c0_5.mp4", 100)
    assert np.array_equal(a, b) and a.shape == clips[0].shape


def test_generate_videos_twice_in_one_process_identical_frames_and_bytes(tmp_path, monkeypatch):
    first = _generator_clips(tmp_path / "a", monkeypatch)
    second = _generator_clips(tmp_path / "b", monkeypatch)
    assert len(first) == len(second) == 12
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    da = {p.relative_to(tmp_path / "a" / "gen"): _sha(p) for p in (tmp_path / "a" / "gen").rglob("*.mp4")}
    db = {p.relative_to(tmp_path / "b" / "gen"): _sha(p) for p in (tmp_path / "b" / "gen").rglob("*.mp4")}
    assert len(da) == 12 and da == db


def test_render_is_pure_same_clip_after_rendering_others():
    """Rendering (lru-cached textures, shared background) does not depend on what was rendered before."""
    ids = list(synth._identities(3, 3, (0.6, 0.2, 0.2)).obj)

    def clip(i: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([3, 5, i, 0]))
        conds = synth._clip_conditions(rng, 4, 8)
        bg = render._background(conds[0])
        out = []
        for c in conds:
            base = render.render(ids[i], c, background=bg)
            f, _ = synth.faceswap(ids[i], ids[(i + 1) % len(ids)], c, rng, 0.7, base=base,
                                  jitter={"delta": np.zeros(3), "flicker": 0.02, "hard": 0.0, "sigma": 3.0})
            out.append(np.concatenate([synth._finish(base[0], c, rng, 64), synth._finish(f, c, rng, 64)]))
        return np.stack(out)

    first = clip(0)
    for j in range(1, len(ids)):
        clip(j)
    assert np.array_equal(first, clip(0))
    assert not np.array_equal(first, clip(1))


def _x264_capabilities(options: dict[str, str]) -> str:
    """The 'using cpu capabilities' line libx264 logs when it opens with ``options``."""
    with av.logging.Capture() as logs:
        old = av.logging.get_level()
        av.logging.set_level(av.logging.VERBOSE)
        try:
            ctx = av.CodecContext.create("libx264", "w")
            ctx.width = ctx.height = 64
            ctx.pix_fmt, ctx.time_base = "yuv420p", Fraction(1, 8)
            ctx.options = {"threads": "1", **options}
            ctx.open()
        finally:
            av.logging.set_level(old)
    lines = [m for _, name, m in logs if name == "libx264" and "cpu capabilities" in m]
    assert len(lines) == 1, logs
    return lines[0].split(":", 1)[1].split()


def test_write_mp4_uses_every_x264_kernel_but_avx512():
    default = _x264_capabilities({})
    ours = _x264_capabilities(video._x264_options())
    assert "AVX512" not in ours
    assert ours == [c for c in default if c != "AVX512"]
    assert bool(video._x264_options()) == ("AVX512" in default)
