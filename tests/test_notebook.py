"""The notebook API: ``kerinspect.activations`` and reports you can print, index and tabulate.

``activations`` is checked against independent references (plain-Keras sub-models,
a hand-written forward pass of the custom transformer block) and against ``dump``'s
files; memory is measured (tracemalloc), not timed. The reprs of a real run (the
transformer sample through the worker) are golden: regenerate with
``KERINSPECT_REGEN_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tracemalloc

import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLES

GOLDEN = ROOT / "tests" / "golden" / "notebook"
REGEN = os.environ.get("KERINSPECT_REGEN_GOLDEN") == "1"
CUSTOM = str(SAMPLES / "custom_layers.py")


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text(), f"{name}: regenerate with KERINSPECT_REGEN_GOLDEN=1 and review"


def by_call(acts: dict, path: str) -> list:
    """The arrays of one call: ``acts[path]``, or its ``path:output`` entries in order."""
    if path in acts:
        return [acts[path]]
    return [v for k, v in acts.items() if k.rsplit(":", 1)[0] == path]


# -- activations --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shared", "nested", "attention"])
def test_activations_equal_plain_keras_and_dump(name, factories, tmp_path):
    import kerinspect
    from kerinspect.engine.inputs import input_specs
    from tests.reference import reference_calls

    model = factories.ALL[name]()
    spec = input_specs(model)[0]
    rng = np.random.default_rng(3)
    shape = (10, *(d or 4 for d in spec.shape[1:]))  # spec.shape starts with the batch axis
    x = (
        rng.integers(0, 30, shape).astype("int32")
        if spec.kind == "int"
        else rng.normal(size=shape).astype("float32")
    )

    acts = kerinspect.activations(model, x, batch_size=4)  # 4 + 4 + 2: rows across batches

    reference = reference_calls(model, [x])
    for path, arrays in reference.items():
        got = by_call(acts, path)
        assert len(got) == len(arrays), path
        for a, b in zip(got, arrays):
            assert a.shape == b.shape, path
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=path)
    if name == "shared":
        assert {"shared", "shared@1", "shared@2"} <= set(acts)
    if name == "nested":
        assert {"block/proj", "block@1/proj", "seq/bn"} <= set(acts)
    if name == "attention":
        assert acts["mha:attention_scores"].shape == (10, 2, 9, 9)

    dump = kerinspect.dump_activations(model, tmp_path / "d", x, batch_size=4)
    assert list(dump) == list(acts)
    for key in acts:
        assert acts[key].dtype == dump[key].dtype
        np.testing.assert_array_equal(acts[key], dump[key], err_msg=key)

    picked = kerinspect.activations(model, x, layers=list(acts)[-1:])
    assert list(picked) == list(acts)[-1:]
    with pytest.raises(kerinspect.errors.UsageError, match=r"layers pattern 'nope\*' matches no layer call"):
        kerinspect.activations(model, x, layers=["nope*"])


@pytest.fixture(scope="module")
def transformer(keras):
    """The sample with custom layers, loaded here (an in-memory model is the user's own code)."""
    sys.path.insert(0, str(SAMPLES))
    try:
        import custom_layers  # noqa: F401 - registers the classes
    finally:
        sys.path.remove(str(SAMPLES))
    return keras.saving.load_model(SAMPLES / "transformer.keras")


def tokens(n: int) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 40, (n, 10)).astype("int32")


def test_activations_reach_inside_a_custom_transformer_block(transformer):
    import kerinspect

    x = tokens(12)
    with pytest.warns(UserWarning, match=r"embed/pos_emb \(axis 0 is not the batch axis\)"):
        acts = kerinspect.activations(
            transformer, x, layers=["block", "block/*", "embed*", "classes"], batch_size=5
        )

    # the reference: the same layers called by hand, as the block's call() does
    embed, block = transformer.get_layer("embed"), transformer.get_layer("block")
    e = embed(x)
    att, scores = block.att(e, e, return_attention_scores=True)
    ln1 = block.layernorm1(e + att)
    ff1 = block.ffn.get_layer("ff1")(ln1)
    expected = {
        "embed": e,
        "embed/token_emb": embed.token_emb(x),
        "block/att/query": block.att._query_dense(e),
        "block/att:output": att,
        "block/att:attention_scores": scores,
        "block/layernorm1": ln1,
        "block/ffn/ff1": ff1,
        "block": block(e),
        "classes": transformer.predict(x, verbose=0),
    }
    assert "embed/pos_emb" not in acts
    for key, want in expected.items():
        np.testing.assert_allclose(acts[key], np.asarray(want), rtol=1e-5, atol=1e-5, err_msg=key)
    assert acts["block/att:attention_scores"].shape == (12, 2, 10, 10)
    np.testing.assert_allclose(acts["block/att:attention_scores"].sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_activations_of_a_file_run_in_the_worker_and_match(transformer):
    import kerinspect
    from kerinspect.spec import LoadOptions

    x = tokens(7)
    layers = ["block/att*", "pool"]
    from_file = kerinspect.activations(
        str(SAMPLES / "transformer.keras"), x, layers, batch_size=3, load=LoadOptions(custom_objects=CUSTOM)
    )
    in_memory = kerinspect.activations(transformer, x, layers, batch_size=3)
    assert list(from_file) == list(in_memory)
    assert "block/att:attention_scores" in from_file
    for key in in_memory:
        assert type(from_file[key]) is np.ndarray  # a copy, not a map of a removed file
        np.testing.assert_allclose(from_file[key], in_memory[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_memory_stays_flat_with_16x_samples(keras):
    """Peak traced memory beyond the returned array does not grow with the samples: the
    wide layer that is not asked for (32 MiB over 4096 samples) is never held, and the
    array is filled in place (collecting batches then stacking them would double it)."""
    import kerinspect

    keras.utils.set_random_seed(1)
    x_in = keras.Input((64,), name="x")
    wide = keras.layers.Dense(2048, activation="relu", name="wide")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(256, name="narrow")(wide))

    def extra(samples: int) -> tuple[int, int]:
        x = np.random.default_rng(0).normal(size=(samples, 64)).astype("float32")
        kerinspect.activations(model, x[:64], ["narrow"], batch_size=64)  # warm up (tracing, caches)
        tracemalloc.start()
        try:
            acts = kerinspect.activations(model, x, ["narrow"], batch_size=64)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert acts["narrow"].shape == (samples, 256)
        return peak - acts["narrow"].nbytes, acts["narrow"].nbytes

    small, _ = extra(256)
    large, result = extra(16 * 256)
    assert result == 16 * 256 * 256 * 4  # 4 MiB: stacking copies would show
    assert large < small + (1 << 20), (small, large)  # flat: the arrays, plus about one batch
    assert large < 4 << 20  # far from the 32 MiB of the wide layer


# -- reports ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(sample_report):
    """The transformer sample inspected by the CLI (the worker, synthetic inputs,
    --samples 16): the session's shared run."""
    from kerinspect.report import ModelReport

    return ModelReport.from_dict(sample_report("transformer"))


def test_report_repr_index_flagged_and_pandas(report):
    golden("transformer_repr.txt", repr(report))

    att = report["block/att"]
    assert (att.class_name, att.depth, att.parent) == ("MultiHeadAttention", 1, "block")
    assert report["block/att:attention_scores"].shape == (16, 2, 10, 10)
    assert "block/ffn/ff1" in report and "block/ffn/ff9" not in report and 3 not in report
    with pytest.raises(KeyError, match=r"No layer call 'block/attn'") as caught:
        report["block/attn"]
    assert "'block/att'" in caught.value.hint
    assert caught.value.exit_code == 2

    flagged = report.flagged()
    assert [r.path for r in flagged] == [r.path for r in report.layers if any(o.flags for o in r.outputs)]
    assert [r.path for r in flagged] == ["block/att"]
    golden("layer_repr.txt", repr(flagged[0]))

    pytest.importorskip("pandas")
    df = report.to_pandas()
    totals = report.totals
    assert len(df) == totals.tensors
    assert (df["flags"] != "").sum() == totals.flagged_tensors
    assert df.loc["block/att:attention_scores", "flags"] == "uniform-attention"
    assert df.loc["block/ffn/ff1", "shape"] == (16, 10, 32)
    assert df.loc["block/ffn/ff1", "mean"] == report["block/ffn/ff1"].outputs[0].stats.mean
    assert df.index.is_unique


def test_report_html_is_a_compact_escaped_table(report):
    page = report._repr_html_()
    assert page.count("<tr>") == 1 + report.totals.tensors + sum(1 for r in report.layers if not r.outputs)
    assert "block/att:attention_scores" in page and "uniform-attention" in page

    hostile = dataclasses.replace(
        report,
        layers=(
            dataclasses.replace(report.layers[1], path="<img src=x onerror=alert(1)>"),
            *report.layers[2:],
        ),
    )
    page = hostile._repr_html_()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_check_results_print_index_and_tabulate(report):
    from kerinspect.checks import run_checks
    from kerinspect.report import CheckRun, ModelReport

    result = run_checks(report, path="sample_models/transformer.keras")
    data = report.to_dict()  # the same run with NaN in the feed-forward layer's output
    ff1 = next(r for r in data["layers"] if r["path"] == "block/ffn/ff1")
    ff1["outputs"][0]["stats"]["nan_count"] = 3
    broken = run_checks(ModelReport.from_dict(data), path="broken.keras")
    run = CheckRun((result, broken))
    golden("check_repr.txt", repr(run))
    assert broken["nan"].failed and broken.first_fault.layer == "block/ffn/ff1"
    assert repr(result).startswith("<CheckResult 'sample_models/transformer.keras': passed (exit 0)")
    assert run["sample_models/transformer.keras"] is result
    assert result["nan"].verdict == "passed"
    with pytest.raises(KeyError, match="No rule 'nann'") as caught:
        result["nann"]
    assert "'nan'" in caught.value.hint
    assert "<table" in run._repr_html_() and "sample_models/transformer.keras" in run._repr_html_()

    pytest.importorskip("pandas")
    df = result.to_pandas()
    assert list(df["rule"]) == [r.rule for r in result.rules]
    assert list(df["failed"]) == [r.counts.failed for r in result.rules]
    assert run.to_pandas().query("verdict == 'failed'")["model"].tolist() == ["broken.keras"]


# -- diff results -------------------------------------------------------------------


def test_diff_result_prints_indexes_selects_and_tabulates(keras):
    """A small model against a copy whose ``fc2`` kernel is scaled by 1.5: with ReLU and
    zero biases every output from ``fc2`` on is exactly 1.5 times A's (error 0.5)."""
    import kerinspect

    keras.utils.set_random_seed(0)
    x_in = keras.Input((8,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="fc1")(x_in)
    h = keras.layers.Dense(16, activation="relu", name="fc2")(h)
    a = keras.Model(x_in, keras.layers.Dense(4, name="head")(h), name="small")
    b = keras.models.clone_model(a)
    b.set_weights(a.get_weights())
    kernel, bias = b.get_layer("fc2").get_weights()
    b.get_layer("fc2").set_weights([kernel * 1.5, bias])
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")

    result = kerinspect.diff_models(a, b, x, local=True)
    golden("diff_repr.txt", repr(result))

    assert result["fc2"] is result.pairs[2] and result["fc2"].error == pytest.approx(0.5)
    assert "head" in result and "fc9" not in result and 3 not in result
    with pytest.raises(KeyError, match=r"No pair 'fc22'") as caught:
        result["fc22"]
    assert "'fc2'" in caught.value.hint and caught.value.exit_code == 2
    assert [p.path_a for p in result.diverged()] == ["fc2", "head"]
    assert [p.path_a for p in result.diverged(local=True)] == ["fc2"]  # head's own error is 0

    page = result._repr_html_()
    assert page.count("<tr>") == 1 + sum(len(p.outputs) for p in result.pairs)
    hostile = dataclasses.replace(
        result, pairs=(dataclasses.replace(result.pairs[2], path_a="<img src=x onerror=alert(1)>"),)
    )
    page = hostile._repr_html_()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page

    pytest.importorskip("pandas")
    df = result.to_pandas()
    assert list(df.index) == [p.path_a for p in result.pairs]  # one row per paired output
    for p in result.pairs:
        o = p.outputs[0]
        assert df.loc[p.path_a, "normalised_error"] == o.error.normalised_error
        assert df.loc[p.path_a, "cosine"] == o.error.cosine
        assert df.loc[p.path_a, "sqnr_db"] == o.error.sqnr_db
        if o.local is not None:
            assert df.loc[p.path_a, "local_normalised_error"] == o.local.normalised_error
    assert df["diverged"].tolist() == [False, False, True, True]
