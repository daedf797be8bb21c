"""inspect_model end to end: statistics against numpy on plain-Keras references,
merging across batches, flags on the right layers, errors with exit codes."""

from __future__ import annotations

import numpy as np
import pytest

from kerinspect.errors import ExitCode, InferenceError, InputFileError
from kerinspect.report import Thresholds
from tests.reference import reference_calls


def by_path(report):
    return {r.path: r for r in report.layers}


def numpy_stats(arr):
    """The statistics a report gives for one tensor, computed plainly with numpy
    (no kerinspect code): float64, moments over the finite values."""
    x = np.asarray(arr).astype(np.float64)
    flat = x.reshape(-1)
    fin = flat[np.isfinite(flat)]
    units = x.reshape(-1, x.shape[-1]) if x.ndim >= 2 and x.shape[-1] else None
    return {
        "count": flat.size,
        "mean": float(fin.mean()) if fin.size else None,
        "std": float(fin.std()) if fin.size else None,
        "min": float(fin.min()) if fin.size else None,
        "max": float(fin.max()) if fin.size else None,
        "zero_fraction": float(np.mean(flat == 0)) if flat.size else None,
        "dead_fraction": None if units is None else float(np.mean(np.all(units == 0, axis=0))),
        "nan_count": int(np.isnan(flat).sum()),
        "inf_count": int(np.isinf(flat).sum()),
    }


def feed_arrays(model, n, seed=0):
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    return next(build_feed(model, None, RunSpec(samples=n, batch_size=n, seed=seed)).batches())


@pytest.mark.parametrize("name", ["shared", "nested", "rnn_states", "attention", "masked"])
def test_stats_match_numpy_on_plain_keras_outputs(factories, name):
    """Every tensor's statistics equal numpy's on the plain-Keras output of that call."""
    import kerinspect

    model = factories.ALL[name]()
    batch = feed_arrays(model, 12, seed=4)
    report = kerinspect.inspect_model(model, samples=12, batch_size=5, seed=4)
    ref = reference_calls(model, batch)
    layers = by_path(report)
    assert set(ref) <= set(layers)
    for path, arrays in ref.items():
        assert len(layers[path].outputs) == len(arrays), path
        for out, arr in zip(layers[path].outputs, arrays):
            want = numpy_stats(arr)
            got = out.stats
            assert out.shape == arr.shape, path
            for key in ("mean", "std", "min", "max", "zero_fraction", "dead_fraction"):
                w, g = want[key], getattr(got, key)
                if w is None:
                    assert g is None, f"{path}.{out.name}.{key}"
                else:
                    assert g == pytest.approx(w, rel=2e-3, abs=1e-6), f"{path}.{out.name}.{key}"
            assert (got.nan_count, got.inf_count, got.count) == (
                want["nan_count"], want["inf_count"], want["count"]), path


def test_batch_size_does_not_change_results(factories):
    import kerinspect

    model = factories.nested()
    a = kerinspect.inspect_model(model, samples=20, batch_size=20)
    b = kerinspect.inspect_model(model, samples=20, batch_size=3)
    for ra, rb in zip(a.layers, b.layers):
        assert ra.path == rb.path
        for oa, ob in zip(ra.outputs, rb.outputs):
            assert oa.shape == ob.shape == (20,) + oa.shape[1:]
            for key in ("mean", "std", "min", "max", "zero_fraction", "dead_fraction"):
                assert getattr(ob.stats, key) == pytest.approx(getattr(oa.stats, key), rel=1e-5, abs=1e-7)


def test_flags_land_on_the_right_layers(factories):
    import kerinspect

    nan = by_path(kerinspect.inspect_model(factories.nan_at()))
    assert nan["first"].outputs[0].flags == ()
    assert nan["second"].outputs[0].flags == ("nan",)
    assert nan["third"].outputs[0].flags == ("nan",)
    dead = by_path(kerinspect.inspect_model(factories.dead_units()))
    assert dead["dying"].outputs[0].flags == ("dead",)
    assert dead["dying"].outputs[0].stats.dead_fraction == pytest.approx(6 / 8)
    assert dead["out"].outputs[0].flags == ()
    boom = by_path(kerinspect.inspect_model(factories.exploding()))
    assert boom["big"].outputs[0].flags == ("exploding",)
    quiet = by_path(kerinspect.inspect_model(factories.exploding(), thresholds=Thresholds(max_abs=1e12)))
    assert quiet["big"].outputs[0].flags == ()


def test_report_describes_model_inputs_and_weights(factories):
    import kerinspect

    report = kerinspect.inspect_model(factories.multi_io(), samples=10, batch_size=4, seed=9)
    assert report.model.name == "multi_io" and report.model.format == "in-memory"
    assert report.model.params == factories.multi_io().count_params()
    assert [(i.name, i.shape, i.source, i.seed) for i in report.inputs] == [
        ("numbers", (10, 4), "synthetic", 9), ("ids", (10, 3), "synthetic", 9)]
    assert (report.samples, report.batch_size) == (10, 4)
    assert report.totals.params == report.model.params
    names = [w.name for w in report.weights]
    assert "emb/embeddings" in names and "o1/kernel" in names
    assert all(w.flags == () for w in report.weights)


def test_nan_weight_is_flagged(factories):
    import kerinspect

    weights = {w.name: w for w in kerinspect.inspect_model(factories.nan_at()).weights}
    assert weights["second/bias"].flags == ("nan",) and weights["second/bias"].stats.nan_count == 1
    assert weights["second/kernel"].flags == ()


def test_params_total_counts_shared_and_nested_once(factories):
    import kerinspect

    for name in ("shared", "nested", "deep_nested"):
        model = factories.ALL[name]()
        assert kerinspect.inspect_model(model, samples=2).totals.params == model.count_params(), name


def test_inputs_from_arrays_and_files(factories, tmp_path):
    import kerinspect

    model = factories.mlp()
    x = np.random.default_rng(0).standard_normal((7, 6)).astype("float32")
    report = kerinspect.inspect_model(model, x, batch_size=3)
    assert report.samples == 7 and report.inputs[0].source == "array"
    out = by_path(report)["out"].outputs[0].stats
    ref = numpy_stats(model.predict(x, verbose=0))
    assert out.mean == pytest.approx(ref["mean"], rel=1e-4)
    assert out.std == pytest.approx(ref["std"], rel=1e-4)
    np.save(tmp_path / "x.npy", x)
    report = kerinspect.inspect_model(model, str(tmp_path / "x.npy"), samples=4)
    assert report.samples == 4 and report.inputs[0].source.endswith("x.npy")


def test_saved_models_load_from_both_formats(factories, tmp_path):
    import kerinspect

    model = factories.nested()
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    a = kerinspect.inspect_model(str(tmp_path / "m.keras"), samples=4)
    b = kerinspect.inspect_model(str(tmp_path / "m.h5"), samples=4)
    assert (a.model.format, b.model.format) == ("keras", "h5")
    assert [r.path for r in a.layers] == [r.path for r in b.layers]
    for ra, rb in zip(a.layers, b.layers):
        assert ra.outputs[0].stats.mean == pytest.approx(rb.outputs[0].stats.mean, rel=1e-5, abs=1e-7)


def test_runtime_failure_names_the_layer(keras):
    import kerinspect

    x = keras.Input((None, 3), name="seq")
    h = keras.layers.Dense(3, name="ok")(x)
    m = keras.Model(x, keras.layers.Reshape((4, 3), name="fixed_reshape")(h))
    with pytest.raises(InferenceError) as e:
        kerinspect.inspect_model(m, shapes={"seq": (5, 3)}, samples=2)
    assert e.value.exit_code == ExitCode.INFERENCE
    assert "'fixed_reshape' (Reshape)" in e.value.message and "(1 layer calls before it succeeded)" in e.value.message


def test_missing_input_file_is_exit_3(factories, tmp_path):
    import kerinspect

    with pytest.raises(InputFileError) as e:
        kerinspect.inspect_model(factories.mlp(), str(tmp_path / "nope.npy"))
    assert e.value.exit_code == ExitCode.NO_INPUT


def test_model_outputs_are_marked(factories):
    import kerinspect

    report = kerinspect.inspect_model(factories.attention(), samples=2)
    marked = [(r.path, o.name) for r in report.layers for o in r.outputs if o.model_output]
    assert marked == [("mha", "attention_scores"), ("pool", "output")]
    nested = kerinspect.inspect_model(factories.nested(), samples=2)
    assert [(r.path, o.name) for r in nested.layers for o in r.outputs if o.model_output] == [("seq", "output")]
