"""``python -m debias_pipeline.experiments.summary``: print the newest metrics of every model and
where they are (the JSON files, and the MLflow UI command)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPORTING = Path("data/08_reporting")


def latest_metrics(reporting: Path = REPORTING) -> dict[str, tuple[Path, dict]]:
    """Model namespace -> (path, content) of its newest versioned ``metrics.json``."""
    found = {}
    for versions in sorted(reporting.glob("*/metrics.json")):
        files = sorted(versions.glob("*/metrics.json"))
        if files:
            found[versions.parent.name] = (files[-1], json.loads(files[-1].read_text()))
    return found


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main() -> int:
    found = latest_metrics()
    if not found:
        print(f"no metrics under {REPORTING}/ yet: run `kedro run --pipelines=train_dual` first")
        return 1
    print(f"{'model':<12} {'protocol':<22} {'k':>3} {'test recall':>12} {'test ndcg':>10} {'users':>6} {'skipped':>8}  file")
    for name, (path, metrics) in found.items():
        # Older reports hold one cut-off and no protocol; newer ones a list of cut-offs.
        cutoffs = metrics["k"] if isinstance(metrics["k"], list) else [metrics["k"]]
        protocol = metrics.get("protocol", "thesis")
        for k in cutoffs:
            recall, ndcg = metrics[f"test_recall_at_{k}"], metrics[f"test_ndcg_at_{k}"]
            print(
                f"{name:<12} {protocol:<22} {k:>3} {_number(recall):>12} {_number(ndcg):>10} "
                f"{metrics['test_users_evaluated']:>6} {metrics['test_users_skipped']:>8}  {path}"
            )
    print("\nAll runs, parameters, learning curves and artifacts: mlflow ui --backend-store-uri sqlite:///mlflow.db")
    return 0


if __name__ == "__main__":
    sys.exit(main())
