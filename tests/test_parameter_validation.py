"""Kedro's parameter validation of every block, and the check of ``--params`` keys."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from kedro.validation.parameter_validator import ParameterValidator

from debias_pipeline.config.params import BLOCK, Params, kedro_validation_message
from debias_pipeline.evaluation.protocols import EvaluationConfig
from debias_pipeline.framework.validation import (
    catalog_runtime_parameters,
    check_runtime_parameters,
    validate_parameters,
)
from debias_pipeline.models.registry import ModelBlock
from debias_pipeline.pipeline_registry import register_pipelines
from tests.conftest import REPO

sys.path.insert(0, str(REPO))

from scripts.parameters_doc import load_parameters, lookup, typed_params_inputs

# Blocks a node checks itself: a mapping of model blocks (each one validated as a
# ModelBlock by plan_study, which names the block).
CHECKED_BY_THEIR_NODE = {"study_hypotheses.models"}


def project_parameters() -> dict[str, Any]:
    """The parameters as conf/base writes them (no dataset's defaults, no command line)."""
    return load_parameters()


def run_parameters() -> dict[str, Any]:
    """The parameters as the hooks of a run see them: each block validated into its model
    (every default filled in, where the yml keeps only what differs)."""
    return ParameterValidator(register_pipelines()).validate_raw_params(project_parameters())


def test_every_parameter_block_a_node_reads_has_a_params_model() -> None:
    parameters = project_parameters()
    unchecked = sorted(
        {
            (node, key)
            for node, key, hint in typed_params_inputs()
            if isinstance(lookup(parameters, key), dict)
            and key not in CHECKED_BY_THEIR_NODE
            and not (isinstance(hint, type) and issubclass(hint, Params))
        }
    )
    assert unchecked == []


def test_kedro_turns_every_block_into_its_model() -> None:
    validated = ParameterValidator(register_pipelines()).validate_raw_params(project_parameters())
    assert isinstance(validated["evaluation"], EvaluationConfig)
    assert isinstance(validated["mf"]["model"], ModelBlock)
    assert validated["mf"]["model"].config.embedding_dim == 200


def test_a_block_validated_by_kedro_names_the_field_under_a_placeholder() -> None:
    with pytest.raises(ValueError, match=rf"^parameter '{BLOCK}\.k' must be an integer, got 2\.5$"):
        EvaluationConfig.model_validate({"k": 2.5})


def test_kedro_report_gets_the_block_keys() -> None:
    report = (
        "Parameter validation failed:\n"
        f"- Parameter 'evaluation': Failed to instantiate EvaluationConfig for parameter 'evaluation': "
        f"parameter '{BLOCK}.k' must be an integer, got 2.5\n"
        "- Parameter 'split': value is None but type is not Optional"
    )
    assert kedro_validation_message(report) == (
        "parameter 'evaluation.k' must be an integer, got 2.5; parameter 'split': value is None but type is not Optional"
    )


def test_the_catalog_runtime_parameters_are_found() -> None:
    reads = catalog_runtime_parameters(REPO / "conf")
    assert {"dataset", "custom.interactions", "custom.columns.user", "custom.columns.title"} <= reads


@pytest.fixture(scope="module")
def pipelines() -> list:
    return list(register_pipelines().values())


@pytest.mark.parametrize(
    "runtime",
    [
        {"seed": 3},
        {"mf": {"model": {"lr": 0.1}}},  # read by train_mf, whatever pipeline runs
        {"evaluation": {"protocol": "full_ranking", "k": [10, 20]}},
        {"custom": {"columns": {"user": "u"}}},  # read by the catalog
        {"dataset": "coat"},
    ],
)
def test_runtime_parameters_someone_reads_pass(pipelines: list, runtime: dict[str, Any]) -> None:
    reads = catalog_runtime_parameters(REPO / "conf")
    check_runtime_parameters(runtime, run_parameters(), pipelines, reads)


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ({"sed": 3}, r"'sed' \(from --params\) is not read by any pipeline; did you mean 'seed'\?"),
        ({"evaluaton": {"k": 3}}, r"'evaluaton\.k' .*did you mean 'evaluation\.k'\?"),
        ({"mf": {"modle": {"lr": 0.1}}}, r"'mf\.modle\.lr' .*did you mean 'mf\.model\.lr'\?"),
        ({"custom": {"itemz": "x.csv"}}, r"'custom\.itemz' .*did you mean 'custom\.items'\?"),
        ({"zzzz": 1}, r"'zzzz' \(from --params\) is not read by any pipeline; the parameter blocks: "),
    ],
)
def test_runtime_parameters_nobody_reads_are_refused(pipelines: list, runtime: dict[str, Any], message: str) -> None:
    reads = catalog_runtime_parameters(REPO / "conf")
    with pytest.raises(ValueError, match=message):
        check_runtime_parameters(runtime, run_parameters(), pipelines, reads)


def test_catalog_runtime_parameters_of_an_empty_conf(tmp_path: Path) -> None:
    assert catalog_runtime_parameters(tmp_path) == set()


def test_the_project_parameters_pass_the_cross_block_checks_of_train_neumf() -> None:
    validate_parameters(project_parameters(), register_pipelines()["train_neumf"])


@pytest.mark.parametrize(
    ("block", "changes", "message"),
    [
        ("gmf", {"embedding_dim": 16}, r"'neumf\.model\.embedding_dim' \(8\) must equal 'gmf\.model\.embedding_dim' \(16\)"),
        ("mlp", {"num_layers": 2}, r"MLP tower of 'neumf\.model' .* that of 'mlp\.model'"),
    ],
)
def test_a_pretrained_neumf_of_other_sizes_than_its_gmf_or_mlp_is_refused_before_the_run(
    block: str, changes: dict[str, Any], message: str
) -> None:
    parameters = project_parameters()
    parameters[block]["model"].update(changes)
    with pytest.raises(ValueError, match=message):
        validate_parameters(parameters, register_pipelines()["train_neumf"])
    parameters["neumf"]["model"]["pretrain"] = False  # from scratch, the sizes are free
    validate_parameters(parameters, register_pipelines()["train_neumf"])


def test_a_thesis_row_with_a_pretrained_neumf_is_refused_before_the_run() -> None:
    parameters = project_parameters()
    parameters["reproduce_thesis"]["rows"].append({"label": "NeuMF pretrained", "table": "extra", "base": "neumf"})
    with pytest.raises(ValueError, match=r"row 'NeuMF pretrained': neumf with pretrain: true .*\(train_neumf\)"):
        validate_parameters(parameters, register_pipelines()["reproduce_thesis"])
