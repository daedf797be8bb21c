"""Numbers as every view shows them: the tables (:mod:`kerinspect.render`,
:mod:`kerinspect.render_diff`), the reprs and HTML tables of reports in a notebook, and
the HTML report (:mod:`kerinspect.render_html`).

One module, so that a figure reads the same wherever it is shown: a LayerNormalization
output's mean, rounding noise around zero, is ``~0`` in the table, the repr and the HTML
alike (the JSON keeps the exact figure). Stdlib only, and it knows no report type: a
tensor's mean is formatted from any object with ``mean``, ``min`` and ``max``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

#: A mean at most this fraction of the largest magnitude is shown as ``~0``: below what
#: float32 rounding resolves (a LayerNormalization output's mean, 1e-10 to 1e-9, differs
#: in those digits between CPUs whose kernels add in another order).
MEAN_RESOLUTION = 1e-6


class MeanAndRange(Protocol):
    """What :func:`fmt_mean` reads (a :class:`~kerinspect.report.TensorStats`)."""

    @property
    def mean(self) -> float | None: ...

    @property
    def min(self) -> float | None: ...

    @property
    def max(self) -> float | None: ...


def fmt_float(x: float | None) -> str:
    """Four significant digits (``inf``, ``nan`` as such); ``-`` when undefined."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.4g}"


#: A normalised error ``‖a−b‖/‖a‖`` (infinite when ``a`` is zero and ``b`` is not).
fmt_error = fmt_float


def fmt_mean(st: MeanAndRange | None) -> str:
    """A tensor's mean (:func:`fmt_float`), ``~0`` when it is rounding noise around zero
    (:data:`MEAN_RESOLUTION` of the largest magnitude); ``-`` when undefined."""
    if st is None or st.mean is None:
        return "-"
    scale = max(abs(st.min or 0.0), abs(st.max or 0.0))
    if st.mean != 0 and abs(st.mean) <= MEAN_RESOLUTION * scale:
        return "~0"
    return fmt_float(st.mean)


def fmt_fraction(x: float | None) -> str:
    """A share as a percentage with one decimal (``25.0%``); ``-`` when undefined."""
    if x is None:
        return "-"
    return f"{100 * x:.1f}%"


def fmt_count(n: int) -> str:
    """An integer with thousands separators (``4,130``)."""
    return f"{n:,}"


def fmt_shape(shape: Sequence[int]) -> str:
    """A shape as Python writes a tuple: ``(16, 10)``, ``(3,)``, ``()``."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def fmt_cosine(x: float) -> str:
    """A cosine similarity with six decimals (exactly ``1`` when equal); ``-`` for NaN."""
    if math.isnan(x):
        return "-"
    return "1" if x == 1 else f"{x:.6f}"


def fmt_sqnr(x: float) -> str:
    """A signal-to-noise ratio in dB with one decimal (``inf`` for equal tensors)."""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.1f}"
