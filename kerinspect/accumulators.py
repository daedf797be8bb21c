"""A run's statistics as serialized accumulators, and their merge (numpy only).

A worker that replays part of a dataset (:mod:`kerinspect.beam`: one Beam worker's
bundle) sends back its :class:`~kerinspect.engine.statistics.StatsCollector` as a
*state*: plain JSON data, the per-output :class:`~kerinspect.stats.RunningStats`
unfinished (count, mean, M2, extremes, counts, per-unit activity and spread, the
histogram and the quantile sketch), the attention layers' per-head sums, and what the
report needs to name them (the call sites, shapes, dtypes). :func:`merge_states`
folds two states into one: exact for counts, extremes, bins and sketches; mean and M2
by Chan's update in float64. It is commutative as well as associative (up to float64
rounding of mean and M2, relative ~1e-15), so the result does not depend on how the
data was split or in which order the parts arrive. A worker finishes the merged state
into a report (:func:`kerinspect.engine.session.finish_job`).

Arrays travel as ``{"dtype", "shape", "data"}`` (little-endian bytes in base64, from a
short list of dtypes), floats that are not finite as the strings ``"inf"``, ``"-inf"``
and ``"nan"``. A state comes from a worker that ran the model's code, so decoding checks
every field: anything malformed is :class:`ValueError`, which the caller reports as the
worker breaking the protocol.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from kerinspect.sketch import Sketch
from kerinspect.stats import RunningStats

#: What a state says it is (a state of another kind or version is refused).
KIND, VERSION = "kerinspect-statistics", 1
#: The dtypes an array of a state may have.
_DTYPES = ("<f8", "<i8", "|b1")
#: Largest array a state may carry (elements): per-unit arrays of the widest layers.
_MAX_ELEMENTS = 1 << 26


# -- numbers and arrays ------------------------------------------------------------


def number(x: float) -> float | str:
    """A float as JSON can carry it (``allow_nan=False``)."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def unnumber(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("a number was expected, got a boolean")
    if isinstance(v, (int, float)):
        return float(v)
    if v in ("inf", "-inf", "nan"):
        return float(v)
    raise ValueError(f"a number was expected, got {type(v).__name__}")


def integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("a count was expected")
    return v


def array(a: np.ndarray | None) -> dict[str, Any] | None:
    if a is None:
        return None
    a = np.asarray(a)
    kind = "|b1" if a.dtype == bool else ("<i8" if a.dtype.kind in "iu" else "<f8")
    data = np.ascontiguousarray(a, dtype=np.dtype(kind))
    return {"dtype": kind, "shape": list(a.shape), "data": base64.b64encode(data.tobytes()).decode("ascii")}


def unarray(d: Any) -> np.ndarray | None:
    if d is None:
        return None
    if not isinstance(d, dict) or d.get("dtype") not in _DTYPES:
        raise ValueError("an array of an unknown form")
    shape = d.get("shape")
    if not isinstance(shape, list) or len(shape) > 8 or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError("an array with a bad shape")
    size = math.prod(shape)
    if size > _MAX_ELEMENTS:
        raise ValueError("an array too large")
    raw = base64.b64decode(str(d.get("data", "")), validate=True)
    dtype = np.dtype(d["dtype"])
    if len(raw) != size * dtype.itemsize:
        raise ValueError("an array whose data does not match its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


# -- one tensor's statistics -------------------------------------------------------


def stats_state(s: RunningStats | None) -> dict[str, Any] | None:
    """A :class:`RunningStats`, unfinished, as plain data."""
    if s is None:
        return None
    sketch = None
    if s.sketch is not None:
        k = s.sketch
        sketch = {
            "zero": k.zero,
            "pos_first": k.pos_first,
            "pos": array(k.pos),
            "neg_first": k.neg_first,
            "neg": array(k.neg),
        }
    return {
        "count": s.count,
        "finite": s.finite,
        "mean": number(s.mean),
        "m2": number(s.m2),
        "min": number(s.min),
        "max": number(s.max),
        "zeros": s.zeros,
        "nan": s.nan,
        "inf": s.inf,
        "active": array(s.active),
        "samples": s.samples,
        "unit_mean": array(s.unit_mean),
        "unit_m2": array(s.unit_m2),
        "saturated": s.saturated,
        "saturation_of": s.saturation_of,
        "hist": array(s.hist),
        "sketch": sketch,
    }


def stats_from_state(d: Any) -> RunningStats | None:
    """:func:`stats_state` read back, every field checked."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ValueError("statistics of an unknown form")
    s = RunningStats()
    for key in ("count", "finite", "zeros", "nan", "inf", "samples", "saturated", "saturation_of"):
        setattr(s, key, integer(d.get(key)))
    for key in ("mean", "m2", "min", "max"):
        setattr(s, key, unnumber(d.get(key)))
    for key in ("active", "unit_mean", "unit_m2", "hist"):
        setattr(s, key, unarray(d.get(key)))
    k = d.get("sketch")
    if k is not None:
        if not isinstance(k, dict):
            raise ValueError("a sketch of an unknown form")
        s.sketch = Sketch(
            zero=integer(k.get("zero")),
            pos_first=integer(k.get("pos_first")),
            pos=unarray(k.get("pos")),
            neg_first=integer(k.get("neg_first")),
            neg=unarray(k.get("neg")),
        )
    return s


def _merge_stats(a: Any, b: Any) -> dict[str, Any] | None:
    sa, sb = stats_from_state(a), stats_from_state(b)
    if sa is None or sb is None:
        return stats_state(sa if sb is None else sb)
    return stats_state(sa.merge(sb))


# -- attention heads -----------------------------------------------------------------

#: Per-head sums (added), minima (the smaller kept) and the row error (the larger, NaN kept).
_HEAD_SUMS = ("rows", "multi_rows", "entropy_sum", "max_sum", "sink_sum", "diag_sum")
_HEAD_MINS = ("entropy_min", "max_min")


def _merge_heads(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two per-head accumulators (:meth:`~kerinspect.engine.attention.HeadAccumulator.state`)
    as one: what folding both parts' batches into one accumulator gives."""
    out = dict(a)
    out["batches"] = integer(a.get("batches")) + integer(b.get("batches"))
    out["reason"] = a.get("reason") if a.get("reason") is not None else b.get("reason")
    diffs = [unnumber(x) for x in (a.get("max_difference"), b.get("max_difference")) if x is not None]
    out["max_difference"] = number(max(diffs)) if diffs else None
    if not integer(b.get("heads")):
        return out
    if not integer(a.get("heads")):
        return {**dict(b), **{k: out[k] for k in ("batches", "reason", "max_difference")}}
    if a.get("heads") != b.get("heads") or list(a.get("shape", ()))[1:] != list(b.get("shape", ()))[1:]:
        raise ValueError("attention heads of different shapes")
    shape = [integer(n) for n in a["shape"]]
    shape[0] += integer(b["shape"][0])
    out["shape"] = shape
    for key in _HEAD_SUMS:
        out[key] = array(_arr(a, key) + _arr(b, key))
    for key in _HEAD_MINS:
        out[key] = array(np.minimum(_arr(a, key), _arr(b, key)))
    ea, eb = _arr(a, "row_error"), _arr(b, "row_error")
    out["row_error"] = array(np.where(np.isnan(ea) | np.isnan(eb), np.nan, np.maximum(ea, eb)))
    return out


def _arr(d: Mapping[str, Any], key: str) -> np.ndarray:
    a = unarray(d.get(key))
    if a is None:
        raise ValueError(f"attention heads without {key!r}")
    return a


# -- a whole run ---------------------------------------------------------------------


def empty_state() -> dict[str, Any]:
    """The state of no samples: the identity of :func:`merge_states`."""
    return {"kind": KIND, "version": VERSION, "rows": 0, "sites": []}


def check_state(state: Any) -> dict[str, Any]:
    """``state`` if it says it is one (kind, version, rows, sites), else ValueError."""
    if not isinstance(state, dict) or state.get("kind") != KIND or state.get("version") != VERSION:
        raise ValueError("not a kerinspect statistics state")
    integer(state.get("rows"))
    if not isinstance(state.get("sites"), list):
        raise ValueError("a state without its call sites")
    return state


def merge_states(a: Any, b: Any) -> dict[str, Any]:
    """One state holding the samples of ``a`` and ``b`` (each from
    :func:`~kerinspect.engine.session.snapshot`, or this function). Both must come from
    the same model: the same calls in the same order. Raises ValueError otherwise, or
    when either is malformed."""
    a, b = check_state(a), check_state(b)
    if not b["sites"]:
        return {**a, "rows": a["rows"] + b["rows"]}
    if not a["sites"]:
        return {**b, "rows": a["rows"] + b["rows"]}
    if [s.get("path") for s in a["sites"]] != [s.get("path") for s in b["sites"]]:
        raise ValueError("states of different models (their layer calls differ)")
    rows_a, rows_b = a["rows"], b["rows"]
    outputs = [
        [_merge_output(x, y, rows_a, rows_b) for x, y in zip(oa, ob, strict=True)]
        for oa, ob in zip(a["outputs"], b["outputs"], strict=True)
    ]
    inputs = {}
    for site, refs in a["inputs"].items():
        other = b["inputs"].get(site, [])
        if len(other) != len(refs):
            raise ValueError("states whose calls received different inputs")
        inputs[site] = [
            {**x, "stats": _merge_stats(x.get("stats"), y.get("stats"))} if "stats" in x else x
            for x, y in zip(refs, other)
        ]
    heads = dict(a["heads"])
    for site, h in b["heads"].items():
        heads[site] = _merge_heads(heads[site], h) if site in heads else h
    return {
        **a,
        "rows": rows_a + rows_b,
        "outputs": outputs,
        "inputs": inputs,
        "heads": heads,
        "largest": max(integer(a.get("largest", 0)), integer(b.get("largest", 0))),
        "warnings": list(dict.fromkeys([*a.get("warnings", []), *b.get("warnings", [])])),
        "engines": sorted(set(a.get("engines", [])) | set(b.get("engines", []))),
    }


def _merge_output(x: Any, y: Any, rows_a: int, rows_b: int) -> Any:
    """One output of one call: the statistics merged, the batch axis of its shape grown."""
    if x is None or y is None:
        return x if y is None else y
    shape_a, shape_b = list(x["shape"]), list(y["shape"])
    shape = shape_a
    if shape_a and shape_b and shape_a[0] == rows_a and shape_b[0] == rows_b and shape_a[1:] == shape_b[1:]:
        shape = [rows_a + rows_b, *shape_a[1:]]
    return {**x, "shape": shape, "stats": _merge_stats(x.get("stats"), y.get("stats"))}
