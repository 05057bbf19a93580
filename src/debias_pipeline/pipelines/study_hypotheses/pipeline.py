"""The study's hypotheses on simulated worlds: plan, worlds, sweeps, summary, figures, report.

Namespaced ``study_hypotheses``: its datasets are ``study_hypotheses.<name>`` and its
parameters the block ``study_hypotheses`` of ``conf/base/parameters_study_hypotheses.yml``;
it shares ``evaluation``, ``binarization``, ``split`` and the resolved device with the
model pipelines.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.study_hypotheses.nodes import (
    plan_study,
    plot_bias_strength,
    plot_exposure_layers,
    plot_exposure_rank,
    plot_spectra,
    run_spectra_sweep,
    run_sweep,
    simulate_worlds,
    study_mlflow_metrics,
    summarize_study,
    write_report,
)

NAMESPACE = "study_hypotheses"
SHARED_PARAMETERS = {"params:evaluation", "params:binarization", "params:split"}
PLAIN_SWEEPS = ("models", "exposure_rank", "exposure_layers", "bias_strength")
FIT_INPUTS = ["study_plan", "worlds", "compute_device", "params:evaluation"]


def _sweep_node(sweep: str) -> node:
    run = update_wrapper(partial(run_sweep, sweep=sweep), run_sweep)
    return node(run, inputs=FIT_INPUTS, outputs=f"{sweep}_runs", name=f"run_{sweep}_sweep")


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                plan_study,
                inputs=["params:world", "params:seeds", "params:truth", "params:models", "params:sweeps"],
                outputs="study_plan",
                name="plan_study",
            ),
            node(
                simulate_worlds,
                inputs=["study_plan", "params:binarization", "params:split", "params:evaluation"],
                outputs=["worlds", "world_statistics"],
                name="simulate_worlds",
            ),
            *[_sweep_node(sweep) for sweep in PLAIN_SWEEPS],
            node(run_spectra_sweep, inputs=FIT_INPUTS, outputs=["spectra_runs", "spectra"], name="run_spectra_sweep"),
            node(
                summarize_study,
                inputs=[
                    "models_runs",
                    "exposure_rank_runs",
                    "exposure_layers_runs",
                    "spectra_runs",
                    "bias_strength_runs",
                    "params:evaluation",
                ],
                outputs="summary",
                name="summarize_study",
            ),
            node(
                study_mlflow_metrics,
                inputs=["summary", "params:evaluation"],
                outputs="mlflow_metrics",
                name="study_mlflow_metrics",
            ),
            node(
                plot_exposure_rank,
                inputs=["summary", "world_statistics", "study_plan", "params:evaluation"],
                outputs="exposure_rank_plot",
                name="plot_exposure_rank",
            ),
            *[
                node(plot, inputs=["summary", "params:evaluation"], outputs=f"{figure}_plot", name=f"plot_{figure}")
                for figure, plot in (("exposure_layers", plot_exposure_layers), ("bias_strength", plot_bias_strength))
            ],
            node(plot_spectra, inputs="spectra", outputs="spectra_plot", name="plot_spectra"),
            node(
                write_report,
                inputs=["study_plan", "world_statistics", "summary", "spectra", "params:evaluation"],
                outputs="report",
                name="write_report",
            ),
        ],
        namespace=NAMESPACE,
        inputs={"compute_device"},
        parameters=SHARED_PARAMETERS,
    )
