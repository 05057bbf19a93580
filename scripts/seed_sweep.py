"""Run model pipelines over several seeds and compare them with a paired test.

    python scripts/seed_sweep.py --dataset coat --models mf dual --seeds 0 1 2 3 4
    python scripts/seed_sweep.py --dataset coat --models mf dual --set weight_decay=1e-5
    python scripts/seed_sweep.py --dataset movielens_100k --models mf lightgcn --params evaluation.protocol=leave_one_out

Each (model, seed) is one ``kedro run --pipelines=train_<model> --params=dataset=..,seed=..``
in this process, so every run is in MLflow as usual. With ``--pipeline``, each seed is
one run of that pipeline and every model of ``--models`` is read from it:

    python scripts/seed_sweep.py --dataset movielens_100k --pipeline train_neumf --models gmf mlp neumf --set embedding_dim=16 --params evaluation.protocol=leave_one_out

Two settings of one model: sweep one with ``--output``, then the other with
``--baseline`` set to that file (same dataset and seeds), which adds the paired test of
each model against the baseline's runs of the same model:

    python scripts/seed_sweep.py --dataset lastfm --models lightgcn --output exact.json
    python scripts/seed_sweep.py --dataset lastfm --models lightgcn --set propagation=stale --baseline exact.json
 The seed sets the split and the
initialization; runs with the same seed share the split, which is what makes the test
paired. Prints mean ± std (sample std, ddof=1) of the validation selection metric and
of the test metrics at every cut-off of the protocol (Recall and NDCG; HR too under
leave_one_out), the wall time per run and, for every model after the first, a paired
t-test against the first on each test metric.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from omegaconf import OmegaConf
from scipy import stats


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``key=value`` strings parsed as ``kedro run --params`` parses them."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(items)) if items else {}


def run_once(
    project: Path,
    models: list[str],
    dataset: str,
    seed: int,
    overrides: dict[str, object],
    params: dict[str, object],
    pipeline: str | None = None,
) -> dict[str, dict]:
    """One run of ``pipeline`` (default ``train_<model>`` of the only model); the test
    and validation metrics of every model of ``models`` in it, and the run's seconds."""
    runtime = OmegaConf.to_container(
        OmegaConf.merge(params, {"dataset": dataset, "seed": seed}, {m: {"model": dict(overrides)} for m in models if overrides})
    )
    started = time.perf_counter()
    with KedroSession.create(project_path=project, runtime_params=runtime) as session:
        session.run(pipeline_names=[pipeline or f"train_{models[0]}"])
        version = session.session_id
    seconds = time.perf_counter() - started
    results = {}
    for model in models:
        path = project / "data/08_reporting" / model / "metrics.json" / version / "metrics.json"
        results[model] = {**json.loads(path.read_text()), "seconds": seconds}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--models", nargs="+", default=["mf", "dual"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", nargs="*", default=[], help="model parameter overrides key=value (every model)")
    parser.add_argument("--params", nargs="*", default=[], help="other parameter overrides key=value (evaluation.protocol=...)")
    parser.add_argument("--output", type=Path, help="write the per-seed results as JSON here")
    parser.add_argument("--pipeline", help="run this pipeline once per seed and read every model of --models from it")
    parser.add_argument("--baseline", type=Path, help="an --output of the same seeds: paired tests against its runs")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

    project = Path.cwd()
    bootstrap_project(project)
    overrides = parse_overrides(args.set)
    params = parse_overrides(args.params)
    if args.pipeline:
        runs = [run_once(project, args.models, args.dataset, s, overrides, params, args.pipeline) for s in args.seeds]
        results = {m: [run[m] for run in runs] for m in args.models}
    else:
        results = {m: [run_once(project, [m], args.dataset, s, overrides, params)[m] for s in args.seeds] for m in args.models}
    first = results[args.models[0]][0]
    names = ["recall", "ndcg"] + (["hr"] if first["protocol"] == "leave_one_out" else [])
    keys = [f"validation_{first['selection_metric']}"] + [f"test_{n}_at_{k}" for k in first["k"] for n in names]

    print(f"\ndataset={args.dataset} protocol={first['protocol']} seeds={args.seeds} overrides={overrides} params={params}")
    print(f"{'model':<10}" + "".join(f"{key:>26}" for key in keys) + f"{'best epochs':>16}{'s/run':>8}")
    for model, runs in results.items():
        cells = []
        for key in keys:
            values = np.array([r[key] for r in runs])
            cells.append(f"{values.mean():.4f} ± {values.std(ddof=1):.4f}".rjust(26))
        known = [r["best_epoch"] for r in runs if r["best_epoch"] is not None]  # an ensemble's fits keep their own
        epochs = f"{min(known)} to {max(known)}" if known else "–"
        seconds = np.median([r["seconds"] for r in runs])
        print(f"{model:<10}" + "".join(cells) + f"{epochs:>16}{seconds:>8.0f}")
    reference = args.models[0]
    for model in args.models[1:]:
        for key in keys[1:]:
            a = np.array([r[key] for r in results[reference]])
            b = np.array([r[key] for r in results[model]])
            test = stats.ttest_rel(b, a)
            print(f"{model} vs {reference} {key}: mean diff {np.mean(b - a):+.4f}, paired t = {test.statistic:.2f}, p = {test.pvalue:.3f}")
    if args.baseline:
        baseline = json.loads(args.baseline.read_text())
        if baseline["seeds"] != args.seeds:
            raise SystemExit(f"--baseline has seeds {baseline['seeds']}, this sweep {args.seeds}")
        for model in args.models:
            for key in keys[1:]:
                a = np.array([r[key] for r in baseline["results"][model]])
                b = np.array([r[key] for r in results[model]])
                test = stats.ttest_rel(b, a)
                print(
                    f"{model} vs baseline {key}: {b.mean():.4f} vs {a.mean():.4f}, mean diff {np.mean(b - a):+.4f}, "
                    f"paired t = {test.statistic:.2f}, p = {test.pvalue:.3f}"
                )
    if args.output:
        args.output.write_text(json.dumps({"seeds": args.seeds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
