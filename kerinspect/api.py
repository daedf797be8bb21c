"""The Python API; the CLI is a thin shell over these functions.

>>> import kerinspect
>>> report = kerinspect.inspect_model("model.keras", samples=64)   # doctest: +SKIP
>>> [r.path for r in report.layers if any(o.flags for o in r.outputs)]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__
from .checks import tensor_flags
from .errors import InferenceError, InputFileError, UsageError, escape_text
from .inputs import DEFAULT_DIM, Feed
from .report import LayerRecord, ModelInfo, ModelReport, TensorRecord, Thresholds, WeightRecord
from .stats import RunningStats, summarize

DEFAULT_SAMPLES = 32
DEFAULT_BATCH_SIZE = 32
DEFAULT_SEED = 0

#: progress(samples_done, samples_total)
ProgressFn = Callable[[int, int], None]


class _StatsCollector:
    """Visitor that keeps, per produced tensor, only mergeable statistics."""

    def __init__(self) -> None:
        self.sites: list[Any] = []
        self.shapes: list[list[list[int]]] = []
        self.dtypes: list[list[str]] = []
        self.stats: list[list[RunningStats | None]] = []
        self._first_batch = True
        self._batch_rows = 0

    def start_batch(self, rows: int) -> None:
        self._batch_rows = rows

    def enter(self, site: Any) -> None:
        if self._first_batch:
            self.sites.append(site)
            self.shapes.append([])
            self.dtypes.append([])
            self.stats.append([])
        elif site.index >= len(self.sites) or self.sites[site.index].path != site.path:
            raise RuntimeError(f"graph order changed between batches at {site.path!r}")

    def produced(self, site: Any, tensors: Sequence[Any]) -> None:
        from .trace import tensor_dtype, to_numpy

        i = site.index
        if self._first_batch:
            self.sites[i] = site  # output names may be refined after the call
        for k, t in enumerate(tensors):
            if t is None:
                continue
            arr = to_numpy(t)
            s = summarize(arr)
            shape = list(arr.shape)
            if self._first_batch or k >= len(self.stats[i]):
                self.shapes[i].append(shape)
                self.dtypes[i].append(tensor_dtype(t))
                self.stats[i].append(s)
                continue
            prev = self.shapes[i][k]
            if shape and prev and shape[0] == self._batch_rows and shape[1:] == prev[1:]:
                prev[0] += shape[0]  # batch axis grows; others must agree
            acc = self.stats[i][k]
            if acc is not None and s is not None:
                acc.merge(s)

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
            tensors = []
            for name, shape, dtype, acc in zip(names, shapes, dtypes, stats):
                final = None if acc is None else acc.finalize()
                tensors.append(
                    TensorRecord(
                        name,
                        tuple(shape),
                        dtype,
                        final,
                        tensor_flags(dtype, final, thresholds, is_input=is_input),
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
                )
            )
        return tuple(out)


def weight_records(model: Any, thresholds: Thresholds) -> tuple[WeightRecord, ...]:
    """Statistics of every weight variable (each once, even when shared)."""
    from .trace import tensor_dtype, to_numpy, weight_paths

    out = []
    for layer, name, w in weight_paths(model):
        value = to_numpy(w.value if hasattr(w, "value") else w)
        stats = summarize(value)
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
    from . import inputs as inp

    specs = inp.input_specs(model)
    if inputs is None:
        if isinstance(shapes, Mapping):
            parsed = dict(shapes)
        else:
            parsed = inp.parse_shape_options(shapes or (), specs)
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
        arrays, label = inp.load_arrays(inputs, specs), os.fspath(inputs)
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


@dataclass(frozen=True)
class LoadOptions:
    """How a model file is opened.

    Attributes:
        isolate: load and run in a disposable worker process (the default for
            files; see :mod:`kerinspect.isolation`). False runs in this process.
        timeout: wall-clock limit of the worker in seconds (0: none).
        max_memory: the worker's memory limit in bytes (None: half the RAM; 0: none).
        trust_model: the user vouches for the file: Lambda layers and other code
            in it are deserialized (``safe_mode=False``). Still isolated.
        custom_objects: path of a Python file defining or registering the model's
            custom classes (imported in the worker before loading).
    """

    isolate: bool = True
    timeout: float = 600.0
    max_memory: int | None = None
    trust_model: bool = False
    custom_objects: str | None = None

    def worker_limits(self) -> Any:
        from .isolation import WorkerLimits, default_max_memory

        memory = default_max_memory() if self.max_memory is None else self.max_memory
        return WorkerLimits(timeout=self.timeout, max_memory=memory)


def inspect_model(
    model: Any,
    inputs: Any = None,
    *,
    samples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    dim: int = DEFAULT_DIM,
    shapes: Sequence[str] | Mapping[str, tuple[int, ...]] | None = None,
    thresholds: Thresholds | None = None,
    progress: ProgressFn | None = None,
    load: LoadOptions | None = None,
) -> ModelReport:
    """Run a model on sample inputs and report every layer call's outputs and health.

    Args:
        model: path of a ``.keras``/``.h5`` file, or a built ``keras.Model``.
        inputs: None for synthetic inputs; a ``.npy``/``.npz`` path; an array (one-input
            models); a list of arrays in ``model.inputs`` order; or a dict by input name.
        samples: number of samples (synthetic: default 32; with ``inputs``: the
            first ``samples`` rows, default all).
        batch_size: samples per forward pass; statistics are merged across batches.
        seed: seed of the synthetic inputs.
        dim: size of every dynamic axis of synthetic inputs.
        shapes: per-input shapes for synthetic inputs, batch axis excluded, as
            ``{"name": (16, 8)}`` or CLI strings ``"name=16,8"``.
        thresholds: limits for the ``exploding`` and ``dead`` flags.
        progress: called as ``progress(samples_done, samples_total)`` after each batch.
        load: how a model *file* is opened (isolation, limits, trust); ignored for
            in-memory models.

    Returns:
        A :class:`~kerinspect.report.ModelReport`, one record per layer call in graph order.

    Raises:
        KerinspectError: a subclass carrying the exit code (bad file, bad input, ...).
    """
    thresholds = thresholds or Thresholds()
    load = load or LoadOptions()
    run: dict[str, Any] = dict(
        samples=samples, batch_size=batch_size, seed=seed, dim=dim, shapes=shapes, thresholds=thresholds
    )
    if not isinstance(model, (str, os.PathLike)):
        if not hasattr(model, "layers") or not callable(model):
            raise UsageError(f"Expected a model path or a keras.Model, got {type(model).__name__}")
        return inspect_loaded(
            model, inputs, progress=progress, path=None, fmt="in-memory", loader="keras", **run
        )
    from .loading import load_model, preflight

    model_file = preflight(model)
    if not load.isolate:
        loaded = load_model(
            model_file, safe_mode=not load.trust_model, custom_objects=_custom_objects(load.custom_objects)
        )
        return inspect_loaded(
            loaded.model,
            inputs,
            progress=progress,
            path=model_file.path,
            fmt=model_file.format,
            loader=loaded.loader,
            notes=loaded.notes,
            **run,
        )
    with tempfile.TemporaryDirectory(prefix="kerinspect-inputs-") as tmp:
        request = {
            "command": "inspect",
            "model": dataclasses.asdict(model_file)
            | {"path": os.path.abspath(model_file.path), "shown_path": model_file.path},
            "inputs": _inputs_for_worker(inputs, tmp),
            "samples": samples,
            "batch_size": batch_size,
            "seed": seed,
            "dim": dim,
            "shapes": _jsonable_shapes(shapes),
            "thresholds": thresholds.to_dict(),
            "trust_model": load.trust_model,
            "custom_objects": _checked_file(load.custom_objects, "custom-objects"),
        }
        result = _run_in_worker(request, load, progress)
    return ModelReport.from_dict(result["report"])


def _run_in_worker(request: dict[str, Any], load: LoadOptions, progress: ProgressFn | None) -> Any:
    from .isolation import run_worker

    def relay(msg: dict[str, Any]) -> None:
        if msg.get("type") == "progress" and progress is not None:
            progress(int(msg["done"]), int(msg["total"]))

    return run_worker(request, load.worker_limits(), on_message=relay).result


def _checked_file(path: str | os.PathLike[str] | None, what: str) -> str | None:
    if path is None:
        return None
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputFileError(
            f"{what} file not found. Received: {what}={escape_text(p)}", rule=f"{what}-not-found"
        )
    return os.path.abspath(p)


def _inputs_for_worker(inputs: Any, tmp: str) -> dict[str, Any] | None:
    """User inputs as something the worker can read: a checked file path, or the
    arrays saved (without pickle) to a temporary ``.npz``."""
    if inputs is None:
        return None
    if isinstance(inputs, (str, os.PathLike)):
        p = os.fspath(inputs)
        if not os.path.exists(p):
            raise InputFileError(
                f"Input file not found. Received: input={escape_text(p)}", rule="input-not-found"
            )
        return {"path": os.path.abspath(p), "source": p}
    path = os.path.join(tmp, "inputs.npz")
    if isinstance(inputs, Mapping):
        named: dict[str, Any] = {str(k): np.asarray(v) for k, v in inputs.items()}
        np.savez(path, **named)
        return {"path": path, "source": "array", "by_name": True}
    arrays = [inputs] if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence) else inputs
    np.savez(path, *[np.asarray(a) for a in arrays])
    return {"path": path, "source": "array", "by_name": False}


def _jsonable_shapes(shapes: Sequence[str] | Mapping[str, tuple[int, ...]] | None) -> Any:
    if shapes is None:
        return None
    if isinstance(shapes, Mapping):
        return {str(k): [int(d) for d in v] for k, v in shapes.items()}
    return list(shapes)


def _custom_objects(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    from .loading import load_custom_objects

    return load_custom_objects(path)


def _inspect_in_worker(request: dict[str, Any], channel: Any) -> dict[str, Any]:
    """The worker's side of :func:`inspect_model` (runs in the isolated process)."""
    from .loading import ModelFile, load_model

    m = request["model"]
    model_file = ModelFile(m["path"], m["format"], m["size"])
    channel.phase("load")
    custom = _custom_objects(request.get("custom_objects"))
    loaded = load_model(model_file, safe_mode=not request.get("trust_model", False), custom_objects=custom)
    channel.phase("run")
    inputs = request.get("inputs")
    arrays: Any = None
    if inputs is not None:
        if inputs.get("source") == "array":
            with np.load(inputs["path"], allow_pickle=False) as data:
                if inputs.get("by_name"):
                    arrays = {k: data[k] for k in data.files}
                else:
                    arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
        else:
            arrays = inputs["path"]
    shapes = request.get("shapes")
    if isinstance(shapes, dict):
        shapes = {k: tuple(v) for k, v in shapes.items()}
    report = inspect_loaded(
        loaded.model,
        arrays,
        samples=request.get("samples"),
        batch_size=request.get("batch_size", DEFAULT_BATCH_SIZE),
        seed=request.get("seed", DEFAULT_SEED),
        dim=request.get("dim", DEFAULT_DIM),
        shapes=shapes,
        thresholds=Thresholds.from_dict(request.get("thresholds") or {}),
        progress=channel.progress,
        path=m.get("shown_path", m["path"]),
        fmt=model_file.format,
        loader=loaded.loader,
        notes=loaded.notes,
        input_source=(inputs or {}).get("source"),
    )
    return {"report": report.to_dict()}


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
) -> ModelReport:
    """:func:`inspect_model` on an already-loaded model, in this process."""
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
    collector = _StatsCollector()
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        run_batches(keras_model, feed, collector, progress)
        for w in wlist:
            text = " ".join(str(w.message).split())
            if text not in caught:
                caught.append(text)
    from ._tfenv import import_keras

    keras = import_keras()
    info = ModelInfo(
        name=keras_model.name,
        class_name=type(keras_model).__name__,
        path=path,
        format=fmt,
        params=int(keras_model.count_params()),
        trainable_params=int(sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)),
        keras_version=keras.__version__,
        loader=loader,
        notes=notes,
    )
    return ModelReport(
        model=info,
        inputs=feed.records,
        layers=collector.records(thresholds),
        samples=feed.samples,
        batch_size=feed.batch_size,
        thresholds=thresholds,
        weights=weight_records(keras_model, thresholds),
        warnings=tuple(caught),
        kerinspect_version=__version__,
    )


def run_batches(model: Any, feed: Feed, visitor: Any, progress: ProgressFn | None = None) -> None:
    """Replay ``model`` on every batch of ``feed``, reporting to ``visitor``.

    ``visitor`` may define ``start_batch(rows)`` and ``end_batch()``.
    Raises :class:`InferenceError` naming the layer that failed.
    """
    from .loading import innermost_message
    from .trace import LayerCallError, Replayer

    replay = Replayer(model, visitor)
    done = 0
    for batch in feed.batches():
        rows = len(batch[0]) if batch else 0
        if hasattr(visitor, "start_batch"):
            visitor.start_batch(rows)
        try:
            replay(batch)
        except LayerCallError as e:
            cause = innermost_message(e.cause)
            if "ResourceExhausted" in type(e.cause).__name__ or "OOM" in cause:
                raise InferenceError(
                    f"Out of memory running layer {e.site.path!r} (batch of {rows}).",
                    rule="oom",
                    hint="try a smaller --batch-size",
                ) from e.cause
            raise InferenceError(
                f"Running layer {e.site.path!r} ({e.site.class_name}) failed "
                f"({e.calls_done} layer calls before it succeeded): {cause}",
                rule="inference-failed",
            ) from e.cause
        if hasattr(visitor, "end_batch"):
            visitor.end_batch()
        done += rows
        if progress is not None:
            progress(done, feed.samples)


def dump_activations(
    model: Any,
    out: str | os.PathLike[str],
    inputs: Any = None,
    *,
    samples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    dim: int = DEFAULT_DIM,
    shapes: Sequence[str] | Mapping[str, tuple[int, ...]] | None = None,
    layers: Sequence[str] = (),
    overwrite: bool = False,
    max_bytes: int | None = None,
    progress: ProgressFn | None = None,
) -> Any:
    """Run a model on sample inputs and save the selected layer calls' outputs as ``.npy``.

    One file per output tensor, every sample stacked on axis 0, plus the inputs
    used (under ``out/inputs/``) and ``out/manifest.json``. The three phases of
    :mod:`kerinspect.dump` (prepare, write, publish) run here one after the other.

    Args:
        model: path of a ``.keras``/``.h5`` file, or a built ``keras.Model``.
        out: output directory: created if missing; an existing one must be empty
            (or, with ``overwrite``, hold a previous kerinspect dump).
        inputs, samples, batch_size, seed, dim, shapes: as for :func:`inspect_model`.
        layers: glob patterns matched against layer paths (``encoder/*``,
            ``shared@1``); default: every layer call.
        overwrite: replace a previous kerinspect dump in ``out`` (only its own files).
        max_bytes: refuse to write more than this (default 2 GiB).
        progress: called as ``progress(samples_done, samples_total)`` after each batch.

    Returns:
        The :class:`~kerinspect.dump.Dump`, as :func:`~kerinspect.dump.load_dump` reads it.

    Raises:
        KerinspectError: a subclass carrying the exit code; ``OutputError`` (exit 7)
            for a refused directory, a dump above ``max_bytes``, a full disk.
    """
    from . import dump as d

    path, fmt, mf = None, "in-memory", None
    if isinstance(model, (str, os.PathLike)):
        from .loading import preflight

        mf = preflight(model)
        path, fmt = mf.path, mf.format
    elif not hasattr(model, "layers") or not callable(model):
        raise UsageError(f"Expected a model path or a keras.Model, got {type(model).__name__}")
    if isinstance(inputs, (str, os.PathLike)):
        source: str | None = os.fspath(inputs)
    else:
        source = None if inputs is None else "array"
    run = {
        "input": source,
        "samples": samples,
        "batch_size": batch_size,
        "seed": seed,
        "dim": dim,
        "shapes": {k: list(v) for k, v in shapes.items()}
        if isinstance(shapes, Mapping)
        else list(shapes or ()),
        "layers": list(layers),
    }
    plan = d.prepare_dump(
        out,
        overwrite=overwrite,
        max_bytes=d.DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
        layers=layers,
        model_path=path,
        model_format=fmt,
        run=run,
    )
    try:
        if mf is not None:
            from .loading import load_model

            keras_model = load_model(mf)
        else:
            keras_model = model
        feed = build_feed(
            keras_model, inputs, samples=samples, batch_size=batch_size, seed=seed, dim=dim, shapes=shapes
        )
        draft = d.write_dump(keras_model, feed, plan["write"], progress=progress)
    except BaseException:
        d.abort_dump(plan)
        raise
    d.publish_dump(plan, draft)
    return d.load_dump(plan["out"])
