"""Latency and throughput of a served recommender (``mlflow models serve``).

    python benchmarks/serving.py --model-uri models:/movielens_100k-lightgcn/1 \
        --tracking-uri sqlite:///mlflow.db --requests 1000

Starts ``mlflow models serve --env-manager local`` on a free port of 127.0.0.1, waits
for ``/ping``, sends ``--warmup`` requests, then ``--requests`` single-user requests
(``{"inputs": [{"user": <u>, "k": 10}]}``, users drawn with a seed from the model's
users) one after the other from this process, and prints the p50, p90 and p99 latency
of a request (round trip, milliseconds), the throughput (requests per second over
the whole loop) and the number of non-200 answers; then stops the server (SIGTERM to
its process group, SIGKILL to what still runs 30 s later). The loop is sequential, so
the figures are those of one client against one server worker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from debias_pipeline.serving.server import served


def post(port: int, body: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    users = mlflow.pyfunc.load_model(args.model_uri).unwrap_python_model().recommender.user_ids
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(users, size=args.warmup + args.requests)
    bodies = [json.dumps({"inputs": [{"user": str(user), "k": args.k}]}).encode() for user in chosen]

    with served(args.model_uri, args.tracking_uri) as server:
        for body in bodies[: args.warmup]:
            post(server.port, body)
        latencies, failures = [], 0
        started = time.perf_counter()
        for body in bodies[args.warmup :]:
            sent = time.perf_counter()
            failures += post(server.port, body) != 200
            latencies.append((time.perf_counter() - sent) * 1000)
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    print(f"model {args.model_uri}: {args.requests} single-user requests (k = {args.k}), sequential, 127.0.0.1")
    print(f"latency ms  p50 {cuts[49]:.1f}  p90 {cuts[89]:.1f}  p99 {cuts[98]:.1f}  max {max(latencies):.1f}")
    print(f"throughput  {args.requests / elapsed:.1f} requests/s   non-200 answers: {failures}")


if __name__ == "__main__":
    main()
