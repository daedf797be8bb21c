"""JSON of the report dataclasses, generated from their fields and type hints.

A frozen dataclass deriving from :class:`Record` gets ``to_dict()`` and ``from_dict()``;
a new field needs no serializer edit. Stdlib only, and it knows no report type.

Writing (``to_dict``)
    One key per field, in field order, or in the order the class's ``JSON_KEYS`` gives. A
    key there that is no field's names an attribute written but never read back: a
    property (``totals``, ``exit_code``) or a class constant (``schema_version``).
    Tuples become lists, records (and anything else with ``to_dict()``, such as
    :class:`~kerinspect.spec.Thresholds`) objects, and a NaN or infinite float becomes
    ``None`` (:func:`num`: JSON has no NaN; an undefined statistic is null), except in a
    field marked ``exact``, which is written as it is. A field typed ``float`` is written
    as a float even when it holds an int.

Reading (``from_dict``)
    As lenient as a reader of older reports must be: a key the data lacks takes the
    field's default (the report was written before the field existed), and keys the
    class does not read (computed ones, a newer report's) are ignored. As strict as a
    reader of the worker's output must be (the worker runs model code: its output is
    checked, not trusted): a missing required key raises :class:`KeyError` (naming the
    key), a value of another type than the hint :class:`TypeError`, a value outside
    ``choices`` :class:`ValueError`.

Per-field exceptions are the field's metadata, made by :func:`meta`: another JSON name,
a nested object shared with other fields (``{"model": {"path": ...}}``), omitted when
None, a codec (a histogram's compact form), required despite a default, a value for a
missing key despite no default, allowed values, written exactly.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, Union, cast

_NO_VALUE: Any = object()


def num(x: float | None) -> float | None:
    """JSON-safe float: NaN and infinities (undefined statistics) become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def meta(
    *,
    key: str | None = None,
    group: str | None = None,
    omit_none: bool = False,
    codec: tuple[Callable[[Any], Any], Callable[[Any], Any]] | None = None,
    required: bool = False,
    missing: Any = _NO_VALUE,
    choices: tuple[Any, ...] | None = None,
    exact: bool = False,
) -> dict[str, Any]:
    """Field metadata for the JSON of a :class:`Record` (every argument optional).

    Args:
        key: the JSON name (default: the field's name).
        group: the key of a nested object that holds this field, with the others of
            that group, in field order.
        omit_none: leave the key out when the value is None.
        codec: ``(encode, decode)`` between the value and its JSON (not applied to None).
        required: the key must be present even though the field has a default.
        missing: the value when the key is absent, for a field without a default.
        choices: the values a reader accepts.
        exact: write a float as it is (JSON's ``Infinity`` when it overflowed), not
            through :func:`num`: for plain ``float`` fields read back as numbers.
    """
    return {
        "json": {
            "key": key,
            "group": group,
            "omit_none": omit_none,
            "codec": codec,
            "required": required,
            "missing": missing,
            "choices": choices,
            "exact": exact,
        }
    }


_PLAIN = meta()["json"]


def _write(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    if to_dict is not None:
        return to_dict()
    if isinstance(value, float):
        return num(value)
    if isinstance(value, (tuple, list)):
        return [_write(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _write(v) for k, v in value.items()}
    return value


def _read(value: Any, hint: Any, where: str) -> Any:
    """``value`` (parsed JSON) as the type ``hint`` says; TypeError when it is not one."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        alternatives = [a for a in args if a is not type(None)]
        for alternative in alternatives[:-1]:
            try:
                return _read(value, alternative, where)
            except (TypeError, ValueError, KeyError):
                continue
        return _read(value, alternatives[-1], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where} must be a list")
        return tuple(_read(v, args[0], where) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where} must be an object")
        return {k: _read(v, args[1] if args else Any, where) for k, v in value.items()}
    if hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif hasattr(hint, "from_dict"):  # a record, or a spec read leniently (Thresholds)
        return value if isinstance(value, hint) else hint.from_dict(value)
    else:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"kerinspect.records cannot read the type {hint!r}")
    raise TypeError(f"{where} must be {hint.__name__}, not {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class _Field:
    """One field as the JSON sees it (its metadata resolved once per class)."""

    name: str
    key: str
    group: str | None
    spec: dict[str, Any]
    hint: Any
    has_default: bool
    number: bool  # typed float (or float | None): written through num(), an int as a float


#: per record class: its fields, and its JSON keys in order with the fields each holds
#: (none: a computed key; several: a group)
_Plan = tuple[tuple[_Field, ...], tuple[tuple[str, tuple[_Field, ...]], ...]]
_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    """The JSON layout of a record class (worked out once)."""
    if cls not in _PLANS:
        hints = typing.get_type_hints(cls)
        fields = []
        for f in dataclasses.fields(cast(Any, cls)):
            spec = cast(dict[str, Any], f.metadata.get("json", _PLAIN))
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            hint = hints[f.name]
            number = hint is float or set(typing.get_args(hint)) == {float, type(None)}
            fields.append(
                _Field(f.name, spec["key"] or f.name, spec["group"], spec, hint, has_default, number)
            )
        keys = cast(Any, cls).JSON_KEYS or tuple(dict.fromkeys(f.group or f.key for f in fields))
        layout = tuple((k, tuple(f for f in fields if (f.group or f.key) == k)) for k in keys)
        _PLANS[cls] = (tuple(fields), layout)
    return _PLANS[cls]


class Record:
    """Base of the report dataclasses: ``to_dict()``/``from_dict()`` from their fields,
    type hints, field metadata (:func:`meta`) and ``JSON_KEYS`` (see the module docstring)."""

    #: The JSON keys in order: fields by JSON name, groups, computed attributes. Empty:
    #: every field, in field order.
    JSON_KEYS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (see the module docstring)."""
        data: dict[str, Any] = {}
        for key, members in _plan(type(self))[1]:
            if not members:  # computed: a property or a class constant
                data[key] = _write(getattr(self, key))
                continue
            into = data.setdefault(key, {}) if members[0].group else data
            for f in members:
                value = getattr(self, f.name)
                if value is None and f.spec["omit_none"]:
                    continue
                if value is not None and f.spec["codec"] is not None:
                    value = f.spec["codec"][0](value)
                if f.spec["exact"]:
                    into[f.key] = value
                else:
                    into[f.key] = num(value) if f.number else _write(value)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """The record that :meth:`to_dict` wrote (see the module docstring for what is
        lenient, and what raises KeyError, TypeError or ValueError)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__} must be an object, not {type(data).__name__}")
        values: dict[str, Any] = {}
        for f in _plan(cls)[0]:
            source = data if f.group is None else data.get(f.group, {})
            if not isinstance(source, Mapping):
                raise TypeError(f"{cls.__name__}.{f.group} must be an object")
            if f.key not in source:
                if f.spec["missing"] is not _NO_VALUE:
                    values[f.name] = f.spec["missing"]
                elif f.spec["required"] or not f.has_default:
                    raise KeyError(f.key)
                continue  # written before the field existed: its default
            value = source[f.key]
            if value is not None and f.spec["codec"] is not None:
                value = f.spec["codec"][1](value)
            value = _read(value, f.hint, f"{cls.__name__}.{f.key}")
            if f.spec["choices"] is not None and value not in f.spec["choices"]:
                raise ValueError(f"{cls.__name__}.{f.key} {value!r}")
            values[f.name] = value
        return cast(Any, cls)(**values)
