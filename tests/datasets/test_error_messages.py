"""File content in error messages is shown escaped: a header or value holding control
characters (an ANSI colour code, a carriage return) cannot recolour the terminal,
overwrite the message or fake a line of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from debias_pipeline.data.loaders.custom import load_custom
from debias_pipeline.data.loaders.parsing import RawDataError, printable
from debias_pipeline.data.loaders.side_data import load_anime

CONTROL = ("\x1b", "\r", "\n", "\t", "\x00", "\x07", "\u202e")


def assert_clean(message: str) -> None:
    assert not any(char in message for char in CONTROL), repr(message)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\rb", "a\\rb"),
        ("two\nlines", "two\\nlines"),
        ("tab\there", "tab\\there"),
        ("nul\x00", "nul\\x00"),
        ("\u202eevil", "\\u202eevil"),  # right-to-left override
        ("café, 東京 ✓", "café, 東京 ✓"),  # printable text is left alone
        ("back\\slash", "back\\slash"),
    ],
)
def test_printable_escapes_what_repr_escapes_and_nothing_else(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text) == repr(text)[1:-1] or text.isprintable()


def test_every_raw_data_error_is_escaped() -> None:
    assert str(RawDataError("file line 2: \x1b[2Jvalue\r")) == "file line 2: \\x1b[2Jvalue\\r"


def test_a_header_with_control_characters_is_escaped_in_the_missing_column_message(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_bytes(b'user,"it\x1b[31mem\rx"\n1,2\n')
    with pytest.raises(RawDataError) as error:
        load_custom(tmp_path, {"interactions": "log.csv"})
    message = str(error.value)
    assert_clean(message)
    assert "the file has columns: user, it\\x1b[31mem\\rx" in message


def test_a_header_with_control_characters_is_escaped_in_the_field_count_message(tmp_path: Path) -> None:
    (tmp_path / "log.tsv").write_bytes(b"user\tit\x1b[0mem\n1\t2\t3\n")
    with pytest.raises(RawDataError, match="expected 2 fields") as error:
        load_custom(tmp_path, {"interactions": "log.tsv", "columns": {"item": "it\x1b[0mem"}})
    assert_clean(str(error.value))
    assert "user<TAB>it\\x1b[0mem" in str(error.value)


def test_a_value_with_control_characters_is_escaped(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_bytes(b"user,item,rating\n1,2,4\x1b[2J\n")
    with pytest.raises(RawDataError, match="rating") as error:
        load_custom(tmp_path, {"interactions": "log.csv", "columns": {"rating": "rating"}})
    assert_clean(str(error.value))
    assert "4\\x1b[2J" in str(error.value)


def test_the_anime_header_check_escapes_the_names_it_lists(tmp_path: Path) -> None:
    (tmp_path / "anime.csv").write_text("anime_id,name,genre,type,episodes,rating,members\n1,A,x,TV,1,8.0,10\n")
    (tmp_path / "rating.csv").write_bytes(b"user_id,anime\x1b[31m_id\x07,rating\n1,1,5\n")  # ESC, BEL
    with pytest.raises(RawDataError, match="missing column") as error:
        load_anime(tmp_path)
    assert_clean(str(error.value))
    assert "anime\\x1b[31m_id" in str(error.value)
