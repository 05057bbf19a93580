"""The dual model's identifying terms: the unbiased-sample supervision of σ(r̂) and the
popularity tie of the exposure tower, each checked against values computed by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import LabelledPairs, TrainData
from debias_pipeline.models.dual import DualModel
from debias_pipeline.models.losses import centered_tie_penalty
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")
WHERE = "dual.model"

# Two users x three items, MF towers of size 1 (as test_dual_prior.py): item positives
# [1, 1, 0], so p = [1, 1, 1/2] and log p = [0, 0, -log 2].
Y2 = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
STATE = {
    "preference.user_embedding": [[1.0], [-2.0]],
    "preference.item_embedding": [[0.5], [1.5], [-1.0]],
    "exposure.user_embedding": [[2.0], [0.5]],
    "exposure.item_embedding": [[1.0], [-1.0], [3.0]],
}
# The treatment set: (user 0, item 2) rated positive, (user 1, item 0) negative. Both
# have r̂ = -1: BCE(σ(-1), 1) = log(1 + e) = 1.3132617, BCE(σ(-1), 0) = log(1 + e^-1) = 0.3132617.
TREATMENT = LabelledPairs(users=np.array([0, 1]), items=np.array([2, 0]), labels=np.array([1.0, 0.0]))
SUPERVISION_BY_HAND = (1.3132617 + 0.3132617) / 2
# Item means of ô over the two users (mean user 1.25): m = [1.25, -1.25, 3.75], centred
# [0, -2.5, 2.5]. Target s · log p with s = 1: [0, 0, -0.693147], centred
# [0.231049, 0.231049, -0.462098]. Gaps [-0.231049, -2.731049, 2.962098]; squares
# 0.053384, 7.458629, 8.774025; mean 5.428679.
TIE_BY_HAND = 5.428679


def dual_at_state(exposure: dict[str, Any], treatment: LabelledPairs | None = TREATMENT, **overrides: Any) -> DualModel:
    params = {
        "name": "dual",
        "preference": {"embedding_dim": 1},
        "exposure": {"embedding_dim": 1, **exposure},
        "weight_decay": 0.0,
        **overrides,
    }
    model = build_model(params, WHERE, seed=0, device=CPU)
    data = TrainData(sp.csr_matrix(Y2), treatment=treatment)
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    model.module.load_state_dict({**model.module.state_dict(), **{k: torch.tensor(v) for k, v in STATE.items()}})
    if model.needs_treatment:
        model._treatment = treatment.tensors(CPU)
    return model


def test_centered_tie_penalty_by_hand() -> None:
    # x centred is [-1, 0, 1], t is constant: mean of squares 2/3.
    assert centered_tie_penalty(torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3)).item() == pytest.approx(2 / 3)
    # A shared level is free: x − t constant costs nothing.
    assert centered_tie_penalty(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([-2.0, -1.0, 2.0])).item() == pytest.approx(
        0.0, abs=1e-12
    )


@pytest.mark.parametrize("loss", ["bce", "bpr"])
@pytest.mark.parametrize(
    ("exposure", "added"),
    [
        ({"supervision_weight": 2.0}, 2.0 * SUPERVISION_BY_HAND),
        ({"popularity_tie_weight": 3.0, "popularity_tie_slope": 1.0}, 3.0 * TIE_BY_HAND),
        (
            {"supervision_weight": 2.0, "popularity_tie_weight": 3.0, "popularity_tie_slope": 1.0},
            2.0 * SUPERVISION_BY_HAND + 3.0 * TIE_BY_HAND,
        ),
    ],
)
def test_each_term_adds_its_hand_value_to_the_loss(exposure: dict[str, float], added: float, loss: str) -> None:
    # Both terms are positive by hand: a flipped sign would subtract them and fail here.
    plain = dual_at_state({}, loss=loss)
    model = dual_at_state(exposure, loss=loss)
    if loss == "bce":
        base, value = (m.loss(torch.tensor(Y2)).item() for m in (plain, model))
    else:
        triple = (torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 2]))
        base, value = (m.batch_loss(*triple).item() for m in (plain, model))
    assert value - base == pytest.approx(added, rel=1e-5)


def test_the_tie_counts_the_prior_item_part() -> None:
    # With the prior (a = 2), m gains 2 log p = [0, 0, -2 log 2]; against a target of
    # slope 2 the centred gap is then that of the tower alone against 0:
    # m centred [0, -2.5, 2.5], mean of squares 12.5 / 3.
    exposure = {
        "prior": "popularity",
        "prior_item_weight": 2.0,
        "popularity_tie_weight": 1.0,
        "popularity_tie_slope": 2.0,
    }
    model = dual_at_state(exposure)
    plain = dual_at_state({"prior": "popularity", "prior_item_weight": 2.0})
    gap = model.loss(torch.tensor(Y2)).item() - plain.loss(torch.tensor(Y2)).item()
    assert gap == pytest.approx(12.5 / 3, rel=1e-5)


def test_supervision_pulls_the_preference_toward_the_unbiased_labels() -> None:
    # Gradient of the supervision term alone: r̂(0, 2) rises (label 1), r̂(1, 0) falls (label 0).
    model = dual_at_state({"supervision_weight": 1.0})
    preference, exposure = model.module.preference(), model.module.exposure()
    term = model.identification_terms(preference, exposure)
    term.backward()
    step = 0.1
    with torch.no_grad():
        users = model.module.preference.user_embedding - step * model.module.preference.user_embedding.grad
        items = model.module.preference.item_embedding - step * model.module.preference.item_embedding.grad
    assert (users[0] * items[2]).sum().item() > -1.0
    assert (users[1] * items[0]).sum().item() < -1.0


def test_the_tie_pulls_item_exposure_toward_popularity() -> None:
    model = dual_at_state({"popularity_tie_weight": 1.0, "popularity_tie_slope": 1.0})
    term = model.identification_terms(model.module.preference(), model.module.exposure())
    term.backward()
    # Item 2 is the least popular but has the highest mean exposure: its v must fall.
    assert model.module.exposure.item_embedding.grad[2, 0].item() > 0


def test_supervision_makes_the_model_need_the_treatment_set() -> None:
    assert not build_model({"name": "dual"}, WHERE, seed=0, device=CPU).needs_treatment
    supervised = build_model({"name": "dual", "exposure": {"supervision_weight": 1.0}}, WHERE, seed=0, device=CPU)
    assert supervised.needs_treatment
    with pytest.raises(ValueError, match="supervision_weight"):
        supervised.fit(TrainData(sp.csr_matrix(Y2)))


def test_supervised_fit_runs_and_scores() -> None:
    rng = np.random.default_rng(0)
    clicks = sp.csr_matrix((rng.random((12, 9)) < 0.3).astype(np.float32))
    treatment = LabelledPairs(users=np.arange(6), items=np.arange(6), labels=np.array([1.0, 0, 1, 0, 1, 0]))
    params = {
        "name": "dual",
        "preference": {"embedding_dim": 4},
        "exposure": {"embedding_dim": 4, "supervision_weight": 1.0, "popularity_tie_weight": 1.0},
        "epochs": 5,
    }
    model = build_model(params, WHERE, seed=0, device=CPU).fit(TrainData(clicks, treatment=treatment))
    assert model.score().shape == (12, 9) and np.isfinite(model.score()).all()


@pytest.mark.parametrize(
    ("exposure", "message"),
    [
        ({"supervision_weight": -1.0}, "supervision_weight"),
        ({"popularity_tie_weight": math.inf}, "popularity_tie_weight"),
        ({"popularity_tie_slope": 1.0}, "popularity_tie_slope needs popularity_tie_weight"),
    ],
)
def test_bad_identification_options_name_the_parameter(exposure: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model({"name": "dual", "exposure": exposure}, WHERE, seed=0, device=CPU)
