"""Parameter, weight-memory and input-size estimates from a model config, without building it.

Owned by the static scan (:mod:`kerinspect.scan.static`). Pure Python; never imports
TensorFlow, Keras or numpy.

What is counted
    Every layer class of the installed Keras (``allowlist.CLASSES["keras.layers"]`` and the
    private application layers there) is in exactly one of three groups:

    * **weightless** (:data:`WEIGHTLESS`): no variables by construction (activations,
      dropout, pooling, reshaping, merging, augmentation, lookups...). They count 0 and
      propagate a shape where one can be computed.
    * **estimated** (:data:`FORMULAS`): a formula per family that mirrors the layer's
      ``build()`` -- Dense, EinsumDense (the equation, ``output_shape`` and ``bias_axes``
      are parsed as Keras does), every convolution (1D/2D/3D, transposed, depthwise,
      separable, grouped), ConvLSTM1D/2D/3D, Embedding, ReversibleEmbedding, SimpleRNN/LSTM/GRU
      and their cells, ``RNN(cell=...)`` with nested or stacked cells, StackedRNNCells,
      Bidirectional, TimeDistributed, SpectralNormalization and other wrappers, every
      normalization, MultiHeadAttention, GroupedQueryAttention, (Additive)Attention, PReLU,
      STFTSpectrogram, LoRA adapters, ConvNeXt's LayerScale. Nested models are walked.
    * **unknown**: anything else (custom or third-party classes such as keras-hub). They
      may hold any number of parameters, so they are not silently counted as 0: the
      product of the size-like integers their config declares (:data:`SIZE_KEYS`: ``units``,
      ``filters``, ``output_dim``, ``input_dim``, ``vocabulary_size``, ``hidden_dim``...),
      times the input's last dimension when the config declares exactly one output-size
      key and no input size, is added as their guess. A custom layer declaring
      ``units=10**9`` is therefore refused by ``--max-params`` like a Dense would be; a
      custom layer declaring no size counts 0. Their class names are reported in
      :attr:`Estimate.unknown`. ``tests/test_estimate.py`` fails when a new Keras layer
      class is neither weightless nor estimated.

Shapes
    Input shapes come, in Keras's own order of precedence, from an ``InputLayer``
    (``batch_shape``/``batch_input_shape``/``shape``), the first layer's legacy
    ``input_shape``/``input_dim``/``batch_input_shape`` arguments, a Sequential's
    ``build_input_shape``, and the model's root ``build_config``; they are then propagated
    layer by layer (``keras_history`` links in Keras 3 functional configs, layer names in
    legacy ones). Because Keras builds a layer from its own ``build_config`` while it is
    deserialized, and the ``__keras_tensor__`` shapes stored in ``inbound_nodes`` are only
    claims of the file, each layer is evaluated on every candidate shape (propagated,
    ``build_config``, stored) and the largest count is kept: a crafted file cannot shrink
    the estimate by lying in one of them. Unknown dimensions count as 1, so where the
    config is vague the estimate is a lower bound; for the built-in layers of an honest
    config it equals ``count_params()`` (checked for every class by the tests).

Memory
    :attr:`Estimate.weight_bytes` is every counted parameter times the byte size of its
    layer's variable dtype (``float64``: 8, ``float16``/``bfloat16``: 2, otherwise 4;
    ``mixed_*`` policies keep float32 variables). Quantized layouts (int8/int4/float8
    policies) are counted as their float layout, which upper-bounds the packed kernels but
    omits the per-channel scales (a fraction of a percent).

The work stays linear in the config's size: past a global budget of evaluations, a layer's
alternative shapes are merged (dimension-wise maximum) into one evaluation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
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
#: the tensors a layer is called on (or returns); None where a shape is not known
Tensors = list[Shape | None]


def _untuple(value: Any) -> Any:
    if isinstance(value, dict) and value.get("class_name") == "__tuple__":
        return value.get("items")
    return value


def _shape(value: Any) -> Shape | None:
    value = _untuple(value)
    if not isinstance(value, list) or not all(v is None or isinstance(v, (int, float)) for v in value):
        return None
    if any(isinstance(v, bool) for v in value):
        return None
    return [None if v is None else _as_int(v) for v in value]


def _dim(value: int | None) -> int:
    return 1 if value is None else value


def _prod(values: Any) -> int:
    return math.prod(_dim(v) for v in values)


def _ints(value: Any, rank: int, default: int = 1) -> list[int]:
    value = _untuple(value)
    if isinstance(value, list):
        out = [_dim(_as_int(v)) for v in value][:rank] or [default]
        return (out * rank)[:rank] if len(out) < rank else out
    n = _as_int(value)
    return [default if n is None else n] * rank


def _int(cfg: dict[str, Any], key: str, default: int = 1) -> int:
    value = _as_int(cfg.get(key))
    return default if value is None else value


def _axis(value: Any, rank: int | None) -> int | None:
    """A (possibly negative) axis as an index into a shape of ``rank`` dims."""
    if isinstance(value, bool) or not isinstance(value, int) or rank is None:
        return None
    index = value + rank if value < 0 else value
    return index if 0 <= index < rank else None


def _itemsize(cfg: dict[str, Any]) -> int:
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        inner = dtype.get("config")
        dtype = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(dtype, str) or dtype.startswith("mixed_"):
        return 4
    if "float64" in dtype or dtype in ("int64", "uint64", "complex64"):
        return 8
    if dtype in ("float16", "bfloat16", "int16", "uint16"):
        return 2
    return 4


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

#: how many layer evaluations alternative (non-propagated) shapes may take in one config
_BUDGET = 200_000
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
        if self.work >= _BUDGET:  # past the budget: one evaluation, on the largest of each dimension
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


def _build_shapes(build: Any) -> list[Tensors]:
    """The input shapes a ``build_config`` builds a layer with (one candidate)."""
    if not isinstance(build, dict):
        return []
    value = build.get("input_shape")
    if value is None and isinstance(build.get("shapes_dict"), dict):
        shapes = build["shapes_dict"]
        order = [k for k in ("query_shape", "value_shape", "key_shape") if k in shapes]
        order += [k for k in shapes if k not in order]
        value = [shapes[k] for k in order]
    value = _untuple(value)
    if isinstance(value, dict):
        value = list(value.values())
    single = _shape(value)
    if single is not None:
        return [[single]]
    if isinstance(value, list) and value:
        many = [_shape(v) for v in value]
        if any(m is not None for m in many):
            return [many]
    return []


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


# ---------------------------------------------------------------------------- shapes of weightless layers

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


# ---------------------------------------------------------------------------- formulas

Formula = Callable[[_Walker, dict[str, Any], Tensors, tuple[str, ...]], tuple[int, Tensors | None]]


def _bias(cfg: dict[str, Any]) -> int:
    return 0 if cfg.get("use_bias", True) is False else 1


def _last(x: Shape | None) -> int:
    return _dim(x[-1]) if x else 1


def _lora(cfg: dict[str, Any], rows: int, cols: int) -> int:
    rank = _as_int(cfg.get("lora_rank"))
    return rank * (rows + cols) if rank else 0


def _dense(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    units = _int(cfg, "units")
    count = _last(x) * units + _bias(cfg) * units + _lora(cfg, _last(x), units)
    return count, (None if x is None else [[*x[:-1], units]])


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
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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
        w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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
        w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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


def _cell(w: _Walker, cell: Any, in_dim: int, path: tuple[str, ...]) -> tuple[int, int | None, int]:
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
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...], cell: Any
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
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    cn = cfg.get("__class__")
    return _rnn(w, cfg, ins, path, {"class_name": cn, "config": cfg})


def _rnn_generic(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    return _rnn(w, cfg, ins, path, cfg.get("cell"))


def _cell_layer(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    count, units, _ = _cell(w, {"class_name": cfg.get("__class__"), "config": cfg}, _last(x), path[:-1])
    return count, (None if x is None else [[x[0], units]])


def _stacked(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    count, units, _ = _cell(w, {"class_name": "StackedRNNCells", "config": cfg}, _last(x), path[:-1])
    return count, (None if x is None else [[x[0], units]])


def _bidirectional(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    x = ins[0]
    inner = None if x is None or len(x) < 2 else [x[0], *x[2:]]
    count, outs = w.sub(cfg.get("layer"), [inner], path)
    if not outs or outs[0] is None or x is None or len(x) < 2:
        return count, None
    return count, [[x[0], x[1], *outs[0][1:]]]


def _wrapper(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    per = 2 + int(cfg.get("center", True) is not False) + int(cfg.get("scale", True) is not False)
    return _axes_size(ins[0], cfg.get("axis", -1)) * per, [ins[0]]


def _layer_norm(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    rms = cfg.get("rms_scaling") is True
    per = int(cfg.get("scale", True) is not False or rms) + int(
        cfg.get("center", True) is not False and not rms
    )
    return _axes_size(ins[0], cfg.get("axis", -1)) * per, [ins[0]]


def _group_norm(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    per = int(cfg.get("center", True) is not False) + int(cfg.get("scale", True) is not False)
    return _axes_size(ins[0], cfg.get("axis", -1)) * per, [ins[0]]


def _rms_norm(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    return _axes_size(ins[0], cfg.get("axis", -1)), [ins[0]]


def _normalization(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    if cfg.get("mean") is not None:
        return 0, [ins[0]]
    return 2 * _axes_size(ins[0], cfg.get("axis", -1)) + 1, [ins[0]]


def _prelu(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
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
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    count = int(cfg.get("use_scale") is True) + int(cfg.get("score_mode") == "concat")
    return count, _attention_out(cfg, ins)


def _additive_attention(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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


def _mha(w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
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


def _gqa(w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
    query, q, k, v = _qkv(ins)
    h, u, kv = _int(cfg, "head_dim"), _int(cfg, "num_query_heads"), _int(cfg, "num_key_value_heads")
    bias = _bias(cfg)
    count = q * u * h + k * kv * h + v * kv * h + u * h * q
    count += bias * (u * h + 2 * kv * h + q)
    if cfg.get("use_gate") is True:
        count += q * u * h + bias * u * h
    return count, [query]


def _stft(w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]) -> tuple[int, Tensors | None]:
    frame = _int(cfg, "frame_length")
    fft = _as_int(cfg.get("fft_length")) or (1 << max(frame - 1, 0).bit_length() if frame else 1)
    kernels = int(cfg.get("mode", "log") != "imag") + int(cfg.get("mode", "log") != "real")
    return frame * (fft // 2 + 1) * kernels, None


def _layer_scale(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
) -> tuple[int, Tensors | None]:
    return _int(cfg, "projection_dim"), [ins[0]]


def _by_class(formula: Callable[..., tuple[int, Tensors | None]], cn: str) -> Formula:
    def bound(
        w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
    ) -> tuple[int, Tensors | None]:
        return formula(w, {**cfg, "__class__": cn}, ins, path)

    return bound


def _rev_embedding(
    w: _Walker, cfg: dict[str, Any], ins: Tensors, path: tuple[str, ...]
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

#: every class name the estimator knows (weightless, a formula, or a container)
KNOWN: frozenset[str] = WEIGHTLESS | frozenset(FORMULAS) | _CONTAINERS | {"InputLayer"}
