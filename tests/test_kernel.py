"""The fused statistics kernel (kerinspect/engine/kernel): one read of each float32
activation for the compiled engine's statistics, in float64. Against numpy, in the
op itself and through the real worker; the engine without it (KERINSPECT_KERNEL=off)
keeps TensorFlow's operations and the 2e-3 contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, kerinspect_cli


@pytest.fixture(scope="module")
def op(keras):
    from kerinspect.engine import kernel

    lib = kernel.load()
    if lib is None:
        pytest.skip("the fused statistics kernel is not built (make install; needs g++)")
    return lib.kerinspect_activation_stats


def reference(x: np.ndarray):
    """sums (samples x units over the middle axes), the units' mean and M2 over the
    samples of their means, non-zero per unit, and the moments, in float64 numpy."""
    x64 = x.astype(np.float64)
    cube = x64.reshape(x.shape[0], -1, x.shape[-1])
    means = cube.mean(axis=1)
    units = np.stack([means.mean(axis=0), ((means - means.mean(axis=0)) ** 2).sum(axis=0)])
    nonzero = (x != 0).reshape(-1, x.shape[-1]).sum(axis=0)
    moments = [x64.mean(), ((x64 - x64.mean()) ** 2).sum(), x.min(), x.max()] if x.size else None
    return cube.sum(axis=1), units, nonzero, moments


@pytest.mark.parametrize(
    "shape",
    [
        (16, 112, 112, 64),  # ResNet50's largest map: many chunks per sample, threads
        (4, 3, 3, 2048),  # more units than a chunk's rows
        (16, 224, 224, 3),  # three units: a chunk of many short rows
        (2, 1000),  # rank 2: each sample's values are its sums
        (3, 5, 7),
        (2, 13, 40),  # a block of kRows (8) rows, then 5 rows one by one
        (1, 1, 1),
        (5, 70000, 1),  # one unit, a sample longer than a chunk
    ],
)
def test_sums_counts_and_moments_equal_numpy_in_float64(op, shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype("float32") * 3 + 1
    x[x < 0] = 0  # a ReLU's zeros
    sums, units, nonzero, moments = (t.numpy() for t in op(x))
    want_sums, want_units, want_nonzero, want = reference(x)
    np.testing.assert_allclose(sums, want_sums, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(units, want_units, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(nonzero, want_nonzero)
    assert moments[0] == pytest.approx(want[0], rel=1e-12)
    assert moments[1] == pytest.approx(want[1], rel=1e-10)
    assert (moments[2], moments[3]) == (want[2], want[3])


def test_no_cancellation_when_the_mean_is_far_from_the_spread(op):
    """1e4 + N(0, 1): float32 squared deviations lose the spread; float64 around each
    chunk's first value keeps it."""
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((8, 64, 64, 16))).astype("float32")
    *_, moments = (t.numpy() for t in op(x))
    x64 = x.astype(np.float64)
    assert moments[0] == pytest.approx(x64.mean(), rel=1e-14)
    assert moments[1] == pytest.approx(((x64 - x64.mean()) ** 2).sum(), rel=1e-9)


def test_nan_and_inf_make_the_sums_non_finite_and_empty_batches_are_empty(op):
    """The engine sends a batch whose sums are not finite to the eager engine (which
    counts NaN and Inf): the kernel must never hide one."""
    x = np.ones((4, 8, 8, 5), "float32")
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[2, 3, 4, 1] = bad
        sums, _, nonzero, moments = (t.numpy() for t in op(y))
        assert not np.isfinite(sums).all() and nonzero[1] == 4 * 64
    sums, units, nonzero, moments = (t.numpy() for t in op(np.zeros((0, 8, 8, 5), "float32")))
    assert sums.shape == (0, 5) and units.shape == (2, 5) and nonzero.tolist() == [0] * 5
    assert np.isnan(moments[0]) and moments[1] == 0


def test_a_failed_build_is_one_line_and_leaves_nothing(op, tmp_path, monkeypatch):
    from kerinspect.engine import kernel

    monkeypatch.setattr(kernel, "BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(kernel, "library_path", lambda tf: str(tmp_path / "k.so"))
    with pytest.raises(RuntimeError, match=r"^/bin/false failed \(exit 1\)"):
        kernel.build(compiler="/bin/false", quiet=True)
    assert os.listdir(tmp_path) == []


def test_the_build_command_prints_the_built_library(op):
    done = subprocess.run([sys.executable, "-m", "kerinspect.engine.kernel"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    path = done.stdout.strip()
    assert path.endswith(".so") and os.path.isfile(path) and done.stderr == ""  # built already: no rebuild


SAMPLES = 64


@pytest.fixture(scope="module")
def far_mean(keras, tmp_path_factory, op):
    """A model whose ReLU passes 1e3 + N(0, 1) through unchanged (with a tenth of zeros and
    a dead channel), and its compiled report with and without the kernel: two workers."""
    d = tmp_path_factory.mktemp("kernel")
    inp = keras.Input((16, 16, 8), name="x")
    h = keras.layers.ReLU(name="relu")(inp)
    h = keras.layers.Conv2D(4, 1, name="conv")(h)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(h))
    keras.Model(inp, out).save(d / "m.keras")
    rng = np.random.default_rng(11)
    x = (1e3 + rng.standard_normal((SAMPLES, 16, 16, 8))).astype("float32")
    x[rng.random(x.shape) < 0.1] = -1.0
    x[..., 2] = -1.0  # dead after the ReLU
    np.save(d / "x.npy", x)
    runs = {}
    for name, env in (("on", {}), ("off", {"KERINSPECT_KERNEL": "off"})):
        out = kerinspect_cli("summary", d / "m.keras", "--input", d / "x.npy", "--batch-size", "16",
                             "--engine", "compiled", "--format", "json", env=env)
        assert out.returncode == 0, out.stderr
        runs[name] = json.loads(out.stdout)
    return np.maximum(x, 0).astype(np.float64), runs


def relu_stats(report):
    return next(o["stats"] for layer in report["layers"] if layer["path"] == "relu" for o in layer["outputs"])


def test_through_the_worker_the_kernel_gives_float64_statistics(far_mean):
    """With the kernel, the compiled engine's mean and std of the ReLU's output equal
    numpy's float64 ones to 1e-10 (TensorFlow's float32 reductions cannot: about 1e-7);
    counts, zeros and the dead channel are exact."""
    ref, runs = far_mean
    on = relu_stats(runs["on"])
    assert runs["on"]["engine"].startswith("compiled")
    assert on["mean"] == pytest.approx(ref.mean(), rel=1e-10)
    assert on["std"] == pytest.approx(ref.std(), rel=1e-10)
    assert (on["min"], on["max"]) == (ref.min(), ref.max())
    assert on["zero_fraction"] == pytest.approx(np.mean(ref == 0), abs=1e-12)
    assert on["dead_fraction"] == pytest.approx(1 / 8, abs=1e-12)


def test_without_the_kernel_the_engine_keeps_its_contract(far_mean):
    ref, runs = far_mean
    off = relu_stats(runs["off"])
    assert runs["off"]["engine"].startswith("compiled")
    for name, want in (("mean", ref.mean()), ("std", ref.std()), ("min", ref.min()), ("max", ref.max())):
        assert off[name] == pytest.approx(want, rel=2e-3), name
    assert off["dead_fraction"] == pytest.approx(1 / 8, abs=1e-12)
    on = relu_stats(runs["on"])
    assert on["std"] != off["std"]  # two computations: KERINSPECT_KERNEL reached the worker


def test_auto_compiles_large_outputs_only_with_the_kernel(keras, tmp_path, op):
    """`--engine auto` on a CPU keeps a run eager when an output is above 16 MiB, for the
    temporaries of TensorFlow's statistics operations (the trace says so from the static
    shapes; the first batch, eager, measures it again); the kernel has none, so with it
    every batch is compiled."""
    inp = keras.Input((64, 64, 3), name="x")
    wide = keras.layers.Conv2D(130, 1, activation="relu", name="wide")(inp)  # 17 MB a batch of 8
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(wide))
    keras.Model(inp, out).save(tmp_path / "wide.keras")
    engines = {}
    for name, env in (("on", {}), ("off", {"KERINSPECT_KERNEL": "off"})):
        run = kerinspect_cli("summary", tmp_path / "wide.keras", "--samples", "64", "--batch-size", "8",
                             "--format", "json", env=env)
        assert run.returncode == 0, run.stderr
        engines[name] = json.loads(run.stdout)["engine"]
    assert engines == {"on": "compiled (CPU)", "off": "eager"}
