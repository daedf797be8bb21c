"""The Python API; the CLI is a thin shell over these functions.

>>> import kerinspect
>>> report = kerinspect.inspect_model("model.keras", samples=64)   # doctest: +SKIP
>>> [r.path for r in report.layers if any(o.flags for o in r.outputs)]  # doctest: +SKIP

A model *file* is opened in a disposable, isolated worker process by default
(:mod:`kerinspect.sandbox.runner`): the static scan, Keras's deserialization and the
forward passes all happen there, and only plain data comes back. An in-memory
``keras.Model`` is inspected in this process.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .defaults import (  # noqa: F401
    DEFAULT_BATCH_SIZE,
    DEFAULT_DIM,
    DEFAULT_MAX_PARAMS,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    ProgressFn,
)
from .errors import InputFileError, UsageError, escape_text
from .report import ModelReport, Thresholds, WeightsReport

#: The in-process building blocks, re-exported lazily (:mod:`kerinspect.engine.collect` imports
#: numpy, which the parent process of a command never needs).
_FROM_RUN = ("build_feed", "inspect_loaded", "run_batches")


def __getattr__(name: str) -> Any:
    if name in _FROM_RUN:
        from .engine import collect as run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Largest file a worker may write (its log), except a dump's arrays (``max_bytes``).
WORKER_MAX_FILE_SIZE = 64 << 20
#: Environment switch for debugging: ``KERINSPECT_ISOLATION=off`` opens model files in
#: this process (a debugger can step into Keras), without the worker's protection.
ISOLATION_ENV = "KERINSPECT_ISOLATION"


def isolation_default() -> bool:
    """True unless ``KERINSPECT_ISOLATION`` is ``off``/``0``/``false``/``no``."""
    return os.environ.get(ISOLATION_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


@dataclass(frozen=True)
class LoadOptions:
    """How a model file is opened.

    Attributes:
        isolate: load and run in a disposable worker process (the default; see
            :mod:`kerinspect.sandbox.runner`). False runs in this process, unprotected
            (for debugging). Defaults to the ``KERINSPECT_ISOLATION`` switch.
        timeout: wall-clock limit of the worker in seconds (0: none).
        max_memory: the worker's memory limit in bytes (None: half the RAM; 0: none).
        trust_model: the user vouches for the file: Lambda layers and other code
            in it are deserialized (``safe_mode=False``). Still isolated.
        custom_objects: path of a Python file defining or registering the model's
            custom classes (imported in the worker before loading).
        max_params: refuse a model whose config declares more parameters than this
            (estimated statically, before anything is built).
    """

    isolate: bool = dataclasses.field(default_factory=isolation_default)
    timeout: float = 600.0
    max_memory: int | None = None
    trust_model: bool = False
    custom_objects: str | None = None
    max_params: int = DEFAULT_MAX_PARAMS

    def worker_limits(self, max_file_size: int = WORKER_MAX_FILE_SIZE) -> Any:
        from .sandbox.runner import WorkerLimits, default_max_memory

        memory = default_max_memory() if self.max_memory is None else self.max_memory
        return WorkerLimits(timeout=self.timeout, max_memory=memory, max_file_size=max_file_size)

    def request(self) -> dict[str, Any]:
        """The job-side part of these options (files checked here, in the parent)."""
        return {
            "trust_model": self.trust_model,
            "custom_objects": _checked_file(self.custom_objects, "custom-objects"),
            "max_params": self.max_params,
        }


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
    if not isinstance(model, (str, os.PathLike)):
        _check_model_object(model)
        from .engine.collect import inspect_loaded

        return inspect_loaded(
            model,
            inputs,
            samples=samples,
            batch_size=batch_size,
            seed=seed,
            dim=dim,
            shapes=shapes,
            thresholds=thresholds,
            progress=progress,
        )
    run = {
        "samples": samples,
        "batch_size": batch_size,
        "seed": seed,
        "dim": dim,
        "shapes": _jsonable_shapes(shapes),
        "thresholds": thresholds.to_dict(),
    }
    result = _job("inspect", model, inputs, run, load or LoadOptions(), progress)
    return _from_worker(ModelReport.from_dict, result, "report")


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
    load: LoadOptions | None = None,
) -> Any:
    """Run a model on sample inputs and save the selected layer calls' outputs as ``.npy``.

    One file per output tensor, every sample stacked on axis 0, plus the inputs
    used (under ``out/inputs/``) and ``out/manifest.json``. The three phases of
    :mod:`kerinspect.dump` run in turn: prepare (here), write (in the isolated
    worker, into a private staging directory), publish (here, checking every file).

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
        load: how a model *file* is opened, as for :func:`inspect_model`.

    Returns:
        The :class:`~kerinspect.dump.Dump`, as :func:`~kerinspect.dump.load_dump` reads it.

    Raises:
        KerinspectError: a subclass carrying the exit code; ``OutputError`` (exit 7)
            for a refused directory, a dump above ``max_bytes``, a full disk.
    """
    from . import dump as d

    is_file = isinstance(model, (str, os.PathLike))
    model_file = None
    if is_file:
        from .scan.preflight import preflight

        model_file = preflight(model)
    else:
        _check_model_object(model)
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
        "shapes": _jsonable_shapes(shapes) or [],
        "layers": list(layers),
    }
    plan = d.prepare_dump(
        out,
        overwrite=overwrite,
        max_bytes=d.DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
        layers=layers,
        model_path=None if model_file is None else model_file.path,
        model_format="in-memory" if model_file is None else model_file.format,
        run=run,
    )
    try:
        if model_file is None:
            from .engine.collect import build_feed

            feed = build_feed(
                model, inputs, samples=samples, batch_size=batch_size, seed=seed, dim=dim, shapes=shapes
            )
            draft = d.write_dump(model, feed, plan["write"], progress=progress)
        else:
            job = {
                "samples": samples,
                "batch_size": batch_size,
                "seed": seed,
                "dim": dim,
                "shapes": _jsonable_shapes(shapes),
                "job": plan["write"],
            }
            result = _job(
                "dump",
                model,
                inputs,
                job,
                load or LoadOptions(),
                progress,
                max_file_size=int(plan["write"]["max_bytes"]) + (1 << 20),
            )
            draft = _from_worker(_dict, result, "draft")  # publish_dump checks its contents
    except BaseException:
        d.abort_dump(plan)
        raise
    d.publish_dump(plan, draft)
    return d.load_dump(plan["out"])


def inspect_weights(
    path: str | os.PathLike[str], thresholds: Thresholds | None = None, *, load: LoadOptions | None = None
) -> WeightsReport:
    """Statistics and health of every weight in a model file, read with h5py only
    (no TensorFlow, nothing deserialized); see :func:`kerinspect.scan.weights.inspect_weights`.
    The file is parsed in the isolated worker, since HDF5 parsers crash on hostile files."""
    run = {"thresholds": (thresholds or Thresholds()).to_dict()}
    result = _job("weights", path, None, run, load or LoadOptions(), None)
    return _from_worker(WeightsReport.from_dict, result, "report")


# -- plumbing ----------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("not an object")
    return value


def _from_worker(parse: Any, result: dict[str, Any], key: str) -> Any:
    """Rebuild a report from the worker's JSON; a malformed one is exit 8 (the
    worker runs model code, so its output is checked, not trusted)."""
    try:
        return parse(result[key])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        from .errors import ChildCrashError

        raise ChildCrashError(
            f"The worker broke the protocol (a malformed {key}: {type(e).__name__}); "
            "its result was discarded.",
            rule="protocol",
        ) from None


def _check_model_object(model: Any) -> None:
    if not hasattr(model, "layers") or not callable(model):
        raise UsageError(f"Expected a model path or a keras.Model, got {type(model).__name__}")


def _job(
    command: str,
    path: str | os.PathLike[str],
    inputs: Any,
    run: dict[str, Any],
    load: LoadOptions,
    progress: ProgressFn | None,
    max_file_size: int = WORKER_MAX_FILE_SIZE,
) -> dict[str, Any]:
    """Preflight ``path`` here, then run one job of :mod:`kerinspect.engine.jobs` in the
    isolated worker (or in this process when ``load.isolate`` is off)."""
    from .errors import KerinspectError
    from .scan.preflight import preflight

    model_file = preflight(path)
    absolute = os.path.abspath(model_file.path)
    with tempfile.TemporaryDirectory(prefix="kerinspect-inputs-") as tmp:
        request = {
            "command": command,
            "model": dataclasses.asdict(model_file) | {"path": absolute, "shown_path": model_file.path},
            "inputs": _inputs_for_worker(inputs, tmp),
            **run,
            **load.request(),
        }
        try:
            if not load.isolate:
                from .engine.jobs import JOBS, QuietChannel

                return JOBS[command](request, QuietChannel(progress))
            from .sandbox.runner import run_worker

            def relay(msg: dict[str, Any]) -> None:
                if msg.get("type") == "progress" and progress is not None:
                    progress(int(msg["done"]), int(msg["total"]))

            return run_worker(request, load.worker_limits(max_file_size), on_message=relay).result
        except KerinspectError as e:
            # the job saw an absolute path; say it the way the user did
            if absolute != model_file.path:
                e.message = e.message.replace(escape_text(absolute), escape_text(model_file.path))
            raise


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
        return {"kind": "file", "path": os.path.abspath(p), "source": p}
    import numpy as np  # only for in-memory arrays: the CLI's parent never gets here

    path = os.path.join(tmp, "inputs.npz")
    if isinstance(inputs, Mapping):
        named: dict[str, Any] = {str(k): np.asarray(v) for k, v in inputs.items()}
        np.savez(path, **named)
        return {"kind": "arrays", "path": path, "source": "array", "by_name": True}
    arrays = [inputs] if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence) else inputs
    np.savez(path, *[np.asarray(a) for a in arrays])
    return {"kind": "arrays", "path": path, "source": "array", "by_name": False}


def _jsonable_shapes(shapes: Sequence[str] | Mapping[str, tuple[int, ...]] | None) -> Any:
    if shapes is None:
        return None
    if isinstance(shapes, Mapping):
        return {str(k): [int(d) for d in v] for k, v in shapes.items()}
    return list(shapes)
