"""``kerinspect summary MODEL --input 'shards/*.tfrecord' --runner R``: the pipeline.

Reads the TFRecord shards with ``ReadFromTFRecord``, runs :class:`LayerStatistics`,
and writes the report as one JSON file where the parent reads it back (a local
temporary folder, or under ``--pipeline-option temp_location=...`` for runners whose
workers do not share this machine's disk: Dataflow, Flink, Spark).

``DirectRunner`` is pinned to Beam's in-process Python runner (``FnApiRunner``, which
honours ``direct_num_workers`` and ``direct_running_mode``): Beam's own DirectRunner
first tries the Prism runner, which downloads a binary.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from kerinspect.errors import ChildCrashError, InputFileError, KerinspectError, UsageError, escape_text
from kerinspect.spec import LoadOptions, RunSpec

#: Runner names passed through to Beam (any other name is too; these are the documented ones).
RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner")


def pipeline_arguments(options: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` pairs as Beam's ``--KEY=VALUE`` arguments (a bare ``KEY``: a flag)."""
    out = []
    for item in options:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise UsageError(f"--pipeline-option takes KEY=VALUE. Received: {escape_text(item)!r}")
        out.append(f"--{key}={value}" if sep else f"--{key}")
    return out


def _runner(name: str) -> Any:
    if name == "DirectRunner":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return name


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """File descriptor 2 (this process's and the Beam workers' it starts: their logs)
    into ``path`` while the pipeline runs; the CLI's own lines come after."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _tail(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [ln for ln in f.read().splitlines()[-50:] if ln.strip() and not ln.startswith("INFO")][-1:]
    except OSError:
        return []


def carried(error: BaseException, log: str | None = None) -> KerinspectError | None:
    """The kerinspect error a failed pipeline carries (a
    :class:`~kerinspect.beam.transform.CarriedError`'s text, in the exception Beam raised
    or its causes, or in the Beam workers' log), rebuilt as its own class; None if none."""
    from kerinspect.sandbox.runner import _error_from, _parse_message

    from .transform import CARRIED

    texts, seen = [], 0
    while error is not None and seen < 16:
        texts.append(str(error))
        error, seen = error.__cause__ or error.__context__, seen + 1  # type: ignore[assignment]
    if log is not None:
        with contextlib.suppress(OSError), open(log, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    for text in texts:
        at = text.find(CARRIED)
        if at < 0:
            continue
        try:
            payload, _ = json.JSONDecoder().raw_decode(text, at + len(CARRIED))
            return _error_from(_parse_message(json.dumps(payload).encode()))
        except (ValueError, KerinspectError):
            continue
    return None


def inspect_on_beam(
    model: str,
    inputs: str | None,
    runner: str | None,
    options: Sequence[str] = (),
    *,
    spec: RunSpec | None = None,
    load: LoadOptions | None = None,
) -> Any:
    """:func:`kerinspect.inspect_model` of the model file ``model`` over the TFRecord
    shards ``inputs`` (a glob), on Beam's ``runner`` with ``options`` (``KEY=VALUE``):
    the same :class:`~kerinspect.report.ModelReport`. What needs no pipeline is refused
    first: options, the input pattern, the model's pre-flight, Beam not installed."""
    from kerinspect.report import ModelReport

    spec, load = spec or RunSpec(), load or LoadOptions()
    if runner is None:
        raise UsageError("--pipeline-option needs --runner (the Beam runner to pass it to).")
    if inputs is None:
        raise UsageError(
            "--runner reads your data: give --input, TFRecord shards of tf.train.Example "
            "(a glob such as 'shards/*.tfrecord'). Synthetic samples need no pipeline."
        )
    if spec.labels is not None or spec.label_column is not None:
        raise UsageError("--runner does not take labels: separability needs every sample in one place.")
    if spec.gradients:
        raise UsageError("--runner computes activation statistics; the gradient rules need one process.")
    if spec.samples is not None:
        raise UsageError("--runner reads every record of the shards; --samples does not apply.")
    if "://" not in inputs:
        import glob

        files = sorted(glob.glob(inputs, recursive=True))
        if not files:
            raise InputFileError(
                f"No file matches the input pattern. Received: input={escape_text(inputs)!r}",
                rule="input-not-found",
            )
        odd = [f for f in files if not f.lower().endswith((".tfrecord", ".tfrecords", ".tfr"))]
        if odd:
            raise UsageError(
                "--runner reads TFRecord shards (.tfrecord, .tfrecords, .tfr); the pattern also "
                f"matches {escape_text(odd[0])!r}. Received: input={escape_text(inputs)!r}"
            )
    pipeline_arguments(options)  # refused here, before Beam is even imported
    if "://" not in model:  # what every command refuses before its worker: options, the input
        from kerinspect.api import check_before_worker  # pattern, the pre-flight, custom_objects

        check_before_worker(model, inputs if "://" not in inputs else None, spec=spec, load=load)
    if load.custom_objects is not None:
        load = load.replace(custom_objects=os.path.abspath(load.custom_objects))
    import logging

    if not logging.getLogger().handlers:  # Beam warns at import of clients it does not need
        logging.getLogger().addHandler(logging.NullHandler())
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        raise UsageError(
            "--runner needs Apache Beam, which is not installed: pip install 'kerinspect[beam]'"
        ) from None
    from apache_beam.runners.runner import create_runner

    try:
        if runner != "DirectRunner":  # (pinned: see the module's docstring)
            create_runner(runner)
    except ValueError:
        raise UsageError(
            f"Beam has no runner {escape_text(runner)!r}: DirectRunner, DataflowRunner, FlinkRunner, "
            f"SparkRunner or PortableRunner. Received: runner={escape_text(runner)!r}"
        ) from None
    except ImportError as e:
        raise UsageError(
            f"Beam's {escape_text(runner)} needs packages that are not installed: {escape_text(str(e), 200)}"
        ) from None
    digest = None
    if "://" not in inputs:  # hashed before the pipeline reads them, as every command does
        from kerinspect.input_digest import digest_inputs

        digest = digest_inputs("pattern", os.path.abspath(inputs))
    data = summary_on_beam(model, inputs, spec, load, runner, options)
    for record in data.get("inputs", []):
        if digest is not None:
            record.update(path=digest.path, sha256=digest.sha256, sha256_of=digest.sha256_of)
        record["note"] = f"tfrecord: {data['samples']} tf.train.Example records, read on Beam ({runner})"
    return ModelReport.from_dict(data)


def summary_on_beam(
    model: str,
    pattern: str,
    spec: RunSpec,
    load: LoadOptions,
    runner: str,
    options: Sequence[str] = (),
) -> dict[str, Any]:
    """The report of ``summary`` over every record of the TFRecord shards ``pattern``,
    computed on Beam (see the module's docstring), as ``ModelReport.to_dict()``."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    from .transform import LayerStatistics

    arguments = pipeline_arguments(options)
    pipeline_options = PipelineOptions(arguments)
    temp = pipeline_options.view_as(GoogleCloudOptions).temp_location
    local = temp is None
    if local:
        from kerinspect.sandbox.scratch import make

        temp = make("beam")
    out = FileSystems.join(temp, f"kerinspect-report-{uuid.uuid4().hex}.json")
    source = pattern
    read_from = pattern if "://" in pattern else os.path.abspath(pattern)
    log = os.path.join(temp, "beam.log") if local else os.devnull
    try:
        try:
            with _stderr_to(log), beam.Pipeline(runner=_runner(runner), options=pipeline_options) as p:
                _ = (
                    p
                    | "Read" >> beam.io.ReadFromTFRecord(read_from)
                    | "Statistics" >> LayerStatistics(model, spec, load, source=source)
                    | "JSON" >> beam.Map(lambda r: json.dumps(r, allow_nan=False))
                    | "Write" >> beam.io.WriteToText(out, shard_name_template="", num_shards=1)
                )
        except KerinspectError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed pipeline: its kerinspect error, else one line
            found = carried(e, log if local else None)
            if found is not None:
                raise found from None
            lines = [ln for ln in str(e).splitlines() if ln.strip()] or _tail(log)
            raise ChildCrashError(
                f"The Beam pipeline failed ({runner}): {escape_text(lines[-1] if lines else type(e).__name__, 300)}",
                rule="beam-failed",
            ) from e
        with FileSystems.open(out) as f:
            return json.loads(f.read().decode("utf-8"))
    finally:
        if local:
            import shutil

            shutil.rmtree(temp, ignore_errors=True)
        else:
            from contextlib import suppress

            with suppress(Exception):
                FileSystems.delete([out])


#: What ``dump --runner`` writes in its directory.
STATISTICS_FILE = "statistics.json"


def dump_statistics_on_beam(
    model: str,
    out: str,
    inputs: str | None,
    runner: str | None,
    options: Sequence[str] = (),
    *,
    spec: RunSpec | None = None,
    load: LoadOptions | None = None,
    overwrite: bool = False,
) -> tuple[str, dict[str, Any]]:
    """``dump --runner``: statistics only. Every sample's activations of a dataset do not
    fit one machine, so on Beam ``dump`` writes ``DIR/statistics.json``: the report of
    :func:`inspect_on_beam` (``summary --format json``), its layers those ``spec.layers``
    selects (the dump's globs; all when none). Returns the file's path and what it holds."""
    import fnmatch

    from kerinspect.errors import OutputError

    spec = spec or RunSpec()
    target = os.path.join(out, STATISTICS_FILE)
    if os.path.lexists(target) and not overwrite:
        raise OutputError(
            f"{escape_text(target)} exists; --overwrite replaces it. Received: out={escape_text(out)!r}",
            rule="output-exists",
        )
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise OutputError(f"Cannot create the output directory {escape_text(out)!r}: {e.strerror}") from None
    data = inspect_on_beam(model, inputs, runner, options, spec=spec, load=load).to_dict()
    patterns = list(spec.layers or ())
    if patterns:
        unmatched = [
            p for p in patterns if not any(fnmatch.fnmatchcase(r["path"], p) for r in data["layers"])
        ]
        if unmatched:
            raise UsageError(
                f"--layers pattern {escape_text(unmatched[0], 100)!r} matches no layer call. Layer paths: "
                + ", ".join(escape_text(r["path"], 60) for r in data["layers"]),
                rule="layers-no-match",
            )
        data["layers"] = [
            r for r in data["layers"] if any(fnmatch.fnmatchcase(r["path"], p) for p in patterns)
        ]
    partial = target + ".partial"
    try:
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)
        os.replace(partial, target)
    except OSError as e:
        raise OutputError(f"Cannot write {escape_text(target)!r}: {e.strerror}") from None
    return target, data
