"""The study's hypotheses on simulated worlds: plan, worlds, fits (on Dask workers), sweep
tables, statistics, figures, report.

Namespaced ``study_hypotheses``: its datasets are ``study_hypotheses.<name>`` and its
parameters the block ``study_hypotheses`` of ``conf/base/parameters_study_hypotheses.yml``;
it shares ``evaluation``, ``binarization``, ``split``, ``propensity`` and the resolved
device with the model pipelines.
"""

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.study_hypotheses.figures import (
    plot_bias_strength,
    plot_exposure_layers,
    plot_exposure_rank,
    plot_methods,
    plot_spectra,
)
from debias_pipeline.pipelines.study_hypotheses.fits import collect_sweeps, fit_study
from debias_pipeline.pipelines.study_hypotheses.offpolicy import (
    offpolicy_mlflow_metrics,
    offpolicy_study,
    summarize_offpolicy,
)
from debias_pipeline.pipelines.study_hypotheses.plan import SWEEPS, plan_study
from debias_pipeline.pipelines.study_hypotheses.report import write_report
from debias_pipeline.pipelines.study_hypotheses.statistics import study_mlflow_metrics, summarize_study
from debias_pipeline.pipelines.study_hypotheses.worlds import simulate_worlds

NAMESPACE = "study_hypotheses"
SHARED_PARAMETERS = {"params:evaluation", "params:binarization", "params:split", "params:propensity"}
# what a world is made with: the data-processing blocks and the propensity step
WORLD_PARAMETERS = ["params:binarization", "params:split", "params:evaluation", "params:propensity"]
PLAN_PARAMETERS = ["world", "seeds", "truth", "models", "sweeps", "workers", "scheduler"]


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                plan_study,
                inputs=[f"params:{name}" for name in PLAN_PARAMETERS],
                outputs="study_plan",
                name="plan_study",
            ),
            node(
                simulate_worlds,
                inputs=["study_plan", *WORLD_PARAMETERS, "compute_device"],
                outputs=["worlds", "world_statistics"],
                name="simulate_worlds",
            ),
            node(
                fit_study,
                inputs=["study_plan", "worlds", "compute_device", "params:evaluation"],
                outputs="fits",
                name="fit_study",
            ),
            node(
                collect_sweeps,
                inputs=["study_plan", "fits", "worlds"],
                outputs=[*(f"{sweep}_runs" for sweep in SWEEPS), "spectra"],
                name="collect_sweeps",
            ),
            node(
                summarize_study,
                inputs=[
                    "models_runs",
                    "exposure_rank_runs",
                    "exposure_layers_runs",
                    "spectra_runs",
                    "bias_strength_runs",
                    "methods_runs",
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
            node(plot_methods, inputs=["summary", "params:evaluation"], outputs="methods_plot", name="plot_methods"),
            node(
                offpolicy_study,
                inputs=["study_plan", *WORLD_PARAMETERS, "compute_device"],
                outputs="offpolicy_runs",
                name="offpolicy_study",
            ),
            node(
                summarize_offpolicy,
                inputs="offpolicy_runs",
                outputs=["offpolicy_summary", "offpolicy_agreement"],
                name="summarize_offpolicy",
            ),
            node(
                offpolicy_mlflow_metrics,
                inputs=["offpolicy_summary", "params:evaluation"],
                outputs="offpolicy_mlflow_metrics",
                name="offpolicy_mlflow_metrics",
            ),
            node(
                write_report,
                inputs=[
                    "study_plan",
                    "world_statistics",
                    "summary",
                    "spectra",
                    "offpolicy_summary",
                    "offpolicy_agreement",
                    "params:evaluation",
                ],
                outputs="report",
                name="write_report",
            ),
        ],
        namespace=NAMESPACE,
        inputs={"compute_device"},
        parameters=SHARED_PARAMETERS,
    )
