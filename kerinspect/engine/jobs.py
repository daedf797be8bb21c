"""What the isolated worker does, one function per job.

Each job takes the typed :class:`~kerinspect.sandbox.protocol.Request` (built by
:mod:`kerinspect.api`, parsed and validated once by
:func:`~kerinspect.sandbox.protocol.parse_request`) and a channel (``phase(name)``,
``progress(done, total)``) and returns plain JSON. The same functions run
in-process when isolation is off, with a silent channel. Every model is scanned
statically (:mod:`kerinspect.scan.model`) before Keras sees it. No defaults are
applied here: the request's specs carry every value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerinspect.errors import ModelLoadError, escape_text
from kerinspect.sandbox.protocol import InputsRef, ModelRef, Request
from kerinspect.scan.preflight import ModelFile
from kerinspect.spec import LoadOptions, RunSpec

from .collect import build_feed, inspect_loaded
from .hub import HUB_INSTALL_HINT
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


def scan_and_load(model_file: ModelFile, options: LoadOptions, channel: Any = None) -> LoadedModel:
    """Refuse what the static scan refuses, then deserialize with Keras.

    ``options``: its ``trust_model``, ``custom_objects`` (a file path), ``max_params``.
    """
    from kerinspect.scan import Limits, scan_model_file

    from .load import load_model
    from .tfenv import import_keras

    channel = channel or QuietChannel()
    trust = options.trust_model
    channel.phase("scan")
    custom = custom_objects(options.custom_objects)
    declared = set(custom or ())
    if custom is not None:  # classes registered with @register_keras_serializable count too
        declared |= set(import_keras().saving.get_custom_objects())
    limits = Limits(max_params=options.max_params)
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
            hint=_unknown_hint(scanned.unknown_classes),
        )
    if scanned.hub_classes:  # registers keras-hub's classes for Keras's safe-mode lookup
        from .hub import import_keras_hub

        import_keras_hub(scanned.hub_classes, model_file.path)
    channel.phase("load")
    return load_model(model_file, safe_mode=not trust, custom_objects=custom)


def _unknown_hint(names: tuple[str, ...]) -> str:
    """Unknown keras-hub names are classes kerinspect's keras-hub allowlist does not hold."""
    hint = "pass --custom-objects FILE.py that defines or registers it"
    if any(n.startswith(("keras_hub>", "keras_nlp>")) for n in names):
        from kerinspect.scan.allowlist_hub import KERAS_HUB_VERSION

        hint = (
            f"kerinspect accepts the keras-hub {KERAS_HUB_VERSION} classes ({HUB_INSTALL_HINT}); "
            "for another keras-hub, and only if you trust this file, pass --custom-objects FILE.py "
            "that does `import keras_hub`"
        )
    return hint


def model_file_of(model: ModelRef) -> ModelFile:
    return ModelFile(model.path, model.format, model.size)


def shown_path(model: ModelRef) -> str:
    """The model's path as the user wrote it."""
    return model.path if model.shown_path is None else model.shown_path


def read_inputs(inputs: InputsRef | None) -> Any:
    """What :func:`~kerinspect.engine.collect.build_feed` takes as ``inputs``: None
    (synthetic), the user's file path, or the arrays the parent saved."""
    if inputs is None:
        return None
    if inputs.kind == "file":
        return inputs.path
    with np.load(inputs.path, allow_pickle=False) as data:
        if inputs.by_name:
            return {k: data[k] for k in data.files}
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def feed_options(run: RunSpec) -> dict[str, Any]:
    """The :func:`~kerinspect.engine.collect.build_feed` keywords a :class:`RunSpec` sets
    (also used by :mod:`kerinspect.api` for in-memory models)."""
    return {
        "samples": run.samples,
        "batch_size": run.batch_size,
        "seed": run.seed,
        "dim": run.dim,
        "shapes": run.shapes,
    }


def _notes(model: ModelRef, loaded: LoadedModel) -> tuple[str, ...]:
    """How the file was read: by its content (HDF5 named .keras), then the loader's notes."""
    from kerinspect.scan.preflight import content_note

    note = content_note(shown_path(model), model.format)
    return loaded.notes if note is None else (note, *loaded.notes)


def inspect_job(request: Request, channel: Any) -> dict[str, Any]:
    """``summary``/``check``: the whole report, as JSON."""
    model_file = model_file_of(request.model)
    loaded = scan_and_load(model_file, request.load, channel)
    channel.phase("run")
    report = inspect_loaded(
        loaded.model,
        read_inputs(request.inputs),
        run=request.run,  # every run option, typed: the engine reads what it needs from it
        progress=channel.progress,
        path=shown_path(request.model),
        fmt=model_file.format,
        loader=loaded.loader,
        notes=_notes(request.model, loaded),
        input_source=None if request.inputs is None else request.inputs.source,
    )
    return {"report": report.to_dict()}


def dump_job(request: Request, channel: Any) -> dict[str, Any]:
    """``dump``'s write phase: arrays into the staging directory the parent made."""
    from kerinspect.engine.dump_writer import write_dump
    from kerinspect.errors import KerinspectError

    if request.write is None:
        raise KerinspectError("The worker received a malformed request: dump needs write", rule="protocol")
    loaded = scan_and_load(model_file_of(request.model), request.load, channel)
    channel.phase("run")
    feed = build_feed(
        loaded.model,
        read_inputs(request.inputs),
        **feed_options(request.run),
        source=None if request.inputs is None else request.inputs.source,
    )
    draft = write_dump(
        loaded.model, feed, request.write, progress=channel.progress, engine=request.run.engine
    )
    return {"draft": draft}


def weights_job(request: Request, channel: Any) -> dict[str, Any]:
    """``weights``: h5py only, no TensorFlow, no deserialization."""
    from kerinspect.scan.weights import inspect_weights

    channel.phase("read")
    report = inspect_weights(request.model.path, request.run.thresholds)
    data = report.to_dict()
    data["model"]["path"] = shown_path(request.model)
    return {"report": data}


def diff_job(request: Request, channel: Any) -> dict[str, Any]:
    """``diff``: two models on the same inputs, every paired layer call compared."""
    from kerinspect.engine.collect import model_info
    from kerinspect.engine.diff import diff_loaded
    from kerinspect.errors import KerinspectError

    if request.model_b is None:
        raise KerinspectError("The worker received a malformed request: diff needs model_b", rule="protocol")
    file_a, file_b = model_file_of(request.model), model_file_of(request.model_b)
    loaded_a = scan_and_load(file_a, request.load, channel)
    loaded_b = scan_and_load(file_b, request.load, channel)
    channel.phase("run")
    feed = build_feed(
        loaded_a.model,
        read_inputs(request.inputs),
        **feed_options(request.run),
        source=None if request.inputs is None else request.inputs.source,
    )
    report = diff_loaded(
        loaded_a.model,
        loaded_b.model,
        feed,
        info_a=model_info(
            loaded_a.model,
            shown_path(request.model),
            file_a.format,
            loaded_a.loader,
            _notes(request.model, loaded_a),
        ),
        info_b=model_info(
            loaded_b.model,
            shown_path(request.model_b),
            file_b.format,
            loaded_b.loader,
            _notes(request.model_b, loaded_b),
        ),
        tolerance=request.run.diff_tolerance,
        local=request.run.local,
        max_depth=request.run.depth,
        progress=channel.progress,
    )
    return {"diff": report.to_dict()}


def report_job(request: Request, channel: Any) -> dict[str, Any]:
    """``report``: :func:`kerinspect.engine.pictures.report_job`."""
    from .pictures import report_job as job

    return job(request, channel)


JOBS = {
    "inspect": inspect_job,
    "dump": dump_job,
    "weights": weights_job,
    "diff": diff_job,
    "report": report_job,
}
