"""The real datasets through the data-processing nodes and the protocols, and one short
run of each protocol end to end. A dataset's folder is looked for in $DEBIAS_DATA_DIR,
the project's data/01_raw (where the README puts it) and ../shared/data, under its
name or an alias (``movielens_100k`` or ``ml-100k``). These tests are skipped without
the data, and fail instead when DEBIAS_REQUIRE_DATA=1 (CI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from debias_pipeline.data.loaders import LOADERS
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.inputs import build_evaluators, build_train_data, process_dataset
from tests.conftest import FOLDER_ALIASES, dataset_folder, find_dataset
from tests.test_end_to_end import latest_run, run_pipeline


def process(dataset: str, evaluation: dict | None = None, split: dict | None = None, seed: int = 0):
    raw = LOADERS[dataset](dataset_folder(dataset), None)
    data = process_dataset(raw, dataset, seed=seed, evaluation=evaluation, split=split)
    return (
        raw,
        data.interactions,
        data.id_maps,
        data.item_metadata,
        data.user_features,
        data.social_edges,
        data.dataset_summary,
        data.interaction_split,
        data.train_matrix,
    )


@pytest.mark.slow
def test_gowalla_full_ranking_split_keeps_the_given_test_and_carves_validation_from_train() -> None:
    raw, interactions, id_maps, _, _, _, summary, table, train = process("gowalla")
    assert (summary["n_users"], summary["n_items"]) == (29_858, 40_981)
    assert summary["positives"] == {"test": 217_242, "train": 810_128}
    assert summary["test_rows_dropped_unseen"] == 0
    test = table[table["split"] == "test"]
    validation = table[table["split"] == "validation"]
    assert len(test) == 217_242 and (test["source"] == "test").all()
    assert (validation["source"] == "train").all()
    assert 0.09 < len(validation) / 810_128 < 0.11
    assert train.nnz == 810_128 - len(validation)
    # Gowalla's ids are already 0-based and dense: the id maps are the identity.
    users = id_maps[id_maps["entity"] == "user"]
    assert (users["index"].to_numpy() == users["original_id"].to_numpy()).all()


@pytest.mark.slow
def test_lastfm_counts_every_play_as_a_positive_and_aligns_the_trust_network() -> None:
    raw, interactions, id_maps, _, _, social, summary, table, train = process("lastfm")
    assert (interactions["label"] == 1).all()
    assert summary["positives"]["train"] == 42_135
    # Test rows whose user or artist is absent from data1.txt are dropped and counted.
    assert summary["positives"]["test"] + summary["test_rows_dropped_unseen"] == 10_533
    assert summary["test_rows_dropped_unseen"] > 0
    n_users = summary["n_users"]
    assert len(social) > 10_000 and (social["user"] < social["friend"]).all()
    assert social["friend"].max() < n_users
    user_ids = id_maps[id_maps["entity"] == "user"].set_index("index")["original_id"]
    first = social.iloc[0]
    pair = {user_ids[first["user"]], user_ids[first["friend"]]}
    original = raw.social
    assert ((original["user"].isin(pair)) & (original["friend"].isin(pair))).any()
    data = build_train_data(train, build_normalized_adjacency(train), pd.DataFrame(), pd.DataFrame(), social)
    assert data.social.shape == (n_users, n_users) and (data.social != data.social.T).nnz == 0


@pytest.mark.slow
def test_movielens_100k_side_data_and_leave_one_out_candidates() -> None:
    raw, interactions, id_maps, items, users, _, summary, table, train = process(
        "movielens_100k", {"protocol": "leave_one_out"}
    )
    assert (summary["n_users"], summary["n_items"]) == (943, 1_682)
    assert len(items) == 1_682 and (items["title"] != "").all()
    toy_story = items[items["original_id"] == 1].iloc[0]
    assert toy_story["title"] == "Toy Story (1995)" and set(toy_story["genres"].split("|")) == {
        "Animation",
        "Children's",
        "Comedy",
    }
    assert {"age", "gender", "occupation"} <= set(users.columns) and len(users) == 943
    positives = interactions[interactions["label"] == 1]
    assert len(positives) == int((raw.interactions["rating"] >= 4).sum())
    held = table[(table["split"] != "train") & (table["source"] != "candidate")]
    test = held[held["split"] == "test"]
    latest = positives.groupby("user")["timestamp"].max()
    tested = test.set_index("user")["timestamp"].sort_index()
    assert tested.is_unique is not None and (tested == latest.reindex(tested.index)).all()
    candidates = table[table["source"] == "candidate"]
    counts = candidates.groupby(["user", "split"]).size()
    assert (counts == 100).all() and len(counts) == len(held)
    rated = set(zip(interactions["user"], interactions["item"], strict=True))
    assert not any((u, i) in rated for u, i in zip(candidates["user"], candidates["item"], strict=True))
    data = build_train_data(train, build_normalized_adjacency(train), users, items, pd.DataFrame({"user": [], "friend": []}))
    assert data.item_features.shape == (1_682, 19) and data.user_features.shape[0] == 943
    evaluators = build_evaluators(table, train, {"protocol": "leave_one_out"}, "movielens_100k", summary)
    assert evaluators.setup.cutoffs == (10,) and evaluators.test.users.size == len(test) * 101


@pytest.mark.slow
def test_movielens_100k_strong_generalization_holds_out_users() -> None:
    *_, table, train = process("movielens_100k", {"protocol": "strong_generalization"})
    held_users = set(table.loc[table["split"] != "train", "user"])
    assert len(held_users) == 2 * round(0.1 * table["user"].nunique())
    assert train[sorted(held_users)].nnz == 0  # nothing of a held-out user is trained on


@pytest.mark.slow
def test_movielens_100k_cold_start_withholds_users_and_falls_back_on_their_features() -> None:
    raw = LOADERS["movielens_100k"](dataset_folder("movielens_100k"), None)
    data = process_dataset(raw, "movielens_100k", seed=0, evaluation={"protocol": "cold_start"})
    table, train = data.interaction_split, data.train_matrix
    withheld = sorted(set(table.loc[table["split"] != "train", "user"]))
    assert len(withheld) == 2 * round(0.1 * table["user"].nunique())
    assert train[withheld].nnz == 0
    known = table[(table["split"] == "test") & (table["role"] == "input")].groupby("user").size()
    assert (known == 3).all()
    model = build_model({"name": "mf", "loss": "bpr", "embedding_dim": 8, "epochs": 1}, "mf.model", seed=0, device="cpu")
    model.fit(data.train_data)
    values, _ = data.evaluators.test.report(model)
    # MovieLens has demographics: every withheld user has train users with the same ones or gets popularity.
    assert values["test_users_feature_mean"] + values["test_users_popularity"] == values["test_users_evaluated"]
    assert values["test_users_feature_mean"] > 0 and 0 <= values["test_ndcg_at_20"] <= 1


def _copy_dataset(project: Path, dataset: str) -> None:
    target = project / "data" / "01_raw" / dataset
    target.mkdir(parents=True)
    for path in dataset_folder(dataset).iterdir():
        if path.is_file() and path.name not in ("NOTICE.md", "README"):
            shutil.copy(path, target / path.name)


def _metrics(project: Path, model: str, version: str) -> dict:
    return json.loads((project / "data/08_reporting" / model / "metrics.json" / version / "metrics.json").read_text())


@pytest.mark.slow
def test_lastfm_lightgcn_run_ranks_all_items_with_the_papers_settings(project_copy: Path) -> None:
    _copy_dataset(project_copy, "lastfm")
    version = run_pipeline(
        project_copy, "train_lightgcn", dataset="lastfm", **{"lightgcn.model.epochs": 2, "lightgcn.model.eval_every": 1}
    )
    metrics = _metrics(project_copy, "lightgcn", version)
    assert metrics["protocol"] == "full_ranking" and metrics["k"] == [20]
    assert 0 < metrics["test_recall_at_20"] < 1 and metrics["test_rows_dropped_unseen"] > 0
    run = latest_run(project_copy)
    assert run.data.params["lightgcn.model.loss"] == "bpr"
    assert run.data.params["lightgcn.model.embedding_dim"] == "64"
    assert run.data.params["lightgcn.model.num_layers"] == "3"
    assert "lightgcn.test_precision_at_20" in run.data.metrics and "lightgcn.test_hr_at_20" in run.data.metrics
    assert "lightgcn.epoch_validation_ndcg_at_20" in run.data.metrics


@pytest.mark.slow
def test_movielens_100k_leave_one_out_run(project_copy: Path) -> None:
    _copy_dataset(project_copy, "movielens_100k")
    version = run_pipeline(
        project_copy,
        "train_mf",
        dataset="movielens_100k",
        **{"evaluation.protocol": "leave_one_out", "mf.model.epochs": 2, "mf.model.eval_every": 1},
    )
    metrics = _metrics(project_copy, "mf", version)
    assert metrics["protocol"] == "leave_one_out" and metrics["k"] == [10]
    assert metrics["test_hr_at_10"] == pytest.approx(metrics["test_recall_at_10"])
    candidates = project_copy / "data/03_primary/interaction_split.parquet" / version / "interaction_split.parquet"
    table = pd.read_parquet(candidates)
    assert (table["source"] == "candidate").sum() == 100 * metrics["test_users_evaluated"] + 100 * metrics[
        "validation_users_evaluated"
    ]
    assert np.isfinite(metrics["test_ndcg_at_10"])


def test_raw_data_of_an_unknown_dataset_lists_the_valid_ones() -> None:
    from debias_pipeline.data.registry import dataset_spec

    with pytest.raises(ValueError, match="unknown dataset 'movielens'.*movielens_100k, movielens_1m"):
        dataset_spec("movielens")
    assert isinstance(LOADERS["lastfm"], type(process)) and RawData.__name__ == "RawData"


@pytest.mark.slow
def test_lastfm_socialgcn_run_reads_the_trust_network_filtered_by_overlap(project_copy: Path) -> None:
    _copy_dataset(project_copy, "lastfm")
    overrides = {"socialgcn.model.epochs": 2, "socialgcn.model.eval_every": 1, "socialgcn.model.min_overlap": 1}
    version = run_pipeline(project_copy, "train_socialgcn", dataset="lastfm", **overrides)
    metrics = _metrics(project_copy, "socialgcn", version)
    assert metrics["protocol"] == "full_ranking" and 0 < metrics["test_recall_at_20"] < 1


@pytest.mark.slow
def test_movielens_100k_graphsage_on_features_and_ids_and_multvae_folding_in(project_copy: Path) -> None:
    _copy_dataset(project_copy, "movielens_100k")
    version = run_pipeline(
        project_copy,
        "train_graphsage",
        dataset="movielens_100k",
        **{"evaluation.protocol": "leave_one_out", "graphsage.model.epochs": 1, "graphsage.model.eval_every": 1,
           "graphsage.model.inputs": "both"},
    )
    metrics = _metrics(project_copy, "graphsage", version)
    assert metrics["protocol"] == "leave_one_out" and 0 <= metrics["test_hr_at_10"] <= 1
    version = run_pipeline(
        project_copy,
        "train_multvae",
        dataset="movielens_100k",
        **{"evaluation.protocol": "strong_generalization", "multvae.model.epochs": 2},
    )
    metrics = _metrics(project_copy, "multvae", version)
    assert metrics["protocol"] == "strong_generalization" and 0 < metrics["test_recall_at_20"] <= 1


def test_a_dataset_is_found_where_the_readme_puts_it_under_either_name(tmp_path: Path) -> None:
    readme_place, shared = tmp_path / "project" / "data" / "01_raw", tmp_path / "shared" / "data"
    (readme_place / "ml-100k").mkdir(parents=True)
    (readme_place / "ml-100k" / "u.data").write_text("1\t1\t5\t881250949\n")
    (readme_place / "lastfm").mkdir()  # an empty folder is no dataset: the next root has it
    (shared / "lastfm").mkdir(parents=True)
    (shared / "lastfm" / "data1.txt").write_text("")
    (readme_place / "coat").mkdir()
    (readme_place / "coat" / "train.ascii").write_text("")  # test.ascii missing
    roots = [readme_place, shared]
    assert FOLDER_ALIASES["movielens_100k"] == ("ml-100k",)
    assert find_dataset("movielens_100k", roots) == readme_place / "ml-100k"
    assert find_dataset("ml-100k", roots) == readme_place / "ml-100k"
    assert find_dataset("lastfm", roots) == shared / "lastfm"
    assert find_dataset("gowalla", roots) is None
    assert find_dataset("coat", roots, ("train.ascii", "test.ascii")) is None


def test_the_data_roots_put_the_environment_first_then_the_project(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.conftest import REPO, data_roots

    monkeypatch.delenv("DEBIAS_DATA_DIR", raising=False)
    assert data_roots() == [REPO / "data" / "01_raw", REPO.parent / "shared" / "data"]
    monkeypatch.setenv("DEBIAS_DATA_DIR", str(tmp_path))
    assert data_roots()[:2] == [tmp_path, REPO / "data" / "01_raw"]


def test_missing_coat_fails_when_required(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEBIAS_COAT_DIR", str(tmp_path))  # no train.ascii / test.ascii there
    monkeypatch.setenv("DEBIAS_REQUIRE_COAT", "1")
    with pytest.raises(pytest.fail.Exception, match="DEBIAS_REQUIRE_COAT=1"):
        request.getfixturevalue("coat_dir")
