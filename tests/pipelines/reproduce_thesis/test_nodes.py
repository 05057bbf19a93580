"""reproduce_thesis nodes: candidates, selection on validation only, the summary."""

from __future__ import annotations

import json
import math
from typing import Any, Self

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import Recommender, TrainData, Validator
from debias_pipeline.pipelines.reproduce_thesis import nodes
from debias_pipeline.pipelines.reproduce_thesis.nodes import (
    ThesisRow,
    candidate_blocks,
    run_thesis_grid,
    summarize_thesis,
    thesis_config,
)
from debias_pipeline.pipelines.reproduce_thesis.tables import summarize_thesis_with_popularity
from debias_pipeline.training.inputs import split_interactions

PARAMETERS = {"dual": {"model": {"name": "dual", "lr": 0.04, "exposure": {"embedding_dim": 200, "num_layers": 0}}}}


def test_candidates_apply_set_then_every_select_combination() -> None:
    row = ThesisRow(
        label="r",
        table="5.2",
        base="dual",
        set={"preference.num_layers": 2},
        select={"exposure.num_layers": [0, 1], "lr": [0.01, 0.04, 0.1]},
    )
    candidates = candidate_blocks(row, PARAMETERS)
    assert len(candidates) == 6  # 2 x 3
    choice, block = candidates[1]
    assert choice == {"exposure.num_layers": 0, "lr": 0.04}
    assert block["preference"] == {"num_layers": 2}
    assert block["exposure"] == {"embedding_dim": 200, "num_layers": 0}
    assert PARAMETERS["dual"]["model"]["lr"] == 0.04  # the parameters are not touched
    assert "preference" not in PARAMETERS["dual"]["model"]


def test_a_row_without_its_base_block_is_named() -> None:
    with pytest.raises(ValueError, match="row 'x': no parameter block 'expomf.model'"):
        candidate_blocks(ThesisRow(label="x", table="5.2", base="expomf"), PARAMETERS)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"seeds": [], "reference": "MF", "rows": [{"label": "MF", "table": "5.2", "base": "mf"}]}, "at least one seed"),
        ({"seeds": [0, 1], "reference": "LightGCN", "rows": [{"label": "MF", "table": "5.2", "base": "mf"}]}, "reference"),
        ({"seeds": [0, 1], "reference": "MF", "rows": [{"label": "MF", "table": "5.2", "bse": "mf"}]}, r"rows\[0\]"),
    ],
)
def test_bad_thesis_block_is_named(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        thesis_config(block)


# --------------------------------------------------------------------------- grid
# 6 users x 10 items, half the rows validation: the oracle that is right on validation
# scores NDCG 1 there, the one right on test scores less (some user has both labels).
class SplitOracle(Recommender):
    """Scores a pair +label on one split and -label on the other (``good_on``)."""

    name = "oracle"
    Config = dict

    def __init__(self, good_on: str, labels: dict[tuple[int, int], tuple[str, int]], seed: int) -> None:
        super().__init__({"good_on": good_on}, seed=seed)
        self.good_on, self.labels = good_on, labels

    def fit(self, data: TrainData, validation: Validator | None = None) -> Self:
        if self.good_on == "diverge":
            raise FloatingPointError("oracle: training loss is nan at epoch 3")
        self.best_epoch = 1
        return self

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        # (n_users, 10) every pair of the 6 x 10 grid (the popularity metrics rank every item)
        users = np.arange(6) if users is None else np.asarray(users)
        rows, items = np.meshgrid(users, np.arange(10), indexing="ij")
        return self.score_pairs(rows.ravel(), items.ravel()).reshape(users.size, 10)

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = []
        for u, i in zip(users, items, strict=True):
            split, label = self.labels[(int(u), int(i))]
            out.append(label if split == self.good_on else -label)
        return np.array(out, dtype=float)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        return self


def test_selection_uses_validation_never_test(monkeypatch: pytest.MonkeyPatch) -> None:
    users = np.repeat(np.arange(6), 10)
    items = np.tile(np.arange(10), 6)
    labels = ((users + items) % 2).astype(np.int8)  # two positives per user
    interactions = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "rating": np.where(labels == 1, 5.0, 1.0),
            "timestamp": np.nan,
            "source": "unbiased",
            "label": labels,
        }
    )
    built: list[str] = []

    def fake_build(block: dict[str, Any], where: str, *, seed: int, device: torch.device) -> Recommender:
        # The seed's split, as the grid draws it (the thesis protocol of the run's dataset).
        split = split_interactions(interactions, {"validation_fraction": 0.5}, {"k": 5}, "coat", seed)
        lookup = {(r.user, r.item): (r.split, r.label) for r in split.itertuples()}
        built.append(block["good_on"])
        return SplitOracle(block["good_on"], lookup, seed)

    monkeypatch.setattr(nodes, "build_model", fake_build)
    parameters = {
        "dataset": "coat",
        "oracle": {"model": {"name": "oracle", "good_on": "test"}},
        "split": {"validation_fraction": 0.5},
        "evaluation": {"k": 5},
        "reproduce_thesis": {
            "seeds": [0, 1],
            "reference": "tuned",
            "rows": [
                {"label": "tuned", "table": "5.2", "base": "oracle", "select": {"good_on": ["test", "validation", "diverge"]}}
            ],
        },
    }
    runs, spectra = run_thesis_grid(interactions, TrainData(sp.csr_matrix((6, 10))), parameters, torch.device("cpu"))
    assert built == ["test", "validation", "diverge"] * 2  # every candidate, every seed
    diverged = runs[runs["diverged"]]
    assert len(diverged) == 2 and diverged["validation_ndcg"].isna().all() and not diverged["selected"].any()
    runs = runs[~runs["diverged"]]
    selected = runs[runs["selected"]]
    assert [json.loads(c)["good_on"] for c in selected["choice"]] == ["validation", "validation"]
    # The rejected candidate had the better test metrics: selection did not look at them.
    rejected = runs[~runs["selected"]]
    assert (rejected["test_ndcg"].to_numpy() > selected["test_ndcg"].to_numpy()).all()
    assert spectra == {}
    # the popularity bias and coverage of each fit's test lists ride along
    assert runs["test_item_coverage"].between(0, 1).all() and runs["test_aplt"].between(0, 1).all()
    assert (runs["test_arp"] >= 0).all() and diverged["test_arp"].isna().all()


def _biased_and_unbiased() -> pd.DataFrame:
    """4 users x 6 items: biased rows on items 0..2 (train), unbiased rows on items 3..5."""
    rows = []
    for user in range(4):
        for item in range(3):
            rows.append((user, item, 5.0 if (user + item) % 2 else 2.0, "biased"))
        for item in range(3, 6):
            rows.append((user, item, 5.0 if (user + item) % 2 else 1.0, "unbiased"))
    users, items, ratings, sources = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user": np.array(users, dtype=np.int64),
            "item": np.array(items, dtype=np.int64),
            "rating": np.array(ratings),
            "timestamp": np.nan,
            "source": list(sources),
            "label": (np.array(ratings) >= 4).astype(np.int8),
        }
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_seed_data_is_the_seeds_split_with_its_own_y_and_graph(seed: int) -> None:
    interactions = _biased_and_unbiased()
    item_features = np.arange(6, dtype=np.float32)[:, None]
    run_data = TrainData(sp.csr_matrix((4, 6), dtype=np.float32), item_features=item_features)
    parameters = {"dataset": "coat", "split": {"validation_fraction": 0.5}, "evaluation": {}}
    setup = nodes.evaluation_setup(parameters["evaluation"], "coat")
    data, evaluators = nodes._seed_data(interactions, run_data, parameters, setup, seed)
    # Y: the biased positives (the thesis train split), whatever the seed; Â from it.
    biased = interactions[(interactions["source"] == "biased") & (interactions["label"] == 1)]
    expected = np.zeros((4, 6), dtype=np.float32)
    expected[biased["user"], biased["item"]] = 1.0
    np.testing.assert_array_equal(data.interactions.toarray(), expected)
    np.testing.assert_array_equal(data.adjacency.toarray(), build_normalized_adjacency(data.interactions).toarray())
    assert data.item_features is item_features  # the run's side data is kept
    # The evaluators hold this seed's validation and test rows.
    split = split_interactions(interactions, parameters["split"], parameters["evaluation"], "coat", seed)
    for name in ("validation", "test"):
        rows = split[split["split"] == name]
        np.testing.assert_array_equal(getattr(evaluators, name).users, rows["user"])
        np.testing.assert_array_equal(getattr(evaluators, name).items, rows["item"])
    assert evaluators.setup.protocol.name == "thesis"
    assert evaluators.validation.metric == "ndcg_at_5"


# --------------------------------------------------------------------------- summary
def test_summary_by_hand() -> None:
    # Reference MF recall over seeds 0..2: 0.5, 0.6, 0.7; the row: 0.6, 0.6, 0.9.
    # Differences 0.1, 0.0, 0.2: mean 0.1, sd 0.1, t = 0.1 / (0.1 / √3) = √3 = 1.7321;
    # two-sided p with 2 degrees of freedom = 1 - t / √(t² + 2) = 1 - √3/√5 = 0.22540.
    # Row mean 0.7, sd = √(((-0.1)² + (-0.1)² + 0.2²) / 2) = √0.03 = 0.17321;
    # change vs MF = 0.7 / 0.6 - 1 = +16.67 %.
    runs = pd.DataFrame(
        {
            "row": ["MF"] * 3 + ["dual"] * 3,
            "table": ["5.2"] * 6,
            "seed": [0, 1, 2] * 2,
            "choice": ["{}"] * 6,
            "validation_ndcg": [0.0] * 6,
            "validation_recall": [0.0] * 6,
            "test_recall": [0.5, 0.6, 0.7, 0.6, 0.6, 0.9],
            "test_ndcg": [0.4, 0.4, 0.4, 0.4, 0.4, 0.4],
            "best_epoch": [1] * 6,
            "seconds": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "selected": [True] * 6,
        }
    )
    block = {
        "seeds": [0, 1, 2],
        "reference": "MF",
        "rows": [
            {"label": "MF", "table": "5.2", "base": "mf", "study": {"coat": [0.5563, 0.5214]}},
            {"label": "dual", "table": "5.2", "base": "dual"},
        ],
    }
    table, markdown = summarize_thesis(runs, block, "coat")
    dual = table.set_index("row").loc["dual"]
    assert dual["recall_mean"] == pytest.approx(0.7)
    assert dual["recall_std"] == pytest.approx(0.0300**0.5)
    assert dual["recall_change_vs_reference"] == pytest.approx(0.7 / 0.6 - 1)
    assert dual["recall_p_vs_reference"] == pytest.approx(1 - (3 / 5) ** 0.5, abs=1e-9)
    assert np.isnan(dual["ndcg_p_vs_reference"])  # identical NDCG: no test
    assert dual["seconds"] == pytest.approx(15.0)
    mf = table.set_index("row").loc["MF"]
    assert mf["study_recall_at_5"] == 0.5563 and np.isnan(dual["study_recall_at_5"])
    assert "| 5.2 | dual | 0.7000 ± 0.1732 |" in markdown
    assert "+16.7%" in markdown and "0.225" in markdown


def test_popularity_columns_by_hand() -> None:
    # The reference row MF over seeds 0, 1: ARP 4 and 6, APLT 0.2 and 0.4, Gini 0.5 twice, coverage 0.1 and 0.3.
    runs = pd.DataFrame(
        {
            "row": ["MF", "MF", "dual", "dual"],
            "table": ["5.2"] * 4,
            "seed": [0, 1, 0, 1],
            "choice": ["{}"] * 4,
            "validation_ndcg": [0.0] * 4,
            "validation_recall": [0.0] * 4,
            "test_recall": [0.5, 0.6, 0.6, 0.7],
            "test_ndcg": [0.4, 0.5, 0.5, 0.6],
            "test_arp": [4.0, 6.0, 3.0, 3.0],
            "test_aplt": [0.2, 0.4, 0.5, 0.5],
            "test_exposure_gini": [0.5, 0.5, 0.3, 0.4],
            "test_item_coverage": [0.1, 0.3, 0.6, 0.6],
            "best_epoch": [1] * 4,
            "seconds": [1.0] * 4,
            "selected": [True] * 4,
        }
    )
    block = {
        "seeds": [0, 1],
        "reference": "MF",
        "rows": [{"label": "MF", "table": "5.2", "base": "mf"}, {"label": "dual", "table": "5.2", "base": "dual"}],
    }
    table, markdown = summarize_thesis_with_popularity(runs, block, "coat", {"k": 5})
    mf = table.set_index("row").loc["MF"]
    # ARP mean 5, sd √((1 + 1) / 1) = √2; Gini sd 0
    assert mf["test_arp_mean"] == pytest.approx(5.0) and mf["test_arp_std"] == pytest.approx(2**0.5)
    assert mf["test_exposure_gini_std"] == pytest.approx(0.0) and mf["test_item_coverage_mean"] == pytest.approx(0.2)
    assert mf["recall_mean"] == pytest.approx(0.55)  # the accuracy columns are summarize_thesis's
    assert "## Popularity bias and coverage of the test users' top 5" in markdown
    assert "| 5.2 | MF | 5.000 ± 1.414 | 0.300 ± 0.141 | 0.500 ± 0.000 | 0.200 ± 0.141 |" in markdown
    assert "| 5.2 | dual | 3.000 ± 0.000 |" in markdown
    # runs from before the popularity columns: the table says so with dashes
    _, older = summarize_thesis_with_popularity(runs.drop(columns=["test_arp"]), block, "coat", {"k": 5})
    assert "| 5.2 | MF | – | 0.300 ± 0.141 |" in older


@pytest.mark.parametrize(
    ("given", "seeds"),
    [(3, (3,)), ("0-4", (0, 1, 2, 3, 4)), ("2..4", (2, 3, 4)), ("0 1 7", (0, 1, 7)), ("5;6", (5, 6)), ([1, 2], (1, 2))],
)
def test_seeds_in_the_forms_the_command_line_can_pass(given: object, seeds: tuple) -> None:
    rows = [{"label": "MF", "table": "5.2", "base": "mf"}]
    assert thesis_config({"seeds": given, "rows": rows}).seeds == seeds


def test_only_keeps_the_named_rows_and_the_reference() -> None:
    rows = [{"label": label, "table": "x", "base": "mf"} for label in ("MF", "ExpoMF", "dual, eigen", "WMF")]
    config = thesis_config({"seeds": [0], "rows": rows, "only": "ExpoMF|dual, eigen"})
    assert [row.label for row in config.rows] == ["MF", "ExpoMF", "dual, eigen"]
    with pytest.raises(ValueError, match=r"only names rows that do not exist: \['ExpoM'\].*ExpoMF"):
        thesis_config({"seeds": [0], "rows": rows, "only": "ExpoM"})
    with pytest.raises(ValueError, match="seeds must be distinct"):
        thesis_config({"seeds": "1 1", "rows": rows})


def test_one_seed_reports_the_paired_tests_as_not_available() -> None:
    runs = pd.DataFrame(
        {
            "row": ["MF", "ExpoMF"],
            "seed": [0, 0],
            "choice": ["{}", "{}"],
            "selected": [True, True],
            "test_recall": [0.5, 0.6],
            "test_ndcg": [0.4, 0.5],
            "validation_ndcg": [0.3, 0.35],
            "seconds": [1.0, 2.0],
        }
    )
    rows = [{"label": "MF", "table": "5.2", "base": "mf"}, {"label": "ExpoMF", "table": "5.2", "base": "expomf"}]
    table, markdown = summarize_thesis(runs, {"seeds": [0], "rows": rows}, "coat")
    expo = table[table["row"] == "ExpoMF"].iloc[0]
    assert expo["recall_at_5"] == "0.6000 (one seed)" and math.isnan(expo["recall_p_vs_reference"])
    assert "| ExpoMF | 0.6000 (one seed) | 0.5000 (one seed) | +20.0% | – |" in markdown


@pytest.mark.slow
def test_two_dask_workers_give_the_same_table_as_one() -> None:
    from debias_pipeline.data.loaders.parsing import RawData
    from debias_pipeline.training.inputs import process_dataset

    world = {"n_users": 30, "n_items": 20, "rank": 2, "train_ratings_per_user": 5.0, "test_items_per_user": 6}
    data = process_dataset(RawData(name="synthetic", interactions=pd.DataFrame(), files={}), "synthetic", seed=0, synthetic=world)
    mf = {"name": "mf", "embedding_dim": 4, "epochs": 5, "patience": 5}
    rows = [{"label": "MF", "table": "5.2", "base": "mf", "select": {"lr": [0.01, 0.05]}}]
    base = {"dataset": "synthetic", "mf": {"model": mf}, "evaluation": {}, "split": {}, "synthetic": world}

    def table(workers: int) -> pd.DataFrame:
        parameters = {**base, "reproduce_thesis": {"seeds": [0, 1], "rows": rows, "workers": workers}}
        runs, _ = run_thesis_grid(data.interactions, data.train_data, parameters, torch.device("cpu"))
        return runs.drop(columns="seconds")

    one, two = table(1), table(2)
    pd.testing.assert_frame_equal(one, two)
    assert len(one) == 4 and one["selected"].sum() == 2
