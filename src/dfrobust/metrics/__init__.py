"""Metrics: every number of the study as a reduction of per-sample records.

``metrics`` owns RA, RR and the complementary robustness metrics (:mod:`.ra_rr`), the
tolerance grids (:mod:`.grids`), bootstrap intervals (:mod:`.bootstrap`), the verdicts on claims (:mod:`.verdicts`), the linearity of RR in
the tolerance (:mod:`.linearity`), the certified RR (:mod:`.certified`) and the faithfulness of explanations (:mod:`.faithfulness`).
Nothing here runs a model; it imports only numpy, pandas, scipy, xarray and ``dfrobust.core``.
"""

from .certified import certified_per_sample, largest_certified_eps, rr_certified
from .bootstrap import bootstrap, bootstrap_difference, bootstrap_weights
from .grids import check_b_grid, linspace_grid, log_grid
from .ra_rr import (clean_accuracy, complementary, correct_adv, prob_change, robust_accuracy,
                         robust_per_sample, robust_ratio, worst_case)
from . import verdicts
from .verdicts import Verdict, verdict_table

__all__ = ["certified_per_sample", "largest_certified_eps", "rr_certified", "bootstrap", "bootstrap_difference", "bootstrap_weights", "check_b_grid", "linspace_grid", "log_grid",
           "clean_accuracy", "complementary", "correct_adv", "prob_change", "robust_accuracy",
           "robust_per_sample", "robust_ratio", "worst_case", "verdicts", "Verdict", "verdict_table"]
