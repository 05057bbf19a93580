"""The MLflow pyfunc model of a trained recommender (``mlflow models serve``).

Every ``train_<model>`` run logs one (``<model>.mlflow_model`` in the catalog) and
registers it as ``<dataset>-<model>``. A request is a list of objects, each either
``{"user": "20", "k": 5}`` (a user of the training data, original id) or
``{"history": ["50", "172"], "k": 5}`` (a new user: folded in by a model that can, else
the train popularity, flagged in ``source``), with optional ``exclude_train``,
``include_genres`` and ``exclude_genres``. The served body wraps it in MLflow's
envelope: ``{"inputs": [{"user": "20", "k": 5}]}``. A bad request gets HTTP 400 with the
message.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pydantic
from mlflow.exceptions import MlflowException

from debias_pipeline.serving.recommender import RecommendationError, TrainedRecommender

DEFAULT_K = 10
MAX_K = 1000


class RecommendRequest(pydantic.BaseModel):
    """One user's request."""

    user: str | None = None
    history: list[str] | None = None
    k: int | None = None  # default DEFAULT_K
    exclude_train: bool | None = None  # default true
    include_genres: list[str] | None = None
    exclude_genres: list[str] | None = None


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Top-N in original ids, from the ``TrainedRecommender`` package it holds."""

    def __init__(self, package: dict[str, Any]) -> None:
        self.package = package
        self._recommender: TrainedRecommender | None = None

    @property
    def recommender(self) -> TrainedRecommender:
        if self._recommender is None:
            self._recommender = TrainedRecommender.from_package(self.package)
        return self._recommender

    def load_context(self, context: Any) -> None:
        self._recommender = TrainedRecommender.from_package(self.package)

    def __getstate__(self) -> dict[str, Any]:
        return {"package": self.package, "_recommender": None}

    def predict(self, model_input: list[RecommendRequest], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One answer per request: ``user``, ``source`` (model | fold_in | popularity)
        and ``items`` (rank, item, title, genres, score; exposure for the dual model)."""
        return [self._answer(request) for request in model_input]

    def _answer(self, request: RecommendRequest) -> dict[str, Any]:
        try:
            if (request.user is None) == (request.history is None):
                raise RecommendationError("give either 'user' (a known user) or 'history' (item ids), not both")
            k = DEFAULT_K if request.k is None else request.k
            if not 1 <= k <= MAX_K:
                raise RecommendationError(f"k must be in 1..{MAX_K}, got {k}")
            options = {"include_genres": request.include_genres or (), "exclude_genres": request.exclude_genres or ()}
            if request.user is not None:
                exclude_train = request.exclude_train is not False
                table = self.recommender.recommend(request.user, k, exclude_train=exclude_train, **options)
            else:
                table = self.recommender.recommend_history(request.history or [], k, **options)
        except RecommendationError as error:
            raise MlflowException.invalid_parameter_value(str(error)) from None
        items = [
            {key: _json_value(value) for key, value in row.items() if key not in ("user", "source")}
            for row in table.to_dict(orient="records")
        ]
        source = str(table["source"].iloc[0]) if len(table) else "model" if request.user is not None else "popularity"
        return {"user": request.user, "source": source, "items": items}


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def served(model_uri: str, tracking_uri: str, cwd: Path | None = None, timeout: float = 300) -> Iterator[int]:
    """``mlflow models serve -m model_uri --env-manager local`` on a free port of
    127.0.0.1 (this interpreter's environment), ready (``/ping`` answers) when the block
    starts and stopped when it ends; yields the port."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the server execs uvicorn
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow models serve -m {model_uri} did not start") from None
                time.sleep(1)
        yield port
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
