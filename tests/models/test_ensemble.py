"""The ensemble: normalization and the mean by hand, its members are the standalone fits,
the shared settings, and errors that name the parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from debias_pipeline.config.params import ParameterError
from debias_pipeline.models.contract import EpochRecord
from debias_pipeline.models.ensemble import mean_history, normalized, replica_seed
from debias_pipeline.models.registry import build_model
from tests.models.test_contract import checkerboard

CPU = torch.device("cpu")
MEMBERS = [{"name": "mf", "embedding_dim": 8}, {"name": "lightgcn", "embedding_dim": 8, "num_layers": 1}]


def ensemble(**changes):
    return build_model({"name": "ensemble", "members": MEMBERS, "epochs": 30, "patience": 5, **changes}, "best.model", seed=3, device=CPU)


def test_z_normalization_by_hand() -> None:
    scores = np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    # Row 0: mean 2, population sd sqrt(2/3); row 1 has no spread and is left at 0.
    expected = np.array([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]) / np.array([[np.sqrt(2 / 3)], [1.0]])
    np.testing.assert_allclose(normalized(scores, "z"), expected)


def test_rank_normalization_by_hand() -> None:
    scores = np.array([[0.3, -1.0, 0.3, 5.0]])
    # Ranks 2.5, 1, 2.5, 4 (ties share their mean rank), over 4 items.
    np.testing.assert_allclose(normalized(scores, "rank"), [[0.625, 0.25, 0.625, 1.0]])


@pytest.mark.parametrize("how", ["z", "rank"])
def test_score_is_the_mean_of_the_members_normalized_scores(how: str) -> None:
    board = checkerboard()
    model = ensemble(normalization=how).fit(board.data, board.validation)
    members = [m.score() for m in model.members]
    if how == "z":
        by_hand = [(s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True) for s in members]
    else:
        by_hand = [np.argsort(np.argsort(s, axis=1), axis=1) + 1.0 for s in members]  # no ties in float scores
        by_hand = [r / s.shape[1] for r, s in zip(by_hand, members, strict=True)]
    np.testing.assert_allclose(model.score(), (by_hand[0] + by_hand[1]) / 2, rtol=1e-5, atol=1e-6)
    users = np.array([4, 1])
    np.testing.assert_allclose(model.score(users), model.score()[users], rtol=1e-6)


def test_members_are_the_standalone_fits_with_the_same_seed() -> None:
    board = checkerboard()
    model = ensemble().fit(board.data, board.validation)
    for member, block in zip(model.members, MEMBERS, strict=True):
        alone = build_model({**block, "epochs": 30, "patience": 5}, "m", seed=3, device=CPU).fit(board.data, board.validation)
        assert np.array_equal(member.score(), alone.score())
        assert member.best_epoch == alone.best_epoch


def test_mean_history_by_hand() -> None:
    first = [EpochRecord(1, 4.0, 0.5), EpochRecord(2, 2.0, 0.7)]
    second = [EpochRecord(1, 1.0, None), EpochRecord(2, 0.5, 0.1), EpochRecord(3, 0.25, 0.3)]
    history = mean_history([first, second])
    assert [(r.epoch, r.train_loss, r.validation_score) for r in history] == [
        (1, 2.5, 0.5),  # the second member has no validation score at epoch 1
        (2, 1.25, pytest.approx(0.4)),
        (3, 1.125, pytest.approx(0.5)),  # the first member holds its last record
    ]


def test_shared_settings_reach_only_the_members_that_have_them() -> None:
    model = build_model(
        {"name": "ensemble", "members": [{"name": "mf"}, {"name": "wmf"}], "lr": 0.5, "epochs": 7}, "best.model", seed=0, device=CPU
    )
    mf, wmf = model.config.member_blocks("best.model")
    assert mf.config.lr == 0.5 and mf.config.epochs == 7
    assert "lr" not in type(wmf.config).model_fields and wmf.config.epochs == 7


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([{"name": "mf"}], r"best\.model.*members must list at least two"),
        ([{"name": "mf"}, {"name": "mf"}], r"best\.model.*members\[1\] repeats members\[0\]"),
        ([{"name": "mf"}, {"name": "mf", "lr": "fast"}], r"best\.model\.members\[1\]\.lr"),
        ([{"name": "mf"}, {"name": "mff"}], r"unknown model 'mff'"),
        ([{"name": "mf"}, {"name": "ensemble", "members": [{"name": "mf"}, {"name": "wmf"}]}], r"members\[1\] cannot be an ensemble"),
    ],
)
def test_bad_members_are_named(members: list, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        build_model({"name": "ensemble", "members": members}, "best.model", seed=0, device=CPU)


def test_loading_a_state_with_other_members_is_refused() -> None:
    board = checkerboard()
    state = ensemble().fit(board.data, board.validation).state_dict()
    three = build_model(
        {"name": "ensemble", "members": [*MEMBERS, {"name": "wmf"}], "epochs": 30}, "best.model", seed=3, device=CPU
    )
    with pytest.raises(ValueError, match="holds 2 fits, the configuration 3"):
        three.load_state_dict(state, board.data)


def test_replicas_are_fits_of_other_seeds_of_each_member() -> None:
    board = checkerboard()
    model = ensemble(replicas=2).fit(board.data, board.validation)
    assert len(model.members) == 4
    assert [m.seed for m in model.members] == [3, replica_seed(3, 1), 3, replica_seed(3, 1)]
    assert len({replica_seed(s, r) for s in range(5) for r in range(4)}) == 20
    mf, mf_again = model.members[:2]
    assert not np.allclose(mf.score(), mf_again.score())
    single = ensemble().fit(board.data, board.validation)
    for kept, one in zip(model.members[::2], single.members, strict=True):  # the first replica is the ensemble's seed
        assert np.array_equal(kept.score(), one.score())
    by_hand = sum(normalized(m.score(), "z") for m in model.members) / 4
    np.testing.assert_allclose(model.score(), by_hand, rtol=1e-5, atol=1e-6)


def test_best_is_the_candidate_select_best_scores() -> None:
    """``best``'s members are, in order, the grid's fixed rows that ``select_best.py``
    bags as "six x5", five fits each, z scores: its figures are that candidate's."""
    import importlib.util
    from pathlib import Path

    from kedro.config import OmegaConfigLoader

    from debias_pipeline.models.registry import model_block

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("select_best", root / "scripts" / "select_best.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    params = OmegaConfigLoader(conf_source=str(root / "conf"), base_env="base", default_run_env="local")["parameters"]
    grid = script.configuration_blocks(params)
    best = model_block(params["best"]["model"], "best.model")
    assert best.name == "ensemble" and best.config.replicas == script.REPLICAS and best.config.normalization == "z"
    assert script.CANDIDATES["six x5"] == {name: script.REPLICAS for name in script.SIX}
    members = [(block.name, block.config) for block in best.config.member_blocks("best.model")]
    assert members == [(model_block(grid[name], name).name, model_block(grid[name], name).config) for name in script.SIX]
