"""Shared fixtures: a throw-away copy of the project and the Coat data location."""

from __future__ import annotations

import os
import shutil
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
        message = f"Coat data not found at {source} (set DEBIAS_COAT_DIR)"
        if os.environ.get("DEBIAS_REQUIRE_COAT") == "1":
            pytest.fail(message + " and DEBIAS_REQUIRE_COAT=1 requires it")
        pytest.skip(message)
    return source


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's configuration in a temporary directory, made the cwd.

    Kedro wants the source folder inside the project, so src/ is copied too (the
    already imported package stays the one in use); data/, mlflow.db and conf/local
    are fresh.
    """
    project = tmp_path / "project"
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
    monkeypatch.chdir(project)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    return project


def shared_data_folder(name: str) -> Path:
    """``../shared/data/<name>`` (or ``$DEBIAS_DATA_DIR/<name>``): skipped when absent,
    failed when DEBIAS_REQUIRE_DATA=1 (as in CI)."""
    folder = Path(os.environ.get("DEBIAS_DATA_DIR", REPO.parent / "shared" / "data")) / name
    if not folder.is_dir():
        message = f"dataset folder {folder} not found"
        if os.environ.get("DEBIAS_REQUIRE_DATA") == "1":
            pytest.fail(message + " and DEBIAS_REQUIRE_DATA=1 requires it")
        pytest.skip(message)
    return folder


@pytest.fixture
def shared_dataset():  # noqa: ANN201 (a factory fixture)
    """Locate a dataset of ../shared/data by name (see ``shared_data_folder``)."""
    return shared_data_folder
