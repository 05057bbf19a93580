"""Kedro dataset that reads the raw files of the dataset named by the ``dataset``
parameter, through the registry's parser for its format (``loaders.LOADERS``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from debias_pipeline.data.loaders import LOADERS
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.data.registry import dataset_spec

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp", "part", "line")


class RawDataset(AbstractDataset[None, RawData]):
    """Read-only dataset of a named raw dataset under ``root/<dataset>/``.

    Example catalog entry::

        raw_data:
          type: debias_pipeline.datasets.raw.RawDataset
          dataset: ${runtime_params:dataset, ${globals:dataset}}
          root: data/01_raw
          custom: {interactions: interactions.csv, ...}   # dataset=custom only

    Args:
        dataset: a name of the dataset registry.
        root: the folder that holds one folder per dataset.
        custom: the paths and column names of ``dataset=custom`` (see
            ``loaders.load_custom``); ignored for the other datasets.
    """

    def __init__(
        self,
        dataset: str,
        root: str = "data/01_raw",
        custom: Mapping[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        try:
            self._spec = dataset_spec(dataset)
        except ValueError as error:
            raise DatasetError(str(error)) from None
        self._root = Path(root)
        self._custom = dict(custom or {})
        self.metadata = metadata

    @property
    def directory(self) -> Path:
        return self._root / self._spec.name

    def load(self) -> RawData:
        if self._spec.simulated:
            empty = pd.DataFrame({column: pd.Series(dtype=object) for column in INTERACTION_COLUMNS})
            return RawData(name=self._spec.name, interactions=empty, files={})
        options = self._custom if self._spec.name == "custom" else None
        return LOADERS[self._spec.name](self.directory, options)

    def save(self, data: None) -> None:
        raise DatasetError("RawDataset is read-only: raw data is never written by the pipeline")

    def _exists(self) -> bool:
        return self._spec.simulated or all((self.directory / name).is_file() for name in self._spec.files)

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._spec.name, "root": str(self._root)}

