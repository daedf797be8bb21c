"""Statistics over data that arrives in parts: a worker session, and its finish.

:mod:`kerinspect.beam` runs the replay where the data is. Each Beam worker keeps one
isolated kerinspect worker (:class:`kerinspect.sandbox.session.WorkerSession`) for its
whole life: the model is scanned and loaded once, by the same
:func:`~kerinspect.engine.jobs.run_request` as every command, then
:func:`accumulate_job` runs one :func:`~kerinspect.engine.batches.run_batches` over a
feed whose batches are the files the parent hands over, one command at a time (so the
compiled engine traces once per worker, and the eager replay keeps its state):

* ``{"op": "batch", "path": FILE}``: a ``.npz`` (arrays by input name) or a TFRecord
  shard of serialized ``tf.train.Example`` the parent wrote into the worker's scratch
  directory, read by the same readers as ``--input``; answered ``{"rows": n}`` once its
  batches ran;
* ``{"op": "flush"}``: answered ``{"state": ...}``: the statistics since the last flush,
  unfinished (:func:`snapshot`), then reset;
* the end of the command pipe ends the job.

:func:`finish_job` turns a merged state (:func:`kerinspect.accumulators.merge_states`)
back into a collector (:func:`restore`) and the report, as ``summary`` builds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from kerinspect import __version__
from kerinspect.accumulators import KIND, VERSION, array, integer, number, stats_from_state, stats_state
from kerinspect.errors import KerinspectError
from kerinspect.provenance import InputRecord
from kerinspect.report import ModelReport
from kerinspect.stats import RunningStats

from .events import CallSite
from .statistics import StatsCollector, _Input

#: The environment variable naming the pipe a session worker reads its commands from.
SESSION_FD_ENV = "KERINSPECT_SESSION_FD"
#: Longest command line the parent may send (a path and an operation).
_MAX_COMMAND = 1 << 16


# -- a collector as plain data ---------------------------------------------------------


def _heads_state(h: Any) -> dict[str, Any]:
    return {
        "heads": h.heads,
        "shape": [int(n) for n in h.shape],
        **{
            k: array(getattr(h, k))
            for k in (
                "rows",
                "multi_rows",
                "entropy_sum",
                "entropy_min",
                "max_sum",
                "max_min",
                "sink_sum",
                "diag_sum",
                "row_error",
            )
        },
        "square": bool(h.square),
        "source": h.source,
        "reason": h.reason,
        "max_difference": None if h.max_difference is None else number(h.max_difference),
        "output": h.output,
        "batches": h.batches,
    }


def _heads_from_state(d: dict[str, Any]) -> Any:
    from kerinspect.accumulators import unarray, unnumber

    from .attention import HeadAccumulator

    h = HeadAccumulator()
    h.heads = integer(d["heads"])
    h.shape = tuple(integer(n) for n in d["shape"])
    for k in ("rows", "multi_rows", "entropy_sum", "entropy_min", "max_sum", "max_min"):
        setattr(h, k, unarray(d[k]))
    for k in ("sink_sum", "diag_sum", "row_error"):
        setattr(h, k, unarray(d[k]))
    h.square, h.source, h.reason, h.output = (
        bool(d["square"]),
        str(d["source"]),
        d["reason"],
        str(d["output"]),
    )
    h.max_difference = None if d["max_difference"] is None else unnumber(d["max_difference"])
    h.batches = integer(d["batches"])
    return h


def snapshot(
    collector: StatsCollector, rows: int, records: tuple[InputRecord, ...], extra: dict[str, Any]
) -> dict[str, Any]:
    """The collector's statistics of its last ``rows`` samples, unfinished, as plain data
    (:mod:`kerinspect.accumulators`); ``records``: how the inputs were read."""
    return {
        "kind": KIND,
        "version": VERSION,
        "rows": rows,
        "sites": [asdict(s) for s in collector.sites],
        "outputs": [
            [
                None
                if s is None and d == "none"
                else {"shape": list(shape), "dtype": d, "stats": stats_state(s)}
                for shape, d, s in zip(shapes, dtypes, stats)
            ]
            for shapes, dtypes, stats in zip(collector.shapes, collector.dtypes, collector.stats)
        ],
        "inputs": {
            str(i): [
                {"source": list(r.source)}
                if r.source is not None
                else {"position": r.position, "dtype": r.dtype, "stats": stats_state(r.stats)}
                for r in refs
            ]
            for i, refs in collector.inputs.items()
        },
        "activations": {str(i): a for i, a in collector.activations.items()},
        "model_outputs": sorted([list(o) for o in collector.model_outputs]),
        "heads": {str(i): _heads_state(h) for i, h in collector.heads.items()},
        "largest": collector.largest,
        "records": [r.to_dict() for r in records],
        **extra,
    }


def reset(collector: StatsCollector, rows: int) -> None:
    """Empty the collector's statistics (a flush), keeping what it knows of the calls:
    the next batches fold into fresh accumulators."""
    for i, outs in enumerate(collector.stats):
        for k, s in enumerate(outs):
            shape = collector.shapes[i][k]
            if shape and shape[0] == rows:
                shape[0] = 0
            if s is not None:
                outs[k] = RunningStats()
    for refs in collector.inputs.values():
        for r in refs:
            if r.stats is not None:
                r.stats = RunningStats()
    collector.heads = {}


def restore(state: dict[str, Any], percentiles: bool) -> StatsCollector:
    """A collector holding a (merged) state, as :func:`snapshot` wrote it."""
    c = StatsCollector(threads=1)
    c.percentiles = percentiles
    for d in state["sites"]:
        c.sites.append(CallSite(**{**d, "output_names": tuple(d["output_names"])}))
        c.shapes.append([])
        c.dtypes.append([])
        c.stats.append([])
    for i, outs in enumerate(state["outputs"]):
        for out in outs:
            c.shapes[i].append([] if out is None else [integer(n) for n in out["shape"]])
            c.dtypes[i].append("none" if out is None else str(out["dtype"]))
            c.stats[i].append(None if out is None else stats_from_state(out["stats"]))
    for i, refs in state["inputs"].items():
        c.inputs[int(i)] = [
            _Input(source=(int(r["source"][0]), int(r["source"][1])))
            if "source" in r
            else _Input(
                stats=stats_from_state(r["stats"]), dtype=str(r["dtype"]), position=int(r["position"])
            )
            for r in refs
        ]
    c.activations = {int(i): a for i, a in state["activations"].items()}
    c.model_outputs = {(int(i), int(k)) for i, k in state["model_outputs"]}
    c.heads = {int(i): _heads_from_state(h) for i, h in state["heads"].items()}
    c.largest = integer(state["largest"])
    return c


# -- the session ---------------------------------------------------------------------------


class _Commands:
    """The parent's commands, one JSON line each, on the session pipe."""

    def __init__(self, fd: int):
        self._in = os.fdopen(fd, "rb", buffering=0)
        self._buf = b""

    def next(self) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            chunk = self._in.read(4096)
            if not chunk:
                return None
            self._buf += chunk
            if len(self._buf) > _MAX_COMMAND:
                raise KerinspectError("The session's command was too long.", rule="protocol")
        line, self._buf = self._buf.split(b"\n", 1)
        command = json.loads(line)
        if not isinstance(command, dict) or command.get("op") not in ("batch", "flush"):
            raise KerinspectError("The session received an unknown command.", rule="protocol")
        return command


class _Seen:
    """What the session ran since its last flush: rows, and how the last file's inputs read."""

    def __init__(self) -> None:
        self.rows = 0
        self.records: tuple[InputRecord, ...] = ()


def accumulate_job(task: Any, channel: Any) -> dict[str, Any]:
    """A session: one replay over the batches of the files the parent hands over, the
    statistics sent back (and reset) at each flush. See the module's docstring."""
    from .batches import EngineOutcome, run_batches
    from .feed import build_feed
    from .inputs import Feed

    fd = getattr(channel, "session_fd", None)
    if fd is None:
        raise KerinspectError("The accumulate job needs a session pipe.", rule="protocol")
    commands = _Commands(fd)
    model, run = task.subject.model, task.run
    # every row of every file the parent writes: its batches are the Beam worker's
    per_file = run.replace(samples=None)
    collector = StatsCollector()
    collector.percentiles = run.percentiles
    outcome = EngineOutcome()
    seen = _Seen()

    def batches() -> Iterator[tuple[list[np.ndarray], Any]]:
        while (command := commands.next()) is not None:
            if command["op"] == "flush":
                state = snapshot(collector, seen.rows, seen.records, {"engines": [outcome.label]})
                channel.send({"type": "result", "result": {"state": state}})
                reset(collector, seen.rows)
                seen.rows = 0
                continue
            path = command.get("path")
            if not isinstance(path, str) or os.path.dirname(os.path.abspath(path)) != os.getcwd():
                raise KerinspectError("The session was sent a file outside its directory.", rule="protocol")
            part = build_feed(model, path, per_file, source=task.source)
            seen.records = part.records
            rows = 0
            for batch, labels in part.labelled_batches():
                rows += len(batch[0]) if batch else 0
                yield batch, labels
            seen.rows += rows
            os.unlink(path)
            channel.send({"type": "result", "result": {"rows": rows}})

    feed = Feed(records=(), samples=1 << 40, batch_size=run.batch_size, _batches=None, _labelled=batches)
    try:
        run_batches(model, feed, collector, run, None, outcome)
    finally:
        collector.close()
    return {"done": True}


def _engine_label(labels: list[str]) -> str:
    """One label for what the sessions ran (each its own ``eager, then compiled (CPU)``...):
    every engine any of them ran, eager first."""
    segments = {seg for label in labels for seg in str(label).split(", then ")}
    return ", then ".join(sorted(segments, key=lambda seg: (seg != "eager", seg)))


def finish_job(task: Any, channel: Any) -> dict[str, Any]:
    """The report of a merged state (the file ``write["state_file"]`` names, written by
    the parent into the worker's directory), as
    ``summary`` builds it from a collector: every output's records and flags, the
    weights', the model's."""
    from .report_records import layer_records, weight_records

    with open(task.write["state_file"], encoding="utf-8") as f:
        state = json.load(f)
    subject, run = task.subject, task.run
    collector = restore(state, run.percentiles)
    records = tuple(
        replace(InputRecord.from_dict(r), shape=(state["rows"], *InputRecord.from_dict(r).shape[1:]))
        for r in state.get("records", ())
    )
    engines = _engine_label(state.get("engines") or ["eager"])
    report = ModelReport(
        model=subject.info(),
        inputs=records,
        layers=layer_records(collector, run.thresholds, []),
        samples=state["rows"],
        batch_size=run.batch_size,
        thresholds=run.thresholds,
        weights=weight_records(subject.model, run.thresholds),
        warnings=tuple(state.get("warnings", ())),
        kerinspect_version=__version__,
        max_depth=run.depth,
        engine=engines,
        labels=None,
    )
    return {"report": report.to_dict()}
