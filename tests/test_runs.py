"""Run journals: which runs count as gone, and what clearing one removes and marks."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import mlflow
import pytest

from debias_pipeline.framework.runs import (
    RunInterrupted,
    RunJournal,
    process_start_time,
    recover_unfinished_runs,
)

VERSION = "2026-01-02T03.04.05.678Z"
FINISHED = "2026-01-01T00.00.00.000Z"


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def journal_of(pid: int, directories: list[Path], uri: str | None = None, run_id: str | None = None) -> RunJournal:
    journal = RunJournal.for_this_process(VERSION, mlflow_tracking_uri=uri, mlflow_run_id=run_id)
    journal.pid = pid
    if pid != os.getpid():
        journal.start_time = "1"
    for directory in directories:
        journal.add_directory(directory)
    return journal


@pytest.fixture
def versions(tmp_path: Path) -> dict[str, Path]:
    """One artifact with a finished version and the unfinished run's version."""
    base = tmp_path / "data" / "06_models" / "mf" / "model_weights.pkl"
    folders = {name: base / name for name in (FINISHED, VERSION)}
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "model_weights.pkl").write_bytes(b"weights")
    return folders


def test_process_start_time() -> None:
    assert process_start_time(os.getpid()) is not None
    assert process_start_time(dead_pid()) is None


def test_interrupt_exit_codes() -> None:
    assert RunInterrupted(signal.SIGINT).exit_code == 130
    assert RunInterrupted(signal.SIGTERM).exit_code == 143
    assert str(RunInterrupted(signal.SIGTERM)) == "Run interrupted by SIGTERM."


def test_journal_round_trip(tmp_path: Path, versions: dict[str, Path]) -> None:
    journal = journal_of(os.getpid(), [versions[VERSION]])
    assert not journal.add_directory(versions[VERSION])
    path = journal.write(tmp_path / "runs")
    assert path.name == f"{VERSION}.json"
    assert RunJournal.read(path) == journal
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [path.name]


def test_dead_run_is_cleared_and_its_mlflow_run_marked_failed(tmp_path: Path, versions: dict[str, Path]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("runs")
    parent = client.create_run(experiment).info.run_id
    child = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    folder = tmp_path / "runs"
    # The folder of the finished version is listed too: only the run's own version may go.
    path = journal_of(dead_pid(), list(versions.values()), uri, parent).write(folder)

    cleared = recover_unfinished_runs(folder)

    assert [journal.save_version for journal in cleared] == [VERSION]
    assert not versions[VERSION].exists()
    assert (versions[FINISHED] / "model_weights.pkl").read_bytes() == b"weights"
    assert client.get_run(parent).info.status == "FAILED"
    assert client.get_run(child).info.status == "FAILED"
    assert not path.exists()


def test_live_run_is_left_alone(tmp_path: Path, versions: dict[str, Path]) -> None:
    path = journal_of(os.getpid(), [versions[VERSION]]).write(tmp_path / "runs")
    assert recover_unfinished_runs(tmp_path / "runs") == []
    assert versions[VERSION].is_dir() and path.exists()


def test_reused_pid_counts_as_gone(tmp_path: Path, versions: dict[str, Path]) -> None:
    journal = journal_of(os.getpid(), [versions[VERSION]])
    journal.start_time = "1"  # this pid, but a process started at another time
    journal.write(tmp_path / "runs")
    assert len(recover_unfinished_runs(tmp_path / "runs")) == 1
    assert not versions[VERSION].exists()


def test_run_of_another_host_is_left_alone(tmp_path: Path, versions: dict[str, Path]) -> None:
    journal = journal_of(dead_pid(), [versions[VERSION]])
    journal.host = "another-host"
    journal.write(tmp_path / "runs")
    assert recover_unfinished_runs(tmp_path / "runs") == []
    assert versions[VERSION].is_dir()


def test_unreachable_tracking_store_keeps_the_journal(tmp_path: Path, versions: dict[str, Path]) -> None:
    uri = f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}"
    path = journal_of(dead_pid(), [versions[VERSION]], uri, "0" * 32).write(tmp_path / "runs")
    assert recover_unfinished_runs(tmp_path / "runs") == []
    assert not versions[VERSION].exists()
    assert path.exists()  # to be tried again by the next run


def _timestamps(count: int) -> list[str]:
    from debias_pipeline.framework.runs import unique_timestamp

    return [unique_timestamp() for _ in range(count)]


def test_session_ids_are_unique_across_processes() -> None:
    # Four processes drawing at once: without the lock, several would share a millisecond.
    import multiprocessing
    from datetime import datetime

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        stamps = [s for chunk in pool.map(_timestamps, [25] * 4) for s in chunk]
    assert len(set(stamps)) == len(stamps) == 100
    for stamp in stamps:  # Kedro's save-version format, milliseconds
        datetime.strptime(stamp, "%Y-%m-%dT%H.%M.%S.%fZ")


def test_kedro_sessions_draw_unique_ids(project_copy: Path) -> None:
    import kedro.framework.session.session as session_module
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from debias_pipeline.framework.runs import unique_timestamp

    bootstrap_project(project_copy)
    ids = []
    for _ in range(3):
        with KedroSession.create(project_path=project_copy) as session:
            ids.append(session.session_id)
    assert session_module.generate_timestamp is unique_timestamp
    assert len(set(ids)) == 3


@pytest.mark.parametrize("pinned", [True, False])
def test_a_run_reads_the_versions_it_wrote_not_a_newer_runs(tmp_path: Path, pinned: bool) -> None:
    """Another run's newer version of ``split`` appears while this run writes its own:
    with the run's outputs pinned, the next node reads this run's (Kedro alone reads the
    newest, the other run's)."""
    import pickle

    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline, node

    from debias_pipeline.framework.journal import pin_own_versions

    path = tmp_path / "split.pkl"
    config = {
        "split": {"type": "pickle.PickleDataset", "filepath": str(path), "versioned": True},
        "raw": {"type": "pickle.PickleDataset", "filepath": str(tmp_path / "raw.pkl"), "versioned": True},
    }
    catalog = DataCatalog.from_config(config, save_version=VERSION)
    pipeline = Pipeline([node(lambda raw: raw, "raw", "split"), node(lambda split: split, "split", "out")])
    newer = path / "2026-01-02T03.04.05.999Z"  # a session that started later, on the same project
    newer.mkdir(parents=True)
    (newer / "split.pkl").write_bytes(pickle.dumps("the other run's split"))
    if pinned:
        assert pin_own_versions(pipeline, catalog) == ["split"]  # `raw` is read, not written
    catalog.save("split", "this run's split")
    expected = "this run's split" if pinned else "the other run's split"
    assert catalog.load("split") == expected
