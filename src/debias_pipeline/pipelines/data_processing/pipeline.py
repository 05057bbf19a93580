"""Ingestion -> binarization -> train matrix, unbiased split, normalized adjacency."""

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.data_processing.nodes import (
    binarize_ratings,
    build_normalized_adjacency,
    build_train_matrix,
    ingest_ratings,
    split_unbiased_ratings,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                ingest_ratings,
                inputs=["raw_ratings", "params:dataset", "params:synthetic", "params:seed"],
                outputs=["ratings", "id_maps", "ground_truth"],
                name="ingest_ratings",
            ),
            node(
                binarize_ratings,
                inputs=["ratings", "params:binarization"],
                outputs="interactions",
                name="binarize_ratings",
            ),
            node(
                build_train_matrix,
                inputs=["interactions", "id_maps"],
                outputs="train_matrix",
                name="build_train_matrix",
            ),
            node(
                split_unbiased_ratings,
                inputs=["interactions", "params:split", "params:seed"],
                outputs="unbiased_split",
                name="split_unbiased_ratings",
            ),
            node(
                build_normalized_adjacency,
                inputs="train_matrix",
                outputs="normalized_adjacency",
                name="build_normalized_adjacency",
            ),
        ]
    )
