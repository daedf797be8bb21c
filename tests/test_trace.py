"""The engine reports every layer call, and each captured tensor equals plain Keras."""

from __future__ import annotations

import numpy as np
import pytest

from kerinspect.engine.events import Visitor
from tests.reference import reference_calls


class Recorder(Visitor):
    def __init__(self):
        self.entered = []
        self.values = {}
        self.sites = {}

    def enter(self, site):
        self.entered.append(site.path)
        self.sites[site.path] = site

    def produced(self, site, tensors):
        self.values[site.path] = [np.asarray(t) for t in tensors]
        self.sites[site.path] = site


def sample_inputs(model, n=5, seed=3):
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    feed = build_feed(model, None, RunSpec(samples=n, batch_size=n, seed=seed))
    return next(feed.batches())


def replay(model, batch):
    from kerinspect.engine.trace import Replayer

    rec = Recorder()
    outputs = Replayer(model, rec)(batch)
    return rec, outputs


MODELS = ["mlp", "shared", "nested", "deep_nested", "rnn_states", "attention", "masked",
          "inference_mode", "multi_io", "dynamic", "sequential_no_input", "nan_at", "dead_units",
          "exploding"]


@pytest.mark.parametrize("name", MODELS)
def test_every_call_matches_plain_keras(factories, name):
    model = factories.ALL[name]()
    batch = sample_inputs(model)
    rec, outputs = replay(model, batch)
    ref = reference_calls(model, batch)
    # graph nodes only: the calls made inside layers are checked in tests/test_deep.py
    got = {p: v for p, v in rec.values.items()
           if rec.sites[p].class_name != "InputLayer" and rec.sites[p].in_graph}
    assert sorted(got) == sorted(ref)
    for path, ref_vals in ref.items():
        assert len(got[path]) == len(ref_vals), path
        for g, r in zip(got[path], ref_vals):
            assert g.shape == r.shape, path
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=path)
    # The final outputs are what model.predict gives on the same inputs.
    pred = model.predict(batch if len(batch) > 1 else batch[0], verbose=0)
    pred = pred if isinstance(pred, list) else [pred]
    flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for p, o in zip(pred, flat):
        np.testing.assert_allclose(np.asarray(o), p, rtol=1e-4, atol=1e-5)


def test_paths_and_call_indices(factories):
    rec, _ = replay(factories.shared(), sample_inputs(factories.shared()))
    assert rec.entered == ["x", "shared", "shared@1", "mix", "shared@2", "head"]
    assert [rec.sites[p].call for p in ("shared", "shared@1", "shared@2")] == [0, 1, 2]


def test_nested_model_row_precedes_its_layers(factories):
    model = factories.nested()
    rec, _ = replay(model, sample_inputs(model))
    assert rec.entered == ["x", "block", "block/proj", "block/dense", "dense", "block@1",
                           "block@1/proj", "block@1/dense", "seq", "seq/dense", "seq/bn"]
    assert rec.sites["block"].container and rec.sites["block/proj"].depth == 1
    assert not rec.sites["dense"].container


def test_multi_output_names(factories):
    rec, _ = replay(factories.rnn_states(), sample_inputs(factories.rnn_states()))
    assert rec.sites["lstm"].output_names == ("output", "state_h", "state_c")
    assert rec.sites["gru"].output_names == ("output", "state")
    assert rec.sites["bi"].output_names == ("output", "forward_state_h", "forward_state_c",
                                            "backward_state_h", "backward_state_c")
    rec, _ = replay(factories.attention(), sample_inputs(factories.attention()))
    assert rec.sites["mha"].output_names == ("output", "attention_scores")
    assert rec.values["mha"][1].shape == (5, 2, 9, 9)


def test_raw_ops_are_reported(factories):
    rec, _ = replay(factories.attention(), sample_inputs(factories.attention()))
    classes = {rec.sites[p].class_name for p in rec.entered}
    assert {"Add", "Tanh"} <= classes


def test_inference_mode_is_deterministic(factories):
    model = factories.inference_mode()
    batch = sample_inputs(model)
    a, _ = replay(model, batch)
    b, _ = replay(model, batch)
    for p in a.values:
        for x, y in zip(a.values[p], b.values[p]):
            np.testing.assert_array_equal(x, y)


def test_tensors_are_released_after_last_consumer(factories):
    """Only live tensors are held: after a call, inputs with no consumer left are gone."""
    import gc
    import weakref

    from kerinspect.engine.trace import Replayer

    model = factories.mlp()
    refs = {}

    class Weak(Visitor):
        def produced(self, site, tensors):
            refs[site.path] = weakref.ref(tensors[0])

    Replayer(model, Weak())(sample_inputs(model))
    gc.collect()
    assert refs["hidden"]() is None  # consumed by "out", then released


class _FailsAtRunTime:
    """A layer that builds (symbolic call) but fails on concrete values."""

    @staticmethod
    def model(keras, nested):
        class Boom(keras.layers.Layer):
            def call(self, x):
                raise ValueError("boom on concrete values")

            def compute_output_shape(self, input_shape):
                return input_shape

        x = keras.Input((6,), name="x")
        h = keras.layers.Dense(4, name="hidden")(x)
        if nested:
            i = keras.Input((4,))
            inner = keras.Model(i, Boom(name="boom")(keras.layers.Dense(4, name="pre")(i)), name="block")
            y = inner(h)
        else:
            y = Boom(name="boom")(h)
        return keras.Model(x, keras.layers.Dense(2, name="out")(y))


@pytest.mark.parametrize("nested", [False, True])
def test_layer_failure_names_the_layer(keras, nested):
    from kerinspect.engine.batches import run_batches
    from kerinspect.engine.inputs import array_feed, input_specs
    from kerinspect.engine.trace import LayerCallError, Replayer
    from kerinspect.errors import InferenceError
    from kerinspect.spec import RunSpec

    model = _FailsAtRunTime.model(keras, nested)
    batch = [np.zeros((2, 6), "float32")]
    with pytest.raises(LayerCallError) as info:
        Replayer(model, Recorder())(batch)
    path = "block/boom" if nested else "boom"
    assert info.value.site.path == path and info.value.site.name == "boom"
    assert info.value.site.class_name == "Boom"
    assert info.value.calls_done == (2 if nested else 1)  # hidden (and block/pre) ran first
    assert "boom on concrete values" in str(info.value.cause)
    feed = array_feed({"x": batch[0]}, input_specs(model), source="array", batch_size=2, samples=None)
    with pytest.raises(InferenceError) as err:
        run_batches(model, feed, Recorder(), RunSpec(engine="eager"))
    assert f"Running layer '{path}' (Boom) failed" in err.value.message
    assert "boom on concrete values" in err.value.message


def test_a_bad_input_shape_names_the_model(factories):
    """Keras refuses the input before any layer runs: the error names the model."""
    from kerinspect.engine.trace import LayerCallError, Replayer

    model = factories.mlp()
    bad = [np.zeros((2, 7), "float32")]  # declared (None, 6)
    with pytest.raises(LayerCallError) as info:
        Replayer(model, Recorder())(bad)
    assert info.value.calls_done == 0
    assert info.value.site.path == info.value.site.name == model.name == "mlp"
    assert "expected shape=(None, 6), found shape=(2, 7)" in str(info.value.cause)


def test_layers_inside_a_second_container_call_are_second_calls(factories):
    model = factories.nested()
    rec, _ = replay(model, sample_inputs(model))
    assert rec.sites["block/proj"].call == 0 and rec.sites["block@1/proj"].call == 1
    assert rec.sites["block@1"].call == 1 and rec.sites["dense"].call == 0


def test_to_numpy_is_a_read_only_view_of_eager_tensors(keras):
    """Statistics read activations in place: no copy of each tensor (the copies were
    the second largest cost of summary on ResNet50), and nothing can write into them."""
    import tensorflow as tf

    from kerinspect.engine.trace import to_numpy

    t = tf.reshape(tf.range(12, dtype=tf.float32), (3, 4))
    a = to_numpy(t)
    assert np.shares_memory(a, np.asarray(t)) and not a.flags.writeable
    np.testing.assert_array_equal(a, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert to_numpy(tf.constant([b"x", b"yz"])).tolist() == [b"x", b"yz"]
    v = keras.Variable(np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(to_numpy(v), np.ones((2, 2)))


def test_rnn_calls_run_as_graphs_across_batches(factories):
    """An RNN's time loop runs as a tf.function (eagerly it is a Python loop), traced
    once and kept for the next batches; the values are still plain Keras's."""
    from kerinspect.engine.trace import Replayer, runs_a_loop

    model = factories.ALL["rnn_states"]()
    by_name = {layer.name: layer for layer in model.layers}
    bi = by_name["bi"]
    assert runs_a_loop(by_name["lstm"]) and not runs_a_loop(model.layers[0])
    assert not runs_a_loop(bi) and runs_a_loop(bi.forward_layer)  # the wrapper's RNNs are calls of their own
    rec = Recorder()
    replayer = Replayer(model, rec)
    batches = [sample_inputs(model, n=5, seed=s) for s in (1, 2)]
    for batch in batches:
        replayer(batch)
    for layer in (by_name["lstm"], by_name["gru"], bi.forward_layer, bi.backward_layer):
        assert replayer._graph_calls[id(layer)] is not None, layer.name  # traced, no fallback
    assert "call" not in by_name["lstm"].__dict__  # the layer is left as it was
    ref = reference_calls(model, batches[-1])
    for g, r in zip(rec.values["lstm"], ref["lstm"]):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_untraceable_rnn_cell_falls_back_to_eager(keras):
    """A custom cell that needs eager values cannot be traced: it runs as Keras runs it."""
    from kerinspect.engine.trace import Replayer

    class EagerCell(keras.layers.Layer):
        state_size = 2

        def call(self, inputs, states):
            scale = float(np.asarray(keras.ops.convert_to_numpy(keras.ops.max(inputs))))  # eager only
            out = inputs[:, :2] * scale + states[0]
            return out, [out]

    x = keras.Input((4, 3), name="seq")
    y = keras.layers.RNN(EagerCell(), name="rnn")(x)
    model = keras.Model(x, y)
    batch = [np.random.default_rng(0).standard_normal((2, 4, 3)).astype("float32")]
    rec = Recorder()
    replayer = Replayer(model, rec)
    out = replayer(batch)
    assert replayer._graph_calls[id(model.get_layer("rnn"))] is None
    np.testing.assert_allclose(np.asarray(out), np.asarray(model(batch[0])), rtol=1e-6)
