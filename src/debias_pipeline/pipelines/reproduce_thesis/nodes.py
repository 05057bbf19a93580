"""Nodes that run the study's tables over several seeds and compare them honestly.

Each row of ``reproduce_thesis.rows`` names a base model block (``<base>.model``),
fixed changes (``set``) and, optionally, hyperparameters the study tuned (``select``:
every combination is trained, the one with the best validation NDCG@k is kept, per
seed). Each seed draws the split and the initialization anew; every candidate is trained with
early stopping on validation, validation and test metrics are recorded, and selection never looks at test.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from pydantic import Field, model_validator  # noqa: E402

from debias_pipeline.config.params import Params, as_mapping, build_config, closest, parse_seeds, require, set_dotted  # noqa: E402
from debias_pipeline.data.processing import build_normalized_adjacency, train_positive_matrix  # noqa: E402
from debias_pipeline.data.registry import dataset_spec  # noqa: E402
from debias_pipeline.evaluation.evaluators import Evaluators  # noqa: E402
from debias_pipeline.evaluation.protocols import SPLITS, EvaluationSetup, evaluation_setup  # noqa: E402
from debias_pipeline.evaluation.splits import split_for_protocol  # noqa: E402
from debias_pipeline.experiments.parallel import run_tasks  # noqa: E402
from debias_pipeline.models.contract import TrainData  # noqa: E402
from debias_pipeline.models.registry import build_model, check_model_fits_protocol  # noqa: E402
from debias_pipeline.pipelines.reproduce_thesis.popularity import POPULARITY_METRICS, test_popularity  # noqa: E402
from debias_pipeline.training.inputs import treatment_inputs  # noqa: E402
from debias_pipeline.training.tracking import flat_params, learning_curves, log_nested_run  # noqa: E402

logger = logging.getLogger(__name__)


class ThesisRow(Params):
    """One row of the comparison table.

    Attributes:
        label: the row's name in the table.
        table: the study's table it reproduces ("5.2", "5.3", "5.4" or "extra").
        base: namespace of the model block it starts from (``<base>.model``).
        set: dotted changes to that block (``exposure.num_layers: 3``).
        select: dotted hyperparameter -> candidate values, chosen on validation.
        study: dataset -> [Recall@5, NDCG@5] the study reports (null where it has none).
    """

    label: str
    table: str
    base: str
    set: dict[str, Any] = Field(default_factory=dict)
    select: dict[str, list[Any]] = Field(default_factory=dict)
    study: dict[str, list[float | None]] = Field(default_factory=dict)


class ThesisConfig(Params):
    """The ``reproduce_thesis`` parameter block.

    Attributes:
        seeds: the seeds (``parse_seeds``: also ``"0-9"`` from the command line); one
            seed runs, with the paired tests reported as not available.
        reference: the row every other row is compared with (paired tests).
        rows: the table's rows (``ThesisRow``), in order.
        only: run only these rows (labels, or one string of labels joined by ``|``) and
            the reference; ``null``: every row.
        workers: fits at once on a local Dask cluster of this many processes.
        scheduler: an existing Dask scheduler (``tcp://host:8786``) instead.
        spectra_rows: the rows whose selected models' spectra e_j (first seed) are plotted.
        exposure_size_row: the row whose ``exposure.embedding_dim`` choices make the
            exposure-size figure.
        eigen_grid_row: the row whose eigen grid makes the eigen-penalty figure.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    reference: str = "MF"
    rows: tuple[ThesisRow, ...] = ()
    only: tuple[str, ...] | None = None
    workers: int = 1
    scheduler: str | None = None
    spectra_rows: tuple[str, ...] = ("dual, baseline (MF x MF)", "dual, eigen")
    exposure_size_row: str = "dual, dimension"
    eigen_grid_row: str = "dual, eigen"

    @model_validator(mode="before")
    @classmethod
    def _command_line_forms(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if "seeds" in data:
            data["seeds"] = parse_seeds(data["seeds"])
        if isinstance(data.get("only"), str):
            data["only"] = tuple(label.strip() for label in data["only"].split("|") if label.strip())
        only = data.get("only")
        if only:
            rows = list(data.get("rows") or ())
            labels = [row.label if isinstance(row, ThesisRow) else row.get("label") for row in rows]
            unknown = [label for label in only if label not in labels]
            if unknown:
                raise ValueError(f"only names rows that do not exist: {unknown}{closest(unknown[0], labels)}")
            keep = set(only) | {data.get("reference", "MF")}
            data["rows"] = tuple(row for row, label in zip(rows, labels, strict=True) if label in keep)
        return data

    def check(self) -> None:
        require(len(self.seeds) >= 1, "seeds must hold at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), f"seeds must be distinct, got {list(self.seeds)}")
        require(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        labels = [row.label for row in self.rows]
        require(len(set(labels)) == len(labels), f"rows must have distinct labels, got {labels}")
        require(self.reference in labels, f"reference must be one of the row labels {labels}, got {self.reference!r}")


def thesis_config(block: Mapping[str, Any] | ThesisConfig) -> ThesisConfig:
    """Check and type the ``reproduce_thesis`` block (errors name the parameter)."""
    return build_config(ThesisConfig, block, "reproduce_thesis")


def candidate_blocks(row: ThesisRow, parameters: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (choice, model block) a row trains: the base block with ``set`` applied,
    then each combination of the ``select`` values."""
    if row.base not in parameters or "model" not in parameters[row.base]:
        raise ValueError(f"row {row.label!r}: no parameter block '{row.base}.model'")
    base = copy.deepcopy(as_mapping(parameters[row.base]["model"]))
    for dotted, value in row.set.items():
        set_dotted(base, dotted, value)
    names = list(row.select)
    candidates = []
    for values in itertools.product(*(row.select[name] for name in names)) if names else [()]:
        choice = dict(zip(names, values, strict=True))
        block = copy.deepcopy(base)
        for dotted, value in choice.items():
            set_dotted(block, dotted, value)
        candidates.append((choice, block))
    return candidates


_METRIC_NAMES = ("validation_recall", "validation_ndcg", "validation_selection", "test_recall", "test_ndcg", *POPULARITY_METRICS)


def _selection_score(record: dict[str, Any]) -> float:
    value = record["validation_selection"]
    return -math.inf if value != value else value


def _split_metrics(model: Any, evaluators: Evaluators) -> dict[str, float]:
    """Recall and NDCG at the protocol's first cut-off on both splits (NaN when undefined), test popularity."""
    result, k = {}, evaluators.setup.k
    for name in SPLITS:
        values, predictions = getattr(evaluators, name).report(model)
        for metric in ("recall", "ndcg"):
            value = values[f"{name}_{metric}_at_{k}"]
            result[f"{name}_{metric}"] = float("nan") if value is None else value
        if name == "validation":
            value = values[f"validation_{evaluators.setup.selection_key}"]
            result["validation_selection"] = float("nan") if value is None else value
    return {**result, **test_popularity(model, evaluators, predictions)}  # the test split's (the last) lists


def _seed_data(
    interactions: pd.DataFrame, train_data: TrainData, parameters: dict[str, Any], setup: EvaluationSetup, seed: int
) -> tuple[TrainData, Evaluators]:
    """The protocol's split for ``seed``, with its train matrix, graph and evaluators."""
    split = split_for_protocol(interactions, setup, parameters.get("split"), dataset_spec(parameters["dataset"]), seed)
    matrix = train_positive_matrix(split, train_data.interactions.shape)
    data = dataclasses.replace(train_data, interactions=matrix, adjacency=build_normalized_adjacency(matrix))
    return data, Evaluators.build(split, matrix, setup)


def plan_thesis_grid(parameters: dict[str, Any]) -> pd.DataFrame:
    """Every (seed, row, candidate) the study trains, in order: the row's label and
    table, the candidate's index, its choice and its model block (JSON)."""
    config = thesis_config(parameters["reproduce_thesis"])
    plan = []
    for seed in config.seeds:
        for row in config.rows:
            for index, (choice, block) in enumerate(candidate_blocks(row, parameters)):
                plan.append(
                    {
                        "row": row.label,
                        "table": row.table,
                        "seed": seed,
                        "candidate": index,
                        "choice": json.dumps(choice),
                        "block": json.dumps(block, sort_keys=True),
                    }
                )
    return pd.DataFrame(plan)


def fit_candidate(
    interactions: pd.DataFrame,
    train_data: TrainData,
    parameters: dict[str, Any],
    device: str,
    seed: int,
    block: str,
    label: str,
) -> dict[str, Any]:
    """Train one model block (JSON) on ``seed``'s split with early stopping on
    validation: its validation and test metrics, best epoch, wall time and, for a dual
    model, its e_j spectra. A candidate whose loss diverges is recorded as such."""
    setup = evaluation_setup(parameters.get("evaluation"), parameters["dataset"])
    data, evaluators = _seed_data(interactions, train_data, parameters, setup, seed)
    started = time.perf_counter()
    model = build_model(json.loads(block), f"reproduce_thesis[{label}]", seed=seed, device=torch.device(device))
    data, evaluators = treatment_inputs(model, data, evaluators)  # CausE: half the validation users
    spectra = None
    try:
        check_model_fits_protocol(type(model), evaluators.setup.protocol.name)
        model.fit(data, validation=evaluators.validation)
        metrics = _split_metrics(model, evaluators)
        metrics.update(best_epoch=model.best_epoch, diverged=False)
        spectra = model.spectra() if hasattr(model, "spectra") else None
    except FloatingPointError as error:
        # A candidate whose loss diverges (e.g. a negative eigen λ stronger than the L2
        # term) is recorded and never selected.
        logger.warning("%s seed %d: %s", label, seed, error)
        metrics = {name: float("nan") for name in _METRIC_NAMES}
        metrics.update(best_epoch=None, diverged=True)
    curves = learning_curves(model, f"validation_{evaluators.validation.metric}")
    seconds = time.perf_counter() - started
    return {"block": block, "seed": seed, **metrics, "seconds": seconds, "spectra": spectra, "curves": curves}


def fit_thesis_grid(
    thesis_plan: pd.DataFrame,
    interactions: pd.DataFrame,
    train_data: TrainData,
    parameters: dict[str, Any],
    compute_device: torch.device,
) -> pd.DataFrame:
    """Fit every distinct (model block, seed) of the plan once (rows that share a
    configuration share its fit), on ``reproduce_thesis.workers`` Dask workers (or the
    cluster of ``reproduce_thesis.scheduler``); one line per fit."""
    config = thesis_config(parameters["reproduce_thesis"])
    distinct = thesis_plan.drop_duplicates(["block", "seed"])
    tasks = [(int(r.seed), r.block, r.row) for r in distinct.itertuples()]
    fits = run_tasks(
        fit_candidate,
        (interactions, train_data, parameters, compute_device.type),
        tasks,
        workers=config.workers,
        scheduler=config.scheduler,
    )
    return pd.DataFrame(fits)


def select_thesis_grid(
    thesis_plan: pd.DataFrame, thesis_fits: pd.DataFrame, parameters: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Per row and seed, the candidate with the best validation selection metric (ties:
    the first); each selected fit a nested MLflow run.

    Returns:
        One line per (row, seed, candidate) with its choice, validation and test
        metrics, best epoch, wall time and whether validation selected it; and the e_j
        spectra of the selected models of ``spectra_rows`` for the first seed.
    """
    config = thesis_config(parameters["reproduce_thesis"])
    k = evaluation_setup(parameters.get("evaluation"), parameters["dataset"]).k
    fits = {(f["block"], f["seed"]): f for f in thesis_fits.to_dict("records")}
    rows = {row.label: row for row in config.rows}
    records: list[dict[str, Any]] = []
    spectra: dict[str, dict[str, np.ndarray]] = {}
    for (seed, label), group in thesis_plan.groupby(["seed", "row"], sort=False):
        row_records = []
        for line in group.itertuples():
            fit = fits[(line.block, seed)]
            metrics = {name: fit[name] for name in (*_METRIC_NAMES, "best_epoch", "diverged", "seconds")}
            row_records.append({"row": label, "table": line.table, "seed": seed, "choice": line.choice, **metrics})
        best = max(range(len(row_records)), key=lambda i: (_selection_score(row_records[i]), -i))
        for i, record in enumerate(row_records):
            record["selected"] = i == best
        selected, best_block = row_records[best], group.iloc[best]["block"]
        logger.info(
            "%s seed %d: %s validation NDCG@%d %.4f, test Recall@%d %.4f",
            label, seed, selected["choice"], k, selected["validation_ndcg"], k, selected["test_recall"],
        )
        log_nested_run(
            f"{label} / seed {seed}",
            {"row": label, "table": rows[label].table, "seed": seed, **flat_params(json.loads(best_block), "model")},
            {name: selected[name] for name in ("validation_ndcg", "validation_recall", "test_recall", "test_ndcg", "seconds")},
            fits[(best_block, seed)]["curves"],
        )
        best_spectra = fits[(best_block, seed)]["spectra"]
        if label in config.spectra_rows and best_spectra is not None and seed == config.seeds[0]:
            spectra[label] = best_spectra
        records.extend(row_records)
    return pd.DataFrame.from_records(records), spectra


def run_thesis_grid(
    interactions: pd.DataFrame,
    train_data: TrainData,
    parameters: dict[str, Any],
    compute_device: torch.device,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """The three stages in a row (plan, fit, select): every row's candidates for every
    seed, selected on validation (see ``select_thesis_grid``)."""
    plan = plan_thesis_grid(parameters)
    fits = fit_thesis_grid(plan, interactions, train_data, parameters, compute_device)
    return select_thesis_grid(plan, fits, parameters)


def _mean_std(values: np.ndarray) -> str:
    if values.size < 2:  # one seed: no spread
        return f"{values.mean():.4f} (one seed)"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def _paired_p(values: np.ndarray, reference: np.ndarray) -> float:
    """The paired t-test's p-value; NaN (reported as not available) with one seed or no
    difference at all."""
    differences = values - reference
    if values.size < 2 or np.allclose(differences, 0.0):
        return float("nan")
    from scipy import stats  # scipy.stats takes ~0.7 s to import: only when needed

    return float(stats.ttest_rel(values, reference).pvalue)


def summarize_thesis(
    thesis_runs: pd.DataFrame, reproduce_thesis: ThesisConfig, dataset: str
) -> tuple[pd.DataFrame, str]:
    """The comparison table: mean ± std per row, change and paired test against the
    reference row, the study's figure, the wall time.

    Returns:
        The table (one line per row) and the same as Markdown.
    """
    config = thesis_config(reproduce_thesis)
    selected = thesis_runs[thesis_runs["selected"]].sort_values("seed")
    reference = selected[selected["row"] == config.reference]
    lines = []
    for row in config.rows:
        runs = selected[selected["row"] == row.label]
        recall, ndcg = runs["test_recall"].to_numpy(), runs["test_ndcg"].to_numpy()
        study = row.study.get(dataset) or [None, None]
        all_candidates = thesis_runs[thesis_runs["row"] == row.label]
        lines.append(
            {
                "table": row.table,
                "row": row.label,
                "recall_at_5": _mean_std(recall),
                "ndcg_at_5": _mean_std(ndcg),
                "recall_mean": recall.mean(),
                "recall_std": recall.std(ddof=1) if recall.size > 1 else float("nan"),
                "ndcg_mean": ndcg.mean(),
                "ndcg_std": ndcg.std(ddof=1) if ndcg.size > 1 else float("nan"),
                "recall_change_vs_reference": recall.mean() / reference["test_recall"].mean() - 1.0,
                "ndcg_change_vs_reference": ndcg.mean() / reference["test_ndcg"].mean() - 1.0,
                "recall_p_vs_reference": _paired_p(recall, reference["test_recall"].to_numpy()),
                "ndcg_p_vs_reference": _paired_p(ndcg, reference["test_ndcg"].to_numpy()),
                "study_recall_at_5": study[0],
                "study_ndcg_at_5": study[1] if len(study) > 1 else None,
                "selected": "; ".join(sorted(set(runs["choice"]))) if row.select else "",
                "seconds": all_candidates.drop_duplicates(["choice", "seed"])["seconds"].sum(),
            }
        )
    table = pd.DataFrame(lines)
    return table, comparison_markdown(table, config, dataset)


def _cell(value: float | None, pattern: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def comparison_markdown(table: pd.DataFrame, config: ThesisConfig, dataset: str) -> str:
    """The comparison table as Markdown, with how it was obtained."""
    header = (
        f"# reproduce_thesis on `{dataset}`\n\n"
        f"Seeds {list(config.seeds)}; mean ± std (ddof = 1) of test Recall@5 / NDCG@5; "
        f"change and paired t-test p-value against `{config.reference}` across seeds "
        "(– where not available: one seed, or no difference); "
        "every selection (epoch and tuned hyperparameters) on validation only.\n\n"
        "| table | row | Recall@5 | NDCG@5 | ΔR vs ref | p (R) | ΔN vs ref | p (N) | study R@5 | study N@5 | selected | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r.table} | {r.row} | {r.recall_at_5} | {r.ndcg_at_5} | {_cell(r.recall_change_vs_reference, '{:+.1%}')} | "
        f"{_cell(r.recall_p_vs_reference, '{:.3f}')} | {_cell(r.ndcg_change_vs_reference, '{:+.1%}')} | "
        f"{_cell(r.ndcg_p_vs_reference, '{:.3f}')} | {_cell(r.study_recall_at_5, '{:.4f}')} | "
        f"{_cell(r.study_ndcg_at_5, '{:.4f}')} | {r.selected} | {r.seconds:.0f} |\n"
        for r in table.itertuples()
    )
    return header + body


def plot_popularity_share(interactions: pd.DataFrame) -> plt.Figure:
    """Cumulative share of positives by item popularity, biased train vs unbiased test.

    Items are ordered by their number of positives in the biased set (most popular
    first); each curve is the share of that set's positives held by the top x% items.
    """
    positives = interactions[interactions["label"] == 1]
    n_items = int(interactions["item"].max()) + 1
    counts = {
        source: np.bincount(positives.loc[positives["source"] == source, "item"], minlength=n_items)
        for source in ("biased", "unbiased")
    }
    order = np.argsort(-counts["biased"], kind="stable")
    share = np.arange(1, n_items + 1) / n_items
    figure, axis = plt.subplots(figsize=(6, 4))
    for source, name in (("biased", "biased train"), ("unbiased", "unbiased test")):
        ordered = counts[source][order]
        axis.plot(share, np.cumsum(ordered) / max(ordered.sum(), 1), label=name)
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="no popularity effect")
    axis.set_xlabel("share of items, most popular (in train) first")
    axis.set_ylabel("cumulative share of positives")
    axis.legend()
    figure.tight_layout()
    plt.close(figure)
    return figure


def plot_spectra(thesis_spectra: dict[str, dict[str, np.ndarray]]) -> plt.Figure:
    """Sorted e_j of the preference and exposure towers of each selected dual model."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, tower in zip(axes, ("preference", "exposure"), strict=True):
        for label, spectra in thesis_spectra.items():
            values = np.asarray(spectra[tower])
            axis.semilogy(np.arange(1, values.size + 1), np.maximum(values, 1e-12), label=label)
        axis.set_title(f"{tower} tower")
        axis.set_xlabel("j")
    axes[0].set_ylabel("e_j = ||U[:, j]|| · ||V[:, j]||")
    axes[0].legend()
    figure.tight_layout()
    plt.close(figure)
    return figure


def _not_run(row: str) -> plt.Figure:
    """The figure of a row left out of the run (``only``)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.axis("off")
    axis.text(0.5, 0.5, f"row '{row}' was not run (reproduce_thesis.only)", ha="center", va="center")
    plt.close(figure)
    return figure


def _candidate_curve(thesis_runs: pd.DataFrame, row: str, parameter: str) -> pd.DataFrame:
    runs = thesis_runs[thesis_runs["row"] == row].copy()
    runs[parameter] = [json.loads(choice).get(parameter) for choice in runs["choice"]]
    return runs


def plot_exposure_size(thesis_runs: pd.DataFrame, reproduce_thesis: ThesisConfig) -> plt.Figure:
    """Test Recall@5 (mean ± std over seeds) against the exposure embedding size."""
    row = thesis_config(reproduce_thesis).exposure_size_row
    if not (thesis_runs["row"] == row).any():
        return _not_run(row)
    runs = _candidate_curve(thesis_runs, row, "exposure.embedding_dim").dropna(subset=["exposure.embedding_dim"])
    summary = runs.groupby("exposure.embedding_dim")[["test_recall", "validation_ndcg"]].agg(["mean", "std"])
    figure, axis = plt.subplots(figsize=(6, 4))
    sizes = summary.index.to_numpy(dtype=float)
    axis.errorbar(sizes, summary[("test_recall", "mean")], yerr=summary[("test_recall", "std")], marker="o", capsize=3)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("exposure embedding size")
    axis.set_ylabel("test Recall@5 (mean ± std over seeds)")
    axis.set_title(row)
    figure.tight_layout()
    plt.close(figure)
    return figure


def plot_eigen_grid(thesis_runs: pd.DataFrame, reproduce_thesis: ThesisConfig) -> plt.Figure:
    """Mean test Recall@5 over the λ_o x k grid of the eigen penalty."""
    row = thesis_config(reproduce_thesis).eigen_grid_row
    if not (thesis_runs["row"] == row).any():
        return _not_run(row)
    runs = thesis_runs[thesis_runs["row"] == row].copy()
    choices = [json.loads(c) for c in runs["choice"]]
    runs["lambda"] = [c.get("eigen.lambda_exposure") for c in choices]
    runs["k"] = [c.get("eigen.k") for c in choices]
    grid = runs.dropna(subset=["lambda", "k"]).pivot_table(index="lambda", columns="k", values="test_recall", aggfunc="mean")
    figure, axis = plt.subplots(figsize=(6, 4))
    image = axis.imshow(grid.to_numpy(), cmap="viridis", aspect="auto")
    axis.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    axis.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
    axis.set_xlabel("k")
    axis.set_ylabel("λ_o (exposure)")
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        axis.text(j, i, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    figure.colorbar(image, label="test Recall@5 (mean over seeds)")
    axis.set_title(row)
    figure.tight_layout()
    plt.close(figure)
    return figure
