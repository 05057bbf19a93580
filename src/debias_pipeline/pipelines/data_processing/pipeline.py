"""Ingestion -> binarization -> indexing and side data -> the protocol's split -> train
matrix and normalized adjacency -> what the models train on and the evaluators."""

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.data_processing.nodes import (
    binarize_ratings,
    build_evaluators,
    build_normalized_adjacency,
    build_train_data,
    build_train_matrix,
    index_interactions,
    ingest_ratings,
    split_interactions,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                ingest_ratings,
                inputs=["raw_data", "params:dataset", "params:synthetic", "params:seed"],
                outputs=["ratings", "ground_truth"],
                name="ingest_ratings",
            ),
            node(
                binarize_ratings,
                inputs=["ratings", "params:binarization", "params:dataset"],
                outputs="labeled_ratings",
                name="binarize_ratings",
            ),
            node(
                index_interactions,
                inputs=["labeled_ratings", "raw_data", "ground_truth", "params:preprocessing", "params:dataset"],
                outputs=["interactions", "id_maps", "item_metadata", "user_features", "social_edges", "dataset_summary"],
                name="index_interactions",
            ),
            node(
                split_interactions,
                inputs=["interactions", "params:split", "params:evaluation", "params:dataset", "params:seed", "params:cold_start"],
                outputs="interaction_split",
                name="split_interactions",
            ),
            node(
                build_train_matrix,
                inputs=["interaction_split", "id_maps"],
                outputs="train_matrix",
                name="build_train_matrix",
            ),
            node(
                build_normalized_adjacency,
                inputs="train_matrix",
                outputs="normalized_adjacency",
                name="build_normalized_adjacency",
            ),
            node(
                build_train_data,
                inputs=["train_matrix", "normalized_adjacency", "user_features", "item_metadata", "social_edges"],
                outputs="train_data",
                name="build_train_data",
            ),
            node(
                build_evaluators,
                inputs=[
                    "interaction_split",
                    "train_matrix",
                    "params:evaluation",
                    "params:dataset",
                    "dataset_summary",
                    "user_features",
                ],
                outputs="evaluators",
                name="build_evaluators",
            ),
        ]
    )
