"""Hooks around MLflow: the store set up under a file lock, plain parameters for
kedro-mlflow, every saved artifact logged to the run, and the run's name and
command-line tag."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
from filelock import FileLock
from kedro.config import MissingConfigException
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig
from sqlalchemy.engine import make_url

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
        while mlflow.active_run() is not None:
            mlflow.end_run()

def _pipeline_names(run_params: dict[str, Any]) -> list[str]:
    return list(run_params.get("pipeline_names") or ([run_params["pipeline_name"]] if run_params.get("pipeline_name") else []))

def run_command(run_params: dict[str, Any]) -> str:
    """The ``kedro run`` command line of a run (also for one started from Python)."""
    words = ["kedro", "run"]
    pipelines = _pipeline_names(run_params)
    if pipelines:
        words.append(f"--pipelines={','.join(pipelines)}")
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

class MlflowRunLabelHook:
    """Tell MLflow runs apart: the run name says pipeline, dataset, seed and overrides;
    the ``kedro run`` command line is a tag; the ingested ratings are the run's dataset
    input (name, source folder, digest); the experiment is a model-training one."""

    def __init__(self) -> None:
        self._source = "data/01_raw"

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._source = str(Path(context.project_path) / "data" / "01_raw")

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        run = mlflow.active_run()
        if run is None:
            return
        parameters = catalog.load("parameters")
        mlflow.set_tags({"mlflow.runName": run_name(run_params, parameters), "kedro.command": run_command(run_params)})
        mlflow.MlflowClient().set_experiment_tag(run.info.experiment_id, "mlflow.experimentKind", "custom_model_development")

    @hook_impl
    def after_node_run(self, node: Any, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        if node.name != "ingest_ratings" or mlflow.active_run() is None:
            return
        dataset = inputs.get("params:dataset")
        ratings = outputs.get("ratings")
        if ratings is None:
            return
        source = f"{self._source}/{dataset}" if dataset != "synthetic" else "simulator"
        columns = [c for c in ("user", "item", "rating", "timestamp", "source") if c in ratings]
        mlflow.log_input(mlflow.data.from_pandas(ratings[columns], source=source, name=str(dataset)), context="training")

def _sqlite_database(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (relative to the working directory, as sqlite opens it)."""
    if not uri.startswith("sqlite:"):
        return None
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
