"""Chapter 02 (the detectors): its one validation call.

Training itself lives in :mod:`dfrobust.models.train`; the chapter only checks its parameters,
resolves each detector's training values from ``settings.training`` in ``notebooks/study.yml``
(the values every later chapter's ``get_trained`` resolves too, so all load the same checkpoints)
and prepares the run.
"""

from __future__ import annotations

from ..core.device import prepare_run
from ..core.params import split_list
from ..core.profiles import check_profile
from ..models import MODELS
from ..models.train import resolve_hparams


def check_params(*, profile: str, seed: int, models: str, device: str, data_root: str = "",
                 port_check: bool = True, min_val_auc: float = 0.7) -> dict:
    """Every parameter checked (one-line ValueError naming it) before any data or model work.

    Returns ``models`` (list), ``hparams`` (detector -> resolved training values), ``device``
    (a torch.device, threads capped and seeds set) and ``params`` (provenance of the run).
    """
    check_profile(profile)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an integer >= 0")
    model_list = split_list(models, "models", allowed=MODELS)
    if not isinstance(port_check, bool):
        raise ValueError(f"port_check={port_check!r}: expected True or False")
    if isinstance(min_val_auc, bool) or not isinstance(min_val_auc, (int, float)) or not 0 <= min_val_auc <= 1:
        raise ValueError(f"min_val_auc={min_val_auc!r}: expected a number in [0, 1]")
    hparams = {m: resolve_hparams(m, profile) for m in model_list}
    dev = prepare_run(device, seed)
    params = dict(profile=profile, seed=seed, models=model_list, data_root=str(data_root or ""),
                  min_val_auc=float(min_val_auc), device=str(dev))
    return {"models": model_list, "hparams": hparams, "device": dev, "params": params}
