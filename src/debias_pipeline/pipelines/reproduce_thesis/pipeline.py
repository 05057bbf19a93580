"""The study's tables over several seeds: plan, fits (in parallel on Dask workers), selection on
validation, comparison table and plots."""

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.reproduce_thesis.nodes import (
    fit_thesis_grid,
    plan_thesis_grid,
    plot_eigen_grid,
    plot_exposure_size,
    plot_popularity_share,
    plot_spectra,
    select_thesis_grid,
)
from debias_pipeline.pipelines.reproduce_thesis.tables import summarize_thesis_with_popularity


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(plan_thesis_grid, inputs="parameters", outputs="thesis_plan", name="plan_thesis_grid"),
            node(
                fit_thesis_grid,
                inputs=["thesis_plan", "interactions", "train_data", "parameters", "compute_device"],
                outputs="thesis_fits",
                name="fit_thesis_grid",
            ),
            node(
                select_thesis_grid,
                inputs=["thesis_plan", "thesis_fits", "parameters"],
                outputs=["thesis_runs", "thesis_spectra"],
                name="select_thesis_grid",
            ),
            node(
                summarize_thesis_with_popularity,
                inputs=["thesis_runs", "params:reproduce_thesis", "params:dataset", "params:evaluation"],
                outputs=["thesis_comparison", "thesis_comparison_markdown"],
                name="summarize_thesis",
            ),
            node(plot_popularity_share, inputs="interactions", outputs="popularity_share_plot", name="plot_popularity_share"),
            node(plot_spectra, inputs="thesis_spectra", outputs="spectra_plot", name="plot_spectra"),
            node(
                plot_exposure_size,
                inputs=["thesis_runs", "params:reproduce_thesis"],
                outputs="exposure_size_plot",
                name="plot_exposure_size",
            ),
            node(
                plot_eigen_grid,
                inputs=["thesis_runs", "params:reproduce_thesis"],
                outputs="eigen_grid_plot",
                name="plot_eigen_grid",
            ),
        ]
    )
