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


def log_grid(eps_min: float, eps_max: float, n: int, *, what: str = "eps") -> list[float]:
    """0 followed by ``n`` log-spaced radii from ``eps_min`` to ``eps_max`` inclusive (6 significant
    digits), e.g. ``log_grid(0.5 / 255, 0.2, 8)``: a grid that resolves where RA and RR fall."""
    lo = check_eps(eps_min, what=f"{what}_min")
    hi = check_eps(eps_max, what=f"{what}_max")
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ValueError(f"n_{what}={n!r}: expected an integer >= 1 (radii after 0)")
    if lo <= 0:
        raise ValueError(f"{what}_min={eps_min!r}: expected a radius > 0 (0 is always on the grid)")
    if int(n) == 1:
        return [0.0, float(f"{hi:.6g}")]
    if hi <= lo:
        raise ValueError(f"{what}_max={eps_max!r}: expected a radius above {what}_min={eps_min!r}")
    vals = [float(f"{v:.6g}") for v in np.geomspace(lo, hi, int(n))]
    return [0.0] + vals
