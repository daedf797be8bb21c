"""The user's data files as batches: images, text, tables and TFRecords (``--input``).

:func:`file_feed` is what :func:`~kerinspect.engine.feed.build_feed` calls for a path
that is not ``.npy``/``.npz``. It tells the format (:func:`detect`), counts the samples
with a cheap pass (a file listing, a line or row count, a walk over TFRecord headers),
stopping at ``run.samples``, then returns a :class:`~kerinspect.engine.inputs.Feed`
whose batches are decoded one at a time: a folder of 100,000 images is never held in
memory. The formats' own modules: :mod:`kerinspect.engine.images`,
:mod:`kerinspect.engine.tables` (CSV/TSV and TFRecord), :mod:`kerinspect.engine.text`;
what they share: :mod:`kerinspect.engine.streams`.

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
worker). Whatever parses the user's bytes is bounded (:data:`~kerinspect.engine.streams.MAX_LINE_BYTES`,
:data:`~kerinspect.engine.images.MAX_IMAGE_BYTES`,
:data:`~kerinspect.engine.tables.MAX_RECORD_BYTES`). Bad data is a
:class:`~kerinspect.errors.DataError` (exit 9) naming the file and the line, row,
record or image at fault.

Text (``.txt``): see :mod:`kerinspect.engine.text`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

from kerinspect.engine.inputs import Feed, InputSpec
from kerinspect.engine.streams import shown
from kerinspect.errors import InputFileError, UsageError, escape_text, msg
from kerinspect.spec import INPUT_FILE_KINDS, RunSpec, input_file_kind, unsupported_input_error

IMAGE_EXTENSIONS = INPUT_FILE_KINDS["images"]


def is_array_file(path: str) -> bool:
    """``.npy``/``.npz`` (or an array file under another name): read as arrays, as before
    (:func:`~kerinspect.engine.inputs.load_arrays`)."""
    return not os.path.isdir(path) and not glob.has_magic(path) and input_file_kind(path) == "arrays"


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
        raise unsupported_input_error(path, shown(path))
    return kind, [path]


def _kind_of(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    return next((kind for kind, exts in INPUT_FILE_KINDS.items() if ext in exts and kind != "arrays"), None)


def file_feed(model: Any, path: str, specs: Sequence[InputSpec], run: RunSpec, *, source: str) -> Feed:
    """The feed of a data file, folder or glob (see the module docstring)."""
    kind, files = detect(path)
    # preprocess and label_column were checked against the kind (spec.check_inputs)
    if kind in ("images", "folder"):
        from kerinspect.engine import images

        return images.image_feed(model, path if kind == "folder" else None, files, specs, run, source)
    if kind == "text":
        from kerinspect.engine.text import text_feed

        return text_feed(model, path, specs, run, source)
    from kerinspect.engine import tables

    if kind == "table":
        return tables.table_feed(path, specs, run, source)
    return tables.tfrecord_feed(files, specs, run, source)
