"""The popularity bias and coverage of each row's recommendations, next to its accuracy:
ARP, APLT, the Gini index of item exposure and item coverage of the test users' top-K
lists (``evaluation.popularity``; ``Evaluators.popularity_report``), at the protocol's
first cut-off, mean ± std over the seeds of the selected fits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from debias_pipeline.evaluation.evaluators import Evaluators

# (run column, report name of ``popularity_metrics``, table header)
POPULARITY = (
    ("test_arp", "arp", "ARP"),
    ("test_aplt", "aplt", "APLT"),
    ("test_exposure_gini", "exposure_gini", "Gini"),
    ("test_item_coverage", "item_coverage", "coverage"),
)
POPULARITY_METRICS = tuple(column for column, _, _ in POPULARITY)


def test_popularity(model: Any, evaluators: Evaluators, test_predictions: pd.DataFrame) -> dict[str, float]:
    """The popularity metrics of ``model``'s test lists at the protocol's first cut-off,
    under the run columns of ``POPULARITY_METRICS``."""
    k = evaluators.setup.k
    values = evaluators.popularity_report(model, test_predictions)
    return {column: float(values[f"test_{name}_at_{k}"]) for column, name, _ in POPULARITY}


def popularity_lines(selected: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per row (in ``labels`` order): the mean and sample std over seeds of each
    popularity metric of the selected fits (NaN where the runs have no such column)."""
    lines = []
    for label in labels:
        runs = selected[selected["row"] == label]
        line: dict[str, Any] = {"row": label}
        for column in POPULARITY_METRICS:
            values = runs[column].to_numpy(np.float64) if column in runs else np.array([])
            line[f"{column}_mean"] = float(values.mean()) if values.size else float("nan")
            line[f"{column}_std"] = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        lines.append(line)
    return pd.DataFrame(lines)


def popularity_markdown(table: pd.DataFrame, k: int) -> str:
    """The popularity columns of the comparison table as a Markdown section."""

    def cell(mean: float, std: float) -> str:
        if math.isnan(mean):
            return "–"
        return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"

    header = ["table", "row", *(f"{label}@{k}" for _, _, label in POPULARITY)]
    rows = [
        [str(line["table"]), str(line["row"]), *(cell(line[f"{c}_mean"], line[f"{c}_std"]) for c in POPULARITY_METRICS)]
        for _, line in table.iterrows()
    ]
    return "\n".join(
        [
            f"## Popularity bias and coverage of the test users' top {k}",
            "",
            (
                "ARP: the mean train popularity of the listed items; APLT: the share of listed items outside the "
                "20 % most popular; Gini: how unequally the catalogue is listed (0: evenly); coverage: the share of "
                "the catalogue listed at least once. Mean ± std over the seeds of each row's selected fit."
            ),
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
    )
