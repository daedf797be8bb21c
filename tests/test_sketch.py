"""The quantile sketch (kerinspect/sketch.py) and the p01/p50/p99 it gives every float
output: buckets against a per-value reference (the float32 bits read with ``struct``),
exact merges whatever the batching, percentiles within the documented bound of
``np.percentile`` (numpy's default, linear), and through the worker: the CLI's JSON against
numpy percentiles of plain-Keras activations, the eager and compiled engines alike."""

from __future__ import annotations

import json
import math
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect import sketch, stats
from kerinspect.cli import cli
from kerinspect.sketch import RELATIVE_ERROR, Sketch

QS = (1.0, 50.0, 99.0)


def _bucket(x: float) -> int:
    """The bucket of one value, from its float32 bits read by ``struct`` (no numpy view)."""
    bits = struct.unpack(">I", struct.pack(">f", x))[0]
    return bits >> (23 - sketch.MANTISSA_BITS)


def _bound(data: np.ndarray, q: float) -> float:
    """The documented error bound of the q-th percentile: RELATIVE_ERROR of numpy's value,
    or of the larger magnitude of the two order statistics when they straddle zero."""
    x = np.sort(data.astype(np.float64).ravel())
    h = q / 100 * (x.size - 1)
    lo, hi = x[int(math.floor(h))], x[min(int(math.floor(h)) + 1, x.size - 1)]
    want = float(np.percentile(x, q))
    scale = abs(want) if lo * hi >= 0 else max(abs(lo), abs(hi))
    return RELATIVE_ERROR * scale * (1 + 1e-9) + 1e-300


def _assert_percentiles(got, data):
    data = np.asarray(data, dtype=np.float64).ravel()
    for q, g in zip(QS, got):
        want = float(np.percentile(data, q))
        assert g is not None and abs(g - want) <= _bound(data, q), (q, g, want)


def test_bucket_bound_holds_for_every_value_and_index_matches_the_bits():
    rng = np.random.default_rng(0)
    edges = np.array([2.0 ** (k / 64) for k in range(-300, 300)], dtype=np.float32)
    values = np.concatenate([
        edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(np.inf)),
        rng.standard_normal(2000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 2000),
        np.float32([0.0, -0.0, 1e-45, -1e-45, 3.0e38, -3.0e38, 1.17549435e-38]),
    ]).astype(np.float32)
    values = np.concatenate([values, -values])
    index = sketch.cells(values)
    assert [int(i) for i in index] == [_bucket(float(v)) for v in values]
    rep = sketch.bucket_values(index % sketch.SIDE)
    mag = np.abs(values.astype(np.float64))
    normal = mag >= 2.0**-126  # subnormals: absolute error only (documented)
    rel = np.abs(rep[normal] - mag[normal]) / mag[normal]
    assert rel.max() <= RELATIVE_ERROR * (1 + 1e-12)
    assert RELATIVE_ERROR < 0.01
    assert np.all(np.abs(rep[~normal] - mag[~normal]) < 2.0**-126)


def test_float64_values_are_bucketed_by_their_float32_rounding():
    x = np.array([1.0 + 2.0**-30, 1e39, -1e300, 1e-50, 0.1], dtype=np.float64)
    with np.errstate(over="ignore"):
        assert list(sketch.cells(x)) == list(sketch.cells(x.astype(np.float32)))
    assert sketch.cells(np.float64([1e-50]))[0] == 0  # below float32's range: the zero bucket
    tiny = Sketch.of_values(np.float32([1e-40, -1e-39, 0.0, -0.0, 2e-38]))
    assert tiny.zero == 4 and tiny.count == 5  # subnormals count as zeros


def _sketch_of(x):
    return Sketch.of_values(np.asarray(x))


def test_merge_is_exact_associative_and_commutative():
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_cauchy(n).astype(np.float32) for n in (500, 3000, 17))
    whole = _sketch_of(np.concatenate([a, b, c])).dense()
    left = _sketch_of(a).merge(_sketch_of(b)).merge(_sketch_of(c)).dense()
    right = _sketch_of(a).merge(_sketch_of(b).merge(_sketch_of(c))).dense()
    swapped = _sketch_of(c).merge(_sketch_of(b)).merge(_sketch_of(a)).dense()
    assert np.array_equal(whole, left) and np.array_equal(whole, right) and np.array_equal(whole, swapped)
    assert int(whole.sum()) == a.size + b.size + c.size
    assert np.array_equal(_sketch_of(a).merge(Sketch()).dense(), _sketch_of(a).dense())


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_summaries_do_not_depend_on_batching_or_parts(dtype):
    rng = np.random.default_rng(2)
    with np.errstate(over="ignore"):  # float16: some overflow to Inf, which the sketch leaves out
        x = (rng.standard_normal((300, 7, 11)) * np.exp(rng.standard_normal((300, 7, 11)) * 3)).astype(dtype)
    x[5, 3, 2], x[200, 0, 0] = np.nan, -np.inf  # left out of the sketch
    one = stats.summarize(x, sketch=True)
    assert one is not None and one.sketch is not None
    with ThreadPoolExecutor(3) as pool:
        parts = stats.summarize(x, sketch=True, parts=3, map_fn=pool.map)
    merged = stats.RunningStats()
    for start in range(0, 300, 37):
        more = stats.summarize(x[start : start + 37], sketch=True)
        assert more is not None
        merged.merge(more)
    assert parts is not None
    for s in (parts, merged):
        assert s.sketch is not None and np.array_equal(s.sketch.dense(), one.sketch.dense())
        assert s.percentiles() == one.percentiles()
    finite = x[np.isfinite(x)]
    with np.errstate(over="ignore"):
        want = np.bincount([_bucket(float(v)) for v in finite.astype(np.float32)], minlength=sketch.CELLS)
    assert np.array_equal(one.sketch.dense(), _padded(want))
    _assert_percentiles(one.percentiles(), finite)


@pytest.mark.parametrize(
    "name",
    ["cauchy", "lognormal", "negative", "mixed", "constant", "tiny", "relu", "huge", "few"],
)
def test_percentiles_are_within_one_percent_of_numpy(name):
    rng = np.random.default_rng(3)
    data = {
        "cauchy": rng.standard_cauchy(100_001),
        "lognormal": rng.lognormal(0, 4, 50_001),
        "negative": -np.abs(rng.standard_normal(20_001)).astype(np.float32),
        "mixed": (rng.standard_normal(40_001) + 0.3).astype(np.float32),
        "constant": np.full(999, -2.5, np.float32),
        "tiny": rng.standard_normal(10_001) * 1e-30,
        "relu": np.maximum(rng.standard_normal(30_000), 0).astype(np.float32),
        "huge": rng.standard_normal(5_000) * 1e30,
        "few": np.float32([3.0, -1.0, 7.5]),
    }[name]
    s = stats.summarize(data, sketch=True)
    assert s is not None
    _assert_percentiles(s.percentiles(), data)
    final = s.finalize()
    assert (final.p01, final.p50, final.p99) == s.percentiles()


def test_nan_and_inf_are_left_out_and_non_floats_have_none():
    x = np.float32([1.0, np.nan, 2.0, np.inf, -np.inf, 3.0, 4.0])
    s = stats.summarize(x, sketch=True)
    assert s is not None and s.sketch is not None and s.sketch.count == 4
    _assert_percentiles(s.percentiles(), x[np.isfinite(x)])
    ints = stats.summarize(np.arange(10), sketch=True)
    assert ints is not None and ints.sketch is None and ints.finalize().p50 is None
    empty = stats.summarize(np.zeros((0, 3), np.float32), sketch=True)
    assert empty is not None and empty.finalize().p50 is None
    plain = stats.summarize(np.ones(4, np.float32))  # not asked for
    assert plain is not None and plain.finalize().p50 is None
    nothing = stats.summarize(np.float32([np.nan, np.inf]), sketch=True)
    assert nothing is not None and nothing.finalize().p01 is None


def test_the_device_counts_are_numpys(keras):
    """The compiled engine's bucket counts (TensorFlow integer ops) equal numpy's, for
    float32, float16, bfloat16 and float64 tensors (huge, tiny, signed zeros too)."""
    import tensorflow as tf

    from kerinspect.engine.compiled import sketch_cells

    rng = np.random.default_rng(4)
    base = rng.standard_normal(5000) * 10.0 ** rng.integers(-40, 40, 5000)
    base = np.concatenate([base, [0.0, -0.0, 1e-45, -3e-39, 1e39, -1e300, 2.0**0.5, -(2.0**-0.5)]])
    for dtype in (tf.float32, tf.float16, tf.bfloat16, tf.float64):
        t = tf.cast(tf.constant(base.reshape(-1, 2)), dtype)
        got = Sketch.of_counts(sketch_cells(t).numpy()).dense()
        host = t.numpy() if dtype != tf.bfloat16 else tf.cast(t, tf.float32).numpy()
        assert np.array_equal(got, _padded(sketch.count_cells(host))), dtype


def _padded(counts):
    """All CELLS counts, those of the subnormals and zeros of either sign in bucket 0
    (as Sketch.dense)."""
    out = np.zeros(sketch.CELLS, dtype=np.int64)
    out[: counts.size] = counts
    side, first = sketch.SIDE, sketch.FIRST
    out[0] = out[:first].sum() + out[side : side + first].sum()
    out[1:first] = out[side : side + first] = 0
    return out


# --- through the worker: `summary --format json`, eager and compiled -----------------

SAMPLES, BATCH = 48, 16


def _model(keras):
    keras.utils.set_random_seed(11)
    layers = keras.layers
    x = keras.Input((6, 6, 3), name="img")
    h = layers.Conv2D(8, 3, name="conv")(x)
    h = layers.ReLU(name="relu")(h)
    h = layers.LayerNormalization(name="ln")(h)
    h = layers.Flatten(name="flat")(h)
    h = layers.Dense(16, activation="tanh", name="dense")(h)
    out = layers.Dense(4, activation="softmax", name="probs")(h)
    return keras.Model(x, [out, keras.ops.argmax(out, axis=-1)], name="sketchy")


@pytest.fixture(scope="module")
def runs(keras, tmp_path_factory):
    """The model, its inputs, and the JSON reports of one eager and one compiled run."""
    d = tmp_path_factory.mktemp("sketch")
    model = _model(keras)
    path = d / "sketchy.keras"
    model.save(path)
    model = keras.saving.load_model(path)
    x = (np.random.default_rng(5).standard_normal((SAMPLES, 6, 6, 3)) * 3).astype("float32")
    np.savez(d / "x.npz", img=x)
    out = {}
    for engine in ("eager", "compiled"):
        result = CliRunner().invoke(
            cli,
            ["summary", str(path), "--input", str(d / "x.npz"), "--batch-size", str(BATCH),
             "--engine", engine, "--percentiles", "--format", "json"],
        )
        assert result.exit_code == 0, result.output
        out[engine] = json.loads(result.output)
    return model, x, out


def _outputs(report):
    return {(layer["path"], k): t for layer in report["layers"] for k, t in enumerate(layer["outputs"])}


@pytest.mark.parametrize("engine", ["eager", "compiled"])
def test_json_percentiles_match_numpy_on_plain_keras_activations(runs, engine):
    from tests.reference import reference_calls

    model, x, reports = runs
    report = reports[engine]
    assert report["engine"].startswith(engine), report["engine"]
    tensors = _outputs(report)
    ref = reference_calls(model, [x])
    checked = 0
    for path, arrays in ref.items():
        for k, arr in enumerate(arrays):
            t = tensors[(path, k)]["stats"]
            if np.asarray(arr).dtype.kind != "f":
                assert t["p01"] is None and t["p50"] is None and t["p99"] is None, path
                continue
            _assert_percentiles((t["p01"], t["p50"], t["p99"]), np.asarray(arr))
            checked += 1
    assert checked >= 6


def test_eager_and_compiled_percentiles_are_identical(runs):
    _, _, reports = runs
    eager, compiled = _outputs(reports["eager"]), _outputs(reports["compiled"])
    assert eager.keys() == compiled.keys()
    for key, t in eager.items():
        for field in ("p01", "p50", "p99"):
            assert t["stats"][field] == compiled[key]["stats"][field], (key, field)


@pytest.mark.parametrize("engine", ["eager", "compiled"])
def test_percentiles_are_off_unless_asked_and_change_nothing_else(runs, engine):
    """Without ``percentiles`` (the default) p01/p50/p99 are None for every output, the
    JSON keys stay, and every other statistic is the run's with them."""
    import kerinspect

    model, x, reports = runs
    plain = kerinspect.inspect_model(model, x, batch_size=BATCH, engine=engine).to_dict()
    assert plain["engine"].startswith(engine), plain["engine"]
    asked = _outputs(reports[engine])
    for key, t in _outputs(plain).items():
        assert t["stats"]["p01"] is None and t["stats"]["p50"] is None and t["stats"]["p99"] is None, key
        assert t["stats"].keys() == asked[key]["stats"].keys(), key
        for field, v in t["stats"].items():
            w = asked[key]["stats"][field]
            if field not in ("p01", "p50", "p99"):
                assert (v is None) == (w is None) and (v is None or v == pytest.approx(w, rel=1e-12)), (key, field)


def test_dump_manifest_stats_carry_percentiles_when_asked(runs, tmp_path):
    """``dump --percentiles``: the manifest's stats of every float tensor hold p01/p50/p99
    within the bound of numpy's on the plain-Keras activations (the same model and inputs)."""
    from tests.reference import reference_calls

    model, x, _ = runs
    d = tmp_path / "in"
    d.mkdir()
    model.save(d / "m.keras")
    np.savez(d / "x.npz", img=x)
    result = CliRunner().invoke(
        cli,
        ["dump", str(d / "m.keras"), "--out", str(tmp_path / "acts"), "--input", str(d / "x.npz"),
         "--batch-size", str(BATCH), "--layers", "dense", "--layers", "ln", "--percentiles"],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    ref = reference_calls(model, [x])
    entries = {e["path"]: e for e in manifest["tensors"]}
    assert set(entries) == {"dense", "ln"}
    for path, e in entries.items():
        s = e["stats"]
        _assert_percentiles((s["p01"], s["p50"], s["p99"]), np.asarray(ref[path][0]))
