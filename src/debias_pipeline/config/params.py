"""Typed, frozen parameter blocks, validated by Pydantic.

Every hyperparameter comes from ``conf/base/parameters_*.yml``. Each block is a
``Params`` model (Pydantic, strict types, unknown keys forbidden, non-finite numbers
refused, frozen); a node declares the block's model as the type hint of its
``params:`` input and Kedro validates the block before the first node runs
(Kedro's parameter validation). ``build_config`` does the same outside a Kedro run
(blocks nested in other blocks, the in-memory data chain, tests).

Errors name the dotted parameter: ``parameter 'dual.model.exposure.embedding_dim'
must be an integer, got '4'``; an unknown key also names the closest valid one.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

T = TypeVar("T", bound="Params")

# Where Kedro validates a block it does not say the block's key to the model: messages
# carry this placeholder and ``debias_pipeline.cli`` puts the key in its place.
BLOCK = "<block>"



class ParameterError(ValueError):
    """A bad parameter; the message names it (``parameter 'mf.model.lr' must be ...``)."""


_TYPE_WORDS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
}
# Union member tags Pydantic adds to an error's location (``x.float``): not parameters.
_MEMBER_TAGS = {"int", "float", "str", "bool", "none", "tuple", "list", "dict"}


class Params(BaseModel):
    """Base of every parameter block: strict, closed, finite and frozen.

    Subclasses declare fields as a dataclass would and put range checks in
    ``check(self)`` (calling ``super().check()``), raising ``ValueError`` with a
    message that starts with the field's name (``lr must be > 0, got 0``).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _lists_to_tuples(cls, data: Any) -> Any:
        """YAML has lists, the blocks keep tuples (hashable, frozen)."""
        if not isinstance(data, Mapping):
            return data
        fixed = dict(data)
        for name, value in fixed.items():
            field = cls.model_fields.get(name)
            if field is not None and isinstance(value, list) and _is_tuple(field.annotation):
                fixed[name] = tuple(value)
        return fixed

    @model_validator(mode="after")
    def _range_checks(self) -> Self:
        self.check()
        return self

    def check(self) -> None:
        """Range checks across fields; ``ValueError`` naming the field."""

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:  # type: ignore[override]
        """Pydantic's ``model_validate`` with the project's error message (Kedro calls it)."""
        return build_config(cls, obj, BLOCK)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated again."""
        return build_config(type(self), {**self.model_dump(round_trip=True), **changes}, type(self).__name__)


def _is_tuple(annotation: Any) -> bool:
    if typing.get_origin(annotation) is tuple:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_tuple(option) for option in typing.get_args(annotation))
    return False


def _block_at(cls: type, loc: tuple[Any, ...]) -> type | None:
    """The ``Params`` class found by walking the field names of ``loc`` from ``cls``."""
    current: Any = cls
    for part in loc:
        if isinstance(part, int) or part in _MEMBER_TAGS:
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return None
        current = _unwrap(fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        models = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else options[0]
    return annotation


def _dotted(where: str, loc: tuple[Any, ...]) -> str:
    path = where
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _MEMBER_TAGS and "[" not in str(part):
            path = f"{path}.{part}" if path else str(part)
    return path


def closest(name: str, valid: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the valid name closest to ``name``, or ``""``."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _problem(error: dict[str, Any], cls: type, where: str) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    path = _dotted(where, loc)
    value = error.get("input")
    if kind == "missing":
        return f"missing parameter '{path}'"
    if kind == "extra_forbidden":
        owner = _block_at(cls, loc[:-1])
        valid = sorted(owner.model_fields) if owner is not None else []
        return f"unknown parameter(s) {path}{closest(str(loc[-1]), valid)}; valid keys: {', '.join(valid)}"
    if kind == "literal_error":
        owner = _block_at(cls, loc[:-1])
        annotation = _unwrap(owner.model_fields[loc[-1]].annotation) if owner is not None else None
        choices = list(typing.get_args(annotation)) if typing.get_origin(annotation) is typing.Literal else None
        return f"parameter '{path}' must be one of {choices or error['ctx']['expected']}, got {value!r}"
    if kind in _TYPE_WORDS:
        return f"parameter '{path}' {_TYPE_WORDS[kind]}, got {value!r}"
    if kind in ("value_error", "assertion_error"):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, ParameterError):  # a sub-block checked on its own (a model's Config)
            return str(cause).replace(BLOCK, path)
        message = str(cause) if cause is not None else error["msg"]
        # Range checks word their message "<field> must ..." (or "<field>.<sub> ..."):
        # name the dotted parameter.
        field_name = message.split(" ", 1)[0]
        owner = _block_at(cls, loc)
        if owner is not None and field_name.split(".")[0] in owner.model_fields:
            return f"parameter '{path}.{field_name}': {message}"
        return f"in parameters '{path}': {message}"
    return f"parameter '{path}': {error['msg']}"


def describe(error: ValidationError, cls: type, where: str) -> str:
    """The problems of ``error`` (validating ``cls`` as block ``where``), ``; ``-separated.

    A value that fits no member of a union (``k: int | tuple[int, ...]``) gets one
    error per member: only the most specific one of each parameter is kept.
    """
    problems = error.errors()
    paths = [_dotted(where, tuple(problem["loc"])) for problem in problems]
    kept = []
    for index, path in enumerate(paths):
        deeper = any(other.startswith((f"{path}.", f"{path}[")) for other in paths)
        if not deeper and path not in paths[:index]:
            kept.append(_problem(problems[index], cls, where))
    return "; ".join(kept)


def build_config(cls: type[T], params: Mapping[str, Any] | T | None, where: str) -> T:
    """Validate the block ``params`` as ``cls``.

    Args:
        cls: A ``Params`` model.
        params: The parameter block (``None`` means all defaults; an instance of
            ``cls``, already validated, is returned as it is).
        where: The block's dotted name in the parameters, used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ParameterError: Naming the offending parameter, for unknown, missing, mistyped,
            non-finite or out-of-range values.
    """
    if isinstance(params, cls):
        return params
    if params is None:
        params = {}
    if isinstance(params, BaseModel):
        params = params.model_dump(round_trip=True)
    try:
        return cls.__pydantic_validator__.validate_python(params)
    except ValidationError as error:
        raise ParameterError(describe(error, cls, where)) from None


_KEDRO_PROBLEM = re.compile(
    r"^- Parameter '(?P<key>[^']+)': (?:Failed to instantiate \w+ for parameter '[^']+': )?(?P<message>.*)$"
)


def kedro_validation_message(text: str) -> str:
    """Kedro's parameter-validation report on one line, each block's key put in its
    messages: ``parameter 'binarization.threshold' must be ...; parameter ...``."""
    problems = []
    for line in text.splitlines():
        match = _KEDRO_PROBLEM.match(line)
        if match is None:
            continue
        message = match["message"]
        problems.append(message.replace(BLOCK, match["key"]) if BLOCK in message else f"parameter '{match['key']}': {message}")
    return "; ".join(problems) if problems else text


def as_mapping(block: Any) -> Any:
    """A validated block as the plain mapping it came from, also inside mappings (other
    values unchanged)."""
    if isinstance(block, BaseModel):
        return block.model_dump(round_trip=True)
    if isinstance(block, dict):
        return {key: as_mapping(value) for key, value in block.items()}
    return block


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds (for range checks)."""
    if not condition:
        raise ValueError(message)


def lookup(parameters: Mapping[str, Any], dotted: str) -> Any:
    """The value at the dotted name (``dual.model.exposure``) of nested parameters.

    Raises:
        ValueError: Naming the missing parameter.
    """
    value: Any = parameters
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise ValueError(f"missing parameter '{dotted}'")
        value = value[part]
    return value


def set_dotted(block: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``value`` at the dotted name of a nested dict, creating the levels."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        block = block.setdefault(part, {})
    block[leaf] = value


def parse_seeds(value: Any) -> Any:
    """Seeds as the command line can pass them (``--params`` splits lists at commas):
    ``3``, ``"0-4"`` or ``"0..4"`` (inclusive), ``"0 1 2"`` or ``"0;1;2"``; a list as is."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        text = value.strip()
        bounds = re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", text)
        if bounds:
            low, high = int(bounds.group(1)), int(bounds.group(2))
            return tuple(range(low, high + 1)) if low <= high else value
        parts = re.split(r"[\s;]+", text)
        return tuple(int(p) for p in parts) if parts and all(p.isdigit() for p in parts) else value
    return value
