"""Tables the data chapter shows about a prepared manifest: detection per video, splits, manipulations.

All three read only the manifest (and, for detection, the per-video report that
:func:`prepare.prepare` stores in its meta), so they work on any profile's data; on the
synthetic benchmark (no detection step) the detection report is empty.
"""

from __future__ import annotations

import numpy as np
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


#: long names of the ``dataset`` values of prepared real data (the manifest's ``dataset`` column)
DATASET_NAMES = {"ffpp": "FaceForensics++", "dfdc": "DFDC", "celebdf": "Celeb-DF-v2", "uadfv": "UADFV",
                 "folder": "real/fake folder"}


def dataset_label(manifest: pd.DataFrame) -> str:
    """What the results of ``manifest`` are labelled with on the pages and in the results' attrs.

    ``synthetic`` for the study's benchmark; for real data ``real`` and the dataset's name with the
    folder it was prepared from, e.g. ``real FaceForensics++ (ffpp)``.
    """
    _check(manifest)
    meta = manifest.attrs.get("meta") or {}
    if meta.get("synthetic", "dataset" not in manifest.columns):
        return "synthetic"
    names = sorted(set(manifest["dataset"].astype(str))) if "dataset" in manifest.columns else []
    long = ", ".join(DATASET_NAMES.get(n, n) for n in names) or "dataset"
    root = str(meta.get("root") or "")
    return f"real {long}" + (f" ({root.rstrip('/').rsplit('/', 1)[-1]})" if root else "")


def data_note(manifest: pd.DataFrame) -> str:
    """The landing page's note on where this build's results come from (plain text, one paragraph)."""
    label = dataset_label(manifest)
    if label == "synthetic":
        return ("The datasets of the papers (FaceForensics++, Celeb-DF-v2, UADFV) sit behind access forms and cannot "
                "be downloaded by the study: every result of this build comes from the study's synthetic deepfake "
                "benchmark (procedurally rendered faces of six demographic groups with face-swap and reenactment "
                "fakes; see the data chapter). It reproduces the mechanics of the papers' experiments, not their numbers.")
    n_videos = manifest["video_id"].astype(str).replace("", np.nan).nunique() if "video_id" in manifest.columns else 0
    return (f"Every result of this build comes from {label} data: {len(manifest)} face crops"
            + (f" of {n_videos} videos" if n_videos else "") + " prepared by the study from its data root. The "
            "numbers are this data's, at this build's sample sizes; the intervals on each page say how far they "
            "decide anything.")
