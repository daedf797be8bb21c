"""Running a model batch by batch, eagerly or compiled, and saying how it ran.

:func:`run_batches` replays every batch of a :class:`~kerinspect.engine.inputs.Feed`
into a visitor (:mod:`kerinspect.engine.events`), each batch by the eager replay
(:class:`~kerinspect.engine.trace.Replayer`) or the compiled engine
(:class:`~kerinspect.engine.compiled.Chooser` decides); :class:`EngineOutcome` says
which ran; :func:`layer_failure` is the one message of a layer that failed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from kerinspect.engine.events import Visitor
from kerinspect.engine.inputs import Feed
from kerinspect.errors import InferenceError, msg
from kerinspect.spec import ProgressFn, RunSpec


def collecting_warnings(work: Callable[[], None]) -> list[str]:
    """Run ``work``, returning the warnings raised meanwhile (each once, one line)
    instead of letting them reach stderr."""
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        work()
        for w in wlist:
            text = " ".join(str(w.message).split())
            if text not in caught:
                caught.append(text)
    return caught


def layer_failure(
    e: Any,
    rows: int,
    model: str = "",
    hint: str | None = None,
    *,
    start: int = 0,
    feed: Feed | None = None,
    batch: list[np.ndarray] | None = None,
) -> InferenceError:
    """The one-line error of a :class:`~kerinspect.engine.trace.LayerCallError` in a batch
    of ``rows``: an id out of an Embedding's range (rule ``input-range``, naming the
    sample: ``start`` is the batch's first, and the input when ``feed`` and ``batch``
    show which one holds the ids), out of memory (rule ``oom``), or the failing layer and
    its cause (with ``hint``); ``model`` (``A``/``B`` in a diff) names the model when
    there are two."""
    from kerinspect.engine.load import innermost_message
    from kerinspect.engine.trace import IdOutOfRange

    of = f" of model {model}" if model else ""
    out_of_range = _found(e.cause, IdOutOfRange)
    if out_of_range is not None:
        return _id_out_of_range(out_of_range, of, start, feed, batch)
    cause = innermost_message(e.cause)
    if "ResourceExhausted" in type(e.cause).__name__ or "OOM" in cause:
        return InferenceError(
            f"Out of memory running layer {e.site.path!r}{of} (batch of {rows}).",
            rule="oom",
            hint=msg("try a smaller {batch_size}"),
        )
    return InferenceError(
        f"Running layer {e.site.path!r} ({e.site.class_name}){of} failed "
        f"({e.calls_done} layer calls before it succeeded): {cause}",
        rule="inference-failed",
        hint=hint,
    )


def _found(error: BaseException | None, kind: type[BaseException]) -> Any:
    """The ``kind`` exception in ``error``'s chain with its attributes (Keras re-raises a
    layer's exception as a new instance of its class with a longer message)."""
    seen = 0
    while error is not None and seen < 32:
        if isinstance(error, kind) and hasattr(error, "ids"):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _id_out_of_range(
    e: Any, of: str, start: int, feed: Feed | None, batch: list[np.ndarray] | None
) -> InferenceError:
    """``Input 'tokens' holds id 5000 in sample 37, out of range [0, 20) of Embedding
    'encoder/emb'``: the input named when its values are the ids the Embedding read."""
    holder = ""
    if feed is not None and batch is not None:
        for record, a in zip(feed.records, batch):
            if np.shape(a) == e.ids.shape and np.array_equal(
                np.asarray(a, np.float64), e.ids.astype(np.float64)
            ):
                holder = f"Input {record.name!r} holds"
                break
        else:
            holder = "The ids computed from input " + ", ".join(repr(r.name) for r in feed.records) + " hold"
    text = (
        f"{holder or 'The ids hold'} id {e.value} in sample {start + e.row}, out of range "
        f"[0, {e.input_dim}) of Embedding {e.path!r}{of}."
    )
    source = feed.records[0].source if feed is not None and feed.records else None
    if source and source not in ("synthetic", "array"):
        return InferenceError(msg("{text} Received: {input}={s!r}", text=text, s=source), rule="input-range")
    return InferenceError(text, rule="input-range")


class EngineOutcome:
    """How :func:`run_batches` ran: ``label`` for the report (``eager``, ``compiled
    (CPU)``, ``compiled (GPU)``, ``eager, then compiled (CPU)``...: the engines in the
    order they ran batches) and ``notes`` (why the compiled engine stopped, if it did)."""

    def __init__(self) -> None:
        self.compiled_batches = 0
        self.device = ""
        self.notes: list[str] = []
        self._segments: list[str] = []

    def ran(self, compiled: bool) -> None:
        """One more batch, by the compiled engine or the eager one."""
        name = f"compiled ({self.device})" if compiled else "eager"
        self.compiled_batches += compiled
        if not self._segments or self._segments[-1] != name:
            self._segments.append(name)

    @property
    def label(self) -> str:
        return ", then ".join(self._segments) or "eager"


def run_batches(
    model: Any,
    feed: Feed,
    visitor: Visitor,
    run: RunSpec,
    progress: ProgressFn | None = None,
    outcome: EngineOutcome | None = None,
) -> list[str]:
    """Replay ``model`` on every batch of ``feed``, reporting to ``visitor``; return the
    warnings Keras raised meanwhile (each once, one line) instead of letting them reach
    stderr.

    ``run`` is the :class:`~kerinspect.spec.RunSpec`, whole: its ``depth`` limits the
    layer calls reported to that many nesting levels (None: all); its ``engine``
    (``eager``, ``compiled`` or ``auto``; anything but eager needs a
    :class:`~kerinspect.engine.statistics.StatsCollector` or a
    :class:`~kerinspect.engine.selection.SelectingVisitor`) is how batches run: see
    :mod:`kerinspect.engine.compiled`, whose :class:`~kerinspect.engine.compiled.Chooser`
    decides batch by batch; a batch the compiled engine cannot run runs eagerly, and so
    does the rest, with a note in ``outcome``. Raises :class:`InferenceError` naming the
    layer that failed.
    """
    return collecting_warnings(lambda: _run_batches(model, feed, visitor, run, progress, outcome))


def _run_batches(
    model: Any,
    feed: Feed,
    visitor: Visitor,
    run: RunSpec,
    progress: ProgressFn | None,
    outcome: EngineOutcome | None,
) -> None:
    from kerinspect.engine.trace import Replayer

    outcome = EngineOutcome() if outcome is None else outcome
    replay = Replayer(model, visitor, run)
    chooser = None
    if run.engine != "eager":
        from kerinspect.engine.compiled import Chooser

        chooser = Chooser(model, run, feed.n_batches, visitor)
        outcome.device = chooser.device
    done = 0
    for index, (batch, labels) in enumerate(feed.labelled_batches()):
        rows = len(batch[0]) if batch else 0
        visitor.batch_labels(labels)  # before the batch: compiled and eager alike
        compiled = chooser is not None and chooser.run_batch(index, batch, rows, outcome)
        if not compiled:
            _eager_batch(replay, visitor, batch, rows, start=done, feed=feed)
        outcome.ran(compiled)
        done += rows
        if progress is not None:
            progress(done, feed.samples)


def _eager_batch(
    replay: Any, visitor: Visitor, batch: list[np.ndarray], rows: int, *, start: int, feed: Feed
) -> None:
    """One batch (its first sample is ``start``) through the eager replay (raises
    :class:`InferenceError`)."""
    from kerinspect.engine.trace import LayerCallError

    visitor.start_batch(rows)
    try:
        replay(batch)
    except LayerCallError as e:
        raise layer_failure(e, rows, start=start, feed=feed, batch=batch) from e.cause
    visitor.end_batch()
