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
from kerinspect.engine.tfenv import import_keras
from kerinspect.report import AttentionRecord, HeadStats
from kerinspect.spec import Thresholds

import_keras()
import tensorflow as tf  # noqa: E402 - imported (quietly) by import_keras

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
        valid: bool tensor ``(batch, queries, keys)``: the keys each query may attend
            to (:func:`valid_keys`); None when the probabilities are not 4-D.
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
    #: the tensor that holds the probabilities as the call computed them (``probs`` is
    #: its 4-D view); None: ``probs`` itself
    tensor: Any = None
    #: name of the call's output that holds them (an output of the call's own, or one
    #: added to the row under this name)
    output: str = "attention_scores"
    #: in a compiled trace: ``(difference, scale, tolerance)`` of the explicit path's
    #: check, decided on the host once the batch ran (None: decided already)
    pending: tuple[Any, Any, float] | None = None


def valid_keys(arguments: dict[str, Any], probs: Any) -> Any | None:
    """``(B, T, S)`` bool tensor: the keys each query may attend to, from the mask the
    layer built and its causal flag (None when the probabilities are not 4-D).

    TensorFlow operations, so that the same code serves an eager call and a compiled
    trace (:mod:`kerinspect.engine.compiled`)."""
    if len(probs.shape) != 4:
        return None
    dims = tf.shape(probs)
    b, t, s = dims[0], dims[2], dims[3]
    valid = tf.ones(tf.stack([b, t, s]), dtype=tf.bool)
    mask = arguments.get("attention_mask")
    if mask is not None:
        m = tf.cast(mask, tf.bool)
        while m.shape.rank > 3:  # (B, 1, T, S) forms: every head's mask must allow the key
            m = tf.reduce_all(m, axis=1)
        if m.shape.rank == 2:
            m = m[None]
        valid = tf.logical_and(valid, tf.broadcast_to(m, tf.stack([b, t, s])))
    if arguments.get("use_causal_mask"):  # key <= query, as Keras
        causal = tf.range(t)[:, None] >= tf.range(s)[None, :]
        valid = tf.logical_and(valid, causal[None])
    return valid


def output_difference(out: Any, again: Any, valid: Any | None) -> tuple[Any, Any]:
    """``(max |out - again|, max(1, max |out|))`` over the query rows that have a key
    to attend to (the fused and explicit paths differ on fully masked rows); NaN when
    a difference is NaN. Scalar float64 tensors (eager or in a trace); the masks
    broadcast, so the only full-size temporaries are the difference and ``|out|``, in
    float32 (float64 for float64 outputs: :data:`TOLERANCE` is far above either's
    rounding)."""
    wide = tf.float64 if out.dtype == tf.float64 else tf.float32
    diff = tf.abs(tf.cast(out, wide) - tf.cast(again, wide))
    size = tf.abs(tf.cast(out, wide))
    if valid is not None and out.shape.rank == 4:
        rows = tf.reduce_any(valid, axis=-1)[:, :, None, None]  # (B, T, 1, 1)
        diff = tf.where(rows, diff, 0.0)
        size = tf.where(rows, size, 0.0)
    nan = tf.reduce_any(tf.math.is_nan(diff))
    worst = tf.cast(tf.maximum(tf.reduce_max(diff), 0.0), tf.float64)
    worst = tf.where(nan, tf.constant(math.nan, tf.float64), worst)
    return worst, tf.cast(tf.maximum(tf.reduce_max(size), 1.0), tf.float64)


#: Largest temporaries of :func:`head_partials`, in bytes: heads are summarised in groups
#: whose probabilities hold at most this much (a BERT-base batch of 16 at 512 tokens:
#: 16 MiB a head).
HEAD_GROUP_BYTES = 16 << 20


def head_partials(probs: Any, valid: Any, batch: int | None = None) -> dict[str, Any]:
    """One batch's per-head sums of 4-D probabilities ``(B, H, T, S)`` (TensorFlow
    operations: eager, or on the device in a compiled trace), folded across batches by
    :meth:`HeadAccumulator.fold`:

    ``rows``/``multi``: query rows with at least one/two valid keys; ``entropy_sum``,
    ``entropy_min``, ``max_sum``, ``max_min`` (per head) over rows with two or more
    valid keys (entropy normalised by the log of their count); ``sink_sum`` (weight
    on key 0) and ``diag_sum`` (weight on key = query, the first ``min(T, S)`` rows)
    over rows with a valid key; ``row_error`` the largest ``|sum - 1|`` of a row and
    ``row_nan`` whether a row sum is NaN.

    Precision: each query row's figures (its entropy, largest weight, sum) are taken
    over its keys in the probabilities' own dtype (float32: relative rounding about
    1e-6 for a few hundred keys), then everything across rows in float64. Heads go in
    groups of at most :data:`HEAD_GROUP_BYTES` (``batch``: the size of a dynamic batch
    axis, as in a compiled trace; the others are static there), so that the full-size
    temporaries are those of a few heads, and the operations a graph holds few (every
    head at once for small ones)."""
    wide = tf.float64 if probs.dtype == tf.float64 else tf.float32
    n_valid = tf.reduce_sum(tf.cast(valid, tf.float64), axis=-1)  # (B, T)
    rows, multi = n_valid > 0, n_valid > 1
    log_n = tf.math.log(tf.where(multi, n_valid, 2.0))
    dims = tf.shape(probs)
    heads = probs.shape[1]
    guess = (batch or 32, 1, 512, 512)
    b, _, t, k = (guess[i] if d is None else d for i, d in enumerate(probs.shape))
    group = max(1, HEAD_GROUP_BYTES // max(1, b * t * k * wide.size))
    starts = range(0, heads, group) if heads is not None else [0]
    keep = valid[:, None]  # (B, 1, T, S)
    figures: dict[str, list[Any]] = {"entropy": [], "top": [], "total": [], "sink": [], "diag": []}
    for h in starts:
        p = tf.cast(probs[:, h : h + group] if heads is not None else probs, wide)
        pv = tf.where(keep, p, tf.zeros([], wide))
        # p log p, 0 where p is not above 0 (NaN too: left out, as numpy's mask does)
        positive = tf.where(pv > 0, pv, tf.zeros([], wide))
        figures["entropy"].append(-tf.reduce_sum(tf.math.xlogy(positive, pv), axis=-1))
        figures["top"].append(tf.reduce_max(positive, axis=-1))  # NaN left out here too
        figures["total"].append(tf.reduce_sum(p, axis=-1))
        figures["sink"].append(p[..., 0])
        figures["diag"].append(tf.linalg.diag_part(p))  # (B, h, min(T, S))
    row = {key: tf.cast(tf.concat(parts, axis=1), tf.float64) for key, parts in figures.items()}  # (B, H, T)
    shape = tf.shape(row["entropy"])
    multi_h = tf.broadcast_to(multi[:, None], shape)
    rows_h = tf.broadcast_to(rows[:, None], shape)
    rows_d = rows[:, None, : tf.minimum(dims[2], dims[3])]
    entropy = row["entropy"] / log_n[:, None]
    error = tf.abs(row["total"] - 1.0)
    nan = tf.math.is_nan(error)
    inf = tf.constant(math.inf, tf.float64)
    zero = tf.zeros([], tf.float64)
    return {
        "entropy_sum": tf.reduce_sum(tf.where(multi_h, entropy, zero), axis=[0, 2]),
        "entropy_min": tf.reduce_min(tf.where(multi_h, entropy, inf), axis=[0, 2]),
        "max_sum": tf.reduce_sum(tf.where(multi_h, row["top"], zero), axis=[0, 2]),
        "max_min": tf.reduce_min(tf.where(multi_h, row["top"], inf), axis=[0, 2]),
        "sink_sum": tf.reduce_sum(tf.where(rows_h, row["sink"], zero), axis=[0, 2]),
        "diag_sum": tf.reduce_sum(
            tf.where(tf.broadcast_to(rows_d, tf.shape(row["diag"])), row["diag"], zero), axis=[0, 2]
        ),
        "row_error": tf.reduce_max(tf.where(tf.logical_and(rows_h, ~nan), error, zero), axis=[0, 2]),
        "row_nan": tf.reduce_any(tf.logical_and(rows_h, nan), axis=[0, 2]),
        "rows": tf.reduce_sum(tf.cast(rows, tf.int64)),
        "multi": tf.reduce_sum(tf.cast(multi, tf.int64)),
        "shape": tf.shape(probs, out_type=tf.int64),
    }


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
        from kerinspect.engine.tensors import tensor_dtype

        assert self.original is not None
        arguments = ka.bind_attention_arguments(self.original, args, kwargs)
        out, scores = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        if scores is not None:
            return Capture(scores, valid_keys(arguments, scores), "layer")
        if ka.flash_attention_on(self.layer):
            return Capture(source="recomputed", reason="flash attention computes no probabilities")
        with self.quiet():
            again = ka.compute_attention_with_scores(self.layer, self.original, arguments)
        out2, scores2 = again
        if scores2 is None:
            return Capture(source="recomputed", reason="the layer's explicit path returned no probabilities")
        if tuple(out.shape) != tuple(out2.shape):
            return Capture(
                source="recomputed",
                reason=f"explicit output shape {tuple(out2.shape)} != fused {tuple(out.shape)}",
            )
        valid = valid_keys(arguments, scores2)
        diff, scale = output_difference(out, out2, valid)
        tol = tolerance(tensor_dtype(out))
        if not tf.executing_eagerly():  # a compiled trace: the host decides once the batch ran
            return Capture(scores2, valid, "recomputed", None, None, pending=(diff, scale, tol))
        return judged(Capture(scores2, valid, "recomputed"), float(diff), float(scale), tol)


def judged(capture: Capture, diff: float, scale: float, tol: float) -> Capture:
    """``capture`` (explicit path) accepted when its output differs from the fused one
    by at most ``tol`` times ``scale``; otherwise unavailable, saying by how much."""
    if not math.isfinite(diff) or diff > tol * scale:
        return Capture(
            source="recomputed",
            reason=f"the explicit path's output differs from the fused one by {diff:.3g} "
            f"(tolerance {tol * scale:.3g})",
            max_difference=diff,
        )
    return Capture(capture.probs, capture.valid, "recomputed", None, diff)


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
        self.output = "attention_scores"
        self.batches = 0

    def _start(self, heads: int) -> None:
        self.heads = heads
        for name in ("rows", "multi_rows", "entropy_sum", "max_sum", "sink_sum", "diag_sum", "row_error"):
            setattr(self, name, np.zeros(heads))
        self.entropy_min = np.full(heads, np.inf)
        self.max_min = np.full(heads, np.inf)

    def update(self, capture: Capture) -> None:
        """Fold one batch's capture in (an unavailable one keeps its reason)."""
        self.note(capture)
        if capture.probs is None:
            return
        if len(capture.probs.shape) != 4 or capture.valid is None:
            self.reason = self.reason or (
                f"per-head statistics need 4-D probabilities, got shape {tuple(capture.probs.shape)}"
            )
            self.shape = tuple(capture.probs.shape)
            return
        self.fold({k: np.asarray(v) for k, v in head_partials(capture.probs, capture.valid).items()})

    def note(self, capture: Capture) -> None:
        """Count the batch and keep the capture's source, reason and difference."""
        self.batches += 1
        self.source = capture.source
        self.output = capture.output
        if capture.max_difference is not None:
            self.max_difference = max(self.max_difference or 0.0, capture.max_difference)
        if capture.probs is None:
            self.reason = self.reason or capture.reason

    def fold(self, part: dict[str, np.ndarray]) -> None:
        """Add one batch's :func:`head_partials` (as numpy arrays)."""
        b, h, t, s = (int(d) for d in part["shape"])
        if not self.heads:
            self._start(h)
            self.shape = (0, h, t, s)
        self.shape = (self.shape[0] + b, h, t, s)
        self.square = t == s
        self.rows += float(part["rows"])
        self.multi_rows += float(part["multi"])
        self.entropy_sum += part["entropy_sum"]
        self.entropy_min = np.minimum(self.entropy_min, part["entropy_min"])
        self.max_sum += part["max_sum"]
        self.max_min = np.minimum(self.max_min, part["max_min"])
        self.sink_sum += part["sink_sum"]
        if self.square:
            self.diag_sum += part["diag_sum"]
        error = np.where(np.isnan(self.row_error), np.nan, np.maximum(self.row_error, part["row_error"]))
        self.row_error = np.where(part["row_nan"], np.nan, error)

    def record(self, output: str | None, thresholds: Thresholds) -> AttentionRecord:
        """The finished statistics, with the ``uniform-attention`` and
        ``collapsed-attention`` flags judged against ``thresholds``, and
        ``single-key-attention`` when there is one key (every weight is 1: a shape bug,
        such as a softmax over an axis of size 1, rather than a healthy head)."""
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
            if rows and self.shape[-1] == 1:
                flags.append("single-key-attention")
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
