"""The evaluation protocols: their splits and their metrics, by hand on small data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from debias_pipeline.data.registry import dataset_spec
from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.evaluation.metrics import metrics_from_relevance
from debias_pipeline.evaluation.protocols import evaluation_setup
from debias_pipeline.evaluation.splits import split_for_protocol
from debias_pipeline.models.mf import MF
from debias_pipeline.models.registry import check_model_fits_protocol
from debias_pipeline.models.wmf import WMF


class FixedScores:
    """A 'model' whose scores are a given matrix; fold-in scores are a function of the history."""

    name = "fixed"
    best_epoch = 1
    supports_fold_in = True

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        return self.scores if users is None else self.scores[np.asarray(users)]

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.scores[np.asarray(users), np.asarray(items)]

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        # Items co-clicked with the history: history @ (a fixed item-item matrix).
        return np.asarray(history @ self.scores[: history.shape[1], :])


def interactions_table(users, items, labels=None, source="all", timestamps=None) -> pd.DataFrame:
    users = np.asarray(users, dtype=np.int64)
    return pd.DataFrame(
        {
            "user": users,
            "item": np.asarray(items, dtype=np.int64),
            "rating": np.nan,
            "timestamp": np.nan if timestamps is None else np.asarray(timestamps, dtype=np.float64),
            "source": source if isinstance(source, str) else np.asarray(source, dtype=object),
            "label": np.ones(users.size, dtype=np.int8) if labels is None else np.asarray(labels, dtype=np.int8),
        }
    )


# ---- metrics at several cut-offs -----------------------------------------------------------


def test_metrics_from_relevance_by_hand() -> None:
    relevance = np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=float)
    n_relevant = np.array([3, 1, 2])
    at3 = metrics_from_relevance(relevance, n_relevant, 3)
    np.testing.assert_allclose(at3["recall"], [1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(at3["precision"], [1 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(at3["hr"], [1.0, 1.0, 0.0])
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    np.testing.assert_allclose(at3["ndcg"], [(1 / math.log2(3)) / idcg, 1.0, 0.0])
    at5 = metrics_from_relevance(relevance, n_relevant, 5)
    np.testing.assert_allclose(at5["recall"], [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(at5["precision"], [2 / 5, 1 / 5, 0.0])


# ---- protocol resolution ---------------------------------------------------------------------


def test_defaults_follow_the_dataset_and_protocol() -> None:
    assert evaluation_setup(None, "coat").protocol.name == "thesis"
    assert evaluation_setup(None, "coat").cutoffs == (5,)
    lastfm = evaluation_setup({}, "lastfm")
    assert (lastfm.protocol.name, lastfm.cutoffs, lastfm.selection_metric) == ("full_ranking", (20,), "ndcg_at_20")
    loo = evaluation_setup({"protocol": "leave_one_out"}, "movielens_100k")
    assert (loo.cutoffs, loo.selection_metric) == ((10,), "ndcg_at_10")
    sg = evaluation_setup({"protocol": "strong_generalization"}, "movielens_100k")
    assert (sg.cutoffs, sg.selection_metric) == ((20, 50, 100), "ndcg_at_100")
    assert evaluation_setup({"k": [20, 10]}, "gowalla").cutoffs == (10, 20)


@pytest.mark.parametrize(
    ("evaluation", "dataset", "message"),
    [
        ({"protocol": "thesis"}, "lastfm", "needs an unbiased test set"),
        ({"protocol": "leave_one_out"}, "gowalla", "has no timestamps"),
        ({"protocol": "ranking"}, "gowalla", "protocol must be one of"),
        ({"k": 0}, "gowalla", "k must be >= 1"),
        ({"selection_metric": "ndcg_at_10"}, "gowalla", "evaluation.selection_metric"),
        ({"selection_metric": "auc"}, "coat", "evaluation.selection_metric"),
    ],
)
def test_a_protocol_that_does_not_fit_is_refused(evaluation: dict, dataset: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluation_setup(evaluation, dataset)


def test_fold_in_protocol_refuses_a_model_that_cannot_fold_in() -> None:
    with pytest.raises(ValueError, match=r"model 'mf' \(mf.model\) cannot score a user.*strong_generalization.*wmf"):
        check_model_fits_protocol(MF, "strong_generalization", "mf.model")
    check_model_fits_protocol(WMF, "strong_generalization")
    check_model_fits_protocol(MF, "leave_one_out")


# ---- full ranking -----------------------------------------------------------------------------


def test_validation_carve_out_takes_a_tenth_of_each_users_train_and_never_touches_test() -> None:
    rng = np.random.default_rng(0)
    train_users = np.repeat(np.arange(6), [1, 4, 5, 10, 20, 31])
    train_items = np.concatenate([rng.choice(100, n, replace=False) for n in [1, 4, 5, 10, 20, 31]])
    test_users = np.repeat(np.arange(6), 3)
    test_items = np.tile([100, 101, 102], 6)
    table = interactions_table(
        np.r_[train_users, test_users],
        np.r_[train_items, test_items],
        source=np.r_[np.full(train_users.size, "train"), np.full(test_users.size, "test")],
    )
    setup = evaluation_setup({}, "lastfm")
    split = split_for_protocol(table, setup, {}, dataset_spec("lastfm"), seed=3)
    from_test = split["source"] == "test"
    assert (split.loc[from_test, "split"] == "test").all()
    assert (split.loc[~from_test, "split"] != "test").all()
    validation = split[split["split"] == "validation"]
    # round(0.1 n), at most n - 1: 0, 0, 1 (0.5 rounds up), 1, 2, 3
    assert validation.groupby("user").size().reindex(range(6), fill_value=0).tolist() == [0, 0, 1, 1, 2, 3]
    again = split_for_protocol(table, setup, {}, dataset_spec("lastfm"), seed=3)
    pd.testing.assert_frame_equal(split, again)
    other = split_for_protocol(table, setup, {}, dataset_spec("lastfm"), seed=4)
    assert not other["split"].equals(split["split"])


def test_random_split_of_a_log_holds_out_each_users_share() -> None:
    users = np.repeat(np.arange(3), [10, 5, 2])
    items = np.concatenate([np.arange(10), np.arange(5), np.arange(2)])
    labels = np.ones(users.size, dtype=np.int8)
    labels[0] = 0  # a disliked rating: never a test or validation target
    table = interactions_table(users, items, labels)
    split = split_for_protocol(table, evaluation_setup({}, "movielens_100k"), {"test_fraction": 0.2}, dataset_spec("movielens_100k"), 0)
    tests = split[split["split"] == "test"].groupby("user").size().reindex(range(3), fill_value=0)
    assert tests.tolist() == [2, 1, 0]  # round(0.2 * 9) = 2, round(0.2 * 5) = 1, round(0.4) = 0
    assert (split.loc[split["label"] == 0, "split"] == "train").all()
    assert len(split) == len(table)



@pytest.mark.parametrize(
    ("validation_fraction", "users_3_and_4"), [(0.1, [(18, 0, 2), (23, 0, 2)]), (0.9, [(18, 1, 1), (23, 1, 1)])]
)
def test_a_large_test_fraction_leaves_every_user_a_train_row(
    validation_fraction: float, users_3_and_4: list[tuple[int, int, int]]
) -> None:
    # test_fraction 0.9: a user holds out round(0.9 n) of their n positives, at most n - 1;
    # validation then takes round(f m), at most m - 1, of the m positives left.
    #   user 0: 1 positive   -> test min(round(0.9), 0) = 0; the one row stays train
    #   user 1: 2 positives  -> test min(round(1.8), 1) = 1; 1 left: validation 0, train 1
    #   user 2: 10 positives -> test min(round(9), 9) = 9; 1 left: train, with the negative
    #   user 3: 20 positives -> test min(round(18), 19) = 18; 2 left: validation
    #           min(round(0.2), 1) = 0 at f = 0.1, min(round(1.8), 1) = 1 at f = 0.9
    #   user 4: 25 positives -> test min(round(22.5), 24) = 23 (half rounds up); 2 left as user 3
    users = np.repeat(np.arange(5), [1, 2, 11, 20, 25])
    items = np.concatenate([[5], [0, 1], np.arange(11), np.arange(20), np.arange(25)])
    labels = np.ones(users.size, dtype=np.int8)
    labels[3] = 0  # user 2's first row: a disliked item, never held out
    table = interactions_table(users, items, labels)
    split = split_for_protocol(
        table,
        evaluation_setup({}, "movielens_100k"),
        {"test_fraction": 0.9, "validation_fraction": validation_fraction},
        dataset_spec("movielens_100k"),
        seed=0,
    )
    counts = split.groupby(["user", "split"]).size().unstack(fill_value=0).reindex(columns=["test", "validation", "train"], fill_value=0)
    assert [tuple(row) for row in counts.to_numpy().tolist()] == [(0, 0, 1), (1, 0, 1), (9, 0, 2), *users_3_and_4]
    assert split.loc[split["user"] == 0, ["item", "split"]].values.tolist() == [[5, "train"]]
    assert sorted(split.loc[split["user"] == 1, "split"]) == ["test", "train"]
    assert split.loc[(split["user"] == 2) & (split["label"] == 0), "split"].tolist() == ["train"]


def test_full_ranking_test_masks_train_and_validation_items() -> None:
    # One user, 6 items. Train: item 0; validation: item 1; test: item 2.
    split = pd.DataFrame(
        {
            "user": [0, 0, 0],
            "item": [0, 1, 2],
            "label": [1, 1, 1],
            "split": ["train", "validation", "test"],
            "role": ["input", "target", "target"],
        }
    )
    train = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 6))
    setup = evaluation_setup({"k": [1, 2]}, "lastfm")
    evaluators = Evaluators.build(split, train, setup)
    model = FixedScores([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0]])
    test, predictions = evaluators.test.report(model)
    # item 0 (train) and item 1 (validation) are masked: item 2 ranks first.
    assert test["test_hr_at_1"] == 1.0 and test["test_ndcg_at_1"] == 1.0
    assert predictions[predictions["split"] == "test"]["item"].tolist() == [2, 3]
    validation, _ = evaluators.validation.report(model)
    # validation masks only train: item 1 ranks first.
    assert validation["validation_recall_at_1"] == 1.0
    assert evaluators.validation.score(model) == 1.0


# ---- leave one out ---------------------------------------------------------------------------


def _loo_table() -> pd.DataFrame:
    # user 0: 4 positives at times 1..4 (items 0..3) and a disliked item 4; user 1: 2 positives; user 2: 1.
    return interactions_table(
        users=[0, 0, 0, 0, 0, 1, 1, 2],
        items=[0, 1, 2, 3, 4, 5, 6, 7],
        labels=[1, 1, 1, 1, 0, 1, 1, 1],
        timestamps=[10, 40, 20, 30, 50, 5, 6, 1],
    )


def test_leave_one_out_holds_out_the_latest_and_samples_never_interacted_candidates() -> None:
    table = pd.concat([_loo_table(), interactions_table([3], [199], timestamps=[0])], ignore_index=True)  # 200 items
    setup = evaluation_setup({"protocol": "leave_one_out"}, "movielens_100k")
    split = split_for_protocol(table, setup, {"num_negatives": 100}, dataset_spec("movielens_100k"), seed=0)
    held = split[(split["source"] != "candidate") & (split["split"] != "train")]
    assert sorted(map(tuple, held[["user", "item", "split"]].to_numpy())) == [
        (0, 1, "test"),  # latest positive (t = 40); the disliked t = 50 does not count
        (0, 3, "validation"),  # the one before it (t = 30)
        (1, 6, "test"),  # two positives: test only
    ]
    candidates = split[split["source"] == "candidate"]
    assert (candidates["label"] == 0).all()
    for (user, which), group in candidates.groupby(["user", "split"]):
        assert len(group) == 100 and group["item"].is_unique
        assert not set(group["item"]) & set(table.loc[table["user"] == user, "item"])  # never interacted
    assert set(candidates.groupby(["user", "split"]).groups) == {(0, "test"), (0, "validation"), (1, "test")}
    again = split_for_protocol(table, setup, {"num_negatives": 100}, dataset_spec("movielens_100k"), seed=0)
    pd.testing.assert_frame_equal(split, again)


def test_leave_one_out_needs_every_timestamp() -> None:
    table = _loo_table()
    table.loc[2, "timestamp"] = np.nan
    with pytest.raises(ValueError, match="needs a timestamp on every row"):
        split_for_protocol(table, evaluation_setup({"protocol": "leave_one_out"}, "movielens_100k"), {}, dataset_spec("movielens_100k"), 0)


def test_hit_ratio_among_candidates_by_hand() -> None:
    # user 0: the held-out item 0 and 100 negatives 1..100; it ranks 3rd -> HR@10 = 1,
    # NDCG@10 = 1 / log2(4); user 1: its item ranks 11th -> 0.
    n_items = 102
    scores = np.zeros((2, n_items))
    scores[0, 1:101] = -np.arange(100)  # items 1, 2 score 0 and -1 ...
    scores[0, 0] = -1.5  # ... item 0 below 1 (0) and 2 (-1): 3rd
    scores[1, 1:101] = -np.arange(100)
    scores[1, 0] = -9.5  # below items 1..10 (0..-9): 11th
    split = pd.DataFrame(
        {
            "user": np.repeat([0, 1], 101),
            "item": np.tile(np.arange(101), 2),
            "label": np.tile(np.r_[1, np.zeros(100)], 2).astype(np.int8),
            "split": "test",
            "role": "target",
        }
    )
    split = pd.concat([split, split.assign(split="validation")], ignore_index=True)
    evaluators = Evaluators.build(split, sp.csr_matrix((2, n_items)), evaluation_setup({"protocol": "leave_one_out"}, "movielens_100k"))
    values, predictions = evaluators.test.report(FixedScores(scores))
    assert values["test_hr_at_10"] == pytest.approx(0.5)
    assert values["test_ndcg_at_10"] == pytest.approx((1 / math.log2(4) + 0) / 2)
    assert values["test_recall_at_10"] == values["test_hr_at_10"]  # one relevant item each
    assert len(predictions) == 2 * 101


# ---- strong generalization ---------------------------------------------------------------------


def test_strong_generalization_holds_out_whole_users_and_folds_in_their_inputs() -> None:
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(40), 10)
    items = np.concatenate([rng.choice(30, 10, replace=False) for _ in range(40)])
    table = interactions_table(users, items)
    setup = evaluation_setup({"protocol": "strong_generalization"}, "movielens_100k")
    split = split_for_protocol(
        table, setup, {"validation_users": 4, "test_users": 0.1, "target_fraction": 0.2}, dataset_spec("movielens_100k"), 0
    )
    per_user = split.groupby("user")["split"].agg(set)
    assert all(len(s) == 1 for s in per_user)  # a user is wholly train, validation or test
    assert (per_user.map(lambda s: next(iter(s))).value_counts()).to_dict() == {"train": 32, "validation": 4, "test": 4}
    held = split[split["split"] != "train"]
    assert (held.groupby("user")["role"].apply(lambda r: (r == "target").sum()) == 2).all()  # 20 % of 10
    assert (split.loc[split["split"] == "train", "role"] == "input").all()


def test_fold_in_evaluation_uses_only_the_inputs_and_drops_items_unseen_in_train() -> None:
    # Train user 0 clicked items 0, 1, 2. Held-out test user 1: input item 0, targets 1 and 3
    # (item 3 has no train click: dropped and counted). Validation user 2: input 1, target 2.
    split = pd.DataFrame(
        {
            "user": [0, 0, 0, 1, 1, 1, 2, 2],
            "item": [0, 1, 2, 0, 1, 3, 1, 2],
            "label": 1,
            "split": ["train"] * 3 + ["test"] * 3 + ["validation"] * 2,
            "role": ["input"] * 3 + ["input", "target", "target", "input", "target"],
        }
    )
    train = sp.csr_matrix((np.ones(3), ([0, 0, 0], [0, 1, 2])), shape=(3, 4))
    evaluators = Evaluators.build(split, train, evaluation_setup({"protocol": "strong_generalization", "k": [1]}, "movielens_100k"))
    # item-item scores: from item 0 the best is item 0 itself (masked), then item 1.
    item_item = np.array([[9.0, 5.0, 1.0, 0.0], [0.0, 9.0, 5.0, 1.0], [0, 0, 0, 0], [0, 0, 0, 0]])
    test, predictions = evaluators.test.report(FixedScores(item_item))
    assert test["test_recall_at_1"] == 1.0  # item 1 first after masking the input item 0
    assert test["test_rows_dropped_unseen"] == 1
    assert predictions[predictions["split"] == "test"]["item"].tolist() == [1]
    assert evaluators.validation.score(FixedScores(item_item)) == 1.0  # from item 1: item 2


def test_a_cut_off_beyond_the_catalogue_is_refused() -> None:
    split = pd.DataFrame({"user": [0], "item": [0], "label": [1], "split": ["validation"], "role": ["target"]})
    with pytest.raises(ValueError, match=r"'evaluation.k' \(\[10000\]\) must not exceed the 300 items"):
        Evaluators.build(split, sp.csr_matrix((2, 300)), evaluation_setup({"k": 10000}, "coat"))
