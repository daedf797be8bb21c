"""The compiled engine (``--engine compiled``): every batch one traced function whose
statistics are computed on the device. Its figures are checked against numpy float64
statistics of plain-Keras outputs (tests/reference.py, tests/test_deep.py's replay by
hand), over several batches with a ragged last one, and against the eager engine for
everything else a report holds (flags, per-head attention)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import kerinspect
from kerinspect.cli import cli
from tests.reference import reference_calls
from tests.test_deep import _by_hand, transformer

#: 10 samples in batches of 4: three batches, the last one ragged
SAMPLES, BATCH = 10, 4
#: 36 samples in batches of 4: nine, enough for --engine auto to compile batches 2-9
LONG = 36
#: statistics compared between engines
FIELDS = ("mean", "std", "min", "max", "zero_fraction", "dead_fraction", "rms", "sample_spread",
          "saturated_fraction", "nan_count", "inf_count", "count", "p01", "p50", "p99")


def compiled_label() -> str:
    from kerinspect.engine.compiled import device

    return f"compiled ({device()})"


def numpy_stats(arr: np.ndarray) -> dict[str, float | None]:
    """The report's statistics of one tensor, in float64 numpy (finite values only)."""
    a = np.asarray(arr)
    x = a.astype(np.float64)
    finite = x[np.isfinite(x)]
    out: dict[str, float | None] = {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "zero_fraction": float(np.mean(x == 0)),
        "rms": float(np.sqrt(np.mean(finite * finite))),
    }
    if a.ndim >= 2 and a.shape[-1]:
        out["dead_fraction"] = float(np.mean(~np.any(a.reshape(-1, a.shape[-1]) != 0, axis=0)))
    if np.isfinite(x).all() and a.ndim >= 2 and a.shape[0] == SAMPLES:  # axis 0: the samples
        per_sample = x.reshape(a.shape[0], -1, a.shape[-1]).mean(axis=1)  # (samples, units)
        out["sample_spread"] = float(per_sample.std(axis=0).mean())
    return out


def assert_stats(stats, arr, where, rel=2e-3):
    """``stats`` (a report's TensorStats) equal numpy's statistics of ``arr``, relative
    ``rel`` (scaled by the tensor's RMS, so that a mean near zero compares fairly)."""
    want = numpy_stats(arr)
    scale = max(want["rms"] or 0.0, 1e-6)
    for name, value in want.items():
        got = getattr(stats, name)
        assert got is not None, (where, name)
        tol = rel * (scale if name in ("mean", "min", "max", "std", "rms", "sample_spread") else 1.0)
        assert abs(got - value) <= tol + 1e-7, (where, name, got, value)


def _inputs(model, seed=5):
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    return next(build_feed(model, None, RunSpec(samples=SAMPLES, batch_size=SAMPLES, seed=seed)).batches())


def _compiled(model, batch, **kw):
    arrays = batch if len(batch) > 1 else batch[0]
    return kerinspect.inspect_model(model, arrays, engine="compiled", batch_size=BATCH, **kw)


FINITE = ["mlp", "shared", "nested", "deep_nested", "rnn_states", "attention", "masked",
          "inference_mode", "multi_io", "sequential_no_input", "dead_units", "exploding"]


@pytest.mark.parametrize("name", FINITE)
def test_every_graph_call_matches_numpy_statistics_of_plain_keras(factories, name):
    model = factories.ALL[name]()
    batch = _inputs(model)
    report = _compiled(model, batch)
    assert report.engine == compiled_label(), report.model.notes
    rows = {r.path: r for r in report.layers}
    ref = reference_calls(model, batch)
    assert ref
    for path, arrays in ref.items():
        row = rows[path]
        for k, arr in enumerate(arrays):
            tensor = row.outputs[k]
            assert tensor.shape == arr.shape, path
            assert tensor.stats.count == arr.size
            assert_stats(tensor.stats, arr, f"{name}:{path}:{k}")


def test_feature_maps_of_many_positions_match_numpy_statistics(keras):
    """Maps of at least 128 positions a sample (16x16 and 4x8x4 here: 256, 128) have
    their per-sample sums and per-unit non-zero counts taken as matrix products, smaller
    ones (2x2: 4) by reductions: both against numpy statistics of plain-Keras outputs,
    over three batches with a ragged last one, with dead units and a large mean."""
    keras.utils.set_random_seed(3)
    x = keras.Input((16, 16, 3), name="image")
    conv = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")
    h = conv(x)
    shifted = keras.layers.Conv2D(4, 1, name="shifted")(h)
    pooled = keras.layers.MaxPooling2D(8, name="pool")(h)
    cube = keras.layers.Reshape((4, 8, 4, 4), name="cube")(keras.layers.Conv2D(2, 1, name="two")(h))
    model = keras.Model(x, [shifted, pooled, cube])
    kernel, bias = conv.get_weights()
    kernel[..., :3] = 0.0
    bias[:3] = [-1.0, 0.0, -5.0]  # three dead units
    conv.set_weights([kernel, bias])
    w, b = model.get_layer("shifted").get_weights()
    model.get_layer("shifted").set_weights([w, b + 1e3])  # a mean far from zero
    batch = [np.random.default_rng(8).standard_normal((SAMPLES, 16, 16, 3)).astype("float32")]
    report = _compiled(model, batch)
    assert report.engine == compiled_label(), report.model.notes
    rows = {r.path: r for r in report.layers}
    ref = reference_calls(model, batch)
    assert {"conv", "shifted", "pool", "cube"} <= set(ref)
    for path, arrays in ref.items():
        for k, arr in enumerate(arrays):
            stats = rows[path].outputs[k].stats
            assert stats.count == arr.size
            assert_stats(stats, arr, f"{path}:{k}")
            if arr.ndim >= 2:  # counts exactly
                units = arr.reshape(-1, arr.shape[-1])
                assert stats.zero_fraction == pytest.approx(float(np.mean(arr == 0)), abs=1e-12), path
                assert stats.dead_fraction == pytest.approx(float(np.mean(~units.any(axis=0))), abs=1e-12)
    assert rows["conv"].outputs[0].stats.dead_fraction == pytest.approx(3 / 8)


def assert_same_report(fast, slow):
    """Two reports of one model agree: rows, shapes, flags, every statistic (relative
    2e-3 of the tensor's RMS), input figures and per-head attention."""
    assert [r.path for r in fast.layers] == [r.path for r in slow.layers]
    for a, b in zip(fast.layers, slow.layers):
        assert (a.container, a.called, a.depth, a.activation) == (b.container, b.called, b.depth, b.activation)
        assert [(o.name, o.shape, o.dtype, o.flags, o.model_output) for o in a.outputs] == [
            (o.name, o.shape, o.dtype, o.flags, o.model_output) for o in b.outputs
        ], a.path
        for x, y in zip(a.outputs, b.outputs):
            if y.stats is None:
                assert x.stats is None
                continue
            scale = max(abs(y.stats.rms or 0.0), 1e-6)
            for field in FIELDS:
                u, v = getattr(x.stats, field), getattr(y.stats, field)
                assert (u is None) == (v is None), (a.path, field, u, v)
                if u is not None:
                    scaled = ("mean", "std", "min", "max", "rms", "sample_spread", "p01", "p50", "p99")
                    tol = 2e-3 * (scale if field in scaled else 1)
                    assert abs(u - v) <= tol + 1e-9, (a.path, field, u, v)
        for x, y in ((a.input_rms, b.input_rms), (a.input_spread, b.input_spread)):
            assert (x is None) == (y is None) and (x is None or math.isclose(x, y, rel_tol=2e-3, abs_tol=1e-9))
        if b.attention is not None:
            assert a.attention.status == b.attention.status and a.attention.shape == b.attention.shape
            for h, g in zip(a.attention.heads, b.attention.heads):
                for field in ("entropy", "min_entropy", "max_weight", "sink", "diagonal"):
                    u, v = getattr(h, field), getattr(g, field)
                    assert (u is None) == (v is None) and (u is None or math.isclose(u, v, rel_tol=1e-6)), field


@pytest.mark.parametrize("name", FINITE)
def test_the_compiled_report_is_the_eager_one(factories, name):
    model = factories.ALL[name]()
    batch = _inputs(model)
    fast = _compiled(model, batch, percentiles=True)
    slow = kerinspect.inspect_model(
        model, batch if len(batch) > 1 else batch[0], engine="eager", batch_size=BATCH, percentiles=True
    )
    assert slow.engine == "eager"
    assert any(t.stats.p50 is not None for layer in fast.layers for t in layer.outputs), name
    assert_same_report(fast, slow)


def kernel_loaded() -> bool:
    from kerinspect.engine import kernel

    return kernel.load() is not None


@pytest.mark.parametrize("name", ["attention", "nested", "multi_io", "rnn_states", "masked"])
def test_auto_eager_then_compiled_is_the_eager_report(factories, name):
    """``auto`` on a CPU with percentiles (TensorFlow's operations, not the kernel): the
    first batch eagerly, the other eight compiled, one report."""
    model = factories.ALL[name]()
    mixed = kerinspect.inspect_model(model, samples=LONG, batch_size=BATCH, percentiles=True)
    if compiled_label() == "compiled (CPU)":
        assert mixed.engine == "eager, then compiled (CPU)", mixed.model.notes
    slow = kerinspect.inspect_model(model, samples=LONG, batch_size=BATCH, engine="eager", percentiles=True)
    assert_same_report(mixed, slow)


@pytest.mark.parametrize("name", ["attention", "nested"])
def test_auto_with_the_kernel_compiles_from_the_first_batch(factories, name):
    """``auto`` on a CPU with the fused kernel, nine batches: the trace tells every output's
    size from its static shape, so all nine run compiled; one report, the eager engine's."""
    model = factories.ALL[name]()
    fast = kerinspect.inspect_model(model, samples=LONG, batch_size=BATCH)
    if compiled_label() == "compiled (CPU)":
        want = "compiled (CPU)" if kernel_loaded() else "eager, then compiled (CPU)"
        assert fast.engine == want, fast.model.notes
    assert_same_report(fast, kerinspect.inspect_model(model, samples=LONG, batch_size=BATCH, engine="eager"))


def test_auto_runs_the_first_batch_eagerly_where_an_axis_is_data_dependent(keras):
    """An output the kernel does not read (int32) whose size the trace cannot tell (the
    columns a mask keeps): ``auto`` runs the first batch eagerly, its sizes decide, the
    other eight compile; one report."""
    import tensorflow as tf

    class KeepPositive(keras.layers.Layer):
        def call(self, x):  # the columns positive in the first row, in hundredths
            return tf.cast(tf.boolean_mask(x, x[0] > 0, axis=1) * 100, tf.int32)

    x = keras.Input((6,), name="x")
    kept = KeepPositive(name="keep")(keras.layers.Dense(6, name="d")(x))
    model = keras.Model(x, keras.layers.Lambda(lambda t: keras.ops.sum(t, axis=1, keepdims=True), name="sum")(kept))
    arr = np.random.default_rng(7).standard_normal((LONG, 6)).astype("float32")
    mixed = kerinspect.inspect_model(model, arr, batch_size=BATCH)
    if compiled_label() == "compiled (CPU)":
        assert mixed.engine == "eager, then compiled (CPU)", mixed.model.notes
    assert not mixed.model.notes
    assert_same_report(mixed, kerinspect.inspect_model(model, arr, batch_size=BATCH, engine="eager"))


def test_auto_measures_each_compiled_batch_where_a_reshape_hides_an_output_size(keras, monkeypatch):
    """A reshape to ``[-1]`` merges the batch into axis 0, so the trace takes a 2 MB output
    (rank 1: the kernel does not read it) for 16 values; the first compiled batch measures
    it, and the rest run eagerly (the limit, lowered here, is for TensorFlow's temporaries)."""
    import tensorflow as tf

    from kerinspect.engine import compiled

    class Flat(keras.layers.Layer):
        def call(self, x):
            return tf.reshape(x, [-1])

        def compute_output_shape(self, shape):
            return (None,)

    x = keras.Input((32, 32, 3), name="x")
    wide = keras.layers.Conv2D(130, 1, name="wide")(x)  # 4 x 32 x 32 x 130 float32: 2.1 MB
    model = keras.Model(x, keras.layers.Lambda(lambda t: keras.ops.sum(t, keepdims=True), name="sum")(Flat(name="flat")(wide)))
    arr = np.random.default_rng(8).standard_normal((LONG, 32, 32, 3)).astype("float32")
    monkeypatch.setattr(compiled, "AUTO_COMPILE_MAX_TENSOR_BYTES", 1 << 20)
    report = kerinspect.inspect_model(model, arr, batch_size=BATCH)
    if compiled_label() == "compiled (CPU)" and kernel_loaded():
        assert report.engine == "compiled (CPU), then eager", report.model.notes
    assert_same_report(report, kerinspect.inspect_model(model, arr, batch_size=BATCH, engine="eager"))


def test_float16_outputs_match_the_eager_engine(keras):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(3)
        x = keras.Input((6,), name="x")
        h = keras.layers.Dense(8, activation="relu", name="d1")(x)
        model = keras.Model(x, keras.layers.Dense(3, activation="sigmoid", name="d2")(h))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = {"samples": SAMPLES, "batch_size": BATCH, "percentiles": True}
    fast = kerinspect.inspect_model(model, engine="compiled", **run)
    assert fast.engine == compiled_label() and fast["d1"].outputs[0].dtype == "float16"
    assert fast["d1"].outputs[0].stats.p50 is not None
    assert_same_report(fast, kerinspect.inspect_model(model, engine="eager", **run))


def test_inner_calls_and_attention_match_a_replay_by_hand(keras):
    """Deep capture in the trace: every call inside the custom blocks, and the
    attention probabilities, as a plain-Keras replay of the custom call() gives them."""
    model = transformer(keras)
    ids = np.random.default_rng(0).integers(0, 20, (SAMPLES, 6)).astype("int32")
    report = _compiled(model, [ids])
    assert report.engine == compiled_label()
    ref = _by_hand(keras, model, ids)
    for path, want in ref.items():
        key, _, output = path.partition(":")
        assert_stats(report[key].outputs[0 if output in ("", "output") else 1].stats, want, path)
    for name in ("block", "block2"):
        h = ref["emb"] if name == "block" else ref["block"]
        layer = model.get_layer(name).att
        _, probs = layer(h, h, return_attention_scores=True)
        assert_stats(report[f"{name}/att:attention_scores"].stats, np.asarray(probs), name)
        heads = report[f"{name}/att"].attention.heads
        p = np.asarray(probs, dtype=np.float64)
        assert [h.sink for h in heads] == pytest.approx(p[..., 0].mean(axis=(0, 2)), rel=1e-6)
        assert [h.max_weight for h in heads] == pytest.approx(p.max(-1).mean(axis=(0, 2)), rel=1e-6)


def test_nan_or_inf_runs_eagerly_with_a_note(factories):
    """NaN/Inf are counted and masked exactly by the eager engine: a batch that holds
    them sends the run there, also when the compiled engine was asked for."""
    model = factories.nan_at()
    batch = _inputs(model)
    report = _compiled(model, batch)
    assert report.engine == "eager"
    assert any("eager engine" in n and "NaN or Inf" in n for n in report.model.notes), report.model.notes
    ref = reference_calls(model, batch)
    nan_row = next(r for r in report.layers if r.path in ref and r.outputs[0].stats.nan_count)
    assert nan_row.outputs[0].stats.nan_count == int(np.isnan(ref[nan_row.path][0]).sum())


def test_float32_overflow_of_finite_values_is_summarised_exactly(keras):
    """Values near float32's largest overflow the device's float32 sums: the figures
    are still numpy's float64 ones (finite, no Inf). The fused kernel (engine/kernel)
    sums in float64 and keeps the batch compiled; TensorFlow's float32 reductions send
    it to the eager engine, with a note."""
    from kerinspect.engine import kernel as fused_kernel

    x = keras.Input((4,), name="x")
    big = keras.layers.Dense(8, name="big")
    model = keras.Model(x, big(x))
    kernel, bias = big.get_weights()
    big.set_weights([kernel * 1e37, bias])
    batch = [np.random.default_rng(1).standard_normal((SAMPLES, 4)).astype("float32")]
    out = np.asarray(model(batch[0]))
    assert np.isfinite(out).all() and np.abs(out).max() > 1e37
    report = _compiled(model, batch)
    if fused_kernel.load() is not None:
        assert report.engine == compiled_label() and not report.model.notes, report.model.notes
    else:
        assert report.engine == "eager" and any("overflow" in n for n in report.model.notes), report.model.notes
    stats = report["big"].outputs[0].stats
    assert stats.inf_count == 0 and math.isfinite(stats.std)
    assert stats.max == pytest.approx(float(out.max()), rel=1e-6)
    assert stats.std == pytest.approx(float(out.astype(np.float64).std()), rel=1e-6)


def test_a_mean_large_against_its_spread_keeps_its_std(keras):
    """float32 values 1e4 + N(0, 1): the device's M2 is taken around a rounded mean;
    the std is still numpy's."""
    x = keras.Input((4,), name="x")
    dense = keras.layers.Dense(8, name="offset")
    model = keras.Model(x, dense(x))
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + 1e4])
    batch = [np.random.default_rng(4).standard_normal((SAMPLES, 4)).astype("float32")]
    report = _compiled(model, batch)
    assert report.engine == compiled_label()
    out = np.asarray(model(batch[0])).astype(np.float64)
    assert report["offset"].outputs[0].stats.std == pytest.approx(float(out.std()), rel=2e-3)


def test_nan_in_a_later_batch_sends_the_rest_eagerly(keras):
    x = keras.Input((3,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.Activation(keras.ops.log, name="log")(x)))
    arr = np.random.default_rng(6).uniform(0.5, 2.0, (LONG, 3)).astype("float32")
    arr[21, 1] = -1.0  # batch 6 of 9: log(-1) is NaN
    report = kerinspect.inspect_model(model, arr, batch_size=BATCH)
    if compiled_label() == "compiled (CPU)":
        first = "compiled (CPU)" if kernel_loaded() else "eager, then compiled (CPU)"
        assert report.engine == f"{first}, then eager", report.model.notes
    assert any(n.startswith("eager engine from batch 6") for n in report.model.notes), report.model.notes
    assert report["log"].outputs[0].stats.nan_count == 1
    assert report["head"].outputs[0].stats.nan_count == 2
    assert_same_report(report, kerinspect.inspect_model(model, arr, batch_size=BATCH, engine="eager"))


def test_calls_inside_a_cond_run_eagerly(keras):
    """A custom call that picks a sub-layer with ops.cond: eagerly the branch taken is
    a row; a trace would hide both branches in graphs of their own. So: eager."""

    class Pick(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.a = keras.layers.Dense(4, name="a")
            self.b = keras.layers.Dense(4, name="b")

        def call(self, x):
            return keras.ops.cond(keras.ops.mean(x) > 0, lambda: self.a(x), lambda: self.b(x))

        def compute_output_shape(self, shape):
            return (*shape[:-1], 4)

    x = keras.Input((4,), name="x")
    model = keras.Model(x, Pick(name="pick")(x))
    arr = np.abs(np.random.default_rng(7).standard_normal((LONG, 4))).astype("float32")
    report = kerinspect.inspect_model(model, arr, batch_size=BATCH)
    assert report.engine == "eager" and "pick/a" in report
    assert any("cond or loop" in n for n in report.model.notes), report.model.notes


def _untraceable(keras):
    class ReadsValues(keras.layers.Layer):
        """A custom call that reads a tensor's value in Python (fine eagerly only)."""

        def call(self, x):
            scale = float(np.asarray(x).std()) + 1.0
            return x / scale

        def compute_output_shape(self, shape):
            return shape

    x = keras.Input((4,), name="x")
    return keras.Model(x, keras.layers.Dense(2, name="head")(ReadsValues(name="reads")(x)))


def test_a_model_that_cannot_be_traced_runs_eagerly_with_a_note(keras):
    model = _untraceable(keras)
    x = np.random.default_rng(2).standard_normal((64, 4)).astype("float32")
    report = kerinspect.inspect_model(model, x, batch_size=4)  # auto: 16 batches, worth compiling
    assert report.engine == "eager"
    note = next(n for n in report.model.notes if n.startswith("eager engine"))
    assert "'reads'" in note and "\n" not in note
    assert report["head"].outputs[0].shape == (64, 2)


def test_engine_compiled_on_a_model_that_cannot_be_traced_is_one_error(keras):
    from kerinspect.errors import InferenceError

    model = _untraceable(keras)
    with pytest.raises(InferenceError) as info:
        kerinspect.inspect_model(model, np.ones((4, 4), "float32"), engine="compiled")
    assert info.value.rule == "not-compiled" and "'reads'" in str(info.value)


def test_auto_compiles_long_runs_of_small_tensors(factories, keras):
    """Without percentiles: from the first batch with the kernel, after one eager batch
    without it."""
    from kerinspect.spec import AUTO_COMPILE_MAX_TENSOR_BYTES

    model = factories.mlp()
    assert kerinspect.inspect_model(model).engine == "eager"  # one batch: the trace would not pay
    long = kerinspect.inspect_model(model, samples=64, batch_size=8)
    assert not long.model.notes
    if compiled_label() == "compiled (CPU)":
        assert long.engine == ("compiled (CPU)" if kernel_loaded() else "eager, then compiled (CPU)")
    assert kerinspect.inspect_model(model, samples=64, batch_size=8, engine="eager").engine == "eager"
    # large tensors (TensorFlow's statistics operations' temporaries would cost memory):
    # eager throughout, but where the fused kernel reads them (no temporaries:
    # tests/test_kernel.py, through the worker, both ways)
    from kerinspect.engine import kernel as fused_kernel

    x = keras.Input((AUTO_COMPILE_MAX_TENSOR_BYTES // 4 // 8 + 1,), name="x")
    wide = keras.Model(x, keras.layers.ReLU(name="relu")(x))
    want = "eager" if fused_kernel.load() is None or compiled_label() != "compiled (CPU)" else long.engine
    assert kerinspect.inspect_model(wide, samples=64, batch_size=8).engine == want
    assert kerinspect.inspect_model(wide, samples=64, batch_size=8, percentiles=True).engine == "eager"


def test_compiled_run_through_the_worker(saved, keras, tmp_path):
    """The CLI, the real worker: `--engine compiled` gives plain Keras's figures."""
    model = keras.saving.load_model(saved["attention"])  # as saved: its raw ops' names
    batch = _inputs(model)
    np.savez(tmp_path / "x.npz", **{t.name: a for t, a in zip(model.inputs, batch)})
    result = CliRunner().invoke(
        cli,
        ["summary", saved["attention"], "--input", str(tmp_path / "x.npz"), "--batch-size", str(BATCH),
         "--engine", "compiled", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    from kerinspect.report import ModelReport

    report = ModelReport.from_dict(json.loads(result.output))
    assert report.engine == compiled_label() and report.samples == SAMPLES
    for path, arrays in reference_calls(model, batch).items():
        for k, arr in enumerate(arrays):
            assert_stats(report[path].outputs[k].stats, arr, path)


def test_engine_option_is_checked(saved):
    result = CliRunner().invoke(cli, ["summary", saved["mlp"], "--engine", "fast"])
    assert result.exit_code == 2 and "'fast' is not one of 'auto', 'compiled', 'eager'" in result.output


def _gpu() -> bool:
    from kerinspect.engine.tfenv import import_keras

    import_keras()
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@pytest.mark.skipif("not __import__('tests.test_compiled', fromlist=['_gpu'])._gpu()", reason="no GPU")
def test_on_a_gpu_statistics_run_there_and_match(factories):
    model = factories.attention()
    batch = _inputs(model)
    report = _compiled(model, batch)
    assert report.engine == "compiled (GPU)"
    for path, arrays in reference_calls(model, batch).items():
        for k, arr in enumerate(arrays):
            assert_stats(report[path].outputs[k].stats, arr, path)


def test_the_table_header_says_which_engine_ran(saved):
    runner = CliRunner()
    long = runner.invoke(cli, ["summary", saved["mlp"], "--samples", "64", "--batch-size", "8"])
    assert long.exit_code == 0, long.output
    if compiled_label() == "compiled (CPU)":
        ran = "compiled (CPU)" if kernel_loaded() else "eager, then compiled (CPU)"
        assert f"batches of 8 · ran {ran}\n" in long.output
    short = runner.invoke(cli, ["summary", saved["mlp"]])
    assert short.exit_code == 0 and " · ran " not in short.output  # one batch: eager, not said


# --- whole tensors (dump, kerinspect.activations): the traced function returns them ---


def _activations(model, x, **kw):
    from kerinspect.engine.activations import collect_activations
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    run = RunSpec(batch_size=BATCH, engine=kw.pop("engine", "eager"), layers=tuple(kw.pop("layers", ())))
    feed = build_feed(model, x, run)
    return collect_activations(model, feed, run, **kw)


@pytest.mark.parametrize("name", ["attention", "nested", "multi_io", "rnn_states"])
def test_compiled_activations_are_plain_keras_outputs(factories, name):
    """After the first (eager) batch, every batch's tensors come from the traced
    function: each equals plain Keras's output of that call, batch by batch stacked."""
    model = getattr(factories, name)()
    batch = _inputs(model)
    got = _activations(model, batch if len(batch) > 1 else batch[0], engine="compiled")
    assert got.engine == f"eager, then {compiled_label()}" and not got.notes
    ref = reference_calls(model, batch)
    for path, arrays in ref.items():
        keys = [c for c in got.arrays if c == path or c.startswith(path + ":")]  # in output order
        assert len(keys) >= len(arrays), (path, keys)
        for key, want in zip(keys, arrays):
            np.testing.assert_allclose(got.arrays[key], want, rtol=1e-5, atol=1e-6, err_msg=key)
    eager = _activations(model, batch if len(batch) > 1 else batch[0], engine="eager")
    assert eager.engine == "eager" and list(eager.arrays) == list(got.arrays)
    for key, arr in eager.arrays.items():
        np.testing.assert_allclose(got.arrays[key], arr, rtol=1e-5, atol=1e-6, err_msg=key)


def test_compiled_activations_inside_custom_blocks_match_a_replay_by_hand(keras):
    """Deep capture and attention probabilities in the traced function's tensors."""
    model = transformer(keras)
    ids = np.random.default_rng(0).integers(0, 20, (SAMPLES, 6)).astype("int32")
    got = _activations(model, ids, layers=["block", "block/*", "block2", "block2/*"], engine="compiled")
    assert got.engine == f"eager, then {compiled_label()}"
    ref = _by_hand(keras, model, ids)
    for path, want in ref.items():
        if path.startswith("block"):
            np.testing.assert_allclose(got.arrays[path], want, rtol=1e-5, atol=1e-5, err_msg=path)
    for name in ("block", "block2"):
        h = ref["emb"] if name == "block" else ref["block"]
        _, probs = model.get_layer(name).att(h, h, return_attention_scores=True)
        np.testing.assert_allclose(got.arrays[f"{name}/att:attention_scores"], np.asarray(probs),
                                   rtol=1e-5, atol=1e-6)
    assert "emb" not in got.arrays  # only what was asked for


def test_auto_compiles_long_dumps_of_small_tensors(factories):
    from kerinspect.spec import AUTO_COMPILE_MIN_BATCHES

    model = factories.mlp()
    shape = (BATCH * AUTO_COMPILE_MIN_BATCHES, *model.inputs[0].shape[1:])
    x = np.random.default_rng(3).standard_normal(shape).astype("float32")
    if compiled_label() == "compiled (CPU)":
        assert _activations(model, x, engine="auto").engine == "eager, then compiled (CPU)"
        assert _activations(model, x[: BATCH * (AUTO_COMPILE_MIN_BATCHES - 1)], engine="auto").engine == "eager"
    # the public API's default is auto
    assert kerinspect.activations(model, x, batch_size=BATCH).keys() == _activations(model, x).arrays.keys()


def test_activations_of_a_model_that_cannot_be_traced_run_eagerly(keras):
    from kerinspect.errors import InferenceError

    model = _untraceable(keras)
    x = np.random.default_rng(2).standard_normal((64, 4)).astype("float32")
    got = _activations(model, x, engine="auto")
    assert got.engine == "eager" and "'reads'" in got.notes[0]
    want = np.concatenate([np.asarray(model(x[i : i + BATCH])) for i in range(0, len(x), BATCH)])
    np.testing.assert_allclose(got.arrays["head"], want, rtol=1e-5, atol=1e-6)  # its std is per batch
    with pytest.raises(InferenceError) as info:
        _activations(model, x, engine="compiled")
    assert info.value.rule == "not-compiled"


def test_compiled_dump_through_the_worker(saved, keras, tmp_path):
    """`kerinspect dump --engine compiled`: the real worker writes the traced function's
    tensors, equal to plain Keras's; the manifest and the listing say which engine ran."""
    model = keras.saving.load_model(saved["attention"])
    batch = _inputs(model)
    np.savez(tmp_path / "x.npz", **{t.name: a for t, a in zip(model.inputs, batch)})
    out = tmp_path / "acts"
    result = CliRunner().invoke(
        cli,
        ["dump", saved["attention"], "--out", str(out), "--input", str(tmp_path / "x.npz"),
         "--batch-size", str(BATCH), "--engine", "compiled"],
    )
    assert result.exit_code == 0, result.output
    assert f"engine: eager, then {compiled_label()}\n" in result.output
    dump = kerinspect.load_dump(str(out))
    assert dump.manifest["engine"] == f"eager, then {compiled_label()}" and dump.manifest["notes"] == []
    ref = reference_calls(model, batch)
    for entry in dump.manifest["tensors"]:
        if entry["path"] in ref and entry["output_name"] != "attention_scores":
            want = ref[entry["path"]][entry["output"]]
            np.testing.assert_allclose(dump[entry["key"]], want, rtol=1e-5, atol=1e-6, err_msg=entry["key"])
    assert any(e["output_name"] == "attention_scores" for e in dump.manifest["tensors"])
