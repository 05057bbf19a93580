"""The evaluation template: metrics, predictions and the learning-curve plot of one model."""

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.evaluation.nodes import evaluate_model, plot_learning_curve


def create_pipeline() -> Pipeline:
    return Pipeline(
        [
            node(
                evaluate_model,
                inputs=["trained_model", "evaluators"],
                outputs=["metrics", "mlflow_metrics", "predictions"],
                name="evaluate_model",
            ),
            node(
                plot_learning_curve,
                inputs="training_history",
                outputs="learning_curve_plot",
                name="plot_learning_curve",
            ),
        ]
    )
