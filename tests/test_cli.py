"""The project's ``kedro run``: a failed run ends on its message, the traceback goes to a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from debias_pipeline import cli
from debias_pipeline.cli import traceback_on_terminal
from tests.conftest import KedroProcess

TRACEBACK = "Traceback (most recent call last)"


def last_line(process: KedroProcess) -> str:
    return next(line for line in reversed(process.lines) if line.strip())


def test_traceback_on_terminal_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEBIAS_TRACEBACK", raising=False)
    assert not traceback_on_terminal(verbose=False)
    assert traceback_on_terminal(verbose=True)
    monkeypatch.setenv("DEBIAS_TRACEBACK", "0")
    assert not traceback_on_terminal(verbose=False)
    monkeypatch.setenv("DEBIAS_TRACEBACK", "1")
    assert traceback_on_terminal(verbose=False)


def test_ctrl_c_before_the_first_node_marks_the_started_mlflow_run_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import click
    import mlflow

    def started_then_interrupted(**options: object) -> None:
        # kedro-mlflow has started the run; Ctrl-C before the project's handlers are set
        mlflow.start_run(experiment_id=mlflow.MlflowClient().create_experiment("cli"))
        raise KeyboardInterrupt

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(cli, "kedro_run", click.Command("run", callback=started_then_interrupted))
    try:
        with pytest.raises(click.exceptions.Exit) as ended:
            cli._run(verbose=False)
        run_id = mlflow.last_active_run().info.run_id
        # Not FINISHED, as mlflow's own exit handler would end it.
        assert mlflow.active_run() is None and mlflow.MlflowClient().get_run(run_id).info.status == "KILLED"
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(before)
    assert ended.value.exit_code == 130
    assert capsys.readouterr().err.splitlines()[-1] == "Run interrupted by SIGINT."


@pytest.mark.slow
def test_failed_run_ends_on_its_message_and_logs_the_traceback(project_copy: Path, kedro_processes: list[KedroProcess]) -> None:
    run = KedroProcess(project_copy, "--pipelines=train_mf", "--params=mf.model.lr=-1")
    kedro_processes.append(run)
    assert run.finish(timeout=300) == 1
    message = last_line(run)
    assert message.startswith("ParameterValidationError: parameter 'mf.model.lr': lr must be a finite number > 0")
    assert TRACEBACK not in run.output and "╭" not in run.output  # neither Python's nor rich's
    log = (project_copy / "logs" / "debias_pipeline.log").read_text()
    assert "kedro run --pipelines=train_mf --params=mf.model.lr=-1" in log
    assert TRACEBACK in log and log.rstrip().endswith(message)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "env"), [(["--verbose"], {}), ([], {"DEBIAS_TRACEBACK": "1"})], ids=["verbose", "env"])
def test_traceback_on_the_terminal_when_asked(
    project_copy: Path, kedro_processes: list[KedroProcess], tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    log = tmp_path / "elsewhere" / "failures.log"
    # Coat without its raw files: Kedro wraps the loader's error, two chained tracebacks.
    run = KedroProcess(project_copy, "--pipelines=train_mf", "--params=dataset=coat", *args, env={"DEBIAS_LOG_FILE": str(log), **env})
    kedro_processes.append(run)
    assert run.finish(timeout=300) == 1
    assert TRACEBACK in run.output
    # Kedro's DatasetError puts the loader's message on its last line.
    assert last_line(run).startswith("raw file(s) missing for dataset 'coat'") and "coat/train.ascii" in last_line(run)
    assert any(line.startswith("DatasetError: ") for line in run.lines)
    assert TRACEBACK in log.read_text()
    assert not (project_copy / "logs").exists()
