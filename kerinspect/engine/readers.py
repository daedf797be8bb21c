"""The user's data files as batches: images, text, tables and TFRecords (``--input``).

:func:`file_feed` is what :func:`~kerinspect.engine.feed.build_feed` calls for a path
that is not ``.npy``/``.npz``. It tells the format (:func:`detect`), counts the samples
with a cheap pass (a file listing, a line or row count, a walk over TFRecord headers),
stopping at ``run.samples``, then returns a :class:`~kerinspect.engine.inputs.Feed`
whose batches are decoded one at a time: a folder of 100,000 images is never held in
memory. The formats' own modules: :mod:`kerinspect.engine.images`,
:mod:`kerinspect.engine.tables` (CSV/TSV and TFRecord); text is here.

Formats, by what the path is:

* a folder: images, found recursively by extension (case-insensitive); subfolders are
  labels, as ``keras.utils.image_dataset_from_directory`` infers them (sorted folder
  names; files sorted within each);
* a glob: its matched files, sorted, all images or all TFRecord shards;
* one file, by its extension: ``.png .jpg .jpeg .bmp .gif`` (an image), ``.txt`` (text),
  ``.csv .tsv`` (a table), ``.tfrecord .tfrec .tfrecords`` (TFRecord shards).

Nothing in the data is code: no pickle, no URL, no dataset script; files are listed
with :mod:`os` and :mod:`glob` (never ``tf.io.gfile``, which speaks ``gs://`` and
``http``), opened non-blocking and refused unless regular (a FIFO would hang the
worker). Whatever parses the user's bytes is bounded (:data:`MAX_LINE_BYTES`,
:data:`~kerinspect.engine.images.MAX_IMAGE_BYTES`,
:data:`~kerinspect.engine.tables.MAX_RECORD_BYTES`). Bad data is a
:class:`~kerinspect.errors.DataError` (exit 9) naming the file and the line, row,
record or image at fault.

Text (``.txt``): UTF-8, one sample per line, its line ending stripped; empty lines
are not samples (a trailing blank line is common), yet lines keep their numbers in
messages. It feeds a model with one string input, or a keras-hub task saved with its
preprocessor (each batch of lines goes through ``model.preprocessor``: tokenizer,
padding mask, segment ids, fed by input name).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from kerinspect.engine.inputs import Feed, InputSpec
from kerinspect.errors import DataError, InputFileError, Message, UsageError, escape_text, msg
from kerinspect.report import InputRecord
from kerinspect.spec import INPUT_FILE_KINDS, INPUT_FORMATS, RunSpec

#: Longest line of a text, CSV or TSV file, in bytes.
MAX_LINE_BYTES = 1 << 20

IMAGE_EXTENSIONS = INPUT_FILE_KINDS["images"]
ARRAY_EXTENSIONS = INPUT_FILE_KINDS["arrays"]

#: ``(arrays, labels)`` of one batch, as :meth:`Feed.labelled_batches` yields them.
Batch = tuple[list[np.ndarray], "np.ndarray | None"]


def shown(path: str) -> str:
    """A path for a message: escaped, cut."""
    return escape_text(path, 300)


def is_array_file(path: str) -> bool:
    """``.npy``/``.npz``: read as arrays, as before (:func:`~kerinspect.engine.inputs.load_arrays`)."""
    return not os.path.isdir(path) and path.lower().endswith(ARRAY_EXTENSIONS)


def detect(path: str) -> tuple[str, list[str]]:
    """``(kind, files)``: ``images`` (a folder: ``[path]``; else the files), ``text``,
    ``table`` or ``tfrecord``. Raises InputFileError for what is none of them."""
    if os.path.isdir(path):
        return "folder", [path]
    if glob.has_magic(path) and not os.path.lexists(path):
        files = sorted(f for f in glob.iglob(path, recursive=True) if not os.path.isdir(f))
        if not files:
            raise InputFileError(
                msg("No file matches the input pattern. Received: {input}={p}", p=shown(path)),
                rule="input-not-found",
            )
        kinds = {_kind_of(f) for f in files}
        if kinds == {"images"} or kinds == {"tfrecord"}:
            return str(kinds.pop()), files
        listed = ", ".join(sorted({os.path.splitext(f)[1] or "(none)" for f in files}))
        raise UsageError(
            msg(
                "The input pattern matches files of several kinds or of a kind a pattern cannot take "
                "({listed}): a pattern matches images (.png .jpg .jpeg .bmp .gif) or TFRecord shards "
                "(.tfrecord .tfrec .tfrecords). Received: {input}={p}",
                listed=escape_text(listed, 200),
                p=shown(path),
            ),
            parameter="input",
        )
    kind = _kind_of(path)
    if kind is None:
        raise InputFileError(
            msg(
                "Unsupported input file type {ext!r}: {input} takes {supported}. Received: {input}={p}",
                ext=escape_text(os.path.splitext(path)[1] or "(no extension)", 40),
                supported=INPUT_FORMATS,
                p=shown(path),
            ),
            rule="input-format",
        )
    return kind, [path]


def _kind_of(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    return next((kind for kind, exts in INPUT_FILE_KINDS.items() if ext in exts and kind != "arrays"), None)


def file_feed(model: Any, path: str, specs: Sequence[InputSpec], run: RunSpec, *, source: str) -> Feed:
    """The feed of a data file, folder or glob (see the module docstring)."""
    kind, files = detect(path)
    if kind not in ("images", "folder") and run.preprocess != "none":
        raise UsageError(
            msg(
                "{preprocess} scales image pixels; {input} is not images. Received: {preprocess}={mode}",
                mode=run.preprocess,
            )
        )
    if kind in ("images", "folder"):
        if run.label_column is not None:
            raise UsageError(
                msg(
                    "{label_column} names a column of a table or a TFRecord feature; the labels of "
                    "images are their folders. Received: {label_column}={name!r}",
                    name=escape_text(run.label_column, 100),
                )
            )
        from kerinspect.engine import images

        return images.image_feed(model, path if kind == "folder" else None, files, specs, run, source)
    if kind == "text":
        return text_feed(model, path, specs, run, source)
    from kerinspect.engine import tables

    if kind == "table":
        return tables.table_feed(path, specs, run, source)
    return tables.tfrecord_feed(files, specs, run, source)


def streamed(
    records: tuple[InputRecord, ...],
    total: int,
    run: RunSpec,
    batches: Callable[[], Iterator[Batch]],
    *,
    labels: tuple[str, ...] | None = None,
    warnings: tuple[Message, ...] = (),
) -> Feed:
    """A :class:`Feed` over ``batches`` (a generator function of ``(arrays, labels)``)."""

    def plain() -> Iterator[list[np.ndarray]]:
        for arrays, _ in batches():
            yield arrays

    return Feed(records, total, run.batch_size, plain, labels=labels, warnings=warnings, _labelled=batches)


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


# -- text -------------------------------------------------------------------------


def _text_samples(path: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-empty line."""
    for number, raw in lines(path):
        if not raw:
            continue
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                msg(
                    "Line {n} of {p} is not UTF-8 text (byte {at}). Received: {input}={p}",
                    n=number,
                    p=shown(path),
                    at=e.start + 1,
                )
            ) from None


def text_feed(model: Any, path: str, specs: Sequence[InputSpec], run: RunSpec, source: str) -> Feed:
    """Lines of a ``.txt`` file for a model with one string input, or through a
    keras-hub task's saved preprocessor."""
    preprocessor = getattr(model, "preprocessor", None)
    strings = [s for s in specs if s.kind == "string"]
    if preprocessor is None and (len(strings) != 1 or len(specs) != 1):
        raise DataError(
            msg(
                "A text file feeds a model with one string input, or a keras-hub task saved with its "
                "preprocessor; this model takes {inputs}. Received: {input}={p}",
                inputs=describe_inputs(specs),
                p=shown(source),
            ),
            hint="give its inputs as .npz (keyed by input name), a table (.csv) or TFRecord",
        )
    if run.label_column is not None:
        raise UsageError(
            msg(
                "{label_column} names a column of a table or a TFRecord feature, not of a text file. "
                "Received: {label_column}={name!r}",
                name=escape_text(run.label_column, 100),
            )
        )
    available = 0
    for _ in _text_samples(path):  # every line checked (length, UTF-8) before a batch runs
        available += 1
        if run.samples is not None and available >= run.samples:
            break
    total = take(available, run, source, "lines of text")

    if preprocessor is not None:
        note = f"text: {total:,} lines of {os.path.basename(source)} through the model's preprocessor"

        def convert(texts: list[str]) -> list[np.ndarray]:
            return _preprocessed(preprocessor, texts, specs, path)

        first = next(_text_samples(path))[1]
        shapes = [a.shape[1:] for a in convert([first])]
        records = tuple(
            InputRecord(s.name, (total, *shp), s.dtype, source, None, note) for s, shp in zip(specs, shapes)
        )
    else:
        spec = specs[0]
        declared = spec.shape[1:]
        if declared not in ((), (1,), (None,)):
            raise DataError(
                msg(
                    "A text file gives one string per sample; input {name!r} takes shape {shape}. "
                    "Received: {input}={p}",
                    name=escape_text(spec.name, 60),
                    shape=describe_inputs([spec]),
                    p=shown(source),
                )
            )
        per_sample = () if declared == () else (1,)

        def convert(texts: list[str]) -> list[np.ndarray]:
            return [np.array(texts, dtype=object).reshape((len(texts), *per_sample))]

        note = f"text: {total:,} lines of {os.path.basename(source)}"
        records = (InputRecord(spec.name, (total, *per_sample), spec.dtype, source, None, note),)

    def batches() -> Iterator[Batch]:
        for chunk in in_batches(_text_samples(path), total, run.batch_size):
            yield convert([t for _, t in chunk]), None

    return streamed(records, total, run, batches)


def _preprocessed(
    preprocessor: Any, texts: list[str], specs: Sequence[InputSpec], path: str
) -> list[np.ndarray]:
    """One batch of text through a keras-hub preprocessor, by input name."""
    import tensorflow as tf

    out = preprocessor(tf.constant(texts))
    if isinstance(out, tuple):  # (x, y, sample_weight) when the preprocessor packs them
        out = out[0]
    if not isinstance(out, dict):
        out = {specs[0].name: out} if len(specs) == 1 else {}
    missing = [s.name for s in specs if s.name not in out]
    if missing:
        raise DataError(
            msg(
                "The model's preprocessor gives {given}, not the model's inputs {missing}. Received: {input}={p}",
                given=escape_text(", ".join(map(str, out)), 200) or "nothing by name",
                missing=escape_text(", ".join(missing), 200),
                p=shown(path),
            )
        )
    arrays = []
    for s in specs:
        a = np.asarray(out[s.name])
        arrays.append(a.astype(s.dtype) if s.kind in ("int", "float") and str(a.dtype) != s.dtype else a)
    return arrays
