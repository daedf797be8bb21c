"""Plain-data results of an inspection: what the CLI renders and JSON carries.

Everything here is a frozen dataclass of builtins, so a report can cross a process
boundary as JSON (:meth:`ModelReport.to_dict` / :meth:`ModelReport.from_dict`, generated
from the fields by :class:`~kerinspect.records.Record`) and be rendered or checked
without TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import bins
from .records import Record, meta
from .spec import Thresholds  # defined with the other run options; reports record them

#: Version of the JSON layout below; bumped on incompatible changes.
SCHEMA_VERSION = 1

#: Field metadata: the key must be in the JSON although the field has a default.
_REQUIRED = meta(required=True)
#: Field metadata: a report without the key reads as None although the field has no default.
_OR_NONE = meta(missing=None)


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
        flags: ``uniform-attention``, ``collapsed-attention``.
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
class AttentionRecord(Record):
    """The attention probabilities of one call of an attention layer.

    Attributes:
        output: name of the layer output that holds them (``attention_scores``), None
            when unavailable.
        source: ``layer`` (the layer computed them itself) or ``recomputed`` (the
            fused kernel returned none: the layer's explicit path was run again and
            its output matched the fused one).
        status: ``ok`` or ``unavailable``.
        reason: why they are unavailable.
        shape: ``(samples, heads, queries, keys)``.
        queries: query rows with at least one valid key (those in the statistics), per head.
        max_difference: for ``recomputed``: the largest difference seen between the
            fused and the explicit output.
        heads: one :class:`HeadStats` per head.
    """

    output: str | None = field(metadata=_OR_NONE)
    source: str = field(metadata=meta(missing="layer"))
    status: str = field(metadata=meta(missing="ok"))
    reason: str | None = field(metadata=_OR_NONE)
    shape: tuple[int, ...] = ()
    queries: int = 0
    max_difference: float | None = None
    heads: tuple[HeadStats, ...] = ()

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
        from .notebook import layer_repr

        return layer_repr(self)


@dataclass(frozen=True)
class InputRecord(Record):
    """One model input as it was fed: its name, full shape, dtype and origin.

    ``source`` is ``"synthetic"`` (generated from the signature with ``seed``) or
    the path of the ``.npy``/``.npz`` file it came from, or ``"array"``. ``note``
    says how synthetic values were drawn when the signature alone would mislead
    (a float input drawn as token ids for the ``Embedding`` it feeds).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str
    seed: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class ModelInfo(Record):
    """What was inspected: the file, its format and the loader that read it.

    ``loader`` is ``keras``, or ``keras+legacy-h5-upgrade`` (a legacy ``.h5``) /
    ``keras+legacy-archive-upgrade`` (a tf.keras 2.13-2.15 ``.keras``) when a Keras 2
    config was rewritten for Keras 3 first; ``notes`` lists what was changed."""

    name: str
    class_name: str
    path: str | None
    format: str
    params: int
    trainable_params: int
    keras_version: str
    loader: str = "keras"
    notes: tuple[str, ...] = ()


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
class Isolation(Record):
    """How the model file was opened.

    Attributes:
        worker: in a disposable, confined worker process (False: in this process,
            ``KERINSPECT_ISOLATION=off`` or an in-memory model).
        network_namespace: the worker had a private network namespace (no interface).
        socket_guard: the worker refused Python sockets (always, in a worker).
    """

    worker: bool
    network_namespace: bool = False
    socket_guard: bool = False

    @property
    def partial(self) -> bool:
        """A worker ran, but the kernel refused it a network namespace."""
        return self.worker and not self.network_namespace


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

    schema_version = SCHEMA_VERSION
    JSON_KEYS = ("schema_version", "kerinspect_version", "model", "inputs", "samples", "batch_size", "thresholds",
                 "layers", "totals", "weights", "warnings", "isolation", "max_depth", "engine")  # fmt: skip

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

    # -- in a notebook (kerinspect/notebook.py) --

    def __repr__(self) -> str:
        """A few lines: the model, its counts and the flagged tensors (not every field)."""
        from .notebook import report_repr

        return report_repr(self)

    def __getitem__(self, key: str) -> LayerRecord | TensorRecord:
        """The layer call at path ``key`` (``report["block/att"]``, ``report["shared@1"]``),
        or one of its outputs as ``"path:output"`` (``"block/att:attention_scores"``).

        Raises:
            KeyError: no such path (a :class:`~kerinspect.notebook.NotFoundError`); the
                message lists the closest paths.
        """
        from .notebook import lookup

        return lookup(self, key)

    def __contains__(self, key: object) -> bool:
        from .notebook import contains

        return contains(self, key)

    def flagged(self) -> tuple[LayerRecord, ...]:
        """The layer calls with at least one flagged output, in graph order."""
        from .notebook import flagged

        return flagged(self)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per output tensor, indexed by its key (the
        layer path, or ``path:output`` for a multi-output call, as in
        :func:`kerinspect.activations`): the layer's path, class, call, depth and
        parameters, the tensor's shape and dtype, every statistic of
        :class:`TensorStats`, its flags (comma-separated) and ``model_output``.

        Raises:
            ImportError: pandas is not installed (it is optional).
        """
        from .notebook import report_frame

        return report_frame(self)

    def _repr_html_(self) -> str:
        from .notebook import report_html

        return report_html(self)


# -- kerinspect check -------------------------------------------------------------

#: Version of the ``kerinspect check --format json`` layout.
CHECK_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RuleCounts(Record):
    """How many tensors (or layers, or weights: see :attr:`RuleResult.unit`) a rule
    failed, passed, or could not check. ``ignored`` (exempted by ``--ignore``) are
    included in ``not_checked``: a skipped tensor never counts as a pass."""

    failed: int = 0
    passed: int = 0
    not_checked: int = 0
    ignored: int = 0

    @property
    def total(self) -> int:
        return self.failed + self.passed + self.not_checked


@dataclass(frozen=True)
class Failure(Record):
    """One tensor (or weight, or layer) that failed a rule.

    ``layer`` and ``tensor`` come from the model file and are untrusted text;
    ``message`` is plain English built from numbers; ``values`` holds those numbers.
    """

    rule: str
    layer: str
    tensor: str | None
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    #: the rule is its RuleResult's: left out (check results are written, never read back)
    JSON_KEYS = ("layer", "tensor", "message", "values")


@dataclass(frozen=True)
class RuleResult(Record):
    """One rule over one model: its verdict, coverage counts and failures.

    ``verdict`` is ``"failed"`` when anything failed, ``"passed"`` when something
    passed and nothing failed, ``"not_checked"`` when the rule applied to nothing.
    ``failures`` are in graph order, so the first names where the problem starts.
    """

    rule: str
    target: str  # "activations", "weights", "model" (coverage), "baseline"
    unit: str  # what the counts count: "tensor", "weight" or "layer"
    verdict: str
    counts: RuleCounts
    threshold: float | None = None
    failures: tuple[Failure, ...] = ()

    @property
    def failed(self) -> bool:
        return self.verdict == "failed"


@dataclass(frozen=True)
class FirstFault(Record):
    """The first layer call, in graph order, whose output holds NaN or Inf.

    Every layer before it produced finite values, so this is where the fault starts
    (for a nested model, the innermost such layer). ``weights`` lists that layer's
    weights that hold NaN or Inf themselves, a likely cause.
    """

    layer: str
    class_name: str
    tensor: str
    nan_count: int
    inf_count: int
    count: int
    weights: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelError(Record):
    """Why a model could not be checked (it then counts as an error, never a pass)."""

    exit_code: int
    rule: str
    message: str


@dataclass(frozen=True)
class CheckResult(Record):
    """The gate's verdict on one model (see :func:`kerinspect.checks.run_checks`).

    Attributes:
        path: the model as named on the command line (or its name, in memory).
        status: ``"passed"``, ``"failed"`` (a rule failed) or ``"error"`` (the model
            could not be inspected; see ``error``).
        model: what was inspected; None on error.
        rules: one result per rule, in a fixed order.
        first_fault: where NaN/Inf starts, if anywhere.
        settings: the effective settings (thresholds, ignore patterns, seed, ...).
        samples: the number of samples the model ran on.
        inputs: what was fed.
        ignored_layers: layer paths exempted by ``ignore`` patterns.
        warnings: things worth knowing that do not fail the gate.
        error: set when ``status`` is ``"error"``.
    """

    path: str
    status: str
    model: ModelInfo | None = None
    rules: tuple[RuleResult, ...] = ()
    first_fault: FirstFault | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    inputs: tuple[InputRecord, ...] = ()
    ignored_layers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    error: ModelError | None = None

    JSON_KEYS = ("path", "status", "exit_code", "model", "settings", "samples", "inputs", "first_fault", "rules",
                 "ignored_layers", "warnings", "error")  # fmt: skip

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return 1 if self.status == "failed" else 0

    @property
    def failed_rules(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.rules if r.failed)

    def rule(self, name: str) -> RuleResult:
        """The result of rule ``name`` (KeyError if it was not run)."""
        for r in self.rules:
            if r.rule == name:
                return r
        raise KeyError(name)

    # -- in a notebook (kerinspect/notebook.py) --

    def __repr__(self) -> str:
        """The verdict, then each failed rule with its counts and first failure."""
        from .notebook import result_repr

        return result_repr(self)

    def __getitem__(self, rule: str) -> RuleResult:
        """``result["nan"]``: one rule's result (as :meth:`rule`; the ``KeyError`` lists
        the rules that ran)."""
        from .notebook import check_lookup

        return check_lookup(self, rule)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per rule: verdict, counts, threshold and the
        first failing layer. Raises ``ImportError`` without pandas."""
        from .notebook import check_frame

        return check_frame([self])

    def _repr_html_(self) -> str:
        from .notebook import check_html

        return check_html([self], f"{self.path}: {self.status}")


@dataclass(frozen=True)
class CheckTotals(Record):
    """How many models a :class:`CheckRun` checked, and with which status."""

    models: int
    passed: int
    failed: int
    errors: int


@dataclass(frozen=True)
class CheckRun(Record):
    """Every model of one ``kerinspect check`` run."""

    results: tuple[CheckResult, ...] = field(metadata=meta(key="models"))
    config_file: str | None = None
    kerinspect_version: str = ""

    schema_version = CHECK_SCHEMA_VERSION
    JSON_KEYS = (
        "schema_version",
        "kerinspect_version",
        "passed",
        "exit_code",
        "config_file",
        "totals",
        "models",
    )

    @property
    def passed(self) -> bool:
        """Every model passed."""
        return self.exit_code == 0

    @property
    def totals(self) -> CheckTotals:
        return CheckTotals(len(self.results), self.count("passed"), self.count("failed"), self.count("error"))

    @property
    def exit_code(self) -> int:
        """By :data:`kerinspect.errors.EXIT_PRECEDENCE`: errors outrank failed checks."""
        from .errors import worst_exit_code

        return worst_exit_code(r.exit_code for r in self.results)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    # -- in a notebook (kerinspect/notebook.py) --

    def __repr__(self) -> str:
        """The totals, then each model's status and failed rules."""
        from .notebook import run_repr

        return run_repr(self)

    def __getitem__(self, path: str) -> CheckResult:
        """``run["model.keras"]``: one model's result, by the path it was checked as."""
        from .notebook import run_lookup

        return run_lookup(self, path)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per (model, rule). Raises ``ImportError``
        without pandas."""
        from .notebook import check_frame

        return check_frame(self.results)

    def _repr_html_(self) -> str:
        from .notebook import check_html

        caption = (
            f"{len(self.results)} models: {self.count('passed')} passed, {self.count('failed')} failed, "
            f"{self.count('error')} errors"
        )
        return check_html(self.results, caption)


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

    schema_version = SCHEMA_VERSION
    kind = "weights"
    JSON_KEYS = ("schema_version", "kerinspect_version", "kind", "model", "thresholds", "weights", "optimizer",
                 "metrics", "totals", "warnings", "isolation")  # fmt: skip

    @property
    def totals(self) -> WeightTotals:
        return WeightTotals(
            weights=len(self.weights),
            params=sum(w.size for w in self.weights),
            flagged=sum(1 for w in self.weights if w.flags),
        )
