"""``tune``: an Optuna study of one model block on the validation metric."""

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.tune.nodes import plot_study, run_study


def create_pipeline() -> Pipeline:
    return Pipeline(
        [
            node(
                run_study,
                inputs=["train_data", "evaluators", "parameters", "params:tune", "params:dataset", "params:seed", "compute_device"],
                outputs=["tune_trials", "tune_best_params", "tune_summary"],
                name="run_study",
            ),
            node(
                plot_study,
                inputs=["tune_trials", "tune_summary", "params:tune"],
                outputs=["tune_history_plot", "tune_importance_plot", "tune_parallel_plot"],
                name="plot_study",
            ),
        ]
    )
