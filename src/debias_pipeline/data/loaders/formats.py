"""The fixed formats of the study's and the graph papers' datasets: Coat and Yahoo! R3
(a biased and an unbiased set), Gowalla (LightGCN's adjacency-list split) and LastFM
(play counts and a trust network)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from debias_pipeline.data.loaders.interactions import Interactions, line_bound
from debias_pipeline.data.loaders.parsing import (
    _INT64_MAX_TEXT,
    _NUMBER,
    COAT_MAX_BYTES,
    COAT_SHAPE,
    REQUIRED_FILES,
    RawData,
    RawDataError,
    _empty,
    _first_bad_utf8,
    _Layout,
    _read_log,
    _require,
    _social,
    _utf8_error,
)


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
    log = Interactions()
    for part, path in paths.items():
        matrix = _read_matrix(path)
        rows, cols = np.nonzero(matrix)
        log.add(rows.astype(np.int64), cols.astype(np.int64), part, rows + 1, rating=matrix[rows, cols])
    return RawData(
        name="coat",
        interactions=log.frame(),
        files={part: str(path) for part, path in paths.items()},
        shape=COAT_SHAPE,
    )

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
    log = Interactions(line_bound(paths.values()))
    for part, path in paths.items():
        _read_log(_Layout(path, ("user", "item", "rating")), part, log, rating="rating")
    return RawData(name="yahoo_r3", interactions=log.frame(), files={p: str(path) for p, path in paths.items()})

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

def _read_adjacency(path: Path, part: str, log: Interactions) -> None:
    """Parse ``user item item ...`` lines into ``log`` (a user with no item gives no row)."""
    tokens = 0
    for block, lines_before in _line_blocks(path):
        values, lines = _integer_tokens(path, block, lines_before)
        tokens += len(values)
        if not len(values):
            continue
        head = np.concatenate(([True], lines[1:] != lines[:-1]))  # first token of a line = the user
        owner = np.maximum.accumulate(np.where(head, np.arange(len(values)), 0))
        items = ~head
        log.add(values[owner[items]], values[items], part, lines[items])
    if tokens == 0:
        raise _empty(path)

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
    log = Interactions()
    for part, path in paths.items():
        _read_adjacency(path, part, log)
    return RawData(name="gowalla", interactions=log.frame(), files={p: str(path) for p, path in paths.items()})

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
    log = Interactions(line_bound(paths.values()))
    for part, path in paths.items():
        _read_log(_Layout(path, ("user", "item", "count")), part, log, rating="count")
    return RawData(
        name="lastfm",
        interactions=log.frame(),
        files={**{p: str(path) for p, path in paths.items()}, "social": str(social_path)},
        social=_social(_Layout(social_path, ("user", "friend"))),
    )
