"""Small helpers and types of the estimate (see :mod:`kerinspect.scan.estimate`): config
numbers and shapes read defensively, a layer's name and dtype, a ``build_config``'s shapes,
and what a formula may ask of the walk (:class:`Walker`)."""

from __future__ import annotations

import math
from typing import Any, Protocol


def _as_int(value: Any) -> int | None:
    """A config number as a non-negative int (None if it is not one)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        if math.isnan(value) or value < 0:
            return None
        if math.isinf(value) or value >= 2.0**63:
            return 1 << 63
        return int(value)
    return None


def layer_name(layer: Any, fallback: str | int) -> str:
    """The name a layer dict gives itself, else ``[fallback]``."""
    if isinstance(layer, dict):
        cfg = layer.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            return str(cfg["name"])
        if isinstance(layer.get("name"), str):
            return str(layer["name"])
    return f"[{fallback}]"


Shape = list[int | None]
#: the tensors a layer is called on (or returns); None where a shape is not known
Tensors = list[Shape | None]


class Walker(Protocol):
    """What a formula that nests layers (wrappers, RNN cells) needs of the walk
    (:class:`kerinspect.scan.estimate.walk._Walker`): counting a layer dict through it,
    so that nested layers share its budget, totals and unknown classes."""

    def count(
        self, layer: dict[str, Any], ins: Tensors, declared: Tensors | None, path: tuple[str, ...]
    ) -> tuple[int, Tensors | None]: ...

    def sub(self, layer: Any, ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]: ...


def _untuple(value: Any) -> Any:
    if isinstance(value, dict) and value.get("class_name") == "__tuple__":
        return value.get("items")
    return value


def _shape(value: Any) -> Shape | None:
    value = _untuple(value)
    if not isinstance(value, list) or not all(v is None or isinstance(v, (int, float)) for v in value):
        return None
    if any(isinstance(v, bool) for v in value):
        return None
    return [None if v is None else _as_int(v) for v in value]


def _dim(value: int | None) -> int:
    return 1 if value is None else value


def _prod(values: Any) -> int:
    return math.prod(_dim(v) for v in values)


def _ints(value: Any, rank: int, default: int = 1) -> list[int]:
    value = _untuple(value)
    if isinstance(value, list):
        out = [_dim(_as_int(v)) for v in value][:rank] or [default]
        return (out * rank)[:rank] if len(out) < rank else out
    n = _as_int(value)
    return [default if n is None else n] * rank


def _int(cfg: dict[str, Any], key: str, default: int = 1) -> int:
    value = _as_int(cfg.get(key))
    return default if value is None else value


def _axis(value: Any, rank: int | None) -> int | None:
    """A (possibly negative) axis as an index into a shape of ``rank`` dims."""
    if isinstance(value, bool) or not isinstance(value, int) or rank is None:
        return None
    index = value + rank if value < 0 else value
    return index if 0 <= index < rank else None


def _itemsize(cfg: dict[str, Any]) -> int:
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        inner = dtype.get("config")
        dtype = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(dtype, str) or dtype.startswith("mixed_"):
        return 4
    if "float64" in dtype or dtype in ("int64", "uint64", "complex64"):
        return 8
    if dtype in ("float16", "bfloat16", "int16", "uint16"):
        return 2
    return 4


def _build_shapes(build: Any) -> list[Tensors]:
    """The input shapes a ``build_config`` builds a layer with (one candidate)."""
    if not isinstance(build, dict):
        return []
    value = build.get("input_shape")
    if value is None and isinstance(build.get("shapes_dict"), dict):
        shapes = build["shapes_dict"]
        order = [k for k in ("query_shape", "value_shape", "key_shape") if k in shapes]
        order += [k for k in shapes if k not in order]
        value = [shapes[k] for k in order]
    value = _untuple(value)
    if isinstance(value, dict):
        value = list(value.values())
    single = _shape(value)
    if single is not None:
        return [[single]]
    if isinstance(value, list) and value:
        many = [_shape(v) for v in value]
        if any(m is not None for m in many):
            return [many]
    return []
