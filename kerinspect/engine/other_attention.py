"""Attention that is not ``MultiHeadAttention``: what LSTM-era and hand-written models use.

Three kinds, each turned into the same :class:`~kerinspect.engine.attention.Capture` as
an MHA call (4-D probabilities ``(batch, heads, queries, keys)`` and the keys each query
may attend to), so that they get the same per-head figures, flags, table and heatmaps:

* ``keras.layers.Attention`` and ``AdditiveAttention``: one head; the probabilities the
  layer's own ``_apply_scores`` computed on the call
  (:func:`~kerinspect.engine.keras_adapter.dense_attention_observed`), with the key mask
  they were computed under (value mask, causal mask) and the call's query mask
  (:func:`dense_capture`). They come from the very call that produced the layer's
  output, so there is nothing to verify against (``source="layer"``).
* a softmax computed while a layer call runs (``keras.ops.softmax``,
  ``keras.activations.softmax``, ``tf.nn.softmax``, a ``Softmax`` or
  ``Activation('softmax')`` layer, ``Dense(..., activation="softmax")``): every one of
  them ends in ``tf.nn.softmax``, which :func:`softmax_observed` shadows for the
  duration of a replay. The probabilities are attributed to the innermost reported
  layer call on the stack (:class:`~kerinspect.engine.trace.Replayer`); the axis the
  softmax normalises is the keys, the other non-batch axes are the queries, and a 4-D
  softmax over its last axis keeps axis 1 as heads (:func:`softmax_capture`,
  ``source="softmax"``).

What the model computes never changes: the shadow returns the tensor ``tf.nn.softmax``
computed, and is removed when the replay ends (``finally``). It observes calls made on
the thread that installed it only.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kerinspect.engine import keras_adapter as ka
from kerinspect.engine.attention import Capture
from kerinspect.engine.tfenv import import_keras

import_keras()
import tensorflow as tf  # noqa: E402 - imported (quietly) by import_keras


def dense_capture(weights: Any, scores_mask: Any, query_mask: Any) -> Capture:
    """The capture of one ``Attention``/``AdditiveAttention`` call: ``weights``
    ``(B, Tq, Tv)`` as one head; a key is valid where ``scores_mask`` (broadcastable to
    ``(B, Tq, Tv)``; None: every key) allows it, and a query row only when
    ``query_mask`` ``(B, Tq)`` does (the layer zeroes the output of a masked query,
    not its weights: such rows are left out, as fully masked rows are)."""
    probs = tf.expand_dims(weights, 1)
    dims = tf.shape(weights)
    valid = tf.ones(dims, dtype=tf.bool)
    if scores_mask is not None:
        m = tf.cast(scores_mask, tf.bool)
        if m.shape.rank == 2:  # (B, Tv)
            m = m[:, None, :]
        valid = tf.logical_and(valid, tf.broadcast_to(m, dims))
    if query_mask is not None:
        q = tf.cast(query_mask, tf.bool)
        valid = tf.logical_and(valid, tf.broadcast_to(q[:, :, None], dims))
    return Capture(probs, valid, "layer", tensor=weights)


def softmax_capture(result: Any, axis: int | None, mask: Any = None) -> Capture | None:
    """The capture of one softmax ``result`` over ``axis`` (None: the last), or None
    when it is no distribution over keys of a batch (fewer than 2 axes, over the batch
    axis, not float). Every key is valid unless ``mask`` (a ``Softmax`` layer's,
    broadcastable to ``result``; true or above 0.5: the key counts) says otherwise."""
    rank = result.shape.rank
    if rank is None or rank < 2 or not result.dtype.is_floating:
        return None
    axis = rank - 1 if axis is None else int(axis)
    if not -rank <= axis < rank:
        return None
    axis %= rank
    if axis == 0:
        return None
    probs = _rows(result, axis)
    shape = tf.shape(probs)
    if mask is None:
        valid = tf.ones(tf.stack([shape[0], shape[2], shape[3]]), dtype=tf.bool)
    else:
        m = mask if mask.dtype == tf.bool else tf.greater(tf.cast(mask, tf.float32), 0.5)
        m = tf.broadcast_to(m, tf.shape(result))
        m.set_shape(result.shape)
        valid = tf.reduce_all(_rows(m, axis), axis=1)  # every head's mask must allow the key
    return Capture(probs, valid, "softmax", tensor=result, output="softmax")


def _rows(t: Any, axis: int) -> Any:
    """``t`` laid out as ``(batch, heads, queries, keys)``: ``axis`` last as the keys, the
    other non-batch axes flattened into queries under one head (a 4-D tensor normalised
    over its last axis keeps axis 1 as heads)."""
    rank = t.shape.rank
    if rank == 4 and axis == 3:  # (B, H, T, S): a hand-written multi-head attention
        return t
    others = [d for d in range(1, rank) if d != axis]
    moved = tf.transpose(t, [0, *others, axis]) if axis != rank - 1 else t
    static = [t.shape[d] for d in others]
    dims = tf.shape(t)
    queries: Any = (
        math.prod(int(d) for d in static)
        if all(d is not None for d in static)
        else tf.reduce_prod(tf.gather(dims, others))
    )
    keys = t.shape[axis] if t.shape[axis] is not None else dims[axis]
    out = tf.reshape(moved, tf.stack([dims[0], 1, queries, keys]))
    out.set_shape([t.shape[0], 1, queries if isinstance(queries, int) else None, t.shape[axis]])
    return out


def output_operations(model: Any) -> set[int]:
    """Ids of the operations whose outputs are the model's own, in nested models too (a
    subclassed model: the model itself): their softmax is the model's answer (a
    classifier's), not attention."""
    graph = ka.graph_of(model)
    if graph is None:
        return {id(model)}
    out: set[int] = set()
    for x in graph.outputs:
        op = ka.producer(x)
        out.add(id(op))
        if ka.is_graph_model(op):
            out |= output_operations(op)
    return out


@contextlib.contextmanager
def softmax_observed(seen: Callable[[Any, int | None], None]) -> Iterator[None]:
    """For the duration of the block, every ``tf.nn.softmax`` (``tf.math.softmax``)
    call made on this thread reports ``seen(result, axis)`` after it ran; its result is
    returned unchanged. Restores the functions exactly, nested blocks included."""
    original = tf.nn.softmax
    owner = threading.get_ident()

    def softmax(logits: Any, axis: int | None = None, name: str | None = None) -> Any:
        result = original(logits, axis=axis, name=name)
        if threading.get_ident() == owner:
            seen(result, axis)
        return result

    homes = [m for m in (tf.nn, tf.math) if getattr(m, "softmax", None) is original]
    for m in homes:
        m.softmax = softmax
    try:
        yield
    finally:
        for m in homes:
            m.softmax = original
