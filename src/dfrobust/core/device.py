"""Device choice, seeding and automatic batch size."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (validated)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested not in ("cpu", "cuda") and not requested.startswith("cuda:"):
        raise ValueError(f"device={requested!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    return torch.device(requested)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; make CPU runs deterministic. Returns a torch Generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.Generator().manual_seed(seed)


def auto_batch_size(device: torch.device, input_size: int, cpu: int = 32, gpu: int = 256) -> int:
    """A batch size that fits comfortably: larger on GPU, scaled down for big inputs."""
    base = gpu if device.type == "cuda" else cpu
    scale = (256 / max(input_size, 1)) ** 2
    return max(1, int(base * min(1.0, scale)))


def describe(device: torch.device) -> str:
    """Human-readable device name for provenance and timing tables."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {os.cpu_count()} cores, torch threads={torch.get_num_threads()}"
