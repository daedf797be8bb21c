"""The batches a run feeds the model: the user's arrays or file, or synthetic samples.

:func:`build_feed` turns a job's inputs and its :class:`~kerinspect.spec.RunSpec`
into a :class:`~kerinspect.engine.inputs.Feed`; synthetic inputs that reach an
``Embedding`` are drawn as valid token ids (:func:`token_id_specs`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerinspect.engine.inputs import Feed
from kerinspect.engine.readers import is_array_file
from kerinspect.errors import InferenceError, msg
from kerinspect.spec import DEFAULT_SAMPLES, RunSpec, check_inputs


def build_feed(
    model: Any, inputs: Any = None, run: RunSpec | None = None, *, source: str | None = None
) -> Feed:
    """The batches a job runs, from ``inputs`` or synthetic data.

    Args:
        model: the built Keras model the batches are for.
        inputs: None for synthetic inputs; a ``.npy``/``.npz`` path; the path of a data
            file, a folder of images or a glob (:mod:`kerinspect.engine.readers`); an
            array (one-input models); a list of arrays in ``model.inputs`` order; or a
            dict by input name.
        run: the run's :class:`~kerinspect.spec.RunSpec` (default: its defaults), whole:
            ``samples``, ``batch_size``, ``seed``, ``dim`` and ``shapes`` shape the feed.
        source: how user inputs are described in the report (default: the path, or
            ``array``).

    With ``run.labels``, the feed's labelled batches carry that file's labels
    (:mod:`kerinspect.engine.labels`).
    """
    run = RunSpec() if run is None else run
    if run.labels is None:
        return _build_feed(model, inputs, run, source)
    from kerinspect.engine.labels import with_labels

    check_inputs(run, inputs)  # labels with synthetic inputs: refused before any is drawn
    return with_labels(_build_feed(model, inputs, run, source), run)


def _build_feed(model: Any, inputs: Any, run: RunSpec, source: str | None) -> Feed:
    from kerinspect.engine import inputs as inp

    samples, batch_size, seed, dim, shapes = run.samples, run.batch_size, run.seed, run.dim, run.shapes

    try:
        specs = inp.input_specs(model)
    except InferenceError as e:
        if e.rule != "no-signature" or inputs is None:
            raise
        if isinstance(inputs, (str, os.PathLike)) and not is_array_file(os.fspath(inputs)):
            e.hint_parts = msg(
                "images, text, tables and TFRecords need a signature: give {input} as .npy or .npz"
            )
            raise
        return _unsigned_feed(model, inputs, batch_size=batch_size, samples=samples, source=source)
    if inputs is None:
        if isinstance(shapes, Mapping):
            parsed = dict(shapes)
        else:
            parsed = inp.parse_shape_options(shapes, specs)
        specs = token_id_specs(model, specs, dim, parsed)
        return inp.synthetic_feed(
            specs,
            samples=DEFAULT_SAMPLES if samples is None else samples,
            batch_size=batch_size,
            seed=seed,
            dim=dim,
            shapes=parsed,
        )
    check_inputs(run, inputs)
    if isinstance(inputs, (str, os.PathLike)) and not is_array_file(os.fspath(inputs)):
        from kerinspect.engine.readers import file_feed

        path = os.fspath(inputs)
        return file_feed(model, path, specs, run, source=source or path)
    if isinstance(inputs, (str, os.PathLike)):
        arrays, label = inp.load_arrays(inputs, specs, max_rows=samples), os.fspath(inputs)
    elif isinstance(inputs, Mapping):
        arrays, label = dict(inputs), "array"
    elif isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
        arrays, label = {specs[0].name: np.asarray(inputs)}, "array"
        if len(specs) != 1:
            raise InferenceError(f"Model has {len(specs)} inputs; pass a list or a dict of arrays")
    else:
        if len(inputs) != len(specs):
            raise InferenceError(f"Model has {len(specs)} inputs, got {len(inputs)} arrays")
        arrays, label = {s.name: np.asarray(a) for s, a in zip(specs, inputs)}, "array"
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise InferenceError(f"No array for model input(s) {missing}", rule="input-names")
    return inp.array_feed(arrays, specs, source=source or label, batch_size=batch_size, samples=samples)


def token_id_specs(
    model: Any, specs: list[Any], dim: int, shapes: Mapping[str, tuple[int, ...]]
) -> list[Any]:
    """``specs`` with the inputs that reach an ``Embedding`` unchanged (at any depth,
    inside custom layers too) drawn as token ids in ``[0, input_dim)``, even when
    declared float, and saying so. Only models that hold an Embedding are probed,
    with one forward pass of one sample."""
    from dataclasses import replace

    from kerinspect.engine import inputs as inp
    from kerinspect.engine.keras_adapter import all_layers
    from kerinspect.engine.trace import embedding_inputs

    open_specs = [
        i for i, s in enumerate(specs) if s.kind == "float" or (s.kind == "int" and s.int_high is None)
    ]
    if not open_specs or not any(type(layer).__name__ == "Embedding" for layer in all_layers(model)):
        return specs
    probes = []
    for k, s in enumerate(specs):
        shape = inp.concrete_shape(s, dim, shapes.get(s.name))
        if s.kind in ("float", "int"):  # 0/1 ids, a different pattern per input
            pattern = (np.arange(int(np.prod(shape))) // (k + 1)) % 2
            dtype = (
                "float32"
                if s.kind == "float" and s.dtype not in ("float16", "bfloat16", "float64")
                else s.dtype
            )
            probes.append(pattern.reshape((1, *shape)).astype(dtype if dtype != "bfloat16" else "float32"))
        else:
            probes.append(
                next(
                    inp.synthetic_feed([s], samples=1, batch_size=1, seed=0, dim=dim, shapes=shapes).batches()
                )[0]
            )
    found = embedding_inputs(model, probes)
    out = list(specs)
    for i in open_specs:
        if i in found:
            high, path = found[i]
            note = (
                f"drawn as token ids in [0, {high}) for Embedding {path!r}"
                if specs[i].kind == "float"
                else None
            )
            said = note or f"uniform integers in [0, {high}) for Embedding {path!r} (input_dim)"
            out[i] = replace(specs[i], int_high=high, token_note=note, note=said)
    return out


def _unsigned_feed(
    model: Any, inputs: Any, *, batch_size: int, samples: int | None, source: str | None
) -> Feed:
    """The feed of a model without an input signature (a subclassed model saved
    unbuilt): the user's arrays define it."""
    from kerinspect.engine import inputs as inp

    if isinstance(inputs, (str, os.PathLike)):
        arrays, label = inp.read_unsigned(inputs), os.fspath(inputs)
    elif isinstance(inputs, Mapping):
        arrays, label = {str(k): np.asarray(v) for k, v in inputs.items()}, "array"
    elif isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
        arrays, label = {"input": np.asarray(inputs)}, "array"
    else:
        arrays = {f"input_{i}" if len(inputs) > 1 else "input": np.asarray(a) for i, a in enumerate(inputs)}
        label = "array"
    specs = inp.array_input_specs(arrays)
    return inp.array_feed(arrays, specs, source=source or label, batch_size=batch_size, samples=samples)
