"""The fixed bins of the value histograms (stdlib only: the parent renders them).

Bins are data-independent, so histograms of batches merge exactly (add the counts):
signed log-magnitude bins, two per octave, plus one bin for exact zeros.

For a finite non-zero ``x`` with ``|x| = m * 2**e`` (``math.frexp``: ``0.5 <= m < 1``),
its magnitude bin is ``2 * (e - MIN_EXP) + (m >= sqrt(1/2))``, clipped to
``[0, MAGNITUDE_BINS - 1]``: bin ``j`` holds ``2**(MIN_EXP - 1 + j/2) <= |x| <
2**(MIN_EXP - 1 + (j+1)/2)``, the first bin also every smaller magnitude and the last
every larger one. The histogram's :data:`BINS` counts run from the most negative values
to the most positive: ``MAGNITUDE_BINS`` negative bins (largest magnitude first), the
zero bin at :data:`ZERO`, then the positive bins (smallest first). NaN and Inf are not
in the histogram (the statistics count them).
"""

from __future__ import annotations

import math
from typing import Any

#: Smallest and largest binary exponent (frexp's ``e``) with bins of their own:
#: magnitudes from 2**-21 (about 4.8e-7) to 2**20 (about 1e6).
MIN_EXP = -20
MAX_EXP = 20
#: Bins per sign (two per octave).
MAGNITUDE_BINS = 2 * (MAX_EXP - MIN_EXP + 1)
#: Index of the exact-zero bin.
ZERO = MAGNITUDE_BINS
#: Bins in a histogram.
BINS = 2 * MAGNITUDE_BINS + 1
#: The mantissa at which an octave's upper half begins.
HALF_OCTAVE = math.sqrt(0.5)
#: How a report names this binning (written beside the counts in the JSON).
SCHEME = "signed-log2-half-octave"


def bin_range(index: int) -> tuple[float, float]:
    """The ``[low, high)`` values of bin ``index`` (the outermost bins are open-ended:
    ``-inf``/``inf``; the zero bin is ``(0.0, 0.0)``)."""
    if not 0 <= index < BINS:
        raise ValueError(f"bin index out of range: {index}")
    if index == ZERO:
        return 0.0, 0.0
    j = index - ZERO - 1 if index > ZERO else ZERO - 1 - index
    low = 0.0 if j == 0 else 2.0 ** (MIN_EXP - 1 + j / 2)
    high = math.inf if j == MAGNITUDE_BINS - 1 else 2.0 ** (MIN_EXP - 1 + (j + 1) / 2)
    return (low, high) if index > ZERO else (-high, -low)


def bin_of(x: float) -> int | None:
    """The bin of one value (None for NaN and Inf): the reference for the vectorised
    version in :mod:`kerinspect.stats`."""
    if not math.isfinite(x):
        return None
    if x == 0:
        return ZERO
    m, e = math.frexp(abs(x))
    j = min(max(2 * (e - MIN_EXP) + (m >= HALF_OCTAVE), 0), MAGNITUDE_BINS - 1)
    return ZERO + 1 + j if x > 0 else ZERO - 1 - j


def compact(counts: tuple[int, ...]) -> dict[str, Any]:
    """The JSON form of a histogram: the counts from the first to the last non-empty bin."""
    nonzero = [i for i, c in enumerate(counts) if c]
    if not nonzero:
        return {"bins": SCHEME, "first": 0, "counts": []}
    first, last = nonzero[0], nonzero[-1]
    return {"bins": SCHEME, "first": first, "counts": list(counts[first : last + 1])}


def expand(data: Any) -> tuple[int, ...]:
    """The inverse of :func:`compact` (raises ValueError/TypeError on a malformed one)."""
    if not isinstance(data, dict) or data.get("bins") != SCHEME:
        raise ValueError("not a histogram of this binning")
    first, counts = data["first"], data["counts"]
    if not isinstance(first, int) or not isinstance(counts, list) or first < 0 or first + len(counts) > BINS:
        raise ValueError("histogram out of range")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise TypeError("histogram counts must be non-negative integers")
    return (0,) * first + tuple(counts) + (0,) * (BINS - first - len(counts))
