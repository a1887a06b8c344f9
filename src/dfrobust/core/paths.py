"""Where things live.

Everything the study generates goes under one *data home* (``data/`` in the project by
default, or ``$DFROBUST_DATA_HOME``); real datasets are read from a *data root* given as a
parameter or ``$DFROBUST_DATA_ROOT``. The executed notebooks go to ``book/generated/``.
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKER = Path("notebooks") / "study.yml"


def project_root() -> Path:
    """The project root: ``$DFROBUST_HOME`` or the first parent of the cwd holding the study spec."""
    env = os.environ.get("DFROBUST_HOME")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / _MARKER).is_file():
            return p
    # installed non-editable: fall back to the source tree this file sits in
    src = Path(__file__).resolve().parents[2]
    if (src / _MARKER).is_file():
        return src
    raise FileNotFoundError(
        f"cannot find the project root (a folder with {_MARKER}) above {here}; "
        "run from inside the project or set DFROBUST_HOME"
    )


def data_home() -> Path:
    """Root of generated content (synthetic data, checkpoints, results, caches).

    ``$DFROBUST_DATA_HOME`` may name a folder that does not exist yet (it is created on first
    use); one that is a file, or lies under a file, is a one-line ``NotADirectoryError``.
    """
    env = os.environ.get("DFROBUST_DATA_HOME")
    home = user_path(env, "DFROBUST_DATA_HOME") if env else project_root() / "data"
    check_folder(home, "DFROBUST_DATA_HOME" if env else "data home")
    return home


def user_path(value: str | os.PathLike, what: str) -> Path:
    """A path the user gave, as an absolute resolved path: ``~`` expanded, a relative path taken from the
    current working directory (where the command was typed). An unknown ``~user`` or a symlink loop is a
    one-line ValueError naming ``what`` as the user wrote it."""
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user of an unknown user (or no home folder at all)
        user = str(value).split("/", 1)[0]
        raise ValueError(f"{what}={str(value)!r}: {user} is not a known user's home folder; expected a folder "
                         "path") from None
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13, then OSError)
        raise ValueError(f"{what}={str(value)!r}: cannot be resolved ({exc}); expected a folder path, not a "
                         "symlink loop") from None


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks: the identity of weights, checkpoints and outputs."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_folder(path: Path, what: str) -> Path:
    """``path`` unless it, or a folder above it, is a file (then a one-line NotADirectoryError)."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under the file {p}"
                raise NotADirectoryError(f"{what}={str(path)!r} {where}; expected a folder "
                                         "(set DFROBUST_DATA_HOME to a folder, or unset it to use data/ in the project)")
            break
    return path


def _sub(name: str) -> Path:
    p = data_home() / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def synth_dir() -> Path:
    return _sub("synth")


def prepared_dir() -> Path:
    return _sub("prepared")


def checkpoints_dir() -> Path:
    return _sub("checkpoints")


def results_dir(profile: str | None = None) -> Path:
    p = _sub("results")
    if profile:
        p = p / profile
        p.mkdir(parents=True, exist_ok=True)
    return p


def cache_dir() -> Path:
    return _sub("cache")


def generated_book_dir() -> Path:
    p = project_root() / "book" / "generated"
    p.mkdir(parents=True, exist_ok=True)
    return p


def real_data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The real-dataset root: the explicit value, else ``$DFROBUST_DATA_ROOT``, else None."""
    if explicit:
        return user_path(explicit, "data_root")
    value = os.environ.get("DFROBUST_DATA_ROOT")
    return user_path(value, "DFROBUST_DATA_ROOT") if value else None


def shared_realdata() -> Path | None:
    """``../shared/realdata`` beside the project root, if present (validation samples only)."""
    p = project_root().parent / "shared" / "realdata"
    return p if p.is_dir() else None
