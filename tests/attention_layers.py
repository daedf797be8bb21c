"""Custom attention layers as people write them (a softmax inside ``call``), registered
for ``--custom-objects`` (used by ``tests/test_attention_kinds.py``)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kinds")
class OpsSoftmaxAttention(layers.Layer):
    """The LSTM-era pattern: a score per time step, ``keras.ops.softmax`` over time, a
    weighted sum; no sub-layers."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 1), initializer="glorot_uniform", name="w")
        self.b = self.add_weight(shape=(1,), initializer="zeros", name="b")

    def call(self, x):
        e = ops.tanh(ops.matmul(x, self.w) + self.b)  # (B, T, 1)
        a = ops.softmax(e, axis=1)  # over time: the keys
        return ops.sum(x * a, axis=1)


@keras.saving.register_keras_serializable(package="kinds")
class SubLayerAttention(layers.Layer):
    """Scaled dot-product self-attention whose probabilities come from a ``Softmax``
    sub-layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.softmax = layers.Softmax(axis=-1, name="softmax")

    def call(self, x):
        scores = ops.matmul(x, ops.transpose(x, (0, 2, 1))) / ops.sqrt(ops.cast(ops.shape(x)[-1], x.dtype))
        return ops.matmul(self.softmax(scores), x)


@keras.saving.register_keras_serializable(package="kinds")
class CausalSoftmaxAttention(layers.Layer):
    """Dot-product self-attention whose ``Softmax`` sub-layer gets a causal ``mask``
    (keras-hub's decoder layers pass theirs the same way)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.softmax = layers.Softmax(axis=-1, name="softmax")

    def call(self, x):
        steps = ops.arange(ops.shape(x)[1])
        causal = ops.greater_equal(steps[:, None], steps[None, :])
        scores = ops.matmul(x, ops.transpose(x, (0, 2, 1)))
        return ops.matmul(self.softmax(scores, mask=causal[None]), x)
