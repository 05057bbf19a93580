"""Choose the `best` configuration on validation: single configurations and ensembles.

    python scripts/select_best.py --seeds 100-109            # the choice (validation only)
    python scripts/select_best.py --seeds 0-9                # the same candidates on the reported seeds

Every fixed configuration of ``reproduce_thesis`` named in ``CONFIGURATIONS`` (a row
without a ``select``) is fitted on each seed's split (thesis protocol) with early
stopping, ``REPLICAS`` times where a candidate bags it (the seeds of
``ensemble.replica_seed``, as the ``ensemble`` model draws them). Each candidate is a
single configuration or an ensemble of them (``ensemble.normalized`` z scores,
averaged), so a candidate's figures are those ``train_best`` gives when ``best`` is that
candidate. Prints per candidate the mean ± std over seeds of validation NDCG@5 (the
choice: highest mean) and test Recall@5 / NDCG@5, and paired t-tests of the test
metrics against ``--reference`` rows. Test figures are printed, never used to choose.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from scipy import stats

from debias_pipeline.config.params import parse_seeds
from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.models.ensemble import normalized, replica_seed
from debias_pipeline.models.registry import build_model
from debias_pipeline.pipelines.reproduce_thesis.nodes import candidate_blocks, thesis_config
from debias_pipeline.training.inputs import process_dataset, treatment_inputs

PROJECT = Path(__file__).resolve().parents[1]
REPLICAS = 5
# Short name -> reproduce_thesis row label.
CONFIGURATIONS = {
    "mf": "MF",
    "expomf": "ExpoMF",
    "relmf": "Rel-MF (IPW)",
    "dual": "dual, baseline (MF x MF)",
    "dual_prior4": "dual, exposure prior, rank 4",
    "dual_l21": "dual, exposure 1 layer",
    "lgcn1": "LightGCN, 1 layer",
    "lgcn3": "LightGCN, 3 layers",
    "recrec_i": "ReCRec-I",
    "wmf": "WMF",
    "mf_ips": "MF-IPS",
    "dr_jl": "DR-JL",
    "cause": "CausE",  # trained on half the validation users: a candidate alone, judged on the other half
}
TEN = ("mf", "expomf", "relmf", "dual", "dual_prior4", "dual_l21", "lgcn1", "lgcn3", "recrec_i", "wmf")
# Popularity-debiasing methods users compare against: candidates on their own.
CONFIGURATIONS |= {"pda": "PD (PDA, deconfounded)", "macr": "MACR", "dice": "DICE"}
SIX = ("mf", "dual_prior4", "dual_l21", "lgcn1", "expomf", "relmf")
# Candidate -> {configuration: fits}.
CANDIDATES: dict[str, dict[str, int]] = {
    **{name: {name: 1} for name in CONFIGURATIONS},
    **{f"{name} x{REPLICAS}": {name: REPLICAS} for name in SIX},
    "ten together": {name: 1 for name in TEN},
    f"six x{REPLICAS}": {name: REPLICAS for name in SIX},
    f"ten, six of them x{REPLICAS}": {name: REPLICAS if name in SIX else 1 for name in TEN},
    "debiasing models (ExpoMF, Rel-MF, three dual, ReCRec-I)": {n: 1 for n in ("expomf", "relmf", "dual", "dual_prior4", "dual_l21", "recrec_i")},
    f"two dual variants x{REPLICAS}": {"dual_prior4": REPLICAS, "dual_l21": REPLICAS},
}


class Scores:
    """A fitted-looking model over a fixed score table, for the evaluators."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        return self.table if users is None else self.table[users]

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.table[users, items]


def configuration_blocks(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = {row.label: row for row in thesis_config(params["reproduce_thesis"]).rows}
    found = {}
    for name, label in CONFIGURATIONS.items():
        candidates = candidate_blocks(rows[label], params)
        if len(candidates) != 1:
            raise ValueError(f"row {label!r} selects a hyperparameter: not a fixed configuration")
        found[name] = candidates[0][1]
    return found


def evaluate(params: dict[str, Any], dataset: str, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per candidate, (n_seeds, 3): validation NDCG@5, test Recall@5, test NDCG@5."""
    blocks = configuration_blocks(params)
    fits = {name: max(c.get(name, 0) for c in CANDIDATES.values()) for name in CONFIGURATIONS}
    raw = RawDataset(dataset=dataset, root=str(PROJECT / "data" / "01_raw")).load()
    results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in CANDIDATES}
    for seed in seeds:
        started = time.perf_counter()
        data = process_dataset(raw, dataset, seed=seed)
        evaluators, k = data.evaluators, data.evaluators.setup.k
        tables, stopping = {}, {}
        for name, block in blocks.items():
            for replica in range(fits[name]):
                model = build_model(block, f"{name}.model", seed=replica_seed(seed, replica), device=torch.device("cpu"))
                # CausE fits on half the validation users and is stopped and judged on the other half.
                fit_data, fit_evaluators = treatment_inputs(model, data.train_data, evaluators)
                model.fit(fit_data, validation=fit_evaluators.validation)
                tables[name, replica] = normalized(model.score(), "z")
                stopping[name, replica] = fit_evaluators.validation
        for label, members in CANDIDATES.items():
            fitted = [(name, r) for name, count in members.items() for r in range(count)]
            table = sum(tables[fit] for fit in fitted) / len(fitted)
            own = [stopping[fit] for fit in fitted if stopping[fit] is not evaluators.validation]
            if own and len(fitted) > 1:
                raise ValueError(f"candidate {label!r} mixes a model trained on validation rows with others")
            validation, _ = (own[0] if own else evaluators.validation).report(Scores(table))
            test, _ = evaluators.test.report(Scores(table))
            results[label].append((validation[f"validation_ndcg_at_{k}"], test[f"test_recall_at_{k}"], test[f"test_ndcg_at_{k}"]))
        print(f"seed {seed}: {len(tables)} fits, {time.perf_counter() - started:.0f} s", flush=True)
    return {label: np.array(values) for label, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="coat")
    parser.add_argument("--seeds", default="100-109")
    parser.add_argument("--reference", nargs="+", default=["recrec_i", "mf"])
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT) as session:
        params = session.load_context().params
    seeds = parse_seeds(args.seeds)
    started = time.perf_counter()
    results = evaluate(params, args.dataset, seeds)
    print(f"\n{args.dataset}, seeds {args.seeds}: {time.perf_counter() - started:.0f} s; sorted by mean validation NDCG@5\n")
    pairs = " | ".join(f"p vs {r} (R / N)" for r in args.reference)
    print(f"| candidate | validation NDCG@5 | test Recall@5 | test NDCG@5 | {pairs} |")
    print("|---|---|---|---|" + "---|" * len(args.reference))
    for label, values in sorted(results.items(), key=lambda item: -item[1][:, 0].mean()):
        cells = [f"{values[:, c].mean():.4f} ± {values[:, c].std(ddof=1):.4f}" for c in range(3)]
        tests = []
        for reference in args.reference:
            if reference == label:
                tests.append("–")
                continue
            p = [stats.ttest_rel(values[:, c], results[reference][:, c]).pvalue for c in (1, 2)]
            tests.append(f"{p[0]:.3f} / {p[1]:.3f}")
        print(f"| {label} | {' | '.join(cells)} | {' | '.join(tests)} |")


if __name__ == "__main__":
    main()
