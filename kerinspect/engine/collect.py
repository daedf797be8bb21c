"""Inspect a model that is already loaded, in this process.

The pieces :mod:`kerinspect.api` and the isolated worker share: turning inputs
into batches (:func:`build_feed`), replaying every batch through the engine
(:func:`run_batches`), and folding every produced tensor into mergeable
statistics (:class:`StatsCollector`, :func:`inspect_loaded`).
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from kerinspect import __version__
from kerinspect.checks import is_float_dtype, tensor_flags
from kerinspect.engine.inputs import DEFAULT_DIM, Feed  # noqa: F401 - DEFAULT_DIM re-exported
from kerinspect.errors import InferenceError, UsageError
from kerinspect.report import LayerRecord, ModelInfo, ModelReport, TensorRecord, Thresholds, WeightRecord
from kerinspect.spec import DEFAULT_BATCH_SIZE, DEFAULT_SAMPLES, DEFAULT_SEED, ProgressFn, RunSpec
from kerinspect.stats import BOUNDED, RunningStats, numeric_kind, summarize

#: Tensors with at least this many values are summarised in parallel parts.
PARALLEL_MIN_SIZE = 1 << 20

#: Raw ``keras.ops`` operations that are a bounded activation, by class name.
_BOUNDED_OPS = {"Tanh": "tanh", "Sigmoid": "sigmoid", "HardSigmoid": "hard_sigmoid"}


def bounded_activation(op: Any) -> str | None:
    """The bounded activation (one of :data:`kerinspect.stats.BOUNDED`) that ``op``'s
    output is, read from the layer: its ``activation`` (Keras's own layers that apply
    it last: ``Dense``, ``Conv2D``, ``Activation``...; not the gated RNNs, whose
    output is not the activation's), a ``Softmax`` over the last axis, or a raw
    ``keras.ops`` ``tanh``/``sigmoid``/``hard_sigmoid``. None for anything else
    (custom layers included: where they apply an ``activation`` is their own)."""
    cls = type(op).__name__
    module = type(op).__module__ or ""
    if not module.startswith("keras."):
        return None
    if cls in _BOUNDED_OPS:
        return _BOUNDED_OPS[cls]
    if cls == "Softmax":
        axis = getattr(op, "axis", -1)
        return "softmax" if axis == -1 or axis == [-1] or axis == (-1,) else None
    if "rnn" in module or hasattr(op, "cell") or hasattr(op, "forward_layer"):
        return None
    name = getattr(getattr(op, "activation", None), "__name__", None)
    return name if name in BOUNDED else None


class _Input:
    """One tensor a call received: another call's output (``source``), or, when it
    is no reported call's output, its own statistics (``stats``) at ``position``."""

    __slots__ = ("source", "stats", "dtype", "position")

    def __init__(
        self,
        source: tuple[int, int] | None = None,
        stats: RunningStats | None = None,
        dtype: str = "",
        position: int = 0,
    ):
        self.source, self.stats, self.dtype, self.position = source, stats, dtype, position


def default_threads() -> int:
    """Threads for statistics: the CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


class StatsCollector:
    """Visitor that keeps, per produced tensor, only mergeable statistics.

    The engine waits while a tensor is summarised, so a large tensor is scanned in
    ``threads`` parts at once (numpy releases the GIL); :func:`summarize` folds the
    parts' blocks in order, so the statistics are bit for bit those of one thread,
    whatever the number of CPUs (ResNet50, batch 16, 2 cores: 0.56 s of statistics
    instead of 0.70 s).
    Call :meth:`close` when done.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.sites: list[Any] = []
        self.shapes: list[list[list[int]]] = []
        self.dtypes: list[list[str]] = []
        self.stats: list[list[RunningStats | None]] = []
        self.model_outputs: set[tuple[int, int]] = set()
        self.heads: dict[int, Any] = {}  # site index -> HeadAccumulator
        self.activations: dict[int, str | None] = {}  # site index -> bounded activation
        self.inputs: dict[int, list[_Input]] = {}  # site index -> what the call received
        self._live: dict[int, tuple[Any, int, int]] = {}  # id(tensor) -> (weakref, site, output): this batch
        self.largest = 0  # bytes of the largest output summarised eagerly
        self._first_batch = True
        self._batch_rows = 0
        self._threads = default_threads() if threads is None else max(1, threads)
        self._pool: ThreadPoolExecutor | None = None

    def summarize(
        self, arr: np.ndarray, *, spread: bool = False, bounds: str | None = None
    ) -> RunningStats | None:
        """:func:`~kerinspect.stats.summarize`, in parallel parts for a large tensor."""
        if self._threads < 2 or arr.size < PARALLEL_MIN_SIZE or numeric_kind(arr.dtype) is None:
            return summarize(arr, spread=spread, bounds=bounds)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="kerinspect-stats")
        return summarize(arr, parts=self._threads, map_fn=self._pool.map, spread=spread, bounds=bounds)

    def _batched(self, arr: np.ndarray) -> bool:
        """Axis 0 holds this batch's samples (the spread across samples is defined)."""
        return arr.ndim >= 1 and arr.shape[0] == self._batch_rows

    def consumed(self, site: Any, op: Any, inputs: Sequence[Any]) -> None:
        """Remember what the call receives: for each numeric input, the reported
        call that produced it (found by identity, nothing recomputed) or, failing
        that, its own statistics, merged across batches. Also reads the layer's
        bounded activation (first batch)."""
        from kerinspect.engine.trace import tensor_dtype, to_numpy

        i = site.index
        if self._first_batch:
            self.activations[i] = bounded_activation(op)
            refs = []
            for position, t in enumerate(inputs):
                if not (hasattr(t, "shape") and hasattr(t, "dtype")):
                    continue  # flags, None, Python numbers
                source = self._producer(t)
                if source is not None:
                    refs.append(_Input(source=source))
                    continue
                arr = to_numpy(t)
                if numeric_kind(arr.dtype) not in ("float", "int"):
                    continue
                own = self.summarize(arr, spread=self._batched(arr))
                refs.append(_Input(stats=own, dtype=tensor_dtype(t), position=position))
            self.inputs[i] = refs
            return
        for ref in self.inputs.get(i, ()):
            if ref.source is None and ref.stats is not None and ref.position < len(inputs):
                arr = to_numpy(inputs[ref.position])
                more = self.summarize(arr, spread=self._batched(arr))
                if more is not None:
                    ref.stats.merge(more)

    def _producer(self, t: Any) -> tuple[int, int] | None:
        """``(site index, output index)`` of the reported output ``t`` is, in this batch."""
        entry = self._live.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1], entry[2]

    def _input_figures(self, index: int) -> tuple[float | None, float | None]:
        """``(input_rms, input_spread)`` of one call (see :class:`~kerinspect.report.LayerRecord`)."""
        squares = 0.0
        finite = 0
        spreads = []
        for ref in self.inputs.get(index, ()):
            if ref.source is not None:
                j, k = ref.source
                if k >= len(self.stats[j]):
                    continue
                acc, dtype = self.stats[j][k], self.dtypes[j][k]
            else:
                acc, dtype = ref.stats, ref.dtype
            if acc is None or not acc.finite:
                continue
            rms = acc.rms()
            if is_float_dtype(dtype) and rms is not None:
                squares += rms * rms * acc.finite
                finite += acc.finite
            spread = acc.sample_spread()
            if spread is not None and rms is not None and (is_float_dtype(dtype) or "int" in dtype):
                spreads.append(spread)
        return (math.sqrt(squares / finite) if finite else None), (max(spreads) if spreads else None)

    def close(self) -> None:
        """Stop the statistics threads (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def start_batch(self, rows: int) -> None:
        self._batch_rows = rows
        self._live = {}

    def enter(self, site: Any) -> None:
        if self._first_batch:
            self.sites.append(site)
            self.shapes.append([])
            self.dtypes.append([])
            self.stats.append([])
        elif site.index >= len(self.sites) or self.sites[site.index].path != site.path:
            raise RuntimeError(f"graph order changed between batches at {site.path!r}")

    def produced(self, site: Any, tensors: Sequence[Any]) -> None:
        from kerinspect.engine.trace import tensor_dtype, to_numpy

        i = site.index
        outs: list[tuple[tuple[int, ...], str, RunningStats | None] | None] = []
        for k, t in enumerate(tensors):
            if t is None:  # an optional output that is absent: keep the indices aligned
                outs.append(None)
                continue
            arr = to_numpy(t)
            self.largest = max(self.largest, arr.nbytes)
            s = self.summarize(arr, spread=self._batched(arr), bounds=self.activations.get(i))
            try:
                self._live[id(t)] = (weakref.ref(t), i, k)
            except TypeError:  # not weak-referenceable: its consumers summarise it themselves
                pass
            outs.append((tuple(arr.shape), tensor_dtype(t), s))
        self.produced_summaries(site, outs)

    def produced_summaries(
        self, site: Any, outputs: Sequence[tuple[tuple[int, ...], str, RunningStats | None] | None]
    ) -> None:
        """Fold one batch's outputs of one call, already summarised: ``(shape, dtype,
        statistics)`` per output, None for an absent optional one (what :meth:`produced`
        computes; the compiled engine's partials, :mod:`kerinspect.engine.compiled`)."""
        i = site.index
        if self._first_batch:
            self.sites[i] = site  # output names may be refined after the call
        for k, out in enumerate(outputs):
            if out is None:
                if self._first_batch:
                    self.shapes[i].append([])
                    self.dtypes[i].append("none")
                    self.stats[i].append(None)
                continue
            shape, dtype, s = list(out[0]), out[1], out[2]
            if self._first_batch or k >= len(self.stats[i]):
                self.shapes[i].append(shape)
                self.dtypes[i].append(dtype)
                self.stats[i].append(s)
                continue
            prev = self.shapes[i][k]
            if shape and prev and shape[0] == self._batch_rows and shape[1:] == prev[1:]:
                prev[0] += shape[0]  # batch axis grows; others must agree
            acc = self.stats[i][k]
            if acc is not None and s is not None:
                acc.merge(s)

    def consumed_summaries(self, site: Any, activation: str | None, items: Sequence[tuple[Any, ...]]) -> None:
        """:meth:`consumed` with the inputs already resolved: ``("source", (site,
        output))`` for another reported call's output, ``("stats", statistics, dtype,
        position)`` for any other numeric input (the compiled engine's)."""
        i = site.index
        if self._first_batch:
            self.activations[i] = activation
            self.inputs[i] = [
                _Input(source=item[1])
                if item[0] == "source"
                else _Input(stats=item[1], dtype=item[2], position=item[3])
                for item in items
            ]
            return
        given = {item[3]: item[1] for item in items if item[0] == "stats" and item[1] is not None}
        for ref in self.inputs.get(i, ()):  # by position: the first batch may have run eagerly
            more = given.get(ref.position) if ref.source is None and ref.stats is not None else None
            if ref.stats is not None and more is not None:
                ref.stats.merge(more)

    def model_output(self, site: Any, k: int) -> None:
        self.model_outputs.add((site.index, k))

    def attention(self, site: Any, capture: Any) -> None:
        """Fold one call's attention probabilities into per-head statistics."""
        from kerinspect.engine.attention import HeadAccumulator

        acc = self.heads.get(site.index)
        if acc is None:
            acc = self.heads[site.index] = HeadAccumulator()
        acc.update(capture)

    def attention_partials(self, site: Any, capture: Any, partials: dict[str, Any] | None) -> None:
        """:meth:`attention` from per-head sums computed on the device (the compiled engine)."""
        from kerinspect.engine.attention import HeadAccumulator

        acc = self.heads.get(site.index)
        if acc is None:
            acc = self.heads[site.index] = HeadAccumulator()
        acc.note(capture)
        if partials is not None:
            acc.fold(partials)

    def end_batch(self) -> None:
        self._first_batch = False

    def records(self, thresholds: Thresholds) -> tuple[LayerRecord, ...]:
        out = []
        for site, shapes, dtypes, stats in zip(self.sites, self.shapes, self.dtypes, self.stats):
            names = (
                site.output_names
                if len(site.output_names) == len(shapes)
                else [f"output_{k}" for k in range(len(shapes))]
            )
            is_input = site.class_name == "InputLayer"
            heads = self.heads.get(site.index)
            attention = None
            if heads is not None:
                output = "attention_scores" if "attention_scores" in names else None
                attention = heads.record(output, thresholds)
            input_rms, input_spread = self._input_figures(site.index)
            tensors = []
            for k, (name, shape, dtype, acc) in enumerate(zip(names, shapes, dtypes, stats)):
                final = None if acc is None else acc.finalize()
                flags = tensor_flags(
                    dtype,
                    final,
                    thresholds,
                    is_input=is_input,
                    input_rms=input_rms,
                    input_spread=input_spread,
                    container=site.container,
                )
                if attention is not None and name == attention.output:
                    flags += attention.flags
                tensors.append(
                    TensorRecord(
                        name,
                        tuple(shape),
                        dtype,
                        final,
                        flags,
                        model_output=(site.index, k) in self.model_outputs,
                    )
                )
            out.append(
                LayerRecord(
                    site.path,
                    site.name,
                    site.class_name,
                    site.call,
                    site.params,
                    site.depth,
                    site.container,
                    tuple(tensors),
                    parent=site.parent,
                    called=site.called,
                    attention=attention,
                    activation=self.activations.get(site.index),
                    input_rms=input_rms,
                    input_spread=input_spread,
                )
            )
        return tuple(out)


def weight_records(model: Any, thresholds: Thresholds) -> tuple[WeightRecord, ...]:
    """Statistics of every weight variable (each once, even when shared)."""
    from kerinspect.engine.trace import tensor_dtype, to_numpy, weight_paths

    out = []
    for layer, name, w in weight_paths(model):
        value = to_numpy(w.value if hasattr(w, "value") else w)
        stats = summarize(value)  # no spread: a weight has no samples
        final = None if stats is None else stats.finalize()
        dtype = tensor_dtype(w)
        out.append(
            WeightRecord(
                layer,
                name,
                tuple(value.shape),
                dtype,
                final,
                tensor_flags(dtype, final, thresholds, is_weight=True),
                None if stats is None else stats.l2_norm(),
            )
        )
    return tuple(out)


def build_feed(
    model: Any,
    inputs: Any = None,
    *,
    samples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    dim: int = DEFAULT_DIM,
    shapes: Sequence[str] | Mapping[str, tuple[int, ...]] | None = None,
    source: str | None = None,
) -> Feed:
    """The batches :func:`inspect_model` will run, from ``inputs`` or synthetic data.

    ``source`` overrides how user inputs are described in the report."""
    from kerinspect.engine import inputs as inp

    try:
        specs = inp.input_specs(model)
    except InferenceError as e:
        if e.rule != "no-signature" or inputs is None:
            raise
        return _unsigned_feed(model, inputs, batch_size=batch_size, samples=samples, source=source)
    if inputs is None:
        if isinstance(shapes, Mapping):
            parsed = dict(shapes)
        else:
            parsed = inp.parse_shape_options(shapes or (), specs)
        specs = token_id_specs(model, specs, dim, parsed)
        return inp.synthetic_feed(
            specs,
            samples=DEFAULT_SAMPLES if samples is None else samples,
            batch_size=batch_size,
            seed=seed,
            dim=dim,
            shapes=parsed,
        )
    if shapes:
        raise UsageError("--shape applies to synthetic inputs; the input file defines the shapes")
    if isinstance(inputs, (str, os.PathLike)):
        arrays, label = inp.load_arrays(inputs, specs, max_rows=samples), os.fspath(inputs)
    elif isinstance(inputs, Mapping):
        arrays, label = dict(inputs), "array"
    elif isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
        arrays, label = {specs[0].name: np.asarray(inputs)}, "array"
        if len(specs) != 1:
            raise InferenceError(f"Model has {len(specs)} inputs; pass a list or a dict of arrays")
    else:
        if len(inputs) != len(specs):
            raise InferenceError(f"Model has {len(specs)} inputs, got {len(inputs)} arrays")
        arrays, label = {s.name: np.asarray(a) for s, a in zip(specs, inputs)}, "array"
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise InferenceError(f"No array for model input(s) {missing}", rule="input-names")
    return inp.array_feed(arrays, specs, source=source or label, batch_size=batch_size, samples=samples)


def token_id_specs(
    model: Any, specs: list[Any], dim: int, shapes: Mapping[str, tuple[int, ...]]
) -> list[Any]:
    """``specs`` with the inputs that reach an ``Embedding`` unchanged (at any depth,
    inside custom layers too) drawn as token ids in ``[0, input_dim)``, even when
    declared float, and saying so. Only models that hold an Embedding are probed,
    with one forward pass of one sample."""
    from dataclasses import replace

    from kerinspect.engine import inputs as inp
    from kerinspect.engine.keras_adapter import all_layers
    from kerinspect.engine.trace import embedding_inputs

    open_specs = [
        i for i, s in enumerate(specs) if s.kind == "float" or (s.kind == "int" and s.int_high is None)
    ]
    if not open_specs or not any(type(layer).__name__ == "Embedding" for layer in all_layers(model)):
        return specs
    probes = []
    for k, s in enumerate(specs):
        shape = inp.concrete_shape(s, dim, shapes.get(s.name))
        if s.kind in ("float", "int"):  # 0/1 ids, a different pattern per input
            pattern = (np.arange(int(np.prod(shape))) // (k + 1)) % 2
            dtype = (
                "float32"
                if s.kind == "float" and s.dtype not in ("float16", "bfloat16", "float64")
                else s.dtype
            )
            probes.append(pattern.reshape((1, *shape)).astype(dtype if dtype != "bfloat16" else "float32"))
        else:
            probes.append(
                next(
                    inp.synthetic_feed([s], samples=1, batch_size=1, seed=0, dim=dim, shapes=shapes).batches()
                )[0]
            )
    found = embedding_inputs(model, probes)
    out = list(specs)
    for i in open_specs:
        if i in found:
            high, path = found[i]
            note = (
                f"drawn as token ids in [0, {high}) for Embedding {path!r}"
                if specs[i].kind == "float"
                else None
            )
            out[i] = replace(specs[i], int_high=high, token_note=note)
    return out


def _unsigned_feed(
    model: Any, inputs: Any, *, batch_size: int, samples: int | None, source: str | None
) -> Feed:
    """The feed of a model without an input signature (a subclassed model saved
    unbuilt): the user's arrays define it."""
    from kerinspect.engine import inputs as inp

    if isinstance(inputs, (str, os.PathLike)):
        arrays, label = inp.read_unsigned(inputs), os.fspath(inputs)
    elif isinstance(inputs, Mapping):
        arrays, label = {str(k): np.asarray(v) for k, v in inputs.items()}, "array"
    elif isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
        arrays, label = {"input": np.asarray(inputs)}, "array"
    else:
        arrays = {f"input_{i}" if len(inputs) > 1 else "input": np.asarray(a) for i, a in enumerate(inputs)}
        label = "array"
    specs = inp.array_input_specs(arrays)
    return inp.array_feed(arrays, specs, source=source or label, batch_size=batch_size, samples=samples)


def model_info(model: Any, path: str | None, fmt: str, loader: str, notes: tuple[str, ...]) -> ModelInfo:
    """What a report says of a loaded model: name, class, file, parameter counts, Keras."""
    from kerinspect.engine.tfenv import import_keras

    keras = import_keras()
    return ModelInfo(
        name=model.name,
        class_name=type(model).__name__,
        path=path,
        format=fmt,
        params=int(model.count_params()),
        trainable_params=int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        keras_version=keras.__version__,
        loader=loader,
        notes=notes,
    )


def inspect_loaded(
    keras_model: Any,
    inputs: Any = None,
    *,
    samples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    dim: int = DEFAULT_DIM,
    shapes: Sequence[str] | Mapping[str, tuple[int, ...]] | None = None,
    thresholds: Thresholds | None = None,
    progress: ProgressFn | None = None,
    path: str | None = None,
    fmt: str = "in-memory",
    loader: str = "keras",
    notes: tuple[str, ...] = (),
    input_source: str | None = None,
    max_depth: int | None = None,
    collector: StatsCollector | None = None,
    run: RunSpec | None = None,
) -> ModelReport:
    """:func:`inspect_model` on an already-loaded model, in this process.

    ``max_depth`` limits the layer calls captured to that many nesting levels;
    ``collector`` replaces the default :class:`StatsCollector` (a subclass that keeps
    more, as :mod:`kerinspect.engine.pictures` does); it is closed here."""
    if run is not None:  # the typed spec, as the worker has it: it sets every run option
        samples, batch_size, seed, dim = run.samples, run.batch_size, run.seed, run.dim
        shapes, thresholds, max_depth = run.shapes, run.thresholds, run.depth
    thresholds = thresholds or Thresholds()
    feed = build_feed(
        keras_model,
        inputs,
        samples=samples,
        batch_size=batch_size,
        seed=seed,
        dim=dim,
        shapes=shapes,
        source=input_source,
    )
    engine = "eager" if run is None or collector is not None else run.engine
    collector = StatsCollector() if collector is None else collector
    outcome = EngineOutcome()
    try:
        caught = run_batches_collecting_warnings(
            keras_model,
            feed,
            collector,
            progress,
            max_depth=max_depth,
            run=run,
            engine=engine,
            outcome=outcome,
        )
    finally:
        collector.close()
    notes = (*notes, *outcome.notes)
    assert collector is not None
    return ModelReport(
        model=model_info(keras_model, path, fmt, loader, notes),
        inputs=feed.records,
        layers=collector.records(thresholds),
        samples=feed.samples,
        batch_size=feed.batch_size,
        thresholds=thresholds,
        weights=weight_records(keras_model, thresholds),
        warnings=tuple(caught),
        kerinspect_version=__version__,
        max_depth=max_depth,
        engine=outcome.label,
    )


def run_batches_collecting_warnings(
    model: Any,
    feed: Feed,
    visitor: Any,
    progress: ProgressFn | None = None,
    *,
    max_depth: int | None = None,
    run: RunSpec | None = None,
    engine: str = "eager",
    outcome: EngineOutcome | None = None,
) -> list[str]:
    """:func:`run_batches`, returning the warnings Keras raised (each once, one line)
    instead of letting them reach stderr."""
    return collecting_warnings(
        lambda: run_batches(
            model, feed, visitor, progress, max_depth=max_depth, run=run, engine=engine, outcome=outcome
        )
    )


def collecting_warnings(work: Callable[[], None]) -> list[str]:
    """Run ``work``, returning the warnings raised meanwhile (each once, one line)
    instead of letting them reach stderr."""
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        work()
        for w in wlist:
            text = " ".join(str(w.message).split())
            if text not in caught:
                caught.append(text)
    return caught


def layer_failure(e: Any, rows: int, model: str = "", hint: str | None = None) -> InferenceError:
    """The one-line error of a :class:`~kerinspect.engine.trace.LayerCallError` in a batch
    of ``rows``: out of memory (rule ``oom``) or the failing layer and its cause (with
    ``hint``); ``model`` (``A``/``B`` in a diff) names the model when there are two."""
    from kerinspect.engine.load import innermost_message

    cause = innermost_message(e.cause)
    of = f" of model {model}" if model else ""
    if "ResourceExhausted" in type(e.cause).__name__ or "OOM" in cause:
        return InferenceError(
            f"Out of memory running layer {e.site.path!r}{of} (batch of {rows}).",
            rule="oom",
            hint="try a smaller --batch-size",
        )
    return InferenceError(
        f"Running layer {e.site.path!r} ({e.site.class_name}){of} failed "
        f"({e.calls_done} layer calls before it succeeded): {cause}",
        rule="inference-failed",
        hint=hint,
    )


class EngineOutcome:
    """How :func:`run_batches` ran: ``label`` for the report (``eager``, ``compiled
    (CPU)``, ``compiled (GPU)``, ``eager, then compiled (CPU)``...: the engines in the
    order they ran batches) and ``notes`` (why the compiled engine stopped, if it did)."""

    def __init__(self) -> None:
        self.compiled_batches = 0
        self.device = ""
        self.notes: list[str] = []
        self._segments: list[str] = []

    def ran(self, compiled: bool) -> None:
        """One more batch, by the compiled engine or the eager one."""
        name = f"compiled ({self.device})" if compiled else "eager"
        self.compiled_batches += compiled
        if not self._segments or self._segments[-1] != name:
            self._segments.append(name)

    @property
    def label(self) -> str:
        return ", then ".join(self._segments) or "eager"


def run_batches(
    model: Any,
    feed: Feed,
    visitor: Any,
    progress: ProgressFn | None = None,
    *,
    max_depth: int | None = None,
    run: RunSpec | None = None,
    engine: str = "eager",
    outcome: EngineOutcome | None = None,
) -> None:
    """Replay ``model`` on every batch of ``feed``, reporting to ``visitor``.

    ``visitor`` may define ``start_batch(rows)`` and ``end_batch()``; ``max_depth``
    limits the layer calls reported to that many nesting levels (None: all).
    ``engine`` (``eager``, ``compiled`` or ``auto``; anything but eager needs a
    :class:`StatsCollector` or a :class:`~kerinspect.engine.dump_writer.SelectingVisitor`):
    see :mod:`kerinspect.engine.compiled`, whose
    :class:`~kerinspect.engine.compiled.Chooser` decides batch by batch; a batch the
    compiled engine cannot run runs eagerly, and so does the rest, with a note in
    ``outcome``. Raises :class:`InferenceError` naming the layer that failed.
    """
    from kerinspect.engine.trace import Replayer

    outcome = EngineOutcome() if outcome is None else outcome
    replay = Replayer(model, visitor, max_depth=max_depth, run=run)
    chooser = None
    if engine != "eager":
        from kerinspect.engine.compiled import Chooser

        chooser = Chooser(model, engine, feed.n_batches, visitor, run=run, max_depth=max_depth)
        outcome.device = chooser.device
    done = 0
    for index, batch in enumerate(feed.batches()):
        rows = len(batch[0]) if batch else 0
        compiled = chooser is not None and chooser.run_batch(index, batch, rows, outcome)
        if not compiled:
            _eager_batch(replay, visitor, batch, rows)
        outcome.ran(compiled)
        done += rows
        if progress is not None:
            progress(done, feed.samples)


def _eager_batch(replay: Any, visitor: Any, batch: list[np.ndarray], rows: int) -> None:
    """One batch through the eager replay (raises :class:`InferenceError`)."""
    from kerinspect.engine.trace import LayerCallError

    if hasattr(visitor, "start_batch"):
        visitor.start_batch(rows)
    try:
        replay(batch)
    except LayerCallError as e:
        raise layer_failure(e, rows) from e.cause
    if hasattr(visitor, "end_batch"):
        visitor.end_batch()
