"""Names in a weights file: Keras variable names by layer class, and the model config's layers.

Pure Python, used by :mod:`kerinspect.scan.weights` to turn ``vars/<i>`` into
``kernel``/``bias``... and to find a layer's config (and class) by its name or
by the key a Keras 3 weights file gives its group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BY_FOLDED",
    "MAX_DEPTH",
    "RNN_LAYERS",
    "VAR_NAMES",
    "Scope",
    "class_of",
    "entry_name",
    "find_chain",
    "fold",
    "inner_config",
    "snake",
    "var_names",
]

#: Nesting of models (and of HDF5 groups) followed at most.
MAX_DEPTH = 64


# -- variable names ---------------------------------------------------------------

#: ``(variable, condition)``: condition None means always present; otherwise
#: ``(config key, default)`` and the variable exists when that config value is truthy.
_Cond = tuple[str, Any] | None
_KERNEL_BIAS: tuple[tuple[str, _Cond], ...] = (("kernel", None), ("bias", ("use_bias", True)))
_RNN_CELL: tuple[tuple[str, _Cond], ...] = (
    ("kernel", None),
    ("recurrent_kernel", None),
    ("bias", ("use_bias", True)),
)

#: Variables of known Keras layer classes, in the order Keras saves them
#: (trainable first, then non-trainable).
VAR_NAMES: dict[str, tuple[tuple[str, _Cond], ...]] = {
    "Dense": _KERNEL_BIAS,
    "EinsumDense": (("kernel", None), ("bias", ("bias_axes", None))),
    "Embedding": (("embeddings", None),),
    **{
        c: _KERNEL_BIAS
        for c in (
            "Conv1D",
            "Conv2D",
            "Conv3D",
            "Conv1DTranspose",
            "Conv2DTranspose",
            "Conv3DTranspose",
            "DepthwiseConv1D",
            "DepthwiseConv2D",
        )
    },
    **{
        c: (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", ("use_bias", True)))
        for c in ("SeparableConv1D", "SeparableConv2D")
    },
    "BatchNormalization": (
        ("gamma", ("scale", True)),
        ("beta", ("center", True)),
        ("moving_mean", None),
        ("moving_variance", None),
    ),
    "LayerNormalization": (("gamma", ("scale", True)), ("beta", ("center", True))),
    "GroupNormalization": (("gamma", ("scale", True)), ("beta", ("center", True))),
    "RMSNormalization": (("scale", None),),
    "Normalization": (("mean", None), ("variance", None), ("count", None)),
    "PReLU": (("alpha", None),),
    "Attention": (("scale", ("use_scale", False)), ("concat_score_weight", ("score_mode", "dot"))),
    "AdditiveAttention": (("scale", ("use_scale", True)),),
    **{c: _RNN_CELL for c in ("LSTMCell", "GRUCell", "SimpleRNNCell", "ConvLSTMCell")},
}

#: Quantized variants (``QuantizedDTypePolicy`` mode ``int8``).
_INT8_NAMES: dict[str, tuple[tuple[str, _Cond], ...]] = {
    "Dense": (("kernel", None), ("bias", ("use_bias", True)), ("kernel_scale", None)),
    "EinsumDense": (("kernel", None), ("bias", ("bias_axes", None)), ("kernel_scale", None)),
    "Embedding": (("embeddings", None), ("embeddings_scale", None)),
}

RNN_LAYERS = {"LSTM": "LSTMCell", "GRU": "GRUCell", "SimpleRNN": "SimpleRNNCell"}
BY_FOLDED = {c.lower(): c for c in VAR_NAMES} | {c.lower(): c for c in RNN_LAYERS}


def fold(name: str) -> str:
    """``batch_normalization_3`` -> ``batchnormalization`` (compare with class names)."""
    return re.sub(r"_\d+$", "", name).replace("_", "").lower()


def _condition(cond: _Cond, config: dict[str, Any]) -> bool:
    if cond is None:
        return True
    key, default = cond
    value = config.get(key, default)
    if key == "score_mode":
        return value == "concat"
    if key == "center" and config.get("rms_scaling"):
        return False  # LayerNormalization(rms_scaling=True) has no beta
    return bool(value)


def var_names(class_name: str | None, layer_config: dict[str, Any] | None, count: int) -> list[str] | None:
    """Names of the ``count`` variables a layer of ``class_name`` saved, in order.

    Uses the layer's config (``use_bias``, ``center``, ``scale``...) when known;
    without it, accepts the full list or the always-present variables when the
    count matches. None when the class is unknown or nothing matches ``count``:
    the caller then keeps ``vars/<i>``.
    """
    if class_name is None or count == 0:
        return None
    spec = VAR_NAMES.get(class_name)
    config = layer_config if isinstance(layer_config, dict) else None
    dtype = config.get("dtype") if config else None
    if isinstance(dtype, dict) and isinstance(dtype.get("config"), dict):
        mode = dtype["config"].get("mode") or dtype["config"].get("quantization_mode")
        if mode is not None:
            spec = _INT8_NAMES.get(class_name) if mode == "int8" else None
    if spec is None:
        return None
    if config is not None:
        names = [name for name, cond in spec if _condition(cond, config)]
        if len(names) == count:
            return names
    every = [name for name, _ in spec]
    required = [name for name, cond in spec if cond is None]
    for names in (every, required):
        if len(names) == count:
            return names
    return None


# -- config -------------------------------------------------------------------------


def class_of(cfg: Any) -> str | None:
    if isinstance(cfg, dict) and isinstance(cfg.get("class_name"), str):
        return str(cfg["class_name"])
    return None


def inner_config(cfg: Any) -> dict[str, Any]:
    """The ``config`` dict of a serialized object ({} when absent or malformed)."""
    if isinstance(cfg, dict) and isinstance(cfg.get("config"), dict):
        return cfg["config"]
    return {}


def layer_entries(cfg: Any) -> list[dict[str, Any]] | None:
    """The serialized layers of a model config, or None when ``cfg`` is not a model."""
    inner = cfg.get("config") if isinstance(cfg, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else inner  # old Sequential: a list
    if not isinstance(layers, list):
        return None
    return [e for e in layers if isinstance(e, dict)]


def entry_name(entry: dict[str, Any]) -> str | None:
    name = inner_config(entry).get("name", entry.get("name"))
    return name if isinstance(name, str) else None


def snake(name: str) -> str:
    """Keras's ``naming.to_snake_case`` (how a Keras 3 file keys a layer's group)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclass
class Scope:
    """The layers of one (possibly nested) model config, by name and by file key."""

    by_name: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # name -> position in the config

    @classmethod
    def of(cls, cfg: Any) -> Scope | None:
        entries = layer_entries(cfg)
        if entries is None:
            return None
        scope = cls()
        used: dict[str, int] = {}
        sequential = class_of(cfg) == "Sequential"
        for entry in entries:
            name = entry_name(entry)
            if name is not None and name not in scope.by_name:
                scope.by_name[name] = entry
                scope.order[name] = len(scope.order)
            klass = class_of(entry) or ""
            if sequential and klass == "InputLayer":
                continue  # Sequential.layers leaves its InputLayer out
            key = snake(klass)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            scope.by_key[key] = entry
        return scope


def find_chain(scope: Scope, name: str, depth: int = 0) -> tuple[list[str], dict[str, Any]] | None:
    """The layer called ``name`` in ``scope`` or, depth first, in its nested models:
    the chain of names leading to it, and its config."""
    if name in scope.by_name:
        return [name], scope.by_name[name]
    if depth >= MAX_DEPTH:
        return None
    for inner_name, entry in scope.by_name.items():
        inner = Scope.of(entry)
        if inner is not None:
            found = find_chain(inner, name, depth + 1)
            if found is not None:
                return [inner_name, *found[0]], found[1]
    return None
