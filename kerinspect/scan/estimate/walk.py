"""The walk over a model config: the :class:`Estimate` result, the entry points, and the
walker that propagates shapes layer by layer (see :mod:`kerinspect.scan.estimate`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# the package, partly initialised while it imports this module: the evaluation budget is
# read from it at call time, so that it has one home (where the tests lower it)
import kerinspect.scan.estimate as _package
from kerinspect.scan.estimate._common import (
    Shape,
    Tensors,
    _as_int,
    _build_shapes,
    _dim,
    _itemsize,
    _shape,
    layer_name,
)
from kerinspect.scan.estimate.formulas import FORMULAS
from kerinspect.scan.estimate.shapes import _SHAPES, WEIGHTLESS

# ---------------------------------------------------------------------------- result


@dataclass(frozen=True)
class Estimate:
    """What a config declares, computed without building anything.

    Attributes:
        params: parameters of every layer (None: the config is not a model).
        largest: (parameters, layer path) of the biggest layer.
        inputs: (layer path, config key, shape, elements per sample) of each declared input.
        weight_bytes: bytes the weights take once built (params times their dtype's size).
        unknown: (layer path, class name) of each layer with no formula (counted by its
            declared sizes only, see the module docstring).
    """

    params: int | None
    largest: tuple[int, tuple[str, ...]]
    inputs: tuple[tuple[tuple[str, ...], str, Shape, int], ...]
    weight_bytes: int = 0
    unknown: tuple[tuple[tuple[str, ...], str], ...] = ()


def estimate(config: dict[str, Any], root_name: str) -> Estimate:
    """Estimate the parameters and input sizes a model config declares (see the module docstring)."""
    walker = _Walker()
    root = (root_name,)
    cfg = config.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        walker.inputs_of(config, root)
        return Estimate(None, walker.largest, tuple(walker.inputs))
    walker.model(config, [None], root)
    return Estimate(walker.total, walker.largest, tuple(walker.inputs), walker.bytes, tuple(walker.unknown))


def estimate_layer(layer: dict[str, Any], inputs: Tensors) -> tuple[int, Tensors | None]:
    """(parameters, output shapes) of one serialized layer called on ``inputs``.

    The building block of :func:`estimate`, exposed for the tests, which compare it
    with Keras's ``count_params()`` and output shapes class by class.
    """
    walker = _Walker()
    return walker.count(layer, inputs, None, ("layer",))


# ---------------------------------------------------------------------------- the walk

_CONTAINERS = frozenset({"Functional", "Sequential", "Model", "Pipeline"})
#: classes whose ``input_dim`` is their own argument, not Keras's legacy input shape
_OWN_INPUT_DIM = frozenset({"Embedding", "ReversibleEmbedding"})


class _Walker:
    def __init__(self) -> None:
        self.total = 0
        self.bytes = 0
        self.largest: tuple[int, tuple[str, ...]] = (0, ())
        self.inputs: list[tuple[tuple[str, ...], str, Shape, int]] = []
        self.unknown: list[tuple[tuple[str, ...], str]] = []
        self._unknown_seen: set[tuple[tuple[str, ...], str]] = set()
        self.work = 0

    def add(self, count: int, path: tuple[str, ...], itemsize: int) -> None:
        self.total += count
        self.bytes += count * itemsize
        if count > self.largest[0]:
            self.largest = (count, path)

    def note_unknown(self, path: tuple[str, ...], cn: str) -> None:
        if (path, cn) not in self._unknown_seen:
            self._unknown_seen.add((path, cn))
            self.unknown.append((path, cn))

    def _input(self, path: tuple[str, ...], key: str, shp: Shape, skip: int) -> None:
        self.inputs.append((path, key, shp, math.prod(_dim(d) for d in shp[skip:])))

    def inputs_of(self, layer: dict[str, Any], path: tuple[str, ...]) -> None:
        cfg = layer.get("config")
        if not isinstance(cfg, dict):
            return
        for key, skip in (("batch_shape", 1), ("batch_input_shape", 1), ("shape", 0), ("input_shape", 0)):
            shp = _shape(cfg.get(key))
            if shp is not None:
                self._input(path, key, shp, skip)
        n = _as_int(cfg.get("input_dim"))
        if n is not None and layer.get("class_name") not in _OWN_INPUT_DIM:
            self._input(path, "input_dim", [n], 0)

    # -- containers
    def model(self, model: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> Tensors | None:
        cfg = model.get("config")
        layers = cfg.get("layers") if isinstance(cfg, dict) else None
        if not isinstance(cfg, dict) or not isinstance(layers, list):
            return None
        chained = model.get("class_name") in ("Sequential", "Pipeline") or not any(
            isinstance(item, dict) and "inbound_nodes" in item for item in layers
        )
        if chained:
            return self._chain(model, cfg, layers, ins, path)
        return self._graph(cfg, layers, path)

    def _chain(
        self,
        model: dict[str, Any],
        cfg: dict[str, Any],
        layers: list[Any],
        ins: Tensors,
        path: tuple[str, ...],
    ) -> Tensors | None:
        """A Sequential: the input shape as Keras picks it, then layer after layer."""
        first = next((item for item in layers if isinstance(item, dict)), None)
        start: Shape | None = None
        if isinstance(first, dict) and first.get("class_name") != "InputLayer":
            fcfg = first.get("config")
            if isinstance(fcfg, dict):
                n = None if first.get("class_name") in _OWN_INPUT_DIM else _as_int(fcfg.get("input_dim"))
                arg = [n] if n is not None else _shape(fcfg.get("input_shape"))
                if arg is not None:
                    start = [None, *arg]
                else:
                    start = _shape(fcfg.get("batch_input_shape")) or _shape(fcfg.get("batch_shape"))
            if start is None:
                start = _shape(cfg.get("build_input_shape"))
                if start is not None:
                    self._input(path, "build_input_shape", start, 1)
            if start is None:
                build = model.get("build_config")
                start = _shape(build.get("input_shape")) if isinstance(build, dict) else None
                if start is not None:
                    self._input(path, "build_config.input_shape", start, 1)
        prev: Shape | None = start if start is not None else (ins[0] if ins else None)
        outs: Tensors | None = [prev]
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                continue
            lpath = (*path, layer_name(layer, i))
            self.inputs_of(layer, lpath)
            outs = self.node(layer, [prev], None, lpath)
            prev = outs[0] if outs else None
        return outs

    def _graph(self, cfg: dict[str, Any], layers: list[Any], path: tuple[str, ...]) -> Tensors | None:
        """A Functional graph: each node's tensors through ``keras_history`` links."""
        produced: dict[tuple[str, int], Tensors | None] = {}

        def resolve(history: Any) -> Shape | None:
            if isinstance(history, list) and len(history) >= 3 and isinstance(history[0], str):
                node, index = _as_int(history[1]), _as_int(history[2])
                outs = produced.get((history[0], node or 0))
                if outs and index is not None and index < len(outs):
                    return outs[index]
            return None

        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                continue
            name = layer_name(layer, i)
            lpath = (*path, name)
            self.inputs_of(layer, lpath)
            nodes = layer.get("inbound_nodes")
            calls = nodes if isinstance(nodes, list) and nodes else [None]
            for k, node in enumerate(calls):
                ins, declared = self._node_inputs(node, resolve)
                outs = self.node(layer, ins, declared, lpath, counted=k > 0)
                produced[(name, k)] = outs
        out_refs = cfg.get("output_layers")
        if isinstance(out_refs, list) and out_refs and isinstance(out_refs[0], str):
            out_refs = [out_refs]
        if isinstance(out_refs, list):
            return [resolve(ref) for ref in out_refs]
        return None

    @staticmethod
    def _node_inputs(node: Any, resolve: Callable[[Any], Shape | None]) -> tuple[Tensors, Tensors | None]:
        """(propagated input shapes, shapes the file stores) of one call of a layer."""
        ins: Tensors = []
        declared: Tensors = []
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            args = list(_keras_tensors(node.get("args")))
            kwargs = node.get("kwargs")
            named: list[Any] = []
            if isinstance(kwargs, dict):
                order = [k for k in ("query", "value", "key") if k in kwargs]
                order += [k for k in kwargs if k not in order]
                for key in order:
                    named.extend(_keras_tensors(kwargs[key]))
            for tensor in args + named:
                inner = tensor.get("config")
                inner = inner if isinstance(inner, dict) else {}
                declared.append(_shape(inner.get("shape")))
                ins.append(resolve(inner.get("keras_history")))
        elif isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
            for ref in node:
                ins.append(resolve(ref))
        if not ins:
            ins = [None]
        merged = [p if p is not None else d for p, d in zip(ins, declared)] if declared else ins
        return merged, (declared or None)

    # -- one layer in a model
    def node(
        self,
        layer: dict[str, Any],
        ins: Tensors,
        declared: Tensors | None,
        path: tuple[str, ...],
        counted: bool = False,
    ) -> Tensors | None:
        cn = layer.get("class_name")
        cfg = layer.get("config")
        if not isinstance(cn, str) or not isinstance(cfg, dict):
            return None
        if cn == "InputLayer":
            return [_input_layer_shape(cfg) or (ins[0] if ins else None)]
        if isinstance(cfg.get("layers"), list):
            if counted:  # a shared sub-model: its layers hold their weights once
                return self._quiet(layer, ins, path)
            return self.model(layer, ins, path)
        count, outs = self.count(layer, ins, declared, path)
        if not counted:
            self.add(count, path, _itemsize(cfg))
        return outs

    def _quiet(self, layer: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> Tensors | None:
        return _Walker().model(layer, ins, path)

    def count(
        self, layer: dict[str, Any], ins: Tensors, declared: Tensors | None, path: tuple[str, ...]
    ) -> tuple[int, Tensors | None]:
        """(parameters, outputs) of a layer dict, the largest over its candidate input shapes."""
        cn = layer.get("class_name")
        cfg = layer.get("config")
        if not isinstance(cn, str) or not isinstance(cfg, dict):
            return 0, None
        if isinstance(cfg.get("layers"), list):  # a model nested in a wrapper or cell
            sub = _Walker()
            sub.work = self.work
            outs = sub.model(layer, ins, path)
            self.work = sub.work
            for item in sub.unknown:
                self.note_unknown(*item)
            return sub.total, outs
        candidates: list[Tensors] = [ins, *_build_shapes(layer.get("build_config"))]
        if declared is not None:
            candidates.append(declared)
        if self.work >= _package._BUDGET:  # past the budget: one evaluation, on the largest of each dimension
            candidates = [_merge(candidates)]
        best, outs = 0, None
        seen: list[Tensors] = []
        for cand in candidates:
            if cand in seen:
                continue
            seen.append(cand)
            self.work += 1
            n, o = self.leaf(cn, cfg, cand, path)
            best = max(best, n)
            if outs is None:
                outs = o
        return best, outs

    def sub(self, layer: Any, ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
        """A layer nested in another's config (a wrapped layer, an RNN cell)."""
        if not isinstance(layer, dict):
            return 0, None
        return self.count(layer, ins, None, (*path, layer_name(layer, "inner")))

    def leaf(
        self, cn: str, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
    ) -> tuple[int, Tensors | None]:
        if not ins:
            ins = [None]
        if cn in WEIGHTLESS:
            shape_fn = _SHAPES.get(cn)
            return 0, (shape_fn(cfg, ins) if shape_fn else [ins[0]])
        formula = FORMULAS.get(cn)
        if formula is not None:
            return formula(self, cfg, ins, path)
        self.note_unknown(path, cn)
        return _guess(cfg, ins), None


def _merge(candidates: list[Tensors]) -> Tensors:
    """The alternatives as one: per input, the dimension-wise maximum of the shapes of the
    first one's rank (every formula grows with its input's dimensions)."""
    merged: Tensors = list(candidates[0])
    for cand in candidates[1:]:
        for j, shp in enumerate(cand[: len(merged)]):
            cur = merged[j]
            if shp is None:
                continue
            if cur is None:
                merged[j] = list(shp)
            elif len(cur) == len(shp):
                merged[j] = [b if a is None else a if b is None else max(a, b) for a, b in zip(cur, shp)]
    return merged


def _input_layer_shape(cfg: dict[str, Any]) -> Shape | None:
    shp = _shape(cfg.get("batch_shape")) or _shape(cfg.get("batch_input_shape"))
    if shp is None:
        inner = _shape(cfg.get("shape")) or _shape(cfg.get("input_shape"))
        shp = None if inner is None else [None, *inner]
    return shp


def _keras_tensors(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            yield value
        elif value.get("class_name") == "__tuple__":
            yield from _keras_tensors(value.get("items"))
    elif isinstance(value, list):
        for item in value:
            yield from _keras_tensors(item)


#: config keys that size a layer's weights, for classes without a formula
SIZE_KEYS = (
    "units",
    "filters",
    "output_dim",
    "input_dim",
    "num_units",
    "projection_dim",
    "vocabulary_size",
    "vocab_size",
    "hidden_dim",
    "hidden_size",
    "intermediate_dim",
    "intermediate_size",
    "embedding_dim",
    "embed_dim",
    "num_embeddings",
)
_OUTPUT_SIZE_KEYS = ("units", "filters", "output_dim", "num_units", "projection_dim")
_INPUT_SIZE_KEYS = ("input_dim", "vocabulary_size", "vocab_size", "num_embeddings")


def _guess(cfg: dict[str, Any], ins: Tensors) -> int:
    """A lower-bound guess for a class with no formula (see the module docstring)."""
    sizes = {k: _as_int(cfg.get(k)) for k in SIZE_KEYS}
    present = {k: v for k, v in sizes.items() if v}
    if not present:
        return 0
    guess = math.prod(present.values())
    outputs = [k for k in present if k in _OUTPUT_SIZE_KEYS]
    if len(present) == 1 and outputs and not any(k in present for k in _INPUT_SIZE_KEYS):
        x = ins[0] if ins else None
        guess *= _dim(x[-1]) if x else 1
    return guess


#: every class name the estimator knows (weightless, a formula, or a container)
KNOWN: frozenset[str] = WEIGHTLESS | frozenset(FORMULAS) | _CONTAINERS | {"InputLayer"}
