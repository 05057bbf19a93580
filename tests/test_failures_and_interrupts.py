"""Runs that do not finish: interrupted, killed, started together, or on a runner the
project cannot use. Each leaves no version of its own behind and says how it ended."""

from __future__ import annotations

import signal
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
