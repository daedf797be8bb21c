"""Static weight health, read from the file with h5py alone.

:func:`inspect_weights` never runs model code, never deserializes the model and
never imports TensorFlow or Keras: it walks the HDF5 weights (the
``model.weights.h5`` member of a ``.keras`` zip, or a legacy ``.h5`` file) and
summarises every dataset in bounded memory. It therefore also works when the
model's custom classes are not importable.

Layouts understood:

* Keras 3 (``.keras`` member, ``*.weights.h5``): ``layers/<key>/vars/<i>``, nested
  models under ``layers/<key>/layers/...`` and sub-objects (an RNN's ``cell``,
  attention's ``query_dense``...) as further groups. ``<key>`` is the snake-cased
  class, the layer's own name is the ``name`` attribute of its ``vars`` group.
  Variable indices get names (``kernel``, ``bias``...) when the class is known
  (:data:`VAR_NAMES`), else stay ``vars/<i>``.
* Legacy (Keras 2 / tf.keras, and Keras 3's own ``.h5``):
  ``model_weights/<layer>/.../<var>:0`` with ``layer_names``/``weight_names``
  attributes; also weights-only files with those groups at the root.

Names follow the ``summary`` report: the layer path is ``outer/inner`` for layers
of nested models, and a weight's name is ``<layer path>/<variable path>``
(``lstm/lstm_cell/kernel``, ``mha/query/bias``).

Safety: every link is checked before it is followed (soft and external links are
refused, never opened), datasets with external storage or virtual sources are
refused before anything is read, and so are "shape bombs" (a dataset declaring far
more data than the file stores). This is a reader's own guard, not a full scan.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from kerinspect.checks import tensor_flags
from kerinspect.errors import KerinspectError, ModelLoadError, PolicyError, escape_text
from kerinspect.report import Thresholds, WeightRecord, WeightsReport
from kerinspect.stats import RunningStats, summarize

from .preflight import DEFAULT_MAX_FILE_BYTES, ModelFile, preflight
from .zipio import ZipWindow, stored_member_start

WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"

#: Elements read and summarised at a time; peak memory is a few times this in bytes
#: (the float64 copy, the finite mask), whatever the size of the weight.
SLICE_ELEMENTS = 1 << 21
#: Configs larger than this are not parsed (names then come from the file alone).
MAX_CONFIG_BYTES = 64 << 20
MAX_METADATA_BYTES = 1 << 20
#: A compressed zip member may expand at most this much once above the floor.
ZIP_BOMB_FLOOR_BYTES = 64 << 20
ZIP_BOMB_RATIO = 100
#: Walk limits: group nesting and links visited.
MAX_DEPTH = 64
MAX_LINKS = 1_000_000

#: Top-level groups of a Keras 3 weights file that hold no model weights.
_NOT_MODEL_STATE = frozenset({"optimizer"})


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

_RNN_LAYERS = {"LSTM": "LSTMCell", "GRU": "GRUCell", "SimpleRNN": "SimpleRNNCell"}
_BY_FOLDED = {c.lower(): c for c in VAR_NAMES} | {c.lower(): c for c in _RNN_LAYERS}


def _fold(name: str) -> str:
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


def _class_of(cfg: Any) -> str | None:
    if isinstance(cfg, dict) and isinstance(cfg.get("class_name"), str):
        return str(cfg["class_name"])
    return None


def _inner(cfg: Any) -> dict[str, Any]:
    """The ``config`` dict of a serialized object ({} when absent or malformed)."""
    if isinstance(cfg, dict) and isinstance(cfg.get("config"), dict):
        return cfg["config"]
    return {}


def _layer_entries(cfg: Any) -> list[dict[str, Any]] | None:
    """The serialized layers of a model config, or None when ``cfg`` is not a model."""
    inner = cfg.get("config") if isinstance(cfg, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else inner  # old Sequential: a list
    if not isinstance(layers, list):
        return None
    return [e for e in layers if isinstance(e, dict)]


def _entry_name(entry: dict[str, Any]) -> str | None:
    name = _inner(entry).get("name", entry.get("name"))
    return name if isinstance(name, str) else None


def _snake(name: str) -> str:
    """Keras's ``naming.to_snake_case`` (how a Keras 3 file keys a layer's group)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclass
class _Scope:
    """The layers of one (possibly nested) model config, by name and by file key."""

    by_name: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # name -> position in the config

    @classmethod
    def of(cls, cfg: Any) -> _Scope | None:
        entries = _layer_entries(cfg)
        if entries is None:
            return None
        scope = cls()
        used: dict[str, int] = {}
        sequential = _class_of(cfg) == "Sequential"
        for entry in entries:
            name = _entry_name(entry)
            if name is not None and name not in scope.by_name:
                scope.by_name[name] = entry
                scope.order[name] = len(scope.order)
            klass = _class_of(entry) or ""
            if sequential and klass == "InputLayer":
                continue  # Sequential.layers leaves its InputLayer out
            key = _snake(klass)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            scope.by_key[key] = entry
        return scope


def _find_chain(scope: _Scope, name: str, depth: int = 0) -> tuple[list[str], dict[str, Any]] | None:
    """The layer called ``name`` in ``scope`` or, depth first, in its nested models:
    the chain of names leading to it, and its config."""
    if name in scope.by_name:
        return [name], scope.by_name[name]
    if depth >= MAX_DEPTH:
        return None
    for inner_name, entry in scope.by_name.items():
        inner = _Scope.of(entry)
        if inner is not None:
            found = _find_chain(inner, name, depth + 1)
            if found is not None:
                return [inner_name, *found[0]], found[1]
    return None


def _parse_json(raw: bytes | str, what: str, warnings: list[str]) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        warnings.append(f"{what} is not valid JSON ({escape_text(str(e), 120)}); names come from the file")
        return None


# -- HDF5 access --------------------------------------------------------------------


@dataclass
class _Entry:
    layer: str
    name: str
    dataset: Any  # h5py.Dataset


class _Walker:
    """Visits HDF5 objects one checked link at a time.

    Soft and external links are refused without being resolved; hard-linked objects
    are visited once (a cycle cannot loop); nesting depth and link count are bounded.
    """

    def __init__(self) -> None:
        import h5py

        self.h5py = h5py
        self.seen: set[tuple[int, int]] = set()
        self.links = 0
        self.warnings: list[str] = []
        self.entries: list[_Entry] = []

    def _where(self, group: Any, key: str) -> str:
        return escape_text(f"{group.name.rstrip('/')}/{key}", 200)

    def children(self, group: Any, depth: int) -> Iterator[tuple[str, Any]]:
        """``(key, object)`` for every child of ``group``: groups and datasets only."""
        h5py = self.h5py
        if depth > MAX_DEPTH:
            raise ModelLoadError(
                f"HDF5 groups nest deeper than {MAX_DEPTH} levels at {escape_text(group.name, 200)}.",
                rule="hdf5-too-deep",
            )
        for key in list(group.keys()):
            self.links += 1
            if self.links > MAX_LINKS:
                raise PolicyError(f"HDF5 file has more than {MAX_LINKS:,} links.", rule="hdf5-too-many-links")
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = type(link).__name__
                raise PolicyError(
                    f"HDF5 file contains a {kind} at {self._where(group, key)}; "
                    "links are never followed (they can point at other files).",
                    rule="hdf5-link",
                )
            obj = group[key]
            if not isinstance(obj, (h5py.Group, h5py.Dataset)):
                continue  # committed datatypes
            ident = (obj.id.fileno, h5py.h5o.get_info(obj.id).addr)
            if ident in self.seen:
                self.warnings.append(f"{self._where(group, key)} links to an object already read; skipped")
                continue
            self.seen.add(ident)
            yield key, obj

    def groups(self, group: Any, depth: int) -> Iterator[tuple[str, Any]]:
        for key, obj in self.children(group, depth):
            if isinstance(obj, self.h5py.Group):
                yield key, obj
            else:
                self.add(group.name.rsplit("/", 1)[-1], f"{group.name}/{key}".lstrip("/"), obj)

    def datasets(self, group: Any, depth: int, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Every dataset under ``group`` (recursively) with its path relative to it."""
        for key, obj in self.children(group, depth):
            rel = f"{prefix}{key}"
            if isinstance(obj, self.h5py.Group):
                yield from self.datasets(obj, depth + 1, rel + "/")
            else:
                yield rel, obj

    def add(self, layer: str, name: str, dataset: Any) -> None:
        check_dataset(dataset)
        self.entries.append(_Entry(layer, name, dataset))


def check_dataset(ds: Any) -> None:
    """Refuse a dataset that would make a read touch another file or allocate far
    more than the file stores. Reads only the dataset's metadata.

    The same check as the static scan's (:func:`kerinspect.scan.static.dataset_problem`).

    Raises:
        PolicyError: external storage (``hdf5-external-storage``), a virtual
            dataset (``hdf5-virtual-dataset``), a filter needing a plugin
            (``hdf5-filter``) or a shape bomb (``hdf5-shape-bomb``).
    """
    from .static import Limits, dataset_problem

    problem = dataset_problem(ds, ds.name, Limits(), "The weights file")
    if problem is not None:
        rule, message = problem
        raise PolicyError(message + "; not read.", rule=rule)


def _attr_strings(attrs: Any, name: str) -> list[str] | None:
    """A string-list attribute, also when Keras split it into ``name0``, ``name1``...
    (HDF5 attributes are limited to 64 KiB). None when absent."""
    if name in attrs:
        values: list[Any] = list(np.atleast_1d(attrs[name]))
    elif f"{name}0" in attrs:
        values = []
        k = 0
        while f"{name}{k}" in attrs:
            values += list(np.atleast_1d(attrs[f"{name}{k}"]))
            k += 1
    else:
        return None
    out = []
    for v in values:
        if isinstance(v, bytes):
            out.append(v.decode("utf-8", "replace"))
        elif isinstance(v, str):
            out.append(v)
    return out


def _attr_string(attrs: Any, name: str) -> str | None:
    if name not in attrs:
        return None
    value = attrs[name]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _hard_child(group: Any, name: str) -> Any:
    """``group[name]`` when it is a hard link, else None (absent, or a soft or external
    link, which is not resolved here; the walk refuses it when it gets there)."""
    import h5py

    if not isinstance(group.get(name, getlink=True), h5py.HardLink):
        return None
    return group[name]


def _vars_name(group: Any) -> str | None:
    """The ``name`` Keras 3 records on a saveable's ``vars`` group."""
    vars_group = _hard_child(group, "vars")
    return None if vars_group is None else _attr_string(vars_group.attrs, "name")


# -- Keras 3 layout ------------------------------------------------------------------


class _Keras3Reader:
    """Names the datasets of a Keras 3 weights file (``layers/<key>/vars/<i>``)."""

    def __init__(self, walker: _Walker, config: Any):
        self.w = walker
        self.config = config

    def read(self, root: Any) -> None:
        top_class = _class_of(self.config)
        for key, child in self.w.groups(root, 0):
            if key == "vars":
                self.own_vars(child, "", [], top_class, _inner(self.config), 1)
            elif key == "layers":
                self.layers(child, [], _Scope.of(self.config), 1)
            elif key in _NOT_MODEL_STATE:
                continue
            else:  # a subclassed model keeps its layers under attribute names
                self.layer(child, key, [], None, 1)

    def layers(self, container: Any, parents: list[str], scope: _Scope | None, depth: int) -> None:
        children = list(self.w.groups(container, depth))
        if scope is not None:  # the config's layer order, not the file's alphabetical one

            def position(item: tuple[int, tuple[str, Any]]) -> tuple[int, int]:
                i, (key, child) = item
                name = _vars_name(child) or _entry_name(scope.by_key.get(key) or {})
                return (0, scope.order[name]) if name in scope.order else (1, i)

            children = [c for _, c in sorted(enumerate(children), key=position)]
        for key, child in children:
            self.layer(child, key, parents, scope, depth + 1)

    def layer(self, group: Any, key: str, parents: list[str], scope: _Scope | None, depth: int) -> None:
        name = _vars_name(group)
        cfg = None
        if scope is not None:
            cfg = scope.by_name.get(name) if name is not None else scope.by_key.get(key)
        if name is None:
            name = _entry_name(cfg) if cfg is not None else None
        path = [*parents, name if name is not None else key]
        klass = _class_of(cfg) or _BY_FOLDED.get(_fold(key))
        is_model = _hard_child(group, "layers") is not None
        for sub_key, child in sorted(self.w.groups(group, depth), key=_sub_order):
            if sub_key == "vars":
                self.own_vars(child, "/".join(path), [], klass, _inner(cfg), depth + 1)
            elif is_model and sub_key == "layers":
                self.layers(child, path, _Scope.of(cfg), depth + 1)
            elif is_model:
                self.layer(child, sub_key, path, None, depth + 1)
            else:
                self.sub_object(child, sub_key, "/".join(path), [], klass, cfg, depth + 1)

    def sub_object(
        self,
        group: Any,
        key: str,
        layer: str,
        rel: list[str],
        parent_class: str | None,
        parent_cfg: Any,
        depth: int,
    ) -> None:
        """A saveable inside a layer (an RNN cell, an attention projection...), or a
        list of them (a group without ``vars``, whose children are keyed by class)."""
        seg = _vars_name(group)
        if seg is None and _hard_child(group, "vars") is None:
            for k, child in self.w.groups(group, depth):
                self.sub_object(child, k, layer, rel, parent_class, parent_cfg, depth + 1)
            return
        seg = seg or key
        klass, cfg = _sub_class(parent_class, parent_cfg, key, seg)
        for sub_key, child in sorted(self.w.groups(group, depth), key=_sub_order):
            if sub_key == "vars":
                self.own_vars(child, layer, [*rel, seg], klass, _inner(cfg), depth + 1)
            else:
                self.sub_object(child, sub_key, layer, [*rel, seg], klass, cfg, depth + 1)

    def own_vars(
        self, vars_group: Any, layer: str, rel: list[str], klass: str | None, config: Any, depth: int
    ) -> None:
        items = sorted(self.w.datasets(vars_group, depth), key=lambda kv: _int_key(kv[0]))
        indexed = [k for k, _ in items] == [str(i) for i in range(len(items))]
        names = var_names(klass, config, len(items)) if indexed else None
        prefix = "/".join([layer, *rel]) if layer else "/".join(rel)
        for i, (key, ds) in enumerate(items):
            leaf = names[i] if names is not None else f"vars/{key}"
            self.w.add(layer, f"{prefix}/{leaf}" if prefix else leaf, ds)


#: Sub-objects in the order Keras creates their variables (others follow, by key).
_SUB_ORDER = (
    "vars",
    "cell",
    "forward_layer",
    "backward_layer",
    "query_dense",
    "key_dense",
    "value_dense",
    "output_dense",
)


def _sub_order(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0].lstrip("_")
    return (_SUB_ORDER.index(key), "") if key in _SUB_ORDER else (len(_SUB_ORDER), item[0])


def _int_key(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


def _sub_class(parent_class: str | None, parent_cfg: Any, key: str, seg: str) -> tuple[str | None, Any]:
    """Class (and config, when the parent's config holds it) of a sub-object."""
    inner = _inner(parent_cfg)
    sub_cfg = None
    if key == "forward_layer":
        sub_cfg = inner.get("layer")
    elif key == "backward_layer":
        sub_cfg = inner.get("backward_layer") or inner.get("layer")
    elif isinstance(inner.get(key.lstrip("_")), dict):
        sub_cfg = inner.get(key.lstrip("_"))
    klass = _class_of(sub_cfg)
    if klass is None and parent_class in _RNN_LAYERS and key == "cell":
        return _RNN_LAYERS[parent_class], parent_cfg  # an LSTM's config holds its cell's options
    if klass is None:
        for candidate in (seg, key.lstrip("_"), re.sub(r"^(forward|backward)_", "", seg)):
            klass = _BY_FOLDED.get(_fold(candidate))
            if klass is not None:
                break
    if klass is None and _fold(key.lstrip("_")).endswith("dense"):
        klass = "EinsumDense"  # attention projections (query_dense, _key_dense...)
    if klass is not None and klass.endswith("Cell") and sub_cfg is None:
        sub_cfg = parent_cfg
    return klass, sub_cfg


# -- legacy layout -------------------------------------------------------------------


class _LegacyReader:
    """Names the datasets of a legacy HDF5 file (``<layer>/<layer>/<var>:0``)."""

    def __init__(self, walker: _Walker, config: Any):
        self.w = walker
        self.config = config
        self.scope = _Scope.of(config)
        self.top_name = _entry_name(config) if isinstance(config, dict) else None

    def read(self, root: Any) -> None:
        order = _attr_strings(root.attrs, "layer_names") or []
        groups = dict(self.w.groups(root, 1))
        for key in [k for k in order if k in groups] + sorted(k for k in groups if k not in order):
            self.layer(key, groups[key])

    def layer(self, key: str, group: Any) -> None:
        found = dict(self.w.datasets(group, 2))
        order = [_strip_index(n) for n in _attr_strings(group.attrs, "weight_names") or []]
        by_base = {_strip_index(rel): rel for rel in found}
        ordered = [by_base[b] for b in order if b in by_base]
        ordered += sorted(rel for rel in found if rel not in ordered)
        lname = "" if key == "top_level_model_weights" else key
        cfg = self.scope.by_name.get(lname) if self.scope else None
        for rel in ordered:
            path, var = self.resolve(lname, _strip_index(rel).split("/"), cfg)
            self.w.add("/".join(path), "/".join(path + var), found[rel])

    def resolve(self, lname: str, segs: list[str], cfg: Any) -> tuple[list[str], list[str]]:
        """Split a weight name into the layer path and the variable path.

        ``hidden`` + ``legacy_mlp/hidden/kernel`` -> ``hidden``, ``kernel``;
        ``block`` (a nested model) + ``proj/kernel`` -> ``block/proj``, ``kernel``.
        """
        path = [lname] if lname else []
        segs = _after(segs, lname, self.top_name)
        depth = 0
        while segs and len(segs) > 1 and depth < MAX_DEPTH:
            inner = _Scope.of(cfg)
            if inner is None:
                break
            found = _find_chain(inner, segs[0])
            if found is None:
                break
            chain, cfg = found
            path += chain
            segs = segs[1:]
            depth += 1
        return path, segs


def _strip_index(name: str) -> str:
    """``dense/kernel:0`` -> ``dense/kernel`` (TF variable names carry an output index)."""
    return re.sub(r":\d+$", "", name)


def _after(segs: list[str], lname: str, top_name: str | None) -> list[str]:
    """Drop the leading scope segments up to the layer's own name, if present."""
    if lname and lname in segs[:-1]:
        return segs[segs.index(lname) + 1 :]
    if top_name and len(segs) > 1 and segs[0] == top_name:
        return segs[1:]
    return segs


# -- opening files ------------------------------------------------------------------


@dataclass
class _Source:
    h5: Any  # h5py.File
    layout: str
    root: Any  # the group holding the weights
    config: Any = None
    saved_with: str | None = None
    warnings: list[str] = field(default_factory=list)


def _only_member(zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo | None:
    infos = [i for i in zf.infolist() if i.filename == name]
    if len(infos) > 1:
        raise PolicyError(
            f"The archive holds {len(infos)} members named {name}; which one is read is ambiguous.",
            rule="zip-duplicate-member",
        )
    return infos[0] if infos else None


def _read_small(zf: zipfile.ZipFile, name: str, cap: int, warnings: list[str]) -> bytes | None:
    info = _only_member(zf, name)
    if info is None:
        return None
    if info.file_size > cap:
        warnings.append(f"{name} is {info.file_size:,} bytes (limit {cap:,}); not read")
        return None
    return zf.read(info)


def _member_file(zf: zipfile.ZipFile, raw: IO[bytes], info: zipfile.ZipInfo, stack: Any) -> IO[bytes]:
    """A seekable file object over a zip member: in place when stored (the way Keras
    writes it), else decompressed in bounded chunks to an anonymous temporary file."""
    if info.flag_bits & 0x1:
        raise ModelLoadError(f"{info.filename} is encrypted.", rule="zip-encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        start = stored_member_start(raw, info)
        if start is None or info.compress_size != info.file_size:
            raise ModelLoadError(f"Corrupt zip entry for {info.filename}.", rule="zip-corrupt")
        if start + info.file_size > os.fstat(raw.fileno()).st_size:
            raise ModelLoadError(f"{info.filename} is truncated.", rule="zip-corrupt")
        return stack.enter_context(ZipWindow(raw, start, info.file_size))
    if info.file_size > DEFAULT_MAX_FILE_BYTES or (
        info.file_size > ZIP_BOMB_FLOOR_BYTES and info.file_size > ZIP_BOMB_RATIO * max(info.compress_size, 1)
    ):
        raise PolicyError(
            f"{info.filename} declares {info.file_size:,} bytes from {info.compress_size:,} compressed; "
            "refusing a potential decompression bomb.",
            rule="zip-bomb",
        )
    spool = stack.enter_context(tempfile.TemporaryFile())
    with zf.open(info) as src:
        shutil.copyfileobj(src, spool, 1 << 20)
    spool.seek(0)
    return spool


@contextlib.contextmanager
def _open_source(mf: ModelFile) -> Iterator[_Source]:
    import h5py

    with contextlib.ExitStack() as stack:
        warnings: list[str] = []
        if mf.format == "keras":
            raw = stack.enter_context(open(mf.path, "rb"))
            zf = stack.enter_context(zipfile.ZipFile(raw))
            info = _only_member(zf, WEIGHTS_MEMBER)
            if info is None:
                other = "model.weights.npz" in zf.namelist()
                raise ModelLoadError(
                    "The archive has no model.weights.h5"
                    + (
                        " (its weights are in model.weights.npz, which kerinspect does not read)"
                        if other
                        else ""
                    )
                    + f". Received: path={escape_text(mf.path)}",
                    rule="no-weights",
                )
            config_raw = _read_small(zf, CONFIG_MEMBER, MAX_CONFIG_BYTES, warnings)
            config = _parse_json(config_raw, CONFIG_MEMBER, warnings) if config_raw is not None else None
            meta_raw = _read_small(zf, METADATA_MEMBER, MAX_METADATA_BYTES, warnings)
            meta = _parse_json(meta_raw, METADATA_MEMBER, warnings) if meta_raw is not None else None
            saved_with = meta.get("keras_version") if isinstance(meta, dict) else None
            fileobj = _member_file(zf, raw, info, stack)
            h5 = stack.enter_context(h5py.File(fileobj, "r", locking=False))
            yield _Source(h5, "keras3", h5, config, _str_or_none(saved_with), warnings)
            return
        h5 = stack.enter_context(h5py.File(mf.path, "r", locking=False))
        config = None
        if "model_config" in h5.attrs:
            size = h5.attrs.get_id("model_config").get_storage_size()
            if size > MAX_CONFIG_BYTES:
                warnings.append(f"model_config is {size:,} bytes (limit {MAX_CONFIG_BYTES:,}); not read")
            else:
                text = _attr_string(h5.attrs, "model_config")
                config = _parse_json(text, "model_config", warnings) if text is not None else None
        saved_with = _attr_string(h5.attrs, "keras_version")
        link = h5.get("model_weights", getlink=True)
        if link is not None:
            if not isinstance(link, h5py.HardLink):
                raise PolicyError(
                    "HDF5 file contains a link at /model_weights; links are never followed.", rule="hdf5-link"
                )
            root = h5["model_weights"]
            saved_with = saved_with or _attr_string(root.attrs, "keras_version")
            yield _Source(h5, "legacy", root, config, saved_with, warnings)
        elif "layer_names" in h5.attrs:
            yield _Source(h5, "legacy", h5, config, saved_with, warnings)
        elif h5.get("layers", getlink=True) is not None or h5.get("vars", getlink=True) is not None:
            yield _Source(h5, "keras3", h5, config, saved_with, warnings)
        else:
            raise ModelLoadError(
                "This HDF5 file holds no Keras weights (no model_weights group, layer_names attribute "
                f"or layers group). Received: path={escape_text(mf.path)}",
                rule="no-weights",
            )


def _str_or_none(x: Any) -> str | None:
    return x if isinstance(x, str) else None


# -- statistics ------------------------------------------------------------------------


def block_slices(shape: tuple[int, ...], budget: int | None = None) -> Iterator[tuple[slice, ...]]:
    """Index tuples that cover an array of ``shape`` exactly once, in C order, each
    selecting at most ``budget`` elements (when a single element of the leading axes
    fits; otherwise one element). Blocks are runs of rows along axis 0; a row larger
    than the budget is split along the next axis, and so on. Ranks are kept (slices,
    not integers), so every block has the array's number of axes.
    """
    budget = max(1, SLICE_ELEMENTS if budget is None else budget)
    if not shape or math.prod(shape) <= budget:
        yield tuple(slice(None) for _ in shape)
        return
    row = math.prod(shape[1:])
    if row <= budget:
        rows = max(1, budget // max(row, 1))
        for start in range(0, shape[0], rows):
            yield (slice(start, min(start + rows, shape[0])),) + tuple(slice(None) for _ in shape[1:])
        return
    for i in range(shape[0]):
        for rest in block_slices(shape[1:], budget):
            yield (slice(i, i + 1), *rest)


def _numpy_dtype(ds: Any) -> tuple[str, Callable[[np.ndarray], np.ndarray] | None]:
    """The dtype name to report and a function that makes a read block numeric
    (None when the values cannot be summarised)."""
    dt = ds.dtype
    tagged = _attr_string(ds.attrs, "dtype")
    if dt.kind == "V" and dt.names is None and dt.itemsize in (1, 2):
        name = tagged or ("bfloat16" if dt.itemsize == 2 else None)
        if name is not None:
            try:
                import ml_dtypes

                target = np.dtype(getattr(ml_dtypes, name))
            except (ImportError, AttributeError, TypeError):
                return name, None
            if target.itemsize == dt.itemsize:
                return name, lambda a: a.view(target)
        return f"opaque{8 * dt.itemsize}", None
    if dt.kind in "fiub":
        return str(dt), lambda a: a
    import h5py

    if dt.kind in "SU" or h5py.check_string_dtype(dt) is not None:
        return "string", None
    return escape_text(str(dt), 40), None


def dataset_stats(ds: Any, budget: int | None = None) -> tuple[str, tuple[int, ...], RunningStats | None]:
    """``(dtype, shape, stats)`` of one HDF5 dataset, read block by block
    (:func:`block_slices`) so memory stays bounded whatever its size."""
    dtype, convert = _numpy_dtype(ds)
    if ds.shape is None:  # HDF5 null dataspace
        return dtype, (), None
    shape = tuple(int(d) for d in ds.shape)
    if convert is None:
        return dtype, shape, None
    if math.prod(shape) == 0:
        return dtype, shape, summarize(convert(np.empty(shape, dtype=ds.dtype)))
    total: RunningStats | None = None
    for index in block_slices(shape, budget):
        block = convert(np.asarray(ds[index] if index else ds[()]))
        part = summarize(block)
        if part is None:
            return dtype, shape, None
        total = part if total is None else total.merge(part)
    return dtype, shape, total


# -- entry point -----------------------------------------------------------------------


#: The default limits (a frozen dataclass, safe to share).
DEFAULT_THRESHOLDS = Thresholds()


def inspect_weights(
    path: str | os.PathLike[str], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> WeightsReport:
    """Statistics and health flags of every weight in a saved model, read with h5py.

    Never runs or deserializes the model and never imports TensorFlow or Keras, so
    it also works when the model's custom classes are unavailable.

    Args:
        path: a ``.keras`` archive or an ``.h5``/``.hdf5`` file (a full legacy model
            or weights only, legacy or Keras 3 layout).
        thresholds: limits for the ``exploding`` flag (``dead`` is not checked on
            weights).

    Returns:
        A :class:`~kerinspect.report.WeightsReport`, one record per weight in file order.

    Raises:
        InputFileError: missing, not a regular file, or not a supported format (exit 3).
        ModelLoadError: the weights cannot be read (exit 4).
        PolicyError: an HDF5 link, external storage, a virtual dataset, a shape bomb,
            or an ambiguous or oversized zip member (exit 5).
    """
    from kerinspect import __version__

    mf = preflight(path)
    try:
        with _open_source(mf) as src:
            walker = _Walker()
            if src.layout == "keras3":
                _Keras3Reader(walker, src.config).read(src.root)
            else:
                _LegacyReader(walker, src.config).read(src.root)
            records = tuple(_record(e, thresholds) for e in _unique(walker.entries))
            warnings = tuple(src.warnings + walker.warnings)
            config = src.config
    except KerinspectError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise ModelLoadError(
            f"Cannot read the weights: {escape_text(str(e) or type(e).__name__, 300)}. "
            f"Received: path={escape_text(mf.path)}",
            rule="weights-unreadable",
        ) from e
    return WeightsReport(
        path=mf.path,
        format=mf.format,
        layout=src.layout,
        weights=records,
        thresholds=thresholds,
        model_name=_entry_name(config) if isinstance(config, dict) else None,
        model_class=_class_of(config),
        saved_with=src.saved_with,
        warnings=warnings,
        kerinspect_version=__version__,
    )


def _unique(entries: list[_Entry]) -> list[_Entry]:
    """Keep names unique: a repeated name (possible in odd files) becomes the layer
    path plus the dataset's HDF5 path, which is unique by construction."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    for e in entries:
        if counts[e.name] > 1:
            e.name = f"{e.layer}/{e.dataset.name.lstrip('/')}" if e.layer else e.dataset.name.lstrip("/")
    return entries


def _record(entry: _Entry, thresholds: Thresholds) -> WeightRecord:
    dtype, shape, running = dataset_stats(entry.dataset)
    stats = None if running is None else running.finalize()
    return WeightRecord(
        layer=entry.layer,
        name=entry.name,
        shape=shape,
        dtype=dtype,
        stats=stats,
        flags=tensor_flags(dtype, stats, thresholds, is_weight=True),
        norm=None if running is None else running.l2_norm(),
    )
