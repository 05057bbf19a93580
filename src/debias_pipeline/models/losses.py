"""Losses over all (user, item) pairs, written so that they can be checked by hand."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

_LOG_HALF = -math.log(2.0)


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(a))`` for ``a <= 0``, accurate at both ends (Mächler, 2012).

    Each branch only ever sees inputs where it is finite, so no NaN gradient leaks
    through ``torch.where`` from the branch that is not taken.
    """
    a = a.clamp(max=-1e-12)
    near_zero = a > _LOG_HALF
    first = torch.log(-torch.expm1(torch.where(near_zero, a, torch.full_like(a, _LOG_HALF))))
    second = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(a, _LOG_HALF), a)))
    return torch.where(near_zero, first, second)


def bce_all_pairs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of σ(logits) against ``targets`` over all pairs.

    Args:
        logits: (n_users, n_items) scores r̂.
        targets: (n_users, n_items) Y in {0, 1}.
    """
    return F.binary_cross_entropy_with_logits(logits, targets)


def dual_bce_all_pairs(preference: torch.Tensor, exposure: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of ξ̂ = σ(r̂)·σ(ô) against the clicks Y over all pairs.

    ``log ξ̂ = logσ(r̂) + logσ(ô)`` and ``log(1 - ξ̂) = log1mexp(log ξ̂)``, so the
    product is never formed in probability space (no underflow, no log(0)).

    Args:
        preference: (n_users, n_items) preference logits r̂.
        exposure: (n_users, n_items) exposure logits ô.
        targets: (n_users, n_items) Y in {0, 1}.
    """
    log_click = F.logsigmoid(preference) + F.logsigmoid(exposure)
    return -(targets * log_click + (1.0 - targets) * log1mexp(log_click)).mean()


def l2_penalty(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ ||E||² over the given embedding tables."""
    return torch.stack([t.pow(2).sum() for t in tensors]).sum()
