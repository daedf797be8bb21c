"""Streaming statistics against numpy, merging, and odd dtypes. No TensorFlow."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from kerinspect.stats import RunningStats, numeric_kind, summarize


def reference(a: np.ndarray) -> dict:
    x = a.astype(np.float64).reshape(-1)
    fin = x[np.isfinite(x)]
    units = a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else None
    return {
        "count": x.size,
        "mean": fin.mean() if fin.size else None,
        "std": fin.std() if fin.size else None,
        "min": fin.min() if fin.size else None,
        "max": fin.max() if fin.size else None,
        "zero_fraction": float(np.mean(x == 0)),
        "nan_count": int(np.isnan(x).sum()),
        "inf_count": int(np.isinf(x).sum()),
        "dead_fraction": None if units is None else float(np.mean(np.all(units == 0, axis=0))),
    }


def assert_matches(stats, ref):
    for key, want in ref.items():
        got = getattr(stats, key)
        if want is None:
            assert got is None, key
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), key


def make(rng, shape, nan=0, inf=0, zeros_cols=0):
    a = rng.standard_normal(shape) * 3 + 1
    flat = a.reshape(-1)
    idx = rng.choice(flat.size, nan + inf, replace=False)
    flat[idx[:nan]] = np.nan
    flat[idx[nan:]] = np.where(rng.random(inf) < 0.5, np.inf, -np.inf)
    if zeros_cols:
        a[..., :zeros_cols] = 0
    return a


@pytest.mark.parametrize("shape", [(7,), (4, 5), (3, 4, 6), (2, 3, 4, 5)])
def test_single_batch_matches_numpy(shape):
    a = make(np.random.default_rng(0), shape, nan=2, inf=1, zeros_cols=1 if len(shape) > 1 else 0)
    assert_matches(summarize(a).finalize(), reference(a))


def test_merge_equals_whole_for_any_split():
    rng = np.random.default_rng(1)
    a = make(rng, (37, 3, 8), nan=5, inf=3, zeros_cols=2)
    a[:, :, 5] = 0
    a[11, 0, 5] = 2.0  # unit 5 is alive in one sample only
    whole = summarize(a).finalize()
    for cuts in ([10], [1, 2, 30], list(range(1, 37))):
        acc = RunningStats()
        for part in np.split(a, cuts):
            acc.merge(summarize(part))
        merged = acc.finalize()
        for key in reference(a):
            w, m = getattr(whole, key), getattr(merged, key)
            assert (w is None and m is None) or m == pytest.approx(w, rel=1e-9), key
    assert whole.dead_fraction == pytest.approx(2 / 8)


def test_large_mean_small_variance_is_accurate():
    a = 1e6 + np.random.default_rng(2).standard_normal((1000, 4)) * 1e-3
    acc = RunningStats()
    for part in np.split(a, 10):
        acc.merge(summarize(part))
    assert acc.finalize().std == pytest.approx(a.std(), rel=1e-6)


def test_all_nan_has_no_moments():
    s = summarize(np.full((3, 2), np.nan, np.float32)).finalize()
    assert (s.mean, s.std, s.min, s.max, s.abs_max) == (None,) * 5
    assert s.nan_count == 6 and s.zero_fraction == 0


def test_float16_sums_do_not_overflow():
    a = np.full((64, 64), 60000, np.float16)  # sum far above float16's max
    s = summarize(a).finalize()
    assert s.mean == 60000 and s.inf_count == 0


def test_bfloat16_is_a_float():
    a = np.array([[1.5, -2.0], [0.0, np.inf]], dtype=ml_dtypes.bfloat16)
    assert numeric_kind(a.dtype) == "float"
    s = summarize(a).finalize()
    assert s.inf_count == 1 and s.min == -2.0 and s.max == 1.5


def test_integers_and_bools():
    a = np.array([[0, 3], [0, 5]], np.int32)
    s = summarize(a).finalize()
    assert (s.mean, s.min, s.max, s.dead_fraction) == (2.0, 0, 5, 0.5)
    b = summarize(np.array([[True, False]])).finalize()
    assert b.mean == 0.5


def test_strings_are_not_summarised():
    assert summarize(np.array([b"a", b"b"], dtype=object)) is None
    assert summarize(np.array(["a", "b"])) is None


def test_empty_and_scalar():
    s = summarize(np.zeros((0, 4), np.float32)).finalize()
    assert s.count == 0 and s.mean is None and s.zero_fraction is None
    s = summarize(np.float32(2.5)).finalize()
    assert s.count == 1 and s.mean == 2.5 and s.dead_fraction is None


def test_unit_axis_change_disables_dead_fraction():
    acc = summarize(np.ones((2, 3)))
    acc.merge(summarize(np.zeros((2, 4))))
    assert acc.finalize().dead_fraction is None


def test_abs_max_and_std_are_consistent():
    s = summarize(np.array([[-5.0, 1.0]])).finalize()
    assert s.abs_max == 5.0 and math.isclose(s.std, 3.0)


def test_summarize_never_writes_the_callers_array():
    a = np.array([[1.0, 2.0], [np.nan, 4.0]])  # float64: no private copy is made
    before = a.copy()
    summarize(a)
    summarize(a[:, 1])
    np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("block", [1, 5, 8, 24, 1 << 17])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("shape", [(), (11,), (6, 5), (37, 3, 8), (2, 40)])
def test_blocked_pass_matches_reference(monkeypatch, block, dtype, shape):
    """The single pass works block by block: every block size, including blocks smaller
    than a row of units and blocks that are all NaN, gives the reference statistics."""
    import kerinspect.stats as stats_module

    monkeypatch.setattr(stats_module, "BLOCK", block)
    rng = np.random.default_rng(3)
    a = make(rng, shape, zeros_cols=1 if len(shape) > 1 else 0)
    flat = a.reshape(-1)
    if flat.size > 12:
        flat[1:6] = np.nan  # a whole block of NaN for the small block sizes
        flat[-1] = np.inf
        flat[7] = -np.inf
    a = a.astype(dtype)
    assert_matches(summarize(a).finalize(), reference(a))


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int64, np.bool_])
def test_blocked_pass_integers_and_bools(monkeypatch, dtype):
    import kerinspect.stats as stats_module

    monkeypatch.setattr(stats_module, "BLOCK", 7)
    a = np.random.default_rng(4).integers(0, 3, (9, 4, 5)).astype(dtype)
    a[..., 2] = 0  # a dead unit
    assert_matches(summarize(a).finalize(), reference(a))


def test_blocked_pass_on_strided_input_and_large_mean(monkeypatch):
    import kerinspect.stats as stats_module

    monkeypatch.setattr(stats_module, "BLOCK", 16)
    a = make(np.random.default_rng(5), (50, 12), nan=3, inf=2, zeros_cols=2)
    view = a[::3, ::2]  # not contiguous
    assert_matches(summarize(view).finalize(), reference(np.ascontiguousarray(view)))
    b = 1e6 + np.random.default_rng(6).standard_normal((50, 12)) * 1e-3  # blocks merged like batches
    assert summarize(b).finalize().std == pytest.approx(b.std(), rel=1e-6)


@pytest.mark.parametrize("threads", [2, 3, 16])
def test_collector_summarises_large_tensors_in_parallel_parts(monkeypatch, threads):
    """Parts summarised on threads: bit for bit the statistics of one thread."""
    import kerinspect.engine.statistics as run
    import kerinspect.stats as stats_module

    monkeypatch.setattr(run, "PARALLEL_MIN_SIZE", 10)
    monkeypatch.setattr(stats_module, "BLOCK", 12)  # two rows of units per block: many blocks
    a = make(np.random.default_rng(7), (7, 5, 6), nan=3, inf=2, zeros_cols=2).astype(np.float32)
    a[:4] = np.nan  # the first parts hold no finite value at all
    collector = run.StatsCollector(threads=threads)
    try:
        got = collector.summarize(a)
        assert collector._pool is not None  # it did run in parts
        assert collector.summarize(np.array([[b"x"]] * 20, dtype=object)) is None
    finally:
        collector.close()
    assert_matches(got.finalize(), reference(a))
    assert got.finalize() == summarize(a).finalize()


@pytest.mark.parametrize("parts", [2, 3, 5, 18, 100])
def test_summarize_in_parts_is_bit_identical(monkeypatch, parts):
    """How a tensor is cut for threads never changes a bit of its statistics."""
    import kerinspect.stats as stats_module

    monkeypatch.setattr(stats_module, "BLOCK", 40)
    a = make(np.random.default_rng(8), (9, 4, 10), nan=5, inf=3, zeros_cols=1) * 1e3
    one = summarize(a)
    cut = summarize(a, parts=parts)
    assert (cut.finalize(), cut.m2, cut.mean) == (one.finalize(), one.m2, one.mean)
    np.testing.assert_array_equal(cut.active, one.active)


_SUMMARY_SCRIPT = """
import numpy as np
from kerinspect.stats import summarize
rng = np.random.default_rng(11)
for n in (24, 3000, 200000):
    s = summarize(rng.standard_normal((n, 8)) * 3 + 0.5)
    print(repr(s.mean), repr(s.m2))
"""


def test_statistics_do_not_depend_on_the_process_blas():
    """The worker's scrubbed environment once gave a std one bit off the parent's: the
    sums of squares came from BLAS, whose kernel (``OPENBLAS_CORETYPE``) and thread
    count change the order of the additions. Statistics must not depend on either."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS")}
    outs = set()
    for extra in ({}, {"OPENBLAS_NUM_THREADS": "1"}, {"OPENBLAS_NUM_THREADS": "2"},
                  {"OPENBLAS_CORETYPE": "Haswell"}, {"OPENBLAS_CORETYPE": "Sandybridge"}):
        r = subprocess.run([sys.executable, "-c", _SUMMARY_SCRIPT], env={**base, **extra},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1, outs
