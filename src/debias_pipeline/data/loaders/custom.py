"""Custom interaction logs (``custom``): CSV / TSV / Parquet files with configurable
columns, optional item and user tables and a social graph."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from debias_pipeline.data.loaders.custom_options import custom_file_paths, custom_options
from debias_pipeline.data.loaders.interactions import Interactions, join_pieces, line_bound, text_array
from debias_pipeline.data.loaders.parsing import (
    _INT64_MAX_TEXT,
    _INT_PATTERN,
    _NUMBER_PATTERN,
    CHUNK_ROWS,
    RawData,
    RawDataError,
    _arrow,
    _empty,
    _floats,
    _genres_text,
    _header_layout,
    _ints,
    _Layout,
    _read,
    _require,
    _unique,
)

_CSV_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}

@dataclass(frozen=True)
class _Source:
    """One custom file: its column names and its rows (text for CSV, native for Parquet).

    A CSV/TSV file is read chunk by chunk (``chunks``), so that only the typed columns of
    the rows read so far are held, never the whole file as text; a Parquet file (typed
    and compressed already) is read at once and handed out in slices of as many rows.
    """

    path: Path
    names: tuple[str, ...]
    layout: _Layout | None = None  # CSV / TSV
    table: pd.DataFrame | None = None  # Parquet; index: 1-based row number

    @property
    def unit(self) -> str:
        return "line" if self.layout is not None else "row"

    def fail(self, line: int, detail: str) -> NoReturn:
        if self.layout is not None:
            self.layout.fail(line, detail)
        raise RawDataError(f"{self.path} row {line}: {detail}")

    def require(self, name: str, parameter: str) -> str:
        """A column's name, checked; an unknown name names the parameter to fix."""
        if name not in self.names:
            raise RawDataError(
                f"{self.path}: no column {name!r} (parameter custom.columns.{parameter}); "
                f"the file has columns: {', '.join(self.names)}"
            )
        return name

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The rows by columns' names, at most ``CHUNK_ROWS`` at a time, indexed by line (row)."""
        if self.table is not None:
            for start in range(0, len(self.table), CHUNK_ROWS):
                yield self.table.iloc[start : start + CHUNK_ROWS]
            return
        assert self.layout is not None
        for chunk in _read(self.layout):
            chunk.columns = list(self.layout.fields)
            yield chunk

    def read_all(self) -> pd.DataFrame:
        """Every row at once (the item and user tables: one row per item or user)."""
        return self.table if self.table is not None else pd.concat(list(self.chunks()))

def _custom_source(path: Path) -> _Source:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # noqa: BLE001 (pyarrow raises several unrelated types for a bad file)
            raise RawDataError(f"{path}: cannot be read as Parquet ({error})") from None
        if frame.empty:
            raise _empty(path)
        frame = frame.reset_index(drop=True)
        frame.index = frame.index + 1
        frame.columns = [str(name) for name in frame.columns]
        return _Source(path, tuple(frame.columns), table=frame)
    if suffix not in _CSV_SEPARATORS:
        raise RawDataError(
            f"{path}: unknown file type {suffix or '(no extension)'!r}; use .csv, .tsv/.txt (tab-separated) or .parquet"
        )
    sep = _CSV_SEPARATORS[suffix]
    # TSV does not quote (a tab cannot occur in a field), so quotes in titles stay literal.
    layout = _header_layout(path, sep, csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE)
    return _Source(path, layout.fields, layout=layout)

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

def _canonical(text: pd.Series) -> bool:
    """Whether integer ids are written as ``str(int)`` writes them (no sign, no leading zero),
    so that their int64 values give the text back exactly."""
    return not text.str.match(r"\+|0[0-9]").to_numpy(bool, na_value=False).any()

@dataclass
class _IdPiece:
    source: _Source
    what: str
    values: Any  # int64 (canonical, so the text is str(value)), or stripped text
    integer: bool  # every value an integer id, whether held as int64 or as text

class _IdSpace:
    """One id space (every column naming users, or items), gathered chunk by chunk.

    The ids are int64 when every id of every column is an integer, else text for all of
    them, so that the interactions and the item/user/social tables join on equal values.
    That is known only at the end: meanwhile each piece is held as int64 when its text
    is the integer's own (``"42"``), which converts back to the same text if a later
    piece turns out not to be integer, and as text otherwise (``"007"``, ``"+3"``, ``"u1"``).
    """

    def __init__(self) -> None:
        self._pieces: list[_IdPiece] = []

    def add(self, source: _Source, values: pd.Series, what: str) -> None:
        dtype = values.dtype
        if pd.api.types.is_integer_dtype(dtype) and not values.isna().any():  # Parquet integers
            numbers = values.to_numpy()
            if numbers.min(initial=0) >= 0 and numbers.max(initial=0) <= 2**63 - 1:
                self._pieces.append(_IdPiece(source, what, numbers.astype(np.int64), True))
                return
        text = _id_text(source, values, what)
        if not _all_integers(text):
            self._pieces.append(_IdPiece(source, what, text.array, False))
        elif _canonical(text):
            self._pieces.append(_IdPiece(source, what, _ints(text, f"{what} id", source.fail), True))
        else:
            self._pieces.append(_IdPiece(source, what, text.array, True))

    def resolve(self) -> list[Any]:
        """The pieces, in the order added, all int64 or all text; the space is emptied."""
        pieces, self._pieces = self._pieces, []
        integer = all(piece.integer for piece in pieces)
        resolved = []
        for piece in pieces:
            held_as_int = isinstance(piece.values, np.ndarray)
            if integer and not held_as_int:
                resolved.append(_ints(pd.Series(piece.values), f"{piece.what} id", piece.source.fail))
            elif not integer and held_as_int:
                resolved.append(text_array([pc.cast(pa.array(piece.values), pa.large_string())]))
            else:
                resolved.append(piece.values)
            piece.values = None  # released as the resolved piece replaces it
        return resolved

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

def _custom_timestamps(
    source: _Source, values: pd.Series, date_format: str | None, numbers_before: bool | None = None
) -> tuple[np.ndarray, bool]:
    """Seconds since the epoch from numbers, or from date/time text parsed by pandas (naive = UTC).

    Args:
        source: The file.
        values: One chunk of the column.
        date_format: ``custom.columns.timestamp_format``.
        numbers_before: What the chunks before held: numbers of seconds (True), date/time
            text (False), or None for the first chunk. Text that is all numbers is read as
            seconds unless the column has held dates, then it is parsed as dates too.

    Returns:
        The seconds, and whether the chunk was numbers of seconds.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):  # Parquet timestamps
        stamps = values if getattr(values.dt, "tz", None) is not None else values.dt.tz_localize("UTC")
        if stamps.isna().any():
            source.fail(int(values.index[np.argmax(stamps.isna().to_numpy())]), "empty timestamp")
        return _seconds(stamps), False
    if pd.api.types.is_numeric_dtype(values.dtype):
        return _custom_numbers(source, values, "timestamp"), True
    text = _text(source, values, "timestamp").str.strip()
    empty = (text == "").to_numpy(bool, na_value=True)
    if empty.any():
        source.fail(int(values.index[np.argmax(empty)]), "empty timestamp")
    numeric = text.str.fullmatch(_NUMBER_PATTERN).to_numpy(bool, na_value=False)
    if numeric.all() and numbers_before is not False:
        return _floats(text, "timestamp", source.fail), True
    if numbers_before:
        # The rows before were read as seconds and are gone: a column holds one kind.
        at = int(np.argmin(numeric))
        source.fail(
            int(values.index[at]),
            f"timestamp {values.iat[at]!r} is date/time text but every timestamp before it is a number of "
            f"seconds; column {values.name!r} must hold one kind",
        )
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
    return seconds, False

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

def _extra_columns(
    source: _Source, frame: pd.DataFrame, used: Sequence[str], reserved: Sequence[str]
) -> dict[str, Any]:
    """The other columns of a table, type-inferred; a clash with an output name fails."""
    extra = {}
    for name in frame.columns:
        if name in used:
            continue
        if name in reserved:
            raise RawDataError(
                f"{source.path}: column {name!r} would clash with the output column {name!r}; rename it in the file "
                "or point the matching custom.columns parameter at it"
            )
        extra[name] = _features(frame[name], infer=source.layout is not None)
    return extra

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
            go without the optional ones). The interactions and social files are read
            chunk by chunk, each chunk typed at once, so a CSV/TSV file is never held
            whole as text (docs/datasets.md, "Memory"); the item and user tables are
            read whole. Ids are stripped of surrounding whitespace; the
            user ids (interactions, users and social files together) are int64 when every
            one of them is an integer (``^+?[0-9]+$``, at most 2**63-1), else str; the
            item ids (interactions and items files) likewise, independently. A timestamp
            column holds numeric seconds since the epoch or date/time text (naive times
            are taken as UTC), one or the other. The items table gets ``item, title, genres`` and then the file's other
            columns; the users table ``user`` and then every other column; numeric-looking
            CSV columns become numbers.

    Returns:
        The dataset, interactions in part ``all``; ``line`` is the file's line (or the
        Parquet row).

    Raises:
        RawDataError: Missing or unknown parameters or files, an unknown column, a
            malformed row.
    """
    options, columns = custom_options(options)
    paths = custom_file_paths(Path(directory), options)
    _require("custom", paths.values())
    sources = {role: _custom_source(path) for role, path in paths.items()}
    log, item_source = sources["interactions"], sources.get("items")
    user_source, social_source = sources.get("users"), sources.get("social")

    # Check every named column before reading any row, so a typo fails first.
    user, item = log.require(columns["user"], "user"), log.require(columns["item"], "item")
    if user_source is not None:
        user_source.require(columns["user"], "user")
    friends = list(columns["friend"])
    if social_source is not None:
        for name in friends:
            social_source.require(name, "friend")
    if item_source is not None:
        item_source.require(columns["item"], "item")
    rating = log.require(columns["rating"], "rating") if columns["rating"] else None
    timestamp = log.require(columns["timestamp"], "timestamp") if columns["timestamp"] else None
    title = item_source.require(columns["title"], "title") if item_source and columns["title"] else None
    genres = item_source.require(columns["genres"], "genres") if item_source and columns["genres"] else None

    # The interactions, one chunk at a time: ids into their spaces, the rest typed at once.
    users, items = _IdSpace(), _IdSpace()
    interactions = Interactions(len(log.table) if log.table is not None else line_bound([log.path]))
    chunks = 0
    numbers: bool | None = None
    for chunk in log.chunks():
        users.add(log, chunk[user], "user")
        items.add(log, chunk[item], "item")
        seconds = None
        if timestamp is not None:
            seconds, numbers = _custom_timestamps(log, chunk[timestamp], columns["timestamp_format"], numbers)
        ratings = None if rating is None else _custom_numbers(log, chunk[rating], "rating")
        interactions.add_rows("all", chunk.index.to_numpy(np.int64), rating=ratings, timestamp=seconds)
        chunks += 1
    # The side tables (one row per user or item) whole; the social ties by chunks.
    user_frame = item_frame = None
    if user_source is not None:
        user_frame = user_source.read_all()
        users.add(user_source, user_frame[columns["user"]], "user")
    social_lines: list[np.ndarray] = []
    if social_source is not None:
        for chunk in social_source.chunks():
            users.add(social_source, chunk[friends[0]], "user")
            users.add(social_source, chunk[friends[1]], "friend")
            social_lines.append(chunk.index.to_numpy(np.int64))
    if item_source is not None:
        item_frame = item_source.read_all()
        items.add(item_source, item_frame[columns["item"]], "item")

    user_ids, item_ids = users.resolve(), items.resolve()
    for k in range(chunks):
        interactions.add_ids(user_ids[k], item_ids[k])
        user_ids[k] = item_ids[k] = None  # the log holds them now

    item_table = None
    if item_source is not None and item_frame is not None:
        count = len(item_frame)
        lines = item_frame.index.to_numpy(np.int64)
        _unique(item_ids[-1], lines, item_source.path, "item id", item_source.unit)
        item_table = pd.DataFrame(
            {
                "item": item_ids[-1],
                "title": pd.array(
                    [""] * count
                    if title is None
                    else _text(item_source, item_frame[title].fillna(""), "title").to_numpy(),
                    dtype=str,
                ),
                "genres": pd.array(
                    [""] * count
                    if genres is None
                    else _genres_text(
                        _text(item_source, item_frame[genres].fillna(""), "genres"), columns["genre_separator"]
                    ).to_numpy(),
                    dtype=str,
                ),
                **_extra_columns(
                    item_source, item_frame, [columns["item"], title, genres], ("item", "title", "genres")
                ),
            }
        )

    user_table = None
    if user_source is not None and user_frame is not None:
        lines = user_frame.index.to_numpy(np.int64)
        _unique(user_ids[chunks], lines, user_source.path, "user id", user_source.unit)
        user_table = pd.DataFrame(
            {"user": user_ids[chunks], **_extra_columns(user_source, user_frame, [columns["user"]], ("user",))}
        )

    social = None
    if social_source is not None:
        first = chunks + (user_source is not None)
        pairs = user_ids[first:]
        social = pd.DataFrame(
            {
                "user": join_pieces(pairs[0::2], np.int64),
                "friend": join_pieces(pairs[1::2], np.int64),
                "line": np.concatenate(social_lines),
            },
            copy=False,
        )

    files = {"all": str(paths["interactions"]), **{role: str(p) for role, p in paths.items() if role != "interactions"}}
    return RawData(
        name=str(options.get("name") or "custom"),
        interactions=interactions.frame(),
        files=files,
        items=item_table,
        users=user_table,
        social=social,
    )
