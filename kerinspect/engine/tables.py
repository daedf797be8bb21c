"""Tables (``.csv``/``.tsv``) and TFRecord shards of ``tf.train.Example`` as model input.

Tables are read with Python's :mod:`csv` module, streaming, the delimiter by extension
(``,`` or tab); the first row is the header. Columns are matched to inputs so:

* columns named like the model's inputs feed them (each input one value per sample:
  shape ``(batch,)`` or ``(batch, 1)``; a string input takes the cell as text);
* otherwise a one-input model of shape ``(batch, k)`` takes every numeric column but
  the label column, in order (a column is numeric when its cell in the first row is
  a number), and ``k`` must equal their count.

Every cell fed is converted (float, or int for an integer input); a missing cell, a
non-numeric cell in a numeric column, or a row with too many or too few cells is a
:class:`~kerinspect.errors.DataError` naming the file, the line and the column. Every
row is checked by the counting pass, before a batch runs. ``label_column`` names the
labels (kept on the feed, never fed).

TFRecord files (one, or a glob of shards, sorted) hold ``tf.train.Example`` records
whose features are named like the inputs: float inputs read ``float_list``, integer
inputs ``int64_list``, string inputs ``bytes_list``, each with the input's fixed
per-sample shape (a dynamic axis besides the batch axis is not supported: such inputs
need ``.npz``). The record headers are walked in Python first (a record length above
:data:`MAX_RECORD_BYTES` or past the end of its file is refused before TensorFlow
reads it); then ``tf.data.TFRecordDataset`` reads each shard (its checksums checked)
and ``tf.io.parse_example`` parses a batch; a missing feature or a wrong length is a
DataError naming the shard and the record's index.
"""

from __future__ import annotations

import codecs
import csv
import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from kerinspect.engine.inputs import Feed, InputSpec
from kerinspect.engine.streams import (
    Batch,
    describe_inputs,
    in_batches,
    lines,
    open_data,
    shown,
    streamed,
    take,
)
from kerinspect.errors import DataError, escape_text, msg
from kerinspect.report import InputRecord
from kerinspect.spec import RunSpec

#: Largest TFRecord record, in bytes.
MAX_RECORD_BYTES = 64 << 20


def _name(text: str) -> str:
    return escape_text(text, 80)


# -- tables -----------------------------------------------------------------------------


def _rows(path: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of every row (the header first), lines bounded."""
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    decoder = codecs.getincrementaldecoder("utf-8")()
    where = {"line": 0}

    def text() -> Iterator[str]:
        for number, raw in lines(path):
            where["line"] = number
            try:
                yield decoder.decode(raw + b"\n")
            except UnicodeDecodeError:
                raise DataError(
                    msg("Line {n} of {p} is not UTF-8 text (read for {input}).", n=number, p=shown(path))
                ) from None

    reader = csv.reader(text(), delimiter=delimiter, strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(
                msg(
                    "Line {n} of {p}: {why} (read for {input}).",
                    n=where["line"],
                    p=shown(path),
                    why=escape_text(str(e), 200),
                )
            ) from None
        if row:
            yield where["line"], row


class _Plan:
    """Which columns feed which input, and how each cell is converted."""

    def __init__(
        self, path: str, header: list[str], first: list[str], specs: Sequence[InputSpec], label: str | None
    ):
        self.path, self.header = path, header
        self.label = None if label is None else header.index(label)
        names = [s.name for s in specs]
        self.columns: list[list[int]] = []  # the header index of each input's columns
        if all(n in header for n in names):
            for s in specs:
                if s.shape[1:] not in ((), (1,), (None,)):
                    raise DataError(
                        msg(
                            "Column {col!r} of {p} gives one value per row; input {col!r} takes {shape} "
                            "(read for {input})",
                            col=_name(s.name),
                            p=shown(path),
                            shape=describe_inputs([s]),
                        )
                    )
                self.columns.append([header.index(s.name)])
            self.how = "named"
        elif len(specs) == 1 and specs[0].kind != "string" and len(specs[0].shape) == 2:
            spec = specs[0]
            numeric = [
                i for i, cell in enumerate(first) if i != self.label and i < len(header) and _is_number(cell)
            ]
            k = spec.shape[1]
            if k is not None and k != len(numeric):
                raise DataError(
                    msg(
                        "Input {name!r} takes {k} features, but {p} has {n} numeric columns{besides} "
                        "({cols}) (read for {input}).",
                        name=_name(spec.name),
                        k=k,
                        p=shown(path),
                        n=len(numeric),
                        besides="" if self.label is None else " besides the label column",
                        cols=escape_text(", ".join(header[i] for i in numeric), 120),
                    ),
                    hint=msg("one of them holds the labels? name it with {label_column}")
                    if self.label is None and len(numeric) == k + 1
                    else "name the columns like the model's inputs, or drop the extra ones",
                )
            if not numeric:
                raise DataError(msg("{p} has no numeric column to feed (read for {input}).", p=shown(path)))
            self.columns.append(numeric)
            self.how = "numeric"
        else:
            raise DataError(
                msg(
                    "The columns of {p} ({header}) do not name the model's inputs ({inputs}) (read for {input}).",
                    p=shown(path),
                    header=escape_text(", ".join(header), 120),
                    inputs=describe_inputs(specs),
                ),
                hint="name each column after the input it feeds; a one-input model takes all numeric columns",
            )
        self.specs = list(specs)

    def convert(self, number: int, row: list[str]) -> tuple[list[Any], str | None]:
        """The values of one row (one entry per input) and its label."""
        if len(row) != len(self.header):
            raise DataError(
                msg(
                    "Line {n} of {p} has {got} cells; the header has {want} (read for {input}).",
                    n=number,
                    p=shown(self.path),
                    got=len(row),
                    want=len(self.header),
                )
            )
        out: list[Any] = []
        for spec, cols in zip(self.specs, self.columns):
            values = [self._cell(number, row, i, spec) for i in cols]
            out.append(values if self.how == "numeric" else values[0])
        return out, None if self.label is None else row[self.label]

    def _cell(self, number: int, row: list[str], i: int, spec: InputSpec) -> Any:
        cell = row[i]
        if spec.kind == "string":
            return cell
        if not cell.strip():
            raise DataError(
                msg(
                    "Line {n} of {p}: the cell of column {col!r} is missing (read for {input}).",
                    n=number,
                    p=shown(self.path),
                    col=_name(self.header[i]),
                )
            )
        try:
            return int(cell) if spec.kind in ("int", "bool") else float(cell)
        except ValueError:
            raise DataError(
                msg(
                    "Line {n} of {p}: column {col!r} holds {cell!r}, not {kind} (read for {input}).",
                    n=number,
                    p=shown(self.path),
                    col=_name(self.header[i]),
                    cell=escape_text(cell, 60),
                    kind="an integer" if spec.kind in ("int", "bool") else "a number",
                )
            ) from None

    def arrays(self, rows: list[list[Any]]) -> list[np.ndarray]:
        out = []
        for k, spec in enumerate(self.specs):
            values = [r[k] for r in rows]
            dtype: Any = object if spec.kind == "string" else spec.dtype
            a = np.asarray(values, dtype=dtype)
            if self.how == "named" and spec.shape[1:] in ((1,), (None,)):
                a = a.reshape(-1, 1)
            out.append(a)
        return out


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def table_feed(path: str, specs: Sequence[InputSpec], run: RunSpec, source: str) -> Feed:
    """A CSV/TSV file's rows (see the module docstring)."""
    rows = _rows(path)
    header_row = next(rows, None)
    if header_row is None:
        raise DataError(msg("{p} is empty: a table needs a header row (read for {input}).", p=shown(source)))
    header = [h.strip() for h in header_row[1]]
    label = run.label_column
    if label is not None and label not in header:
        raise DataError(
            msg(
                "{label_column} {name!r} is not a column of {p}; its header is: {header}. Received: {label_column}={name!r}",
                name=_name(label),
                p=shown(source),
                header=escape_text(", ".join(header), 120),
            )
        )
    first = next(rows, None)
    if first is None:
        raise DataError(msg("The input holds no rows. Received: {input}={p}", p=shown(source)))
    plan = _Plan(path, header, first[1], specs, label)
    available = 0
    for number, row in _rows_after_header(path):  # every row checked before a batch runs
        plan.convert(number, row)
        available += 1
        if run.samples is not None and available >= run.samples:
            break
    total = take(available, run, source, "rows")
    kind = "tsv" if path.lower().endswith(".tsv") else "csv"
    if plan.how == "numeric":
        cols = len(plan.columns[0])
        note = f"{kind}: {cols} numeric column{'s' * (cols != 1)} of {os.path.basename(source)}"
    else:
        note = f"{kind}: columns named like the inputs, of {os.path.basename(source)}"
    note += f", {total:,} rows" + ("" if label is None else f" (label column {label!r})")
    records = tuple(
        InputRecord(
            s.name,
            (total, len(plan.columns[0])) if plan.how == "numeric" else (total, *_one(s)),
            s.dtype,
            source,
            None,
            note,
        )
        for s in specs
    )

    def batches() -> Iterator[Batch]:
        for chunk in in_batches(_rows_after_header(path), total, run.batch_size):
            converted = [plan.convert(number, row) for number, row in chunk]
            y = None if label is None else np.asarray([c[1] for c in converted], dtype=object)
            yield plan.arrays([c[0] for c in converted]), y

    return streamed(records, total, run, batches)


def _one(spec: InputSpec) -> tuple[int, ...]:
    return () if spec.shape[1:] == () else (1,)


def _rows_after_header(path: str) -> Iterator[tuple[int, list[str]]]:
    rows = _rows(path)
    next(rows, None)
    return rows


# -- TFRecord ---------------------------------------------------------------------------


def count_records(path: str, limit: int | None) -> int:
    """Records in one TFRecord file, from their headers (8-byte length, 4-byte CRC,
    data, 4-byte CRC), stopping at ``limit``; a length above :data:`MAX_RECORD_BYTES`
    or past the end of the file is a DataError."""
    n = 0
    with open_data(path) as f:
        size = os.fstat(f.fileno()).st_size
        at = 0
        while at < size and (limit is None or n < limit):
            head = f.read(12)
            if len(head) < 12:
                raise _bad_record(path, n, "truncated header")
            (length,) = struct.unpack("<Q", head[:8])
            if length > MAX_RECORD_BYTES:
                raise _bad_record(
                    path, n, f"it claims {length:,} bytes, above the {MAX_RECORD_BYTES:,}-byte limit"
                )
            at += 16 + length
            if at > size:
                raise _bad_record(path, n, "truncated: the file ends inside it")
            f.seek(at)
            n += 1
    return n


def _bad_record(path: str, index: int, why: str) -> DataError:
    return DataError(
        msg(
            "Record {i} of {p} cannot be read: {why} (is it an uncompressed TFRecord file?) (read for {input}).",
            i=index,
            p=shown(path),
            why=escape_text(why, 200),
        )
    )


def _feature_spec(spec: InputSpec, path: str) -> Any:
    import tensorflow as tf

    shape = spec.shape[1:]
    if any(d is None for d in shape):
        raise DataError(
            msg(
                "TFRecord features are read with fixed shapes; input {name!r} declares a dynamic axis ({shape}). "
                "Received: {input}={p}",
                name=_name(spec.name),
                shape=describe_inputs([spec]),
                p=shown(path),
            ),
            hint="give such inputs as .npz",
        )
    dtype = {"string": tf.string, "int": tf.int64, "bool": tf.int64}.get(spec.kind, tf.float32)
    return tf.io.FixedLenFeature(list(shape), dtype)


def _label_feature(record: bytes, label: str, path: str) -> Any:
    import tensorflow as tf

    example = tf.train.Example.FromString(record)
    features = example.features.feature
    if label not in features:
        raise DataError(
            msg(
                "{label_column} {name!r} is not a feature of record 0 of {p}; its features are: {have}. "
                "Received: {label_column}={name!r}",
                name=_name(label),
                p=shown(path),
                have=escape_text(", ".join(sorted(features)), 120),
            )
        )
    kind = features[label].WhichOneof("kind")
    return tf.io.FixedLenFeature(
        [], {"bytes_list": tf.string, "int64_list": tf.int64}.get(kind or "", tf.float32)
    )


def _records(files: list[str], total: int) -> Iterator[tuple[str, int, bytes]]:
    """``(shard, index in it, bytes)`` of the first ``total`` records."""
    import tensorflow as tf

    n = 0
    for path in files:
        if n >= total:
            return
        it = iter(tf.data.TFRecordDataset([path]))
        index = 0
        while n < total:
            try:
                record = next(it)
            except StopIteration:
                break
            except tf.errors.OpError as e:
                raise _bad_record(path, index, str(getattr(e, "message", e)).split("\n")[0]) from None
            yield path, index, bytes(record.numpy())
            index += 1
            n += 1


def tfrecord_feed(files: list[str], specs: Sequence[InputSpec], run: RunSpec, source: str) -> Feed:
    """``tf.train.Example`` records of one file or a glob of shards (see the module docstring)."""
    import tensorflow as tf

    features = {s.name: _feature_spec(s, source) for s in specs}
    available = 0
    for path in files:
        left = None if run.samples is None else run.samples - available
        if left == 0:
            break
        available += count_records(path, left)
    total = take(available, run, source, "records")
    label = run.label_column
    if label is not None:
        first = next(_records(files, 1))
        features[label] = _label_feature(first[2], label, first[0])

    def parse(chunk: list[tuple[str, int, bytes]]) -> dict[str, Any]:
        try:
            return tf.io.parse_example(tf.constant([c[2] for c in chunk]), features)
        except (tf.errors.OpError, ValueError):
            for path, index, record in chunk:  # name the record at fault
                try:
                    tf.io.parse_single_example(record, features)
                except (tf.errors.OpError, ValueError) as e:
                    why = escape_text(str(getattr(e, "message", e)).split("\n")[0], 300)
                    raise DataError(
                        msg(
                            "Record {i} of {p} does not hold the model's inputs ({inputs}): {why} (read for {input}).",
                            i=index,
                            p=shown(path),
                            inputs=describe_inputs(specs),
                            why=why,
                        )
                    ) from None
            raise

    def batches() -> Iterator[Batch]:
        for chunk in in_batches(_records(files, total), total, run.batch_size):
            parsed = parse(chunk)
            arrays = []
            for s in specs:
                a = parsed[s.name].numpy()
                arrays.append(a.astype(object) if s.kind == "string" else a.astype(s.dtype))
            y = None if label is None else parsed[label].numpy()
            yield arrays, y

    shards = f"{len(files)} shards" if len(files) > 1 else os.path.basename(source)
    note = f"tfrecord: {total:,} tf.train.Example records of {shards}" + (
        "" if label is None else f" (label feature {label!r})"
    )
    records = tuple(InputRecord(s.name, (total, *s.shape[1:]), s.dtype, source, None, note) for s in specs)  # type: ignore[arg-type]
    return streamed(records, total, run, batches)
