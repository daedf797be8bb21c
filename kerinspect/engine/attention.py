"""Attention probabilities of every attention layer, and their per-head health.

``MultiHeadAttention`` (and its subclasses, keras-hub's among them) and
``GroupedQueryAttention`` compute their probabilities in ``_compute_attention``.
In Keras 3.15 that method takes a fused kernel (``ops.dot_product_attention``)
and returns no probabilities unless dropout is on, the caller asked for them, or
the query is not 4-D. :class:`AttentionProbe` wraps the method on one instance for
one call:

* when the layer computed the probabilities itself, they are taken as they are
  (``source="layer"``);
* otherwise the original method runs once more, in inference mode, with the
  probabilities requested (the explicit path), and they are accepted only if that
  second output equals the fused one within a dtype-aware tolerance on every query
  row that has a key to attend to (``source="recomputed"``); if not, or if it
  fails, the capture says why (``status="unavailable"``) and shows none.

The layer's own output is always the one the model computed: the probe returns it
unchanged. Masks are the ones the layer itself built (padding, causal, sliding
window): the valid keys of each query come from the ``attention_mask`` argument
and ``use_causal_mask``. Fully masked query rows are excluded from the check and
from the statistics (the two paths differ there).

:class:`HeadAccumulator` folds the probabilities of every batch into mergeable
per-head sums (see :mod:`kerinspect.report` ``HeadStats`` for what each means).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerinspect.engine import keras_adapter as ka
from kerinspect.report import AttentionRecord, HeadStats
from kerinspect.spec import Thresholds

#: Largest relative difference allowed between the fused and the explicit output,
#: by compute dtype (scaled by the output's magnitude, at least 1).
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


def tolerance(dtype: str) -> float:
    """:data:`TOLERANCE` for ``dtype`` (float32's for anything unknown)."""
    return TOLERANCE.get(dtype, TOLERANCE["float32"])


@dataclass
class Capture:
    """What one call of one attention layer gave.

    Attributes:
        probs: the probabilities, a backend tensor ``(batch, heads, queries, keys)``
            (or the layer's own shape for other attention axes); None when unavailable.
        valid: numpy bool ``(batch, queries, keys)``: the keys each query may attend
            to; None when the probabilities are not 4-D.
        source: ``layer`` (the layer computed them) or ``recomputed`` (the explicit
            path, verified against the fused output).
        reason: why they are unavailable (None when they are not).
        max_difference: for ``recomputed``: the largest |fused - explicit| seen.
    """

    probs: Any = None
    valid: np.ndarray | None = None
    source: str = "layer"
    reason: str | None = None
    max_difference: float | None = None


def _valid_keys(arguments: dict[str, Any], probs_shape: tuple[int, ...]) -> np.ndarray | None:
    """``(B, T, S)`` bool: the keys each query may attend to, from the mask the layer
    built and its causal flag."""
    from kerinspect.engine.trace import to_numpy

    if len(probs_shape) != 4:
        return None
    b, _, t, s = probs_shape
    valid = np.ones((b, t, s), dtype=bool)
    mask = arguments.get("attention_mask")
    if mask is not None:
        m: np.ndarray = np.asarray(to_numpy(mask)).astype(bool)
        while m.ndim > 3:  # (B, 1, T, S) forms
            m = np.asarray(m[:, 0] if m.shape[1] == 1 else m.all(axis=1))
        if m.ndim == 2:
            m = m[None]
        valid &= np.broadcast_to(m, (b, t, s))
    if arguments.get("use_causal_mask"):
        valid &= np.tril(np.ones((t, s), dtype=bool))[None]  # key <= query, as Keras
    return valid


class AttentionProbe:
    """Wraps ``_compute_attention`` of one layer for one call (use as the ``core`` of
    :func:`~kerinspect.engine.keras_adapter.attention_core_replaced`).

    Args:
        layer: the attention layer.
        quiet: a context manager factory under which the explicit re-run happens
            (the tracer passes one that hides the re-run's sub-layer calls).
    """

    def __init__(self, layer: Any, quiet: Callable[[], Any]):
        self.layer = layer
        self.quiet = quiet
        self.original: Callable[..., Any] | None = None
        self.capture: Capture | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        assert self.original is not None
        result = self.original(*args, **kwargs)
        try:
            self.capture = self._capture(args, kwargs, result)
        except Exception as e:  # noqa: BLE001 - never break the model's own run
            self.capture = Capture(source="recomputed", reason=f"capture failed: {type(e).__name__}: {e}")
        return result

    def _capture(self, args: Any, kwargs: Any, result: Any) -> Capture:
        from kerinspect.engine.trace import tensor_dtype, to_numpy

        assert self.original is not None
        arguments = ka.bind_attention_arguments(self.original, args, kwargs)
        out, scores = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        if scores is not None:
            return Capture(scores, _valid_keys(arguments, tuple(scores.shape)), "layer")
        if ka.flash_attention_on(self.layer):
            return Capture(source="recomputed", reason="flash attention computes no probabilities")
        with self.quiet():
            again = ka.compute_attention_with_scores(self.layer, self.original, arguments)
        out2, scores2 = again
        if scores2 is None:
            return Capture(source="recomputed", reason="the layer's explicit path returned no probabilities")
        valid = _valid_keys(arguments, tuple(scores2.shape))
        a, b = to_numpy(out).astype(np.float64), to_numpy(out2).astype(np.float64)
        if a.shape != b.shape:
            return Capture(source="recomputed", reason=f"explicit output shape {b.shape} != fused {a.shape}")
        rows = valid.any(axis=-1) if valid is not None and a.ndim == 4 else None
        if rows is not None:  # compare only query rows with a key to attend to
            a, b = a[rows], b[rows]
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = max(1.0, float(np.max(np.abs(a))) if a.size else 1.0)
        tol = tolerance(tensor_dtype(out))
        if not math.isfinite(diff) or diff > tol * scale:
            return Capture(
                source="recomputed",
                reason=f"the explicit path's output differs from the fused one by {diff:.3g} "
                f"(tolerance {tol * scale:.3g})",
                max_difference=diff,
            )
        return Capture(scores2, valid, "recomputed", None, diff)


class HeadAccumulator:
    """Mergeable per-head sums over every valid query row of every batch."""

    def __init__(self) -> None:
        self.heads = 0
        self.shape: tuple[int, ...] = ()
        self.rows: np.ndarray = np.zeros(0)
        self.multi_rows: np.ndarray = np.zeros(0)  # rows with at least 2 valid keys
        self.entropy_sum = np.zeros(0)
        self.entropy_min = np.zeros(0)
        self.max_sum = np.zeros(0)
        self.max_min = np.zeros(0)
        self.sink_sum = np.zeros(0)
        self.diag_sum = np.zeros(0)
        self.row_error = np.zeros(0)
        self.square = False
        self.source = "layer"
        self.reason: str | None = None
        self.max_difference: float | None = None
        self.batches = 0

    def _start(self, heads: int) -> None:
        self.heads = heads
        for name in ("rows", "multi_rows", "entropy_sum", "max_sum", "sink_sum", "diag_sum", "row_error"):
            setattr(self, name, np.zeros(heads))
        self.entropy_min = np.full(heads, np.inf)
        self.max_min = np.full(heads, np.inf)

    def update(self, capture: Capture) -> None:
        """Fold one batch's capture in (an unavailable one keeps its reason)."""
        from kerinspect.engine.trace import to_numpy

        self.batches += 1
        self.source = capture.source
        if capture.max_difference is not None:
            self.max_difference = max(self.max_difference or 0.0, capture.max_difference)
        if capture.probs is None:
            self.reason = self.reason or capture.reason
            return
        p = np.asarray(to_numpy(capture.probs))
        if p.ndim != 4 or capture.valid is None:
            self.reason = self.reason or f"per-head statistics need 4-D probabilities, got shape {p.shape}"
            self.shape = tuple(p.shape)
            return
        b, h, t, s = p.shape
        if not self.heads:
            self._start(h)
            self.shape = (0, h, t, s)
        self.shape = (self.shape[0] + b, h, t, s)
        self.square = t == s
        valid = capture.valid
        n_valid = valid.sum(axis=-1)  # (B, T)
        rows = n_valid > 0
        multi = n_valid > 1
        log_n = np.log(np.where(multi, n_valid, 2))
        for head in range(h):
            ph = p[:, head].astype(np.float64)  # (B, T, S)
            pv = np.where(valid, ph, 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                plogp = np.where(pv > 0, pv * np.log(np.where(pv > 0, pv, 1.0)), 0.0)
            entropy = -plogp.sum(axis=-1) / log_n  # (B, T)
            mx = pv.max(axis=-1)
            self.rows[head] += rows.sum()
            self.multi_rows[head] += multi.sum()
            if multi.any():
                self.entropy_sum[head] += entropy[multi].sum()
                self.entropy_min[head] = min(self.entropy_min[head], float(entropy[multi].min()))
                self.max_sum[head] += mx[multi].sum()
                self.max_min[head] = min(self.max_min[head], float(mx[multi].min()))
            if rows.any():
                self.sink_sum[head] += ph[..., 0][rows].sum()
                if self.square:
                    self.diag_sum[head] += np.diagonal(ph, axis1=-2, axis2=-1)[rows].sum()
                err = np.abs(ph.sum(axis=-1) - 1.0)[rows]
                self.row_error[head] = max(self.row_error[head], float(np.nanmax(err)) if err.size else 0.0)
                if np.isnan(err).any():
                    self.row_error[head] = math.nan

    def record(self, output: str | None, thresholds: Thresholds) -> AttentionRecord:
        """The finished statistics, with the ``uniform-attention`` and
        ``collapsed-attention`` flags judged against ``thresholds``."""
        if not self.heads:
            return AttentionRecord(
                output=None,
                source=self.source,
                status="unavailable",
                reason=self.reason or "no probabilities were captured",
                shape=self.shape,
            )
        heads = []
        for head in range(self.heads):
            rows, multi = self.rows[head], self.multi_rows[head]

            def mean(total: float, n: float) -> float | None:
                return float(total / n) if n else None

            entropy = mean(self.entropy_sum[head], multi)
            max_weight = mean(self.max_sum[head], multi)
            flags = []
            if multi and self.entropy_min[head] >= thresholds.uniform_attention_entropy:
                flags.append("uniform-attention")
            if multi and self.max_min[head] >= thresholds.collapsed_attention_weight:
                flags.append("collapsed-attention")
            error = float(self.row_error[head])
            heads.append(
                HeadStats(
                    head=head,
                    entropy=entropy,
                    min_entropy=float(self.entropy_min[head]) if multi else None,
                    max_weight=max_weight,
                    sink=mean(self.sink_sum[head], rows),
                    diagonal=mean(self.diag_sum[head], rows) if self.square else None,
                    row_sum_error=None if math.isnan(error) else error,
                    flags=tuple(flags),
                )
            )
        return AttentionRecord(
            output=output,
            source=self.source,
            status="ok",
            reason=None,
            shape=self.shape,
            queries=int(self.rows[0]),
            max_difference=self.max_difference,
            heads=tuple(heads),
        )
