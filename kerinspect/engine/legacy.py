"""Open legacy ``.h5`` models written by tf.keras 1.x/2.x with Keras 3.

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
``rnn-time-major``
    Keras 2 RNN layers saved ``time_major`` (Keras 3 has no such argument and is
    always batch-major). ``time_major: false`` is dropped; ``true`` is kept, so
    Keras refuses it with its own message rather than computing something else.
``sequential-input``
    A Keras 2 Sequential model without an ``InputLayer`` kept its input shape as
    ``batch_input_shape`` on its first layer. Keras 3.15's legacy loader turns
    that into ``input_shape`` *with* the batch axis, adding a spurious dimension;
    an explicit ``InputLayer`` with that ``batch_shape`` is inserted instead.

Only the config is rewritten; weights are read by Keras's own legacy loader.
The static security scan has already run on the original config.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kerinspect.scan import allowlist as _allowlist

#: Initializer class names (and their snake_case aliases) whose Keras 2 configs may
#: carry ``dtype``: Keras's own list, from the allowlist generated for the scan.
_INITIALIZERS = _allowlist.CLASSES["keras.initializers"]
_MODEL_CLASSES = frozenset({"Model", "Functional", "Sequential"})


def is_legacy(keras_version: str | None) -> bool:
    """True for files written by Keras 1/2 (``keras_version`` attr ``2.x``, ``2.2.4-tf``...)."""
    if not keras_version:
        return True  # very old files carry no version
    major = keras_version.strip().split(".", 1)[0]
    return not major.isdigit() or int(major) < 3


def _strip_initializer_dtype(node: Any, changes: list[str]) -> None:
    if isinstance(node, dict):
        cfg = node.get("config")
        if node.get("class_name") in _INITIALIZERS and isinstance(cfg, dict) and "dtype" in cfg:
            del cfg["dtype"]
            changes.append("initializer-dtype")
        for value in node.values():
            _strip_initializer_dtype(value, changes)
    elif isinstance(node, list):
        for value in node:
            _strip_initializer_dtype(value, changes)


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

    walk(inbound)
    return found


def _shift_nested_node_indices(node: Any, changes: list[str]) -> None:
    """In every functional config, renumber references to nested models whose
    node indices start at 1 (Keras 2's own-node offset)."""
    if isinstance(node, list):
        for value in node:
            _shift_nested_node_indices(value, changes)
        return
    if not isinstance(node, dict):
        return
    cfg = node.get("config")
    if (
        isinstance(cfg, dict)
        and isinstance(cfg.get("layers"), list)
        and node.get("class_name") in _MODEL_CLASSES
    ):
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
    for value in node.values():
        _shift_nested_node_indices(value, changes)


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


def _explicit_sequential_input(node: Any, changes: list[str]) -> None:
    if isinstance(node, list):
        for value in node:
            _explicit_sequential_input(value, changes)
        return
    if not isinstance(node, dict):
        return
    cfg = node.get("config")
    layers = cfg.get("layers") if isinstance(cfg, dict) else None
    if node.get("class_name") == "Sequential" and isinstance(layers, list) and layers:
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
    for value in node.values():
        _explicit_sequential_input(value, changes)


_RNN_CLASSES = frozenset(
    {"LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "CuDNNLSTM", "CuDNNGRU"}
)


def _drop_time_major(node: Any, changes: list[str]) -> None:
    if isinstance(node, list):
        for value in node:
            _drop_time_major(value, changes)
        return
    if not isinstance(node, dict):
        return
    cfg = node.get("config")
    if node.get("class_name") in _RNN_CLASSES and isinstance(cfg, dict) and cfg.get("time_major") is False:
        del cfg["time_major"]
        changes.append("rnn-time-major")
    for value in node.values():
        _drop_time_major(value, changes)


def upgrade_config(config: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Return a Keras-3-loadable copy of a Keras 2 model config and the kinds of
    change made (each listed once, in the order above)."""
    config = copy.deepcopy(config)
    changes: list[str] = []
    _strip_initializer_dtype(config, changes)
    _shift_nested_node_indices(config, changes)
    _drop_time_major(config, changes)
    _explicit_sequential_input(config, changes)
    return config, tuple(dict.fromkeys(changes))


def load_legacy_h5(
    path: str, *, safe_mode: bool = True, custom_objects: dict[str, Any] | None = None
) -> tuple[Any, tuple[str, ...]]:
    """Load a ``.h5`` model with Keras 3, upgrading a Keras 2 config first.

    Returns ``(model, changes)``; ``changes`` is empty for files Keras 3 wrote.
    """
    import h5py

    from kerinspect.engine.keras_adapter import load_model_from_hdf5

    with h5py.File(path, "r") as probe:
        raw = probe.attrs.get("model_config")
        version = probe.attrs.get("keras_version")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    if raw is None or not is_legacy(version):
        return load_model_from_hdf5(path, custom_objects=custom_objects, safe_mode=safe_mode), ()
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    upgraded, changes = upgrade_config(json.loads(raw))
    patched = json.dumps(upgraded)

    class _UpgradedFile(h5py.File):
        """The file as Keras sees it: the same HDF5, with the upgraded config."""

        @property
        def attrs(self) -> Any:
            attrs = dict(super().attrs)
            attrs["model_config"] = patched
            return attrs

    with _UpgradedFile(path, "r") as f:
        model = load_model_from_hdf5(f, custom_objects=custom_objects, safe_mode=safe_mode)
    return model, changes
