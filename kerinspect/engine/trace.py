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

Every Keras internal this relies on goes through :mod:`kerinspect.engine.keras_adapter`.
After each call the replayer checks that the hook ran and saw the graph's layer
calls; a Keras that no longer calls it fails loudly (exit 70), never as a
report with no layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kerinspect.engine import keras_adapter as ka
from kerinspect.engine.events import CallSite, Visitor
from kerinspect.engine.other_attention import (
    dense_capture,
    output_operations,
    softmax_capture,
    softmax_observed,
)
from kerinspect.engine.tensors import to_numpy
from kerinspect.engine.tfenv import import_keras
from kerinspect.spec import RunSpec

keras = import_keras()
import tensorflow as tf  # noqa: E402 - imported (quietly) by import_keras

#: Names of the flattened outputs of layers that return several tensors.
_RNN_STATE_NAMES = {
    "LSTM": ("state_h", "state_c"),
    "GRU": ("state",),
    "SimpleRNN": ("state",),
    "ConvLSTM1D": ("state_h", "state_c"),
    "ConvLSTM2D": ("state_h", "state_c"),
    "ConvLSTM3D": ("state_h", "state_c"),
}


class LayerCallError(Exception):
    """Running one operation failed; carries where, for a useful message."""

    def __init__(self, site: CallSite, calls_done: int, cause: BaseException):
        super().__init__(f"{site.path}: {cause}")
        self.site = site
        self.calls_done = calls_done
        self.cause = cause


class IdOutOfRange(Exception):
    """An ``Embedding`` was about to read an id outside ``[0, input_dim)``: CPU kernels
    fail with an unreadable message, GPU ones return zeros. ``ids`` is what it read."""

    def __init__(self, path: str, layer: Any, ids: np.ndarray, value: int, row: int):
        super().__init__(f"Embedding {path!r} reads id {value}, out of range [0, {layer.input_dim})")
        self.path, self.input_dim, self.ids, self.value, self.row = (
            path,
            int(layer.input_dim),
            ids,
            value,
            row,
        )


def check_embedding_ids(path: str, layer: Any, ids: Any) -> None:
    """Raise :class:`IdOutOfRange` when the (eager) ids an ``Embedding`` is called on
    hold one outside ``[0, input_dim)``; the first such sample (axis 0) is named."""
    try:
        a = to_numpy(ids)
    except Exception:  # noqa: BLE001 - sparse or ragged ids: Keras checks those itself
        return
    if a.size == 0 or a.dtype.kind not in "iuf":
        return
    high = int(layer.input_dim)
    bad = (a < 0) | (a >= high)
    if a.dtype.kind == "f":
        bad |= ~np.isfinite(a)
    if not bad.any():
        return
    where = np.argwhere(bad.reshape(a.shape[0], -1) if a.ndim else bad.reshape(1, 1))[0]
    row = int(where[0])
    value = a.reshape(max(a.shape[0], 1) if a.ndim else 1, -1)[row, int(where[1])]
    raise IdOutOfRange(path, layer, a, int(value) if np.isfinite(value) else value, row)


def graph_of(model: Any) -> Any | None:
    """The functional graph that executes ``model``, or None (subclassed models)."""
    return ka.graph_of(model)


def leaf_layers(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(path, layer)`` for every operation that is not a nested model, in graph
    order, recursing into nested models (paths as in the report, first call)."""
    graph = graph_of(model)
    if graph is None:
        return [(prefix + model.name, model)]
    out = []
    for op in ka.graph_operations(graph):
        if type(op).__name__ == "InputLayer":
            continue
        path = prefix + op.name
        if ka.is_graph_model(op) and graph_of(op) is not None:
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
    if ka.is_attention_layer(op) and n == 2:
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
    """True for layers whose call is a loop over time steps (RNN layers): the ones
    worth running as a graph. (A ``Bidirectional`` wrapper runs eagerly: its forward
    and backward RNNs are calls of their own, each run as a graph.)"""
    return isinstance(op, keras.layers.RNN)


@dataclass
class _Step:
    node: Any
    op: Any
    relpath: str
    inputs: list[Any]  # the node's symbolic input tensors
    outputs: list[Any]  # the node's symbolic output tensors
    input_ids: tuple[int, ...]


@dataclass
class _Plan:
    """What does not change between calls of one graph: order, names, consumers."""

    steps: list[_Step]
    consumers: dict[int, int]
    keep: frozenset[int]  # ids of the graph's outputs: never released


def _plan(graph: Any) -> _Plan:
    """The graph's nodes in execution order: deepest first, as Keras's own loop runs
    them; within a depth, by the operation's place in the graph and then its call
    index (the order ``layer@k`` names follow)."""
    op_order = {id(op): i for i, op in enumerate(ka.graph_operations(graph))}
    nodes = []
    for depth, node in ka.graph_nodes(graph):
        op = ka.node_operation(node)
        if op is None or ka.is_input_node(node):
            continue
        nodes.append((-depth, op_order.get(id(op), 0), ka.operation_nodes(op).index(node), node, op))
    nodes.sort(key=lambda t: t[:3])
    calls: dict[int, int] = {}
    steps = []
    consumers: dict[int, int] = {}
    for _, _, _, node, op in nodes:
        k = calls.get(id(op), 0)
        calls[id(op)] = k + 1
        inputs = ka.node_input_tensors(node)
        ids = tuple(dict.fromkeys(id(x) for x in inputs))
        for i in ids:
            consumers[i] = consumers.get(i, 0) + 1
        relpath = op.name if k == 0 else f"{op.name}@{k}"
        steps.append(_Step(node, op, relpath, inputs, ka.node_outputs(node), ids))
    return _Plan(steps, consumers, frozenset(id(x) for x in graph.outputs))


def call_order(graph: Any) -> list[tuple[Any, Any, str]]:
    """``(node, operation, graph-local path)`` for every node the replay runs, in
    the order it runs them (what the drift tests compare with Keras's own loop)."""
    return [(s.node, s.op, s.relpath) for s in _plan(graph).steps]


class _Frame:
    """One layer call in progress: the parent of the calls made inside it."""

    __slots__ = (
        "site",
        "op",
        "entered",
        "children",
        "seen",
        "counts",
        "capture",
        "hidden",
        "attends",
        "mask",
    )

    def __init__(self, site: CallSite, op: Any, *, entered: bool = False, hidden: bool = False):
        self.site = site
        self.op = op
        self.entered = entered  # its own __call__ has started (later calls of op are inner calls)
        self.children = 0  # inner calls reported under it
        self.seen: set[int] = set()  # ids of sub-layers called (eagerly or in a graph)
        self.counts: dict[int, int] = {}  # calls per sub-layer within this call: ``@k``
        self.capture: Any = None  # attention capture of this call
        self.hidden = hidden  # deeper than ``max_depth``: nothing under it is reported
        self.attends = ka.is_attention_layer(op) or ka.is_dense_attention(op)  # captured on its own
        self.mask: Any = None  # a Softmax layer's mask argument (the keys it may weigh)


class Replayer:
    """Runs a model batch by batch, reporting every layer call to a visitor.

    Two mechanisms, both restored when each batch ends:

    * functional graphs (the top model, nested Functional/Sequential models) run
      node by node through :meth:`_replay` (``Functional._run_through_graph``);
    * every other layer call at any depth (inside a custom layer's ``call``, a
      subclassed model, a wrapper, an attention layer's projections) is seen by a
      hook on ``Layer.__call__`` (:func:`~kerinspect.engine.keras_adapter.layer_call_hook`)
      and reported under its parent's path (``block/att``, ``block/att/query``,
      ``block/dense@1`` for a second call within one parent call). Calls inside a
      ``tf.function`` trace (an RNN's compiled loop) are not rows: their values are
      graph tensors. Sub-layers a call built but did not call are reported as such.

    Attention layers have their probabilities captured
    (:class:`~kerinspect.engine.attention.AttentionProbe`) and reported as one more
    output, ``attention_scores``, unless the layer already returns them.

    Args:
        model: a built Keras model (Functional, Sequential or subclassed).
        visitor: receives the :class:`~kerinspect.engine.events.Visitor` events, in
            call order, for every call of every operation.
        run: the run's :class:`~kerinspect.spec.RunSpec` (default: its defaults), whole:
            the replay reads the options it needs from it (``depth``: report calls nested
            at most this many levels, 1 the top model's own layers, None every level). A
            new run option that the replay needs is read here as ``self.run.<field>``:
            nothing between the CLI and this class has to pass it along.
        attention: capture attention probabilities.
        watch: called as ``watch(site, layer, args)`` before every reported layer
            call runs (the input-range probe uses it).
        traced: the replay runs inside a ``tf.function`` trace (the compiled engine,
            :mod:`kerinspect.engine.compiled`): the visitor sees graph tensors, every
            call in the trace's own graph is reported as in an eager run, and calls in
            a nested graph (an RNN's loop body, a ``tf.function`` of the model's own)
            are not rows, as in an eager run.
    """

    def __init__(
        self,
        model: Any,
        visitor: Visitor,
        run: RunSpec | None = None,
        *,
        attention: bool = True,
        watch: Callable[[CallSite, Any, tuple[Any, ...]], None] | None = None,
        traced: bool = False,
    ):
        self.model = model
        self.traced = traced
        self._trace_graph: Any = None  # the FuncGraph of the trace (``traced`` only)
        self._in_loop = 0  # > 0 (traced): inside an RNN's call, whose steps are not rows
        #: traced: layer calls made in a graph nested in the trace (``ops.cond`` branches,
        #: loop bodies) that an eager run reports as rows; the compiled engine refuses them
        self.unreported: list[str] = []
        self.visitor = visitor
        self.graph = graph_of(model)
        self.run = run if run is not None else RunSpec()
        self.max_depth = self.run.depth
        self.attention = attention
        self.watch = watch
        self._plans: dict[int, _Plan] = {}
        self._index = 0
        self._calls: dict[int, int] = {}
        self._completed = 0  # layer calls finished in this batch (inputs excluded)
        self._current: CallSite | None = None
        self._graph_calls: dict[int, Any] = {}  # id(op) -> its call as a tf.function, or None
        self._stack: list[_Frame] = []
        self._quiet = 0  # > 0: layer calls run unreported (the attention re-run)
        self._graph_seen: dict[int, set[int]] = {}  # id(layer) -> sub-layers its traced graph calls
        self._output_ops = output_operations(model)  # their softmax is the model's answer, not attention

    def __call__(self, inputs: Sequence[Any]) -> Any:
        """Run one batch. ``inputs`` is the flat list of arrays, in ``model.inputs`` order."""
        self._index = 0
        self._calls = {}
        self._completed = 0
        self._stack = []
        self._quiet = 0
        if self.traced:
            self._trace_graph = tf.compat.v1.get_default_graph()
        softmaxes = softmax_observed(self._on_softmax) if self.attention else contextlib.nullcontext()
        with ka.layer_call_hook(self._on_layer_call), softmaxes:
            if self.graph is None:
                return self._run_opaque(inputs)
            installed = self._installed(self.graph, prefix="", depth=0, top=True)
            with installed:
                try:
                    # inside the try: inputs of another structure than the graph's (diff's
                    # model B fed model A's) fail as the model's call, not as a kerinspect bug
                    struct = ka.pack_like(ka.inputs_struct(self.graph), list(inputs))
                    out = self.model(struct, training=self.run.training)
                except (LayerCallError, ka.KerasDriftError):
                    raise
                except Exception as e:  # noqa: BLE001 - failed before any layer ran
                    site = self._current or self._site(self.model, "", self.model.name, 0, 1)
                    raise LayerCallError(site, self._completed, e) from e
        self._check_hook(installed, self.model)
        return out

    # -- internals -------------------------------------------------------------

    def _check_hook(self, installed: _Installed, model: Any) -> None:
        """Fail loudly (:class:`~kerinspect.engine.keras_adapter.KerasDriftError`)
        when ``model`` ran but Keras never called its graph hook. A model whose
        class overrides ``call`` may legitimately not run its graph."""
        if not installed.ran and ka.has_stock_call(model):
            raise ka.hook_did_not_run(model.name)

    def _site(
        self,
        op: Any,
        prefix: str,
        relpath: str,
        depth: int,
        n_out: int,
        container: bool = False,
        *,
        in_graph: bool = True,
        called: bool = True,
    ) -> CallSite:
        """Name the next call. ``call`` counts calls of this operation object across
        the whole model (so the layers inside a nested model's second call are
        second calls too); ``relpath`` carries the local ``@k`` suffix."""
        call = self._calls.get(id(op), 0)
        if called:
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
            parent=prefix or None,
            in_graph=in_graph,
            called=called,
        )
        self._index += 1
        return site

    def _hidden(self, depth: int) -> bool:
        return self.max_depth is not None and depth >= self.max_depth

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """Layer calls made in the block are not reported (a re-run of our own)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _run_opaque(self, inputs: Sequence[Any]) -> Any:
        """A model without a functional graph (subclassed): one row for the model,
        then every layer call made inside its ``call``."""
        n_out = len(ka.flatten(getattr(self.model, "outputs", None) or [None]))
        site = self._site(self.model, "", self.model.name, 0, n_out, in_graph=False)
        self.visitor.enter(site)
        self.visitor.consumed(site, self.model, list(inputs))
        arg = inputs[0] if len(inputs) == 1 else list(inputs)
        frame = _Frame(site, self.model)
        self._stack.append(frame)
        try:
            out = self.model(arg, training=self.run.training)
        except (LayerCallError, ka.KerasDriftError):
            raise
        except Exception as e:  # noqa: BLE001
            raise LayerCallError(self._current or site, self._completed, e) from e
        finally:
            self._stack.pop()
        site, flat = self._finish(frame, ka.flatten(out))
        self.visitor.produced(site, flat)
        for k in range(len(ka.flatten(out))):
            self.visitor.model_output(site, k)
        return out

    def quietly(self) -> contextlib.AbstractContextManager[None]:
        """Context manager: layer calls made in the block (by a visitor, during a
        batch) run as plain Keras calls, unreported (a shadow re-run of a layer)."""
        return self._quietly()

    def _on_layer_call(
        self, original: Callable[..., Any], layer: Any, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        """Every concrete ``Layer.__call__`` of the run comes here."""
        top = self._stack[-1] if self._stack else None
        if top is None or self._quiet:
            return original(layer, *args, **kwargs)
        if top.op is layer and not top.entered:  # the call the replay itself made
            top.entered = True
            return self._run(top, original, layer, args, kwargs)
        if self._nested_graph():  # inside a tf.function trace of its own: graph tensors
            # (traced once, on the first batch: remembered for the next ones)
            self._graph_seen.setdefault(id(top.op), set()).add(id(layer))
            if self.traced and not self._in_loop:  # a cond/loop body: an eager run reports it
                self.unreported.append(f"{top.site.path}/{layer.name}")
            return original(layer, *args, **kwargs)
        top.seen.add(id(layer))
        depth = top.site.depth + 1
        if top.hidden or self._hidden(depth):
            frame = _Frame(top.site, layer, entered=True, hidden=True)
            self._stack.append(frame)
            try:
                return self._run(frame, original, layer, args, kwargs)
            finally:
                self._stack.pop()
        k = top.counts.get(id(layer), 0)
        top.counts[id(layer)] = k + 1
        top.children += 1
        relpath = layer.name if k == 0 else f"{layer.name}@{k}"
        site = self._site(layer, top.site.path, relpath, depth, 1, in_graph=False)
        previous, self._current = self._current, site
        self.visitor.enter(site)
        self.visitor.consumed(site, layer, ka.flatten((args, kwargs)))
        self.visitor.arguments(site, layer, args, kwargs)
        frame = _Frame(site, layer, entered=True)
        self._stack.append(frame)
        try:
            with self._gated():
                outputs = self._run(frame, original, layer, args, kwargs)
        except (LayerCallError, ka.KerasDriftError):
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the innermost failing layer
            raise LayerCallError(site, self._completed, e) from e
        finally:
            self._stack.pop()
        site, flat = self._finish(frame, ka.flatten(outputs))
        self._completed += 1
        self.visitor.produced(site, flat)
        self._current = previous
        return outputs

    def _on_softmax(self, result: Any, axis: int | None) -> None:
        """A ``tf.nn.softmax`` ran (:func:`~kerinspect.engine.other_attention.softmax_observed`):
        its probabilities are the attention of the innermost reported layer call on the
        stack (the first softmax of that call), unless an attention layer captures its
        own, or the call is a re-run of ours or in a graph of its own."""
        if not self._stack or self._quiet or any(f.attends for f in self._stack) or self._nested_graph():
            return
        frame = next((f for f in reversed(self._stack) if not f.hidden), None)
        if frame is None or frame.capture is not None:
            return
        try:
            frame.capture = softmax_capture(result, axis, frame.mask if frame is self._stack[-1] else None)
        except Exception:  # noqa: BLE001 - never break the model's own run
            frame.capture = None

    def _gated(self) -> contextlib.AbstractContextManager[Any]:
        """In a traced run, the operations of the next call wait for the statistics of
        what was produced before it (the visitor's ``gate()``): the graph then holds
        about what an eager run holds at once, not every tensor whose statistics are
        still pending (ResNet50, batch 16: 1.8x the eager peak without it)."""
        ops = self.visitor.gate() if self.traced else None
        return tf.control_dependencies(ops) if ops else contextlib.nullcontext()

    def _nested_graph(self) -> bool:
        """The current call runs in a graph the replay does not report from: any graph
        in an eager run; one nested in the trace (a loop body...) in a traced run."""
        if tf.executing_eagerly():
            return False
        if not self.traced or self._in_loop:
            return True
        return tf.compat.v1.get_default_graph() is not self._trace_graph

    def _run(
        self, frame: _Frame, original: Callable[..., Any], layer: Any, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        """Run one layer call: RNN loops as a graph, attention with its probabilities captured."""
        if self.watch is not None and not frame.hidden:
            self.watch(frame.site, layer, args)
        if args and isinstance(layer, keras.layers.Embedding) and tf.executing_eagerly():
            check_embedding_ids(frame.site.path, layer, args[0])
        if self.attention and not frame.hidden and ka.is_attention_layer(layer):
            from kerinspect.engine.attention import AttentionProbe

            probe = AttentionProbe(layer, self._quietly)
            with ka.attention_core_replaced(layer, probe) as core:
                probe.original = core
                out = self._compiled(original, layer, args, kwargs)
            frame.capture = probe.capture
            return out
        if self.attention and not frame.hidden and ka.is_dense_attention(layer):

            def seen(weights: Any, scores_mask: Any, query_mask: Any) -> None:
                frame.capture = dense_capture(weights, scores_mask, query_mask)

            with ka.dense_attention_observed(layer, seen):
                return self._compiled(original, layer, args, kwargs)
        if self.attention and not frame.hidden and isinstance(layer, keras.layers.Softmax):

            def arguments(given: dict[str, Any]) -> None:
                frame.mask = given.get("mask")

            with ka.call_arguments_observed(layer, arguments):
                return self._compiled(original, layer, args, kwargs)
        return self._compiled(original, layer, args, kwargs)

    def _compiled(self, original: Callable[..., Any], layer: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        """A layer with a time loop (:func:`runs_a_loop`) has its ``call`` run as a
        ``tf.function`` (traced once per input signature, kept for every batch):
        Keras's RNN loop is a ``tf.while_loop``, which eagerly is a Python loop,
        about 10x slower than in a graph (an LSTM over 100 steps). Only ``call``
        is compiled; ``Layer.__call__`` still runs eagerly around it, so masks,
        the training flag and output masks are handled exactly as before. If the
        compiled call fails, the layer runs eagerly from then on.
        """
        if self.traced:  # the whole run is one graph already; a loop's steps are not rows
            if not runs_a_loop(layer):
                return original(layer, *args, **kwargs)
            self._in_loop += 1
            try:
                return original(layer, *args, **kwargs)
            finally:
                self._in_loop -= 1
        compiled = self._graph_calls.get(id(layer), _UNSET)
        if compiled is _UNSET:
            compiled = self._graph_calls[id(layer)] = (
                tf.function(layer.call, reduce_retracing=True) if runs_a_loop(layer) else None
            )
        if compiled is not None:
            try:
                with ka.call_replaced(layer, compiled):
                    return original(layer, *args, **kwargs)
            except Exception:  # noqa: BLE001 - not traceable (Python side effects...): as Keras does
                self._graph_calls[id(layer)] = None
        return original(layer, *args, **kwargs)

    def _finish(self, frame: _Frame, flat: list[Any]) -> tuple[CallSite, list[Any]]:
        """After a call: its site as the report shows it (container when calls were
        reported inside it, output names, the attention probabilities as one more
        output), and its sub-layers that were never called."""
        site = frame.site
        op = frame.op
        names = output_names(op, len(flat))
        capture = frame.capture
        if capture is not None and capture.source == "softmax":
            if frame.mask is not None and len(flat) == 1:  # a Softmax layer zeroed its masked keys
                capture.tensor = flat[0]
            k = next((i for i, t in enumerate(flat) if t is capture.tensor), None)
            if k is not None and id(op) in self._output_ops:
                capture = None  # the model's output distribution (a classifier's): no attention
            elif k is not None:  # the call's own output: named as it is
                capture.output = names[k]
        if capture is not None:
            held = capture.probs if capture.tensor is None else capture.tensor
            if held is not None and not any(t is held for t in flat):
                flat = [*flat, held]
                names = (*output_names(op, len(flat) - 1), capture.output)
            elif held is not None and capture.output == "attention_scores":
                k = next(i for i, t in enumerate(flat) if t is held)
                names = tuple("attention_scores" if i == k else n for i, n in enumerate(names))
            self.visitor.attention(site, capture)
        changes: dict[str, Any] = {}
        if names != site.output_names:
            changes["output_names"] = names
        inner_hidden = self._hidden(site.depth + 1)
        if inner_hidden and site.container:  # its inner rows are not shown: a leaf here
            changes["container"] = False
        elif frame.children and not site.container:
            changes["container"] = True
        if changes:
            site = replace(site, **changes)
        if not frame.hidden and not inner_hidden and not ka.is_graph_model(op):
            seen = frame.seen | self._graph_seen.get(id(op), set())
            for sub in ka.sublayers(op):
                if id(sub) not in seen:
                    self.visitor.enter(
                        self._site(sub, site.path, sub.name, site.depth + 1, 0, in_graph=False, called=False)
                    )
        return site, flat

    def _installed(self, graph: Any, *, prefix: str, depth: int, top: bool) -> _Installed:
        return _Installed(self, graph, prefix, depth, top)

    def _replay(
        self,
        graph: Any,
        inputs: Any,
        operation_fn: Callable[[Any], Any],
        prefix: str,
        depth: int,
        top: bool,
    ) -> Any:
        plan = self._plans.get(id(graph))
        if plan is None:
            plan = self._plans[id(graph)] = _plan(graph)
        flat_inputs = ka.flatten(inputs)
        tensors: dict[int, Any] = {}
        for x, y in zip(graph.inputs, flat_inputs):
            tensors[id(x)] = y
            if top:
                op = ka.producer(x)
                site = self._site(op, prefix, op.name, depth, 1)
                self.visitor.enter(site)
                self.visitor.produced(site, [y])
        remaining = dict(plan.consumers)
        completed = self._completed
        hidden = self._hidden(depth)
        for step in plan.steps:
            if any(id(x) not in tensors for x in step.inputs):
                continue  # not computable from these inputs (as in Keras)
            op = step.op
            sub = graph_of(op) if ka.is_graph_model(op) else None
            site = self._site(op, prefix, step.relpath, depth, len(step.outputs), container=sub is not None)
            self._current = site
            if not hidden:
                self.visitor.enter(site)
                self.visitor.consumed(site, op, [tensors[i] for i in step.input_ids])
            args, kwargs = ka.fill_in_arguments(step.node, tensors)
            if not hidden:
                self.visitor.arguments(site, op, args, kwargs)
            frame = _Frame(site, op, hidden=hidden)
            self._stack.append(frame)
            try:
                if sub is not None and not self._hidden(depth + 1):
                    inner = self._installed(sub, prefix=site.path, depth=depth + 1, top=False)
                    with inner:
                        outputs = operation_fn(op)(*args, **kwargs)
                    self._check_hook(inner, op)
                else:
                    with self._gated():
                        outputs = operation_fn(op)(*args, **kwargs)
            except (LayerCallError, ka.KerasDriftError):
                raise
            except Exception as e:  # noqa: BLE001 - re-raised with the failing layer
                raise LayerCallError(site, self._completed, e) from e
            finally:
                self._stack.pop()
            flat = ka.flatten(outputs)
            self._completed += 1
            if not hidden:
                shown_site, shown = self._finish(frame, flat)
                self.visitor.produced(shown_site, shown)
                if top:
                    for k, x in enumerate(step.outputs):
                        if id(x) in plan.keep:
                            self.visitor.model_output(shown_site, k)
                del shown
            for x, y in zip(step.outputs, flat):
                if remaining.get(id(x)) or id(x) in plan.keep:
                    tensors[id(x)] = y
            del outputs, flat, args, kwargs
            for i in step.input_ids:
                remaining[i] -= 1
                if remaining[i] == 0 and i not in plan.keep:
                    tensors.pop(i, None)
        if plan.steps and self._completed == completed:  # Keras's nodes no longer match its graph
            raise ka.replay_saw_no_layer(prefix or self.model.name, len(plan.steps))
        missing = [x for x in graph.outputs if id(x) not in tensors]
        if missing:
            raise ValueError(f"Output {missing[0].name!r} is not connected to the inputs")
        return ka.pack_like(ka.outputs_struct(graph), [tensors[id(x)] for x in graph.outputs])


class _Installed:
    """Context manager: the graph's node loop runs through the replayer
    (:func:`~kerinspect.engine.keras_adapter.graph_hook`); ``ran`` says whether
    Keras called it."""

    def __init__(self, replayer: Replayer, graph: Any, prefix: str, depth: int, top: bool):
        self.replayer, self.graph = replayer, graph
        self.prefix, self.depth, self.top = prefix, depth, top
        self.ran = False
        self._hook: contextlib.AbstractContextManager[None] | None = None

    def _run(self, inputs: Any, operation_fn: Callable[[Any], Any]) -> Any:
        self.ran = True
        return self.replayer._replay(self.graph, inputs, operation_fn, self.prefix, self.depth, self.top)

    def __enter__(self) -> None:
        self._hook = ka.graph_hook(self.graph, self._run)
        self._hook.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._hook is not None:
            self._hook.__exit__(*exc)
            self._hook = None


def embedding_inputs(model: Any, probes: Sequence[np.ndarray]) -> dict[int, tuple[int, str]]:
    """Which model inputs reach an ``Embedding`` unchanged, at any depth.

    Runs the model once on ``probes`` (one small batch per input, values that are
    valid ids for any Embedding and tell the inputs apart) and watches every layer
    call: an ``Embedding`` whose input equals probe ``i`` (same shape and values)
    reads model input ``i``. Returns ``{i: (smallest input_dim, path of that
    Embedding)}``; empty when the run fails (the real run will say why).
    """
    found: dict[int, tuple[int, str]] = {}
    embedding = keras.layers.Embedding

    def watch(site: CallSite, layer: Any, args: tuple[Any, ...]) -> None:
        if not isinstance(layer, embedding) or not args:
            return
        try:
            seen = to_numpy(args[0])
        except Exception:  # noqa: BLE001 - not a tensor we can read
            return
        for i, p in enumerate(probes):
            if seen.shape == p.shape and np.array_equal(seen.astype(np.float64), p.astype(np.float64)):
                dim = int(layer.input_dim)
                if i not in found or dim < found[i][0]:
                    found[i] = (dim, site.path)

    try:
        Replayer(model, Visitor(), attention=False, watch=watch)(list(probes))
    except Exception:  # noqa: BLE001 - the probe is a hint; the real run reports failures
        return {}
    return found
