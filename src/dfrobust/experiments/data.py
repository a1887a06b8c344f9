"""The data chapter (01_data): its one validation call.

The chapter's work (the manifest, the figures, the colour baseline and the Meso4 bar) is done by
``data``, ``figures`` and ``models``; what lives here is :func:`check_params`, which the runner's
preflight calls before any chapter starts (``dfrobust.experiments.<stem>`` of notebook ``NN_<stem>``).
"""

from __future__ import annotations

from ..core.device import pick_device
from ..core.params import check_int, check_seed
from ..core.profiles import check_profile


def check_params(*, profile: str, seed: int, pairs_per_group: int, strip_frames: int, train_meso4: bool,
                 device: str, data_root: str = "") -> dict:
    """Every parameter of the data chapter checked (one-line ValueError naming it) before any data is
    made. Returns ``data_root`` (None for the synthetic benchmark) and ``device`` (a torch.device)."""
    check_profile(profile)
    check_seed(seed)
    check_int(pairs_per_group, "pairs_per_group", 1, 50)  # a grid of 6 groups x pairs_per_group pairs
    check_int(strip_frames, "strip_frames", 1, 100)       # one figure row of frames
    if not isinstance(train_meso4, bool):
        raise ValueError(f"train_meso4={train_meso4!r}: expected True or False")
    if not isinstance(data_root, str):
        raise ValueError(f"data_root={data_root!r}: expected a folder path, or '' for the synthetic benchmark")
    return {"data_root": data_root or None, "device": pick_device(device)}
