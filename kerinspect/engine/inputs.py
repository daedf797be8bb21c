"""What to feed the model: synthetic samples from its signature, or a user's file.

Synthetic samples are drawn from what the model knows about its data, and each input's
:class:`~kerinspect.report.InputRecord` ``note`` says what that was (:func:`_consumers`
reads the layers that consume the input, inside nested models too):

* float inputs: normal(mean, std) per feature of an adapted ``Normalization``; uniform
  over the range a ``Rescaling`` maps onto [0, 1] (or [-1, 1]: see :func:`_data_rule`);
  else standard normal (the note says nothing in the model says more);
* integer inputs: uniform in ``[0, n)`` where ``n`` comes from the layers that consume
  them (``Embedding.input_dim``, ``CategoryEncoding``, lookup vocabularies), else
  ``[0, DEFAULT_INT_HIGH)``;
* string inputs: words from the consuming layer's vocabulary; for a
  ``TextVectorization`` that splits, sentences of several words (up to its
  ``output_sequence_length``).

They are deterministic for a seed and independent of the batch size: each input has its
own random stream, drawn in sample order (and one more stream, of per-sample sequence
lengths, is shared by a keras-hub model's inputs). Dynamic axes (``None`` beyond the
batch axis) take ``dim`` (default :data:`DEFAULT_DIM`) unless a shape is given.

The inputs of a keras-hub backbone (or task) are drawn by their role
(:func:`kerinspect.engine.hub.backbone_input_hints`): each sample a sequence of its own
length then padding: ``token_ids`` in ``[0, vocabulary_size)`` (between the tokenizer's
start and end tokens, where a task's preprocessor knows them), ``padding_mask`` ones over
the sequence, ``segment_ids`` 0; no sequence axis longer than ``max_sequence_length``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerinspect.errors import DataError, InferenceError, InputFileError, Message, PolicyError, UsageError, msg
from kerinspect.report import InputRecord
from kerinspect.scan.input_shapes import fmt_declared, shape_error
from kerinspect.spec import DEFAULT_DIM, MAX_INPUT_ELEMENTS

#: Exclusive upper bound of synthetic integers when no consuming layer says more.
DEFAULT_INT_HIGH = 10
#: Words for string inputs whose consumers carry no vocabulary.
_WORDS = ("the", "model", "layer", "tensor", "keras", "input", "value", "unit")


@dataclass(frozen=True)
class InputSpec:
    """One model input, as declared by the model.

    Attributes:
        name: the input's name (``keras.Input(name=...)``).
        shape: declared shape with the batch axis first (None = dynamic).
        dtype: Keras dtype name (``float32``, ``int32``, ``string``...).
        int_high: exclusive upper bound for integer values, when a consumer
            defines one (Embedding ``input_dim``...).
        vocabulary: tokens a consuming lookup/vectorisation layer knows.
        token_note: set when a float input is drawn as token ids (it reaches an
            ``Embedding`` unchanged), or as a keras-hub backbone input: what the
            report's input line says.
        fill: every synthetic element takes this value (a padding mask of ones).
        max_dim: dynamic axes take at most this size (a backbone's
            ``max_sequence_length``), whatever ``dim`` says.
        note: what synthetic values are drawn from (the report's input note); None:
            :func:`default_note`.
        normal: (mean, std) arrays that broadcast against one sample: float values are
            normal(mean, std) (an adapted ``Normalization``).
        uniform: (low, high): float values are uniform in it (a ``Rescaling``).
        words: (fewest, most) words per string: sentences (a ``TextVectorization``).
        sequence: a keras-hub input drawn by its role, with the lengths its sequences
            share with the model's other inputs (:class:`~kerinspect.engine.hub.InputHint`).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    int_high: int | None = None
    vocabulary: tuple[str, ...] | None = None
    token_note: str | None = None
    fill: int | None = None
    max_dim: int | None = None
    note: str | None = None
    normal: tuple[Any, Any] | None = field(default=None, compare=False)
    uniform: tuple[float, float] | None = None
    words: tuple[int, int] | None = None
    sequence: Any = None

    @property
    def kind(self) -> str:
        if self.dtype == "string":
            return "string"
        if self.dtype == "bool":
            return "bool"
        if self.dtype.startswith(("int", "uint")):
            return "int"
        return "float"


@dataclass
class Feed:
    """Batches ready to run, and how they will be described in the report.

    Attributes:
        records: how each input is described in the report.
        samples: samples the batches hold in all.
        batch_size: samples per batch (the last may hold fewer).
        labels: the class names of a folder of images (subfolders sorted), else None.
        warnings: one line each about what is fed (a model that rescales pixels
            itself, fed pixels already scaled); the CLI prints each on stderr.
    """

    records: tuple[InputRecord, ...]
    samples: int
    batch_size: int
    _batches: Any
    labels: tuple[str, ...] | None = None
    warnings: tuple[Message, ...] = ()
    _labelled: Any = None

    def batches(self) -> Iterator[list[np.ndarray]]:
        """Yield lists of arrays (one per input, ``model.inputs`` order)."""
        return iter(self._batches())

    def labelled_batches(self) -> Iterator[tuple[list[np.ndarray], np.ndarray | None]]:
        """Yield ``(arrays, labels)``: the batches of :meth:`batches` with the labels of
        their samples (class indices into :attr:`labels` for images, the label column's
        values for tables and TFRecords), or None where the data holds none. Labels are
        never fed to the model."""
        if self._labelled is None:
            return ((b, None) for b in self.batches())
        return iter(self._labelled())

    @property
    def n_batches(self) -> int:
        return -(-self.samples // self.batch_size)


# -- signature ------------------------------------------------------------------


def input_specs(model: Any) -> list[InputSpec]:
    """Read the model's input signature, with value ranges from consuming layers."""
    from kerinspect.engine.keras_adapter import graph_of

    graph = graph_of(model)
    if graph is None:
        built = built_input_specs(model)
        if built:
            return built
        raise InferenceError(
            f"Model {model.name!r} ({type(model).__name__}) has no input signature: it is "
            "not a Functional or built Sequential model, and was saved without the input "
            "shapes it was built with.",
            rule="no-signature",
            hint=msg("feed it sample inputs with {input} (a .npy file, or an .npz keyed by input name)"),
        )
    from kerinspect.engine.hub import backbone_input_hints

    hints = backbone_input_hints(model, [x.name for x in graph.inputs])
    specs = []
    for x in graph.inputs:
        dtype = str(x.dtype)
        found = _consumers(graph, x)
        high, vocab = found.high, found.vocab
        hint = hints.get(x.name)
        if hint is not None and dtype != "string":
            specs.append(
                InputSpec(
                    x.name,
                    tuple(x.shape),
                    dtype,
                    hint.int_high or high,
                    vocab,
                    hint.note,
                    hint.fill,
                    hint.max_len,
                    note=hint.note,
                    sequence=hint if hint.role else None,
                )
            )
        else:
            specs.append(_spec_from_consumers(InputSpec(x.name, tuple(x.shape), dtype, high, vocab), found))
    return specs


def _spec_from_consumers(spec: InputSpec, found: _Consumers) -> InputSpec:
    """``spec`` with what its readers say its values look like, and the note saying so."""
    from dataclasses import replace

    kind = spec.kind
    if kind == "string":
        if found.words is not None:
            return replace(spec, words=found.words, note=found.draw_note)
        if spec.vocabulary:
            return replace(spec, note=f"words from {found.vocab_from}")
        return spec
    if kind == "int" and spec.int_high is not None:
        return replace(spec, note=f"uniform integers in [0, {spec.int_high}) for {found.high_from}")
    if kind == "int" and found.uniform is not None:  # uint8 pixels before a Rescaling
        high = int(math.floor(found.uniform[1])) + 1
        return replace(spec, int_high=high, note=f"uniform integers in [0, {high - 1}]" + _why(found))
    if kind == "float" and (found.normal is not None or found.uniform is not None):
        return replace(spec, normal=found.normal, uniform=found.uniform, note=found.draw_note)
    return spec


def _why(found: _Consumers) -> str:
    note = found.draw_note or ""
    return note[note.index(":") :] if ":" in note else ""


def built_input_specs(model: Any) -> list[InputSpec]:
    """A subclassed model's signature from the shapes it was built with (its saved
    ``build_config``): float32, the batch axis dynamic. Empty when there are none."""
    from kerinspect.engine.keras_adapter import build_input_shapes

    shapes = build_input_shapes(model)
    if not shapes:
        return []
    specs = []
    for arg, shape in shapes.items():
        if not isinstance(shape, (tuple, list)) or not all(d is None or isinstance(d, int) for d in shape):
            return []  # nested structures: no flat signature to draw from
        name = arg.removesuffix("_shape") or arg
        specs.append(InputSpec(name if len(shapes) > 1 else "input", (None, *tuple(shape)[1:]), "float32"))
    return specs


def array_input_specs(arrays: Mapping[str, np.ndarray]) -> list[InputSpec]:
    """A signature read off the user's arrays, for a model that declares none: one
    input per array, its shape with the batch axis dynamic, its dtype."""
    specs = []
    for name, a in arrays.items():
        kind = np.asarray(a).dtype
        dtype = "string" if kind.kind in "USO" else str(kind)
        specs.append(InputSpec(name, (None, *np.shape(a)[1:]), dtype))
    return specs


def read_unsigned(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npy`` (one input, named ``input``) or ``.npz`` (one input
    per key) file, for a model without a signature; never unpickles."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError:
        magic = b""
    names = ["input"]
    if magic.startswith(b"PK"):
        try:
            with np.load(p, allow_pickle=False) as data:
                names = list(data.keys()) or names
        except Exception:  # noqa: BLE001 - load_arrays says what is wrong with the file
            pass
    return load_arrays(p, [InputSpec(n, (None,), "float32") for n in names])


@dataclass
class _Consumers:
    """What the layers that read one input say about its values (see :func:`_consumers`)."""

    high: int | None = None  # the tightest exclusive integer bound
    high_from: str = ""  # e.g. "Embedding 'emb' (input_dim)"
    vocab: tuple[str, ...] | None = None
    vocab_from: str = ""  # e.g. "StringLookup 'lookup'"
    words: tuple[int, int] | None = None  # sentence lengths (TextVectorization that splits)
    normal: tuple[Any, Any] | None = None  # (mean, std) broadcast against one sample
    uniform: tuple[float, float] | None = None
    draw_note: str | None = None  # what normal/uniform/words were drawn from


def _consumer_constraints(graph: Any, tensor: Any) -> tuple[int | None, tuple[str, ...] | None]:
    """Integer bound and vocabulary from the layers that read ``tensor`` (recursing
    into nested models). The tightest integer bound wins."""
    found = _consumers(graph, tensor)
    return found.high, found.vocab


def consumer_layers(graph: Any, tensor: Any) -> Iterator[Any]:
    """The layers that read ``tensor`` directly, in graph order; a nested model that
    reads it is entered (its layers that read the matching inner input)."""
    from kerinspect.engine import keras_adapter as ka

    for _, node in ka.graph_nodes(graph):
        op = ka.node_operation(node)
        if ka.is_input_node(node) or op is None:
            continue
        flat = ka.node_input_tensors(node)
        if not any(t is tensor for t in flat):
            continue
        sub = ka.graph_of(op)
        if sub is not None and len(flat) == len(sub.inputs):
            yield from consumer_layers(sub, sub.inputs[[i for i, t in enumerate(flat) if t is tensor][0]])
        else:
            yield op


def _consumers(graph: Any, tensor: Any) -> _Consumers:
    """What the layers that read ``tensor`` (:func:`consumer_layers`) say about its
    values (see :func:`_data_rule` for the float rules). The tightest integer bound
    wins; the first vocabulary and the first data rule are kept."""
    found = _Consumers()
    for op in consumer_layers(graph, tensor):
        cls = type(op).__name__
        bound = None
        if cls == "Embedding":
            bound = int(op.input_dim), f"Embedding {op.name!r} (input_dim)"
        elif cls == "CategoryEncoding":
            bound = int(op.num_tokens), f"CategoryEncoding {op.name!r} (num_tokens)"
        elif cls in ("StringLookup", "IntegerLookup", "TextVectorization"):
            try:
                words = [w for w in op.get_vocabulary() if w not in ("", "[UNK]", -1)]
            except Exception:  # noqa: BLE001 - an unadapted layer has none
                words = []
            if words and cls == "IntegerLookup":
                bound = max(int(w) for w in words) + 1, f"IntegerLookup {op.name!r} (vocabulary)"
            elif words and found.vocab is None:
                found.vocab = tuple(str(w) for w in words[:MAX_VOCABULARY])
                found.vocab_from = f"{cls} {op.name!r} ({len(words):,} words)"
                if cls == "TextVectorization" and found.draw_note is None:
                    _sentence_rule(op, found)
        elif found.draw_note is None:
            _data_rule(op, cls, found)
        if bound is not None and (found.high is None or bound[0] < found.high):
            found.high, found.high_from = bound
    return found


#: Words of a consuming layer's vocabulary that synthetic strings are drawn from (its
#: most frequent ones: an adapted vocabulary is sorted by frequency).
MAX_VOCABULARY = 1000
#: Sentences drawn for a TextVectorization have at least this many words (fewer when
#: its output_sequence_length is shorter) ...
MIN_WORDS = 3
#: ... and at most its output_sequence_length, or this many when it has none.
DEFAULT_MAX_WORDS = 12


def _sentence_rule(op: Any, found: _Consumers) -> None:
    """A TextVectorization that splits its strings reads sentences: draw them of
    :data:`MIN_WORDS` to ``output_sequence_length`` words (:data:`DEFAULT_MAX_WORDS`
    when it has none) rather than one word each (mostly padding)."""
    try:
        config = op.get_config()
    except Exception:  # noqa: BLE001 - then one word per string, as for a lookup
        return
    if config.get("split") is None:
        return
    longest = config.get("output_sequence_length")
    top = longest if isinstance(longest, int) and longest > 0 else DEFAULT_MAX_WORDS
    low = min(MIN_WORDS, top)
    found.words = (low, top)
    found.draw_note = f"sentences of {low}-{top} words from {found.vocab_from}"


def _data_rule(op: Any, cls: str, found: _Consumers) -> None:
    """What a float input's first reader says its values look like:

    * an adapted (or given) ``Normalization`` (not ``invert``): its mean and variance, per
      feature along its axis: normal(mean, sqrt(variance)), broadcast over the other axes;
    * a ``Rescaling(scale, offset)`` with a scalar ``0 < scale < 1``: uniform over
      ``[0, R]`` with ``R = max(1, -2 * offset) / scale``, the non-negative range the
      model maps onto ``[0, 1]`` (offset 0: ``1/255`` gives pixels in ``[0, 255]``,
      ``1/16`` ``[0, 16]``) or onto ``[-1, 1]`` (``1/127.5`` with offset ``-1``:
      ``[0, 255]``)."""
    if cls == "Normalization" and not getattr(op, "invert", False):
        mean, variance = getattr(op, "mean", None), getattr(op, "variance", None)
        if mean is None or variance is None:
            return
        try:
            m = np.asarray(mean, dtype=np.float64)
            v = np.asarray(variance, dtype=np.float64)
        except Exception:  # noqa: BLE001 - not readable: nothing learnt from it
            return
        if m.ndim == 0 or m.shape != v.shape or not (np.all(np.isfinite(m)) and np.all(np.isfinite(v))):
            return
        how = "adapted" if getattr(op, "input_mean", None) is None else "given"
        found.normal = (m[0], np.sqrt(np.maximum(v[0], 0.0)))  # without the batch axis
        found.draw_note = f"normal(mean, std) of Normalization {op.name!r} ({how}, {m.size:,} features)"
    elif cls == "Rescaling":
        try:
            scale, offset = float(op.scale), float(op.offset)
        except (TypeError, ValueError):  # per-channel: no one range to draw from
            return
        if not (0 < scale < 1) or not math.isfinite(offset):
            return
        top = max(1.0, -2.0 * offset) / scale
        found.uniform = (0.0, top)
        found.draw_note = (
            f"uniform [0, {_fmt_number(top)}]: the model rescales by {_fmt_number(scale)}"
            + (f" and offset {_fmt_number(offset)}" if offset else "")
            + f" (Rescaling {op.name!r})"
        )


def _fmt_number(x: float) -> str:
    if x == round(x) and abs(x) < 1e15:
        return str(int(round(x)))
    inverse = 1 / x if 0 < abs(x) < 1 else 0.0
    if inverse and abs(inverse - round(inverse, 1)) < 1e-6 * abs(inverse):
        return f"1/{round(inverse, 1):g}"
    return f"{x:.4g}"


#: Notes for inputs that nothing in the model says anything about.
NOTHING_KNOWN = "nothing in the model says what its data looks like"


def default_note(spec: InputSpec) -> str:
    """What a synthetic input without a more specific rule is drawn from."""
    if spec.kind == "string":
        return f"words from a built-in list of {len(_WORDS)}: no layer of the model has a vocabulary"
    if spec.kind == "bool":
        return "random booleans: " + NOTHING_KNOWN
    if spec.kind == "int":
        return f"uniform integers in [0, {DEFAULT_INT_HIGH}): " + NOTHING_KNOWN
    return "standard normal: " + NOTHING_KNOWN


# -- shapes ---------------------------------------------------------------------


def parse_shape_options(shapes: Sequence[str], specs: Sequence[InputSpec]) -> dict[str, tuple[int, ...]]:
    """Parse ``--shape`` values: ``NAME=8,16,3`` or, for a one-input model, ``8,16,3``.

    Shapes exclude the batch axis. Raises UsageError on malformed values.
    """
    out: dict[str, tuple[int, ...]] = {}
    names = [s.name for s in specs]
    for raw in shapes:
        name, sep, dims = raw.rpartition("=")
        if not sep:
            if len(specs) != 1:
                raise UsageError(
                    msg(
                        "{shapes} {raw!r} names no input, but the model has {n} inputs ({names}). "
                        "Give {shapes} as NAME=D1,D2,...",
                        raw=raw,
                        n=len(specs),
                        names=", ".join(names),
                    )
                )
            name = names[0]
        if name not in names:
            raise UsageError(
                msg(
                    "{shapes} names unknown input {name!r}. Model inputs: {names}.",
                    name=name,
                    names=", ".join(names),
                )
            )
        try:
            parsed = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise UsageError(
                msg("{shapes} {raw!r}: dimensions must be integers, e.g. {name}=16,8", raw=raw, name=name)
            ) from None
        if not parsed or any(d < 1 for d in parsed):
            raise UsageError(msg("{shapes} {raw!r}: dimensions must be positive integers", raw=raw))
        out[name] = parsed
    return out


def concrete_shape(spec: InputSpec, dim: int, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """The per-sample shape (no batch axis) to generate for ``spec``.

    Refused above :data:`~kerinspect.spec.MAX_INPUT_ELEMENTS` elements: a model can
    declare many dynamic axes (each ``None`` becomes ``dim``), and nothing that
    large is allocated.
    """
    declared = spec.shape[1:]
    if shape is None:
        free = dim if spec.max_dim is None else min(dim, spec.max_dim)
        shape = tuple(free if d is None else d for d in declared)
    elif len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape)):
        raise UsageError(
            msg(
                "{shapes} for input {name!r} is {shape}, but the model declares {declared} (batch axis excluded).",
                name=spec.name,
                shape=shape,
                declared=fmt_declared(declared),
            )
        )
    elements = math.prod(shape)
    if elements > MAX_INPUT_ELEMENTS:
        raise PolicyError(
            f"One sample of input {spec.name!r} would have {elements:,} elements "
            f"{fmt_declared(shape)}, above the limit of {MAX_INPUT_ELEMENTS:,}.",
            rule="input-too-large",
            hint=msg("the model declares dynamic axes: give smaller ones with {dim} or {shapes}"),
        )
    return tuple(shape)


# -- synthetic ------------------------------------------------------------------


def _generate(
    spec: InputSpec, rng: np.random.Generator, shape: tuple[int, ...], lengths: np.ndarray | None = None
) -> np.ndarray:
    """Draw one batch. Every kind draws the same number of float64s per sample, in
    order (one per element; a sentence: one more than its most words), so consecutive
    batches concatenate to what one large draw would give. ``lengths``: one uniform
    [0, 1) per sample, shared by the inputs of one keras-hub model (:func:`_sequences`)."""
    if spec.kind == "string" and spec.words is not None:
        return _sentences(spec, rng, shape)
    if spec.kind == "float" and spec.token_note is None:
        if spec.uniform is not None:
            low, high = spec.uniform
            return (low + rng.random(shape) * (high - low)).astype(np.float32)
        z = rng.standard_normal(shape)
        if spec.normal is not None:
            mean, std = spec.normal
            z = z * std + mean
        return z.astype(np.float32)
    u = rng.random(shape)
    if spec.sequence is not None and lengths is not None and len(shape) == 2:
        return _sequences(spec, u, lengths)
    if spec.fill is not None:  # drawn all the same, to keep the stream in step
        return np.full(shape, spec.fill, dtype=spec.dtype)
    if spec.kind == "float":  # token ids for the Embedding it feeds, as floats
        high = spec.int_high or DEFAULT_INT_HIGH
        return np.minimum((u * high).astype(np.int64), high - 1).astype(np.float32)
    if spec.kind == "bool":
        return u < 0.5
    if spec.kind == "int":
        high = spec.int_high or DEFAULT_INT_HIGH
        return np.minimum((u * high).astype(np.int64), high - 1).astype(spec.dtype)
    words = spec.vocabulary or _WORDS
    idx = np.minimum((u * len(words)).astype(np.int64), len(words) - 1)
    return np.array([words[i] for i in idx.reshape(-1)], dtype=object).reshape(shape)


def _sentences(spec: InputSpec, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """One sentence per element: its length uniform in ``spec.words``, its words uniform
    over the vocabulary (``1 + most`` draws per element, whatever its length)."""
    fewest, most = spec.words or (1, 1)
    words = spec.vocabulary or _WORDS
    u = rng.random((*shape, 1 + most))
    lengths = fewest + np.minimum((u[..., 0] * (most - fewest + 1)).astype(np.int64), most - fewest)
    idx = np.minimum((u[..., 1:] * len(words)).astype(np.int64), len(words) - 1)
    flat_idx, flat_len = idx.reshape(-1, most), lengths.reshape(-1)
    text = [" ".join(words[i] for i in row[:n]) for row, n in zip(flat_idx, flat_len)]
    return np.array(text, dtype=object).reshape(shape)


def sequence_lengths(u: np.ndarray, steps: int) -> np.ndarray:
    """Per-sample sequence lengths from uniform [0, 1) draws: between a quarter of the
    ``steps`` (at least 1) and all of them."""
    fewest = max(1, -(-steps // 4))
    return fewest + np.minimum((u * (steps - fewest + 1)).astype(np.int64), steps - fewest)


def _sequences(spec: InputSpec, u: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A keras-hub input of shape (batch, steps) by its role: each sample holds a
    sequence of L tokens (L from the shared ``lengths``) then padding; token ids uniform
    over the vocabulary between the start and end tokens the tokenizer knows, then its
    padding id; a padding mask of ones for the L tokens, zeros after; segment ids 0
    (one segment)."""
    hint = spec.sequence
    n, steps = u.shape
    used = sequence_lengths(lengths, steps)
    inside = np.arange(steps)[None, :] < used[:, None]
    if hint.role == "padding_mask":
        return inside.astype(spec.dtype)
    if hint.role == "segment_ids":
        return np.zeros((n, steps), dtype=spec.dtype)
    high = spec.int_high or DEFAULT_INT_HIGH
    ids = np.minimum((u * high).astype(np.int64), high - 1)
    if hint.start is not None:
        ids[:, 0] = hint.start
    if hint.end is not None:
        ids[np.arange(n), used - 1] = hint.end
    ids[~inside] = hint.pad
    return ids.astype(spec.dtype)


#: The random stream of per-sample sequence lengths, shared by a model's keras-hub
#: inputs (each input has its own stream ``[seed, index]``; this index is no input's).
LENGTHS_STREAM = 2**31 - 1


def synthetic_feed(
    specs: Sequence[InputSpec],
    *,
    samples: int,
    batch_size: int,
    seed: int,
    dim: int = DEFAULT_DIM,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Feed:
    """Seeded samples built from the signature (see the module docstring)."""
    _check_counts(samples, batch_size)
    if seed < 0:
        raise UsageError(msg("{seed} must be 0 or more. Received: {seed}={value}", value=seed))
    shapes = shapes or {}
    per_sample = [concrete_shape(s, dim, shapes.get(s.name)) for s in specs]
    specs = [_fits(s, shp) for s, shp in zip(specs, per_sample)]
    records = tuple(
        InputRecord(
            s.name, (samples, *shp), s.dtype, "synthetic", seed, s.token_note or s.note or default_note(s)
        )
        for s, shp in zip(specs, per_sample)
    )
    shared = any(s.sequence is not None for s in specs)

    def batches() -> Iterator[list[np.ndarray]]:
        rngs = [np.random.default_rng([seed, i]) for i in range(len(specs))]
        lengths_rng = np.random.default_rng([seed, LENGTHS_STREAM])
        for start in range(0, samples, batch_size):
            n = min(batch_size, samples - start)
            lengths = lengths_rng.random(n) if shared else None
            yield [_generate(s, r, (n, *shp), lengths) for s, r, shp in zip(specs, rngs, per_sample)]

    return Feed(records, samples, batch_size, batches)


def _fits(spec: InputSpec, shape: tuple[int, ...]) -> InputSpec:
    """``spec`` as drawn for samples of ``shape``: a Normalization's statistics that do
    not broadcast against it (a ``--shape`` the layer was not built for) are dropped."""
    if spec.normal is None:
        return spec
    from dataclasses import replace

    try:
        if np.broadcast_shapes(np.shape(spec.normal[0]), shape) == tuple(shape):
            return spec
    except ValueError:
        pass
    return replace(spec, normal=None, note=None)


def _check_counts(samples: int, batch_size: int) -> None:
    if samples < 1:
        raise UsageError(msg("{samples} must be at least 1. Received: {samples}={value}", value=samples))
    if batch_size < 1:
        raise UsageError(
            msg("{batch_size} must be at least 1. Received: {batch_size}={value}", value=batch_size)
        )


# -- user data ------------------------------------------------------------------


def load_arrays(
    path: str | os.PathLike[str], specs: Sequence[InputSpec], max_rows: int | None = None
) -> dict[str, np.ndarray]:
    """Read ``.npy`` (one-input models) or ``.npz`` (keyed by input name); never unpickles.

    The file passes :func:`kerinspect.scan.arrays.check_input_file` first (zip bombs,
    headers declaring more than they hold, complex/object/void dtypes), and only the
    first ``max_rows`` samples of each array are read (None: all).
    """
    from kerinspect.scan.arrays import check_input_file

    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputFileError(
            msg("Input file not found. Received: {input}={p!r}", p=p), rule="input-not-found"
        )
    if not os.path.isfile(p):
        raise InputFileError(
            msg("Input is not a regular file. Received: {input}={p!r}", p=p), rule="input-not-file"
        )
    names = [s.name for s in specs]
    entries = check_input_file(p)
    if entries[0].member is None:  # .npy
        if len(specs) != 1:
            raise InferenceError(
                msg(
                    "Input file holds one array, but the model has {n} inputs ({names}). Received: {input}={p!r}",
                    n=len(specs),
                    names=", ".join(names),
                    p=p,
                ),
                rule="input-names",
                hint="save an .npz keyed by input name: np.savez(path, **{name: array})",
            )
        data = np.load(p, allow_pickle=False, mmap_mode="r")  # pages are read only as rows are used
        return {names[0]: data if max_rows is None or data.ndim == 0 else data[:max_rows]}
    keys = [e.name for e in entries]
    by_key = dict(zip(keys, entries))
    if len(specs) == 1 and len(keys) == 1:
        wanted = {names[0]: keys[0]}  # one array for one input: its key does not matter
    else:
        unknown = [k for k in keys if k not in names]
        missing = [n for n in names if n not in keys]
        if missing or unknown:
            raise InferenceError(
                f"Input file arrays {keys} do not match the model inputs {names}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
                + msg(". Received: {input}={p!r}", p=p),
                rule="input-names",
            )
        wanted = {n: n for n in names}
    import zipfile

    with zipfile.ZipFile(p) as zf:
        return {n: _read_rows(zf, by_key[k], max_rows) for n, k in wanted.items()}


def _read_rows(zf: Any, entry: Any, max_rows: int | None) -> np.ndarray:
    """The first ``max_rows`` rows of an ``.npz`` member, inflating no more than those."""
    from kerinspect.scan.npy import read_npy_header

    d = entry.dtype
    dtype = np.dtype(f"{d.byteorder}{d.kind}{d.itemsize // 4 if d.kind == 'U' else d.itemsize}")
    shape = entry.shape
    if max_rows is not None and shape and not entry.fortran_order:
        shape = (min(shape[0], max_rows), *shape[1:])
    count = math.prod(shape)
    with zf.open(entry.member) as m:
        read_npy_header(m)
        buf = m.read(count * dtype.itemsize)
    if len(buf) != count * dtype.itemsize:
        raise InputFileError(f"Input array {entry.name!r} is truncated.", rule="input-unreadable")
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(
        shape, order="F" if entry.fortran_order else "C"
    )


def array_feed(
    arrays: Mapping[str, np.ndarray],
    specs: Sequence[InputSpec],
    *,
    source: str,
    batch_size: int,
    samples: int | None = None,
) -> Feed:
    """Validate user arrays against the signature and batch them (no copy: slices)."""
    _check_counts(samples or 1, batch_size)
    checked = [validate_array(s, arrays[s.name], source) for s in specs]
    lengths = {a.shape[0] for a in checked}
    if len(lengths) != 1:
        raise InferenceError(
            "Input arrays have different numbers of samples: "
            + ", ".join(f"{s.name}={a.shape[0]}" for s, a in zip(specs, checked))
            + msg(". Received: {input}={source!r}", source=source),
            rule="input-shape",
        )
    total = lengths.pop()
    if total < 1:
        raise InferenceError(
            msg("Input arrays hold no samples. Received: {input}={source!r}", source=source),
            rule="input-shape",
        )
    if samples is not None:
        if samples > total:
            raise UsageError(
                msg(
                    "{samples}={n} is more than the {total} samples in {source!r}",
                    n=samples,
                    total=total,
                    source=source,
                )
            )
        total = samples
    records = tuple(
        InputRecord(s.name, (total, *a.shape[1:]), s.dtype, source) for s, a in zip(specs, checked)
    )

    def batches() -> Iterator[list[np.ndarray]]:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            batch = [_as_feedable(s, a[start:stop]) for s, a in zip(specs, checked)]
            for s, a in zip(specs, batch):
                check_finite(s.name, a, start, source)
            yield batch

    return Feed(records, total, batch_size, batches)


def check_finite(name: str, a: np.ndarray, start: int, source: str) -> None:
    """Refuse NaN or Inf in a float input (``a``: a batch whose first sample is
    ``start``), naming the samples: every layer after it would report NaN, blaming
    layers for what the data holds."""
    if a.dtype.kind != "f" or a.size == 0 or bool(np.isfinite(a).all()):
        return
    bad = ~np.isfinite(a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1))
    rows = np.flatnonzero(bad.any(axis=1)) + start
    what = "NaN" if np.isnan(a).any() else "Inf"
    if what == "NaN" and np.isinf(a).any():
        what = "NaN and Inf"
    shown = ", ".join(str(int(r)) for r in rows[:10])
    if len(rows) > 10:
        shown += f", ... ({len(rows)} of samples {start} to {start + len(bad) - 1})"
    noun = "sample" if len(rows) == 1 else "samples"
    where = msg(" Received: {input}={source!r}", source=source) if source != "array" else ""
    raise DataError(
        f"Input {name!r} holds {what} in {noun} {shown}; every layer after it would report it." + where,
        rule="input-nan",
        hint="drop or impute those samples",
    )


def _as_feedable(spec: InputSpec, a: np.ndarray) -> np.ndarray:
    if spec.kind == "string":
        return np.asarray(a).astype(object)
    return np.ascontiguousarray(a)


def validate_array(spec: InputSpec, a: Any, source: str) -> np.ndarray:
    """Check one user array against its input's rank, fixed axes, dtype and range."""
    a = np.asarray(a) if not isinstance(a, np.ndarray) else a
    where = msg("Received: {input}={source!r}", source=source)
    mismatch = shape_error(spec.name, spec.shape, tuple(a.shape), source)  # as the parent's early check
    if mismatch is not None:
        raise mismatch
    kind = a.dtype.kind
    if spec.kind == "string":
        if kind not in "USO":
            raise InferenceError(
                f"Input {spec.name!r} expects strings, got {a.dtype}. " + where, rule="input-dtype"
            )
        return a
    if kind in "cOVMm":
        raise InferenceError(
            f"Input {spec.name!r} expects {spec.dtype}, got {a.dtype}: it has no exact {spec.dtype} "
            "form (casting would drop the imaginary part or need pickle). " + where,
            rule="input-dtype",
            hint="convert it to a real dtype first, e.g. np.real(a).astype('float32')",
        )
    if kind in "US":
        raise InferenceError(
            f"Input {spec.name!r} expects {spec.dtype}, got {a.dtype}. " + where, rule="input-dtype"
        )
    if spec.kind == "int":
        if kind == "f":
            raise InferenceError(
                f"Input {spec.name!r} expects integers ({spec.dtype}), got {a.dtype}; "
                "floats would be silently truncated. " + where,
                rule="input-dtype",
            )
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 and spec.int_high is not None:
                raise InferenceError(
                    f"Input {spec.name!r} holds negative index {lo}; it feeds a layer that "
                    f"expects [0, {spec.int_high}). " + where,
                    rule="input-range",
                )
            if spec.int_high is not None and hi >= spec.int_high:
                raise InferenceError(
                    f"Input {spec.name!r} holds index {hi}, out of range [0, {spec.int_high}) "
                    "of the layer it feeds. " + where,
                    rule="input-range",
                )
    return a
