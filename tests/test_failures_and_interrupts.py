"""Runs that do not finish: interrupted, killed, started together, or on a runner the
project cannot use. Each leaves no version of its own behind and says how it ended."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import mlflow
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import ParallelRunner, ThreadRunner

from tests.conftest import KedroProcess
from tests.test_end_to_end import FAST, nested, run_pipeline, versioned_files

pytestmark = pytest.mark.slow

TRAINING = r"Running node: (mf\.)?train_model"
LONG_TRAINING = ("--pipelines=train_mf", "--params=dataset=coat,mf.model.epochs=300,mf.model.patience=300")


def client(project: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def top_level_runs(project: Path) -> list[mlflow.entities.Run]:
    """Every run that is not nested, newest first."""
    tracking = client(project)
    experiment = tracking.get_experiment_by_name("debias_pipeline")
    runs = tracking.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    return [run for run in runs if "mlflow.parentRunId" not in run.data.tags]


def version_folders(project: Path, version: str) -> list[Path]:
    """Every ``data/**/<version>/`` folder."""
    return sorted(p for p in (project / "data").rglob(version) if p.is_dir())


def finished_run(project: Path) -> tuple[str, list[Path]]:
    """A short finished Coat run: its version and its files, which nothing may touch."""
    version = run_pipeline(project, "train_mf", dataset="coat", **{"mf.model.epochs": 2})
    files = versioned_files(project, version)
    assert files
    return version, files


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_removes_its_versions_and_is_marked_killed(
    coat_project: Path, kedro_processes: list[KedroProcess], signum: int, exit_code: int
) -> None:
    earlier, earlier_files = finished_run(coat_project)

    run = KedroProcess(coat_project, *LONG_TRAINING)
    kedro_processes.append(run)
    run.wait_for(TRAINING, timeout=600)
    run.process.send_signal(signum)
    assert run.finish(timeout=300) == exit_code, run.output
    assert run.lines[-1] == f"Run interrupted by {signal.Signals(signum).name}."

    interrupted = top_level_runs(coat_project)[0]
    version = interrupted.data.tags["run_id"]
    assert version != earlier
    assert interrupted.info.status == "KILLED"
    assert version_folders(coat_project, version) == []
    assert not (coat_project / "data" / ".runs").exists() or not any((coat_project / "data" / ".runs").iterdir())
    assert versioned_files(coat_project, earlier) == earlier_files


def slow_closing(project: Path, before_mlflow_ends_the_run: bool) -> None:
    """Make every run of ``project`` take 8 s to close after its last node: a hook that
    prints ``CLOSING`` and sleeps, before or after kedro-mlflow ends the MLflow run (the
    child process imports the project copy's package, so its settings take the hook)."""
    settings = project / "src" / "debias_pipeline" / "settings.py"
    order = "(SlowClosing(), *HOOKS)" if before_mlflow_ends_the_run else "(*HOOKS, SlowClosing())"
    settings.write_text(
        settings.read_text()
        + f"""

import time
from kedro.framework.hooks import hook_impl


class SlowClosing:
    @hook_impl(tryfirst={before_mlflow_ends_the_run})
    def after_pipeline_run(self) -> None:
        print("CLOSING", flush=True)
        time.sleep(8)


HOOKS = {order}
"""
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_a_finished_run_closes_lets_it_finish(
    project_copy: Path, kedro_processes: list[KedroProcess], signum: int
) -> None:
    slow_closing(project_copy, before_mlflow_ends_the_run=True)
    run = KedroProcess(project_copy, "--pipelines=train_mf", "--params=mf.model.epochs=2")
    kedro_processes.append(run)
    run.wait_for("CLOSING", timeout=600)
    run.process.send_signal(signum)
    # Every output was saved: the run is closed first, and says so; code and status agree.
    assert run.finish(timeout=300) == 0, run.output
    finished = top_level_runs(project_copy)[0]
    version = finished.data.tags["run_id"]
    name = signal.Signals(signum).name
    assert run.lines[-1] == (
        f"{name} came after the last node: the run was finished first; "
        f"its outputs (version {version}) are kept and its MLflow run is FINISHED."
    )
    assert finished.info.status == "FINISHED"
    assert (project_copy / "data/08_reporting/mf/metrics.json" / version / "metrics.json").is_file()
    assert not any((project_copy / "data" / ".runs").glob("*.json"))


def test_a_second_interrupt_while_a_finished_run_closes_stops_it_and_keeps_its_outputs(
    project_copy: Path, kedro_processes: list[KedroProcess]
) -> None:
    slow_closing(project_copy, before_mlflow_ends_the_run=True)
    run = KedroProcess(project_copy, "--pipelines=train_mf", "--params=mf.model.epochs=2")
    kedro_processes.append(run)
    run.wait_for("CLOSING", timeout=600)
    run.process.send_signal(signal.SIGINT)
    run.wait_for("again to stop at once", timeout=60)
    time.sleep(1)  # in the closing hook, not in the logging of the first signal
    run.process.send_signal(signal.SIGINT)
    assert run.finish(timeout=300) == 130, run.output
    stopped = top_level_runs(project_copy)[0]
    version = stopped.data.tags["run_id"]
    assert run.lines[-1] == (
        "Run interrupted by SIGINT while it was being closed, after its last node: "
        f"its outputs (version {version}) are kept and its MLflow run is marked KILLED."
    )
    assert stopped.info.status == "KILLED"
    assert (project_copy / "data/08_reporting/mf/metrics.json" / version / "metrics.json").is_file()


def test_killed_run_is_cleared_by_the_next_run(coat_project: Path, kedro_processes: list[KedroProcess]) -> None:
    earlier, earlier_files = finished_run(coat_project)

    run = KedroProcess(coat_project, *LONG_TRAINING)
    kedro_processes.append(run)
    run.wait_for(TRAINING, timeout=600)
    run.process.kill()
    run.finish(timeout=60)
    killed = top_level_runs(coat_project)[0]
    version = killed.data.tags["run_id"]
    # Nothing could react to kill -9: the run's folders and its RUNNING status stay.
    assert killed.info.status == "RUNNING"
    assert version_folders(coat_project, version)

    following = run_pipeline(coat_project, "data_processing", dataset="coat")

    assert client(coat_project).get_run(killed.info.run_id).info.status == "FAILED"
    assert version_folders(coat_project, version) == []
    assert versioned_files(coat_project, earlier) == earlier_files
    assert versioned_files(coat_project, following)


def test_two_first_runs_at_once_both_finish(project_copy: Path, kedro_processes: list[KedroProcess]) -> None:
    assert not (project_copy / "mlflow.db").exists()
    runs = [KedroProcess(project_copy, "--pipelines=train_mf", "--params=mf.model.epochs=2") for _ in range(2)]
    kedro_processes.extend(runs)
    codes = [run.finish(timeout=400) for run in runs]
    assert codes == [0, 0], "\n\n".join(run.output[-3000:] for run in runs)
    assert [run.info.status for run in top_level_runs(project_copy)] == ["FINISHED", "FINISHED"]


def test_parallel_runner_is_refused_before_any_node(project_copy: Path) -> None:
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=nested(FAST)) as session:
        with pytest.raises(ValueError, match=r"ParallelRunner.*SequentialRunner.*ThreadRunner"):
            session.run(pipeline_names=["train_mf"], runner=ParallelRunner())
    assert not any(p.is_file() for p in (project_copy / "data").rglob("*"))


def test_thread_runner_runs(project_copy: Path) -> None:
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=nested(FAST)) as session:
        session.run(pipeline_names=["train_mf"], runner=ThreadRunner())
        version = session.session_id
    assert (project_copy / "data/08_reporting/mf/metrics.json" / version / "metrics.json").is_file()
    assert top_level_runs(project_copy)[0].info.status == "FINISHED"
