"""Hooks that leave nothing half-written: every run reads and writes only its own
versions (``PinOwnVersionsHook``), and a journal written before the first node lets a
failed, interrupted or killed run's versions be removed (``RunJournalHook``, see
``runs``)."""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, Version
from kedro.pipeline import Pipeline

from debias_pipeline.framework.runs import (
    JOURNAL_FOLDER,
    InterruptedWhileClosing,
    RunInterrupted,
    RunJournal,
    recover_unfinished_runs,
)

logger = logging.getLogger(__name__)

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

class RunJournalHook:
    """Leave no version of an unfinished run behind, however the run ends.

    Before the first node: clear what runs killed earlier left behind, write this
    run's journal (``debias_pipeline.framework.runs``), and turn SIGINT and SIGTERM into
    ``RunInterrupted``, so an interrupted run ends like a failed one. On failure or
    interrupt every versioned folder of the run (``<filepath>/<save_version>/``, the
    save version being the session id) is removed and its MLflow run is marked FAILED,
    or KILLED when interrupted. The journal goes when the run ends. After the last node
    the run is closed with both signals held (``after_pipeline_run``).
    """

    def __init__(self) -> None:
        self._journal: RunJournal | None = None
        self._folder: Path | None = None
        self._catalog: Any = None
        self._lock = threading.Lock()
        self._previous_handlers: dict[int, Any] = {}
        self._interrupted: int | None = None
        self._closing: RunJournal | None = None
        self._held: int | None = None
        self._cut_short: int | None = None

    @hook_impl(trylast=True)  # after kedro-mlflow has started the MLflow run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        self._folder = Path(run_params["project_path"]) / JOURNAL_FOLDER
        recover_unfinished_runs(self._folder)
        save_version = run_params["run_id"]
        import mlflow  # here, not at the top: settings.py imports this module for every `kedro` command

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
        self._install_signal_handlers(self._interrupt)

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

    @hook_impl(wrapper=True)  # around every after_pipeline_run hook, kedro-mlflow's among them
    def after_pipeline_run(self) -> Generator[None, Any, Any]:
        """Close a run whose every output is saved, with SIGINT and SIGTERM held.

        The journal goes first (the versions are kept), before kedro-mlflow ends the
        MLflow run FINISHED. A signal now would cut that closing short and leave a
        finished run's record half-ended, so the first one waits until every hook has
        run, then ``InterruptedWhileClosing`` says so; a second one stops the closing
        at once (``_hold``). The command settles either (``cli``).
        """
        journal, swallowed = self._journal, self._interrupted  # a signal the last node swallowed
        self._forget_journal()
        self._closing, self._held, self._cut_short = journal, swallowed, None
        self._install_signal_handlers(self._hold)
        try:
            result = yield
        finally:
            self._restore_signal_handlers()
            held, cut_short = self._held, self._cut_short
            self._closing, self._held, self._cut_short = None, None, None
        # A second signal whose exception some code swallowed (a logging handler that was
        # writing when it came prints it and goes on) still says the closing was cut.
        if cut_short is not None:
            raise InterruptedWhileClosing(cut_short, journal, cut_short=True)
        if held is not None:
            raise InterruptedWhileClosing(held, journal, cut_short=False)
        return result

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
                from mlflow.entities import RunStatus

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

    def _install_signal_handlers(self, handler: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python lets only the main thread set handlers
        for signum in _INTERRUPTS:
            previous = signal.signal(signum, handler)
            self._previous_handlers.setdefault(signum, previous)

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

    def _hold(self, signum: int, frame: Any) -> None:
        if self._held is None:
            self._held = signum
            logger.warning(
                "%s after the last node: the run is being closed first (send it again to stop at once)", signal.Signals(signum).name
            )
            return
        self._restore_signal_handlers()
        self._cut_short = signum
        raise InterruptedWhileClosing(signum, self._closing, cut_short=True)

_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
