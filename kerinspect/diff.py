"""``kerinspect diff``: pairing two models' layer calls, comparison metrics, verdicts.

Pure data and arithmetic (stdlib only), shared by both sides of the process
boundary: the worker (:mod:`kerinspect.engine.diff`) reduces every pair of tensors
to mergeable :class:`Sums` and builds a :class:`DiffReport`; the parent reads it
back (:meth:`DiffReport.from_dict`), and the metrics and verdicts are computed
from the sums here, so they are the same whichever side asks.

Metrics of one pair of tensors ``a`` (model A, the reference) and ``b``, over every
value of every batch (positions where both are finite; a position where only one
side is NaN/Inf, or they are different infinities, counts as ``mismatched``):

* cosine similarity ``a·b / (‖a‖ ‖b‖)``; two all-zero tensors are equal (1), one
  all-zero tensor against a non-zero one is 0;
* normalised error ``‖a−b‖ / ‖a‖`` (0 when both are zero; infinite when only
  ``a`` is, or values are mismatched);
* SQNR in dB, ``10 log10(‖a‖² / ‖a−b‖²)`` (infinite when ``a == b``);
* max ``|a−b|``.
"""

from __future__ import annotations

import difflib
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import NotFoundError, UsageError
from .numfmt import fmt_cosine, fmt_count, fmt_error, fmt_float, fmt_shape, fmt_sqnr
from .provenance import InputRecord, Isolation, ModelInfo
from .records import Record, meta
from .report import TensorStats
from .tables import data_frame, html_table, repr_listing, repr_text

#: Version of the diff JSON layout; bumped on incompatible changes.
DIFF_SCHEMA_VERSION = 1

#: How a pair was found (see :func:`pair_sites`).
PAIRED_BY = ("path", "structure")

#: Field metadata of the sums: required, written exactly (an overflowed sum is JSON's
#: ``Infinity``, read back as such), the four products in the ``"sums"`` object.
_COUNT = meta(required=True)
_SUM = meta(required=True, exact=True, group="sums")


@dataclass(frozen=True)
class Sums(Record):
    """Mergeable sums of one pair of tensors over every batch seen.

    Attributes:
        count: positions compared (both values finite).
        mismatched: positions where the two sides disagree on NaN/Inf.
        aa, bb, ab: sums of ``a*a``, ``b*b``, ``a*b`` (float64).
        dd: sum of ``(a-b)**2``.
        max_abs: largest ``|a-b|``.
    """

    count: int = field(default=0, metadata=_COUNT)
    mismatched: int = field(default=0, metadata=_COUNT)
    aa: float = field(default=0.0, metadata=_SUM)
    bb: float = field(default=0.0, metadata=_SUM)
    ab: float = field(default=0.0, metadata=_SUM)
    dd: float = field(default=0.0, metadata=_SUM)
    max_abs: float = field(default=0.0, metadata=meta(required=True, exact=True, key="max_abs_diff"))

    #: the metrics first (computed from the sums, NaN/inf as null), then what they come from
    JSON_KEYS = ("cosine", "normalised_error", "sqnr_db", "max_abs_diff", "count", "mismatched", "sums")

    def merged(self, other: Sums) -> Sums:
        """The sums of both (batches are independent: plain addition)."""
        return Sums(
            self.count + other.count,
            self.mismatched + other.mismatched,
            self.aa + other.aa,
            self.bb + other.bb,
            self.ab + other.ab,
            self.dd + other.dd,
            max(self.max_abs, other.max_abs),
        )

    @property
    def cosine(self) -> float:
        """Cosine similarity (zero-norm guarded, see the module docstring)."""
        if self.mismatched:
            return math.nan
        if self.aa == 0 and self.bb == 0:
            return 1.0
        if self.aa == 0 or self.bb == 0:
            return 0.0
        return max(-1.0, min(1.0, self.ab / math.sqrt(self.aa * self.bb)))

    @property
    def normalised_error(self) -> float:
        """``‖a−b‖ / ‖a‖``: 0 for equal tensors, infinite when ``a`` is zero and ``b`` not."""
        if self.mismatched:
            return math.inf
        if self.dd == 0:
            return 0.0
        if self.aa == 0:
            return math.inf
        return math.sqrt(self.dd / self.aa)

    @property
    def sqnr_db(self) -> float:
        """Signal-to-quantization-noise ratio in dB (infinite for equal tensors)."""
        if self.mismatched:
            return -math.inf
        if self.dd == 0:
            return math.inf
        if self.aa == 0:
            return -math.inf
        return 10.0 * math.log10(self.aa / self.dd)


#: Field metadata: a result without the key reads as None.
_OR_NONE = meta(missing=None)


@dataclass(frozen=True)
class Disagreement(Record):
    """Samples whose top-1 class is ``class_a`` in model A and ``class_b`` in B."""

    class_a: int
    class_b: int
    count: int
    name_a: str | None = field(default=None, metadata=meta(omit_none=True))
    name_b: str | None = field(default=None, metadata=meta(omit_none=True))


@dataclass(frozen=True)
class Top1Agreement(Record):
    """How often two classifier outputs (see :mod:`kerinspect.engine.predictions`)
    rank the same class first: ``agree`` of ``samples``, and the most frequent
    disagreements (most first, at most :data:`MAX_DISAGREEMENTS`)."""

    agree: int
    samples: int
    classes: int
    disagreements: tuple[Disagreement, ...] = ()

    JSON_KEYS = ("fraction", "agree", "samples", "classes", "disagreements")

    @property
    def fraction(self) -> float | None:
        """``agree / samples`` (None without samples)."""
        return self.agree / self.samples if self.samples else None


#: Most disagreements a :class:`Top1Agreement` lists.
MAX_DISAGREEMENTS = 5


@dataclass(frozen=True)
class OutputDiff(Record):
    """One output of one pair of layer calls.

    ``error`` compares A's output with B's as each model computed it (the error B
    *inherited* from the layers before plus its own); ``local``, with ``--local``,
    compares A's output with B's layer run on A's inputs of that call (the layer's
    *own* error). ``note`` says why a figure is missing. ``top1_agreement``: for a
    model output that is a classifier's in A, how often B ranks the same class first.
    """

    name: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    stats_a: TensorStats | None = field(metadata=_OR_NONE)
    stats_b: TensorStats | None = field(metadata=_OR_NONE)
    error: Sums | None = field(metadata=_OR_NONE)
    local: Sums | None = None
    note: str | None = None
    model_output: bool = False
    top1_agreement: Top1Agreement | None = field(default=None, metadata=meta(omit_none=True))


@dataclass(frozen=True)
class PairDiff(Record):
    """Two layer calls paired (``paired_by``: ``path`` or ``structure``), in A's graph order.

    ``policy_a``/``policy_b`` are the layers' dtype policies (``float32``,
    ``mixed_float16``, ``int8_from_float32`` for a ``model.quantize("int8")`` layer).
    """

    path_a: str
    path_b: str
    class_a: str
    class_b: str
    paired_by: str = field(metadata=meta(choices=PAIRED_BY))
    outputs: tuple[OutputDiff, ...]
    container: bool = False
    policy_a: str | None = None
    policy_b: str | None = None

    JSON_KEYS = ("path_a", "path_b", "class_a", "class_b", "paired_by", "container", "policy_a", "policy_b",
                 "error", "local_error", "outputs")  # fmt: skip

    def _worst(self, local: bool) -> float | None:
        errors = [
            (o.local if local else o.error).normalised_error  # type: ignore[union-attr]
            for o in self.outputs
            if (o.local if local else o.error) is not None
        ]
        return max(errors) if errors else None

    @property
    def error(self) -> float | None:
        """The largest normalised error over the outputs (None: nothing compared)."""
        return self._worst(False)

    @property
    def local_error(self) -> float | None:
        """The largest normalised error of the layer run on A's inputs (``--local``)."""
        return self._worst(True)


@dataclass(frozen=True)
class Unpaired(Record):
    """A layer call of one model with no counterpart in the other."""

    path: str
    class_name: str


def _kind(local: bool) -> str:
    return "local" if local else "inherited"


def _is_local(kind: Any) -> bool:
    if kind not in ("local", "inherited"):
        raise ValueError(f"Divergence.kind {kind!r}")
    return bool(kind == "local")


@dataclass(frozen=True)
class Divergence(Record):
    """Where the error first exceeds the tolerance, in graph order."""

    path_a: str
    path_b: str
    class_name: str
    output: str
    error: float = field(metadata=meta(key="normalised_error"))
    #: the figure is the layer's own error (``--local``), not the inherited one
    local: bool = field(metadata=meta(key="kind", codec=(_kind, _is_local)))

    def sentence(self, tolerance: float) -> str:
        """``divergence starts at 'fc2' (normalised error 0.12 > tolerance 0.01)`` (unescaped)."""
        where = self.path_a if self.path_a == self.path_b else f"{self.path_a}' (B: '{self.path_b}"
        out = "" if self.output == "output" else f" output '{self.output}'"
        kind = "local divergence" if self.local else "divergence"
        return f"{kind} starts at '{where}'{out} (normalised error {fmt_error(self.error)} > tolerance {tolerance:g})"


@dataclass(frozen=True)
class DiffReport(Record):
    """The result of ``kerinspect diff A B``: every pair of layer calls, in A's graph
    order (the order outputs were produced), and the verdict against ``tolerance``."""

    model_a: ModelInfo
    model_b: ModelInfo
    inputs: tuple[InputRecord, ...]
    samples: int
    batch_size: int
    tolerance: float = field(metadata=meta(exact=True))
    local: bool
    pairs: tuple[PairDiff, ...]
    unpaired_a: tuple[Unpaired, ...] = ()
    unpaired_b: tuple[Unpaired, ...] = ()
    warnings: tuple[str, ...] = ()
    kerinspect_version: str = ""
    isolation: Isolation | None = None

    schema_version = DIFF_SCHEMA_VERSION
    JSON_KEYS = ("schema_version", "kerinspect_version", "model_a", "model_b", "inputs", "samples", "batch_size",
                 "tolerance", "local", "agree", "exit_code", "failures", "divergence", "local_divergence",
                 "pairing", "pairs", "unpaired_a", "unpaired_b", "warnings", "isolation")  # fmt: skip

    # -- verdicts ------------------------------------------------------------------

    def _first(self, local: bool) -> Divergence | None:
        for pair in self.pairs:
            if pair.container:
                continue  # its inner layers come first in graph order
            for o in pair.outputs:
                sums = o.local if local else o.error
                if sums is not None and sums.normalised_error > self.tolerance:
                    cls = pair.class_a if pair.class_a == pair.class_b else f"{pair.class_a}/{pair.class_b}"
                    return Divergence(pair.path_a, pair.path_b, cls, o.name, sums.normalised_error, local)
        return None

    @property
    def divergence(self) -> Divergence | None:
        """The first layer call, in graph order, whose (inherited) normalised error
        exceeds the tolerance; None when every one is within it."""
        return self._first(False)

    @property
    def local_divergence(self) -> Divergence | None:
        """With ``local``: the first layer whose *own* error (run on A's inputs)
        exceeds the tolerance."""
        return self._first(True) if self.local else None

    def model_outputs(self) -> list[tuple[PairDiff, OutputDiff]]:
        return [(p, o) for p in self.pairs for o in p.outputs if o.model_output]

    @property
    def failures(self) -> list[str]:
        """Why the models' outputs do not agree (empty: they agree), unescaped."""
        out = []
        for p, o in self.model_outputs():
            name = p.path_a + ("" if o.name == "output" else f":{o.name}")
            if o.error is None:
                out.append(f"model output '{name}' was not compared: {o.note or 'no figures'}")
            elif not o.error.normalised_error <= self.tolerance:
                out.append(
                    f"model output '{name}': normalised error {fmt_error(o.error.normalised_error)} "
                    f"> tolerance {self.tolerance:g}"
                )
        if not self.model_outputs():
            out.append("no output of model A was paired with an output of model B")
        return out

    @property
    def agree(self) -> bool:
        """Every output of model A is paired and within the tolerance."""
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0 when the outputs agree within the tolerance, 1 when not."""
        return 0 if self.agree else 1

    def pairing_summary(self) -> str:
        """``12 pairs (10 by path, 2 by structure); unpaired: 1 in A, 0 in B``."""
        by = {k: sum(1 for p in self.pairs if p.paired_by == k) for k in PAIRED_BY}
        n = len(self.pairs)
        parts = ", ".join(f"{by[k]} by {k}" for k in PAIRED_BY if by[k])
        text = f"{n} pair{'s' * (n != 1)}" + (f" ({parts})" if parts else "")
        if self.unpaired_a or self.unpaired_b:
            text += f"; unpaired: {len(self.unpaired_a)} in A, {len(self.unpaired_b)} in B"
        return text

    @property
    def pairing(self) -> str:
        """:meth:`pairing_summary` (the JSON's ``pairing``)."""
        return self.pairing_summary()

    # -- in a notebook ---------------------------------------------------------------

    def __repr__(self) -> str:
        """A few lines: the models, the pairing, the first divergence, the verdict and
        the pairs above the tolerance (not every field)."""
        lines = [
            f"<DiffReport {_side(self.model_a, 'A')} vs {_side(self.model_b, 'B')}",
            f"  {fmt_count(self.samples)} samples · {repr_text(self.pairing, 200)} · "
            f"tolerance {self.tolerance:g}" + (" · local errors" if self.local else ""),
        ]
        for div in (self.divergence, self.local_divergence):
            if div is not None:
                lines.append(f"  {repr_text(div.sentence(self.tolerance), 400)}")
        verdict = f"  verdict: {self._verdict()} (exit {self.exit_code})"
        lines.append(verdict + "".join(f"; {repr_text(f, 300)}" for f in self.failures[:3]))
        above = []
        for p in self.diverged():
            local = f" (local {fmt_error(p.local_error)})" if self.local else ""
            b = "" if p.path_b == p.path_a else f"  B: {repr_text(p.path_b, 60)}"
            above.append((p.path_a, f"{fmt_error(p.error)}{local}{b}"))
        lines += repr_listing(f"  diverged ({len(above)} pairs above tolerance):", above, "result.diverged()")
        return "\n".join(lines) + ">"

    def _verdict(self) -> str:
        return "outputs agree" if self.agree else "outputs differ"

    def __getitem__(self, key: str) -> PairDiff | OutputDiff:
        """The pair whose path in model A (or else in B) is ``key`` (``result["fc2"]``),
        or one of its outputs as ``"path:output"`` (``"block/att:attention_scores"``).

        Raises:
            KeyError: no such pair (a :class:`~kerinspect.errors.NotFoundError`); the
                message lists the closest paths.
        """
        if not isinstance(key, str):
            raise TypeError(f"diff result keys are layer paths (str), got {type(key).__name__}")
        for attr in ("path_a", "path_b"):
            for pair in self.pairs:
                if getattr(pair, attr) == key:
                    return pair
        if ":" in key:
            path, name = key.rsplit(":", 1)
            for pair in self.pairs:
                if path in (pair.path_a, pair.path_b):
                    for out in pair.outputs:
                        if out.name == name:
                            return out
        known = [p.path_a for p in self.pairs]
        known += [p.path_b for p in self.pairs if p.path_b != p.path_a]
        known += [pair_key(p, o) for p in self.pairs if len(p.outputs) > 1 for o in p.outputs]
        where = f"the pairs of {repr_text(self.model_a.name)!r} and {repr_text(self.model_b.name)!r}"
        error = NotFoundError.of("pair", key, known, where)
        for side, unpaired in (("A", self.unpaired_a), ("B", self.unpaired_b)):
            if any(u.path == key for u in unpaired):
                error.hint = f"{repr_text(key)!r} is a layer call of model {side} with no counterpart (unpaired_{side.lower()})"
        raise error

    def __contains__(self, key: object) -> bool:
        """``key in result``: ``result[key]`` would succeed."""
        if not isinstance(key, str):
            return False
        try:
            self[key]
        except KeyError:
            return False
        return True

    def diverged(self, *, local: bool = False) -> tuple[PairDiff, ...]:
        """The pairs whose largest normalised error exceeds the tolerance, in A's graph
        order (containers included): the first divergence and, usually, every layer after it.

        Args:
            local: compare the layers' own errors instead (a ``local=True`` diff).

        Raises:
            UsageError: ``local`` on a diff that did not compute local errors.
        """
        if local and not self.local:
            raise UsageError(
                "diverged(local=True) needs the layers' own errors, which this diff did not compute. "
                "Received: local=False in the diff; run diff_models(..., local=True)"
            )
        errors = ((pair, pair.local_error if local else pair.error) for pair in self.pairs)
        return tuple(pair for pair, e in errors if e is not None and e > self.tolerance)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per paired output, indexed by its key (A's
        path, or ``path:output`` for a multi-output call): both paths and classes, how
        they were paired, shapes and dtypes, ``cosine``, ``normalised_error``,
        ``sqnr_db``, ``max_abs_diff`` (with ``local``, again as ``local_cosine``...),
        both sides' mean and std, ``diverged`` and ``note``.

        Raises:
            ImportError: pandas is not installed (it is optional).
        """
        return data_frame(_rows(self), index="key")

    def _repr_html_(self) -> str:
        """The verdict as caption, then one row per paired output."""
        a, b = self.model_a, self.model_b
        caption = (
            f"Model A {a.name!r} vs B {b.name!r} · {self.samples:,} samples · {self.pairing}"
            f" · tolerance {self.tolerance:g} · {self._verdict()} (exit {self.exit_code})"
        )
        if self.divergence is not None:
            caption += f" · {self.divergence.sentence(self.tolerance)}"
        columns, rows, indents = _cells(self)
        numeric = ("Cosine", "Norm. error", "SQNR dB", "Max |a-b|", "Local error")
        return html_table(columns, rows, numeric=numeric, indents=indents, caption=caption)


def fmt_metrics(sums: Sums | None) -> list[str]:
    """Cosine, normalised error, SQNR (dB) and max ``|a-b|`` of a pair of tensors, as
    every view shows them (:mod:`kerinspect.numfmt`); ``-`` for each without sums."""
    if sums is None:
        return ["-"] * 4
    return [
        fmt_cosine(sums.cosine),
        fmt_error(sums.normalised_error),
        fmt_sqnr(sums.sqnr_db),
        fmt_float(sums.max_abs),
    ]


def pair_key(pair: PairDiff, out: OutputDiff) -> str:
    """The key of one paired output: A's path for a single-output call, ``path:output`` otherwise."""
    return pair.path_a if len(pair.outputs) == 1 else f"{pair.path_a}:{out.name}"


def _side(info: ModelInfo, label: str) -> str:
    where = f" from {repr_text(info.path, 200)}" if info.path else ""
    return f"{label} {repr_text(info.name)!r} ({repr_text(info.class_name)}){where}"


#: The metric columns of ``to_pandas``; with ``local``, each again prefixed ``local_``.
DIFF_METRICS = ("cosine", "normalised_error", "sqnr_db", "max_abs_diff")


def _metrics(sums: Sums | None, prefix: str) -> dict[str, Any]:
    if sums is None:
        return {prefix + m: None for m in DIFF_METRICS}
    values = (sums.cosine, sums.normalised_error, sums.sqnr_db, sums.max_abs)
    return {prefix + m: v for m, v in zip(DIFF_METRICS, values)}


def _rows(report: DiffReport) -> list[dict[str, Any]]:
    """One plain dict per paired output, in A's graph order (what ``to_pandas`` holds):
    both paths and classes, how they were paired, both shapes and dtypes, the metrics of
    the inherited error, with ``local`` those of the layer's own error (``local_...``),
    both sides' mean and std, ``diverged`` (normalised error above the tolerance) and ``note``."""
    rows = []
    for p in report.pairs:
        for o in p.outputs:
            row: dict[str, Any] = {
                "key": pair_key(p, o),
                "path_a": p.path_a,
                "path_b": p.path_b,
                "output": o.name,
                "class_a": p.class_a,
                "class_b": p.class_b,
                "paired_by": p.paired_by,
                "container": p.container,
                "policy_a": p.policy_a,
                "policy_b": p.policy_b,
                "shape_a": tuple(o.shape_a),
                "shape_b": tuple(o.shape_b),
                "dtype_a": o.dtype_a,
                "dtype_b": o.dtype_b,
                "model_output": o.model_output,
                **_metrics(o.error, ""),
                "count": None if o.error is None else o.error.count,
                "mismatched": None if o.error is None else o.error.mismatched,
            }
            if report.local:
                row.update(_metrics(o.local, "local_"))
            for side, st in (("a", o.stats_a), ("b", o.stats_b)):
                row[f"mean_{side}"] = None if st is None else st.mean
                row[f"std_{side}"] = None if st is None else st.std
            row["diverged"] = o.error is not None and o.error.normalised_error > report.tolerance
            row["note"] = o.note
            rows.append(row)
    return rows


_COLUMNS = ("Layer", "B", "Class", "Paired by", "Output shape", "Cosine", "Norm. error", "SQNR dB",
            "Max |a-b|")  # fmt: skip


def _cells(report: DiffReport) -> tuple[list[str], list[list[str]], list[int]]:
    """``_repr_html_``: its columns, one row of cells per paired output, each row's depth."""
    columns = [*_COLUMNS, "Local error", "Note"] if report.local else [*_COLUMNS, "Note"]
    rows: list[list[str]] = []
    indents: list[int] = []
    for p in report.pairs:
        cls = p.class_a if p.class_a == p.class_b else f"{p.class_a}/{p.class_b}"
        for k, o in enumerate(p.outputs):
            same = o.shape_a == o.shape_b
            shape = fmt_shape(o.shape_a) if same else f"{fmt_shape(o.shape_a)} / {fmt_shape(o.shape_b)}"
            e = o.error
            figures = fmt_metrics(e)
            if report.local:
                figures.append("-" if o.local is None else fmt_error(o.local.normalised_error))
            note = ["diverged"] if e is not None and e.normalised_error > report.tolerance else []
            note += [o.note] if o.note else []
            first = [cls, p.paired_by] if k == 0 else ["", ""]
            rows.append(
                [
                    pair_key(p, o),
                    "" if p.path_b == p.path_a else p.path_b,
                    *first,
                    shape,
                    *figures,
                    "; ".join(note),
                ]
            )
            indents.append(p.path_a.count("/"))
    return columns, rows, indents


# -- pairing -----------------------------------------------------------------------


@dataclass(frozen=True)
class SiteKey:
    """What pairing looks at: a call's path and its structure."""

    path: str
    class_name: str
    n_outputs: int = 1
    container: bool = False

    @property
    def shape(self) -> tuple[str, int, bool]:
        return (self.class_name, self.n_outputs, self.container)


@dataclass(frozen=True)
class Pairing:
    """``pairs``: ``(index in A, index in B, paired_by)`` in A's order; the rest unpaired."""

    pairs: tuple[tuple[int, int, str], ...]
    unpaired_a: tuple[int, ...]
    unpaired_b: tuple[int, ...] = field(default=())


def _increasing(seq: Sequence[int]) -> set[int]:
    """Positions of one longest strictly increasing subsequence of ``seq``."""
    tails: list[int] = []
    tail_at: list[int] = []
    prev = [-1] * len(seq)
    for i, v in enumerate(seq):
        k = bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_at.append(i)
        else:
            tails[k] = v
            tail_at[k] = i
        prev[i] = tail_at[k - 1] if k else -1
    keep: set[int] = set()
    i = tail_at[-1] if tail_at else -1
    while i >= 0:
        keep.add(i)
        i = prev[i]
    return keep


def pair_sites(a: Sequence[SiteKey], b: Sequence[SiteKey]) -> Pairing:
    """Pair the calls of two models, both given in graph order.

    First by path: calls whose paths are equal, as long as the order agrees (a
    longest order-preserving set of them: a name that moved elsewhere in the graph
    is not trusted). Then, between each two consecutive path pairs, by structure:
    the longest matching runs of (class, number of outputs, container) in the two
    sequences (:class:`difflib.SequenceMatcher`), which pairs a re-built or
    converted copy whose layers were renamed.
    """
    where_b: dict[str, int] = {}
    for j, s in enumerate(b):
        where_b.setdefault(s.path, j)
    candidates = [(i, where_b[s.path]) for i, s in enumerate(a) if s.path in where_b]
    keep = _increasing([j for _, j in candidates])
    anchors = [c for k, c in enumerate(candidates) if k in keep]
    pairs: list[tuple[int, int, str]] = []
    lo_a = lo_b = 0
    for ia, ib in [*anchors, (len(a), len(b))]:
        seg_a, seg_b = list(range(lo_a, ia)), list(range(lo_b, ib))
        if seg_a and seg_b:
            m = difflib.SequenceMatcher(
                None, [a[i].shape for i in seg_a], [b[j].shape for j in seg_b], autojunk=False
            )
            for block in m.get_matching_blocks():
                for k in range(block.size):
                    pairs.append((seg_a[block.a + k], seg_b[block.b + k], "structure"))
        if ia < len(a):
            pairs.append((ia, ib, "path"))
        lo_a, lo_b = ia + 1, ib + 1
    pairs.sort()
    got_a = {p[0] for p in pairs}
    got_b = {p[1] for p in pairs}
    return Pairing(
        tuple(pairs),
        tuple(i for i in range(len(a)) if i not in got_a),
        tuple(j for j in range(len(b)) if j not in got_b),
    )
