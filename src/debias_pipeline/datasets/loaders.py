"""Parsers of the raw dataset formats, one per dataset, all returning a :class:`RawData`.

A parser only reads its files and checks their syntax: every field count, number and
id is validated, and a malformed row fails with ``"<path> line <n>: <what is wrong>"``
(:class:`RawDataError`). What to do with the data (binarising ratings, k-core
filtering, mapping ids to 0..n-1, splitting) is left to the preprocessing, so the
values are kept as the files give them: original ids, ratings such as Anime's ``-1``,
users without items.

Formats (``directory`` is ``data/01_raw/<dataset>/``):

- ``coat``: ``train.ascii`` (biased), ``test.ascii`` (unbiased), dense 290 x 300 matrices.
- ``yahoo_r3``: ``ydata-ymusic-rating-study-v1_0-{train,test}.txt``, ``user item rating``.
- ``gowalla``: ``train.txt``, ``test.txt``, one ``user item item ...`` line per user.
- ``lastfm``: ``data1.txt``, ``test1.txt`` (``user artist count``), ``trustnetwork.txt``.
- ``movielens_100k``: ``u.data``, ``u.item``, ``u.user`` and, when present, ``u.genre``.
- ``movielens_1m``: ``ratings.dat``, ``movies.dat``, ``users.dat`` (``::``-separated).
- ``anime``: ``anime.csv`` and ``rating.csv`` (the Kaggle "Anime Recommendations" set).
- ``custom``: CSV/TSV/Parquet files and column names given by the ``custom`` parameters.

Big files are read with pandas' C parser in chunks of :data:`CHUNK_ROWS` rows, every
field as a string, and validated with vectorised regular expressions before being
cast by pyarrow, so ids never pass through floating point and memory stays bounded
by one chunk of text plus the typed result. Line numbers are the true 1-based lines
of the file (blank lines are skipped but counted); a quoted CSV field spanning several
lines would shift them, which none of the fixed formats has.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CHUNK_ROWS",
    "COAT_MAX_BYTES",
    "COAT_SHAPE",
    "CUSTOM_COLUMN_DEFAULTS",
    "LOADERS",
    "MOVIELENS_100K_GENRES",
    "REQUIRED_FILES",
    "RawData",
    "RawDataError",
    "load_anime",
    "load_coat",
    "load_custom",
    "load_gowalla",
    "load_lastfm",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_yahoo_r3",
]


class RawDataError(ValueError):
    """A raw file is missing or malformed; the message names the file and the 1-based line."""


class _NotUtf8Error(RawDataError):
    """A file is not valid UTF-8 (lets the Latin-1 formats retry with another encoding)."""


@dataclass(frozen=True)
class RawData:
    """The parsed raw files of one dataset, in the files' own ids.

    Attributes:
        name: Dataset name (``coat``, ``movielens_100k``, ...; ``custom`` by default for
            the custom format).
        interactions: Columns exactly ``user, item, rating, timestamp, part, line``:
            original ids (int64, or str for a custom file whose ids are not all
            integers), ``rating`` float64 (NaN when the format has none), ``timestamp``
            float64 seconds since the epoch (NaN when none), ``part`` one of
            ``biased``/``unbiased`` (Coat, Yahoo), ``train``/``test`` (Gowalla, LastFM)
            or ``all``, and ``line`` the 1-based line in ``files[part]`` (the matrix row
            for Coat, the row for Parquet).
        files: Part -> path of the file its rows came from, plus ``items``, ``users``,
            ``social`` when read.
        items: ``item`` (same dtype as ``interactions.item``), ``title`` (str),
            ``genres`` (str, joined by ``|``, ``""`` when none), then the format's other
            item columns; ``None`` when the format has no item file.
        users: ``user`` then feature columns (MovieLens: ``age`` int64, ``gender``,
            ``occupation``, ``zip`` str); ``None`` when the format has none.
        social: ``user, friend, line`` (original ids); ``None`` when the format has none.
        shape: ``(rows, cols)`` of a dense-matrix format (Coat), else ``None``.
        dropped: Reason -> number of rows the parser dropped.
    """

    name: str
    interactions: pd.DataFrame
    files: dict[str, str]
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    social: pd.DataFrame | None = None
    shape: tuple[int, int] | None = None
    dropped: dict[str, int] = field(default_factory=dict)


INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp", "part", "line")
CHUNK_ROWS = 1_000_000
COAT_SHAPE = (290, 300)
# A 290 x 300 matrix of one-digit ratings takes about 174 KB; 2 MiB leaves room for any
# whitespace or number formatting while refusing a wrong (or huge) file before reading it.
COAT_MAX_BYTES = 2 * 1024 * 1024
MOVIELENS_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "coat": ("train.ascii", "test.ascii"),
    "yahoo_r3": ("ydata-ymusic-rating-study-v1_0-train.txt", "ydata-ymusic-rating-study-v1_0-test.txt"),
    "gowalla": ("train.txt", "test.txt"),
    "lastfm": ("data1.txt", "test1.txt", "trustnetwork.txt"),
    "movielens_100k": ("u.data", "u.item", "u.user"),
    "movielens_1m": ("ratings.dat", "movies.dat", "users.dat"),
    "anime": ("anime.csv", "rating.csv"),
    "custom": (),
}

_INT64_MAX_TEXT = str(2**63 - 1)
_INT_PATTERN = r"\+?[0-9]+"
_NUMBER_PATTERN = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(_NUMBER_PATTERN)
_WHITESPACE = r"\s+"
_SEPARATOR_NAMES = {_WHITESPACE: " ", "\t": "<TAB>", "|": "|", ",": ","}
_README_HINT = "see the README's Datasets section for where to get them and where to put them"


# --------------------------------------------------------------------------- helpers


def _require(dataset: str, paths: Iterable[Path]) -> None:
    """Fail with every missing path at once, so one look at the message fixes them all."""
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise RawDataError(f"raw file(s) missing for dataset '{dataset}': {', '.join(missing)}; {_README_HINT}")


def _first_bad_utf8(chunks: Iterable[bytes]) -> tuple[int, int, int] | None:
    """Locate the first invalid UTF-8 byte of a byte stream.

    Args:
        chunks: The stream, in pieces of any size (a multi-byte character may straddle
            two pieces).

    Returns:
        ``(line, offset, byte)``: the 1-based line (newlines before the byte, plus one),
        the byte offset and the byte's value; ``None`` when the stream is valid UTF-8.
    """
    pending = b""
    offset = 0  # absolute offset of pending[0]
    newlines = 0
    iterator = iter(chunks)
    while True:
        chunk = next(iterator, None)
        final = chunk is None
        data = pending + (chunk or b"")
        try:
            # final=False keeps a character cut at the end of a piece for the next one.
            _, consumed = codecs.utf_8_decode(data, "strict", final)
        except UnicodeDecodeError as error:
            return newlines + data.count(b"\n", 0, error.start) + 1, offset + error.start, data[error.start]
        newlines += data.count(b"\n", 0, consumed)
        offset += consumed
        pending = data[consumed:]
        if final:
            return None


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def _utf8_error(path: Path, located: tuple[int, int, int] | None = None) -> _NotUtf8Error | None:
    """The error to raise for a non-UTF-8 file (None when the file is valid UTF-8)."""
    located = located or _first_bad_utf8(_file_chunks(path))
    if located is None:
        return None
    line, offset, byte = located
    return _NotUtf8Error(
        f"{path} line {line}: not valid UTF-8 (byte 0x{byte:02x} at byte offset {offset}); save the file as UTF-8"
    )


def _line_text(path: Path, line: int, encoding: str) -> str | None:
    """The text of one line, streamed up to it (only used to word an error)."""
    with path.open("rb") as handle:
        for raw in itertools.islice(handle, line - 1, line):
            return raw.decode(encoding, "replace").rstrip("\r\n")
    return None


def _empty(path: Path, what: str = "rows") -> RawDataError:
    return RawDataError(f"{path}: the file holds no {what} (it is empty)")


@dataclass(frozen=True)
class _Layout:
    """How one delimited text file is laid out.

    Attributes:
        path: The file.
        fields: Logical field names, in order (used for messages and lookups).
        sep: pandas separator (``\\s+`` for runs of whitespace).
        header: Whether line 1 is a header.
        quoting: ``csv`` quoting mode (``QUOTE_NONE`` for the fixed formats: their
            titles hold bare quotes).
        encoding: Text encoding.
        double_colon: MovieLens-1M ``::`` separators, read with ``sep=":"`` because
            pandas' C parser takes one-character separators only: field ``i`` is then
            column ``2 i`` and the odd columns must be empty.
    """

    path: Path
    fields: tuple[str, ...]
    sep: str = _WHITESPACE
    header: bool = False
    quoting: int = csv.QUOTE_NONE
    encoding: str = "utf-8"
    double_colon: bool = False

    @property
    def width(self) -> int:
        """Columns per row as pandas sees them."""
        return 2 * len(self.fields) - 1 if self.double_colon else len(self.fields)

    def column(self, name: str) -> int:
        """pandas column of a logical field."""
        index = self.fields.index(name)
        return 2 * index if self.double_colon else index

    def describe(self) -> str:
        """The expected row, e.g. ``user<TAB>item<TAB>rating``."""
        separator = "::" if self.double_colon else _SEPARATOR_NAMES.get(self.sep, self.sep)
        return separator.join(self.fields)

    def count(self, text: str) -> int:
        """Number of fields of one line of text."""
        if self.double_colon:
            return len(text.split("::"))
        if self.sep == _WHITESPACE:
            return len(text.split())
        if self.quoting != csv.QUOTE_NONE:
            return len(next(csv.reader([text], delimiter=self.sep, quoting=self.quoting)))
        return text.count(self.sep) + 1

    def fail(self, line: int, detail: str) -> NoReturn:
        """Raise the error for a bad row, preferring "wrong field count" when that is the cause.

        pandas pads a short row with empty fields, so a missing field first shows up as
        an empty value; the line is re-read to tell the two apart.
        """
        text = _line_text(self.path, line, self.encoding)
        if text is not None and text.strip():
            try:
                found = self.count(text)
            except csv.Error:  # e.g. a lone "\r" inside the line: the detail below still holds
                found = len(self.fields)
            if found != len(self.fields):
                raise RawDataError(
                    f"{self.path} line {line}: expected {len(self.fields)} fields ({self.describe()}), found {found}"
                )
        raise RawDataError(f"{self.path} line {line}: {detail}")


def _header_layout(path: Path, sep: str, quoting: int = csv.QUOTE_MINIMAL) -> _Layout:
    """Read the header line of a delimited file and describe the file by it."""
    with path.open("rb") as handle:
        first = handle.readline()
    if not first.strip():
        raise _empty(path) if path.stat().st_size == 0 else RawDataError(f"{path} line 1: the header line is empty")
    try:
        text = first.decode("utf-8-sig")  # a BOM (spreadsheet exports) is not part of the first name
    except UnicodeDecodeError:
        raise _utf8_error(path) or RawDataError(f"{path} line 1: not valid UTF-8") from None
    try:
        header = next(csv.reader([text.rstrip("\r\n")], delimiter=sep, quoting=quoting))
    except csv.Error as error:  # e.g. a lone "\r" (old Mac line ends) inside the line
        raise RawDataError(f"{path} line 1: the header line cannot be parsed ({error})") from None
    names = tuple(name.strip() for name in header)
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise RawDataError(f"{path} line 1: duplicate column name(s) {duplicated} in the header")
    return _Layout(path, names, sep=sep, header=True, quoting=quoting)


def _read(layout: _Layout) -> Iterator[pd.DataFrame]:
    """Yield the rows of a delimited file, in chunks.

    Every field is read as a string (ids are validated as text, never through float);
    columns are the integers ``0..width-1``; the index is the 1-based line number;
    blank lines are dropped.

    Raises:
        RawDataError: A row with too many fields, a non-UTF-8 byte, an empty file.
    """
    width = layout.width
    offset = 2 if layout.header else 1
    rows = 0
    try:
        with pd.read_csv(
            layout.path,
            sep=layout.sep,
            header=None,
            skiprows=1 if layout.header else None,
            # One spare column catches a row with one field too many; more than that
            # makes pandas raise a ParserError, handled below.
            names=list(range(width + 1)),
            # Text for the fields; the spare column stays object (it is only compared
            # with "", converting it to Arrow strings would cost a quarter of the time).
            dtype={**{column: str for column in range(width)}, width: object},
            engine="c",
            index_col=False,  # never take a first column as the index when a row is long
            skip_blank_lines=False,  # keeps the row index equal to the line number
            na_filter=False,
            quoting=layout.quoting,
            encoding=layout.encoding,
            chunksize=CHUNK_ROWS,
        ) as reader:
            for chunk in reader:
                chunk.index = chunk.index + offset
                blank = (chunk[0].str.strip() == "").to_numpy(bool)
                if blank.any():
                    for column in range(1, width + 1):
                        blank = blank & (chunk[column] == "").to_numpy(bool)
                    chunk = chunk[~blank]
                bad = chunk[width].to_numpy(dtype=object) != ""
                if layout.double_colon:
                    for column in range(1, width, 2):
                        bad = bad | (chunk[column] != "").to_numpy(bool)
                if bad.any():
                    layout.fail(int(chunk.index[np.argmax(bad)]), f"more than {len(layout.fields)} fields")
                if len(chunk):  # a chunk of blank lines only yields nothing
                    rows += len(chunk)
                    yield chunk.drop(columns=width)
    except UnicodeDecodeError as error:
        raise _utf8_error(layout.path) or RawDataError(f"{layout.path}: {error}") from None
    except pd.errors.EmptyDataError:
        raise _empty(layout.path) from None
    except pd.errors.ParserError as error:
        found = re.search(r"Expected \d+ fields in line (\d+), saw (\d+)", str(error))
        if found:
            layout.fail(int(found.group(1)), f"more than {len(layout.fields)} fields")
        raise RawDataError(f"{layout.path}: cannot be parsed ({str(error).strip()})") from None
    if rows == 0:
        raise _empty(layout.path)


def _read_all(layout: _Layout) -> pd.DataFrame:
    """All rows of a (small) delimited file as one frame of strings."""
    return pd.concat(list(_read(layout)))


def _arrow(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The values as an Arrow string array (zero-copy for pandas' default string dtype)."""
    return pa.array(values, type=pa.large_string()) if values.dtype == object else pa.array(values)


def _first_false(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(np.argmin(np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)))


def _ints(values: pd.Series, what: str, fail: Callable[[int, str], NoReturn]) -> np.ndarray:
    """Validate and convert integer ids (or counts) given as text.

    Args:
        values: Text, indexed by line number.
        what: The field, for messages (``"user id"``).
        fail: Raises the error for a line.

    Returns:
        int64 values. Only ``^[+]?[0-9]+$`` up to 2**63-1 is accepted: ``1.5``, ``1e30``,
        ``inf``, ``-3`` and empty are refused, and the digits are cast by Arrow's integer
        parser, so nothing is ever rounded through float.
    """
    text = _arrow(values)
    digits = pc.if_else(pc.starts_with(text, "+"), pc.utf8_slice_codeunits(text, 1), text)
    if len(text) == 0:
        return np.zeros(0, dtype=np.int64)
    ok = pc.ascii_is_decimal(digits)  # byte-wise 0-9 and non-empty: cheaper than a regex
    if not pc.all(ok.fill_null(False)).as_py():
        at = _first_false(ok)
        fail(int(values.index[at]), f"{what} {values.iat[at]!r} is not a non-negative integer")
    try:
        return np.asarray(pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    except pa.ArrowInvalid:  # only overflow is left; find the first value past 2**63-1
        significant = values.astype(str).str.lstrip("+").str.lstrip("0")
        length = significant.str.len().to_numpy(dtype=np.int64)
        too_big = (length > len(_INT64_MAX_TEXT)) | (
            (length == len(_INT64_MAX_TEXT)) & (significant > _INT64_MAX_TEXT).to_numpy(dtype=bool, na_value=False)
        )
        at = int(np.argmax(too_big))
        fail(int(values.index[at]), f"{what} {values.iat[at]!r} is larger than 2**63-1 ({_INT64_MAX_TEXT})")


def _floats(
    values: pd.Series, what: str, fail: Callable[[int, str], NoReturn], *, allow_empty: bool = False
) -> np.ndarray:
    """Validate and convert finite decimal numbers given as text (empty -> NaN when allowed)."""
    text = pc.utf8_trim_whitespace(_arrow(values))
    empty = pc.equal(text, "").fill_null(True)
    if allow_empty:
        text = pc.if_else(empty, pa.scalar(None, text.type), text)
    try:
        # Arrow's parser takes exactly the decimal forms (plus nan/inf, refused below).
        numbers = np.asarray(pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except pa.ArrowInvalid:
        numbers = None
    if numbers is not None:
        bad = ~np.isfinite(numbers)
        if allow_empty:
            bad &= ~np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
        if not bad.any():
            return numbers
        at = int(np.argmax(bad))
    else:
        # Error path only: the regex says which value is wrong.
        ok = pd.Series(text.to_pandas()).str.fullmatch(_NUMBER_PATTERN).to_numpy(dtype=bool, na_value=False)
        if allow_empty:
            ok = ok | np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
        at = int(np.argmin(ok))
    fail(int(values.index[at]), f"{what} {values.iat[at]!r} is not a (finite) number")


def _log(
    user: Any,
    item: Any,
    part: str,
    line: np.ndarray,
    rating: np.ndarray | None = None,
    timestamp: np.ndarray | None = None,
) -> pd.DataFrame:
    """An interactions frame with the exact columns and dtypes of :class:`RawData`."""
    count = len(line)
    frame = pd.DataFrame(
        {
            "user": user,
            "item": item,
            "rating": np.full(count, np.nan) if rating is None else np.asarray(rating, dtype=np.float64),
            "timestamp": np.full(count, np.nan) if timestamp is None else np.asarray(timestamp, dtype=np.float64),
            "line": np.asarray(line, dtype=np.int64),
        }
    )
    frame["part"] = part
    frame["part"] = frame["part"].astype(str)
    return frame[list(INTERACTION_COLUMNS)]


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


def _read_log(
    layout: _Layout,
    part: str,
    *,
    user: str = "user",
    item: str = "item",
    rating: str | None = None,
    timestamp: str | None = None,
) -> pd.DataFrame:
    """Parse a one-interaction-per-row file into an interactions frame."""

    def what(name: str) -> str:
        return name if name.lower().endswith("id") else f"{name} id"

    frames = []
    for chunk in _read(layout):
        lines = chunk.index.to_numpy(np.int64)
        frames.append(
            _log(
                _ints(chunk[layout.column(user)], what(user), layout.fail),
                _ints(chunk[layout.column(item)], what(item), layout.fail),
                part,
                lines,
                rating=None if rating is None else _floats(chunk[layout.column(rating)], rating, layout.fail),
                timestamp=(
                    None if timestamp is None else _floats(chunk[layout.column(timestamp)], timestamp, layout.fail)
                ),
            )
        )
    return _concat(frames)


def _unique(ids: np.ndarray | pd.Series, lines: np.ndarray, path: Path, what: str, unit: str = "line") -> None:
    """A key that repeats in an item/user table would make joins ambiguous."""
    series = pd.Series(np.asarray(ids))
    repeated = series.duplicated(keep="first").to_numpy()
    if repeated.any():
        at = int(np.argmax(repeated))
        first = int(np.argmax((series == series.iat[at]).to_numpy()))
        value = series.tolist()[at]  # a Python value, for a plain repr
        raise RawDataError(f"{path} {unit} {lines[at]}: {what} {value!r} already appears on {unit} {lines[first]}")


def _social(layout: _Layout, user: str = "user", friend: str = "friend") -> pd.DataFrame:
    frames = []
    for chunk in _read(layout):
        frames.append(
            pd.DataFrame(
                {
                    "user": _ints(chunk[layout.column(user)], "user id", layout.fail),
                    "friend": _ints(chunk[layout.column(friend)], "friend id", layout.fail),
                    "line": chunk.index.to_numpy(np.int64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _with_latin1_fallback(read: Callable[[str], pd.DataFrame]) -> pd.DataFrame:
    """Read as UTF-8, else as Latin-1 (MovieLens title files come in either)."""
    try:
        return read("utf-8")
    except _NotUtf8Error:
        return read("latin-1")


def _genres_text(values: pd.Series, separator: str) -> pd.Series:
    """Normalise a genre list to names joined by ``|`` (no blanks, ``""`` when none)."""
    parts = rf"\s*{re.escape(separator)}\s*"
    joined = values.fillna("").astype(str).str.strip().str.replace(parts, "|", regex=True)
    joined = joined.str.replace(r"\|{2,}", "|", regex=True).str.strip("|")
    return joined


# --------------------------------------------------------------------------- Coat


def _read_matrix(path: Path) -> np.ndarray:
    """Read one Coat matrix, refusing anything that is not 290 x 300 numbers."""
    size = path.stat().st_size
    if size > COAT_MAX_BYTES:
        # Checked before reading: a wrong multi-GB file must fail at once, not fill memory.
        raise RawDataError(
            f"{path}: {size:,} bytes is more than a {COAT_SHAPE[0]} x {COAT_SHAPE[1]} Coat matrix can take "
            f"(at most {COAT_MAX_BYTES:,} bytes); is this the right file?"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _utf8_error(path, _first_bad_utf8([data])) from None
    rows: list[list[str]] = []
    row_lines: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):  # split("\n"): lines as counted in errors
        tokens = line.split()
        if not tokens:
            continue
        for token in tokens:
            if not _NUMBER.fullmatch(token):
                raise RawDataError(f"{path} line {number}: {token!r} is not a number")
        rows.append(tokens)
        row_lines.append(number)
    if not rows:
        raise _empty(path)
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        at = next(i for i, row in enumerate(rows) if len(row) != len(rows[0]))
        raise RawDataError(
            f"{path} line {row_lines[at]}: {len(rows[at])} values where line {row_lines[0]} has {len(rows[0])}; "
            f"Coat must be a {COAT_SHAPE[0]} x {COAT_SHAPE[1]} matrix"
        )
    shape = (len(rows), len(rows[0]))
    if shape != COAT_SHAPE:
        raise RawDataError(
            f"{path}: matrix is {shape[0]} x {shape[1]}, Coat must be {COAT_SHAPE[0]} x {COAT_SHAPE[1]} (users x items)"
        )
    matrix = np.array(rows, dtype=np.float64)
    if not np.isfinite(matrix).all():
        row = int(np.argmax(~np.isfinite(matrix).all(axis=1)))
        raise RawDataError(f"{path} line {row_lines[row]}: a value is out of range")
    return matrix


def load_coat(directory: Path, options: Mapping[str, Any] | None = None) -> RawData:
    """Parse Coat: two dense 290 x 300 user x item matrices, 0 = unrated.

    Args:
        directory: ``data/01_raw/coat/`` with ``train.ascii`` (biased) and ``test.ascii``
            (unbiased).
        options: Unused.

    Returns:
        One row per non-zero cell: user = row index, item = column index (both
        0-based), line = row + 1; ``shape`` is (290, 300).

    Raises:
        RawDataError: A missing file, a file over :data:`COAT_MAX_BYTES`, a non-numeric
            token, or another shape.
    """
    paths = {"biased": Path(directory) / "train.ascii", "unbiased": Path(directory) / "test.ascii"}
    _require("coat", paths.values())
    frames = []
    for part, path in paths.items():
        matrix = _read_matrix(path)
        rows, cols = np.nonzero(matrix)
        frames.append(_log(rows.astype(np.int64), cols.astype(np.int64), part, rows + 1, rating=matrix[rows, cols]))
    return RawData(
        name="coat",
        interactions=_concat(frames),
        files={part: str(path) for part, path in paths.items()},
        shape=COAT_SHAPE,
    )


# --------------------------------------------------------------------------- Yahoo! R3


def load_yahoo_r3(directory: Path, options: Mapping[str, Any] | None = None) -> RawData:
    """Parse Yahoo! R3: ``user<TAB>item<TAB>rating`` lines, 1-based ids kept as they are.

    Args:
        directory: ``data/01_raw/yahoo_r3/`` with
            ``ydata-ymusic-rating-study-v1_0-train.txt`` (biased) and ``...-test.txt``
            (unbiased). Fields may be separated by any run of whitespace.
        options: Unused.

    Returns:
        The ratings of both files; no timestamps.

    Raises:
        RawDataError: A missing, empty, non-UTF-8 or malformed file.
    """
    names = dict(zip(("biased", "unbiased"), REQUIRED_FILES["yahoo_r3"], strict=True))
    paths = {part: Path(directory) / name for part, name in names.items()}
    _require("yahoo_r3", paths.values())
    frames = [
        _read_log(_Layout(path, ("user", "item", "rating")), part, rating="rating") for part, path in paths.items()
    ]
    return RawData(name="yahoo_r3", interactions=_concat(frames), files={p: str(path) for p, path in paths.items()})


# --------------------------------------------------------------------------- Gowalla


_BLOCK_BYTES = 1 << 22  # 4 MiB of text per numpy pass: about 40 MiB of masks and indices


def _line_blocks(path: Path, size: int | None = None) -> Iterator[tuple[bytes, int]]:
    """Yield ``(block, newlines_before)``; every block but the last ends with a newline."""
    size = size or _BLOCK_BYTES
    newlines = 0
    rest = b""
    with path.open("rb") as handle:
        while True:
            data = handle.read(size)
            if not data:
                if rest:
                    yield rest, newlines
                return
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # a line longer than the block: keep reading
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield block, newlines
            newlines += block.count(b"\n")


def _integer_tokens(path: Path, block: bytes, lines_before: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse the whitespace-separated non-negative integers of a block of whole lines.

    Done on the bytes with numpy (no Python object per token) because a Gowalla-style
    file holds one variable-length line per user, which pandas cannot read column-wise.

    Returns:
        ``(values, lines)``: the int64 values and the 1-based line of each token.
    """
    b = np.frombuffer(block, dtype=np.uint8)
    space = (b == 32) | ((b >= 9) & (b <= 13))
    digit = (b >= 48) & (b <= 57)
    plus = b == 43
    word = ~space
    before = np.concatenate(([False], word[:-1]))
    after = np.concatenate((word[1:], [False]))
    starts = np.flatnonzero(word & ~before)
    ends = np.flatnonzero(word & ~after) + 1
    next_is_digit = np.concatenate((digit[1:], [False]))
    bad = word & ~digit & ~plus
    bad = bad | (plus & (before | ~next_is_digit))  # "+" only as a sign in front of digits
    newline_at = np.flatnonzero(b == 10)
    if bad.any():
        at = int(np.argmax(bad))
        line = lines_before + int(np.searchsorted(newline_at, at)) + 1
        if b[at] >= 0x80:
            error = _utf8_error(path)
            if error is not None:
                raise error
        token = int(np.searchsorted(starts, at, side="right")) - 1
        text = block[starts[token] : ends[token]].decode("utf-8", "replace")
        raise RawDataError(f"{path} line {line}: {text!r} is not a non-negative integer id")
    lines = lines_before + np.searchsorted(newline_at, starts) + 1
    digits_from = starts + plus[starts]
    length = ends - digits_from
    values = np.zeros(len(starts), dtype=np.int64)
    # Up to 18 digits fit int64 whatever they are: add digit k (from the right) times 10**k.
    for k in range(min(18, int(length.max(initial=0)))):
        has = length > k
        values[has] += (b[ends[has] - 1 - k].astype(np.int64) - 48) * 10**k
    for token in np.flatnonzero(length > 18):  # rare: leading zeros or huge values, checked exactly
        value = int(block[digits_from[token] : ends[token]])
        if value > 2**63 - 1:
            text = block[starts[token] : ends[token]].decode()
            raise RawDataError(f"{path} line {lines[token]}: id {text!r} is larger than 2**63-1 ({_INT64_MAX_TEXT})")
        values[token] = value
    return values, lines


def _read_adjacency(path: Path, part: str) -> pd.DataFrame:
    """Parse ``user item item ...`` lines (a user with no item gives no row)."""
    frames = []
    tokens = 0
    for block, lines_before in _line_blocks(path):
        values, lines = _integer_tokens(path, block, lines_before)
        tokens += len(values)
        if not len(values):
            continue
        head = np.concatenate(([True], lines[1:] != lines[:-1]))  # first token of a line = the user
        owner = np.maximum.accumulate(np.where(head, np.arange(len(values)), 0))
        items = ~head
        frames.append(_log(values[owner[items]], values[items], part, lines[items]))
    if tokens == 0:
        raise _empty(path)
    if not frames:
        return _log(np.zeros(0, np.int64), np.zeros(0, np.int64), part, np.zeros(0, np.int64))
    return _concat(frames)


def load_gowalla(directory: Path, options: Mapping[str, Any] | None = None) -> RawData:
    """Parse Gowalla (the LightGCN split): one ``user item item ...`` line per user.

    Args:
        directory: ``data/01_raw/gowalla/`` with ``train.txt`` and ``test.txt``
            (parts ``train``/``test``), 0-based ids separated by whitespace.
        options: Unused.

    Returns:
        One row per (user, item) pair, ``line`` = the user's line; no ratings.

    Raises:
        RawDataError: A missing, empty, non-UTF-8 or malformed file.
    """
    paths = {"train": Path(directory) / "train.txt", "test": Path(directory) / "test.txt"}
    _require("gowalla", paths.values())
    frames = [_read_adjacency(path, part) for part, path in paths.items()]
    return RawData(name="gowalla", interactions=_concat(frames), files={p: str(path) for p, path in paths.items()})


# --------------------------------------------------------------------------- LastFM


def load_lastfm(directory: Path, options: Mapping[str, Any] | None = None) -> RawData:
    """Parse LastFM (hetrec2011, LightGCN form): listening counts plus the friendship network.

    Args:
        directory: ``data/01_raw/lastfm/`` with ``data1.txt`` (train), ``test1.txt``
            (test): ``user<TAB>artist<TAB>count``, and ``trustnetwork.txt``:
            ``user<TAB>user``; 1-based ids.
        options: Unused.

    Returns:
        Interactions with ``rating`` = the listening count, and ``social``.

    Raises:
        RawDataError: A missing, empty, non-UTF-8 or malformed file.
    """
    directory = Path(directory)
    paths = {"train": directory / "data1.txt", "test": directory / "test1.txt"}
    social_path = directory / "trustnetwork.txt"
    _require("lastfm", [*paths.values(), social_path])
    frames = [
        _read_log(_Layout(path, ("user", "item", "count")), part, rating="count") for part, path in paths.items()
    ]
    return RawData(
        name="lastfm",
        interactions=_concat(frames),
        files={**{p: str(path) for p, path in paths.items()}, "social": str(social_path)},
        social=_social(_Layout(social_path, ("user", "friend"))),
    )


# --------------------------------------------------------------------------- MovieLens


def _movielens_genres(path: Path) -> tuple[str, ...]:
    """Genre names from ``u.genre`` (``name|index``), ordered by index 0..n-1."""
    layout = _Layout(path, ("name", "index"), sep="|")
    table = _read_all(layout)
    indices = _ints(table[1], "genre index", layout.fail)
    if sorted(indices.tolist()) != list(range(len(indices))):
        raise RawDataError(f"{path}: genre indices must be 0..{len(indices) - 1} once each, found {sorted(indices)}")
    names = table[0].to_numpy(dtype=object)
    return tuple(str(names[i]) for i in np.argsort(indices))


def _movielens_100k_items(path: Path, genres: tuple[str, ...]) -> pd.DataFrame:
    fields = ("item", "title", "release_date", "video_release_date", "imdb_url", *genres)

    def read(encoding: str) -> pd.DataFrame:
        layout = _Layout(path, fields, sep="|", encoding=encoding)
        table = _read_all(layout)
        lines = table.index.to_numpy(np.int64)
        item = _ints(table[0], "item id", layout.fail)
        _unique(item, lines, path, "item id")
        joined = pd.Series("", index=table.index, dtype=str)
        for offset, genre in enumerate(genres):
            flag = table[5 + offset]
            bad = ~flag.isin(["0", "1"]).to_numpy(bool)
            if bad.any():
                at = int(np.argmax(bad))
                layout.fail(int(lines[at]), f"genre flag {genre!r} is {flag.iat[at]!r}, expected 0 or 1")
            joined = joined.where(flag != "1", joined + "|" + genre)
        return pd.DataFrame(
            {
                "item": item,
                "title": table[1].to_numpy(),
                "genres": joined.str.lstrip("|").to_numpy(),
                "release_date": table[2].to_numpy(),
            }
        ).astype({"title": str, "genres": str, "release_date": str})

    return _with_latin1_fallback(read)


def _movielens_100k_users(path: Path) -> pd.DataFrame:
    layout = _Layout(path, ("user", "age", "gender", "occupation", "zip"), sep="|")
    table = _read_all(layout)
    lines = table.index.to_numpy(np.int64)
    user = _ints(table[0], "user id", layout.fail)
    _unique(user, lines, path, "user id")
    return pd.DataFrame(
        {
            "user": user,
            "age": _ints(table[1], "age", layout.fail),
            "gender": table[2].to_numpy(),
            "occupation": table[3].to_numpy(),
            "zip": table[4].to_numpy(),
        }
    ).astype({"gender": str, "occupation": str, "zip": str})


def load_movielens_100k(directory: Path, options: Mapping[str, Any] | None = None) -> RawData:
    """Parse MovieLens 100K.

    Args:
        directory: ``data/01_raw/movielens_100k/`` (the ``ml-100k`` folder) with
            ``u.data`` (``user item rating timestamp``, tab-separated), ``u.item``
            (``item|title|release date|video release date|IMDb URL|19 genre flags``,
            UTF-8 or Latin-1), ``u.user`` (``user|age|gender|occupation|zip``) and,
            optionally, ``u.genre`` (``name|index``; else :data:`MOVIELENS_100K_GENRES`).
        options: Unused.

    Returns:
        Interactions (part ``all``), ``items`` (item, title, genres, release_date) and
        ``users`` (user, age, gender, occupation, zip).

    Raises:
        RawDataError: A missing, empty or malformed file.
    """
    directory = Path(directory)
    data, item_path, user_path = (directory / name for name in REQUIRED_FILES["movielens_100k"])
    genre_path = directory / "u.genre"
    _require("movielens_100k", [data, item_path, user_path])
    genres = _movielens_genres(genre_path) if genre_path.is_file() else MOVIELENS_100K_GENRES
    interactions = _read_log(
        _Layout(data, ("user", "item", "rating", "timestamp")), "all", rating="rating", timestamp="timestamp"
    )
    return RawData(
        name="movielens_100k",
        interactions=interactions,
        files={"all": str(data), "items": str(item_path), "users": str(user_path)},
        items=_movielens_100k_items(item_path, genres),
        users=_movielens_100k_users(user_path),
    )


def _movielens_1m_items(path: Path) -> pd.DataFrame:
    def read(encoding: str) -> pd.DataFrame:
        # One string per line (NUL never occurs in text), split on the first and the
        # last "::" so that a title holding "::" or ":" stays whole.
        layout = _Layout(path, ("MovieID::Title::Genres",), sep="\x00", encoding=encoding)
        lines_text = _read_all(layout)[0]
        lines = lines_text.index.to_numpy(np.int64)
        short = (lines_text.str.count("::") < 2).to_numpy(bool)
        if short.any():
            at = int(np.argmax(short))
            raise RawDataError(f"{path} line {lines[at]}: expected 3 fields (MovieID::Title::Genres)")
        head = lines_text.str.split("::", n=1, expand=True)
        tail = head[1].str.rsplit("::", n=1, expand=True)
        item = _ints(head[0], "movie id", layout.fail)
        _unique(item, lines, path, "movie id")
        return pd.DataFrame(
            {"item": item, "title": tail[0].to_numpy(), "genres": _genres_text(tail[1], "|").to_numpy()}
        ).astype({"title": str, "genres": str})

    return _with_latin1_fallback(read)


def _movielens_1m_users(path: Path) -> pd.DataFrame:
    layout = _Layout(path, ("UserID", "Gender", "Age", "Occupation", "Zip-code"), sep=":", double_colon=True)
    table = _read_all(layout)
    lines = table.index.to_numpy(np.int64)
    user = _ints(table[layout.column("UserID")], "user id", layout.fail)
    _unique(user, lines, path, "user id")
    occupation = _ints(table[layout.column("Occupation")], "occupation code", layout.fail)
    return pd.DataFrame(
        {
            "user": user,
            "age": _ints(table[layout.column("Age")], "age", layout.fail),
            "gender": table[layout.column("Gender")].to_numpy(),
            "occupation": occupation.astype(str),  # a code 0..20; its meaning is in the README
            "zip": table[layout.column("Zip-code")].to_numpy(),
        }
    ).astype({"gender": str, "occupation": str, "zip": str})


def load_movielens_1m(directory: Path, options: Mapping[str, Any] | None = None) -> RawData:
    """Parse MovieLens 1M (``::``-separated files).

    Args:
        directory: ``data/01_raw/movielens_1m/`` (the ``ml-1m`` folder) with
            ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
            (``MovieID::Title::Genres``, UTF-8 or Latin-1) and ``users.dat``
            (``UserID::Gender::Age::Occupation::Zip-code``).
        options: Unused.

    Returns:
        Interactions (part ``all``), ``items`` (item, title, genres) and ``users``
        (user, age, gender, occupation as the code's string, zip).

    Raises:
        RawDataError: A missing, empty or malformed file.
    """
    directory = Path(directory)
    ratings, movies, users = (directory / name for name in REQUIRED_FILES["movielens_1m"])
    _require("movielens_1m", [ratings, movies, users])
    layout = _Layout(ratings, ("UserID", "MovieID", "Rating", "Timestamp"), sep=":", double_colon=True)
    interactions = _read_log(layout, "all", user="UserID", item="MovieID", rating="Rating", timestamp="Timestamp")
    return RawData(
        name="movielens_1m",
        interactions=interactions,
        files={"all": str(ratings), "items": str(movies), "users": str(users)},
        items=_movielens_1m_items(movies),
        users=_movielens_1m_users(users),
    )


# --------------------------------------------------------------------------- Anime

_ANIME_COLUMNS = ("anime_id", "name", "genre", "type", "episodes", "rating", "members")
_RATING_COLUMNS = ("user_id", "anime_id", "rating")
_UNKNOWN_ANIME = "ratings of an anime not in anime.csv"


def _check_header(layout: _Layout, required: Sequence[str]) -> None:
    missing = [name for name in required if name not in layout.fields]
    if missing:
        raise RawDataError(
            f"{layout.path} line 1: missing column(s) {', '.join(missing)}; the header has: {', '.join(layout.fields)}"
        )


def _anime_items(path: Path) -> pd.DataFrame:
    layout = _header_layout(path, ",")
    _check_header(layout, _ANIME_COLUMNS)
    table = _read_all(layout)
    lines = table.index.to_numpy(np.int64)

    def column(name: str) -> pd.Series:
        return table[layout.column(name)]

    item = _ints(column("anime_id"), "anime_id", layout.fail)
    _unique(item, lines, path, "anime_id")
    episodes = column("episodes")
    return pd.DataFrame(
        {
            "item": item,
            "title": column("name").to_numpy(),
            "genres": _genres_text(column("genre"), ",").to_numpy(),
            "type": column("type").to_numpy(),
            # "Unknown" (airing series) -> NaN; float keeps NaN without a nullable dtype.
            "episodes": _floats(episodes.where(episodes != "Unknown", ""), "episodes", layout.fail, allow_empty=True),
            "members": _ints(column("members"), "members", layout.fail),
            "average_rating": _floats(column("rating"), "rating", layout.fail, allow_empty=True),
        }
    ).astype({"title": str, "genres": str, "type": str})


def load_anime(directory: Path, options: Mapping[str, Any] | None = None) -> RawData:
    """Parse the Kaggle Anime Recommendations data.

    Args:
        directory: ``data/01_raw/anime/`` with ``anime.csv``
            (``anime_id,name,genre,type,episodes,rating,members``) and ``rating.csv``
            (``user_id,anime_id,rating``; ``-1`` = watched, not rated).
        options: Unused.

    Returns:
        Interactions (part ``all``) with ``-1`` kept as a rating value; ratings of an
        anime absent from ``anime.csv`` dropped and counted in ``dropped``. ``items``:
        item, title, genres, type, episodes (float, NaN when "Unknown"), members and
        average_rating (NaN when empty); anime without ratings are kept.

    Raises:
        RawDataError: A missing, empty or malformed file.
    """
    directory = Path(directory)
    anime, ratings = (directory / name for name in REQUIRED_FILES["anime"])
    _require("anime", [anime, ratings])
    items = _anime_items(anime)
    layout = _header_layout(ratings, ",", csv.QUOTE_NONE)
    _check_header(layout, _RATING_COLUMNS)
    known = np.sort(items["item"].to_numpy())
    frames = []
    dropped = 0
    for chunk in _read(layout):
        log = _log(
            _ints(chunk[layout.column("user_id")], "user_id", layout.fail),
            _ints(chunk[layout.column("anime_id")], "anime_id", layout.fail),
            "all",
            chunk.index.to_numpy(np.int64),
            rating=_floats(chunk[layout.column("rating")], "rating", layout.fail),
        )
        keep = np.isin(log["item"].to_numpy(), known, assume_unique=False)
        dropped += int((~keep).sum())
        frames.append(log[keep])
    return RawData(
        name="anime",
        interactions=_concat(frames),
        files={"all": str(ratings), "items": str(anime)},
        items=items,
        dropped={_UNKNOWN_ANIME: dropped},
    )


# --------------------------------------------------------------------------- custom

CUSTOM_COLUMN_DEFAULTS: dict[str, Any] = {
    "user": "user",
    "item": "item",
    "rating": None,
    "timestamp": None,
    "timestamp_format": None,
    "title": "title",
    "genres": "genres",
    "genre_separator": "|",
    "friend": ["user", "friend"],
}
_CUSTOM_KEYS = ("name", "interactions", "items", "users", "social", "columns")
_CSV_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


@dataclass(frozen=True)
class _Source:
    """One custom file, read: its columns by name (text for CSV, native for Parquet)."""

    path: Path
    frame: pd.DataFrame  # index: 1-based line (CSV) or row (Parquet) number
    layout: _Layout | None  # None for Parquet

    @property
    def unit(self) -> str:
        return "line" if self.layout is not None else "row"

    def fail(self, line: int, detail: str) -> NoReturn:
        if self.layout is not None:
            self.layout.fail(line, detail)
        raise RawDataError(f"{self.path} row {line}: {detail}")

    @property
    def lines(self) -> np.ndarray:
        return self.frame.index.to_numpy(np.int64)

    def column(self, name: str, parameter: str) -> pd.Series:
        """A column by its name in the file; an unknown name names the parameter to fix."""
        if name not in self.frame.columns:
            raise RawDataError(
                f"{self.path}: no column {name!r} (parameter custom.columns.{parameter}); "
                f"the file has columns: {', '.join(map(str, self.frame.columns))}"
            )
        return self.frame[name]


def _custom_source(path: Path) -> _Source:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several unrelated types for a bad file
            raise RawDataError(f"{path}: cannot be read as Parquet ({error})") from None
        if frame.empty:
            raise _empty(path)
        frame = frame.reset_index(drop=True)
        frame.index = frame.index + 1
        frame.columns = [str(name) for name in frame.columns]
        return _Source(path, frame, None)
    if suffix not in _CSV_SEPARATORS:
        raise RawDataError(
            f"{path}: unknown file type {suffix or '(no extension)'!r}; use .csv, .tsv/.txt (tab-separated) or .parquet"
        )
    sep = _CSV_SEPARATORS[suffix]
    # TSV does not quote (a tab cannot occur in a field), so quotes in titles stay literal.
    layout = _header_layout(path, sep, csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE)
    frame = _read_all(layout)
    frame.columns = list(layout.fields)
    return _Source(path, frame, layout)


def _text(source: _Source, values: pd.Series, what: str) -> pd.Series:
    """A column as text; bytes (a Parquet binary column) are decoded and must be UTF-8."""
    try:
        return values.astype(str)
    except UnicodeDecodeError:
        for row, value in values.items():
            if isinstance(value, bytes):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    source.fail(int(row), f"column {values.name!r} ({what}) holds bytes that are not UTF-8: {value!r}")
        raise


def _id_text(source: _Source, values: pd.Series, what: str) -> pd.Series:
    """Ids as stripped text; an empty or missing id fails, floats are refused (ambiguous ids)."""
    if pd.api.types.is_float_dtype(values.dtype):
        raise RawDataError(
            f"{source.path}: column {values.name!r} ({what} ids) holds floating-point numbers; "
            "ids must be integers or strings"
        )
    missing = values.isna().to_numpy(bool)
    text = _text(source, values, f"{what} ids").str.strip()
    missing = missing | (text == "").to_numpy(bool, na_value=True)
    if missing.any():
        source.fail(int(values.index[np.argmax(missing)]), f"empty {what} id in column {values.name!r}")
    return text


def _all_integers(text: pd.Series) -> bool:
    """Whether every id is an integer id as the fixed formats define it (``^+?[0-9]+$``, <= 2**63-1)."""
    if not text.str.fullmatch(_INT_PATTERN).to_numpy(dtype=bool, na_value=False).all():
        return False
    significant = text.str.lstrip("+").str.lstrip("0")
    length = significant.str.len().to_numpy(np.int64)
    return not (
        (length > len(_INT64_MAX_TEXT)).any()
        or ((length == len(_INT64_MAX_TEXT)) & (significant > _INT64_MAX_TEXT).to_numpy(bool, na_value=False)).any()
    )


def _ids(columns: Sequence[tuple[_Source, pd.Series, str]]) -> list[np.ndarray | pd.api.extensions.ExtensionArray]:
    """Convert one id space (all the columns naming users, or items) to one dtype.

    int64 when every id of every column is an integer, else str for all of them, so
    that the interactions and the item/user/social tables join on equal values.
    """
    texts = [(source, _id_text(source, values, what), what) for source, values, what in columns]
    if all(_all_integers(text) for _, text, _ in texts):
        return [_ints(text, f"{what} id", source.fail) for source, text, what in texts]
    return [text.astype(str).array for _, text, _ in texts]


def _custom_numbers(source: _Source, values: pd.Series, what: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype) or not (
        pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)
    ):
        raise RawDataError(f"{source.path}: column {values.name!r} ({what}) is not numeric")
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(numbers)
        if bad.any():
            at = int(np.argmax(bad))
            source.fail(int(values.index[at]), f"{what} {values.iat[at]!r} is not a (finite) number")
        return numbers
    return _floats(_text(source, values, what), what, source.fail)


def _seconds(stamps: pd.Series) -> np.ndarray:
    """Seconds since the epoch of UTC datetimes (NaN for NaT), whatever their resolution."""
    # In numpy, in the stamps' own unit: subtracting a (nanosecond) pd.Timestamp would cast
    # to nanoseconds and overflow outside the years 1677-2262.
    naive = stamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    return np.asarray((naive - np.datetime64(0, "s")) / np.timedelta64(1, "s"), dtype=np.float64)  # NaT -> NaN


def _custom_timestamps(source: _Source, values: pd.Series, date_format: str | None) -> np.ndarray:
    """Seconds since the epoch from numbers, or from date/time text parsed by pandas (naive = UTC)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):  # Parquet timestamps
        stamps = values if getattr(values.dt, "tz", None) is not None else values.dt.tz_localize("UTC")
        if stamps.isna().any():
            source.fail(int(values.index[np.argmax(stamps.isna().to_numpy())]), "empty timestamp")
        return _seconds(stamps)
    if pd.api.types.is_numeric_dtype(values.dtype):
        return _custom_numbers(source, values, "timestamp")
    text = _text(source, values, "timestamp").str.strip()
    empty = (text == "").to_numpy(bool, na_value=True)
    if empty.any():
        source.fail(int(values.index[np.argmax(empty)]), "empty timestamp")
    if text.str.fullmatch(_NUMBER_PATTERN).to_numpy(bool, na_value=False).all():
        return _floats(text, "timestamp", source.fail)
    try:
        stamps = pd.to_datetime(text, errors="coerce", utc=True, format=date_format or "ISO8601")
    except ValueError as error:  # errors="coerce" covers the values, not a bad format ("%", "%s")
        raise RawDataError(
            f"{source.path}: cannot read column {values.name!r} (timestamp) with "
            f"custom.columns.timestamp_format {date_format!r}: {error}"
        ) from None
    seconds = _seconds(stamps)
    unparsed = np.isnan(seconds)
    if date_format is None and unparsed.any():
        # Not ISO 8601: let pandas (dateutil) read each of the others on its own.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            seconds[unparsed] = _seconds(pd.to_datetime(text[unparsed], errors="coerce", utc=True, format="mixed"))
        unparsed = np.isnan(seconds)
    if unparsed.any():
        at = int(np.argmax(unparsed))
        source.fail(
            int(values.index[at]),
            f"timestamp {values.iat[at]!r} is neither a number of seconds nor a date/time pandas can parse"
            + (f" with format {date_format!r} (custom.columns.timestamp_format)" if date_format else ""),
        )
    return seconds


def _features(values: pd.Series, infer: bool) -> Any:
    """A feature column of an item/user table.

    Args:
        values: The column (text for CSV, native for Parquet).
        infer: Whether to type text (CSV): int64 when every value is an integer, float64
            (NaN for empty cells) when every non-empty value is a number, else text.
            Integers with leading zeros (zip codes, codes) stay text, or they would be lost.
    """
    if not infer:
        return values.array
    text = values.str.strip()
    filled = (text != "").to_numpy(bool, na_value=False)
    if not filled.any():
        return values.array
    sample = text[filled]
    if sample.str.fullmatch(r"[+-]?0[0-9]+").to_numpy(bool, na_value=False).any():
        return values.array
    if filled.all() and sample.str.fullmatch(r"[+-]?[0-9]+").to_numpy(bool, na_value=False).all():
        try:
            return np.asarray(pc.cast(_arrow(sample.str.lstrip("+")), pa.int64()).to_numpy(), dtype=np.int64)
        except pa.ArrowInvalid:  # beyond int64: keep the text
            return values.array
    if sample.str.fullmatch(_NUMBER_PATTERN).to_numpy(bool, na_value=False).all():
        numbers = pc.cast(_arrow(text.where(filled)), pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(numbers, dtype=np.float64)
    return values.array


def _extra_columns(source: _Source, used: Sequence[str], reserved: Sequence[str]) -> dict[str, Any]:
    """The other columns of a table, type-inferred; a clash with an output name fails."""
    extra = {}
    for name in source.frame.columns:
        if name in used:
            continue
        if name in reserved:
            raise RawDataError(
                f"{source.path}: column {name!r} would clash with the output column {name!r}; rename it in the file "
                "or point the matching custom.columns parameter at it"
            )
        extra[name] = _features(source.frame[name], infer=source.layout is not None)
    return extra


def _custom_options(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    # The parameters come straight from YAML, so their types are checked too.
    if options is not None and not isinstance(options, Mapping):
        raise RawDataError(
            f"the custom parameters (custom.interactions, custom.columns, ...) must be a mapping, got {options!r}"
        )
    options = dict(options or {})
    unknown = sorted(map(str, set(options) - set(_CUSTOM_KEYS)))
    if unknown:
        raise RawDataError(f"unknown parameter(s) {', '.join('custom.' + k for k in unknown)}; valid: {_CUSTOM_KEYS}")
    columns = dict(CUSTOM_COLUMN_DEFAULTS)
    given = options.get("columns") or {}
    if not isinstance(given, Mapping):
        raise RawDataError(f"parameter custom.columns must be a mapping (user: ..., item: ...), got {given!r}")
    unknown = sorted(map(str, set(given) - set(CUSTOM_COLUMN_DEFAULTS)))
    if unknown:
        raise RawDataError(
            f"unknown parameter(s) {', '.join('custom.columns.' + k for k in unknown)}; "
            f"valid: {tuple(CUSTOM_COLUMN_DEFAULTS)}"
        )
    columns.update(given)
    if not options.get("interactions"):
        raise RawDataError("parameter custom.interactions is required: the path of the interactions file")
    for key in ("user", "item"):
        if not columns[key]:
            raise RawDataError(f"parameter custom.columns.{key} is required: the column holding the {key} ids")
    for key in ("user", "item", "rating", "timestamp", "timestamp_format", "title", "genres"):
        if columns[key] is not None and not isinstance(columns[key], str):
            raise RawDataError(f"parameter custom.columns.{key} must be a string or null, got {columns[key]!r}")
    if not isinstance(columns["genre_separator"], str):
        raise RawDataError(
            f"parameter custom.columns.genre_separator must be a string, got {columns['genre_separator']!r}"
        )
    friend = columns["friend"]
    if options.get("social") and (
        isinstance(friend, str)
        or not isinstance(friend, Iterable)
        or len(list(friend)) != 2
        or not all(isinstance(name, str) for name in friend)
    ):
        raise RawDataError(f"parameter custom.columns.friend must name two columns [user, friend], got {friend!r}")
    return options, columns


def load_custom(directory: Path, options: Mapping[str, Any] | None = None) -> RawData:
    """Parse a user-supplied dataset described by the Kedro parameter block ``custom``.

    Args:
        directory: Base of relative paths (``data/01_raw/custom/``).
        options: The ``custom`` parameters::

            name: custom              # RawData.name
            interactions: ratings.csv # required
            items: null               # optional item table
            users: null               # optional user table
            social: null              # optional user-user table
            columns:
              user: user              # user id column (interactions, users file)
              item: item              # item id column (interactions, items file)
              rating: null            # rating column; null -> rating NaN
              timestamp: null         # time column; null -> timestamp NaN
              timestamp_format: null  # strftime format for date/time text; null: pandas infers it
              title: title            # items file; null -> "" titles
              genres: genres          # items file; null -> "" genres
              genre_separator: "|"    # how genres are separated in the genres column
              friend: [user, friend]  # the two user id columns of the social file

            Files are chosen by extension: ``.csv`` (comma, quoted fields allowed),
            ``.tsv``/``.txt`` (tab, no quoting), ``.parquet``; CSV/TSV need a header line.
            A named column that the file lacks is an error (set its parameter to null to
            go without the optional ones). Ids are stripped of surrounding whitespace; the
            user ids (interactions, users and social files together) are int64 when every
            one of them is an integer (``^+?[0-9]+$``, at most 2**63-1), else str; the
            item ids (interactions and items files) likewise, independently. A timestamp
            is numeric seconds since the epoch or date/time text (naive times are taken
            as UTC). The items table gets ``item, title, genres`` and then the file's other
            columns; the users table ``user`` and then every other column; numeric-looking
            CSV columns become numbers.

    Returns:
        The dataset, interactions in part ``all``; ``line`` is the file's line (or the
        Parquet row).

    Raises:
        RawDataError: Missing or unknown parameters or files, an unknown column, a
            malformed row.
    """
    options, columns = _custom_options(options)
    directory = Path(directory)
    roles = ("interactions", "items", "users", "social")
    paths = {role: directory / str(options[role]) for role in roles if options.get(role)}
    _require("custom", paths.values())
    sources = {role: _custom_source(path) for role, path in paths.items()}
    log = sources["interactions"]

    user_columns: list[tuple[_Source, pd.Series, str]] = [(log, log.column(columns["user"], "user"), "user")]
    item_columns: list[tuple[_Source, pd.Series, str]] = [(log, log.column(columns["item"], "item"), "item")]
    if "users" in sources:
        user_columns.append((sources["users"], sources["users"].column(columns["user"], "user"), "user"))
    if "social" in sources:
        first, second = list(columns["friend"])
        user_columns.append((sources["social"], sources["social"].column(first, "friend"), "user"))
        user_columns.append((sources["social"], sources["social"].column(second, "friend"), "friend"))
    if "items" in sources:
        item_columns.append((sources["items"], sources["items"].column(columns["item"], "item"), "item"))
    # Validate the named columns before converting anything, so a typo fails first.
    rating = log.column(columns["rating"], "rating") if columns["rating"] else None
    timestamp = log.column(columns["timestamp"], "timestamp") if columns["timestamp"] else None
    item_source = sources.get("items")
    title = item_source.column(columns["title"], "title") if item_source and columns["title"] else None
    genres = item_source.column(columns["genres"], "genres") if item_source and columns["genres"] else None

    users = _ids(user_columns)
    items = _ids(item_columns)
    interactions = _log(
        users[0],
        items[0],
        "all",
        log.lines,
        rating=None if rating is None else _custom_numbers(log, rating, "rating"),
        timestamp=None if timestamp is None else _custom_timestamps(log, timestamp, columns["timestamp_format"]),
    )

    item_table = None
    if item_source is not None:
        count = len(item_source.frame)
        _unique(items[1], item_source.lines, item_source.path, "item id", item_source.unit)
        used = [columns["item"], columns["title"], columns["genres"]]
        item_table = pd.DataFrame(
            {
                "item": items[1],
                "title": pd.array(
                    [""] * count if title is None else _text(item_source, title.fillna(""), "title").to_numpy(),
                    dtype=str,
                ),
                "genres": pd.array(
                    [""] * count
                    if genres is None
                    else _genres_text(
                        _text(item_source, genres.fillna(""), "genres"), columns["genre_separator"]
                    ).to_numpy(),
                    dtype=str,
                ),
                **_extra_columns(item_source, used, ("item", "title", "genres")),
            }
        )

    user_table = None
    if "users" in sources:
        user_source = sources["users"]
        _unique(users[1], user_source.lines, user_source.path, "user id", user_source.unit)
        user_table = pd.DataFrame(
            {"user": users[1], **_extra_columns(user_source, [columns["user"]], ("user",))}
        )

    social = None
    if "social" in sources:
        social_source = sources["social"]
        index = 1 + ("users" in sources)
        social = pd.DataFrame({"user": users[index], "friend": users[index + 1], "line": social_source.lines})

    files = {"all": str(paths["interactions"]), **{role: str(p) for role, p in paths.items() if role != "interactions"}}
    return RawData(
        name=str(options.get("name") or "custom"),
        interactions=interactions,
        files=files,
        items=item_table,
        users=user_table,
        social=social,
    )


LOADERS: dict[str, Callable[[Path, Mapping[str, Any] | None], RawData]] = {
    "coat": load_coat,
    "yahoo_r3": load_yahoo_r3,
    "gowalla": load_gowalla,
    "lastfm": load_lastfm,
    "movielens_100k": load_movielens_100k,
    "movielens_1m": load_movielens_1m,
    "anime": load_anime,
    "custom": load_custom,
}
