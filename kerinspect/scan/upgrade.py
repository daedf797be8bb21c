"""Keras 2 model configs, rewritten as Keras 3 will build them (pure Python).

Keras 3 still reads the HDF5 layout (``model_config`` attribute, ``model_weights``
group) but refuses many configs Keras 2 wrote. This module rewrites those configs
into what Keras 3 accepts, changing nothing the model computes, and records every
change so the report can say how the file was read:

``initializer-dtype``
    Keras 2 saved ``dtype`` in initializer configs (``GlorotUniform(dtype=...)``);
    Keras 3 initializers take no dtype. Dropped: the layer's own dtype governs.
``nested-node-index``
    Keras 2 gave every nested functional/Sequential model a node of its own at
    index 0, so the outer graph refers to its first call as node 1. Keras 3 does
    not, so those references are shifted down by one.
``nested-single-output``
    A Keras 2 model with one output returned a tensor; Keras 3 returns a list when
    ``output_layers`` is a list of one reference (as Keras 2 wrote it), so the next
    layer of an enclosing Sequential received a list. For a model nested in another
    model, ``[[name, 0, 0]]`` becomes ``[name, 0, 0]``.
``rnn-time-major``
    Keras 2 RNN layers saved ``time_major`` (Keras 3 has no such argument and is
    always batch-major). ``time_major: false`` is dropped; ``true`` is kept, so
    Keras refuses it with its own message rather than computing something else.
``sequential-input``
    A Keras 2 Sequential model without an ``InputLayer`` kept its input shape as
    ``batch_input_shape`` on its first layer. Keras 3.15's legacy loader turns
    that into ``input_shape`` *with* the batch axis, adding a spurious dimension;
    an explicit ``InputLayer`` with that ``batch_shape`` is inserted instead. A
    ``batch_input_shape`` on a layer after an explicit ``InputLayer`` (tf.keras 2.4
    wrote both) is dropped: the InputLayer already gives the shape.

``mha-build-shapes``
    tf.keras 2.11+ saved a ``MultiHeadAttention``'s ``query_shape``/``key_shape``/
    ``value_shape`` (the shapes it was built with); Keras 3 takes no such arguments
    and builds the layer from the tensors of its call. Dropped.
``mha-robust-masking``
    tf_keras 2.17+ saves ``softmax_robust_masking``; ``false`` (the default, plain
    softmax masking, which is what Keras 3 computes) is dropped; ``true`` is kept,
    so Keras refuses it.
``depthwise-groups``
    tf.keras 2.x ``DepthwiseConv2D`` (a Conv2D subclass there) saved Conv2D's
    ``groups``, always 1 (Teachable Machine and every MobileNet export); Keras 3's
    DepthwiseConv2D takes none. ``groups: 1`` is dropped; any other value is kept,
    so Keras refuses it.
``dropout-noise-shape``
    Old Keras (and Keras 3 up to 3.9) accepted an integer ``noise_shape`` on
    ``Dropout``; Keras 3.15 wants a sequence. It only shapes the training-time mask,
    and inspection runs in inference mode (where Dropout is the identity), so it
    becomes ``null``. Also done to Keras 3 configs, in every load path
    (:func:`keras3_config_as_built`).
``cudnn-rnn``
    Keras 2's ``CuDNNLSTM``/``CuDNNGRU`` (built-ins, GPU-only) become ``LSTM`` /
    ``GRU(reset_after=True)`` with CuDNN's fixed ``tanh``/``sigmoid`` activations and a
    bias, which compute the same; their weights are converted as Keras 2 converted
    them (:func:`kerinspect.engine.legacy.cudnn_weights`).
``call-tensor-arguments``
    Keras 2 stored a tensor passed to a layer call as an argument other than the
    first as a reference ``[layer_name, node_index, tensor_index]`` in the node's
    kwargs (``mha(x, x)`` saves ``{"value": ["x", 0, 0]}``). Keras 3's legacy
    loader passes that list through as is. Such nodes (and every node of a
    ``TFOpLambda``, which keeps its argument's structure) are rewritten in Keras 3's
    node form, ``{"args": [...], "kwargs": {...}}``, with each reference as a
    ``__keras_tensor__`` naming the same layer, node and tensor. Only exactly
    ``[name, int, int]`` naming a layer of the same graph counts as a reference.
``tf-op-layer``
    tf.keras 2.x recorded raw TensorFlow calls on symbolic tensors (``x + y``,
    ``tf.math.reduce_mean(x, axis=1)``, ``x[:, 0]``) as ``TFOpLambda`` /
    ``SlicingOpLambda`` layers, which Keras 3 does not have. They are loaded as
    :class:`kerinspect.engine.tfop.TFOpLambda` (same class names), computing the same op with
    ``keras.ops`` (the table :data:`kerinspect.engine.tfop.OPS`); an op outside it
    fails the load with one line naming it (``unsupported-tf-op``).
``wrapped-layer-module``
    Keras 3's ``Bidirectional``/``TimeDistributed`` build their wrapped layer with the
    new deserializer, which finds a class by its ``module``; Keras 2 wrote none, so a
    wrapped Keras layer gets ``module: keras.layers`` (a custom one is left as it is).

Only the config is rewritten; weights are read by Keras's own legacy loader. The
static scan (:mod:`kerinspect.scan.model`) rewrites the config here, judges the
rewritten config, and hands that very config to the loader
(:mod:`kerinspect.engine.legacy`), which builds it as it is: what is judged is what is
built.

tf.keras 2.13-2.15 ``.keras`` archives (:func:`kerinspect.engine.legacy.load_keras2_archive`) get two more:

``keras2-archive``
    Their ``config.json`` holds Keras 2 layer configs (``batch_input_shape``...) in the
    new serialization form, naming modules Keras 3 does not have
    (``keras.src.engine.functional``), which Keras 3's archive loader cannot import.
    The config is read as the Keras 2 config it is: ``module`` and ``registered_name``
    are dropped (a registered ``package>Name`` becomes the class name, as Keras 2 wrote
    it in ``.h5`` files), the transforms above apply, and Keras's legacy loader builds
    the model. Its weights file has Keras 3's layout and is read by Keras
    (``Model.load_weights``) from a copy that leaves out the optimizer and metric state.
``windows-weight-paths``
    tf.keras on Windows joined the weights file's group names with ``\\``
    (``layers\\dense/vars/0``); the copy names them with ``/`` (``layers/dense/vars/0``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from kerinspect.scan import allowlist as _allowlist
from kerinspect.scan.policy import TF_OP_CLASSES, TF_OP_ELLIPSIS, graph_layer_names, is_tensor_reference

#: Initializer class names (and their snake_case aliases) whose Keras 2 configs may
#: carry ``dtype``: Keras's own list, from the allowlist generated for the scan.
_INITIALIZERS = _allowlist.CLASSES["keras.initializers"]
_MODEL_CLASSES = frozenset({"Model", "Functional", "Sequential"})
#: What tf_keras writes as the layer name of a constant first argument.
_CONSTANT_VALUE = "_CONSTANT_VALUE"


def is_legacy(keras_version: str | None) -> bool:
    """True for files written by Keras 1/2 (``keras_version`` attr ``2.x``, ``2.2.4-tf``...)."""
    if not keras_version:
        return True  # very old files carry no version
    major = keras_version.strip().split(".", 1)[0]
    return not major.isdigit() or int(major) < 3


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict of a config, each before what it holds: a rewrite of one (its ``config``,
    its ``layers``) is done before its values are visited, as a recursive walk would."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _strip_initializer_dtype(config: Any, changes: list[str]) -> None:
    for node in _objects(config):
        cfg = node.get("config")
        if node.get("class_name") in _INITIALIZERS and isinstance(cfg, dict) and "dtype" in cfg:
            del cfg["dtype"]
            changes.append("initializer-dtype")


def _refs(inbound: Any) -> list[list[Any]]:
    """Every ``[layer_name, node_index, tensor_index, ...]`` reference in an
    ``inbound_nodes`` / ``input_layers`` / ``output_layers`` structure."""
    found: list[list[Any]] = []

    def walk(x: Any) -> None:
        if (
            isinstance(x, list)
            and len(x) >= 3
            and isinstance(x[0], str)
            and isinstance(x[1], int)
            and isinstance(x[2], int)
        ):
            found.append(x)
        elif isinstance(x, list):
            for y in x:
                walk(y)
        elif isinstance(x, dict):  # a node's kwargs: references to other tensors
            for y in x.values():
                walk(y)

    walk(inbound)
    return found


def _shift_nested_node_indices(config: Any, changes: list[str]) -> None:
    """In every functional config, renumber references to nested models whose
    node indices start at 1 (Keras 2's own-node offset)."""
    for node in _objects(config):
        cfg = node.get("config")
        if not (
            isinstance(cfg, dict)
            and isinstance(cfg.get("layers"), list)
            and node.get("class_name") in _MODEL_CLASSES
        ):
            continue
        layers = [lay for lay in cfg["layers"] if isinstance(lay, dict)]
        nested: set[Any] = set()
        for lay in layers:
            if lay.get("class_name") in _MODEL_CLASSES:
                inner = lay.get("config")
                nested |= {lay.get("name"), inner.get("name") if isinstance(inner, dict) else None}
        refs = [r for lay in layers for r in _refs(lay.get("inbound_nodes"))]
        refs += _refs(cfg.get("output_layers")) + _refs(cfg.get("input_layers"))
        for name in nested - {None}:
            mine = [r for r in refs if r[0] == name]
            if mine and min(r[1] for r in mine) >= 1:
                for r in mine:
                    r[1] -= 1
                changes.append("nested-node-index")


_PLAIN_DTYPES = frozenset(
    {
        "float16",
        "float32",
        "float64",
        "bfloat16",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
        "string",
    }
)


def _input_dtype(layer_dtype: Any) -> str:
    """The dtype of an inserted InputLayer: the first layer's, when it is a plain
    dtype; float32 for a mixed-precision policy (``"mixed_float16"`` or a policy
    dict), whose variables, and so the values fed in, are float32."""
    return layer_dtype if isinstance(layer_dtype, str) and layer_dtype in _PLAIN_DTYPES else "float32"


def _explicit_sequential_input(config: Any, changes: list[str]) -> None:
    for node in _objects(config):
        cfg = node.get("config")
        layers = cfg.get("layers") if isinstance(cfg, dict) else None
        if node.get("class_name") == "Sequential" and isinstance(layers, list) and layers:
            _sequential_input(layers, changes)


def _sequential_input(layers: list[Any], changes: list[str]) -> None:
    """One Sequential's layers: its first layer's ``batch_input_shape`` as an InputLayer."""
    first = layers[0]
    first_cfg = first.get("config") if isinstance(first, dict) else None
    if (
        isinstance(first_cfg, dict)
        and first.get("class_name") != "InputLayer"
        and isinstance(first_cfg.get("batch_input_shape"), list)
    ):
        shape = first_cfg.pop("batch_input_shape")
        name = f"{first_cfg.get('name', 'input')}_input"
        layers.insert(
            0,
            {
                "class_name": "InputLayer",
                "config": {
                    "batch_shape": shape,
                    "dtype": _input_dtype(first_cfg.get("dtype")),
                    "name": name,
                },
            },
        )
        changes.append("sequential-input")
    # tf.keras 2.4 (Teachable Machine) wrote both an InputLayer and the first
    # layer's batch_input_shape; Keras 3 would make the latter a second input.
    for lay in layers[1:]:
        lay_cfg = lay.get("config") if isinstance(lay, dict) else None
        if (
            isinstance(layers[0], dict)
            and layers[0].get("class_name") == "InputLayer"
            and isinstance(lay_cfg, dict)
            and "batch_input_shape" in lay_cfg
        ):
            del lay_cfg["batch_input_shape"]
            changes.append("sequential-input")


_RNN_CLASSES = frozenset(
    {"LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "CuDNNLSTM", "CuDNNGRU"}
)


def _drop_time_major(config: Any, changes: list[str]) -> None:
    for node in _objects(config):
        cfg = node.get("config")
        if (
            node.get("class_name") in _RNN_CLASSES
            and isinstance(cfg, dict)
            and cfg.get("time_major") is False
        ):
            del cfg["time_major"]
            changes.append("rnn-time-major")


#: ``class_name -> {config key: value Keras 2 wrote that Keras 3 refuses}`` (dropped
#: when equal), and the change each records.
_DROPPED_WHEN: dict[str, tuple[dict[str, Any], str]] = {
    "DepthwiseConv2D": ({"groups": 1}, "depthwise-groups"),
    "MultiHeadAttention": ({"softmax_robust_masking": False}, "mha-robust-masking"),
}
_MHA_BUILD_SHAPES = ("query_shape", "key_shape", "value_shape")


def _drop_unaccepted_keys(config: Any, changes: list[str]) -> None:
    """``mha-build-shapes`` and ``depthwise-groups``."""
    for node in _objects(config):
        cn, cfg = node.get("class_name"), node.get("config")
        if not isinstance(cfg, dict):
            continue
        if cn == "MultiHeadAttention" and any(k in cfg for k in _MHA_BUILD_SHAPES):
            for key in _MHA_BUILD_SHAPES:
                cfg.pop(key, None)
            changes.append("mha-build-shapes")
        if isinstance(cn, str) and cn in _DROPPED_WHEN:
            dropped, change = _DROPPED_WHEN[cn]
            for key, value in dropped.items():
                if key in cfg and cfg[key] == value and type(cfg[key]) is type(value):
                    del cfg[key]
                    changes.append(change)


def _dropout_noise_shape(config: Any, changes: list[str]) -> None:
    """``dropout-noise-shape``: an integer ``noise_shape`` of a ``Dropout`` becomes ``null``
    (Keras 2 configs, and Keras 3 configs alike: :func:`keras3_config_as_built`)."""
    for node in _objects(config):
        cfg = node.get("config")
        if node.get("class_name") == "Dropout" and isinstance(cfg, dict) and _is_int(cfg.get("noise_shape")):
            cfg["noise_shape"] = None
            changes.append("dropout-noise-shape")


#: CuDNN layer -> (the Keras layer computing the same, the arguments that make it so):
#: CuDNN's fixed activations, a bias, and (GRU) the reset gate applied after the matmul.
_CUDNN_RNN: dict[str, tuple[str, dict[str, Any]]] = {
    "CuDNNLSTM": ("LSTM", {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True}),
    "CuDNNGRU": (
        "GRU",
        {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "reset_after": True},
    ),
}


def _cudnn_rnn(config: Any, changes: list[str]) -> None:
    """``cudnn-rnn``: Keras 2's ``CuDNNLSTM``/``CuDNNGRU`` become the LSTM/GRU that computes
    the same (:data:`_CUDNN_RNN`); the loader converts their weights (CuDNN's bias, twice
    as long; :func:`kerinspect.engine.legacy.cudnn_weights`)."""
    for node in _objects(config):
        cn, cfg = node.get("class_name"), node.get("config")
        if isinstance(cn, str) and cn in _CUDNN_RNN and isinstance(cfg, dict):
            target, fixed = _CUDNN_RNN[cn]
            node["class_name"] = target
            cfg.update(fixed)
            changes.append("cudnn-rnn")


#: Wrappers whose Keras 3 ``from_config`` builds the wrapped layer with the new
#: deserializer, which finds a class by its ``module`` only.
_WRAPPERS = frozenset({"Bidirectional", "TimeDistributed"})


def _wrapped_layer_module(config: Any, changes: list[str]) -> None:
    """``wrapped-layer-module``: a Keras layer wrapped by a Bidirectional/TimeDistributed
    names its module (``keras.layers``), as Keras 3 writes it; Keras 2 wrote none."""
    layers = _allowlist.CLASSES["keras.layers"]
    for node in _objects(config):
        cfg = node.get("config")
        if node.get("class_name") not in _WRAPPERS or not isinstance(cfg, dict):
            continue
        for key in ("layer", "backward_layer"):
            inner = cfg.get(key)
            if isinstance(inner, dict) and inner.get("class_name") in layers and "module" not in inner:
                inner["module"] = "keras.layers"
                changes.append("wrapped-layer-module")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_entry(x: Any) -> bool:
    """A Keras 2 node entry: ``[layer_name, node_index, tensor_index(, kwargs)]``, or
    ``["_CONSTANT_VALUE", -1, value(, kwargs)]`` for a constant first argument."""
    if not (isinstance(x, list) and len(x) in (3, 4) and isinstance(x[0], str) and _is_int(x[1])):
        return False
    if len(x) == 4 and not isinstance(x[3], dict):
        return False
    return x[0] == _CONSTANT_VALUE or _is_int(x[2])


def _keras_tensor(ref: list[Any]) -> dict[str, Any]:
    # Keras 3 replaces the placeholder by the output of ``keras_history``'s node.
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [], "dtype": "float32", "keras_history": [ref[0], ref[1], ref[2]]},
    }


#: How ``x[..., 0]``'s Ellipsis travels in an upgraded TFOp node: Keras's legacy JSON
#: decoder turns ``{"class_name": "__ellipsis__"}`` into a bare Ellipsis, which its
#: node deserializer then refuses; :mod:`kerinspect.engine.tfop` reads it back.
ELLIPSIS = TF_OP_ELLIPSIS


def _with_tensors(value: Any, names: frozenset[str]) -> Any:
    if is_tensor_reference(value, names):
        return _keras_tensor(value)
    if isinstance(value, dict) and value.get("class_name") == "__ellipsis__":
        return ELLIPSIS
    if isinstance(value, list):
        return [_with_tensors(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _with_tensors(v, names) for k, v in value.items()}
    return value


def _has_reference(value: Any, names: frozenset[str]) -> bool:
    if is_tensor_reference(value, names):
        return True
    if isinstance(value, list):
        return any(_has_reference(v, names) for v in value)
    if isinstance(value, dict):
        return any(_has_reference(v, names) for v in value.values())
    return False


def _first_arg(data: Any, entries: list[list[Any]]) -> Any:
    """The first call argument of a structure-preserving node, entries as tensors."""
    if _is_entry(data):
        entries.append(data)
        return data[2] if data[0] == _CONSTANT_VALUE else _keras_tensor(data)
    if isinstance(data, list):
        return [_first_arg(d, entries) for d in data]
    raise ValueError("not a Keras 2 node")


def _convert_node(node: Any, names: frozenset[str], preserve: bool) -> dict[str, Any] | None:
    """A Keras 2 list-form node as Keras 3's ``{"args", "kwargs"}``; None to leave it."""
    if not isinstance(node, list) or not node:
        return None
    single = _is_entry(node)
    if not single and not all(_is_entry(e) for e in node):
        return None
    entries: list[list[Any]] = []
    if preserve or single:
        first = _first_arg(node, entries)
    else:
        entries = list(node)
        tensors = [e[2] if e[0] == _CONSTANT_VALUE else _keras_tensor(e) for e in entries]
        first = tensors[0] if len(tensors) == 1 else tensors
    kwargs: Any = next((e[3] for e in reversed(entries) if len(e) == 4), {})
    if not (preserve or single or _has_reference(kwargs, names)):
        return None
    return {"args": [first], "kwargs": _with_tensors(kwargs, names)}


def _call_tensor_arguments(config: Any, changes: list[str]) -> None:
    """``call-tensor-arguments``: in every functional config, list-form nodes whose
    kwargs hold tensor references (or that belong to a TFOpLambda) in Keras 3 form."""
    for node in _objects(config):
        cfg = node.get("config")
        layers = cfg.get("layers") if isinstance(cfg, dict) else None
        if node.get("class_name") not in _MODEL_CLASSES or not isinstance(layers, list):
            continue
        names = graph_layer_names(layers)
        for lay in layers:
            if not isinstance(lay, dict) or not isinstance(lay.get("inbound_nodes"), list):
                continue
            preserve = lay.get("class_name") in TF_OP_CLASSES
            converted = [_convert_node(n, names, preserve) for n in lay["inbound_nodes"]]
            if any(c is not None for c in converted):
                lay["inbound_nodes"] = [
                    c if c is not None else n for c, n in zip(converted, lay["inbound_nodes"])
                ]
                changes.append("tf-op-layer" if preserve else "call-tensor-arguments")


def tf_op_functions(node: Any) -> list[tuple[str, str]]:
    """``(layer name, op name)`` of every TFOpLambda/SlicingOpLambda in a config."""
    found: list[tuple[str, str]] = []
    for x in _objects(node):
        cfg = x.get("config")
        if x.get("class_name") in TF_OP_CLASSES and isinstance(cfg, dict):
            found.append((str(cfg.get("name", "?")), str(cfg.get("function", "?"))))
    return found


def _nested_single_output(node: Any, changes: list[str], nested: bool = False) -> None:
    if isinstance(node, list):
        for value in node:
            _nested_single_output(value, changes, nested)
        return
    if not isinstance(node, dict):
        return
    cfg = node.get("config")
    if isinstance(cfg, dict) and node.get("class_name") in _MODEL_CLASSES:
        outs = cfg.get("output_layers")
        if nested and isinstance(outs, list) and len(outs) == 1 and _is_entry(outs[0]) and len(outs[0]) == 3:
            cfg["output_layers"] = outs[0]
            changes.append("nested-single-output")
        layers = cfg.get("layers")
        if isinstance(layers, list):
            for lay in layers:
                _nested_single_output(lay, changes, True)
        return
    for value in node.values():
        _nested_single_output(value, changes, nested)


def upgrade_config(config: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Return a Keras-3-loadable copy of a Keras 2 model config and the kinds of
    change made (each listed once, in the order above)."""
    config = copy.deepcopy(config)
    changes: list[str] = []
    _strip_initializer_dtype(config, changes)
    _shift_nested_node_indices(config, changes)
    _nested_single_output(config, changes)
    _drop_time_major(config, changes)
    _explicit_sequential_input(config, changes)
    _drop_unaccepted_keys(config, changes)
    _dropout_noise_shape(config, changes)
    _cudnn_rnn(config, changes)
    _wrapped_layer_module(config, changes)
    _call_tensor_arguments(config, changes)
    return config, tuple(dict.fromkeys(changes))


def keras3_config_as_built(config: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A Keras 3 config (a ``.keras`` archive's, a Keras 3 ``.h5``'s) with the repairs that
    apply to what Keras 3 itself wrote (``dropout-noise-shape``: Keras 3.9 saved an integer
    ``noise_shape`` that Keras 3.15 refuses), and the kinds of change."""
    config = copy.deepcopy(config)
    changes: list[str] = []
    _dropout_noise_shape(config, changes)
    return config, tuple(dict.fromkeys(changes))


def h5_config_as_built(
    config: dict[str, Any], keras_version: str | None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A ``.h5`` file's ``model_config`` as Keras 3 builds it, and the kinds of change:
    a Keras 1/2 file's (``keras_version`` attribute ``2.x``, or none) is upgraded
    (:func:`upgrade_config`); a Keras 3 file's only has its call-tensor references
    rewritten, which Keras 3 would otherwise pass on as plain lists, and the repairs of
    :func:`keras3_config_as_built`."""
    if is_legacy(keras_version):
        return upgrade_config(config)
    upgraded, repaired = keras3_config_as_built(config)
    found = list(repaired)
    _call_tensor_arguments(upgraded, found)
    return upgraded, tuple(dict.fromkeys(found))
