"""The per-profile settings of the layers below the notebooks, read from ``notebooks/study.yml``.

``study.yml`` is the one source of truth for what each profile runs: the notebooks' parameters
(read by :mod:`dfrobust.study`) and, under ``settings:``, the sizes that ``data`` (the synthetic
benchmark, the preparation of real datasets) and ``models`` (training) need whichever chapter
asks for them. Code keeps only defaults for direct library use; cache keys are computed from the
resolved values, so editing ``study.yml`` invalidates exactly what it changes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .paths import project_root

#: the study's profiles, synthetic ones smallest first, then ``real`` (``study.yml`` describes them; a test
#: checks they agree)
PROFILES = ("quick", "default", "paper", "real")
#: profiles that read ``$DFROBUST_DATA_ROOT`` when no ``data_root`` parameter is given
ENV_DATA_ROOT = ("paper", "real")
#: profiles that run on a real data root only: the published MesoNet weights on a real dataset, no synthetic
#: fallback (``make book PROFILE=real DATA_ROOT=... WEIGHTS=...``)
REAL_ONLY = ("real",)


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`, else a one-line ValueError."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: unknown; expected one of {', '.join(PROFILES)}")
    return profile


def check_data_root(profile: str, data_root: str | None = "") -> None:
    """A one-line ValueError when ``profile`` runs on real data only and neither ``data_root`` nor
    ``$DFROBUST_DATA_ROOT`` names its folder (the chapters' ``check_params`` call it before any work)."""
    import os

    if profile in REAL_ONLY and not (data_root or os.environ.get("DFROBUST_DATA_ROOT")):
        raise ValueError(f"profile={profile!r} runs on a real dataset: set data_root=PATH "
                         "(make book PROFILE=real DATA_ROOT=PATH WEIGHTS=PATH) or $DFROBUST_DATA_ROOT to its folder")


def spec_path() -> Path:
    return project_root() / "notebooks" / "study.yml"


@lru_cache(maxsize=4)
def _read(path: str, mtime: float) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the study spec ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_spec() -> dict[str, Any]:
    """The parsed ``study.yml`` (cached until the file changes)."""
    p = spec_path()
    try:
        mtime = p.stat().st_mtime
    except OSError:
        raise ValueError(f"{p}: the study spec is missing") from None
    return _read(str(p), mtime)


def settings(section: str, profile: str) -> dict[str, Any]:
    """``settings[section]`` for ``profile``: its ``common`` block updated by the profile's block."""
    check_profile(profile)
    block = (load_spec().get("settings") or {}).get(section)
    if not isinstance(block, dict) or profile not in block:
        raise ValueError(f"study.yml: settings.{section}.{profile} is missing; expected the sizes of "
                         f"{section!r} for every profile ({', '.join(PROFILES)})")
    return {**dict(block.get("common") or {}), **dict(block[profile] or {})}
