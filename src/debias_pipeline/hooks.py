"""Project hooks: check every parameter before a node runs, log every saved
artifact to the MLflow run, and leave nothing half-written behind a failed run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset
from kedro.pipeline import Pipeline

from debias_pipeline.config import build_config
from debias_pipeline.datasets.registry import dataset_spec
from debias_pipeline.device import resolve_device
from debias_pipeline.models.registry import model_class
from debias_pipeline.pipelines.data_processing.nodes import BinarizationConfig, PreprocessingConfig, resolve_threshold
from debias_pipeline.pipelines.reproduce_thesis.nodes import candidate_blocks, thesis_config
from debias_pipeline.protocols import SplitConfig, check_model_fits_protocol, evaluation_setup
from debias_pipeline.simulation import SyntheticConfig

logger = logging.getLogger(__name__)

_BLOCKS: dict[str, type] = {
    "binarization": BinarizationConfig,
    "preprocessing": PreprocessingConfig,
    "split": SplitConfig,
    "synthetic": SyntheticConfig,
}


def _lookup(parameters: dict[str, Any], dotted: str) -> Any:
    value: Any = parameters
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"missing parameter '{dotted}'")
        value = value[part]
    return value


def _validate_model_block(block: Any, where: str, protocol: str | None = None) -> None:
    if not isinstance(block, dict) or "name" not in block:
        raise ValueError(f"parameter '{where}.name' is missing")
    cls = model_class(block["name"])
    build_config(cls.Config, {k: v for k, v in block.items() if k != "name"}, where)
    if protocol is not None:
        check_model_fits_protocol(cls, protocol, where)


def _validate_thesis_rows(parameters: dict[str, Any]) -> None:
    for row in thesis_config(parameters["reproduce_thesis"]).rows:
        for _, block in candidate_blocks(row, parameters):
            _validate_model_block(block, f"reproduce_thesis row '{row.label}'")


def validate_parameters(parameters: dict[str, Any], pipeline: Pipeline) -> None:
    """Check every parameter the pipeline's nodes read, before any of them runs.

    Raises:
        ValueError: Naming the first bad parameter.
    """
    used = {name[len("params:") :] for name in pipeline.inputs() if name.startswith("params:")}
    protocol = None
    if "dataset" in used:
        dataset_spec(parameters.get("dataset"))
        if "binarization" in used:
            resolve_threshold(parameters.get("binarization"), parameters["dataset"])
        if "evaluation" in used:
            protocol = evaluation_setup(parameters.get("evaluation"), parameters["dataset"]).protocol.name
    if "seed" in used:
        seed = parameters.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"parameter 'seed' must be a non-negative integer, got {seed!r}")
    if "device" in used:
        resolve_device(parameters.get("device"))
    if "parameters" in pipeline.inputs() and "reproduce_thesis" in parameters:
        used.add("reproduce_thesis")
    for name in sorted(used):
        if name == "reproduce_thesis":
            _validate_thesis_rows(parameters)
        elif name in _BLOCKS:
            build_config(_BLOCKS[name], _lookup(parameters, name), name)
        elif name.endswith(".model") or name == "model":
            _validate_model_block(_lookup(parameters, name), name, protocol)


class ValidateParametersHook:
    """Stop a run with a clear error before any node, on any bad parameter."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        validate_parameters(catalog.load("parameters"), pipeline)


def _versioned(catalog: Any, name: str) -> AbstractVersionedDataset | None:
    dataset = catalog.get(name)
    if isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None:
        return dataset
    return None


def _version_directories(catalog: Any, save_version: str) -> list[Path]:
    directories = []
    for name in catalog.keys():
        dataset = _versioned(catalog, name)
        if dataset is not None:
            directories.append(Path(str(dataset._filepath)) / save_version)
    return directories


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


class CleanupFailedRunHook:
    """Delete the versioned artifacts a failed run wrote, so none is half-written.

    Every versioned dataset of a run saves under ``<filepath>/<save_version>/``, the
    save version being the session id; on error those folders are removed.
    """

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        save_version = run_params.get("run_id")
        if not save_version:
            return
        for directory in _version_directories(catalog, save_version):
            if directory.is_dir():
                shutil.rmtree(directory)
                logger.warning("Run failed: removed its partial artifact %s", directory)
