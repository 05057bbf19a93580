"""The tune engine: pruning on the validation curve, selection on validation only,
parallel trials on Dask workers without duplicates, resumption from the storage."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from debias_pipeline.config.params import ParameterError
from debias_pipeline.experiments.tuning import Objective, TuneConfig, finished_trials, load_study, optimize
from debias_pipeline.models.contract import EpochRecord
from debias_pipeline.pipelines.tune.nodes import run_study
from debias_pipeline.training.inputs import process_synthetic

CPU = torch.device("cpu")
SYNTHETIC = {"n_users": 30, "n_items": 20, "rank": 2, "train_ratings_per_user": 5.0, "test_items_per_user": 6}
MF = {"name": "mf", "embedding_dim": 8, "epochs": 8, "patience": 3, "lr": 0.05}
SPACE = {"lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}, "embedding_dim": {"type": "categorical", "choices": [4, 8, 16]}}


def config(tmp_path: Path, **changes: Any) -> TuneConfig:
    block = {"model": "mf", "n_trials": 6, "storage": f"sqlite:///{tmp_path / 'optuna.db'}", "spaces": {"mf": SPACE}, **changes}
    return TuneConfig.model_validate(block)


def small_world():
    _, train, evaluators, _ = process_synthetic(SYNTHETIC, {}, {"validation_fraction": 0.3}, {}, 0)
    return train, evaluators


@dataclass
class FakeModel:
    """Fits by replaying a validation curve to ``on_epoch``."""

    curve: list[float]
    history: list[EpochRecord] = field(default_factory=list)

    def fit(self, data: Any, validation: Any = None, on_epoch: Any = None) -> FakeModel:
        for epoch, score in enumerate(self.curve, start=1):
            record = EpochRecord(epoch, 1.0, score)
            self.history.append(record)
            on_epoch(record)
        return self


def test_the_median_pruner_stops_a_curve_below_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tune = config(tmp_path, warmup_evaluations=1)
    study = load_study(tune, "pruning", seed=0)
    for k in range(3):  # three finished trials at 0.5, 0.6, 0.7 at every epoch
        value = 0.5 + 0.1 * k
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 0.01, "embedding_dim": 8},
                distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
                               "embedding_dim": optuna.distributions.CategoricalDistribution([4, 8, 16])},
                value=value,
                intermediate_values={0: value, 1: value, 2: value, 3: value},
            )
        )
    curves = iter([[0.1, 0.1, 0.1, 0.1], [0.9, 0.8, 0.8, 0.8]])  # the others' median at every evaluation: 0.6
    replayed: list[FakeModel] = []

    def fake_build(*args: Any, **kwargs: Any) -> FakeModel:
        replayed.append(FakeModel(next(curves)))
        return replayed[-1]

    monkeypatch.setattr("debias_pipeline.experiments.tuning.build_model", fake_build)
    train, evaluators = small_world()
    objective = Objective(MF, tune.space, train, evaluators.validation, 0, CPU, "mf.model")
    study.optimize(objective, n_trials=2)
    worse, better = study.trials[-2], study.trials[-1]
    # The first evaluation is the warm-up; at the second the first curve (0.1) is below 0.6.
    assert worse.state == optuna.trial.TrialState.PRUNED and sorted(worse.intermediate_values) == [0, 1]
    assert len(replayed[0].history) == 2
    assert better.state == optuna.trial.TrialState.COMPLETE and better.value == 0.9


class _Spy:
    """An evaluator whose metric prefers small (validation) or large (test) embeddings."""

    metric = "ndcg_at_5"

    def __init__(self, prefers_small: bool, calls: list[str], name: str) -> None:
        self.prefers_small, self.calls, self.name = prefers_small, calls, name

    def score(self, model: Any) -> float:
        self.calls.append(self.name)
        d = model.config.embedding_dim
        return 1.0 / d if self.prefers_small else d / 100.0


@dataclass
class _Evaluators:
    validation: Any
    test: Any


def test_the_study_chooses_on_validation_and_never_reads_test(tmp_path: Path) -> None:
    calls: list[str] = []
    train, _ = small_world()
    evaluators = _Evaluators(_Spy(True, calls, "validation"), _Spy(False, calls, "test"))
    space = {"embedding_dim": {"type": "categorical", "choices": [4, 32]}}
    tune = config(tmp_path, n_trials=6, pruner="none", spaces={"mf": space})
    parameters = {"mf": {"model": {**MF, "epochs": 2}}}
    trials, best, summary = run_study(train, evaluators, parameters, tune, "synthetic", 0, CPU)
    assert best == {"mf": {"model": {"embedding_dim": 4}}}  # validation's choice; test would pick 32
    assert set(calls) == {"validation"} and len(trials) == 6
    assert summary["metric"] == "validation_ndcg_at_5" and summary["best_value"] == pytest.approx(0.25)


@pytest.mark.slow
def test_six_trials_on_two_dask_workers_then_a_resumed_study(tmp_path: Path) -> None:
    train, evaluators = small_world()
    tune = config(tmp_path, n_trials=6, workers=2)
    study = optimize(tune, "parallel", MF, train, evaluators.validation, 0, CPU)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and finished_trials(study) == 6
    draws = {tuple(sorted(t.params.items())) for t in trials}
    assert len(draws) == 6  # no two trials drew the same values
    assert {t.number for t in trials} == set(range(6))
    # Rerun: nothing to add; asked for 8, exactly 2 more, numbered on.
    again = optimize(tune, "parallel", MF, train, evaluators.validation, 0, CPU)
    assert len(again.trials) == 6
    more = optimize(tune.model_copy(update={"n_trials": 8, "workers": 1}), "parallel", MF, train, evaluators.validation, 0, CPU)
    assert len(more.trials) == 8 and len({tuple(sorted(t.params.items())) for t in more.trials}) == 8


def test_a_space_for_another_model_and_a_bad_dimension_are_named(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="model 'lightgcn' has no search space; spaces are declared for: mf"):
        config(tmp_path, model="lightgcn")
    with pytest.raises(ParameterError, match=r"log-scale dimension needs low > 0"):
        config(tmp_path, spaces={"mf": {"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}})


def test_a_combination_the_model_refuses_is_pruned_not_counted(tmp_path: Path) -> None:
    train, evaluators = small_world()
    space = {"lr": {"type": "float", "low": -1.0, "high": -0.5}}  # lr must be > 0
    tune = config(tmp_path, n_trials=1, spaces={"mf": space})
    study = load_study(tune, "refused", seed=0)
    study.optimize(Objective(MF, tune.space, train, evaluators.validation, 0, CPU, "mf.model"), n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert np.isnan(study.trials[0].value or np.nan)


def test_the_space_is_checked_against_the_model_before_any_trial(tmp_path: Path) -> None:
    from debias_pipeline.framework.validation import validate_parameters
    from debias_pipeline.pipeline_registry import register_pipelines
    from tests.test_parameter_validation import project_parameters

    parameters = project_parameters()
    validate_parameters(parameters, register_pipelines()["tune"])
    parameters["tune"]["spaces"]["mf"]["embeding_dim"] = {"type": "int", "low": 4, "high": 8}
    with pytest.raises(ValueError, match=r"'tune\.spaces\.mf\.embeding_dim' = 4 does not fit the model"):
        validate_parameters({**parameters, "tune": {**parameters["tune"], "model": "mf"}}, register_pipelines()["tune"])
    spaces = {**parameters["tune"]["spaces"], "nosuch": {"lr": {"type": "float", "low": 0.1, "high": 0.2}}}
    with pytest.raises(ValueError, match=r"'tune\.model' is 'nosuch', which has no model block 'nosuch\.model'"):
        validate_parameters({**parameters, "tune": {**parameters["tune"], "model": "nosuch", "spaces": spaces}}, register_pipelines()["tune"])


_DYING_WORKER = """
import sys, time, optuna
from debias_pipeline.experiments.tuning import TuneConfig, load_study
config = TuneConfig.model_validate({storage!r})
study = load_study(config, "dying", seed=0)

def objective(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    print("started", flush=True)
    time.sleep(600)  # killed long before
    return 0.0

study.optimize(objective, n_trials=1)
"""


@pytest.mark.slow
def test_a_worker_killed_in_a_trial_leaves_the_study_consistent_and_a_rerun_completes_it(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    tune = config(tmp_path, n_trials=2, heartbeat_seconds=1, grace_seconds=2)
    worker = subprocess.Popen(
        [sys.executable, "-c", _DYING_WORKER.format(storage=tune.model_dump(mode="json"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout.readline().strip() == "started"
    time.sleep(1.5)  # a heartbeat or two
    worker.kill()
    worker.wait()
    study = load_study(tune, "dying", seed=0)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]  # dead, not yet known
    time.sleep(2.5)  # past the grace period
    train, evaluators = small_world()
    done = optimize(tune, "dying", MF, train, evaluators.validation, 0, CPU)
    states = [t.state for t in done.trials]
    # The dead trial is failed and not counted; its retry and the other trial finish.
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert finished_trials(done) == 2 and len(states) == 3
    retried = [t for t in done.trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert retried and retried[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


RUNNING, FAIL, WAITING = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING
SHORT = {**MF, "epochs": 2}


def states(study: optuna.Study) -> list[optuna.trial.TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


@dataclass
class KillsItsWorkerOnce:
    """A validation that SIGKILLs the process scoring it the first time anything is
    scored (a worker dying in a trial: out of memory, a lost machine), then scores 0.5.
    At module level so that the Dask workers can unpickle it."""

    marker: str
    metric: str = "ndcg_at_5"

    def score(self, model: Any) -> float:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return 0.5
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


@dataclass
class Hangs:
    """A validation that says which process scores (a file named by its pid) and then
    sleeps far longer than any test waits."""

    folder: str
    metric: str = "ndcg_at_5"

    def score(self, model: Any) -> float:
        (Path(self.folder) / str(os.getpid())).touch()
        time.sleep(300)
        return 0.5


@pytest.mark.slow
def test_a_trial_whose_dask_worker_is_killed_is_failed_and_retried(tmp_path: Path) -> None:
    train, _ = small_world()
    tune = config(tmp_path, n_trials=2, workers=2, heartbeat_seconds=1, grace_seconds=2)
    study = optimize(tune, "killed", SHORT, train, KillsItsWorkerOnce(str(tmp_path / "killed")), 0, CPU)
    trials = study.get_trials(deepcopy=False)
    # The dead trial is failed, not left RUNNING; its values are tried again; two finish.
    assert RUNNING not in states(study) and states(study).count(FAIL) == 1, states(study)
    assert finished_trials(study) == 2 and len(trials) == 3
    dead = next(t for t in trials if t.state == FAIL)
    retry = next(t for t in trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == dead.number)
    assert retry.state in FINISHED_STATES and retry.params == dead.params


FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.mark.slow
def test_a_rerun_fails_a_dead_trial_even_with_no_trial_missing(tmp_path: Path) -> None:
    import subprocess
    import sys

    tune = config(tmp_path, n_trials=1, heartbeat_seconds=1, grace_seconds=2)
    study = load_study(tune, "dying", seed=0)
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.01}, distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}, value=0.5
        )
    )
    worker = subprocess.Popen([sys.executable, "-c", _DYING_WORKER.format(storage=tune.model_dump(mode="json"))], stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "started"
    time.sleep(1.5)
    worker.kill()
    worker.wait()
    time.sleep(2.5)  # past the grace period
    train, evaluators = small_world()
    done = optimize(tune, "dying", MF, train, evaluators.validation, 0, CPU)  # the study already holds its 1 trial
    # Failed, and its values wait for the next trial the study runs.
    assert states(done) == [optuna.trial.TrialState.COMPLETE, FAIL, WAITING]


def test_an_interrupt_while_a_trial_is_prepared_leaves_no_running_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, evaluators = small_world()
    tune = config(tmp_path, n_trials=3)
    prepared = optuna.samplers.TPESampler.before_trial
    calls = []

    def interrupted_the_second_time(self: Any, study: optuna.Study, trial: Any) -> None:
        calls.append(trial.number)
        if len(calls) == 2:  # Ctrl-C once the trial exists, before it runs
            raise KeyboardInterrupt
        prepared(self, study, trial)

    monkeypatch.setattr(optuna.samplers.TPESampler, "before_trial", interrupted_the_second_time)
    with pytest.raises(KeyboardInterrupt):
        optimize(tune, "interrupted", SHORT, train, evaluators.validation, 0, CPU)
    study = load_study(tune, "interrupted", seed=0)
    assert len(states(study)) == 2 and states(study)[1] == FAIL


@pytest.mark.slow
def test_an_interrupt_while_trials_run_on_dask_workers_leaves_no_running_trial(tmp_path: Path) -> None:
    train, _ = small_world()
    tune = config(tmp_path, n_trials=2, workers=2)
    started = tmp_path / "started"
    started.mkdir()

    def interrupt_once_both_trials_run() -> None:
        deadline = time.monotonic() + 180
        while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: KeyboardInterrupt in the main thread

    threading.Thread(target=interrupt_once_both_trials_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        optimize(tune, "interrupted", SHORT, train, Hangs(str(started)), 0, CPU)
    assert len(list(started.iterdir())) == 2
    assert states(load_study(tune, "interrupted", seed=0)) == [FAIL, FAIL]


@pytest.mark.slow
def test_a_study_shared_on_postgresql_by_two_worker_processes(tmp_path: Path) -> None:
    import os
    import uuid

    from tests.conftest import missing_data

    url = os.environ.get("DEBIAS_POSTGRES_URL")
    if not url:
        missing_data("no PostgreSQL server (DEBIAS_POSTGRES_URL is not set)", "DEBIAS_REQUIRE_POSTGRES")
    name = f"shared-{uuid.uuid4().hex[:8]}"
    train, evaluators = small_world()
    tune = config(tmp_path, storage=url, n_trials=6, workers=2)
    study = optimize(tune, name, MF, train, evaluators.validation, 0, CPU)
    assert len(study.trials) == 6 and len({tuple(sorted(t.params.items())) for t in study.trials}) == 6
    # Another machine joins the same study: it sees the 6 trials and adds 2.
    other = optimize(tune.model_copy(update={"n_trials": 8}), name, MF, train, evaluators.validation, 1, CPU)
    assert len(other.trials) == 8 and finished_trials(other) == 8
    optuna.delete_study(study_name=name, storage=url)


@pytest.mark.slow
def test_the_tune_pipeline_logs_trials_as_nested_runs_and_saves_the_best_values(project_copy: Path) -> None:
    import mlflow
    import yaml

    from tests.test_end_to_end import latest_run, run_pipeline, versioned_files

    storage = f"sqlite:///{project_copy / 'optuna.db'}"
    version = run_pipeline(
        project_copy, "tune", **{"tune.model": "mf", "tune.n_trials": 3, "tune.storage": storage, "mf.model.epochs": 5}
    )
    files = {p.name: p for p in versioned_files(project_copy, version)}
    assert {"trials.csv", "best_params.yml", "summary.json", "history.png", "importance.png", "parallel.png"} <= set(files)
    best = yaml.safe_load(files["best_params.yml"].read_text())
    assert set(best["mf"]["model"]) == {"lr", "weight_decay", "embedding_dim"}
    parent = latest_run(project_copy)
    children = mlflow.search_runs(
        experiment_names=["debias_pipeline"], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list"
    )
    trial_runs = [run for run in children if "optuna.trial" in run.data.tags]
    assert len(trial_runs) == 3
    assert all("mf.model.lr" in run.data.params for run in trial_runs)
