"""Streaming, mergeable statistics of one tensor (numpy only).

A :class:`RunningStats` summarises any number of batches of one tensor in O(units)
memory: element count, finite count, mean and M2 (Welford/Chan, in float64), min
and max over finite values, zero/NaN/Inf counts, and per-unit activity (was unit
``j`` of the last axis ever non-zero). Batches are summarised with
:func:`summarize` and combined with :meth:`RunningStats.merge`; the merge is
associative, so the result does not depend on how samples were batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from kerinspect.report import TensorStats


def numeric_kind(dtype: np.dtype) -> str | None:
    """``"float"``, ``"int"``, ``"bool"`` or None (not summarisable: strings, objects).

    ml_dtypes' bfloat16/float8 types have numpy kind ``V``; they are floats here.
    """
    kind = dtype.kind
    if kind == "f":
        return "float"
    if kind in "iu":
        return "int"
    if kind == "b":
        return "bool"
    if kind == "V" and dtype.names is None:
        try:
            import ml_dtypes

            ml_dtypes.finfo(dtype)
        except (ImportError, TypeError, ValueError):
            return None
        return "float"
    return None


@dataclass
class RunningStats:
    """Mergeable summary of every value seen of one tensor."""

    count: int = 0
    finite: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    zeros: int = 0
    nan: int = 0
    inf: int = 0
    active: np.ndarray | None = None  # bool per unit of the last axis

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold ``other`` into ``self`` (Chan et al.'s parallel update) and return self."""
        n = self.finite + other.finite
        if n:
            delta = other.mean - self.mean
            self.m2 = self.m2 + other.m2 + delta * delta * self.finite * other.finite / n
            self.mean = self.mean + delta * other.finite / n
        self.finite = n
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.zeros += other.zeros
        self.nan += other.nan
        self.inf += other.inf
        if other.active is not None:
            if self.active is None:
                self.active = other.active.copy()
            elif self.active.shape == other.active.shape:
                self.active |= other.active
            else:  # the unit axis changed size between batches: no unit identity
                self.active = np.zeros(0, dtype=bool)
        return self

    def l2_norm(self) -> float | None:
        """L2 norm of the finite values, from the merged moments; None if there are none."""
        if not self.finite:
            return None
        return math.sqrt(max(self.m2, 0.0) + self.finite * self.mean * self.mean)

    def finalize(self) -> TensorStats:
        """The user-facing statistics (undefined values as None)."""
        defined = self.finite > 0
        dead = None
        if self.active is not None and self.active.size:
            dead = 1.0 - float(np.count_nonzero(self.active)) / self.active.size
        return TensorStats(
            count=self.count,
            mean=self.mean if defined else None,
            std=math.sqrt(max(self.m2, 0.0) / self.finite) if defined else None,
            min=self.min if defined else None,
            max=self.max if defined else None,
            abs_max=max(abs(self.min), abs(self.max)) if defined else None,
            zero_fraction=self.zeros / self.count if self.count else None,
            nan_count=self.nan,
            inf_count=self.inf,
            dead_fraction=dead,
        )


#: Elements per block of :func:`summarize`'s single pass: the block's float64 scratch
#: (1 MiB) stays in cache, whatever the size of the tensor.
BLOCK = 1 << 17
#: A block's M2 is taken as sum(x*x) - sum(x)*mean (one pass over the block) when it
#: keeps at least this fraction of sum(x*x): its relative error is then at most about
#: 1e-16 / _CANCELLATION. Otherwise (mean large against the spread) it is recomputed
#: from the deviations, as two passes.
_CANCELLATION = 1e-3


# A block's sum of squares is ``np.einsum("i,i->", x, x)``, never ``np.dot``: BLAS's
# dot product adds in an order that depends on the kernel OpenBLAS picks at run time
# (``OPENBLAS_CORETYPE``, the CPU) and on its thread count, so the same tensor gave a
# different last bit in another process (the worker's scrubbed environment). numpy's
# own loop adds in one fixed order (about 25% slower than a one-thread BLAS dot).


def summarize(
    array: np.ndarray,
    *,
    parts: int = 1,
    map_fn: Callable[[Callable[[tuple[int, int]], _Part], list[tuple[int, int]]], Iterable[_Part]] = map,
) -> RunningStats | None:
    """Summarise one batch. Returns None for non-numeric arrays (strings, objects).

    Computation is in float64 whatever the input dtype (float16 sums would
    overflow). Axis 0 is the batch axis; units are the last axis for rank >= 2.

    One pass over the data, block by block (:data:`BLOCK` elements): each block is
    converted to float64 in a small scratch buffer that stays in cache, and every
    statistic is taken from it there (mean and M2 of the block, blocks merged as
    batches are). No copy of the whole tensor is ever made, so a large
    activation costs one read of its memory and no extra memory.

    ``parts > 1`` scans that many runs of consecutive blocks through ``map_fn``
    (an executor's ``map``, to use threads: numpy releases the GIL). The blocks'
    moments are folded here, in block order, whatever the parts: the result is
    bit for bit the same for every ``parts`` and every number of threads.
    """
    a = np.asarray(array)
    kind = numeric_kind(a.dtype)
    if kind is None:
        return None
    count = a.size
    s = RunningStats(count=count)
    units = a.shape[-1] if a.ndim >= 2 else 0
    if units > 0:
        s.active = np.zeros(units, dtype=bool)
    if count == 0:
        return s
    grid = a.reshape(-1, units) if units > 0 else a.reshape(1, -1)
    n_rows, n_cols = grid.shape
    rows = max(1, BLOCK // n_cols)
    row_blocks = -(-n_rows // rows)
    parts = max(1, min(parts, row_blocks))
    cuts = [row_blocks * i // parts * rows for i in range(parts)] + [n_rows]
    spans = [(cuts[i], cuts[i + 1]) for i in range(parts)]
    results = map_fn(lambda span: _scan(grid, span, rows, kind, units), spans)
    for part in results:
        s.zeros += part.zeros
        s.nan += part.nan
        s.inf += part.inf
        s.min = min(s.min, part.min)
        s.max = max(s.max, part.max)
        if s.active is not None and part.active is not None:
            np.logical_or(s.active, part.active, out=s.active)
        for k, block_mean, m2 in part.moments:
            _merge_moments(s, k, block_mean, m2)
    return s


@dataclass
class _Part:
    """What :func:`_scan` found in a run of blocks: counts, extremes, and each
    block's ``(finite values, mean, M2)`` in block order (folded by the caller)."""

    zeros: int = 0
    nan: int = 0
    inf: int = 0
    min: float = math.inf
    max: float = -math.inf
    active: np.ndarray | None = None
    moments: list[tuple[int, float, float]] = field(default_factory=list)


def _scan(grid: np.ndarray, span: tuple[int, int], rows: int, kind: str, units: int) -> _Part:
    """One pass over the blocks of ``grid[span[0]:span[1]]`` (see :func:`summarize`)."""
    r_begin, r_end = span
    n_cols = grid.shape[1]
    cols = min(n_cols, BLOCK)
    part = _Part(active=np.zeros(units, dtype=bool) if units > 0 else None)
    size = min(rows, r_end - r_begin) * cols
    scratch = np.empty(size, dtype=np.float64)
    nonzero = np.empty(size, dtype=bool)
    native = grid.dtype in (np.float32, np.float64)  # min/max straight from the input: exact, faster
    for r0 in range(r_begin, r_end, rows):
        for c0 in range(0, n_cols, cols):
            block = grid[r0 : min(r0 + rows, r_end), c0 : c0 + cols]
            m = block.size
            nz = np.not_equal(block, 0, out=nonzero[:m].reshape(block.shape))  # NaN is non-zero
            part.zeros += m - int(np.count_nonzero(nz))
            if part.active is not None:
                act = part.active[c0 : c0 + block.shape[1]]
                np.logical_or(act, np.logical_or.reduce(nz, axis=0), out=act)
            x = scratch[:m]
            np.copyto(x.reshape(block.shape), block, casting="unsafe")
            lo, hi = (block.min(), block.max()) if native else (x.min(), x.max())
            if kind == "float" and not (math.isfinite(lo) and math.isfinite(hi)):
                finite_mask = np.isfinite(x)
                n_finite = int(np.count_nonzero(finite_mask))
                n_nan = int(np.count_nonzero(np.isnan(x)))
                part.nan += n_nan
                part.inf += m - n_finite - n_nan
                x = x[finite_mask]  # a copy: the scratch buffer is ours, the input is not touched
                if not x.size:
                    continue
                lo, hi = x.min(), x.max()
            part.min = min(part.min, float(lo))
            part.max = max(part.max, float(hi))
            k = x.size
            total = float(x.sum())
            block_mean = total / k
            squares = float(np.einsum("i,i->", x, x))
            m2 = squares - total * block_mean  # one pass; exact enough unless it cancels
            if not m2 >= squares * _CANCELLATION:  # mean large against the spread: two passes
                np.subtract(x, block_mean, out=x)
                m2 = float(np.einsum("i,i->", x, x))
            part.moments.append((k, block_mean, m2))
    return part


def _merge_moments(s: RunningStats, n: int, mean: float, m2: float) -> None:
    """Fold the moments of ``n`` more finite values into ``s`` (as :meth:`RunningStats.merge`)."""
    total = s.finite + n
    delta = mean - s.mean
    s.m2 = s.m2 + m2 + delta * delta * s.finite * n / total
    s.mean = s.mean + delta * n / total
    s.finite = total
