"""Runs that do not finish: interrupts, and the journal that lets a later run clear
what a killed one left behind.

Every run writes a journal, ``data/.runs/<save version>.json``, before its first node:
its process (pid, the process's start time, the host), the version folders it may
write and its MLflow run. The run deletes it when it ends, however it ends, once its
folders are kept (success) or removed (failure, interrupt). A journal whose process is
gone is the trace of a run that could not clean up (``kill -9``, power loss, out of
memory): the next run removes its folders and marks its MLflow run FAILED.

A signal that comes once every node has run, while the run is being closed, does not
undo it (``InterruptedWhileClosing``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kedro.io.core import generate_timestamp as kedro_timestamp

if TYPE_CHECKING:
    from mlflow.entities import RunStatus

logger = logging.getLogger(__name__)

JOURNAL_FOLDER = Path("data") / ".runs"
# RunStatus.to_string of FINISHED, FAILED and KILLED: MLflow (seconds to import, and every
# `kedro` command imports this module through cli.py) is imported only where a run is marked.
FINISHED, KILLED = "FINISHED", "KILLED"
_ENDED = {FINISHED, "FAILED", KILLED}


class RunInterrupted(Exception):
    """The run got SIGINT or SIGTERM.

    An ``Exception`` rather than a ``KeyboardInterrupt``, so that Kedro treats it as a
    failed run and calls every ``on_pipeline_error`` hook.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"Run interrupted by {signal.Signals(signum).name}.")

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if it is gone.

    A pid can be reused once its process has ended; the start time tells a new
    process from the one a journal was written by. A zombie counts as gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    state, start_time = fields[0], fields[19]  # fields 3 and 22 of proc_pid_stat(5)
    return None if state in ("Z", "X") else start_time


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # there os.kill(pid, 0) would send CTRL_C_EVENT, not probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunJournal:
    """What one run may leave behind and where its MLflow run is."""

    save_version: str
    pid: int
    start_time: str | None
    host: str
    directories: list[str] = field(default_factory=list)
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None

    @classmethod
    def for_this_process(
        cls, save_version: str, mlflow_tracking_uri: str | None = None, mlflow_run_id: str | None = None
    ) -> RunJournal:
        pid = os.getpid()
        return cls(
            save_version,
            pid,
            process_start_time(pid),
            socket.gethostname(),
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_run_id=mlflow_run_id,
        )

    @classmethod
    def read(cls, path: Path) -> RunJournal:
        return cls(**json.loads(path.read_text()))

    def path(self, folder: Path) -> Path:
        return folder / f"{self.save_version}.json"

    def write(self, folder: Path) -> Path:
        """Write the journal in one step: a kill leaves the old one or the new one."""
        folder.mkdir(parents=True, exist_ok=True)
        target = self.path(folder)
        partial = target.with_name(f".{target.name}.{self.pid}")
        partial.write_text(json.dumps(asdict(self), indent=1))
        os.replace(partial, target)
        return target

    def add_directory(self, directory: Path) -> bool:
        """Add one version folder; False if it was already listed."""
        name = str(directory.absolute())
        if name in self.directories:
            return False
        self.directories.append(name)
        return True

    def process_alive(self) -> bool:
        """Whether the process that wrote the journal may still be running.

        On another host nothing can be told, so the process is taken as alive.
        """
        if self.host != socket.gethostname():
            return True
        if Path("/proc").is_dir():
            start_time = process_start_time(self.pid)
            return start_time is not None and (self.start_time is None or start_time == self.start_time)
        return _pid_alive(self.pid)

    def remove_directories(self) -> list[Path]:
        """Delete the run's version folders; only folders named after its version."""
        removed = []
        for name in self.directories:
            directory = Path(name)
            if directory.name == self.save_version and directory.is_dir():
                shutil.rmtree(directory)
                removed.append(directory)
        return removed

    def mark_mlflow_run(self, status: RunStatus, *, unless_ended: bool = False) -> bool:
        """Set the status of the run's MLflow run and of its nested runs still RUNNING.

        Args:
            status: FAILED or KILLED.
            unless_ended: leave a run that has ended (FINISHED, FAILED, KILLED) as it is.

        Returns:
            Whether the parent run's status was set.
        """
        if not self.mlflow_run_id or not self.mlflow_tracking_uri:
            return False
        from mlflow.entities import RunStatus
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.mlflow_tracking_uri)
        run = client.get_run(self.mlflow_run_id)
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.mlflow_run_id}' and attributes.status = 'RUNNING'",
        )
        for child in children:
            client.set_terminated(child.info.run_id, RunStatus.to_string(status))
        if unless_ended and run.info.status in _ENDED:
            return False
        client.set_terminated(self.mlflow_run_id, RunStatus.to_string(status))
        return True


def kill_active_mlflow_runs() -> None:
    """End the MLflow runs still active in this process KILLED: mlflow's exit handler
    would end them FINISHED."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run(KILLED)


class InterruptedWhileClosing(RunInterrupted):
    """SIGINT or SIGTERM after the last node, while the run was being closed (the hooks
    after the pipeline, kedro-mlflow ending the MLflow run FINISHED among them).

    Every output is saved by then and the run's journal is gone, so nothing is undone:
    the first such signal waits until the run is closed, a second one stops the
    closing at once (``cut_short``). ``settle`` makes the MLflow run's status and the
    command's exit code agree.

    Args:
        signum: the signal.
        journal: the run's journal (its version and MLflow run), None if it had none.
        cut_short: whether a second signal stopped the closing.
    """

    def __init__(self, signum: int, journal: RunJournal | None, cut_short: bool) -> None:
        super().__init__(signum)
        self.journal, self.cut_short = journal, cut_short

    def settle(self) -> tuple[str, int]:
        """The line to end the command on and its exit code.

        A closing that was let finish: 0, the MLflow run as the closing left it
        (FINISHED). One cut short: its MLflow run, unless it had ended, and its nested
        runs still RUNNING are marked KILLED, and the code is 128 plus the signal's
        number; 0 if the run had already ended FINISHED.
        """
        name = signal.Signals(self.signum).name
        journal = self.journal
        version = journal.save_version if journal is not None else "unknown"
        status = None
        if journal is not None and journal.mlflow_run_id and journal.mlflow_tracking_uri:
            from mlflow.entities import RunStatus
            from mlflow.tracking import MlflowClient

            try:
                status = MlflowClient(journal.mlflow_tracking_uri).get_run(journal.mlflow_run_id).info.status
                if self.cut_short and status not in _ENDED:
                    kill_active_mlflow_runs()
                    journal.mark_mlflow_run(RunStatus.KILLED, unless_ended=True)  # and the nested runs
                    status = KILLED
            except Exception as error:  # noqa: BLE001 - the outputs are kept whatever MLflow says
                logger.warning("The MLflow run of %s could not be read or marked: %s", version, error)
        outputs = f"its outputs (version {version}) are kept"
        tracked = "" if status is None else f" and its MLflow run is {'marked KILLED' if status == KILLED else status}"
        if not self.cut_short or status == FINISHED:
            return f"{name} came after the last node: the run was finished first; {outputs}{tracked}.", 0
        return f"Run interrupted by {name} while it was being closed, after its last node: {outputs}{tracked}.", self.exit_code


def recover_unfinished_runs(folder: Path) -> list[RunJournal]:
    """Clear what every run whose process is gone left behind.

    For each such journal: remove its version folders, mark its MLflow run FAILED
    (unless already FAILED or KILLED), then delete the journal. A journal whose MLflow
    run cannot be reached is kept, to be tried again by the next run.

    Returns:
        The journals cleared.
    """
    if not folder.is_dir():
        return []
    from mlflow.entities import RunStatus

    cleared = []
    for path in sorted(folder.glob("*.json")):
        try:
            journal = RunJournal.read(path)
        except (OSError, ValueError, TypeError) as error:
            logger.warning("Unreadable run journal %s left as it is: %s", path, error)
            continue
        if journal.process_alive():
            continue
        for directory in journal.remove_directories():
            logger.warning("Run %s did not finish: removed its partial artifact %s", journal.save_version, directory)
        try:
            if journal.mark_mlflow_run(RunStatus.FAILED, unless_ended=True):
                logger.warning("Run %s did not finish: MLflow run %s marked FAILED", journal.save_version, journal.mlflow_run_id)
        except Exception as error:  # noqa: BLE001 - an unreachable tracking store must not stop this run
            logger.warning("Run %s did not finish; its MLflow run could not be marked FAILED: %s", journal.save_version, error)
            continue
        path.unlink(missing_ok=True)
        cleared.append(journal)
    if Path("/proc").is_dir():
        for partial in folder.glob(".*.json.*"):  # half-written by a process that is gone
            pid = partial.suffix[1:]
            if pid.isdigit() and process_start_time(int(pid)) is None:
                partial.unlink(missing_ok=True)
    return cleared


# Every process of this machine draws its session id (the save version of every versioned
# artifact of the run) under this lock.
SESSION_ID_LOCK = Path(tempfile.gettempdir()) / "debias_pipeline.session-id.lock"


def unique_timestamp() -> str:
    """Kedro's save-version timestamp (millisecond resolution), never the same for two
    processes of this machine: each draws it under an exclusive lock and holds the lock
    until the clock has passed that millisecond. Two runs started in the same millisecond
    would otherwise share a save version and write into each other's version folders.
    Where ``fcntl`` is missing (Windows) it is Kedro's timestamp as it is."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux
        return kedro_timestamp()
    with open(SESSION_ID_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        stamp = kedro_timestamp()
        while kedro_timestamp() == stamp:
            time.sleep(0.0002)
        return stamp


def use_unique_session_ids() -> None:
    """Make ``KedroSession.create`` draw its session id from ``unique_timestamp`` (it
    looks ``generate_timestamp`` up in its module at every call); ``settings`` calls it."""
    import kedro.framework.session.session as session_module

    session_module.generate_timestamp = unique_timestamp
