"""The data-processing nodes: ingestion -> binarization -> indexing and side data ->
the protocol's split -> train matrix and normalized adjacency -> what the models
train on and the evaluators.

The logic lives in the library (``data.processing``, ``training.inputs``), which the
serving code, the sweeps and the scripts call too; the nodes are those functions.
"""

from debias_pipeline.data.processing import (
    binarize_ratings,
    build_normalized_adjacency,
    build_train_matrix,
    index_interactions,
    ingest_ratings,
)
from debias_pipeline.training.inputs import build_evaluators, build_train_data, split_interactions

__all__ = [
    "binarize_ratings",
    "build_evaluators",
    "build_normalized_adjacency",
    "build_train_data",
    "build_train_matrix",
    "index_interactions",
    "ingest_ratings",
    "split_interactions",
]
