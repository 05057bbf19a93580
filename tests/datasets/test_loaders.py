"""Tests of the raw dataset parsers (debias_pipeline.data.loaders).

Every file is written by the tests into tmp_path; only the last group reads the real
datasets from ../shared/data (skipped when absent, failed when DEBIAS_REQUIRE_DATA=1).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from debias_pipeline.data.loaders import LOADERS, formats, parsing
from debias_pipeline.data.loaders.custom import load_custom
from debias_pipeline.data.loaders.formats import load_coat, load_gowalla, load_lastfm, load_yahoo_r3
from debias_pipeline.data.loaders.parsing import MOVIELENS_100K_GENRES, REQUIRED_FILES, RawData, RawDataError
from debias_pipeline.data.loaders.side_data import load_anime, load_movielens_1m, load_movielens_100k

BAD_IDS = ["1.5", "1e30", "inf", "-3", "9223372036854775808", "", "١٢", "0x1", "++1"]
YAHOO_TRAIN, YAHOO_TEST = REQUIRED_FILES["yahoo_r3"]


# --------------------------------------------------------------------------- helpers


def write(path: Path, content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def at(path: Path, line: int) -> str:
    """Regex for the "<path> line <n>:" prefix of an error."""
    return re.escape(f"{path} line {line}:")


def log(rows: list[tuple], part: str, *, rating: bool = True, timestamp: bool = False) -> pd.DataFrame:
    """Expected interactions: rows of (user, item, [rating], [timestamp], line)."""
    columns = ["user", "item"] + (["rating"] if rating else []) + (["timestamp"] if timestamp else []) + ["line"]
    frame = pd.DataFrame(rows, columns=columns)
    if not rating:
        frame["rating"] = np.nan
    if not timestamp:
        frame["timestamp"] = np.nan
    frame["part"] = part
    return frame.astype(
        {"user": "int64", "item": "int64", "rating": "float64", "timestamp": "float64", "line": "int64", "part": str}
    )[["user", "item", "rating", "timestamp", "part", "line"]]


def both(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


def check_log(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == ["user", "item", "rating", "timestamp", "part", "line"]
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), expected)


def coat_matrix(cells: dict[tuple[int, int], int], shape: tuple[int, int] = (290, 300)) -> str:
    matrix = np.zeros(shape, dtype=int)
    for (row, col), value in cells.items():
        matrix[row, col] = value
    return "".join(" ".join(map(str, row)) + " \n" for row in matrix)


def write_coat(directory: Path, train: str | bytes, test: str | bytes) -> Path:
    write(directory / "train.ascii", train)
    write(directory / "test.ascii", test)
    return directory


def write_ml100k(directory: Path, item_bytes: bytes | None = None, genre: str | None = None) -> Path:
    write(directory / "u.data", "1\t10\t4\t881250949\n2\t20\t5\t891717742\n")
    flags_toy = ["0"] * 19
    flags_toy[3] = flags_toy[5] = "1"  # Animation, Comedy
    items = (
        "10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags_toy) + "\n"
        "20|Café (1996)|||http://y|" + "|".join(["0"] * 19) + "\n"
    )
    write(directory / "u.item", item_bytes if item_bytes is not None else items.encode("latin-1"))
    write(directory / "u.user", "1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    if genre is not None:
        write(directory / "u.genre", genre)
    return directory


def write_ml1m(directory: Path, movies: bytes | None = None, ratings: str | None = None) -> Path:
    write(directory / "ratings.dat", ratings or "1::1193::5::978300760\n2::2::3::978302109\n")
    write(
        directory / "movies.dat",
        movies
        if movies is not None
        else "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n2::Café::Noir: A::B (1999)::Comedy|Crime\n".encode(
            "latin-1"
        ),
    )
    write(directory / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return directory


ANIME_CSV = (
    "anime_id,name,genre,type,episodes,rating,members\n"
    '32281,Kimi no Na wa.,"Drama, Romance, School, Supernatural",Movie,1,9.37,200630\n'
    '5114,"Fullmetal Alchemist: Brotherhood, the ""best""","Action, Adventure",TV,64,9.26,793665\n'
    "30484,Steins;Gate 0,,TV,Unknown,,60999\n"
)


def write_anime(directory: Path, ratings: str | bytes | None = None, anime: str | None = None) -> Path:
    write(directory / "anime.csv", anime or ANIME_CSV)
    write(
        directory / "rating.csv",
        ratings if ratings is not None else "user_id,anime_id,rating\n1,32281,-1\n1,999,8\n2,5114,10\n2,999,-1\n",
    )
    return directory


def custom(directory: Path, **options: object) -> RawData:
    return load_custom(directory, options)


# --------------------------------------------------------------------------- registry


def test_registry_names_every_loader() -> None:
    expected = {"coat", "yahoo_r3", "gowalla", "lastfm", "movielens_100k", "movielens_1m", "anime", "custom"}
    assert set(LOADERS) == expected
    assert set(REQUIRED_FILES) == expected
    assert REQUIRED_FILES["custom"] == ()
    assert LOADERS["coat"] is load_coat and LOADERS["custom"] is load_custom


@pytest.mark.parametrize("name", [n for n in REQUIRED_FILES if n != "custom"])
def test_missing_files_are_all_listed(tmp_path: Path, name: str) -> None:
    with pytest.raises(RawDataError, match="see the README's Datasets section") as caught:
        LOADERS[name](tmp_path, None)
    for file in REQUIRED_FILES[name]:
        assert str(tmp_path / file) in str(caught.value)


def test_missing_file_lists_only_the_missing_ones(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", "0 1 2\n")
    with pytest.raises(RawDataError) as caught:
        load_gowalla(tmp_path)
    assert str(tmp_path / "test.txt") in str(caught.value)
    assert str(tmp_path / "train.txt") not in str(caught.value)


# --------------------------------------------------------------------------- Coat


def test_coat_parses_both_matrices(tmp_path: Path) -> None:
    write_coat(tmp_path, coat_matrix({(0, 0): 5, (0, 299): 1, (289, 7): 3}), coat_matrix({(3, 4): 2}))
    raw = load_coat(tmp_path)
    check_log(
        raw.interactions,
        both(log([(0, 0, 5.0, 1), (0, 299, 1.0, 1), (289, 7, 3.0, 290)], "biased"), log([(3, 4, 2.0, 4)], "unbiased")),
    )
    assert raw.name == "coat" and raw.shape == (290, 300)
    assert raw.files == {"biased": str(tmp_path / "train.ascii"), "unbiased": str(tmp_path / "test.ascii")}
    assert raw.items is None and raw.users is None and raw.social is None and raw.dropped == {}


@pytest.mark.parametrize("shape", [(289, 300), (1, 300), (290, 299), (291, 300)])
def test_coat_refuses_another_shape(tmp_path: Path, shape: tuple[int, int]) -> None:
    write_coat(tmp_path, coat_matrix({}), coat_matrix({(0, 0): 1}, shape))
    with pytest.raises(RawDataError, match=re.escape(f"{tmp_path / 'test.ascii'}: matrix is {shape[0]} x {shape[1]}")):
        load_coat(tmp_path)


def test_coat_refuses_a_ragged_row(tmp_path: Path) -> None:
    lines = coat_matrix({}).splitlines(keepends=True)
    lines[6] = "0 " * 299 + "\n"
    write_coat(tmp_path, "".join(lines), coat_matrix({}))
    with pytest.raises(RawDataError, match=at(tmp_path / "train.ascii", 7) + " 299 values"):
        load_coat(tmp_path)


@pytest.mark.parametrize("token", ["x", "1,5", "nan", "inf", "1e999"])
def test_coat_refuses_a_non_numeric_token(tmp_path: Path, token: str) -> None:
    lines = coat_matrix({}).splitlines(keepends=True)
    lines[4] = lines[4].replace("0", token, 1)
    write_coat(tmp_path, coat_matrix({}), "".join(lines))
    with pytest.raises(RawDataError, match=at(tmp_path / "test.ascii", 5)):
        load_coat(tmp_path)


def test_coat_refuses_a_huge_file_from_its_size(tmp_path: Path) -> None:
    write_coat(tmp_path, b"", coat_matrix({}))
    os.truncate(tmp_path / "train.ascii", 2**31)  # sparse: 2 GiB on paper, nothing on disk
    start = time.perf_counter()
    with pytest.raises(RawDataError, match=re.escape(f"{tmp_path / 'train.ascii'}: 2,147,483,648 bytes")):
        load_coat(tmp_path)
    assert time.perf_counter() - start < 1.0


def test_coat_empty_and_non_utf8(tmp_path: Path) -> None:
    write_coat(tmp_path, "", coat_matrix({}))
    with pytest.raises(RawDataError, match=re.escape(f"{tmp_path / 'train.ascii'}: the file holds no rows")):
        load_coat(tmp_path)
    lines = coat_matrix({}).encode().splitlines(keepends=True)
    lines[2] = b"0 \xff " + lines[2]
    write_coat(tmp_path, b"".join(lines), coat_matrix({}))
    with pytest.raises(RawDataError, match=at(tmp_path / "train.ascii", 3) + " not valid UTF-8"):
        load_coat(tmp_path)


# --------------------------------------------------------------------------- Yahoo! R3


def test_yahoo_parses_both_files_with_true_line_numbers(tmp_path: Path) -> None:
    write(tmp_path / YAHOO_TRAIN, "1\t14\t5\n\n1\t35\t1\r\n15400\t1000\t3")  # blank line, CRLF, no final newline
    write(tmp_path / YAHOO_TEST, "+2 007 4\n")
    raw = load_yahoo_r3(tmp_path)
    check_log(
        raw.interactions,
        both(log([(1, 14, 5.0, 1), (1, 35, 1.0, 3), (15400, 1000, 3.0, 4)], "biased"), log([(2, 7, 4.0, 1)], "unbiased")),
    )
    assert raw.files == {"biased": str(tmp_path / YAHOO_TRAIN), "unbiased": str(tmp_path / YAHOO_TEST)}
    assert raw.shape is None


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("column", [0, 1])
def test_yahoo_refuses_a_bad_id(tmp_path: Path, bad: str, column: int) -> None:
    fields = ["3", "4", "5"]
    fields[column] = bad
    write(tmp_path / YAHOO_TRAIN, "1\t2\t3\n")
    write(tmp_path / YAHOO_TEST, "1\t2\t3\n\n" + "\t".join(fields) + "\n")
    with pytest.raises(RawDataError, match=at(tmp_path / YAHOO_TEST, 3)):
        load_yahoo_r3(tmp_path)


@pytest.mark.parametrize(("line", "found"), [("1\t2\n", 2), ("1\t2\t3\t4\n", 4), ("1\t2\t3\t4\t5\t6\n", 6)])
def test_yahoo_wrong_field_count_names_file_and_line(tmp_path: Path, line: str, found: int) -> None:
    write(tmp_path / YAHOO_TRAIN, "1\t2\t3\n" + line + "1\t2\t3\n")
    write(tmp_path / YAHOO_TEST, "1\t2\t3\n")
    with pytest.raises(RawDataError, match=at(tmp_path / YAHOO_TRAIN, 2) + f" expected 3 fields .*found {found}"):
        load_yahoo_r3(tmp_path)


def test_yahoo_wrong_field_count_on_the_first_line(tmp_path: Path) -> None:
    write(tmp_path / YAHOO_TRAIN, "1\t2\t3\t4\n1\t2\t3\n")
    write(tmp_path / YAHOO_TEST, "1\t2\t3\n")
    with pytest.raises(RawDataError, match=at(tmp_path / YAHOO_TRAIN, 1) + " expected 3 fields"):
        load_yahoo_r3(tmp_path)


@pytest.mark.parametrize("rating", ["abc", "nan", "inf", "1,5"])
def test_yahoo_refuses_a_non_numeric_rating(tmp_path: Path, rating: str) -> None:
    write(tmp_path / YAHOO_TRAIN, f"1\t2\t3\n1\t3\t{rating}\n")
    write(tmp_path / YAHOO_TEST, "1\t2\t3\n")
    with pytest.raises(RawDataError, match=at(tmp_path / YAHOO_TRAIN, 2) + " rating"):
        load_yahoo_r3(tmp_path)


def test_yahoo_empty_and_non_utf8(tmp_path: Path) -> None:
    write(tmp_path / YAHOO_TRAIN, "1\t2\t3\n")
    write(tmp_path / YAHOO_TEST, "\n\n")
    with pytest.raises(RawDataError, match=re.escape(f"{tmp_path / YAHOO_TEST}: the file holds no rows")):
        load_yahoo_r3(tmp_path)
    write(tmp_path / YAHOO_TEST, b"1\t2\t3\n1\t2\t3\n1\t\xe9\t3\n")
    with pytest.raises(RawDataError, match=at(tmp_path / YAHOO_TEST, 3) + " not valid UTF-8"):
        load_yahoo_r3(tmp_path)


# --------------------------------------------------------------------------- Gowalla


def test_gowalla_parses_adjacency_lines(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", "0 0 1 2\n1\n\n2\t5  7 \n+3 000000000000000000000012\n")
    write(tmp_path / "test.txt", "0 3\n2 9")
    raw = load_gowalla(tmp_path)
    train = [(0, 0, 1), (0, 1, 1), (0, 2, 1), (2, 5, 4), (2, 7, 4), (3, 12, 5)]
    check_log(raw.interactions, both(log(train, "train", rating=False), log([(0, 3, 1), (2, 9, 2)], "test", rating=False)))
    assert raw.files == {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")}


def test_gowalla_small_blocks_give_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    lines = [" ".join(map(str, [user, *rng.integers(0, 10**6, rng.integers(0, 30))])) for user in range(200)]
    write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    write(tmp_path / "test.txt", "0 1\n")
    whole = load_gowalla(tmp_path).interactions
    monkeypatch.setattr(formats, "_BLOCK_BYTES", 7)  # blocks cut inside lines and tokens
    pd.testing.assert_frame_equal(load_gowalla(tmp_path).interactions, whole)
    assert len(whole) == sum(len(line.split()) - 1 for line in lines) + 1


@pytest.mark.parametrize("bad", [b for b in BAD_IDS if b])
def test_gowalla_refuses_a_bad_id(tmp_path: Path, bad: str) -> None:
    write(tmp_path / "train.txt", "0 1 2\n1 2\n2 3 " + bad + " 4\n")
    write(tmp_path / "test.txt", "0 1\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "train.txt", 3)):
        load_gowalla(tmp_path)


def test_gowalla_largest_id_is_accepted(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", f"0 {2**63 - 1}\n")
    write(tmp_path / "test.txt", "0 1\n")
    assert load_gowalla(tmp_path).interactions["item"].iat[0] == 2**63 - 1


def test_gowalla_empty_and_non_utf8(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", "0 1\n")
    write(tmp_path / "test.txt", " \n\n")
    with pytest.raises(RawDataError, match=re.escape(f"{tmp_path / 'test.txt'}: the file holds no rows")):
        load_gowalla(tmp_path)
    write(tmp_path / "test.txt", b"0 1\n1 2\n2 \xc3\x28\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "test.txt", 3) + " not valid UTF-8"):
        load_gowalla(tmp_path)


# --------------------------------------------------------------------------- LastFM


def write_lastfm(directory: Path, social: str = "1\t2\n2\t1\n") -> Path:
    write(directory / "data1.txt", "1\t51\t13883\n2\t52\t11690\n")
    write(directory / "test1.txt", "1\t53\t1\n")
    write(directory / "trustnetwork.txt", social)
    return directory


def test_lastfm_parses_counts_and_the_social_network(tmp_path: Path) -> None:
    raw = load_lastfm(write_lastfm(tmp_path))
    check_log(
        raw.interactions,
        both(log([(1, 51, 13883.0, 1), (2, 52, 11690.0, 2)], "train"), log([(1, 53, 1.0, 1)], "test")),
    )
    pd.testing.assert_frame_equal(raw.social, pd.DataFrame({"user": [1, 2], "friend": [2, 1], "line": [1, 2]}))
    assert raw.files["social"] == str(tmp_path / "trustnetwork.txt")
    assert set(raw.files) == {"train", "test", "social"}


def test_lastfm_social_errors(tmp_path: Path) -> None:
    write_lastfm(tmp_path, "1\t2\n2\t1\t3\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "trustnetwork.txt", 2) + " expected 2 fields"):
        load_lastfm(tmp_path)
    write_lastfm(tmp_path, "1\t2\n2\t-1\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "trustnetwork.txt", 2) + " friend id '-1'"):
        load_lastfm(tmp_path)
    write_lastfm(tmp_path, "")
    with pytest.raises(RawDataError, match="trustnetwork.txt: the file holds no rows"):
        load_lastfm(tmp_path)


# --------------------------------------------------------------------------- MovieLens 100K


def test_movielens_100k_parses_ratings_items_and_users(tmp_path: Path) -> None:
    raw = load_movielens_100k(write_ml100k(tmp_path))
    check_log(
        raw.interactions, log([(1, 10, 4.0, 881250949.0, 1), (2, 20, 5.0, 891717742.0, 2)], "all", timestamp=True)
    )
    expected_items = pd.DataFrame(
        {
            "item": [10, 20],
            "title": ["Toy Story (1995)", "Café (1996)"],  # Latin-1 bytes in the file
            "genres": ["Animation|Comedy", ""],
            "release_date": ["01-Jan-1995", ""],
        }
    ).astype({"title": str, "genres": str, "release_date": str})
    pd.testing.assert_frame_equal(raw.items, expected_items)
    expected_users = pd.DataFrame(
        {"user": [1, 2], "age": [24, 53], "gender": ["M", "F"], "occupation": ["technician", "other"], "zip": ["85711", "T8H1N"]}
    ).astype({"gender": str, "occupation": str, "zip": str})
    pd.testing.assert_frame_equal(raw.users, expected_users)
    assert raw.files == {"all": str(tmp_path / "u.data"), "items": str(tmp_path / "u.item"), "users": str(tmp_path / "u.user")}


def test_movielens_100k_utf8_titles_and_genre_file(tmp_path: Path) -> None:
    flags = "|".join(["1"] + ["0"] * 17 + ["1"])
    items = f"10|Café|||u|{flags}\n20|B|||u|{flags}\n".encode()
    names = [f"g{i}" for i in range(19)]
    genre = "".join(f"{name}|{i}\n" for i, name in reversed(list(enumerate(names)))) + "\n"
    raw = load_movielens_100k(write_ml100k(tmp_path, item_bytes=items, genre=genre))
    assert raw.items["title"].tolist() == ["Café", "B"]
    assert raw.items["genres"].tolist() == ["g0|g18", "g0|g18"]


def test_movielens_100k_default_genre_names() -> None:
    assert len(MOVIELENS_100K_GENRES) == 19
    assert MOVIELENS_100K_GENRES[0] == "unknown" and MOVIELENS_100K_GENRES[-1] == "Western"


def test_movielens_100k_item_errors(tmp_path: Path) -> None:
    flags = ["0"] * 19
    flags[4] = "2"
    write_ml100k(tmp_path, item_bytes=("1|A|||u|" + "|".join(["0"] * 19) + "\n2|B|||u|" + "|".join(flags) + "\n").encode())
    with pytest.raises(RawDataError, match=at(tmp_path / "u.item", 2) + " genre flag \"Children's\" is '2'"):
        load_movielens_100k(tmp_path)
    write_ml100k(tmp_path, item_bytes=("1|A|||u|" + "|".join(["0"] * 18) + "\n").encode())
    with pytest.raises(RawDataError, match=at(tmp_path / "u.item", 1) + " expected 24 fields .*found 23"):
        load_movielens_100k(tmp_path)
    write_ml100k(tmp_path, item_bytes=("1|A|||u|" + "|".join(["0"] * 19) + "\n") .encode() * 2)
    with pytest.raises(RawDataError, match=at(tmp_path / "u.item", 2) + " item id 1 already appears on line 1"):
        load_movielens_100k(tmp_path)


def test_movielens_100k_bad_genre_file(tmp_path: Path) -> None:
    write_ml100k(tmp_path, genre="a|0\nb|2\n")
    with pytest.raises(RawDataError, match="u.genre: genre indices must be 0..1"):
        load_movielens_100k(tmp_path)


def test_movielens_100k_data_and_user_errors(tmp_path: Path) -> None:
    write_ml100k(tmp_path)
    write(tmp_path / "u.data", "1\t10\t4\t881250949\n1\t1.5\t4\t881250949\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "u.data", 2) + " item id '1.5'"):
        load_movielens_100k(tmp_path)
    write(tmp_path / "u.data", "1\t10\t4\t881250949\n1\t11\t4\tyesterday\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "u.data", 2) + " timestamp 'yesterday'"):
        load_movielens_100k(tmp_path)
    write(tmp_path / "u.data", "")
    with pytest.raises(RawDataError, match="u.data: the file holds no rows"):
        load_movielens_100k(tmp_path)
    write_ml100k(tmp_path)
    write(tmp_path / "u.user", "1|24|M|technician|85711\n2|53|F|caf\xe9|94043\n".encode("latin-1"))
    with pytest.raises(RawDataError, match=at(tmp_path / "u.user", 2) + " not valid UTF-8"):
        load_movielens_100k(tmp_path)
    write(tmp_path / "u.user", "1|x|M|technician|85711\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "u.user", 1) + " age 'x'"):
        load_movielens_100k(tmp_path)


# --------------------------------------------------------------------------- MovieLens 1M


def test_movielens_1m_parses_double_colon_files(tmp_path: Path) -> None:
    raw = load_movielens_1m(write_ml1m(tmp_path))
    check_log(
        raw.interactions,
        log([(1, 1193, 5.0, 978300760.0, 1), (2, 2, 3.0, 978302109.0, 2)], "all", timestamp=True),
    )
    expected_items = pd.DataFrame(
        {
            "item": [1193, 2],
            "title": ["One Flew Over the Cuckoo's Nest (1975)", "Café::Noir: A::B (1999)"],
            "genres": ["Drama", "Comedy|Crime"],
        }
    ).astype({"title": str, "genres": str})
    pd.testing.assert_frame_equal(raw.items, expected_items)
    expected_users = pd.DataFrame(
        {"user": [1, 2], "age": [1, 56], "gender": ["F", "M"], "occupation": ["10", "16"], "zip": ["48067", "70072"]}
    ).astype({"gender": str, "occupation": str, "zip": str})
    pd.testing.assert_frame_equal(raw.users, expected_users)
    assert raw.files == {
        "all": str(tmp_path / "ratings.dat"),
        "items": str(tmp_path / "movies.dat"),
        "users": str(tmp_path / "users.dat"),
    }


def test_movielens_1m_utf8_titles(tmp_path: Path) -> None:
    raw = load_movielens_1m(write_ml1m(tmp_path, movies="1::Café (2000)::Drama\n".encode()))
    assert raw.items["title"].tolist() == ["Café (2000)"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("3::4::5", "expected 4 fields .*found 3"),
        ("3::4::5::6::7", "expected 4 fields .*found 5"),
        ("3:4::5::6", "expected 4 fields"),
        ("3::1.5::5::6", "MovieID '1.5' is not a non-negative integer"),
        ("3::-4::5::6", "MovieID '-4'"),
        ("3::4::five::6", "Rating 'five'"),
    ],
)
def test_movielens_1m_rating_errors(tmp_path: Path, line: str, message: str) -> None:
    write_ml1m(tmp_path, ratings="1::1193::5::978300760\n" + line + "\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "ratings.dat", 2) + " " + message):
        load_movielens_1m(tmp_path)


def test_movielens_1m_movie_errors(tmp_path: Path) -> None:
    write_ml1m(tmp_path, movies=b"1::A::Drama\n2::B\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "movies.dat", 2) + " expected 3 fields"):
        load_movielens_1m(tmp_path)
    write_ml1m(tmp_path, movies=b"1::A::Drama\nx::B::Drama\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "movies.dat", 2) + " movie id 'x'"):
        load_movielens_1m(tmp_path)


# --------------------------------------------------------------------------- Anime


def test_anime_parses_items_keeps_minus_one_and_drops_unknown_anime(tmp_path: Path) -> None:
    raw = load_anime(write_anime(tmp_path))
    check_log(raw.interactions, log([(1, 32281, -1.0, 2), (2, 5114, 10.0, 4)], "all"))
    assert raw.dropped == {"ratings of an anime not in anime.csv": 2}
    expected_items = pd.DataFrame(
        {
            "item": [32281, 5114, 30484],
            "title": ["Kimi no Na wa.", 'Fullmetal Alchemist: Brotherhood, the "best"', "Steins;Gate 0"],
            "genres": ["Drama|Romance|School|Supernatural", "Action|Adventure", ""],
            "type": ["Movie", "TV", "TV"],
            "episodes": [1.0, 64.0, np.nan],
            "members": [200630, 793665, 60999],
            "average_rating": [9.37, 9.26, np.nan],
        }
    ).astype({"title": str, "genres": str, "type": str})
    pd.testing.assert_frame_equal(raw.items, expected_items)  # 30484 has no rating and stays
    assert raw.files == {"all": str(tmp_path / "rating.csv"), "items": str(tmp_path / "anime.csv")}


def test_anime_errors(tmp_path: Path) -> None:
    write_anime(tmp_path, ratings="user_id,anime_id,rating\n1,32281,8\n1,5114,x\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "rating.csv", 3) + " rating 'x'"):
        load_anime(tmp_path)
    write_anime(tmp_path, ratings="user_id,anime_id,rating\n1,32281,8\n1e30,5114,8\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "rating.csv", 3) + " user_id '1e30'"):
        load_anime(tmp_path)
    write_anime(tmp_path, ratings="user_id,anime_id,rating\n1,32281,8,9\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "rating.csv", 2) + " expected 3 fields .*found 4"):
        load_anime(tmp_path)
    write_anime(tmp_path, ratings="user_id,anime_id,rating\n")
    with pytest.raises(RawDataError, match="rating.csv: the file holds no rows"):
        load_anime(tmp_path)
    write_anime(tmp_path, ratings=b"user_id,anime_id,rating\n1,32281,8\n\n1,\x80,8\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "rating.csv", 4) + " not valid UTF-8"):
        load_anime(tmp_path)
    write_anime(tmp_path, anime="anime_id,name,genre,type,episodes,members\n1,a,,TV,1,2\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "anime.csv", 1) + " missing column\\(s\\) rating"):
        load_anime(tmp_path)
    write_anime(tmp_path, anime=ANIME_CSV.replace(",64,", ",sixty,"))
    with pytest.raises(RawDataError, match=at(tmp_path / "anime.csv", 3) + " episodes 'sixty'"):
        load_anime(tmp_path)


# --------------------------------------------------------------------------- custom


def test_custom_string_ids_csv_with_items_users_and_social(tmp_path: Path) -> None:
    write(tmp_path / "log.csv", "user,item,stars,when\nu1,i1,4,10\nu2, i2 ,5,20.5\n")
    write(tmp_path / "items.csv", 'item,title,genres,year\ni1,"Alpha, the",A|B,2001\ni2,Beta,,\ni3,Gamma,C,1999\n')
    write(tmp_path / "users.tsv", "user\tage\tzip\nu1\t30\t01234\nu2\t40\t99999\n")
    write(tmp_path / "friends.csv", "user,friend\nu1,u2\n")
    raw = custom(
        tmp_path,
        name="shop",
        interactions="log.csv",
        items="items.csv",
        users="users.tsv",
        social="friends.csv",
        columns={"rating": "stars", "timestamp": "when"},
    )
    expected = pd.DataFrame(
        {
            "user": ["u1", "u2"],
            "item": ["i1", "i2"],
            "rating": [4.0, 5.0],
            "timestamp": [10.0, 20.5],
            "part": ["all", "all"],
            "line": [2, 3],
        }
    ).astype({"user": str, "item": str, "part": str})
    pd.testing.assert_frame_equal(raw.interactions, expected)
    assert raw.name == "shop"
    items = pd.DataFrame(
        {
            "item": ["i1", "i2", "i3"],
            "title": ["Alpha, the", "Beta", "Gamma"],
            "genres": ["A|B", "", "C"],
            "year": [2001.0, np.nan, 1999.0],
        }
    ).astype({"item": str, "title": str, "genres": str})
    pd.testing.assert_frame_equal(raw.items, items)
    users = pd.DataFrame({"user": ["u1", "u2"], "age": [30, 40], "zip": ["01234", "99999"]}).astype(
        {"user": str, "zip": str}
    )
    pd.testing.assert_frame_equal(raw.users, users)
    pd.testing.assert_frame_equal(
        raw.social, pd.DataFrame({"user": ["u1"], "friend": ["u2"], "line": [2]}).astype({"user": str, "friend": str})
    )
    assert raw.files == {
        "all": str(tmp_path / "log.csv"),
        "items": str(tmp_path / "items.csv"),
        "users": str(tmp_path / "users.tsv"),
        "social": str(tmp_path / "friends.csv"),
    }


def test_custom_integer_ids_without_rating_or_timestamp(tmp_path: Path) -> None:
    write(tmp_path / "log.csv", "item,user,extra\n10,+1,x\n007,2,y\n")
    write(tmp_path / "items.csv", "item,name\n10,Ten\n7,Seven\n")
    raw = custom(tmp_path, interactions="log.csv", items="items.csv", columns={"title": "name", "genres": None})
    check_log(raw.interactions, log([(1, 10, 2), (2, 7, 3)], "all", rating=False))
    pd.testing.assert_frame_equal(
        raw.items, pd.DataFrame({"item": [10, 7], "title": ["Ten", "Seven"], "genres": ["", ""]}).astype(
            {"title": str, "genres": str}
        )
    )


def test_custom_user_and_item_dtypes_are_decided_separately(tmp_path: Path) -> None:
    write(tmp_path / "log.csv", "user,item\n1,a\n2,b\n")
    raw = custom(tmp_path, interactions="log.csv")
    assert raw.interactions["user"].dtype == np.int64
    assert pd.api.types.is_string_dtype(raw.interactions["item"].dtype)
    assert raw.interactions["item"].tolist() == ["a", "b"]


def test_custom_items_file_with_a_string_id_makes_item_ids_strings(tmp_path: Path) -> None:
    write(tmp_path / "log.csv", "user,item\n1,10\n2,20\n")
    write(tmp_path / "items.csv", "item,title,genres\n10,a,\nx20,b,\n")
    raw = custom(tmp_path, interactions="log.csv", items="items.csv")
    assert raw.interactions["item"].tolist() == ["10", "20"]
    assert raw.items["item"].tolist() == ["10", "x20"]
    assert pd.api.types.is_string_dtype(raw.items["item"].dtype)
    assert raw.interactions["user"].dtype == np.int64


@pytest.mark.parametrize("odd", ["-3", "1.5", "1e30", "9223372036854775808", "abc"])
def test_custom_non_integer_ids_are_kept_as_strings(tmp_path: Path, odd: str) -> None:
    write(tmp_path / "log.csv", f"user,item\n1,2\n{odd},3\n")
    raw = custom(tmp_path, interactions="log.csv")
    assert raw.interactions["user"].tolist() == ["1", odd]
    assert raw.interactions["item"].dtype == np.int64


def test_custom_parquet(tmp_path: Path) -> None:
    pd.DataFrame(
        {"u": [5, 6], "i": ["x", "y"], "r": [1.5, 2.0], "t": pd.to_datetime(["1970-01-01 00:00:10", "2020-01-01 00:00:00"])}
    ).to_parquet(tmp_path / "log.parquet")
    raw = custom(tmp_path, interactions="log.parquet", columns={"user": "u", "item": "i", "rating": "r", "timestamp": "t"})
    expected = pd.DataFrame(
        {"user": [5, 6], "item": ["x", "y"], "rating": [1.5, 2.0], "timestamp": [10.0, 1577836800.0], "part": "all", "line": [1, 2]}
    ).astype({"item": str, "part": str})
    pd.testing.assert_frame_equal(raw.interactions, expected)


def test_custom_parquet_float_ids_are_refused(tmp_path: Path) -> None:
    pd.DataFrame({"user": [1.0, 2.0], "item": [1, 2]}).to_parquet(tmp_path / "log.parquet")
    with pytest.raises(RawDataError, match="floating-point"):
        custom(tmp_path, interactions="log.parquet")


def test_custom_datetime_string_timestamps(tmp_path: Path) -> None:
    write(tmp_path / "log.csv", "user,item,ts\n1,2,2020-01-01 00:00:00\n1,3,2020-01-01T01:00:00+01:00\n")
    raw = custom(tmp_path, interactions="log.csv", columns={"timestamp": "ts"})
    assert raw.interactions["timestamp"].tolist() == [1577836800.0, 1577836800.0]
    write(tmp_path / "log.csv", "user,item,ts\n1,2,2020-01-01\n1,3,the day after\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "log.csv", 3) + " timestamp 'the day after'"):
        custom(tmp_path, interactions="log.csv", columns={"timestamp": "ts"})
    write(tmp_path / "log.csv", "user,item,ts\n1,2,01/02/2020\n")
    raw = custom(tmp_path, interactions="log.csv", columns={"timestamp": "ts", "timestamp_format": "%d/%m/%Y"})
    assert raw.interactions["timestamp"].tolist() == [pd.Timestamp("2020-02-01", tz="UTC").timestamp()]


@pytest.mark.parametrize("key", ["user", "item", "rating", "timestamp"])
def test_custom_unknown_column_names_the_parameter_and_the_file(tmp_path: Path, key: str) -> None:
    path = write(tmp_path / "log.csv", "user,item,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(RawDataError) as caught:
        custom(tmp_path, interactions="log.csv", columns={key: "nope"})
    message = str(caught.value)
    assert f"custom.columns.{key}" in message and str(path) in message
    assert "user, item, rating, timestamp" in message


def test_custom_unknown_title_column_in_the_items_file(tmp_path: Path) -> None:
    write(tmp_path / "log.csv", "user,item\n1,2\n")
    items = write(tmp_path / "items.csv", "item,name\n2,x\n")
    with pytest.raises(RawDataError, match=re.escape(f"{items}: no column 'title' (parameter custom.columns.title)")):
        custom(tmp_path, interactions="log.csv", items="items.csv")


def test_custom_option_and_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RawDataError, match="custom.interactions is required"):
        custom(tmp_path)
    with pytest.raises(RawDataError, match="custom.colums"):
        custom(tmp_path, interactions="log.csv", colums={})
    with pytest.raises(RawDataError, match="custom.columns.users"):
        custom(tmp_path, interactions="log.csv", columns={"users": "u"})
    with pytest.raises(RawDataError, match="see the README's Datasets section") as caught:
        custom(tmp_path, interactions="log.csv", items="items.csv")
    assert str(tmp_path / "log.csv") in str(caught.value) and str(tmp_path / "items.csv") in str(caught.value)
    write(tmp_path / "log.json", "{}")
    with pytest.raises(RawDataError, match="unknown file type '.json'"):
        custom(tmp_path, interactions="log.json")
    write(tmp_path / "log.csv", "user,item\n")
    with pytest.raises(RawDataError, match="log.csv: the file holds no rows"):
        custom(tmp_path, interactions="log.csv")
    write(tmp_path / "log.csv", "user,item,rating\n1,2,3\n1,,4\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "log.csv", 3) + " empty item id"):
        custom(tmp_path, interactions="log.csv")
    write(tmp_path / "log.csv", "user,item,rating\n1,2,3\n1,2,x\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "log.csv", 3) + " rating 'x'"):
        custom(tmp_path, interactions="log.csv", columns={"rating": "rating"})
    write(tmp_path / "log.csv", "user,item\n1,2\n1,2,3\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "log.csv", 3) + " expected 2 fields"):
        custom(tmp_path, interactions="log.csv")
    write(tmp_path / "log.csv", b"user,item\n1,2\nb\xff,2\n")
    with pytest.raises(RawDataError, match=at(tmp_path / "log.csv", 3) + " not valid UTF-8"):
        custom(tmp_path, interactions="log.csv")


def test_custom_absolute_paths(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere" / "log.tsv", "user\titem\n1\t2\n")
    raw = custom(tmp_path / "base", interactions=str(path))
    assert raw.files == {"all": str(path)}
    assert raw.interactions["item"].tolist() == [2]


# --------------------------------------------------------------------------- UTF-8 helper


def test_first_bad_utf8_across_piece_boundaries() -> None:
    data = "a\nbé\nc€\n".encode() + b"\xff\n"
    expected = (4, len(data) - 2, 0xFF)
    for size in range(1, len(data) + 1):
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        assert parsing._first_bad_utf8(pieces) == expected
    assert parsing._first_bad_utf8([b"ok \xe2\x82", b"\xac\n"]) is None


# --------------------------------------------------------------------------- real datasets


def test_shared_dataset_fixture_fails_or_skips(
    shared_dataset: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEBIAS_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="DEBIAS_REQUIRE_DATA=1"):
        shared_dataset("no-such-dataset")
    monkeypatch.delenv("DEBIAS_REQUIRE_DATA")
    with pytest.raises(pytest.skip.Exception):
        shared_dataset("no-such-dataset")


def test_real_coat(shared_dataset: Callable[[str], Path]) -> None:
    raw = load_coat(shared_dataset("coat"))
    assert raw.shape == (290, 300)
    assert raw.interactions["part"].value_counts().to_dict() == {"biased": 6960, "unbiased": 4640}
    assert raw.interactions["rating"].between(1, 5).all()


def test_real_gowalla(shared_dataset: Callable[[str], Path]) -> None:
    raw = load_gowalla(shared_dataset("gowalla"))
    parts = raw.interactions["part"].value_counts().to_dict()
    assert parts == {"train": 810128, "test": 217242}
    assert raw.interactions.loc[raw.interactions["part"] == "train", "user"].nunique() == 29858


def test_real_lastfm(shared_dataset: Callable[[str], Path]) -> None:
    raw = load_lastfm(shared_dataset("lastfm"))
    assert raw.interactions["part"].value_counts().to_dict() == {"train": 42135, "test": 10533}
    assert len(raw.social) == 25434


def test_real_movielens_100k(shared_dataset: Callable[[str], Path]) -> None:
    raw = load_movielens_100k(shared_dataset("ml-100k"))
    assert len(raw.interactions) == 100_000
    assert raw.interactions["user"].nunique() == 943 and raw.interactions["item"].nunique() == 1682
    assert len(raw.users) == 943 and len(raw.items) == 1682
    assert (raw.items["title"] != "").all()
    genres = {genre for joined in raw.items["genres"] for genre in joined.split("|") if genre}
    assert genres == set(MOVIELENS_100K_GENRES)
