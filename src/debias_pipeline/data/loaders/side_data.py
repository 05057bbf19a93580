"""The catalogues with side data: MovieLens-100K and -1M (titles, genres, user
demographics, timestamps) and the anime database (titles, genres, types)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from debias_pipeline.data.loaders.interactions import Interactions, line_bound
from debias_pipeline.data.loaders.parsing import (
    MOVIELENS_100K_GENRES,
    REQUIRED_FILES,
    RawData,
    RawDataError,
    _floats,
    _genres_text,
    _header_layout,
    _ints,
    _Layout,
    _read,
    _read_all,
    _read_log,
    _require,
    _unique,
    _with_latin1_fallback,
)


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
    log = Interactions(line_bound([data]))
    _read_log(_Layout(data, ("user", "item", "rating", "timestamp")), "all", log, rating="rating", timestamp="timestamp")
    return RawData(
        name="movielens_100k",
        interactions=log.frame(),
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
            "occupation": occupation.astype(str),  # a code 0..20, named in the dataset's u.occupation
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
    log = Interactions(line_bound([ratings]))
    _read_log(layout, "all", log, user="UserID", item="MovieID", rating="Rating", timestamp="Timestamp")
    return RawData(
        name="movielens_1m",
        interactions=log.frame(),
        files={"all": str(ratings), "items": str(movies), "users": str(users)},
        items=_movielens_1m_items(movies),
        users=_movielens_1m_users(users),
    )

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
    log = Interactions(line_bound([ratings]))
    dropped = 0
    for chunk in _read(layout):
        user = _ints(chunk[layout.column("user_id")], "user_id", layout.fail)
        item = _ints(chunk[layout.column("anime_id")], "anime_id", layout.fail)
        rating = _floats(chunk[layout.column("rating")], "rating", layout.fail)
        keep = np.isin(item, known, assume_unique=False)
        dropped += int((~keep).sum())
        log.add(user[keep], item[keep], "all", chunk.index.to_numpy(np.int64)[keep], rating=rating[keep])
    return RawData(
        name="anime",
        interactions=log.frame(),
        files={"all": str(ratings), "items": str(anime)},
        items=items,
        dropped={_UNKNOWN_ANIME: dropped},
    )
