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

from .numfmt import fmt_error
from .report import InputRecord, Isolation, ModelInfo, TensorStats, _num

#: Version of the diff JSON layout; bumped on incompatible changes.
DIFF_SCHEMA_VERSION = 1

#: How a pair was found (see :func:`pair_sites`).
PAIRED_BY = ("path", "structure")


def _inf(x: Any, default: float) -> float:
    """JSON null back to the infinity it stands for."""
    return default if x is None else float(x)


@dataclass(frozen=True)
class Sums:
    """Mergeable sums of one pair of tensors over every batch seen.

    Attributes:
        count: positions compared (both values finite).
        mismatched: positions where the two sides disagree on NaN/Inf.
        aa, bb, ab: sums of ``a*a``, ``b*b``, ``a*b`` (float64).
        dd: sum of ``(a-b)**2``.
        max_abs: largest ``|a-b|``.
    """

    count: int = 0
    mismatched: int = 0
    aa: float = 0.0
    bb: float = 0.0
    ab: float = 0.0
    dd: float = 0.0
    max_abs: float = 0.0

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "cosine": _num(self.cosine),
            "normalised_error": _num(self.normalised_error),
            "sqnr_db": _num(self.sqnr_db),
            "max_abs_diff": self.max_abs,
            "count": self.count,
            "mismatched": self.mismatched,
            "sums": {"aa": self.aa, "bb": self.bb, "ab": self.ab, "dd": self.dd},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sums:
        s = d["sums"]
        return cls(
            int(d["count"]),
            int(d["mismatched"]),
            float(s["aa"]),
            float(s["bb"]),
            float(s["ab"]),
            float(s["dd"]),
            float(d["max_abs_diff"]),
        )


@dataclass(frozen=True)
class OutputDiff:
    """One output of one pair of layer calls.

    ``error`` compares A's output with B's as each model computed it (the error B
    *inherited* from the layers before plus its own); ``local``, with ``--local``,
    compares A's output with B's layer run on A's inputs of that call (the layer's
    *own* error). ``note`` says why a figure is missing.
    """

    name: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    stats_a: TensorStats | None
    stats_b: TensorStats | None
    error: Sums | None
    local: Sums | None = None
    note: str | None = None
    model_output: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape_a": list(self.shape_a),
            "shape_b": list(self.shape_b),
            "dtype_a": self.dtype_a,
            "dtype_b": self.dtype_b,
            "stats_a": None if self.stats_a is None else self.stats_a.to_dict(),
            "stats_b": None if self.stats_b is None else self.stats_b.to_dict(),
            "error": None if self.error is None else self.error.to_dict(),
            "local": None if self.local is None else self.local.to_dict(),
            "note": self.note,
            "model_output": self.model_output,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OutputDiff:
        return cls(
            name=str(d["name"]),
            shape_a=tuple(int(x) for x in d["shape_a"]),
            shape_b=tuple(int(x) for x in d["shape_b"]),
            dtype_a=str(d["dtype_a"]),
            dtype_b=str(d["dtype_b"]),
            stats_a=None if d.get("stats_a") is None else TensorStats.from_dict(d["stats_a"]),
            stats_b=None if d.get("stats_b") is None else TensorStats.from_dict(d["stats_b"]),
            error=None if d.get("error") is None else Sums.from_dict(d["error"]),
            local=None if d.get("local") is None else Sums.from_dict(d["local"]),
            note=d.get("note"),
            model_output=bool(d.get("model_output", False)),
        )


@dataclass(frozen=True)
class PairDiff:
    """Two layer calls paired (``paired_by``: ``path`` or ``structure``), in A's graph order.

    ``policy_a``/``policy_b`` are the layers' dtype policies (``float32``,
    ``mixed_float16``, ``int8_from_float32`` for a ``model.quantize("int8")`` layer).
    """

    path_a: str
    path_b: str
    class_a: str
    class_b: str
    paired_by: str
    outputs: tuple[OutputDiff, ...]
    container: bool = False
    policy_a: str | None = None
    policy_b: str | None = None

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "path_a": self.path_a,
            "path_b": self.path_b,
            "class_a": self.class_a,
            "class_b": self.class_b,
            "paired_by": self.paired_by,
            "container": self.container,
            "policy_a": self.policy_a,
            "policy_b": self.policy_b,
            "error": _num(self.error),
            "local_error": _num(self.local_error),
            "outputs": [o.to_dict() for o in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairDiff:
        paired_by = str(d["paired_by"])
        if paired_by not in PAIRED_BY:
            raise ValueError(f"paired_by {paired_by!r}")
        return cls(
            path_a=str(d["path_a"]),
            path_b=str(d["path_b"]),
            class_a=str(d["class_a"]),
            class_b=str(d["class_b"]),
            paired_by=paired_by,
            outputs=tuple(OutputDiff.from_dict(o) for o in d["outputs"]),
            container=bool(d.get("container", False)),
            policy_a=d.get("policy_a"),
            policy_b=d.get("policy_b"),
        )


@dataclass(frozen=True)
class Unpaired:
    """A layer call of one model with no counterpart in the other."""

    path: str
    class_name: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "class_name": self.class_name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unpaired:
        return cls(str(d["path"]), str(d["class_name"]))


@dataclass(frozen=True)
class Divergence:
    """Where the error first exceeds the tolerance, in graph order."""

    path_a: str
    path_b: str
    class_name: str
    output: str
    error: float
    local: bool  # the figure is the layer's own error (``--local``), not the inherited one

    def to_dict(self) -> dict[str, Any]:
        return {
            "path_a": self.path_a,
            "path_b": self.path_b,
            "class_name": self.class_name,
            "output": self.output,
            "normalised_error": _num(self.error),
            "kind": "local" if self.local else "inherited",
        }

    def sentence(self, tolerance: float) -> str:
        """``divergence starts at 'fc2' (normalised error 0.12 > tolerance 0.01)`` (unescaped)."""
        where = self.path_a if self.path_a == self.path_b else f"{self.path_a}' (B: '{self.path_b}"
        out = "" if self.output == "output" else f" output '{self.output}'"
        kind = "local divergence" if self.local else "divergence"
        return f"{kind} starts at '{where}'{out} (normalised error {fmt_error(self.error)} > tolerance {tolerance:g})"


@dataclass(frozen=True)
class DiffReport:
    """The result of ``kerinspect diff A B``: every pair of layer calls, in A's graph
    order (the order outputs were produced), and the verdict against ``tolerance``."""

    model_a: ModelInfo
    model_b: ModelInfo
    inputs: tuple[InputRecord, ...]
    samples: int
    batch_size: int
    tolerance: float
    local: bool
    pairs: tuple[PairDiff, ...]
    unpaired_a: tuple[Unpaired, ...] = ()
    unpaired_b: tuple[Unpaired, ...] = ()
    warnings: tuple[str, ...] = ()
    kerinspect_version: str = ""
    isolation: Isolation | None = None

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

    # -- JSON ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        div, local_div = self.divergence, self.local_divergence
        return {
            "schema_version": DIFF_SCHEMA_VERSION,
            "kerinspect_version": self.kerinspect_version,
            "model_a": self.model_a.to_dict(),
            "model_b": self.model_b.to_dict(),
            "inputs": [i.to_dict() for i in self.inputs],
            "samples": self.samples,
            "batch_size": self.batch_size,
            "tolerance": self.tolerance,
            "local": self.local,
            "agree": self.agree,
            "exit_code": self.exit_code,
            "failures": self.failures,
            "divergence": None if div is None else div.to_dict(),
            "local_divergence": None if local_div is None else local_div.to_dict(),
            "pairing": self.pairing_summary(),
            "pairs": [p.to_dict() for p in self.pairs],
            "unpaired_a": [u.to_dict() for u in self.unpaired_a],
            "unpaired_b": [u.to_dict() for u in self.unpaired_b],
            "warnings": list(self.warnings),
            "isolation": None if self.isolation is None else self.isolation.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffReport:
        iso = d.get("isolation")
        return cls(
            model_a=ModelInfo.from_dict(d["model_a"]),
            model_b=ModelInfo.from_dict(d["model_b"]),
            inputs=tuple(InputRecord.from_dict(i) for i in d["inputs"]),
            samples=int(d["samples"]),
            batch_size=int(d["batch_size"]),
            tolerance=float(d["tolerance"]),
            local=bool(d["local"]),
            pairs=tuple(PairDiff.from_dict(p) for p in d["pairs"]),
            unpaired_a=tuple(Unpaired.from_dict(u) for u in d.get("unpaired_a", ())),
            unpaired_b=tuple(Unpaired.from_dict(u) for u in d.get("unpaired_b", ())),
            warnings=tuple(str(w) for w in d.get("warnings", ())),
            kerinspect_version=str(d.get("kerinspect_version", "")),
            isolation=None if iso is None else Isolation.from_dict(iso),
        )

    # -- in a notebook (kerinspect/notebook.py) --

    def __repr__(self) -> str:
        """A few lines: the models, the pairing, the first divergence, the verdict and
        the pairs above the tolerance (not every field)."""
        from .notebook import diff_repr

        return diff_repr(self)

    def __getitem__(self, key: str) -> PairDiff | OutputDiff:
        """The pair whose path in model A (or else in B) is ``key`` (``result["fc2"]``),
        or one of its outputs as ``"path:output"`` (``"block/att:attention_scores"``).

        Raises:
            KeyError: no such pair (a :class:`~kerinspect.notebook.NotFoundError`); the
                message lists the closest paths.
        """
        from .notebook import diff_lookup

        return diff_lookup(self, key)

    def __contains__(self, key: object) -> bool:
        from .notebook import diff_contains

        return diff_contains(self, key)

    def diverged(self, *, local: bool = False) -> tuple[PairDiff, ...]:
        """The pairs whose largest normalised error exceeds the tolerance, in A's graph
        order: the first divergence and, usually, every layer after it.

        Args:
            local: compare the layers' own errors instead (a ``local=True`` diff).

        Raises:
            UsageError: ``local`` on a diff that did not compute local errors.
        """
        from .notebook import diverged

        return diverged(self, local=local)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per paired output, indexed by its key (A's
        path, or ``path:output`` for a multi-output call): both paths and classes, how
        they were paired, shapes and dtypes, ``cosine``, ``normalised_error``,
        ``sqnr_db``, ``max_abs_diff`` (with ``local``, again as ``local_cosine``...),
        both sides' mean and std, ``diverged`` and ``note``.

        Raises:
            ImportError: pandas is not installed (it is optional).
        """
        from .notebook import diff_frame

        return diff_frame(self)

    def _repr_html_(self) -> str:
        from .notebook import diff_html

        return diff_html(self)


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
