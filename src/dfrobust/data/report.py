"""Tables the data chapter shows about a prepared manifest: detection per video, splits, manipulations.

All three read only the manifest (and, for detection, the per-video report that
:func:`prepare.prepare` stores in its meta), so they work on any profile's data; on the
synthetic benchmark (no detection step) the detection report is empty.
"""

from __future__ import annotations

import pandas as pd

DETECTION_COLUMNS = ["video_id", "label", "manipulation", "split", "n_sampled", "n_faces", "rate", "n_candidates",
                     "n_off_track", "low"]


def _check(manifest: pd.DataFrame) -> None:
    if not isinstance(manifest, pd.DataFrame) or "label" not in manifest.columns:
        raise ValueError(f"expected a manifest DataFrame (columns path, label, ...), got {type(manifest).__name__}")


def detection_report(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per prepared video: frames sampled, faces kept, rate, candidates off the face track, low-rate flag.

    Sorted worst first. Empty (with the columns) when the manifest had no detection step.
    """
    _check(manifest)
    det = manifest.attrs.get("meta", {}).get("detection") or {}
    rows = det.get("per_video") or []
    df = pd.DataFrame(rows, columns=DETECTION_COLUMNS) if rows else pd.DataFrame(columns=DETECTION_COLUMNS)
    return df.sort_values(["rate", "video_id"]).reset_index(drop=True)


def split_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per split: rows, videos, identities, real and fake rows (a leak shows as an identity in two splits)."""
    _check(manifest)
    g = manifest.groupby("split")
    out = pd.DataFrame({"rows": g.size(), "videos": g.video_id.nunique(), "identities": g.identity.nunique(),
                        "real": g.label.apply(lambda s: int((s == 0).sum())),
                        "fake": g.label.apply(lambda s: int((s == 1).sum()))})
    order = [s for s in ("train", "val", "test") if s in out.index]
    return out.loc[order].astype(int)


def manipulation_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per manipulation ('none' = real): videos and rows in each split."""
    _check(manifest)
    t = manifest.pivot_table(index="manipulation", columns="split", values="path", aggfunc="count", fill_value=0)
    t = t[[s for s in ("train", "val", "test") if s in t.columns]]
    t.insert(0, "videos", manifest.groupby("manipulation").video_id.nunique())
    return t.astype(int)


def leaks(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """Videos and identities found in more than one split (both empty when the splits do not leak)."""
    _check(manifest)
    out = {}
    for col in ("video_id", "identity"):
        n = manifest[manifest[col] != ""].groupby(col).split.nunique()
        out[col] = sorted(n[n > 1].index)
    return out
