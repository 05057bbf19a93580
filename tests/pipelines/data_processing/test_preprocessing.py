"""Ingestion, binarization and indexing of the non-study datasets, on files the tests
write: string ids, side data, duplicates, unseen test ids, the k-core filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from debias_pipeline.data.loaders.custom import load_custom
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.data.loaders.side_data import load_anime
from debias_pipeline.data.processing import (
    _deduplicate,
    binarize_ratings,
    build_id_maps,
    build_normalized_adjacency,
    build_train_matrix,
    entity_ids,
    index_interactions,
    ingest_ratings,
)
from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import build_model
from debias_pipeline.pipelines.data_processing import pipeline as data_processing
from debias_pipeline.serving.recommender import build_recommender
from debias_pipeline.training.inputs import build_train_data, split_interactions


def raw_log(users, items, ratings=None, timestamps=None, part="all", items_table=None) -> RawData:
    n = len(users)
    table = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "rating": np.full(n, np.nan) if ratings is None else np.asarray(ratings, dtype=float),
            "timestamp": np.full(n, np.nan) if timestamps is None else np.asarray(timestamps, dtype=float),
            "part": part if isinstance(part, str) else list(part),
            "line": np.arange(1, n + 1),
        }
    )
    return RawData(name="custom", interactions=table, files={"all": "log.csv", "train": "train.txt", "test": "test.txt"}, items=items_table)


def indexed(raw: RawData, dataset: str = "custom", binarization: dict | None = None, preprocessing: dict | None = None):
    ratings, truth = ingest_ratings(raw, dataset, {}, 0)
    labeled = binarize_ratings(ratings, binarization or {}, dataset)
    return index_interactions(labeled, raw, truth, preprocessing or {}, dataset)


def test_custom_string_ids_are_numbered_in_sorted_order_with_their_side_data(tmp_path: Path) -> None:
    (tmp_path / "clicks.csv").write_text("who,what,when\nbob,b2,2024-01-02\nann,a1,2024-01-01\nbob,a1,2024-01-03\n")
    (tmp_path / "items.csv").write_text("what,title,genres\na1,Alpha,x|y\nb2,Beta,y\nzz,Unused,x\n")
    (tmp_path / "users.csv").write_text("who,age,country\nann,31,fr\nbob,45,de\n")
    (tmp_path / "friends.csv").write_text("a,b\nann,bob\nbob,ann\nann,carl\n")
    options = {
        "interactions": "clicks.csv",
        "items": "items.csv",
        "users": "users.csv",
        "social": "friends.csv",
        "columns": {"user": "who", "item": "what", "timestamp": "when", "friend": ["a", "b"]},
    }
    raw = load_custom(tmp_path, options)
    interactions, id_maps, items, users, social, summary = indexed(raw)
    assert id_maps[id_maps["entity"] == "user"]["original_id"].tolist() == ["ann", "bob"]
    assert id_maps[id_maps["entity"] == "item"]["original_id"].tolist() == ["a1", "b2"]  # zz has no interaction
    assert sorted(zip(interactions["user"], interactions["item"], strict=True)) == [(0, 0), (1, 0), (1, 1)]
    assert (interactions["label"] == 1).all()  # a click log: every row a positive
    assert items[["index", "original_id", "title", "genres"]].values.tolist() == [[0, "a1", "Alpha", "x|y"], [1, "b2", "Beta", "y"]]
    assert users["age"].tolist() == [31, 45]
    assert social.values.tolist() == [[0, 1]]  # the tie twice, and one to an unknown user, kept once
    assert summary["dropped"]["social ties to unknown users, self-ties or repeated ties"] == 2
    train_data = build_train_data(
        build_train_matrix(interactions.assign(split="train", role="input"), id_maps), None, users, items, social
    )
    assert train_data.item_features.tolist() == [[1, 1], [0, 1]]  # genres x, y
    # 7 age buckets (31 -> 25-34, 45 -> 45-49), then country one-hot (de, fr)
    expected = np.zeros((2, 9), dtype=np.float32)
    expected[0, [2, 8]] = 1
    expected[1, [4, 7]] = 1
    np.testing.assert_array_equal(train_data.user_features, expected)


def test_anime_watched_but_unrated_rows(tmp_path: Path) -> None:
    (tmp_path / "anime.csv").write_text(
        'anime_id,name,genre,type,episodes,rating,members\n1,"A, the anime","Action, Comedy",TV,12,8.1,100\n2,B,Drama,Movie,1,7.0,50\n'
    )
    (tmp_path / "rating.csv").write_text("user_id,anime_id,rating\n1,1,-1\n1,2,9\n2,1,3\n2,2,-1\n3,9,10\n")
    raw = load_anime(tmp_path)
    implicit, *_ = indexed(raw, "anime")
    assert len(implicit) == 4 and (implicit["label"] == 1).all()  # every watch; anime 9 is unknown
    explicit, *_ = indexed(raw, "anime", {"threshold": 7})
    assert explicit.sort_values(["user", "item"])["label"].tolist() == [1, 1, 0, 1]  # -1 counts as positive
    dropped, *_ = indexed(raw, "anime", {"threshold": 7, "unrated": "drop"})
    assert len(dropped) == 2
    with pytest.raises(ValueError, match=r"binarization.threshold' must be in 1..10 for dataset 'anime'"):
        indexed(raw, "anime", {"threshold": 11})


def test_duplicated_pairs_error_or_keep_one() -> None:
    raw = raw_log(["u", "u", "v"], ["i", "i", "i"], timestamps=[5, 1, 2])
    with pytest.raises(ValueError, match=r"log.csv rows 1 and 2: \(user u, item i\) is rated twice.*preprocessing.duplicates"):
        indexed(raw, preprocessing={"duplicates": "error"})
    kept, *_, summary = indexed(raw, preprocessing={"duplicates": "last"})
    assert len(kept) == 2 and summary["dropped"]["duplicated (user, item) pairs"] == 1
    assert kept.loc[kept["user"] == 0, "timestamp"].item() == 5  # the latest by timestamp
    first, *_ = indexed(raw, preprocessing={"duplicates": "first"})
    assert first.loc[first["user"] == 0, "timestamp"].item() == 1


@pytest.mark.parametrize("policy", ["first", "last"])
@pytest.mark.parametrize("timestamps", [True, False])
def test_duplicates_keep_the_rows_a_sort_and_drop_duplicates_would(policy: str, timestamps: bool) -> None:
    # The pairs are found through integer codes, not by hashing the rows; the rows kept
    # must be those of the plain pandas formulation, ties in time broken by file order.
    rng = np.random.default_rng(3)
    n = 400
    stamps = rng.integers(0, 5, n).astype(float)
    if not timestamps:
        stamps[7] = np.nan  # one missing timestamp: file order alone
    raw = raw_log(
        rng.choice(["a", "b", "c"], n), rng.integers(0, 4, n), timestamps=stamps, part=rng.choice(["train", "all"], n)
    )
    table = raw.interactions.rename(columns={"part": "source"})
    kept, dropped = _deduplicate(table, policy, raw.files)
    order = ["timestamp", "line"] if timestamps else ["line"]
    expected = table.sort_values(order, kind="stable").drop_duplicates(["source", "user", "item"], keep=policy)
    pd.testing.assert_frame_equal(kept, expected.sort_index())
    assert dropped == n - len(expected) > 0


def test_ids_with_control_characters_are_escaped_in_the_messages() -> None:
    raw = raw_log(["ann\x1b[31m", "ann\x1b[31m"], ["i\r", "i\r"])
    with pytest.raises(ValueError) as error:
        indexed(raw, preprocessing={"duplicates": "error"})
    assert "(user ann\\x1b[31m, item i\\r) is rated twice" in str(error.value)
    assert "\x1b" not in str(error.value) and "\r" not in str(error.value)
    raw = RawData(name="movielens_100k", interactions=raw_log(["\x1b[2J"], ["i"], ratings=[9]).interactions, files={})
    with pytest.raises(ValueError, match=r"rating 9 \(user \\x1b\[2J, item i\) is outside 1..5"):
        indexed(raw, "movielens_100k")


def test_test_rows_with_ids_never_seen_in_train_are_dropped_and_counted() -> None:
    raw = raw_log([0, 0, 1, 1, 2], [0, 1, 0, 5, 0], part=["train", "train", "train", "test", "test"])
    raw = RawData(name="gowalla", interactions=raw.interactions, files=raw.files)
    interactions, id_maps, *_, summary = indexed(raw, "gowalla")
    assert summary["test_rows_dropped_unseen"] == 2  # item 5 and user 2 are not in train
    assert len(interactions) == 3 and (id_maps["entity"] == "user").sum() == 2


def test_k_core_is_iterated_until_stable_and_an_empty_core_names_the_thresholds() -> None:
    # users: a has 3 items, b 2, c 1; items: x by a, b, c; y by a, b; z by a.
    users = ["a", "a", "a", "b", "b", "c"]
    items = ["x", "y", "z", "x", "y", "x"]
    interactions, id_maps, *_, summary = indexed(raw_log(users, items), preprocessing={"min_user_interactions": 2, "min_item_interactions": 2})
    # c (1 item) and z (1 user) go; then every remaining user has >= 2 and item >= 2.
    assert id_maps[id_maps["entity"] == "user"]["original_id"].tolist() == ["a", "b"]
    assert id_maps[id_maps["entity"] == "item"]["original_id"].tolist() == ["x", "y"]
    assert summary["dropped"]["k-core filter"] == 2
    with pytest.raises(ValueError, match=r"min_user_interactions=3, preprocessing.min_item_interactions=3"):
        indexed(raw_log(users, items), preprocessing={"min_user_interactions": 3, "min_item_interactions": 3})


def test_a_train_set_without_any_positive_is_an_error() -> None:
    raw = raw_log([0, 1], [0, 1], ratings=[1, 2])
    raw = RawData(name="movielens_100k", interactions=raw.interactions, files=raw.files)
    with pytest.raises(ValueError, match=r"train set of dataset 'movielens_100k' \(log.csv\) has no positive row"):
        indexed(raw, "movielens_100k")
    # A biased train set with every rating <= 3 is refused even when the unbiased set has positives.
    coat = raw_log([0, 1, 0], [0, 1, 1], ratings=[3, 2, 5], part=["biased", "biased", "unbiased"])
    coat = RawData(name="coat", interactions=coat.interactions, files={"biased": "train.ascii", "unbiased": "test.ascii"})
    with pytest.raises(ValueError, match=r"train set of dataset 'coat' \(train.ascii\) has no positive row"):
        indexed(coat, "coat")


def test_a_rating_outside_the_scale_names_file_and_row() -> None:
    raw = raw_log([0, 1], [0, 1], ratings=[4, 6])
    raw = RawData(name="movielens_100k", interactions=raw.interactions, files=raw.files)
    with pytest.raises(ValueError, match=r"log.csv row 2: rating 6 \(user 1, item 1\) is outside 1..5"):
        indexed(raw, "movielens_100k")


def test_split_of_a_custom_log_is_seeded() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, 400).astype(str)
    items = rng.integers(0, 50, 400).astype(str)
    interactions, *_ = indexed(raw_log(users, items), preprocessing={"duplicates": "first"})
    one = split_interactions(interactions, {}, {}, "custom", 7)
    two = split_interactions(interactions, {}, {}, "custom", 7)
    pd.testing.assert_frame_equal(one, two)
    assert set(one["split"]) == {"train", "validation", "test"}


# --------------------------------------------------------------------------- ids of two kinds, saved


CATALOG = Path(__file__).resolve().parents[3] / "conf" / "base" / "catalog.yml"
INDEXED = ("ratings", "id_maps", "item_metadata", "user_features", "social_edges")


def _saved_catalog(tmp_path: Path, raw_dataset: RawDataset) -> DataCatalog:
    """The project's own entries for what indexing writes (Parquet, versioned), saving under tmp_path."""
    entries = yaml.safe_load(CATALOG.read_text())
    config = {
        name: {**entries[name], "filepath": str(tmp_path / Path(entries[name]["filepath"]).name)} for name in INDEXED
    }
    catalog = DataCatalog.from_config(config)
    catalog["raw_data"] = raw_dataset
    for name, value in {"dataset": "custom", "synthetic": {}, "seed": 0, "binarization": {}, "preprocessing": {}}.items():
        catalog[f"params:{name}"] = MemoryDataset(value)
    return catalog


@pytest.mark.parametrize(
    ("clicks", "users", "items"),
    [
        ("user,item\n1,i0\n2,i1\n1,i1\n", [1, 2], ["i0", "i1"]),  # numeric users, text items
        ("user,item\nu0,7\nu1,30\nu0,30\n", ["u0", "u1"], [7, 30]),  # the reverse
    ],
)
def test_ids_of_two_kinds_round_trip_through_the_saved_id_maps(
    tmp_path: Path, clicks: str, users: list, items: list
) -> None:
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "clicks.csv").write_text(clicks)
    raw_dataset = RawDataset("custom", root=str(tmp_path), custom={"interactions": "clicks.csv"})
    catalog = _saved_catalog(tmp_path, raw_dataset)
    pipeline = data_processing.create_pipeline().to_outputs("id_maps")
    SequentialRunner().run(pipeline, catalog)  # saving id_maps used to fail: ints and str in one column

    id_maps = catalog.load("id_maps")  # read back from the Parquet file
    assert entity_ids(id_maps, "user").tolist() == users  # 1 != "1": each id of its own type
    assert entity_ids(id_maps, "item").tolist() == items
    assert id_maps["kind"].tolist() == ["int" if isinstance(i, int) else "str" for i in users + items]

    # The serving side reads the saved maps as it reads those in memory: ids as the file writes them.
    in_memory = indexed(raw_dataset.load())[1]
    train = sp.csr_matrix(np.ones((2, 2), dtype=np.float32))
    model = build_model({"name": "mostpop"}, "test.model", seed=0, device=torch.device("cpu"))
    model.fit(TrainData(train, build_normalized_adjacency(train)))
    for maps in (id_maps, in_memory):
        recommender = build_recommender("custom", model, maps, pd.DataFrame({"index": [0, 1]}), train)
        assert recommender.user_ids.tolist() == [str(u) for u in users]
        assert recommender.item_ids.tolist() == [str(i) for i in items]


def test_id_maps_of_one_kind_keep_their_dtype() -> None:
    maps = build_id_maps(np.array([10, 20]), np.array([5]))
    assert maps["original_id"].dtype == np.int64 and maps["kind"].tolist() == ["int"] * 3
    maps = build_id_maps(np.array(["a", "b"], dtype=object), np.array(["x"], dtype=object))
    assert maps["original_id"].tolist() == ["a", "b", "x"] and maps["kind"].tolist() == ["str"] * 3
    maps = build_id_maps(np.array([3, 10]), np.array(["x"], dtype=object))
    assert maps["original_id"].tolist() == ["3", "10", "x"]  # one column, one type: text
    assert entity_ids(maps, "user").tolist() == [3, 10] and entity_ids(maps, "item").tolist() == ["x"]
