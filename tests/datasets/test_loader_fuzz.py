"""Fuzz tests of the raw dataset parsers (debias_pipeline.data.loaders) with Hypothesis.

For every format the test starts from a small valid set of files, applies a few drawn
mutations (bytes deleted/inserted/replaced, non-UTF-8 bytes, a truncated, duplicated or
deleted line, another separator, a field replaced by a huge/negative/float/inf/nan/empty/
non-numeric value, an extra or a missing column, an empty or whitespace-only file, a BOM,
CRLF or CR line ends), writes the files into a fresh directory and calls the loader. For
the custom format the parameters are mutated too (wrong column names, wrong types), and
Parquet files are built from columns of many types (and then corrupted).

The property: the loader returns a sane :class:`RawData` or raises :class:`RawDataError`
whose message names one of the dataset's files (or, for the custom format, the parameter
at fault); any other exception is a bug. Runs are derandomised and use no example
database, so CI sees the same few hundred inputs every time.
"""

from __future__ import annotations

import difflib
import io
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from debias_pipeline.data.loaders import LOADERS
from debias_pipeline.data.loaders.parsing import (
    COAT_SHAPE,
    INTERACTION_COLUMNS,
    MOVIELENS_100K_GENRES,
    REQUIRED_FILES,
    RawData,
    RawDataError,
)

pytestmark = pytest.mark.filterwarnings(
    # pandas' notice on a short row, which the loaders then report as a RawDataError
    "ignore:Length of header or names does not match length of data:pandas.errors.ParserWarning"
)

# --------------------------------------------------------------------------- valid bases

YAHOO_TRAIN, YAHOO_TEST = REQUIRED_FILES["yahoo_r3"]


def _coat_matrix(cells: dict[tuple[int, int], int]) -> bytes:
    matrix = np.zeros(COAT_SHAPE, dtype=int)
    for (row, col), value in cells.items():
        matrix[row, col] = value
    return "".join(" ".join(map(str, row)) + " \n" for row in matrix).encode()


def _ml100k_item(item: int, title: str, flags: list[int]) -> str:
    return f"{item}|{title}|01-Jan-1995||http://x|" + "|".join(map(str, flags)) + "\n"


_FLAGS_A = [0] * 19
_FLAGS_A[3] = _FLAGS_A[5] = 1

# format -> (file name -> (valid content, field separator used by the field mutations))
BASES: dict[str, dict[str, tuple[bytes, bytes]]] = {
    "coat": {
        "train.ascii": (_coat_matrix({(0, 0): 5, (0, 299): 1, (1, 3): 2, (289, 7): 3}), b" "),
        "test.ascii": (_coat_matrix({(3, 4): 2, (2, 0): 4}), b" "),
    },
    "yahoo_r3": {
        YAHOO_TRAIN: (b"1\t14\t5\n1\t35\t1\n2\t14\t3\n15400\t1000\t3\n", b"\t"),
        YAHOO_TEST: (b"1\t2\t4\n2\t7\t1\n", b"\t"),
    },
    "gowalla": {
        "train.txt": (b"0 0 1 2\n1 3\n2 5 7 9\n3\n", b" "),
        "test.txt": (b"0 3\n2 1 4\n", b" "),
    },
    "lastfm": {
        "data1.txt": (b"1\t51\t13883\n2\t52\t11690\n2\t51\t7\n", b"\t"),
        "test1.txt": (b"1\t53\t1\n2\t54\t20\n", b"\t"),
        "trustnetwork.txt": (b"1\t2\n2\t1\n", b"\t"),
    },
    "movielens_100k": {
        "u.data": (b"1\t10\t4\t881250949\n2\t20\t5\t891717742\n1\t20\t3\t881250950\n", b"\t"),
        "u.item": (
            (_ml100k_item(10, "Toy Story (1995)", _FLAGS_A) + _ml100k_item(20, "Café (1996)", [0] * 19)).encode(
                "latin-1"
            ),
            b"|",
        ),
        "u.user": (b"1|24|M|technician|85711\n2|53|F|other|T8H1N\n", b"|"),
        "u.genre": ("".join(f"{name}|{i}\n" for i, name in enumerate(MOVIELENS_100K_GENRES)).encode(), b"|"),
    },
    "movielens_1m": {
        "ratings.dat": (b"1::1193::5::978300760\n2::2::3::978302109\n1::2::4::978300761\n", b"::"),
        "movies.dat": (
            "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n2::Café::Noir (1999)::Comedy|Crime\n".encode(
                "latin-1"
            ),
            b"::",
        ),
        "users.dat": (b"1::F::1::10::48067\n2::M::56::16::70072\n", b"::"),
    },
    "anime": {
        "anime.csv": (
            b"anime_id,name,genre,type,episodes,rating,members\n"
            b'32281,Kimi no Na wa.,"Drama, Romance",Movie,1,9.37,200630\n'
            b'5114,"Fullmetal Alchemist, the ""best""","Action, Adventure",TV,64,9.26,793665\n'
            b"30484,Steins;Gate 0,,TV,Unknown,,60999\n",
            b",",
        ),
        "rating.csv": (b"user_id,anime_id,rating\n1,32281,-1\n1,999,8\n2,5114,10\n2,30484,-1\n", b","),
    },
    "custom": {
        "log.csv": ((
                b"user,item,stars,when\nu1,i1,4,2020-01-01 00:00:00\n"
                b"u2, i2 ,5,2020-01-02\nu1,i3,1.5,2020-01-03T10:00:00+01:00\n"
            ), b","),
        "items.csv": (b'item,title,genres,year\ni1,"Alpha, the",A|B,2001\ni2,Beta,,\ni3,Gamma,C,1999\n', b","),
        "users.tsv": (b"user\tage\tzip\nu1\t30\t01234\nu2\t40\t99999\n", b"\t"),
        "friends.csv": (b"user,friend\nu1,u2\nu2,u1\n", b","),
    },
}
CUSTOM_OPTIONS: dict[str, Any] = {
    "name": "shop",
    "interactions": "log.csv",
    "items": "items.csv",
    "users": "users.tsv",
    "social": "friends.csv",
    "columns": {"rating": "stars", "timestamp": "when"},
}
# What each format's interactions hold when the loader succeeds.
PARTS = {
    "coat": {"biased", "unbiased"},
    "yahoo_r3": {"biased", "unbiased"},
    "gowalla": {"train", "test"},
    "lastfm": {"train", "test"},
    "movielens_100k": {"all"},
    "movielens_1m": {"all"},
    "anime": {"all"},
    "custom": {"all"},
}
HAS_RATING = {"coat", "yahoo_r3", "lastfm", "movielens_100k", "movielens_1m", "anime"}
HAS_TIMESTAMP = {"movielens_100k", "movielens_1m"}

# --------------------------------------------------------------------------- mutations

FIELD_VALUES = [
    "0", "2", "5", "12", "4.5",  # valid values too, so that mutated files also parse
    "", " ", "-1", "-0", "+1", "++1", "+", "1.5", "1.", ".5", "1e30", "1e999", "-1e999", "inf", "-inf", "nan", "NaN",
    "Infinity", "9223372036854775807", "9223372036854775808", "9" * 40, "-9223372036854775809", "0x1F", "abc",
    "١٢", "１", "1_000", "1,5", '"', '"1"', "'", "#", "\x00", "Unknown", "True", "null", "NA", "N/A", "é", "1 2",
    " 7 ", "\t", "|", "::", "\\", "00000000000000000000007", "9999-12-31 23:59:59", "0001-01-01", "10000-01-01",
    "2020-13-45", "2020-01-01T25:00", "1/2/3", "Jan 1 99999", "\r",
]  # fmt: skip
SEPARATORS = [b"\t", b" ", b",", b"|", b"::", b":", b";", b"", b"\t\t", b"  ", b"\r"]
NON_UTF8 = [b"\xff", b"\x80", b"\xc3\x28", b"\xe9", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xc0\xaf"]
WHITESPACE = [b" ", b"\n", b"\n\n\n", b" \t \r\n", b"\r", b"\t\n \n"]
WHOLE_FILE = ("whole_file",)  # mutations applied first, so that the others edit what they left
POSITION = st.integers(0, 1 << 20)  # taken modulo the file's length when applied
LINE = st.integers(0, 400)  # modulo the number of lines
FIELD = st.integers(0, 30)  # modulo the number of fields


def _mutation(files: list[str]) -> st.SearchStrategy[tuple]:
    file = st.sampled_from(files)
    value = st.sampled_from(FIELD_VALUES)
    return st.one_of(
        st.tuples(st.just("delete_bytes"), file, POSITION, st.integers(1, 8)),
        st.tuples(st.just("insert_bytes"), file, POSITION, st.binary(min_size=1, max_size=6)),
        st.tuples(st.just("replace_bytes"), file, POSITION, st.binary(min_size=1, max_size=4)),
        st.tuples(st.just("insert_non_utf8"), file, POSITION, st.sampled_from(NON_UTF8)),
        st.tuples(st.just("truncate_line"), file, LINE, st.integers(0, 24)),
        st.tuples(st.just("duplicate_line"), file, LINE),
        st.tuples(st.just("delete_line"), file, LINE),
        st.tuples(st.just("swap_separator"), file, LINE, st.sampled_from(SEPARATORS)),
        st.tuples(st.just("replace_field"), file, LINE, FIELD, value),
        st.tuples(st.just("extra_column"), file, LINE, value),
        st.tuples(st.just("missing_column"), file, LINE, FIELD),
        st.tuples(st.just("whole_file"), file, st.sampled_from([b"", *WHITESPACE])),  # empty or whitespace only
        st.tuples(st.just("bom"), file),
        st.tuples(st.just("line_ends"), file, st.sampled_from([b"\r\n", b"\r", b"\n\n"])),
        st.tuples(st.just("no_final_newline"), file),
    )


def _mutations(fmt: str) -> st.SearchStrategy[list[tuple]]:
    mutation = _mutation(sorted(BASES[fmt]))
    if fmt == "coat":
        # Nearly every byte-level edit breaks the 290 x 300 shape; a cell edit keeps it, so
        # that the checks of a parsed Coat matrix run too.
        cell = st.sampled_from(["0", "1", "5", "3.0", "-1", "+2", "1e1", ".5", "1e308", "1e309", "0x1", "nan"])
        edit = st.tuples(st.just("replace_field"), st.sampled_from(sorted(BASES[fmt])), LINE, FIELD, cell)
        mutation = st.one_of(edit, mutation, edit)
    return st.lists(mutation, min_size=1, max_size=3)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _edit_line(data: bytes, line: int, edit: Any) -> bytes:
    lines = _lines(data)
    at = line % len(lines)
    lines[at] = edit(lines[at])
    return b"\n".join(lines)


def _edit_field(line: bytes, sep: bytes, field: int, edit: Any) -> bytes:
    fields = line.split(sep)
    at = field % len(fields)
    fields[at : at + 1] = edit(fields[at])
    return sep.join(fields)


def apply(mutation: tuple, files: dict[str, bytes], seps: Mapping[str, bytes]) -> None:
    """Apply one mutation to ``files`` (name -> content) in place."""
    kind, name, *args = mutation
    data, sep = files[name], seps[name]
    if kind == "delete_bytes":
        at = args[0] % (len(data) + 1)
        data = data[:at] + data[at + args[1] :]
    elif kind in ("insert_bytes", "insert_non_utf8"):
        at = args[0] % (len(data) + 1)
        data = data[:at] + args[1] + data[at:]
    elif kind == "replace_bytes":
        at = args[0] % (len(data) + 1)
        data = data[:at] + args[1] + data[at + len(args[1]) :]
    elif kind == "truncate_line":
        data = _edit_line(data, args[0], lambda line: line[: args[1]])
    elif kind == "duplicate_line":
        lines = _lines(data)
        at = args[0] % len(lines)
        data = b"\n".join(lines[: at + 1] + lines[at:])
    elif kind == "delete_line":
        lines = _lines(data)
        del lines[args[0] % len(lines)]
        data = b"\n".join(lines)
    elif kind == "swap_separator":
        data = _edit_line(data, args[0], lambda line: line.replace(sep, args[1]))
    elif kind == "replace_field":
        value = args[2].encode()
        data = _edit_line(data, args[0], lambda line: _edit_field(line, sep, args[1], lambda _: [value]))
    elif kind == "extra_column":
        data = _edit_line(data, args[0], lambda line: line + sep + args[1].encode())
    elif kind == "missing_column":
        data = _edit_line(data, args[0], lambda line: _edit_field(line, sep, args[1], lambda _: []))
    elif kind == "whole_file":
        data = args[0]
    elif kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "line_ends":
        data = data.replace(b"\n", args[0])
    elif kind == "no_final_newline":
        data = data.rstrip(b"\r\n")
    else:  # pragma: no cover - a typo in the strategy
        raise AssertionError(f"unknown mutation {kind!r}")
    files[name] = data


# --------------------------------------------------------------------------- the property


def _describe(files: Mapping[str, bytes], base: Mapping[str, bytes]) -> str:
    """The mutated files: whole when small, else the lines that differ from the valid base."""
    parts = []
    for name, data in files.items():
        if data == base[name]:
            continue
        if len(data) <= 600:
            parts.append(f"--- {name}: {data!r}")
            continue
        old = [line.decode("utf-8", "backslashreplace") for line in base[name].split(b"\n")]
        new = [line.decode("utf-8", "backslashreplace") for line in data.split(b"\n")]
        diff = list(difflib.unified_diff(old, new, fromfile=name, tofile=name, n=0, lineterm=""))
        parts.append("\n".join(line[:300] for line in diff[:20]))
    return "\n".join(parts) or "(no file changed)"


def _line_count(data: bytes) -> int:
    """Lines of a file however they end (\\n, \\r\\n or a lone \\r), counting a last unterminated one."""
    return max(data.count(b"\n"), len(data.splitlines())) + 1


def check_error(error: RawDataError, directory: Path, files: Mapping[str, bytes], options_edited: bool) -> None:
    """A RawDataError names a dataset file (or a custom parameter), with a line inside it."""
    message = str(error)
    named = [name for name in files if str(directory / name) in message]
    if not named:  # only a custom parameter can be at fault: the message names it or the file it names
        assert options_edited and ("custom." in message or str(directory) in message), f"names no file: {message!r}"
    for name in named:
        for found in re.finditer(re.escape(str(directory / name)) + r" (?:line|row) (\d+)\b", message):
            assert 1 <= int(found.group(1)) <= _line_count(files[name]), f"line out of range in {message!r}"


def _ids_sane(values: pd.Series, what: str, fmt: str) -> None:
    if fmt == "custom" and not pd.api.types.is_integer_dtype(values.dtype):
        assert pd.api.types.is_string_dtype(values.dtype), f"{what}: {values.dtype}"
        assert (values.str.strip() == values).all() and (values != "").all(), f"{what}: {values.tolist()}"
        return
    assert values.dtype == np.int64, f"{what}: {values.dtype}"
    assert (values >= 0).all(), f"{what}: negative id in {values.tolist()}"


def check_result(raw: RawData, fmt: str, directory: Path) -> None:
    """What the loaders promise about a RawData (see its docstring)."""
    assert isinstance(raw, RawData)
    log = raw.interactions
    assert tuple(log.columns) == INTERACTION_COLUMNS
    _ids_sane(log["user"], "interactions.user", fmt)
    _ids_sane(log["item"], "interactions.item", fmt)
    assert log["rating"].dtype == np.float64 and log["timestamp"].dtype == np.float64
    assert log["line"].dtype == np.int64 and (log["line"] >= 1).all()
    assert set(log["part"]) <= PARTS[fmt]
    assert set(log["part"]) <= set(raw.files)
    for path in raw.files.values():
        assert Path(path).parent == directory and Path(path).is_file()
    assert not np.isinf(log["rating"]).any() and not np.isinf(log["timestamp"]).any()
    if fmt in HAS_RATING:
        assert np.isfinite(log["rating"]).all()
    elif fmt != "custom":
        assert log["rating"].isna().all()
    if fmt in HAS_TIMESTAMP:
        assert np.isfinite(log["timestamp"]).all()
    elif fmt != "custom":
        assert log["timestamp"].isna().all()
    if fmt == "coat":
        assert raw.shape == COAT_SHAPE
        assert log["user"].between(0, COAT_SHAPE[0] - 1).all() and log["item"].between(0, COAT_SHAPE[1] - 1).all()
        assert (log["line"] == log["user"] + 1).all() and (log["rating"] != 0).all()
    for table, key in ((raw.items, "item"), (raw.users, "user")):
        if table is not None:
            assert list(table.columns[:1]) == [key]
            assert not table[key].duplicated().any(), f"{key} ids repeat in {table}"
            _ids_sane(table[key], f"{key}s.{key}", fmt)
            assert table[key].dtype == log[key].dtype or not pd.api.types.is_integer_dtype(table[key].dtype)
    if raw.items is not None:
        assert list(raw.items.columns[:3]) == ["item", "title", "genres"]
    if raw.social is not None:
        assert list(raw.social.columns) == ["user", "friend", "line"]
        _ids_sane(raw.social["user"], "social.user", fmt)
        _ids_sane(raw.social["friend"], "social.friend", fmt)


def run_loader(
    fmt: str,
    files: Mapping[str, bytes],
    options: Mapping[str, Any] | None = None,
    *,
    base: Mapping[str, bytes] | None = None,
    mutations: object = None,
    options_edited: bool = False,
) -> RawData | RawDataError:
    """Write ``files`` into a fresh directory, run the loader and check the property."""
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        try:
            raw = LOADERS[fmt](directory, options)
        except RawDataError as error:
            check_error(error, directory, files, options_edited)
            _event("RawDataError")
            return error
        except Exception as error:  # the property: nothing but RawDataError
            raise AssertionError(
                f"{fmt}: {type(error).__name__} instead of RawDataError: {error}\n"
                f"mutations: {mutations!r}\noptions: {options!r}\n{_describe(files, base or files)}"
            ) from error
        check_result(raw, fmt, directory)
        _event("RawData")
        return raw


def _event(outcome: str) -> None:
    """Count the outcomes (pytest --hypothesis-show-statistics): both kinds should occur."""
    if currently_in_test_context():
        event(outcome)


def _fuzz(fmt: str, mutations: list[tuple], options: Mapping[str, Any] | None = None, edited: bool = False) -> None:
    base = {name: content for name, (content, _) in BASES[fmt].items()}
    seps = {name: sep for name, (_, sep) in BASES[fmt].items()}
    files = dict(base)
    for mutation in sorted(mutations, key=lambda mutation: mutation[0] not in WHOLE_FILE):  # stable
        apply(mutation, files, seps)
    run_loader(fmt, files, options, base=base, mutations=mutations, options_edited=edited)


def _settings(examples: int) -> settings:
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- the fixed formats


def test_every_base_is_valid() -> None:
    """The starting points parse, so a mutation is what makes an input bad."""
    for fmt in BASES:
        files = {name: content for name, (content, _) in BASES[fmt].items()}
        raw = run_loader(fmt, files, CUSTOM_OPTIONS if fmt == "custom" else None)
        assert isinstance(raw, RawData) and len(raw.interactions) > 0, fmt
    assert set(BASES) == set(LOADERS)


def _fixed_format_test(fmt: str, examples: int):  # noqa: ANN202 (a test factory)
    @_settings(examples)
    @given(mutations=_mutations(fmt))
    def test(mutations: list[tuple]) -> None:
        _fuzz(fmt, mutations)

    test.__name__ = test.__qualname__ = f"test_fuzz_{fmt}"
    test.__doc__ = f"Mutated {fmt} files give a sane RawData or a RawDataError naming the file."
    return test


test_fuzz_coat = _fixed_format_test("coat", 40)  # 290 x 300 files: the slowest to parse
test_fuzz_yahoo_r3 = _fixed_format_test("yahoo_r3", 50)
test_fuzz_gowalla = _fixed_format_test("gowalla", 50)
test_fuzz_lastfm = _fixed_format_test("lastfm", 50)
test_fuzz_movielens_100k = _fixed_format_test("movielens_100k", 60)
test_fuzz_movielens_1m = _fixed_format_test("movielens_1m", 50)
test_fuzz_anime = _fixed_format_test("anime", 50)


# --------------------------------------------------------------------------- custom CSV/TSV

_WRONG_TYPES = [5, 1.5, True, ["user"], {"user": "item"}]  # what a YAML typo gives
_CUSTOM_COLUMN_VALUES = [
    None, "user", "item", "stars", "when", "title", "genres", "year", "age", "zip", "friend", "nope", "", " user",
    *_WRONG_TYPES,
]  # fmt: skip
_OPTION_EDITS = st.one_of(
    st.tuples(
        st.just("columns"),
        st.sampled_from(["user", "item", "rating", "timestamp", "title", "genres"]),
        st.sampled_from(_CUSTOM_COLUMN_VALUES),
    ),
    st.tuples(
        st.just("columns"),
        st.just("genre_separator"),
        st.sampled_from(["|", ",", "", " ", "\\", "(", "||", None, *_WRONG_TYPES]),
    ),
    st.tuples(
        st.just("columns"),
        st.just("timestamp_format"),
        st.sampled_from(["%Y-%m-%d %H:%M:%S", "%d/%m/%Y", "%s", "%", "nonsense", "%Q", "%Y%", *_WRONG_TYPES]),
    ),
    st.tuples(
        st.just("columns"),
        st.just("friend"),
        st.sampled_from(
            [["user"], "user", ["friend", "user"], ["user", "nope"], ["user", "friend", "user"], [], None, 5, [1, 2]]
            + [[["user"], "friend"], ("user", "friend")]
        ),
    ),
    st.tuples(st.just("drop"), st.sampled_from(["items", "users", "social", "columns", "name"]), st.none()),
    st.tuples(
        st.just("set"),
        st.sampled_from(["items", "users", "social", "columns", "name", "interactions", 7]),
        st.sampled_from(["log.csv", "items.csv", None, *_WRONG_TYPES]),
    ),
    st.tuples(st.just("replace"), st.none(), st.sampled_from([None, [], ["interactions"], "log.csv", 5])),
)


def _edit_options(edits: list[tuple]) -> Any:
    options: Any = {**CUSTOM_OPTIONS, "columns": dict(CUSTOM_OPTIONS["columns"])}
    for kind, key, value in edits:
        if kind == "replace":  # the whole custom block is not a mapping
            options = value
        elif not isinstance(options, dict):
            continue
        elif kind == "columns":
            if not isinstance(options.get("columns"), dict):
                options["columns"] = {}
            options["columns"][key] = value
        elif kind == "drop":
            options.pop(key, None)
        else:
            options[key] = value
    return options


@_settings(60)
@given(mutations=_mutations("custom"), edits=st.lists(_OPTION_EDITS, max_size=2))
def test_fuzz_custom_csv(mutations: list[tuple], edits: list[tuple]) -> None:
    """Mutated custom CSV/TSV files and parameters give a sane RawData or a RawDataError."""
    _fuzz("custom", mutations, _edit_options(edits), edited=bool(edits))


# --------------------------------------------------------------------------- custom Parquet

_PARQUET_COLUMNS = {
    "int": [5, 6, 0],
    "negative": [-1, 2, 3],
    "uint64": pd.array([2**64 - 1, 1, 2], dtype="uint64"),
    "float": [1.0, 2.5, 3.0],
    "float_nan": [1.0, np.nan, 3.0],
    "inf": [np.inf, 1.0, -np.inf],
    "str": ["x", "y", "z"],
    "str_none": ["x", None, "z"],
    "str_blank": ["x", " ", "  z "],
    "numeric_str": ["1", "+2", "007"],
    "bool": [True, False, True],
    "datetime": pd.to_datetime(["1970-01-01 00:00:10", "2020-01-01 00:00:00", "2262-04-11 00:00:00"]),
    "datetime_us": pd.Series(np.array(["0001-01-01", "9999-12-31", "1970-01-01"], dtype="datetime64[us]")),
    "datetime_tz": pd.to_datetime(["2020-01-01 00:00:00+01:00"] * 3, utc=True).tz_convert("Asia/Tokyo"),
    "datetime_nat": pd.to_datetime(["2020-01-01 00:00:00", None, "2020-01-02 00:00:00"]),
    "timedelta": pd.to_timedelta([1, 2, 3], unit="s"),
    "bytes": [b"a", b"\xff", b"c"],
    "bytes_utf8": [b"a", "é".encode(), b"c"],
    "category": pd.Categorical(["a", "b", "a"]),
    "list": [[1, 2], [], [3]],
    "null": [None, None, None],
    "date_text": ["2020-01-01", "01/02/2020", "yesterday"],
}
_PARQUET_ROLES = ("user", "item", "rating", "timestamp")
_PARQUET_VALID = {  # the kinds each column can take, so that about half the files parse
    "user": ["int", "str", "numeric_str", "category", "bytes_utf8"],
    "item": ["int", "str", "numeric_str", "category", "bytes_utf8"],
    "rating": ["int", "float", "numeric_str", "negative"],
    "timestamp": ["int", "float", "datetime", "datetime_us", "datetime_tz"],
}


@st.composite
def _parquet_file(draw: st.DrawFn) -> tuple[dict[str, str], int, list[tuple]]:
    kinds = {
        role: draw(st.sampled_from(_PARQUET_VALID[role]) | st.sampled_from(sorted(_PARQUET_COLUMNS)))
        for role in _PARQUET_ROLES
    }
    rows = draw(st.sampled_from([3, 1, 2, 0]))
    corruption = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("truncate"), POSITION),
                st.tuples(st.just("replace_bytes"), POSITION, st.binary(min_size=1, max_size=4)),
            ),
            max_size=1,
        )
    )
    return kinds, rows, corruption


def _parquet_bytes(kinds: Mapping[str, str], rows: int) -> bytes | None:
    frame = pd.DataFrame({role: _PARQUET_COLUMNS[kind] for role, kind in kinds.items()}).iloc[:rows]
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer)
    except Exception:  # noqa: BLE001 - a column Arrow cannot store is no input for the loader
        return None
    return buffer.getvalue()


@_settings(40)
@given(parquet=_parquet_file())
def test_fuzz_custom_parquet(parquet: tuple[dict[str, str], int, list[tuple]]) -> None:
    """Parquet columns of every type (and corrupted files) give a sane RawData or a RawDataError."""
    kinds, rows, corruption = parquet
    data = _parquet_bytes(kinds, rows)
    if data is None:
        return
    for kind, position, *payload in corruption:
        at = position % (len(data) + 1)
        data = data[:at] if kind == "truncate" else data[:at] + payload[0] + data[at + len(payload[0]) :]
    options = {"interactions": "log.parquet", "columns": {"rating": "rating", "timestamp": "timestamp"}}
    run_loader("custom", {"log.parquet": data}, options, mutations=parquet)


# --------------------------------------------------------------------------- helpers' own checks


def test_mutations_do_what_they_say() -> None:
    seps = {"f": b"\t"}
    cases = [
        (("truncate_line", "f", 1, 2), b"1\t2\n3\t\n"),
        (("duplicate_line", "f", 0), b"1\t2\n1\t2\n3\t4\n"),
        (("delete_line", "f", 1), b"1\t2\n"),
        (("swap_separator", "f", 0, b"::"), b"1::2\n3\t4\n"),
        (("replace_field", "f", 1, 1, "nan"), b"1\t2\n3\tnan\n"),
        (("extra_column", "f", 0, "x"), b"1\t2\tx\n3\t4\n"),
        (("missing_column", "f", 0, 0), b"2\n3\t4\n"),
        (("line_ends", "f", b"\r\n"), b"1\t2\r\n3\t4\r\n"),
        (("bom", "f"), b"\xef\xbb\xbf1\t2\n3\t4\n"),
    ]
    for mutation, expected in cases:
        files = {"f": b"1\t2\n3\t4\n"}
        apply(mutation, files, seps)
        assert files["f"] == expected, mutation


# --------------------------------------------------------------------------- regressions
# The minimal inputs of the bugs the fuzzing found; each raised something else than
# RawDataError before the fix.

_ANIME_HEADER = b"anime_id,name,genre,type,episodes,rating,members\n"
_ANIME_RATINGS = b"user_id,anime_id,rating\n1,1,-1\n"


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "files", "options", "message"),
    [
        pytest.param(  # was _csv.Error: new-line character seen in unquoted field
            "anime",
            {"anime.csv": (_ANIME_HEADER + b"1,A,,TV,1,9.0,10\n").replace(b"\n", b"\r"), "rating.csv": _ANIME_RATINGS},
            None,
            "anime.csv line 1: the header line cannot be parsed",
            id="anime-header-with-cr-line-ends",
        ),
        pytest.param(  # was _csv.Error, raised while wording the error of a bad row
            "anime",
            {"anime.csv": _ANIME_HEADER + b"1,A,,TV,sixty,9.0,10\r2,B,,TV,1,9.0,10\n", "rating.csv": _ANIME_RATINGS},
            None,
            "anime.csv line 2: episodes 'sixty'",
            id="anime-bad-row-holding-a-cr",
        ),
        pytest.param(  # was ValueError: stray % in format '%'
            "custom",
            {"log.csv": b"user,item,t\n1,2,2020-01-01\n"},
            {"interactions": "log.csv", "columns": {"timestamp": "t", "timestamp_format": "%"}},
            "custom.columns.timestamp_format '%'",
            id="custom-invalid-timestamp-format",
        ),
        pytest.param(  # was ValueError: 's' is a bad directive in format '%s'
            "custom",
            {"log.csv": b"user,item,t\n1,2,2020-01-01\n"},
            {"interactions": "log.csv", "columns": {"timestamp": "t", "timestamp_format": "%s"}},
            "custom.columns.timestamp_format '%s'",
            id="custom-unsupported-timestamp-directive",
        ),
        pytest.param(  # was UnicodeDecodeError (pandas decodes bytes in astype(str))
            "custom",
            {"log.parquet": _parquet(pd.DataFrame({"user": [1], "item": [2], "rating": [b"\xff"]}))},
            {"interactions": "log.parquet", "columns": {"rating": "rating"}},
            "log.parquet row 1: column 'rating' (rating) holds bytes that are not UTF-8",
            id="parquet-binary-rating-not-utf8",
        ),
        pytest.param(  # was UnicodeDecodeError
            "custom",
            {"log.parquet": _parquet(pd.DataFrame({"user": [1, 2], "item": [b"a", b"\xff"]}))},
            {"interactions": "log.parquet"},
            "log.parquet row 2: column 'item' (item ids) holds bytes that are not UTF-8",
            id="parquet-binary-id-not-utf8",
        ),
    ],
)
def test_fuzz_regression_errors(
    fmt: str, files: dict[str, bytes], options: dict[str, Any] | None, message: str
) -> None:
    result = run_loader(fmt, files, options)
    assert isinstance(result, RawDataError) and message in str(result), result


@pytest.mark.parametrize(
    ("files", "options", "seconds"),
    [
        pytest.param(  # was OutOfBoundsDatetime: Out of bounds nanosecond timestamp: 9999-01-01 00:00:00
            {"log.csv": b"user,item,t\n1,2,9999-01-01\n1,3,0001-01-01T00:00:00+01:00\n"},
            {"interactions": "log.csv", "columns": {"timestamp": "t"}},
            [253370764800.0, -62135600400.0],
            id="csv-dates-outside-1677-2262",
        ),
        pytest.param(
            {
                "log.parquet": _parquet(
                    pd.DataFrame(
                        {
                            "user": [1, 2],
                            "item": [3, 4],
                            "t": np.array(["9999-12-31", "1970-01-02"], dtype="datetime64[us]"),
                        }
                    )
                )
            },
            {"interactions": "log.parquet", "columns": {"timestamp": "t"}},
            [253402214400.0, 86400.0],
            id="parquet-microsecond-timestamps",
        ),
    ],
)
def test_fuzz_regression_far_dates(files: dict[str, bytes], options: dict[str, Any], seconds: list[float]) -> None:
    raw = run_loader("custom", files, options)
    assert isinstance(raw, RawData), raw
    assert raw.interactions["timestamp"].tolist() == seconds


_LOG = {"log.csv": b"user,item,t\n1,2,2020-01-01\n", "items.csv": b"item,title,genres\n2,x,a|b\n"}
_SOCIAL = {**_LOG, "friends.csv": b"user,friend\n1,1\n"}


@pytest.mark.parametrize(
    ("files", "options", "message"),
    [
        # was ValueError: dictionary update sequence element #0 has length 12; 2 is required
        pytest.param(_LOG, ["interactions"], "the custom parameters", id="options-not-a-mapping"),
        # was ValueError: dictionary update sequence element #0 has length 1; 2 is required
        pytest.param(_LOG, {"interactions": "log.csv", "columns": "x"}, "custom.columns must be", id="columns-str"),
        # was TypeError: 'int' object is not iterable
        pytest.param(_LOG, {"interactions": "log.csv", "columns": 5}, "custom.columns must be", id="columns-int"),
        # was TypeError: can only concatenate str (not "int") to str
        pytest.param(_LOG, {"interactions": "log.csv", 7: "log.csv"}, "unknown parameter(s) custom.7", id="int-key"),
        # was TypeError: unhashable type: 'list'
        pytest.param(
            _LOG, {"interactions": "log.csv", "columns": {"user": ["user"]}}, "custom.columns.user", id="column-list"
        ),
        # was TypeError: decoding to str: need a bytes-like object, NoneType found
        pytest.param(
            _LOG,
            {"interactions": "log.csv", "items": "items.csv", "columns": {"genre_separator": None}},
            "custom.columns.genre_separator must be a string",
            id="genre-separator-null",
        ),
        # was TypeError: Argument 'f' has incorrect type (expected str, got int)
        pytest.param(
            _LOG,
            {"interactions": "log.csv", "columns": {"timestamp": "t", "timestamp_format": 5}},
            "custom.columns.timestamp_format must be a string or null",
            id="timestamp-format-int",
        ),
        # was TypeError: 'NoneType' object is not iterable
        pytest.param(
            _SOCIAL,
            {"interactions": "log.csv", "social": "friends.csv", "columns": {"friend": None}},
            "custom.columns.friend must name two columns",
            id="friend-null",
        ),
        # was TypeError: unhashable type: 'list'
        pytest.param(
            _SOCIAL,
            {"interactions": "log.csv", "social": "friends.csv", "columns": {"friend": [["user"], "friend"]}},
            "custom.columns.friend must name two columns",
            id="friend-nested-list",
        ),
    ],
)
def test_fuzz_regression_custom_parameters(files: dict[str, bytes], options: Any, message: str) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        for name, data in files.items():
            (Path(temporary) / name).write_bytes(data)
        with pytest.raises(RawDataError, match=re.escape(message)):
            LOADERS["custom"](Path(temporary), options)
