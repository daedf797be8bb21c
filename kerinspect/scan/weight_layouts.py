"""Reading the two HDF5 layouts of Keras weights, one checked link at a time.

:class:`Walker` visits groups and datasets without ever following a soft or
external link, visits a hard-linked object once and bounds nesting and link
count; every dataset passes :func:`check_dataset` before it is kept.
:class:`Keras3Reader` (``layers/<key>/vars/<i>``) and :class:`LegacyReader`
(``model_weights/<layer>/.../<var>:0``) name what they find the way the
``summary`` report does. Used by :func:`kerinspect.scan.weights.inspect_weights`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerinspect.errors import ModelLoadError, PolicyError, escape_text
from kerinspect.scan.container import Limits, dataset_problem
from kerinspect.scan.weight_names import (
    BY_FOLDED,
    MAX_DEPTH,
    RNN_LAYERS,
    Scope,
    class_of,
    entry_name,
    find_chain,
    fold,
    inner_config,
    var_names,
)

#: The container limits, the static scan's own: zip members (count, duplicates,
#: encryption, compression, bombs), HDF5 datasets, and configs larger than
#: ``max_config_bytes`` / ``max_metadata_bytes`` are not parsed (names then come
#: from the file alone).
LIMITS = Limits()
#: Walk limits: links visited (nesting: :data:`~kerinspect.scan.weight_names.MAX_DEPTH`).
MAX_LINKS = 1_000_000

#: Top-level groups of a Keras 3 weights file that hold no model weights: the
#: optimizer's slots and the compiled metrics' counters (``metrics/mean/vars/1``,
#: kept by Keras 2.13-2.15 ``.keras`` files), listed apart as training state, never
#: read as (or flagged like) weights of the model.
_NOT_MODEL_STATE = frozenset({"optimizer", "metrics"})
#: The legacy layout's optimizer group, beside ``model_weights``.
LEGACY_OPTIMIZER = "optimizer_weights"


# -- HDF5 access --------------------------------------------------------------------


@dataclass
class Entry:
    layer: str
    name: str
    dataset: Any  # h5py.Dataset


class Walker:
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
        self.entries: list[Entry] = []
        #: training state, by kind (``optimizer``, ``metrics``): ``(name, dataset)``
        self.state: dict[str, list[tuple[str, Any]]] = {"optimizer": [], "metrics": []}

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
        self.entries.append(Entry(layer, name, dataset))

    def add_state(
        self, kind: str, group: Any, prefix: str, depth: int, order: list[str] | None = None
    ) -> None:
        """Every dataset under ``group`` as training state of ``kind``, named
        ``<prefix>/<path>``: in ``order`` (variable names, a legacy group's
        ``weight_names``) first, then by path with numbers in numeric order."""
        found = dict(self.datasets(group, depth))
        by_base = {_strip_index(rel): rel for rel in found}
        ordered = [by_base[b] for b in dict.fromkeys(_strip_index(n) for n in order or ()) if b in by_base]
        ordered += sorted((rel for rel in found if rel not in ordered), key=_path_key)
        for rel in ordered:
            check_dataset(found[rel])
            self.state[kind].append((f"{prefix}/{_strip_index(rel)}", found[rel]))


def has_backslash_paths(h5: Any) -> bool:
    """True when the top-level group names hold ``\\`` joins (``layers\\dense``): a
    Keras 3 layout weights file written by tf.keras 2.13-2.15 on Windows."""
    return any("\\" in key for key in h5.keys())


def normalized_copy(src: Any, dst: Any, *, training_state: bool = True) -> bool:
    """Copy the groups and datasets of the weights file ``src`` into the empty file
    ``dst`` with Keras 3's names: a name joined with ``\\`` (``layers\\dense``) becomes
    nested groups (``layers/dense``). Without ``training_state`` the top-level
    ``optimizer`` and ``metrics`` groups are left out.

    Every link is checked before it is followed and every dataset before it is copied
    (:class:`Walker`, :func:`check_dataset`); datasets are copied by libhdf5 (no values
    pass through memory). Returns whether any name had a backslash."""
    import h5py

    walker = Walker()
    backslash = False

    def copy_group(group: Any, target: Any, depth: int) -> None:
        nonlocal backslash
        for key, obj in walker.children(group, depth):
            parts = [p for p in key.split("\\") if p] or [key]
            backslash |= len(parts) > 1
            if not training_state and depth == 0 and parts[0] in _NOT_MODEL_STATE:
                continue
            parent = target.require_group("/".join(parts[:-1])) if len(parts) > 1 else target
            if isinstance(obj, h5py.Dataset):
                check_dataset(obj)
                group.copy(obj, parent, name=parts[-1])
            else:
                copy_group(obj, parent.require_group(parts[-1]), depth + 1)

    copy_group(src, dst, 0)
    return backslash


def check_dataset(ds: Any) -> None:
    """Refuse a dataset that would make a read touch another file or allocate far
    more than the file stores. Reads only the dataset's metadata.

    The same check as the static scan's (:func:`kerinspect.scan.container.dataset_problem`).

    Raises:
        PolicyError: external storage (``hdf5-external-storage``), a virtual
            dataset (``hdf5-virtual-dataset``), a filter needing a plugin
            (``hdf5-filter``) or a shape bomb (``hdf5-shape-bomb``).
    """
    problem = dataset_problem(ds, ds.name, LIMITS, "The weights file")
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


def attr_string(attrs: Any, name: str) -> str | None:
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
    return None if vars_group is None else attr_string(vars_group.attrs, "name")


# -- Keras 3 layout ------------------------------------------------------------------


class Keras3Reader:
    """Names the datasets of a Keras 3 weights file (``layers/<key>/vars/<i>``)."""

    def __init__(self, walker: Walker, config: Any):
        self.w = walker
        self.config = config

    def read(self, root: Any) -> None:
        top_class = class_of(self.config)
        for key, child in self.w.groups(root, 0):
            if key == "vars":
                self.own_vars(child, "", [], top_class, inner_config(self.config), 1)
            elif key == "layers":
                self.layers(child, [], Scope.of(self.config), 1)
            elif key in _NOT_MODEL_STATE:
                self.w.add_state(key, child, key, 1)
            else:  # a subclassed model keeps its layers under attribute names
                self.layer(child, key, [], None, 1)

    def layers(self, container: Any, parents: list[str], scope: Scope | None, depth: int) -> None:
        children = list(self.w.groups(container, depth))
        if scope is not None:  # the config's layer order, not the file's alphabetical one

            def position(item: tuple[int, tuple[str, Any]]) -> tuple[int, int]:
                i, (key, child) = item
                name = _vars_name(child) or entry_name(scope.by_key.get(key) or {})
                return (0, scope.order[name]) if name in scope.order else (1, i)

            children = [c for _, c in sorted(enumerate(children), key=position)]
        for key, child in children:
            self.layer(child, key, parents, scope, depth + 1)

    def layer(self, group: Any, key: str, parents: list[str], scope: Scope | None, depth: int) -> None:
        name = _vars_name(group)
        cfg = None
        if scope is not None:
            cfg = scope.by_name.get(name) if name is not None else scope.by_key.get(key)
        if name is None:
            name = entry_name(cfg) if cfg is not None else None
        path = [*parents, name if name is not None else key]
        klass = class_of(cfg) or BY_FOLDED.get(fold(key))
        is_model = _hard_child(group, "layers") is not None
        for sub_key, child in sorted(self.w.groups(group, depth), key=_sub_order):
            if sub_key == "vars":
                self.own_vars(child, "/".join(path), [], klass, inner_config(cfg), depth + 1)
            elif is_model and sub_key == "layers":
                self.layers(child, path, Scope.of(cfg), depth + 1)
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
                self.own_vars(child, layer, [*rel, seg], klass, inner_config(cfg), depth + 1)
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


def _path_key(path: str) -> list[tuple[int, int | str]]:
    """``vars/10`` after ``vars/9``: each segment compared as a number when it is one."""
    return [_int_key(seg) for seg in path.split("/")]


def _sub_class(parent_class: str | None, parent_cfg: Any, key: str, seg: str) -> tuple[str | None, Any]:
    """Class (and config, when the parent's config holds it) of a sub-object."""
    inner = inner_config(parent_cfg)
    sub_cfg = None
    if key == "forward_layer":
        sub_cfg = inner.get("layer")
    elif key == "backward_layer":
        sub_cfg = inner.get("backward_layer") or inner.get("layer")
    elif isinstance(inner.get(key.lstrip("_")), dict):
        sub_cfg = inner.get(key.lstrip("_"))
    klass = class_of(sub_cfg)
    if klass is None and parent_class in RNN_LAYERS and key == "cell":
        return RNN_LAYERS[parent_class], parent_cfg  # an LSTM's config holds its cell's options
    if klass is None:
        for candidate in (seg, key.lstrip("_"), re.sub(r"^(forward|backward)_", "", seg)):
            klass = BY_FOLDED.get(fold(candidate))
            if klass is not None:
                break
    if klass is None and fold(key.lstrip("_")).endswith("dense"):
        klass = "EinsumDense"  # attention projections (query_dense, _key_dense...)
    if klass is not None and klass.endswith("Cell") and sub_cfg is None:
        sub_cfg = parent_cfg
    return klass, sub_cfg


# -- legacy layout -------------------------------------------------------------------


class LegacyReader:
    """Names the datasets of a legacy HDF5 file (``<layer>/<layer>/<var>:0``)."""

    def __init__(self, walker: Walker, config: Any):
        self.w = walker
        self.config = config
        self.scope = Scope.of(config)
        self.top_name = entry_name(config) if isinstance(config, dict) else None

    def read(self, root: Any) -> None:
        order = _attr_strings(root.attrs, "layer_names") or []
        groups = dict(self.w.groups(root, 1))
        optimizer = groups.pop(LEGACY_OPTIMIZER, None) if LEGACY_OPTIMIZER not in order else None
        for key in [k for k in order if k in groups] + sorted(k for k in groups if k not in order):
            self.layer(key, groups[key])
        if optimizer is not None:  # a weights-only file keeps it beside the layers
            self.optimizer(optimizer)

    def optimizer(self, group: Any) -> None:
        """The optimizer's variables (``optimizer_weights/Adam/dense/kernel/m:0``), in
        the order of the group's ``weight_names``."""
        order = _attr_strings(group.attrs, "weight_names")
        self.w.add_state("optimizer", group, LEGACY_OPTIMIZER, 2, order)

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
            inner = Scope.of(cfg)
            if inner is None:
                break
            found = find_chain(inner, segs[0])
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
