"""Legacy .h5 files written by Keras 2 (tf.keras): upgraded config, same numbers
as the official Keras 2 loader (tf_keras)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import kerinspect
from kerinspect.engine.legacy import is_legacy, upgrade_config
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
    assert changes == ("rnn-time-major",) and "time_major" not in new["config"]["layer"]["config"]
    rnn["config"]["layer"]["config"]["time_major"] = True
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
        res = sub.predict(list(inputs) if len(inputs) > 1 else inputs[0], verbose=0)
        return [np.asarray(r) for r in (res if isinstance(res, list) else [res])]

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
    assert sorted(layers) == sorted(reference), what
    for path, arrays in reference.items():
        outs = layers[path].outputs
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
