"""The MLflow tags' command line and runner, the progress lines, the ignored library
warnings, and the start-up imports of the settings and the registry."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from kedro.pipeline import Pipeline, node

from debias_pipeline.framework.library_warnings import IGNORED, IgnoredWarningsFilter, ignore_library_warnings
from debias_pipeline.framework.mlflow_hooks import run_command, runner_name
from debias_pipeline.framework.progress import ProgressHook
from tests.conftest import REPO, KedroProcess

RUN_PARAMS = {
    "pipeline_names": ["train_dual"],
    "env": None,
    "tags": None,
    "from_nodes": None,
    "to_nodes": None,
    "node_names": None,
    "from_inputs": None,
    "to_outputs": None,
    "load_versions": None,
    "namespaces": None,
    "only_missing_outputs": False,
    "runtime_params": {"dataset": "coat", "dual": {"model": {"epochs": 15}}},
    "runner": "<kedro.runner.sequential_runner.SequentialRunner object at 0x7f5b2d443d10>",
}


def test_the_command_repeats_the_parameters_and_the_runner_is_its_class_name() -> None:
    assert run_command(RUN_PARAMS) == "kedro run --pipelines=train_dual --params=dataset=coat,dual.model.epochs=15"
    assert runner_name(RUN_PARAMS) == "SequentialRunner"
    assert runner_name({"runner": None}) == "SequentialRunner"
    assert runner_name({"runner": "None"}) == "SequentialRunner"  # KedroSession.run() without a runner
    assert runner_name({"runner": "ThreadRunner"}) == "ThreadRunner"


def test_the_command_repeats_the_environment_the_node_selection_and_another_runner() -> None:
    params = RUN_PARAMS | {
        "env": "prod",
        "from_nodes": ["split_interactions"],
        "node_names": ["a", "b"],
        "tags": ["fast"],
        "load_versions": {"interactions": "2026-12-06T20.54.27.864Z"},
        "runner": "<kedro.runner.thread_runner.ThreadRunner object at 0xdeadbeef>",
        "runtime_params": {"seed": 3, "note": "two words"},
    }
    assert run_command(params) == (
        "kedro run --pipelines=train_dual --env=prod --from-nodes=split_interactions --nodes=a,b --tags=fast "
        "--runner=ThreadRunner --load-versions=interactions:2026-12-06T20.54.27.864Z '--params=seed=3,note=two words'"
    )


def test_progress_lines_say_each_nodes_place_start_and_end(caplog: pytest.LogCaptureFixture) -> None:
    def identity(x: int) -> int:
        return x

    pipeline = Pipeline([node(identity, "a", "b", name="first"), node(identity, "b", "c", name="second")])
    hook = ProgressHook()
    with caplog.at_level(logging.INFO, logger="debias_pipeline.framework.progress"):
        hook.before_pipeline_run({"pipeline_names": ["p"]}, pipeline)
        for n in pipeline.nodes:
            hook.before_node_run(n)
            hook.after_node_run(n)
        hook.after_pipeline_run({"pipeline_names": ["p"]})
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "[1/2] first" and lines[2] == "[2/2] second"
    assert lines[1].startswith("[1/2] first done in ") and lines[1].endswith(" s")
    assert lines[4].startswith("p: 2 nodes done in ")


def test_an_ignored_warning_is_dropped_from_its_module_only() -> None:
    ignored = IGNORED[0]  # OmegaConf's register_new_resolver, from Kedro's config loader
    message = "register_new_resolver() is deprecated and will be removed in a future release."
    assert ignored.matches(message, UserWarning, "kedro.config.omegaconf_config")
    assert not ignored.matches(message, UserWarning, "debias_pipeline.config.loader")
    assert not ignored.matches("something else", UserWarning, "kedro.config.omegaconf_config")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ignore_library_warnings()
        warnings.warn_explicit(message, UserWarning, "omegaconf_config.py", 637, module="kedro.config.omegaconf_config")
        warnings.warn_explicit(message, UserWarning, "loader.py", 1, module="debias_pipeline.config.loader")
    assert [str(w.message) for w in caught] == [message]


def test_the_log_filter_drops_a_captured_ignored_warning_issued_under_a_librarys_own_filter() -> None:
    import mlflow.pyfunc.utils.data_validation as source

    text = warnings.formatwarning(
        "\x1b[33mAdd type hints to the `predict` method to enable data validation\x1b[0m", UserWarning, source.__file__, 187
    )
    record = logging.LogRecord("py.warnings", logging.WARNING, __file__, 1, text, None, None)
    assert not IgnoredWarningsFilter().filter(record)
    other = warnings.formatwarning("a warning of our own", UserWarning, __file__, 1)
    assert IgnoredWarningsFilter().filter(logging.LogRecord("py.warnings", logging.WARNING, __file__, 1, other, None, None))


HEAVY = ("torch", "torch_geometric", "mlflow", "optuna", "dask", "matplotlib", "scipy.stats")


def imported_after(code: str) -> set[str]:
    """Which of ``HEAVY`` a fresh interpreter has imported after running ``code``."""
    check = f"{code}\nimport sys\nprint('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "KEDRO_DISABLE_TELEMETRY": "true"},
    )
    (loaded,) = [line for line in done.stdout.splitlines() if line.startswith("loaded:")]
    return set(filter(None, loaded.removeprefix("loaded:").split(",")))


def test_the_settings_import_no_heavy_library() -> None:
    """Every `kedro` command imports the settings: the hooks import MLflow, torch and the
    models when they run."""
    assert imported_after("import debias_pipeline.settings") == set()


@pytest.mark.slow
def test_the_registry_leaves_pyg_dask_and_scipy_stats_to_the_nodes_that_use_them() -> None:
    """Building every pipeline imports torch (the models) and matplotlib (the plotting
    nodes' return types, which Kedro's parameter validation resolves), not PyG, dask
    or scipy.stats."""
    loaded = imported_after(
        "from kedro.framework.startup import bootstrap_project\n"
        "bootstrap_project('.')\n"
        "from debias_pipeline.pipeline_registry import register_pipelines\n"
        "register_pipelines()"
    )
    assert not loaded & {"torch_geometric", "dask", "scipy.stats"}, loaded


@pytest.mark.slow
def test_a_run_with_the_projects_logging_shows_progress_and_results_in_few_lines(
    project_copy: Path, kedro_processes: list[KedroProcess]
) -> None:
    shutil.copy(REPO / "conf" / "logging.yml", project_copy / "conf" / "logging.yml")
    run = KedroProcess(project_copy, "--pipelines=train_mostpop")
    kedro_processes.append(run)
    assert run.finish(timeout=600) == 0, run.output
    output = run.output
    for left_out in ("Loading data from", "Saving data to", "Running node:", "Completed node:", "Registering new custom resolver"):
        assert left_out not in output
    for ignored in IGNORED:
        assert not re.search(ignored.message.removeprefix(".*"), output), ignored.reason
    assert re.search(r"INFO\s+\[ ?1/\d+\] ingest_ratings\s*$", output, re.MULTILINE)  # rich pads lines
    assert re.search(r"\[ ?\d+/\d+\] mostpop\.evaluate_model done in \d+\.\d s", output)
    assert re.search(r"mostpop: test Recall@5 = [\d.]+, NDCG@5 = [\d.]+", output)
    assert re.search(r"MLflow run 'train_mostpop · synthetic · seed 0' \(\w+\)", output)
    # a start and an end line per node, and about a dozen more (the project, the MLflow run, the device,
    # the propensity estimate, the best epoch, the result)
    nodes = int(re.search(r"\[ ?1/(\d+)\]", output).group(1))
    assert len(run.lines) <= 2 * nodes + 15, output
