"""How much of the benchmark's fake-real difference survives a given input size.

For fake/real pairs of one profile's synthetic images (same ``pair_id``: the fake was made from
that real frame), the difference image ``d = fake - real`` at full resolution is resized down
to ``s`` px and back up (antialiased bilinear, as ``load_images`` resizes); the printed share is
``||resample(d)||^2 / ||d||^2``, the fraction of the difference's energy that a detector fed
``s``-px inputs can still see. Usage: ``python bench/artefact_scale.py [profile] [n_pairs]``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F


def surviving_share(profile: str = "default", n_pairs: int = 120, sizes=(32, 48, 64, 96, 128, 160, 192)) -> dict:
    from dfrobust.data import get_manifest
    from dfrobust.data.manifest import read_rgb

    df = get_manifest(profile)
    df = df[df["split"] == "train"]
    fakes = df[df["label"] == 1].drop_duplicates("pair_id").head(n_pairs)
    reals = df[df["label"] == 0].set_index("pair_id")
    num = {s: 0.0 for s in sizes}
    den = 0.0
    for _, row in fakes.iterrows():
        if row["pair_id"] not in reals.index:
            continue
        real_path = reals.loc[row["pair_id"], "path"]
        real_path = real_path.iloc[0] if hasattr(real_path, "iloc") else real_path
        f = torch.from_numpy(read_rgb(row["path"])).permute(2, 0, 1).float() / 255
        r = torch.from_numpy(read_rgb(real_path)).permute(2, 0, 1).float() / 255
        d = (f - r)[None]
        full = d.shape[-1]
        den += float((d ** 2).sum())
        for s in sizes:
            down = F.interpolate(d, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            up = F.interpolate(down, size=(full, full), mode="bilinear", align_corners=False)
            num[s] += float((up ** 2).sum())
    return {s: num[s] / den for s in sizes}


if __name__ == "__main__":
    profile = sys.argv[1] if len(sys.argv) > 1 else "default"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 120
    torch.set_num_threads(1)
    share = surviving_share(profile, n)
    print(f"share of the fake-real difference energy that survives resizing ({profile}, {n} pairs):")
    for s, v in share.items():
        print(f"  {s:4d} px: {v:.3f}  (lost {1 - v:.3f})")
