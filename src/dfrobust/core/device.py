"""Device choice, seeding, batch sizes and the GPU path's small helpers.

* :func:`auto_batch_size` — a fixed size per device class and input size (what the records use
  unless told otherwise; records depend on the batch through the attacks' seeded random starts).
* :func:`batch_from_memory` — a batch size from the device's *free* memory and a per-sample cost;
  :func:`halving_retry` runs a batched job and halves its batch on out-of-memory (CUDA OOM) until
  it fits, returning the size that worked so the caller can record it.
* :func:`to_device` — pinned-memory (page-locked) host tensors for asynchronous copies to CUDA;
  a no-op on CPU. :func:`deterministic` — the cuDNN / cuBLAS settings records depend on.

Written here rather than taken from a package: torch has the primitives (``mem_get_info``,
``pin_memory``, ``OutOfMemoryError``) but no halve-and-retry helper; accelerate's
``find_executable_batch_size`` does this for training loops only and would add a dependency.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (validated: a one-line
    ValueError for an unknown name, CUDA on a machine without it, or ``cuda:N`` past the visible GPUs)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = "expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
    if not isinstance(requested, str) or (requested not in ("cpu", "cuda") and not requested.startswith("cuda:")):
        raise ValueError(f"device={requested!r}: {expected}")
    try:
        dev = torch.device(requested)
    except RuntimeError:  # 'cuda:x', 'cuda:-1'
        raise ValueError(f"device={requested!r}: {expected}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    n = torch.cuda.device_count() if dev.type == "cuda" else 0
    if dev.index is not None and dev.index >= n:
        raise ValueError(f"device={requested!r}: this machine has {n} visible GPU{'s' * (n != 1)}; "
                         f"expected 'cuda' or 'cuda:N' with N < {n}")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; make CPU runs deterministic. Returns a torch Generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.Generator().manual_seed(seed)


def prepare_run(device: str, seed: int, *, max_threads: int = 2) -> torch.device:
    """The set-up every chapter does once all its checks passed: the device (a one-line error when it
    is unavailable), CPU threads capped at ``max_threads`` (2 cores on the reference laptop), seeds."""
    dev = pick_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), int(max_threads))))
    seed_everything(int(seed))
    return dev


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


def _is_oom(exc: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory(device: torch.device) -> int:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA, available RAM on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 4 GiB
        return 4 << 30


def batch_from_memory(device: torch.device, bytes_per_sample: float, *, fraction: float = 0.5,
                      cap: int = 1024, free: int | None = None) -> int:
    """The largest batch whose ``bytes_per_sample`` x batch fits in ``fraction`` of the free memory
    (at least 1, at most ``cap``). ``free`` overrides the measured free bytes (tests)."""
    if not bytes_per_sample or bytes_per_sample <= 0:
        raise ValueError(f"bytes_per_sample={bytes_per_sample!r}: expected a positive number of bytes")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r}: expected a number in (0, 1]")
    avail = free_memory(device) if free is None else int(free)
    return int(max(1, min(int(cap), int(avail * fraction // bytes_per_sample))))


def halving_retry(job, batch_size: int, *, min_batch: int = 1, log=None):
    """``job(batch_size)``; on out-of-memory free the CUDA cache, halve the batch and retry.

    Returns ``(result, batch_size_used)``. Other errors propagate unchanged; an OOM at
    ``min_batch`` is re-raised (nothing smaller can fit).
    """
    bs = int(batch_size)
    if bs < 1 or bs < min_batch:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= max(1, min_batch={min_batch})")
    while True:
        try:
            return job(bs), bs
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not _is_oom(exc) or bs <= min_batch:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            new = max(min_batch, bs // 2)
            if log is not None:
                log(f"out of memory at batch {bs}; retrying with {new}")
            bs = new


def to_device(x: torch.Tensor, device: torch.device, *, pin: bool = True) -> torch.Tensor:
    """``x`` on ``device``; from CPU to CUDA through pinned (page-locked) memory, copied asynchronously."""
    device = torch.device(device)
    if device.type != "cuda":
        return x.to(device)
    if pin and x.device.type == "cpu" and not x.is_pinned():
        x = x.pin_memory()
    return x.to(device, non_blocking=True)


def pinned(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` in pinned host memory when ``device`` is CUDA (later ``.to(device)`` copies are faster); else ``x``."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available() and x.device.type == "cpu":
        return x.pin_memory()
    return x


def deterministic(device: torch.device) -> None:
    """Settings the records depend on: cuDNN deterministic algorithms without autotuning on CUDA,
    and cuBLAS' fixed workspace. (On CPU, torch's kernels are deterministic for a fixed thread count.)"""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
