"""The parameters of the custom format (the ``custom`` block): checked, with their
defaults, and the files they name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from debias_pipeline.data.loaders.parsing import RawDataError

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

CUSTOM_KEYS = ("name", "interactions", "items", "users", "social", "columns")


def custom_options(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``custom`` block checked, and its ``columns`` with the defaults filled in.

    The parameters come straight from YAML, so their types are checked too.

    Raises:
        RawDataError: An unknown, missing or mistyped parameter.
    """
    if options is not None and not isinstance(options, Mapping):
        raise RawDataError(
            f"the custom parameters (custom.interactions, custom.columns, ...) must be a mapping, got {options!r}"
        )
    options = dict(options or {})
    unknown = sorted(map(str, set(options) - set(CUSTOM_KEYS)))
    if unknown:
        raise RawDataError(f"unknown parameter(s) {', '.join('custom.' + k for k in unknown)}; valid: {CUSTOM_KEYS}")
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


_ROLES = ("interactions", "items", "users", "social")


def custom_file_paths(directory: Path, options: Mapping[str, Any]) -> dict[str, Path]:
    """The files of checked ``custom`` parameters, by role (interactions, items, users, social)."""
    return {role: directory / str(options[role]) for role in _ROLES if options.get(role)}


def custom_paths(directory: Path, options: Mapping[str, Any] | None) -> dict[str, Path]:
    """The files ``load_custom`` reads for these ``custom`` parameters, by role.

    Raises:
        RawDataError: Missing or malformed parameters.
    """
    return custom_file_paths(Path(directory), custom_options(options)[0])
