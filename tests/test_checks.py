"""Rule verdicts and flags. No TensorFlow."""

from __future__ import annotations

from kerinspect.checks import Verdict, effective_max_abs, tensor_flags, tensor_verdicts
from kerinspect.report import TensorStats, Thresholds


def stats(**kw):
    base = dict(count=10, mean=0.0, std=1.0, min=-1.0, max=1.0, abs_max=1.0, zero_fraction=0.0,
                nan_count=0, inf_count=0, dead_fraction=0.0)
    base.update(kw)
    return TensorStats(**base)


T = Thresholds()


def test_clean_tensor_passes_everything():
    # the health rules (vanishing, saturated, constant) need the layer's input: tests/test_health.py
    verdicts = tensor_verdicts("float32", stats(), T, input_rms=1.0, input_spread=1.0)
    assert {verdicts[r] for r in ("nan", "inf", "exploding", "dead", "vanishing")} == {Verdict.PASSED}
    assert tensor_flags("float32", stats(), T) == ()


def test_each_rule_fails_on_its_own():
    assert tensor_flags("float32", stats(nan_count=1), T) == ("nan",)
    assert tensor_flags("float32", stats(inf_count=2), T) == ("inf",)
    assert tensor_flags("float32", stats(abs_max=2e4), T) == ("exploding",)
    assert tensor_flags("float32", stats(dead_fraction=0.5), T) == ("dead",)
    assert tensor_flags("float32", stats(dead_fraction=0.49), T) == ()


def test_thresholds_are_options():
    assert tensor_flags("float32", stats(abs_max=50.0), Thresholds(max_abs=10)) == ("exploding",)
    assert tensor_flags("float32", stats(dead_fraction=0.2), Thresholds(max_dead_fraction=0.1)) == ("dead",)


def test_float16_threshold_is_scaled_to_its_range():
    assert effective_max_abs("float16", 1e4) == 6550.4
    assert effective_max_abs("float32", 1e4) == 1e4
    assert effective_max_abs("bfloat16", 1e4) == 1e4
    assert tensor_flags("float16", stats(abs_max=7000.0), T) == ("exploding",)
    assert tensor_flags("float32", stats(abs_max=7000.0), T) == ()


def test_not_checked_cases():
    nc = Verdict.NOT_CHECKED
    assert set(tensor_verdicts("int32", stats(), T).values()) == {nc}
    assert set(tensor_verdicts("float32", None, T).values()) == {nc}
    v = tensor_verdicts("float32", stats(abs_max=None, nan_count=10), T)
    assert v["exploding"] is nc and v["nan"] is Verdict.FAILED
    assert tensor_verdicts("float32", stats(dead_fraction=None), T)["dead"] is nc
    assert tensor_verdicts("float32", stats(dead_fraction=1.0), T, is_input=True)["dead"] is nc
