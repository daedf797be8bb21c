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
from dataclasses import dataclass

import numpy as np

from .report import TensorStats


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


def summarize(array: np.ndarray) -> RunningStats | None:
    """Summarise one batch. Returns None for non-numeric arrays (strings, objects).

    Computation is in float64 whatever the input dtype (float16 sums would
    overflow). Axis 0 is the batch axis; units are the last axis for rank >= 2.
    """
    a = np.asarray(array)
    kind = numeric_kind(a.dtype)
    if kind is None:
        return None
    x = a.astype(np.float64, copy=False).reshape(-1)
    count = x.size
    s = RunningStats(count=count)
    if a.ndim >= 2 and a.shape[-1] > 0:
        s.active = np.any(a.reshape(-1, a.shape[-1]) != 0, axis=0)
    if count == 0:
        return s
    s.zeros = count - int(np.count_nonzero(x))  # NaN is non-zero
    if kind == "float":
        finite_mask = np.isfinite(x)
        finite = int(np.count_nonzero(finite_mask))
        if finite != count:
            s.nan = int(np.count_nonzero(np.isnan(x)))
            s.inf = count - finite - s.nan
            x = x[finite_mask]
    s.finite = x.size
    if s.finite:
        s.min = float(x.min())
        s.max = float(x.max())
        s.mean = float(x.sum() / s.finite)
        # Deviations in place when x is our own float64 copy (saves an allocation
        # the size of the batch); never write into the caller's array.
        d = x - s.mean if np.may_share_memory(x, a) else np.subtract(x, s.mean, out=x)
        s.m2 = float(np.dot(d, d))
    return s
