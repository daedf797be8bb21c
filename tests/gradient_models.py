"""Seeded models whose gradients vanish, explode or neither, shared by the gradient tests
(``tests/test_gradients.py``, ``tests/test_gradient_check.py``)."""

from __future__ import annotations

CLASSES = 3


def mlp(keras, activation, depth, name, head=(CLASSES, "softmax")):
    """Input ``x`` (8 features) -> ``depth`` Dense(32, ``activation``) layers ``d0``... ->
    a Dense head ``out`` (``head``: units, activation)."""
    keras.utils.set_random_seed(3)
    x = keras.Input((8,), name="x")
    h = x
    for i in range(depth):
        h = keras.layers.Dense(32, activation=activation, name=f"d{i}")(h)
    return keras.Model(x, keras.layers.Dense(head[0], activation=head[1], name="out")(h), name=name)


def sigmoid(keras):
    """12 Dense sigmoid layers (Glorot weights): gradients vanish on the early layers."""
    return mlp(keras, "sigmoid", 12, "sigmoid")


def exploding(keras):
    """6 ReLU layers, ``d3``'s kernel scaled up 1e4 times, a regression head (a softmax
    would saturate on the scaled activations and hide the rest): gradients explode from
    ``d2`` (``d3``'s kernel multiplies the gradient reaching ``d2``'s output) down."""
    model = mlp(keras, "relu", 6, "exploding", head=(1, None))
    kernel = model.get_layer("d3").kernel
    kernel.assign(kernel.numpy() * 1e4)
    return model


def healthy(keras):
    """3 ReLU layers and a softmax head: flagged nowhere."""
    return mlp(keras, "relu", 3, "healthy")
