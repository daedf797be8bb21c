"""Separability statistics (kerinspect.engine.separability) against plain numpy, without
TensorFlow: merged batch by batch they equal one pass over the whole, and each figure
equals its definition computed the obvious way."""

from __future__ import annotations

import numpy as np
import pytest

from kerinspect.engine.separability import (
    Budget,
    ClassMoments,
    OutputSeparability,
    loo_accuracy,
    projection,
    sample_vectors,
)


def fisher_reference(x, y):
    """Per unit: sum_c n_c (m_c - m)^2 / sum_c sum_i (x_i - m_c)^2, averaged over the
    units whose denominator is above zero."""
    m = x.mean(axis=0)
    between = np.zeros(x.shape[1])
    within = np.zeros(x.shape[1])
    for c in np.unique(y):
        xc = x[y == c]
        between += len(xc) * (xc.mean(axis=0) - m) ** 2
        within += ((xc - xc.mean(axis=0)) ** 2).sum(axis=0)
    keep = within > 0
    return float(np.mean(between[keep] / within[keep]))


def loo_reference(x, y):
    """Leave-one-out nearest-class-mean: each sample against the class means computed
    without it (a class left empty is never chosen); ties to the lowest class."""
    classes = np.unique(y)
    right = 0
    for i in range(len(x)):
        rest = np.ones(len(x), bool)
        rest[i] = False
        best, best_d = None, np.inf
        for c in classes:
            members = rest & (y == c)
            if not members.any():
                continue
            d = float(((x[i] - x[members].mean(axis=0)) ** 2).sum())
            if d < best_d:
                best, best_d = c, d
        right += best == y[i]
    return right / len(x)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, size=203)
    x = rng.normal(size=(203, 6)) + y[:, None] * np.array([1.5, 0.0, 0.3, 0.0, 2.0, 0.1])
    x[:, 3] = 5.0  # a constant unit: no within-class variance, left out of Fisher
    return x, y


def test_moments_merged_in_uneven_batches_equal_one_pass_and_numpy(data):
    x, y = data
    whole = ClassMoments()
    whole.add(x, y.tolist())
    merged = ClassMoments()
    for start, stop in ((0, 1), (1, 50), (50, 51), (51, 203)):
        merged.add(x[start:stop], y[start:stop].tolist())
    for c in range(4):
        xc = x[y == c]
        assert merged.count[c] == whole.count[c] == len(xc)
        np.testing.assert_allclose(merged.mean[c], xc.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(merged.m2[c], ((xc - xc.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-9, atol=1e-9)
    assert merged.fisher() == pytest.approx(fisher_reference(x, y), rel=1e-9)
    assert whole.fisher() == pytest.approx(fisher_reference(x, y), rel=1e-9)


def test_fisher_is_none_when_no_unit_varies_within_a_class():
    x = np.repeat(np.arange(3.0)[:, None], 4, axis=0)  # each class constant
    m = ClassMoments()
    m.add(x, np.repeat([0, 1, 2], 4).tolist())
    assert m.fisher() is None


def test_leave_one_out_accuracy_equals_the_explicit_loop(data):
    x, y = data
    assert loo_accuracy(x, y, 4) == loo_reference(x, y)


def test_a_sample_alone_in_its_class_counts_as_wrong():
    x = np.array([[0.0], [0.1], [10.0], [10.2], [5.0]])
    y = np.array([0, 0, 1, 1, 2])  # class 2 has one sample
    assert loo_accuracy(x, y, 3) == pytest.approx(4 / 5)
    assert loo_reference(x, y) == pytest.approx(4 / 5)


def test_output_separability_streams_and_reports_chance(data):
    x, y = data
    acc = OutputSeparability()
    budget = Budget(1 << 20)
    for start in range(0, len(x), 32):
        acc.add(x[start : start + 32], y[start : start + 32].tolist(), budget)
    out = acc.result([0, 1, 2, 3])
    assert out["accuracy"] == loo_reference(x, y)
    assert out["chance"] == pytest.approx(np.bincount(y).max() / len(y))
    assert out["fisher"] == pytest.approx(fisher_reference(x, y), rel=1e-9)


def test_past_the_budget_accuracy_is_none_with_a_note_and_fisher_stays(data):
    x, y = data
    acc = OutputSeparability()
    budget = Budget(x[:100].nbytes)  # the first batches fit, the run does not
    for start in range(0, len(x), 50):
        acc.add(x[start : start + 50], y[start : start + 50].tolist(), budget)
    out = acc.result([0, 1, 2, 3])
    assert out["accuracy"] is None and "budget" in out["note"]
    assert out["fisher"] == pytest.approx(fisher_reference(x, y), rel=1e-9)
    assert budget.used == 0  # what the output held was given back


def test_sample_vectors_average_every_axis_but_batch_and_last():
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(sample_vectors(a, 2), a.astype(np.float64).mean(axis=(1, 2)))
    np.testing.assert_array_equal(sample_vectors(a[:, 0, 0, 0], 2), a[:, 0, 0, 0:1].astype(np.float64))
    assert sample_vectors(a, 3) is None  # no batch axis of this batch
    assert sample_vectors(np.zeros((2, 3), np.int32), 2) is None  # not float


def test_projection_is_the_svd_of_the_centered_vectors(data):
    x, y = data
    p = projection(x, y)
    centered = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    xy = centered @ vt[:2].T
    pts = np.asarray(p["points"])
    np.testing.assert_allclose(np.abs(pts[:, :2]), np.abs(xy), rtol=1e-9, atol=1e-9)  # signs are arbitrary
    assert pts[:, 2].tolist() == y.tolist()
    assert p["explained"] == pytest.approx((s[:2] ** 2 / (s**2).sum()).tolist())


def test_an_output_with_nan_has_no_figures_and_says_why(data):
    x, y = data
    x = x.copy()
    x[60, 2] = np.nan
    acc = OutputSeparability()
    budget = Budget(1 << 20)
    for start in range(0, len(x), 50):
        acc.add(x[start : start + 50], y[start : start + 50].tolist(), budget)
    out = acc.result([0, 1, 2, 3])
    assert out["accuracy"] is None and out["fisher"] is None and "NaN" in out["note"]
    assert budget.used == 0


def test_bfloat16_outputs_have_vectors_too():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    got = sample_vectors(a.astype(ml_dtypes.bfloat16), 2)
    np.testing.assert_array_equal(got, a.astype(ml_dtypes.bfloat16).astype(np.float64).mean(axis=1))
