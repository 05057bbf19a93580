"""Hooks that check every parameter and the runner before the first node runs: each
block against its typed config, every ``--params`` key against what the pipelines
read, what spans blocks (dataset, threshold, protocol, models, tune space), and no
``ParallelRunner``.

The checks reach the models (torch), the tuner (optuna) and the study's nodes: each
imports what it checks when it runs, because settings.py imports this module for every
`kedro` command (`kedro --version` included), which must not pay seconds for them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines as registered_pipelines
from kedro.io import SharedMemoryDataCatalog
from kedro.pipeline import Pipeline

from debias_pipeline.config.params import as_mapping, build_config, closest, lookup

logger = logging.getLogger(__name__)

def _validate_thesis_rows(parameters: dict[str, Any]) -> None:
    from debias_pipeline.models.registry import model_block
    from debias_pipeline.pipelines.reproduce_thesis.nodes import candidate_blocks, thesis_config

    for row in thesis_config(parameters["reproduce_thesis"]).rows:
        for _, block in candidate_blocks(row, parameters):
            checked = model_block(block, f"reproduce_thesis row '{row.label}'")
            if getattr(checked.config, "pretrain", False):
                raise ValueError(
                    f"reproduce_thesis row '{row.label}': {checked.name} with pretrain: true starts from the GMF and "
                    f"MLP that only its own pipeline (train_{checked.name}) trains; set pretrain: false in the row"
                )

def _validate_pretraining(parameters: dict[str, Any], used: set[str]) -> None:
    """NeuMF with ``pretrain`` has the sizes of the GMF and MLP it starts from."""
    if not {"neumf.model", "gmf.model", "mlp.model"} <= used:
        return
    from debias_pipeline.models.neumf import check_pretrained_sizes
    from debias_pipeline.models.registry import model_block

    configs = {name: model_block(lookup(parameters, f"{name}.model"), f"{name}.model").config for name in ("neumf", "gmf", "mlp")}
    check_pretrained_sizes(configs["neumf"], configs["gmf"], configs["mlp"])

def _flat(params: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted key -> value (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in (params if isinstance(params, dict) else {}).items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat

def catalog_runtime_parameters(conf_source: str | Path) -> set[str]:
    """The runtime parameters the catalog reads (``${runtime_params:custom.items, ...}``)."""
    names: set[str] = set()
    for path in Path(conf_source).glob("*/catalog*.yml"):
        names.update(re.findall(r"\$\{runtime_params:\s*([A-Za-z0-9_.]+)", path.read_text()))
    return names

def check_runtime_parameters(
    runtime: dict[str, Any] | None, parameters: dict[str, Any], pipelines: Iterable[Pipeline], catalog_reads: set[str]
) -> None:
    """Refuse a ``--params`` key that no pipeline of the project reads, naming the
    closest valid one.

    A key is read when it is a ``params:`` input of a node of one of ``pipelines`` or
    lies under one (the blocks themselves forbid unknown keys), or when the catalog
    reads it.

    Raises:
        ValueError: Naming the key and the closest valid name.
    """
    read = {name[len("params:") :] for pipeline in pipelines for name in pipeline.inputs() if name.startswith("params:")}
    read |= catalog_reads
    for key in _flat(runtime):
        if any(key == name or key.startswith(f"{name}.") or name.startswith(f"{key}.") for name in read):
            continue
        valid = sorted({leaf for name in read for leaf in _flat(_lookup_or_none(parameters, name), f"{name}.")} | read)
        raise ValueError(
            f"parameter '{key}' (from --params) is not read by any pipeline{closest(key, valid)}; "
            f"the parameter blocks: {', '.join(sorted({name.split('.')[0] for name in read}))}"
        )

def _lookup_or_none(parameters: dict[str, Any], dotted: str) -> Any:
    try:
        return as_mapping(lookup(parameters, dotted))
    except ValueError:
        return None

def validate_parameters(parameters: dict[str, Any], pipeline: Pipeline) -> None:
    """The checks that span several parameters, before any node runs.

    Each block (``evaluation``, ``split``, ``<namespace>.model``, ...) has already been
    checked on its own by Kedro's parameter validation (the ``Params`` type hints of
    the nodes); here: the dataset name, seed and device, the threshold and protocol
    against the dataset, every model against the protocol, the study's rows.

    Raises:
        ValueError: Naming the first bad parameter.
    """
    from debias_pipeline.data.processing import resolve_threshold
    from debias_pipeline.data.registry import dataset_spec
    from debias_pipeline.evaluation.protocols import evaluation_setup
    from debias_pipeline.models.registry import check_model_fits_protocol, model_block
    from debias_pipeline.training.device import resolve_device

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
        _validate_thesis_rows(parameters)
    _validate_pretraining(parameters, used)
    if "tune" in used:
        from debias_pipeline.experiments.tuning import TuneConfig, check_space

        check_space(build_config(TuneConfig, parameters.get("tune"), "tune"), parameters)
    for name in sorted(used):
        if name.endswith(".model") or name == "model":
            block = model_block(lookup(parameters, name), name)
            if protocol is not None:
                check_model_fits_protocol(block.model_cls, protocol, name)

class ValidateParametersHook:
    """Stop a run with a clear error before any node: a ``--params`` key nothing reads,
    or parameters that do not fit together (each block is checked by Kedro)."""

    def __init__(self) -> None:
        self._catalog_reads: set[str] = set()

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._catalog_reads = catalog_runtime_parameters(context.config_loader.conf_source)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        parameters = catalog.load("parameters")
        check_runtime_parameters(
            run_params.get("runtime_params"), parameters, registered_pipelines.values(), self._catalog_reads
        )
        validate_parameters(parameters, pipeline)

class RefuseParallelRunnerHook:
    """Stop a ``--runner=ParallelRunner`` run before any node, saying which runner to use."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        # Kedro gives ParallelRunner (and only it) a SharedMemoryDataCatalog.
        if isinstance(catalog, SharedMemoryDataCatalog):
            raise ValueError(
                "ParallelRunner cannot run this project: its nodes hand torch objects to each other in memory "
                "(the compute device, the trained models), which ParallelRunner would have to copy between "
                "processes. Use the default SequentialRunner (leave out --runner) or --runner=ThreadRunner."
            )
