"""Off-policy estimators against the truth: the bias and spread of each estimator of
protocol ``ips`` on the simulator, for several models, at several bias strengths.

    python scripts/offpolicy_study.py --betas 0 1 2 --seeds 0-4 --models mf dual mostpop ease

For every bias strength β and world seed: the simulator's world (preset ``--preset``,
``bias_strength`` β) split by protocol ``ips`` (a held-out part of the biased log), each
model fitted with its block from ``conf/base`` (early-stopped on the log's validation
carve-out), its test lists ranked, and every estimator of ``evaluation.off_policy``
compared with the true metric: the same lists scored on a full relevance draw
r_ui ~ Bernoulli(P(like)) from the world's true preference (what the metric would be had
every item been exposed; DCG's expectation is exact, Recall's and NDCG's ratio is over the
draw). Reported per (β, model, estimator, metric): the bias (mean of estimate − truth over
seeds), its standard deviation over seeds and the RMSE; the rows go to
``data/08_reporting/offpolicy_study.csv``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from debias_pipeline.config.params import parse_seeds
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.evaluation import offpolicy
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.inputs import process_dataset

PROJECT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def world_rows(params: dict, preset: str, beta: float, seed: int, models: list[str], k: int, n_boot: int) -> list[dict]:
    raw = RawData(name="synthetic", interactions=pd.DataFrame(), files={})
    synthetic = {"preset": preset, "bias_strength": beta}
    evaluation = {"protocol": "ips", "k": [k], "off_policy": {"n_boot": n_boot}}
    data = process_dataset(raw, "synthetic", seed=seed, synthetic=synthetic, evaluation=evaluation)
    truth = data.ground_truth
    liked = np.random.default_rng([seed, 11]).random((truth.n_users, truth.n_items)) < truth.probabilities("preference")
    evaluator = data.evaluators.test
    rows = []
    for name in models:
        model = build_model(params[name]["model"], f"{name}.model", seed=seed, device=CPU)
        model.fit(data.train_data, validation=data.evaluators.validation)
        values, _ = evaluator.report(model)
        users, ranked = evaluator._last["ranked"]
        for metric in data.evaluators.setup.off_policy.metrics:
            true = offpolicy.true_value(ranked, liked, k, metric, users=users, mask=evaluator.mask).value
            for estimator in data.evaluators.setup.off_policy.estimators:
                key = f"test_{estimator}_{metric}_at_{k}"
                if key in values:
                    rows.append(
                        {"beta": beta, "seed": seed, "model": name, "estimator": estimator, "metric": metric,
                         "estimate": values[key], "truth": true, "ess": values[f"{key}_ess"]}
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="coat_like")
    parser.add_argument("--betas", nargs="+", type=float, default=[0.0, 1.0, 2.0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--models", nargs="+", default=["mf", "dual", "mostpop", "ease"])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--n-boot", type=int, default=0, help="bootstrap resamples per estimate (0: none; the spread is over seeds)")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    torch.set_num_threads(1)
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT) as session:
        params = session.load_context().params
    started = time.perf_counter()
    rows = []
    for beta in args.betas:
        for seed in parse_seeds(args.seeds):
            rows += world_rows(params, args.preset, beta, seed, args.models, args.k, args.n_boot)
            print(f"β {beta:g}, seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    table["error"] = table["estimate"] - table["truth"]
    out = PROJECT / "data/08_reporting/offpolicy_study.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    summary = table.groupby(["beta", "metric", "estimator", "model"], sort=True).agg(
        truth=("truth", "mean"), estimate=("estimate", "mean"), bias=("error", "mean"), sd=("error", "std"),
        rmse=("error", lambda e: float(np.sqrt(np.mean(np.square(e))))), ess=("ess", "median"),
    )
    print(f"\n{args.preset}, β {args.betas}, seeds {args.seeds}, @{args.k}: {time.perf_counter() - started:.0f} s ({out})\n")
    print("| β | metric | estimator | model | truth | estimate | bias | sd over seeds | RMSE | median ESS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (beta, metric, estimator, model), r in summary.iterrows():
        print(f"| {beta:g} | {metric} | {estimator} | {model} | {r.truth:.4f} | {r.estimate:.4f} | {r.bias:+.4f} | {r.sd:.4f} | {r.rmse:.4f} | {r.ess:.0f} |")


if __name__ == "__main__":
    main()
