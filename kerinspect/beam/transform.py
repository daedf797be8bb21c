"""``LayerStatistics``: per-layer statistics of a model over a PCollection of examples.

Each Beam worker opens the model once (:meth:`_Accumulate.setup`): the same pre-flight
and private snapshot as the CLI, then one isolated kerinspect worker that scans and
loads it (:class:`kerinspect.sandbox.session.WorkerSession`). Examples are batched on
the Beam worker (``spec.batch_size`` each) and handed to that worker as a file: a
TFRecord shard for serialized ``tf.train.Example`` records, an ``.npz`` for dicts of
arrays (one sample each, keyed by input name). At the end of each bundle the worker's
statistics come back unfinished (a *state*, :mod:`kerinspect.accumulators`); the states
are merged (``CombineGlobally``: exact counts, extremes and sketches; Chan's update for
mean and M2) and one more isolated worker finishes the merged state into the report
``summary`` prints (:func:`finish`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from kerinspect.accumulators import empty_state, merge_states
from kerinspect.errors import ChildCrashError, DataError, KerinspectError, UsageError, escape_text
from kerinspect.spec import LoadOptions, RunSpec


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_tfrecord(path: str, records: Iterable[bytes]) -> None:
    """``records`` as one TFRecord file (length, masked CRC32C of the length, data,
    masked CRC32C of the data; what ``tf.data.TFRecordDataset`` checks)."""
    with open(path, "wb") as f:
        for r in records:
            n = struct.pack("<Q", len(r))
            f.write(n + struct.pack("<I", _masked_crc(n)) + r + struct.pack("<I", _masked_crc(r)))


def _write_arrays(path: str, examples: list[dict[str, Any]]) -> None:
    """Examples that are dicts of arrays (one sample each), stacked by key into an ``.npz``."""
    import numpy as np

    keys = list(examples[0])
    if any(list(e) != keys for e in examples):
        raise UsageError("Every example must have the same keys (the model's input names).")
    stacked: dict[str, Any] = {k: np.stack([np.asarray(e[k]) for e in examples]) for k in keys}
    np.savez(path, **stacked)


@contextlib.contextmanager
def opened_model(model: str) -> Iterator[Any]:
    """The model file pre-flighted and snapshotted (:func:`kerinspect.api.snapshot`);
    a path another filesystem serves (``gs://...``: Beam's ``FileSystems``) is copied
    to a local temporary file first."""
    from kerinspect.api import snapshot

    with contextlib.ExitStack() as stack:
        local = model
        if "://" in model:
            from apache_beam.io.filesystems import FileSystems

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="kerinspect-model-"))
            local = os.path.join(tmp, os.path.basename(model))
            with FileSystems.open(model) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst)
        yield stack.enter_context(snapshot(local))


def _request(
    command: str, model_file: Any, shown: str, run: RunSpec, load: LoadOptions, source: str, **kw: Any
) -> dict[str, Any]:
    from kerinspect.sandbox.protocol import InputsRef, ModelRef, Request

    return Request(
        command=command,
        model=ModelRef(
            os.path.abspath(model_file.path), model_file.format, model_file.size, shown_path=shown
        ),
        inputs=InputsRef("pattern", source, source),
        run=run,
        load=load,
        **kw,
    ).to_json()


#: What starts the text of a :class:`CarriedError`: the error as JSON follows.
CARRIED = "kerinspect-error:"


class CarriedError(RuntimeError):
    """A kerinspect error on its way through Beam, which re-raises a step's exception as
    a new one built from its text (in this process), or as text alone (from its worker
    processes): its text is :data:`CARRIED` and the error as the worker protocol's
    ``error`` message (exit code, rule, message and hint with their parameter
    references), which :func:`kerinspect.beam.pipeline.carried` reads back."""


def _kept(e: KerinspectError) -> CarriedError:
    payload = {
        "type": "error",
        "exit_code": int(e.exit_code),
        "rule": e.rule,
        "message": e.message_parts.to_json(),
        "hint": None if e.hint_parts is None else e.hint_parts.to_json(),
    }
    carried = CarriedError(CARRIED + json.dumps(payload))
    carried._tagged_with_step = True  # type: ignore[attr-defined]  # Beam: raise it as it is
    return carried


def _keeping(f: Any) -> Any:
    """``f`` (a function, or a generator function) raising its kerinspect errors as
    :class:`CarriedError`."""
    import inspect

    if inspect.isgeneratorfunction(f):

        @functools.wraps(f)
        def generated(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from f(*args, **kwargs)
            except KerinspectError as e:
                raise _kept(e) from None

        return generated

    @functools.wraps(f)
    def called(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except KerinspectError as e:
            raise _kept(e) from None

    return called


def _as_said(e: KerinspectError, *pairs: tuple[str, str]) -> None:
    """``e`` naming files as the user did: each ``(seen, said)`` pair's ``seen`` (a path the
    worker read: the model's snapshot, a batch file) replaced by ``said``."""
    for seen, said in pairs:
        e.replace_text(escape_text(seen), escape_text(said))


def _merged(a: Any, b: Any) -> dict[str, Any]:
    try:
        return merge_states(a, b)
    except (ValueError, KeyError, TypeError) as e:
        raise ChildCrashError(
            f"The worker broke the protocol (its statistics: {e}); its result was discarded.", rule="protocol"
        ) from None


class _Accumulate(beam.DoFn):
    """Examples in, one statistics state per bundle out (see the module's docstring)."""

    def __init__(self, model: str, run: dict[str, Any], load: dict[str, Any], source: str):
        self._model, self._run, self._load, self._source = model, run, load, source

    @_keeping
    def setup(self) -> None:
        from kerinspect.sandbox.runner import WorkerLimits
        from kerinspect.sandbox.session import WorkerSession

        self.run, load = RunSpec.from_json(self._run), LoadOptions.from_json(self._load)
        self._stack = contextlib.ExitStack()
        model_file = self._stack.enter_context(opened_model(self._model))
        self._seen = os.path.abspath(model_file.path)  # what the worker reads: the snapshot
        request = _request("accumulate", model_file, self._model, self.run, load, self._source)
        self._session = self._stack.enter_context(WorkerSession(request, WorkerLimits.of(load)))
        self._files = 0

    def start_bundle(self) -> None:
        self._buffer: list[Any] = []
        self._rows = 0

    @_keeping
    def process(self, element: Any) -> Iterator[Any]:
        self._buffer.append(element)
        if len(self._buffer) >= self.run.batch_size:
            self._send()
        return iter(())

    def _send(self) -> None:
        examples, self._buffer = self._buffer, []
        self._files += 1
        if all(isinstance(e, bytes) for e in examples):
            path = os.path.join(self._session.directory, f"batch-{self._files}.tfrecord")
            write_tfrecord(path, examples)
        elif all(isinstance(e, dict) for e in examples):
            path = os.path.join(self._session.directory, f"batch-{self._files}.npz")
            _write_arrays(path, examples)
        else:
            kinds = sorted({type(e).__name__ for e in examples})
            raise UsageError(
                "LayerStatistics takes serialized tf.train.Example records (bytes) or dicts of "
                f"arrays keyed by input name, one kind per pipeline. Received: {', '.join(kinds)}"
            )
        try:
            self._rows += self._session.batch(path)
        except KerinspectError as e:  # the worker read our files: name the user's
            _as_said(e, (path, f"a batch of {self._source}"), (self._seen, self._model))
            raise

    @_keeping
    def finish_bundle(self) -> Iterator[Any]:
        if self._buffer:
            self._send()
        if self._rows:
            yield WindowedValue(self._session.flush(), MIN_TIMESTAMP, (GlobalWindow(),))

    def teardown(self) -> None:
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()


class _Merge(beam.CombineFn):
    """States merged (commutative and associative: :func:`kerinspect.accumulators.merge_states`)."""

    def create_accumulator(self) -> dict[str, Any]:
        return empty_state()

    def add_input(self, acc: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        return _merged(acc, state)

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        return functools.reduce(_merged, accs, empty_state())

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return acc


@_keeping
def finish(
    state: dict[str, Any], model: str, run: dict[str, Any], load: dict[str, Any], source: str
) -> dict[str, Any]:
    """The report (``ModelReport.to_dict()``) of a merged state, from one isolated worker
    that loads the model (its weights and what it is) and judges the statistics."""
    from kerinspect.sandbox.runner import WorkerLimits, run_worker
    from kerinspect.sandbox.scratch import make

    if not state.get("rows"):
        raise DataError(
            f"The pipeline gave no sample to the model. Received: input={source!r}", rule="no-samples"
        )
    spec, options = RunSpec.from_json(run), LoadOptions.from_json(load)
    tmp = make("inputs")
    try:
        with opened_model(model) as model_file:
            path = os.path.join(tmp, "state.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(state, f, allow_nan=False)
            request = _request("finish", model_file, model, spec, options, source, write={"state_file": path})
            try:
                outcome = run_worker(request, WorkerLimits.of(options))
            except KerinspectError as e:
                _as_said(e, (os.path.abspath(model_file.path), model))
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from kerinspect.report import ModelReport

    # checked as every command checks a worker's report (it ran model code), then as plain data
    try:
        report = ModelReport.from_dict(outcome.result.get("report")).to_dict()
    except (KeyError, TypeError, ValueError) as e:
        raise ChildCrashError(
            f"The worker broke the protocol (its report: {e}); its result was discarded.", rule="protocol"
        ) from None
    # set here, not by the worker: the worker runs model code and could claim anything
    report["isolation"] = {
        "worker": True,
        "network_namespace": outcome.network_isolated,
        "socket_guard": True,
    }
    for record in report.get("inputs", []):
        record["source"], record["path"] = source, source
    return report


class LayerStatistics(beam.PTransform):
    """Per-layer statistics of a saved Keras model over a PCollection of examples.

    Args:
        model_path: the ``.keras``/``.h5`` file (local, or any path Beam's
            ``FileSystems`` reads, such as ``gs://``), opened on each worker through the
            same pre-flight, static scan and isolated load as the CLI.
        spec: what to compute (:class:`~kerinspect.spec.RunSpec`: ``batch_size``,
            ``engine``, ``percentiles``, thresholds...); labels are not supported here.
        load: how to open the file (:class:`~kerinspect.spec.LoadOptions`).
        source: how the report names the data (default ``"beam"``).

    The input PCollection holds serialized ``tf.train.Example`` records (bytes, as
    ``ReadFromTFRecord`` gives them), or dicts of arrays keyed by input name, one sample
    each. The output holds one element: the report as a dict, the JSON of
    ``kerinspect summary --format json`` (``kerinspect.report.ModelReport.from_dict`` reads it back).
    """

    def __init__(
        self,
        model_path: str,
        spec: RunSpec | None = None,
        load: LoadOptions | None = None,
        source: str = "beam",
    ):
        super().__init__()
        spec = spec or RunSpec()
        if spec.labels is not None or spec.label_column is not None:
            raise UsageError(
                "LayerStatistics does not take labels (separability needs every sample in one place)."
            )
        self._model = os.fspath(model_path)
        self._run, self._load = spec.to_json(), (load or LoadOptions()).to_json()
        self._source = source

    def expand(self, examples: Any) -> Any:
        return (
            examples
            | "Accumulate" >> beam.ParDo(_Accumulate(self._model, self._run, self._load, self._source))
            | "Merge" >> beam.CombineGlobally(_Merge())
            | "Finish" >> beam.Map(finish, self._model, self._run, self._load, self._source)
        )
