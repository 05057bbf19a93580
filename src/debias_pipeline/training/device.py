"""Resolution of the compute device, done once per run and passed to every model."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import torch

VALID_DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """Turn the ``device`` parameter into a ``torch.device``.

    Args:
        name: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device every model of the run trains on.

    Raises:
        ValueError: For an unknown name, or ``cuda`` on a machine without CUDA.
    """
    keep_freed_host_memory()
    if not isinstance(name, str):
        raise ValueError(f"parameter 'device' must be one of {VALID_DEVICES}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"parameter 'device' is {name!r} but CUDA is not available here; use 'auto' or 'cpu'")
        return torch.device(name)
    raise ValueError(f"parameter 'device' must be one of {VALID_DEVICES} (or 'cuda:N'), got {name!r}")


# glibc's mallopt parameters (malloc.h) and the values set: blocks up to 1 GiB come from
# the heap, and up to 2 GiB of freed heap is kept instead of handed back to the system.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 1 << 30, (1 << 31) - 1


@functools.cache
def keep_freed_host_memory() -> bool:
    """Let the process reuse the large host blocks it frees instead of mapping fresh pages.

    A training step allocates and frees several tables of tens of MB (LightGCN's layers and
    gradients); by default glibc maps each such block anew and unmaps it when it is freed,
    so every step pays thousands of page faults (about a tenth of a mini-batch step at
    Gowalla size). Raising glibc's mmap and trim thresholds keeps them in the heap, as the
    jemalloc or tcmalloc that PyTorch's CPU tuning guide suggests would. Done once per
    process; a no-op off glibc. Returns whether both settings took (a glibc that refuses
    a threshold above 32 MiB gets 32 MiB).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) or bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    trimmed = bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return mapped and trimmed
