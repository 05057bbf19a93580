"""Losses over all (user, item) pairs, written so that they can be checked by hand."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def bce_all_pairs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of σ(logits) against ``targets`` over all pairs.

    Args:
        logits: (n_users, n_items) scores r̂.
        targets: (n_users, n_items) Y in {0, 1}.
    """
    return F.binary_cross_entropy_with_logits(logits, targets)


def dual_bce_all_pairs(preference: torch.Tensor, exposure: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of ξ̂ = σ(r̂)·σ(ô) against the clicks Y over all pairs.

    ``log ξ̂ = logσ(r̂) + logσ(ô)`` and, since ``1 - σ(r̂)σ(ô) = σ(-r̂) + σ(r̂)σ(-ô)``,
    ``log(1 - ξ̂) = logaddexp(logσ(-r̂), logσ(r̂) + logσ(-ô))``: exact in log space, no
    clamp, finite gradients even for confident wrong clicks.

    Args:
        preference: (n_users, n_items) preference logits r̂.
        exposure: (n_users, n_items) exposure logits ô.
        targets: (n_users, n_items) Y in {0, 1}.
    """
    log_preference = F.logsigmoid(preference)
    log_click = log_preference + F.logsigmoid(exposure)
    log_no_click = torch.logaddexp(F.logsigmoid(-preference), log_preference + F.logsigmoid(-exposure))
    return -(targets * log_click + (1.0 - targets) * log_no_click).mean()


def l2_penalty(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ ||E||² over the given embedding tables."""
    return torch.stack([t.pow(2).sum() for t in tensors]).sum()
