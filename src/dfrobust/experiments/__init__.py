"""Experiments: the per-chapter record builders and tables, composed from the lower homes.

``experiments`` owns what each chapter runs — :mod:`.records` (the record engine the chapters
share: attack sweeps into per-sample records, minimal-perturbation records), :mod:`.robustness`
(chapter 03, RA vs RR: claim, bound and group tables), :mod:`.videos` (images vs videos: per-frame
vs progressive records, video-level reduction), :mod:`.xai` (XAI-guided NES attacks) and the
others — and each chapter's ``check_params`` (every parameter checked before any data or model is
touched).
It composes ``data``, ``models``, ``attacks``, ``explainers`` and ``metrics``; only ``study``
and ``figures`` sit above it.
"""

# every chapter reaches its detectors through this package: these homes register the robust detectors'
# training objectives (dfrobust.models.train.OBJECTIVES: "pgd", "ibp"), which sit above models
from .. import attacks, certify  # noqa: E402,F401
