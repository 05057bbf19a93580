"""Shared fixtures: a throw-away copy of the project, where the real datasets are, and
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

# The other names a dataset's folder goes by: GroupLens' archive unpacks as ml-100k, the
# pipeline reads data/01_raw/movielens_100k.
FOLDER_ALIASES = {"movielens_100k": ("ml-100k",), "ml-100k": ("movielens_100k",)}
COAT_FILES = ("train.ascii", "test.ascii")


def data_roots() -> list[Path]:
    """Where the tests look for a dataset's folder, in order: ``$DEBIAS_DATA_DIR``, the
    project's data/01_raw (where the README puts a dataset), ../shared/data."""
    roots = [Path(os.environ["DEBIAS_DATA_DIR"])] if os.environ.get("DEBIAS_DATA_DIR") else []
    return [*roots, REPO / "data" / "01_raw", REPO.parent / "shared" / "data"]


def find_dataset(name: str, roots: list[Path], files: tuple[str, ...] = ()) -> Path | None:
    """The first ``<root>/<name>`` (or ``<root>/<alias>``) folder that holds a file (each
    of ``files`` when given), or None."""
    for root in roots:
        for folder in (root / name, *(root / alias for alias in FOLDER_ALIASES.get(name, ()))):
            if files and all((folder / file).is_file() for file in files):
                return folder
            if not files and folder.is_dir() and any(path.is_file() for path in folder.iterdir()):
                return folder
    return None


def searched(name: str, roots: list[Path]) -> str:
    names = "/".join((name, *FOLDER_ALIASES.get(name, ())))
    return f"dataset folder {names} not found in {', '.join(str(root) for root in roots)}"


def coat_source() -> Path | None:
    """Coat's train.ascii / test.ascii: ``$DEBIAS_COAT_DIR``, else a ``coat`` folder of
    ``data_roots()``."""
    if os.environ.get("DEBIAS_COAT_DIR"):
        folder = Path(os.environ["DEBIAS_COAT_DIR"])
        return folder if all((folder / file).is_file() for file in COAT_FILES) else None
    return find_dataset("coat", data_roots(), COAT_FILES)


@pytest.fixture
def coat_dir() -> Path:
    """The Coat files; skipped when absent, failed when DEBIAS_REQUIRE_COAT=1."""
    source = coat_source()
    if source is None:
        where = os.environ.get("DEBIAS_COAT_DIR") or searched("coat", data_roots())
        missing_data(f"Coat data ({', '.join(COAT_FILES)}) not found: {where} (set DEBIAS_COAT_DIR)", "DEBIAS_REQUIRE_COAT")
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


def dataset_folder(name: str) -> Path:
    """The folder of dataset ``name`` (``movielens_100k`` or ``ml-100k``, ...) in
    ``data_roots()``: skipped when absent, failed when DEBIAS_REQUIRE_DATA=1 (as in CI)."""
    folder = find_dataset(name, data_roots())
    if folder is None:
        missing_data(f"{searched(name, data_roots())} (set DEBIAS_DATA_DIR)", "DEBIAS_REQUIRE_DATA")
    return folder


@pytest.fixture
def shared_dataset():  # noqa: ANN201 (a factory fixture)
    """Locate a real dataset's folder by name (see ``dataset_folder``)."""
    return dataset_folder


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
