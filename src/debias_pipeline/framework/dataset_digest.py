"""The ratings table as an MLflow dataset input, at a cost bounded whatever its size.

MLflow's ``from_pandas`` digest looks at every cell (it calls ``type`` on each to find
the text columns) and its schema inference converts whole columns: at 4 million rows
that is tens of seconds, several times the ingestion it records. Above
``full_digest_rows`` rows the input is described from a strided sample instead.

Imported by the hooks when they run: it imports MLflow (see ``mlflow_hooks``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.digest_utils import get_normalized_md5_digest
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.types import Schema
from mlflow.types.utils import _infer_schema

# Rows of the strided sample: MLflow's own digest hashes this many (its first ones).
SAMPLE_ROWS = 10_000


def strided_positions(n_rows: int, size: int = SAMPLE_ROWS) -> np.ndarray:
    """``size`` row positions evenly spread over ``n_rows`` rows, the first and last
    included (all of them when there are fewer)."""
    return np.unique(np.linspace(0, n_rows - 1, num=min(size, n_rows)).round().astype(np.int64))


def sampled_digest(frame: pd.DataFrame, positions: np.ndarray) -> str:
    """An 8-character MD5 digest (MLflow's format) of ``frame``'s shape, column names and
    dtypes, and pandas' hash of the rows at ``positions`` only.

    A sampled digest: a change to a row outside the sample leaves it as it was; a change
    of the number of rows or columns, a column's name or dtype, or a sampled row, changes it.
    """
    sample = frame.iloc[positions]
    return get_normalized_md5_digest(
        [
            pd.util.hash_pandas_object(sample, index=False).to_numpy(),  # (len(positions),) uint64
            np.asarray(frame.shape, dtype=np.int64),
            *(f"{name}:{dtype}".encode() for name, dtype in frame.dtypes.items()),
        ]
    )


class SampledPandasDataset(PandasDataset):
    """A ``PandasDataset`` holding a sample of a larger table: its digest given
    (``sampled_digest``), its schema inferred from the sample (a column is ``required``
    when the sample has no missing value in it), its profile the whole table's counts."""

    def __init__(self, sample: pd.DataFrame, *, rows: int, elements: int, **kwargs: Any) -> None:
        super().__init__(df=sample, **kwargs)
        self._rows, self._elements = rows, elements

    @property
    def profile(self) -> dict[str, int]:
        return {"num_rows": self._rows, "num_elements": self._elements}

    @cached_property
    def schema(self) -> Schema | None:
        try:
            return _infer_schema(self._df)
        except Exception:  # noqa: BLE001 - as PandasDataset: no schema rather than no input
            return None


def table_dataset(frame: pd.DataFrame, source: str, name: str, full_digest_rows: int) -> PandasDataset:
    """``frame`` as an MLflow dataset: MLflow's own (``from_pandas``, its digest of the
    first 10,000 rows, the row count and the column names, and its schema of the whole
    table) up to ``full_digest_rows`` rows; above, a ``SampledPandasDataset`` of
    ``SAMPLE_ROWS`` strided rows, which reads no other row."""
    if len(frame) <= full_digest_rows:
        import mlflow.data

        return mlflow.data.from_pandas(frame, source=source, name=name)
    positions = strided_positions(len(frame))
    return SampledPandasDataset(
        frame.iloc[positions].reset_index(drop=True),
        rows=len(frame),
        elements=int(frame.size),
        source=resolve_dataset_source(source),
        name=name,
        digest=sampled_digest(frame, positions),
    )
