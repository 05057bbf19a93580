"""Custom interaction logs (``custom``): CSV / TSV / Parquet files with configurable
columns, optional item and user tables and a social graph."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from debias_pipeline.data.loaders.parsing import (
    _INT64_MAX_TEXT,
    _INT_PATTERN,
    _NUMBER_PATTERN,
    RawData,
    RawDataError,
    _arrow,
    _empty,
    _floats,
    _genres_text,
    _header_layout,
    _ints,
    _Layout,
    _log,
    _read_all,
    _require,
    _unique,
)

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
