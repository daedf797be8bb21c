"""From captured statistics to what the report says: records, flags, weights, model.

After a run, :func:`layer_records` turns a
:class:`~kerinspect.engine.statistics.StatsCollector`'s statistics into one
:class:`~kerinspect.report.LayerRecord` per call, each output judged by
:func:`kerinspect.verdicts.tensor_flags` against its call's inputs; :func:`weight_records`
does the same for every weight, :func:`model_info` says what was loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from kerinspect.engine.statistics import StatsCollector
from kerinspect.engine.tensors import tensor_dtype, to_numpy
from kerinspect.report import (
    LabelsRecord,
    LayerRecord,
    ModelInfo,
    Separability,
    TensorRecord,
    Thresholds,
    WeightRecord,
)
from kerinspect.stats import summarize
from kerinspect.verdicts import PROBABILITY_EXEMPT, is_float_dtype, tensor_flags


def label_classes(collector: StatsCollector, names: Sequence[str] | None) -> list[Any]:
    """The label values of the run's classes, in class order: ``0..k-1`` for an image
    folder's ``names`` (its labels are indices), else the sorted distinct labels seen."""
    from kerinspect.engine.separability import sorted_classes

    if names is not None:
        return list(range(len(names)))
    return sorted_classes(collector.class_counts)


def labels_record(
    collector: StatsCollector, classes: list[Any], names: Sequence[str] | None, source: str
) -> LabelsRecord | None:
    """What the report says of the run's labels (None: no batch carried any):
    ``classes`` from :func:`label_classes`, ``names`` an image folder's."""
    if not collector.labelled:
        return None
    shown = [str(names[c]) if names is not None else str(c) for c in classes]
    return LabelsRecord(source, tuple(shown), tuple(collector.class_counts.get(c, 0) for c in classes))


def layer_records(
    collector: StatsCollector, thresholds: Thresholds, classes: list[Any] | None = None
) -> tuple[LayerRecord, ...]:
    """One record per call the collector saw, in call order, each output flagged (and,
    in a labelled run, with its separability; ``classes``: :func:`label_classes`)."""
    classes = classes or []
    out = []
    for site, shapes, dtypes, stats in zip(
        collector.sites, collector.shapes, collector.dtypes, collector.stats
    ):
        names = (
            site.output_names
            if len(site.output_names) == len(shapes)
            else [f"output_{k}" for k in range(len(shapes))]
        )
        is_input = site.class_name == "InputLayer"
        heads = collector.heads.get(site.index)
        attention = None
        if heads is not None:
            output = heads.output if heads.output in names else None
            attention = heads.record(output, thresholds)
            tokens = None if collector.words is None else collector.words.tokens_for(attention)
            if tokens is not None:
                attention = replace(attention, tokens=tokens)
        input_rms, input_spread = input_figures(collector, site.index)
        tensors = []
        for k, (name, shape, dtype, acc) in enumerate(zip(names, shapes, dtypes, stats)):
            final = None if acc is None else acc.finalize()
            flags = tensor_flags(
                dtype,
                final,
                thresholds,
                is_input=is_input,
                input_rms=input_rms,
                input_spread=input_spread,
                container=site.container,
            )
            if attention is not None and name == attention.output:
                flags = tuple(f for f in flags if f not in PROBABILITY_EXEMPT) + attention.flags
            tensors.append(
                TensorRecord(
                    name,
                    tuple(shape),
                    dtype,
                    final,
                    flags,
                    model_output=(site.index, k) in collector.model_outputs,
                    separability=_separability(collector, site.index, k, classes),
                )
            )
        out.append(
            LayerRecord(
                site.path,
                site.name,
                site.class_name,
                site.call,
                site.params,
                site.depth,
                site.container,
                tuple(tensors),
                parent=site.parent,
                called=site.called,
                attention=attention,
                activation=collector.activations.get(site.index),
                input_rms=input_rms,
                input_spread=input_spread,
            )
        )
    return tuple(out)


def _separability(collector: StatsCollector, index: int, k: int, classes: list[Any]) -> Separability | None:
    acc = collector.separability.get((index, k))
    return None if acc is None else Separability.from_dict(acc.result(classes))


def input_figures(collector: StatsCollector, index: int) -> tuple[float | None, float | None]:
    """``(input_rms, input_spread)`` of one call (see :class:`~kerinspect.report.LayerRecord`)."""
    squares = 0.0
    finite = 0
    spreads = []
    for ref in collector.inputs.get(index, ()):
        if ref.source is not None:
            j, k = ref.source
            if k >= len(collector.stats[j]):
                continue
            acc, dtype = collector.stats[j][k], collector.dtypes[j][k]
        else:
            acc, dtype = ref.stats, ref.dtype
        if acc is None or not acc.finite:
            continue
        rms = acc.rms()
        if is_float_dtype(dtype) and rms is not None:
            squares += rms * rms * acc.finite
            finite += acc.finite
        spread = acc.sample_spread()
        if spread is not None and rms is not None and (is_float_dtype(dtype) or "int" in dtype):
            spreads.append(spread)
    return (math.sqrt(squares / finite) if finite else None), (max(spreads) if spreads else None)


def weight_records(model: Any, thresholds: Thresholds) -> tuple[WeightRecord, ...]:
    """Statistics of every weight variable (each once, even when shared)."""
    from kerinspect.engine.trace import weight_paths

    out = []
    for layer, name, w in weight_paths(model):
        value = to_numpy(w.value if hasattr(w, "value") else w)
        stats = summarize(value)  # no spread: a weight has no samples
        final = None if stats is None else stats.finalize()
        dtype = tensor_dtype(w)
        out.append(
            WeightRecord(
                layer,
                name,
                tuple(value.shape),
                dtype,
                final,
                tensor_flags(dtype, final, thresholds, is_weight=True),
                None if stats is None else stats.l2_norm(),
            )
        )
    return tuple(out)


def model_info(model: Any, path: str | None, fmt: str, loader: str, notes: tuple[str, ...]) -> ModelInfo:
    """What a report says of a loaded model: name, class, file, parameter counts, Keras."""
    from kerinspect.engine.tfenv import import_keras

    keras = import_keras()
    return ModelInfo(
        name=model.name,
        class_name=type(model).__name__,
        path=path,
        format=fmt,
        params=int(model.count_params()),
        trainable_params=int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        keras_version=keras.__version__,
        loader=loader,
        notes=notes,
    )
