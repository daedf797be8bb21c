"""Activations in memory: the engine of ``dump``, writing into preallocated arrays.

:func:`collect_activations` replays a model batch by batch exactly as
:func:`~kerinspect.engine.dump_writer.write_dump` does (:func:`~kerinspect.engine.batches.run_batches`,
every layer call at every depth, attention probabilities as ``path:attention_scores``)
and names the tensors the same way (:func:`~kerinspect.engine.selection.tensor_key`),
but fills one numpy array per selected tensor instead of a ``.npy`` file. After the
first batch it knows each tensor's per-sample shape and dtype and allocates the
whole array once; each later batch is copied into its rows and dropped, so memory
holds the selected arrays plus one batch of the model's tensors, never every
activation at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerinspect.engine.events import CallSite
from kerinspect.engine.selection import SelectingVisitor, storable, tensor_key
from kerinspect.engine.tensors import to_numpy
from kerinspect.errors import InferenceError, OutputError, escape_text, msg
from kerinspect.spec import ProgressFn, RunSpec
from kerinspect.units import format_bytes

__all__ = ["Activations", "collect_activations"]


@dataclass
class Activations:
    """What :func:`collect_activations` gathered.

    Attributes:
        arrays: ``{key: array}`` in call order, every sample stacked on axis 0.
        skipped: ``{key: reason}`` for selected tensors that could not be stacked
            (no batch axis, strings).
        paths: every layer call's path, in call order (for messages).
        engine: which engines ran the batches (``eager``, ``eager, then compiled (CPU)``...).
        notes: why the compiled engine stopped, if it did.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    engine: str = "eager"
    notes: list[str] = field(default_factory=list)


@dataclass
class _Slot:
    key: str
    first: np.ndarray | None  # the first batch, until the array is allocated
    array: np.ndarray | None = None
    row_bytes: int = 0  # of one sample


class _ArrayCollector(SelectingVisitor):
    """Visitor: keeps the first batch of each selected tensor, then allocates and fills
    (errors are kept and re-raised by ``end_batch``, as in the dump writer)."""

    def __init__(self, patterns: Sequence[str], samples: int, max_bytes: int | None):
        super().__init__(patterns)
        self.samples = samples
        self.max_bytes = max_bytes
        self.keys: set[str] = set()
        self.out = Activations(paths=self.paths)

    def _produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        if not self.first:
            for k, t in enumerate(tensors):
                slot = self.slots.get((site.index, k))
                if slot is not None:
                    self._write(slot, None if t is None else storable(to_numpy(t)))
            return
        if not self._selected(site.path):
            return
        names = list(site.output_names)
        if len(names) != len(tensors):
            names = [f"output_{k}" for k in range(len(tensors))]
        for k, t in enumerate(tensors):
            key = tensor_key(site.path, names, k, site.index, self.keys)
            if t is None:
                self.out.skipped[key] = "the layer produced no tensor"
                continue
            arr = storable(to_numpy(t))
            if arr is None:
                self.out.skipped[key] = f"{to_numpy(t).dtype} values are not numbers"
            elif arr.ndim == 0 or arr.shape[0] != self.rows:
                self.out.skipped[key] = "axis 0 is not the batch axis"
            else:
                # a copy: the engine may reuse or release the tensor's buffer
                self.slots[(site.index, k)] = _Slot(key, np.array(arr, copy=True), row_bytes=arr[0].nbytes)

    def _write(self, slot: _Slot, arr: np.ndarray | None) -> None:
        target = slot.array
        assert target is not None
        if arr is None or arr.shape != (self.rows, *target.shape[1:]) or arr.dtype != target.dtype:
            got = "nothing" if arr is None else f"{arr.dtype} {tuple(arr.shape)}"
            raise InferenceError(
                f"Tensor {escape_text(slot.key, 200)!r} changed between batches: it was "
                f"{target.dtype} (batch, {', '.join(map(str, target.shape[1:]))}) and is now {got}; "
                "cannot stack it.",
                rule="activations-shape",
                hint=msg(
                    "pass {batch_size} equal to the number of samples, or leave the layer out of {layers}"
                ),
            )
        target[self.row0 : self.row0 + self.rows] = arr

    def end_batch(self) -> None:
        if self.error is not None:
            raise self.error
        if self.first:
            self._allocate()
            self.first = False
        self.row0 += self.rows

    def _allocate(self) -> None:
        self.check_matched(self.out.paths)
        total = sum(
            self.samples * int(np.prod(s.first.shape[1:], dtype=np.int64)) * s.first.dtype.itemsize
            for s in self.slots.values()
            if s.first is not None
        )
        if self.max_bytes is not None and total > self.max_bytes:
            raise OutputError(
                msg(
                    "The activations would need {need} for {tensors} tensors of {n} samples, "
                    "above {max_bytes}={limit}.",
                    need=format_bytes(total),
                    tensors=len(self.slots),
                    n=self.samples,
                    limit=format_bytes(self.max_bytes),
                ),
                rule="max-bytes",
                hint=msg("raise {max_bytes}, or select fewer layers ({layers}) or samples ({samples})"),
            )
        for s in self.slots.values():
            assert s.first is not None
            s.array = np.empty((self.samples, *s.first.shape[1:]), dtype=s.first.dtype)
            s.array[: self.rows] = s.first
            s.first = None

    def result(self) -> Activations:
        if self.row0 != self.samples:  # pragma: no cover - a feed that lies about its size
            raise InferenceError(
                f"Fed {self.row0} samples, expected {self.samples}", rule="activations-shape"
            )
        order = sorted(self.slots.items(), key=lambda kv: kv[0])
        self.out.arrays = {s.key: s.array for _, s in order if s.array is not None}
        return self.out


def collect_activations(
    model: Any, feed: Any, run: RunSpec, progress: ProgressFn | None = None
) -> Activations:
    """Run ``model`` on ``feed`` and return the selected tensors as arrays.

    Args:
        model: a built Keras model.
        feed: the :class:`~kerinspect.engine.inputs.Feed` to run.
        run: the run's :class:`~kerinspect.spec.RunSpec`, whole: its ``layers`` (glob
            patterns matched against layer paths; empty: every call), ``max_bytes``
            (refuse, before allocating, to hold more than this), ``engine`` (how the
            batches after the first run, as in
            :func:`~kerinspect.engine.dump_writer.write_dump`) and ``depth``.
        progress: called as ``progress(samples_done, samples_total)`` after each batch.

    Returns:
        The :class:`Activations`.

    Raises:
        UsageError: a pattern of ``layers`` matches no layer call.
        OutputError: the arrays would need more than ``max_bytes``.
        InferenceError: the model failed to run, or a tensor changed shape between batches.
    """
    from kerinspect.engine.batches import EngineOutcome, run_batches

    collector = _ArrayCollector(run.layers, int(feed.samples), run.max_bytes)
    outcome = EngineOutcome()
    run_batches(model, feed, collector, run, progress, outcome)
    got = collector.result()
    got.engine, got.notes = outcome.label, outcome.notes
    return got
