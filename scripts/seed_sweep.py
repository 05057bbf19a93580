"""Run model pipelines over several seeds and compare them with a paired test.

    python scripts/seed_sweep.py --dataset coat --models mf dual --seeds 0 1 2 3 4
    python scripts/seed_sweep.py --dataset coat --models mf dual --set weight_decay=1e-5

Each (model, seed) is one ``kedro run --pipelines=train_<model> --params=dataset=..,seed=..``
in this process, so every run is in MLflow as usual. The seed sets the unbiased split
and the initialization; runs with the same seed share the split, which is what makes
the test paired. Prints mean ± std (sample std, ddof=1) of validation and test metrics
and, for every model after the first, a paired t-test against the first on test NDCG
and Recall.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from omegaconf import OmegaConf
from scipy import stats


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``key=value`` strings parsed as ``kedro run --params`` parses them."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(items)) if items else {}


def run_once(project: Path, model: str, dataset: str, seed: int, overrides: dict[str, object]) -> dict:
    block = {key: value for key, value in overrides.items()}
    params = {"dataset": dataset, "seed": seed, model: {"model": block}} if block else {"dataset": dataset, "seed": seed}
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=[f"train_{model}"])
        version = session.session_id
    path = project / "data/08_reporting" / model / "metrics.json" / version / "metrics.json"
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--models", nargs="+", default=["mf", "dual"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", nargs="*", default=[], help="model parameter overrides key=value (every model)")
    parser.add_argument("--output", type=Path, help="write the per-seed results as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

    project = Path.cwd()
    bootstrap_project(project)
    overrides = parse_overrides(args.set)
    results = {m: [run_once(project, m, args.dataset, s, overrides) for s in args.seeds] for m in args.models}
    k = results[args.models[0]][0]["k"]
    keys = [f"validation_ndcg_at_{k}", f"test_recall_at_{k}", f"test_ndcg_at_{k}"]

    print(f"\ndataset={args.dataset} seeds={args.seeds} overrides={overrides}")
    print(f"{'model':<10}" + "".join(f"{key:>26}" for key in keys) + f"{'best epochs':>16}")
    for model, runs in results.items():
        cells = []
        for key in keys:
            values = np.array([r[key] for r in runs])
            cells.append(f"{values.mean():.4f} ± {values.std(ddof=1):.4f}".rjust(26))
        epochs = ",".join(str(r["best_epoch"]) for r in runs)
        print(f"{model:<10}" + "".join(cells) + f"{epochs:>16}")
    reference = args.models[0]
    for model in args.models[1:]:
        for key in keys[1:]:
            a = np.array([r[key] for r in results[reference]])
            b = np.array([r[key] for r in results[model]])
            test = stats.ttest_rel(b, a)
            print(f"{model} vs {reference} {key}: mean diff {np.mean(b - a):+.4f}, paired t = {test.statistic:.2f}, p = {test.pvalue:.3f}")
    if args.output:
        args.output.write_text(json.dumps({"seeds": args.seeds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
