"""The typed run spec: every option of a run, its default, its validation and its JSON.

This is the one module that holds kerinspect's defaults. The CLI reads its option
defaults (and help text) from the constants below, :mod:`kerinspect.api` builds a
:class:`RunSpec` and a :class:`LoadOptions`, and :mod:`kerinspect.sandbox.protocol`
carries them to the worker as JSON and validates them there again.

Every spec is a frozen dataclass deriving from :class:`Spec`, which gives it, driven
by :func:`dataclasses.fields` and the type hints alone (a new field needs no
serializer or validator edit):

* coercion and validation on construction: types from the hints (``int``, ``float``,
  ``bool``, ``str``, ``None``, unions, ``tuple[X, ...]``, ``dict[str, X]``, nested
  specs, ``Any``), ranges from the field's metadata (:func:`at_least`,
  :func:`greater_than`, :func:`between`, :func:`one_of`); a bad value raises
  :class:`SpecError` naming the *parameter* (``batch_size``), never a CLI flag;
* ``to_json()`` / ``from_json()``, exact inverses (unknown or missing fields refused);
* ``from_options(**values)``: None means "not given", so the field keeps its default.

Stdlib only: the parent process of every command imports this, and
``kerinspect --help`` never imports numpy or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar, Union, cast

from .errors import InputFileError, Message, Param, UsageError, escape_text, msg

# -- defaults: the only place they are written -----------------------------------------

#: Synthetic samples per run (with ``--input``: every row of the file).
DEFAULT_SAMPLES = 32
DEFAULT_BATCH_SIZE = 32
DEFAULT_SEED = 0
#: Size of every dynamic (None) axis of a synthetic input, unless overridden.
DEFAULT_DIM = 8
#: How decoded image pixels (float32 in [0, 255]) are scaled before they are fed: the
#: ``keras.applications`` preprocessing modes, which a saved model does not hold.
#: ``none``: [0, 255]; ``unit``: [0, 1]; ``tf``: [-1, 1]; ``caffe``: BGR, ImageNet
#: means subtracted; ``torch``: [0, 1], ImageNet mean and std normalised.
PREPROCESS_MODES = ("none", "unit", "tf", "caffe", "torch")
#: The data files ``input`` takes, by extension (lower case): images, text, tables,
#: TFRecord shards, arrays (:mod:`kerinspect.engine.readers`); a folder holds images.
INPUT_FILE_KINDS = {
    "images": (".png", ".jpg", ".jpeg", ".bmp", ".gif"),
    "text": (".txt",),
    "table": (".csv", ".tsv"),
    "tfrecord": (".tfrecord", ".tfrec", ".tfrecords"),
    "arrays": (".npy", ".npz"),
}
#: How messages list what ``input`` takes.
INPUT_FORMATS = (
    "a folder of images, an image (.png .jpg .jpeg .bmp .gif), a glob of images or TFRecord "
    "shards, .txt (one sample per line), .csv/.tsv with a header, .tfrecord/.tfrec/.tfrecords, "
    ".npy or .npz"
)
DEFAULT_PREPROCESS = "none"


def input_file_kind(path: str) -> str | None:
    """The kind of one input file (a key of :data:`INPUT_FILE_KINDS`) by its extension,
    else ``arrays`` when its first bytes are those of a ``.npy`` or ``.npz`` (an array
    file saved under another name, as ``np.save`` allows), else None."""
    ext = os.path.splitext(path)[1].lower()
    kind = next((k for k, exts in INPUT_FILE_KINDS.items() if ext in exts), None)
    if kind is not None:
        return kind
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(6)
    except OSError:
        return None
    return "arrays" if head == b"\x93NUMPY" or head.startswith(b"PK\x03\x04") else None


def unsupported_input_error(path: str, shown: str) -> InputFileError:
    """The error of an input file of no kind kerinspect reads (:func:`input_file_kind`)."""
    return InputFileError(
        msg(
            "Unsupported input file type {ext!r}: {input} takes {formats}. Received: {input}={p}",
            ext=escape_text(os.path.splitext(path)[1] or "(no extension)", 40),
            formats=INPUT_FORMATS,
            p=shown,
        ),
        rule="input-format",
    )


#: A finite |x| above this is ``exploding``.
DEFAULT_MAX_ABS = 1e4
#: A share of dead units at or above this is ``dead``.
DEFAULT_MAX_DEAD_FRACTION = 0.5
#: An output whose RMS is below this times the RMS of its call's float input is ``vanishing``.
DEFAULT_MIN_RMS_RATIO = 1e-6
#: A share of values at a bounded activation's saturation bounds at or above this is ``saturated``.
DEFAULT_MAX_SATURATED_FRACTION = 0.9
#: An output whose spread across samples is at most this times its RMS, while its
#: input's is above, is ``constant``.
DEFAULT_MIN_SAMPLE_SPREAD = 1e-6
#: An attention head whose every query row has a normalised entropy at or above
#: this is ``uniform-attention`` (it attends to everything equally).
DEFAULT_UNIFORM_ATTENTION_ENTROPY = 0.95
#: An attention head whose every query row puts at least this weight on one key
#: is ``collapsed-attention``.
DEFAULT_COLLAPSED_ATTENTION_WEIGHT = 0.95
#: ``check --rule separability``: the last hidden layer's separability accuracy must be
#: at least this (a run with labels).
DEFAULT_MIN_SEPARABILITY = 0.5
#: Largest move of a tensor's mean/std from a baseline, in baseline standard deviations.
DEFAULT_TOLERANCE = 0.1
#: ``diff``: largest normalised error ``‖a−b‖/‖a‖`` of an output for the models to agree.
DEFAULT_DIFF_TOLERANCE = 1e-2
#: ``report``: the sample drawn, most layers with feature maps, most channels per layer.
DEFAULT_SAMPLE = 0
#: ``gradients``: an output's gradient norm below this fraction of the one at the output layer's input is
#: vanishing (README, "kerinspect gradients": why 1e-3), above this multiple exploding
DEFAULT_VANISHING_GRADIENT = 1e-3
DEFAULT_EXPLODING_GRADIENT = 1e3
#: ``weights``: a weight whose last optimizer step moved it by less than this fraction of
#: its norm is ``update-too-small``, by more than this one ``update-too-large`` (README,
#: "kerinspect weights": healthy is around 1e-3)
DEFAULT_MIN_UPDATE_RATIO = 1e-6
DEFAULT_MAX_UPDATE_RATIO = 1e-1
DEFAULT_FEATURE_MAPS = 12
DEFAULT_CHANNELS = 16
#: ``report``: the classes listed for the shown sample of each classifier output.
DEFAULT_TOP_K = 5
#: Wall-clock seconds of the isolated worker (0: none).
DEFAULT_TIMEOUT = 600.0
#: How batches run (``summary``, ``check``, ``attention``): ``auto`` is the compiled
#: engine, falling back to the eager one (with a note) for a model it cannot trace.
DEFAULT_ENGINE = "auto"
ENGINES = ("auto", "compiled", "eager")
#: ``auto`` on a CPU compiles a run of at least this many batches (after its first,
#: eager, batch) whose largest output then is at most this many bytes; with the fused
#: statistics kernel (:mod:`kerinspect.engine.kernel`), its largest output that the
#: kernel does not read (see :mod:`kerinspect.engine.compiled` for the measurements).
AUTO_COMPILE_MIN_BATCHES = 8
AUTO_COMPILE_MAX_TENSOR_BYTES = 16 << 20
#: ``auto`` on a CPU compiles a run that keeps whole tensors (``dump``) only when those
#: of one batch hold at most this many bytes: the traced function returns them at once.
AUTO_COMPILE_MAX_FETCH_BYTES = 256 << 20
#: Parameters a model's config may declare (``--max-params``), estimated statically.
DEFAULT_MAX_PARAMS = 1_000_000_000
#: Largest dump (tensors and inputs) in bytes, as the CLI shows it and as a number.
DEFAULT_MAX_BYTES_TEXT = "2GiB"
DEFAULT_MAX_BYTES = 2 << 30
#: Bytes of per-sample vectors all outputs of a labelled run may pool together for the
#: leave-one-out separability accuracy (float64, ``samples x units`` per output; see
#: :mod:`kerinspect.engine.separability`): past it, an output's accuracy is None.
SEPARABILITY_MAX_BYTES = 256 << 20
#: Largest ``labels`` file (a ``.npy`` or a ``.txt``, one label per line).
MAX_LABELS_FILE_BYTES = 64 << 20
#: Elements in one sample of one input: checked on the declared shape by the scan,
#: and again on the concrete shape synthetic inputs get (``--dim``/``--shape``).
MAX_INPUT_ELEMENTS = 1 << 26
#: Largest file a worker may write (its log), except a dump's arrays (``max_bytes``).
WORKER_MAX_FILE_SIZE = 64 << 20
#: Environment switch for debugging: ``KERINSPECT_ISOLATION=off`` opens model files in
#: this process (a debugger can step into Keras), without the worker's protection.
ISOLATION_ENV = "KERINSPECT_ISOLATION"

#: progress(samples_done, samples_total)
ProgressFn = Callable[[int, int], None]


def isolation_default() -> bool:
    """True unless ``KERINSPECT_ISOLATION`` is ``off``/``0``/``false``/``no``."""
    return os.environ.get(ISOLATION_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


# -- errors and range metadata ------------------------------------------------------------


class SpecError(UsageError, ValueError):
    """A spec field has a bad type or value (exit 2).

    Attributes:
        parameter: the field's name (``batch_size``), also where it is no parameter of
            :data:`PARAMETERS` (a field of the worker's request); the message references
            it when it is one, so the CLI shows its flag.
    """

    def __init__(self, message: str | Message, *, parameter: str | None = None):
        super().__init__(message, rule="usage", parameter=parameter)


def at_least(low: float) -> dict[str, Any]:
    """Field metadata: the value (when not None) is ``>= low``."""
    return {"min": low}


def greater_than(low: float) -> dict[str, Any]:
    """Field metadata: the value (when not None) is ``> low``."""
    return {"min": low, "min_open": True}


def between(low: float, high: float) -> dict[str, Any]:
    """Field metadata: ``low <= value <= high``."""
    return {"min": low, "max": high}


def one_of(*choices: str) -> dict[str, Any]:
    """Field metadata: the value is one of ``choices``."""
    return {"choices": choices}


def _range_problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    if value is None:
        return None
    if "choices" in meta and value not in meta["choices"]:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    low, high, is_open = meta.get("min"), meta.get("max"), meta.get("min_open", False)
    if isinstance(value, float) and math.isnan(value) and (low is not None or high is not None):
        return _range_text(low, high, is_open)
    if low is not None and (value <= low if is_open else value < low):
        return _range_text(low, high, is_open)
    if high is not None and value > high:
        return _range_text(low, high, is_open)
    return None


def _range_text(low: Any, high: Any, is_open: bool) -> str:
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    if low is not None:
        return f"greater than {low:g}" if is_open else f"at least {low:g}"
    return f"at most {high:g}"


# -- generic coercion from type hints ----------------------------------------------------


class _Mismatch(Exception):
    pass


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict or hint is dict:
        return "a mapping" if not args else f"a mapping of names to {_describe(args[1])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    return f"a {getattr(hint, '__name__', str(hint))}"


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` says (JSON lists become tuples, dicts nested
    specs, integral numbers ints); :class:`_Mismatch` when it cannot be."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        for alternative in args:
            try:
                return _coerce(value, alternative)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _Mismatch
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, args[0]) for v in value)
        raise _Mismatch
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Mismatch
        item = args[1] if args else Any
        return {k: _coerce(v, item) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Spec):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return hint.from_json(value)  # its own SpecError names its own field
        raise _Mismatch
    raise TypeError(f"kerinspect.spec cannot handle the type {hint!r}")  # pragma: no cover


def _to_json(value: Any) -> Any:
    if isinstance(value, Spec):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


S = TypeVar("S", bound="Spec")


class Spec:
    """Base of the frozen spec dataclasses: validation, JSON and option merging,
    all driven by :func:`dataclasses.fields` and the type hints."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(cast(Any, self)):
            value = getattr(self, f.name)
            try:
                coerced = _coerce(value, hints[f.name])
            except _Mismatch:
                raise _bad_value(f.name, _describe(hints[f.name]), value) from None
            problem = _range_problem(coerced, f.metadata)
            if problem is not None:
                raise _bad_value(f.name, problem, value)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data: one key per field, tuples as lists, nested specs as objects."""
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(cast(Any, self))}

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """The inverse of :meth:`to_json`; absent fields take their defaults.

        Raises:
            SpecError: not an object, an unknown or missing field, a bad type or value.
        """
        name = cls.__name__
        if not isinstance(data, Mapping):
            raise SpecError(f"{name} must be a JSON object. Received: {escape_text(repr(data), 80)}")
        known = {f.name: f for f in dataclasses.fields(cast(Any, cls))}
        for key in data:
            if key not in known:
                raise SpecError(
                    f"{name} has no field {escape_text(repr(key), 80)}. Known: {', '.join(known)}",
                    parameter=str(key),
                )
        for key, f in known.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and key not in data:
                raise SpecError(f"{name} needs the field {key!r}", parameter=key)
        return cast(Any, cls)(**dict(data))

    @classmethod
    def from_options(cls, **options: Any) -> Self:
        """A spec from option values where None means "not given" (the default stays)."""
        return cast(Any, cls)(**{k: v for k, v in options.items() if v is not None})

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (validated like any construction)."""
        return dataclasses.replace(cast(Any, self), **changes)


def _bad_value(name: str, expected: str, value: Any) -> SpecError:
    """``batch_size must be at least 1. Received: batch_size=0``, the field referenced
    as a parameter where it is one (:data:`PARAMETERS`)."""
    field_ref: Param | str = Param(name) if name in PARAMETERS else name
    return SpecError(
        msg(
            "{name} must be {expected}. Received: {name}={value}",
            name=field_ref,
            expected=expected,
            value=escape_text(repr(value), 80),
        ),
        parameter=name,
    )


def field_names(cls: type[Spec]) -> tuple[str, ...]:
    """The fields of a spec class, in order."""
    return tuple(f.name for f in dataclasses.fields(cast(Any, cls)))


# -- the specs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds(Spec):
    """Limits above which a tensor is flagged.

    Attributes:
        max_abs: finite |x| above this is ``exploding`` (lowered for float16 to a
            tenth of its range, see :func:`kerinspect.verdicts.effective_max_abs`).
        max_dead_fraction: a share of dead units at or above this is ``dead``.
        min_rms_ratio: an output whose RMS is below this times the RMS of its call's
            float input is ``vanishing``.
        max_saturated_fraction: a share of values at the saturation bounds of the
            layer's bounded activation at or above this is ``saturated``.
        min_sample_spread: an output whose spread across samples is at most this
            times its RMS is ``constant`` (when its call's input varies by more).
        uniform_attention_entropy: an attention head is ``uniform-attention`` when
            every query row's normalised entropy is at least this.
        collapsed_attention_weight: an attention head is ``collapsed-attention``
            when every query row puts at least this weight on one key.
    """

    max_abs: float = field(default=DEFAULT_MAX_ABS, metadata=greater_than(0))
    max_dead_fraction: float = field(default=DEFAULT_MAX_DEAD_FRACTION, metadata=between(0, 1))
    min_rms_ratio: float = field(default=DEFAULT_MIN_RMS_RATIO, metadata=between(0, 1))
    max_saturated_fraction: float = field(default=DEFAULT_MAX_SATURATED_FRACTION, metadata=between(0, 1))
    min_sample_spread: float = field(default=DEFAULT_MIN_SAMPLE_SPREAD, metadata=between(0, 1))
    uniform_attention_entropy: float = field(
        default=DEFAULT_UNIFORM_ATTENTION_ENTROPY, metadata=between(0, 1)
    )
    collapsed_attention_weight: float = field(
        default=DEFAULT_COLLAPSED_ATTENTION_WEIGHT, metadata=between(0, 1)
    )

    def to_dict(self) -> dict[str, Any]:
        return self.to_json()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        """Lenient reader for reports (keys it does not know are ignored)."""
        return cls(**{k: d[k] for k in field_names(cls) if k in d})


@dataclass(frozen=True)
class RunSpec(Spec):
    """What a run feeds the model and how it judges the outputs.

    Attributes:
        samples: number of samples (synthetic: :data:`DEFAULT_SAMPLES` when None;
            with user inputs: the first ``samples`` rows, all when None).
        batch_size: samples per forward pass; statistics are merged across batches.
        seed: seed of the synthetic inputs.
        dim: size of every dynamic axis of synthetic inputs.
        shapes: per-input shapes of synthetic inputs, batch axis excluded: CLI
            strings ``("name=16,8",)`` or ``{"name": (16, 8)}``.
        thresholds: limits for the ``exploding`` and ``dead`` flags.
        layers: glob patterns of the layer calls a dump writes (empty: all).
        depth: capture layer calls nested at most this many levels (1: the model's
            own layers only); None captures every call at every depth.
        diff_tolerance: ``diff``: largest normalised error ``‖a−b‖/‖a‖`` of an output
            for two models to agree, and for a layer not to count as diverging.
        local: ``diff``: also run each layer of model B on model A's inputs of that
            layer (shadow mode), telling a layer's own error from the one it inherited.
        sample: ``report``: the sample whose feature maps and attention are drawn.
        feature_maps: ``report``: most layers whose feature maps are drawn (0: none).
        channels: ``report``: most channels drawn per feature map layer.
        max_bytes: ``dump`` and ``activations``: refuse to write or hold more than this
            many bytes of arrays (checked after the first batch, before anything large
            is allocated).
        engine: ``auto`` (compiled, else eager with a note), ``compiled`` (fail if the
            model cannot be traced) or ``eager`` (layer by layer); see
            :mod:`kerinspect.engine.compiled`. ``dump`` and ``activations`` run their
            first batch eagerly (it chooses the tensors) and may compile the rest, whose
            traced function returns only those tensors; ``report`` and ``diff`` run
            eagerly.
        preprocess: how decoded image pixels are scaled (:data:`PREPROCESS_MODES`).
        label_column: the column (CSV/TSV) or feature (TFRecord) that holds labels,
            not fed to the model.
        top_k: ``report``: the most likely classes listed for the shown sample of each
            classifier output (0: none; see :mod:`kerinspect.engine.predictions`).
        class_names: the names of a classifier's classes, in class order
            (:func:`kerinspect.classes.read_class_names` reads them from a file); a
            classifier output must have as many classes. None: the label folders'
            names of a folder of images, else class indices.
        vocab: ``report`` and ``attention``: a text file of one token per line (line
            i: the text of id i) that decodes the model's integer inputs, so that the
            attention axes show words (:mod:`kerinspect.vocab`). A vocabulary the
            model holds (``TextVectorization``, ``StringLookup``, ``IntegerLookup``,
            a keras-hub tokenizer) is used without it.
        labels: path of a file of labels for inputs that hold none (arrays, text, a
            table without ``label_column``): a ``.npy`` of integers or strings, or a
            ``.txt`` with one label per line, one per sample (with ``samples``: at
            least that many, the first ones used). With labels (these, an image
            folder's or ``label_column``'s) every float output gets its separability
            (:mod:`kerinspect.engine.separability`).
        pca_layers: ``report``: the layer paths whose outputs are projected in 2-D
            (PCA) coloured by label (empty: the last hidden layer and a middle one).
        loss: ``gradients``: a built-in Keras loss name (``kerinspect.engine.gradients``
            lists them); None: the saved ``compile_config``'s loss when it is one.
        from_logits: ``gradients``: with ``loss``, a cross-entropy reads the model's output
            as logits (a head without softmax/sigmoid).
        training: ``gradients``: run Dropout, BatchNormalization (and every layer with a
            ``training`` argument) in training mode.
        vanishing_gradient: ``gradients``: an output whose gradient norm is below this
            fraction of the gradient norm at the output layer's input is flagged ``vanishing-gradient``.
        exploding_gradient: ``gradients``: an output whose gradient norm is above this
            multiple of the one at the output layer's input is flagged ``exploding-gradient``.
        gradients: ``report``: also differentiate the loss (as ``gradients`` does, with
            ``loss``, ``from_logits``, ``training`` and the two gradient thresholds) in
            the same worker, and draw the gradient norm along the depth; ``inspect``
            (``check``'s gradient rules): also return the ``gradients`` result, from the
            same inputs in the same worker (one model load, one TensorFlow start).
        min_update_ratio, max_update_ratio: ``weights``: a weight whose ``update_ratio``
            (``‖Δw‖/‖w‖`` of the optimizer's last step, :mod:`kerinspect.scan.optimizer_state`)
            is below / above these is flagged ``update-too-small`` / ``update-too-large``.
        percentiles: every float output's ``p01``, ``p50`` and ``p99`` (a quantile sketch,
            :mod:`kerinspect.sketch`), in both engines and in ``dump``'s manifest; off
            (None in the report) by default: they cost the compiled engine up to 1.4x its
            run time on a CPU, the eager one about 1.1x (``docs/PERFORMANCE.md``).
    """

    samples: int | None = field(default=None, metadata=at_least(1))
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata=at_least(1))
    seed: int = field(default=DEFAULT_SEED, metadata=at_least(0))
    dim: int = field(default=DEFAULT_DIM, metadata=at_least(1))
    shapes: tuple[str, ...] | dict[str, tuple[int, ...]] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    layers: tuple[str, ...] = ()
    depth: int | None = field(default=None, metadata=at_least(1))
    diff_tolerance: float = field(default=DEFAULT_DIFF_TOLERANCE, metadata=at_least(0))
    local: bool = False
    sample: int = field(default=DEFAULT_SAMPLE, metadata=at_least(0))
    feature_maps: int = field(default=DEFAULT_FEATURE_MAPS, metadata=at_least(0))
    channels: int = field(default=DEFAULT_CHANNELS, metadata=at_least(1))
    engine: str = field(default=DEFAULT_ENGINE, metadata=one_of(*ENGINES))
    max_bytes: int = field(default=DEFAULT_MAX_BYTES, metadata=at_least(1))
    preprocess: str = field(default=DEFAULT_PREPROCESS, metadata=one_of(*PREPROCESS_MODES))
    label_column: str | None = None
    top_k: int = field(default=DEFAULT_TOP_K, metadata=at_least(0))
    class_names: tuple[str, ...] | None = None
    vocab: str | None = None
    labels: str | None = None
    pca_layers: tuple[str, ...] = ()
    loss: str | None = None
    from_logits: bool = False
    training: bool = False
    vanishing_gradient: float = field(default=DEFAULT_VANISHING_GRADIENT, metadata=greater_than(0))
    exploding_gradient: float = field(default=DEFAULT_EXPLODING_GRADIENT, metadata=greater_than(0))
    gradients: bool = False
    min_update_ratio: float = field(default=DEFAULT_MIN_UPDATE_RATIO, metadata=greater_than(0))
    max_update_ratio: float = field(default=DEFAULT_MAX_UPDATE_RATIO, metadata=greater_than(0))
    percentiles: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_update_ratio >= self.max_update_ratio:
            raise SpecError(
                msg(
                    "{min_update_ratio} must be below {max_update_ratio}. "
                    "Received: {min_update_ratio}={low}, {max_update_ratio}={high}",
                    low=self.min_update_ratio,
                    high=self.max_update_ratio,
                ),
                parameter="min_update_ratio",
            )
        # options that contradict each other, refused before any model is opened
        if self.samples is not None and self.sample >= self.samples:
            raise SpecError(
                msg(
                    "{sample}={k} is out of range: the run has {n} samples (0 to {last}). "
                    "Received: {sample}={k}, {samples}={n}",
                    k=self.sample,
                    n=self.samples,
                    last=self.samples - 1,
                ),
                parameter="sample",
            )


@dataclass(frozen=True)
class LoadOptions(Spec):
    """How a model file is opened.

    Attributes:
        isolate: load and run in a disposable worker process (the default; see
            :mod:`kerinspect.sandbox.runner`). False runs in this process, unprotected
            (for debugging). Defaults to the ``KERINSPECT_ISOLATION`` switch.
        timeout: wall-clock limit of the worker in seconds (0: none).
        max_memory: the worker's memory limit in bytes (None: half the RAM; 0: none).
        trust_model: the user vouches for the file: Lambda layers and other code
            in it are deserialized (``safe_mode=False``). Still isolated.
        custom_objects: path of a Python file defining or registering the model's
            custom classes (imported in the worker before loading).
        max_params: refuse a model whose config declares more parameters than this
            (estimated statically, before anything is built).
    """

    isolate: bool = field(default_factory=isolation_default)
    timeout: float = field(default=DEFAULT_TIMEOUT, metadata=at_least(0))
    max_memory: int | None = field(default=None, metadata=at_least(0))
    trust_model: bool = False
    custom_objects: str | None = None
    max_params: int = field(default=DEFAULT_MAX_PARAMS, metadata=at_least(1))


#: The parameters that errors may reference (:class:`kerinspect.errors.Param`): the
#: fields of the specs, and the API's own parameters that the CLI has a flag for.
PARAMETERS: frozenset[str] = frozenset(
    (
        *field_names(RunSpec),
        *field_names(Thresholds),
        *field_names(LoadOptions),
        # kerinspect.dump_activations / activations
        "out",
        "overwrite",
        "max_bytes",
        # user inputs (the API's ``inputs``; ``input`` in reports, manifests and kerinspect check)
        "input",
        # kerinspect check (kerinspect.gate, kerinspect.config: the CheckConfig fields)
        "config",
        "baseline",
        "tolerance",
        "rules",
        "ignore",
    )
)


def check_inputs(run: RunSpec, inputs: Any) -> None:
    """Refuse options that do not apply to the inputs (None: synthetic; a path; arrays),
    before anything is opened (:mod:`kerinspect.api`; and in the engine's feed):
    ``shapes`` with given inputs, ``preprocess`` with anything but images,
    ``label_column`` with anything but a table or TFRecord, ``labels`` with synthetic
    inputs, with ``label_column`` or with a folder of images (they hold labels)."""
    inputs_given = inputs is not None
    if run.labels is not None:
        _check_labels_option(run, inputs)
    if isinstance(inputs, (str, os.PathLike)):
        _check_data_options(run, os.fspath(inputs))
    elif inputs_given and (run.preprocess != DEFAULT_PREPROCESS or run.label_column is not None):
        _check_data_options(run, None)
    if inputs_given and run.shapes:
        raise SpecError(
            msg(
                "{shapes} applies to synthetic inputs; the given inputs define the shapes. Received: {shapes}={given}",
                given=escape_text(repr(run.shapes), 120),
            ),
            parameter="shapes",
        )


def _check_data_options(run: RunSpec, path: str | None) -> None:
    """``preprocess`` scales images only; ``label_column`` names a column of a table or a
    TFRecord feature (image labels are their folders). ``path`` None: in-memory arrays."""
    import glob

    if path is None:
        kind: str | None = "arrays"
    elif os.path.isdir(path):
        kind = "images"
    elif glob.has_magic(path) and not os.path.lexists(path):
        first = next((f for f in glob.iglob(path, recursive=True) if not os.path.isdir(f)), None)
        kind = None if first is None else input_file_kind(first)
    else:
        kind = input_file_kind(path)
    if kind is None:
        return  # the file's own check says what is wrong with it
    if run.preprocess != DEFAULT_PREPROCESS and kind != "images":
        raise SpecError(
            msg(
                "{preprocess} scales image pixels; {input} is not images. Received: {preprocess}={mode}",
                mode=run.preprocess,
            ),
            parameter="preprocess",
        )
    if run.label_column is not None and kind not in ("table", "tfrecord"):
        what = {
            "images": "images (their labels are their folders)",
            "text": "a text file",
            "arrays": "arrays",
        }
        raise SpecError(
            msg(
                "{label_column} names a column of a table or a TFRecord feature, not of {what}. "
                "Received: {label_column}={name!r}",
                what=what[kind],
                name=escape_text(run.label_column, 100),
            ),
            parameter="label_column",
        )


def _check_labels_option(run: RunSpec, inputs: Any) -> None:
    """``labels`` is for inputs that hold no labels of their own (see :class:`RunSpec`)."""
    shown = escape_text(os.fspath(run.labels or ""), 200)
    if inputs is None:
        raise SpecError(
            msg(
                "{labels} names the classes of the samples of {input}; synthetic inputs have no classes. "
                "Received: {labels}={p}",
                p=shown,
            ),
            parameter="labels",
        )
    if run.label_column is not None:
        raise SpecError(
            msg(
                "{labels} and {label_column} both give the labels; use one. Received: {labels}={p}, "
                "{label_column}={name!r}",
                p=shown,
                name=escape_text(run.label_column, 100),
            ),
            parameter="labels",
        )
    if isinstance(inputs, (str, os.PathLike)) and os.path.isdir(inputs):
        raise SpecError(
            msg(
                "{labels} is for inputs without labels; a folder of images is labelled by its subfolders. "
                "Received: {labels}={p}",
                p=shown,
            ),
            parameter="labels",
        )
