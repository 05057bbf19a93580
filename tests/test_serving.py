"""The trained model from the pipeline, from Python in a fresh process, and served by
``mlflow models serve``: the same top-N everywhere, 4xx for bad requests, a bounded
request, and a SIGTERM that stops the server while it answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from debias_pipeline.serving.recommender import TrainedRecommenders
from debias_pipeline.serving.server import MAX_USERS, served
from tests.conftest import make_project

pytestmark = pytest.mark.slow

FAST = {"mf": {"model": {"epochs": 5, "patience": 5}}}


def run(project: Path, pipeline: str, **params: object) -> None:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params={**FAST, **params}) as session:
        session.run(pipeline_names=[pipeline])


def client(project: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy where train_mf ran twice on the built-in dataset."""
    project = make_project(tmp_path_factory.mktemp("serving") / "project")
    cwd = Path.cwd()
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "true"
    os.chdir(project)
    try:
        run(project, "train_mf", seed=0)
        run(project, "train_mf", seed=1)
    finally:
        os.chdir(cwd)
    return project


def test_each_run_registers_a_new_version(trained: Path) -> None:
    versions = sorted(int(v.version) for v in client(trained).search_model_versions("name='synthetic-mf'"))
    assert versions == [1, 2]


def test_recommend_pipeline_prints_and_saves_the_newest_models_top_n(
    trained: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(trained)
    run(trained, "recommend", recommend={"model": "mf", "user": "3 7", "k": 4})
    out = capsys.readouterr().out
    assert "Top 4 of mf on synthetic:" in out
    (saved,) = (trained / "data/08_reporting/recommendations.csv").glob("*/recommendations.csv")
    table = pd.read_csv(saved, dtype={"user": str, "item": str})
    assert table["user"].tolist() == ["3"] * 4 + ["7"] * 4
    newest = TrainedRecommenders(trained / "data/06_models").load("mf", "synthetic")
    expected = newest.recommend_many(["3", "7"], 4)
    assert table["item"].tolist() == expected["item"].tolist()


def test_recommend_without_a_trained_model_names_the_pipeline(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained)
    with pytest.raises(Exception, match=r"kedro run --pipelines=train_lightgcn --params=dataset=synthetic"):
        run(trained, "recommend", recommend={"model": "lightgcn", "user": 3})


def test_the_registered_model_loads_in_a_fresh_process_with_the_same_top_n(trained: Path) -> None:
    script = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri('sqlite:///{trained / 'mlflow.db'}')\n"
        "from debias_pipeline.serving.recommender import load_recommender\n"
        "r = load_recommender('models:/synthetic-mf/2')\n"
        "print(json.dumps(r.recommend('5', 6)['item'].tolist()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=trained, check=True)
    in_process = TrainedRecommenders(trained / "data/06_models").load("mf", "synthetic").recommend("5", 6)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == in_process["item"].tolist()


def post(port: int, body: str, content_type: str = "application/json", timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body.encode(), headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_mlflow_serves_the_registered_model(trained: Path) -> None:
    with served("models:/synthetic-mf/2", f"sqlite:///{trained / 'mlflow.db'}", cwd=trained) as server:
        expected = TrainedRecommenders(trained / "data/06_models").load("mf", "synthetic")
        status, answer = post(server.port, json.dumps({"inputs": [{"user": "5", "k": 3}, {"user": "8", "k": 2}]}))
        assert status == 200
        first, second = answer["predictions"]
        assert [row["item"] for row in first["items"]] == expected.recommend("5", 3)["item"].tolist()
        assert len(second["items"]) == 2 and first["source"] == "model"
        status, answer = post(server.port, json.dumps({"inputs": [{"history": ["1", "2"], "k": 3}]}))
        assert status == 200 and answer["predictions"][0]["source"] == "popularity"
        for body, content_type, message in [
            (json.dumps({"inputs": [{"user": "no-such-user", "k": 3}]}), "application/json", "unknown user 'no-such-user'"),
            (json.dumps({"inputs": [{"user": "5", "k": 0}]}), "application/json", "k must be in 1..1000, got 0"),
            (json.dumps({"inputs": [{"user": 5}]}), "application/json", "valid string"),
            (json.dumps({"inputs": [{"history": ["no-such-item"]}]}), "application/json", "unknown item 'no-such-item'"),
            (json.dumps({"user": "5", "k": 3}), "application/json", "inputs"),
            ("not json", "application/json", "JSON"),
            ("user,k\n5,3\n", "text/csv", "send JSON with Content-Type: application/json, not 'text/csv'"),
            ('{"inputs": ' + "[" * 50_000 + "]" * 50_000 + "}", "application/json", "nests arrays or objects too deeply"),
            (json.dumps({"inputs": [{"user": "5\x1b[2J"}]}), "application/json", "unknown user '5\\x1b[2J'"),
        ]:
            status, answer = post(server.port, body, content_type)
            assert status == 400, (body[:80], status, answer)
            assert message in answer.get("message", ""), (body[:80], answer)
            assert "stack_trace" not in answer and "Traceback" not in json.dumps(answer), answer
        # More users than one request may ask for: refused at once, naming the limit.
        started = time.monotonic()
        status, answer = post(server.port, json.dumps({"inputs": [{"user": "5", "k": 10}] * 5000}))
        assert status == 400 and f"at most {MAX_USERS} users, got 5000" in answer["message"]
        assert time.monotonic() - started < 30
        status, answer = post(server.port, json.dumps({"inputs": [{"user": "5", "k": 1}] * MAX_USERS}))
        assert status == 200 and len(answer["predictions"]) == MAX_USERS


def test_a_sigterm_stops_the_server_while_it_answers(trained: Path) -> None:
    """A request that takes minutes (the bound raised for it) is in flight: a SIGTERM
    ends it and the server within seconds, not when the request would have finished."""
    env = {"DEBIAS_SERVING_MAX_USERS": "200000"}
    with served("models:/synthetic-mf/2", f"sqlite:///{trained / 'mlflow.db'}", cwd=trained, env=env) as server:
        answers: list[tuple[int, dict] | BaseException] = []

        def ask() -> None:
            try:
                answers.append(post(server.port, json.dumps({"inputs": [{"user": "5", "k": 10}] * 100_000}), timeout=600))
            except OSError as error:  # the connection closed by the stopping server
                answers.append(error)

        client = threading.Thread(target=ask)
        client.start()
        time.sleep(5)  # the request is read, validated and being answered
        assert not answers, answers
        stopped_in = server.stop(grace=120)
        client.join(timeout=30)
    assert stopped_in < 15, f"the server took {stopped_in:.1f} s to stop"
    assert answers and (isinstance(answers[0], OSError) or answers[0][0] == 503), answers


def test_runs_are_told_apart_in_mlflow(trained: Path) -> None:
    tracking = client(trained)
    experiment = tracking.get_experiment_by_name("debias_pipeline")
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = tracking.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    runs = [run for run in runs if run.info.run_name.startswith("train_mf")]
    assert [run.info.run_name for run in runs] == [
        f"train_mf · synthetic · seed {seed} · mf.model.epochs=5 mf.model.patience=5" for seed in (0, 1)
    ]
    assert runs[0].data.tags["kedro.command"] == (
        "kedro run --pipelines=train_mf --params=mf.model.epochs=5,mf.model.patience=5,seed=0"
    )
    (dataset_input,) = runs[0].inputs.dataset_inputs
    assert dataset_input.dataset.name == "synthetic" and dataset_input.dataset.digest
    assert "simulator" in dataset_input.dataset.source
    # The simulator draws other data for another seed: another digest.
    assert runs[1].inputs.dataset_inputs[0].dataset.digest != dataset_input.dataset.digest
