"""A run's progress in one short line per node start and end.

Kedro logs a node's start with its whole signature (``Running node: train_model:
train_model([train_data;evaluators;params:dual.model;...]) -> [...]``, three or four
lines in a terminal) and its end twice (``Completed node``, ``Completed 10 out of 13
tasks``). The project's logging (conf/logging.yml) leaves those at WARNING and keeps
these lines instead::

    [10/13] dual.train_model
    [10/13] dual.train_model done in 3.1 s
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline

logger = logging.getLogger(__name__)


class ProgressHook:
    """Log each node's start and end with its place in the run, and the run's total time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ThreadRunner runs nodes at once
        self._total = 0
        self._started = 0
        self._place: dict[str, int] = {}
        self._start: dict[str, float] = {}
        self._run_start = 0.0

    def _label(self, name: str) -> str:
        width = len(str(self._total))
        return f"[{self._place[name]:{width}d}/{self._total}] {name}"

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline) -> None:
        with self._lock:
            self._total, self._started = len(pipeline.nodes), 0
            self._place.clear()
            self._start.clear()
            self._run_start = time.perf_counter()

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        with self._lock:
            self._started += 1
            self._place[node.name] = self._started
            self._start[node.name] = time.perf_counter()
            label = self._label(node.name)
        logger.info("%s", label)

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        with self._lock:
            if node.name not in self._start:
                return
            elapsed = time.perf_counter() - self._start.pop(node.name)
            label = self._label(node.name)
        logger.info("%s done in %.1f s", label, elapsed)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        names = ",".join(run_params.get("pipeline_names") or ["__default__"])
        logger.info("%s: %d nodes done in %.1f s", names, self._total, time.perf_counter() - self._run_start)
