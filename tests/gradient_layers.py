"""A custom layer with nested sub-layers, registered for ``--custom-objects`` (used by
``tests/test_gradients.py``)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="grad")
class Inner(layers.Layer):
    """tanh of a Dense sub-layer."""

    def __init__(self, units=6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense_b = layers.Dense(units, name="dense_b")

    def call(self, h):
        return ops.tanh(self.dense_b(h))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="grad")
class Block(layers.Layer):
    """A Dense sub-layer, then an :class:`Inner` (itself holding a Dense)."""

    def __init__(self, units=6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense_a = layers.Dense(units, activation="relu", name="dense_a")
        self.inner = Inner(units, name="inner")

    def call(self, x):
        return self.inner(self.dense_a(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
