"""The TensorFlow side of ``benchmarks/run.py``: build the models, run the baselines.

    python benchmarks/_cases.py build DIR            # the three models, offline, seeded
    python benchmarks/_cases.py floor MODEL SAMPLES BATCH
    python benchmarks/_cases.py naive MODEL SAMPLES BATCH
    python benchmarks/_cases.py capture MODEL SAMPLES BATCH
    python benchmarks/_cases.py images DIR N...      # an image CNN and folders of N JPEGs
    python benchmarks/_cases.py floor-images MODEL FOLDER BATCH
    python benchmarks/_cases.py shards DIR SHARDS PER_SHARD   # digits as TFRecord shards

``floor`` is what any user pays to run a saved model at all: import Keras, load the
file, ``model.predict``. ``capture`` (the "capture floor") is the same model as a
``tf.function`` returning the sum of every layer output: every output materialised and
read once, no statistics (what the compiled engine cannot go below). ``naive`` is the
recipe every blog shows for intermediate outputs (``keras.Model(model.inputs, [l.output for l in model.layers])``), with the
statistics kerinspect reports computed in float64 numpy on every output. Each is
one whole process, timed and measured from outside by ``run.py``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

#: Embedding vocabulary of the encoder (its token inputs are drawn from it).
VOCAB = 8000
#: The custom layers of the "blocks" model (registered on import).
CUSTOM_LAYERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sample_models")
sys.path.insert(0, CUSTOM_LAYERS)


def build(out: str) -> None:
    """ResNet50 (weights=None), a small transformer encoder (functional, and the same
    built from custom transformer blocks) and a stacked LSTM."""
    import keras

    keras.utils.set_random_seed(0)
    keras.applications.ResNet50(weights=None).save(os.path.join(out, "resnet50.keras"))

    seq, width, heads = 128, 128, 4
    x = keras.Input((seq,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCAB, width, name="embed")(x)
    for i in range(4):
        a = keras.layers.MultiHeadAttention(heads, width // heads, name=f"attn{i}")(h, h)
        h = keras.layers.LayerNormalization(name=f"norm{i}a")(keras.layers.Add(name=f"res{i}a")([h, a]))
        f = keras.layers.Dense(4 * width, activation="gelu", name=f"ffn{i}_in")(h)
        f = keras.layers.Dense(width, name=f"ffn{i}_out")(f)
        h = keras.layers.LayerNormalization(name=f"norm{i}b")(keras.layers.Add(name=f"res{i}b")([h, f]))
    y = keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling1D(name="pool")(h))
    keras.Model(x, y, name="encoder").save(os.path.join(out, "encoder.keras"))

    # The same encoder as custom layers (sample_models/custom_layers.py): one row per
    # block without deep capture; every inner call (attention, projections, FFN) with it.
    from custom_layers import TokenAndPositionEmbedding, TransformerBlock

    x = keras.Input((seq,), dtype="int32", name="tokens")
    h = TokenAndPositionEmbedding(seq, VOCAB, width, name="embed")(x)
    for i in range(4):
        h = TransformerBlock(width, heads, 4 * width, name=f"block{i}")(h)
    y = keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling1D(name="pool")(h))
    keras.Model(x, y, name="blocks").save(os.path.join(out, "blocks.keras"))

    x = keras.Input((100, 32), name="sequence")
    h = keras.layers.LSTM(128, return_sequences=True, name="lstm1")(x)
    h = keras.layers.LSTM(128, name="lstm2")(h)
    y = keras.layers.Dense(10, name="head")(h)
    keras.Model(x, y, name="lstm").save(os.path.join(out, "lstm.keras"))


def build_images(out: str, counts: list[int]) -> None:
    """A small CNN on 64x64 RGB (``Rescaling(1/255)`` first, as image models are
    trained) and, for each of ``counts``, a folder ``images_<count>`` of that many 96x96
    JPEGs in 4 label folders, seeded: what a user's ``--input photos/`` looks like,
    decoded and resized by the reader."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    x = keras.Input((64, 64, 3), name="image")
    h = keras.layers.Rescaling(1 / 255, name="rescale")(x)
    for i, width in enumerate((32, 64, 128)):
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}")(h)
        h = keras.layers.MaxPooling2D(name=f"pool{i}")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    y = keras.layers.Dense(4, activation="softmax", name="classes")(h)
    keras.Model(x, y, name="imagecnn").save(os.path.join(out, "imagecnn.keras"))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    for n in counts:
        for i in range(n):
            label = i % 4
            d = os.path.join(out, f"images_{n}", f"class_{label}")
            os.makedirs(d, exist_ok=True)
            base = (np.sin(xx / (6 + 3 * label)) + np.cos(yy / (5 + 2 * label))) * 60 + 128
            img = np.clip(base[..., None] + rng.normal(0, 20, (96, 96, 3)), 0, 255).astype(np.uint8)
            tf.io.write_file(os.path.join(d, f"{i:05d}.jpg"), tf.io.encode_jpeg(img, quality=90))


def build_shards(out: str, shards: int, per_shard: int) -> None:
    """``shards`` TFRecord files of ``per_shard`` ``tf.train.Example`` records each
    (``out/shards/part-00000.tfrecord``...): scikit-learn's bundled digits, cycled, as
    the ``image`` feature (8x8x1 float pixels 0-255) that ``sample_models/digits.keras``
    takes: what ``summary --input 'shards/*.tfrecord'`` reads, with and without Beam."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    images = np.minimum(load_digits().images * 16, 255).astype(np.float32)
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    for k in range(shards):
        with tf.io.TFRecordWriter(os.path.join(out, "shards", f"part-{k:05d}.tfrecord")) as w:
            for i in range(k * per_shard, (k + 1) * per_shard):
                pixels = tf.train.FloatList(value=images[i % len(images)].ravel())
                features = tf.train.Features(feature={"image": tf.train.Feature(float_list=pixels)})
                w.write(tf.train.Example(features=features).SerializeToString())


def floor_images(path: str, folder: str, batch: int) -> None:
    """What a user writes without kerinspect: Keras's own folder reader and ``predict``."""
    import keras

    model = keras.saving.load_model(path, compile=False)
    ds = keras.utils.image_dataset_from_directory(
        folder, image_size=(64, 64), batch_size=batch, shuffle=False, verbose=False
    )
    model.predict(ds, verbose=0)


def inputs_for(model: Any, samples: int) -> list[np.ndarray]:
    """Random inputs of the model's signature (dynamic axes are not used here)."""
    rng = np.random.default_rng(0)
    out = []
    for t in model.inputs:
        shape = (samples, *t.shape[1:])
        if "int" in str(t.dtype):
            out.append(rng.integers(0, VOCAB, shape).astype(str(t.dtype)))
        else:
            out.append(rng.standard_normal(shape).astype(str(t.dtype)))
    return out


def numpy_stats(a: np.ndarray) -> tuple[float, ...]:
    """What one writes by hand: float64 moments of the finite values, zero, NaN and
    Inf counts, and the fraction of units (last axis) that are never non-zero."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    finite = x[np.isfinite(x)]
    dead = float(np.mean(~np.any(a.reshape(-1, a.shape[-1]) != 0, axis=0))) if a.ndim >= 2 else 0.0
    return (
        float(finite.mean()),
        float(finite.std()),
        float(finite.min()),
        float(finite.max()),
        float(np.mean(x == 0)),
        float(np.isnan(x).sum()),
        float(np.isinf(x).sum()),
        dead,
    )


def main(argv: list[str]) -> int:
    what = argv[1]
    if what == "build":
        build(argv[2])
        return 0
    if what == "images":
        build_images(argv[2], [int(n) for n in argv[3:]])
        return 0
    if what == "shards":
        build_shards(argv[2], int(argv[3]), int(argv[4]))
        return 0
    if what == "floor-images":
        floor_images(argv[2], argv[3], int(argv[4]))
        print(f"bench-done {time.time()}", file=sys.stderr, flush=True)
        return 0
    path, samples, batch = argv[2], int(argv[3]), int(argv[4])
    import custom_layers  # noqa: F401 - registers the "blocks" model's classes
    import keras

    model = keras.saving.load_model(path, compile=False)
    x = inputs_for(model, samples)
    if what == "floor":
        model.predict(x, batch_size=batch, verbose=0)
    elif what == "naive":
        every = keras.Model(model.inputs, [layer.output for layer in model.layers])
        outputs = every.predict(x, batch_size=batch, verbose=0)
        stats = [numpy_stats(np.asarray(o)) for o in outputs]
        assert len(stats) == len(model.layers)
    elif what == "capture":  # every layer output materialised, read once (summed), no statistics
        import tensorflow as tf

        every = keras.Model(model.inputs, [layer.output for layer in model.layers])

        @tf.function(autograph=False, reduce_retracing=True)
        def step(xb: Any) -> Any:
            outs = every(xb, training=False)
            return tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32)) for o in outs if o.dtype.is_floating])

        for start in range(0, samples, batch):
            xb = [a[start : start + batch] for a in x]
            float(step(xb if len(xb) > 1 else xb[0]))
    elif what == "train":  # plain training steps' gradients, eagerly: what ``gradients`` adds to
        import tensorflow as tf

        for start in range(0, samples, batch):
            xb = [a[start : start + batch] for a in x]
            with tf.GradientTape() as tape:
                p = model(xb if len(xb) > 1 else xb[0], training=False)
                y = tf.argmax(p, axis=-1)  # the model's own top class, as gradients does without labels
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, p, from_logits=True))
            tape.gradient(loss, model.trainable_weights)
    else:
        raise SystemExit(f"unknown case {what!r}")
    # run.py measures how long the normal exit (interpreter and TensorFlow teardown) takes.
    print(f"bench-done {time.time()}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
