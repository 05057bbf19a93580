"""Per-dataset parameter defaults (``config_loader``): block < dataset default < --params."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from debias_pipeline.config.loader import apply_dataset_defaults
from debias_pipeline.config.params import as_mapping


def parameters(project: Path, **runtime: object) -> dict:
    """The run's parameters as mappings (Kedro hands the validated blocks as models)."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime) as session:
        return as_mapping(session.load_context().params)


@pytest.mark.slow
def test_lastfm_gets_the_lightgcn_papers_settings_and_the_command_line_still_wins(project_copy: Path) -> None:
    coat = parameters(project_copy, dataset="coat")["lightgcn"]["model"]
    assert (coat["loss"] if "loss" in coat else "bce", coat["embedding_dim"], coat["lr"]) == ("bce", 200, 0.04)
    lastfm = parameters(project_copy, dataset="lastfm")
    block = lastfm["lightgcn"]["model"]
    assert (block["loss"], block["embedding_dim"], block["num_layers"], block["lr"], block["weight_decay"]) == (
        "bpr",
        64,
        3,
        0.001,
        1e-4,
    )
    assert lastfm["mf"]["model"]["loss"] == "bpr" and lastfm["dual"]["model"]["preference"]["embedding_dim"] == 64
    assert not any(name.startswith("_") for name in lastfm)  # the anchors' holders are not parameters
    overridden = parameters(project_copy, dataset="lastfm", lightgcn={"model": {"lr": 0.002}})["lightgcn"]["model"]
    assert (overridden["lr"], overridden["loss"]) == (0.002, "bpr")


def test_defaults_merge_into_blocks_and_reject_unknown_ones() -> None:
    params = {
        "dataset": "x",
        "mf": {"model": {"name": "mf", "lr": 0.04, "epochs": 300}},
        "dataset_defaults": {"x": {"mf.model": {"lr": 0.001}}, "y": {"mf.model": {"lr": 9.0}}},
    }
    merged = apply_dataset_defaults(params, {"mf": {"model": {"epochs": 5}}})
    assert merged["mf"]["model"] == {"name": "mf", "lr": 0.001, "epochs": 5}
    assert params["mf"]["model"]["lr"] == 0.04  # the input is left alone
    assert apply_dataset_defaults({**params, "dataset": "z"}, {}) == {**params, "dataset": "z"}
    with pytest.raises(ValueError, match="dataset_defaults.x.nope.model"):
        apply_dataset_defaults({**params, "dataset_defaults": {"x": {"nope.model": {}}}}, {})
