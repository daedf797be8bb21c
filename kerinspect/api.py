"""The Python API; the CLI is a thin shell over these functions.

>>> import kerinspect
>>> report = kerinspect.inspect_model("model.keras", samples=64)   # doctest: +SKIP
>>> [r.path for r in report.layers if any(o.flags for o in r.outputs)]  # doctest: +SKIP

Every function here only decides *where* its command's job runs (the parent's side of
a job, the checks before any worker starts included, is :mod:`kerinspect.api_jobs`);
the job itself (:mod:`kerinspect.engine.jobs`, one per command) is the same code
whatever the model:

* a model *file* is pre-flighted and snapshotted here, then opened in a disposable,
  isolated worker process by default (:mod:`kerinspect.sandbox.runner`): the static
  scan, Keras's deserialization and the forward passes all happen there, and only
  plain data comes back;
* an in-memory ``keras.Model`` (already the caller's own code) runs in this process.

Both take the same :class:`~kerinspect.spec.RunSpec` and give the same result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .api_jobs import (  # noqa: F401 - check_before_worker and snapshot are public here too
    _from_worker,
    _parsed,
    _Place,
    _place,
    _scratch,
    check_before_worker,
    snapshot,
)
from .errors import UsageError, escape_text, msg
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


# -- helpers of the functions above ------------------------------------------------


def _labels_shown(report: ModelReport, shown: str | None) -> ModelReport:
    """``report`` whose labels, read from a file, name it as the caller did (the worker
    saw an absolute path, or a scratch file for an array)."""
    if report.labels is None or shown is None or not report.labels.source.startswith("file "):
        return report
    source = "array" if shown == "array" else f"file {shown}"
    return dataclasses.replace(report, labels=dataclasses.replace(report.labels, source=source))


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("not an object")
    return value


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


def _jsonable_shapes(shapes: Sequence[str] | Mapping[str, tuple[int, ...]]) -> Any:
    if isinstance(shapes, Mapping):
        return {str(k): [int(d) for d in v] for k, v in shapes.items()}
    return list(shapes)
