"""The MLflow pyfunc model of a trained recommender (``mlflow models serve``).

Every ``train_<model>`` run logs one (``<model>.mlflow_model`` in the catalog) and
registers it as ``<dataset>-<model>``. A request is a list of objects, each either
``{"user": "20", "k": 5}`` (a user of the training data, original id) or
``{"history": ["50", "172"], "k": 5}`` (a new user: folded in by a model that can, else
the train popularity, flagged in ``source``), with optional ``exclude_train``,
``include_genres`` and ``exclude_genres``. The served body wraps it in MLflow's
envelope: ``{"inputs": [{"user": "20", "k": 5}]}``.

A bad request gets HTTP 400 with the reason and nothing of the server's internals. One
request asks for at most ``MAX_USERS`` users (``DEBIAS_SERVING_MAX_USERS`` at the
server's start changes it) and ``k`` in 1..``MAX_K``: a request stays far below the
server's 60 s timeout. ``mlflow models serve`` parses the body before the model sees it
(a CSV body fails inside MLflow with its stack trace in the answer, JSON nested past the
decoder's recursion limit with HTTP 500), so the model, loaded in the server's process,
puts its checks in front of MLflow's scoring function (``_check_requests``). On SIGTERM
the server waits for the requests in flight before it exits: the request being answered
stops at its next user (HTTP 503, ``_server_stopping``), and the server exits at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pydantic
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.pyfunc import scoring_server

from debias_pipeline.serving.recommender import RecommendationError, TrainedRecommender

DEFAULT_K = 10
MAX_K = 1000
MAX_USERS = 1000  # users per request: ~3 ms each on one core, a few seconds at most
MAX_USERS_VARIABLE = "DEBIAS_SERVING_MAX_USERS"


class RecommendRequest(pydantic.BaseModel):
    """One user's request."""

    user: str | None = None
    history: list[str] | None = None
    k: int | None = None  # default DEFAULT_K
    exclude_train: bool | None = None  # default true
    include_genres: list[str] | None = None
    exclude_genres: list[str] | None = None


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Top-N in original ids, from the ``TrainedRecommender`` package it holds.

    Args:
        package: ``TrainedRecommender.package()``.
        max_users: the most users one request may ask for (``DEBIAS_SERVING_MAX_USERS``
            overrides it when the model is loaded).
    """

    def __init__(self, package: dict[str, Any], max_users: int = MAX_USERS) -> None:
        self.package = package
        self.max_users = _positive(max_users, "max_users")
        self._recommender: TrainedRecommender | None = None

    @property
    def recommender(self) -> TrainedRecommender:
        if self._recommender is None:
            self._recommender = TrainedRecommender.from_package(self.package)
        return self._recommender

    def load_context(self, context: Any) -> None:
        self._recommender = TrainedRecommender.from_package(self.package)
        if (text := os.environ.get(MAX_USERS_VARIABLE)) is not None:
            self.max_users = _positive(int(text) if text.strip().isdigit() else text, MAX_USERS_VARIABLE)
        if scoring_server._SERVER_MODEL_PATH in os.environ:  # loaded by `mlflow models serve`
            _check_requests()

    def __getstate__(self) -> dict[str, Any]:
        return {"package": self.package, "max_users": self.max_users}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["package"], state.get("max_users", MAX_USERS))

    def predict(self, model_input: list[RecommendRequest], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One answer per request: ``user``, ``source`` (model | fold_in | popularity)
        and ``items`` (rank, item, title, genres, score; exposure for the dual model)."""
        if len(model_input) > self.max_users:
            raise MlflowException.invalid_parameter_value(
                f"a request may ask for at most {self.max_users} users, got {len(model_input)}; send them in several requests"
            )
        answers = []
        for request in model_input:
            if _server_stopping():
                raise MlflowException(
                    "the server is shutting down (SIGTERM): the request was not finished; send it to a running server",
                    error_code=TEMPORARILY_UNAVAILABLE,
                )
            answers.append(self._answer(request))
        return answers

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


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- in the server's process ------------------------------------------------------------


def _check_requests() -> None:
    """Put ``_checked``'s checks in front of MLflow's scoring function (once): the server's
    ``/invocations`` route looks ``scoring_server.invocations`` up at each request."""
    if not getattr(scoring_server.invocations, "checks_recommender_requests", False):
        scoring_server.invocations = _checked(scoring_server.invocations)


def _checked(invocations: Callable[..., Any]) -> Callable[..., Any]:
    """``invocations`` that, for a ``RecommenderModel``, takes only a JSON body (parsed
    here: a body nested too deeply is a 400, not MLflow's 500) and answers errors with
    their reason alone: no stack trace, no echo of the whole request."""

    @functools.wraps(invocations)
    def checked(data: bytes | str, content_type: str | None, model: Any, input_schema: Any) -> Any:
        try:
            ours = isinstance(model.unwrap_python_model(), RecommenderModel)
        except (MlflowException, AttributeError):  # a model of another flavour: MLflow's own handling
            ours = False
        if not ours:
            return invocations(data, content_type, model, input_schema)
        try:
            return invocations(_json_body(data, content_type), content_type, model, input_schema)
        except RecommendationError as error:
            raise MlflowException.invalid_parameter_value(str(error)) from None
        except MlflowException as error:
            error.json_kwargs.pop("stack_trace", None)
            # MLflow prefixes a failed prediction with the whole request: keep the reason.
            if error.message.startswith("Failed to predict data ") and "\nError: " in error.message:
                error.message = error.message.split("\nError: ", 1)[1]
            raise

    checked.checks_recommender_requests = True  # type: ignore[attr-defined]
    return checked


def _json_body(data: bytes | str, content_type: str | None) -> dict[str, Any]:
    """The parsed body (a JSON object), or a ``RecommendationError`` saying what is wrong
    with it."""
    if (content_type or "").split(";")[0].strip() != "application/json":
        raise RecommendationError(f"send JSON with Content-Type: application/json, not {content_type!r}")
    try:
        body = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError:
        raise RecommendationError("the body is not valid JSON: it is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise RecommendationError(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise RecommendationError("the body nests arrays or objects too deeply to be a request") from None
    if not isinstance(body, dict):
        raise RecommendationError(f'the body must be a JSON object, {{"inputs": [...]}}, not a {type(body).__name__}')
    return body


def _server_stopping() -> bool:
    """Whether the server of this process was told to exit. uvicorn (which ``mlflow
    models serve`` runs) handles SIGTERM with its server's ``handle_exit``, which sets the
    server's ``should_exit``; it installs it after loading the model, so the model reads
    it, from the thread answering the request, rather than handle the signal itself."""
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return getattr(owner, "should_exit", False) is True


# ---- serving from this process (tests, benchmarks) ----------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class Served:
    """A running ``mlflow models serve``: its port on 127.0.0.1 and its process (the
    ``mlflow`` command, leader of a process group that holds the server it starts)."""

    port: int
    process: subprocess.Popen[bytes]

    def stop(self, grace: float = 30) -> float:
        """SIGTERM to the process group; SIGKILL to what still runs after ``grace``
        seconds. Returns the seconds until nothing of the group ran."""
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        while _group_runs(self.process.pid) and time.monotonic() - started < grace:
            self.process.poll()  # reaps the command: a zombie still counts in the group
            time.sleep(0.05)
        if _group_runs(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        while _group_runs(self.process.pid) and time.monotonic() - started < grace + 30:
            time.sleep(0.05)
        return time.monotonic() - started


def _group_runs(group: int) -> bool:
    """Whether a process of ``group`` runs (zombies, dead but not yet reaped, do not)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _, process_group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # ended while read
        if int(process_group) == group and state != "Z":
            return True
    return False


@contextlib.contextmanager
def served(
    model_uri: str,
    tracking_uri: str,
    cwd: Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """``mlflow models serve -m model_uri --env-manager local`` on a free port of
    127.0.0.1 (this interpreter's environment, plus ``env``), ready (``/ping``
    answers) when the block starts and stopped (``Served.stop``) when it ends."""
    port = _free_port()
    environment = {**os.environ, **(env or {}), "MLFLOW_TRACKING_URI": tracking_uri}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"  # the server execs uvicorn
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    server = Served(
        port,
        subprocess.Popen(
            command, cwd=cwd, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        ),
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                if server.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow models serve -m {model_uri} did not start") from None
                time.sleep(1)
        yield server
    finally:
        server.stop()
