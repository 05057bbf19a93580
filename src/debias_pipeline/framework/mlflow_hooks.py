"""Hooks around MLflow: the store set up under a file lock, plain parameters for
kedro-mlflow, every saved artifact logged to the run, and the run's name and
command-line tags.

MLflow takes seconds to import and settings.py imports this module for every `kedro`
command (`kedro --version` included): each hook imports it when it runs.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

from filelock import FileLock
from kedro.config import MissingConfigException
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline

from debias_pipeline.config.params import as_mapping
from debias_pipeline.framework.journal import _versioned
from debias_pipeline.framework.validation import _flat

logger = logging.getLogger(__name__)

class PlainParametersForMlflowHook:
    """kedro-mlflow logs a node's ``params:`` inputs, flattening mappings into one MLflow
    parameter per key (``mf.model.lr``); Kedro hands the nodes validated ``Params``
    models instead of mappings, so the hooks get the mappings back (a copy: the node
    still receives the models)."""

    @hook_impl(tryfirst=True)
    def before_node_run(self, inputs: dict[str, Any]) -> None:
        for name, value in inputs.items():
            if name.startswith("params:") or name == "parameters":
                inputs[name] = as_mapping(value)

class MlflowArtifactHook:
    """Log every versioned dataset a node saves to the active MLflow run.

    The artifact goes under its namespace (``dual/metrics.json``) or ``data/`` for the
    shared data artifacts. Nothing is logged when tracking is off (no active run).
    """

    def __init__(self) -> None:
        self._catalog: Any = None

    @hook_impl
    def after_catalog_created(self, catalog: Any, **kwargs: Any) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        import mlflow

        if self._catalog is None or mlflow.active_run() is None:
            return
        dataset = _versioned(self._catalog, dataset_name)
        if dataset is None:
            return
        path = Path(str(dataset._get_versioned_path(dataset.resolve_save_version())))
        namespace, _, _ = dataset_name.rpartition(".")
        mlflow.log_artifact(str(path), artifact_path=namespace or "data")

    @hook_impl(trylast=True)
    def after_pipeline_run(self, **kwargs: Any) -> None:
        # kedro-mlflow re-enters the run before every node and ends it once, so the
        # run stays on mlflow's stack: a second run in the same process would
        # otherwise log into this one.
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()

def _pipeline_names(run_params: dict[str, Any]) -> list[str]:
    return list(run_params.get("pipeline_names") or ([run_params["pipeline_name"]] if run_params.get("pipeline_name") else []))

def runner_name(run_params: dict[str, Any]) -> str:
    """The runner's class name: Kedro records the runner object's ``str``
    (``<kedro.runner.sequential_runner.SequentialRunner object at 0x...>``), or ``"None"``
    for a session run without one, which then runs with a ``SequentialRunner``."""
    runner = str(run_params.get("runner"))
    if runner in ("None", ""):
        return "SequentialRunner"
    found = re.fullmatch(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>", runner)
    return found.group(1) if found else runner

# `kedro run` options of the run parameters that select what runs, in Kedro's order.
_SELECTION_OPTIONS = (
    ("from_inputs", "--from-inputs"),
    ("to_outputs", "--to-outputs"),
    ("from_nodes", "--from-nodes"),
    ("to_nodes", "--to-nodes"),
    ("node_names", "--nodes"),
    ("tags", "--tags"),
    ("namespaces", "--namespaces"),
)

def run_command(run_params: dict[str, Any]) -> str:
    """The ``kedro run`` command line that repeats a run (also one started from Python):
    pipelines, environment, node selection, runner, load versions and every
    ``--params`` override."""
    words = ["kedro", "run"]
    pipelines = _pipeline_names(run_params)
    if pipelines:
        words.append(f"--pipelines={','.join(pipelines)}")
    if run_params.get("env"):
        words.append(f"--env={run_params['env']}")
    for key, option in _SELECTION_OPTIONS:
        if run_params.get(key):
            words.append(f"{option}={','.join(run_params[key])}")
    if run_params.get("only_missing_outputs"):
        words.append("--only-missing-outputs")
    if runner_name(run_params) != "SequentialRunner":
        words.append(f"--runner={runner_name(run_params)}")
    if run_params.get("load_versions"):
        words.append("--load-versions=" + ",".join(f"{name}:{version}" for name, version in run_params["load_versions"].items()))
    runtime = _flat(run_params.get("runtime_params"))
    if runtime:
        words.append("--params=" + ",".join(f"{key}={value}" for key, value in runtime.items()))
    return shlex.join(words)

def _short(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

def run_name(run_params: dict[str, Any], parameters: dict[str, Any]) -> str:
    """``<pipeline> · <dataset> · seed <s>``, then the other ``--params`` overrides."""
    pipelines = _pipeline_names(run_params) or ["__default__"]
    name = f"{','.join(pipelines)} · {parameters.get('dataset')} · seed {parameters.get('seed')}"
    overrides = {k: v for k, v in _flat(run_params.get("runtime_params")).items() if k not in ("dataset", "seed")}
    if overrides:
        name += " · " + " ".join(f"{key}={_short(value)}" for key, value in overrides.items())
    return name[:250]

# Ingested rows beyond which the run's dataset input is a sampled digest: MLflow's own
# digest and schema read every row (about 70 s at 4 million rows, docs/performance.md).
FULL_DIGEST_ROWS = 1_000_000

class MlflowRunLabelHook:
    """Tell MLflow runs apart: the run name says pipeline, dataset, seed and overrides;
    the ``kedro run`` command line is a tag; the ingested ratings are the run's dataset
    input (name, source folder, digest); the experiment is a model-training one.

    kedro-mlflow tags the run too, before this hook: ``kedro_command`` without the
    ``--params`` (run again, it would train on the default dataset) and ``runner``, the
    runner object's ``repr``. Both are overwritten: ``kedro_command`` with the same
    command as ``kedro.command``, ``runner`` with the runner's class name.

    Args:
        full_digest_rows: above this many ingested rows the dataset input is a sampled
            digest and schema (``dataset_digest.table_dataset``), not MLflow's pass over
            every row.
    """

    def __init__(self, full_digest_rows: int = FULL_DIGEST_ROWS) -> None:
        self._source = "data/01_raw"
        self._full_digest_rows = full_digest_rows

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._source = str(Path(context.project_path) / "data" / "01_raw")

    @hook_impl(trylast=True)  # after kedro-mlflow has started the run and set its own tags
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        import mlflow

        run = mlflow.active_run()
        if run is None:
            return
        parameters = catalog.load("parameters")
        name, command = run_name(run_params, parameters), run_command(run_params)
        mlflow.set_tags(
            {"mlflow.runName": name, "kedro.command": command, "kedro_command": command, "runner": runner_name(run_params)}
        )
        mlflow.MlflowClient().set_experiment_tag(run.info.experiment_id, "mlflow.experimentKind", "custom_model_development")
        logger.info("MLflow run '%s' (%s), tracking at %s", name, run.info.run_id, mlflow.get_tracking_uri())

    @hook_impl
    def after_node_run(self, node: Any, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        if node.name != "ingest_ratings":
            return
        import mlflow

        from debias_pipeline.framework.dataset_digest import table_dataset

        if mlflow.active_run() is None:
            return
        dataset = inputs.get("params:dataset")
        ratings = outputs.get("ratings")
        if ratings is None:
            return
        source = f"{self._source}/{dataset}" if dataset != "synthetic" else "simulator"
        columns = [c for c in ("user", "item", "rating", "timestamp", "source") if c in ratings]
        logged = table_dataset(ratings[columns], source, str(dataset), self._full_digest_rows)
        mlflow.log_input(logged, context="training")

def _sqlite_database(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (relative to the working directory, as sqlite opens it)."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None

_STORE_LOCK_TIMEOUT_S = 300

class MlflowStoreLockHook:
    """Create the sqlite MLflow store and the experiment under a file lock.

    Two first runs at once (no ``mlflow.db`` yet) would both create the tables and one
    would die in MLflow's migration, or both create the experiment. Before kedro-mlflow
    sets tracking up, this hook does the same set-up holding ``<database>.lock``; the
    other run waits, then finds the store and the experiment made.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: KedroContext) -> None:
        import mlflow
        from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig

        if mlflow.active_run() is not None:
            return  # kedro-mlflow then ignores mlflow.yml and uses that run's store
        context.config_loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        try:
            conf = dict(context.config_loader["mlflow"])
        except MissingConfigException:
            conf = {}
        config = KedroMlflowConfig.model_validate(conf)
        database = _sqlite_database(config.server.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""))
        if database is None:
            return
        if not conf.get("tracking", {}).get("experiment", {}).get("name"):
            config.tracking.experiment.name = __name__.split(".")[0]  # kedro-mlflow's default: the package
        with FileLock(f"{database}.lock", timeout=_STORE_LOCK_TIMEOUT_S):
            config.setup(context)
