"""The cost of logging the ingested ratings as the MLflow run's dataset input, against
the ingestion itself.

    python benchmarks/mlflow_input.py                  # about 4 million rows
    python benchmarks/mlflow_input.py --megabytes 30   # about 1 million
    python benchmarks/mlflow_input.py --repeats 3

A custom CSV of about ``--megabytes`` MB (``ingest_memory.py``'s generator: integer
users, text items, ratings, timestamps) is loaded by the ``custom`` loader and run
through ``ingest_ratings`` (the ingestion: both timed); then ``MlflowRunLabelHook.after_node_run`` logs the table to
a run of a temporary sqlite store, with MLflow's own dataset (every row read: the
threshold set above the table) and with the sampled digest (the default threshold).
Each figure is the median of ``--repeats`` wall-clock timings, the two hook variants
interleaved.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from ingest_memory import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=125.0, help="size of the CSV (125 MB: about 4M rows)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    directory = Path(tempfile.mkdtemp(prefix="mlflow_input_"))
    try:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{directory}/mlflow.db"
        import mlflow

        from debias_pipeline.data.loaders import LOADERS
        from debias_pipeline.data.processing import ingest_ratings
        from debias_pipeline.framework.mlflow_hooks import FULL_DIGEST_ROWS, MlflowRunLabelHook

        loader, options, _ = prepare("custom_csv", directory / "data", args.megabytes, seed=0)
        started = time.perf_counter()
        raw = LOADERS[loader](directory / "data", options)
        loaded = time.perf_counter()
        ratings, _ = ingest_ratings(raw, "custom", {}, 0)
        ingestion = time.perf_counter() - started
        print(
            f"{len(ratings):,} rows; load {loaded - started:.2f} s + ingest_ratings {ingestion - (loaded - started):.2f} s",
            flush=True,
        )
        with mlflow.start_run():  # the store's tables are created here, not in a timing
            pass

        class Node:
            name = "ingest_ratings"

        variants = {
            "MLflow's dataset (every row)": len(ratings) + 1,
            f"sampled digest (above {FULL_DIGEST_ROWS:,} rows)": FULL_DIGEST_ROWS,
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, threshold in variants.items():
                hook = MlflowRunLabelHook(full_digest_rows=threshold)
                with mlflow.start_run():
                    started = time.perf_counter()
                    hook.after_node_run(Node(), {"params:dataset": "custom"}, {"ratings": ratings})
                    times[name].append(time.perf_counter() - started)
                print(f"{name}: {times[name][-1]:.2f} s", flush=True)
        print("| dataset input | s (median) | ratio to the ingestion (load + ingest_ratings) |")
        print("|---|---|---|")
        print(f"| (the ingestion itself) | {ingestion:.2f} | 1.00x |")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {name} | {median:.2f} | {median / ingestion:.2f}x |")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
