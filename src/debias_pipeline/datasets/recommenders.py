"""Kedro dataset of the trained recommenders that the training pipelines saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from debias_pipeline.serving.recommender import TrainedRecommenders


class TrainedRecommendersDataset(AbstractDataset[None, TrainedRecommenders]):
    """Read-only: loads a ``TrainedRecommenders`` over ``root`` (the newest version of a
    (model, dataset) is chosen by the node that asks, from its parameters).

    Example catalog entry::

        trained_recommenders:
          type: debias_pipeline.datasets.recommenders.TrainedRecommendersDataset
          root: data/06_models
    """

    def __init__(self, root: str = "data/06_models", metadata: dict[str, Any] | None = None) -> None:
        self._root = Path(root)
        self.metadata = metadata

    def load(self) -> TrainedRecommenders:
        return TrainedRecommenders(self._root)

    def save(self, data: None) -> None:
        raise DatasetError("trained_recommenders is read-only: the train_<model> pipelines write recommenders")

    def _describe(self) -> dict[str, Any]:
        return {"root": str(self._root)}
