"""The pyfunc model as ``mlflow models serve`` runs it, in process: MLflow's scoring
function (``scoring_server.invocations``, what the server's ``/invocations`` route calls)
on the model loaded as the server loads it. Bad bodies and content types are 400s
without internals, a request's users are bounded, ``k`` too, and a SIGTERM stops the
request being answered. ``tests/test_serving.py`` checks the same over HTTP."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import uvicorn
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from debias_pipeline.serving.recommender import build_recommender
from debias_pipeline.serving.server import MAX_K, MAX_USERS, RecommenderModel, RecommendRequest
from tests.test_recommend import fitted, id_maps


@pytest.fixture(scope="module")
def package() -> dict[str, Any]:
    model, train = fitted("mf")  # 12 users (ids 100..111) x 9 items (500..508)
    return build_recommender("toy", model, id_maps(12, 9), pd.DataFrame({"index": np.arange(9)}), train).package()


@pytest.fixture(scope="module")
def saved(package: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    mlflow.pyfunc.save_model(path, python_model=RecommenderModel(package), input_example=[{"history": [], "k": 5}])
    return path


class AsServed:
    """The saved model loaded in a scoring server's process."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def post(self, body: str | bytes, content_type: str | None = "application/json") -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) as the server's /invocations route gives them."""
        data = body.encode() if isinstance(body, str) else body
        try:
            answer = scoring_server.invocations(data, content_type, self.model, self.model.metadata.get_input_schema())
        except MlflowException as error:  # the route serializes these with their status
            return error.get_http_status_code(), json.loads(error.serialize_as_json())
        except Exception as error:  # noqa: BLE001 - uncaught: the server answers 500
            return 500, {"message": f"{type(error).__name__}: {error}"}
        try:
            return answer.status, json.loads(answer.response)
        except ValueError:
            return answer.status, {"message": answer.response}


@pytest.fixture
def as_served(saved: Path, monkeypatch: pytest.MonkeyPatch) -> AsServed:
    monkeypatch.setenv(scoring_server._SERVER_MODEL_PATH, str(saved))  # set by `mlflow models serve`
    monkeypatch.setattr(scoring_server, "invocations", scoring_server.invocations)  # restored after the test
    return AsServed(mlflow.pyfunc.load_model(str(saved)))


def body(*requests: dict[str, Any]) -> str:
    return json.dumps({"inputs": list(requests)})


def assert_clear_400(status: int, answer: dict[str, Any], message: str) -> None:
    assert status == 400, (status, answer)
    assert message in answer["message"], answer
    assert "stack_trace" not in answer and "Traceback" not in json.dumps(answer) and "site-packages" not in json.dumps(answer)
    assert not any(ord(c) < 32 and c != "\n" for c in answer["message"]), answer


def test_a_good_request_is_answered(as_served: AsServed) -> None:
    status, answer = as_served.post(body({"user": "103", "k": 3}, {"history": ["500"], "k": 2}))
    assert status == 200
    first, second = answer["predictions"]
    assert first["user"] == "103" and len(first["items"]) == 3 and second["source"] == "popularity"


@pytest.mark.parametrize(
    ("payload", "content_type", "message"),
    [
        # MLflow parses CSV before the model sees it, and its error carried a stack trace.
        ("user,k\n103,3\n", "text/csv", "send JSON with Content-Type: application/json, not 'text/csv'"),
        ("user=103", "application/x-www-form-urlencoded", "not 'application/x-www-form-urlencoded'"),
        (body({"user": "103"}), None, "send JSON with Content-Type: application/json, not None"),
        # Nested past the JSON decoder's recursion limit: a RecursionError, HTTP 500.
        ("[" * 100_000 + "]" * 100_000, "application/json", "the body nests arrays or objects too deeply"),
        ('{"inputs": ' + "[" * 5_000 + "]" * 5_000 + "}", "application/json", "nests arrays or objects too deeply"),
        ("not json\x1b[2J", "application/json", "the body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff\xfe\x00", "application/json", "the body is not valid JSON"),
        (json.dumps([{"user": "103"}]), "application/json", 'the body must be a JSON object, {"inputs": [...]}, not a list'),
        (json.dumps({"user": "103", "k": 3}), "application/json", "'inputs'"),
        (body({"user": "no\x1b[31m", "k": 3}), "application/json", r"unknown user 'no\x1b[31m'"),
        (body({"user": "103", "k": 2}, {"history": ["5\x00"]}), "application/json", r"unknown item '5\x00'"),
        (body({"user": 103}), "application/json", "valid string"),
    ],
)
def test_bad_bodies_get_a_clear_400(as_served: AsServed, payload: str | bytes, content_type: str | None, message: str) -> None:
    status, answer = as_served.post(payload, content_type)
    assert_clear_400(status, answer, message)
    # The message says what is wrong with the request without echoing it back whole.
    assert "Failed to predict data" not in answer["message"]


def test_the_users_of_a_request_are_bounded(as_served: AsServed) -> None:
    many = [{"user": "103", "k": 1}] * (MAX_USERS + 1)
    status, answer = as_served.post(body(*many))
    assert_clear_400(status, answer, f"a request may ask for at most {MAX_USERS} users, got {MAX_USERS + 1}")
    assert len(answer["message"]) < 300


def test_the_bound_is_set_by_the_environment_at_start(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBIAS_SERVING_MAX_USERS", "3")
    model = mlflow.pyfunc.load_model(str(saved))
    assert len(model.predict([{"user": "103", "k": 1}] * 3)) == 3
    with pytest.raises(MlflowException, match="at most 3 users, got 4"):
        model.predict([{"user": "103", "k": 1}] * 4)
    monkeypatch.setenv("DEBIAS_SERVING_MAX_USERS", "many")
    with pytest.raises(ValueError, match="DEBIAS_SERVING_MAX_USERS must be a positive integer, got 'many'"):
        mlflow.pyfunc.load_model(str(saved))


def test_the_users_of_a_request_are_bounded_in_process(package: dict[str, Any]) -> None:
    """The pyfunc model's own check, without MLflow's server around it."""
    model = RecommenderModel(package, max_users=2)
    assert len(model.predict([RecommendRequest(user="103")] * 2)) == 2
    with pytest.raises(MlflowException, match=r"a request may ask for at most 2 users, got 3") as error:
        model.predict([RecommendRequest(user="103")] * 3)
    assert error.value.get_http_status_code() == 400
    with pytest.raises(ValueError, match="max_users must be a positive integer, got 0"):
        RecommenderModel(package, max_users=0)


def test_k_above_the_limit_is_refused_in_process(package: dict[str, Any]) -> None:
    assert MAX_K == 1000  # as docs/serving.md says
    model = RecommenderModel(package)
    (answer,) = model.predict([RecommendRequest(user="103", k=MAX_K)])  # the limit itself is allowed
    assert [row["rank"] for row in answer["items"]] == list(range(1, len(answer["items"]) + 1))
    for k in (MAX_K + 1, 0, -1):
        with pytest.raises(MlflowException, match=rf"k must be in 1\.\.{MAX_K}, got {k}") as error:
            model.predict([RecommendRequest(user="103", k=k)])
        assert error.value.get_http_status_code() == 400


def test_a_sigterm_stops_the_request_being_answered(as_served: AsServed) -> None:
    """uvicorn's own SIGTERM handler, as `mlflow models serve` runs it: the request being
    answered stops at its next user, so that the server, which waits for it, exits."""
    server = uvicorn.Server(uvicorn.Config("mlflow.pyfunc.scoring_server.app:app"))
    previous = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        assert as_served.post(body({"user": "103"}))[0] == 200
        signal.raise_signal(signal.SIGTERM)
        assert server.should_exit
        status, answer = as_served.post(body({"user": "103"}, {"user": "104"}))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status == 503 and "the server is shutting down" in answer["message"]
