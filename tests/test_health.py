"""Health signals: ``vanishing``, ``saturated``, ``constant`` (issue 15).

The statistics behind them (spread across samples, share at saturation bounds) are
checked against numpy; the flags on models built here land on the layer that causes
the problem and nowhere else; healthy models get none; ``check`` runs the rules only
when asked for.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.checks import OPTIONAL_RULES, Verdict, run_checks, tensor_verdicts
from kerinspect.cli import cli
from kerinspect.config import CheckConfig, validate
from kerinspect.errors import UsageError
from kerinspect.report import LayerRecord, ModelReport, TensorStats
from kerinspect.spec import Thresholds
from kerinspect.stats import SATURATION_MARGIN, summarize

HEALTH = set(OPTIONAL_RULES)


# -- statistics against numpy (no TensorFlow) ------------------------------------------


def spread_reference(a: np.ndarray) -> float:
    """Per unit, the std over samples of the sample's mean over its other axes; averaged."""
    x = a.astype(np.float64)
    if x.ndim == 1:
        return float(x.std())
    per_sample = x.reshape(x.shape[0], -1, x.shape[-1]).mean(axis=1)
    return float(per_sample.std(axis=0).mean())


SHAPES = [(7,), (5, 3), (4, 6, 3), (3, 4, 5, 6), (700, 7, 30), (9, 300, 70), (3, 2, 140_000)]


@pytest.mark.parametrize("shape", SHAPES)
def test_sample_spread_matches_numpy_and_is_the_same_for_every_part_count(shape):
    a = (np.random.default_rng(0).standard_normal(shape) * 2 + 0.5).astype(np.float32)
    one = summarize(a, spread=True)
    assert one.sample_spread() == pytest.approx(spread_reference(a), rel=1e-9)
    with ThreadPoolExecutor(4) as pool:
        for parts in (2, 3, 4, 7):
            many = summarize(a, spread=True, parts=parts, map_fn=pool.map)
            assert many.sample_spread() == one.sample_spread(), parts  # bit for bit
            assert np.array_equal(many.unit_m2, one.unit_m2)
            assert (many.mean, many.m2) == (one.mean, one.m2)


@pytest.mark.parametrize("shape", [(24,), (24, 5), (24, 3, 4)])
def test_merged_spread_does_not_depend_on_the_batch_size(shape):
    a = np.random.default_rng(1).standard_normal(shape) * 3
    want = spread_reference(a)
    for batch in (1, 5, 7, 24):
        acc = None
        for i in range(0, shape[0], batch):
            s = summarize(a[i : i + batch], spread=True)
            acc = s if acc is None else acc.merge(s)
        assert acc.sample_spread() == pytest.approx(want, rel=1e-9), batch


def test_spread_is_zero_for_the_same_output_and_undefined_with_nan():
    same = np.tile(np.array([[0.3, -2.0, 5.0]], np.float32), (16, 4, 1))
    assert summarize(same, spread=True).sample_spread() == 0.0
    bad = np.random.default_rng(2).standard_normal((8, 3))
    bad[3, 1] = np.nan
    assert summarize(bad, spread=True).sample_spread() is None
    assert summarize(np.float32(3.0), spread=True).sample_spread() is None  # no batch axis
    assert summarize(bad).sample_spread() is None  # not asked for


@pytest.mark.parametrize("bounds", ["tanh", "sigmoid", "hard_sigmoid"])
def test_share_at_bounds_matches_numpy(bounds):
    z = np.random.default_rng(3).standard_normal((64, 10)) * 6
    y = {
        "tanh": np.tanh(z),
        "sigmoid": 1 / (1 + np.exp(-z)),
        "hard_sigmoid": np.clip(z / 6 + 0.5, 0, 1),
    }[bounds].astype(np.float32)
    lo = -1.0 if bounds == "tanh" else 0.0
    want = np.mean((y >= 1 - SATURATION_MARGIN) | (y <= lo + SATURATION_MARGIN))
    assert summarize(y, bounds=bounds).finalize().saturated_fraction == pytest.approx(want)


@pytest.mark.parametrize("units", [10, 140_000])  # 140,000: a row spans several blocks
def test_softmax_share_counts_one_hot_rows(units):
    rng = np.random.default_rng(4)
    rows = 12
    p = np.full((rows, units), 1e-9 / units)
    hot = rng.random(rows) < 0.5
    p[np.arange(rows), rng.integers(0, units, rows)] += np.where(hot, 0.995, 0.5)
    st = summarize(p, bounds="softmax")
    assert (st.saturated, st.saturation_of) == (int(hot.sum()), rows)
    assert summarize(p).finalize().saturated_fraction is None


# -- the rules on hand-built statistics (no TensorFlow) --------------------------------


def stats(**kw):
    base = dict(
        count=100, mean=0.0, std=1.0, min=-3.0, max=3.0, abs_max=3.0, zero_fraction=0.0,
        nan_count=0, inf_count=0, dead_fraction=0.0, rms=1.0, sample_spread=1.0,
    )  # fmt: skip
    return TensorStats(**{**base, **kw})


def verdicts(st, **kw):
    return tensor_verdicts("float32", st, Thresholds(), **kw)


def test_rule_boundaries():
    v = verdicts(stats(rms=1e-7), input_rms=1.0)
    assert v["vanishing"] is Verdict.FAILED
    assert verdicts(stats(rms=2e-6), input_rms=1.0)["vanishing"] is Verdict.PASSED
    assert verdicts(stats(rms=1e-7))["vanishing"] is Verdict.NOT_CHECKED  # no float input
    assert verdicts(stats(rms=1e-7), input_rms=0.0)["vanishing"] is Verdict.NOT_CHECKED
    assert verdicts(stats(saturated_fraction=0.9))["saturated"] is Verdict.FAILED
    assert verdicts(stats(saturated_fraction=0.89))["saturated"] is Verdict.PASSED
    assert verdicts(stats())["saturated"] is Verdict.NOT_CHECKED  # not a bounded activation
    assert verdicts(stats(sample_spread=0.0), input_spread=1.0)["constant"] is Verdict.FAILED
    assert verdicts(stats(sample_spread=1e-3), input_spread=1.0)["constant"] is Verdict.PASSED
    # the input does not vary (or its variation vanished upstream): not this layer's doing
    assert verdicts(stats(sample_spread=0.0), input_spread=1e-9)["constant"] is Verdict.NOT_CHECKED
    for kw in ({"is_input": True}, {"is_weight": True}, {"container": True}):
        v = verdicts(
            stats(rms=0.0, sample_spread=0.0, saturated_fraction=1.0), input_rms=1.0, input_spread=1.0, **kw
        )
        assert {v[r] for r in HEALTH} == {Verdict.NOT_CHECKED}, kw


def test_reports_written_before_the_new_statistics_still_load():
    d = stats().to_dict()
    for key in ("rms", "sample_spread", "saturated_fraction"):
        del d[key]
    old = TensorStats.from_dict(d)
    assert old.sample_spread is None and old.magnitude == pytest.approx(1.0)
    layer = LayerRecord.from_dict(
        {"path": "d", "name": "d", "class_name": "Dense", "call": 0, "params": 1, "outputs": []}
    )
    assert (layer.activation, layer.input_rms, layer.input_spread) == (None, None, None)


def test_config_keys_are_validated():
    got = validate(
        {"rules": ["constant", "vanishing"], "min_rms_ratio": 1e-5, "max_saturated_fraction": 0.8},
        source="pyproject.toml",
        table="t",
        base_dir=None,
    )
    assert got == {"rules": ("constant", "vanishing"), "min_rms_ratio": 1e-5, "max_saturated_fraction": 0.8}
    with pytest.raises(UsageError, match="rules"):
        validate({"rules": ["nope"]}, source="p", table="t", base_dir=None)
    with pytest.raises(UsageError, match="min_sample_spread"):
        validate({"min_sample_spread": 2}, source="p", table="t", base_dir=None)


# -- models: the flags land on the right layer ------------------------------------------


@pytest.fixture(scope="module")
def build(keras):
    layers = keras.layers

    def vanishing():
        keras.utils.set_random_seed(1)
        x = keras.Input((16,), name="x")
        h = layers.Dense(32, activation="relu", name="before")(x)
        tiny = layers.Dense(32, name="tiny")
        h = tiny(h)
        h = layers.Dense(8, activation="relu", name="after")(h)
        m = keras.Model(x, layers.Dense(3, activation="softmax", name="probs")(h))
        k, b = tiny.get_weights()
        tiny.set_weights([k * 1e-8, b])
        return m

    def saturated():
        keras.utils.set_random_seed(2)
        x = keras.Input((16,), name="x")
        h = layers.Dense(32, name="wide", kernel_initializer=keras.initializers.RandomNormal(stddev=10.0))(x)
        h = layers.Activation("tanh", name="tanh")(h)
        return keras.Model(x, layers.Dense(4, activation="sigmoid", name="gate")(h))

    def constant():
        keras.utils.set_random_seed(3)
        x = keras.Input((6, 5), name="x")
        h = layers.Conv1D(4, 3, activation="relu", name="conv")(x)
        h = layers.Flatten(name="flat")(h)
        out = layers.Dense(3, kernel_initializer="zeros", bias_initializer="ones", name="collapsed")(h)
        return keras.Model(x, out)

    def ignores_an_input():
        keras.utils.set_random_seed(4)
        a = keras.Input((8,), name="a")
        b = keras.Input((5,), name="b")
        ha = layers.Dense(4, activation="tanh", name="branch_a")(a)
        hb = layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones", name="branch_b")(b)
        h = layers.Concatenate(name="cat")([ha, hb])
        return keras.Model([a, b], layers.Dense(2, name="head")(h))

    return {"vanishing": vanishing, "saturated": saturated, "constant": constant, "ignores": ignores_an_input}


def inspect(model, inputs=None, **kw):
    from kerinspect.api import inspect_model

    return inspect_model(model, inputs, samples=kw.pop("samples", 48), batch_size=kw.pop("batch_size", 16), **kw)


def health_flags(report: ModelReport) -> dict[str, set[str]]:
    """layer path -> the health flags of its outputs (layers without any left out)."""
    out: dict[str, set[str]] = {}
    for r in report.layers:
        got = {f for o in r.outputs for f in o.flags if f in HEALTH}
        if got:
            out[r.path] = got
    return out


def test_vanishing_lands_on_the_scaled_layer_only(build):
    report = inspect(build["vanishing"]())
    assert health_flags(report) == {"tiny": {"vanishing"}}
    tiny = next(r for r in report.layers if r.path == "tiny")
    assert tiny.outputs[0].stats.rms < 1e-6 * tiny.input_rms


def test_saturated_lands_on_the_tanh(build):
    report = inspect(build["saturated"]())
    assert health_flags(report) == {"tanh": {"saturated"}}
    by = {r.path: r for r in report.layers}
    assert (by["tanh"].activation, by["gate"].activation, by["wide"].activation) == ("tanh", "sigmoid", None)


def test_constant_lands_on_the_zero_kernel_dense(build):
    assert health_flags(inspect(build["constant"]())) == {"collapsed": {"constant"}}


def test_an_ignored_input_is_flagged_where_it_is_dropped(build):
    assert health_flags(inspect(build["ignores"]())) == {"branch_b": {"constant"}}


HEALTHY = ["mlp", "shared", "nested", "deep_nested", "rnn_states", "attention", "masked",
           "inference_mode", "multi_io", "sequential_no_input"]  # fmt: skip


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_models_get_none_of_the_flags(factories, name):
    report = inspect(factories.ALL[name](), samples=16, batch_size=8)
    assert health_flags(report) == {}


def test_statistics_match_numpy_on_the_captured_tensors(build, keras):
    """Spread, saturation and input RMS of every layer against plain Keras's own
    activations on the same inputs, in batches of 5 and of 48."""
    model = build["saturated"]()
    x = np.random.default_rng(5).standard_normal((48, 16)).astype(np.float32)
    names = ["wide", "tanh", "gate"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    ref = dict(zip(names, (np.asarray(a, np.float64) for a in probe.predict(x, verbose=0))))
    inputs = {"wide": x.astype(np.float64), "tanh": ref["wide"], "gate": ref["tanh"]}
    lows = {"tanh": -1.0, "gate": 0.0}
    for batch in (5, 48):
        by = {r.path: r for r in inspect(model, x, batch_size=batch).layers}
        for n in names:
            got, want = by[n].outputs[0].stats, ref[n]
            assert got.sample_spread == pytest.approx(spread_reference(want), rel=1e-5)
            assert got.rms == pytest.approx(np.sqrt(np.mean(want**2)), rel=1e-5)
            assert by[n].input_rms == pytest.approx(np.sqrt(np.mean(inputs[n] ** 2)), rel=1e-5)
            assert by[n].input_spread == pytest.approx(spread_reference(inputs[n]), rel=1e-5)
            if n in lows:
                at = (want >= 1 - SATURATION_MARGIN) | (want <= lows[n] + SATURATION_MARGIN)
                assert got.saturated_fraction == pytest.approx(at.mean())
            else:
                assert got.saturated_fraction is None


def test_check_runs_the_rules_only_when_asked(build):
    report = inspect(build["ignores"]())
    default = run_checks(report)
    assert not HEALTH & {r.rule for r in default.rules} and default.status == "passed"
    asked = run_checks(report, CheckConfig(rules=("constant", "vanishing")))
    assert [r.rule for r in asked.rules][4:6] == ["vanishing", "constant"]
    constant = asked.rule("constant")
    assert constant.verdict == "failed" and [f.layer for f in constant.failures] == ["branch_b"]
    assert constant.counts.passed >= 3 and asked.rule("vanishing").verdict == "passed"
    assert asked.status == "failed"


# -- through the worker, as users run it --------------------------------------------------


@pytest.mark.slow
def test_cli_summary_and_check_through_the_worker(build, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "collapsed.keras"
    build["constant"]().save(path)
    r = CliRunner().invoke(cli, ["summary", str(path), "--format", "json", "--samples", "16"])
    assert r.exit_code == 0, r.stderr
    flagged = {
        x["path"]: o["flags"] for x in json.loads(r.stdout)["layers"] for o in x["outputs"] if o["flags"]
    }
    assert flagged == {"collapsed": ["constant"]}
    r = CliRunner().invoke(
        cli, ["check", str(path), "--samples", "16", "--no-config", "--rule", "constant", "--format", "json"]
    )
    assert r.exit_code == 1, r.stdout
    rule = next(x for x in json.loads(r.stdout)["models"][0]["rules"] if x["rule"] == "constant")
    assert rule["verdict"] == "failed" and rule["failures"][0]["layer"] == "collapsed"
