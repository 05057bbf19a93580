"""The ``tune`` pipeline's nodes: run the Optuna study of one model block on the
validation metric, then report it (trials, best values, plots, nested MLflow runs)."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.figure  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from debias_pipeline.config.params import lookup, set_dotted  # noqa: E402
from debias_pipeline.evaluation.evaluators import Evaluators  # noqa: E402
from debias_pipeline.experiments.tuning import TuneConfig, optimize  # noqa: E402
from debias_pipeline.models.contract import TrainData  # noqa: E402
from debias_pipeline.models.registry import build_model  # noqa: E402
from debias_pipeline.training.inputs import treatment_inputs  # noqa: E402
from debias_pipeline.training.tracking import log_nested_run  # noqa: E402

logger = logging.getLogger(__name__)


def run_study(
    train_data: TrainData,
    evaluators: Evaluators,
    parameters: dict[str, Any],
    tune: TuneConfig,
    dataset: str,
    seed: int,
    compute_device: torch.device,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Bring the study ``<dataset>-<model>`` (or ``tune.study_name``) to
    ``tune.n_trials`` finished trials, each scored by the validation metric only.

    Returns:
        The study's trials (one row each: number, state, value, parameters, epochs);
        the best values as parameter overrides (``{<model>: {model: {...}}}``, a YAML
        artifact a later run can use); a summary (study, storage, best value, counts).
    """
    name = tune.study_name or f"{dataset}-{tune.model}"
    base = lookup(parameters, f"{tune.model}.model")
    # Every trial has the run's seed, so one model of the block says what CausE trains on.
    probe = build_model(base, f"{tune.model}.model", seed=seed, device=compute_device)
    train_data, evaluators = treatment_inputs(probe, train_data, evaluators)
    study = optimize(tune, name, base, train_data, evaluators.validation, seed, compute_device)
    trials = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    trials["evaluations"] = [len(t.intermediate_values) for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"study {name!r} has no complete trial (all {len(study.trials)} pruned or failed)")
    best = study.best_trial
    overrides: dict[str, Any] = {}
    for dotted, value in best.params.items():
        set_dotted(overrides, f"{tune.model}.model.{dotted}", value)
    counts = trials["state"].value_counts().to_dict()
    summary = {
        "study": name,
        "storage": tune.storage,
        "metric": f"validation_{evaluators.validation.metric}",
        "best_value": float(best.value),
        "best_trial": int(best.number),
        "best_params": dict(best.params),
        "trials": {str(k): int(v) for k, v in counts.items()},
    }
    logger.info("study %s: best validation %s %.4f at trial %d: %s", name, evaluators.validation.metric, best.value, best.number, best.params)
    _log_trials(study, tune.model)
    return trials, overrides, summary


def _log_trials(study: optuna.Study, model: str) -> None:
    """Every trial as a nested MLflow run of the active run: its values, state, value
    and validation curve (nothing when no run is active)."""
    for trial in study.trials:
        log_nested_run(
            f"{study.study_name} · trial {trial.number}",
            {f"{model}.model.{k}": v for k, v in trial.params.items()},
            {"validation_best": trial.value},
            {"epoch_validation": [{"step": s, "value": v} for s, v in sorted(trial.intermediate_values.items())]},
            tags={"optuna.study": study.study_name, "optuna.trial": trial.number, "optuna.state": trial.state.name},
        )


def plot_study(trials: pd.DataFrame, summary: dict[str, Any], tune: TuneConfig) -> tuple[matplotlib.figure.Figure, ...]:
    """Optimization history, parameter importances and parallel coordinates (Optuna's
    matplotlib plots) of the stored study."""
    from optuna.visualization import matplotlib as plots

    study = optuna.load_study(study_name=summary["study"], storage=tune.storage)
    figures = [plots.plot_optimization_history(study).figure]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) >= 2 and len(study.best_params) >= 1:
        try:
            figures.append(plots.plot_param_importances(study).figure)
        except (RuntimeError, ValueError) as error:  # a constant parameter or too few trials
            logger.warning("no parameter importances: %s", error)
            figures.append(matplotlib.figure.Figure())
        figures.append(plots.plot_parallel_coordinate(study).figure)
    else:
        figures += [matplotlib.figure.Figure(), matplotlib.figure.Figure()]
    return tuple(figures)
