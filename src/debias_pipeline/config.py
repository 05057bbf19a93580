"""Typed, frozen configuration built from Kedro parameter blocks.

Every hyperparameter comes from ``conf/base/parameters_*.yml``; this module turns a
parameter mapping into a frozen dataclass and rejects unknown, missing or mistyped
keys with an error that names the parameter (``dual.model.exposure.embedding_dim``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0])
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ValueError(f"parameter '{where}' must be one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return build_config(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"parameter '{where}' must be a list, got {value!r}")
        (inner, _ellipsis) = typing.get_args(annotation)
        return tuple(_check_value(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"parameter '{where}' must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"parameter '{where}' must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"parameter '{where}' must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"parameter '{where}' must be a string, got {value!r}")
        return value
    return value


def build_config(cls: type[T], params: Mapping[str, Any] | None, where: str) -> T:
    """Build the frozen dataclass ``cls`` from ``params``.

    Args:
        cls: A dataclass whose fields carry type annotations and, optionally, defaults.
        params: The parameter block (``None`` means all defaults).
        where: The block's dotted name in the parameters, used in error messages.

    Returns:
        An instance of ``cls``; its ``__post_init__`` may check ranges.

    Raises:
        ValueError: Naming the offending parameter, for unknown, missing or mistyped keys.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValueError(f"parameter '{where}' must be a mapping, got {params!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, field in fields.items():
        key = f"{where}.{name}"
        if name in params:
            values[name] = _check_value(params[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ValueError(f"missing parameter '{key}'")
    try:
        return cls(**values)
    except ValueError as error:
        # Range checks word their message "<field> must ..." (or "<field>.<sub> ..."):
        # name the dotted parameter.
        message = str(error)
        field_name = message.split(" ", 1)[0]
        if field_name.split(".")[0] in fields:
            raise ValueError(f"parameter '{where}.{field_name}': {message}") from None
        raise ValueError(f"in parameters '{where}': {message}") from None


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds (for range checks)."""
    if not condition:
        raise ValueError(message)
