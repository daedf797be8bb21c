"""Parameter formulas per layer family, each mirroring the layer's ``build()`` (see
:mod:`kerinspect.scan.estimate`). A formula that nests layers (wrappers, RNN cells) gets
the walker as its first argument and counts them through it."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from kerinspect.scan.estimate._common import (
    Shape,
    Tensors,
    Walker,
    _as_int,
    _axis,
    _build_shapes,
    _dim,
    _int,
    _ints,
    _prod,
    _shape,
    _untuple,
    layer_name,
)
from kerinspect.scan.estimate.shapes import _channels_first, _spatial, _with_spatial

Formula = Callable[[Walker, dict[str, Any], Tensors, tuple[str, ...]], tuple[int, Tensors | None]]


def _bias(cfg: dict[str, Any]) -> int:
    return 0 if cfg.get("use_bias", True) is False else 1


def _last(x: Shape | None) -> int:
    return _dim(x[-1]) if x else 1


def _lora(cfg: dict[str, Any], rows: int, cols: int) -> int:
    rank = _as_int(cfg.get("lora_rank"))
    return rank * (rows + cols) if rank else 0


def _dense(w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
    x = ins[0]
    units = _int(cfg, "units")
    count = _last(x) * units + _bias(cfg) * units + _lora(cfg, _last(x), units)
    if _quantized(cfg) == "int8":  # Dense._int8_build: one kernel scale per unit
        count += units
    return count, (None if x is None else [[*x[:-1], units]])


def _quantized(cfg: dict[str, Any]) -> str | None:
    """The quantization mode of a layer's ``QuantizedDTypePolicy`` (``int8``...), if any."""
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict) and str(dtype.get("class_name", "")).startswith("Quantized"):
        inner = dtype.get("config")
        return str(inner.get("mode")) if isinstance(inner, dict) else "unknown"
    return None


_EINSUM = (
    (re.compile(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)"), False),
    (re.compile(r"0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)"), True),
    (re.compile(r"([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0"), False),
)


def _einsum_shapes(
    equation: str, bias_axes: Any, x: Shape | None, partial: list[int | None]
) -> tuple[list[int | None], list[int | None] | None, Shape]:
    """(kernel shape, bias shape, output shape) as ``keras.layers.EinsumDense.build`` computes them."""
    text = equation.replace("...", "0")
    found = next(((m, left) for pattern, left in _EINSUM if (m := pattern.match(text))), None)
    if found is None:
        raise ValueError(equation)
    match, left = found
    in_spec, w_spec, out_spec = match.group(1), match.group(2), match.group(3)
    shape: Shape = list(x) if x is not None else [None] * len(in_spec)
    elided = len(shape) - len(in_spec)
    out: Shape = [shape[0], *partial]
    if elided > 0 and left:
        for i in range(1, elided):
            out.insert(1, shape[i])
    elif elided > 0:
        for i in range(len(shape) - elided, len(shape)):
            out.append(shape[i])
    if left:
        in_map = {d: (i + elided) - len(shape) for i, d in enumerate(in_spec)}
        out_map = {d: i + elided for i, d in enumerate(out_spec)}
    else:
        in_map = {d: i for i, d in enumerate(in_spec)}
        out_map = {d: i for i, d in enumerate(out_spec)}
    kernel: list[int | None] = []
    for d in w_spec:
        if d in out_map:
            kernel.append(out[out_map[d]])
        elif d in in_map:
            kernel.append(shape[in_map[d]])
        else:
            raise ValueError(d)
    bias: list[int | None] | None = None
    if isinstance(bias_axes, str) and bias_axes:
        lead = elided if left else 0
        idx = {c: out[i + lead] for i, c in enumerate(out_spec)}
        if any(c not in out_spec for c in bias_axes):
            raise ValueError(bias_axes)
        first = min(out_spec.find(c) for c in bias_axes)
        bias = [idx[c] if c in bias_axes else 1 for c in out_spec[first:]]
    return kernel, bias, out


def _einsum_dense(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    raw = _untuple(cfg.get("output_shape"))
    partial: list[int | None] = (
        [None if v is None else _as_int(v) for v in raw] if isinstance(raw, list) else [_as_int(raw)]
    )
    equation = cfg.get("equation")
    try:
        if not isinstance(equation, str):
            raise ValueError(equation)
        kernel, bias, out = _einsum_shapes(equation, cfg.get("bias_axes"), x, partial)
    except (ValueError, IndexError, KeyError):
        # Keras refuses such a layer before building it; count what the sizes alone declare
        return _last(x) * _prod(partial), None
    count = _prod(kernel) + (_prod(bias) if bias is not None else 0)
    if kernel:
        count += _lora(cfg, _prod(kernel[:-1]), _dim(kernel[-1]))
    return count, [out]


def _embedding(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    n, d = _int(cfg, "input_dim"), _int(cfg, "output_dim")
    count = n * d + _lora(cfg, n, d)
    if cfg.get("class_name") == "ReversibleEmbedding" or "tie_weights" in cfg:
        if cfg.get("tie_weights", True) is False:
            count += n * d
    return count, (None if x is None else [[*x, d]])


def _conv_kind(kind: str, rank: int) -> Formula:
    def formula(
        w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
    ) -> tuple[int, Tensors | None]:
        return _conv(kind, rank, cfg, ins[0])

    return formula


def _conv(kind: str, rank: int, cfg: dict[str, Any], x: Shape | None) -> tuple[int, Tensors | None]:
    kernel = _ints(cfg.get("kernel_size"), rank)
    k = math.prod(kernel)
    bias = _bias(cfg)
    first = _channels_first(cfg)
    filters = _int(cfg, "filters")
    in_ch = _dim(x[1] if first else x[-1]) if x else 1
    dm = _int(cfg, "depth_multiplier")
    if kind == "depthwise":
        count, out_ch = k * in_ch * dm + bias * in_ch * dm, in_ch * dm
    elif kind == "separable":
        count, out_ch = k * in_ch * dm + in_ch * dm * filters + bias * filters, filters
    elif kind == "transpose":
        count, out_ch = k * in_ch * filters + bias * filters, filters
    else:
        groups = max(_int(cfg, "groups"), 1)
        count, out_ch = k * max(in_ch // groups, 1) * filters + bias * filters, filters
    sp = _spatial(cfg, x, rank)
    if sp is None:
        return count, None
    strides = _ints(cfg.get("strides", 1), rank)
    dilation = _ints(cfg.get("dilation_rate", 1), rank)
    padding = cfg.get("padding", "valid")
    new: list[int | None] = []
    for i, s in enumerate(sp[0]):
        if kind == "transpose":
            new.append(
                _transpose_out(s, kernel[i], strides[i], padding, cfg.get("output_padding"), i, dilation[i])
            )
        else:
            new.append(_conv_out(s, kernel[i], strides[i], dilation[i], padding))
    return count, [_with_spatial(x or [], new, sp[1], out_ch)]


def _conv_out(size: int | None, k: int, stride: int, dilation: int, padding: Any) -> int | None:
    if size is None:
        return None
    stride = max(stride, 1)
    if padding in ("same", "causal"):
        return (size - 1) // stride + 1
    return max((size - dilation * (k - 1) - 1) // stride + 1, 0)


def _transpose_out(
    size: int | None, k: int, stride: int, padding: Any, output_padding: Any, i: int, dilation: int
) -> int | None:
    if size is None:
        return None
    op_list = _untuple(output_padding)
    op = (
        None
        if op_list is None
        else (_as_int(op_list[i]) if isinstance(op_list, list) and i < len(op_list) else _as_int(op_list))
    )
    span = (k - 1) * dilation + 1
    if padding == "same":
        return size * stride if op is None else (size - 1) * stride + span % 2 + op
    extra = max(span, stride) - span if op is None else op
    return (size - 1) * stride + span + extra


_CONV_FORMULAS: dict[str, Formula] = {
    **{f"{p}{r}D": _conv_kind("conv", r) for p in ("Conv", "Convolution") for r in (1, 2, 3)},
    **{f"{p}{r}DTranspose": _conv_kind("transpose", r) for p in ("Conv", "Convolution") for r in (1, 2, 3)},
    **{f"DepthwiseConv{r}D": _conv_kind("depthwise", r) for r in (1, 2)},
    **{
        f"{p}{r}D": _conv_kind("separable", r)
        for p in ("SeparableConv", "SeparableConvolution")
        for r in (1, 2)
    },
}


def _conv_lstm(rank: int) -> Formula:
    def formula(
        w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
    ) -> tuple[int, Tensors | None]:
        x = ins[0]
        first = _channels_first(cfg)
        k = math.prod(_ints(cfg.get("kernel_size"), rank))
        f = _int(cfg, "filters")
        in_ch = _dim(x[2] if first else x[-1]) if x is not None and len(x) == rank + 3 else (_last(x))
        count = k * in_ch * 4 * f + k * f * 4 * f + _bias(cfg) * 4 * f
        if x is None or len(x) != rank + 3:
            return count, None
        step = [x[0], *x[2:]]
        _, conv_out = _conv("conv", rank, cfg, step)
        if not conv_out or conv_out[0] is None:
            return count, None
        state = conv_out[0]
        out = [x[0], x[1], *state[1:]] if cfg.get("return_sequences") else state
        return count, ([out, state, state] if cfg.get("return_state") else [out])

    return formula


#: (gates, states) of the built-in recurrent cells
_CELLS = {"SimpleRNNCell": (1, 1), "LSTMCell": (4, 2), "GRUCell": (3, 1)}
_RNN_LAYERS = {"SimpleRNN": "SimpleRNNCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}


def _cell_params(cn: str, cfg: dict[str, Any], in_dim: int) -> tuple[int, int, int]:
    """(parameters, output size, number of states) of a built-in cell."""
    gates, states = _CELLS[cn]
    units = _int(cfg, "units")
    bias = _bias(cfg)
    count = gates * units * (in_dim + units) + bias * gates * units
    if cn == "GRUCell" and cfg.get("reset_after", True) is not False:
        count += bias * gates * units
    return count, units, states


def _cell(w: Walker, cell: Any, in_dim: int, path: tuple[str, ...]) -> tuple[int, int | None, int]:
    """(parameters, output size, states) of any cell config: built-in, stacked, or unknown."""
    if isinstance(cell, list):
        cell = {"class_name": "StackedRNNCells", "config": {"cells": cell}}
    if not isinstance(cell, dict) or not isinstance(cell.get("config"), dict):
        return 0, None, 1
    cn, cfg = cell.get("class_name"), cell["config"]
    cpath = (*path, layer_name(cell, "cell"))
    if cn in _CELLS:
        best = _cell_params(str(cn), cfg, in_dim)
        for cand in _build_shapes(cell.get("build_config")):  # Keras builds a cell from it too
            shp = cand[0]
            if shp:
                alt = _cell_params(str(cn), cfg, _last(shp))
                best = max(best, alt)
        return best
    if cn == "StackedRNNCells":
        total, size, states = 0, in_dim, 0
        for sub in cfg.get("cells") or []:
            count, out, n = _cell(w, sub, size, cpath)
            total += count
            size = _dim(out)
            states += n
        return total, size, max(states, 1)
    count, _ = w.count(cell, [[None, in_dim]], None, cpath)
    return count, _as_int(cfg.get("units")), 1


def _rnn(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...], cell: Any
) -> tuple[int, Tensors | None]:
    x = ins[0]
    count, units, states = _cell(w, cell, _last(x), path)
    if x is None or len(x) < 2:
        return count, None
    out: Shape = [*x[:-1], units] if cfg.get("return_sequences") else [x[0], units]
    outs: Tensors = [out]
    if cfg.get("return_state"):
        outs += [[x[0], units]] * states
    return count, outs


def _rnn_layer(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    cn = cfg.get("__class__")
    return _rnn(w, cfg, ins, path, {"class_name": cn, "config": cfg})


def _rnn_generic(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    return _rnn(w, cfg, ins, path, cfg.get("cell"))


def _cell_layer(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    count, units, _ = _cell(w, {"class_name": cfg.get("__class__"), "config": cfg}, _last(x), path[:-1])
    return count, (None if x is None else [[x[0], units]])


def _stacked(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    count, units, _ = _cell(w, {"class_name": "StackedRNNCells", "config": cfg}, _last(x), path[:-1])
    return count, (None if x is None else [[x[0], units]])


def _bidirectional(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    forward, outs = w.sub(cfg.get("layer"), ins, path)
    backward_cfg = cfg.get("backward_layer")
    if isinstance(backward_cfg, dict):
        backward, _ = w.sub(backward_cfg, ins, path)
    else:
        backward = forward
    if not outs or outs[0] is None:
        return forward + backward, None
    first, states = outs[0], outs[1:]
    mode = cfg.get("merge_mode", "concat")
    if mode == "concat":
        merged: Tensors = [[*first[:-1], None if first[-1] is None else 2 * first[-1]]]
    elif mode is None:
        merged = [first, first]
    else:
        merged = [first]
    return forward + backward, merged + states + states


def _time_distributed(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    inner = None if x is None or len(x) < 2 else [x[0], *x[2:]]
    count, outs = w.sub(cfg.get("layer"), [inner], path)
    if not outs or outs[0] is None or x is None or len(x) < 2:
        return count, None
    return count, [[x[0], x[1], *outs[0][1:]]]


def _wrapper(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    return w.sub(cfg.get("layer"), ins, path)


def _kernel_last(layer: Any, x: Shape | None) -> int:
    """The last dimension of the kernel of a wrapped layer (SpectralNormalization's ``vector_u``)."""
    if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
        return 1
    cn, cfg = layer.get("class_name"), layer["config"]
    if isinstance(cn, str) and cn.endswith("Transpose"):
        first = _channels_first(cfg)
        return _dim(x[1] if first else x[-1]) if x else 1
    if isinstance(cn, str) and cn.startswith("Depthwise"):
        return _int(cfg, "depth_multiplier")
    if cn == "EinsumDense":
        raw = _untuple(cfg.get("output_shape"))
        partial = (
            [None if v is None else _as_int(v) for v in raw] if isinstance(raw, list) else [_as_int(raw)]
        )
        try:
            kernel = _einsum_shapes(str(cfg.get("equation")), None, x, partial)[0]
            return _dim(kernel[-1]) if kernel else 1
        except (ValueError, IndexError, KeyError):
            return 1
    for key in ("units", "filters", "output_dim"):
        if _as_int(cfg.get(key)) is not None:
            return _int(cfg, key)
    return 1


def _spectral(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    count, outs = w.sub(cfg.get("layer"), ins, path)
    return count + _kernel_last(cfg.get("layer"), ins[0]), outs


def _axes_size(x: Shape | None, axis: Any) -> int:
    if axis is None:
        return 1
    axes = _untuple(axis) if isinstance(_untuple(axis), list) else [axis]
    rank = len(x) if x else None
    size = 1
    for a in axes:
        i = _axis(a, rank)
        if i is not None and x is not None:
            size *= _dim(x[i])
    return size


def _batch_norm(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    per = 2 + int(cfg.get("center", True) is not False) + int(cfg.get("scale", True) is not False)
    return _axes_size(ins[0], cfg.get("axis", -1)) * per, [ins[0]]


def _layer_norm(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    rms = cfg.get("rms_scaling") is True
    per = int(cfg.get("scale", True) is not False or rms) + int(
        cfg.get("center", True) is not False and not rms
    )
    return _axes_size(ins[0], cfg.get("axis", -1)) * per, [ins[0]]


def _group_norm(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    per = int(cfg.get("center", True) is not False) + int(cfg.get("scale", True) is not False)
    return _axes_size(ins[0], cfg.get("axis", -1)) * per, [ins[0]]


def _rms_norm(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    return _axes_size(ins[0], cfg.get("axis", -1)), [ins[0]]


def _normalization(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    if cfg.get("mean") is not None:
        return 0, [ins[0]]
    return 2 * _axes_size(ins[0], cfg.get("axis", -1)) + 1, [ins[0]]


def _prelu(w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
    x = ins[0]
    if x is None:
        return 1, None
    dims = list(x[1:])
    shared = _untuple(cfg.get("shared_axes"))
    for a in shared if isinstance(shared, list) else [shared]:
        i = _as_int(a)
        if i is not None and 0 < i <= len(dims):
            dims[i - 1] = 1
    return _prod(dims), [x]


def _attention(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    count = int(cfg.get("use_scale") is True) + int(cfg.get("score_mode") == "concat")
    return count, _attention_out(cfg, ins)


def _additive_attention(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    count = _last(ins[0]) if cfg.get("use_scale", True) is not False else 0
    return count, _attention_out(cfg, ins)


def _attention_out(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    q = ins[0]
    v = ins[1] if len(ins) > 1 else q
    if q is None or v is None:
        return None
    return [[*q[:-1], v[-1]]]


def _qkv(ins: Tensors) -> tuple[Shape | None, int, int, int]:
    q = ins[0]
    v = ins[1] if len(ins) > 1 and ins[1] is not None else q
    k = ins[2] if len(ins) > 2 and ins[2] is not None else v
    return q, _last(q), _last(k), _last(v)


def _mha(w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
    query, q, k, v = _qkv(ins)
    heads, kd = _int(cfg, "num_heads"), _int(cfg, "key_dim")
    vd = _int(cfg, "value_dim") if cfg.get("value_dim") is not None else kd
    out_shape = _shape(cfg.get("output_shape"))
    raw = _as_int(cfg.get("output_shape"))
    if out_shape is None and raw is not None:
        out_shape = [raw]
    out_dim = _prod(out_shape) if out_shape else q
    bias = _bias(cfg)
    count = heads * kd * (q + k) + heads * vd * v + heads * vd * out_dim
    count += bias * (2 * heads * kd + heads * vd + out_dim)
    if cfg.get("use_gate") is True:
        count += heads * vd * q + bias * heads * vd
    if query is None:
        return count, None
    return count, [[*query[:-1], *out_shape] if out_shape else query]


def _gqa(w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
    query, q, k, v = _qkv(ins)
    h, u, kv = _int(cfg, "head_dim"), _int(cfg, "num_query_heads"), _int(cfg, "num_key_value_heads")
    bias = _bias(cfg)
    count = q * u * h + k * kv * h + v * kv * h + u * h * q
    count += bias * (u * h + 2 * kv * h + q)
    if cfg.get("use_gate") is True:
        count += q * u * h + bias * u * h
    return count, [query]


def _stft(w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
    frame = _int(cfg, "frame_length")
    fft = _as_int(cfg.get("fft_length")) or (1 << max(frame - 1, 0).bit_length() if frame else 1)
    kernels = int(cfg.get("mode", "log") != "imag") + int(cfg.get("mode", "log") != "real")
    return frame * (fft // 2 + 1) * kernels, None


def _layer_scale(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    return _int(cfg, "projection_dim"), [ins[0]]


def _by_class(formula: Callable[..., tuple[int, Tensors | None]], cn: str) -> Formula:
    def bound(
        w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
    ) -> tuple[int, Tensors | None]:
        return formula(w, {**cfg, "__class__": cn}, ins, path)

    return bound


def _rev_embedding(
    w: Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    return _embedding(w, {**cfg, "class_name": "ReversibleEmbedding"}, ins, path)


#: class name -> formula(walker, config, inputs, path) -> (parameters, outputs)
FORMULAS: dict[str, Formula] = {
    "Dense": _dense,
    "EinsumDense": _einsum_dense,
    "Embedding": _embedding,
    "ReversibleEmbedding": _rev_embedding,
    **_CONV_FORMULAS,
    **{f"ConvLSTM{r}D": _conv_lstm(r) for r in (1, 2, 3)},
    **{name: _by_class(_rnn_layer, cell) for name, cell in _RNN_LAYERS.items()},
    **{name: _by_class(_cell_layer, name) for name in _CELLS},
    "RNN": _rnn_generic,
    "StackedRNNCells": _stacked,
    "Bidirectional": _bidirectional,
    "TimeDistributed": _time_distributed,
    "Wrapper": _wrapper,
    "SpectralNormalization": _spectral,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "GroupNormalization": _group_norm,
    "RMSNormalization": _rms_norm,
    "Normalization": _normalization,
    "PReLU": _prelu,
    "Attention": _attention,
    "AdditiveAttention": _additive_attention,
    "MultiHeadAttention": _mha,
    "GroupedQueryAttention": _gqa,
    "GroupQueryAttention": _gqa,
    "STFTSpectrogram": _stft,
    "LayerScale": _layer_scale,
}
