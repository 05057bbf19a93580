"""How well each validation signal picks the epoch: on Coat and on the simulator.

    python scripts/selection_signals.py --seeds 100-109 --models mf dual lightgcn relmf expomf
    python scripts/selection_signals.py --source simulator --bias-strength 2 --seeds 100-104

Every (model, seed) trains for the model's full epoch budget with no early stopping,
and after every epoch records the validation signals of ``protocols.SELECTIONS``
(NDCG@5 over the users with a validation positive, the pooled AUC and the mean
log-likelihood over every validation row) and the target: test NDCG@5 on Coat (thesis
protocol); on the simulator, NDCG@5 against each user's true top items
(``truth.truth_ranking_metrics``). The seeds are not those of the reported tables
(0..9), so the signal chosen here is not chosen on their test rows.

Each selection rule is then replayed on the recorded curves (``selection.stopping_pick``:
the model's patience, trailing windows 1, 3 and 5; the full curve's maximum; a fixed
epoch budget chosen on the other seeds' validation curves) and scored by Spearman's ρ
between signal and target over the epochs, the target's regret at the picked epoch
(its best value minus the picked one) and the target at the pick. Prints a Markdown
table (means over seeds, regret also as mean ± std) and writes the curves and the table
as JSON with ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from debias_pipeline.config.params import as_mapping, lookup, parse_seeds
from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.evaluation.protocols import ROW_SIGNALS, SELECTIONS
from debias_pipeline.evaluation.truth import truth_ranking_metrics
from debias_pipeline.models.early_stopping import fixed_budget_picks, rank_correlation, regret, stopping_pick
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.inputs import process_dataset, process_synthetic

PROJECT = Path(__file__).resolve().parents[1]
WINDOWS = (1, 3, 5)


class Recorder:
    """A validator that records every signal and the target at every evaluation; early
    stopping never triggers (the patience is the epoch budget)."""

    def __init__(self, evaluators: Any, target: Any) -> None:
        self.evaluators, self.target = evaluators, target
        self.k = evaluators.setup.k
        self.curves: dict[str, list[float]] = {name: [] for name in (*SELECTIONS, "target")}
        self.metric = f"ndcg_at_{self.k}"
        self.window = 1

    def score(self, model: Any) -> float:
        values, _ = self.evaluators.validation.report(model)
        self.curves["ranking"].append(values[f"validation_ndcg_at_{self.k}"])
        for name in ROW_SIGNALS:
            self.curves[name].append(values[f"validation_{name}"])
        self.curves["target"].append(self.target(model))
        return self.curves["ranking"][-1]


def worlds(source: str, seeds: list[int], params: dict[str, Any], bias_strength: float):
    """(seed, train data, evaluators, target) for every seed."""
    k = 5
    if source == "coat":
        raw = RawDataset(dataset="coat", root=str(PROJECT / "data" / "01_raw")).load()
        for seed in seeds:
            data = process_dataset(raw, "coat", seed=seed)

            def target(model: Any, data=data) -> float:
                values, _ = data.evaluators.test.report(model)
                return values[f"test_ndcg_at_{k}"]

            yield seed, data.train_data, data.evaluators, target
        return
    world = {**as_mapping(lookup(params, "study_hypotheses.world")), "bias_strength": bias_strength}
    top_n = 10  # the relevant set: each user's 10 most preferred items without a train positive (study_hypotheses)
    for seed in seeds:
        _, train, evaluators, truth = process_synthetic(world, {}, {}, {}, seed)

        def target(model: Any, train=train, truth=truth) -> float:
            return truth_ranking_metrics(model.score, truth, train.interactions, k, top_n).ndcg

        yield seed, train, evaluators, target


def record(source: str, models: list[str], seeds: list[int], params: dict[str, Any], bias_strength: float) -> dict:
    """Every model's curves per seed: ``{model: {"patience": p, "seeds": {seed: curves}}}``."""
    results: dict[str, Any] = {m: {"seeds": {}} for m in models}
    for seed, train, evaluators, target in worlds(source, seeds, params, bias_strength):
        for name in models:
            model = build_model(lookup(params, f"{name}.model"), f"{name}.model", seed=seed, device=torch.device("cpu"))
            results[name]["patience"] = model.config.patience
            # The whole epoch budget, never stopped early.
            model = type(model)(model.config.model_copy(update={"patience": model.config.epochs}), seed=seed)
            recorder = Recorder(evaluators, target)
            started = time.perf_counter()
            model.fit(train, validation=recorder)
            results[name]["seeds"][seed] = recorder.curves
            print(f"{name} seed {seed}: {len(recorder.curves['target'])} epochs, {time.perf_counter() - started:.1f} s", flush=True)
    return results


def rules(patience: int) -> list[tuple[str, str, Any]]:
    """(signal, rule label, pick function of one curve or None for the fixed budget)."""
    found = []
    for signal in SELECTIONS:
        for window in WINDOWS:
            found.append((signal, f"patience {patience}, window {window}", lambda c, w=window: stopping_pick(c, patience, w)))
        found.append((signal, "full curve maximum", lambda c: int(np.nanargmax(c))))
        found.append((signal, "fixed budget (other seeds)", None))
    return found


def summarize(results: dict) -> list[dict[str, Any]]:
    """One line per (model, signal, rule): mean ρ, regret mean ± std, target at the pick."""
    lines = []
    for name, result in results.items():
        seeds = sorted(result["seeds"])
        curves = {s: {k: np.asarray(v, dtype=np.float64) for k, v in result["seeds"][s].items()} for s in seeds}
        for signal, label, pick in rules(result["patience"]):
            if any(np.isnan(curves[s][signal]).any() for s in seeds):
                continue  # undefined on some evaluation (e.g. no validation positive)
            if pick is None:
                if len(seeds) < 2:
                    continue
                length = min(curves[s][signal].size for s in seeds)
                picks = fixed_budget_picks(np.stack([curves[s][signal][:length] for s in seeds]))
            else:
                picks = [pick(curves[s][signal]) for s in seeds]
            regrets = [regret(curves[s]["target"], p) for s, p in zip(seeds, picks, strict=True)]
            lines.append(
                {
                    "model": name,
                    "signal": signal,
                    "rule": label,
                    "spearman": float(np.nanmean([rank_correlation(curves[s][signal], curves[s]["target"]) for s in seeds])),
                    "regret_mean": float(np.mean(regrets)),
                    "regret_std": float(np.std(regrets, ddof=1)) if len(regrets) > 1 else 0.0,
                    "target_at_pick": float(np.mean([curves[s]["target"][p] for s, p in zip(seeds, picks, strict=True)])),
                    "epoch_at_pick": float(np.mean(picks)) + 1,
                }
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("coat", "simulator"), default="coat")
    parser.add_argument("--models", nargs="+", default=["mf", "dual", "lightgcn", "relmf", "expomf"])
    parser.add_argument("--seeds", default="100-109", help="e.g. 100-109 or '100 101'")
    parser.add_argument("--bias-strength", type=float, default=2.0, help="β of the simulated world")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the curves and the table")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT) as session:
        params = session.load_context().params
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    started = time.perf_counter()
    results = record(args.source, args.models, parse_seeds(args.seeds), params, args.bias_strength)
    table = summarize(results)
    print(f"\n{args.source}, seeds {args.seeds}: {time.perf_counter() - started:.0f} s\n")
    print("| model | signal | rule | ρ | regret | target at pick | epoch |")
    print("|---|---|---|---|---|---|---|")
    for line in table:
        print(
            f"| {line['model']} | {line['signal']} | {line['rule']} | {line['spearman']:.3f} | "
            f"{line['regret_mean']:.4f} ± {line['regret_std']:.4f} | {line['target_at_pick']:.4f} | {line['epoch_at_pick']:.0f} |"
        )
    if args.output is not None:
        args.output.write_text(json.dumps({"source": args.source, "seeds": args.seeds, "curves": results, "table": table}, default=float))


if __name__ == "__main__":
    main()
