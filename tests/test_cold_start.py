"""The cold-start protocol: the split withholds users entirely and never leaks their
held-out interactions into training; each withheld user is scored by the model's way
with a new user, and the way is reported per group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import train_positive_matrix
from debias_pipeline.data.registry import dataset_spec
from debias_pipeline.evaluation.cold_start import ColdStartScorer
from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.evaluation.protocols import evaluation_setup
from debias_pipeline.evaluation.splits import split_for_protocol
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")
N_USERS, N_ITEMS = 60, 25


def interactions(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(u, i) for u in range(N_USERS) for i in rng.choice(N_ITEMS, size=8, replace=False)]
    users, items = np.array(rows).T
    return pd.DataFrame(
        {
            "user": users,
            "item": items,
            "rating": 5.0,
            "timestamp": rng.permutation(users.size).astype(float),
            "source": "all",
            "label": np.ones(users.size, dtype=np.int8),
        }
    )


def split(known: int = 3, seed: int = 0) -> pd.DataFrame:
    setup = evaluation_setup({"protocol": "cold_start"}, "movielens_100k")
    return split_for_protocol(
        interactions(), setup, {}, dataset_spec("movielens_100k"), seed, {"users": 0.2, "validation_users": 0.1, "known_interactions": known}
    )


def test_withheld_users_have_nothing_in_training() -> None:
    table = split()
    withheld = table.loc[table["split"] != "train", "user"].unique()
    assert len(withheld) == round(0.2 * N_USERS) + round(0.1 * N_USERS)
    train = train_positive_matrix(table, (N_USERS, N_ITEMS))
    assert train[withheld].nnz == 0  # not one of their rows, known or held out, is trained on
    trained_pairs = set(zip(*train.nonzero(), strict=True))
    held = table[table["split"] != "train"]
    assert not trained_pairs & set(zip(held["user"], held["item"], strict=True))
    assert set(table.loc[table["split"] == "train", "role"]) == {"input"}


@pytest.mark.parametrize("known", [0, 1, 3, 10])
def test_a_withheld_user_brings_their_first_known_interactions(known: int) -> None:
    table = split(known)
    source = interactions()
    for user, rows in table[table["split"] == "test"].groupby("user"):
        times = source[source["user"] == user].sort_values("timestamp")
        expected = set(times["item"].to_numpy()[:known])
        assert set(rows.loc[rows["role"] == "input", "item"]) == expected
        assert len(rows[rows["role"] == "target"]) == max(8 - known, 0)


def test_the_split_is_seeded() -> None:
    pd.testing.assert_frame_equal(split(seed=3), split(seed=3))
    assert not split(seed=3)[["user", "split"]].equals(split(seed=4)[["user", "split"]])


def _fitted(name: str, train: sp.csr_matrix, features: np.ndarray | None = None, **block):
    data = TrainData(train, user_features=features)
    params = {"name": name, "epochs": 3, "eval_every": 1, **block}
    return build_model(params, "test.model", seed=0, device=CPU).fit(data)


def test_each_model_gets_its_way_with_a_new_user() -> None:
    table = split(known=2)
    train = train_positive_matrix(table, (N_USERS, N_ITEMS))
    test = table[(table["split"] == "test") & (table["role"] == "input")]
    history = sp.csr_matrix((np.ones(len(test), np.float32), (test["user"], test["item"])), shape=(N_USERS, N_ITEMS))
    features = np.eye(3, dtype=np.float32)[np.arange(N_USERS) % 3]  # three feature groups
    users = np.sort(test["user"].unique())

    mf = _fitted("mf", train, embedding_dim=4, loss="bpr", batch_size=32)
    by_features = ColdStartScorer(mf, history, features, train)
    assert set(by_features.sources[users]) == {"feature_mean"}
    peers = np.flatnonzero((np.arange(N_USERS) % 3 == users[0] % 3) & (np.diff(train.indptr) > 0))
    np.testing.assert_allclose(by_features.scores(users[:1])[0], mf.score(peers).mean(axis=0), rtol=1e-5)
    without = ColdStartScorer(mf, history, None, train)
    assert set(without.sources[users]) == {"popularity"}
    np.testing.assert_array_equal(without.scores(users[:2]), np.tile(np.asarray(train.sum(axis=0)).ravel(), (2, 1)))

    vae = _fitted("multvae", train, hidden_dims=[8], latent_dim=4)
    folded = ColdStartScorer(vae, history, features, train)
    assert set(folded.sources[users]) == {"fold_in"}
    np.testing.assert_allclose(folded.scores(users), vae.fold_in(history[users]), rtol=1e-5)

    sage = _fitted("graphsage", train, embedding_dim=4, batch_size=32, fanouts=[3, 2])
    inductive = ColdStartScorer(sage, history, features, train)
    assert set(inductive.sources[users]) == {"inductive"}
    scores = inductive.scores(users)
    assert scores.shape == (users.size, N_ITEMS) and np.isfinite(scores).all()
    # A new user with no known item and a model on IDs only: the fallback.
    nothing = ColdStartScorer(sage, sp.csr_matrix((N_USERS, N_ITEMS)), features, train)
    assert set(nothing.sources[users]) == {"feature_mean"}


def test_an_inductive_new_user_is_its_layer_over_its_known_items_by_hand() -> None:
    table = split(known=3)
    train = train_positive_matrix(table, (N_USERS, N_ITEMS))
    # One mean-aggregating GraphSAGE layer: h_new = W_l · mean(inputs of its items) + b + W_r · 0.
    sage = _fitted("graphsage", train, embedding_dim=4, num_layers=1, batch_size=32, fanouts=[3])
    history = sp.csr_matrix(([1.0, 1.0], ([0, 0], [2, 5])), shape=(1, N_ITEMS), dtype=np.float32)
    layer = sage.module.layers[0]
    with torch.no_grad():
        items = sage.module.inputs(torch.tensor([N_USERS + 2, N_USERS + 5]))
        vector = items.mean(dim=0) @ layer.lin_l.weight.T + layer.lin_l.bias
        expected = (vector @ sage._item_emb.T).numpy()
    np.testing.assert_allclose(sage.fold_in_users(history, np.array([7]))[0], expected, rtol=1e-5, atol=1e-6)
    # The trained nodes receive nothing from it: their scores are as before.
    before = sage.score()
    sage.fold_in_users(history, np.array([7]))
    np.testing.assert_array_equal(sage.score(), before)


def test_the_evaluation_reports_the_ways_per_user_group() -> None:
    table = split(known=2)
    train = train_positive_matrix(table, (N_USERS, N_ITEMS))
    features = np.eye(3, dtype=np.float32)[np.arange(N_USERS) % 3]
    setup = evaluation_setup({"protocol": "cold_start"}, "movielens_100k")
    evaluators = Evaluators.build(table, train, setup, {}, features)
    mf = _fitted("mf", train, embedding_dim=4, loss="bpr", batch_size=32)
    values, _ = evaluators.test.report(mf)
    assert values["test_users_feature_mean"] == values["test_users_evaluated"] > 0
    assert values["test_users_popularity"] == values["test_users_fold_in"] == values["test_users_inductive"] == 0
    assert values["test_ndcg_at_20_feature_mean"] == pytest.approx(values["test_ndcg_at_20"])
    assert values["test_ndcg_at_20_popularity"] is None
