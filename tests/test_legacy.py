"""Legacy .h5 files written by Keras 2 (tf.keras): upgraded config, same numbers
as the official Keras 2 loader (tf_keras)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import kerinspect
from kerinspect.scan.upgrade import is_legacy, upgrade_config
from tests.conftest import REALWORLD

REALWORLD_H5 = sorted(REALWORLD.glob("*/*.h5")) if REALWORLD.is_dir() else []


def test_is_legacy():
    assert is_legacy("2.2.4-tf") and is_legacy("2.18.0") and is_legacy(None) and is_legacy("1.0")
    assert not is_legacy("3.15.1") and not is_legacy("3.0.0")


def test_upgrade_strips_initializer_dtype_only():
    cfg = {"class_name": "Dense", "config": {"dtype": "float32", "kernel_initializer": {
        "class_name": "GlorotUniform", "config": {"seed": None, "dtype": "float32"}}}}
    new, changes = upgrade_config(cfg)
    assert changes == ("initializer-dtype",)
    assert new["config"]["dtype"] == "float32"  # the layer's own dtype is kept
    assert "dtype" not in new["config"]["kernel_initializer"]["config"]
    assert "dtype" in cfg["config"]["kernel_initializer"]["config"]  # input untouched


def _functional(layers, outputs):
    return {"class_name": "Model", "config": {"name": "outer", "layers": layers,
                                              "input_layers": [["in", 0, 0]], "output_layers": outputs}}


def test_upgrade_shifts_nested_model_node_indices_that_start_at_one():
    nested = {"class_name": "Model", "name": "enc", "config": {"name": "enc", "layers": []},
              "inbound_nodes": [[["in", 0, 0, {}]]]}
    dense = {"class_name": "Dense", "name": "d", "config": {}, "inbound_nodes": [[["enc", 1, 0, {}]]]}
    new, changes = upgrade_config(_functional([nested, dense], [["enc", 2, 0]]))
    assert changes == ("nested-node-index",)
    layers = new["config"]["layers"]
    assert layers[1]["inbound_nodes"] == [[["enc", 0, 0, {}]]]
    assert new["config"]["output_layers"] == [["enc", 1, 0]]
    # references that already start at 0 (Keras 3 files) are left alone
    dense0 = {**dense, "inbound_nodes": [[["enc", 0, 0, {}]]]}
    _, changes = upgrade_config(_functional([nested, dense0], [["d", 0, 0]]))
    assert changes == ()


def test_upgrade_drops_only_a_false_time_major():
    rnn = {"class_name": "Bidirectional", "config": {"layer": {"class_name": "LSTM",
                                                               "config": {"units": 2, "time_major": False}}}}
    new, changes = upgrade_config(rnn)
    # (Keras 2.12 and older wrote the wrapped layer without its module: Keras 3 needs it)
    assert changes == ("rnn-time-major", "wrapped-layer-module")
    assert "time_major" not in new["config"]["layer"]["config"] and new["config"]["layer"]["module"] == "keras.layers"
    rnn["config"]["layer"]["config"]["time_major"] = True
    rnn["config"]["layer"]["module"] = "keras.layers"  # as tf.keras 2.13+ wrote it
    new, changes = upgrade_config(rnn)
    assert changes == () and new["config"]["layer"]["config"]["time_major"] is True


def test_upgrade_gives_a_sequential_an_explicit_input():
    seq = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Reshape", "config": {"name": "r", "dtype": "float32", "target_shape": [4],
                                            "batch_input_shape": [None, 2, 2]}}]}}
    new, changes = upgrade_config(seq)
    assert changes == ("sequential-input",)
    first, second = new["config"]["layers"]
    assert first == {"class_name": "InputLayer", "config": {"batch_shape": [None, 2, 2],
                                                          "dtype": "float32", "name": "r_input"}}
    assert "batch_input_shape" not in second["config"]


@pytest.fixture(scope="module")
def tfk(keras):
    """tf_keras (Keras 2), the official loader the legacy path is compared with. A
    developer without it skips; CI (``CI=true``) must have it: a missing reference
    there is a failure, never a silent skip."""
    try:
        import tf_keras
    except ImportError:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("tf_keras is missing in CI: install the dev extras (pip install -e '.[dev]')")
        pytest.skip("tf_keras is not installed (pip install -e '.[dev]')")
    return tf_keras


def tf_keras_calls(tfk, model, inputs, prefix=""):
    """``{path: [arrays]}`` for every call of every layer of a tf_keras model, nested
    models included, named as kerinspect names them (``shared@1``, ``encoder/enc_d``).

    Public tf_keras API only: each call's output is taken from a sub-model
    ``Model(model.inputs, layer.get_output_at(k))``; a node that is not connected to
    ``model.inputs`` (a nested model's own graph) is not a call of this graph.
    """
    import tensorflow as tf

    def predict(outputs):
        direct = {id(x): v for x, v in zip(model.inputs, inputs)}
        if all(id(o) in direct for o in outputs):
            return [np.asarray(direct[id(o)]) for o in outputs]
        sub = tfk.Model(model.inputs, outputs)
        # called, not ``predict``: the same forward pass in inference mode, without
        # tracing a predict function per sub-model (about 1 s each)
        res = sub(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        return [np.asarray(r) for r in (res if isinstance(res, (list, tuple)) else [res])]

    out = {}
    for layer in model.layers:
        if isinstance(layer, tfk.layers.InputLayer):
            continue
        call = 0
        for k in range(len(layer.inbound_nodes)):
            outputs = tf.nest.flatten(layer.get_output_at(k))
            try:
                values = predict(outputs)
            except ValueError:  # "Graph disconnected": a node of another graph
                continue
            path = prefix + layer.name + (f"@{call}" if call else "")
            out[path] = values
            if isinstance(layer, tfk.Model):
                inner = predict(tf.nest.flatten(layer.get_input_at(k)))
                out.update(tf_keras_calls(tfk, layer, inner, prefix=path + "/"))
            call += 1
    return out


def assert_every_call_matches(report, reference, what, rel=1e-4, abs_=1e-6):
    """Every layer call of ``report`` (inputs aside) has a reference output, and its
    statistics are numpy's on that output."""
    layers = {r.path: r for r in report.layers if r.class_name != "InputLayer"}
    # calls made inside a layer (attention's query/key/value projections) have no
    # tf_keras counterpart: they are checked where the layer's own output is
    layers = {p: r for p, r in layers.items() if p in reference or not any(p.startswith(q + "/") for q in reference)}
    assert sorted(layers) == sorted(reference), what
    for path, arrays in reference.items():
        outs = layers[path].outputs
        if len(outs) == len(arrays) + 1 and outs[-1].name == "attention_scores":
            outs = outs[:-1]  # captured by kerinspect; tf_keras returns the output only
        assert len(outs) == len(arrays), (what, path)
        for out, ref in zip(outs, arrays):
            x = ref.astype(np.float64)
            assert out.shape == ref.shape, (what, path, out.name)
            got = out.stats
            assert got.count == x.size and got.nan_count == int(np.isnan(x).sum()), (what, path)
            for key, want in (("mean", x.mean()), ("std", x.std()), ("min", x.min()), ("max", x.max()),
                              ("zero_fraction", np.mean(x == 0))):
                assert getattr(got, key) == pytest.approx(float(want), rel=rel, abs=abs_), (
                    what, path, out.name, key)


def keras2_models(tfk):
    L = tfk.layers
    tfk.utils.set_random_seed(3)
    i = tfk.Input((6,))
    enc = tfk.Model(i, L.Dense(3, activation="relu", name="enc_d")(i), name="encoder")
    j = tfk.Input((3,))
    dec = tfk.Model(j, L.Dense(6, name="dec_d")(j), name="decoder")
    x = tfk.Input((6,), name="x")
    autoenc = tfk.Model(x, dec(enc(x)), name="autoenc")

    cnn = tfk.Sequential([tfk.Input((8, 8, 2)), L.Conv2D(4, 3, activation="relu", name="conv"),
                          L.BatchNormalization(name="bn"), L.Dropout(0.3, name="drop"),
                          L.Flatten(name="flat"), L.Dense(3, activation="softmax", name="out")], name="cnn")

    t = tfk.Input((7,), dtype="int32", name="tokens")
    h = L.Embedding(20, 4, name="emb")(t)
    seq, state_h, _ = L.LSTM(5, return_sequences=True, return_state=True, name="lstm")(h)
    shared = L.Dense(5, activation="tanh", name="shared")
    rnn = tfk.Model(t, L.Concatenate(name="cat")([shared(state_h), shared(L.GlobalAveragePooling1D(name="gap")(seq))]),
                    name="rnn")
    return {"autoenc": autoenc, "cnn": cnn, "rnn": rnn}


def test_keras2_h5_models_match_tf_keras(tfk, tmp_path):
    for name, model in keras2_models(tfk).items():
        path = tmp_path / f"{name}.h5"
        model.save(path)
        shape = (9,) + tuple(model.input_shape[1:])
        rng = np.random.default_rng(1)
        x = rng.integers(0, 20, shape).astype("int32") if name == "rnn" else rng.standard_normal(shape).astype("float32")
        np.save(tmp_path / f"{name}_x.npy", x)
        report = kerinspect.inspect_model(str(path), str(tmp_path / f"{name}_x.npy"), batch_size=4)
        # only what Keras 3 refuses is rewritten, and the report says so
        upgraded = report.model.loader == "keras+legacy-h5-upgrade"
        assert upgraded == (name in ("autoenc", "rnn")), (name, report.model.notes)
        layers = {r.path: r for r in report.layers}
        # every call of every layer, nested models and second calls included, against
        # the same call in tf_keras
        assert_every_call_matches(report, tf_keras_calls(tfk, model, [x]), name)
        final = report.layers[-1].outputs[0].stats
        pred = model.predict(x, verbose=0)
        assert final.mean == pytest.approx(float(np.mean(pred)), rel=1e-4, abs=1e-6), name
        if name == "autoenc":
            assert {"encoder", "encoder/enc_d", "decoder/dec_d"} <= set(layers)
        if name == "rnn":
            assert "shared@1" in layers and [o.name for o in layers["lstm"].outputs] == [
                "output", "state_h", "state_c"]


@pytest.mark.realworld
@pytest.mark.skipif(not REALWORLD_H5, reason="../shared/realworld is absent")
@pytest.mark.parametrize("path", REALWORLD_H5, ids=lambda p: p.name)
def test_realworld_h5_files_inspect_and_match_tf_keras(tfk, path, tmp_path):
    ref_model = tfk.models.load_model(path, compile=False)
    x = np.random.default_rng(0).standard_normal((8,) + tuple(ref_model.input_shape[1:])).astype("float32")
    np.save(tmp_path / "x.npy", x)
    report = kerinspect.inspect_model(str(path), str(tmp_path / "x.npy"))
    assert report.model.loader == "keras+legacy-h5-upgrade"
    assert report.model.params == ref_model.count_params()
    pred = ref_model.predict(x, verbose=0)
    final = report.layers[-1].outputs[0]
    assert final.shape == pred.shape
    assert final.stats.mean == pytest.approx(float(pred.mean()), rel=1e-5, abs=1e-7)
    assert final.stats.max == pytest.approx(float(pred.max()), rel=1e-5, abs=1e-7)
    assert_every_call_matches(report, tf_keras_calls(tfk, ref_model, [x]), path.name, rel=1e-5, abs_=1e-7)
    assert json.loads(json.dumps(report.to_dict()))["model"]["notes"]


# -- tf.keras 2.x attention models, TFOpLambda, old configs --------------------------


def _ref(name):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [], "dtype": "float32", "keras_history": [name, 0, 0]}}


def test_upgrade_drops_keys_keras3_refuses_and_nothing_else():
    mha = {"class_name": "MultiHeadAttention", "config": {"num_heads": 2, "key_dim": 4,
           "query_shape": [None, 5, 8], "key_shape": [None, 5, 8], "value_shape": [None, 5, 8]}}
    dw = {"class_name": "DepthwiseConv2D", "config": {"kernel_size": 3, "groups": 1}}
    dw2 = {"class_name": "DepthwiseConv2D", "config": {"kernel_size": 3, "groups": 2}}
    drop = {"class_name": "Dropout", "config": {"rate": 0.5, "noise_shape": 3}}
    drop_ok = {"class_name": "Dropout", "config": {"rate": 0.5, "noise_shape": [None, 1]}}
    new, changes = upgrade_config({"class_name": "Sequential", "config": {"layers": [mha, dw, dw2, drop, drop_ok]}})
    assert changes == ("mha-build-shapes", "depthwise-groups", "dropout-noise-shape")
    mha2, dw_, dw2_, drop_, drop_ok_ = new["config"]["layers"]
    assert mha2["config"] == {"num_heads": 2, "key_dim": 4}
    assert "groups" not in dw_["config"] and dw2_["config"]["groups"] == 2  # only the no-op value
    assert drop_["config"]["noise_shape"] is None and drop_ok_["config"]["noise_shape"] == [None, 1]


def test_upgrade_turns_keras2_call_references_into_keras3_tensors():
    layers = [
        {"class_name": "InputLayer", "name": "x", "config": {"name": "x"}, "inbound_nodes": []},
        {"class_name": "MultiHeadAttention", "name": "mha", "config": {"name": "mha"},
         "inbound_nodes": [[["x", 0, 0, {"value": ["x", 0, 0], "key": ["x", 0, 0]}]]]},
        {"class_name": "TFOpLambda", "name": "tf.__operators__.add", "config": {"function": "__operators__.add"},
         "inbound_nodes": [["x", 0, 0, {"y": ["mha", 0, 0], "name": None}]]},
        {"class_name": "TFOpLambda", "name": "tf.concat", "config": {"function": "concat"},
         "inbound_nodes": [[["x", 0, 0, {"axis": -1}], ["mha", 0, 0, {"axis": -1}]]]},
        {"class_name": "Dense", "name": "d", "config": {"name": "d"},
         "inbound_nodes": [[["tf.concat", 0, 0, {}]]]},
    ]
    cfg = {"class_name": "Functional", "config": {"name": "m", "layers": layers,
                                                  "input_layers": [["x", 0, 0]], "output_layers": [["d", 0, 0]]}}
    new, changes = upgrade_config(cfg)
    assert changes == ("call-tensor-arguments", "tf-op-layer")
    _, mha, add, concat, dense = new["config"]["layers"]
    assert mha["inbound_nodes"] == [{"args": [_ref("x")], "kwargs": {"value": _ref("x"), "key": _ref("x")}}]
    assert add["inbound_nodes"] == [{"args": [_ref("x")], "kwargs": {"y": _ref("mha"), "name": None}}]
    assert concat["inbound_nodes"] == [{"args": [[_ref("x"), _ref("mha")]], "kwargs": {"axis": -1}}]
    assert dense["inbound_nodes"] == [[["tf.concat", 0, 0, {}]]]  # what Keras 3 reads itself: untouched


def test_scan_tells_a_keras2_tensor_reference_from_a_string_argument():
    from kerinspect.errors import PolicyError
    from kerinspect.scan.policy import scan_config

    def model(kwargs, cls="MultiHeadAttention"):
        return {"class_name": "Functional", "config": {"name": "m", "layers": [
            {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_input_shape": [None, 4, 8]},
             "inbound_nodes": []},
            {"class_name": cls, "name": "mha", "config": {"name": "mha", "num_heads": 1, "key_dim": 2,
                                                          "function": "__operators__.add"},
             "inbound_nodes": [[["x", 0, 0, kwargs]]]}],
            "input_layers": [["x", 0, 0]], "output_layers": [["mha", 0, 0]]}}

    scan_config(model({"value": ["x", 0, 0]}))  # exactly [layer of this graph, int, int]
    scan_config(model({"y": ["x", 0, 0], "name": "add"}, cls="TFOpLambda"))  # an op's own name
    for bad in ({"value": ["/etc/passwd", 0, 0]},  # not a layer of the graph
                {"value": ["x", 0, 0, "/etc/passwd"]},
                {"value": ["x", "0", 0]},
                {"value": ["x", True, 0]},
                {"value": [["x", 0, 0], "/etc/passwd"]},
                {"name": "/etc/passwd"}):  # a name string is a TF op's only
        with pytest.raises(PolicyError, match="node-string-argument|string"):
            scan_config(model(bad))
    # a .keras archive's list-form node gets no such allowance
    from kerinspect.scan.container import Limits, Reporter
    from kerinspect.scan.policy import ConfigScanner

    scanner = ConfigScanner(Limits(), False, frozenset(), Reporter(None), tensor_references=False)
    with pytest.raises(PolicyError):
        scanner.run(model({"value": ["x", 0, 0]}))


def tf_op_model(tfk):
    """A tf.keras 2.x functional model made of raw TF ops and ``mha(x, x)``: every
    op converted, each in the form tf_keras saves it."""
    import tensorflow as tf

    L = tfk.layers
    tfk.utils.set_random_seed(5)
    x = tfk.Input((4, 6), name="x")
    att = L.MultiHeadAttention(2, 3, name="mha")(x, x)
    a = x + 1.0
    b = a * att
    c = tf.math.subtract(b, x) / 2.0
    outs = [
        tf.math.reduce_mean(c, axis=1, keepdims=True), tf.reshape(x, (-1, 24)), tf.transpose(x, perm=[0, 2, 1]),
        tf.concat([x, c], axis=-1), tf.squeeze(tf.expand_dims(x, 1), axis=1), x[:, 1:3, ::2], x[..., 0],
        tf.nn.relu(x) + tf.math.sigmoid(x) - tf.math.exp(-tf.abs(x)), tf.matmul(x, tf.transpose(x, perm=[0, 2, 1])),
        tf.math.reduce_max(x, axis=[1, 2]) + tf.reduce_sum(x, axis=-1)[:, 0], tf.sqrt(tf.square(x) + 1e-3),
        tf.nn.softmax(x, axis=-1) * tf.math.tanh(x), tf.math.maximum(x, 0.5) - tf.math.minimum(x, -0.5),
        tf.math.reduce_min(x, axis=1) * tf.math.reduce_std(x, axis=1),
        L.DepthwiseConv2D(2, name="dw")(tf.expand_dims(x, -1)), L.Dropout(0.5, name="drop")(x),
    ]
    return tfk.Model(x, outs, name="tfops")


def test_tf_op_layers_and_attention_match_tf_keras(tfk, tmp_path):
    model = tf_op_model(tfk)
    path = tmp_path / "tfops.h5"
    model.save(path)
    x = np.random.default_rng(2).standard_normal((5, 4, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    report = kerinspect.inspect_model(str(path), str(tmp_path / "x.npy"))
    notes = set(report.model.notes)
    for change in ("call-tensor-arguments", "tf-op-layer", "depthwise-groups"):
        assert f"legacy config upgraded: {change}" in notes, report.model.notes
    classes = {r.class_name for r in report.layers}
    assert {"TFOpLambda", "SlicingOpLambda", "MultiHeadAttention"} <= classes
    assert_every_call_matches(report, tf_keras_calls(tfk, model, [x]), "tfops", rel=2e-5, abs_=1e-6)


def test_an_op_without_a_conversion_fails_in_one_line_naming_it(tfk, tmp_path):
    import tensorflow as tf
    from click.testing import CliRunner

    from kerinspect.cli import cli
    from tests.test_cli import assert_one_line_error

    x = tfk.Input((4,), name="x")
    path = tmp_path / "cumsum.h5"
    tfk.Model(x, tf.math.cumsum(x, axis=1)).save(path)
    line = assert_one_line_error(CliRunner().invoke(cli, ["summary", str(path)]), 4, "unsupported-tf-op")
    assert "tf.math.cumsum" in line and "Hint:" in line


def test_a_lambda_calling_a_registered_function_loads_with_custom_objects(keras, tmp_path):
    from click.testing import CliRunner

    from kerinspect.cli import cli
    from tests.test_cli import assert_one_line_error

    src = tmp_path / "vae_fns.py"
    src.write_text("import keras\n\n@keras.saving.register_keras_serializable(package='vae')\n"
                   "def sampling(x):\n    return x * 2.0 + 1.0\n")
    import runpy

    fn = runpy.run_path(str(src))["sampling"]
    x = keras.Input((3,))
    model = keras.Model(x, keras.layers.Lambda(fn, output_shape=(3,), name="sample")(x))
    model.save(tmp_path / "vae.keras")
    line = assert_one_line_error(CliRunner().invoke(cli, ["summary", str(tmp_path / "vae.keras")]), 5,
                                 "function-reference")
    assert "--custom-objects" in line
    data = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    np.save(tmp_path / "x.npy", data)
    report = kerinspect.inspect_model(str(tmp_path / "vae.keras"), str(tmp_path / "x.npy"),
                                      load=kerinspect.LoadOptions(custom_objects=str(src)))
    assert report.layers[-1].outputs[0].stats.mean == pytest.approx(float(np.mean(data * 2.0 + 1.0)), rel=1e-5)


def test_a_long_keras_cause_is_kept_whole_with_a_hint():
    from kerinspect.engine.load import known_cause_hint
    from kerinspect.errors import ModelLoadError, whole_sentences

    cause = ("Layer 'block' was never built and thus it doesn't have any variables. " * 12
             + "However the weights file lists 4 variables for this layer. In most cases, this error "
             "indicates that either: 1. The layer is owned by a parent layer that implements a `build()` "
             "method, but calling the parent's `build()` method did NOT create the state of the child "
             "layer 'dense'. A `build()` method must create ALL state for the layer.")
    line = ModelLoadError(f"Keras could not load the model: {cause} Received: path=m.keras",
                          hint=known_cause_hint(cause)).one_line()
    assert "A `build()` method must create ALL state for the layer. Received: path=m.keras" in line
    assert "Hint: a custom layer creates sub-layers" in line
    cut = whole_sentences("First sentence here. " * 100, limit=100)
    assert cut.endswith("here. [...]") and len(cut) < 110
    assert "Python" in str(known_cause_hint("bad marshal data (unknown type code)"))
    assert "**kwargs" in known_cause_hint("TransformerBlock.__init__() got an unexpected keyword argument 'trainable'")
    missing = known_cause_hint("RecommenderNet.__init__() missing 2 required positional arguments: 'num_users' "
                               "and 'embedding_size'")
    assert missing.startswith("the file stores no value for 'num_users' and 'embedding_size', which "
                              "RecommenderNet.__init__ requires") and "no loader can rebuild" in missing
    assert "'units'" in known_cause_hint("Block.__init__() missing 1 required keyword-only argument: 'units'")


# -- tf.keras 2.13-2.15 / tf_keras .keras archives ------------------------------------


def _windows_layout(path, out):
    """``path`` with its weights file as tf.keras on Windows wrote it: every group that
    holds variables at the root, its path joined with backslashes (``layers\\dense``)."""
    import h5py

    from tests.hostile import members, write_zip

    content = members(path)
    src, dst = out.with_suffix(".src.h5"), out.with_suffix(".win.h5")
    src.write_bytes(content["model.weights.h5"])
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        def move(name, obj):
            if isinstance(obj, h5py.Group) and "vars" in obj:
                f.copy(obj["vars"], g.require_group(name.replace("/", "\\")), name="vars")
        f.visititems(move)
        if "vars" in f:
            f.copy(f["vars"], g, name="vars")
        assert any("\\" in k for k in g.keys())
    write_zip(out, {**content, "model.weights.h5": dst.read_bytes()})
    return out


def test_keras2_archives_match_tf_keras(tfk, tmp_path):
    """A ``.keras`` archive written by tf_keras (the format of tf.keras 2.13-2.15): its
    Keras 2 config is upgraded, Keras 3 reads its weights, every call matches tf_keras;
    also with the weights file's names joined with backslashes (saved on Windows)."""
    for name, model in keras2_models(tfk).items():
        path = tmp_path / f"{name}.keras"
        model.save(path)
        shape = (9,) + tuple(model.input_shape[1:])
        rng = np.random.default_rng(1)
        x = rng.integers(0, 20, shape).astype("int32") if name == "rnn" else rng.standard_normal(shape).astype("float32")
        np.save(tmp_path / f"{name}_x.npy", x)
        reference = tf_keras_calls(tfk, model, [x])
        for variant in (path, _windows_layout(path, tmp_path / f"{name}_windows.keras")):
            report = kerinspect.inspect_model(str(variant), str(tmp_path / f"{name}_x.npy"), batch_size=4)
            assert report.model.loader == "keras+legacy-archive-upgrade", name
            notes = set(report.model.notes)
            assert "legacy config upgraded: keras2-archive" in notes
            assert ("legacy config upgraded: windows-weight-paths" in notes) == (variant != path), notes
            assert report.model.params == model.count_params()
            assert_every_call_matches(report, reference, f"{name} {variant.name}")

