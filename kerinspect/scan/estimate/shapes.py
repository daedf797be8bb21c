"""Output shapes of the weightless layers (see :mod:`kerinspect.scan.estimate`): they count
0 parameters and propagate a shape where one can be computed."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from kerinspect.scan.estimate._common import (
    Shape,
    Tensors,
    _as_int,
    _axis,
    _dim,
    _int,
    _ints,
    _untuple,
)

ShapeFn = Callable[[dict[str, Any], Tensors], Tensors | None]


def _channels_first(cfg: dict[str, Any]) -> bool:
    return cfg.get("data_format") == "channels_first"


def _spatial(cfg: dict[str, Any], x: Shape | None, rank: int) -> tuple[list[int | None], bool] | None:
    """(spatial dims, channels_first) of a batched ``rank``-D input, None if not that rank."""
    if x is None or len(x) != rank + 2:
        return None
    first = _channels_first(cfg)
    return (list(x[2:]) if first else list(x[1:-1])), first


def _with_spatial(x: Shape, new: list[int | None], first: bool, channels: int | None = None) -> Shape:
    ch = (x[1] if first else x[-1]) if channels is None else channels
    return [x[0], ch, *new] if first else [x[0], *new, ch]


def _pool_out(size: int | None, pool: int, stride: int, padding: Any) -> int | None:
    if size is None:
        return None
    if padding == "same":
        return (size - 1) // max(stride, 1) + 1
    return max((size - pool) // max(stride, 1) + 1, 0)


def _pooling(rank: int) -> ShapeFn:
    def fn(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
        sp = _spatial(cfg, ins[0], rank)
        if sp is None:
            return None
        pool = _ints(cfg.get("pool_size", 2), rank, 2)
        strides = _ints(cfg.get("strides"), rank, 0) if cfg.get("strides") is not None else pool
        new = [_pool_out(s, pool[i], strides[i] or pool[i], cfg.get("padding")) for i, s in enumerate(sp[0])]
        return [_with_spatial(ins[0] or [], new, sp[1])]

    return fn


def _adaptive(rank: int) -> ShapeFn:
    def fn(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
        sp = _spatial(cfg, ins[0], rank)
        if sp is None:
            return None
        new: list[int | None] = list(_ints(cfg.get("output_size"), rank))
        return [_with_spatial(ins[0] or [], new, sp[1])]

    return fn


def _global_pool(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    x = ins[0]
    if x is None or len(x) < 2:
        return None
    first = _channels_first(cfg)
    if cfg.get("keepdims"):
        return [[x[0], x[1], *[1] * (len(x) - 2)] if first else [x[0], *[1] * (len(x) - 2), x[-1]]]
    return [[x[0], x[1] if first else x[-1]]]


def _pairs(value: Any, rank: int) -> list[tuple[int, int]]:
    value = _untuple(value)
    if isinstance(value, list):
        if len(value) == 2 and rank == 1 and all(isinstance(_untuple(v), (int, float)) for v in value):
            return [(_dim(_as_int(value[0])), _dim(_as_int(value[1])))]
        out: list[tuple[int, int]] = []
        for v in value[:rank]:
            v = _untuple(v)
            if isinstance(v, list) and len(v) == 2:
                out.append((_dim(_as_int(v[0])), _dim(_as_int(v[1]))))
            else:
                n = _dim(_as_int(v))
                out.append((n, n))
        return (out + [out[-1]] * rank)[:rank] if out else [(0, 0)] * rank
    m = _as_int(value) or 0
    return [(m, m)] * rank


def _resize_spatial(rank: int, key: str, default: Any, op: Callable[[int, Any], int]) -> ShapeFn:
    def fn(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
        x = ins[0]
        if rank == 1:
            if x is None or len(x) != 3:
                return None
            sp, first = [x[1]], False
        else:
            got = _spatial(cfg, x, rank)
            if got is None:
                return None
            sp, first = got
        arg = cfg.get(key, default)
        per: list[Any] = _pairs(arg, rank) if key != "size" else _ints(arg, rank, 2)
        new = [None if s is None else op(s, per[i]) for i, s in enumerate(sp)]
        return [_with_spatial(x or [], new, first)]

    return fn


def _crop(size: int, pair: Any) -> int:
    return max(size - pair[0] - pair[1], 0)


def _pad(size: int, pair: Any) -> int:
    return size + pair[0] + pair[1]


def _upsample(size: int, factor: Any) -> int:
    return size * int(factor)


def _flatten(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    x = ins[0]
    if x is None:
        return None
    rest = x[1:]
    return [[x[0], math.prod(d for d in rest if d is not None) if all(d is not None for d in rest) else None]]


def _reshape(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    target = _untuple(cfg.get("target_shape"))
    if not isinstance(target, list):
        return None
    x = ins[0]
    dims: list[int | None] = []
    for v in target:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            dims.append(-1)
        else:
            dims.append(_as_int(v) if v is not None else None)
    if -1 in dims:
        known = math.prod(d for d in dims if d is not None and d >= 0)
        total = (
            None
            if x is None or any(d is None for d in x[1:])
            else math.prod(d for d in x[1:] if d is not None)
        )
        dims = [(total // known if total is not None and known else None) if d == -1 else d for d in dims]
    return [[x[0] if x else None, *dims]]


def _permute(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    x = ins[0]
    dims = _untuple(cfg.get("dims"))
    if x is None or not isinstance(dims, list):
        return None
    out: Shape = [x[0]]
    for d in dims:
        i = _as_int(d)
        out.append(x[i] if i is not None and 0 < i < len(x) else None)
    return [out]


def _repeat(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    x = ins[0]
    return None if x is None or len(x) != 2 else [[x[0], _as_int(cfg.get("n")), x[1]]]


def _broadcast(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    known = [s for s in ins if s is not None]
    if not known:
        return None
    rank = max(len(s) for s in known)
    out: Shape = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in known if i - rank + len(s) >= 0]
        vals = [d for d in dims if d is not None and d != 1]
        out.append(max(vals) if vals else (1 if dims and all(d == 1 for d in dims) else None))
    return [out]


def _concatenate(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    if not ins or any(s is None for s in ins):
        return None
    shapes = [s for s in ins if s is not None]
    rank = len(shapes[0])
    axis = _axis(cfg.get("axis", -1), rank)
    if axis is None or any(len(s) != rank for s in shapes):
        return None
    out = list(shapes[0])
    sizes = [s[axis] for s in shapes]
    out[axis] = None if any(d is None for d in sizes) else sum(d for d in sizes if d is not None)
    return [out]


def _dot(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    if len(ins) < 2 or ins[0] is None or ins[1] is None:
        return None
    a, b = ins[0], ins[1]
    axes = _untuple(cfg.get("axes"))
    pair = axes if isinstance(axes, list) and len(axes) == 2 else [axes, axes]
    ia, ib = _axis(pair[0], len(a)), _axis(pair[1], len(b))
    if ia is None or ib is None:
        return None
    out = (
        [a[0]]
        + [d for i, d in enumerate(a) if i not in (0, ia)]
        + [d for i, d in enumerate(b) if i not in (0, ib)]
    )
    return [out if len(out) > 1 else [a[0], 1]]


def _image_size(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    x = ins[0]
    if x is None or len(x) not in (3, 4):
        return None
    h, w = _as_int(cfg.get("height")), _as_int(cfg.get("width"))
    lead = len(x) - 3
    out = list(x)
    if _channels_first(cfg):
        out[lead + 1], out[lead + 2] = h, w
    else:
        out[lead], out[lead + 1] = h, w
    return [out]


def _tokens(x: Shape | None, n: int | None, mode: Any) -> Tensors | None:
    if mode in (None, "int"):
        return [x]
    if x is None:
        return None
    if mode == "one_hot" and (len(x) < 2 or x[-1] != 1):
        return [[*x, n]]
    return [[*x[:-1], n]] if len(x) > 1 else [[n]]


def _category(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    return _tokens(ins[0], _as_int(cfg.get("num_tokens")), cfg.get("output_mode", "multi_hot"))


def _hashing(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    return _tokens(ins[0], _as_int(cfg.get("num_bins")), cfg.get("output_mode", "int"))


def _discretization(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    bounds = cfg.get("bin_boundaries")
    n = len(bounds) + 1 if isinstance(bounds, list) else _as_int(cfg.get("num_bins"))
    return _tokens(ins[0], n, cfg.get("output_mode", "int"))


def _lookup(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    mode = cfg.get("output_mode", "int")
    if mode in (None, "int"):
        return [ins[0]]
    vocab = cfg.get("vocabulary")
    n = _as_int(cfg.get("max_tokens"))
    if isinstance(vocab, list):
        n = len(vocab) + _int(cfg, "num_oov_indices", 1) + int(cfg.get("mask_token") is not None)
    return _tokens(ins[0], n, mode)


def _text(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    x = ins[0]
    batch = x[0] if x else None
    if cfg.get("output_mode", "int") == "int":
        return [[batch, _as_int(cfg.get("output_sequence_length"))]]
    return [[batch, _as_int(cfg.get("max_tokens"))]]


def _first(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    return [ins[0]]


def _unknown_shape(cfg: dict[str, Any], ins: Tensors) -> Tensors | None:
    return None


_SAME = (
    # activations, regularization, identity-like
    "Activation ActivityRegularization AlphaDropout Dropout GaussianDropout GaussianNoise "
    "SpatialDropout1D SpatialDropout2D SpatialDropout3D ELU LeakyReLU ReLU Softmax Identity "
    "Masking UnitNormalization Rescaling Layer StochasticDepth "
    # image augmentation that keeps the size
    "AugMix AutoContrast ContrastLimitedAdaptiveHistogramEqualization CutMix Equalization "
    "MaxNumBoundingBoxes MixUp RandAugment RandomBrightness RandomColorDegeneration "
    "RandomColorJitter RandomContrast RandomElasticTransform RandomErasing RandomFlip "
    "RandomGaussianBlur RandomGrayscale RandomHue RandomInvert RandomPerspective "
    "RandomPosterization RandomRotation RandomSaturation RandomSharpness RandomShear "
    "RandomTranslation RandomZoom Solarization"
).split()

_SHAPES: dict[str, ShapeFn] = {
    **{name: _first for name in _SAME},
    **{f"{p}Pooling{r}D": _pooling(r) for p in ("Max", "Average") for r in (1, 2, 3)},
    **{f"{p}Pool{r}D": _pooling(r) for p in ("Max", "Avg") for r in (1, 2, 3)},
    **{f"Adaptive{p}Pooling{r}D": _adaptive(r) for p in ("Max", "Average") for r in (1, 2, 3)},
    **{
        f"Global{p}{r}D": _global_pool
        for p in ("MaxPooling", "AveragePooling", "MaxPool", "AvgPool")
        for r in (1, 2, 3)
    },
    **{f"Cropping{r}D": _resize_spatial(r, "cropping", 1 if r == 1 else 0, _crop) for r in (1, 2, 3)},
    **{f"ZeroPadding{r}D": _resize_spatial(r, "padding", 1, _pad) for r in (1, 2, 3)},
    **{f"UpSampling{r}D": _resize_spatial(r, "size", 2, _upsample) for r in (1, 2, 3)},
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "RepeatVector": _repeat,
    **{name: _broadcast for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")},
    "Concatenate": _concatenate,
    "Dot": _dot,
    "Resizing": _image_size,
    "CenterCrop": _image_size,
    "RandomCrop": _image_size,
    "CategoryEncoding": _category,
    "Hashing": _hashing,
    "HashedCrossing": _hashing,
    "Discretization": _discretization,
    "IntegerLookup": _lookup,
    "StringLookup": _lookup,
    "TextVectorization": _text,
    "MelSpectrogram": _unknown_shape,
    "CustomScaleLayer": _first,
}
#: classes that hold no variables whatever their config
WEIGHTLESS: frozenset[str] = frozenset(_SHAPES)
