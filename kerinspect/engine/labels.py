"""Labels from a file (``labels``) for inputs that hold none of their own.

:func:`read_labels` reads a ``.npy`` of integers or strings (never unpickled) or a
``.txt`` with one label per line (all-integer lines are read as integers);
:func:`with_labels` gives a :class:`~kerinspect.engine.inputs.Feed` those labels,
one per sample in order: exactly as many as the samples fed, or at least as many
when ``samples`` took the first ones (the rest are not used). Bad labels are
:class:`~kerinspect.errors.DataError` (exit 9).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from kerinspect.engine.inputs import Feed
from kerinspect.errors import DataError, InputFileError, Message, escape_text, msg
from kerinspect.spec import MAX_LABELS_FILE_BYTES, RunSpec


def _received(path: str) -> Message:
    return msg("Received: {labels}={p}", p=escape_text(path, 300))


def read_labels(path: str) -> list[Any]:
    """The labels of ``path``, as plain values (int or str), in order."""
    from kerinspect.engine.separability import label_value
    from kerinspect.safefs import ReadRefused, read_regular

    try:
        data = read_regular(path, MAX_LABELS_FILE_BYTES)
    except ReadRefused as e:
        raise InputFileError(
            msg("Cannot read the {labels} file: {reason}. ", reason=e.reason) + _received(path),
            rule="labels-unreadable",
        ) from None
    if path.lower().endswith(".txt"):
        return _text_labels(data, path)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(
            msg("The {labels} file is not a .npy array of integers or strings ({why}). ", why=str(e)[:120])
            + _received(path),
            rule="labels",
        ) from None
    if (
        isinstance(arr, np.lib.npyio.NpzFile)
        or arr.ndim not in (1, 2)
        or (arr.ndim == 2 and arr.shape[1] != 1)
    ):
        shape = "an .npz archive" if isinstance(arr, np.lib.npyio.NpzFile) else f"shape {arr.shape}"
        raise DataError(
            msg("The {labels} array must hold one label per sample (shape (n,)); it has {s}. ", s=shape)
            + _received(path),
            rule="labels",
        )
    if arr.dtype.kind not in "iubUS":
        raise DataError(
            msg("The {labels} array must hold integers or strings; it holds {d}. ", d=str(arr.dtype))
            + _received(path),
            rule="labels",
            hint="class labels are names or integer ids, not measurements",
        )
    return [label_value(v) for v in arr.reshape(-1).tolist()]


def _text_labels(data: bytes, path: str) -> list[Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            msg("The {labels} file is not UTF-8 text (byte {at}). ", at=e.start) + _received(path),
            rule="labels",
        ) from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line:
            raise DataError(
                msg("Line {n} of the {labels} file is empty; each line holds one sample's label. ", n=number)
                + _received(path),
                rule="labels",
            )
    try:
        return [int(line) for line in lines]
    except ValueError:
        return lines


def with_labels(feed: Feed, run: RunSpec) -> Feed:
    """``feed`` whose :meth:`~Feed.labelled_batches` carry the labels of ``run.labels``."""
    path = os.fspath(run.labels or "")
    labels = read_labels(path)
    enough = len(labels) >= feed.samples if run.samples is not None else len(labels) == feed.samples
    if not enough:
        need = f"at least {feed.samples:,}" if run.samples is not None else f"{feed.samples:,}"
        raise DataError(
            msg(
                "The {labels} file holds {n:,} labels; the input fed {need} samples, one label each. ",
                n=len(labels),
                need=need,
            )
            + _received(path),
            rule="labels-count",
            hint=msg("give one label per sample, in the order of {input}"),
        )
    labels = labels[: feed.samples]
    batches = feed.batches

    def labelled() -> Iterator[tuple[list[np.ndarray], np.ndarray | None]]:
        start = 0
        for arrays in batches():
            n = len(arrays[0]) if arrays else 0
            yield arrays, np.asarray(labels[start : start + n], dtype=object)
            start += n

    return dataclasses.replace(feed, _labelled=labelled)
