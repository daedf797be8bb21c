"""One job per command: loaded model(s) and a :class:`~kerinspect.spec.RunSpec` in, a result out.

This is the only code that turns models plus a run spec into a result, whichever
process it runs in. :mod:`kerinspect.api` decides *where*:

* a model **file** runs in the isolated worker: :func:`run_request` (called by
  :mod:`kerinspect.sandbox.worker`, or in the caller's process when isolation is off)
  scans and loads each file (:func:`~kerinspect.engine.load.scan_and_load`), reads the
  inputs the parent handed over, and calls the job;
* a **keras.Model** object runs in the caller's process: :func:`run_in_process` wraps
  it and calls the same job.

Both build one :class:`Task` (the models as :class:`Subject`, the inputs, the spec
whole) and the job reads what it needs from it; a new run option reaches every job
and both paths with no wiring here. Every job returns plain data, as it crosses the
process boundary (``{"report": ...}``, ``{"diff": ...}``, ``{"draft": ...}``); the
in-memory arrays of ``activations`` are the one result that never leaves the caller's
process (a file's activations come back as a ``dump``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kerinspect import __version__
from kerinspect.errors import KerinspectError, escape_text
from kerinspect.report import ModelInfo, ModelReport
from kerinspect.sandbox.protocol import InputsRef, ModelRef, Request
from kerinspect.scan.preflight import ModelFile
from kerinspect.spec import ProgressFn, RunSpec

if TYPE_CHECKING:
    from .inputs import Feed
    from .statistics import StatsCollector

# The engine's modules that import TensorFlow are imported by the jobs that run a model,
# not here: the worker's scan (and its refusals) and ``weights`` never import TensorFlow.


class QuietChannel:
    """The channel of an in-process job: phases are ignored, progress relayed."""

    def __init__(self, progress: ProgressFn | None = None):
        self._progress = progress

    def phase(self, name: str) -> None:
        pass

    def progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(done, total)


@dataclass(frozen=True)
class Subject:
    """A loaded model and what a report says of where it came from.

    Attributes:
        model: the built ``keras.Model``.
        path: the file as the user named it; None for an object in memory.
        format: ``keras``, ``h5`` or ``in-memory``.
        loader: how it was loaded (``keras``, or the legacy upgrade's name).
        notes: how the file was read (content sniffed, legacy conversions).
    """

    model: Any
    path: str | None = None
    format: str = "in-memory"
    loader: str = "keras"
    notes: tuple[str, ...] = ()
    #: the saved ``compile_config``'s loss (a file's; data, never code): see ``gradients``
    compile_loss: Any = None
    #: the file read in the worker (``path`` is as the user named it); None in memory
    file: str | None = None

    def info(self) -> ModelInfo:
        from .report_records import model_info

        return model_info(self.model, self.path, self.format, self.loader, self.notes)


@dataclass(frozen=True)
class Task:
    """Everything a job reads.

    Attributes:
        subjects: the model (two for ``diff``: A, then B).
        run: the run's options, whole.
        inputs: None (synthetic), a ``.npy``/``.npz`` path, or arrays (as
            :func:`~kerinspect.engine.feed.build_feed` takes them).
        source: how the report names user inputs (the path as the user wrote it);
            None: the path itself, or ``array``.
        write: ``dump`` only: ``plan["write"]`` of :func:`kerinspect.dump.prepare_dump`.
    """

    subjects: tuple[Subject, ...]
    run: RunSpec
    inputs: Any = None
    source: str | None = None
    write: Mapping[str, Any] | None = None
    #: the warnings of the feeds built (:attr:`Feed.warnings`), for the result's ``input_warnings``
    input_warnings: list[Any] = field(default_factory=list)

    @property
    def subject(self) -> Subject:
        return self.subjects[0]

    def feed(self) -> Feed:
        """The batches of this task, for its first model's signature."""
        from .feed import build_feed

        feed = build_feed(self.subject.model, self.inputs, self.run, source=self.source)
        self.input_warnings.extend(w for w in feed.warnings if w not in self.input_warnings)
        return feed

    def result(self, result: dict[str, Any]) -> dict[str, Any]:
        """A job's ``result`` with the feed's warnings (``input_warnings``: each a
        :class:`~kerinspect.errors.Message` as JSON), which the caller raises as
        :class:`~kerinspect.errors.InputWarning` (the CLI prints one line each)."""
        if self.input_warnings:
            return {**result, "input_warnings": [w.to_json() for w in self.input_warnings]}
        return result


# -- the jobs ------------------------------------------------------------------------


def inspect(
    task: Task, channel: Any, collector: StatsCollector | None = None, feed: Feed | None = None
) -> ModelReport:
    """The report of one model: every output's statistics and flags, and the weights'.

    ``collector`` replaces the default :class:`StatsCollector` (a subclass that keeps
    more, as the report's :class:`~kerinspect.engine.pictures.PictureCollector` does);
    it is closed here. ``feed``: the task's feed, when the caller built it already."""
    from .batches import EngineOutcome, run_batches
    from .report_records import label_classes, labels_record, layer_records, weight_records
    from .statistics import StatsCollector
    from .tokens import TokenRecorder

    subject, run = task.subject, task.run
    feed = task.feed() if feed is None else feed
    collector = StatsCollector() if collector is None else collector
    collector.words = TokenRecorder.for_model(subject.model, run.sample, run.vocab)
    collector.percentiles = run.percentiles
    outcome = EngineOutcome()
    try:
        caught = run_batches(subject.model, feed, collector, run, channel.progress, outcome)
    finally:
        collector.close()
    classes = collector.classes = label_classes(collector, feed.labels) if collector.labelled else []
    return ModelReport(
        model=replace(subject, notes=(*subject.notes, *outcome.notes)).info(),
        inputs=feed.records,
        layers=layer_records(collector, run.thresholds, classes),
        samples=feed.samples,
        batch_size=feed.batch_size,
        thresholds=run.thresholds,
        weights=weight_records(subject.model, run.thresholds),
        warnings=tuple(caught),
        kerinspect_version=__version__,
        max_depth=run.depth,
        engine=outcome.label,
        labels=labels_record(collector, classes, feed.labels, _labels_source(run)),
    )


def _labels_source(run: RunSpec) -> str:
    """Where a run's labels come from, for :class:`~kerinspect.report.LabelsRecord`."""
    if run.labels is not None:
        return f"file {run.labels}"
    if run.label_column is not None:
        return f"column {run.label_column!r}"
    return "folders"


def inspect_job(task: Task, channel: Any) -> dict[str, Any]:
    """``summary``, ``check``, ``attention``: the whole report. With ``run.gradients``
    (``check``'s gradient rules) also the ``gradients`` result, from the same feed in
    this same worker: the gradient pass first, so that a loss that cannot be chosen, or
    labels a regression loss lacks, stop the job before the inspection runs."""
    if not task.run.gradients:
        return {"report": inspect(task, channel).to_dict()}
    feed = task.feed()
    halves = _Halves(channel, feed.samples)
    gradients = gradient_report(task, feed, halves)
    halves.second = True
    # inference mode: ``training`` is the gradient pass's alone (its moving statistics put back)
    task = replace(task, run=task.run.replace(training=False))
    return {"report": inspect(task, halves, feed=feed).to_dict(), "gradients": gradients}


class _Halves:
    """A channel whose progress covers two passes over the same samples: the first
    counts ``0..n`` of ``2n``, the second ``n..2n``."""

    def __init__(self, channel: Any, samples: int):
        self._channel, self._samples, self.second = channel, samples, False

    def phase(self, name: str) -> None:
        self._channel.phase(name)

    def progress(self, done: int, total: int) -> None:
        offset = self._samples if self.second else 0
        self._channel.progress(offset + done, 2 * total)


def report_job(task: Task, channel: Any) -> dict[str, Any]:
    """``report``: the report with every output's histogram, and the pictures of one
    sample (``run.sample``): its inputs, feature maps, attention probabilities and
    classifier predictions; with labels, 2-D projections of chosen outputs. Runs eagerly:
    the pictures are read from the sample's tensors. With ``run.gradients``, also the
    ``gradients`` result on the same feed (one model load, one TensorFlow start)."""
    from .pictures import PictureCollector, check_sample, projections, tensorflow_version
    from .predictions import check_class_names, output_classes

    run = task.run
    check_class_names(output_classes(task.subject.model), run.class_names)
    collector = PictureCollector(run.sample, run.feature_maps, run.channels, top_k=run.top_k)
    feed = task.feed()
    gradients = None
    if run.gradients:  # first: a loss or labels it cannot use stop the run before the long pass
        gradients = gradient_report(task, feed, channel)
    # inference mode: ``training`` is the gradient pass's alone (its moving statistics put back)
    report = inspect(replace(task, run=run.replace(engine="eager", training=False)), channel, collector, feed)
    check_sample(run.sample, report.samples, task.subject.path)
    pictures = collector.pictures()
    pictures["projections"] = projections(collector, report, run.pca_layers)
    pictures["tensorflow_version"] = tensorflow_version()
    from_images = any((r.note or "").startswith("images:") for r in feed.records)
    names, names_from = (run.class_names, "class_names") if run.class_names is not None else (None, None)
    if names is None and feed.labels:
        names, names_from = feed.labels, "labels"
    check_class_names(collector.classifiers(), run.class_names)
    pictures["inputs"] = collector.shown_inputs(run.preprocess if from_images else None)
    label_classes = len(feed.labels) if feed.labels else None
    pictures["predictions"] = collector.predictions(names, names_from, label_classes)
    if gradients is not None:
        return {"report": report.to_dict(), "pictures": pictures, "gradients": gradients}
    return {"report": report.to_dict(), "pictures": pictures}


def dump_job(task: Task, channel: Any) -> dict[str, Any]:
    """``dump``'s write phase: the selected tensors into the staging directory of
    ``task.write`` (the parent publishes them)."""
    from .dump_writer import write_dump

    if task.write is None:
        raise KerinspectError("The worker received a malformed request: dump needs write", rule="protocol")
    draft = write_dump(task.subject.model, task.feed(), task.write, task.run, progress=channel.progress)
    return {"draft": draft}


def activations_job(task: Task, channel: Any) -> dict[str, Any]:
    """:func:`kerinspect.activations` on a model in this process: the selected tensors as
    arrays (:class:`~kerinspect.engine.activations.Activations`), never JSON."""
    from .activations import collect_activations

    return {"activations": collect_activations(task.subject.model, task.feed(), task.run, channel.progress)}


def diff_job(task: Task, channel: Any) -> dict[str, Any]:
    """``diff``: model B against model A on A's inputs, every paired call compared."""
    from .diff import diff_loaded
    from .predictions import check_class_names, output_classes

    if len(task.subjects) != 2:
        raise KerinspectError("The worker received a malformed request: diff needs model_b", rule="protocol")
    a, b = task.subjects
    check_class_names(output_classes(a.model), task.run.class_names)
    report = diff_loaded(
        a.model,
        b.model,
        task.feed(),
        info_a=a.info(),
        info_b=b.info(),
        run=task.run,
        progress=channel.progress,
    )
    return {"diff": report.to_dict()}


def gradients_job(task: Task, channel: Any) -> dict[str, Any]:
    """``gradients``: the loss's gradient at every layer call's outputs and every weight
    (eager replay under a gradient tape, :mod:`kerinspect.engine.gradients`)."""
    return {"gradients": gradient_report(task, task.feed(), channel)}


def gradient_report(task: Task, feed: Feed, channel: Any) -> dict[str, Any]:
    """The ``gradients`` result of ``task`` on ``feed`` (``gradients``, and ``report``
    with ``run.gradients``, which shares its feed), as plain data."""
    from .batches import collecting_warnings
    from .gradients import gradients_loaded

    subject, run = task.subject, task.run
    result: dict[str, Any] = {}

    def work() -> None:
        result.update(
            gradients_loaded(
                subject.model, feed, run, _saved_loss(subject), channel.progress, file=subject.file
            )
        )

    caught = collecting_warnings(work)
    return {
        "model": subject.info().to_dict(),
        "inputs": [r.to_dict() for r in feed.records],
        "samples": feed.samples,
        "batch_size": feed.batch_size,
        "engine": "eager",
        **result,
        "warnings": caught,
        "kerinspect_version": __version__,
    }


def _saved_loss(subject: Subject) -> Any:
    """The loss the model was saved compiled with: a file's ``compile_config`` loss (data);
    a compiled model object's, when it is a name."""
    if subject.path is None:
        own = getattr(subject.model, "loss", None)
        return own if isinstance(own, str) else None
    return subject.compile_loss


def accumulate_job(task: Task, channel: Any) -> dict[str, Any]:
    """A session's statistics over the data files its parent hands over
    (:mod:`kerinspect.engine.session`; ``summary --runner``, :mod:`kerinspect.beam`)."""
    from .session import accumulate_job as job

    return job(task, channel)


def finish_job(task: Task, channel: Any) -> dict[str, Any]:
    """The report of merged session statistics (:mod:`kerinspect.engine.session`)."""
    from .session import finish_job as job

    return job(task, channel)


#: The jobs, by command. ``activations`` runs only in the caller's process (its arrays
#: are not JSON); the others in either. ``weights`` reads a file with h5py alone and
#: needs no loaded model: :func:`run_request` runs it.
JOBS: dict[str, Callable[[Task, Any], dict[str, Any]]] = {
    "inspect": inspect_job,
    "report": report_job,
    "dump": dump_job,
    "diff": diff_job,
    "activations": activations_job,
    "gradients": gradients_job,
    "accumulate": accumulate_job,
    "finish": finish_job,
}


# -- where a job runs -------------------------------------------------------------------


def run_in_process(
    command: str,
    models: Sequence[Any],
    run: RunSpec,
    inputs: Any = None,
    *,
    progress: ProgressFn | None = None,
    write: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a job on ``keras.Model`` objects in this process (they are the caller's own
    code already): the same job, on the same :class:`Task`, as a file gets in the worker."""
    task = Task(tuple(Subject(m) for m in models), run, inputs, write=write)
    return task.result(JOBS[command](task, QuietChannel(progress)))


def run_request(request: Request, channel: Any) -> dict[str, Any]:
    """Run a worker request: scan and load each model file, read the inputs the parent
    handed over, then the job. The request was parsed and validated once
    (:func:`~kerinspect.sandbox.protocol.parse_request`): no defaults are applied here."""
    if request.command == "weights":
        return weights_job(request, channel)
    refs = (request.model,) if request.model_b is None else (request.model, request.model_b)
    subjects = tuple(_open(ref, request, channel) for ref in refs)
    channel.phase("run")
    task = Task(
        subjects,
        request.run,
        _read_inputs(request.inputs),
        source=None if request.inputs is None else request.inputs.source,
        write=request.write,
    )
    if request.command not in JOBS or request.command == "activations":
        raise KerinspectError(f"The worker has no job {escape_text(request.command, 40)!r}", rule="protocol")
    return task.result(JOBS[request.command](task, channel))


#: The modules an ``inspect`` job imports as it goes (scan, load, feed, run, records,
#: pictures), that a fork server imports once for all its children (:func:`warm_imports`).
JOB_MODULES = (
    "kerinspect.scan.preflight",
    "kerinspect.engine.load",
    "kerinspect.engine.feed",
    "kerinspect.engine.batches",
    "kerinspect.engine.report_records",
    "kerinspect.engine.statistics",
    "kerinspect.engine.compiled",
    "kerinspect.engine.tokens",
    "kerinspect.engine.pictures",
    "kerinspect.engine.predictions",
)


def warm_imports() -> None:
    """Import :data:`JOB_MODULES` (Python modules only: no TensorFlow operation runs)."""
    import importlib

    for name in JOB_MODULES:
        importlib.import_module(name)


def weights_job(request: Request, channel: Any) -> dict[str, Any]:
    """``weights``: h5py only, no TensorFlow, no deserialization (a file, never an object)."""
    from kerinspect.scan.weights import inspect_weights

    channel.phase("read")
    run = request.run
    report = inspect_weights(
        request.model.path,
        run.thresholds,
        min_update_ratio=run.min_update_ratio,
        max_update_ratio=run.max_update_ratio,
    )
    data = report.to_dict()
    data["model"]["path"] = _shown(request.model)
    return {"report": data}


def _open(ref: ModelRef, request: Request, channel: Any) -> Subject:
    """Scan and load one model file of a request."""
    from kerinspect.scan.preflight import content_note

    from .load import scan_and_load

    model_file = ModelFile(ref.path, ref.format, ref.size)
    loaded = scan_and_load(model_file, request.load, channel.phase)
    shown = _shown(ref)
    note = content_note(shown, ref.format)  # how the file was read: by its content (HDF5 named .keras)
    notes = loaded.notes if note is None else (note, *loaded.notes)
    return Subject(loaded.model, shown, ref.format, loaded.loader, notes, loaded.compile_loss, ref.path)


def _shown(ref: ModelRef) -> str:
    """The model's path as the user wrote it."""
    return ref.path if ref.shown_path is None else ref.shown_path


def _read_inputs(inputs: InputsRef | None) -> Any:
    """What :func:`~kerinspect.engine.feed.build_feed` takes as ``inputs``: None
    (synthetic), the user's file path, or the arrays the parent saved."""
    if inputs is None:
        return None
    if inputs.kind in ("file", "folder", "pattern"):
        return inputs.path
    import numpy as np

    with np.load(inputs.path, allow_pickle=False) as data:
        if inputs.by_name:
            return {k: data[k] for k in data.files}
        return [data[f"arr_{i}"] for i in range(len(data.files))]


__all__ = ["JOBS", "QuietChannel", "Subject", "Task", "run_in_process", "run_request"]
