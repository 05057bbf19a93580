"""Project hooks: check every parameter and the runner before a node runs, set the
MLflow store up safely, log every saved artifact to the MLflow run, and leave nothing
half-written behind a run that fails, is interrupted or is killed."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
from filelock import FileLock
from kedro.config import MissingConfigException
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines as registered_pipelines
from kedro.io import AbstractVersionedDataset, SharedMemoryDataCatalog, Version
from kedro.pipeline import Pipeline
from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig
from mlflow.entities import RunStatus
from sqlalchemy.engine import make_url

from debias_pipeline.config import as_mapping, build_config, closest, lookup
from debias_pipeline.datasets.registry import dataset_spec
from debias_pipeline.device import resolve_device
from debias_pipeline.models.neumf import check_pretrained_sizes
from debias_pipeline.models.registry import model_block
from debias_pipeline.pipelines.data_processing.nodes import resolve_threshold
from debias_pipeline.pipelines.reproduce_thesis.nodes import candidate_blocks, thesis_config
from debias_pipeline.protocols import check_model_fits_protocol, evaluation_setup
from debias_pipeline.tuning import TuneConfig, check_space
from debias_pipeline.runs import JOURNAL_FOLDER, RunInterrupted, RunJournal, recover_unfinished_runs

logger = logging.getLogger(__name__)

def _validate_thesis_rows(parameters: dict[str, Any]) -> None:
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


def pin_own_versions(pipeline: Pipeline, catalog: Any) -> list[str]:
    """Make every versioned dataset the run writes load the version the run wrote.

    Kedro loads an unpinned versioned dataset from its newest version folder, so when
    two runs share a project (two ``kedro run`` at once, or hosts on one file system),
    a node could read the other run's ``interaction_split`` if that run's session is
    newer. A dataset the pipeline itself produces is pinned to this run's save version;
    the datasets it only reads keep the newest version, or the one given with
    ``--load-versions``. Returns the names pinned.
    """
    pinned = []
    for name in sorted(pipeline.all_outputs()):
        dataset = _versioned(catalog, name)
        if dataset is None or dataset._version.load is not None or dataset._version.save is None:
            continue
        dataset._version = Version(dataset._version.save, dataset._version.save)
        dataset._clear_version_cache()
        pinned.append(name)
    return pinned


class PinOwnVersionsHook:
    """``pin_own_versions`` before every run."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        pin_own_versions(pipeline, catalog)


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


class RunJournalHook:
    """Leave no version of an unfinished run behind, however the run ends.

    Before the first node: clear what runs killed earlier left behind, write this
    run's journal (``debias_pipeline.runs``), and turn SIGINT and SIGTERM into
    ``RunInterrupted``, so an interrupted run ends like a failed one. On failure or
    interrupt every versioned folder of the run (``<filepath>/<save_version>/``, the
    save version being the session id) is removed and its MLflow run is marked FAILED,
    or KILLED when interrupted. The journal goes when the run ends.
    """

    def __init__(self) -> None:
        self._journal: RunJournal | None = None
        self._folder: Path | None = None
        self._catalog: Any = None
        self._lock = threading.Lock()
        self._previous_handlers: dict[int, Any] = {}
        self._interrupted: int | None = None

    @hook_impl(trylast=True)  # after kedro-mlflow has started the MLflow run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        self._folder = Path(run_params["project_path"]) / JOURNAL_FOLDER
        recover_unfinished_runs(self._folder)
        save_version = run_params["run_id"]
        active = mlflow.active_run()
        journal = RunJournal.for_this_process(
            save_version,
            mlflow_tracking_uri=mlflow.get_tracking_uri() if active else None,
            mlflow_run_id=active.info.run_id if active else None,
        )
        for name in sorted(pipeline.all_outputs()):
            dataset = _versioned(catalog, name)
            if dataset is not None:
                journal.add_directory(Path(str(dataset._filepath)) / save_version)
        journal.write(self._folder)
        self._journal, self._catalog, self._interrupted = journal, catalog, None
        self._install_signal_handlers()

    @hook_impl
    def before_node_run(self) -> None:
        if self._interrupted is not None:  # the first RunInterrupted was swallowed by a node
            raise RunInterrupted(self._interrupted)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        if self._journal is None or self._folder is None:
            return
        dataset = _versioned(self._catalog, dataset_name)
        if dataset is None:
            return
        with self._lock:
            if self._journal.add_directory(Path(str(dataset._filepath)) / self._journal.save_version):
                self._journal.write(self._folder)

    @hook_impl(tryfirst=True)  # the journal goes before kedro-mlflow ends the run FINISHED
    def after_pipeline_run(self) -> None:
        self._restore_signal_handlers()
        self._forget_journal()

    @hook_impl(trylast=True)  # after kedro-mlflow has ended the run FAILED
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], catalog: Any) -> None:
        self._restore_signal_handlers()
        ended = "Run interrupted" if isinstance(error, RunInterrupted) else "Run failed"
        save_version = run_params.get("run_id")
        if save_version:
            for directory in _version_directories(catalog, save_version):
                if directory.is_dir():
                    shutil.rmtree(directory)
                    logger.warning("%s: removed its partial artifact %s", ended, directory)
        if self._journal is not None:
            for directory in self._journal.remove_directories():
                logger.warning("%s: removed its partial artifact %s", ended, directory)
            if isinstance(error, RunInterrupted):
                try:
                    if self._journal.mark_mlflow_run(RunStatus.KILLED):
                        logger.warning("%s: its MLflow run %s marked KILLED", ended, self._journal.mlflow_run_id)
                except Exception as mlflow_error:  # noqa: BLE001 - the run's files are gone; say so and go on
                    logger.warning("%s: its MLflow run could not be marked KILLED: %s", ended, mlflow_error)
        self._forget_journal()

    def _forget_journal(self) -> None:
        if self._journal is not None and self._folder is not None:
            self._journal.path(self._folder).unlink(missing_ok=True)
        self._journal, self._interrupted = None, None

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python lets only the main thread set handlers
        for signum in _INTERRUPTS:
            self._previous_handlers[signum] = signal.signal(signum, self._interrupt)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _interrupt(self, signum: int, frame: Any) -> None:
        # A second signal ends the process the usual way; the journal then lets the
        # next run clean up.
        self._restore_signal_handlers()
        self._interrupted = signum
        raise RunInterrupted(signum)


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
