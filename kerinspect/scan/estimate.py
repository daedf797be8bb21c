"""Parameter and input-size estimates from a model config, without building it.

Owned by the static scan (:mod:`kerinspect.scan.static`): formulas for the layers that
hold nearly all parameters in practice (Dense, convolutions, Embedding, RNNs,
MultiHeadAttention, normalizations), and just enough shape propagation to feed
them in legacy configs. Pure Python; never imports TensorFlow or Keras.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


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


def _shape(value: Any) -> Shape | None:
    if isinstance(value, dict) and value.get("class_name") == "__tuple__":
        value = value.get("items")
    if not isinstance(value, list) or not all(v is None or isinstance(v, (int, float)) for v in value):
        return None
    return [None if v is None else _as_int(v) for v in value]


def _dim(value: int | None) -> int:
    return 1 if value is None else value


def _ints(value: Any, rank: int) -> list[int]:
    if isinstance(value, list):
        return [_dim(_as_int(v)) for v in value] or [1]
    n = _dim(_as_int(value))
    return [n] * rank


#: class name -> (rank, kind) for the convolution formulas.
_CONV_CLASSES: dict[str, tuple[int, str]] = {
    **{f"{p}{r}D": (r, "conv") for p in ("Conv", "Convolution") for r in (1, 2, 3)},
    **{f"{p}{r}DTranspose": (r, "transpose") for p in ("Conv", "Convolution") for r in (1, 2, 3)},
    **{f"DepthwiseConv{r}D": (r, "depthwise") for r in (1, 2)},
    **{f"{p}{r}D": (r, "separable") for p in ("SeparableConv", "SeparableConvolution") for r in (1, 2)},
}
_PASSTHROUGH = frozenset(
    {
        "Activation",
        "ActivityRegularization",
        "AlphaDropout",
        "BatchNormalization",
        "Dropout",
        "ELU",
        "GaussianDropout",
        "GaussianNoise",
        "Identity",
        "LayerNormalization",
        "LeakyReLU",
        "Masking",
        "Normalization",
        "PReLU",
        "ReLU",
        "Rescaling",
        "Softmax",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "UnitNormalization",
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
    }
)


@dataclass(frozen=True)
class Estimate:
    """What a config declares, computed without building anything.

    Attributes:
        params: parameters of every layer with a formula (None: the config is not a model).
        largest: (parameters, layer path) of the biggest layer.
        inputs: (layer path, config key, shape, elements per sample) of each declared input.
    """

    params: int | None
    largest: tuple[int, tuple[str, ...]]
    inputs: tuple[tuple[tuple[str, ...], str, Shape, int], ...]


def estimate(config: dict[str, Any], root_name: str) -> Estimate:
    """Estimate the parameters and input sizes a model config declares.

    Input shapes come from ``build_config`` or the ``__keras_tensor__`` shapes of
    ``inbound_nodes`` (Keras 3), or are propagated through the layers (legacy
    HDF5 configs carry neither). Unknown dimensions count as 1, so the estimate
    is a lower bound where the config is vague.
    """
    walker = _Walker()
    root = (root_name,)
    cfg = config.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        walker.inputs_of(config, root)
        return Estimate(None, walker.largest, tuple(walker.inputs))
    walker.model(config, None, root)
    return Estimate(walker.total, walker.largest, tuple(walker.inputs))


class _Walker:
    def __init__(self) -> None:
        self.total = 0
        self.largest: tuple[int, tuple[str, ...]] = (0, ())
        self.inputs: list[tuple[tuple[str, ...], str, Shape, int]] = []

    def add(self, count: int, path: tuple[str, ...]) -> None:
        self.total += count
        if count > self.largest[0]:
            self.largest = (count, path)

    def inputs_of(self, layer: dict[str, Any], path: tuple[str, ...]) -> None:
        cfg = layer.get("config")
        if not isinstance(cfg, dict):
            return
        for key, skip in (("batch_shape", 1), ("batch_input_shape", 1), ("shape", 0), ("input_shape", 0)):
            shp = _shape(cfg.get(key))
            if shp is not None:
                self.inputs.append((path, key, shp, math.prod(_dim(d) for d in shp[skip:])))

    def model(self, model: dict[str, Any], in_shape: Shape | None, path: tuple[str, ...]) -> Shape | None:
        cfg = model.get("config")
        layers = cfg.get("layers") if isinstance(cfg, dict) else None
        if not isinstance(layers, list):
            return None
        sequential = model.get("class_name") == "Sequential"
        outputs: dict[str, Shape | None] = {}
        prev = in_shape
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                continue
            lpath = (*path, layer_name(layer, i))
            self.inputs_of(layer, lpath)
            shp = self._input_shape(layer, prev if sequential else None, outputs)
            out = self._layer(layer, shp, lpath)
            outputs[layer_name(layer, i)] = out
            prev = out
        return prev

    def _input_shape(
        self, layer: dict[str, Any], prev: Shape | None, outputs: dict[str, Shape | None]
    ) -> Shape | None:
        build = layer.get("build_config")
        if isinstance(build, dict):
            for key in ("input_shape", "query_shape", "shapes_dict"):
                value = build.get(key)
                if isinstance(value, dict):
                    value = next(iter(value.values()), None)
                if isinstance(value, list) and value and isinstance(value[0], (list, dict)):
                    value = value[0]
                shp = _shape(value)
                if shp is not None:
                    return shp
        cfg = layer.get("config")
        if isinstance(cfg, dict):
            for key in ("batch_shape", "batch_input_shape"):
                shp = _shape(cfg.get(key))
                if shp is not None:
                    return shp
        nodes = layer.get("inbound_nodes")
        if isinstance(nodes, list) and nodes:
            first = nodes[0]
            if isinstance(first, dict):
                for arg in _flatten(first.get("args")):
                    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
                        inner = arg.get("config")
                        return _shape(inner.get("shape")) if isinstance(inner, dict) else None
            elif isinstance(first, list) and first and isinstance(first[0], list) and first[0]:
                source = first[0][0]
                if isinstance(source, str):
                    return outputs.get(source)
        return prev

    def _layer(self, layer: dict[str, Any], shp: Shape | None, path: tuple[str, ...]) -> Shape | None:
        cn = layer.get("class_name")
        cfg = layer.get("config")
        if not isinstance(cn, str) or not isinstance(cfg, dict):
            return None
        if isinstance(cfg.get("layers"), list):
            return self.model(layer, shp, path)
        count, out = _layer_params(cn, cfg, shp, layer.get("build_config"))
        if cn in ("TimeDistributed", "Bidirectional"):
            count, out = self._wrapper(cn, cfg, shp, path)
        self.add(count, path)
        return out

    def _wrapper(
        self, cn: str, cfg: dict[str, Any], shp: Shape | None, path: tuple[str, ...]
    ) -> tuple[int, Shape | None]:
        inner = cfg.get("layer")
        if not isinstance(inner, dict) or not isinstance(inner.get("config"), dict):
            return 0, None
        icn, icfg = inner.get("class_name"), inner["config"]
        if not isinstance(icn, str):
            return 0, None
        if cn == "TimeDistributed":
            sub = None if shp is None else [shp[0], *shp[2:]]
            count, out = _layer_params(icn, icfg, sub, inner.get("build_config"))
            if out is not None and shp is not None:
                out = [out[0], shp[1] if len(shp) > 1 else None, *out[1:]]
            return count, out
        count, out = _layer_params(icn, icfg, shp, None)
        backward = cfg.get("backward_layer")
        if (
            isinstance(backward, dict)
            and isinstance(backward.get("config"), dict)
            and isinstance(backward.get("class_name"), str)
        ):
            count += _layer_params(backward["class_name"], backward["config"], shp, None)[0]
        else:
            count *= 2
        if out is not None and cfg.get("merge_mode", "concat") == "concat" and out[-1] is not None:
            out = [*out[:-1], 2 * out[-1]]
        return count, out


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _conv_out(size: int | None, k: int, stride: int, dilation: int, padding: Any) -> int | None:
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    span = dilation * (k - 1) + 1
    return max((size - span) // stride + 1, 0)


def _layer_params(cn: str, cfg: dict[str, Any], shp: Shape | None, build: Any) -> tuple[int, Shape | None]:
    """(parameters, output shape) of one layer; (0, shape-or-None) when not modelled."""
    last = _dim(shp[-1]) if shp else 1
    bias = 1 if cfg.get("use_bias", True) else 0
    channels_first = cfg.get("data_format") == "channels_first"
    if cn == "InputLayer":
        return 0, _shape(cfg.get("batch_shape")) or _shape(cfg.get("batch_input_shape")) or shp
    if cn == "Dense":
        units = _dim(_as_int(cfg.get("units")))
        return last * units + bias * units, (None if shp is None else [*shp[:-1], units])
    if cn == "Embedding":
        n, d = _dim(_as_int(cfg.get("input_dim"))), _dim(_as_int(cfg.get("output_dim")))
        return n * d, (None if shp is None else [*shp, d])
    conv = _CONV_CLASSES.get(cn)
    if conv is not None:
        return _conv_params(conv[1], cfg, shp, conv[0], bias, channels_first)
    if cn in ("SimpleRNN", "LSTM", "GRU", "SimpleRNNCell", "LSTMCell", "GRUCell"):
        units = _dim(_as_int(cfg.get("units")))
        gates = 4 if cn.startswith("LSTM") else 3 if cn.startswith("GRU") else 1
        count = gates * units * (last + units) + bias * gates * units
        if cn.startswith("GRU") and cfg.get("reset_after", True):
            count += bias * gates * units
        if shp is None:
            return count, None
        seq = cfg.get("return_sequences", False)
        return count, ([*shp[:-1], units] if seq else [shp[0], units])
    if cn == "MultiHeadAttention":
        heads = _dim(_as_int(cfg.get("num_heads")))
        kd = _dim(_as_int(cfg.get("key_dim")))
        vd = _dim(_as_int(cfg.get("value_dim"))) if cfg.get("value_dim") is not None else kd
        q = last
        v = k = q
        if isinstance(build, dict):
            qs, vs = _shape(build.get("query_shape")), _shape(build.get("value_shape"))
            ks = _shape(build.get("key_shape")) or vs
            q = _dim(qs[-1]) if qs else q
            v = _dim(vs[-1]) if vs else v
            k = _dim(ks[-1]) if ks else v
        out_shape = _shape(cfg.get("output_shape"))
        out_dim = math.prod(_dim(d) for d in out_shape) if out_shape else q
        count = heads * kd * (q + k) + heads * vd * v + heads * vd * out_dim
        count += bias * (2 * heads * kd + heads * vd + out_dim)
        return count, shp
    if cn == "Normalization":  # mean, variance over the kept axes, and a count; none when given
        if cfg.get("mean") is not None:
            return 0, shp
        axis = cfg.get("axis", -1)
        axes = axis if isinstance(axis, list) else [] if axis is None else [axis]
        kept = math.prod(
            _dim(shp[a]) for a in axes if shp and isinstance(a, int) and -len(shp) <= a < len(shp)
        )
        return 2 * kept + 1, shp
    if cn in ("BatchNormalization", "LayerNormalization"):
        axis = cfg.get("axis", -1)
        axes = axis if isinstance(axis, list) else [axis]
        size = 1
        for a in axes:
            if shp and isinstance(a, int) and -len(shp) <= a < len(shp):
                size *= _dim(shp[a])
        per = int(cfg.get("center", True) is not False) + int(cfg.get("scale", True) is not False)
        return size * (per + (2 if cn == "BatchNormalization" else 0)), shp
    if shp is None:
        return 0, None
    if cn == "Flatten":
        if all(d is not None for d in shp[1:]):
            return 0, [shp[0], math.prod(d for d in shp[1:] if d is not None)]
        return 0, [shp[0], None]
    if cn == "Reshape":
        target = _shape(cfg.get("target_shape"))
        return 0, (None if target is None else [shp[0], *target])
    if cn.startswith("Global") and "Pooling" in cn:
        if cfg.get("keepdims"):
            return 0, shp
        return 0, [shp[0], shp[1] if channels_first else shp[-1]]
    if cn == "Concatenate":
        return 0, None
    if cn in _PASSTHROUGH:
        return 0, shp
    return 0, None


def _conv_params(
    kind: str, cfg: dict[str, Any], shp: Shape | None, rank: int, bias: int, channels_first: bool
) -> tuple[int, Shape | None]:
    kernel = _ints(cfg.get("kernel_size"), rank)
    k = math.prod(kernel)
    filters = _dim(_as_int(cfg.get("filters")))
    in_ch = _dim(shp[1] if channels_first else shp[-1]) if shp else 1
    if kind == "depthwise":
        dm = _dim(_as_int(cfg.get("depth_multiplier", 1)))
        count, out_ch = k * in_ch * dm + bias * in_ch * dm, in_ch * dm
    elif kind == "separable":
        dm = _dim(_as_int(cfg.get("depth_multiplier", 1)))
        count, out_ch = k * in_ch * dm + in_ch * dm * filters + bias * filters, filters
    elif kind == "transpose":
        count, out_ch = k * in_ch * filters + bias * filters, filters
    else:
        groups = max(_dim(_as_int(cfg.get("groups", 1))), 1)
        count, out_ch = k * max(in_ch // groups, 1) * filters + bias * filters, filters
    if shp is None or len(shp) != rank + 2:
        return count, None
    spatial = shp[2:] if channels_first else shp[1:-1]
    if kind == "transpose":
        new: list[int | None] = [None] * rank
    else:
        strides = _ints(cfg.get("strides", 1), rank)
        dilation = _ints(cfg.get("dilation_rate", 1), rank)
        new = [
            _conv_out(
                s,
                kernel[i % len(kernel)],
                max(strides[i % len(strides)], 1),
                dilation[i % len(dilation)],
                cfg.get("padding"),
            )
            for i, s in enumerate(spatial)
        ]
    return count, ([shp[0], out_ch, *new] if channels_first else [shp[0], *new, out_ch])
