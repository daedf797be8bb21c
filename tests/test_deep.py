"""Every layer call at every depth: inside custom layers, subclassed models and
wrappers, each tensor equal to a plain-Keras replay of the custom ``call`` by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_trace import Recorder


def _custom_classes(keras):
    """A transformer block and a token+position embedding, as in the Keras example
    "text classification with a transformer" (written here, seeded)."""
    layers = keras.layers

    class TransformerBlock(layers.Layer):
        def __init__(self, dim=8, heads=2, ff=16, **kw):
            super().__init__(**kw)
            self.att = layers.MultiHeadAttention(num_heads=heads, key_dim=dim, name="att")
            self.ffn = keras.Sequential([layers.Dense(ff, activation="relu", name="ff1"),
                                         layers.Dense(dim, name="ff2")], name="ffn")
            self.norm1 = layers.LayerNormalization(epsilon=1e-6, name="norm1")
            self.norm2 = layers.LayerNormalization(epsilon=1e-6, name="norm2")
            self.drop = layers.Dropout(0.1, name="drop")

        def call(self, x, training=None):
            a = self.drop(self.att(x, x), training=training)
            h = self.norm1(x + a)
            return self.norm2(h + self.ffn(h))

    class TokPos(layers.Layer):
        def __init__(self, vocab=20, length=6, dim=8, **kw):
            super().__init__(**kw)
            self.tok = layers.Embedding(vocab, dim, name="tok")
            self.pos = layers.Embedding(length, dim, name="pos")

        def call(self, x):
            return self.tok(x) + self.pos(keras.ops.arange(keras.ops.shape(x)[-1]))

    return TransformerBlock, TokPos


def transformer(keras, float_ids=False):
    TransformerBlock, TokPos = _custom_classes(keras)
    keras.utils.set_random_seed(11)
    x = keras.Input((6,), dtype="float32" if float_ids else "int32", name="ids")
    h = TokPos(name="emb")(x)
    h = TransformerBlock(name="block")(h)
    h = TransformerBlock(name="block2")(h)
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D(name="pool")(h))
    return keras.Model(x, out, name="tx")


def _run(model, batch, **kw):
    from kerinspect.engine.trace import Replayer

    rec = Recorder()
    out = Replayer(model, rec, **kw)(batch)
    return rec, out


def _by_hand(keras, model, ids):
    """Each inner tensor, computed by calling the sub-layers as the custom call() does."""
    emb, block, block2 = (model.get_layer(n) for n in ("emb", "block", "block2"))
    ref = {}
    tok, pos = emb.tok(ids), emb.pos(keras.ops.arange(6))
    ref["emb/tok"], ref["emb/pos"] = tok, pos
    h = ref["emb"] = tok + pos
    for name, b in (("block", block), ("block2", block2)):
        a, _ = b.att(h, h, return_attention_scores=True)
        ref[f"{name}/att/query"] = b.att._query_dense(h)
        ref[f"{name}/att:output"] = ref[f"{name}/drop"] = a
        n1 = ref[f"{name}/norm1"] = b.norm1(h + a)
        f1 = ref[f"{name}/ffn/ff1"] = b.ffn.layers[0](n1)
        f = ref[f"{name}/ffn/ff2"] = ref[f"{name}/ffn"] = b.ffn.layers[1](f1)
        h = ref[f"{name}/norm2"] = ref[name] = b.norm2(n1 + f)
    return {k: np.asarray(v) for k, v in ref.items()}


def test_every_inner_call_matches_a_replay_by_hand(keras):
    model = transformer(keras)
    ids = np.random.default_rng(0).integers(0, 20, (5, 6)).astype("int32")
    rec, out = _run(model, [ids])
    ref = _by_hand(keras, model, ids)
    for path, want in ref.items():
        key, _, output = path.partition(":")
        got = rec.values[key][0 if output in ("", "output") else 1]
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5, err_msg=path)
    assert rec.sites["block/att"].parent == "block" and rec.sites["block/att"].depth == 1
    assert rec.sites["block/ffn/ff1"].depth == 2 and not rec.sites["block/ffn/ff1"].in_graph
    assert rec.sites["block"].container and rec.sites["emb"].container
    # inner calls come after their parent, in call order
    order = rec.entered
    assert order.index("block") < order.index("block/att") < order.index("block/norm1") < order.index("block2")
    # the model's outputs are bit for bit what Keras computes, capture or not
    np.testing.assert_array_equal(np.asarray(out), np.asarray(model(ids, training=False)))
    np.testing.assert_allclose(np.asarray(out), model.predict(ids, verbose=0), rtol=1e-5, atol=1e-6)


def test_the_hooks_are_restored_exactly(keras):
    Layer = keras.layers.Layer
    before = Layer.__dict__["__call__"]
    model = transformer(keras)
    att = model.get_layer("block").att
    _run(model, [np.zeros((2, 6), "int32")])
    assert Layer.__dict__["__call__"] is before
    assert "_compute_attention" not in att.__dict__ and "call" not in att.__dict__


def test_a_failing_inner_layer_is_named_and_hooks_restored(keras):
    from kerinspect.engine.trace import LayerCallError

    class Boom(keras.layers.Layer):
        def call(self, x):
            if x.shape[0] is not None:  # concrete batches only: the model still builds
                raise RuntimeError("kaboom")
            return x

    class Outer(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.inner = Boom(name="boom")

        def call(self, x):
            return self.inner(x)

    x = keras.Input((3,))
    model = keras.Model(x, Outer(name="outer")(x))
    before = keras.layers.Layer.__dict__["__call__"]
    with pytest.raises(LayerCallError) as info:
        _run(model, [np.ones((1, 3), "float32")])
    assert info.value.site.path == "outer/boom"
    assert keras.layers.Layer.__dict__["__call__"] is before


def test_built_but_never_called_sublayers_are_listed(keras):
    model = transformer(keras)
    rec, _ = _run(model, [np.zeros((2, 6), "int32")])
    # the fused attention kernel bypasses the softmax; dropout is off at inference
    softmax = [p for p in rec.entered if p.startswith("block/att/") and rec.sites[p].class_name == "Softmax"]
    assert softmax and not rec.sites[softmax[0]].called and softmax[0] not in rec.values


def test_depth_limits_what_is_captured_and_totals_still_add_up(keras):
    import kerinspect

    model = transformer(keras)
    full = kerinspect.inspect_model(model, samples=4)
    top = kerinspect.inspect_model(model, samples=4, depth=1)
    assert {r.depth for r in top.layers} == {0}
    assert max(r.depth for r in full.layers) == 2
    assert top.totals.params == full.totals.params == model.count_params()
    assert not any(r.container for r in top.layers)
    same = {r.path: r.outputs[0].stats for r in top.layers}
    for r in full.layers:
        if r.path in same:
            assert r.outputs[0].stats == same[r.path], r.path
    assert top.max_depth == 1 and json.loads(json.dumps(top.to_dict()))["max_depth"] == 1


def test_bidirectional_forward_and_backward_are_rows(factories):
    model = factories.ALL["rnn_states"]()
    x = np.random.default_rng(1).standard_normal((3, 7, 3)).astype("float32")
    rec, _ = _run(model, [x])
    bi = model.get_layer("bi")
    o = model.get_layer("lstm")(x)[0]
    for layer in (bi.forward_layer, bi.backward_layer):
        path = f"bi/{layer.name}"  # forward_lstm, backward_lstm (numbered when names are taken)
        want = [np.asarray(t) for t in layer(o)]
        assert rec.sites[path].depth == 1 and rec.sites[path].parent == "bi"
        for g, w in zip(rec.values[path], want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=path)


def test_float_ids_reaching_an_embedding_inside_a_custom_layer_are_drawn_as_ids(keras):
    import kerinspect

    model = transformer(keras, float_ids=True)
    report = kerinspect.inspect_model(model, samples=16)
    (ids,) = report.inputs
    assert ids.note == "drawn as token ids in [0, 20) for Embedding 'emb/tok'"
    st = report.layers[0].outputs[0].stats
    assert st.min >= 0 and st.max <= 19 and float(st.max).is_integer()


@pytest.mark.slow
def test_subclassed_model_runs_with_input_through_the_worker(keras, tmp_path):
    """A subclassed model (no functional graph) saved unbuilt-by-Input: with --input
    its inner calls are rows whose statistics match plain Keras."""
    from click.testing import CliRunner

    from kerinspect.cli import cli

    source = tmp_path / "net_classes.py"
    source.write_text(
        "from kerinspect.engine.tfenv import import_keras\n"
        "keras = import_keras()\n"
        "@keras.saving.register_keras_serializable(package='t10')\n"
        "class Net(keras.Model):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__(**kw)\n"
        "        self.d1 = keras.layers.Dense(8, activation='relu', name='d1')\n"
        "        self.att = keras.layers.MultiHeadAttention(2, 4, name='att')\n"
        "        self.d2 = keras.layers.Dense(3, name='d2')\n"
        "    def call(self, x):\n"
        "        h = self.d1(x)\n"
        "        return self.d2(h + self.att(h, h, use_causal_mask=True))\n"
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("net_classes_t10", source)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    keras.utils.set_random_seed(3)
    net = mod.Net(name="net")
    x = np.random.default_rng(2).standard_normal((6, 5, 4)).astype("float32")
    net(x)
    net.save(tmp_path / "net.keras")
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(cli, ["summary", str(tmp_path / "net.keras"), "--input", str(tmp_path / "x.npy"),
                                 "--custom-objects", str(source), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    layers = {row["path"]: row for row in json.loads(r.stdout)["layers"]}
    h = np.asarray(net.d1(x))
    a, scores = net.att(h, h, use_causal_mask=True, return_attention_scores=True)
    want = {"net/d1": h, "net/att": np.asarray(a), "net/d2": np.asarray(net.d2(h + a))}
    for path, arr in want.items():
        st = layers[path]["outputs"][0]["stats"]
        np.testing.assert_allclose([st["mean"], st["std"]], [arr.mean(), arr.std()], rtol=2e-3, atol=1e-6)
    att = layers["net/att"]
    assert att["parent"] == "net" and att["depth"] == 1
    assert [o["name"] for o in att["outputs"]] == ["output", "attention_scores"]
    assert att["outputs"][1]["shape"] == [6, 2, 5, 5]
    np.testing.assert_allclose(att["outputs"][1]["stats"]["mean"], np.asarray(scores).mean(), rtol=2e-3)
    assert att["attention"]["source"] == "recomputed" and len(att["attention"]["heads"]) == 2
