"""Plain-data results of an inspection: what the CLI renders and JSON carries.

Everything here is a frozen dataclass of builtins, so a report can cross a process
boundary as JSON (:meth:`ModelReport.to_dict` / :meth:`ModelReport.from_dict`, generated
from the fields by :class:`~kerinspect.records.Record`) and be rendered or checked
without TensorFlow: :class:`ModelReport` (``summary``, ``attention``, ``report``) and
:class:`WeightsReport` (``weights``). The records every report shares
(:mod:`kerinspect.provenance`) and the results of ``check``
(:mod:`kerinspect.check_results`) are defined in their own modules and re-exported here.

In a notebook a report prints as a few lines, indexes by layer path
(``report["block/att"]``), and turns into a table (``to_pandas()``, ``_repr_html_``):
its own methods, with the numbers of :mod:`kerinspect.numfmt` laid out by
:mod:`kerinspect.tables`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from . import bins
from .check_results import (
    CHECK_SCHEMA_VERSION,
    CheckResult,
    CheckRun,
    CheckTotals,
    Failure,
    FirstFault,
    ModelError,
    RuleCounts,
    RuleResult,
)
from .errors import NotFoundError
from .numfmt import fmt_count, fmt_float, fmt_fraction, fmt_mean, fmt_shape
from .provenance import InputRecord, Isolation, ModelInfo
from .records import Record, meta
from .spec import (
    DEFAULT_MAX_UPDATE_RATIO,
    DEFAULT_MIN_UPDATE_RATIO,
    Thresholds,  # defined with the other run options; reports record them
)
from .tables import data_frame, html_table, repr_listing, repr_text

__all__ = [
    "CHECK_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "AttentionRecord",
    "AttentionTokens",
    "CheckResult",
    "CheckRun",
    "CheckTotals",
    "Failure",
    "FirstFault",
    "HeadStats",
    "InputRecord",
    "Isolation",
    "LabelsRecord",
    "LayerRecord",
    "ModelError",
    "ModelInfo",
    "ModelReport",
    "OptimizerStep",
    "RuleCounts",
    "RuleResult",
    "Separability",
    "StateVariable",
    "TensorRecord",
    "TensorStats",
    "Thresholds",
    "Totals",
    "WeightRecord",
    "WeightTotals",
    "WeightsReport",
    "tensor_key",
]

#: Version of the JSON layout below; bumped on incompatible changes.
SCHEMA_VERSION = 1

#: Field metadata: the key must be in the JSON although the field has a default.
_REQUIRED = meta(required=True)
#: Field metadata: a report without the key reads as None although the field has no default.
_OR_NONE = meta(missing=None)
#: Field metadata: the ``weights`` report's limits of ``update_ratio``, in one JSON object.
_UPDATE_LIMITS = meta(group="update_thresholds")


@dataclass(frozen=True)
class TensorStats(Record):
    """Health statistics of one tensor, over every sample seen.

    ``mean``/``std``/``min``/``max``/``abs_max`` cover finite values only and are
    None when there are none (or the tensor is not numeric). ``std`` is the
    population standard deviation. ``dead_fraction`` is the share of units (the
    last axis) that were exactly zero at every sample and position; None when the
    tensor has fewer than two axes.

    ``rms`` is the root mean square of the finite values. ``sample_spread`` is the
    spread across samples: per unit (last axis), the standard deviation over the
    samples of the sample's value of that unit (its mean over the other axes),
    averaged over the units; 0 when every sample gives the same output; None when
    undefined (no batch axis, non-finite values). ``saturated_fraction`` is the share
    of values at the saturation bounds of the layer's bounded activation (softmax:
    the share of one-hot distributions, see :mod:`kerinspect.stats`); None for other
    layers. These three are None in reports written before they existed.

    ``p01``, ``p50`` and ``p99`` are the 1st, 50th and 99th percentiles of the finite
    values (numpy's default, linear definition), from a mergeable quantile sketch within
    relative 0.78% (:mod:`kerinspect.sketch`); None for a tensor that is not float, has
    no finite value, or was not sketched: a run that did not ask for them (RunSpec
    ``percentiles``, off by default), weights, older reports.
    """

    count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    abs_max: float | None
    zero_fraction: float | None
    nan_count: int
    inf_count: int
    dead_fraction: float | None
    rms: float | None = None
    sample_spread: float | None = None
    saturated_fraction: float | None = None
    p01: float | None = None
    p50: float | None = None
    p99: float | None = None
    #: only when asked for (``kerinspect report``); in the JSON as :func:`kerinspect.bins.compact`
    histogram: tuple[int, ...] | None = field(
        default=None, metadata=meta(omit_none=True, codec=(bins.compact, bins.expand))
    )

    @property
    def magnitude(self) -> float | None:
        """The RMS, or (for a report written before ``rms`` existed) from mean and std."""
        if self.rms is not None:
            return self.rms
        if self.mean is None or self.std is None:
            return None
        return math.sqrt(self.mean * self.mean + self.std * self.std)


@dataclass(frozen=True)
class Separability(Record):
    """How well one output tells the labelled classes apart (a run with labels only);
    the definitions are those of :mod:`kerinspect.engine.separability`.

    Attributes:
        accuracy: leave-one-out nearest-class-mean accuracy of the samples' vectors
            (each sample's mean over every axis but the batch and the last); None
            when the vectors were not kept (``note`` says why).
        chance: the largest class's share of the samples.
        fisher: between-class over within-class sum of squares per unit, averaged
            over the units that vary within a class; None when none does.
        note: why ``accuracy`` is None.
    """

    accuracy: float | None = field(metadata=_OR_NONE)
    chance: float | None = field(metadata=_OR_NONE)
    fisher: float | None = field(metadata=_OR_NONE)
    note: str | None = field(default=None, metadata=meta(omit_none=True))


@dataclass(frozen=True)
class LabelsRecord(Record):
    """Where a run's labels came from and how many samples each class had.

    Attributes:
        source: ``folders`` (an image folder's subfolders), ``column NAME`` (a
            table's label column or a TFRecord feature), ``file PATH`` (``labels``)
            or ``array`` (labels given as an array to the API).
        classes: the class names: the sorted distinct labels (image folders: their
            subfolders' names, sorted).
        counts: samples of each class, in ``classes`` order.
    """

    source: str
    classes: tuple[str, ...]
    counts: tuple[int, ...]

    @property
    def chance(self) -> float | None:
        """The largest class's share of the samples."""
        total = sum(self.counts)
        return max(self.counts) / total if total else None


@dataclass(frozen=True)
class TensorRecord(Record):
    """One output tensor of one layer call.

    ``shape`` is the observed shape with the batch axis holding the number of
    samples seen. ``stats`` is None for tensors without numeric values (strings).
    ``model_output`` marks the top model's own outputs (what ``predict`` returns).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    stats: TensorStats | None
    flags: tuple[str, ...] = field(default=(), metadata=_REQUIRED)
    model_output: bool = False
    #: with labels only: see :class:`Separability`
    separability: Separability | None = field(default=None, metadata=meta(omit_none=True))


@dataclass(frozen=True)
class HeadStats(Record):
    """Health of one attention head, over every query row that has a key to attend to.

    Attributes:
        head: the head's index.
        entropy: mean normalised entropy ``-sum p log p / log(valid keys)`` over
            query rows with at least two valid keys; near 1: the head attends to
            everything equally.
        min_entropy: the lowest normalised entropy of any such row.
        max_weight: mean of each row's largest weight; near 1: one key takes all.
        sink: mean weight on the first key (the "attention sink").
        diagonal: mean weight of each query on its own position (queries == keys only).
        row_sum_error: largest ``|sum_s p - 1|`` of a valid row (a correctness check:
            NaN or a broken mask shows here); None when NaN.
        flags: ``uniform-attention``, ``collapsed-attention``, ``single-key-attention``
            (one key: every weight is 1).
    """

    head: int
    entropy: float | None = field(metadata=_OR_NONE)
    min_entropy: float | None = field(metadata=_OR_NONE)
    max_weight: float | None = field(metadata=_OR_NONE)
    sink: float | None = field(metadata=_OR_NONE)
    diagonal: float | None = field(metadata=_OR_NONE)
    row_sum_error: float | None = field(metadata=_OR_NONE)
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttentionTokens(Record):
    """The words on one attention layer's axes, for the sample a report draws.

    Attributes:
        sample: the sample (0-based) whose token ids were decoded.
        vocabulary: where the words come from (``TextVectorization 'vectorize'``,
            ``vocab file words.txt``, a keras-hub tokenizer).
        query: the text of each query position's token; None when no token
            sequence of the query axis' length reached the layer (see ``reason``).
        key: the same for the keys.
        pad: the text of the padding token (``''`` for ``TextVectorization``, the
            mask token of a lookup layer, id 0's of a vocab file); None: none.
        reason: why an axis has no words (positions are shown instead).
    """

    sample: int
    vocabulary: str
    query: tuple[str, ...] | None = None
    key: tuple[str, ...] | None = None
    pad: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AttentionRecord(Record):
    """The attention probabilities of one call of an attention layer.

    Attributes:
        output: name of the layer output that holds them (``attention_scores``), None
            when unavailable.
        source: ``layer`` (the layer computed them itself) or ``recomputed`` (the
            fused kernel returned none: the layer's explicit path was run again and
            its output matched the fused one) or ``softmax`` (a softmax computed during
            the call, over the keys axis: a custom layer's, a ``Softmax`` or
            ``Activation('softmax')`` layer's, a hidden ``Dense(activation="softmax")``'s).
        status: ``ok`` or ``unavailable``.
        reason: why they are unavailable.
        shape: ``(samples, heads, queries, keys)``.
        queries: query rows with at least one valid key (those in the statistics), per head.
        max_difference: for ``recomputed``: the largest difference seen between the
            fused and the explicit output.
        heads: one :class:`HeadStats` per head.
        tokens: the words on the axes of the sample a report draws, when the model
            holds a vocabulary or one was given (``vocab``); absent otherwise.
    """

    output: str | None = field(metadata=_OR_NONE)
    source: str = field(metadata=meta(missing="layer"))
    status: str = field(metadata=meta(missing="ok"))
    reason: str | None = field(metadata=_OR_NONE)
    shape: tuple[int, ...] = ()
    queries: int = 0
    max_difference: float | None = None
    heads: tuple[HeadStats, ...] = ()
    tokens: AttentionTokens | None = field(default=None, metadata=meta(omit_none=True))

    @property
    def flags(self) -> tuple[str, ...]:
        """Every head flag, each once, in order."""
        return tuple(dict.fromkeys(f for h in self.heads for f in h.flags))


@dataclass(frozen=True)
class LayerRecord(Record):
    """One call of one operation (a layer, a nested model, or a raw ``keras.ops`` op).

    Attributes:
        path: stable identifier: ``outer/inner`` for nested models, ``name@k`` for
            the k-th call (k >= 1) of a layer used at several places.
        name: the layer's own name.
        class_name: the operation's class (``Dense``, ``Functional``, ``Add``...).
        call: 0-based index of this call of the operation object in the whole
            model (the layers inside a nested model's second call have call 1).
        params: the operation's parameter count (weights it owns, nested included).
        depth: nesting level; 0 for the top model's own layers, 1 for the layers
            called inside them (a nested model's, a custom layer's), and so on.
        container: True for a call whose inner layer calls follow this record (a
            nested model, a custom layer, a subclassed model, a wrapper).
        outputs: every tensor the call produced, flattened in Keras order (for an
            attention layer, its probabilities as ``attention_scores`` too).
        parent: path of the enclosing call's record (None at depth 0).
        called: False for a sub-layer that its parent built but did not call during
            the run (e.g. the softmax a fused attention kernel bypasses); such a
            record has no outputs and is no layer call in the totals.
        attention: the attention probabilities' per-head statistics, for attention
            layers (or why they are unavailable).
        activation: the bounded activation the layer ends with (``tanh``,
            ``sigmoid``, ``hard_sigmoid``, ``softmax``), read from the layer; None
            for any other layer.
        input_rms: the RMS of every float value the call received (its inputs
            together), over every sample; None without float inputs.
        input_spread: how much the call's inputs vary across samples: the largest
            spread across samples (see :class:`TensorStats`) of its numeric inputs;
            None when unknown.
    """

    path: str
    name: str
    class_name: str
    call: int
    params: int
    depth: int = 0
    container: bool = False
    outputs: tuple[TensorRecord, ...] = field(default=(), metadata=_REQUIRED)
    parent: str | None = None
    called: bool = True
    attention: AttentionRecord | None = None
    activation: str | None = None
    input_rms: float | None = None
    input_spread: float | None = None

    JSON_KEYS = ("path", "name", "class_name", "call", "params", "depth", "container", "parent", "called",
                 "outputs", "attention", "activation", "input_rms", "input_spread")  # fmt: skip

    def __repr__(self) -> str:
        """One line per output (shape, dtype, mean, std, flags), not every statistic."""
        head = f"<LayerRecord {repr_text(self.path, 200)!r} ({repr_text(self.class_name)}"
        head += f", call {self.call}, depth {self.depth}, {fmt_count(self.params)} params)"
        if not self.called:
            return head + " not called>"
        lines = [head]
        for o in self.outputs:
            st = o.stats
            figures = f"mean {fmt_mean(st)} std {fmt_float(st.std)}" if st is not None else "no statistics"
            flags = f" [{repr_text(','.join(o.flags))}]" if o.flags else ""
            lines.append(f"  {repr_text(o.name)}: {fmt_shape(o.shape)} {repr_text(o.dtype)} {figures}{flags}")
        return "\n".join(lines) + ">"


def tensor_key(layer: LayerRecord, out: TensorRecord) -> str:
    """The key of one output, as :func:`kerinspect.activations` and dumps name it: the
    layer path for a single-output call, ``path:output`` otherwise."""
    return layer.path if len(layer.outputs) == 1 else f"{layer.path}:{out.name}"


@dataclass(frozen=True)
class WeightRecord(Record):
    """One weight variable: its owning layer, name, shape and value statistics.

    ``norm`` is the L2 norm of the finite values (None when unknown: no finite
    values, a non-numeric weight, or a report written before it existed).
    """

    layer: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    stats: TensorStats | None
    flags: tuple[str, ...] = field(default=(), metadata=_REQUIRED)
    norm: float | None = None
    #: ``‖Δw‖/‖w‖`` of the optimizer's last step (:class:`OptimizerStep`); None when
    #: not computed (no optimizer state, or not a trainable weight)
    update_ratio: float | None = None

    @property
    def size(self) -> int:
        """Number of elements (parameters)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Totals(Record):
    """Footer figures: they add up from the rows (a test holds this invariant)."""

    layer_calls: int
    params: int
    tensors: int
    flagged_tensors: int


@dataclass(frozen=True)
class ModelReport(Record):
    """The result of :func:`kerinspect.inspect_model`."""

    model: ModelInfo
    inputs: tuple[InputRecord, ...]
    layers: tuple[LayerRecord, ...]
    samples: int
    batch_size: int
    thresholds: Thresholds = field(default_factory=Thresholds)
    weights: tuple[WeightRecord, ...] = ()
    warnings: tuple[str, ...] = ()
    kerinspect_version: str = ""
    isolation: Isolation | None = None
    max_depth: int | None = None
    #: how the batches ran: ``compiled (CPU)``/``compiled (GPU)`` (one traced function
    #: per batch, statistics on that device) or ``eager`` (layer by layer)
    engine: str = ""
    #: the run's labels, when its data had some (a separability per float output)
    labels: LabelsRecord | None = field(default=None, metadata=meta(omit_none=True))

    schema_version = SCHEMA_VERSION
    JSON_KEYS = ("schema_version", "kerinspect_version", "model", "inputs", "samples", "batch_size", "thresholds",
                 "labels", "layers", "totals", "weights", "warnings", "isolation", "max_depth", "engine")  # fmt: skip

    @property
    def totals(self) -> Totals:
        """Layer calls (input rows excluded), parameters counted once per layer
        (first call, leaves only, so nested models are not counted twice), and
        the number of tensors and flagged tensors."""
        calls = [r for r in self.layers if r.class_name != "InputLayer" and r.called]
        params = sum(
            r.params for r in self.layers if r.class_name != "InputLayer" and r.call == 0 and not r.container
        )
        tensors = [o for r in self.layers for o in r.outputs]
        return Totals(
            layer_calls=len(calls),
            params=params,
            tensors=len(tensors),
            flagged_tensors=sum(1 for o in tensors if o.flags),
        )

    # -- in a notebook ---------------------------------------------------------------

    def _counts(self) -> str:
        t = self.totals
        return (
            f"{fmt_count(self.samples)} samples · {fmt_count(t.layer_calls)} layer calls · "
            f"{fmt_count(t.params)} parameters · {fmt_count(t.tensors)} tensors, {fmt_count(t.flagged_tensors)} flagged"
        )

    def __repr__(self) -> str:
        """A few lines: the model, its counts and the flagged tensors (not every field)."""
        m = self.model
        where = f" from {repr_text(m.path, 200)}" if m.path else ""
        flagged = [
            (tensor_key(r, o), repr_text(",".join(o.flags)))
            for r in self.layers
            for o in r.outputs
            if o.flags
        ]
        lines = [
            f"<ModelReport {repr_text(m.name)!r} ({repr_text(m.class_name)}){where}",
            f"  {self._counts()}",
            *repr_listing("  flagged:", flagged, "report.flagged()"),
        ]
        return "\n".join(lines) + ">"

    def __getitem__(self, key: str) -> LayerRecord | TensorRecord:
        """The layer call at path ``key`` (``report["block/att"]``, ``report["shared@1"]``),
        or one of its outputs as ``"path:output"`` (``"block/att:attention_scores"``).

        Raises:
            KeyError: no such path (a :class:`~kerinspect.errors.NotFoundError`); the
                message lists the closest paths.
        """
        if not isinstance(key, str):
            raise TypeError(f"report keys are layer paths (str), got {type(key).__name__}")
        for layer in self.layers:
            if layer.path == key:
                return layer
        if ":" in key:
            path, name = key.rsplit(":", 1)
            for layer in self.layers:
                if layer.path == path:
                    for out in layer.outputs:
                        if out.name == name:
                            return out
        known = [r.path for r in self.layers]
        known += [tensor_key(r, o) for r in self.layers if len(r.outputs) > 1 for o in r.outputs]
        raise NotFoundError.of("layer call", key, known, f"model {repr_text(self.model.name)!r}")

    def __contains__(self, key: object) -> bool:
        """``key in report``: ``report[key]`` would succeed."""
        if not isinstance(key, str):
            return False
        try:
            self[key]
        except KeyError:
            return False
        return True

    def flagged(self) -> tuple[LayerRecord, ...]:
        """The layer calls with at least one flagged output, in graph order."""
        return tuple(r for r in self.layers if any(o.flags for o in r.outputs))

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per output tensor, indexed by its key (the
        layer path, or ``path:output`` for a multi-output call, as in
        :func:`kerinspect.activations`): the layer's path, class, call, depth and
        parameters, the tensor's shape and dtype, every statistic of
        :class:`TensorStats`, its flags (comma-separated) and ``model_output``.

        Raises:
            ImportError: pandas is not installed (it is optional).
        """
        return data_frame(_rows(self), index="key")

    def _repr_html_(self) -> str:
        """The summary line, then one row per output tensor (as ``summary`` shows them)."""
        m = self.model
        caption = f"Model {m.name!r} ({m.class_name})" + (f" from {m.path}" if m.path else "")
        rows, indents = _cells(self)
        return html_table(
            _COLUMNS, rows, numeric=_NUMERIC, indents=indents, caption=f"{caption} · {self._counts()}"
        )


@dataclass(frozen=True)
class StateVariable(Record):
    """A variable of the training state saved beside the weights: an optimizer's slot
    or counter (``optimizer/vars/3``, ``optimizer_weights/Adam/dense/kernel/m``) or a
    compiled metric's accumulator (``metrics/mean/vars/1``, a sample count).

    Not a weight of the model: listed apart, never summarised or flagged. ``name`` is
    its path in the weights file (without TensorFlow's ``:0`` suffix).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str

    JSON_KEYS = ("name", "shape", "dtype", "size")

    @property
    def size(self) -> int:
        """Number of values."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class OptimizerStep(Record):
    """The optimizer state behind each weight's ``update_ratio`` (see
    :mod:`kerinspect.scan.optimizer_state`): its class, the steps it applied, the
    learning rate its last step used (a schedule evaluated at that step), and whether
    the update is that step exactly or an estimate. With nothing computed, ``update``
    is None and ``note`` says why in one line (no optimizer state saved, an optimizer
    not understood...)."""

    class_name: str | None = None
    iterations: int | None = None
    learning_rate: float | None = None
    schedule: str | None = None
    update: str | None = field(default=None, metadata=meta(choices=("exact", "estimate", None)))
    note: str = ""


@dataclass(frozen=True)
class WeightTotals(Record):
    """Footer figures of a :class:`WeightsReport`; they add up from its rows."""

    weights: int
    params: int
    flagged: int


#: Field metadata: in the JSON's ``"model"`` object.
_MODEL = meta(group="model")


@dataclass(frozen=True)
class WeightsReport(Record):
    """The result of :func:`kerinspect.scan.weights.inspect_weights`: static weight health
    read from the file, without running or deserializing the model.

    Attributes:
        path: the model file.
        format: ``"keras"`` (zip) or ``"h5"``.
        layout: ``"keras3"`` (``layers/<key>/vars/<i>``) or ``"legacy"``
            (``model_weights/<layer>/<var>:0``, Keras 2 and Keras 3's ``.h5``).
        weights: one record per weight, in file order.
        model_name, model_class: from the saved config, when there is one.
        saved_with: the Keras version recorded in the file, if any.
        warnings: what was skipped or could not be used (an oversized config...).
        optimizer, metrics: the training state saved with the model (an optimizer's
            slots and counters, compiled metrics' accumulators), in file order: not
            model weights, so never in ``weights``, the totals or the flags.
        optimizer_step: what each weight's ``update_ratio`` comes from, or why there
            is none (:class:`OptimizerStep`).
        min_update_ratio, max_update_ratio: a weight whose ``update_ratio`` is below /
            above these is flagged ``update-too-small`` / ``update-too-large``.
    """

    path: str = field(metadata=_MODEL)
    format: str = field(metadata=_MODEL)
    layout: str = field(metadata=_MODEL)
    weights: tuple[WeightRecord, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)
    model_name: str | None = field(default=None, metadata=meta(group="model", key="name"))
    model_class: str | None = field(default=None, metadata=meta(group="model", key="class_name"))
    saved_with: str | None = field(default=None, metadata=_MODEL)
    warnings: tuple[str, ...] = ()
    kerinspect_version: str = ""
    isolation: Isolation | None = None
    optimizer: tuple[StateVariable, ...] = ()
    metrics: tuple[StateVariable, ...] = ()
    optimizer_step: OptimizerStep = field(default_factory=OptimizerStep)
    min_update_ratio: float = field(default=DEFAULT_MIN_UPDATE_RATIO, metadata=_UPDATE_LIMITS)
    max_update_ratio: float = field(default=DEFAULT_MAX_UPDATE_RATIO, metadata=_UPDATE_LIMITS)

    schema_version = SCHEMA_VERSION
    kind = "weights"
    JSON_KEYS = ("schema_version", "kerinspect_version", "kind", "model", "thresholds", "update_thresholds",
                 "weights", "optimizer_step", "optimizer", "metrics", "totals", "warnings", "isolation")  # fmt: skip

    @property
    def totals(self) -> WeightTotals:
        return WeightTotals(
            weights=len(self.weights),
            params=sum(w.size for w in self.weights),
            flagged=sum(1 for w in self.weights if w.flags),
        )


# -- in a notebook -------------------------------------------------------------------


def _rows(report: ModelReport) -> list[dict[str, Any]]:
    """One plain dict per output tensor, in graph order (what ``to_pandas`` holds)."""
    stat_names = [f.name for f in dataclasses.fields(TensorStats)]
    rows = []
    for r in report.layers:
        for o in r.outputs:
            row: dict[str, Any] = {
                "key": tensor_key(r, o),
                "path": r.path,
                "output": o.name,
                "layer": r.name,
                "class_name": r.class_name,
                "call": r.call,
                "depth": r.depth,
                "parent": r.parent,
                "container": r.container,
                "params": r.params,
                "shape": tuple(o.shape),
                "dtype": o.dtype,
            }
            for name in stat_names:
                row[name] = None if o.stats is None else getattr(o.stats, name)
            row["flags"] = ",".join(o.flags)
            row["model_output"] = o.model_output
            rows.append(row)
    return rows


_COLUMNS = ("Layer", "Class", "Output shape", "Params", "Mean", "Std", "Min", "Max", "Zeros", "NaN", "Inf",
            "Dead", "Flags")  # fmt: skip
_NUMERIC = ("Params", "Mean", "Std", "Min", "Max", "Zeros", "NaN", "Inf", "Dead")


def _cells(report: ModelReport) -> tuple[list[list[str]], list[int]]:
    """``_repr_html_``: one row of cells per output tensor (per layer call without one),
    and each row's nesting depth."""
    rows: list[list[str]] = []
    indents: list[int] = []
    for r in report.layers:
        params = "" if r.class_name == "InputLayer" else (
            ("shared" if r.params else "0") if r.call > 0 else fmt_count(r.params)
        )  # fmt: skip
        if not r.outputs:
            rows.append([r.path, r.class_name, "-" if r.called else "(not called)", params] + [""] * 9)
            indents.append(r.depth)
        for k, o in enumerate(r.outputs):
            st = o.stats
            figures = ["-"] * 8
            if st is not None:
                figures = [fmt_mean(st), fmt_float(st.std), fmt_float(st.min), fmt_float(st.max),
                           fmt_fraction(st.zero_fraction), fmt_count(st.nan_count), fmt_count(st.inf_count),
                           fmt_fraction(st.dead_fraction)]  # fmt: skip
            shape = fmt_shape(o.shape) + ("" if o.dtype == "float32" else f" {o.dtype}")
            cls, shown_params = (r.class_name, params) if k == 0 else ("", "")
            rows.append([tensor_key(r, o), cls, shape, shown_params, *figures, ",".join(o.flags)])
            indents.append(r.depth)
    return rows, indents
