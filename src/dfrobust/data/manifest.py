"""The manifest: the single interface between data and every experiment (docs/CONTRACTS.md).

One ``pandas.DataFrame`` with one row per image or sampled video frame. On disk it is a
``manifest.csv`` (paths relative to the manifest's folder, so a data home can be moved) and a
``manifest.meta.json`` (provenance: generator parameters, counts, skipped files with reasons).
Reading images uses OpenCV after a full decode by Pillow with truncation treated as an error
(``ImageFile.LOAD_TRUNCATED_IMAGES`` off, ``img.load()``): OpenCV fills a truncated JPEG with grey
and returns it without an error, Pillow raises. Resizing uses ``torch.nn.functional.interpolate``
(bilinear, antialiased), so nothing here is hand-written beyond the schema checks. Every write
goes to a temporary file that is removed when the write fails (disk full), and the error is one
line naming the file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

GROUPS = ("african_male", "african_female", "asian_male", "asian_female",
          "caucasian_male", "caucasian_female")
DATASETS = ("synthetic", "ffpp", "dfdc", "celebdf", "uadfv", "folder")
SPLITS = ("train", "val", "test")

#: required columns and their dtypes, in order
COLUMNS: dict[str, str] = {
    "path": "str", "label": "int", "dataset": "str", "manipulation": "str", "video_id": "str",
    "frame_index": "int", "group": "str", "identity": "str", "pair_id": "str", "split": "str",
}

MANIFEST_NAME = "manifest.csv"
META_NAME = "manifest.meta.json"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def validate(df: pd.DataFrame) -> pd.DataFrame:
    """Check the schema; return ``df`` with the required columns first and dtypes coerced."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}; expected {list(COLUMNS)}")
    df = df.copy()
    for c, t in COLUMNS.items():
        if t == "int":
            df[c] = df[c].astype(np.int64)
        else:
            df[c] = df[c].fillna("").astype(str)
    bad = sorted(int(v) for v in set(df["label"].unique()) - {0, 1})  # plain ints: the message shows [2]
    if bad:
        raise ValueError(f"manifest label values {bad}: expected 0 (real) or 1 (fake)")
    bad = sorted(str(v) for v in set(df["split"].unique()) - set(SPLITS))
    if bad:
        raise ValueError(f"manifest split values {bad}: expected one of {SPLITS}")
    bad = sorted(str(v) for v in set(df["group"].unique()) - set(GROUPS) - {""})
    if bad:
        raise ValueError(f"manifest group values {bad}: expected one of {GROUPS} or ''")
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra]


def atomic_write(path: Path, write) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it into place.

    On any OSError (disk full, permissions) the temporary file is removed and the error is one
    line naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OSError(exc.errno, f"{path}: cannot write ({reason}); nothing was written there") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _atomic_write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def save_manifest(df: pd.DataFrame, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``manifest.csv`` (paths made relative to its folder) and ``manifest.meta.json``.

    ``path`` is the CSV file or the folder that receives it. The CSV is written last, so a
    manifest that exists is complete (generators use its presence as the cache marker).
    """
    path = Path(path)
    if path.suffix != ".csv":
        path = path / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    df = validate(df)
    base = path.parent.resolve()
    rel = []
    for p in df["path"]:
        p = Path(p)
        rel.append(os.path.relpath(p.resolve(), base) if p.is_absolute() else str(p))
    out = df.copy()
    out["path"] = rel
    meta = dict(meta or {})
    meta.setdefault("n_rows", int(len(df)))
    meta.setdefault("counts", {
        "label": {str(k): int(v) for k, v in df["label"].value_counts().sort_index().items()},
        "split": {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()},
        "group": {str(k): int(v) for k, v in df["group"].value_counts().sort_index().items()},
    })
    meta.setdefault("skipped", [])
    meta["n_skipped"] = len(meta["skipped"])
    _atomic_write_text(path.with_name(META_NAME),
                       json.dumps(meta, indent=1, sort_keys=True, default=_json_default))
    atomic_write(path, lambda tmp: out.to_csv(tmp, index=False))
    return path


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest (CSV file or its folder); paths become absolute; ``df.attrs['meta']`` set."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}; generate or prepare the data first")
    try:
        df = pd.read_csv(path, dtype={c: str for c, t in COLUMNS.items() if t == "str"}, keep_default_na=False)
        df = validate(df)
    except (ValueError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a valid manifest ({first}); delete its folder and generate or "
                         "prepare the data again (dfrobust data synth / dfrobust data prepare)") from None
    base = path.parent.resolve()
    df["path"] = [str((base / p).resolve()) if not os.path.isabs(p) else p for p in df["path"]]
    meta_path = path.with_name(META_NAME)
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path}: unreadable manifest provenance ({type(exc).__name__}); delete its folder "
                         "and generate or prepare the data again") from None
    meta["manifest_path"] = str(path.resolve())
    df.attrs["meta"] = meta
    return df


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """One image file as an RGB uint8 array [H, W, 3]; FileNotFoundError/ValueError when unreadable.

    Any decoding error becomes a ValueError naming the file (so a caller skips it), a header beyond
    Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS`` x 2) included: it is refused unread.
    """
    import cv2
    from PIL import Image, ImageFile, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    data = path.read_bytes()
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False  # truncation is an error
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # full decode: truncation and corrupt data raise here
    except UnidentifiedImageError:
        pass  # a format Pillow does not know: OpenCV decides below
    except Image.DecompressionBombError as exc:   # the header claims more pixels than Pillow's limit: never decoded
        raise ValueError(f"image {path} is too large to decode ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a decoder may raise anything on a corrupt file; it is one bad file
        raise ValueError(f"image {path} is truncated or corrupt ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ValueError(f"image {path} is not a readable image file ({str(exc).strip().splitlines()[-1]})") from None
    if img is None:
        raise ValueError(f"image {path} is not a readable image file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_images(df: pd.DataFrame, size: int):
    """The manifest's images as ``torch.float32`` [N, 3, size, size] in [0, 1] (bilinear resize)."""
    import torch
    import torch.nn.functional as F

    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size={size!r}: expected an int >= 8 (pixels)")
    if "path" not in df.columns:
        raise ValueError("load_images: the frame has no 'path' column; pass a manifest")
    out = torch.empty((len(df), 3, size, size), dtype=torch.float32)
    for i, p in enumerate(df["path"]):
        t = torch.from_numpy(read_rgb(p)).permute(2, 0, 1).float().div_(255.0)
        if t.shape[1:] != (size, size):
            t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)[0].clamp_(0, 1)
        out[i] = t
    return out


def labels_tensor(df: pd.DataFrame):
    """The manifest's labels as ``torch.int64`` [N] (0 real, 1 fake)."""
    import torch

    return torch.as_tensor(df["label"].to_numpy(np.int64))
