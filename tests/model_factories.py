"""Small, seeded models covering what makes intermediate outputs hard to get right.

Each factory builds a fresh model from a fixed seed. The tests never load these
from disk unless they save them first; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

from kerinspect.engine.tfenv import import_keras

keras = import_keras()
layers = keras.layers


def _seed() -> None:
    keras.utils.set_random_seed(7)


def mlp() -> keras.Model:
    _seed()
    x = keras.Input((6,), name="x")
    h = layers.Dense(8, activation="relu", name="hidden")(x)
    return keras.Model(x, layers.Dense(3, name="out")(h), name="mlp")


def shared() -> keras.Model:
    """One Dense used at three places, including on its own output."""
    _seed()
    x = keras.Input((5,), name="x")
    d = layers.Dense(5, activation="tanh", name="shared")
    a = d(x)
    b = d(a)
    c = d(layers.Add(name="mix")([a, b]))
    return keras.Model(x, layers.Dense(2, name="head")(c), name="shared_model")


def nested() -> keras.Model:
    """A Functional model and a Sequential one inside an outer model; the
    Functional one is called twice and reuses inner names of the outer model."""
    _seed()
    ii = keras.Input((4,))
    inner_f = keras.Model(ii, layers.Dense(4, activation="relu", name="dense")(
        layers.Dense(6, name="proj")(ii)), name="block")
    inner_s = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="dense"),
                                layers.BatchNormalization(name="bn")], name="seq")
    x = keras.Input((4,), name="x")
    h = inner_f(x)
    h = inner_f(layers.Dense(4, name="dense")(h))
    return keras.Model(x, inner_s(h), name="nested_model")


def deep_nested() -> keras.Model:
    """A model inside a model inside a model."""
    _seed()
    i1 = keras.Input((3,))
    level2 = keras.Model(i1, layers.Dense(3, name="leaf")(i1), name="level2")
    i2 = keras.Input((3,))
    level1 = keras.Model(i2, layers.Dense(3, name="mid")(level2(i2)), name="level1")
    x = keras.Input((3,), name="x")
    return keras.Model(x, level1(x), name="deep")


def rnn_states() -> keras.Model:
    """LSTM and GRU returning states, a Bidirectional LSTM with states."""
    _seed()
    x = keras.Input((7, 3), name="seq")
    o, h, c = layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")(x)
    g, gs = layers.GRU(3, return_state=True, name="gru")(o)
    bi = layers.Bidirectional(layers.LSTM(2, return_state=True), name="bi")(o)
    out = layers.Concatenate(name="cat")([g, gs, h, c] + list(bi))
    return keras.Model(x, out, name="rnn_states")


def attention() -> keras.Model:
    """Embedding + MultiHeadAttention returning scores, with raw keras.ops calls."""
    _seed()
    t = keras.Input((9,), dtype="int32", name="tokens")
    e = layers.Embedding(30, 8, name="emb")(t)
    att, scores = layers.MultiHeadAttention(2, 4, name="mha")(e, e, return_attention_scores=True)
    h = keras.ops.add(e, att)
    h = keras.ops.tanh(h)
    h = layers.LayerNormalization(name="ln")(h)
    return keras.Model(t, [layers.GlobalAveragePooling1D(name="pool")(h), scores], name="attn")


def masked() -> keras.Model:
    """Integer input with mask_zero: the mask must reach the LSTM as in Keras."""
    _seed()
    t = keras.Input((6,), dtype="int32", name="ids")
    e = layers.Embedding(12, 4, mask_zero=True, name="emb")(t)
    h = layers.LSTM(3, name="lstm")(e)
    return keras.Model(t, layers.Dense(2, name="out")(h), name="masked")


def inference_mode() -> keras.Model:
    """Dropout and BatchNorm: different in training; must run in inference mode."""
    _seed()
    x = keras.Input((8, 8, 2), name="img")
    h = layers.Conv2D(4, 3, name="conv")(x)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Dropout(0.5, name="drop")(h)
    h = layers.GaussianNoise(1.0, name="noise")(h)
    return keras.Model(x, layers.Flatten(name="flat")(h), name="inference_mode")


def multi_io() -> keras.Model:
    """Two inputs of different dtypes and two outputs."""
    _seed()
    a = keras.Input((4,), name="numbers")
    b = keras.Input((3,), dtype="int32", name="ids")
    e = layers.Flatten(name="flat")(layers.Embedding(5, 2, name="emb")(b))
    h = layers.Concatenate(name="cat")([a, e])
    return keras.Model([a, b], [layers.Dense(2, name="o1")(h), layers.Dense(1, name="o2")(h)],
                       name="multi_io")


def dynamic() -> keras.Model:
    """A dynamic time axis."""
    _seed()
    x = keras.Input((None, 3), name="x")
    return keras.Model(x, layers.Dense(2, name="d")(x), name="dynamic")


def sequential_no_input() -> keras.Model:
    """A Sequential model defined without Input, built later by a call."""
    _seed()
    m = keras.Sequential([layers.Dense(4, activation="relu", name="a"), layers.Dense(2, name="b")],
                         name="seq_late")
    m.build((None, 5))
    return m


def nan_at(layer: str = "second") -> keras.Model:
    """NaN starts at ``second`` (a NaN bias) and flows into ``third``."""
    _seed()
    x = keras.Input((4,), name="x")
    first = layers.Dense(4, name="first")
    second = layers.Dense(4, name="second")
    third = layers.Dense(2, name="third")
    m = keras.Model(x, third(second(first(x))), name="nan_model")
    k, b = second.get_weights()
    b[1] = np.nan
    second.set_weights([k, b])
    return m


def dead_units() -> keras.Model:
    _seed()
    x = keras.Input((4,), name="x")
    d = layers.Dense(8, activation="relu", name="dying")
    m = keras.Model(x, layers.Dense(1, name="out")(d(x)), name="dead")
    k, b = d.get_weights()
    b[:6] = -100.0
    d.set_weights([k, b])
    return m


def exploding() -> keras.Model:
    _seed()
    x = keras.Input((4,), name="x")
    d = layers.Dense(4, name="big")
    m = keras.Model(x, layers.Dense(2, name="out")(d(x)), name="exploding")
    k, b = d.get_weights()
    d.set_weights([k * 1e5, b])
    return m


ALL = {
    "mlp": mlp,
    "shared": shared,
    "nested": nested,
    "deep_nested": deep_nested,
    "rnn_states": rnn_states,
    "attention": attention,
    "masked": masked,
    "inference_mode": inference_mode,
    "multi_io": multi_io,
    "dynamic": dynamic,
    "sequential_no_input": sequential_no_input,
    "nan_at": nan_at,
    "dead_units": dead_units,
    "exploding": exploding,
}
