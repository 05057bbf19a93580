"""The dual model's exposure prior (``exposure.prior: popularity``): the prior by hand,
the losses with it by hand, the default that is the study's model bit for bit, fitting
on both losses, saving and loading, and the errors of bad options."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.dual import DualModel, ExposureConfig
from debias_pipeline.models.losses import dual_bce_all_pairs, l2_penalty
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.towers import PopularityPrior, log_popularity

CPU = torch.device("cpu")
CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
WHERE = "dual.model"
PRIOR = {"prior": "popularity"}

# 3 users x 4 items. Item positives n = [3, 2, 1, 0], + 1 = [4, 3, 2, 1], over 4:
# p = [1, 3/4, 1/2, 1/4]. User positives m = [2, 1, 3], + 1 = [3, 2, 4], over 4: q = [3/4, 1/2, 1].
Y = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=np.float32)
P = np.array([1.0, 0.75, 0.5, 0.25])
Q = np.array([0.75, 0.5, 1.0])


def dual(seed: int = 0, exposure: dict[str, Any] | None = None, device: torch.device = CPU, **overrides: Any) -> DualModel:
    params = {
        "name": "dual",
        "preference": {"embedding_dim": 2},
        "exposure": {"embedding_dim": 2, **(exposure or {})},
        "lr": 0.05,
        "weight_decay": 1e-4,
        **overrides,
    }
    return build_model(params, WHERE, seed=seed, device=device)


def random_clicks(n_users: int, n_items: int, seed: int) -> sp.csr_matrix:
    """Clicks of a random preference seen through a popularity-decaying exposure."""
    rng = np.random.default_rng(seed)
    exposure = np.linspace(0.9, 0.1, n_items)[None, :]
    clicks = (rng.random((n_users, n_items)) < 0.5) & (rng.random((n_users, n_items)) < exposure)
    return sp.csr_matrix(clicks.astype(np.float32))


def built(model: DualModel, data: TrainData, seed: int = 0) -> DualModel:
    model.module = model.build_module(data, torch.Generator().manual_seed(seed)).to(model.device)
    return model


def numpy_dual_bce(preference: np.ndarray, exposure: np.ndarray, clicks: np.ndarray) -> float:
    """Mean BCE of σ(r̂)·σ(ô) against the clicks, in float64 with no tricks."""
    click = 1.0 / (1.0 + np.exp(-preference)) / (1.0 + np.exp(-exposure))
    return float(np.mean(-(clicks * np.log(click) + (1.0 - clicks) * np.log(1.0 - click))))


# ---- The prior by hand ----------------------------------------------------------------


def test_log_popularity_by_hand() -> None:
    log_q, log_p = log_popularity(sp.csr_matrix(Y))
    np.testing.assert_allclose(log_q, np.log(Q), rtol=1e-6)
    np.testing.assert_allclose(log_p, np.log(P), rtol=1e-6)
    assert log_q.dtype == log_p.dtype == np.float32
    # Only the pattern counts: a stored rating of 5 is one positive.
    np.testing.assert_allclose(log_popularity(sp.csr_matrix(5 * Y))[1], np.log(P), rtol=1e-6)


@pytest.mark.parametrize(("a", "b", "c"), [(0.5, 0.5, 0.0), (1.0, 2.0, -1.0)])
def test_prior_by_hand(a: float, b: float, c: float) -> None:
    expected = a * np.log(P)[None, :] + b * np.log(Q)[:, None] + c  # (3, 4)
    exposure = {**PRIOR, "prior_item_weight": a, "prior_user_weight": b, "prior_offset": c}
    prior = dual(exposure=exposure).build_prior(TrainData(sp.csr_matrix(Y)))
    np.testing.assert_allclose(prior().numpy(), expected, rtol=1e-6)
    users, items = torch.tensor([0, 1, 2, 1]), torch.tensor([3, 3, 0, 1])
    np.testing.assert_allclose(prior.pairs(users, items).numpy(), expected[[0, 1, 2, 1], [3, 3, 0, 1]], rtol=1e-6)


def test_default_prior_is_the_log_of_the_square_root_propensities() -> None:
    # a = b = ½, c = 0: user 1 (q = ½), item 3 (p = ¼): ½ log ¼ + ½ log ½ = -½ log 8;
    # user 2 (q = 1), item 0 (p = 1): 0.
    prior = dual(exposure=PRIOR).build_prior(TrainData(sp.csr_matrix(Y)))()
    assert prior[1, 3].item() == pytest.approx(-0.5 * math.log(8.0), rel=1e-6)
    assert prior[2, 0].item() == 0.0
    assert prior.shape == (3, 4)


def test_exposure_scores_include_the_prior_and_ranking_ignores_it() -> None:
    data = TrainData(sp.csr_matrix(Y))
    plain, with_prior = (built(dual(seed=1, exposure=e), data, seed=1) for e in ({}, PRIOR))
    for model in (plain, with_prior):
        model._cache_embeddings()
    prior = 0.5 * np.log(P)[None, :] + 0.5 * np.log(Q)[:, None]
    gap = with_prior.exposure_scores().numpy() - plain.exposure_scores().numpy()
    np.testing.assert_allclose(gap, prior, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(with_prior.score(), plain.score())  # same seed, same towers


# ---- The losses with the prior, by hand --------------------------------------------------

# Two users x three items, MF towers of size 1; clicks Y2, item positives [1, 1, 0],
# so p = [1, 1, 1/2]; user positives [1, 1]: q = [1, 1].
Y2 = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
STATE = {
    "preference.user_embedding": [[1.0], [-2.0]],
    "preference.item_embedding": [[0.5], [1.5], [-1.0]],
    "exposure.user_embedding": [[2.0], [0.5]],
    "exposure.item_embedding": [[1.0], [-1.0], [3.0]],
}
A, B, C = 2.0, 0.5, -0.25


def at_state(exposure: dict[str, Any], **overrides: Any) -> DualModel:
    model = dual(exposure={"embedding_dim": 1, **exposure}, preference={"embedding_dim": 1}, **overrides)
    data = TrainData(sp.csr_matrix(Y2))
    model = built(model, data)
    weights = {name: torch.tensor(rows) for name, rows in STATE.items()}
    model.module.load_state_dict({**model.module.state_dict(), **weights})
    return model


def hand_logits() -> tuple[np.ndarray, np.ndarray]:
    tables = {name: np.array(rows) for name, rows in STATE.items()}
    preference = tables["preference.user_embedding"] @ tables["preference.item_embedding"].T
    prior = A * np.log([1.0, 1.0, 0.5])[None, :] + B * np.log([1.0, 1.0])[:, None] + C
    exposure = tables["exposure.user_embedding"] @ tables["exposure.item_embedding"].T + prior
    return preference, exposure


@pytest.mark.parametrize("learned", [False, True])
def test_full_batch_loss_with_the_prior_by_hand(learned: bool) -> None:
    exposure = {**PRIOR, "prior_item_weight": A, "prior_user_weight": B, "prior_offset": C, "prior_learned": learned}
    model = at_state(exposure, weight_decay=0.01)
    preference, exposure_logits = hand_logits()
    # L2 on the four tables: 1 + 4 + 0.25 + 2.25 + 1 + 4 + 0.25 + 1 + 1 + 9 = 23.75; none on a, b, c.
    expected = numpy_dual_bce(preference, exposure_logits, Y2) + 0.01 * 23.75
    loss = model.loss(torch.tensor(Y2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert (model.module.prior.item_weight.grad is not None) == learned


def test_mini_batch_loss_with_the_prior_by_hand() -> None:
    exposure = {**PRIOR, "prior_item_weight": A, "prior_user_weight": B, "prior_offset": C}
    model = at_state(exposure, weight_decay=0.0, loss="bpr")
    preference, exposure_logits = hand_logits()
    users, positives, negatives = np.array([0, 1, 0]), np.array([0, 1, 0]), np.array([2, 0, 1])
    # Per triple: -log ξ̂_ui - log(1 - ξ̂_uj), i.e. twice the mean BCE over its two pairs.
    pairs = (np.concatenate([users, users]), np.concatenate([positives, negatives]))
    clicks = np.concatenate([np.ones(3), np.zeros(3)])
    expected = 2.0 * numpy_dual_bce(preference[pairs], exposure_logits[pairs], clicks)
    loss = model.batch_loss(*(torch.from_numpy(ids) for ids in (users, positives, negatives)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_loss_with_a_strong_prior_is_never_negative(seed: int) -> None:
    # Large weights drive σ(ô) to 0 or 1: the log-space loss stays finite and >= 0.
    data = TrainData(random_clicks(9, 7, seed))
    rng = np.random.default_rng(seed)
    a, b, c = (float(x) for x in rng.normal(0.0, 20.0, size=3))
    exposure = {**PRIOR, "prior_item_weight": a, "prior_user_weight": b, "prior_offset": c}
    model = built(dual(seed=seed, exposure=exposure, weight_decay=0.0), data, seed)
    loss = model.loss(torch.tensor(data.interactions.toarray()))
    assert math.isfinite(loss.item()) and loss.item() >= 0.0


# ---- prior: none is the study's model ----------------------------------------------------


def test_exposure_defaults() -> None:
    config = dual().config.exposure
    assert config == ExposureConfig(embedding_dim=2, prior="none", prior_learned=False)
    assert (config.prior_item_weight, config.prior_user_weight, config.prior_offset) == (0.5, 0.5, 0.0)
    block = yaml.safe_load((CONF / "parameters_training.yml").read_text())["dual"]["model"]
    assert build_model(block, WHERE, seed=0, device=CPU).config.exposure.prior == "none"


def test_prior_none_is_the_plain_dual_model_bit_for_bit() -> None:
    data = TrainData(random_clicks(12, 9, seed=2))
    targets = torch.tensor(data.interactions.toarray())
    towers = {"preference": {"embedding_dim": 4}}
    model = built(dual(seed=3, exposure={"embedding_dim": 3, "prior": "none"}, **towers), data, seed=3)
    assert model.module.prior is None
    assert set(model.module.state_dict()) == {
        f"{tower}.{table}_embedding" for tower in ("preference", "exposure") for table in ("user", "item")
    }
    # The loss as it was before the prior existed.
    pref_users, pref_items = model.module.preference()
    expo_users, expo_items = model.module.exposure()
    reference = dual_bce_all_pairs(pref_users @ pref_items.T, expo_users @ expo_items.T, targets)
    reference = reference + model.config.weight_decay * l2_penalty([pref_users, pref_items, expo_users, expo_items])
    assert torch.equal(model.loss(targets), reference)

    # An explicit 'none' and an absent key are one model: same losses, same scores.
    fits = [
        dual(seed=3, exposure={"embedding_dim": 3, **e}, epochs=15, **towers).fit(data)
        for e in ({}, {"prior": "none"})
    ]
    assert [r.train_loss for r in fits[0].history] == [r.train_loss for r in fits[1].history]
    np.testing.assert_array_equal(fits[0].score(), fits[1].score())
    np.testing.assert_array_equal(fits[0].exposure_scores().numpy(), fits[1].exposure_scores().numpy())


# ---- Fitting, saving and loading -----------------------------------------------------------


def graph(seed: int = 2) -> TrainData:
    clicks = random_clicks(20, 12, seed)
    return TrainData(clicks, build_normalized_adjacency(clicks))


@pytest.mark.parametrize("loss", ["bce", "bpr"])
@pytest.mark.parametrize("learned", [False, True])
def test_fit_with_the_prior(loss: str, learned: bool) -> None:
    exposure = {**PRIOR, "embedding_dim": 1, "num_layers": 1, "prior_learned": learned}
    model = dual(exposure=exposure, preference={"embedding_dim": 4}, epochs=12, loss=loss, batch_size=32)
    model.fit(graph())
    assert model.history[-1].train_loss < model.history[0].train_loss
    assert np.isfinite(model.score()).all() and model.score().shape == (20, 12)
    weights = dict(model.module.prior.named_parameters())
    assert set(weights) == ({"item_weight", "user_weight", "offset"} if learned else set())
    moved = model.module.prior.item_weight.item() != 0.5
    assert moved == learned


@pytest.mark.parametrize("learned", [False, True])
def test_save_and_load_give_identical_scores(learned: bool) -> None:
    data = graph()
    exposure = {**PRIOR, "embedding_dim": 2, "prior_learned": learned}
    fitted = dual(exposure=exposure, preference={"embedding_dim": 4}, epochs=8).fit(data)
    state = fitted.state_dict()
    assert {"prior.item_weight", "prior.log_item_popularity", "prior.log_user_activity"} <= set(state["weights"])
    restored = dual(seed=99, exposure=exposure, preference={"embedding_dim": 4}).load_state_dict(state, data)
    np.testing.assert_array_equal(restored.score(), fitted.score())
    np.testing.assert_array_equal(restored.exposure_scores().numpy(), fitted.exposure_scores().numpy())
    # A state with a prior does not load into a model without one, nor the reverse.
    with pytest.raises(RuntimeError, match="prior"):
        dual(preference={"embedding_dim": 4}).load_state_dict(state, data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_prior_on_cuda_matches_the_cpu(loss: str) -> None:
    data = graph()
    exposure = {**PRIOR, "embedding_dim": 2, "prior_learned": True}
    cuda = dual(exposure=exposure, device=torch.device("cuda"), epochs=5, loss=loss, batch_size=32).fit(data)
    assert cuda.module.prior.log_item_popularity.device.type == "cuda"
    assert cuda.exposure_scores().device.type == "cuda"
    restored = dual(exposure=exposure).load_state_dict(cuda.state_dict(), data)
    np.testing.assert_allclose(restored.score(), cuda.score(), rtol=1e-5, atol=1e-6)


# ---- Bad options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exposure", "message"),
    [
        ({"prior": "pop"}, r"parameter 'dual\.model\.exposure\.prior' must be one of \['none', 'popularity'\], got 'pop'"),
        ({"prior": "popularity", "prior_learned": "yes"}, r"'dual\.model\.exposure\.prior_learned' must be true or false"),
        ({"prior_learned": True}, r"'dual\.model\.exposure\.prior_learned': prior_learned needs prior: popularity"),
        ({"prior_item_weight": 1.0}, r"'dual\.model\.exposure\.prior_item_weight': prior_item_weight needs prior"),
        ({"prior": "popularity", "prior_offset": math.nan}, r"'dual\.model\.exposure\.prior_offset'.*finite"),
        ({"prior_wieght": 1.0}, r"unknown parameter\(s\) dual\.model\.exposure\.prior_wieght"),
    ],
)
def test_bad_prior_options_name_the_parameter(exposure: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dual(exposure=exposure)


def test_prior_module_repr_names_its_scalars() -> None:
    prior = PopularityPrior(torch.zeros(3), torch.zeros(4), 0.5, 0.25, -1.0, learned=True)
    assert "item_weight=0.5, user_weight=0.25, offset=-1, learned=True" in repr(prior)
