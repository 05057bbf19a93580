"""The interactions table of a parsed dataset, gathered one chunk of rows at a time.

A loader reads a big file in chunks and converts each chunk to typed columns at once.
Joining per-chunk DataFrames with ``pd.concat`` would hold the whole table twice (the
frames and their join), and a DataFrame built from a dict copies its columns. Here the
numeric columns are written into arrays sized by an upper bound on the rows (the
files' line count, :func:`line_bound`), so the peak is the typed table plus one chunk
of text; text ids are gathered as Arrow pieces, which join without a copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp", "part", "line")

# Columns of the pieces, in the order they are joined (``part`` is built from the runs).
_PIECES = ("user", "item", "rating", "timestamp", "line")


def line_bound(paths: Iterable[Path]) -> int:
    """An upper bound on the rows of delimited text files: their line count (newlines,
    plus one per file for a last line without one). One pass over the bytes, far
    cheaper than the parse; a file with other line ends only makes the bound too low,
    which costs memory, not correctness (:class:`Interactions` then gathers pieces)."""
    total = 0
    for path in paths:
        total += 1
        with Path(path).open("rb") as handle:
            while block := handle.read(1 << 24):
                total += block.count(b"\n")
    return total


def _is_text(piece: Any) -> bool:
    return not isinstance(piece, np.ndarray) or piece.dtype.kind in "OUS"


def text_array(pieces: list[Any]) -> pd.api.extensions.ExtensionArray:
    """Text pieces (pandas or Arrow string arrays, numpy str/object arrays) as one pandas
    ``str`` array; the Arrow buffers are shared, not copied."""
    chunks = [pa.array(piece, type=pa.large_string()) for piece in pieces]
    return pd.array(pa.chunked_array(chunks, type=pa.large_string()), dtype=str)


def join_pieces(pieces: list[Any], dtype: type) -> Any:
    """One column from its pieces: numpy arrays of ``dtype``, or text (any piece text)."""
    if any(_is_text(piece) for piece in pieces):
        return text_array(pieces)
    if not pieces:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(pieces).astype(dtype, copy=False)


class _Column:
    """One numeric column, filled in place while an upper bound on its rows holds, else
    gathered as pieces (and text pieces always: their size is not known ahead)."""

    def __init__(self, dtype: type, capacity: int) -> None:
        # np.empty maps the pages lazily: a bound well above the true count costs address
        # space, not memory, and the rows written are the only pages that become resident.
        self._buffer: np.ndarray | None = np.empty(capacity, dtype=dtype) if capacity else None
        self._size = 0
        self._pieces: list[Any] = []
        self._dtype = dtype

    def append(self, values: Any) -> None:
        count = len(values)
        if self._buffer is not None and not _is_text(values) and self._size + count <= self._buffer.size:
            self._buffer[self._size : self._size + count] = values
            self._size += count
            return
        if self._buffer is not None:  # past the bound, or text: gather pieces from here on
            if self._size:
                self._pieces.append(self._buffer[: self._size])
            self._buffer = None
        self._pieces.append(values)

    def join(self) -> Any:
        """The whole column; the column is emptied."""
        if self._buffer is not None:
            joined, self._buffer = self._buffer[: self._size], None
            return joined
        pieces, self._pieces = self._pieces, []
        return join_pieces(pieces, self._dtype)


class Interactions:
    """The interaction rows of a dataset (columns exactly :data:`INTERACTION_COLUMNS`).

    Args:
        capacity: An upper bound on the rows to come (the files' line count), or 0 when
            unknown. With a bound the numeric columns are allocated once and filled in
            place; without one (or past it) they are gathered as pieces and joined at
            the end, when the freed pieces and the joined column briefly coexist.

    Example::

        log = Interactions(capacity=line_bound(paths))
        for chunk in chunks:
            log.add(users, items, "biased", lines, rating=ratings)
        table = log.frame()
    """

    def __init__(self, capacity: int = 0) -> None:
        self._columns = {
            name: _Column(np.float64 if name in ("rating", "timestamp") else np.int64, capacity) for name in _PIECES
        }
        self._parts: list[tuple[str, int]] = []  # runs of rows of one part, in order

    def add(
        self,
        user: Any,
        item: Any,
        part: str,
        line: np.ndarray,
        rating: np.ndarray | None = None,
        timestamp: np.ndarray | None = None,
    ) -> None:
        """Append rows: ids (int64, or text), their part, 1-based lines; NaN for a missing
        rating or timestamp column."""
        self.add_rows(part, line, rating=rating, timestamp=timestamp)
        self.add_ids(user, item)

    def add_rows(
        self, part: str, line: np.ndarray, rating: np.ndarray | None = None, timestamp: np.ndarray | None = None
    ) -> None:
        """Append rows without their ids, which ``add_ids`` gives later in the same order
        (a custom file's ids are typed only once every row has been read)."""
        count = len(line)
        if not count:
            return
        for name, values in (("rating", rating), ("timestamp", timestamp)):
            self._columns[name].append(np.full(count, np.nan) if values is None else np.asarray(values, np.float64))
        self._columns["line"].append(np.asarray(line, dtype=np.int64))
        if self._parts and self._parts[-1][0] == part:
            self._parts[-1] = (part, self._parts[-1][1] + count)
        else:
            self._parts.append((part, count))

    def add_ids(self, user: Any, item: Any) -> None:
        """Append the ids of rows (int64, or text)."""
        if not len(user):
            return
        self._columns["user"].append(user if _is_text(user) else np.asarray(user, dtype=np.int64))
        self._columns["item"].append(item if _is_text(item) else np.asarray(item, dtype=np.int64))

    def frame(self) -> pd.DataFrame:
        """The table: ids int64 (or ``str``), rating and timestamp float64, part ``str``,
        line int64. The gathered pieces are released as each column is joined."""
        columns: dict[str, Any] = {name: column.join() for name, column in self._columns.items()}
        if not len(columns["user"]) == len(columns["item"]) == len(columns["line"]):
            raise ValueError(f"ids for {len(columns['user'])} rows, rows {len(columns['line'])}: add_ids missed rows")
        runs = [pa.repeat(pa.scalar(part, pa.large_string()), count) for part, count in self._parts]
        columns["part"] = pd.array(pa.chunked_array(runs, type=pa.large_string()), dtype=str)
        self._parts = []
        # copy=False: the joined columns become the frame's own, without a second copy.
        return pd.DataFrame({name: columns[name] for name in INTERACTION_COLUMNS}, copy=False)

