"""Build the committed sample models, deterministically (``make sample-models``).

Each model is small (the whole folder stays well under 2 MB) and shows one thing
kerinspect is for. Weights come from a fixed seed; the .keras archives are
rewritten with fixed timestamps so that re-running this script reproduces them
byte for byte and ``git status`` stays clean.
"""

from __future__ import annotations

import io
import json
import os
import sys
import warnings
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # custom_layers.py

from kerinspect.engine.tfenv import import_keras  # noqa: E402

keras = import_keras()
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXED_TIME = (2026, 1, 1, 0, 0, 0)


def cnn() -> keras.Model:
    """A small image classifier: Conv/BatchNorm/Pool blocks and a dense head."""
    x = keras.Input((16, 16, 3), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    h = layers.BatchNormalization(name="bn1")(h)
    h = layers.MaxPooling2D(name="pool1")(h)
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dropout(0.2, name="dropout")(h)
    out = layers.Dense(10, activation="softmax", name="logits")(h)
    return keras.Model(x, out, name="cnn")


def attention() -> keras.Model:
    """A one-block transformer encoder over token ids, returning attention weights too."""
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    positions = keras.Input((12,), dtype="int32", name="positions")
    emb = layers.Embedding(50, 16, name="embedding")(tokens)
    pos = layers.Embedding(12, 16, name="position")(positions)
    h = layers.Add(name="add_position")([emb, pos])
    att, scores = layers.MultiHeadAttention(num_heads=2, key_dim=8, name="self_attention")(
        h, h, return_attention_scores=True
    )
    h = layers.LayerNormalization(name="norm1")(layers.Add(name="residual1")([h, att]))
    ff = layers.Dense(32, activation="gelu", name="ffn_in")(h)
    ff = layers.Dense(16, name="ffn_out")(ff)
    h = layers.LayerNormalization(name="norm2")(layers.Add(name="residual2")([h, ff]))
    pooled = layers.GlobalAveragePooling1D(name="pool")(h)
    out = layers.Dense(3, activation="softmax", name="classes")(pooled)
    return keras.Model([tokens, positions], [out, scores], name="attention")


def transformer() -> keras.Model:
    """Custom layers (``custom_layers.py``): a token+position embedding and a
    transformer block whose MultiHeadAttention is called without asking for scores.
    Head 1's query and key projections are sharpened so that the two heads differ."""
    from custom_layers import TokenAndPositionEmbedding, TransformerBlock

    tokens = keras.Input((10,), dtype="int32", name="tokens")
    h = TokenAndPositionEmbedding(10, 40, 16, name="embed")(tokens)
    block = TransformerBlock(16, 2, 32, name="block")
    h = block(h)
    pooled = layers.GlobalAveragePooling1D(name="pool")(h)
    model = keras.Model(tokens, layers.Dense(2, activation="softmax", name="classes")(pooled), name="transformer")
    for projection in (block.att._query_dense, block.att._key_dense):
        kernel, bias = projection.get_weights()
        kernel[:, 1, :] *= 60.0  # head 1 attends sharply
        projection.set_weights([kernel, bias])
    return model


def attention_kinds() -> keras.Model:
    """Attention as LSTM-era and hand-written models hold it, none of it
    MultiHeadAttention: Luong ``Attention`` over padded tokens, causal Bahdanau
    ``AdditiveAttention``, a custom ``AttentionPooling`` (``keras.ops.softmax`` inside
    ``call``, ``custom_layers.py``), and the Keras 2 pattern ``Dense(1, tanh) -> Flatten ->
    Activation('softmax') -> RepeatVector -> Permute -> Multiply``."""
    from custom_layers import AttentionPooling

    tokens = keras.Input((12,), dtype="int32", name="tokens")
    h = layers.Embedding(50, 16, mask_zero=True, name="embed")(tokens)
    luong = layers.Attention(name="luong")([h, h])
    bahdanau = layers.AdditiveAttention(name="bahdanau")([h, h], use_causal_mask=True)
    pooled = AttentionPooling(name="pool")(luong)
    score = layers.Flatten(name="flat")(layers.Dense(1, activation="tanh", name="score")(bahdanau))
    weights = layers.Activation("softmax", name="time_weights")(score)
    spread = layers.Permute((2, 1), name="permute")(layers.RepeatVector(16, name="repeat")(weights))
    summed = layers.GlobalAveragePooling1D(name="mean")(layers.Multiply(name="weighted")([bahdanau, spread]))
    merged = layers.Concatenate(name="merge")([pooled, summed])
    model = keras.Model(tokens, layers.Dense(3, activation="softmax", name="classes")(merged), name="attention_kinds")
    embed = model.get_layer("embed")
    embed.set_weights([embed.get_weights()[0] * 40.0])  # Luong's dot scores: sharp, each token on itself
    return model


def lstm_state() -> keras.Model:
    """An LSTM that returns its states (three outputs from one layer call)."""
    seq = keras.Input((None, 4), name="sequence")
    out, h, c = layers.LSTM(8, return_sequences=True, return_state=True, name="lstm")(seq)
    last = layers.GRU(6, name="gru")(out)
    merged = layers.Concatenate(name="concat")([last, h, c])
    return keras.Model(seq, layers.Dense(2, name="head")(merged), name="lstm_state")


def nested_shared() -> keras.Model:
    """A Sequential encoder used as a layer, and one Dense called at two places."""
    encoder = keras.Sequential(
        [keras.Input((6,)), layers.Dense(8, activation="relu", name="enc_dense"),
         layers.Dense(4, activation="tanh", name="enc_out")],
        name="encoder",
    )
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    shared = layers.Dense(6, activation="relu", name="shared")
    za = encoder(shared(a))
    zb = encoder(shared(b))
    out = layers.Dense(1, name="score")(layers.Concatenate(name="pair")([za, zb]))
    return keras.Model([a, b], out, name="nested_shared")


def nan_model() -> keras.Model:
    """A model whose second Dense has a NaN bias (a corrupted checkpoint): NaN starts there."""
    x = keras.Input((8,), name="features")
    h = layers.Dense(16, activation="relu", name="dense_ok")(x)
    bad = layers.Dense(16, name="dense_nan")
    h = bad(h)
    h = layers.Dense(4, name="after_nan")(h)
    model = keras.Model(x, layers.Softmax(name="probs")(h), name="nan_model")
    kernel, bias = bad.get_weights()
    bias[3] = np.nan
    bad.set_weights([kernel, bias])
    return model


def dead_relu() -> keras.Model:
    """A ReLU layer whose strongly negative biases leave most units dead."""
    x = keras.Input((8,), name="features")
    dense = layers.Dense(32, activation="relu", name="mostly_dead")
    h = dense(x)
    out = layers.Dense(2, name="head")(h)
    model = keras.Model(x, out, name="dead_relu")
    kernel, bias = dense.get_weights()
    bias[:24] = -50.0
    dense.set_weights([kernel, bias])
    return model


def exploding() -> keras.Model:
    """A stack of Dense layers with oversized weights: magnitudes blow up layer by layer."""
    x = keras.Input((8,), name="features")
    h = x
    for i in range(4):
        d = layers.Dense(16, name=f"dense_{i}", kernel_initializer=keras.initializers.RandomNormal(stddev=4.0))
        h = d(h)
    return keras.Model(x, h, name="exploding")


def legacy_mlp() -> keras.Model:
    """A plain MLP, saved in the legacy HDF5 format."""
    return keras.Sequential(
        [keras.Input((5,), name="x"), layers.Dense(12, activation="relu", name="hidden"),
         layers.Dense(3, activation="softmax", name="out")],
        name="legacy_mlp",
    )


def classifier() -> keras.Model:
    """A small MLP classifier: the float32 side of the ``kerinspect diff`` pair."""
    x = keras.Input((24,), name="features")
    h = layers.Dense(64, activation="relu", name="fc1")(x)
    h = layers.LayerNormalization(name="norm")(h)
    h = layers.Dense(64, activation="gelu", name="fc2")(h)
    h = layers.Dropout(0.1, name="dropout")(h)
    h = layers.Dense(32, activation="relu", name="fc3")(h)
    out = layers.Dense(5, activation="softmax", name="classes")(h)
    return keras.Model(x, out, name="classifier")


def classifier_int8() -> keras.Model:
    """``classifier`` (the same seed, so the same weights) after ``model.quantize("int8")``
    (its Dense layers): ``kerinspect diff classifier.keras classifier_int8.keras``.
    (A quantized MultiHeadAttention does not load back in Keras 3.15, hence no
    quantized ``attention``.)"""
    model = classifier()
    with warnings.catch_warnings():  # "Layer InputLayer does not have a `quantize` method"
        warnings.simplefilter("ignore")
        model.quantize("int8")
    return model


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, values 0-16) as
    8-bit pixels (0-255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.minimum(d.images * 16, 255).astype(np.uint8), d.target


def digits() -> keras.Model:
    """A digit classifier trained on real data, its pixels scaled inside the model
    (``Rescaling(1/255)``, as image models are trained): fed ``data/digits/`` as it is,
    a folder of PNGs in one folder per label (written by :func:`write_data`)."""
    images, labels = _digits()
    x = keras.Input((8, 8, 1), name="image")
    h = layers.Rescaling(1 / 255, name="rescale")(x)
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(h)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    out = layers.Dense(10, activation="softmax", name="digit")(h)
    model = keras.Model(x, out, name="digits")
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(images[100:, ..., None].astype("float32"), labels[100:], epochs=8, batch_size=64, verbose=0)
    return model


def _cancer() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return d.data.astype("float32"), d.target, [n.replace(" ", "_") for n in d.feature_names]


def cancer_mlp() -> keras.Model:
    """A tabular classifier trained on real rows (the breast-cancer set, features
    unscaled as users feed them), then broken as a diverged update breaks a layer:
    ``hidden1``'s kernel made negative. Every feature is positive, so hidden1 is 0 on
    every real row (``data/cancer.csv``), while standard-normal synthetic rows, half
    negative, still switch it on: the case where synthetic inputs blame nothing."""
    features, target, _ = _cancer()
    x = keras.Input((features.shape[1],), name="features")
    h = layers.Dense(16, activation="relu", name="hidden1")(x)
    h = layers.Dense(16, activation="relu", name="hidden2")(h)
    out = layers.Dense(1, activation="sigmoid", name="malignant")(h)
    model = keras.Model(x, out, name="cancer_mlp")
    model.compile("adam", "binary_crossentropy")
    model.fit(features[200:], target[200:], epochs=2, batch_size=64, verbose=0)
    kernel, bias = model.get_layer("hidden1").get_weights()
    model.get_layer("hidden1").set_weights([-np.abs(kernel), np.zeros_like(bias)])
    return model


def _sentences(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` generated English sentences of two kinds, with their class: animals at
    rest at home (0), vehicles travelling to a place (1); some with a trailing clause,
    so lengths vary and the shorter ones are padded."""
    rng = np.random.default_rng(seed)
    kinds = (
        (("cat", "dog", "bird", "puppy"), ("sat", "slept", "lay", "waited"), ("mat", "rug", "sofa", "bed")),
        (("car", "bus", "train", "truck"), ("drove", "raced", "went", "rolled"), ("city", "park", "station", "town")),
    )
    preps = (("on", "by", "near"), ("to", "through", "past"))
    tails = ("all day", "at night", "very fast", "in the rain")
    out, labels = [], []
    for _ in range(n):
        k = int(rng.integers(2))
        who, verb, where = (str(rng.choice(words)) for words in kinds[k])
        words = ["the", who, verb, str(rng.choice(preps[k])), "the", where]
        if rng.random() < 0.4:
            words += str(rng.choice(tails)).split()
        out.append(" ".join(words))
        labels.append(k)
    return out, np.asarray(labels)


def text_attention() -> keras.Model:
    """A text classifier that holds its vocabulary: raw sentences in, through
    ``TextVectorization`` (12 token ids, 0 for padding), an Embedding that masks the
    padding, one MultiHeadAttention block, average pooling and a 2-way softmax,
    trained on generated sentences (``data/sentences.txt`` holds held-out ones)."""
    sentences, labels = _sentences(400, seed=7)
    vectorize = layers.TextVectorization(max_tokens=64, output_sequence_length=12, name="vectorize")
    vectorize.adapt(sentences)
    text = keras.Input((1,), dtype="string", name="text")
    ids = vectorize(text)
    h = layers.Embedding(64, 16, mask_zero=True, name="embedding")(ids)
    att = layers.MultiHeadAttention(num_heads=2, key_dim=8, name="self_attention")(h, h)
    h = layers.LayerNormalization(name="norm")(layers.Add(name="residual")([h, att]))
    pooled = layers.GlobalAveragePooling1D(name="pool")(h)
    out = layers.Dense(2, activation="softmax", name="kind")(pooled)
    model = keras.Model(text, out, name="text_attention")
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    import tensorflow as tf

    model.fit(tf.constant(sentences)[:, None], labels, epochs=6, batch_size=32, verbose=0)
    return model


def write_data(out_dir: str) -> None:
    """``data/``: what users have, for the README's "Your data" examples: 40 held-out
    digits as 32x32 grayscale PNGs in one folder per label (``data/digits/3/...``),
    200 held-out breast-cancer rows as a CSV with a header and a ``target`` column, and
    19 of them with a cell lost (the README's bad-data example), and 40 held-out
    sentences for ``text_attention.keras``, one a line (the last with unseen words), and
    96 held-out digits as TFRecord shards (:func:`write_shards`)."""
    import csv

    import tensorflow as tf

    images, labels = _digits()
    for i in range(40):  # held out: the model was trained on images[100:]
        folder = os.path.join(out_dir, "data", "digits", str(labels[i]))
        os.makedirs(folder, exist_ok=True)
        big = np.kron(images[i], np.ones((4, 4), np.uint8))[..., None]
        png = tf.io.encode_png(big).numpy()
        with open(os.path.join(folder, f"{i:04d}.png"), "wb") as f:
            f.write(png)
    features, target, names = _cancer()
    with open(os.path.join(out_dir, "data", "cancer.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*names, "target"])
        for row, label in zip(features[:200], target[:200]):
            w.writerow([*(f"{float(v):g}" for v in row), int(label)])
    with open(os.path.join(out_dir, "data", "cancer.csv")) as f:  # a cell lost on line 14
        head = f.read().splitlines()[:20]
    cells = head[13].split(",")
    cells[4] = ""
    head[13] = ",".join(cells)
    with open(os.path.join(out_dir, "data", "cancer_missing_cell.csv"), "w") as f:
        f.write("\n".join(head) + "\n")
    held_out, _ = _sentences(39, seed=8)
    held_out.append("the kitten sat on the piano")  # two words it never saw: [UNK]
    with open(os.path.join(out_dir, "data", "sentences.txt"), "w") as f:
        f.write("\n".join(held_out) + "\n")
    write_shards(out_dir)
    print(
        f"{os.path.join(out_dir, 'data')}: 40 PNGs, cancer.csv, cancer_missing_cell.csv, sentences.txt, "
        "digits_shards/"
    )


def write_shards(out_dir: str) -> None:
    """``data/digits_shards/``: 96 held-out digits as TFRecord shards of
    ``tf.train.Example`` (the README's "At dataset scale" examples): 3 shards of 32
    records (whole batches), each an ``image`` float feature of 8x8x1 pixels (0-255,
    what ``digits.keras`` takes) and an int64 ``label``."""
    import tensorflow as tf

    images, labels = _digits()
    folder = os.path.join(out_dir, "data", "digits_shards")
    os.makedirs(folder, exist_ok=True)
    for k in range(3):
        with tf.io.TFRecordWriter(os.path.join(folder, f"part-{k:05d}-of-00003.tfrecord")) as w:
            for i in range(32 * k, 32 * (k + 1)):  # held out: the model was trained on images[100:]
                pixels = tf.train.FloatList(value=images[i].ravel().astype(float))
                feature = {
                    "image": tf.train.Feature(float_list=pixels),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])])),
                }
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


MODELS = {
    "cnn.keras": cnn,
    "attention.keras": attention,
    "transformer.keras": transformer,
    "attention_kinds.keras": attention_kinds,
    "lstm_state.keras": lstm_state,
    "nested_shared.keras": nested_shared,
    "nan_model.keras": nan_model,
    "dead_relu.keras": dead_relu,
    "exploding.keras": exploding,
    "legacy_mlp.h5": legacy_mlp,
    "classifier.keras": classifier,
    "classifier_int8.keras": classifier_int8,
    "digits.keras": digits,
    "cancer_mlp.keras": cancer_mlp,
    "text_attention.keras": text_attention,
}


def _renumber_shared_ids(node: object, ids: dict[int, int]) -> None:
    """Keras writes ``shared_object_id = id(obj)``, which changes every run; only
    equality matters, so number them in order of appearance."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "shared_object_id" and isinstance(value, int):
                node[key] = ids.setdefault(value, len(ids) + 1)
            else:
                _renumber_shared_ids(value, ids)
    elif isinstance(node, list):
        for value in node:
            _renumber_shared_ids(value, ids)


def _normalize_zip(path: str) -> None:
    """Rewrite a .keras archive with fixed timestamps, no save date, stable ids."""
    with zipfile.ZipFile(path) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            if name == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = "2026-01-01@00:00:00"
                data = json.dumps(meta, sort_keys=True).encode()
            elif name == "config.json":
                config = json.loads(data)
                _renumber_shared_ids(config, {})
                data = json.dumps(config).encode()
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def main(out_dir: str = HERE, only: tuple[str, ...] = ()) -> None:
    for name, build in MODELS.items():
        if only and name not in only:
            continue
        keras.utils.set_random_seed(1234)
        model = build()
        path = os.path.join(out_dir, name)
        model.save(path)
        if name.endswith(".keras"):
            _normalize_zip(path)
        print(f"{path}: {os.path.getsize(path):,} bytes")
    if not only or "data" in only:
        write_data(out_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE, tuple(sys.argv[2:]))
