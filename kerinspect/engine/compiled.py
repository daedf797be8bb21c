"""The compiled engine: each batch is one ``tf.function`` call that returns only
small arrays of partial statistics, computed where the tensors are (on the GPU
when TensorFlow has one).

The instrumented forward pass is the same :class:`~kerinspect.engine.trace.Replayer`
as the eager engine's, run once inside a ``tf.function`` trace (``traced=True``):
naming, deep capture (``Layer.__call__`` hook) and attention capture happen at
trace time, so the report has exactly the rows of an eager run. At trace time a
:class:`_Recorder` (the replay's visitor) records the events the replay reports
and, for every tensor a call produces (and every input that no reported call
produced), builds :func:`tensor_partials`: the batch's counts, sums, extremes,
per-unit activity, per-sample sums and saturated values, as graph operations.
Every batch then runs the traced graph; :func:`play` hands the recorded events to
the :class:`~kerinspect.engine.statistics.StatsCollector` with the partials of that
batch, and the host merges them across batches in float64 exactly as the eager
engine's statistics (:func:`kerinspect.stats.from_partials`).

Precision: each batch's mean and M2 are two passes on the device (the sum, then the
sum of squared deviations from that mean: no cancellation). float32 tensors are
reduced in float32 (TensorFlow's reductions add in a tree, relative error ~1e-7
per batch), float64 and integer tensors in float64, float16/bfloat16 cast to
float32 first; the mean's rounding is taken off M2 on the host (:func:`summary_of`).
A batch whose sums are not finite (NaN, Inf, or an overflow of exploding values) and
the rest of the run go to the eager engine, whose float64 statistics mask and count
them (:class:`NonFinite`). The tests compare both engines, and each with numpy
statistics of plain-Keras outputs (relative 2e-3).

Anything that cannot be traced (a custom ``call`` that reads tensor values in
Python, a shape the graph cannot know) raises :class:`NotCompiled`; the caller
falls back to the eager engine and says why in one note.

Whole tensors (``dump``, :func:`kerinspect.activations`): after an eager first batch
has chosen them, the same trace returns those tensors themselves and nothing else
(:class:`_Recorder` ``fetch``), played into the visitor by :func:`play_fetched`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from kerinspect.engine import kernel
from kerinspect.engine.events import CallSite, Visitor
from kerinspect.engine.statistics import bounded_activation
from kerinspect.engine.tensors import tensor_dtype
from kerinspect.engine.tfenv import import_keras
from kerinspect.sketch import CELLS, SHIFT, Sketch
from kerinspect.spec import (
    AUTO_COMPILE_MAX_FETCH_BYTES,
    AUTO_COMPILE_MAX_TENSOR_BYTES,
    AUTO_COMPILE_MIN_BATCHES,
    RunSpec,
)
from kerinspect.stats import BOUNDED, SATURATION_MARGIN, RunningStats, from_partials

keras = import_keras()
import tensorflow as tf  # noqa: E402 - imported (quietly) by import_keras

#: Bytes of tensors whose statistics the graph may leave pending while the next layer
#: calls run (:meth:`_Recorder.gate`): a call whose outputs reach it is waited for before
#: the next call (ResNet50, batch 16: its 51 MB outputs after each call, the 13-26 MB ones
#: every two or three calls); the small tensors of a transformer every few dozen.
GATE_BYTES = 32 << 20

#: Positions per sample (the middle axes' size) from which, and up to which, a tensor's
#: per-sample sums and non-zero counts are matrix products (:func:`_position_sums`):
#: below 128 ``reduce_sum`` is as fast (ResNet50's 7x7 maps: 4 ms against 7 ms, batch
#: 16); float32 counts of one sample's positions are exact below 2**24.
MATMUL_POSITIONS = (128, 1 << 24)


class NotCompiled(Exception):
    """The model cannot run in the compiled engine; the message says why (one line)."""


class BatchNeedsEager(NotCompiled):
    """This batch's values need the eager engine (the model itself traced and ran): it
    and the rest of the run go eagerly, also when ``--engine compiled`` was asked for."""


class NonFinite(BatchNeedsEager):
    """A batch holds NaN or Inf, or finite values whose float32 sums overflow: the
    eager engine's float64 statistics count, mask and add them exactly."""


def _reduced_dtype(dtype: tf.DType) -> tf.DType | None:
    """The dtype a tensor's statistics are reduced in; None: not summarised."""
    if dtype == tf.float64 or dtype.is_integer or dtype == tf.bool:
        return tf.float64
    if dtype.is_floating:  # float32, and float16/bfloat16/float8 exactly in float32
        return tf.float32
    return None


def tensor_partials(
    x: Any, bounds: str | None, vectors: bool = False, sketch: bool = False
) -> dict[str, Any]:
    """Graph operations for one batch's partial statistics of ``x`` (see the module's
    docstring), as few as the statistics allow: each operation costs the runtime a
    dispatch per batch, and the trace some Python (about 40 a tensor before, under 20 now).
    ``shape`` only for a tensor that is not summarised (strings).

    A tensor of rank >= 2 (units on the last axis, samples on the first) is first summed
    over its middle axes (samples x units, in the reduced dtype; with its non-zero counts,
    a matrix product with ones where a sample has :data:`MATMUL_POSITIONS` positions,
    :func:`_position_sums`); from those sums, in
    float64, ``units`` is each unit's mean and M2 over the samples of their per-sample
    means (the spread across samples), from which the host also takes the total. The
    full tensor is read by that sum, the squared deviations from the batch mean (M2),
    the extremes and the per-unit non-zero counts (``nonzero``: zeros and dead units
    both); ``moments`` is ``[mean, m2, low, high]`` in the reduced dtype. Only arrays of
    one value per unit or fewer come back, but for ``vectors`` (a labelled run, float
    tensors): each sample's mean over the middle axes in float64, ``(samples, units)``,
    as :func:`kerinspect.engine.separability.sample_vectors` computes it eagerly.
    ``sketch`` (a call's output, float, when the run asks for percentiles): the counts
    per bucket of :mod:`kerinspect.sketch` (``cells``), from :func:`sketch_cells`.
    Nothing is judged here: :func:`finite_partials` checks that the sums are finite."""
    shape = tf.shape(x, out_type=tf.int64)
    wide = _reduced_dtype(x.dtype)
    if wide is None:
        return {"shape": shape}
    rank = x.shape.rank
    if rank is None:
        raise NotCompiled("an output of unknown rank (its units are not known when traced)")
    v = tf.cast(x, wide)  # no operation when x already is
    out: dict[str, Any] = {"shape": shape}
    fused = _fused_kernel() if kernel.reads(x.dtype.name, rank) else None
    if fused is not None:  # one read for all of it (engine/kernel), float64 throughout
        sums, out["units"], out["nonzero"], out["moments"] = fused.kerinspect_activation_stats(x)
        if vectors:  # each sample's mean over the middle axes, float64
            out["vectors"] = _sample_means(x, shape, sums)
        return _bounded_and_sketch(out, x, v, rank, bounds, sketch)
    nonzero = tf.not_equal(x, tf.zeros([], x.dtype))  # NaN is non-zero, as in numpy
    if rank >= 2:
        static = x.shape[1:-1].num_elements()  # positions each per-sample sum adds
        if rank > 2 and static is not None and MATMUL_POSITIONS[0] <= static < MATMUL_POSITIONS[1]:
            # (samples, positions, units): both sums are one matrix product with ones
            cube = tf.stack([shape[0], static, shape[-1]])
            sums = _position_sums(tf.reshape(v, cube), static)
            counts = _position_sums(tf.reshape(tf.cast(nonzero, tf.float32), cube), static)
            out["nonzero"] = tf.reduce_sum(tf.cast(counts, tf.int32), axis=0)  # exact: each < 2**24
        else:
            sums = tf.reduce_sum(v, axis=list(range(1, rank - 1))) if rank > 2 else v
            # int32 counts (a 4-byte temporary, not count_nonzero's int64); exact below 2**31
            out["nonzero"] = tf.reduce_sum(tf.cast(nonzero, tf.int32), axis=list(range(rank - 1)))
        total = tf.reduce_sum(sums)
        _unit_spread(out, x, shape, sums)
    else:
        total = tf.reduce_sum(v)
        out["total"] = total
        out["nonzero"] = tf.reduce_sum(tf.cast(nonzero, tf.int32))
    mean = total / tf.cast(tf.size(v, out_type=tf.int64), wide)  # NaN when empty (M2 is 0 then)
    m2 = tf.reduce_sum(tf.math.squared_difference(v, mean))
    out["moments"] = tf.stack([mean, m2, tf.reduce_min(v), tf.reduce_max(v)])
    _bounded_and_sketch(out, x, v, rank, bounds, sketch)
    if vectors and x.dtype.is_floating and rank >= 1:
        wide64 = tf.cast(x, tf.float64)
        if rank == 1:
            out["vectors"] = tf.reshape(wide64, [-1, 1])
        else:
            out["vectors"] = tf.reduce_mean(wide64, axis=list(range(1, rank - 1))) if rank > 2 else wide64
    return out


def _sample_means(x: Any, shape: Any, sums: Any) -> Any:
    """Each sample's mean over the middle axes, float64 (``sums``: samples x units,
    summed over those axes)."""
    static = x.shape[1:-1].num_elements()  # positions each per-sample sum adds
    if static is not None:
        middle: Any = float(max(static, 1))
    else:
        middle = tf.maximum(tf.cast(tf.reduce_prod(shape[1:-1]), tf.float64), 1.0)
    return tf.cast(sums, tf.float64) / middle


def _unit_spread(out: dict[str, Any], x: Any, shape: Any, sums: Any) -> None:
    """``out["units"]``: each unit's mean and M2 over the samples of their means over
    the middle axes (:func:`_sample_means`), in float64."""
    means = _sample_means(x, shape, sums)
    unit_mean = tf.reduce_mean(means, axis=0)
    out["units"] = tf.stack([unit_mean, tf.reduce_sum(tf.math.squared_difference(means, unit_mean), axis=0)])


def _bounded_and_sketch(
    out: dict[str, Any], x: Any, v: Any, rank: int, bounds: str | None, sketch: bool
) -> dict[str, Any]:
    """The saturated count (a bounded activation) and the sketch (percentiles) of
    :func:`tensor_partials`, added to ``out``."""
    if bounds in BOUNDED and not (bounds == "softmax" and rank < 2):
        out["saturated"] = _saturated(v, bounds)
    if sketch and x.dtype.is_floating:
        out["cells"] = sketch_cells(x)
    return out


_FUSED: list[Any] = []


def _fused_kernel() -> Any:
    """The fused statistics kernel (:mod:`kerinspect.engine.kernel`) when it is built and
    the tensors are on the CPU (it has no GPU kernel); else None. Looked up once."""
    if not _FUSED:
        _FUSED.append(kernel.load() if device() == "CPU" else None)
    return _FUSED[0]


def _position_sums(cube: Any, positions: int) -> Any:
    """``(samples, positions, units)`` summed over its positions, ``(samples, units)``:
    a batched product with a row of ones (one read of ``cube``, 2-3x faster on a CPU
    than ``reduce_sum`` over the middle axes, which reads the tensor column by column)."""
    ones = tf.ones([1, 1, positions], cube.dtype)  # broadcast over the samples
    return tf.squeeze(tf.matmul(ones, cube), axis=1)


def sketch_cells(x: Any) -> Any:
    """The counts per bucket of :mod:`kerinspect.sketch` of the float tensor ``x``, all
    :data:`~kerinspect.sketch.CELLS` of them (int32), as
    :func:`kerinspect.sketch.count_cells` gives them: the float32 bits (float16/bfloat16
    widen exactly, float64 rounds as numpy rounds it) read as an unsigned integer and
    shifted right by :data:`~kerinspect.sketch.SHIFT` (a logical shift: one element-wise
    pass, the sign bit lands on the negative half), then one ``Bincount`` (not
    ``tf.math.bincount``, whose size from the data costs another pass). Integer
    operations: exactly numpy's counts. A batch's tensor holds fewer than 2**31 values."""
    f = x if x.dtype == tf.float32 else tf.cast(x, tf.float32)
    shifted = tf.bitwise.right_shift(tf.bitcast(f, tf.uint32), tf.constant(SHIFT, tf.uint32))
    index = tf.reshape(tf.bitcast(shifted, tf.int32), [-1])
    return tf.raw_ops.Bincount(arr=index, size=CELLS, weights=tf.zeros([0], tf.int32))


def _saturated(v: Any, bounds: str) -> Any:
    """Values within :data:`~kerinspect.stats.SATURATION_MARGIN` of the bounds of
    ``bounds`` (softmax: rows whose largest probability is at least 1 - margin)."""
    if bounds == "softmax":
        return tf.reduce_sum(tf.cast(tf.reduce_max(v, axis=-1) >= 1 - SATURATION_MARGIN, tf.int32))
    lo, hi = (-1.0, 1.0) if bounds == "tanh" else (0.0, 1.0)
    near = tf.logical_or(v >= hi - SATURATION_MARGIN, v <= lo + SATURATION_MARGIN)
    return tf.reduce_sum(tf.cast(near, tf.int32))


def finite_partials(part: dict[str, np.ndarray]) -> bool:
    """Whether one batch's fetched :func:`tensor_partials` have finite sums (no NaN,
    no Inf, no overflow of the reduced dtype): else the eager engine summarises it."""
    if "moments" not in part or not np.prod(part["shape"]):  # empty: nothing to sum
        return True
    sums = part["units"] if "units" in part else part["total"]
    return bool(np.isfinite(sums).all() and np.isfinite(part["moments"][1]))


def summary_of(part: dict[str, np.ndarray], rows: int, bounds: str | None) -> RunningStats | None:
    """The :class:`RunningStats` of one batch from its fetched :func:`tensor_partials`
    (whose sums are finite, :func:`finite_partials`: so is every value).

    The total (rank >= 2) is the float64 sum of the per-unit means times the values each
    stands for. M2 was taken around the mean as the device rounded it; the deviation of
    that mean from the exact one (``total / n``) adds ``n * delta**2``, taken off again
    (a data mean large against its spread: 1e4 + N(0, 1) in float32)."""
    shape = tuple(int(d) for d in part["shape"])
    if "moments" not in part:
        return None
    n = int(np.prod(shape))
    mean, m2, low, high = (float(m) for m in part["moments"])
    unit_moments = None
    if "units" in part:
        unit_moments = (part["units"][0], part["units"][1])
        total = float(np.sum(unit_moments[0], dtype=np.float64)) * (n // shape[-1]) if n else 0.0
    else:
        total = float(part["total"])
    delta = total / n - mean if n else 0.0
    nonzero = np.asarray(part["nonzero"], dtype=np.int64)
    sketch = Sketch.of_counts(part["cells"]) if "cells" in part else None
    return from_partials(
        shape,
        finite=n,
        total=total,
        m2=m2 - n * delta * delta,
        low=low,
        high=high,
        zeros=n - int(nonzero.sum()),
        nan=0,
        active=nonzero > 0 if len(shape) >= 2 else None,
        unit_moments=unit_moments,
        spread=len(shape) >= 1 and shape[0] == rows,
        bounds=bounds,
        saturated=int(part.get("saturated", 0)),
        sketch=sketch,
    )


class _Recorder(Visitor):
    """The replay's visitor during the trace: records every event, in order, and the
    graph operations of each partial summary (returned by the traced function).

    ``fetch`` (a :class:`~kerinspect.engine.selection.SelectingVisitor`'s
    ``fetch_keys()``): instead of statistics, the whole tensors of these ``(site index,
    output)`` are returned (``dump``, :func:`kerinspect.activations`); nothing else is."""

    def __init__(
        self,
        rows: int,
        fetch: set[tuple[int, int]] | None = None,
        vectors: bool = False,
        sketch: bool = False,
    ) -> None:
        self.rows = rows  # of the batch traced: the size of a dynamic axis 0, for gate
        self.fetch = fetch
        self.vectors = vectors  # a labelled run: each float output's per-sample vectors too
        self.sketch = sketch  # RunSpec percentiles: each float output's quantile sketch too
        self.events: list[tuple[Any, ...]] = []
        self._graph = tf.compat.v1.get_default_graph()  # the trace's (made in it)
        self.outputs: list[Any] = []  # what the traced function returns, by slot
        self._produced: dict[int, tuple[int, int]] = {}  # id(graph tensor) -> (site, output)
        self._keep: list[Any] = []  # the graph tensors named in _produced (ids stay theirs)
        self._bounds: dict[int, str | None] = {}
        self._pending: list[Any] = []  # statistics not yet waited for (see gate)
        self._pending_bytes = 0  # of the tensors they read
        # the outputs' bytes in a batch of ``rows``, from their static shapes, as the eager
        # engine's StatsCollector measures them (largest, largest_unfused); None where an
        # output's shape is not static but for axis 0
        self.largest: int | None = 0
        self.largest_unfused: int | None = 0

    def _slot(self, value: Any, of: Any = None) -> int:
        """``value`` (a dict of graph tensors) becomes output ``slot``; ``of``: the
        tensor whose statistics they are (its size counts towards :meth:`gate`)."""
        self.outputs.append(value)
        if isinstance(value, dict) and tf.compat.v1.get_default_graph() is self._graph:
            self._pending += [t for t in value.values() if isinstance(t, tf.Tensor)]
            if of is not None and of.shape.rank is not None:
                # the batch's inputs are static but for axis 0, and so are most outputs;
                # an axis of data-dependent size counts as 512
                dims = [(self.rows if i == 0 else 512) if d is None else d for i, d in enumerate(of.shape)]
                wide = _reduced_dtype(of.dtype) or of.dtype  # the temporaries' (never narrower)
                self._pending_bytes += int(np.prod(dims, dtype=np.int64)) * wide.size
        return len(self.outputs) - 1

    def enter(self, site: CallSite) -> None:
        self.events.append(("enter", site))

    def consumed(self, site: CallSite, op: Any, inputs: Sequence[Any]) -> None:
        if self.fetch is not None:  # whole tensors: what a call consumed is not kept
            return
        bounds = bounded_activation(op)
        self._bounds[site.index] = bounds
        refs: list[tuple[Any, ...]] = []
        for position, t in enumerate(inputs):
            if not (hasattr(t, "shape") and hasattr(t, "dtype")):
                continue
            source = self._produced.get(id(t))
            if source is not None:
                refs.append(("source", source))
                continue
            if not isinstance(t, tf.Tensor):  # numpy constants, Keras variables: their values
                try:
                    t = tf.convert_to_tensor(t)
                except (TypeError, ValueError):
                    continue
            dtype = tf.as_dtype(t.dtype)
            if not (dtype.is_floating or dtype.is_integer) or dtype == tf.bool:
                continue
            refs.append(("stats", self._slot(tensor_partials(t, None), t), tensor_dtype(t), position))
        self.events.append(("consumed", site, bounds, refs))

    def produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        slots: list[tuple[int, str] | None] = []
        for k, t in enumerate(tensors):
            if t is None:
                slots.append(None)
                continue
            if not isinstance(t, (tf.Tensor, tf.Variable)):
                raise NotCompiled(f"layer {site.path!r} returns a {type(t).__name__}, not a tensor")
            if self.fetch is not None:
                wanted = (site.index, k) in self.fetch
                slots.append((self._slot(tf.convert_to_tensor(t)), tensor_dtype(t)) if wanted else None)
                continue
            self._keep.append(t)
            self._produced[id(t)] = (site.index, k)
            self._measure(t)
            partials = tensor_partials(t, self._bounds.get(site.index), self.vectors, self.sketch)
            slots.append((self._slot(partials, t), tensor_dtype(t)))
        self.events.append(("produced", site, slots))

    def _measure(self, t: Any) -> None:
        """Fold ``t``'s bytes in a batch of :attr:`rows` into :attr:`largest` (and
        :attr:`largest_unfused`): None from an unknown size on (an unknown rank, an axis
        but 0 not static, strings)."""
        rank = t.shape.rank
        # axis 0 is the batch's (or a reshape's that merged it: the collector measures again)
        dims = [self.rows if d is None and i == 0 else d for i, d in enumerate(t.shape)] if rank else []
        static = [d for d in dims if d is not None]
        size = None
        if rank is not None and len(static) == len(dims) and t.dtype != tf.string:
            size = int(np.prod(static, dtype=np.int64)) * t.dtype.size
        self.largest = _larger(self.largest, size)
        if not kernel.reads(t.dtype.name, rank or 0):
            self.largest_unfused = _larger(self.largest_unfused, size)

    def model_output(self, site: CallSite, k: int) -> None:
        self.events.append(("model_output", site, k))

    def gate(self) -> list[Any]:
        """What the next call's operations wait for (see
        :meth:`~kerinspect.engine.trace.Replayer._gated`): the statistics not yet waited
        for, once the tensors they read hold :data:`GATE_BYTES`; until then nothing, so
        that the statistics of small tensors can run beside the next calls (the 4-block
        encoder, batch 16: 0.208 s a batch against 0.215 s with a gate after every call,
        medians of 30 alternating calls)."""
        if self._pending_bytes < GATE_BYTES:
            return []
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        return pending

    def attention(self, site: CallSite, capture: Any) -> None:
        from kerinspect.engine.attention import head_partials

        part = None
        if capture.probs is not None and self.fetch is None:
            if len(capture.probs.shape) != 4 or capture.valid is None:
                raise NotCompiled(f"attention of {site.path!r} is not 4-D")
            part = self._slot(head_partials(capture.probs, capture.valid, self.rows), capture.probs)
        check = None
        if capture.pending is not None:
            diff, scale, tol = capture.pending
            check = (self._slot({"diff": diff, "scale": scale}), tol)
        self.events.append(("attention", site, capture, part, check))


def _larger(sofar: int | None, size: int | None) -> int | None:
    """The larger of two sizes; None (unknown) if either is."""
    return None if sofar is None or size is None else max(sofar, size)


class CompiledReplay:
    """Runs batches of one model through one traced function (see the module's
    docstring). ``run`` is the run's :class:`~kerinspect.spec.RunSpec`."""

    def __init__(
        self,
        model: Any,
        run: RunSpec,
        fetch: set[tuple[int, int]] | None = None,
        vectors: bool = False,
        jit: bool = False,
    ):
        self.model = model
        self.run = run
        self.fetch = fetch  # see _Recorder
        self.vectors = vectors
        self.jit = jit  # the whole traced function compiled by XLA
        self.recorder: _Recorder | None = None
        self._fn: Any = None

    def _trace(self, batch: Sequence[np.ndarray]) -> None:
        from kerinspect.engine.trace import LayerCallError, Replayer

        recorder: _Recorder | None = None

        def forward(*inputs: Any) -> list[Any]:
            nonlocal recorder
            recorder = _Recorder(
                len(batch[0]) if batch else 1, self.fetch, self.vectors, self.run.percentiles
            )
            replay = Replayer(self.model, recorder, self.run, traced=True)
            replay(list(inputs))
            if replay.unreported:  # rows an eager run has: the compiled engine would lose them
                raise NotCompiled(
                    f"layer {replay.unreported[0]!r} is called inside a graph of its own "
                    "(a cond or loop body), which the compiled engine cannot report"
                )
            return recorder.outputs

        signature = [
            tf.TensorSpec((None, *a.shape[1:]), tf.string if a.dtype.kind in "OSU" else tf.as_dtype(a.dtype))
            for a in batch
        ]
        fn = tf.function(forward, input_signature=signature, autograph=False, jit_compile=self.jit or None)
        try:
            self._fn = fn.get_concrete_function()
        except NotCompiled:
            raise
        except LayerCallError as e:
            raise NotCompiled(f"layer {e.site.path!r} cannot be traced: {_one_line(e.cause)}") from e
        except Exception as e:  # noqa: BLE001 - any failure to trace: the eager engine runs instead
            raise NotCompiled(f"the model cannot be traced: {_one_line(e)}") from e
        self.recorder = recorder

    def traced(self, batch: Sequence[np.ndarray]) -> _Recorder:
        """The recorder of the function traced for ``batch``'s shapes (traced now if not yet)."""
        if self._fn is None:
            self._trace(batch)
        assert self.recorder is not None
        return self.recorder

    def __call__(self, batch: Sequence[np.ndarray]) -> list[Any]:
        """Run one batch; the fetched partials, by slot (numpy), or the fetched tensors
        (``fetch``: as the function returned them, which the visitor views, not copies)."""
        self.traced(batch)
        try:
            with _graph_optimizer_off():  # every call: the runtime keys its instantiation on it
                values = self._fn(*[tf.convert_to_tensor(a) for a in batch])
        except Exception as e:  # noqa: BLE001 - a graph that traced but does not run
            raise NotCompiled(f"the traced graph failed: {_one_line(e)}") from e
        if self.fetch is not None:
            return list(values)
        return [tf.nest.map_structure(np.asarray, v) for v in values]  # views, not copies


@contextlib.contextmanager
def _graph_optimizer_off() -> Iterator[None]:
    """Grappler off while the traced function runs (it is instantiated on its first call,
    and again whenever this setting differs). On the instrumented graph (thousands of
    statistics operations) it takes seconds (4.9 s of 6.8 s for a 4-block encoder) and
    gains little, since the captured tensors keep it from fusing the layers' operations
    (0.165 s against 0.175 s per batch)."""
    previous = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": previous})


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def play(recorder: _Recorder, values: list[Any], collector: Any, rows: int) -> None:
    """Hand one batch's recorded events to ``collector`` (a
    :class:`~kerinspect.engine.statistics.StatsCollector`) with that batch's partials.
    Everything that can send the batch to the eager engine (:class:`NonFinite`, an
    attention check that failed) is decided before ``collector`` is touched."""
    if not all(finite_partials(v) for v in values if isinstance(v, dict)):
        raise NonFinite(
            "a batch holds NaN or Inf values (or finite values whose float32 sums overflow), "
            "which the eager engine summarises exactly"
        )
    captures = _checked(recorder, values, [s.path for s in getattr(collector, "sites", ())])
    collector.start_batch(rows)
    for n, event in enumerate(recorder.events):
        kind = event[0]
        if kind == "enter":
            collector.enter(event[1])
        elif kind == "consumed":
            _, site, bounds, refs = event
            items = [
                ref
                if ref[0] == "source"
                else ("stats", summary_of(values[ref[1]], rows, None), ref[2], ref[3])
                for ref in refs
            ]
            collector.consumed_summaries(site, bounds, items)
        elif kind == "produced":
            _, site, slots = event
            bounds = collector.activations.get(site.index)
            outs = [
                None
                if slot is None
                else (
                    tuple(int(d) for d in values[slot[0]]["shape"]),
                    slot[1],
                    summary_of(values[slot[0]], rows, bounds),
                )
                for slot in slots
            ]
            collector.produced_summaries(site, outs)
            for k, slot in enumerate(slots):
                if slot is not None and "vectors" in values[slot[0]]:
                    collector.vectors(site, k, values[slot[0]]["vectors"])
        elif kind == "model_output":
            collector.model_output(event[1], event[2])
        elif kind == "attention":
            _, site, capture, part, _check = event
            collector.attention_partials(
                site, captures.get(n, capture), None if part is None else values[part]
            )
    collector.end_batch()


def _checked(recorder: _Recorder, values: list[Any], known: Sequence[str]) -> dict[int, Any]:
    """What can send a batch to the eager engine before a visitor sees it: the traced
    calls must be those of the batch before (``known``: their paths; empty when none
    ran), and each attention capture's check (its explicit path's output against the
    fused one) must pass. The judged captures, by event number."""
    from kerinspect.engine.attention import judged

    if known:  # a batch ran before (eagerly, or compiled): the same calls, in the same order
        entered = [e[1].path for e in recorder.events if e[0] == "enter"]
        if len(entered) != len(known) or entered != list(known):
            first = next((a for a, b in zip(entered, known) if a != b), "the number of calls")
            raise NotCompiled(f"the traced model reports other calls than the eager one (at {first!r})")
    captures: dict[int, Any] = {}
    for n, event in enumerate(recorder.events):
        if event[0] == "attention" and event[4] is not None:
            site, capture, (slot, tol) = event[1], event[2], event[4]
            decided = judged(capture, float(values[slot]["diff"]), float(values[slot]["scale"]), tol)
            if decided.probs is None:  # the eager engine reports it as unavailable
                raise BatchNeedsEager(f"attention of {site.path!r}: {decided.reason}")
            captures[n] = decided
    return captures


def play_fetched(recorder: _Recorder, values: list[Any], visitor: Any, rows: int) -> None:
    """Hand one batch's recorded calls to ``visitor`` (a
    :class:`~kerinspect.engine.selection.SelectingVisitor`, after its first batch) with
    the tensors it asked for (``fetch_keys``); None for the others, which it ignores."""
    _checked(recorder, values, visitor.paths)
    visitor.start_batch(rows)
    for event in recorder.events:
        if event[0] == "enter":
            visitor.enter(event[1])
        elif event[0] == "produced":
            _, site, slots = event
            visitor.produced(site, [None if slot is None else values[slot[0]] for slot in slots])
    visitor.end_batch()


def device() -> str:
    """``GPU`` when TensorFlow sees one (the traced function and its statistics run
    there), else ``CPU``."""
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


class Chooser:
    """Which engine runs each batch of one run (``engine``: ``compiled`` or ``auto``),
    and the compiled runs themselves, into ``collector``: a
    :class:`~kerinspect.engine.statistics.StatsCollector` (statistics), or a visitor that
    keeps whole tensors (``fetch_keys()``: ``dump``, :func:`kerinspect.activations`).

    Statistics. ``compiled``: every batch, from the first; a model that cannot be traced
    is one error (``not-compiled``). ``auto``: on a GPU, every batch of a run of two or
    more; on a CPU, every batch of a run of at least
    :data:`~kerinspect.spec.AUTO_COMPILE_MIN_BATCHES` batches whose largest output is at
    most :data:`~kerinspect.spec.AUTO_COMPILE_MAX_TENSOR_BYTES` (with the fused kernel of
    :mod:`kerinspect.engine.kernel` and no percentiles: its largest output that the
    kernel does not read, since the kernel leaves no temporaries: ResNet50, 256 samples,
    compiled 1.1x the floor, eagerly 2.6x). With the kernel, the trace tells those sizes
    from the outputs' static shapes before the first batch runs (running it eagerly to
    measure them cost ResNet50 2-4 s of its 21-29 s); where it cannot (an axis of
    data-dependent size) or they are too large, and without the kernel (where large
    outputs, and so a trace for nothing, are common), the first batch runs eagerly. After
    every batch, eager or compiled, its measured sizes decide the next: an axis 0 that a
    reshape merged with the batch is counted as the batch's in the trace, and corrected
    after one batch.
    The trace and first call cost about as much as a few eager batches (the 4-block
    encoder, batch 16, on 2 busy cores: a 2.6 s trace and a first call of about 1 s, then
    0.19-0.22 s a batch against 0.11-0.13 s for the plain model; 1,024 samples in
    ``make bench``: 26.8 s compiled, 56.0 s eagerly); the graph's elementwise statistics hold temporaries of a few times each tensor,
    where the eager engine's numpy scan works in cache-sized blocks (ResNet50, batch
    16, 51 MB outputs: 1.3x the eager peak RSS; faster than eager at 256 samples
    since issue 29, in two noisy rounds: docs/PERFORMANCE.md).

    Whole tensors. The first batch always runs eagerly: it chooses the tensors (layer
    patterns, what can be stored) that the traced function then returns, and nothing
    else. ``compiled``: every later batch; ``auto``: as above, when the tensors of a
    batch hold at most :data:`~kerinspect.spec.AUTO_COMPILE_MAX_FETCH_BYTES` (the
    graph returns them all at once, where the eager engine hands them over one by one).

    Once the compiled engine cannot run a batch (or it holds NaN/Inf,
    :class:`NonFinite`), that batch and the rest run eagerly, with a note.
    """

    def __init__(self, model: Any, run: RunSpec, batches: int, collector: Any):
        from kerinspect.engine.selection import SelectingVisitor

        self.engine = run.engine
        self.batches = batches
        self.collector = collector
        self.device = device()
        self.fetching = isinstance(collector, SelectingVisitor)
        self._replay = (model, run)
        self.replay: CompiledReplay | None = None
        self.stopped = False

    def wanted(self, index: int) -> bool:
        """Whether batch ``index`` may run compiled (for ``auto`` on a CPU's first batch of
        statistics: if the trace's static sizes allow it, :meth:`_fits`)."""
        if self.stopped or (self.fetching and index == 0):
            return False
        if self.engine == "compiled":
            return True
        if self.device == "GPU":
            return self.batches >= 2
        if self.batches < AUTO_COMPILE_MIN_BATCHES:
            return False
        if self.fetching:
            return bool(self.collector.fetch_bytes() <= AUTO_COMPILE_MAX_FETCH_BYTES)
        if index == 0:  # with the kernel, decided by the trace's static sizes (run_batch)
            return self._fused()
        return self._fits(self.collector)

    def _fused(self) -> bool:
        """Whether the fused kernel computes the statistics (built, on a CPU, no percentiles)."""
        return _fused_kernel() is not None and not self.collector.percentiles

    def _fits(self, sizes: Any) -> bool:
        """Whether the largest outputs of ``sizes`` (the collector's, measured in the
        batches so far, or the trace's recorder, static: None where unknown) are small
        enough to compile. The limit is for the temporaries of TensorFlow's statistics
        operations; the fused kernel has none, so with it only the outputs it does not
        read count."""
        largest = sizes.largest_unfused if self._fused() else sizes.largest
        return largest is not None and largest <= AUTO_COMPILE_MAX_TENSOR_BYTES

    def run_batch(self, index: int, batch: Sequence[np.ndarray], rows: int, outcome: Any) -> bool:
        """Run batch ``index`` compiled if it should be; False: the caller runs it eagerly."""
        from kerinspect.errors import InferenceError, msg

        if not self.wanted(index):
            return False
        words = getattr(self.collector, "words", None)  # the sample whose words are decoded
        if self.engine == "auto" and words is not None and words.wants(rows):
            return False
        if self.replay is None:
            model, run = self._replay
            fetch = set(self.collector.fetch_keys()) if self.fetching else None
            self.replay = CompiledReplay(
                model, run, fetch, vectors=getattr(self.collector, "labelled", False)
            )
        try:
            first = index == 0 and self.engine == "auto" and self.device == "CPU"
            if first and not self._fits(self.replay.traced(batch)):
                return False  # this batch eagerly: its outputs' sizes decide the rest
            values = self.replay(batch)
            assert self.replay.recorder is not None
            if self.fetching:
                play_fetched(self.replay.recorder, values, self.collector, rows)
            else:
                play(self.replay.recorder, values, self.collector, rows)
        except NotCompiled as e:
            if _ids_out_of_range(e):
                return False  # the eager replay of this batch names the input, the id and the sample
            if self.engine == "compiled" and not isinstance(e, BatchNeedsEager):
                raise InferenceError(
                    f"The compiled engine cannot run this model: {e}",
                    rule="not-compiled",
                    hint=msg("{engine}=auto runs it eagerly instead"),
                ) from e
            self.stopped = True
            outcome.notes.append(
                f"eager engine: the compiled one cannot run this model ({e})"
                if not outcome.compiled_batches
                else f"eager engine from batch {index + 1}: {e}"
            )
            return False
        return True


def _ids_out_of_range(e: BaseException) -> bool:
    """The traced graph failed on a gather outside its table (``indices[7,3] = 25 is not
    in [0, 20)``): an Embedding fed an id out of range, which the eager replay checks."""
    cause = e.__cause__
    text = str(getattr(cause, "message", cause))
    return type(cause).__name__ == "InvalidArgumentError" and "indices[" in text and "is not in [" in text
