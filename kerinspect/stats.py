"""Streaming, mergeable statistics of one tensor (numpy only).

A :class:`RunningStats` summarises any number of batches of one tensor in O(units)
memory: element count, finite count, mean and M2 (Welford/Chan, in float64), min
and max over finite values, zero/NaN/Inf counts, and per-unit activity (was unit
``j`` of the last axis ever non-zero). Batches are summarised with
:func:`summarize` and combined with :meth:`RunningStats.merge`; the merge is
associative, so the result does not depend on how samples were batched.

Two more statistics are kept when asked for (:func:`summarize`'s ``spread`` and
``bounds``):

* the **spread across samples**: per unit (last axis), the standard deviation over
  the samples (axis 0) of the sample's value of that unit (its mean over the other
  axes: time steps, pixels), averaged over the units; kept as per-unit sample
  count, mean and M2, merged exactly (Chan) across batches. Rank 1: the std of the
  samples. It is 0 for an output that is the same for every sample.
* the **share at the saturation bounds** of a bounded activation (:data:`BOUNDED`):
  the share of values within :data:`SATURATION_MARGIN` of the bounds (``tanh``:
  |y| >= 0.99; ``sigmoid``, ``hard_sigmoid``: y <= 0.01 or y >= 0.99); for
  ``softmax`` (over the last axis), the share of distributions whose largest
  probability is at least 0.99 (one-hot).

and ``histogram``: the **value histogram** over the fixed bins of :mod:`kerinspect.bins`
(signed log-magnitude, an exact-zero bin), counted block by block in the same pass;
integer counts, so merged batches and any ``parts`` give exactly the same bins.

and ``sketch`` (float tensors): the **quantile sketch** of :mod:`kerinspect.sketch`
(integer counts per log-linear bucket of the finite values, relative error under 1%),
from which :meth:`RunningStats.finalize` gives the percentiles ``p01``, ``p50`` and
``p99``; counted block by block in the same pass, merged exactly. (The histogram's
half-octave bins are not a coarsening of its buckets: ``sqrt(2)`` is no bucket bound.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from kerinspect import bins
from kerinspect.report import TensorStats
from kerinspect.sketch import REPORTED, SIDE, Sketch, cells

#: Activations whose outputs are bounded, as :func:`summarize`'s ``bounds`` names them.
BOUNDED = ("tanh", "sigmoid", "hard_sigmoid", "softmax")
#: A value this close to a bound of its activation counts as saturated (tanh: |y| >= 0.99,
#: where its gradient is below 2% of its largest; softmax: a largest probability >= 0.99).
SATURATION_MARGIN = 0.01


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
    #: spread across samples: samples seen, per-unit mean and M2 of the samples'
    #: values (None: not asked for, or undefined: non-finite values, no batch axis)
    samples: int = 0
    unit_mean: np.ndarray | None = None
    unit_m2: np.ndarray | None = None
    #: values (softmax: distributions) at the bounds of the activation, and of how many
    saturated: int = 0
    saturation_of: int = 0
    #: counts per bin of :mod:`kerinspect.bins` (None: not asked for)
    hist: np.ndarray | None = None
    #: the quantile sketch of the finite values (None: not asked for, or not a float tensor)
    sketch: Sketch | None = None

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold ``other`` into ``self`` (Chan et al.'s parallel update) and return self."""
        self._merge_hist(other)
        self._merge_sketch(other)
        self._merge_spread(other)
        self.saturated += other.saturated
        self.saturation_of += other.saturation_of
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

    def _merge_hist(self, other: RunningStats) -> None:
        """Add the histograms; one without (not asked for) makes the merged one None,
        except into a fresh accumulator, which takes ``other``'s."""
        if self.count == 0 and self.hist is None:
            self.hist = None if other.hist is None else other.hist.copy()
        elif self.hist is not None and other.hist is not None:
            self.hist += other.hist
        elif other.count:
            self.hist = None

    def _merge_sketch(self, other: RunningStats) -> None:
        """Add the sketches, under the histograms' rule (:meth:`_merge_hist`)."""
        if self.count == 0 and self.sketch is None:
            self.sketch = None if other.sketch is None else Sketch().merge(other.sketch)
        elif self.sketch is not None and other.sketch is not None:
            self.sketch.merge(other.sketch)
        elif other.count:
            self.sketch = None

    def percentiles(self) -> tuple[float | None, ...]:
        """p01, p50, p99 of the finite values (:data:`kerinspect.sketch.REPORTED`), from
        the sketch; None where there is no sketch or no finite value."""
        if self.sketch is None or not self.finite:
            return tuple(None for _ in REPORTED)
        return self.sketch.percentiles(tuple(q for _, q in REPORTED), self.min, self.max)

    def _merge_spread(self, other: RunningStats) -> None:
        """Per-unit Chan update of the samples' moments. A summary without them (or
        with another unit count) makes the merged spread undefined; an empty
        ``self`` (a fresh accumulator) takes ``other``'s."""
        if self.count == 0 and self.samples == 0:
            self.samples = other.samples
            self.unit_mean = None if other.unit_mean is None else other.unit_mean.copy()
            self.unit_m2 = None if other.unit_m2 is None else other.unit_m2.copy()
            return
        if other.count == 0 and other.samples == 0:
            return
        a_mean, a_m2, b_mean, b_m2 = self.unit_mean, self.unit_m2, other.unit_mean, other.unit_m2
        if a_mean is None or a_m2 is None or b_mean is None or b_m2 is None or a_mean.shape != b_mean.shape:
            self.samples, self.unit_mean, self.unit_m2 = 0, None, None
            return
        na, nb = self.samples, other.samples
        n = na + nb
        if nb:
            delta = b_mean - a_mean
            self.unit_m2 = a_m2 + b_m2 + delta * delta * (na * nb / n)
            self.unit_mean = a_mean + delta * (nb / n)
        self.samples = n

    def sample_spread(self) -> float | None:
        """The spread across samples (see the module's docstring); None when undefined."""
        if self.unit_m2 is None or not self.samples or not self.unit_m2.size:
            return None
        return float(np.mean(np.sqrt(np.maximum(self.unit_m2, 0.0) / self.samples)))

    def rms(self) -> float | None:
        """Root mean square of the finite values; None if there are none."""
        norm = self.l2_norm()
        return None if norm is None else norm / math.sqrt(self.finite)

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
        p01, p50, p99 = self.percentiles()
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
            rms=self.rms(),
            sample_spread=self.sample_spread(),
            saturated_fraction=self.saturated / self.saturation_of if self.saturation_of else None,
            histogram=None if self.hist is None else tuple(int(c) for c in self.hist),
            p01=p01,
            p50=p50,
            p99=p99,
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
    spread: bool = False,
    bounds: str | None = None,
    histogram: bool = False,
    sketch: bool = False,
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

    ``spread=True`` (axis 0 holds samples) also keeps the spread across samples, in
    the same pass: each block adds its rows, per sample and unit, into a samples x
    units float64 matrix (a sample's rows are folded in block order, by the thread
    that scans its first block; a part hands the rows of a sample begun before it
    back to the caller, which folds them in order), so it too is the same for every
    ``parts``. ``bounds`` (one of :data:`BOUNDED`) counts the values at the
    activation's saturation bounds. ``histogram=True`` counts the finite values into
    the bins of :mod:`kerinspect.bins` (integer counts: the same for every ``parts``);
    ``sketch=True``, for a float tensor, its quantile sketch (:mod:`kerinspect.sketch`,
    integer counts too).
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
    if histogram and kind != "bool":
        s.hist = np.zeros(bins.BINS, dtype=np.int64)
    if sketch and kind == "float":
        s.sketch = Sketch()
    if count == 0:
        return s
    grid = a.reshape(-1, units) if units > 0 else a.reshape(1, -1)
    n_rows, n_cols = grid.shape
    rows = max(1, BLOCK // n_cols)
    row_blocks = -(-n_rows // rows)
    parts = max(1, min(parts, row_blocks))
    cuts = [row_blocks * i // parts * rows for i in range(parts)] + [n_rows]
    spans = [(cuts[i], cuts[i + 1]) for i in range(parts)]
    if bounds is not None and (bounds not in BOUNDED or (bounds == "softmax" and units == 0)):
        bounds = None
    # per sample (axis 0) and unit: the sum of the sample's values (rank >= 2 only)
    sums = np.zeros((a.shape[0], n_cols), dtype=np.float64) if spread and units > 0 else None
    positions = n_rows // a.shape[0] if sums is not None else 0
    scan = _Scan(grid, rows, kind, units, sums, positions, bounds, s.hist is not None, s.sketch is not None)
    results = map_fn(scan, spans)
    spread_ok = spread and a.ndim >= 1
    if bounds is not None:
        s.saturation_of = count if bounds != "softmax" else n_rows
    for part in results:
        spread_ok = spread_ok and part.spread_ok
        s.saturated += part.saturated
        if sums is not None and spread_ok:
            for c0, piece in part.lead:  # rows of a sample begun in an earlier part, in order
                sums[part.lead_sample, c0 : c0 + piece.size] += piece
        s.zeros += part.zeros
        if s.hist is not None and part.hist is not None:
            s.hist += part.hist
        if s.sketch is not None and part.cells is not None:
            s.sketch.merge(Sketch.of_counts(part.cells))
        s.nan += part.nan
        s.inf += part.inf
        s.min = min(s.min, part.min)
        s.max = max(s.max, part.max)
        if s.active is not None and part.active is not None:
            np.logical_or(s.active, part.active, out=s.active)
        for k, block_mean, m2 in part.moments:
            _merge_moments(s, k, block_mean, m2)
    if spread_ok:
        _sample_moments(s, a.shape[0], sums, positions)
    return s


def _sample_moments(s: RunningStats, n: int, sums: np.ndarray | None, positions: int) -> None:
    """Set the per-unit moments of the samples' values (see :func:`summarize`)."""
    if sums is None:  # rank 1: each value is a sample (one unit)
        if s.finite != s.count:
            return
        s.samples = s.finite
        s.unit_mean = np.array([s.mean])
        s.unit_m2 = np.array([s.m2])
        return
    if positions > 1:
        np.divide(sums, positions, out=sums)  # the samples' means over their positions
    mean = np.add.reduce(sums, axis=0) / n
    np.subtract(sums, mean, out=sums)
    np.multiply(sums, sums, out=sums)
    s.samples = n
    s.unit_mean = mean
    s.unit_m2 = np.add.reduce(sums, axis=0)


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
    spread_ok: bool = True
    lead_sample: int = -1  # a sample begun before this part's first row (-1: none)
    lead: list[tuple[int, np.ndarray]] = field(default_factory=list)  # its rows' sums: (unit, values)
    saturated: int = 0
    hist: np.ndarray | None = None
    cells: np.ndarray | None = None  # counts per bucket of kerinspect.sketch (all of them)


class _Scan:
    """What every part of one :func:`summarize` shares; called with a part's span."""

    def __init__(
        self,
        grid: np.ndarray,
        rows: int,
        kind: str,
        units: int,
        sums: np.ndarray | None,
        positions: int,
        bounds: str | None,
        histogram: bool = False,
        sketch: bool = False,
    ):
        self.grid, self.rows, self.kind, self.units = grid, rows, kind, units
        self.sums, self.positions, self.bounds = sums, positions, bounds
        self.histogram, self.sketch = histogram, sketch

    def __call__(self, span: tuple[int, int]) -> _Part:
        return _scan(self, span)


def _scan(job: _Scan, span: tuple[int, int]) -> _Part:
    """One pass over the blocks of ``grid[span[0]:span[1]]`` (see :func:`summarize`)."""
    grid, rows, kind, units = job.grid, job.rows, job.kind, job.units
    sums, positions, bounds = job.sums, job.positions, job.bounds
    r_begin, r_end = span
    n_cols = grid.shape[1]
    cols = min(n_cols, BLOCK)
    part = _Part(active=np.zeros(units, dtype=bool) if units > 0 else None)
    if job.histogram:
        part.hist = np.zeros(bins.BINS, dtype=np.int64)
    if job.sketch:
        part.cells = np.zeros(2 * SIDE, dtype=np.int64)
    if sums is not None and r_begin % positions:
        part.lead_sample = r_begin // positions
    row_max = np.empty(0) if bounds == "softmax" else None  # softmax: a row's max over its column blocks
    size = min(rows, r_end - r_begin) * cols
    scratch = np.empty(size, dtype=np.float64)
    nonzero = np.empty(size, dtype=bool)
    buckets = np.empty(size, dtype=np.uint32) if job.sketch else None
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
            finite = kind != "float" or (math.isfinite(lo) and math.isfinite(hi))
            if bounds is not None:
                if row_max is not None:
                    bmax = x.reshape(block.shape).max(axis=1)
                    row_max = bmax if c0 == 0 else np.maximum(row_max, bmax)
                    if c0 + cols >= n_cols:
                        part.saturated += int(np.count_nonzero(row_max >= 1 - SATURATION_MARGIN))
                else:
                    part.saturated += _at_bounds(x, bounds, nonzero[:m])
            if sums is not None and part.spread_ok:
                if finite:
                    _add_sample_sums(part, sums, x.reshape(block.shape), r0, c0, positions)
                else:
                    part.spread_ok = False
            if not finite:
                finite_mask = np.isfinite(x)
                n_finite = int(np.count_nonzero(finite_mask))
                n_nan = int(np.count_nonzero(np.isnan(x)))
                part.nan += n_nan
                part.inf += m - n_finite - n_nan
                x = x[finite_mask]  # a copy: the scratch buffer is ours, the input is not touched
                if not x.size:
                    continue
                lo, hi = x.min(), x.max()
            if part.hist is not None:
                part.hist += _bin_counts(x)
            if part.cells is not None:  # the float32 bits of the input as they are, if it is float32
                found = np.bincount(cells(block if finite and block.dtype == np.float32 else x, buckets))
                part.cells[: found.size] += found
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


def _bin_counts(x: np.ndarray) -> np.ndarray:
    """Counts of the finite float64 values ``x`` per bin of :mod:`kerinspect.bins`
    (as :func:`kerinspect.bins.bin_of`, vectorised; frexp is exact)."""
    mantissa, exponent = np.frexp(x)
    j = 2 * (exponent.astype(np.int64) - bins.MIN_EXP) + (np.abs(mantissa) >= bins.HALF_OCTAVE)
    np.clip(j, 0, bins.MAGNITUDE_BINS - 1, out=j)
    index = np.where(x > 0, bins.ZERO + 1 + j, bins.ZERO - 1 - j)
    index[x == 0] = bins.ZERO
    return np.bincount(index, minlength=bins.BINS)


def _at_bounds(x: np.ndarray, bounds: str, buf: np.ndarray) -> int:
    """How many of ``x`` lie within :data:`SATURATION_MARGIN` of the bounds of ``bounds``."""
    lo, hi = (-1.0, 1.0) if bounds == "tanh" else (0.0, 1.0)
    n = int(np.count_nonzero(np.greater_equal(x, hi - SATURATION_MARGIN, out=buf)))
    return n + int(np.count_nonzero(np.less_equal(x, lo + SATURATION_MARGIN, out=buf)))


def _add_sample_sums(
    part: _Part, sums: np.ndarray, block: np.ndarray, r0: int, c0: int, positions: int
) -> None:
    """Add a block's rows (grid rows ``r0...``, units ``c0...``) into their samples' rows
    of ``sums``; a sample begun in an earlier part goes to ``part.lead`` instead."""
    n, width = block.shape
    first, last = r0 // positions, (r0 + n - 1) // positions
    if positions == 1:
        seg = block
    elif first == last:
        seg = np.add.reduce(block, axis=0, keepdims=True)
    else:  # the end of a sample, whole samples, the start of one (np.add.reduceat is 10x slower)
        head = -r0 % positions
        whole = (n - head) // positions
        pieces = []
        if head:
            pieces.append(np.add.reduce(block[:head], axis=0, keepdims=True))
        if whole:
            middle = block[head : head + whole * positions].reshape(whole, positions, width)
            pieces.append(np.add.reduce(middle, axis=1))
        if head + whole * positions < n:
            pieces.append(np.add.reduce(block[head + whole * positions :], axis=0, keepdims=True))
        seg = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    j = 0
    if first == part.lead_sample:
        part.lead.append((c0, seg[0].copy()))
        j = 1
    if j < seg.shape[0]:
        target = sums[first + j : last + 1, c0 : c0 + width]
        np.add(target, seg[j:], out=target)


def _merge_moments(s: RunningStats, n: int, mean: float, m2: float) -> None:
    """Fold the moments of ``n`` more finite values into ``s`` (as :meth:`RunningStats.merge`)."""
    total = s.finite + n
    delta = mean - s.mean
    s.m2 = s.m2 + m2 + delta * delta * s.finite * n / total
    s.mean = s.mean + delta * n / total
    s.finite = total


def from_partials(
    shape: tuple[int, ...],
    *,
    finite: int,
    total: float,
    m2: float,
    low: float,
    high: float,
    zeros: int,
    nan: int,
    active: np.ndarray | None,
    unit_moments: tuple[np.ndarray, np.ndarray] | None = None,
    spread: bool = False,
    bounds: str | None = None,
    saturated: int = 0,
    sketch: Sketch | None = None,
) -> RunningStats:
    """A :class:`RunningStats` of one batch from the partial sums a compiled forward
    pass computed on the device (:mod:`kerinspect.engine.compiled`), with the meaning
    :func:`summarize` gives each field.

    ``total`` and ``m2`` are the sum of the finite values and their squared deviations
    from the batch mean ``total / finite``; ``low``/``high`` their extremes; ``active``
    the per-unit activity (last axis, rank >= 2); ``unit_moments`` (rank >= 2): per
    unit, the mean and M2 over the samples (axis 0) of each sample's mean over the
    other axes; ``saturated`` the values (softmax: rows) at the bounds of ``bounds``.
    ``spread``: axis 0 holds this batch's samples. ``sketch``: the quantile sketch of the
    values (float tensors), counted on the device.
    """
    count = int(np.prod(shape)) if shape else 1
    s = RunningStats(count=count, finite=int(finite), zeros=int(zeros), nan=int(nan))
    s.inf = count - s.finite - s.nan
    s.sketch = sketch
    if s.finite:
        s.mean = float(total) / s.finite
        s.m2 = max(float(m2), 0.0)
        s.min, s.max = float(low), float(high)
    units = shape[-1] if len(shape) >= 2 else 0
    if units > 0:
        s.active = (
            np.zeros(units, dtype=bool) if active is None else np.asarray(active, dtype=bool).reshape(-1)
        )
    if bounds in BOUNDED and not (bounds == "softmax" and units == 0):
        s.saturated = int(saturated)
        s.saturation_of = count if bounds != "softmax" else count // units
    if not spread or count == 0 or not len(shape) or s.finite != count:
        return s
    if len(shape) == 1:  # each value is a sample (one unit)
        s.samples, s.unit_mean, s.unit_m2 = s.finite, np.array([s.mean]), np.array([s.m2])
    elif units > 0 and unit_moments is not None:
        s.samples = shape[0]
        s.unit_mean = np.asarray(unit_moments[0], dtype=np.float64).reshape(units).copy()
        s.unit_m2 = np.asarray(unit_moments[1], dtype=np.float64).reshape(units).copy()
    return s
