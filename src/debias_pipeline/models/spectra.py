"""Spectra of a factorized score matrix U Vᵀ and the *eigen* penalties built on them.

The *eigen* variant of the dual model (PROTOCOL.md §4) penalizes how the score matrix
of a tower spreads over its embedding dimensions. For user embeddings U (n x d) and
item embeddings V (m x d) the column spectrum is

    e_j = ||U[:, j]||_2 · ||V[:, j]||_2,   j = 1..d, sorted descending.

U Vᵀ = Σ_j U[:, j] V[:, j]ᵀ is a sum of d rank-one matrices of norm e_j; when the
columns of U are mutually orthogonal and so are those of V, this is an SVD and the e_j
are exactly the singular values of U Vᵀ. Otherwise they are a cheap proxy: O((n + m) d)
and differentiable everywhere the e_j are distinct, where an SVD is neither.

On it, with 1 <= k:
    f1(e) = (1/k) Σ_{j<k} e_j                 (``top_mean``: mean of the top k)
    f2(e) = (1/k) Σ_{j<k} (e_j − e_{k+j})     (``top_gap``: top k minus the next k)
The older, faster form ``power_iteration_top`` estimates only the top singular value.

Each e_j ≤ (||U[:, j]||² + ||V[:, j]||²) / 2, so f1, f2 ≤ ||E||² / (2k) and the power
estimate ≤ ||E||² / 2 (E = U and V stacked): a negative λ on one of them cannot drive
the loss to −∞ while the L2 term λ_L2 ||E||² has λ_L2 ≥ |λ| / (2k) (|λ| / 2 for power).
"""

from __future__ import annotations

import math

import torch


def _check_factors(users: torch.Tensor, items: torch.Tensor) -> None:
    if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
        raise ValueError(
            f"users and items must be (n, d) and (m, d) with the same d, got {tuple(users.shape)} "
            f"and {tuple(items.shape)}"
        )


def _check_k(spectrum: torch.Tensor, k: int, blocks: int, penalty: str) -> None:
    """``penalty`` reads ``blocks`` consecutive runs of k entries: it needs d >= blocks · k."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    d = spectrum.shape[-1]
    if d < blocks * k:
        bound = "d" if blocks == 1 else f"d / {blocks}"
        raise ValueError(
            f"k must be <= {bound} = {d // blocks} for {penalty} on a spectrum of d = {d} "
            f"dimensions (the embedding size), got k = {k}"
        )


def column_spectrum(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """e_j = ||U[:, j]||_2 · ||V[:, j]||_2 for every dimension j, sorted descending.

    These are the singular values of U Vᵀ when the columns of U are mutually orthogonal
    and so are those of V; U Vᵀ itself is never formed.

    Args:
        users: (n_users, d) user embeddings U.
        items: (n_items, d) item embeddings V.

    Returns:
        (d,) the sorted e_j; differentiable (the sort only permutes).
    """
    _check_factors(users, items)
    spectrum = torch.linalg.vector_norm(users, dim=0) * torch.linalg.vector_norm(items, dim=0)  # (d,)
    return torch.sort(spectrum, descending=True).values


def top_mean(spectrum: torch.Tensor, k: int) -> torch.Tensor:
    """f1(e) = (1/k) Σ_{j<k} e_j, the mean of the k largest entries.

    Args:
        spectrum: (d,) e sorted descending, as ``column_spectrum`` returns it.
        k: how many leading entries, 1 <= k <= d.

    Raises:
        ValueError: Naming ``k`` when it is not in 1..d.
    """
    _check_k(spectrum, k, 1, "the top-k mean f1")
    return spectrum[:k].mean()


def top_gap(spectrum: torch.Tensor, k: int) -> torch.Tensor:
    """f2(e) = (1/k) Σ_{j<k} (e_j − e_{k+j}), the top k minus the next k.

    Args:
        spectrum: (d,) e sorted descending, as ``column_spectrum`` returns it.
        k: size of each block, 1 <= k <= d / 2.

    Raises:
        ValueError: Naming ``k`` when d < 2k.
    """
    _check_k(spectrum, k, 2, "the top-k gap f2")
    return (spectrum[:k] - spectrum[k : 2 * k]).mean()


def power_iteration_top(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The top singular value σ_1 of M = U Vᵀ, by one power-iteration step from all ones.

    With v0 = 1_m / √m (the normalized all-ones item vector), one step gives
    u = M v0 = U (Vᵀ v0) and the estimate ||u||_2 = ||M v0||_2. Since v0 is a unit
    vector, the estimate never exceeds σ_1, and it equals σ_1 when v0 is a top right
    singular vector of M. M is never formed: the cost is O((n + m) d).

    Args:
        users: (n_users, d) user embeddings U.
        items: (n_items, d) item embeddings V.

    Returns:
        A scalar tensor, differentiable in U and V.
    """
    _check_factors(users, items)
    item_sum = items.sum(dim=0) / math.sqrt(items.shape[0])  # (d,) Vᵀ v0
    return torch.linalg.vector_norm(users @ item_sum)  # ||U Vᵀ v0||


PENALTY_FORMS = ("f1", "f2", "power")


def required_dimensions(form: str, k: int) -> int:
    """The smallest embedding size d on which ``spectral_penalty(form, ..., k)`` is defined."""
    return {"f1": k, "f2": 2 * k}.get(form, 1)


def spectral_penalty(form: str, users: torch.Tensor, items: torch.Tensor, k: int) -> torch.Tensor:
    """The *eigen* penalty f of one tower: ``top_mean`` (f1) or ``top_gap`` (f2) of its
    ``column_spectrum``, or ``power_iteration_top`` (power, which ignores k).

    Args:
        form: one of ``PENALTY_FORMS``.
        users: (n_users, d) user embeddings U.
        items: (n_items, d) item embeddings V.
        k: the k of f1 and f2.
    """
    if form == "power":
        return power_iteration_top(users, items)
    if form == "f1":
        return top_mean(column_spectrum(users, items), k)
    if form == "f2":
        return top_gap(column_spectrum(users, items), k)
    raise ValueError(f"form must be one of {list(PENALTY_FORMS)}, got {form!r}")
