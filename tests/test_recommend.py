"""Top-N for named users (``recommend.TrainedRecommender``), by hand on a 3-user catalogue,
and the package round trip of a fitted model."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import Recommender, TrainData, Validator
from debias_pipeline.models.registry import MODELS, build_model
from debias_pipeline.serving.recommender import (
    RecommendationError,
    TrainedRecommender,
    build_recommender,
    load_recommender,
)
from debias_pipeline.serving.server import RecommenderModel, RecommendRequest

# 3 users x 5 items; user "u2" has no train item; item "e" ties with "d" for u1.
SCORES = np.array(
    [
        [0.9, 0.1, 0.5, 0.3, 0.7],  # u0
        [0.2, 0.8, 0.4, 0.6, 0.6],  # u1 (d, e tie at 0.6)
        [0.5, 0.4, 0.3, 0.2, 0.1],  # u2
    ]
)
TRAIN = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
ITEMS = pd.DataFrame(
    {
        "title": ["Alpha", "Bravo", "Charlie", "Delta", "Echo"],
        "genres": ["Comedy", "Drama", "Comedy|Drama", "Horror", ""],
    }
)


class FixedScores(Recommender):
    """A 'fitted' model whose scores are SCORES."""

    name = "fixed"
    Config = dict

    def fit(self, data: TrainData, validation: Validator | None = None) -> FixedScores:
        return self

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        return SCORES if users is None else SCORES[np.asarray(users)]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> FixedScores:
        return self


class FoldsIn(FixedScores):
    supports_fold_in = True

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        return np.tile(np.array([0.0, 0.1, 0.2, 0.3, 0.4]), (history.shape[0], 1))


def catalogue(model: Recommender | None = None) -> TrainedRecommender:
    return TrainedRecommender("toy", model or FixedScores({}), ["u0", "u1", "u2"], list("abcde"), ITEMS, TRAIN)


def items_of(table: pd.DataFrame) -> list[str]:
    return table["item"].tolist()


def test_train_items_are_left_out_and_the_rest_ranked_by_score() -> None:
    table = catalogue().recommend("u0", 3)
    assert items_of(table) == ["e", "c", "d"]  # a (0.9) is u0's train item
    assert table["rank"].tolist() == [1, 2, 3]
    assert table["score"].tolist() == pytest.approx([0.7, 0.5, 0.3])
    assert table["title"].tolist() == ["Echo", "Charlie", "Delta"]
    assert set(table["user"]) == {"u0"} and set(table["source"]) == {"model"}


def test_train_items_kept_on_request() -> None:
    assert items_of(catalogue().recommend("u0", 2, exclude_train=False)) == ["a", "e"]


def test_ties_follow_the_id_map_order() -> None:
    assert items_of(catalogue().recommend("u1", 3)) == ["d", "e", "c"]  # d and e both 0.6: d first


def test_k_larger_than_the_candidates_gives_them_all() -> None:
    assert items_of(catalogue().recommend("u2", 10)) == ["a", "b", "c", "d", "e"]


def test_genre_filters() -> None:
    recommender = catalogue()
    assert items_of(recommender.recommend("u2", 5, include_genres=["Comedy"])) == ["a", "c"]
    assert items_of(recommender.recommend("u2", 5, exclude_genres=["Comedy"])) == ["b", "d", "e"]
    assert items_of(recommender.recommend("u2", 5, include_genres=["Drama"], exclude_genres=["Comedy"])) == ["b"]
    with pytest.raises(RecommendationError, match=r"unknown genre\(s\) \['Western'\]; toy has: 'Comedy', 'Drama', 'Horror'"):
        recommender.recommend("u2", 5, include_genres=["Western"])


def test_several_users_at_once() -> None:
    table = catalogue().recommend_many(["u0", "u2"], 2)
    assert table["user"].tolist() == ["u0", "u0", "u2", "u2"]
    assert items_of(table) == ["e", "c", "a", "b"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.recommend("u9", 3), r"unknown user 'u9': toy has 3 users"),
        (lambda r: r.recommend("u0", 0), r"k must be a positive integer, got 0"),
        (lambda r: r.recommend("u0", 2.5), r"k must be a positive integer, got 2\.5"),
        (lambda r: r.score("u0", ["a", "z"]), r"unknown item 'z'"),
        (lambda r: r.recommend(True, 3), r"an id must be a string or an integer"),
    ],
)
def test_bad_requests_name_what_is_wrong(call: Any, message: str) -> None:
    with pytest.raises(RecommendationError, match=message):
        call(catalogue())


def test_integer_and_string_ids_are_the_same_user() -> None:
    recommender = TrainedRecommender("toy", FixedScores({}), [10, 20, 30], list("abcde"), ITEMS, TRAIN)
    assert items_of(recommender.recommend(20, 2)) == items_of(recommender.recommend("20", 2)) == ["d", "e"]


def test_score_in_original_ids() -> None:
    assert catalogue().score("u1", ["e", "a"]).tolist() == pytest.approx([0.6, 0.2])


def test_a_new_user_gets_popularity_flagged_as_such() -> None:
    table = catalogue().recommend_history(["a"], 3)
    assert set(table["source"]) == {"popularity"}
    # popularity: b has one train positive, c, d, e none (ties in id order); a was clicked.
    assert items_of(table) == ["b", "c", "d"]
    assert table["score"].tolist() == [1.0, 0.0, 0.0]


def test_a_model_that_folds_in_scores_the_new_user() -> None:
    table = catalogue(FoldsIn({})).recommend_history(["e"], 2)
    assert set(table["source"]) == {"fold_in"}
    assert items_of(table) == ["d", "c"]  # e (0.4) was clicked


# ---------------------------------------------------------------------------- real models


def fitted(name: str) -> tuple[Recommender, sp.csr_matrix]:
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((12, 9)) < 0.35).astype(np.float32))
    data = TrainData(train, build_normalized_adjacency(train))
    block = {"name": name, "epochs": 3, "embedding_dim": 4} if name != "dual" else {"name": "dual", "epochs": 3}
    if name == "dual":
        block |= {"preference": {"embedding_dim": 4}, "exposure": {"embedding_dim": 4}}
    return build_model(block, "test.model", seed=0, device=torch.device("cpu")).fit(data), train


def id_maps(n_users: int, n_items: int) -> pd.DataFrame:
    return pd.concat(
        [
            pd.DataFrame({"entity": "user", "index": np.arange(n_users), "original_id": np.arange(n_users) + 100}),
            pd.DataFrame({"entity": "item", "index": np.arange(n_items), "original_id": np.arange(n_items) + 500}),
        ]
    )


@pytest.mark.parametrize("name", ["mf", "lightgcn", "dual", "wmf", "ensemble"])
def test_the_package_restores_the_same_recommendations(name: str, tmp_path: Path) -> None:
    model, train = fitted(name)
    metadata = pd.DataFrame({"index": np.arange(9), "original_id": np.arange(9) + 500, "title": [f"t{i}" for i in range(9)]})
    recommender = build_recommender("toy", model, id_maps(12, 9), metadata, train)
    path = tmp_path / "recommender.pkl" / "2026-01-01T00.00.00.000Z" / "recommender.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(recommender.package()))
    restored = load_recommender(tmp_path / "recommender.pkl")  # the newest version inside
    for user in (100, 105, 111):
        expected, got = recommender.recommend(user, 4), restored.recommend(user, 4)
        pd.testing.assert_frame_equal(expected, got)
    assert ("exposure" in got) == (name == "dual")
    if name == "dual":
        assert got["exposure"].between(0, 1).all()
    assert (restored.recommend_history(["500"], 3)["source"] == ("fold_in" if MODELS[name].supports_fold_in else "popularity")).all()


def test_the_pyfunc_model_answers_like_the_recommender() -> None:
    model, train = fitted("mf")
    recommender = build_recommender("toy", model, id_maps(12, 9), pd.DataFrame({"index": np.arange(9)}), train)
    pyfunc = pickle.loads(pickle.dumps(RecommenderModel(recommender.package())))  # as MLflow stores it
    (answer,) = pyfunc.predict([RecommendRequest(user="103", k=3)])
    assert answer["user"] == "103" and answer["source"] == "model"
    assert [row["item"] for row in answer["items"]] == items_of(recommender.recommend("103", 3))
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="unknown user '999'") as error:
        pyfunc.predict([RecommendRequest(user="999")])
    assert error.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="not both"):
        pyfunc.predict([RecommendRequest(user="103", history=["500"])])


def test_missing_recommender_names_the_pipeline_to_run(tmp_path: Path) -> None:
    from debias_pipeline.serving.recommender import TrainedRecommenders

    with pytest.raises(FileNotFoundError, match=r"kedro run --pipelines=train_lightgcn --params=dataset=lastfm"):
        TrainedRecommenders(tmp_path).path("lightgcn", "lastfm")


# ---------------------------------------------------------------------- arguments checked


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        # A string is iterable: unchecked, score("u0", "ab") would score items "a" and "b".
        (lambda r: r.score("u0", "ab"), TypeError, r"items must be a list of item ids, not the string 'ab'; for one item: \['ab'\]"),
        (lambda r: r.score("u0", None), TypeError, r"items must be a list of item ids, got None"),
        (lambda r: r.score("u0", 7), TypeError, r"items must be a list of item ids, got 7"),
        (lambda r: r.recommend_many("u0", 2), TypeError, r"users must be a list of user ids, not the string 'u0'"),
        (lambda r: r.recommend_history("ab", 2), TypeError, r"history must be a list of item ids, not the string 'ab'"),
        (lambda r: r.recommend_history(None, 2), TypeError, r"history must be a list of item ids, got None"),
        # Any non-empty string is truthy: unchecked, "no" would mean yes.
        (lambda r: r.recommend("u0", 2, exclude_train="no"), TypeError, r"exclude_train must be True or False, got 'no'"),
        (lambda r: r.recommend_many(["u0"], 2, exclude_train=0), TypeError, r"exclude_train must be True or False, got 0"),
        (lambda r: r.recommend("u0", 2, include_genres=None), TypeError, r"include_genres must be a genre or a list of genres, got None"),
        (lambda r: r.recommend_history(["a"], 2, exclude_genres=3), TypeError, r"exclude_genres must be a genre or a list of genres, got 3"),
        (lambda r: r.recommend_many([], 0), RecommendationError, r"k must be a positive integer, got 0"),
        (lambda r: r.recommend_history(["a"], "3"), RecommendationError, r"k must be a positive integer, got '3'"),
    ],
)
def test_arguments_of_the_wrong_type_are_named(call: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call(catalogue())


def test_no_users_give_an_empty_table_with_the_usual_columns() -> None:
    table = catalogue().recommend_many([], 3)
    assert len(table) == 0
    assert table.columns.tolist() == ["user", "rank", "item", "title", "genres", "score", "source"]
    assert catalogue().score("u0", []).tolist() == []


def test_numpy_and_tuple_id_lists_and_numpy_flags_are_accepted() -> None:
    recommender = catalogue()
    assert recommender.score("u1", ("e", "a")).tolist() == pytest.approx([0.6, 0.2])
    assert recommender.score("u1", np.array(["e", "a"])).tolist() == pytest.approx([0.6, 0.2])
    assert items_of(recommender.recommend("u0", 2, exclude_train=np.bool_(False))) == ["a", "e"]
    assert items_of(recommender.recommend_many(pd.Series(["u0", "u2"]), 1)) == ["e", "a"]
    assert items_of(recommender.recommend("u2", 5, include_genres="Horror")) == ["d"]  # one genre as a string


def test_control_characters_in_ids_are_escaped_in_messages() -> None:
    recommender = TrainedRecommender("toy", FixedScores({}), ["u\x1b[2J0", "u1", "u2"], list("abcde"), ITEMS.assign(genres=["Co\rmedy", "", "", "", ""]), TRAIN)
    for call in (
        lambda: recommender.recommend("who\x1b[31m", 3),
        lambda: recommender.score("u1", ["z\n"]),
        lambda: recommender.recommend("u1", 3, include_genres=["We\x07stern"]),
    ):
        with pytest.raises(RecommendationError) as error:
            call()
        text = str(error.value)
        assert not any(ord(c) < 32 for c in text), text
    assert "'u\\x1b[2J0'" in str(pytest.raises(RecommendationError, recommender.recommend, "x", 3).value)


# ---------------------------------------------------------------------- saved recommenders


def save_version(root: Path, version: str, payload: bytes) -> Path:
    path = root / "mf" / "toy" / "recommender.pkl" / version / "recommender.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    return path


OLDER, NEWER = "2026-01-01T00.00.00.000Z", "2026-02-01T00.00.00.000Z"


@pytest.fixture(scope="module")
def mf_package() -> bytes:
    model, train = fitted("mf")
    return pickle.dumps(build_recommender("toy", model, id_maps(12, 9), pd.DataFrame({"index": np.arange(9)}), train).package())


def test_a_truncated_newest_version_is_named_not_skipped(tmp_path: Path, mf_package: bytes) -> None:
    from debias_pipeline.serving.recommender import TrainedRecommenders, UnreadableRecommenderError

    save_version(tmp_path, OLDER, mf_package)
    broken = save_version(tmp_path, NEWER, mf_package[: len(mf_package) // 2])
    with pytest.raises(UnreadableRecommenderError) as error:
        load_recommender(tmp_path / "mf" / "toy" / "recommender.pkl")
    text = str(error.value)
    assert str(broken) in text and f"version {NEWER!r}" in text and "truncated or damaged" in text
    assert "the newest of 2 versions" in text and OLDER in text
    with pytest.raises(UnreadableRecommenderError) as error:
        TrainedRecommenders(tmp_path).load("mf", "toy")
    text = str(error.value)
    assert f"version {NEWER!r}" in text and "kedro run --pipelines=train_mf --params=dataset=toy" in text
    assert f"recommend.version={OLDER}" in text
    # Pinned, the older version loads; the broken one pinned is named as well.
    assert TrainedRecommenders(tmp_path).load("mf", "toy", OLDER).recommend("103", 2)["item"].size == 2
    with pytest.raises(UnreadableRecommenderError, match=f"version {NEWER!r}"):
        TrainedRecommenders(tmp_path).load("mf", "toy", NEWER)


def test_a_file_cut_anywhere_gives_the_same_clear_error(tmp_path: Path, mf_package: bytes) -> None:
    from debias_pipeline.serving.recommender import UnreadableRecommenderError

    path = save_version(tmp_path, OLDER, b"")
    for cut in [0, 1, 2, 10, *range(50, len(mf_package), max(1, len(mf_package) // 40)), len(mf_package) - 1]:
        path.write_bytes(mf_package[:cut])
        with pytest.raises(UnreadableRecommenderError, match=rf"{OLDER}.*truncated or damaged"):
            load_recommender(path)
    path.write_bytes(pickle.dumps(["not", "a", "recommender"]))
    with pytest.raises(UnreadableRecommenderError, match=r"holds a list, not a trained recommender"):
        load_recommender(path)


def old_layout_pickle(obj: Any, moved: dict[type, str], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """``pickle.dumps(obj)`` as written before the package restructure: each class of
    ``moved`` under its old module (a stand-in module registered for the dump only)."""
    import sys
    import types

    with monkeypatch.context() as patch:
        for cls, old in moved.items():
            module = sys.modules.get(old) or types.ModuleType(old)
            patch.setitem(sys.modules, old, module)
            patch.setattr(module, cls.__qualname__, cls, raising=False)
            patch.setattr(cls, "__module__", old)
        return pickle.dumps(obj)


def test_a_recommender_saved_under_the_old_module_paths_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from debias_pipeline.models.configs import TowerConfig

    model, train = fitted("dual")  # its config holds TowerConfig, once in models/base.py
    recommender = build_recommender("toy", model, id_maps(12, 9), pd.DataFrame({"index": np.arange(9)}), train)
    payload = old_layout_pickle(recommender.package(), {TowerConfig: "debias_pipeline.models.base"}, monkeypatch)
    assert b"debias_pipeline.models.base" in payload
    path = save_version(tmp_path, OLDER, payload)
    pd.testing.assert_frame_equal(load_recommender(path).recommend("104", 4), recommender.recommend("104", 4))
    # A whole TrainedRecommender pickled from the old debias_pipeline.recommend module.
    path.write_bytes(old_layout_pickle(catalogue(), {TrainedRecommender: "debias_pipeline.recommend"}, monkeypatch))
    assert items_of(load_recommender(path).recommend("u0", 3)) == ["e", "c", "d"]


class Retired:
    """A class of a module the package no longer has."""


def test_a_name_no_layout_knows_asks_for_a_retrain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from debias_pipeline.serving.recommender import TrainedRecommenders, UnreadableRecommenderError

    save_version(tmp_path, OLDER, old_layout_pickle({"state": Retired()}, {Retired: "debias_pipeline.models.retired"}, monkeypatch))
    with pytest.raises(UnreadableRecommenderError) as error:
        TrainedRecommenders(tmp_path).load("mf", "toy")
    text = str(error.value)
    assert "saved by an older layout of the package" in text and "debias_pipeline.models.retired.Retired" in text
    assert "retrain with `kedro run --pipelines=train_mf --params=dataset=toy`" in text
