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
  (:data:`kerinspect.scan.weight_names.VAR_NAMES`), else stay ``vars/<i>``.
* Legacy (Keras 2 / tf.keras, and Keras 3's own ``.h5``):
  ``model_weights/<layer>/.../<var>:0`` with ``layer_names``/``weight_names``
  attributes; also weights-only files with those groups at the root.

Names follow the ``summary`` report: the layer path is ``outer/inner`` for layers
of nested models, and a weight's name is ``<layer path>/<variable path>``
(``lstm/lstm_cell/kernel``, ``mha/query/bias``).

Safety: every link is checked before it is followed (soft and external links are
refused, never opened), datasets with external storage or virtual sources are
refused before anything is read, and so are "shape bombs" (a dataset declaring far
more data than the file stores). A ``.keras`` archive's central directory passes
the static scan's member checks first (:func:`kerinspect.scan.container.check_members`:
duplicates, encryption, compression, bombs), with the same limits and rule ids.
This is a reader's own guard, not a full scan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from kerinspect.errors import KerinspectError, ModelLoadError, PolicyError, escape_text
from kerinspect.report import OptimizerStep, StateVariable, Thresholds, WeightRecord, WeightsReport
from kerinspect.scan.blocks import block_slices
from kerinspect.scan.container import (
    CONFIG_MEMBER,
    METADATA_MEMBER,
    WEIGHTS_H5_MEMBER,
    WEIGHTS_NPZ_MEMBER,
    Reporter,
    ZipWindow,
    check_members,
    show,
    stored_member_start,
)
from kerinspect.scan.optimizer_state import step_record, trainable_updates, update_flags, weights_updates
from kerinspect.scan.preflight import ModelFile, preflight
from kerinspect.scan.weight_layouts import (
    LEGACY_OPTIMIZER,
    LIMITS,
    Entry,
    Keras3Reader,
    LegacyReader,
    Walker,
    attr_string,
    check_dataset,
    has_backslash_paths,
    normalized_copy,
)
from kerinspect.scan.weight_names import VAR_NAMES, class_of, entry_name, var_names
from kerinspect.spec import DEFAULT_MAX_UPDATE_RATIO, DEFAULT_MIN_UPDATE_RATIO
from kerinspect.stats import RunningStats, summarize
from kerinspect.verdicts import tensor_flags

__all__ = [
    "DEFAULT_THRESHOLDS",
    "VAR_NAMES",
    "block_slices",
    "check_dataset",
    "dataset_stats",
    "inspect_weights",
    "model_updates",
    "var_names",
]

WEIGHTS_MEMBER = WEIGHTS_H5_MEMBER


def _parse_json(raw: bytes | str, what: str, warnings: list[str]) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        warnings.append(f"{what} is not valid JSON ({escape_text(str(e), 120)}); names come from the file")
        return None


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
    """The member called ``name`` (names are unique: :func:`check_members` ran)."""
    infos = [i for i in zf.infolist() if i.filename == name]
    return infos[0] if infos else None


def _read_small(zf: zipfile.ZipFile, name: str, cap: int, warnings: list[str]) -> bytes | None:
    info = _only_member(zf, name)
    if info is None:
        return None
    if info.file_size > cap:
        warnings.append(f"{name} is {info.file_size:,} bytes (limit {cap:,}); not read")
        return None
    return zf.read(info)


def _member_file(
    zf: zipfile.ZipFile, raw: IO[bytes], info: zipfile.ZipInfo, stack: Any, rep: Reporter
) -> IO[bytes]:
    """A seekable file object over a zip member: in place when stored (the way Keras
    writes it), else decompressed in bounded chunks to an anonymous temporary file
    (its size is bounded by :func:`check_members`)."""
    if info.compress_type == zipfile.ZIP_STORED:
        start = stored_member_start(raw, info)
        if start is None:
            rep.malformed(
                "not-a-zip",
                f"The .keras archive is corrupt: no local header for member '{show(info.filename)}'.",
            )
        if start + info.file_size > os.fstat(raw.fileno()).st_size:
            rep.malformed(
                "not-a-zip", f"The .keras archive is truncated: member '{show(info.filename)}' is cut short."
            )
        return stack.enter_context(ZipWindow(raw, start, info.file_size))
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
            rep = Reporter(mf.path)
            check_members(zf.infolist(), LIMITS, rep, "The .keras archive")
            info = _only_member(zf, WEIGHTS_MEMBER)
            if info is None:
                other = WEIGHTS_NPZ_MEMBER in zf.namelist()
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
            config_raw = _read_small(zf, CONFIG_MEMBER, LIMITS.max_config_bytes, warnings)
            config = _parse_json(config_raw, CONFIG_MEMBER, warnings) if config_raw is not None else None
            meta_raw = _read_small(zf, METADATA_MEMBER, LIMITS.max_metadata_bytes, warnings)
            meta = _parse_json(meta_raw, METADATA_MEMBER, warnings) if meta_raw is not None else None
            saved_with = meta.get("keras_version") if isinstance(meta, dict) else None
            fileobj = _member_file(zf, raw, info, stack, rep)
            h5 = stack.enter_context(h5py.File(fileobj, "r", locking=False))
            if has_backslash_paths(h5):  # tf.keras 2.13-2.15 on Windows: read a copy named with /
                spool = stack.enter_context(tempfile.TemporaryFile())
                fixed = stack.enter_context(h5py.File(spool, "w", locking=False))
                normalized_copy(h5, fixed)
                warnings.append(
                    "the weights file names its groups with backslashes (tf.keras on Windows); read as /"
                )
                h5 = fixed
            yield _Source(h5, "keras3", h5, config, _str_or_none(saved_with), warnings)
            return
        h5 = stack.enter_context(h5py.File(mf.path, "r", locking=False))
        config = None
        if "model_config" in h5.attrs:
            size = h5.attrs.get_id("model_config").get_storage_size()
            if size > LIMITS.max_config_bytes:
                warnings.append(
                    f"model_config is {size:,} bytes (limit {LIMITS.max_config_bytes:,}); not read"
                )
            else:
                text = attr_string(h5.attrs, "model_config")
                config = _parse_json(text, "model_config", warnings) if text is not None else None
        saved_with = attr_string(h5.attrs, "keras_version")
        link = h5.get("model_weights", getlink=True)
        if link is not None:
            if not isinstance(link, h5py.HardLink):
                raise PolicyError(
                    "HDF5 file contains a link at /model_weights; links are never followed.", rule="hdf5-link"
                )
            root = h5["model_weights"]
            saved_with = saved_with or attr_string(root.attrs, "keras_version")
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


def _numpy_dtype(ds: Any) -> tuple[str, Callable[[np.ndarray], np.ndarray] | None]:
    """The dtype name to report and a function that makes a read block numeric
    (None when the values cannot be summarised)."""
    dt = ds.dtype
    tagged = attr_string(ds.attrs, "dtype")
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
#: Why a legacy file's update ratios are null.
LEGACY_NOT_READ = "a legacy .h5 file's optimizer state is not read: no update ratios"


def inspect_weights(
    path: str | os.PathLike[str],
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    min_update_ratio: float = DEFAULT_MIN_UPDATE_RATIO,
    max_update_ratio: float = DEFAULT_MAX_UPDATE_RATIO,
) -> WeightsReport:
    """Statistics and health flags of every weight in a saved model, read with h5py.

    Never runs or deserializes the model and never imports TensorFlow or Keras, so
    it also works when the model's custom classes are unavailable.

    Args:
        path: a ``.keras`` archive or an ``.h5``/``.hdf5`` file (a full legacy model
            or weights only, legacy or Keras 3 layout).
        thresholds: limits for the ``exploding`` flag (``dead`` is not checked on
            weights).
        min_update_ratio, max_update_ratio: limits of a weight's ``update_ratio``, the
            size of the optimizer's last step relative to the weight, computed from the
            saved optimizer state (:mod:`kerinspect.scan.optimizer_state`).

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
            walker = Walker()
            if src.layout == "keras3":
                Keras3Reader(walker, src.config).read(src.root)
            else:
                legacy = LegacyReader(walker, src.config)
                legacy.read(src.root)
                optimizer = _legacy_optimizer(src) if src.root is not src.h5 else None
                if optimizer is not None:
                    legacy.optimizer(optimizer)
            entries = _unique(walker.entries)
            records = [_record(e, thresholds) for e in entries]
            if src.layout == "keras3":
                ratios, step = weights_updates(
                    [(r.layer, r.name, r.dtype, e.dataset) for r, e in zip(records, entries)],
                    [ds for _, ds in walker.state["optimizer"]],
                    src.config,
                    src.saved_with,
                )
            else:
                ratios = [None] * len(records)
                step = step_record(reason=LEGACY_NOT_READ if walker.state["optimizer"] else None)
            records = [
                dataclasses.replace(
                    r,
                    update_ratio=u,
                    flags=r.flags + update_flags(u, r.shape, min_update_ratio, max_update_ratio),
                )
                for r, u in zip(records, ratios)
            ]
            state = {
                kind: tuple(_state(name, ds) for name, ds in found) for kind, found in walker.state.items()
            }
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
        weights=tuple(records),
        thresholds=thresholds,
        model_name=entry_name(config) if isinstance(config, dict) else None,
        model_class=class_of(config),
        saved_with=src.saved_with,
        warnings=warnings,
        kerinspect_version=__version__,
        optimizer=state["optimizer"],
        metrics=state["metrics"],
        optimizer_step=step,
        min_update_ratio=min_update_ratio,
        max_update_ratio=max_update_ratio,
    )


def model_updates(
    path: str | os.PathLike[str], weights: list[Any]
) -> tuple[list[float | None], OptimizerStep]:
    """``update_ratio`` of each of a loaded model's trainable variables (``weights``: their
    values, in ``model.trainable_variables`` order) from the optimizer state saved in its
    file, and the record of what was computed (``gradients``: the same arithmetic as
    :func:`inspect_weights`, :mod:`kerinspect.scan.optimizer_state`)."""
    mf = preflight(path)
    if mf.format != "keras":
        return [None] * len(weights), step_record(reason=LEGACY_NOT_READ)
    with _open_source(mf) as src:
        walker = Walker()
        Keras3Reader(walker, src.config).read(src.root)
        state = [ds for _, ds in walker.state["optimizer"]]
        return trainable_updates(weights, state, src.config, src.saved_with)


def _legacy_optimizer(src: _Source) -> Any:
    """The ``optimizer_weights`` group beside a legacy file's ``model_weights``, or
    None; a link there is refused, never followed."""
    import h5py

    link = src.h5.get(LEGACY_OPTIMIZER, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise PolicyError(
            f"HDF5 file contains a link at /{LEGACY_OPTIMIZER}; links are never followed.", rule="hdf5-link"
        )
    group = src.h5[LEGACY_OPTIMIZER]
    return group if isinstance(group, h5py.Group) else None


def _state(name: str, dataset: Any) -> StateVariable:
    """A training-state variable: its name, shape and dtype (its values are not read)."""
    dtype, _ = _numpy_dtype(dataset)
    shape = () if dataset.shape is None else tuple(int(d) for d in dataset.shape)
    return StateVariable(name=name, shape=shape, dtype=dtype)


def _unique(entries: list[Entry]) -> list[Entry]:
    """Keep names unique: a repeated name (possible in odd files) becomes the layer
    path plus the dataset's HDF5 path, which is unique by construction."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    for e in entries:
        if counts[e.name] > 1:
            e.name = f"{e.layer}/{e.dataset.name.lstrip('/')}" if e.layer else e.dataset.name.lstrip("/")
    return entries


def _record(entry: Entry, thresholds: Thresholds) -> WeightRecord:
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
