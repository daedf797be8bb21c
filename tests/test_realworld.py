"""The real-world corpus (``../shared/realworld/wild/``): files other people saved with
other TensorFlow/Keras versions get what its README says a user should get.

Files that ``tf_keras`` (the official Keras 2 loader) opens are inspected through the
worker and match ``tf_keras`` layer by layer; the others fail in one complete line.
Every test skips when the folder is absent (users who clone the project lack it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import kerinspect
from kerinspect.cli import cli
from tests.conftest import REALWORLD
from tests.test_cli import assert_one_line_error
from tests.test_legacy import assert_every_call_matches, tf_keras_calls
from tests.test_legacy import tfk as tfk  # noqa: PLC0414 - the tf_keras fixture, shared

WILD = REALWORLD / "wild"
pytestmark = [
    pytest.mark.realworld,
    pytest.mark.skipif(not WILD.is_dir(), reason="../shared/realworld/wild is absent"),
]

#: README row -> (file, what the upgrade must have done, a class the report must hold)
TF_KERAS_FILES = {
    "szakdogawebapp": ("szakdogawebapp/transformer_model.h5", {"tf-op-layer", "mha-build-shapes"}, "TFOpLambda"),
    "geolife": (
        "geolife-trajectories/transformer_model.h5",
        {"tf-op-layer", "call-tensor-arguments", "mha-build-shapes"},
        "MultiHeadAttention",
    ),
    "exoplanet": (
        "using-ml-for-rapid-validation-of-exoplanet-candidates/transformer_model.keras",
        {"tf-op-layer", "call-tensor-arguments"},
        "MultiHeadAttention",
    ),
    "gru-time-major": ("stpredict_final09/keras_model_gru_3.h5", {"rnn-time-major"}, "GRU"),
}
TEACHABLE = sorted(WILD.glob("teachable-machine-*/keras_model.h5")) if WILD.is_dir() else []


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _inspect_and_compare(tfk, path, tmp_path, samples):
    ref = tfk.models.load_model(path, compile=False)
    x = np.random.default_rng(0).standard_normal((samples, *ref.input_shape[1:])).astype("float32")
    np.save(tmp_path / "x.npy", x)
    report = kerinspect.inspect_model(str(path), str(tmp_path / "x.npy"))
    assert report.model.params == ref.count_params()
    pred = ref.predict(x, verbose=0)
    final = report.layers[-1].outputs[0]
    assert final.shape == pred.shape
    assert final.stats.mean == pytest.approx(float(pred.mean()), rel=2e-3, abs=1e-6)
    assert_every_call_matches(report, tf_keras_calls(tfk, ref, [x]), path.name, rel=2e-3, abs_=1e-5)
    return report


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(TF_KERAS_FILES))
def test_tf_keras_files_inspect_and_match_tf_keras(tfk, key, tmp_path):
    rel, changes, cls = TF_KERAS_FILES[key]
    report = _inspect_and_compare(tfk, WILD / rel, tmp_path, samples=8)
    notes = " ".join(report.model.notes)
    assert report.model.loader == "keras+legacy-h5-upgrade"
    for change in changes:
        assert f"legacy config upgraded: {change}" in notes, (key, report.model.notes)
    assert cls in {r.class_name for r in report.layers}
    if key == "exoplanet":  # HDF5 under a .keras name: read by content, and said so
        assert report.model.format == "h5" and "HDF5 under a .keras name" in report.model.notes[0]


@pytest.mark.slow
@pytest.mark.skipif(not TEACHABLE, reason="no Teachable Machine export in ../shared/realworld")
def test_teachable_machine_export_inspects_and_matches_tf_keras(tfk, tmp_path):
    # the three exports share one architecture; one comparison layer by layer, the
    # others through the CLI (params as tf_keras counts them)
    report = _inspect_and_compare(tfk, TEACHABLE[0], tmp_path, samples=2)
    assert report.layers[0].outputs[0].shape[1:] == (224, 224, 3)
    assert "legacy config upgraded: depthwise-groups" in report.model.notes
    assert sum(r.class_name == "DepthwiseConv2D" for r in report.layers) == 17


@pytest.mark.parametrize(
    "rel, rule, words",
    [
        ("arrhythmia/transformer_model.keras", "unknown-class", ("TransformerBlock", "--custom-objects")),
        ("lamogan-travel-rs/recommender_model.keras", "unknown-class", ("RecommenderNet", "--custom-objects")),
        ("forcasting-icu-vital-sign-deterioration/transformer_model.keras", "unknown-class",
         ("TransformerBlock", "--custom-objects")),
        ("food-recommender/recommendation_model.keras", "unknown-class", ("RecommenderNet",)),
        ("food-recommender/recommendation_model.h5", "unknown-class", ("RecommenderNet",)),
    ],
)
def test_files_needing_code_or_an_old_layout_fail_in_one_line(rel, rule, words):
    line = assert_one_line_error(run("summary", WILD / rel), 4, rule)
    for word in words:
        assert word in line, line


def test_savedmodel_directory_fails_in_one_line():
    path = REALWORLD / "alibi-testing" / "iris-ffn-tf2.2.0-savedmodel"
    if not path.is_dir():
        pytest.skip("no SavedModel in ../shared/realworld")
    line = assert_one_line_error(run("summary", path), 3, "savedmodel")
    assert "SavedModel" in line and "Hint:" in line


# -- files that need the user's class (``--custom-objects``) ------------------------------
# Each class is written here from the README's description of it (registered name,
# config keys, sub-layers in the order the weights file stores them), not copied from
# the repository that saved the model. Keras 3 stores a subclassed model's weights by
# attribute name (``food_embedding/vars/0``) or, for attributes sorted after ``layers``,
# in creation order (``layers/embedding_1``): both must match the file.

TRANSFORMER_BLOCK = '''
import keras
from keras import layers


{decorator}class TransformerBlock(layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim=None, rate=0.1{kwargs}):
        super().__init__({super_kwargs})
        self.embed_dim, self.num_heads, self.ff_dim, self.rate = embed_dim, num_heads, ff_dim, rate
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim or embed_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, x, training=False):
        x = self.layernorm1(x + self.dropout1(self.att(x, x), training=training))
        return self.layernorm2(x + self.dropout2(self.ffn(x), training=training))
'''
ARRHYTHMIA_BLOCK = TRANSFORMER_BLOCK.format(
    decorator='@keras.saving.register_keras_serializable(package="Custom")\n',
    kwargs=", **kwargs", super_kwargs="**kwargs",
) + '''
    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "num_heads": self.num_heads}
'''
#: the ICU file's class as its README describes it: no get_config, no **kwargs
ICU_BLOCK_NO_KWARGS = TRANSFORMER_BLOCK.format(decorator="", kwargs="", super_kwargs="")
ICU_BLOCK = TRANSFORMER_BLOCK.format(decorator="", kwargs=", **kwargs", super_kwargs="**kwargs")

RECOMMENDER = '''
import keras
from keras import layers, ops


{decorator}class RecommenderNet(keras.Model):
    def __init__(self, num_users, {items}, embedding_size, **kwargs):
        super().__init__(**kwargs)
        self.num_users, self.{items}, self.embedding_size = num_users, {items}, embedding_size
        self.user_embedding = layers.Embedding(num_users, embedding_size)
        self.user_bias = layers.Embedding(num_users, 1)
        self.{item}_embedding = layers.Embedding({items}, embedding_size)
        self.{item}_bias = layers.Embedding({items}, 1)
{dense}
    def call(self, inputs):
        user, item = inputs[:, 0], inputs[:, 1]
        x = ops.tensordot(self.user_embedding(user), self.{item}_embedding(item), 2)
        x = x + self.user_bias(user) + self.{item}_bias(item)
        return {head}

    def get_config(self):
        return {{{base}"num_users": self.num_users, "{items}": self.{items}, "embedding_size": self.embedding_size}}
'''
#: Lamogan: undecorated, its get_config does not call super(); passed by name
LAMOGAN_NET = RECOMMENDER.format(decorator="", item="place", items="num_place", dense="", head="ops.sigmoid(x)", base="") + (
    '\ncustom_objects = {"RecommenderNet": RecommenderNet}\n'
)
#: food-recommender: registered as RecomendationLayer>RecommenderNet, with a Dense head
FOOD_NET = RECOMMENDER.format(
    decorator='@keras.saving.register_keras_serializable(package="RecomendationLayer")\n',
    item="food",
    items="num_fooods",
    dense=(
        '        self.dense1 = layers.Dense(128, activation="relu")\n'
        '        self.dense2 = layers.Dense(64, activation="relu")\n'
        '        self.dense3 = layers.Dense(1, activation="sigmoid")\n'
    ),
    head="self.dense3(self.dense2(self.dense1(x)))",
    base="**super().get_config(), ",
)

#: README row -> (file, class source, parameters as the README gives them, one input's shape)
CUSTOM_FILES = {
    "arrhythmia": ("arrhythmia/transformer_model.keras", ARRHYTHMIA_BLOCK, 21_605, (200,)),
    "icu": ("forcasting-icu-vital-sign-deterioration/transformer_model.keras", ICU_BLOCK, 187_690, (6, 30)),
    "lamogan": ("lamogan-travel-rs/recommender_model.keras", LAMOGAN_NET, 10_100, (74, 26)),
    "food": ("food-recommender/recommendation_model.keras", FOOD_NET, 100_184, (589, 318)),
}


def key_is_pairs(shape):
    return shape in ((74, 26), (589, 318))


def _custom_inputs(shape, rng):
    """Eight samples: float features, or (user, item) index pairs below each table's size."""
    if key_is_pairs(shape):
        return np.stack([rng.integers(0, n, 8) for n in shape], axis=1).astype("int32")
    return rng.standard_normal((8, *shape)).astype("float32")


def _keras_reference(keras, path, source):
    """The model as plain Keras loads it with the same class (the class file run here)."""
    import runpy

    namespace = runpy.run_path(str(source))
    objects = namespace.get("custom_objects") or {k: v for k, v in namespace.items() if isinstance(v, type)}
    return keras.saving.load_model(path, custom_objects=objects, compile=False)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(CUSTOM_FILES))
def test_files_needing_a_custom_class_inspect_with_custom_objects(keras, key, tmp_path):
    rel, source_text, params, shape = CUSTOM_FILES[key]
    source = tmp_path / f"{key}_classes.py"
    source.write_text(source_text)
    x = _custom_inputs(shape, np.random.default_rng(0))
    np.save(tmp_path / "x.npy", x)
    result = run("summary", WILD / rel, "--custom-objects", source, "--input", tmp_path / "x.npy", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {r["path"]: r for r in data["layers"]}
    assert data["model"]["params"] == params
    ref = _keras_reference(keras, WILD / rel, source)
    assert ref.count_params() == params
    pred = np.asarray(ref.predict(x, verbose=0), dtype=np.float64)
    final = [r for r in data["layers"] if r["depth"] == 0][-1]["outputs"][0]  # the model's output
    assert tuple(final["shape"]) == pred.shape
    for stat in ("mean", "std", "min", "max"):
        want = float(getattr(pred, stat)())
        assert final["stats"][stat] == pytest.approx(want, rel=2e-3, abs=1e-6), (key, stat)
    if key in ("lamogan", "food"):  # a subclassed model: the layers it calls are its rows
        net = data["layers"][0]
        assert net["class_name"] == "RecommenderNet" and net["depth"] == 0
        inner = [r for r in data["layers"] if r.get("parent") == net["path"]]
        embeddings = [r for r in inner if r["class_name"] == "Embedding"]
        assert sorted(r["outputs"][0]["shape"][1] for r in embeddings) == [1, 1, 100, 100]
        assert sum(r["class_name"] == "Dense" for r in inner) == (3 if key == "food" else 0)
        return
    # a functional model: every top-level layer matches Keras's own output of it, and the
    # layers inside each TransformerBlock are rows, attention probabilities included
    for layer in ref.layers[1:]:
        sub = keras.Model(ref.inputs, layer.output)
        want = np.asarray(sub.predict(x, verbose=0), dtype=np.float64)
        got = rows[layer.name]["outputs"][0]["stats"]
        assert got["mean"] == pytest.approx(float(want.mean()), rel=2e-3, abs=1e-5), layer.name
        assert got["std"] == pytest.approx(float(want.std()), rel=2e-3, abs=1e-5), layer.name
    blocks = [r["path"] for r in data["layers"] if r["class_name"] == "TransformerBlock"]
    assert len(blocks) == (1 if key == "arrhythmia" else 2)
    for block in blocks:
        inside = [r for r in data["layers"] if r["path"].startswith(block + "/")]
        classes = [r["class_name"] for r in inside]
        assert classes.count("LayerNormalization") == 2 and "Sequential" in classes, classes
        (att,) = [r for r in inside if r["class_name"] == "MultiHeadAttention"]
        outs = {o["name"]: o for o in att["outputs"]}
        seq = shape[0]
        assert outs["attention_scores"]["shape"] == [8, 4, seq, seq]
        # softmax over the keys: every row sums to one
        assert outs["attention_scores"]["stats"]["mean"] == pytest.approx(1 / seq, rel=1e-4)


def test_a_custom_init_without_kwargs_fails_in_one_line_with_a_hint(tmp_path):
    """The ICU file's class as saved (no **kwargs): Keras passes ``trainable``; the line
    names the cause and the fix."""
    source = tmp_path / "icu_classes.py"
    source.write_text(ICU_BLOCK_NO_KWARGS)
    rel = CUSTOM_FILES["icu"][0]
    line = assert_one_line_error(run("summary", WILD / rel, "--custom-objects", source), 4, "load-failed")
    assert "TransformerBlock.__init__() got an unexpected keyword argument 'trainable'" in line
    assert "Hint:" in line and "**kwargs" in line and "super().__init__(**kwargs)" in line


def test_a_subclassed_h5_without_constructor_arguments_fails_in_one_line(tmp_path):
    """The food-recommender ``.h5`` stores only name/trainable/dtype for its class: with
    the class given, the line says that no loader can rebuild it."""
    source = tmp_path / "food_classes.py"
    source.write_text(FOOD_NET)
    path = WILD / "food-recommender" / "recommendation_model.h5"
    line = assert_one_line_error(run("summary", path, "--custom-objects", source), 4, "load-failed")
    assert "missing 3 required positional arguments" in line
    assert "no loader can rebuild" in line and "num_fooods" in line


# -- a tf.keras 2.15 .keras archive saved on Windows -------------------------------------

NCF = WILD / "ncf_ner_model" / "ncf_model.keras"


def _slash_copy(src, dst):
    """The archive with its weights file's backslash names written with ``/`` (what
    tf_keras needs to load it; README: 11,297 parameters)."""
    import zipfile

    import h5py

    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    raw = dst.with_suffix(".orig.h5")
    raw.write_bytes(members.pop("model.weights.h5"))
    fixed = dst.with_suffix(".fixed.h5")
    with h5py.File(raw, "r") as f, h5py.File(fixed, "w") as g:
        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                g.create_dataset(name.replace("\\", "/"), data=obj[()])
            else:
                g.require_group(name.replace("\\", "/"))
        f.visititems(copy)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.write(fixed, "model.weights.h5")
    return dst


@pytest.mark.slow
@pytest.mark.skipif(not NCF.is_file(), reason="no ncf_model.keras in ../shared/realworld")
def test_a_keras2_archive_with_windows_weight_paths_matches_tf_keras(tfk, tmp_path):
    ref = tfk.models.load_model(_slash_copy(NCF, tmp_path / "slash.keras"), compile=False)
    assert ref.count_params() == 11_297
    rng = np.random.default_rng(0)
    users, tours = rng.integers(0, 115, (16, 1)), rng.integers(0, 100, (16, 1))
    np.savez(tmp_path / "x.npz", user_input=users.astype("float32"), tour_input=tours.astype("float32"))
    report = kerinspect.inspect_model(str(NCF), str(tmp_path / "x.npz"))  # the original, backslashes and all
    assert report.model.params == 11_297 and report.model.loader == "keras+legacy-archive-upgrade"
    notes = " ".join(report.model.notes)
    assert "legacy config upgraded: keras2-archive" in notes
    assert "legacy config upgraded: windows-weight-paths" in notes
    inputs = [users.astype("float32"), tours.astype("float32")]
    pred = ref.predict(inputs, verbose=0)
    assert report.layers[-1].outputs[0].stats.mean == pytest.approx(float(pred.mean()), rel=2e-3)
    assert_every_call_matches(report, tf_keras_calls(tfk, ref, inputs), NCF.name, rel=2e-3, abs_=1e-5)
    # `weights` reads the same names, as Keras 3 gives them; the training state apart
    weights = run("weights", NCF, "--format", "json")
    assert weights.exit_code == 0, weights.stderr
    data = json.loads(weights.stdout)
    want = {f"{layer.name}/{w.name.split('/')[-1].rsplit(':', 1)[0]}": w.numpy() for layer in ref.layers
            for w in layer.weights}
    assert [w["name"] for w in data["weights"]] == list(want)
    for w in data["weights"]:
        assert w["stats"]["mean"] == pytest.approx(float(want[w["name"]].astype(np.float64).mean()), rel=1e-9)
    assert [v["name"] for v in data["metrics"]] == [
        "metrics/mean/vars/0", "metrics/mean/vars/1", "metrics/mean_metric_wrapper/vars/0",
        "metrics/mean_metric_wrapper/vars/1"]
    assert len(data["optimizer"]) == 21 and "backslashes" in data["warnings"][0]
