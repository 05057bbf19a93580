"""The contract every registered recommender honours (after benfred/implicit).

One test class runs against every entry of ``MODELS``, so a newly registered model is
covered without touching this file. The data is a checkerboard whose right answer is
known: users and items fall in two groups and a user likes exactly the items of its
own group. Some of those likes are held out of training; a model that learned the
structure ranks every held-out like above every item of the other group.

Models declare what they are, and the contract checks that instead where it differs:
a closed-form model (``closed_form``: no epochs, no randomness) records one history
line per candidate and gives the same scores whatever its seed; a non-personalized one
(``personalized`` False: MostPop) gives every user the same scores.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.config.params import Params
from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import LabelledPairs, Recommender, TrainData, ValidationSet
from debias_pipeline.models.registry import MODELS, build_model

CPU = torch.device("cpu")
N_USERS, N_ITEMS = 24, 24
SEED = 0

# Small overrides, applied only where a model's Config has the field.
SMALL_EMBEDDING_DIM = 16
TRAINING_OVERRIDES: dict[str, Any] = {
    "epochs": 150,
    "lr": 0.05,
    "weight_decay": 1e-3,
    "patience": 10,
}
# The autoencoders' widths, applied like embedding_dim.
SMALL_WIDTHS: dict[str, Any] = {"embedding_dim": SMALL_EMBEDDING_DIM, "hidden_dims": (32,), "latent_dim": SMALL_EMBEDDING_DIM}


@dataclasses.dataclass(frozen=True)
class Checkerboard:
    """Y[u, i] = 1 iff group(u) == group(i); held-out likes are 0 in ``train``."""

    user_group: np.ndarray  # (n_users,)
    item_group: np.ndarray  # (n_items,)
    train: sp.csr_matrix  # (n_users, n_items)
    validation_likes: np.ndarray  # (n_users, n_items) bool, held out for early stopping
    test_likes: np.ndarray  # (n_users, n_items) bool, held out for the ranking check

    @property
    def data(self) -> TrainData:
        # Social ties within each group (u ~ u + 2), for the models that read them.
        users = np.arange(N_USERS)
        ties = sp.csr_matrix((np.ones(N_USERS, dtype=np.float32), (users, (users + 2) % N_USERS)), shape=(N_USERS,) * 2)
        return TrainData(
            self.train,
            build_normalized_adjacency(self.train),
            social=((ties + ties.T) > 0).astype(np.float32),
            treatment=self.treatment,
        )

    @property
    def treatment(self) -> LabelledPairs:
        """An unbiased labelled sample, for the models that fit on one (CausE): per user,
        two train likes (label 1) and two other-group items (label 0); no held-out like."""
        rng = np.random.default_rng(54321)
        users, items, labels = [], [], []
        for user in range(N_USERS):
            liked = rng.choice(np.flatnonzero(self.train[user].toarray().ravel() > 0), 2, replace=False)
            other = rng.choice(np.flatnonzero(self.item_group != self.user_group[user]), 2, replace=False)
            users += [user] * 4
            items += [*liked, *other]
            labels += [1.0, 1.0, 0.0, 0.0]
        return LabelledPairs(np.array(users), np.array(items), np.array(labels, dtype=np.float32))

    @property
    def validation(self) -> ValidationSet:
        """Per user: the validation like (label 1) and every other-group item (label 0)."""
        rows = self.validation_likes | (self.user_group[:, None] != self.item_group[None, :])
        users, items = np.nonzero(rows)
        return ValidationSet(users=users, items=items, labels=self.validation_likes[users, items].astype(float), k=5)


@cache
def checkerboard() -> Checkerboard:
    user_group = np.arange(N_USERS) % 2
    item_group = np.arange(N_ITEMS) % 2
    likes = user_group[:, None] == item_group[None, :]
    rng = np.random.default_rng(12345)
    validation = np.zeros_like(likes)
    test = np.zeros_like(likes)
    for user in range(N_USERS):
        own_group = rng.permutation(np.flatnonzero(item_group == user_group[user]))
        validation[user, own_group[0]] = True
        test[user, own_group[1:3]] = True
    train = sp.csr_matrix((likes & ~validation & ~test).astype(np.float32))
    return Checkerboard(user_group, item_group, train, validation, test)


def small_params(name: str) -> dict[str, Any]:
    """A small valid parameter block for registry entry ``name``, read off its Config.

    ``embedding_dim`` becomes 16 wherever it appears (also inside nested tower
    blocks); the shared training names get short, fast values; the rest stay default.
    """
    config_cls = MODELS[name].Config
    hints = typing.get_type_hints(config_cls)
    params: dict[str, Any] = {"name": name}
    for name in config_cls.model_fields:
        annotation = hints[name]
        if name in SMALL_WIDTHS:
            params[name] = SMALL_WIDTHS[name]
        elif name in TRAINING_OVERRIDES:
            params[name] = TRAINING_OVERRIDES[name]
        elif isinstance(annotation, type) and issubclass(annotation, Params):
            if "embedding_dim" in annotation.model_fields:
                params[name] = {"embedding_dim": SMALL_EMBEDDING_DIM}
    return params


def build(name: str, seed: int = SEED, **overrides: Any) -> Recommender:
    return build_model({**small_params(name), **overrides}, "test.model", seed=seed, device=CPU)


def epochs(name: str, count: int) -> dict[str, int]:
    """The override that limits training to ``count`` epochs; none for a closed-form model."""
    return {} if MODELS[name].closed_form else {"epochs": count}


_FITTED: dict[tuple[str, int], Recommender] = {}


def fitted(name: str, seed: int = SEED) -> Recommender:
    """A model fitted on the checkerboard with early stopping, cached per (name, seed)."""
    if (name, seed) not in _FITTED:
        board = checkerboard()
        _FITTED[name, seed] = build(name, seed).fit(board.data, board.validation)
    return _FITTED[name, seed]


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor inside nested dicts / lists / tuples / dataclasses."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


@pytest.mark.parametrize("name", sorted(MODELS))
class TestRecommenderContract:
    def test_registry_name_matches_class(self, name: str) -> None:
        model = build(name)
        assert isinstance(model, MODELS[name])
        assert model.name == name
        assert isinstance(model.config, MODELS[name].Config)

    def test_small_params_are_applied(self, name: str) -> None:
        config = build(name).config
        for key, value in small_params(name).items():
            if key == "name":
                continue
            actual = getattr(config, key)
            if isinstance(value, dict):
                assert {k: getattr(actual, k) for k in value} == value
            else:
                assert actual == value

    def test_fit_returns_the_model_itself(self, name: str) -> None:
        board = checkerboard()
        model = build(name, **epochs(name, 3))
        assert model.fit(board.data, board.validation) is model

    def test_fit_without_validation_runs_every_epoch(self, name: str) -> None:
        model = build(name, **epochs(name, 4)).fit(checkerboard().data)
        expected = [1] if MODELS[name].closed_form else [1, 2, 3, 4]  # closed form: one line per candidate
        assert [record.epoch for record in model.history] == expected

    def test_training_lowers_the_loss(self, name: str) -> None:
        history = fitted(name).history
        if MODELS[name].closed_form:
            pytest.skip(f"{name} is fitted in closed form: no loss curve")
        assert history[-1].train_loss < history[0].train_loss

    def test_score_shapes(self, name: str) -> None:
        model = fitted(name)
        everyone = model.score()
        assert everyone.shape == (N_USERS, N_ITEMS)
        assert np.isfinite(everyone).all()
        users = np.array([5, 0, 23, 5])
        some = model.score(users)
        assert some.shape == (4, N_ITEMS)
        np.testing.assert_allclose(some, everyone[users], rtol=1e-6, atol=1e-7)

    def test_score_pairs_gathers_score(self, name: str) -> None:
        model = fitted(name)
        rng = np.random.default_rng(7)
        users = rng.integers(0, N_USERS, size=50)
        items = rng.integers(0, N_ITEMS, size=50)
        pairs = model.score_pairs(users, items)
        assert pairs.shape == (50,)
        full = model.score()
        np.testing.assert_allclose(pairs, full[users, items], rtol=1e-5, atol=1e-6 * np.abs(full).max())

    def test_recovers_the_checkerboard_ranking(self, name: str) -> None:
        board = checkerboard()
        scores = fitted(name).score()
        if not MODELS[name].personalized:  # one ranking for all: the checkerboard is out of reach
            assert np.array_equal(scores, np.broadcast_to(scores[0], scores.shape))
            return
        worst_auc = 1.0
        for user in range(N_USERS):
            held_out = scores[user, board.test_likes[user]]  # (2,)
            other_group = scores[user, board.item_group != board.user_group[user]]  # (12,)
            auc = float((held_out[:, None] > other_group[None, :]).mean())
            worst_auc = min(worst_auc, auc)
        assert worst_auc > 0.95

    def test_same_seed_gives_identical_scores(self, name: str) -> None:
        board = checkerboard()
        again = build(name).fit(board.data, board.validation)
        assert np.array_equal(again.score(), fitted(name).score())
        assert [r.train_loss for r in again.history] == [r.train_loss for r in fitted(name).history]

    def test_different_seed_gives_different_scores(self, name: str) -> None:
        if MODELS[name].closed_form:  # nothing random: the seed changes nothing
            assert np.array_equal(fitted(name, seed=1).score(), fitted(name).score())
            return
        assert not np.allclose(fitted(name, seed=1).score(), fitted(name).score())

    def test_unknown_name_lists_valid_ones(self, name: str) -> None:
        with pytest.raises(ValueError, match="valid models") as error:
            build_model({**small_params(name), "name": f"{name}_typo"}, "test.model", seed=SEED, device=CPU)
        for valid in MODELS:
            assert valid in str(error.value)
        assert f"{name}_typo" in str(error.value)

    def test_unknown_config_key_is_named(self, name: str) -> None:
        with pytest.raises(ValueError, match=r"test\.model\.embeding_dimm"):
            build(name, embeding_dimm=8)

    def test_mistyped_config_value_is_named(self, name: str) -> None:
        with pytest.raises(ValueError, match=r"test\.model\.epochs"):
            build(name, epochs="ten")

    def test_state_dict_holds_cpu_tensors(self, name: str) -> None:
        state = fitted(name).state_dict()
        tensors = _tensors(state)
        assert tensors, "state_dict() holds no tensor"
        assert all(t.device.type == "cpu" for t in tensors)

    def test_state_dict_is_a_copy(self, name: str) -> None:
        model = build(name, **epochs(name, 2)).fit(checkerboard().data)
        before = model.score()
        handed_out = _tensors(model.state_dict())
        originals = [t.clone() for t in handed_out]
        for tensor in handed_out:
            tensor.logical_not_() if tensor.dtype == torch.bool else tensor.add_(1)
        assert np.array_equal(model.score(), before)
        for fresh, original in zip(_tensors(model.state_dict()), originals, strict=True):
            assert torch.equal(fresh, original)

    def test_state_dict_round_trip_restores_the_scores(self, name: str) -> None:
        board = checkerboard()
        model = fitted(name)
        restored = build(name, seed=SEED + 1).load_state_dict(model.state_dict(), board.data)
        assert np.array_equal(restored.score(), model.score())
        assert restored.best_epoch == model.best_epoch

    def test_state_of_another_model_is_refused(self, name: str) -> None:
        other = next(n for n in MODELS if n != name)
        with pytest.raises(ValueError, match="cannot be loaded"):
            build(name).load_state_dict({**fitted(name).state_dict(), "model": other}, checkerboard().data)

    def test_scoring_before_fit_raises(self, name: str) -> None:
        model = build(name)
        with pytest.raises(RuntimeError, match="not fitted"):
            model.score()
        with pytest.raises(RuntimeError, match="not fitted"):
            model.score_pairs(np.array([0]), np.array([0]))
        with pytest.raises(RuntimeError, match="not fitted"):
            model.state_dict()
