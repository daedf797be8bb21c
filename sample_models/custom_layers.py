"""The custom layers of ``transformer.keras`` and ``attention_kinds.keras``: pass this
file to ``--custom-objects``.

A token-and-position embedding and a transformer block, as in the Keras code
example "Text classification with Transformer", and an attention pooling with a
softmax inside its ``call``. All are registered, so loading needs nothing but this file.
"""

from __future__ import annotations

from typing import Any

from kerinspect.engine.tfenv import import_keras

keras = import_keras()
layers = keras.layers


@keras.saving.register_keras_serializable(package="kerinspect_samples")
class TokenAndPositionEmbedding(layers.Layer):
    """Token embedding plus a learned position embedding."""

    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.maxlen, self.vocab_size, self.embed_dim = maxlen, vocab_size, embed_dim
        self.token_emb = layers.Embedding(vocab_size, embed_dim, name="token_emb")
        self.pos_emb = layers.Embedding(maxlen, embed_dim, name="pos_emb")

    def call(self, x: Any) -> Any:
        positions = keras.ops.arange(0, keras.ops.shape(x)[-1], 1)
        return self.token_emb(x) + self.pos_emb(positions)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "maxlen": self.maxlen, "vocab_size": self.vocab_size,
                "embed_dim": self.embed_dim}


@keras.saving.register_keras_serializable(package="kerinspect_samples")
class TransformerBlock(layers.Layer):
    """Self-attention and a feed-forward network, each with a residual and a LayerNorm."""

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, rate: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.embed_dim, self.num_heads, self.ff_dim, self.rate = embed_dim, num_heads, ff_dim, rate
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim, name="att")
        self.ffn = keras.Sequential(
            [layers.Dense(ff_dim, activation="relu", name="ff1"), layers.Dense(embed_dim, name="ff2")],
            name="ffn",
        )
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6, name="layernorm1")
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6, name="layernorm2")
        self.dropout1 = layers.Dropout(rate, name="dropout1")
        self.dropout2 = layers.Dropout(rate, name="dropout2")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        attn_output = self.dropout1(self.att(inputs, inputs), training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.dropout2(self.ffn(out1), training=training)
        return self.layernorm2(out1 + ffn_output)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "rate": self.rate}


@keras.saving.register_keras_serializable(package="kerinspect_samples")
class AttentionPooling(layers.Layer):
    """The LSTM-era attention of many hand-written models: a score per time step,
    ``keras.ops.softmax`` over time inside ``call`` (no sub-layer), a weighted sum."""

    def build(self, input_shape: Any) -> None:
        self.w = self.add_weight(shape=(input_shape[-1], 1), initializer="glorot_uniform", name="w")
        self.b = self.add_weight(shape=(1,), initializer="zeros", name="b")

    def call(self, x: Any) -> Any:
        weights = keras.ops.softmax(keras.ops.tanh(keras.ops.matmul(x, self.w) + self.b), axis=1)
        return keras.ops.sum(x * weights, axis=1)
