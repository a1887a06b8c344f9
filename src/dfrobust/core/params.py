"""Parsers and checks shared by every parameter check: lists, integers, numbers, seeds.

Notebook parameters arrive as literals (papermill) or as ``-p key=value`` strings; a list can be
``"a,b"`` or ``["a", "b"]``. One parser serves every chapter so that the errors read the same.

Counts have upper bounds (:data:`MAX_GRID`, :data:`MAX_BOOT`, :data:`MAX_COUNT`), checked before
anything is allocated: a typo such as ``n_b=1000000000`` is a one-line error, not a MemoryError
minutes into the run. The bounds are far above the paper profile's values.
"""

from __future__ import annotations

import math
import inspect
from typing import Any, Callable, Iterable, Mapping, Sequence

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


#: seeds every generator of the study accepts: numpy's legacy RandomState and scikit-learn take [0, 2**32)
SEED_LIMIT = 2 ** 32
#: radii or bounds of a sweep grid (the paper profile: 12 radii, 21 bounds); a grid is allocated per
#: model x attack x bootstrap resample, so this bounds the memory of every summary
MAX_GRID = 64
#: bootstrap resamples (the paper profile: 2000)
MAX_BOOT = 20_000
#: images, pairs, videos, frames, masks, iterations: any other count (the paper profile's largest: 4000)
MAX_COUNT = 1_000_000


def check_int(value, what: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in [``lo``, ``hi``] (None: unbounded), else a one-line ValueError naming ``what``."""
    bad = isinstance(value, bool) or not isinstance(value, (int, np.integer))
    if bad or (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"in [{lo}, {hi}]" if lo is not None and hi is not None else f">= {lo}" if lo is not None \
            else f"<= {hi}" if hi is not None else ""
        raise ValueError(f"{what}={value!r}: expected an integer {rng}".rstrip())
    return int(value)


def check_number(value, what: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float in the interval (``lo_open``/``hi_open``: bound excluded), else a one-line
    ValueError naming ``what``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ValueError(f"{what}={value!r}: expected a number in {'(' if lo_open else '['}{lo:g}, "
                         f"{hi:g}{')' if hi_open else ']'}")
    return float(value)


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int in [0, 2**32) (numpy refuses negative seeds, its legacy generator and scikit-learn
    larger ones), else a one-line ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{what}={seed!r}: expected an integer in [0, 2**32)")
    return int(seed)


def from_namespace(check: Callable[..., Any], namespace: Mapping[str, Any]) -> Any:
    """``check(**parameters)`` with the names ``check`` declares, taken from ``namespace``.

    A chapter notebook passes its ``globals()``: the ``parameters`` cell (papermill's injected values
    included) is the one list of the chapter's parameters, so the notebook does not list them a second
    time in the call. A name ``check`` requires that the namespace lacks is a one-line error naming it.
    """
    sig = inspect.signature(check)
    kwargs, missing = {}, []
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if name in namespace:
            kwargs[name] = namespace[name]
        elif p.default is p.empty:
            missing.append(name)
    if missing:
        raise ValueError(f"parameters {', '.join(missing)}: missing from the notebook's parameters cell; "
                         f"expected every parameter {check.__qualname__} declares")
    return check(**kwargs)
