"""Kedro dataset of the trained recommenders that the training pipelines saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from debias_pipeline.recommend import TrainedRecommender, load_recommender

FILE = "recommender.pkl"


class TrainedRecommenders:
    """The ``<model>.recommender`` artifacts under ``root``: ``root/<model>/<dataset>/
    recommender.pkl/<version>/recommender.pkl``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, model: str, dataset: str, version: str | None = None) -> Path:
        """The file of ``version`` (default: the newest) of ``model`` trained on ``dataset``.

        Raises:
            FileNotFoundError: Naming the pipeline that trains one, or the versions there are.
        """
        folder = self.root / model / dataset / FILE
        versions = sorted(p.parent.name for p in folder.glob(f"*/{FILE}") if p.is_file())
        if not versions:
            raise FileNotFoundError(
                f"no trained {model!r} for dataset {dataset!r} under {folder}; run "
                f"`kedro run --pipelines=train_{model} --params=dataset={dataset}` first"
            )
        if version is None:
            return folder / versions[-1] / FILE
        if version not in versions:
            raise FileNotFoundError(
                f"no version {version!r} of {model!r} for {dataset!r}; versions: {', '.join(versions)}"
            )
        return folder / version / FILE

    def load(self, model: str, dataset: str, version: str | None = None) -> TrainedRecommender:
        return load_recommender(self.path(model, dataset, version))


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
