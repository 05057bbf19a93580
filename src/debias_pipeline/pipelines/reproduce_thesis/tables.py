"""The comparison table with the popularity columns beside the accuracy columns."""

from __future__ import annotations

import pandas as pd

from debias_pipeline.evaluation.protocols import EvaluationConfig, evaluation_setup
from debias_pipeline.pipelines.reproduce_thesis.nodes import ThesisConfig, summarize_thesis, thesis_config
from debias_pipeline.pipelines.reproduce_thesis.popularity import popularity_lines, popularity_markdown


def summarize_thesis_with_popularity(
    thesis_runs: pd.DataFrame, reproduce_thesis: ThesisConfig, dataset: str, evaluation: EvaluationConfig
) -> tuple[pd.DataFrame, str]:
    """``summarize_thesis``'s table and Markdown, with each row's popularity bias and
    coverage (``popularity.popularity_lines``, at the protocol's first cut-off) as columns
    ``<metric>_mean`` / ``<metric>_std`` and as a second Markdown table."""
    k = evaluation_setup(evaluation, dataset).k
    table, markdown = summarize_thesis(thesis_runs, reproduce_thesis, dataset)
    config = thesis_config(reproduce_thesis)
    selected = thesis_runs[thesis_runs["selected"]]
    lines = popularity_lines(selected, [row.label for row in config.rows])
    table = table.merge(lines, on="row", how="left")
    return table, markdown.rstrip("\n") + "\n\n" + popularity_markdown(table, k) + "\n"
