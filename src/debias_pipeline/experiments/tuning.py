"""Hyperparameter search with Optuna over a relational storage, trials run in parallel
on Dask workers (``kedro run --pipelines=tune``).

A trial trains one model block with the trial's values, early-stopped on the
protocol's validation metric, and reports that metric after every validation
evaluation (step k: the k-th evaluation), so the pruner can stop a trial whose curve
falls behind the others' at the same evaluation; its value is the best validation
score. Test metrics are never computed. The study lives in the
storage (``sqlite:///optuna.db`` by default, a PostgreSQL URL to share it between
machines): rerunning the same command resumes it, finished trials counted once, and a
trial whose worker died (its heartbeat stopped) is marked failed and retried.

No trial is left RUNNING by a run that ends: every trial a run starts carries the run's
id (user attribute ``tune_run``, written with the trial), so the run fails its own
trials that a killed Dask worker left behind (after each round) or that an interrupt
or an error stopped (as it ends); the heartbeat covers a process that died with its
driver, and every run first fails the stale trials of earlier ones.
"""

from __future__ import annotations

import copy
import logging
import math
import uuid
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import numpy as np
import optuna
import torch

from debias_pipeline.config.params import ParameterError, Params, require, set_dotted
from debias_pipeline.experiments.parallel import dask_client
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import ModelBlock, build_model, model_block

logger = logging.getLogger(__name__)

# A trial retried after its worker died at most this many times.
MAX_RETRIES = 2
# The user attribute naming the run (one ``optimize`` call) that started a trial.
RUN_ATTR = "tune_run"
RUNNING, FAIL = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL


class Dimension(Params):
    """One hyperparameter of a search space.

    Attributes:
        type: ``float``, ``int`` or ``categorical``.
        low, high: the range (``float``, ``int``).
        log: sample on a log scale (``float``, ``int``).
        step: the grid step of an ``int`` or ``float`` range (``null``: none).
        choices: the values of a ``categorical`` one.
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def check(self) -> None:
        if self.type == "categorical":
            require(bool(self.choices), "a categorical dimension needs choices")
        else:
            require(self.low is not None and self.high is not None, f"a {self.type} dimension needs low and high")
            require(self.low <= self.high, f"low ({self.low}) must not exceed high ({self.high})")
            require(not self.log or self.low > 0, f"a log-scale dimension needs low > 0, got {self.low}")

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.type == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class TuneConfig(Params):
    """The ``tune`` parameter block.

    Attributes:
        model: the namespace whose block ``<model>.model`` is tuned (``lightgcn``).
        n_trials: finished trials (complete or pruned) the study should hold; a rerun
            only adds the missing ones.
        storage: Optuna's storage URL (``sqlite:///optuna.db``, or
            ``postgresql+psycopg2://user:pass@host/db`` to share a study).
        study_name: ``null``: ``<dataset>-<model>``.
        sampler: ``tpe`` or ``random``, seeded by ``seed``.
        pruner: ``median`` (stop a trial below the median of the others at the same
            epoch), ``hyperband`` or ``none``.
        warmup_evaluations: validation evaluations before the median pruner may stop a trial.
        workers: trials run at once on a local Dask cluster of this many processes.
        heartbeat_seconds, grace_seconds: a running trial's heartbeat interval; one
            without a heartbeat for ``grace_seconds`` is marked failed (its worker died)
            and retried (at most twice).
        scheduler: an existing Dask scheduler (``tcp://host:8786``) instead of the local
            cluster; every worker needs the project installed and the storage reachable.
        spaces: per namespace, the search space: hyperparameter -> ``Dimension``
            (dotted names reach nested blocks: ``preference.num_layers``).
    """

    model: str = "lightgcn"
    n_trials: int = 20
    storage: str = "sqlite:///optuna.db"
    study_name: str | None = None
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    warmup_evaluations: int = 2
    workers: int = 1
    heartbeat_seconds: int = 10
    grace_seconds: int = 30
    scheduler: str | None = None
    spaces: dict[str, dict[str, Dimension]] = {}

    def check(self) -> None:
        require(self.n_trials >= 1, f"n_trials must be >= 1, got {self.n_trials}")
        require(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        require(self.heartbeat_seconds >= 1, f"heartbeat_seconds must be >= 1, got {self.heartbeat_seconds}")
        require(
            self.grace_seconds > self.heartbeat_seconds,
            f"grace_seconds ({self.grace_seconds}) must exceed heartbeat_seconds ({self.heartbeat_seconds})",
        )
        require(self.warmup_evaluations >= 0, f"warmup_evaluations must be >= 0, got {self.warmup_evaluations}")
        require(
            self.model in self.spaces,
            f"model {self.model!r} has no search space; spaces are declared for: {', '.join(sorted(self.spaces)) or 'none'}",
        )

    @property
    def space(self) -> dict[str, Dimension]:
        return self.spaces[self.model]


def trial_block(base: ModelBlock | Mapping[str, Any], values: Mapping[str, Any], where: str) -> ModelBlock:
    """The model block ``base`` with a trial's ``values`` set (dotted names), checked."""
    block = copy.deepcopy(base.model_dump() if isinstance(base, Params) else dict(base))
    for name, value in values.items():
        set_dotted(block, name, value)
    return model_block(block, where)


def make_pruner(config: TuneConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=config.warmup_evaluations)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


class RunStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, every trial it starts tagged with the run's id ``run``
    (user attribute ``tune_run``).

    A new trial gets the tag in the transaction that creates it, so that even a trial
    interrupted before its first heartbeat (while the sampler prepares it), which the
    heartbeat never marks stale, can be found and failed by its run; a queued trial (a
    retry) gets it as this run takes it.
    """

    def __init__(self, *args: Any, run: str | None = None, **kwargs: Any) -> None:
        self.run = run
        super().__init__(*args, **kwargs)

    def _create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> optuna.trial.FrozenTrial:
        # Optuna's caching layer creates trials through this method, not create_new_trial.
        if template_trial is None and self.run is not None:
            template_trial = optuna.trial.FrozenTrial(
                number=-1, state=RUNNING, value=None, datetime_start=datetime.now(), datetime_complete=None,
                params={}, distributions={}, user_attrs={RUN_ATTR: self.run}, system_attrs={},
                intermediate_values={}, trial_id=-1,
            )  # fmt: skip
        return super()._create_new_trial(study_id, template_trial)

    def set_trial_state_values(self, trial_id: int, state: optuna.trial.TrialState, values: Any = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state=state, values=values)
        if changed and state == RUNNING and self.run is not None:  # a queued trial taken by this run
            self.set_trial_user_attr(trial_id, RUN_ATTR, self.run)
        return changed


def make_storage(config: TuneConfig, run: str | None = None) -> RunStorage:
    """The RDB storage with heartbeats: a trial whose worker stops beating for
    ``grace_seconds`` is marked failed and re-enqueued (at most ``MAX_RETRIES`` times);
    the trials it starts are tagged with ``run``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RunStorage(
            config.storage,
            run=run,
            heartbeat_interval=config.heartbeat_seconds,
            grace_period=config.grace_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
            engine_kwargs={"connect_args": {"timeout": 60}} if config.storage.startswith("sqlite") else {},
        )


def load_study(config: TuneConfig, name: str, seed: int, stream: int = 0, run: str | None = None) -> optuna.Study:
    """The stored study (created when new), its sampler seeded by ``seed`` and ``stream``:
    each process that samples for the study, and each resumption, gets its own stream,
    so none repeats another's draws. The trials it starts are tagged with ``run``."""
    sampler_seed = int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
    if config.sampler == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=sampler_seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
    return optuna.create_study(
        study_name=name,
        storage=make_storage(config, run),
        direction="maximize",
        sampler=sampler,
        pruner=make_pruner(config),
        load_if_exists=True,
    )


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def fail_run_trials(study: optuna.Study, run: str, retry: bool) -> list[optuna.trial.FrozenTrial]:
    """Mark FAIL the trials of ``run`` still RUNNING, once no process of the run runs
    them any more; with ``retry``, each is handed to the storage's stale-trial callback,
    as a heartbeat that stopped would be (its values queued to run again, at most
    ``MAX_RETRIES`` times). Returns the trials failed.

    Through ``study._storage``, as Optuna's own ``fail_stale_trials``: the study's
    caching layer must see the change.
    """
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(RUNNING,)):
        if trial.user_attrs.get(RUN_ATTR) != run:
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, state=FAIL):
                failed.append(storage.get_trial(trial._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:  # it ended meanwhile
            continue
    callback = storage.get_heartbeat_stale_trial_callback() if retry else None
    if callback is not None:
        for trial in failed:
            callback(study, copy.deepcopy(trial))
    return failed


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's ``fail_stale_trials``: the RUNNING trials whose heartbeat is older than
    the grace period are failed and retried. Optuna checks only as it starts a trial,
    so a rerun that needs no trial calls it itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class Objective:
    """One trial: the base block with the trial's values, fitted with early stopping on
    the validation metric, each evaluation reported to the pruner.

    Args:
        base: the tuned namespace's model block.
        space: its search space.
        data: the train data; validation: the validation evaluator (its ``score`` and
            ``metric``); nothing of the test split is passed in.
        seed: the initialization seed of every trial.
        device: the training device.
        where: the block's name, for errors.
        on_trial: called with (trial, block, model) after a trial (MLflow logging).
    """

    def __init__(
        self,
        base: ModelBlock | Mapping[str, Any],
        space: Mapping[str, Dimension],
        data: TrainData,
        validation: Any,
        seed: int,
        device: torch.device,
        where: str,
        on_trial: Callable[[optuna.Trial, ModelBlock, Any], None] | None = None,
    ) -> None:
        self.base, self.space, self.data, self.validation = base, dict(space), data, validation
        self.seed, self.device, self.where, self.on_trial = seed, device, where, on_trial

    def __call__(self, trial: optuna.Trial) -> float:
        values = {name: dimension.suggest(trial, name) for name, dimension in self.space.items()}
        try:
            block = trial_block(self.base, values, self.where)
        except ParameterError as error:  # a combination the model refuses: not a result
            raise optuna.TrialPruned(f"invalid combination: {error}") from None
        model = build_model(block, self.where, seed=self.seed, device=self.device)
        evaluations = 0

        def report(record: Any) -> None:
            nonlocal evaluations
            if record.validation_score is None:
                return
            # Step k is the k-th validation evaluation (0-based): the pruner compares trials
            # at the same evaluation and ``warmup_evaluations`` counts evaluations.
            trial.report(record.validation_score, step=evaluations)
            evaluations += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")

        try:
            model.fit(self.data, validation=self.validation, on_epoch=report)
        finally:
            if self.on_trial is not None:
                self.on_trial(trial, block, model)
        scores = [r.validation_score for r in model.history if r.validation_score is not None]
        if not scores or not all(math.isfinite(s) for s in scores):
            raise optuna.TrialPruned("no finite validation score")
        return max(scores)


def run_trials(
    storage: str,
    study_name: str,
    config: TuneConfig,
    base: Mapping[str, Any],
    data: TrainData,
    validation: Any,
    seed: int,
    device: str,
    n_trials: int,
    stream: int = 0,
    run: str | None = None,
) -> int:
    """Run ``n_trials`` trials of the stored study in this process (a Dask task, or the
    driver itself), sampling from ``stream``, each tagged with ``run``; returns how
    many ran."""
    if device == "cpu" and config.workers > 1:  # one process per core
        torch.set_num_threads(1)
    study = load_study(config.model_copy(update={"storage": storage}), study_name, seed, stream, run)
    objective = Objective(base, config.space, data, validation, seed, torch.device(device), f"{config.model}.model")
    study.optimize(objective, n_trials=n_trials, catch=())
    return n_trials


def optimize(
    config: TuneConfig,
    study_name: str,
    base: Mapping[str, Any],
    data: TrainData,
    validation: Any,
    seed: int,
    device: torch.device,
) -> optuna.Study:
    """Bring the study to ``n_trials`` finished trials: in this process with one worker,
    else as Dask tasks of one trial each on ``workers`` local processes (or the cluster
    of ``scheduler``), in rounds until enough trials have finished (a trial that failed
    or was retried does not count).

    First the stale trials of earlier runs are failed (and retried), even when no trial
    is missing. If the run is interrupted (``KeyboardInterrupt``, or the project's
    ``RunInterrupted``) or fails, its trials still RUNNING are failed (not retried)
    before the exception goes on: those of this process and of its local workers, which
    are stopped by then. A remote cluster's workers finish the trials they run (Dask
    cannot stop a running task), and those trials record their own end.
    """
    run = uuid.uuid4().hex
    study = load_study(config, study_name, seed, run=run)
    fail_stale_trials(study)
    args = (config.storage, study_name, config, dict(base), data, validation, seed, device.type)
    try:
        if config.workers == 1 and config.scheduler is None:
            while (missing := config.n_trials - finished_trials(study)) > 0:
                run_trials(*args, n_trials=missing, stream=len(study.trials), run=run)
        else:
            _optimize_on_dask(study, config, args, run)
    except BaseException:
        if config.scheduler is None:
            for trial in fail_run_trials(study, run, retry=False):
                logger.warning("tune: trial %d was stopped; marked failed", trial.number)
        raise
    return study


def _optimize_on_dask(study: optuna.Study, config: TuneConfig, args: tuple[Any, ...], run: str) -> None:
    """``optimize``'s rounds of one-trial Dask tasks.

    After a round every task of it has ended, so a trial of ``run`` still RUNNING lost
    its process (a worker killed: out of memory, a lost machine): it is failed and its
    values queued to run again at once, without waiting for the heartbeat's grace
    period. The local cluster does not re-run the task of a dead worker itself, which
    would start a fresh trial and leave the dead one's retry queued. The run gives up
    when a round finishes no trial and a trial raised, or after ``MAX_RETRIES`` + 1
    such rounds of lost workers.
    """
    from dask.distributed import wait

    stalled = 0
    with dask_client(config.workers, config.scheduler, rerun_lost_tasks=False) as client:
        shared = client.scatter(list(args), broadcast=True)
        while (missing := config.n_trials - finished_trials(study)) > 0:
            start = len(study.trials)
            futures = [client.submit(run_trials, *shared, n_trials=1, stream=start + k, run=run, pure=False) for k in range(missing)]
            wait(futures)
            lost = fail_run_trials(study, run, retry=True)
            for trial in lost:
                logger.warning("tune: trial %d lost its worker; marked failed, its values queued again", trial.number)
            errors = [future.exception() for future in futures if future.status == "error"]
            stalled = 0 if config.n_trials - finished_trials(study) < missing else stalled + 1
            if stalled and ((errors and not lost) or stalled > MAX_RETRIES):
                first = errors[0] if errors else None
                raise RuntimeError(f"tune: no trial of the last {stalled} round(s) finished; the first error: {first!r}") from first
            for error in errors:
                logger.warning("a trial task failed and will be retried: %r", error)


def check_space(config: TuneConfig, parameters: Mapping[str, Any]) -> None:
    """Before any trial: the tuned block exists, and every dimension of its space names a
    hyperparameter of that model, at both ends of its range.

    Raises:
        ValueError: Naming ``tune.model`` or the ``tune.spaces`` entry.
    """
    block = parameters.get(config.model, {}).get("model") if isinstance(parameters.get(config.model), Mapping) else None
    if block is None:
        raise ValueError(f"parameter 'tune.model' is {config.model!r}, which has no model block '{config.model}.model'")
    for name, dimension in config.space.items():
        ends = list(dimension.choices) if dimension.type == "categorical" else [dimension.low, dimension.high]
        for value in ends:
            if dimension.type == "int":
                value = int(value)
            try:
                trial_block(block, {name: value}, f"{config.model}.model")
            except ParameterError as error:
                raise ValueError(f"parameter 'tune.spaces.{config.model}.{name}' = {value!r} does not fit the model: {error}") from None
