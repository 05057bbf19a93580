"""Propensity estimation -> the versioned estimate and its report -> the train data the
models fit on, with the estimate attached."""

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.propensity.nodes import (
    attach_propensities,
    estimate_propensities,
    propensity_mlflow_metrics,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                estimate_propensities,
                inputs=[
                    "interaction_split",
                    "train_data",
                    "evaluators",
                    "ground_truth",
                    "params:propensity",
                    "params:seed",
                    "compute_device",
                ],
                outputs=["propensities", "propensity_report"],
                name="estimate_propensities",
            ),
            node(propensity_mlflow_metrics, inputs="propensity_report", outputs="propensity_mlflow_metrics", name="log_propensity_report"),
            node(attach_propensities, inputs=["train_data", "propensities"], outputs="weighted_train_data", name="attach_propensities"),
        ]
    )
