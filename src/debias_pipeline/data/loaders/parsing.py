"""The parsing primitives every loader shares: :class:`RawData` (what a loader returns),
:class:`RawDataError` (a malformed file, named with its line), checked reading of
delimited text in chunks, typed id / number columns, UTF-8 checks and the required
files of each dataset."""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# INTERACTION_COLUMNS is re-exported: RawData's readers find it next to RawData.
from debias_pipeline.data.loaders.interactions import INTERACTION_COLUMNS, Interactions  # noqa: F401


def printable(value: object) -> str:
    """Text from a file as a message may show it: every non-printable character escaped as
    ``repr`` escapes it (``\\x1b``, ``\\r``, ``\\t``, ``\\u202e``), the rest unchanged.

    A header or value echoed raw could recolour the terminal (``\\x1b[31m``), return the
    cursor and overwrite the message (``\\r``) or fake a line of its own (``\\n``).
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)

class RawDataError(ValueError):
    """A raw file is missing or malformed; the message names the file and the 1-based line.

    The message passes through :func:`printable`, so whatever file content it quotes
    (values, header names, a parser's own message) reaches the terminal escaped.
    """

    def __init__(self, message: object) -> None:
        super().__init__(printable(message))

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

def _read_log(
    layout: _Layout,
    part: str,
    log: Interactions,
    *,
    user: str = "user",
    item: str = "item",
    rating: str | None = None,
    timestamp: str | None = None,
) -> None:
    """Parse a one-interaction-per-row file into ``log``, one typed chunk at a time."""

    def what(name: str) -> str:
        return name if name.lower().endswith("id") else f"{name} id"

    for chunk in _read(layout):
        log.add(
            _ints(chunk[layout.column(user)], what(user), layout.fail),
            _ints(chunk[layout.column(item)], what(item), layout.fail),
            part,
            chunk.index.to_numpy(np.int64),
            rating=None if rating is None else _floats(chunk[layout.column(rating)], rating, layout.fail),
            timestamp=None if timestamp is None else _floats(chunk[layout.column(timestamp)], timestamp, layout.fail),
        )

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
    columns: dict[str, list[np.ndarray]] = {"user": [], "friend": [], "line": []}
    for chunk in _read(layout):
        columns["user"].append(_ints(chunk[layout.column(user)], "user id", layout.fail))
        columns["friend"].append(_ints(chunk[layout.column(friend)], "friend id", layout.fail))
        columns["line"].append(chunk.index.to_numpy(np.int64))
    return pd.DataFrame({name: np.concatenate(pieces) for name, pieces in columns.items()}, copy=False)

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
