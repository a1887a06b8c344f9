"""Experiments: the per-chapter record builders and tables, composed from the lower homes.

``experiments`` owns what each chapter runs — :mod:`.robustness` (RA vs RR: attack sweeps into
per-sample records, claim and group tables), :mod:`.videos` (images vs videos: per-frame vs
progressive records, video-level reduction) and :mod:`.xai` (XAI-guided NES attacks) — and
each chapter's ``check_params`` (every parameter checked before any data or model is touched).
It composes ``data``, ``models``, ``attacks``, ``explainers`` and ``metrics``; only ``study``
and ``figures`` sit above it.
"""

# every chapter reaches its detectors through this package: these homes register the robust detectors'
# training objectives (dfrobust.models.train.OBJECTIVES: "pgd", "ibp"), which sit above models
from .. import attacks, certify  # noqa: E402,F401
