"""Column spectra and the *eigen* penalties f1, f2 and the power-iteration estimate,
against values worked out by hand on small U and V."""

from __future__ import annotations

import math

import pytest
import torch

from debias_pipeline.models.spectra import (
    column_spectrum,
    power_iteration_top,
    required_dimensions,
    spectral_penalty,
    top_gap,
    top_mean,
)

R5 = math.sqrt(5.0)

# U is 3 x 4, V is 2 x 4 (rows are users / items). Column norms:
#   U[:, 0] = [1, 2, 2] -> 3      V[:, 0] = [0, 1] -> 1     e_0 = 3
#   U[:, 1] = [2, 0, 1] -> √5     V[:, 1] = [3, 4] -> 5     e_1 = 5√5 ≈ 11.18
#   U[:, 2] = [0, 3, 4] -> 5      V[:, 2] = [1, 0] -> 1     e_2 = 5
#   U[:, 3] = [0, 0, 1] -> 1      V[:, 3] = [6, 8] -> 10    e_3 = 10
# Sorted descending: e = [5√5, 10, 5, 3].
U = [[1.0, 2.0, 0.0, 0.0], [2.0, 0.0, 3.0, 0.0], [2.0, 1.0, 4.0, 1.0]]
V = [[0.0, 3.0, 1.0, 6.0], [1.0, 4.0, 0.0, 8.0]]
SPECTRUM = [5 * R5, 10.0, 5.0, 3.0]


def factors(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    users = torch.tensor(U, dtype=torch.float64, requires_grad=requires_grad)
    items = torch.tensor(V, dtype=torch.float64, requires_grad=requires_grad)
    return users, items


def spectrum() -> torch.Tensor:
    return torch.tensor(SPECTRUM, dtype=torch.float64)


def test_column_spectrum_by_hand() -> None:
    torch.testing.assert_close(column_spectrum(*factors()), spectrum(), rtol=0, atol=1e-12)


def test_column_spectrum_is_the_svd_for_orthogonal_columns() -> None:
    # U columns [1, 1, 2] and [1, -1, 0] are orthogonal (1 - 1 + 0), norms √6 and √2;
    # V columns [1, 2] and [2, -1] are orthogonal (2 - 2), norms √5 and √5.
    # So U Vᵀ = √6√5 a bᵀ + √2√5 c dᵀ with orthonormal a, c and b, d: σ = [√30, √10].
    users = torch.tensor([[1.0, 1.0], [1.0, -1.0], [2.0, 0.0]], dtype=torch.float64)
    items = torch.tensor([[1.0, 2.0], [2.0, -1.0]], dtype=torch.float64)
    expected = torch.tensor([math.sqrt(30.0), math.sqrt(10.0)], dtype=torch.float64)
    torch.testing.assert_close(column_spectrum(users, items), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.svdvals(users @ items.T)[:2], expected, rtol=0, atol=1e-12)


def test_column_spectrum_refuses_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="same d"):
        column_spectrum(torch.ones(3, 4), torch.ones(2, 3))


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 5 * R5),  # e_0
        (2, (5 * R5 + 10) / 2),  # ≈ 10.590
        (4, (5 * R5 + 10 + 5 + 3) / 4),  # all of them
    ],
)
def test_top_mean_by_hand(k: int, expected: float) -> None:
    assert top_mean(spectrum(), k).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 5 * R5 - 10),  # e_0 - e_1 ≈ 1.180
        (2, ((5 * R5 - 5) + (10 - 3)) / 2),  # (e_0 - e_2 + e_1 - e_3) / 2 ≈ 6.590
    ],
)
def test_top_gap_by_hand(k: int, expected: float) -> None:
    assert top_gap(spectrum(), k).item() == pytest.approx(expected, rel=1e-12)


def test_top_gap_needs_two_k_dimensions() -> None:
    # d = 4 < 2 · 3.
    with pytest.raises(ValueError, match=r"^k must be <= d / 2 = 2 .* d = 4 .* got k = 3"):
        top_gap(spectrum(), 3)


def test_top_mean_needs_k_dimensions() -> None:
    with pytest.raises(ValueError, match=r"^k must be <= d = 4 .* got k = 5"):
        top_mean(spectrum(), 5)


@pytest.mark.parametrize("k", [0, -1, 1.0, True])
@pytest.mark.parametrize("penalty", [top_mean, top_gap])
def test_k_must_be_a_positive_integer(penalty, k: object) -> None:
    with pytest.raises(ValueError, match=r"^k must be a positive integer"):
        penalty(spectrum(), k)


def test_power_iteration_top_by_hand() -> None:
    # v0 = [1, 1] / √2 over the 2 items; Vᵀ [1, 1] = [0+1, 3+4, 1+0, 6+8] = [1, 7, 1, 14].
    # U [1, 7, 1, 14] = [1 + 14, 2 + 3, 2 + 7 + 4 + 14] = [15, 5, 27];
    # estimate = ||[15, 5, 27]|| / √2 = √(225 + 25 + 729) / √2 = √(979 / 2) ≈ 22.12.
    users, items = factors()
    estimate = power_iteration_top(users, items)
    assert estimate.item() == pytest.approx(math.sqrt(979 / 2), rel=1e-12)
    # One step from a unit vector never overshoots σ_1.
    assert estimate.item() <= torch.linalg.svdvals(users @ items.T)[0].item()


def test_power_iteration_top_is_exact_when_all_ones_is_the_top_direction() -> None:
    # U Vᵀ = [[1, 1, 1], [2, 2, 2]] = (√5 a)(√3 b)ᵀ with b = 1/√3: σ_1 = √15, and one
    # step gives U (Vᵀ 1/√3) = [1, 2] · √3, whose norm is √15.
    users = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    items = torch.ones(3, 1, dtype=torch.float64)
    assert power_iteration_top(users, items).item() == pytest.approx(math.sqrt(15.0), rel=1e-12)


def test_gradient_goes_to_the_top_column_only() -> None:
    # f1 with k = 1 is e_1 = ||U[:, 1]|| ||V[:, 1]||: d/dU[:, 1] = ||V[:, 1]|| U[:, 1] / ||U[:, 1]||
    # = 5 [2, 0, 1] / √5 = √5 [2, 0, 1]; d/dV[:, 1] = √5 [3, 4] / 5; every other column 0.
    users, items = factors(requires_grad=True)
    top_mean(column_spectrum(users, items), 1).backward()
    expected_users = torch.zeros(3, 4, dtype=torch.float64)
    expected_users[:, 1] = R5 * torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    expected_items = torch.zeros(2, 4, dtype=torch.float64)
    expected_items[:, 1] = R5 / 5 * torch.tensor([3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(users.grad, expected_users, rtol=0, atol=1e-12)
    torch.testing.assert_close(items.grad, expected_items, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("form", "k"), [("f1", 2), ("f2", 2), ("power", 1)])
def test_penalties_pass_gradcheck(form: str, k: int) -> None:
    # Distinct e_j (the hand example), so the sort is locally a fixed permutation.
    users, items = factors(requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, v: spectral_penalty(form, u, v, k), (users, items))


def test_spectral_penalty_dispatches_each_form() -> None:
    users, items = factors()
    assert spectral_penalty("f1", users, items, 2).item() == pytest.approx((5 * R5 + 10) / 2, rel=1e-12)
    assert spectral_penalty("f2", users, items, 1).item() == pytest.approx(5 * R5 - 10, rel=1e-12)
    assert spectral_penalty("power", users, items, 30).item() == pytest.approx(math.sqrt(979 / 2), rel=1e-12)
    with pytest.raises(ValueError, match=r"^form must be one of \['f1', 'f2', 'power'\]"):
        spectral_penalty("none", users, items, 1)


def test_required_dimensions() -> None:
    assert [required_dimensions(form, 6) for form in ("f1", "f2", "power", "none")] == [6, 12, 1, 1]
