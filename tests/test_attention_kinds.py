"""Attention that is not MultiHeadAttention (issue 26): ``Attention`` and
``AdditiveAttention`` (masks, causal), a softmax inside a custom layer's ``call``
(``keras.ops.softmax``; a ``Softmax`` sub-layer), the Keras 2 functional pattern
(``Activation('softmax')`` over time steps), a hidden ``Dense`` softmax, and a softmax
over one key. Every per-head figure is compared with numpy on probabilities taken from
plain Keras (the layer asked for its scores, or the softmax recomputed from its
weights); the model's own output softmax is no attention; both engines agree.

One model holds every kind: one eager and one compiled worker run, shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import kerinspect_cli

LAYERS = str(Path(__file__).with_name("attention_layers.py"))
T, F, ROWS = 6, 5, 24
RTOL = 2e-3


def _build(keras):
    """Every kind of attention in one functional model (seeded)."""
    from tests import attention_layers as al

    L = keras.layers
    keras.utils.set_random_seed(26)
    tokens = keras.Input((7,), dtype="int32", name="tokens")
    x = keras.Input((T, F), name="x")
    emb = L.Embedding(20, 4, mask_zero=True, name="emb")(tokens)
    masked = L.Attention(name="att_masked")([emb, emb])  # query and value masks from the Embedding
    q = L.Dense(4, name="q")(x)
    v = L.Dense(4, name="v")(x)
    causal = L.Attention(use_scale=True, name="att_causal")([q, v], use_causal_mask=True)
    additive = L.AdditiveAttention(name="additive")([q, v])
    simple = al.OpsSoftmaxAttention(name="simple")(x)
    block = al.SubLayerAttention(name="block")(x)
    causal_block = al.CausalSoftmaxAttention(name="causal")(x)
    # Keras 2: Dense(1, tanh) -> Flatten -> Activation('softmax') -> RepeatVector -> Permute -> Multiply
    e = L.Flatten(name="k2_flat")(L.Dense(1, activation="tanh", name="k2_score")(x))
    a = L.Activation("softmax", name="k2_softmax")(e)
    weighted = L.Multiply(name="k2_mul")([x, L.Permute((2, 1))(L.RepeatVector(F)(a))])
    hidden = L.Dense(T, activation="softmax", name="dense_softmax")(L.Flatten(name="flat_x")(x))
    one = L.Softmax(name="one_key")(L.Reshape((1, 1))(L.Dense(1, name="one_score")(hidden)))
    pooled = [
        L.GlobalAveragePooling1D()(t) for t in (masked, causal, additive, block, causal_block, weighted)
    ]
    merged = L.Concatenate()([*pooled, simple, hidden, L.Flatten()(one)])
    head = L.Dense(3, activation="softmax", name="head")(merged)
    return keras.Model([tokens, x], head, name="kinds")


def _inputs():
    rng = np.random.default_rng(26)
    ids = rng.integers(1, 20, (ROWS, 7)).astype("int32")
    ids[0, 3:] = 0  # padding
    ids[1, 5:] = 0
    ids[2, 1:] = 0  # one key left
    return ids, rng.normal(size=(ROWS, T, F)).astype("float32")


@pytest.fixture(scope="module")
def kinds(keras, tmp_path_factory):
    """The saved model, its inputs, and its eager and compiled reports (one worker run each)."""
    import kerinspect

    path = tmp_path_factory.mktemp("kinds") / "kinds.keras"
    _build(keras).save(path)
    ids, x = _inputs()
    load = kerinspect.LoadOptions(custom_objects=LAYERS)
    eager = kerinspect.inspect_model(str(path), [ids, x], load=load, engine="eager", batch_size=8)
    compiled = kerinspect.inspect_model(str(path), [ids, x], load=load, engine="compiled", batch_size=8)
    model = keras.saving.load_model(path)
    return {"path": str(path), "model": model, "ids": ids, "x": x, "eager": eager, "compiled": compiled}


def _sub(keras, model, name):
    """Plain Keras: the output of ``name`` for the model's inputs."""
    return keras.Model(model.inputs, model.get_layer(name).output)


def _softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _reference(keras, kinds, name):
    """``(probs (B, H, T, S), valid (B, T, S))`` from plain Keras and numpy."""
    m, ids, x = kinds["model"], kinds["ids"], kinds["x"]
    if name == "att_masked":
        emb = np.asarray(m.get_layer("emb")(ids))
        mask = ids != 0
        _, w = m.get_layer(name)([emb, emb], mask=[mask, mask], return_attention_scores=True)
        return np.asarray(w)[:, None], mask[:, None, :] & mask[:, :, None]
    if name in ("att_causal", "additive"):
        qv = [np.asarray(m.get_layer(n)(x)) for n in ("q", "v")]
        causal = name == "att_causal"
        _, w = m.get_layer(name)(qv, use_causal_mask=causal, return_attention_scores=True)
        valid = np.tril(np.ones((T, T), bool)) if causal else np.ones((T, T), bool)
        return np.asarray(w)[:, None], np.broadcast_to(valid, (len(x), T, T))
    if name == "simple":
        w, b = (np.asarray(v) for v in m.get_layer(name).weights)
        p = _softmax(np.tanh(x @ w + b), axis=1)[..., 0]  # (B, T): one query over T keys
        return p[:, None, None, :], np.ones((len(x), 1, T), bool)
    if name == "block/softmax":
        p = _softmax(x @ x.transpose(0, 2, 1) / np.sqrt(F), axis=-1)
        return p[:, None], np.ones((len(x), T, T), bool)
    if name == "causal/softmax":
        tril = np.tril(np.ones((T, T), bool))
        p = _softmax(np.where(tril, x @ x.transpose(0, 2, 1), -1e9), axis=-1)
        return p[:, None], np.broadcast_to(tril, (len(x), T, T))
    layer = name.split(":")[0]
    p = np.asarray(_sub(keras, m, layer).predict([ids, x], verbose=0))
    p = p.reshape(len(x), -1, p.shape[-1])
    return p[:, None], np.ones(p.shape, bool)


def _figures(p, valid):
    """Per-head figures as the ATTENTION notes define them, in float64."""
    p = p.astype(np.float64)
    n = valid.sum(-1)
    rows, multi = n > 0, n > 1
    out = []
    for h in range(p.shape[1]):
        ph = np.where(valid, p[:, h], 0.0)
        logs = np.log(np.where(ph > 0, ph, 1.0))
        entropy = -(ph * logs).sum(-1) / np.log(np.maximum(n, 2))
        out.append(
            {
                "entropy": entropy[multi].mean() if multi.any() else None,
                "min_entropy": entropy[multi].min() if multi.any() else None,
                "max_weight": ph.max(-1)[multi].mean() if multi.any() else None,
                "sink": p[:, h, :, 0][rows].mean(),
                "diagonal": np.diagonal(p[:, h], axis1=-2, axis2=-1)[rows].mean()
                if p.shape[2] == p.shape[3]
                else None,
            }
        )
    return out, int(rows.sum())


def _layer(report, path):
    return next(r for r in report.layers if r.path == path)


#: row -> (class, output that holds the probabilities, source)
KINDS = {
    "att_masked": ("Attention", "attention_scores", "layer"),
    "att_causal": ("Attention", "attention_scores", "layer"),
    "additive": ("AdditiveAttention", "attention_scores", "layer"),
    "simple": ("OpsSoftmaxAttention", "softmax", "softmax"),
    "block/softmax": ("Softmax", "output", "softmax"),
    "causal/softmax": ("Softmax", "output", "softmax"),  # its mask: the causal keys only
    "k2_softmax": ("Activation", "output", "softmax"),
    "dense_softmax": ("Dense", "output", "softmax"),
}


@pytest.mark.parametrize("path", list(KINDS))
def test_every_kind_has_per_head_figures_equal_to_numpy(keras, kinds, path):
    cls, output, source = KINDS[path]
    record = _layer(kinds["eager"], path)
    assert record.class_name == cls
    att = record.attention
    assert att is not None and att.status == "ok", att
    assert (att.output, att.source) == (output, source)
    assert output in [t.name for t in record.outputs]
    probs, valid = _reference(keras, kinds, path)
    want, queries = _figures(probs, valid)
    assert att.shape == (ROWS, *probs.shape[1:])
    assert att.queries == queries
    for head, figures in zip(att.heads, want, strict=True):
        for key, value in figures.items():
            got = getattr(head, key)
            if value is None:
                assert got is None, (path, key)
            else:
                np.testing.assert_allclose(got, value, rtol=RTOL, atol=1e-6, err_msg=f"{path} {key}")
        assert head.row_sum_error < 1e-5


def test_masks_leave_out_padded_keys_and_masked_queries(kinds):
    att = _layer(kinds["eager"], "att_masked").attention
    ids = kinds["ids"]
    assert att.queries == int((ids != 0).sum())  # padded queries: out
    causal = _layer(kinds["eager"], "att_causal").attention
    assert causal.queries == ROWS * T  # every query has key 0 at least


def test_the_model_output_softmax_is_not_attention(kinds):
    report = kinds["eager"]
    head = _layer(report, "head")
    assert head.attention is None
    assert [t.name for t in head.outputs] == ["output"]
    # an attention layer's own sub-layers never get a second record (the block's does, once)
    with_attention = {r.path for r in report.layers if r.attention is not None}
    assert with_attention == set(KINDS) | {"one_key"}


def test_one_key_is_flagged_single_key_attention(kinds):
    record = _layer(kinds["eager"], "one_key")
    assert record.attention.shape[-1] == 1
    assert [h.flags for h in record.attention.heads] == [("single-key-attention",)]
    assert "single-key-attention" in record.outputs[0].flags
    for path in KINDS:  # no other layer has one key
        assert "single-key-attention" not in _layer(kinds["eager"], path).attention.flags


def test_compiled_and_eager_engines_agree(kinds):
    eager, compiled = kinds["eager"], kinds["compiled"]
    assert compiled.engine != "eager", compiled.model.notes
    for path in [*KINDS, "one_key"]:
        a, b = _layer(eager, path).attention, _layer(compiled, path).attention
        assert (a.output, a.source, a.shape, a.queries) == (b.output, b.source, b.shape, b.queries)
        for ha, hb in zip(a.heads, b.heads, strict=True):
            assert ha.flags == hb.flags
            for key in ("entropy", "min_entropy", "max_weight", "sink", "diagonal"):
                x, y = getattr(ha, key), getattr(hb, key)
                assert (x is None) == (y is None)
                if x is not None:
                    np.testing.assert_allclose(x, y, rtol=1e-4, err_msg=f"{path} {key}")


def test_check_rule_single_key_attention_fails_the_model(kinds, tmp_path):
    np.savez(tmp_path / "in.npz", tokens=kinds["ids"], x=kinds["x"])
    args = [
        kinds["path"],
        "--custom-objects",
        LAYERS,
        "--input",
        str(tmp_path / "in.npz"),
        "--format",
        "json",
    ]
    res = kerinspect_cli("check", *args, "--rule", "single-key-attention", "--rule", "collapsed-attention")
    assert res.returncode == 1, res.stderr
    data = json.loads(res.stdout)
    rules = {r["rule"]: r for r in (data["models"][0] if "models" in data else data)["rules"]}
    single = rules["single-key-attention"]
    assert single["verdict"] == "failed" and single["unit"] == "head"
    assert [f["layer"] for f in single["failures"]] == ["one_key"]
    assert single["counts"]["passed"] == len(KINDS)
    assert rules["collapsed-attention"]["verdict"] == "passed"


def test_attention_rules_are_off_by_default_and_gate_the_flags(kinds):
    from kerinspect.checks import run_checks
    from kerinspect.config import CheckConfig

    report = kinds["eager"]
    plain = run_checks(report)
    assert not any(r.rule.endswith("-attention") for r in plain.rules)
    result = run_checks(report, CheckConfig(rules=("uniform-attention", "single-key-attention")))
    rules = {r.rule: r for r in result.rules}
    single = rules["single-key-attention"]
    assert (single.verdict, single.unit, single.target) == ("failed", "head", "attention")
    assert [(f.layer, f.tensor) for f in single.failures] == [("one_key", "output")]
    # every head flagged uniform in the report fails the rule, and no other
    flagged = sorted(
        r.path for r in report.layers if r.attention and "uniform-attention" in r.attention.flags
    )
    assert sorted(f.layer for f in rules["uniform-attention"].failures) == flagged
    # --ignore exempts a layer's heads as it exempts its tensors
    ignored = run_checks(report, CheckConfig(rules=("single-key-attention",), ignore=("one_key",)))
    assert {r.rule: r for r in ignored.rules}["single-key-attention"].verdict == "passed"


def test_pyproject_rules_name_the_attention_rules(tmp_path):
    from kerinspect.config import load_file
    from kerinspect.errors import UsageError

    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.kerinspect.check]\nrules = ["collapsed-attention", "single-key-attention"]\n')
    assert load_file(path).settings["rules"] == ("collapsed-attention", "single-key-attention")
    path.write_text('[tool.kerinspect.check]\nrules = ["single-key"]\n')
    with pytest.raises(UsageError, match="single-key-attention"):
        load_file(path)


def test_a_softmax_over_time_is_not_flagged_constant(kinds):
    """``(batch, steps, 1)`` probabilities over steps have the mean 1/steps in every sample:
    the ``constant`` rule would flag every such head; the head figures judge it instead."""
    from kerinspect.checks import run_checks
    from kerinspect.config import CheckConfig

    (softmax,) = [t for t in _layer(kinds["eager"], "simple").outputs if t.name == "softmax"]
    assert softmax.shape == (ROWS, T, 1) and softmax.stats.sample_spread < 1e-6 * softmax.stats.rms
    assert "constant" not in softmax.flags
    result = run_checks(kinds["eager"], CheckConfig(rules=("constant",)))
    (constant,) = [r for r in result.rules if r.rule == "constant"]
    assert "simple" not in [f.layer for f in constant.failures]
