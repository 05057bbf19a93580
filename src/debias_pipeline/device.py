"""Resolution of the compute device, done once per run and passed to every model."""

from __future__ import annotations

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
