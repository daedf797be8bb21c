"""What the isolated worker does, one function per job.

Each job takes the plain-JSON request built by :mod:`kerinspect.api` and a
channel (``phase(name)``, ``progress(done, total)``) and returns plain JSON.
The same functions run in-process when isolation is off, with a silent channel.
Every model is scanned statically (:mod:`kerinspect.scan.static`) before Keras sees it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerinspect.errors import ModelLoadError, escape_text
from kerinspect.report import Thresholds
from kerinspect.scan.preflight import ModelFile

from .collect import DEFAULT_BATCH_SIZE, DEFAULT_SEED, build_feed, inspect_loaded
from .inputs import DEFAULT_DIM
from .load import LoadedModel


class QuietChannel:
    """The channel of an in-process job: phases are ignored, progress relayed."""

    def __init__(self, progress: Any = None):
        self._progress = progress

    def phase(self, name: str) -> None:
        pass

    def progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(done, total)


def custom_objects(path: str | None) -> dict[str, Any] | None:
    """Import the user's ``--custom-objects`` file (their own, trusted code)."""
    if path is None:
        return None
    from .load import load_custom_objects

    return load_custom_objects(path)


def scan_and_load(model_file: ModelFile, options: dict[str, Any], channel: Any = None) -> LoadedModel:
    """Refuse what the static scan refuses, then deserialize with Keras.

    ``options``: ``trust_model``, ``custom_objects`` (a file path), ``max_params``.
    """
    from kerinspect.scan.static import Limits, scan_model_file

    from .load import load_model
    from .tfenv import import_keras

    channel = channel or QuietChannel()
    trust = bool(options.get("trust_model"))
    channel.phase("scan")
    custom = custom_objects(options.get("custom_objects"))
    declared = set(custom or ())
    if custom is not None:  # classes registered with @register_keras_serializable count too
        declared |= set(import_keras().saving.get_custom_objects())
    limits = Limits(max_params=int(options.get("max_params") or Limits().max_params))
    scanned = scan_model_file(
        model_file.path, model_file.format, limits, allow_code=trust, custom_classes=frozenset(declared)
    )
    if scanned.unknown_classes:
        names = ", ".join(repr(escape_text(n, 80)) for n in scanned.unknown_classes[:5])
        raise ModelLoadError(
            f"Unknown layer class {names}: the model uses custom code that is not loaded "
            f"(custom objects are never imported from the file). "
            f"Received: path={escape_text(model_file.path)}",
            rule="unknown-class",
            hint="pass --custom-objects FILE.py that defines or registers it",
        )
    channel.phase("load")
    return load_model(model_file, safe_mode=not trust, custom_objects=custom)


def model_file_of(request: dict[str, Any]) -> ModelFile:
    m = request["model"]
    return ModelFile(m["path"], m["format"], m["size"])


def feed_arguments(request: dict[str, Any]) -> dict[str, Any]:
    """The :func:`~kerinspect.engine.collect.build_feed` arguments of a request."""
    inputs = request.get("inputs")
    arrays: Any = None
    if inputs is not None:
        if inputs.get("kind") == "arrays":
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
    return {
        "inputs": arrays,
        "samples": request.get("samples"),
        "batch_size": request.get("batch_size") or DEFAULT_BATCH_SIZE,
        "seed": DEFAULT_SEED if request.get("seed") is None else request["seed"],
        "dim": request.get("dim") or DEFAULT_DIM,
        "shapes": shapes,
        "source": (inputs or {}).get("source"),
    }


def inspect_job(request: dict[str, Any], channel: Any) -> dict[str, Any]:
    """``summary``/``check``: the whole report, as JSON."""
    model_file = model_file_of(request)
    loaded = scan_and_load(model_file, request, channel)
    channel.phase("run")
    feed = feed_arguments(request)
    report = inspect_loaded(
        loaded.model,
        feed.pop("inputs"),
        **{k: v for k, v in feed.items() if k != "source"},
        thresholds=Thresholds.from_dict(request.get("thresholds") or {}),
        progress=channel.progress,
        path=request["model"].get("shown_path", model_file.path),
        fmt=model_file.format,
        loader=loaded.loader,
        notes=loaded.notes,
        input_source=feed["source"],
    )
    return {"report": report.to_dict()}


def dump_job(request: dict[str, Any], channel: Any) -> dict[str, Any]:
    """``dump``'s write phase: arrays into the staging directory the parent made."""
    from kerinspect.dump import write_dump

    model_file = model_file_of(request)
    loaded = scan_and_load(model_file, request, channel)
    channel.phase("run")
    args = feed_arguments(request)
    feed = build_feed(loaded.model, args.pop("inputs"), **args)
    return {"draft": write_dump(loaded.model, feed, request["job"], progress=channel.progress)}


def weights_job(request: dict[str, Any], channel: Any) -> dict[str, Any]:
    """``weights``: h5py only, no TensorFlow, no deserialization."""
    from kerinspect.scan.weights import inspect_weights

    channel.phase("read")
    report = inspect_weights(request["model"]["path"], Thresholds.from_dict(request.get("thresholds") or {}))
    data = report.to_dict()
    data["model"]["path"] = request["model"].get("shown_path", data["model"]["path"])
    return {"report": data}


JOBS = {"inspect": inspect_job, "dump": dump_job, "weights": weights_job}
