"""The tolerance grids of the study: bounds b on the probability change and radii ε."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.params import check_eps


def check_b_grid(b_grid: Sequence[float]) -> np.ndarray:
    b = np.asarray(list(b_grid), dtype=float)
    if b.ndim != 1 or b.size == 0:
        raise ValueError(f"b_grid={b_grid!r}: expected a non-empty 1-D list of bounds in [0, 1]")
    bad = b[~np.isfinite(b) | (b < 0) | (b > 1)]
    if bad.size:
        raise ValueError(f"b={float(bad[0])!r}: expected a probability bound in [0, 1]")
    return b



def linspace_grid(vmax: float, n: int, *, what: str = "eps") -> list[float]:
    """``n`` evenly spaced values from 0 to ``vmax`` inclusive, rounded to 6 decimals."""
    vmax = check_eps(vmax, what=f"{what}_max")
    if int(n) < 1:
        raise ValueError(f"n_{what}={n!r}: expected an integer >= 1")
    if int(n) == 1:
        return [round(vmax, 6)]
    return [round(float(v), 6) for v in np.linspace(0.0, vmax, int(n))]
