"""Replay a Keras model's graph node by node and hand every produced tensor on.

Why not ``keras.Model(model.inputs, [l.output for l in model.layers])``? A layer
called twice has one ``layer.output`` (the first call's); a nested model's inner
layers are not reachable from the outer inputs; raw ``keras.ops`` calls are not
in ``model.layers``; multi-output layers return structures; and that model holds
every activation at once.

Instead, the model is called normally (``model(x, training=False)``) so that
Keras itself does input standardisation, dtype conversion, masking, autocasting
and training-flag propagation. For the duration of the call, each functional
graph's ``_run_through_graph`` (the loop that executes its nodes) is replaced,
on that instance only, by :meth:`Replayer._replay`: the same loop, which also

* reports every node (every call of every operation) to a :class:`Visitor`,
  under a stable path (``encoder/dense_1``, ``shared@1`` for a second call);
* recurses the same way into nested Functional and Sequential models;
* drops each tensor as soon as its last consumer has run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .tfenv import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402 - imported (quietly) by import_keras
from keras.src import tree  # noqa: E402
from keras.src.backend import KerasTensor  # noqa: E402
from keras.src.models.functional import Functional  # noqa: E402
from keras.src.models.sequential import Sequential  # noqa: E402

#: Names of the flattened outputs of layers that return several tensors.
_RNN_STATE_NAMES = {
    "LSTM": ("state_h", "state_c"),
    "GRU": ("state",),
    "SimpleRNN": ("state",),
    "ConvLSTM1D": ("state_h", "state_c"),
    "ConvLSTM2D": ("state_h", "state_c"),
    "ConvLSTM3D": ("state_h", "state_c"),
}


@dataclass(frozen=True)
class CallSite:
    """One call of one operation, as the report will name it."""

    index: int  # position in graph order across the whole (nested) replay
    path: str
    name: str
    class_name: str
    call: int
    params: int
    depth: int
    container: bool
    output_names: tuple[str, ...]


class Visitor(Protocol):
    def enter(self, site: CallSite) -> None:
        """Called before the operation runs (for a nested model: before its layers)."""

    def produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        """Called with the call's flattened outputs, once they exist."""

    # Optional: ``model_output(site, k)`` is called after ``produced`` when output
    # ``k`` of ``site`` is one of the top model's own outputs.


class LayerCallError(Exception):
    """Running one operation failed; carries where, for a useful message."""

    def __init__(self, site: CallSite, calls_done: int, cause: BaseException):
        super().__init__(f"{site.path}: {cause}")
        self.site = site
        self.calls_done = calls_done
        self.cause = cause


def graph_of(model: Any) -> Functional | None:
    """The functional graph that executes ``model``, or None (subclassed models)."""
    if isinstance(model, Sequential):
        return model._functional or None
    if isinstance(model, Functional):
        return model
    return None


def leaf_layers(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(path, layer)`` for every operation that is not a nested model, in graph
    order, recursing into nested models (paths as in the report, first call)."""
    graph = graph_of(model)
    if graph is None:
        return [(prefix + model.name, model)]
    out = []
    for op in graph._operations:
        if type(op).__name__ == "InputLayer":
            continue
        path = prefix + op.name
        if isinstance(op, (Functional, Sequential)) and graph_of(op) is not None:
            out += leaf_layers(op, path + "/")
        else:
            out.append((path, op))
    return out


def weight_paths(model: Any) -> list[tuple[str, str, Any]]:
    """``(layer_path, weight_path, variable)`` for every weight, each variable once.

    Keras's own ``variable.path`` is ambiguous across nested models (an inner and an
    outer ``dense`` both give ``dense/kernel``), and after loading, a wrapper's
    sublayer variables (``Bidirectional``) are not under the wrapper's path. These
    names are ``<layer path in the report>/<variable path relative to the layer>``,
    made unique if they still collide.
    """
    seen: set[int] = set()
    used: set[str] = set()
    out = []

    def add(layer_path: str, rel: str, w: Any) -> None:
        name = f"{layer_path}/{rel}" if layer_path else rel
        unique, k = name, 1
        while unique in used:
            unique, k = f"{name}#{k}", k + 1
        used.add(unique)
        out.append((layer_path, unique, w))

    for path, layer in leaf_layers(model):
        base = getattr(layer, "path", None) or layer.name
        for w in getattr(layer, "weights", ()):
            if id(w) in seen:
                continue
            seen.add(id(w))
            vpath = getattr(w, "path", None) or w.name
            add(path, vpath[len(base) + 1 :] if vpath.startswith(base + "/") else vpath, w)
    for w in model.weights:  # weights owned by no traced layer (subclassed parts)
        if id(w) not in seen:
            seen.add(id(w))
            add("", getattr(w, "path", None) or w.name, w)
    return out


def count_params(op: Any) -> int:
    try:
        return int(op.count_params()) if getattr(op, "built", False) else 0
    except (ValueError, AttributeError):
        return 0


def output_names(op: Any, n: int) -> tuple[str, ...]:
    """Readable names for the ``n`` flattened outputs of ``op``."""
    if n == 1:
        return ("output",)
    cls = type(op).__name__
    if cls == "MultiHeadAttention" and n == 2:
        return ("output", "attention_scores")
    if cls == "Bidirectional":
        inner = _RNN_STATE_NAMES.get(type(getattr(op, "forward_layer", None)).__name__)
        if inner and n == 1 + 2 * len(inner):
            return ("output",) + tuple(f"forward_{s}" for s in inner) + tuple(f"backward_{s}" for s in inner)
    states = _RNN_STATE_NAMES.get(cls)
    if states and n == 1 + len(states):
        return ("output",) + states
    return tuple(f"output_{i}" for i in range(n))


_UNSET: Any = object()


def runs_a_loop(op: Any) -> bool:
    """True for layers whose call is a loop over time steps (RNN layers and the
    Bidirectional wrapper): the ones worth running as a graph."""
    return isinstance(op, (keras.layers.RNN, keras.layers.Bidirectional))


@dataclass
class _Step:
    node: Any
    relpath: str
    input_ids: tuple[int, ...]


@dataclass
class _Plan:
    """What does not change between calls of one graph: order, names, consumers."""

    steps: list[_Step]
    consumers: dict[int, int]
    keep: frozenset[int]  # ids of the graph's outputs: never released


def _plan(graph: Functional) -> _Plan:
    op_order = {id(op): i for i, op in enumerate(graph._operations)}
    nodes = []
    for depth, depth_nodes in graph._nodes_by_depth.items():
        for node in depth_nodes:
            if node.operation is None or node.is_input:
                continue
            op = node.operation
            nodes.append((-depth, op_order.get(id(op), 0), op._inbound_nodes.index(node), node))
    nodes.sort(key=lambda t: t[:3])
    calls: dict[int, int] = {}
    steps = []
    consumers: dict[int, int] = {}
    for _, _, _, node in nodes:
        op = node.operation
        k = calls.get(id(op), 0)
        calls[id(op)] = k + 1
        ids = tuple(dict.fromkeys(id(x) for x in node.input_tensors))
        for i in ids:
            consumers[i] = consumers.get(i, 0) + 1
        steps.append(_Step(node, op.name if k == 0 else f"{op.name}@{k}", ids))
    return _Plan(steps, consumers, frozenset(id(x) for x in graph.outputs))


class Replayer:
    """Runs a model batch by batch, reporting every layer call to a visitor.

    Args:
        model: a built Keras model (Functional, Sequential or subclassed; a
            subclassed model is reported as one opaque call).
        visitor: receives :meth:`Visitor.enter` / :meth:`Visitor.produced` events,
            in graph order, for every call of every operation.
    """

    def __init__(self, model: Any, visitor: Visitor):
        self.model = model
        self.visitor = visitor
        self.graph = graph_of(model)
        self._plans: dict[int, _Plan] = {}
        self._index = 0
        self._calls: dict[int, int] = {}
        self._completed = 0  # layer calls finished in this batch (inputs excluded)
        self._current: CallSite | None = None
        self._graph_calls: dict[int, Any] = {}  # id(op) -> its call as a tf.function, or None

    def __call__(self, inputs: Sequence[Any]) -> Any:
        """Run one batch. ``inputs`` is the flat list of arrays, in ``model.inputs`` order."""
        self._index = 0
        self._calls = {}
        self._completed = 0
        if self.graph is None:
            return self._run_opaque(inputs)
        struct = tree.pack_sequence_as(self.graph._inputs_struct, list(inputs))
        with self._installed(self.graph, prefix="", depth=0, top=True):
            try:
                return self.model(struct, training=False)
            except LayerCallError:
                raise
            except Exception as e:  # noqa: BLE001 - failed before any layer ran
                site = self._current or self._site(self.model, "", self.model.name, 0, 1)
                raise LayerCallError(site, self._completed, e) from e

    # -- internals -------------------------------------------------------------

    def _site(
        self, op: Any, prefix: str, relpath: str, depth: int, n_out: int, container: bool = False
    ) -> CallSite:
        """Name the next call. ``call`` counts calls of this operation object across
        the whole model (so the layers inside a nested model's second call are
        second calls too); ``relpath`` carries the graph-local ``@k`` suffix."""
        call = self._calls.get(id(op), 0)
        self._calls[id(op)] = call + 1
        site = CallSite(
            index=self._index,
            path=f"{prefix}/{relpath}" if prefix else relpath,
            name=op.name,
            class_name=type(op).__name__,
            call=call,
            params=count_params(op),
            depth=depth,
            container=container,
            output_names=output_names(op, n_out),
        )
        self._index += 1
        return site

    def _run_opaque(self, inputs: Sequence[Any]) -> Any:
        n_out = len(tree.flatten(getattr(self.model, "outputs", None) or [None]))
        site = self._site(self.model, "", self.model.name, 0, n_out)
        self.visitor.enter(site)
        arg = inputs[0] if len(inputs) == 1 else list(inputs)
        try:
            out = self.model(arg, training=False)
        except Exception as e:  # noqa: BLE001
            raise LayerCallError(site, 0, e) from e
        flat = tree.flatten(out)
        if len(flat) != len(site.output_names):
            site = CallSite(**{**site.__dict__, "output_names": output_names(self.model, len(flat))})
        self.visitor.produced(site, flat)
        for k in range(len(flat)):
            self._model_output(site, k)
        return out

    def _model_output(self, site: CallSite, k: int) -> None:
        mark = getattr(self.visitor, "model_output", None)
        if mark is not None:
            mark(site, k)

    def _call(self, op: Any, operation_fn: Callable[[Any], Any], args: Any, kwargs: dict[str, Any]) -> Any:
        """Call one (non-container) operation as Keras would.

        A layer with a time loop (:func:`runs_a_loop`) has its ``call`` run as a
        ``tf.function`` (traced once per input signature, kept for every batch):
        Keras's RNN loop is a ``tf.while_loop``, which eagerly is a Python loop,
        about 10x slower than in a graph (an LSTM over 100 steps). Only ``call``
        is compiled; ``Layer.__call__`` still runs eagerly around it, so masks,
        the training flag and output masks are handled exactly as before. If the
        compiled call fails, the layer runs eagerly from then on.
        """
        compiled = self._graph_calls.get(id(op), _UNSET)
        if compiled is _UNSET:
            compiled = self._graph_calls[id(op)] = (
                tf.function(op.call, reduce_retracing=True) if runs_a_loop(op) else None
            )
        if compiled is not None:
            previous = op.__dict__.get("call", _UNSET)
            op.__dict__["call"] = compiled  # Layer.__call__ looks ``self.call`` up on each call
            try:
                return operation_fn(op)(*args, **kwargs)
            except Exception:  # noqa: BLE001 - not traceable (Python side effects...): as Keras does
                self._graph_calls[id(op)] = None
            finally:
                if previous is _UNSET:
                    op.__dict__.pop("call", None)
                else:
                    op.__dict__["call"] = previous
        return operation_fn(op)(*args, **kwargs)

    def _installed(self, graph: Functional, *, prefix: str, depth: int, top: bool) -> _Installed:
        return _Installed(self, graph, prefix, depth, top)

    def _replay(
        self,
        graph: Functional,
        inputs: Any,
        operation_fn: Callable[[Any], Any],
        prefix: str,
        depth: int,
        top: bool,
    ) -> Any:
        plan = self._plans.get(id(graph))
        if plan is None:
            plan = self._plans[id(graph)] = _plan(graph)
        flat_inputs = tree.flatten(inputs)
        tensors: dict[int, Any] = {}
        for x, y in zip(graph.inputs, flat_inputs):
            tensors[id(x)] = y
            if top:
                op = x._keras_history.operation
                site = self._site(op, prefix, op.name, depth, 1)
                self.visitor.enter(site)
                self.visitor.produced(site, [y])
        remaining = dict(plan.consumers)
        for step in plan.steps:
            node = step.node
            if any(id(x) not in tensors for x in node.input_tensors):
                continue  # not computable from these inputs (as in Keras)
            op = node.operation
            sub = graph_of(op) if isinstance(op, (Functional, Sequential)) else None
            site = self._site(op, prefix, step.relpath, depth, len(node.outputs), container=sub is not None)
            self._current = site
            self.visitor.enter(site)
            args, kwargs = node.arguments.fill_in(tensors)
            try:
                if sub is not None:
                    with self._installed(sub, prefix=site.path, depth=depth + 1, top=False):
                        outputs = operation_fn(op)(*args, **kwargs)
                else:
                    outputs = self._call(op, operation_fn, args, kwargs)
            except LayerCallError:
                raise
            except Exception as e:  # noqa: BLE001 - re-raised with the failing layer
                raise LayerCallError(site, self._completed, e) from e
            flat = tree.flatten(outputs)
            self._completed += 1
            self.visitor.produced(site, flat)
            if top:
                for k, x in enumerate(node.outputs):
                    if id(x) in plan.keep:
                        self._model_output(site, k)
            for x, y in zip(node.outputs, flat):
                if remaining.get(id(x)) or id(x) in plan.keep:
                    tensors[id(x)] = y
            del outputs, flat, args, kwargs
            for i in step.input_ids:
                remaining[i] -= 1
                if remaining[i] == 0 and i not in plan.keep:
                    tensors.pop(i, None)
        missing = [x for x in graph.outputs if id(x) not in tensors]
        if missing:
            raise ValueError(f"Output {missing[0].name!r} is not connected to the inputs")
        return tree.pack_sequence_as(graph._outputs_struct, [tensors[id(x)] for x in graph.outputs])


class _Installed:
    """Context manager: route ``graph._run_through_graph`` through the replayer."""

    def __init__(self, replayer: Replayer, graph: Functional, prefix: str, depth: int, top: bool):
        self.replayer, self.graph = replayer, graph
        self.prefix, self.depth, self.top = prefix, depth, top
        self.previous: Any = None

    def __enter__(self) -> None:
        graph, original = self.graph, type(self.graph)._run_through_graph
        r, prefix, depth, top = self.replayer, self.prefix, self.depth, self.top

        def run(inputs: Any, operation_fn: Callable[[Any], Any] = lambda op: op, call_fn: Any = None) -> Any:
            if call_fn is not None or any(isinstance(x, KerasTensor) for x in tree.flatten(inputs)):
                return original(graph, inputs, operation_fn=operation_fn, call_fn=call_fn)
            return r._replay(graph, inputs, operation_fn, prefix, depth, top)

        self.previous = graph.__dict__.get("_run_through_graph")
        graph.__dict__["_run_through_graph"] = run

    def __exit__(self, *exc: object) -> None:
        if self.previous is None:
            self.graph.__dict__.pop("_run_through_graph", None)
        else:
            self.graph.__dict__["_run_through_graph"] = self.previous


def tensor_dtype(t: Any) -> str:
    """Keras's standard name of a backend tensor's dtype (``float32``, ``string``...)."""
    return str(keras.backend.standardize_dtype(t.dtype))


def to_numpy(t: Any) -> np.ndarray:
    """A backend tensor as a numpy array (string tensors as object arrays of bytes).

    An eager tensor comes back as a read-only view of its own buffer, not a copy
    (Keras's ``convert_to_numpy`` copies: for ResNet50 at batch 16 that is 2.4 GB
    of copies per batch). The view keeps the buffer alive; nothing may write to it.
    """
    if isinstance(t, tf.Tensor):
        return np.asarray(t)
    return np.asarray(keras.ops.convert_to_numpy(t))
