"""Models the rest of the suite never built: real-world files saved by other people,
and a Keras Applications architecture. Each layer call must match plain Keras."""

from __future__ import annotations

import numpy as np
import pytest

from kerinspect.stats import summarize
from tests.conftest import REALWORLD
from tests.reference import reference_calls

REALWORLD_KERAS = sorted(REALWORLD.glob("*/*.keras")) if REALWORLD.is_dir() else []


def check_against_reference(report, model, batch, rel=2e-3):
    layers = {r.path: r for r in report.layers}
    ref = reference_calls(model, batch)
    assert ref, "no layer calls"
    for path, arrays in ref.items():
        assert path in layers, path
        for out, arr in zip(layers[path].outputs, arrays, strict=True):
            want = summarize(arr).finalize()
            assert out.shape == arr.shape, path
            for key in ("mean", "std", "min", "max", "zero_fraction"):
                w, g = getattr(want, key), getattr(out.stats, key)
                assert g == pytest.approx(w, rel=rel, abs=1e-5), f"{path}.{key}"
    return len(ref)


@pytest.mark.realworld
@pytest.mark.skipif(not REALWORLD_KERAS, reason="../shared/realworld is absent")
@pytest.mark.parametrize("path", REALWORLD_KERAS, ids=lambda p: p.name)
def test_realworld_keras_files_match_plain_keras(keras, path):
    import kerinspect
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    report = kerinspect.inspect_model(str(path), samples=16, batch_size=16)
    model = keras.saving.load_model(path, compile=False)
    batch = next(build_feed(model, None, RunSpec(samples=16, batch_size=16)).batches())
    assert check_against_reference(report, model, batch) == report.totals.layer_calls
    assert report.totals.params == model.count_params()


@pytest.mark.slow
def test_mobilenet_v2_every_call_matches_plain_keras(keras):
    """A real architecture (depthwise convs, BatchNorm, residual Adds, ReLU6), untrained."""
    import kerinspect
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    keras.utils.set_random_seed(11)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=7)
    report = kerinspect.inspect_model(model, samples=4, batch_size=2)
    batch = next(build_feed(model, None, RunSpec(samples=4, batch_size=4)).batches())
    n = check_against_reference(report, model, batch)
    assert n == report.totals.layer_calls > 100
    pred = model.predict(batch[0], verbose=0)
    final = report.layers[-1].outputs[0].stats
    assert final.mean == pytest.approx(float(np.mean(pred)), rel=1e-4)
