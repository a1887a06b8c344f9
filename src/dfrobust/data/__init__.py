"""Data: the embedded synthetic benchmark, real-dataset preparation and the manifest.

``get_manifest(profile, kind)`` is the single entry point the notebooks use:

* ``quick`` / ``default``: synthetic data generated on first use under ``paths.synth_dir()``;
* ``paper``: the real dataset at ``data_root`` (or ``$DFROBUST_DATA_ROOT``); without one, the
  paper-scale synthetic benchmark, with a printed and logged notice;
* ``real``: the real dataset at ``data_root`` (or ``$DFROBUST_DATA_ROOT``); without one, a one-line error.

An explicit ``data_root`` is honoured by every profile (the profile then sets how many frames
and videos are prepared, ``settings.real`` in notebooks/study.yml).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ..core import paths
from ..core.params import check_seed
from ..core.profiles import ENV_DATA_ROOT, PROFILES, check_data_root, check_profile, settings
from .manifest import GROUPS, load_images, load_manifest, save_manifest
from .report import data_note, dataset_label, detection_report, leaks, manipulation_counts, split_table

__all__ = ["GROUPS", "KINDS", "PROFILES", "data_note", "dataset_label", "detection_report", "get_manifest", "leaks", "load_images",
           "load_manifest", "manipulation_counts", "save_manifest", "split_table"]

log = logging.getLogger(__name__)

KINDS = ("images", "video_frames")



def get_manifest(profile: str, kind: str = "images", *, seed: int = 0, data_root: str | None = None,
                 **overrides: Any) -> pd.DataFrame:
    """The manifest of ``profile``'s data (``df.attrs['meta']`` holds provenance).

    ``kind='images'``: still face images, real + fake with ``pair_id`` (for a video dataset: the
    prepared frame crops). ``kind='video_frames'``: one row per sampled face crop of each video.
    ``overrides`` go to the synthetic generator (keys of ``settings.synthetic`` in study.yml) or, for real data,
    to :func:`prepare.prepare`. For real data the meta also holds ``detection_report`` (one
    record per video, :func:`report.detection_report`), ``split_table`` and ``manipulation_counts``.
    """
    check_profile(profile)
    check_seed(seed)
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    check_data_root(profile, data_root)
    root = paths.real_data_root(data_root or None) if (data_root or profile in ENV_DATA_ROOT) else None
    if root is not None:
        from .prepare import prepare

        kw = {**settings("real", profile), "seed": seed, **overrides}
        df = load_manifest(prepare(root, **kw))
        meta = df.attrs["meta"]
        meta["requested_kind"] = kind
        # the data chapter's tables, JSON-friendly (records), beside the manifest's provenance
        meta["detection_report"] = detection_report(df).to_dict("records")
        meta["split_table"] = split_table(df).reset_index().to_dict("records")
        meta["manipulation_counts"] = manipulation_counts(df).reset_index().to_dict("records")
        return df
    from . import synth

    if profile == "paper":
        msg = ("NOTICE: profile 'paper' was given no data root (parameter data_root or $DFROBUST_DATA_ROOT); "
               "falling back to the paper-scale SYNTHETIC benchmark")
        print(msg)
        log.warning(msg)
    df = synth.dataset_for_profile(profile, kind, seed=seed, **overrides)
    if profile == "paper":
        df.attrs["meta"]["notice"] = "paper profile without a data root: synthetic fallback"
    return df
