"""Losses checked against values computed by hand.

Logits are chosen so that the sigmoids are simple fractions:
    σ(0) = 1/2,  σ(ln 3) = 3/4,  σ(-ln 3) = 1/4.
"""

from __future__ import annotations

import math

import pytest
import torch

from debias_pipeline.models.losses import (
    bce_all_pairs,
    bpr_loss,
    dual_bce_all_pairs,
    enhanced_bpr_loss,
    l2_penalty,
)

LN3 = math.log(3.0)


def test_bce_all_pairs_by_hand():
    logits = torch.tensor([[0.0, LN3], [-LN3, 0.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    # σ = [[1/2, 3/4], [1/4, 1/2]]
    # terms: -ln(1/2) = ln 2; -ln(3/4) = ln(4/3); -ln(1 - 1/4) = ln(4/3); -ln(1 - 1/2) = ln 2
    # mean = (2 ln 2 + 2 ln(4/3)) / 4 = ln(8/3) / 2 = 0.4904146265058631
    expected = math.log(8.0 / 3.0) / 2.0
    assert bce_all_pairs(logits, targets).item() == pytest.approx(expected, rel=1e-12)


def test_bce_all_pairs_gradient_by_hand():
    # d mean-BCE / d logit = (σ(x) - y) / n_pairs; n_pairs = 4
    # -> [[(1/2 - 1)/4, (3/4 - 1)/4], [(1/4 - 0)/4, (1/2 - 0)/4]] = [[-1/8, -1/16], [1/16, 1/8]]
    logits = torch.tensor([[0.0, LN3], [-LN3, 0.0]], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    bce_all_pairs(logits, targets).backward()
    expected = torch.tensor([[-1 / 8, -1 / 16], [1 / 16, 1 / 8]], dtype=torch.float64)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-12, atol=1e-15)


def test_dual_bce_all_pairs_by_hand():
    preference = torch.tensor([[0.0, LN3], [LN3, 0.0]], dtype=torch.float64)
    exposure = torch.tensor([[0.0, 0.0], [LN3, LN3]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # ξ = σ(r)σ(o) = [[1/2·1/2, 3/4·1/2], [3/4·3/4, 1/2·3/4]] = [[1/4, 3/8], [9/16, 3/8]]
    # terms: y=1: -ln(1/4) = ln 4;     y=0: -ln(1 - 3/8) = ln(8/5)
    #        y=0: -ln(1 - 9/16) = ln(16/7); y=1: -ln(3/8) = ln(8/3)
    # mean = ln(4 · 8/5 · 16/7 · 8/3) / 4 = ln(4096/105) / 4 = 0.9159514541404551
    expected = math.log(4096.0 / 105.0) / 4.0
    loss = dual_bce_all_pairs(preference, exposure, targets)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_dual_bce_gradient_by_hand():
    # One pair, y = 0, r = o = 0: ξ = 1/4, L = -ln(1 - σ(r)σ(o)).
    # dL/dr = σ(o)·σ(r)(1 - σ(r)) / (1 - ξ) = (1/2 · 1/4) / (3/4) = 1/6, same for o by symmetry.
    preference = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    exposure = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    dual_bce_all_pairs(preference, exposure, torch.zeros(1, 1, dtype=torch.float64)).backward()
    assert preference.grad.item() == pytest.approx(1 / 6, rel=1e-12)
    assert exposure.grad.item() == pytest.approx(1 / 6, rel=1e-12)


def test_dual_bce_reduces_to_bce_when_exposure_is_certain():
    # σ(40) = 1 - 4.2e-18 in float64, so ξ = σ(r) to ~1e-17 and the dual loss equals
    # the plain BCE of the bce_all_pairs hand example: ln(8/3) / 2.
    preference = torch.tensor([[0.0, LN3], [-LN3, 0.0]], dtype=torch.float64)
    exposure = torch.full((2, 2), 40.0, dtype=torch.float64)
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    loss = dual_bce_all_pairs(preference, exposure, targets)
    assert loss.item() == pytest.approx(math.log(8.0 / 3.0) / 2.0, rel=1e-12)


def test_dual_bce_no_click_by_hand_and_far_from_saturation():
    # y = 0, r = o = 0: ξ = 1/2 · 1/2 = 1/4, loss = -ln(3/4) = 0.2876820724517809.
    zero = torch.zeros((1, 1), dtype=torch.float64)
    assert dual_bce_all_pairs(zero, zero, zero).item() == pytest.approx(0.2876820724517809, rel=1e-14)
    # y = 0, r = o = -50: ξ = σ(-50)² = 3.7e-44, so the loss and its gradient
    # (dL/dr = ξ(1 - σ(r)) / (1 - ξ) ≈ 3.7e-44) are 0 to well within 1e-30; the log-space
    # form cancels terms of size e^-50 there, so only absolute accuracy is asked for.
    preference = torch.full((1, 1), -50.0, dtype=torch.float64, requires_grad=True)
    loss = dual_bce_all_pairs(preference, torch.full((1, 1), -50.0, dtype=torch.float64), zero)
    loss.backward()
    assert abs(loss.item()) < 1e-30
    assert torch.isfinite(preference.grad).all() and abs(preference.grad.item()) < 1e-30


def test_dual_bce_saturated_click_on_a_negative_float32():
    # y = 0 with r = o = 20 (float32, where σ(20) rounds to exactly 1 and the naive
    # product gives log(0)). With σ = σ(20): 1 - ξ = 1 - σ² = σ(-20)(1 + σ), so
    #   L = softplus(20) - ln(1 + σ(20)) = 20 + 2.06e-9 - ln(2 - 2.06e-9) = 19.306852821...
    #   dL/dr = σ²(1 - σ) / (1 - σ²) = σ² / (1 + σ) = 1/2 - 3.1e-9, the same for o.
    preference = torch.full((1, 1), 20.0, requires_grad=True)
    exposure = torch.full((1, 1), 20.0, requires_grad=True)
    loss = dual_bce_all_pairs(preference, exposure, torch.zeros(1, 1))
    loss.backward()
    assert loss.item() == pytest.approx(20.0 - math.log(2.0), rel=1e-5)
    assert preference.grad.item() == pytest.approx(0.5, abs=1e-4)
    assert exposure.grad.item() == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dual_bce_finite_when_click_probability_rounds_to_one(dtype):
    # r = o = 40: 1 - σ(r)σ(o) ≈ 8.5e-18, below what log1mexp's clamp resolves; the
    # loss must stay finite and the gradient must not be NaN.
    preference = torch.full((1, 1), 40.0, dtype=dtype, requires_grad=True)
    exposure = torch.full((1, 1), 40.0, dtype=dtype, requires_grad=True)
    loss = dual_bce_all_pairs(preference, exposure, torch.zeros(1, 1, dtype=dtype))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(preference.grad).all() and torch.isfinite(exposure.grad).all()


def test_dual_bce_large_negative_logits():
    # r = o = -50 (float32). Pair 0 has y = 1, pair 1 has y = 0; mean over 2 pairs.
    #   y = 1: L = -2·logσ(-50) = 2·softplus(50) = 100 (+4e-22); dL/dr = -σ(50) / 2 = -1/2
    #   y = 0: L = -ln(1 - σ(-50)²) ≈ e^-100 ≈ 0;                 dL/dr ≈ 2e^-100 / 2 ≈ 0
    #   mean loss = (100 + 0) / 2 = 50
    preference = torch.full((1, 2), -50.0, requires_grad=True)
    exposure = torch.full((1, 2), -50.0, requires_grad=True)
    loss = dual_bce_all_pairs(preference, exposure, torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert loss.item() == pytest.approx(50.0, rel=1e-6)
    for grad in (preference.grad, exposure.grad):
        assert torch.isfinite(grad).all()
        assert grad[0, 0].item() == pytest.approx(-0.5, rel=1e-6)
        assert grad[0, 1].item() == pytest.approx(0.0, abs=1e-30)


def test_l2_penalty_by_hand():
    # 1 + 4 + 9 + 16 = 30 and 1 + 0.25 = 1.25 -> 31.25; gradient 2E
    first = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    second = torch.tensor([[-1.0, 0.5]], requires_grad=True)
    penalty = l2_penalty([first, second])
    assert penalty.item() == 31.25
    penalty.backward()
    torch.testing.assert_close(first.grad, torch.tensor([[2.0, 4.0], [6.0, 8.0]]))
    torch.testing.assert_close(second.grad, torch.tensor([[-2.0, 1.0]]))


def test_l2_penalty_accepts_a_generator():
    tables = (torch.full((2, 3), 2.0) for _ in range(2))  # 2 x (6 entries x 4) = 48
    assert l2_penalty(tables).item() == 48.0


# ---------------------------------------------------------------------------- enhanced BPR


def test_enhanced_bpr_by_hand_on_three_triples() -> None:
    positive = torch.tensor([2.0, 0.5, -1.0])
    negative = torch.tensor([1.0, 1.5, -1.0])
    m, tau, alpha = 0.05, 0.2, 0.8
    d = [-1.0, 1.0, 0.0]  # negative - positive
    margin_term = sum(math.log1p(math.exp(x + m)) for x in d) / 3
    temperature_term = sum(math.log1p(math.exp(x / tau)) for x in d) / 3
    expected = alpha * margin_term + (1 - alpha) * temperature_term
    assert enhanced_bpr_loss(positive, negative, m, tau, alpha).item() == pytest.approx(expected, rel=1e-6)
    # the contrastive term is -log softmax([pos/τ, neg/τ])[0]
    softmax_form = -torch.log_softmax(torch.stack([positive / tau, negative / tau], dim=1), dim=1)[:, 0].mean()
    assert softmax_form.item() == pytest.approx(temperature_term, rel=1e-6)


def test_enhanced_bpr_with_no_margin_and_alpha_one_is_bpr() -> None:
    generator = torch.Generator().manual_seed(0)
    positive, negative = torch.randn(50, generator=generator), torch.randn(50, generator=generator)
    assert torch.equal(enhanced_bpr_loss(positive, negative, 0.0, 0.2, 1.0), bpr_loss(positive, negative))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8, 1.0])
def test_enhanced_bpr_is_never_negative(alpha: float) -> None:
    # every term is a softplus: positive even when every positive far outscores its negative
    positive, negative = torch.full((4,), 50.0), torch.full((4,), -50.0)
    value = enhanced_bpr_loss(positive, negative, 0.05, 0.2, alpha).item()
    assert value >= 0 and math.isfinite(value)
