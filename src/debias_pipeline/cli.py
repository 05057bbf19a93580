"""The project's ``kedro run``: Kedro's own command, ending a failed run on its message.

Kedro takes a project's commands from ``src/<package>/cli.py`` before its own. This
``run`` has every option of Kedro's, plus ``--verbose``. A failed run's last line is
the error, ``<type>: <message>``; its full traceback goes to the failure log
(``logs/debias_pipeline.log``, or the file in ``$DEBIAS_LOG_FILE``), and to the terminal
too with ``--verbose`` or ``DEBIAS_TRACEBACK=1``. An interrupted run exits with 128 plus
the signal's number (130 for SIGINT, 143 for SIGTERM), a failed one with 1. A signal
after the last node, while the run is being closed, ends on a line saying whether the
run was finished first; the exit code then follows its MLflow run's status: FINISHED
0, KILLED 128 plus the signal's number.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.cli.utils import CONTEXT_SETTINGS

from debias_pipeline.framework.runs import InterruptedWhileClosing, RunInterrupted, kill_active_mlflow_runs

FAILURE_LOG = Path("logs") / "debias_pipeline.log"


def failure_log() -> Path:
    """Where failed runs' tracebacks go: ``$DEBIAS_LOG_FILE``, else logs/debias_pipeline.log."""
    return Path(os.environ.get("DEBIAS_LOG_FILE") or FAILURE_LOG)


def traceback_on_terminal(verbose: bool) -> bool:
    """Whether to print the traceback too: ``--verbose`` or ``DEBIAS_TRACEBACK`` set (not 0)."""
    return verbose or os.environ.get("DEBIAS_TRACEBACK", "0") not in ("", "0")


def log_traceback(error: BaseException, path: Path) -> None:
    """Append the command, the time and the error's full traceback to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["kedro", *sys.argv[1:]])
    with path.open("a", encoding="utf-8") as log:
        log.write(f"{datetime.now().astimezone().isoformat(timespec='seconds')} {command}\n")
        log.write("".join(traceback.format_exception(error)))
        log.write("\n")


def _end(message: str, code: int) -> None:
    sys.stdout.flush()  # Kedro's log lines go to stdout: they come before the message
    click.echo(message, err=True)
    raise click.exceptions.Exit(code)


def _run(verbose: bool, **options: Any) -> Any:
    try:
        return kedro_run.callback(**options)  # type: ignore[misc]
    except InterruptedWhileClosing as error:
        _end(*error.settle())
    except RunInterrupted as error:
        _end(str(error), error.exit_code)
    except KeyboardInterrupt:  # before the project's handlers are set (before the first node)
        kill_active_mlflow_runs()  # kedro-mlflow may have started it already
        interrupted = RunInterrupted(signal.SIGINT)
        _end(str(interrupted), interrupted.exit_code)
    except Exception as error:  # noqa: BLE001 - every failure ends the same way
        path = failure_log()
        log_traceback(error, path)
        sys.stdout.flush()
        if traceback_on_terminal(verbose):
            click.echo("".join(traceback.format_exception(error)), err=True, nl=False)
        else:
            click.echo(f"Full traceback in {path} (or run with --verbose, or DEBIAS_TRACEBACK=1).", err=True)
        _end(f"{type(error).__name__}: {error}", 1)


@click.group(context_settings=CONTEXT_SETTINGS, name=__file__)
def cli() -> None:
    """Command line tools for the debias_pipeline project."""


run = click.Command(
    name="run",
    callback=_run,
    params=[
        *kedro_run.params,
        click.Option(["--verbose", "-v"], is_flag=True, help="Print the traceback of a failed run on the terminal too."),
    ],
    help=kedro_run.help,
    context_settings=CONTEXT_SETTINGS,
)
cli.add_command(run)
