"""What the data readers share (:mod:`kerinspect.engine.readers`): a :class:`Feed`
over a generator of ``(arrays, labels)`` batches, sample counts, bounded line reading
and the paths and inputs as messages show them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from kerinspect.engine.inputs import Feed, InputSpec, check_finite
from kerinspect.errors import DataError, Message, UsageError, escape_text, msg
from kerinspect.report import InputRecord
from kerinspect.spec import RunSpec

#: Longest line of a text, CSV or TSV file, in bytes.
MAX_LINE_BYTES = 1 << 20

#: ``(arrays, labels)`` of one batch, as :meth:`Feed.labelled_batches` yields them.
Batch = tuple[list[np.ndarray], "np.ndarray | None"]


def shown(path: str) -> str:
    """A path for a message: escaped, cut."""
    return escape_text(path, 300)


def streamed(
    records: tuple[InputRecord, ...],
    total: int,
    run: RunSpec,
    batches: Callable[[], Iterator[Batch]],
    *,
    labels: tuple[str, ...] | None = None,
    warnings: tuple[Message, ...] = (),
) -> Feed:
    """A :class:`Feed` over ``batches`` (a generator function of ``(arrays, labels)``);
    NaN or Inf in a float input is refused, naming the samples (:func:`check_finite`)."""

    def checked() -> Iterator[Batch]:
        start = 0
        for arrays, batch_labels in batches():
            for record, a in zip(records, arrays):
                check_finite(record.name, a, start, record.source)
            start += len(arrays[0]) if arrays else 0
            yield arrays, batch_labels

    def plain() -> Iterator[list[np.ndarray]]:
        for arrays, _ in checked():
            yield arrays

    return Feed(records, total, run.batch_size, plain, labels=labels, warnings=warnings, _labelled=checked)


def take(available: int, run: RunSpec, source: str, what: str) -> int:
    """How many samples run: all ``available`` or ``run.samples`` of them."""
    if available < 1:
        raise DataError(msg("The input holds no {what}. Received: {input}={p}", what=what, p=shown(source)))
    if run.samples is None:
        return available
    if run.samples > available:
        raise UsageError(
            msg(
                "{samples}={n} is more than the {total} {what} in {p}",
                n=run.samples,
                total=available,
                what=what,
                p=shown(source),
            )
        )
    return run.samples


def in_batches(items: Iterator[Any], total: int, batch_size: int) -> Iterator[list[Any]]:
    """The first ``total`` of ``items`` in lists of ``batch_size``."""
    chunk: list[Any] = []
    for n, item in enumerate(items):
        if n >= total:
            break
        chunk.append(item)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def open_data(path: str) -> Any:
    """``path`` opened for binary reading, refused unless a regular file."""
    from kerinspect.safefs import ReadRefused, open_regular

    try:
        return open_regular(path)
    except ReadRefused as e:
        raise DataError(
            msg("Cannot read {p}: {reason}. Received: {input}={p}", p=shown(path), reason=e.reason),
            rule="input-unreadable",
        ) from None


def lines(path: str) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each line of ``path``, its line ending stripped;
    a line over :data:`MAX_LINE_BYTES` is a DataError."""
    with open_data(path) as f:
        number = 0
        while True:
            line = f.readline(MAX_LINE_BYTES + 2)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                raise DataError(
                    msg(
                        "Line {n} of {p} is longer than {limit:,} bytes. Received: {input}={p}",
                        n=number,
                        p=shown(path),
                        limit=MAX_LINE_BYTES,
                    )
                )
            yield number, line.rstrip(b"\n").removesuffix(b"\r")


def describe_inputs(specs: Sequence[InputSpec]) -> str:
    """``'image' float32 (None, 16, 16, 3), ...``: what a model takes, for messages."""
    return ", ".join(
        f"{escape_text(s.name, 60)!r} {s.dtype} ("
        + ", ".join("None" if d is None else str(d) for d in s.shape)
        + (",)" if len(s.shape) == 1 else ")")
        for s in specs
    )
