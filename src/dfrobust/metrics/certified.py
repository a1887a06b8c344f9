"""Certified Robust Ratio as a reduction of certified records (:func:`dfrobust.certify.certified_records`).

A sample is certified at (ε, b) when its certified maximum change of P(ŷ) over the whole L∞ ball
is ≤ b, so ``RR_certified(ε, b) ≤ RR(ε, b) ≤ RR_attack(ε, b)``: the provable lower bound beside
the attack-based upper bound of :mod:`.ra_rr`.
"""

from __future__ import annotations

from typing import Sequence

import xarray as xr

from .grids import check_b_grid


def certified_per_sample(records: xr.Dataset, b_grid: Sequence[float]) -> xr.DataArray:
    """Per sample and bound b: ``certified_change <= b`` (the indicator RR_certified averages)."""
    if "certified_change" not in records:
        raise ValueError("records: no certified_change; expected the output of certified_records")
    b = check_b_grid(b_grid)
    bb = xr.DataArray(b, dims="b", coords={"b": b}, attrs={"long_name": "bound b on |ΔP(ŷ)|"})
    # the same float slack as dfrobust.metrics.robust_per_sample, so b read from a decimal grid compares alike
    return (records["certified_change"] <= bb + 1e-12).rename("certified")



def rr_certified(records: xr.Dataset, b_grid: Sequence[float], groupby: str | None = None) -> xr.DataArray:
    """RR_certified per (model, eps, b) [and group]: the share of samples certified at (ε, b)."""
    cert = certified_per_sample(records, b_grid).astype(float)
    if groupby is None:
        rr = cert.mean("sample")
    else:
        if groupby not in records.coords or records.coords[groupby].dims != ("sample",):
            raise ValueError(f"groupby={groupby!r}: not a sample coordinate of the records")
        rr = cert.groupby(records.coords[groupby]).mean("sample")
    rr = rr.rename("RR_certified")
    rr.attrs.update(long_name="certified robust ratio (provable lower bound)", units="1")
    return rr



def largest_certified_eps(records: xr.Dataset, b: float) -> xr.DataArray:
    """Per model: the largest ε > 0 of the grid at which at least one sample is certified at ``b``
    (NaN when none is)."""
    cert = certified_per_sample(records, [b]).isel(b=0, drop=True).any("sample")
    pos = records["eps"] > 0
    return records["eps"].where(cert & pos).max("eps").rename("largest_certified_eps")
