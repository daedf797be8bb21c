"""Attention probabilities of every attention layer, whether or not the graph asked
for them, and their per-head statistics, against ``layer(q, v, return_attention_scores=True)``
and numpy."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.conftest import SAMPLES
from tests.test_trace import Recorder


def _masked_mha(keras, causal=True):
    """Padding (Embedding mask_zero) and a causal mask, plain MHA(x, x) without scores."""
    keras.utils.set_random_seed(5)
    t = keras.Input((7,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(12, 8, mask_zero=True, name="emb")(t)
    a = keras.layers.MultiHeadAttention(num_heads=3, key_dim=4, name="mha")(h, h, use_causal_mask=causal)
    return keras.Model(t, keras.layers.GlobalAveragePooling1D(name="pool")(a), name="masked_mha")


def _tokens():
    ids = np.random.default_rng(4).integers(1, 12, (4, 7)).astype("int32")
    ids[0, 4:] = 0  # padding
    ids[1, :] = 0  # fully masked
    return ids


def _replay(model, batch):
    from kerinspect.engine.statistics import StatsCollector
    from kerinspect.engine.trace import Replayer

    rec = Recorder()

    class Both(StatsCollector):
        def enter(self, site):
            rec.enter(site)
            super().enter(site)

        def produced(self, site, tensors):
            rec.produced(site, tensors)
            super().produced(site, tensors)

    col = Both(threads=1)
    out = Replayer(model, col)(batch)
    col.end_batch()
    return rec, col, out


def _reference(model, ids):
    h = model.get_layer("emb")(ids)
    out, scores = model.get_layer("mha")(h, h, use_causal_mask=True, return_attention_scores=True)
    return np.asarray(out), np.asarray(scores)


def _valid(ids, t=7):
    keys = ids != 0
    return keys[:, None, :] & keys[:, :, None] & np.tril(np.ones((t, t), bool))[None]


def test_probabilities_of_a_plain_mha_equal_keras_with_scores_requested(keras):
    model = _masked_mha(keras)
    ids = _tokens()
    rec, col, out = _replay(model, [ids])
    site = rec.sites["mha"]
    assert site.output_names == ("output", "attention_scores")
    got_out, got = rec.values["mha"]
    want_out, want = _reference(model, ids)
    assert got.shape == (4, 3, 7, 7)
    rows = _valid(ids).any(-1)  # fully masked query rows excluded (the paths differ there)
    np.testing.assert_allclose(got.transpose(0, 2, 1, 3)[rows], want.transpose(0, 2, 1, 3)[rows], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(got_out[rows], want_out[rows], rtol=1e-4, atol=1e-6)
    # the model's own output is untouched by the capture
    np.testing.assert_array_equal(np.asarray(out), np.asarray(model(ids, training=False)))
    capture_heads = col.heads[site.index]
    assert capture_heads.source == "recomputed"


def test_per_head_statistics_match_numpy(keras):
    from kerinspect.spec import Thresholds

    model = _masked_mha(keras)
    ids = _tokens()
    _, col, _ = _replay(model, [ids])
    index = next(i for i, s in enumerate(col.sites) if s.path == "mha")
    record = col.heads[index].record("attention_scores", Thresholds())
    _, p = _reference(model, ids)
    valid = _valid(ids)
    n = valid.sum(-1)
    rows, multi = n > 0, n > 1
    assert record.status == "ok" and record.queries == int(rows.sum()) and record.shape == (4, 3, 7, 7)
    for h, stats in enumerate(record.heads):
        ph = np.where(valid, p[:, h], 0.0).astype(np.float64)
        ent = -(np.where(ph > 0, ph * np.log(np.where(ph > 0, ph, 1)), 0)).sum(-1) / np.log(np.maximum(n, 2))
        np.testing.assert_allclose(stats.entropy, ent[multi].mean(), rtol=1e-5)
        np.testing.assert_allclose(stats.min_entropy, ent[multi].min(), rtol=1e-5)
        np.testing.assert_allclose(stats.max_weight, ph.max(-1)[multi].mean(), rtol=1e-5)
        np.testing.assert_allclose(stats.sink, p[:, h, :, 0][rows].mean(), rtol=1e-5)
        np.testing.assert_allclose(stats.diagonal, np.diagonal(p[:, h], axis1=-2, axis2=-1)[rows].mean(),
                                   rtol=1e-5)
        assert stats.row_sum_error < 1e-5


def _forced(keras, scale):
    """One MHA whose query kernel is scaled: 0 gives uniform heads, large gives
    (nearly) one-hot attention on the key most aligned with each query."""
    keras.utils.set_random_seed(9)
    x = keras.Input((6, 4), name="x")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    model = keras.Model(x, mha(x, x), name="forced")
    q = mha._query_dense
    kernel, bias = q.get_weights()
    q.set_weights([kernel * scale, bias * scale])
    return model


def test_uniform_and_collapsed_flags(keras):
    import kerinspect

    uniform = kerinspect.inspect_model(_forced(keras, 0.0), samples=8)
    (att,) = [r for r in uniform.layers if r.attention is not None]
    assert all("uniform-attention" in h.flags for h in att.attention.heads)
    assert "uniform-attention" in att.outputs[1].flags
    sharp = kerinspect.inspect_model(_forced(keras, 1e4), samples=8)
    (att,) = [r for r in sharp.layers if r.attention is not None]
    assert any("collapsed-attention" in h.flags for h in att.attention.heads)
    assert not any("uniform-attention" in h.flags for h in att.attention.heads)


def test_grouped_query_attention_is_captured(keras):
    keras.utils.set_random_seed(2)
    x = keras.Input((5, 8), name="x")
    gqa = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2, name="gqa")
    model = keras.Model(x, gqa(x, x), name="gqa_model")
    batch = np.random.default_rng(0).standard_normal((3, 5, 8)).astype("float32")
    rec, _, _ = _replay(model, [batch])
    _, want = gqa(batch, batch, return_attention_scores=True)
    np.testing.assert_allclose(rec.values["gqa"][1], np.asarray(want), rtol=1e-5, atol=1e-6)


def test_unproven_probabilities_are_never_shown(keras, monkeypatch):
    """When the explicit path does not reproduce the fused output, the probabilities
    are unavailable, with the reason: never shown wrong."""
    import kerinspect
    from kerinspect.engine import attention

    monkeypatch.setitem(attention.TOLERANCE, "float32", -1.0)  # nothing can match
    report = kerinspect.inspect_model(_forced(keras, 1.0), samples=4)
    (att,) = [r for r in report.layers if r.attention is not None]
    assert [o.name for o in att.outputs] == ["output"]
    assert att.attention.status == "unavailable" and "differs from the fused one" in att.attention.reason
    from rich.console import Console

    from kerinspect.render import render_table

    buf = io.StringIO()
    render_table(report, Console(file=buf, width=200, color_system=None))
    assert "attention 'mha': unavailable (the explicit path's output differs" in buf.getvalue()


def test_attention_table_renders_heads():
    from rich.console import Console

    from kerinspect.render import render_attention_markdown, render_attention_table
    from kerinspect.report import AttentionRecord, HeadStats, LayerRecord, ModelInfo, ModelReport

    heads = (HeadStats(0, 0.99, 0.97, 0.2, 0.2, 0.2, 1e-7, ("uniform-attention",)),
             HeadStats(1, 0.4, 0.1, 0.8, 0.05, 0.6, 2e-7))
    layer = LayerRecord("block/att", "att", "MultiHeadAttention", 0, 100, depth=1, parent="block",
                        attention=AttentionRecord("attention_scores", "recomputed", "ok", None, (8, 2, 5, 5), 40,
                                                  0.0, heads))
    report = ModelReport(ModelInfo("m", "Functional", "m.keras", "keras", 100, 100, "3.15.1"), (), (layer,), 8, 8)
    buf = io.StringIO()
    render_attention_table(report, Console(file=buf, width=120, color_system=None))
    text = buf.getvalue()
    assert "block/att (MultiHeadAttention) · probabilities (8, 2, 5, 5) · recomputed" in text
    lines = [line.split() for line in text.splitlines()]
    assert ["0", "0.99", "0.97", "0.2", "0.2", "0.2", "1e-07", "uniform-attention"] in lines
    assert "1 attention layer call · 2 heads, 1 flagged (uniform-attention: 1)" in text
    md = render_attention_markdown(report)
    assert "| 1 | 0.4 | 0.1 | 0.8 | 0.05 | 0.6 | 2e-07 |  |" in md
    data = json.loads(json.dumps(report.to_dict()))  # the JSON contract round-trips exactly
    assert ModelReport.from_dict(data) == report
    assert data["layers"][0]["attention"]["heads"][0]["flags"] == ["uniform-attention"]
    assert data["layers"][0]["parent"] == "block" and data["layers"][0]["called"] is True


@pytest.mark.slow
def test_attention_command_on_the_sample_model(reuse):
    """The table and the JSON of one run (the JSON reuses the table's worker run)."""
    from click.testing import CliRunner

    from kerinspect.cli import cli

    r = CliRunner().invoke(cli, ["attention", str(SAMPLES / "attention.keras"), "--samples", "8"])
    assert r.exit_code == 0, r.stderr
    assert "self_attention (MultiHeadAttention) · probabilities (8, 2, 12, 12) · computed by the layer" in r.stdout
    assert "Head  Entropy" in r.stdout
    r = CliRunner().invoke(cli, ["attention", str(SAMPLES / "attention.keras"), "--samples", "8", "-f", "json"])
    data = json.loads(r.stdout)
    (layer,) = data["layers"]
    assert layer["path"] == "self_attention" and len(layer["attention"]["heads"]) == 2
    assert set(layer["attention"]["heads"][0]) >= {"entropy", "max_weight", "sink", "diagonal", "flags"}


@pytest.mark.parametrize("group_bytes", [1, 1 << 30])  # a head at a time; every head at once
def test_head_figures_against_numpy_with_nan_and_masked_keys(keras, monkeypatch, group_bytes):
    """head_partials (eager here; the compiled engine builds the same operations in its
    trace), for any grouping of heads: NaN probabilities are left out of the entropy and
    the largest weight, as numpy's ``p > 0`` mask leaves them, and flag their row."""
    import tensorflow as tf

    from kerinspect.engine import attention

    monkeypatch.setattr(attention, "HEAD_GROUP_BYTES", group_bytes)
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((2, 3, 5, 6))
    p = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    p[0, 1, 2, 3] = np.nan
    valid = np.ones((2, 5, 6), bool)
    valid[1, :, 4:] = False  # the second sample's last two keys are padding
    part = {k: np.asarray(v) for k, v in attention.head_partials(tf.constant(p), tf.constant(valid)).items()}
    pv = np.where(valid[:, None], p.astype(np.float64), 0.0)
    with np.errstate(invalid="ignore"):
        terms = np.where(pv > 0, pv * np.log(np.where(pv > 0, pv, 1.0)), 0.0)
    n = valid.sum(-1)[:, None]  # (2, 1, 5)
    entropy = -terms.sum(-1) / np.log(n)
    np.testing.assert_allclose(part["entropy_sum"], entropy.sum(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(part["entropy_min"], entropy.min(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(part["max_sum"], np.nanmax(pv, -1).sum(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(part["diag_sum"], np.diagonal(p, axis1=-2, axis2=-1).sum(axis=(0, 2)), rtol=1e-6)
    assert part["row_nan"].tolist() == [False, True, False]
    assert part["row_error"][1] < 1e-6 and part["rows"] == 10 and part["multi"] == 10
