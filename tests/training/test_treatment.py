"""The treatment set of CausE cut from the validation split, and the evaluators that
then early-stop and report it on the other half."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.inputs import build_evaluators, treatment_inputs, treatment_split

N_USERS, N_ITEMS = 10, 6


def split_table() -> pd.DataFrame:
    """Thesis split: each user 3 validation rows (one positive) and 2 test rows."""
    rows = []
    for user in range(N_USERS):
        for offset, label in ((0, 1), (1, 0), (2, 0)):
            rows.append((user, (user + offset) % N_ITEMS, 1 + 4 * label, label, "validation"))
        rows.append((user, (user + 3) % N_ITEMS, 5, 1, "test"))
        rows.append((user, (user + 4) % N_ITEMS, 1, 0, "test"))
    return pd.DataFrame(rows, columns=["user", "item", "rating", "label", "split"]).assign(role="target")


def evaluators(protocol: str | None = None):
    train = sp.csr_matrix(np.ones((N_USERS, N_ITEMS), dtype=np.float32))
    evaluation = {"k": 2} if protocol is None else {"k": 2, "protocol": protocol}
    return build_evaluators(split_table(), train, evaluation, "synthetic", {})


def cause(seed: int = 0):
    return build_model({"name": "cause"}, "t", seed=seed, device=torch.device("cpu"))


def test_half_the_validation_users_become_the_treatment_set() -> None:
    before = evaluators()
    data = TrainData(sp.csr_matrix((N_USERS, N_ITEMS), dtype=np.float32))
    fitted_on, after = treatment_inputs(cause(), data, before)
    sample, stopping = fitted_on.treatment, after.validation
    treated, kept = set(sample.users.tolist()), set(stopping.users.tolist())
    assert len(treated) == len(kept) == N_USERS // 2 and not treated & kept
    # Every validation row lands in exactly one half, with its label; test is untouched.
    validation = before.validation
    rows = {
        (u, i, float(label)) for u, i, label in zip(validation.users, validation.items, validation.labels, strict=True)
    }
    halves = {(u, i, float(label)) for u, i, label in zip(sample.users, sample.items, sample.labels, strict=True)}
    halves |= {
        (u, i, float(label)) for u, i, label in zip(stopping.users, stopping.items, stopping.labels, strict=True)
    }
    assert halves == rows and len(sample) + stopping.users.size == validation.users.size
    assert after.test is before.test
    assert fitted_on.interactions is data.interactions


def test_the_halves_are_drawn_with_the_model_seed() -> None:
    first, _ = treatment_split(cause(seed=0), evaluators())
    again, _ = treatment_split(cause(seed=0), evaluators())
    other, _ = treatment_split(cause(seed=1), evaluators())
    np.testing.assert_array_equal(first.users, again.users)
    assert set(first.users.tolist()) != set(other.users.tolist())


def test_other_models_get_everything_unchanged() -> None:
    before = evaluators()
    data = TrainData(sp.csr_matrix((N_USERS, N_ITEMS), dtype=np.float32))
    model = build_model({"name": "mf"}, "t", seed=0, device=torch.device("cpu"))
    fitted_on, after = treatment_inputs(model, data, before)
    assert fitted_on is data and after is before and fitted_on.treatment is None


def test_only_the_thesis_protocol_has_an_unbiased_sample() -> None:
    with pytest.raises(ValueError, match="thesis"):
        treatment_split(cause(), evaluators("full_ranking"))
