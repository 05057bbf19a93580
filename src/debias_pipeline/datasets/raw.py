"""Kedro dataset that reads the raw files of the dataset named by the ``dataset``
parameter, through the registry's parser for its format (``loaders.LOADERS``), after
checking their sizes against an optional limit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from debias_pipeline.data.loaders import LOADERS
from debias_pipeline.data.loaders.custom_options import custom_paths
from debias_pipeline.data.loaders.parsing import INTERACTION_COLUMNS, RawData, RawDataError
from debias_pipeline.data.registry import dataset_spec

MB = 1_000_000


class RawDataset(AbstractDataset[None, RawData]):
    """Read-only dataset of a named raw dataset under ``root/<dataset>/``.

    Example catalog entry::

        raw_data:
          type: debias_pipeline.datasets.raw.RawDataset
          dataset: ${runtime_params:dataset, ${globals:dataset}}
          root: data/01_raw
          custom: {interactions: interactions.csv, ...}   # dataset=custom only
          max_file_mb: ${runtime_params:raw_data.max_file_mb, null}

    Args:
        dataset: a name of the dataset registry.
        root: the folder that holds one folder per dataset.
        custom: the paths and column names of ``dataset=custom`` (see
            ``loaders.load_custom``); ignored for the other datasets.
        max_file_mb: the largest file (MB, 10^6 bytes) the dataset reads; a bigger one
            is refused before any of it is read, with a message naming this limit.
            Parsing takes a few times a file's size in memory (docs/datasets.md,
            "Memory"), so on a machine with less, the limit turns an out-of-memory kill
            into that message. ``None``: no limit.
    """

    def __init__(
        self,
        dataset: str,
        root: str = "data/01_raw",
        custom: Mapping[str, Any] | None = None,
        max_file_mb: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        try:
            self._spec = dataset_spec(dataset)
        except ValueError as error:
            raise DatasetError(str(error)) from None
        if max_file_mb is not None and (
            isinstance(max_file_mb, bool) or not isinstance(max_file_mb, (int, float)) or not max_file_mb > 0
        ):
            raise DatasetError(f"raw_data's max_file_mb must be a positive number of MB or null, got {max_file_mb!r}")
        self._root = Path(root)
        self._custom = dict(custom or {})
        self._max_file_mb = max_file_mb
        self.metadata = metadata

    @property
    def directory(self) -> Path:
        return self._root / self._spec.name

    def load(self) -> RawData:
        if self._spec.simulated:
            empty = pd.DataFrame({column: pd.Series(dtype=object) for column in INTERACTION_COLUMNS})
            return RawData(name=self._spec.name, interactions=empty, files={})
        options = self._custom if self._spec.name == "custom" else None
        self._check_sizes(options)
        return LOADERS[self._spec.name](self.directory, options)

    def _check_sizes(self, options: Mapping[str, Any] | None) -> None:
        """Refuse a file over ``max_file_mb`` before reading any (a missing one is left
        to the parser, which names every missing file at once)."""
        if self._max_file_mb is None:
            return
        if options is not None:
            paths = list(custom_paths(self.directory, options).values())
        else:
            paths = [self.directory / name for name in self._spec.files]
        for path in paths:
            size = path.stat().st_size if path.is_file() else 0
            if size > self._max_file_mb * MB:
                raise RawDataError(
                    f"{path}: {size / MB:,.1f} MB ({size:,} bytes) is over the limit of {self._max_file_mb:g} MB (raw_data's "
                    "max_file_mb); parsing it takes a few times its size in memory (docs/datasets.md, Memory). "
                    "On a machine with the memory, raise the limit: --params=raw_data.max_file_mb=<MB>"
                )

    def save(self, data: None) -> None:
        raise DatasetError("RawDataset is read-only: raw data is never written by the pipeline")

    def _exists(self) -> bool:
        return self._spec.simulated or all((self.directory / name).is_file() for name in self._spec.files)

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._spec.name, "root": str(self._root), "max_file_mb": self._max_file_mb}

