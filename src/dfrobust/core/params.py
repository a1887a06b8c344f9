"""Parsers shared by every parameter check: comma-separated lists and integer lists.

Notebook parameters arrive as literals (papermill) or as ``-p key=value`` strings; a list can be
``"a,b"`` or ``["a", "b"]``. One parser serves every chapter so that the errors read the same.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np


def split_list(value: str | Sequence, what: str, *, allowed: Iterable[str] | None = None,
               unique: bool = True) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` → ``["a", "b"]`` (non-empty), else a one-line ValueError.

    ``allowed``: the accepted names (an unknown one is an error naming it); ``unique``: duplicates
    are an error.
    """
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, Iterable):
        items = [str(v).strip() for v in value]
    else:
        raise ValueError(f"{what}={value!r}: expected a comma-separated list")
    items = [v for v in items if v]
    if not items:
        raise ValueError(f"{what}={value!r}: expected a non-empty comma-separated list")
    if allowed is not None:
        allowed = list(allowed)
        for v in items:
            if v not in allowed:
                raise ValueError(f"{what}: {v!r} is unknown; expected some of {', '.join(allowed)}")
    if unique and len(set(items)) != len(items):
        dup = sorted({v for v in items if items.count(v) > 1})
        raise ValueError(f"{what}={value!r}: duplicate {', '.join(dup)}; expected each name once")
    return items


def int_list(value: str | int | Sequence, what: str, *, minimum: int | None = None,
             unique: bool = True) -> list[int]:
    """``"1,2,5"``, ``3`` or ``[1, 2]`` → a list of ints, else a one-line ValueError naming ``what``."""
    raw = [value] if isinstance(value, int) and not isinstance(value, bool) else split_list(value, what, unique=False)
    out = []
    for v in raw:
        try:
            if isinstance(v, bool) or float(v) != int(float(v)):
                raise ValueError
            out.append(int(float(v)))
        except (TypeError, ValueError):
            raise ValueError(f"{what}={value!r}: {v!r} is not an integer; expected e.g. 1,2,3") from None
    if minimum is not None and any(v < minimum for v in out):
        raise ValueError(f"{what}={value!r}: expected integers >= {minimum}")
    if unique and len(set(out)) != len(out):
        raise ValueError(f"{what}={value!r}: duplicate values; expected each once")
    return out


def check_eps(eps: float, *, what: str = "eps") -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={eps!r}: expected a number >= 0") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}={eps!r}: expected a finite number >= 0")
    return value


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int >= 0 (numpy's SeedSequence refuses negative seeds), else a one-line ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{what}={seed!r}: expected an integer >= 0")
    if int(seed) < 0:
        raise ValueError(f"{what}={seed!r}: expected an integer >= 0")
    return int(seed)
