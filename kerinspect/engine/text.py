"""Text (``.txt``) as model input: UTF-8, one sample per line, its line ending
stripped; empty lines are not samples (a trailing blank line is common), yet lines keep
their numbers in messages. It feeds a model with one string input (shape ``(batch,)``
or ``(batch, 1)``), or a keras-hub task saved with its preprocessor: each batch of lines
goes through ``model.preprocessor`` (tokenizer, padding mask, segment ids), fed by
input name. Every line is checked (length, UTF-8) by the counting pass."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from kerinspect.engine.inputs import Feed, InputSpec
from kerinspect.engine.streams import Batch, describe_inputs, in_batches, lines, shown, streamed, take
from kerinspect.errors import DataError, escape_text, msg
from kerinspect.report import InputRecord
from kerinspect.spec import RunSpec


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
