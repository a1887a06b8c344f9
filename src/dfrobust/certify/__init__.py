"""Certified bounds on the detectors' decision margin, and the certified Robust Ratio built on them.

This package owns *provable* statements about a detector over an L∞ ball: interval bound
propagation (IBP), CROWN-style backward linear relaxation and its optimised variant alpha-CROWN on
the logit margin ``m = z_ŷ − z_other`` (:mod:`.bounds`), and the per-(model, ε, sample) certified records (:mod:`.records`); their reduction
``RR_certified(ε, b)`` (:mod:`dfrobust.metrics.certified`) is a lower bound of the formal
Robust Ratio just as the attack-based RR of :mod:`dfrobust.metrics` is an upper bound. It
imports only torch, numpy, xarray, :mod:`dfrobust.core` and :mod:`dfrobust.models`; attacks, data and figures live
elsewhere and use it, never the other way round.
"""

from __future__ import annotations

from .bounds import METHODS, MarginBounds, margin_bounds, trace
from .records import certified_change, certified_records, first_order_change
from .training import ibp_loss  # registers the "ibp" training objective of dfrobust.models.train

__all__ = ["METHODS", "MarginBounds", "margin_bounds", "trace", "certified_records", "certified_change", "first_order_change",
           "ibp_loss"]
