"""Video I/O with PyAV (FFmpeg): H.264 writing and evenly spaced frame sampling.

``read_frames`` samples ``n`` frames spread evenly over the WHOLE video (not the first ``n``):
the frame count comes from demuxing the packets (cheap, no decoding), then one sequential
decode keeps the wanted frames. Sequential decoding is used instead of seeking because
seeking in H.264 lands on key frames and would return the wrong frames.

``write_mp4`` keeps libx264 off its AVX-512 kernels: with them, the same frames encoded twice
in one process gave different bytes (decoded pixels up to 32/255 apart) for small frames such
as the tests' 64x64 clips (PyAV 18.1 / FFmpeg 8 / x264 core 165; same CPU flags without
AVX-512: identical bytes; tests/test_video_determinism.py). x264's option ``asm`` takes the
CPU flag set; :func:`_x264_options` reads the set x264 detects (``x264_cpu_detect`` of the
libx264 PyAV has loaded) and clears the AVX-512 bit, so every other kernel x264 would pick
stays in use (the same encoder a CPU without AVX-512 runs). Speed and agreement with the
default kernels are measured side by side in bench/bench_x264.py; where x264 detects no
AVX-512, or the library cannot be found (no /proc), the options are x264's defaults.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np


def _open(path: Path):
    import av

    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - PyAV raises many FFmpeg error types
        raise ValueError(f"video {path} is not readable ({type(exc).__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"video {path} has no video stream")
    return container


def count_frames(path: str | os.PathLike) -> int:
    """Number of video frames (packets with data in the first video stream), without decoding."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        n = 0
        for packet in container.demux(stream):
            if packet.size:
                n += 1
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"video {path} is corrupt ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()
    return n


def even_indices(total: int, n: int) -> np.ndarray:
    """``n`` frame indices spread evenly over ``total`` frames (centres of ``n`` equal segments)."""
    if n < 1:
        raise ValueError(f"n={n}: expected at least 1 frame to sample")
    if total < 1:
        raise ValueError(f"total={total}: the video has no frames")
    n = min(n, total)
    return np.unique(((np.arange(n) + 0.5) * total / n).astype(np.int64).clip(0, total - 1))


def read_frames(path: str | os.PathLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB frames sampled evenly over the whole video: (uint8 [n, H, W, 3], frame indices).

    Fewer than ``n`` frames come back only when the video is shorter than ``n`` frames.
    Raises FileNotFoundError for a missing file and ValueError for a corrupt or truncated one.
    """
    path = Path(path)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: expected an int >= 1 (frames to sample)")
    total = count_frames(path)
    if total == 0:
        raise ValueError(f"video {path} has no decodable frames (empty or truncated)")
    wanted = even_indices(total, n)
    want = set(int(i) for i in wanted)
    last = int(wanted[-1])
    frames: dict[int, np.ndarray] = {}
    container = _open(path)
    i = -1
    try:
        for frame in container.decode(video=0):
            i += 1
            if i in want:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"video {path} is corrupt: decoding failed after frame {i} "
                         f"({type(exc).__name__}: {exc})") from None
    finally:
        container.close()
    if len(frames) < len(wanted):
        raise ValueError(f"video {path} is truncated: decoded {i + 1} of {total} frames")
    return np.stack([frames[int(k)] for k in wanted]), wanted


_X264_CPU_AVX512 = 1 << 16  # X264_CPU_AVX512 in x264.h


@functools.lru_cache(maxsize=1)
def _x264_options() -> dict[str, str]:
    """Extra libx264 options: the detected CPU flags without AVX-512 (empty where there is none to clear)."""
    import av  # noqa: F401 - maps the libx264 that libavcodec links

    try:
        with open("/proc/self/maps") as fh:  # the loaded library, not another copy on the system
            libs = sorted({ln.split()[-1] for ln in fh if "libx264" in ln and ln.split()[-1].startswith("/")})
    except OSError:
        return {}
    if not libs:
        return {}
    detect = getattr(ctypes.CDLL(libs[0]), "x264_cpu_detect", None)
    if detect is None:
        return {}
    detect.restype = ctypes.c_uint32
    flags = int(detect())
    return {"x264-params": f"asm={flags & ~_X264_CPU_AVX512}"} if flags & _X264_CPU_AVX512 else {}


def write_mp4(frames, path: str | os.PathLike, fps: int = 25, crf: int = 23) -> Path:
    """Encode RGB uint8 frames [T, H, W, 3] (even H, W) as H.264 (yuv420p, CRF ``crf``) mp4.

    CRF 23 matches FaceForensics++ "c23". The same frames give the same bytes (one thread,
    no AVX-512 kernels: see the module docstring).
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames of shape {frames.shape} dtype {frames.dtype}: expected uint8 [T, H, W, 3]")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame size {frames.shape[2]}x{frames.shape[1]}: H.264 yuv420p needs even sizes")
    if not (isinstance(fps, (int, np.integer)) and fps >= 1):
        raise ValueError(f"fps={fps!r}: expected an int >= 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1", **_x264_options()}
        stream.thread_count = 1
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path
