"""Dataclasses built from nested mappings (parsed YAML), with every value's type checked.

:func:`from_dict` reports the full dotted field name and the allowed values of a bad value as
a :class:`~entropyrl.errors.UserError`; ``ValueError`` from a dataclass's own checks becomes
one too, qualified with the section's prefix. Supported field types: nested dataclasses,
``Literal`` choices, ``X | None``, ``list[X]``, ``bool``, ``int``, ``float``, ``str``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from entropyrl.errors import UserError

T = TypeVar("T")


def field_with_help(default: Any, help: str) -> Any:
    """A dataclass field with a default and its help text (``metadata["help"]``)."""
    if isinstance(default, list | dict) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default),
                                 metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, checking names and types."""
    if not isinstance(data, Mapping):
        raise UserError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(
            f"unknown config field {prefix}{unknown[0]}. Valid fields here: "
            f"{', '.join(prefix + n for n in fields)}."
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise UserError(f"invalid config: {_qualify(str(err), prefix)}") from None


def _qualify(message: str, prefix: str) -> str:
    """Give a ``field: problem`` message from a nested section its full dotted field name."""
    head, sep, rest = message.partition(":")
    if not prefix or not sep or " " in head:
        return message
    return f"{prefix}{head.split('.')[-1]}{sep}{rest}"


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, name + ".")  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            raise UserError(f"{name}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{name}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{name}: expected a string, got {value!r}")
        return value
    return value
