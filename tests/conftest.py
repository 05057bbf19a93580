"""Shared fixtures: a throw-away copy of the project, the Coat data location, and
``kedro run`` in a child process."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def coat_source() -> Path:
    """Where Coat's train.ascii / test.ascii are: $DEBIAS_COAT_DIR or ../shared/data/coat."""
    return Path(os.environ.get("DEBIAS_COAT_DIR", REPO.parent / "shared" / "data" / "coat"))


@pytest.fixture
def coat_dir() -> Path:
    """The Coat files; skipped when absent, failed when DEBIAS_REQUIRE_COAT=1."""
    source = coat_source()
    if not all((source / name).is_file() for name in ("train.ascii", "test.ascii")):
        missing_data(f"Coat data not found at {source} (set DEBIAS_COAT_DIR)", "DEBIAS_REQUIRE_COAT")
    return source


def missing_data(message: str, required_by: str) -> None:
    """Fail when the environment variable ``required_by`` is 1 (CI), else skip."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{message} and {required_by}=1 requires it")
    pytest.skip(message)


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's configuration in a temporary directory, made the cwd.

    Kedro wants the source folder inside the project, so src/ is copied too (the
    already imported package stays the one in use); data/, mlflow.db and conf/local
    are fresh.
    """
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    return project


def make_project(project: Path) -> Path:
    """A fresh project at ``project``: src/, pyproject.toml and conf/base copied, empty
    data layers and conf/local, its own mlflow.db (see ``project_copy``)."""
    project.mkdir()
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(REPO / "conf" / "base", project / "conf" / "base")
    (project / "conf" / "local").mkdir()
    # mlflow caches one store per tracking URI in a process, so the relative
    # sqlite:///mlflow.db of every temporary project would share the first one's file.
    (project / "conf" / "local" / "mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{project / 'mlflow.db'}\n"
    )
    for layer in ("01_raw", "02_intermediate", "03_primary", "05_model_input", "06_models", "07_model_output", "08_reporting"):
        (project / "data" / layer).mkdir(parents=True)
    return project


def shared_data_folder(name: str) -> Path:
    """``../shared/data/<name>`` (or ``$DEBIAS_DATA_DIR/<name>``): skipped when absent,
    failed when DEBIAS_REQUIRE_DATA=1 (as in CI)."""
    folder = Path(os.environ.get("DEBIAS_DATA_DIR", REPO.parent / "shared" / "data")) / name
    if not folder.is_dir():
        missing_data(f"dataset folder {folder} not found", "DEBIAS_REQUIRE_DATA")
    return folder


@pytest.fixture
def shared_dataset():  # noqa: ANN201 (a factory fixture)
    """Locate a dataset of ../shared/data by name (see ``shared_data_folder``)."""
    return shared_data_folder


@pytest.fixture
def coat_project(project_copy: Path, coat_dir: Path) -> Path:
    """``project_copy`` with the Coat files in data/01_raw/coat."""
    raw = project_copy / "data" / "01_raw" / "coat"
    raw.mkdir()
    for name in ("train.ascii", "test.ascii"):
        shutil.copy(coat_dir / name, raw / name)
    return project_copy


class KedroProcess:
    """``kedro run`` in a child process of a project, its output read line by line."""

    def __init__(self, project: Path, *args: str, env: dict[str, str] | None = None) -> None:
        child_env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1", "COLUMNS": "250", **(env or {})}
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kedro", "run", *args],
            cwd=project,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first output line matching ``pattern``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"kedro run ended before {pattern!r}:\n" + "\n".join(self.lines[-40:]))
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        pytest.fail(f"no {pattern!r} within {timeout} s:\n" + "\n".join(self.lines[-40:]))

    def finish(self, timeout: float) -> int:
        """Wait for the process to end (at most ``timeout`` seconds); its exit code."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"kedro run still running after {timeout} s:\n" + "\n".join(self.lines[-40:]))
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def kedro_processes() -> Iterator[list[KedroProcess]]:
    """Where a test keeps the ``KedroProcess`` it starts: any still running is killed at the end."""
    processes: list[KedroProcess] = []
    yield processes
    for process in processes:
        process.kill()
