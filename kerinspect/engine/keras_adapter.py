"""Every private Keras internal kerinspect relies on, and nothing else.

The engine replays functional graphs node by node; Keras has no public API for
that, so it leans on Keras internals. They are all here, behind named functions,
so that a Keras release that changes one of them breaks one module (and the
drift tests in ``tests/test_keras_drift.py``), not the engine. Nothing outside
this module may touch ``keras.src`` or an underscore attribute of a Keras object.

Tested with Keras 3.15.1 on TensorFlow 2.21 (:data:`TESTED_KERAS`; ``pyproject.toml``
pins the same range). The internals, and what each is used for:

``Functional._run_through_graph(inputs, operation_fn, call_fn)``
    The loop that executes a graph's nodes. :func:`graph_hook` shadows it on one
    graph instance for the duration of a call, so Keras's ``Model.__call__`` does
    input standardisation, masking, autocasting and the training flag while the
    engine runs the nodes (:class:`~kerinspect.engine.trace.Replayer`). If Keras
    stops calling it, the replay sees nothing: the Replayer checks that the hook
    ran and raises :class:`KerasDriftError` (:func:`hook_did_not_run`).
``Functional.call`` / ``Sequential.call`` reaching that loop
    A model whose class keeps Keras's own ``call`` must run its graph through it
    (:func:`has_stock_call`); a class that overrides ``call`` may not.
``Sequential._functional``
    The Functional graph a built Sequential model runs (:func:`graph_of`).
``Function._operations``
    A graph's operations in definition order (:func:`graph_operations`).
``Function._nodes_by_depth``
    A graph's nodes keyed by depth (:func:`graph_nodes`); Keras runs them from the
    deepest depth down.
``Operation._inbound_nodes``
    Every call (node) of an operation, in call order (:func:`operation_nodes`),
    for ``layer@k`` names.
``Function._inputs_struct`` / ``Function._outputs_struct``
    The nesting of a graph's inputs and outputs (:func:`inputs_struct`,
    :func:`outputs_struct`).
``KerasTensor._keras_history.operation``
    The operation that produced a symbolic tensor (:func:`producer`).
``Node.operation``, ``.is_input``, ``.input_tensors``, ``.outputs``, ``.arguments.fill_in``
    One call of one operation, its symbolic inputs and outputs, and its call
    arguments filled in with concrete tensors (:func:`node_operation`,
    :func:`is_input_node`, :func:`node_input_tensors`, :func:`node_outputs`,
    :func:`fill_in_arguments`). ``keras.src.ops.node.Node`` is not public API.
``Layer.__call__`` looking up ``self.call`` on each call
    :func:`call_replaced` shadows a layer's ``call`` on the instance (to run an
    RNN's time loop as a ``tf.function``).
``keras.src.tree``, ``keras.src.backend.KerasTensor``, ``keras.src.models.functional.Functional``,
``keras.src.models.sequential.Sequential``
    Flattening and packing nested structures (:func:`flatten`, :func:`pack_like`),
    telling symbolic from concrete tensors (:func:`is_symbolic`) and graph models
    from others (:func:`is_graph_model`). ``keras.Sequential`` is public, but
    ``Functional`` is not exported, and ``keras.tree`` differs from ``keras.src.tree``
    in no way the engine relies on; both are taken from ``keras.src`` for one source.
``Layer.__call__`` (the one entry point of every layer call)
    :func:`layer_call_hook` shadows it on the ``Layer`` class for the duration of a
    run, so that the engine sees the layers called inside custom layers, subclassed
    models and wrappers (every call at every depth). Restored exactly in ``finally``;
    calls on other threads, symbolic calls and calls inside ``tf.function`` traces
    pass straight through.
``Layer._flatten_layers(include_self=False, recursive=False)``
    A layer's direct sub-layers (:func:`sublayers`), to list those built but never
    called during a call (a fused kernel bypassed them).
``Layer._build_shapes_dict``
    The input shapes a subclassed model was built with, as saved in its
    ``build_config`` (:func:`build_input_shapes`): its input signature.
``MultiHeadAttention._compute_attention`` / ``GroupedQueryAttention._compute_attention``
    The attention core (its docstring names it the method to override):
    :func:`attention_core_replaced` shadows it on one instance to capture the
    probabilities; ``return_attention_scores`` is an argument of the MHA form and the
    ``_return_attention_scores`` attribute of the GQA form (:func:`compute_attention_with_scores`).
``Attention._apply_scores(scores, value, scores_mask, training)``
    The softmax of ``keras.layers.Attention`` and ``AdditiveAttention`` (Luong,
    Bahdanau): it returns ``(output, weights)`` on every call, whatever the caller
    asked for. :func:`dense_attention_observed` shadows it (and ``call``, for the query
    mask) on one instance to see the weights and the mask they were computed under.
``keras.src.legacy.saving.legacy_h5_format.load_model_from_hdf5``
    Loading ``.h5`` files from an open ``h5py.File`` (whose config the legacy
    upgrade rewrites), with ``safe_mode`` (:func:`load_model_from_hdf5`).
``keras.src.legacy.saving.saving_utils.model_from_config`` / ``saving_options``
    Building a model from a Keras 2 config the way that loader does, under
    ``use_legacy_config`` and ``SafeModeScope`` (:func:`model_from_legacy_config`, for
    tf.keras 2.13-2.15 ``.keras`` archives).
``keras.src.layers.__dict__`` as that loader's module objects
    It turns a config's string value that names a function there (``"dot"``) into the
    function (:func:`legacy_function_names`, which :mod:`kerinspect.engine.legacy` shadows).
``keras.src.saving.saving_lib``: ``_model_from_config``, ``H5IOStore``, ``NpzIOStore``,
``DiskIOStore``, ``_load_state``, ``_raise_loading_failure`` and the member names
    The steps of Keras's own ``.keras`` loader (``_load_model_from_fileobj``) but its first,
    reading ``config.json``: :func:`archive_model` builds the config the static scan judged,
    handed over, then loads the archive's weights and assets as Keras does;
    :func:`load_weights` loads an in-memory weights file (a tf.keras 2.x archive's,
    converted) as ``Model.load_weights`` does.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kerinspect.engine.tfenv import import_keras
from kerinspect.errors import ExitCode, KerinspectError

keras = import_keras()
from keras.src import tree  # noqa: E402 - after the quiet import
from keras.src.backend import KerasTensor  # noqa: E402
from keras.src.models.functional import Functional  # noqa: E402
from keras.src.models.sequential import Sequential  # noqa: E402

#: Keras releases this module was tested with: ``lowest <= version < below``.
TESTED_KERAS: tuple[tuple[int, ...], tuple[int, ...]] = ((3, 15, 1), (3, 16))
#: The same range as a pip requirement.
TESTED_KERAS_SPEC = ">=3.15.1,<3.16"


def keras_version() -> str:
    """The installed Keras version, as Keras reports it."""
    return str(keras.__version__)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"3.15.1"`` -> ``(3, 15, 1)`` (suffixes such as ``.dev0`` or ``+local`` ignored)."""
    parts = []
    for p in version.split("+")[0].split(".")[:3]:
        digits = re.match(r"\d+", p)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def in_tested_range(version: str | None = None) -> bool:
    """True when ``version`` (default: the installed Keras) is in :data:`TESTED_KERAS`."""
    v = version_tuple(version or keras_version())
    lowest, below = TESTED_KERAS
    return lowest <= v < below


class KerasDriftError(KerinspectError):
    """The installed Keras does not behave as the internals this module relies on.

    An internal error (exit 70): it is never the user's model's fault.
    """

    exit_code = ExitCode.INTERNAL
    default_rule = "engine-hook"


def _drift(what: str) -> KerasDriftError:
    version = keras_version()
    where = "is outside" if not in_tested_range(version) else "behaves as if it were outside"
    return KerasDriftError(
        f"Internal error: {what}. The installed Keras {version} {where} the range kerinspect "
        f"is tested with (keras{TESTED_KERAS_SPEC}), so no report was made.",
        hint=f"install a tested Keras (pip install 'keras{TESTED_KERAS_SPEC}'); "
        "if that is the one installed, report this as a kerinspect bug",
    )


def hook_did_not_run(model_name: str) -> KerasDriftError:
    """The error for a call of ``model_name`` that never reached :func:`graph_hook`'s loop."""
    return _drift(
        f"the graph hook did not run for model {model_name!r}: Keras ran it without calling "
        "Functional._run_through_graph, which kerinspect replaces to see every layer call"
    )


def replay_saw_no_layer(model_name: str, expected: int) -> KerasDriftError:
    """The error for a replay of ``model_name`` that ran none of its ``expected`` layer calls."""
    return _drift(f"the replay of model {model_name!r} saw no layer call although its graph has {expected}")


# -- structures and tensors -------------------------------------------------------


def flatten(structure: Any) -> list[Any]:
    """The leaves of a nested structure, in Keras's order."""
    return list(tree.flatten(structure))


def pack_like(structure: Any, flat: list[Any]) -> Any:
    """``flat`` nested as ``structure`` is."""
    return tree.pack_sequence_as(structure, flat)


def is_symbolic(x: Any) -> bool:
    """True for a symbolic ``KerasTensor`` (graph construction), not a concrete tensor."""
    return isinstance(x, KerasTensor)


def producer(tensor: Any) -> Any:
    """The operation that produced the symbolic ``tensor`` (an ``InputLayer`` for inputs)."""
    return tensor._keras_history.operation


# -- graphs ---------------------------------------------------------------------


def is_graph_model(op: Any) -> bool:
    """True for a Functional or Sequential model (one that may have a graph)."""
    return isinstance(op, (Functional, Sequential))


def graph_of(model: Any) -> Any | None:
    """The functional graph that executes ``model``, or None (subclassed models,
    an unbuilt Sequential)."""
    if isinstance(model, Sequential):
        return model._functional or None
    if isinstance(model, Functional):
        return model
    return None


def has_stock_call(model: Any) -> bool:
    """True when ``model`` runs its graph with Keras's own ``Functional.call`` or
    ``Sequential.call`` (its class does not override ``call``): then a call of the
    model must reach :func:`graph_hook`'s loop."""
    call = getattr(type(model), "call", None)
    return call is Functional.call or call is Sequential.call


def graph_operations(graph: Any) -> list[Any]:
    """The graph's operations (layers and raw ops, input layers too), in graph order."""
    return list(graph._operations)


def graph_nodes(graph: Any) -> list[tuple[int, Any]]:
    """``(depth, node)`` for every node of the graph, input nodes included (Keras
    runs the deepest depth first; within a depth, in this order)."""
    return [(depth, node) for depth, nodes in graph._nodes_by_depth.items() for node in nodes]


def operation_nodes(op: Any) -> list[Any]:
    """Every node (call) of ``op``, in call order, across all graphs it is part of."""
    return list(op._inbound_nodes)


def inputs_struct(graph: Any) -> Any:
    """The nesting of the graph's inputs (for :func:`pack_like`)."""
    return graph._inputs_struct


def outputs_struct(graph: Any) -> Any:
    """The nesting of the graph's outputs (for :func:`pack_like`)."""
    return graph._outputs_struct


def node_operation(node: Any) -> Any | None:
    """The operation a node calls (None for some input nodes)."""
    return node.operation


def is_input_node(node: Any) -> bool:
    """True for the node of an ``InputLayer`` (nothing to run)."""
    return bool(node.is_input)


def node_input_tensors(node: Any) -> list[Any]:
    """The symbolic tensors a node reads, flattened."""
    return list(node.input_tensors)


def node_outputs(node: Any) -> list[Any]:
    """The symbolic tensors a node produces, flattened."""
    return list(node.outputs)


def fill_in_arguments(node: Any, tensors: dict[int, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The node's call arguments with every symbolic tensor ``x`` replaced by
    ``tensors[id(x)]``: ``(args, kwargs)``."""
    args, kwargs = node.arguments.fill_in(tensors)
    return args, kwargs


# -- hooks ----------------------------------------------------------------------

#: ``replay(inputs, operation_fn)``: runs a graph's nodes on concrete inputs.
ReplayFn = Callable[[Any, Callable[[Any], Any]], Any]


@contextlib.contextmanager
def graph_hook(graph: Any, replay: ReplayFn) -> Iterator[None]:
    """For the duration of the block, ``graph`` runs its nodes with ``replay``.

    Shadows ``_run_through_graph`` on this instance only. Symbolic calls (Keras
    building output specs) and calls with a ``call_fn`` still go through Keras's
    own loop. ``replay`` receives the inputs and Keras's ``operation_fn`` (which
    carries the training flag and call context).
    """
    original = type(graph)._run_through_graph

    def run(inputs: Any, operation_fn: Callable[[Any], Any] = lambda op: op, call_fn: Any = None) -> Any:
        if call_fn is not None or any(is_symbolic(x) for x in flatten(inputs)):
            return original(graph, inputs, operation_fn=operation_fn, call_fn=call_fn)
        return replay(inputs, operation_fn)

    previous = graph.__dict__.get("_run_through_graph")
    graph.__dict__["_run_through_graph"] = run
    try:
        yield
    finally:
        if previous is None:
            graph.__dict__.pop("_run_through_graph", None)
        else:
            graph.__dict__["_run_through_graph"] = previous


@contextlib.contextmanager
def call_replaced(op: Any, call: Callable[..., Any]) -> Iterator[None]:
    """For the duration of the block, ``op.__call__`` runs ``call`` in place of
    ``op.call`` (``Layer.__call__`` looks ``self.call`` up on each call), keeping
    everything ``Layer.__call__`` does around it."""
    missing = object()
    previous = op.__dict__.get("call", missing)
    op.__dict__["call"] = call
    try:
        yield
    finally:
        if previous is missing:
            op.__dict__.pop("call", None)
        else:
            op.__dict__["call"] = previous


def simulate_keras_without_graph_hook() -> None:
    """Test only: make this process's Keras run functional graphs without calling
    the (shadowable) ``_run_through_graph`` of the instance, as a Keras release
    that renamed or inlined the loop would. Used by the worker's test fault
    ``nohook`` and by the tests of the self-check."""
    call = Functional.call

    def call_bypassing_the_instance(self: Any, *args: Any, **kwargs: Any) -> Any:
        hook = self.__dict__.pop("_run_through_graph", None)
        try:
            return call(self, *args, **kwargs)
        finally:
            if hook is not None:
                self.__dict__["_run_through_graph"] = hook

    Functional.call = call_bypassing_the_instance


#: ``hook(original, layer, args, kwargs)``: runs one layer call (by calling
#: ``original(layer, *args, **kwargs)``) and returns its outputs.
LayerCallHook = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


@contextlib.contextmanager
def layer_call_hook(hook: LayerCallHook) -> Iterator[None]:
    """For the duration of the block, every concrete ``Layer.__call__`` made on this
    thread goes through ``hook``.

    The class attribute is replaced (a layer instance cannot shadow ``__call__``:
    Python looks special methods up on the type) and restored exactly in
    ``finally``, also when hooks nest. Calls from other threads and symbolic calls
    (``KerasTensor`` arguments: model construction, ``compute_output_spec``) run the
    original directly.
    """
    layer_cls = keras.layers.Layer
    missing = object()
    previous = layer_cls.__dict__.get("__call__", missing)
    original = layer_cls.__call__
    owner = threading.get_ident()

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != owner or any_symbolic(args, kwargs):
            return original(self, *args, **kwargs)
        return hook(original, self, args, kwargs)

    layer_cls.__call__ = __call__
    try:
        yield
    finally:
        if previous is missing:  # pragma: no cover - Layer always defines __call__
            del layer_cls.__call__
        else:
            layer_cls.__call__ = previous


def any_symbolic(args: Any, kwargs: Any) -> bool:
    """True when a call's arguments hold a symbolic ``KerasTensor``."""
    for x in tree.flatten((args, kwargs)):
        if isinstance(x, KerasTensor):
            return True
    return False


def sublayers(layer: Any) -> list[Any]:
    """The layer's direct sub-layers (tracked attributes), each once."""
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except Exception:  # noqa: BLE001 - a layer that breaks tracking has none we can name
        return []


def all_layers(model: Any) -> list[Any]:
    """Every layer reachable from ``model`` (itself included), recursively."""
    try:
        return list(model._flatten_layers(include_self=True, recursive=True))
    except Exception:  # noqa: BLE001
        return [model]


def build_input_shapes(model: Any) -> dict[str, Any] | None:
    """``{argument: shape}`` the (subclassed) model was built with, from its saved
    ``build_config``; None when it was never built with known shapes."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if not isinstance(shapes, dict) or not shapes:
        return None
    return dict(shapes)


def is_attention_layer(layer: Any) -> bool:
    """True for ``MultiHeadAttention`` (and subclasses, keras-hub's included) and
    ``GroupQueryAttention`` (class ``GroupedQueryAttention``): the layers whose ``_compute_attention`` is captured."""
    layers = keras.layers
    return isinstance(layer, (layers.MultiHeadAttention, layers.GroupQueryAttention))


@contextlib.contextmanager
def attention_core_replaced(layer: Any, core: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """For the duration of the block, ``layer._compute_attention`` is ``core`` on this
    instance only; yields the original bound method. (``MultiHeadAttention.call``
    compares the *class* attribute to choose its causal fast path, so shadowing the
    instance changes nothing the layer decides.)"""
    missing = object()
    previous = layer.__dict__.get("_compute_attention", missing)
    original = layer._compute_attention
    layer.__dict__["_compute_attention"] = core
    try:
        yield original
    finally:
        if previous is missing:
            layer.__dict__.pop("_compute_attention", None)
        else:
            layer.__dict__["_compute_attention"] = previous


def bind_attention_arguments(original: Callable[..., Any], args: Any, kwargs: Any) -> dict[str, Any]:
    """``_compute_attention``'s arguments by name (its signature changed in 3.9 and
    3.15; GQA's has no ``return_attention_scores``)."""
    bound = inspect.signature(original).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def compute_attention_with_scores(layer: Any, original: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """Run ``original`` (a bound ``_compute_attention``) once more, in inference mode,
    asking for the probabilities: ``(output, scores)``."""
    arguments = dict(arguments)
    if "training" in arguments:
        arguments["training"] = False
    if "return_attention_scores" in arguments:
        arguments["return_attention_scores"] = True
        return original(**arguments)
    if hasattr(layer, "_return_attention_scores"):  # GroupedQueryAttention reads an attribute
        before = layer._return_attention_scores
        layer._return_attention_scores = True
        try:
            return original(**arguments)
        finally:
            layer._return_attention_scores = before
    raise TypeError(f"{type(layer).__name__}._compute_attention has no way to ask for scores")


def is_dense_attention(layer: Any) -> bool:
    """True for ``keras.layers.Attention`` and ``AdditiveAttention`` (a subclass): one
    head, probabilities from ``_apply_scores``."""
    return isinstance(layer, keras.layers.Attention)


@contextlib.contextmanager
def dense_attention_observed(layer: Any, seen: Callable[[Any, Any, Any], None]) -> Iterator[None]:
    """For the duration of the block, each call of ``layer`` (an :func:`is_dense_attention`
    layer) reports ``seen(weights, scores_mask, query_mask)``: the probabilities its own
    ``_apply_scores`` returned, the key mask they were computed under (value mask and
    causal mask; None for none) and the query mask of the call (None for none). The
    layer computes exactly what it would: its own results are returned unchanged."""
    call, apply_scores = layer.call, layer._apply_scores
    query_mask: list[Any] = [None]

    def observed_call(*args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(call).bind_partial(*args, **kwargs)
        mask = bound.arguments.get("mask")
        query_mask[0] = mask[0] if isinstance(mask, (list, tuple)) and mask else None
        return call(*args, **kwargs)

    def observed_scores(*args: Any, **kwargs: Any) -> Any:
        result = apply_scores(*args, **kwargs)
        bound = inspect.signature(apply_scores).bind(*args, **kwargs)
        if isinstance(result, tuple) and len(result) == 2:
            seen(result[1], bound.arguments.get("scores_mask"), query_mask[0])
        return result

    missing = object()
    previous = layer.__dict__.get("_apply_scores", missing)
    layer.__dict__["_apply_scores"] = observed_scores
    try:
        with call_replaced(layer, observed_call):
            yield
    finally:
        if previous is missing:
            layer.__dict__.pop("_apply_scores", None)
        else:
            layer.__dict__["_apply_scores"] = previous


@contextlib.contextmanager
def call_arguments_observed(layer: Any, seen: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """For the duration of the block, each call of ``layer`` reports ``seen(arguments)``:
    the arguments its ``call`` receives, by name, once ``Layer.__call__`` injected the
    mask (a ``Softmax`` layer's ``mask``)."""
    call = layer.call

    def observed_call(*args: Any, **kwargs: Any) -> Any:
        seen(dict(inspect.signature(call).bind_partial(*args, **kwargs).arguments))
        return call(*args, **kwargs)

    with call_replaced(layer, observed_call):
        yield


def flash_attention_on(layer: Any) -> bool:
    """True when the layer was configured for flash attention (no scores, ever)."""
    return bool(getattr(layer, "_flash_attention", False))


# -- loading --------------------------------------------------------------------


def load_model_from_hdf5(
    source: Any, *, custom_objects: dict[str, Any] | None = None, safe_mode: bool = True
) -> Any:
    """Load a legacy ``.h5`` model (a path or an open ``h5py.File``), uncompiled."""
    from keras.src.legacy.saving import legacy_h5_format

    return legacy_h5_format.load_model_from_hdf5(
        source, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
    )


def model_from_archive_config(
    config: dict[str, Any], *, custom_objects: dict[str, Any] | None = None, safe_mode: bool = True
) -> Any:
    """A model (weights not loaded) from a Keras 3 archive's config, built as Keras's
    ``load_model`` builds one (shared objects shared, uncompiled, in ``safe_mode``)."""
    import json

    from keras.src.saving import saving_lib as sl

    return sl._model_from_config(json.dumps(config), custom_objects, False, safe_mode)


def archive_model(
    path: str, config: dict[str, Any], *, custom_objects: dict[str, Any] | None = None, safe_mode: bool = True
) -> Any:
    """A Keras 3 ``.keras`` archive's model: built from ``config`` (the config the static
    scan judged, never read again from the archive), uncompiled, in ``safe_mode``; then its
    weights (``model.weights.h5``, read into memory, or ``model.weights.npz``) and assets
    loaded from the archive exactly as Keras's ``load_model`` loads them."""
    import io
    import zipfile

    from keras.src.saving import saving_lib as sl

    model = model_from_archive_config(config, custom_objects=custom_objects, safe_mode=safe_mode)
    with zipfile.ZipFile(path, "r") as zf:
        names = zf.namelist()
        if sl._VARS_FNAME_H5 in names:
            weights = sl.H5IOStore(io.BytesIO(zf.read(sl._VARS_FNAME_H5)), mode="r")
        elif sl._VARS_FNAME_NPZ in names:
            weights = sl.NpzIOStore(sl._VARS_FNAME_NPZ, zf, mode="r")
        else:
            raise ValueError(f"Expected a {sl._VARS_FNAME_H5} or {sl._VARS_FNAME_NPZ} file.")
        assets = sl.DiskIOStore(sl._ASSETS_DIRNAME, archive=zf, mode="r") if len(names) > 3 else None
        try:
            _load_state(model, weights, assets)
        finally:
            weights.close()
            if assets is not None:
                assets.close()
    return model


def load_weights(model: Any, weights: Any) -> None:
    """Load a Keras 3 weights file held in memory (``io.BytesIO``) into a built model,
    as ``Model.load_weights`` loads a ``.weights.h5`` file."""
    from keras.src.saving import saving_lib as sl

    store = sl.H5IOStore(weights, mode="r")
    try:
        _load_state(model, store, None)
    finally:
        store.close()


def _load_state(model: Any, weights: Any, assets: Any) -> None:
    from keras.src.saving import saving_lib as sl

    failed: set[Any] = set()
    errors: dict[Any, Any] = {}
    sl._load_state(
        model,
        weights_store=weights,
        assets_store=assets,
        inner_path="",
        visited_saveables=set(),
        failed_saveables=failed,
        error_msgs=errors,
    )
    if failed:
        sl._raise_loading_failure(errors)


def legacy_function_names() -> frozenset[str]:
    """The names under which Keras's legacy deserializer finds a *function* among the
    objects of ``keras.layers`` (``dot``, ``add``, ``concatenate``...): it turns any string
    value of a layer's config that equals one into that function
    (``legacy.saving.serialization.class_and_config_for_serialized_keras_object``), so
    ``Attention(score_mode="dot")`` reaches the layer as ``score_mode=<function dot>``."""
    from keras.src import layers

    return frozenset(k for k, v in vars(layers).items() if inspect.isfunction(v))


def model_from_legacy_config(
    config: dict[str, Any], *, custom_objects: dict[str, Any] | None = None, safe_mode: bool = True
) -> Any:
    """A model (weights not loaded) from a Keras 2 model config, built exactly as
    :func:`load_model_from_hdf5` builds one: registered custom objects included,
    legacy config handling on, ``safe_mode`` in force."""
    from keras.src.backend.common import global_state
    from keras.src.legacy.saving import saving_options, saving_utils
    from keras.src.saving import object_registration, serialization_lib

    scoped = global_state.get_global_attribute("custom_objects_scope_dict", {})
    objects = {**(custom_objects or {}), **object_registration.GLOBAL_CUSTOM_OBJECTS, **scoped}
    with (
        saving_options.keras_option_scope(use_legacy_config=True),
        serialization_lib.SafeModeScope(safe_mode),
    ):
        return saving_utils.model_from_config(config, custom_objects=objects)
