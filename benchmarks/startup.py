"""Start-up time of the project's `kedro` commands, each in a fresh process.

    python benchmarks/startup.py                          # this checkout, 5 rounds
    python benchmarks/startup.py --rounds 9 --source before=../old-checkout --source after=.

Times three commands from the process's start:

- ``kedro --version``: Kedro, its plugins' commands and the project's settings;
- ``kedro registry list``: that, plus every pipeline of the registry built;
- ``kedro run --pipelines=train_dual`` until its first node starts (the line Kedro
  logs, ``Running node:``, or the project's progress line, ``[ 1/13] ingest_ratings``,
  which conf/logging.yml shows instead); the run is then interrupted (SIGINT: the run
  ends as an interrupted one, its partial artifacts removed).

Each source tree (``--source``, default: this checkout) runs in its own throw-away
project (its src/, pyproject.toml and conf/ copied, fresh data/ and mlflow.db), so the
measured runs leave nothing in the checkout. One warm-up round per project is not
counted (it compiles the bytecode and creates the MLflow store). Then the rounds run
every command of every source in turn, so that a change in the machine's load slows
all alike; the table gives the median, min and max over the rounds of the wall time,
the median CPU time (user + system: the command's own work, which a busy machine
stretches less than the wall time), and the load averages before and after.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_NODE = re.compile(r"Running node:|INFO\s+\[\s*1/\d+\] \S+\s*$")
DATA_LAYERS = ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models", "07_model_output", "08_reporting")


@dataclass
class Source:
    """A source tree measured in its own throw-away project."""

    label: str
    tree: Path
    project: Path = Path()
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def make_project(tree: Path, project: Path) -> Path:
    """A fresh project at ``project`` from ``tree``: src/, pyproject.toml and conf/
    copied (conf/local left empty but for the MLflow store's path), empty data layers."""
    shutil.copytree(tree / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(tree / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(tree / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "conf" / "local" / "mlflow.yml").write_text(f"server:\n  mlflow_tracking_uri: sqlite:///{project / 'mlflow.db'}\n")
    for layer in DATA_LAYERS:
        (project / "data" / layer).mkdir(parents=True)
    return project


def environment(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "250",  # one log record a line
        "PYTHONPATH": str(project / "src"),
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def time_command(python: str, project: Path, args: list[str], timeout: float) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -m kedro <args>``, start to end."""
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(
        [python, "-m", "kedro", *args],
        cwd=project,
        env=environment(project),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,  # a failure is reported with its output below
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"kedro {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return elapsed, children_cpu() - cpu


def time_to_first_node(python: str, project: Path, pipeline: str, timeout: float) -> tuple[float, float]:
    """Wall and CPU seconds from the start of ``kedro run --pipelines=<pipeline>`` to the
    line of its first node's start; the run is then interrupted."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [python, "-m", "kedro", "run", f"--pipelines={pipeline}"],
        cwd=project,
        env=environment(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if FIRST_NODE.search(line):
                return time.perf_counter() - start, process_cpu(process.pid)
            if time.perf_counter() - start > timeout:
                break
        raise RuntimeError(f"no first node's line ({FIRST_NODE.pattern}) from kedro run:\n{''.join(lines[-60:])}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


COMMANDS = ("kedro --version", "kedro registry list", "kedro run: first node")


def measure(python: str, source: Source, command: str, pipeline: str, timeout: float) -> tuple[float, float]:
    if command == "kedro --version":
        return time_command(python, source.project, ["--version"], timeout)
    if command == "kedro registry list":
        return time_command(python, source.project, ["registry", "list"], timeout)
    return time_to_first_node(python, source.project, pipeline, timeout)


def report(sources: list[Source], rounds: int, loads: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    lines = [
        f"{rounds} rounds, each command in a fresh process; seconds, median (min-max)",
        (
            f"load average before {loads[0][0]:.2f} {loads[0][1]:.2f} {loads[0][2]:.2f}, "
            f"after {loads[1][0]:.2f} {loads[1][1]:.2f} {loads[1][2]:.2f} on {os.cpu_count()} CPUs"
        ),
        "",
        f"{'':24s}" + "".join(f"{source.label:>32s}" for source in sources),
        f"{'command':24s}" + f"{'wall':>22s}{'cpu':>10s}" * len(sources),
    ]
    for command in COMMANDS:
        cells = []
        for source in sources:
            values = source.times[command]
            cells.append(f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})")
            cells.append(f"{statistics.median(source.cpu[command]):.2f}")
        lines.append(f"{command:24s}" + "".join(f"{cell:>{22 if i % 2 == 0 else 10}s}" for i, cell in enumerate(cells)))
    return "\n".join(lines)


def parse_source(text: str) -> Source:
    label, _, path = text.rpartition("=")
    tree = Path(path).resolve()
    if not (tree / "src").is_dir() or not (tree / "conf").is_dir():
        raise argparse.ArgumentTypeError(f"{tree} is not a checkout of the project (no src/ or conf/)")
    return Source(label or tree.name, tree)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument(
        "--source", action="append", type=parse_source, help="[label=]checkout to measure, repeatable (default: this one)"
    )
    parser.add_argument("--pipeline", default="train_dual", help="the pipeline run to its first node (default train_dual)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter with Kedro installed (default: this one)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a command counts as failed")
    args = parser.parse_args(argv)
    sources: list[Source] = args.source or [parse_source(str(REPO))]

    with tempfile.TemporaryDirectory(prefix="startup-bench-") as scratch:
        for index, source in enumerate(sources):
            source.project = make_project(source.tree, Path(scratch) / f"project{index}")
            source.times = {command: [] for command in COMMANDS}
            source.cpu = {command: [] for command in COMMANDS}
            for command in COMMANDS:  # warm-up: bytecode, the MLflow store
                measure(args.python, source, command, args.pipeline, args.timeout)
        before = os.getloadavg()
        for round_ in range(args.rounds):
            for command in COMMANDS:
                for source in sources:
                    elapsed, cpu = measure(args.python, source, command, args.pipeline, args.timeout)
                    source.times[command].append(elapsed)
                    source.cpu[command].append(cpu)
                    print(f"round {round_ + 1}: {source.label:>10s}  {command:24s} {elapsed:6.2f} s (cpu {cpu:.2f} s)", file=sys.stderr)
        after = os.getloadavg()
    print(report(sources, args.rounds, (before, after)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
