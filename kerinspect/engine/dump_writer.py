"""Phase 2 of a dump, in the worker: run the model and write the staged ``.npy`` files.

Runs untrusted model code, so it only ever opens the staging directory that
:func:`kerinspect.dump.prepare_dump` made; :func:`kerinspect.dump.publish_dump`
checks everything it wrote before anything reaches ``DIR``.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerinspect.dump.layout import (
    INPUT_KINDS,
    INPUTS_DIR,
    STORED_KINDS,
    input_file_name,
    show_path,
    tensor_file_name,
)
from kerinspect.engine.events import CallSite
from kerinspect.engine.selection import SelectingVisitor, storable, tensor_key
from kerinspect.engine.tensors import tensor_dtype, to_numpy
from kerinspect.errors import InferenceError, Message, OutputError, escape_text, msg
from kerinspect.safefs import O_NEW, open_dir, os_reason, preallocate, split_rel, write_all
from kerinspect.spec import RunSpec
from kerinspect.stats import RunningStats, summarize
from kerinspect.units import format_bytes

__all__ = ["dtype_text", "write_dump"]

ProgressFn = Callable[[int, int], None]

#: The hint of a dump that does not fit.
FEWER = msg("free some space or dump fewer layers ({layers}) or samples ({samples})")


def dtype_text(dtype: np.dtype) -> str:
    """A dtype as text that ``np.dtype()`` reads back: ``float32``, ``bool``, ``<U12``."""
    return dtype.name if dtype.kind in STORED_KINDS else dtype.str


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header numpy itself would write for a C-order array."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # a header above 64 KiB needs format 2.0
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


@dataclass
class _Slot:
    """One file being written: a selected tensor or a model input."""

    file: str  # relative to the staging dir: "X.npy" or "inputs/X.npy"
    shape: tuple[int, ...]  # per sample
    dtype: np.dtype
    meta: dict[str, Any]
    stats: RunningStats | None = None
    first: np.ndarray | None = None  # the first batch, until the files exist
    fd: int | None = None
    offset: int = 0

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def header(self, samples: int) -> bytes:
        return _npy_header(self.dtype, (samples, *self.shape))


def _storable_input(arr: np.ndarray, width: int) -> np.ndarray | None:
    """A fed batch as stored under ``inputs/``: strings become fixed-width ``U``/``S``."""
    if arr.dtype.kind in INPUT_KINDS:
        return arr
    if arr.dtype.kind == "O":
        flat = arr.reshape(-1)
        if all(isinstance(v, bytes) for v in flat):
            return arr.astype(f"S{max(width, 1)}")
        if all(isinstance(v, (str, bytes)) for v in flat):
            return np.array(
                [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat],
                dtype=f"U{max(width, 1)}",
            ).reshape(arr.shape)
        return None
    return storable(arr)


def _string_widths(feed: Any) -> dict[int, int]:
    """Longest string of each string input over the whole feed (one extra pass,
    only for models with string inputs), so their files can be preallocated."""
    idx = [i for i, r in enumerate(feed.records) if r.dtype == "string"]
    widths = dict.fromkeys(idx, 0)
    if idx:
        for batch in feed.batches():
            for i in idx:
                a = batch[i]
                if a.dtype.kind in "US":
                    widths[i] = max(widths[i], a.dtype.itemsize // (4 if a.dtype.kind == "U" else 1))
                else:
                    widths[i] = max([widths[i]] + [len(v) for v in a.reshape(-1)])
    return widths


class _DumpWriter(SelectingVisitor):
    """Visitor: buffers the first batch, then sizes, preallocates and fills the files."""

    def __init__(self, staging: str, patterns: Sequence[str], max_bytes: int, feed: Any):
        super().__init__(patterns)
        self.staging = staging
        self.max_bytes = max_bytes
        self.feed = feed
        self.samples = int(feed.samples)
        self.sfd = open_dir(staging)
        self.ifd: int | None = None
        self.input_slots: list[_Slot] = []
        self.skipped: list[dict[str, Any]] = []
        self.keys: set[str] = set()
        self.inputs: list[np.ndarray] = []
        self.widths: dict[int, int] = {}
        self.total = 0
        self.percentiles = False  # RunSpec percentiles: the manifest's stats give p01/p50/p99

    # the feed tells the writer what it fed
    def tee(self, batches: Iterator[list[np.ndarray]]) -> Iterator[list[np.ndarray]]:
        for batch in batches:
            self.inputs = batch
            yield batch

    def _produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        if self.first and not self._selected(site.path):
            return
        names = list(site.output_names)
        if len(names) != len(tensors):
            names = [f"output_{k}" for k in range(len(tensors))]
        for k, t in enumerate(tensors):
            if not self.first:
                slot = self.slots.get((site.index, k))
                if slot is not None:
                    self._write(slot, to_numpy(t) if t is not None else None, f"{site.path}:{names[k]}")
                continue
            meta = {
                "index": site.index,
                "layer": site.name,
                "path": site.path,
                "class_name": site.class_name,
                "call": site.call,
                "output": k,
                "output_name": names[k],
            }
            if t is None:
                self.skipped.append({**meta, "source_dtype": None, "reason": "the layer produced no tensor"})
                continue
            source_dtype = tensor_dtype(t)
            arr = storable(to_numpy(t))
            reason = None
            if arr is None:
                reason = f"{source_dtype} values cannot be stored as .npy without pickle"
            elif arr.ndim == 0 or arr.shape[0] != self.rows:
                reason = "axis 0 is not the batch axis"
            if arr is None or reason is not None:
                self.skipped.append({**meta, "source_dtype": source_dtype, "reason": reason})
                continue
            key = tensor_key(site.path, names, k, site.index, self.keys)
            slot = _Slot(
                file=tensor_file_name(site.index, k, len(tensors), site.path, names[k]),
                shape=tuple(int(d) for d in arr.shape[1:]),
                dtype=arr.dtype,
                meta={"key": key, **meta, "source_dtype": source_dtype},
                stats=summarize(arr, spread=True, sketch=self.percentiles),  # axis 0: the batch (checked)
                first=arr,
            )
            self.slots[(site.index, k)] = slot

    def _write(self, slot: _Slot, arr: np.ndarray | None, what: str) -> None:
        stored = None if arr is None else storable(arr)
        if stored is None or stored.shape != (self.rows, *slot.shape) or stored.dtype != slot.dtype:
            got = "nothing" if stored is None else f"{stored.dtype} {tuple(stored.shape)}"
            raise InferenceError(
                f"Tensor {escape_text(what, 200)!r} changed between batches: it was {slot.dtype} "
                f"(batch, {', '.join(map(str, slot.shape))}) and is now {got}; cannot stack it.",
                rule="dump-shape",
                hint=msg("use {batch_size} equal to {samples}, or leave the layer out of {layers}"),
            )
        s = summarize(stored, spread=True, sketch=self.percentiles)
        if slot.stats is not None and s is not None:
            slot.stats.merge(s)
        self._pwrite(slot, stored)

    def _pwrite(self, slot: _Slot, arr: np.ndarray) -> None:
        assert slot.fd is not None
        data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        try:
            write_all(slot.fd, data, slot.offset + self.row0 * slot.row_bytes)
        except OSError as e:
            raise self._write_error(e) from None

    def _write_error(self, e: OSError) -> OutputError:
        return OutputError(
            f"Cannot write the dump: {os_reason(e)}; it needs {format_bytes(self.total)}. " + self._where(),
            rule="write-failed",
            hint=FEWER,
        )

    def _where(self) -> Message:
        return msg("Received: {out}={path}", path=show_path(os.path.dirname(self.staging)))

    def end_batch(self) -> None:
        if self.error is not None:
            raise self.error
        if self.first:
            self._allocate()
            self.first = False
        for i, (slot, batch) in enumerate(zip(self.input_slots, self.inputs)):
            stored = _storable_input(np.asarray(batch), self.widths.get(i, 0))
            if stored is None or stored.shape != (self.rows, *slot.shape):
                raise InferenceError(
                    f"Input {escape_text(slot.meta['name'], 100)!r} changed shape between batches",
                    rule="dump-shape",
                )
            self._pwrite(slot, stored.astype(slot.dtype, copy=False))
        self.row0 += self.rows

    def _allocate(self) -> None:
        """After the first batch: check patterns and size, create and fill the files."""
        self.check_matched(self.paths)
        for i, (record, batch) in enumerate(zip(self.feed.records, self.inputs)):
            stored = _storable_input(np.asarray(batch), self.widths.get(i, 0))
            if stored is None:
                raise InferenceError(
                    f"Input {escape_text(record.name, 100)!r} ({np.asarray(batch).dtype}) "
                    "cannot be saved without pickle",
                    rule="dump-input",
                )
            self.input_slots.append(
                _Slot(
                    file=f"{INPUTS_DIR}/{input_file_name(i, record.name)}",
                    shape=tuple(int(d) for d in stored.shape[1:]),
                    dtype=stored.dtype,
                    meta={
                        "name": record.name,
                        "model_dtype": record.dtype,
                        "source": record.source,
                        "seed": record.seed,
                    },
                )
            )
        slots = list(self.slots.values()) + self.input_slots
        self.total = sum(len(s.header(self.samples)) + self.samples * s.row_bytes for s in slots)
        if self.total > self.max_bytes:
            raise OutputError(
                msg(
                    "The dump would need {need} for {tensors} tensors and {inputs} inputs of {n} samples, "
                    "above {max_bytes}={limit}. ",
                    need=format_bytes(self.total),
                    tensors=len(self.slots),
                    inputs=len(self.input_slots),
                    n=self.samples,
                    limit=format_bytes(self.max_bytes),
                )
                + self._where(),
                rule="max-bytes",
                hint=msg("raise {max_bytes}, or dump fewer layers ({layers}) or samples ({samples})"),
            )
        free = shutil.disk_usage(self.staging).free
        if self.total > free:
            raise OutputError(
                f"The dump needs {format_bytes(self.total)} but only {format_bytes(free)} is free. "
                + self._where(),
                rule="disk-full",
                hint=FEWER,
            )
        try:
            if self.input_slots:
                os.mkdir(INPUTS_DIR, 0o755, dir_fd=self.sfd)
                self.ifd = open_dir(INPUTS_DIR, dir_fd=self.sfd)
            for s in slots:
                head, name = split_rel(s.file)
                s.fd = os.open(name, O_NEW, 0o644, dir_fd=self.ifd if head else self.sfd)
                header = s.header(self.samples)
                s.offset = len(header)
                preallocate(s.fd, s.offset + self.samples * s.row_bytes)
                write_all(s.fd, header, 0)
        except OSError as e:
            raise self._write_error(e) from None
        for s in self.slots.values():
            assert s.first is not None
            self._pwrite(s, s.first)
            s.first = None

    def draft_entries(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        tensors = []
        for s in sorted(self.slots.values(), key=lambda s: (s.meta["index"], s.meta["output"])):
            stats = None if s.stats is None else s.stats.finalize().to_dict()
            tensors.append(
                {
                    "file": s.file,
                    **s.meta,
                    "shape": [self.samples, *s.shape],
                    "dtype": dtype_text(s.dtype),
                    "stats": stats,
                }
            )
        inputs = [
            {"file": s.file, **s.meta, "shape": [self.samples, *s.shape], "dtype": dtype_text(s.dtype)}
            for s in self.input_slots
        ]
        return tensors, inputs

    def close(self) -> None:
        for s in list(self.slots.values()) + self.input_slots:
            if s.fd is not None:
                os.close(s.fd)
                s.fd = None
        for fd in (self.ifd, self.sfd):
            if fd is not None:
                os.close(fd)
        self.ifd = None


def write_dump(
    model: Any,
    feed: Any,
    job: Mapping[str, Any],
    run: RunSpec,
    *,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run ``model`` on ``feed`` and write the selected tensors into the staging dir.

    This is the phase that needs TensorFlow and runs untrusted model code; it
    only ever opens ``job["staging"]``. After the first batch it knows every
    selected tensor's per-sample shape and dtype: it checks the total size
    against ``job["max_bytes"]`` and the free space, preallocates one ``.npy``
    per tensor (``posix_fallocate``), then fills rows batch by batch with
    ``pwrite`` (not a memory map: mapped dirty pages count as resident memory,
    and a mapped write on a full disk is a SIGBUS, not an error). Inputs go to
    ``inputs/``. Nothing is deleted on failure: :func:`~kerinspect.dump.abort_dump` does that.

    Args:
        model: a built Keras model.
        feed: the :class:`~kerinspect.engine.inputs.Feed` to run.
        job: ``plan["write"]``: ``{"staging": path, "max_bytes": int, "layers": [patterns]}``.
        run: the run's :class:`~kerinspect.spec.RunSpec`, whole: its ``engine`` is how the
            batches after the first run (:class:`~kerinspect.engine.compiled.Chooser`;
            the draft's ``engine`` says which ran, its ``notes`` why the compiled one
            stopped, if it did), its ``depth`` which calls are reported.
        progress: called as ``progress(samples_done, samples_total)`` after each batch.

    Returns:
        The manifest draft (plain data) for :func:`~kerinspect.dump.publish_dump`.

    Raises:
        OutputError: too large, disk full, cannot write (exit 7).
        UsageError: a ``layers`` pattern matches no layer call.
        InferenceError: the model failed to run.
    """
    from kerinspect.engine.batches import EngineOutcome, run_batches
    from kerinspect.engine.inputs import Feed
    from kerinspect.engine.tfenv import import_keras

    keras = import_keras()
    try:
        writer = _DumpWriter(str(job["staging"]), list(job.get("layers") or ()), int(job["max_bytes"]), feed)
    except OSError as e:
        raise OutputError(
            f"Cannot open the staging directory: {os_reason(e)}. "
            f"Received: staging={show_path(str(job['staging']))}",
            rule="write-failed",
        ) from None
    writer.percentiles = run.percentiles
    caught: list[str] = []
    outcome = EngineOutcome()
    try:
        writer.widths = _string_widths(feed)
        teed = Feed(feed.records, feed.samples, feed.batch_size, lambda: writer.tee(feed.batches()))
        caught = run_batches(model, teed, writer, run, progress, outcome)
        if writer.row0 != writer.samples:  # pragma: no cover - a feed that lies about its size
            raise InferenceError(f"Fed {writer.row0} samples, expected {writer.samples}", rule="dump-shape")
    finally:
        writer.close()
    tensors, inputs = writer.draft_entries()
    return {
        "keras_version": keras.__version__,
        "model": {"name": model.name, "class_name": type(model).__name__},
        "samples": writer.samples,
        "batch_size": int(feed.batch_size),
        "inputs": inputs,
        "tensors": tensors,
        "skipped": writer.skipped,
        "warnings": caught,
        "engine": outcome.label,
        "notes": outcome.notes,
    }
