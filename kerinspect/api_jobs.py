"""The parent's side of a command's job, for :mod:`kerinspect.api`: where it runs
(:func:`_place`: this process for a ``keras.Model``, the isolated worker for a model
file), what is refused before any worker starts (:func:`check_before_worker`, the
labels, input and ``custom_objects`` files), the request the worker gets
(:func:`_job`), and the facts this process sets on what comes back (:func:`_parsed`:
how the worker was confined, the hashes of the input files; its input warnings checked).

The job itself is :mod:`kerinspect.engine.jobs`; the functions of :mod:`kerinspect.api`
choose the job and read its result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .errors import InputFileError, KerinspectError, UsageError, escape_text, msg
from .spec import (
    WORKER_MAX_FILE_SIZE,
    LoadOptions,
    ProgressFn,
    RunSpec,
    check_inputs,
    input_file_kind,
    unsupported_input_error,
)

# -- where a job runs ------------------------------------------------------------------


class _Here:
    """``keras.Model`` objects: their job runs in this process (:func:`kerinspect.engine.jobs.run_in_process`)."""

    in_process = True
    labels_shown: str | None = None  # how the report names a labels file (see _place)
    shown: str | None = None  # no file: what the report and the dump manifest say
    sha256: str | None = None
    format = "in-memory"

    def __init__(self, models: Sequence[Any], inputs: Any, run: RunSpec):
        self.models, self.inputs, self.spec = list(models), inputs, run

    def run(
        self,
        command: str,
        progress: ProgressFn | None,
        *,
        write: dict[str, Any] | None = None,
        max_file_size: int = WORKER_MAX_FILE_SIZE,
    ) -> dict[str, Any]:
        if command == "weights":
            raise UsageError("weights reads a model file, not a keras.Model object")
        from .engine.jobs import run_in_process

        result = _warn_inputs(
            run_in_process(command, self.models, self.spec, self.inputs, progress=progress, write=write)
        )
        if isinstance(self.inputs, (str, os.PathLike)) and command in _INPUTS_RECORDED:  # hashed too
            p = os.fspath(self.inputs)
            kind = (
                "folder"
                if os.path.isdir(p)
                else "pattern"
                if glob.has_magic(p) and not os.path.lexists(p)
                else "file"
            )
            result = {**result, "input_digest": _input_digest(kind, os.path.abspath(p))}
        return result


class _Worker:
    """Model files, pre-flighted and snapshotted here: their job runs in the isolated
    worker (:func:`kerinspect.engine.jobs.run_request`), or in this process through the
    same request when isolation is off."""

    in_process = False
    labels_shown: str | None = None  # how the report names a labels file (see _place)

    def __init__(self, files: Sequence[Any], inputs: Any, run: RunSpec, load: LoadOptions):
        self.files, self.inputs, self.spec, self.load = list(files), inputs, run, load
        self.shown: str | None = self.files[0].shown
        self.sha256: str | None = self.files[0].sha256
        self.format: str = self.files[0].format

    def run(
        self,
        command: str,
        progress: ProgressFn | None,
        *,
        write: dict[str, Any] | None = None,
        max_file_size: int = WORKER_MAX_FILE_SIZE,
    ) -> dict[str, Any]:
        model_b = self.files[1] if len(self.files) > 1 else None
        return _warn_inputs(
            _job(
                command,
                self.files[0],
                self.inputs,
                self.spec,
                self.load,
                progress,
                max_file_size=max_file_size,
                write=write,
                model_b=model_b,
            )
        )


_Place = _Here | _Worker


@contextlib.contextmanager
def _place(
    models: Sequence[Any], inputs: Any, run: RunSpec, load: LoadOptions | None, labels: Any = None
) -> Iterator[_Place]:
    """Where a job on ``models`` runs, for the length of the block: options that
    contradict each other or the inputs are refused first, before any model is opened
    or any worker starts; then files are pre-flighted and snapshotted (the snapshots
    live as long as the block), objects checked. ``labels`` (a path or an array) is
    checked and handed over as ``run.labels``, an absolute path (an array saved in a
    scratch ``.npy`` for the block's length)."""
    with contextlib.ExitStack() as stack:
        run, shown = _checked_run(run, inputs, labels, stack)
        files = [isinstance(m, (str, os.PathLike)) for m in models]
        place: _Place
        if not any(files):
            for m in models:
                _check_model_object(m)
            place = _Here(models, inputs, run)
        elif not all(files):
            raise UsageError(
                "diff compares two model files or two keras.Model objects, not one of each. "
                f"Received: model_a={type(models[0]).__name__}, model_b={type(models[1]).__name__}"
            )
        else:
            snapshots = [stack.enter_context(snapshot(m)) for m in models]
            place = _Worker(snapshots, inputs, run, load or LoadOptions())
        place.labels_shown = shown
        try:
            yield place
        except KerinspectError as e:  # the worker saw the absolute path; say it as the caller did
            if shown not in (None, "array") and run.labels is not None and run.labels != shown:
                e.replace_text(escape_text(run.labels), escape_text(shown))
            raise


def _checked_run(
    run: RunSpec, inputs: Any, labels: Any, stack: contextlib.ExitStack
) -> tuple[RunSpec, str | None]:
    """``run`` with its options checked against each other and the inputs, its labels
    and vocabulary files found (see :func:`_place`), and how the report names the labels."""
    run, shown = _labels_for_run(run, labels, stack)
    check_inputs(run, inputs)
    run = _checked_labels(run)
    if run.vocab is not None:  # refused here, before any worker starts; the worker reads it again
        from .vocab import read_vocabulary

        read_vocabulary(run.vocab)
        run = run.replace(vocab=os.path.abspath(run.vocab))
    return run, shown


def check_before_worker(
    model: str | os.PathLike[str],
    inputs: Any = None,
    *,
    spec: RunSpec | None = None,
    load: LoadOptions | None = None,
) -> None:
    """Raise what :func:`inspect_model` on the model *file* ``model`` would raise before
    its worker starts (options, the input, labels and ``custom_objects`` files, the
    model file's pre-flight, an input shape the model's archive rules out), without
    starting one and without snapshotting the model. ``kerinspect check`` calls it for
    every model before the first worker starts."""
    from .scan.preflight import preflight

    run = spec if spec is not None else RunSpec()
    with contextlib.ExitStack() as stack:
        run, _ = _checked_run(run, inputs, None, stack)
        model_file = preflight(model)
        tmp = stack.enter_context(_scratch("inputs"))
        _early_shape_check("inspect", model_file, _inputs_for_worker(inputs, tmp), run)
        _checked_custom_objects((load or LoadOptions()).custom_objects)


def _early_shape_check(command: str, model_file: Any, inputs_ref: Any, run: RunSpec) -> None:
    """An ``--input`` array the archive of ``model_file`` rules out, refused here (no
    worker starts for it): :mod:`kerinspect.scan.input_shapes`."""
    if (
        command == "inspect"
        and inputs_ref is not None
        and inputs_ref.kind == "file"
        and model_file.format == "keras"
    ):
        from .scan.input_shapes import check_input_shapes

        check_input_shapes(model_file.path, inputs_ref.path, inputs_ref.source, run.samples)


def _labels_for_run(run: RunSpec, labels: Any, stack: contextlib.ExitStack) -> tuple[RunSpec, str | None]:
    """``run`` with ``labels`` as its ``labels`` path (an array saved to a scratch
    ``.npy`` that lives as long as ``stack``), and how the report names them."""
    if labels is None:
        return run, run.labels
    if isinstance(labels, (str, os.PathLike)):
        return run.replace(labels=os.fspath(labels)), os.fspath(labels)
    import numpy as np  # an array given to the API: the CLI's parent never gets here

    arr = np.asarray(labels)
    if arr.dtype.kind not in "iubU":
        raise UsageError(
            msg(
                "{labels} must hold integers or strings, one per sample. Received: {labels} of dtype {d}",
                d=str(arr.dtype),
            )
        )
    tmp = stack.enter_context(_scratch("inputs"))  # in-memory data handed to the worker
    path = os.path.join(tmp, "labels.npy")
    np.save(path, arr, allow_pickle=False)
    return run.replace(labels=path), "array"


def _checked_labels(run: RunSpec) -> RunSpec:
    """``run`` whose ``labels`` file was found to be a regular ``.npy`` or ``.txt``
    file here (before a worker starts), its path made absolute (the worker's working
    directory is its own)."""
    if run.labels is None:
        return run
    from .safefs import ReadRefused, check_regular

    p = os.fspath(run.labels)
    try:
        check_regular(p)
    except ReadRefused as e:
        if e.kind == "missing":
            raise InputFileError(
                msg("Labels file not found. Received: {labels}={p}", p=escape_text(p)),
                rule="labels-not-found",
            ) from None
        raise InputFileError(
            msg(
                "Cannot use the labels file: {reason}. Received: {labels}={p}",
                reason=e.reason,
                p=escape_text(p),
            ),
            rule="labels-unreadable",
        ) from None
    if not p.lower().endswith((".npy", ".txt")):
        raise InputFileError(
            msg(
                "The labels file must be a .npy or a .txt (one label per line). Received: {labels}={p}",
                p=escape_text(p),
            ),
            rule="labels-unsupported",
        )
    return run.replace(labels=os.path.abspath(p))


def _parsed(parse: Any, result: dict[str, Any], key: str) -> Any:
    """The result's ``key`` parsed (see :func:`_from_worker`), with how the worker was
    confined when one ran, and where its input files were and what they held (facts of
    this process: the worker's own claims are replaced)."""
    parsed = _from_worker(parse, result, key)
    if "input_digest" in result and hasattr(parsed, "inputs"):
        parsed = _with_input_digest(parsed, result["input_digest"])
    return _with_isolation(parsed, result) if "isolation" in result else parsed


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


def _worker_limits(load: LoadOptions, max_file_size: int) -> Any:
    from .sandbox.runner import WorkerLimits

    return WorkerLimits.of(load, max_file_size)


def _check_model_object(model: Any) -> None:
    if not hasattr(model, "layers") or not callable(model):
        raise UsageError(f"Expected a model path or a keras.Model, got {type(model).__name__}")


@contextlib.contextmanager
def snapshot(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Pre-flight ``path`` and copy its bytes into a private scratch directory for the
    length of the block (see :func:`kerinspect.scan.preflight.preflight`): the scan and
    the load read that copy only, and its ``sha256`` is the hash of what was loaded."""
    from .scan.preflight import preflight

    with _scratch("snapshot") as tmp:
        yield preflight(path, snapshot_dir=tmp)


def _job(
    command: str,
    model_file: Any,
    inputs: Any,
    run: RunSpec,
    load: LoadOptions,
    progress: ProgressFn | None,
    max_file_size: int = WORKER_MAX_FILE_SIZE,
    write: dict[str, Any] | None = None,
    model_b: Any = None,
) -> dict[str, Any]:
    """Run one job of :mod:`kerinspect.engine.jobs` on the snapshot ``model_file`` (a
    :class:`~kerinspect.scan.preflight.ModelFile`) in the isolated worker (or in this
    process when ``load.isolate`` is off). ``model_b``: the second snapshot (``diff``)."""
    from .errors import KerinspectError
    from .sandbox.protocol import ModelRef, Request, parse_request

    absolute = os.path.abspath(model_file.path)
    shown = [(absolute, model_file.shown)]
    ref_b = None
    if model_b is not None:
        absolute_b = os.path.abspath(model_b.path)
        ref_b = ModelRef(absolute_b, model_b.format, model_b.size, shown_path=model_b.shown)
        shown.append((absolute_b, model_b.shown))
    with _scratch("inputs") as tmp:
        inputs_ref = _inputs_for_worker(inputs, tmp)
        _early_shape_check(command, model_file, inputs_ref, run)
        shown.extend(_shown_input(inputs_ref))
        # hashed here, before the worker reads them; set on the report by _parsed
        digest = None
        if inputs_ref is not None and command in _INPUTS_RECORDED:
            digest = _input_digest(inputs_ref.kind, inputs_ref.path)
        facts = {"input_digest": digest}
        request = Request(
            command=command,
            model=ModelRef(absolute, model_file.format, model_file.size, shown_path=model_file.shown),
            inputs=inputs_ref,
            run=run,
            load=load.replace(custom_objects=_checked_custom_objects(load.custom_objects)),
            write=write,
            model_b=ref_b,
        ).to_json()
        try:
            if not load.isolate:  # the same request, through the same check, in this process
                from .engine.jobs import QuietChannel, run_request

                parsed = parse_request(request)
                return {
                    **run_request(parsed, QuietChannel(progress)),
                    **facts,
                    "isolation": _isolation(False),
                }
            from .sandbox.runner import run_worker

            def relay(msg: dict[str, Any]) -> None:
                if msg.get("type") == "progress" and progress is not None:
                    progress(int(msg["done"]), int(msg["total"]))

            outcome = run_worker(request, _worker_limits(load, max_file_size), on_message=relay)
            if not outcome.network_isolated:
                _warn_partial_isolation()
            # set here, not by the worker: the worker runs model code and could claim anything
            return {**outcome.result, **facts, "isolation": _isolation(True, outcome.network_isolated)}
        except KerinspectError as e:
            # the job saw the snapshot's path; say it the way the user did
            for seen, said in shown:
                if seen != said:
                    e.replace_text(escape_text(seen), escape_text(said))
            raise


def _shown_input(ref: Any) -> list[tuple[str, str]]:
    """``(absolute, as the user wrote it)`` for the folder of the input data the worker
    reads (a folder, a pattern's literal folders, a file), so that its messages name the
    files as the user would (``data/cats/x.png``, not ``/home/u/data/cats/x.png``)."""
    if ref is None or ref.kind not in ("file", "folder", "pattern") or ref.path == ref.source:
        return []
    if ref.kind != "pattern":
        return [(ref.path, ref.source)]

    def literal(pattern: str) -> str:
        parts = pattern.split(os.sep)
        head = []
        for part in parts[:-1]:
            if glob.has_magic(part):
                break
            head.append(part)
        return os.sep.join(head)

    said = literal(ref.source)
    seen = literal(ref.path)
    return [(seen + os.sep, said + os.sep if said else "")] if seen else []


def _checked_custom_objects(path: str | os.PathLike[str] | None) -> str | None:
    """The ``custom_objects`` file as an absolute path, checked to exist here (before a
    worker starts)."""
    if path is None:
        return None
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputFileError(
            msg("The {custom_objects} file was not found. Received: {custom_objects}={p}", p=escape_text(p)),
            rule="custom-objects-not-found",
        )
    return os.path.abspath(p)


def _inputs_for_worker(inputs: Any, tmp: str) -> Any:
    """User inputs as something the worker can read (an
    :class:`~kerinspect.sandbox.protocol.InputsRef`): a checked file path, or the
    arrays saved (without pickle) to a temporary ``.npz``."""
    from .sandbox.protocol import InputsRef

    if inputs is None:
        return None
    if isinstance(inputs, (str, os.PathLike)):
        from .safefs import ReadRefused, check_regular

        p = os.fspath(inputs)
        if os.path.isdir(p):  # a folder of images: the worker lists and checks each file
            return InputsRef("folder", os.path.abspath(p), p)
        if glob.has_magic(p) and not os.path.lexists(p):
            if next(glob.iglob(p, recursive=True), None) is None:
                raise InputFileError(
                    msg("No file matches the input pattern. Received: {input}={p}", p=escape_text(p)),
                    rule="input-not-found",
                )
            return InputsRef("pattern", os.path.abspath(p), p)
        try:
            check_regular(p)  # a FIFO or device would hang the worker until its timeout
        except ReadRefused as e:
            if e.kind == "missing":
                raise InputFileError(
                    msg("Input file not found. Received: {input}={p}", p=escape_text(p)),
                    rule="input-not-found",
                ) from None
            raise InputFileError(
                msg(
                    "Cannot use the input file: {reason}. Received: {input}={p}",
                    reason=e.reason,
                    p=escape_text(p),
                ),
                rule="input-unreadable",
            ) from None
        if input_file_kind(p) is None:
            raise unsupported_input_error(p, escape_text(p))
        return InputsRef("file", os.path.abspath(p), p)
    import numpy as np  # only for in-memory arrays: the CLI's parent never gets here

    path = os.path.join(tmp, "inputs.npz")
    if isinstance(inputs, Mapping):
        named: dict[str, Any] = {str(k): np.asarray(v) for k, v in inputs.items()}
        np.savez(path, **named)
        return InputsRef("arrays", path, "array", by_name=True)
    arrays = [inputs] if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence) else inputs
    np.savez(path, *[np.asarray(a) for a in arrays])
    return InputsRef("arrays", path, "array")


@contextlib.contextmanager
def _scratch(kind: str) -> Iterator[str]:
    """A private temporary directory named after this process, removed afterwards (and
    by the next run's sweep, should this process be killed first)."""
    from kerinspect.sandbox import scratch

    path = scratch.make(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _isolation(worker: bool, network_namespace: bool = False) -> dict[str, bool]:
    return {"worker": worker, "network_namespace": worker and network_namespace, "socket_guard": worker}


#: The jobs whose result records its inputs (:class:`~kerinspect.provenance.InputRecord`):
#: only for them are ``--input`` files hashed (a dump's manifest names its input as given).
_INPUTS_RECORDED = ("inspect", "report", "diff")


def _input_digest(kind: str, path: str) -> Any:
    if kind not in ("file", "folder", "pattern"):
        return None  # in-memory arrays: the caller's, no file to name
    from .input_digest import digest_inputs

    return digest_inputs(kind, path)


def _with_input_digest(report: Any, digest: Any) -> Any:
    """``report`` whose file inputs carry ``digest`` (an
    :class:`~kerinspect.input_digest.InputDigest`, or None: no file inputs)."""
    facts = {"path": None, "sha256": None, "sha256_of": None}
    if digest is not None:
        facts = {"path": digest.path, "sha256": digest.sha256, "sha256_of": digest.sha256_of}
    inputs = tuple(
        dataclasses.replace(i, **facts)
        if digest is not None and i.source not in ("synthetic", "array")
        # synthetic and arrays name no file, whatever the worker wrote
        else dataclasses.replace(i, path=None, sha256=None, sha256_of=None)
        for i in report.inputs
    )
    return dataclasses.replace(report, inputs=inputs)


def _with_isolation(report: Any, result: dict[str, Any]) -> Any:
    from .report import Isolation

    return dataclasses.replace(report, isolation=Isolation.from_dict(result["isolation"]))


#: Most input warnings shown from one result (each is one line).
MAX_INPUT_WARNINGS = 8


def _warn_inputs(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` less its ``input_warnings`` (:meth:`kerinspect.engine.jobs.Task.result`),
    each raised as an :class:`~kerinspect.errors.InputWarning` (the CLI prints one line
    each). They may come from the worker, which runs model code: each is checked as a
    :class:`~kerinspect.errors.Message` naming known parameters, and shown escaped; a
    malformed one is dropped."""
    raw = result.pop("input_warnings", None)
    if not isinstance(raw, list):
        return result
    import warnings

    from .errors import InputWarning, Message
    from .spec import PARAMETERS

    for item in raw[:MAX_INPUT_WARNINGS]:
        try:
            parts = Message.from_json(item, known=PARAMETERS)
        except ValueError:
            continue
        safe = Message(escape_text(s, 400) if isinstance(s, str) else s for s in parts.segments)
        warnings.warn(InputWarning(safe), stacklevel=4)
    return result


def _warn_partial_isolation() -> None:
    import warnings

    from .errors import PartialIsolationWarning

    warnings.warn(
        PartialIsolationWarning(
            "the kernel refused the worker a private network namespace (common in containers): "
            "only its Python socket guard blocks network access, not native code such as "
            "TensorFlow's file systems."
        ),
        stacklevel=3,
    )
