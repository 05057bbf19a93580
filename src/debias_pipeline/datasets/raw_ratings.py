"""Kedro dataset that reads the raw rating files of a named dataset.

Formats (PROTOCOL.md §2):

- ``coat``: ``<root>/coat/train.ascii`` (biased) and ``test.ascii`` (unbiased), dense
  whitespace-separated matrices, rows users, columns items, 0 = unrated.
- ``yahoo_r3``: ``<root>/yahoo_r3/ydata-ymusic-rating-study-v1_0-{train,test}.txt``,
  one ``user<TAB>item<TAB>rating`` line per rating, ids 1-indexed.
- ``synthetic``: no files; the ingestion node generates the data from its parameters.

Loading only parses: each table keeps the 1-based ``line`` of every rating so that the
ingestion node can name the file and row of any bad value it finds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

SOURCES = ("biased", "unbiased")
RAW_FILES: dict[str, dict[str, str]] = {
    "coat": {"biased": "coat/train.ascii", "unbiased": "coat/test.ascii"},
    "yahoo_r3": {
        "biased": "yahoo_r3/ydata-ymusic-rating-study-v1_0-train.txt",
        "unbiased": "yahoo_r3/ydata-ymusic-rating-study-v1_0-test.txt",
    },
    "synthetic": {},
}
DATASETS = tuple(RAW_FILES)


@dataclass(frozen=True)
class RawRatings:
    """Parsed raw files of one dataset.

    Attributes:
        name: ``coat``, ``yahoo_r3`` or ``synthetic``.
        tables: source (``biased`` / ``unbiased``) -> DataFrame with columns
            ``user, item, rating, line`` in the file's own ids (empty for synthetic).
        files: source -> path of the file it came from.
        shape: (rows, columns) of a matrix format, else ``None``.
    """

    name: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    shape: tuple[int, int] | None = None


def _read_matrix(path: Path) -> np.ndarray:
    try:
        matrix = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise DatasetError(f"{path}: not a dense whitespace-separated rating matrix: {error}") from None
    if matrix.size == 0:
        raise DatasetError(f"{path}: the file holds no ratings (it is empty)")
    return matrix


def _matrix_to_table(matrix: np.ndarray) -> pd.DataFrame:
    rows, cols = np.nonzero(matrix)
    return pd.DataFrame(
        {
            "user": rows.astype(np.int64),
            "item": cols.astype(np.int64),
            "rating": matrix[rows, cols],
            "line": rows.astype(np.int64) + 1,
        }
    )


def _read_triples(path: Path) -> pd.DataFrame:
    lines = path.read_text().splitlines()
    numbered = [(number, line.split()) for number, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DatasetError(f"{path}: the file holds no ratings (it is empty)")
    for number, fields in numbered:
        if len(fields) != 3:
            raise DatasetError(f"{path} row {number}: expected 3 fields 'user<TAB>item<TAB>rating', got {len(fields)}")
    line_numbers = np.array([number for number, _ in numbered], dtype=np.int64)
    text = pd.DataFrame([fields for _, fields in numbered], columns=["user", "item", "rating"])
    numeric = text.apply(pd.to_numeric, errors="coerce")
    bad_rows = numeric.isna().any(axis=1).to_numpy()
    if bad_rows.any():
        at = int(np.flatnonzero(bad_rows)[0])
        raise DatasetError(f"{path} row {line_numbers[at]}: non-numeric value in {text.iloc[at].tolist()}")
    for column in ("user", "item"):
        ids = numeric[column].to_numpy()
        invalid = (ids < 0) | (ids != np.floor(ids))
        if invalid.any():
            at = int(np.flatnonzero(invalid)[0])
            raise DatasetError(
                f"{path} row {line_numbers[at]}: {column} id {text[column].iat[at]!r} is not a non-negative integer"
            )
    return pd.DataFrame(
        {
            "user": numeric["user"].to_numpy(np.int64),
            "item": numeric["item"].to_numpy(np.int64),
            "rating": numeric["rating"].to_numpy(np.float64),
            "line": line_numbers,
        }
    )


class RawRatingsDataset(AbstractDataset[None, RawRatings]):
    """Read-only dataset of a named raw rating dataset under ``root``.

    Example catalog entry::

        raw_ratings:
          type: debias_pipeline.datasets.RawRatingsDataset
          dataset: ${runtime_params:dataset, synthetic}
          root: data/01_raw
    """

    def __init__(self, dataset: str, root: str = "data/01_raw", metadata: dict[str, Any] | None = None) -> None:
        if dataset not in RAW_FILES:
            raise DatasetError(f"unknown dataset {dataset!r} (parameter 'dataset'); valid datasets: {', '.join(DATASETS)}")
        self._dataset = dataset
        self._root = Path(root)
        self.metadata = metadata

    def _paths(self) -> dict[str, Path]:
        return {source: self._root / relative for source, relative in RAW_FILES[self._dataset].items()}

    def load(self) -> RawRatings:
        paths = self._paths()
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise DatasetError(
                f"raw file(s) missing for dataset '{self._dataset}': {', '.join(missing)}. "
                "See the README's 'Datasets' section for where to get them and where to put them."
            )
        if self._dataset == "coat":
            matrices = {source: _read_matrix(path) for source, path in paths.items()}
            shapes = {source: m.shape for source, m in matrices.items()}
            if shapes["biased"] != shapes["unbiased"]:
                raise DatasetError(
                    f"{paths['unbiased']}: matrix shape {shapes['unbiased']} differs from "
                    f"{paths['biased']} shape {shapes['biased']}; both must be users x items"
                )
            tables = {source: _matrix_to_table(m) for source, m in matrices.items()}
            shape = shapes["biased"]
        elif self._dataset == "yahoo_r3":
            tables = {source: _read_triples(path) for source, path in paths.items()}
            shape = None
        else:
            return RawRatings(name=self._dataset)
        return RawRatings(
            name=self._dataset, tables=tables, files={s: str(p) for s, p in paths.items()}, shape=shape
        )

    def save(self, data: None) -> None:
        raise DatasetError("RawRatingsDataset is read-only: raw data is never written by the pipeline")

    def _exists(self) -> bool:
        return all(p.is_file() for p in self._paths().values())

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._dataset, "root": str(self._root)}
