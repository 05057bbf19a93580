"""The ``ips`` protocol's off-policy estimates on a biased hold-out against the unbiased
test figure, per debiasing method, on Coat (or Yahoo! R3).

    python scripts/coat_ips_vs_unbiased.py --seeds 0-4 --root /work/shared/data --workers 3

For every seed and method (its block ``<method>.model`` from ``conf/base``, the
``propensity`` step as in the model pipelines), two fits on the same seed:

- protocol ``thesis``: trained on the biased ratings, early-stopped on 20 % of the
  unbiased ratings, judged on the other 80 % (the figure to trust);
- protocol ``ips``: trained on part of the biased log, early-stopped on its validation
  carve-out, judged on a held-out part of the same biased log by the estimators of
  ``evaluation.off_policy`` (naive, IPS, SNIPS, DR).

Printed: mean ± std over seeds of the unbiased test NDCG@K and of each estimate, and for
each estimator Spearman's ρ between the methods' mean estimates and their mean unbiased
figures (does the estimate order the methods as the unbiased test does?). The rows go to
``data/08_reporting/coat_ips_vs_unbiased.csv``. CausE is left out: it trains on part of
an unbiased sample, which protocol ``ips`` does not have.
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

from debias_pipeline.config.params import as_mapping, parse_seeds
from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.experiments.parallel import run_tasks
from debias_pipeline.pipelines.training.nodes import train_model
from debias_pipeline.training.inputs import process_dataset
from debias_pipeline.training.propensities import attach_propensities, estimate_propensities

PROJECT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
METHODS = ["mf", "dual", "relmf", "mf_ips", "dr_jl", "pda", "macr", "dice"]
ESTIMATORS = ["naive", "ips", "snips", "dr"]


def fit_and_report(raw, dataset: str, params: dict, protocol: str, seed: int, methods: list[str]) -> dict[str, dict]:
    """Each method's test report under ``protocol`` on ``seed``'s split."""
    evaluation = {**as_mapping(params["evaluation"]), "protocol": protocol, "off_policy": {"n_boot": 0}}
    data = process_dataset(
        raw, dataset, seed=seed, binarization=params.get("binarization"), preprocessing=params.get("preprocessing"),
        split=params.get("split"), evaluation=evaluation,
    )
    propensities, _ = estimate_propensities(
        data.interaction_split, data.train_data, data.evaluators, data.ground_truth, params.get("propensity", {}), seed, CPU
    )
    train = attach_propensities(data.train_data, propensities)
    reports = {}
    for method in methods:
        model, *_ = train_model(train, data.evaluators, params[method]["model"], seed, CPU, where=f"{method}.model")
        reports[method], _ = data.evaluators.test.report(model)
    return reports


def seed_rows(raw, dataset: str, params: dict, methods: list[str], k: int, seed: int) -> list[dict]:
    """Per method on ``seed``: the unbiased test NDCG@K and each estimate with its ESS."""
    torch.set_num_threads(1)
    unbiased = fit_and_report(raw, dataset, params, "thesis", seed, methods)
    estimated = fit_and_report(raw, dataset, params, "ips", seed, methods)
    rows = []
    for method in methods:
        row = {"seed": seed, "method": method, "unbiased": unbiased[method][f"test_ndcg_at_{k}"]}
        for estimator in ESTIMATORS:
            key = f"test_{estimator}_ndcg_at_{k}"
            row[estimator] = estimated[method].get(key, np.nan)
            row[f"{estimator}_ess"] = estimated[method].get(f"{key}_ess", np.nan)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="coat")
    parser.add_argument("--root", default="data/01_raw", help="the folder holding <dataset>/")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="seeds at once, on a local Dask cluster")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    torch.set_num_threads(1)
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT) as session:
        params = session.load_context().params
    params = {**params, "evaluation": {**as_mapping(params.get("evaluation", {})), "k": [args.k]}}
    raw = RawDataset(args.dataset, root=args.root).load()
    started = time.perf_counter()
    shared = (raw, args.dataset, params, args.methods, args.k)
    per_seed = run_tasks(seed_rows, shared, [(seed,) for seed in parse_seeds(args.seeds)], args.workers)
    table = pd.DataFrame([row for rows in per_seed for row in rows])
    out = PROJECT / "data/08_reporting/coat_ips_vs_unbiased.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    columns = ["unbiased", *ESTIMATORS]
    means, stds = table.groupby("method", sort=False)[columns].mean(), table.groupby("method", sort=False)[columns].std()
    print(f"\n{args.dataset}, seeds {args.seeds}, NDCG@{args.k}: {time.perf_counter() - started:.0f} s ({out})\n")
    print("| method | unbiased test (thesis) | " + " | ".join(f"{e} (ips, biased hold-out)" for e in ESTIMATORS) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for method in means.index:
        cells = [f"{means.at[method, c]:.4f} ± {stds.at[method, c]:.4f}" for c in columns]
        print(f"| {method} | " + " | ".join(cells) + " |")
    rho = [means[e].rank().corr(means["unbiased"].rank()) for e in ESTIMATORS]
    print("| Spearman ρ with the unbiased order | – | " + " | ".join(f"{r:+.2f}" for r in rho) + " |")


if __name__ == "__main__":
    main()
