"""The Python API; the CLI is a thin shell over these functions.

>>> import kerinspect
>>> report = kerinspect.inspect_model("model.keras", samples=64)   # doctest: +SKIP
>>> [r.path for r in report.layers if any(o.flags for o in r.outputs)]  # doctest: +SKIP

Every function here only decides *where* its command's job runs; the job itself
(:mod:`kerinspect.engine.jobs`, one per command) is the same code whatever the model:

* a model *file* is pre-flighted and snapshotted here, then opened in a disposable,
  isolated worker process by default (:mod:`kerinspect.sandbox.runner`): the static
  scan, Keras's deserialization and the forward passes all happen there, and only
  plain data comes back;
* an in-memory ``keras.Model`` (already the caller's own code) runs in this process.

Both take the same :class:`~kerinspect.spec.RunSpec` and give the same result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import InputFileError, KerinspectError, UsageError, escape_text, msg
from .report import ModelReport, WeightsReport

if TYPE_CHECKING:
    from .diff import DiffReport
from .spec import (  # noqa: F401 - the defaults and specs are re-exported here
    DEFAULT_BATCH_SIZE,
    DEFAULT_DIM,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PARAMS,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    ISOLATION_ENV,
    WORKER_MAX_FILE_SIZE,
    LoadOptions,
    ProgressFn,
    RunSpec,
    Thresholds,
    check_inputs,
    input_file_kind,
    isolation_default,
    unsupported_input_error,
)


def inspect_model(
    model: Any,
    inputs: Any = None,
    *,
    labels: Any = None,
    spec: RunSpec | None = None,
    progress: ProgressFn | None = None,
    load: LoadOptions | None = None,
    **options: Any,
) -> ModelReport:
    """Run a model on sample inputs and report every layer call's outputs and health.

    Args:
        model: path of a ``.keras``/``.h5`` file, or a built ``keras.Model``.
        inputs: None for synthetic inputs; a ``.npy``/``.npz`` path; an array (one-input
            models); a list of arrays in ``model.inputs`` order; or a dict by input name.
        labels: the class of each sample of ``inputs`` that holds no labels itself: a
            path (``.npy`` of integers or strings, ``.txt`` of one label per line) or a
            sequence/array of integers or strings. With labels (these, an image
            folder's, ``label_column``'s) every float output gets its
            :class:`~kerinspect.report.Separability`.
        spec: the run's options as a :class:`~kerinspect.spec.RunSpec` (default: its
            defaults).
        progress: called as ``progress(samples_done, samples_total)`` after each batch.
        load: how a model *file* is opened (isolation, limits, trust); ignored for
            in-memory models.
        **options: instead of ``spec``, or on top of it, any of its fields by name:
            ``samples`` (synthetic: default 32; with ``inputs``: the first ``samples``
            rows, default all), ``batch_size``, ``seed``, ``dim``, ``shapes``
            (``{"name": (16, 8)}`` or CLI strings ``"name=16,8"``), ``thresholds``;
            ``percentiles=True``: every float output's ``p01``, ``p50``, ``p99`` (None
            without it: they cost the compiled engine up to 1.4x its run time).

    Returns:
        A :class:`~kerinspect.report.ModelReport`, one record per layer call in graph order.

    Raises:
        KerinspectError: a subclass carrying the exit code (bad file, bad input, ...);
            :class:`~kerinspect.spec.SpecError` (exit 2) for a bad option value.
    """
    run = _run_spec(spec, options)
    with _place((model,), inputs, run, load, labels) as place:
        result = place.run("inspect", progress)
    return _labels_shown(_parsed(ModelReport.from_dict, result, "report"), place.labels_shown)


def model_gradients(
    model: Any,
    inputs: Any = None,
    *,
    labels: Any = None,
    spec: RunSpec | None = None,
    progress: ProgressFn | None = None,
    load: LoadOptions | None = None,
    **options: Any,
) -> Any:
    """The gradient of the loss at every layer call's outputs and every trainable
    weight, and where gradients vanish or explode (``kerinspect gradients``).

    Args:
        model, inputs, labels, spec, progress, load: as for :func:`inspect_model`.
        **options: any :class:`~kerinspect.spec.RunSpec` field by name; here also
            ``loss`` (a built-in Keras loss name; default: the saved
            ``compile_config``'s when it is one), ``training``,
            ``vanishing_gradient``, ``exploding_gradient``.

    Returns:
        A :class:`~kerinspect.gradients.GradientReport`.

    Raises:
        KerinspectError: as :func:`inspect_model`; a missing or unknown loss, or a
            regression loss without labels, is a usage error (exit 2).
    """
    from .gradients import GradientReport
    from .losses import check_loss_options

    run = _run_spec(spec, options)
    check_loss_options(run.loss, run.from_logits)  # refused here, before any worker starts
    with _place((model,), inputs, run, load, labels) as place:
        result = place.run("gradients", progress)
    return _parsed(GradientReport.from_dict, result, "gradients")


def inspect_with_gradients(
    model: Any,
    inputs: Any = None,
    *,
    labels: Any = None,
    spec: RunSpec | None = None,
    progress: ProgressFn | None = None,
    load: LoadOptions | None = None,
    **options: Any,
) -> tuple[ModelReport, Any]:
    """:func:`inspect_model` and :func:`model_gradients` in one job (one worker, one
    load of the file, the same inputs): what ``kerinspect check`` runs when a gradient
    rule is asked. The gradient pass runs first, so a loss that cannot be chosen stops
    the job before the inspection.

    Returns:
        ``(report, gradients)``: a :class:`~kerinspect.report.ModelReport` and a
        :class:`~kerinspect.gradients.GradientReport`.

    Raises:
        KerinspectError: as :func:`inspect_model` and :func:`model_gradients`.
    """
    from .gradients import GradientReport
    from .losses import check_loss_options

    run = _run_spec(spec, options).replace(gradients=True)
    check_loss_options(run.loss, run.from_logits)  # refused here, before any worker starts
    with _place((model,), inputs, run, load, labels) as place:
        result = place.run("inspect", progress)
    report = _labels_shown(_parsed(ModelReport.from_dict, result, "report"), place.labels_shown)
    return report, _parsed(GradientReport.from_dict, result, "gradients")


def inspect_for_report(
    model: Any,
    inputs: Any = None,
    *,
    labels: Any = None,
    spec: RunSpec | None = None,
    progress: ProgressFn | None = None,
    load: LoadOptions | None = None,
    **options: Any,
) -> Any:
    """:func:`inspect_model` with what ``kerinspect report`` draws: every output's value
    histogram, and the feature maps and attention probabilities of one sample
    (``spec.sample``; at most ``spec.feature_maps`` layers of ``spec.channels``
    channels each); with labels (``labels`` as for :func:`inspect_model`), 2-D PCA
    projections of the outputs ``spec.pca_layers`` names (default: the last hidden
    layer and a middle one). With ``gradients=True``, also the report of
    :func:`model_gradients` (``loss``, ``from_logits``, ``training``,
    ``vanishing_gradient``, ``exploding_gradient`` as there), from the same worker.

    Returns:
        A :class:`~kerinspect.figures.ReportData` (report, pictures, the file's SHA-256,
        the gradient report or None).

    Raises:
        KerinspectError: as :func:`inspect_model`; a ``sample`` the run does not have is
            a :class:`~kerinspect.errors.UsageError`; with ``gradients``, as
            :func:`model_gradients`; a gradient option without ``gradients`` is a
            usage error (exit 2).
    """
    from .figures import ReportData, parse_pictures
    from .gradients import GradientReport

    run = _run_spec(spec, options)
    _check_gradient_options(run)
    with _place((model,), inputs, run, load, labels) as place:
        result = place.run("report", progress)
    report = _labels_shown(_parsed(ModelReport.from_dict, result, "report"), place.labels_shown)
    grads = _parsed(GradientReport.from_dict, result, "gradients") if run.gradients else None
    return ReportData(report, _from_worker(parse_pictures, result, "pictures"), place.sha256, grads)


def _check_gradient_options(run: RunSpec) -> None:
    """``report``: the gradient options apply with ``gradients`` only (refused, not
    ignored); with it, an unknown loss is refused before any worker starts."""
    from .errors import Param
    from .losses import check_loss_options

    if run.gradients:
        check_loss_options(run.loss, run.from_logits)
        return
    defaults = RunSpec()
    given = [
        name
        for name in ("loss", "from_logits", "training", "vanishing_gradient", "exploding_gradient")
        if getattr(run, name) != getattr(defaults, name)
    ]
    if given:
        raise UsageError(
            msg("{option} applies to the gradient chart: add {gradients}.", option=Param(given[0])),
            parameter=given[0],
        )


def dump_activations(
    model: Any,
    out: str | os.PathLike[str],
    inputs: Any = None,
    *,
    spec: RunSpec | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    load: LoadOptions | None = None,
    **options: Any,
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
        inputs, spec: as for :func:`inspect_model`; the spec's ``layers`` are glob
            patterns matched against layer paths (``encoder/*``, ``shared@1``);
            default: every layer call.
        overwrite: replace a previous kerinspect dump in ``out`` (only its own files).
        progress: called as ``progress(samples_done, samples_total)`` after each batch.
        load: how a model *file* is opened, as for :func:`inspect_model`.
        **options: fields of the spec by name, as for :func:`inspect_model`
            (``samples``, ``batch_size``, ``seed``, ``dim``, ``shapes``, ``layers``,
            ``depth``, ``engine``, ``percentiles``: the manifest's stats give p01/p50/p99;
            ``max_bytes``: refuse to write more than this, default 2 GiB).

    Returns:
        The :class:`~kerinspect.dump.Dump`, as :func:`~kerinspect.dump.load_dump` reads it.

    Raises:
        KerinspectError: a subclass carrying the exit code; ``OutputError`` (exit 7)
            for a refused directory, a dump above ``max_bytes``, a full disk.
    """
    run = _run_spec(spec, options)
    with _place((model,), inputs, run, load) as place:
        return _dump(place, out, inputs, run, overwrite, progress)


def activations(
    model: Any,
    inputs: Any,
    layers: str | Sequence[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    samples: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: ProgressFn | None = None,
    load: LoadOptions | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The outputs of the chosen layer calls on ``inputs``, as numpy arrays in memory.

    The engine is the one of :func:`dump_activations`: every call of every operation
    at every depth (the second call of a shared layer is ``shared@1``, a nested
    model's layers are ``encoder/dense``, a custom layer's sub-layers
    ``block/att/query``), each output of a multi-output call as ``path:output``
    (``lstm:state_h``), and an attention layer's probabilities as
    ``path:attention_scores`` (``block/att:attention_scores``, shape
    ``(samples, heads, queries, keys)``) next to ``path:output``. The model runs
    batch by batch in inference mode; after the first batch each selected tensor's
    array is allocated once for every sample and filled batch by batch, so memory
    holds the arrays asked for plus one batch of the model, never every activation.

    A ``keras.Model`` object runs **in this process**: it is already your own code.
    A model *file* is opened as the CLI opens it: pre-flight and a private snapshot
    here, then the static scan, Keras's loading and the forward passes in the
    isolated worker (``load`` says how); the worker writes a ``dump`` into a private
    temporary directory, every file of which is checked here before it is read back
    (:func:`kerinspect.dump.load_dump`) and the directory removed.

    >>> acts = kerinspect.activations(model, x, layers=["block/*"])  # doctest: +SKIP
    >>> acts["block/att:attention_scores"].shape                      # doctest: +SKIP
    (64, 2, 10, 10)

    Args:
        model: a built ``keras.Model``, or the path of a ``.keras``/``.h5`` file.
        inputs: an array (one-input models); a list of arrays in ``model.inputs``
            order; a dict by input name; a ``.npy``/``.npz`` path; or None for
            synthetic inputs (``samples``, ``seed``, ``dim``, ``shapes`` in ``options``).
        layers: glob patterns (or one pattern) matched against layer paths as the
            report shows them (``"block/*"``, ``"shared@1"``, ``"*"``); None: every
            layer call. Every pattern must match at least one call.
        batch_size: samples per forward pass.
        samples: use only the first ``samples`` rows of ``inputs`` (None: all).
        max_bytes: refuse to hold more than this many bytes of arrays (default 2 GiB);
            it is checked after the first batch, before anything large is allocated.
        progress: called as ``progress(samples_done, samples_total)`` after each batch.
        load: how a model *file* is opened (:class:`~kerinspect.spec.LoadOptions`:
            isolation, limits, ``custom_objects``, ``trust_model``); ignored for
            model objects.
        **options: other fields of :class:`~kerinspect.spec.RunSpec` by name
            (``seed``, ``dim``, ``shapes``; ``engine``: how the batches after the
            first run, as ``dump --engine``).

    Returns:
        ``{key: array}`` in call order, every sample stacked on axis 0. A selected
        tensor that cannot be stacked (no batch axis, such as a position embedding
        computed once per batch; strings) is left out, with a ``UserWarning``
        naming it and why.

    Raises:
        UsageError: a ``layers`` pattern matches no layer call, or a bad argument (exit 2).
        OutputError: the arrays would need more than ``max_bytes`` (exit 7).
        InferenceError: the model failed to run, or a tensor changed shape between
            batches (exit 6).
        KerinspectError: for a file, whatever opening it raises (not found,
            refused by the scan, malformed...).
    """
    if isinstance(layers, str):
        layers = (layers,)
    run = _run_spec(
        None,
        {
            "batch_size": batch_size,
            "samples": samples,
            "layers": tuple(layers or ()),
            "max_bytes": max_bytes,
            **options,
        },
    )
    with _place((model,), inputs, run, load) as place:
        if place.in_process:  # the arrays themselves
            got = place.run("activations", progress)["activations"]
            arrays, skipped, notes = got.arrays, got.skipped, got.notes
        else:  # the worker's arrays come back as a dump, checked, then read into memory
            arrays, skipped, notes = _dumped_arrays(place, inputs, run, progress)
    _warn_skipped(skipped)
    _warn_notes(notes)
    return arrays


def _dumped_arrays(
    place: _Place, inputs: Any, run: RunSpec, progress: ProgressFn | None
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """A dump of ``place``'s model into a private scratch directory, read back into
    memory: its arrays, the tensors it left out (and why) and the engine's notes."""
    import numpy as np

    from .dump import load_dump

    with _scratch("activations") as tmp:
        _dump(place, os.path.join(tmp, "dump"), inputs, run, False, progress)
        dump = load_dump(os.path.join(tmp, "dump"))
        # copies out of the memory maps before the directory goes
        arrays = {key: np.array(dump[key]) for key in dump}
        skipped = {
            f"{e.get('path')}:{e.get('output_name')}": str(e.get("reason"))
            for e in dump.manifest.get("skipped", ())
            if isinstance(e, dict)
        }
        notes = [n for n in dump.manifest.get("notes", ()) if isinstance(n, str)]
    return arrays, skipped, notes


def _warn_notes(notes: Sequence[str]) -> None:
    """The engine's notes (why the compiled one stopped), each one ``UserWarning``."""
    import warnings

    for note in notes:
        warnings.warn(escape_text(note, 400), stacklevel=3)


def _warn_skipped(skipped: Mapping[str, str]) -> None:
    if skipped:
        import warnings

        listed = "; ".join(f"{escape_text(k, 100)} ({escape_text(v, 100)})" for k, v in skipped.items())
        warnings.warn(
            f"Selected tensors that cannot be stacked by sample were left out: {listed}", stacklevel=3
        )


def _dump(
    place: _Place,
    out: str | os.PathLike[str],
    inputs: Any,
    run: RunSpec,
    overwrite: bool,
    progress: ProgressFn | None,
) -> Any:
    """Prepare ``out`` here, write the dump where ``place`` runs jobs, publish it here."""
    from . import dump as d

    if isinstance(inputs, (str, os.PathLike)):
        source: str | None = os.fspath(inputs)
    else:
        source = None if inputs is None else "array"
    manifest_run = {  # the manifest's record of the run (its JSON layout is a contract)
        "input": source,
        "samples": run.samples,
        "batch_size": run.batch_size,
        "seed": run.seed,
        "dim": run.dim,
        "shapes": _jsonable_shapes(run.shapes) or [],
        "layers": list(run.layers),
    }
    plan = d.prepare_dump(
        out,
        overwrite=overwrite,
        max_bytes=run.max_bytes,
        layers=run.layers,
        model_path=place.shown,
        model_sha256=place.sha256,
        model_format=place.format,
        run=manifest_run,
    )
    try:
        # the worker may write the arrays (and its log), nothing more
        result = place.run(
            "dump", progress, write=plan["write"], max_file_size=int(plan["write"]["max_bytes"]) + (1 << 20)
        )
        draft = _from_worker(_dict, result, "draft")  # publish_dump checks its contents
    except BaseException:
        d.abort_dump(plan)
        raise
    d.publish_dump(plan, draft)
    return d.load_dump(plan["out"])


def inspect_weights(
    path: str | os.PathLike[str],
    thresholds: Thresholds | None = None,
    *,
    load: LoadOptions | None = None,
    min_update_ratio: float | None = None,
    max_update_ratio: float | None = None,
) -> WeightsReport:
    """Statistics and health of every weight in a model file, read with h5py only
    (no TensorFlow, nothing deserialized); see :func:`kerinspect.scan.weights.inspect_weights`.
    With the optimizer state of a trained model, each weight's ``update_ratio`` (the
    last step's ``‖Δw‖/‖w‖``, flagged outside ``min_update_ratio``..``max_update_ratio``).
    The file is parsed in the isolated worker, since HDF5 parsers crash on hostile files."""
    limits: dict[str, Any] = {
        k: v
        for k, v in (
            ("thresholds", thresholds),
            ("min_update_ratio", min_update_ratio),
            ("max_update_ratio", max_update_ratio),
        )
        if v is not None
    }
    run = RunSpec(**limits)
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(
            f"inspect_weights reads a model file, not an object. Received: path={type(path).__name__}"
        )
    with _place((path,), None, run, load) as place:
        result = place.run("weights", None)
    return _parsed(WeightsReport.from_dict, result, "report")


def diff_models(
    model_a: Any,
    model_b: Any,
    inputs: Any = None,
    *,
    spec: RunSpec | None = None,
    progress: ProgressFn | None = None,
    load: LoadOptions | None = None,
    **options: Any,
) -> DiffReport:
    """Run two models on the same inputs and compare them, layer call by layer call.

    Both run in one isolated worker, batch by batch. Calls are paired by path, then
    by graph structure (renamed copies); each pair's outputs get cosine similarity,
    normalised error ``‖a−b‖/‖a‖``, SQNR in dB, max ``|a−b|`` and both sides'
    statistics, merged across batches. Model A is the reference.

    Args:
        model_a, model_b: paths of ``.keras``/``.h5`` files, or built ``keras.Model``
            objects (both in memory: compared in this process).
        inputs: as for :func:`inspect_model` (for model A's signature; B gets the same arrays).
        spec: the run's options; ``diff_tolerance`` (largest normalised error of an
            agreeing output, and of a layer that does not count as diverging) and
            ``local`` (also run each layer of B on A's inputs of that layer) are its
            diff fields.
        progress: called as ``progress(samples_done, samples_total)`` after each batch.
        load: how the model *files* are opened, as for :func:`inspect_model`.
        **options: fields of the spec by name.

    Returns:
        A :class:`~kerinspect.diff.DiffReport`; its ``divergence`` names the first
        layer whose error exceeds the tolerance, ``exit_code`` is 0 when the models'
        outputs agree within it and 1 when not.

    Raises:
        KerinspectError: a subclass carrying the exit code, as for :func:`inspect_model`.
    """
    run = _run_spec(spec, options)
    with _place((model_a, model_b), inputs, run, load) as place:
        result = place.run("diff", progress)
    from .diff import DiffReport as Parsed

    return _parsed(Parsed.from_dict, result, "diff")


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


def _labels_shown(report: ModelReport, shown: str | None) -> ModelReport:
    """``report`` whose labels, read from a file, name it as the caller did (the worker
    saw an absolute path, or a scratch file for an array)."""
    if report.labels is None or shown is None or not report.labels.source.startswith("file "):
        return report
    source = "array" if shown == "array" else f"file {shown}"
    return dataclasses.replace(report, labels=dataclasses.replace(report.labels, source=source))


def _parsed(parse: Any, result: dict[str, Any], key: str) -> Any:
    """The result's ``key`` parsed (see :func:`_from_worker`), with how the worker was
    confined when one ran, and where its input files were and what they held (facts of
    this process: the worker's own claims are replaced)."""
    parsed = _from_worker(parse, result, key)
    if "input_digest" in result and hasattr(parsed, "inputs"):
        parsed = _with_input_digest(parsed, result["input_digest"])
    return _with_isolation(parsed, result) if "isolation" in result else parsed


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


def _run_spec(spec: RunSpec | None, options: Mapping[str, Any]) -> RunSpec:
    """``spec`` (default: the defaults) with the keyword ``options`` (its field names)
    in place; an unknown name or a bad value raises :class:`~kerinspect.spec.SpecError`."""
    base = spec if spec is not None else RunSpec()
    unknown = [k for k in options if k not in _RUN_FIELDS]
    if unknown:
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r} (RunSpec fields: {', '.join(_RUN_FIELDS)})"
        )
    return base.replace(**options) if options else base


_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunSpec))


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


def _jsonable_shapes(shapes: Sequence[str] | Mapping[str, tuple[int, ...]]) -> Any:
    if isinstance(shapes, Mapping):
        return {str(k): [int(d) for d in v] for k, v in shapes.items()}
    return list(shapes)


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
