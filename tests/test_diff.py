"""``kerinspect diff``: pairing, metrics against numpy, the first divergence, exit codes.

The references are plain Keras and numpy: each model's intermediate outputs come
from ``keras.Model(model.inputs, layer.output)`` on the same arrays the run is fed
(``--input``), and the metrics are computed here from those arrays.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from kerinspect.diff import SiteKey, Sums, pair_sites

LAYERS = ("fc1", "fc2", "fc3", "head")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- no TensorFlow needed ---------------------------------------------------------


def test_zero_norm_tensors_are_guarded():
    both_zero = Sums(count=4)
    assert (both_zero.cosine, both_zero.normalised_error, both_zero.sqnr_db) == (1.0, 0.0, math.inf)
    only_b = Sums(count=4, bb=2.0, dd=2.0, max_abs=1.0)
    assert only_b.cosine == 0.0 and only_b.normalised_error == math.inf
    nan_in_b = Sums(count=3, mismatched=1, aa=1.0, bb=1.0, ab=1.0)
    assert nan_in_b.normalised_error == math.inf


def test_pairing_by_path_then_structure():
    a = [SiteKey("x", "InputLayer"), SiteKey("conv", "Conv2D"), SiteKey("bn", "BatchNormalization"),
         SiteKey("dense", "Dense"), SiteKey("out", "Dense")]
    b = [SiteKey("x", "InputLayer"), SiteKey("conv_7", "Conv2D"), SiteKey("bn_7", "BatchNormalization"),
         SiteKey("extra", "Dropout"), SiteKey("dense_9", "Dense"), SiteKey("out", "Dense")]
    p = pair_sites(a, b)
    assert p.pairs == ((0, 0, "path"), (1, 1, "structure"), (2, 2, "structure"), (3, 4, "structure"), (4, 5, "path"))
    assert p.unpaired_a == () and p.unpaired_b == (3,)
    # a name found elsewhere in the graph is not trusted over the order
    swapped = pair_sites([SiteKey("a", "Dense"), SiteKey("b", "ReLU")], [SiteKey("b", "Dense"), SiteKey("a", "ReLU")])
    assert [how for *_, how in swapped.pairs].count("path") == 1


# -- through the worker -------------------------------------------------------------


def _mlp(keras, names=LAYERS, dtype=None):
    keras.utils.set_random_seed(11)
    x = keras.Input((16,), name="x")
    h = x
    for name in names[:-1]:
        h = keras.layers.Dense(24, activation="relu", name=name, dtype=dtype)(h)
    return keras.Model(x, keras.layers.Dense(4, name=names[-1], dtype=dtype)(h), name="mlp")


def _outputs(keras, model, x):
    """Every Dense layer's output on ``x``, with plain Keras."""
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    probe = keras.Model(model.inputs, [layer.output for layer in dense])
    return [np.asarray(t, dtype=np.float64) for t in probe(x, training=False)]


def _metrics(a, b):
    a, b = a.reshape(-1), b.reshape(-1)
    d = a - b
    return {
        "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
        "normalised_error": float(np.linalg.norm(d) / np.linalg.norm(a)),
        "sqnr_db": float(10 * np.log10((a @ a) / (d @ d))),
        "max_abs_diff": float(np.abs(d).max()),
    }


def _diff(*args):
    r = run("diff", *args, "--format", "json")
    assert r.exit_code in (0, 1), (r.exit_code, r.stderr)
    report = json.loads(r.stdout)
    assert report["exit_code"] == r.exit_code
    return r.exit_code, report, {p["path_a"]: p for p in report["pairs"]}


@pytest.fixture(scope="module")
def models(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("diff")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 16)).astype("float32")
    np.save(d / "x.npy", x)
    a = _mlp(keras)
    a.save(d / "a.keras")
    copy = _mlp(keras)
    copy.set_weights(a.get_weights())
    copy.save(d / "copy.keras")
    perturbed = _mlp(keras)
    perturbed.set_weights(a.get_weights())
    kernel = perturbed.get_layer("fc2").kernel
    kernel.assign(kernel.numpy() * (1 + 0.2 * rng.standard_normal(kernel.shape)).astype("float32"))
    perturbed.save(d / "perturbed.keras")
    quantized = _mlp(keras)
    quantized.set_weights(a.get_weights())
    quantized.quantize("int8")
    quantized.save(d / "int8.keras")
    half = _mlp(keras, dtype="mixed_float16")
    half.set_weights(a.get_weights())
    half.save(d / "float16.keras")
    renamed = _mlp(keras, names=("p", "q", "r", "s"))
    renamed.set_weights(a.get_weights())
    renamed.save(d / "renamed.keras")
    return {"dir": d, "x": x, "a": a, "perturbed": perturbed, "int8": quantized, "float16": half}


def test_identical_copies_agree(models):
    d = models["dir"]
    code, report, pairs = _diff(d / "a.keras", d / "copy.keras", "--input", d / "x.npy")
    assert code == 0 and report["agree"] and report["divergence"] is None
    assert report["pairing"] == "5 pairs (5 by path)"
    for p in pairs.values():
        e = p["outputs"][0]["error"]
        assert (e["cosine"], e["normalised_error"], e["max_abs_diff"]) == (1.0, 0.0, 0.0)
        assert e["sqnr_db"] is None  # infinite: no error at all


@pytest.mark.slow
def test_a_perturbed_layer_is_where_divergence_starts(keras, models, tmp_path):
    d, x = models["dir"], models["x"]
    code, report, pairs = _diff(d / "a.keras", d / "perturbed.keras", "--input", d / "x.npy", "--local")
    assert code == 1
    assert report["divergence"]["path_a"] == "fc2" and report["divergence"]["kind"] == "inherited"
    assert report["local_divergence"]["path_a"] == "fc2"
    ref_a = _outputs(keras, models["a"], x)
    ref_b = _outputs(keras, models["perturbed"], x)
    for name, a, b in zip(LAYERS, ref_a, ref_b):
        got = pairs[name]["outputs"][0]["error"]
        if name == "fc1":
            assert got["normalised_error"] == 0.0
            continue
        for key, want in _metrics(a, b).items():
            assert got[key] == pytest.approx(want, rel=1e-3), (name, key)
    # local: fc3 of B on A's fc2 output is fc3 of A (same weights): its own error is 0
    assert pairs["fc3"]["outputs"][0]["local"]["normalised_error"] == pytest.approx(0.0, abs=1e-7)
    assert pairs["fc3"]["outputs"][0]["error"]["normalised_error"] > 0.01
    # the exit code follows --tolerance (the output's error is below 10)
    r = run("diff", d / "a.keras", d / "perturbed.keras", "--input", d / "x.npy", "--tolerance", "10",
            "--junit", tmp_path / "diff.xml")
    assert r.exit_code == 0, r.stderr
    assert "no layer's error exceeds the tolerance 10" in r.stdout
    assert 'failures="0"' in (tmp_path / "diff.xml").read_text()


@pytest.mark.slow
def test_int8_and_float16_copies_have_small_stated_errors(keras, models, reuse):
    d, x = models["dir"], models["x"]
    ref_a = _outputs(keras, models["a"], x)
    for kind, bound in (("int8", 0.05), ("float16", 0.005)):
        code, report, pairs = _diff(d / "a.keras", d / f"{kind}.keras", "--input", d / "x.npy", "--local",
                                    "--tolerance", "0.1")
        assert code == 0, kind
        ref_b = _outputs(keras, models[kind], x)
        for name, a, b in zip(LAYERS, ref_a, ref_b):
            got = pairs[name]["outputs"][0]["error"]
            assert 0 < got["normalised_error"] < bound, (kind, name)
            assert got["normalised_error"] == pytest.approx(_metrics(a, b)["normalised_error"], rel=1e-3)
            assert got["sqnr_db"] == pytest.approx(_metrics(a, b)["sqnr_db"], rel=1e-3)
        want_policy = "int8_from_float32" if kind == "int8" else "mixed_float16"
        assert {pairs[n]["policy_b"] for n in LAYERS} == {want_policy}
        # local figure of fc2: B's fc2 on A's fc1 output, against A's fc2 output
        own = np.asarray(models[kind].get_layer("fc2")(ref_a[0].astype("float32")), dtype=np.float64)
        local = pairs["fc2"]["outputs"][0]["local"]["normalised_error"]
        assert local == pytest.approx(_metrics(ref_a[1], own)["normalised_error"], rel=1e-3)
    # the table of the int8 run above (its worker run reused: the table is the parent's)
    r = run("diff", d / "a.keras", d / "int8.keras", "--input", d / "x.npy", "--local", "--tolerance", "0.1")
    assert "B's layers with dtype policy int8_from_float32: 'fc1', 'fc2', 'fc3', 'head'" in r.stdout


def test_renamed_copy_is_paired_by_structure(models):
    d = models["dir"]
    code, report, pairs = _diff(d / "a.keras", d / "renamed.keras", "--input", d / "x.npy")
    assert code == 0
    assert report["pairing"] == "5 pairs (1 by path, 4 by structure)"
    assert [(p["path_b"], p["paired_by"]) for p in report["pairs"][1:]] == [
        ("p", "structure"), ("q", "structure"), ("r", "structure"), ("s", "structure")]
    assert all(p["outputs"][0]["error"]["normalised_error"] == 0.0 for p in report["pairs"])


def test_a_tf_keras_h5_and_its_keras3_copy_are_equal(keras, tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(3)
    x = tf_keras.Input((6,), name="x")
    h = tf_keras.layers.Dense(8, activation="relu", name="hidden")(x)
    old = tf_keras.Model(x, tf_keras.layers.Dense(3, name="out")(h))
    old.save(tmp_path / "old.h5")
    new = keras.Sequential([keras.Input((6,), name="x"), keras.layers.Dense(8, activation="relu", name="hidden"),
                            keras.layers.Dense(3, name="out")])
    new.set_weights(old.get_weights())
    new.save(tmp_path / "new.keras")
    code, report, pairs = _diff(tmp_path / "old.h5", tmp_path / "new.keras")
    assert code == 0 and report["divergence"] is None
    assert {p["outputs"][0]["error"]["normalised_error"] for p in pairs.values()} == {0.0}


def test_in_memory_models_are_compared_in_process(keras, models):
    import kerinspect

    x = models["x"]
    report = kerinspect.diff_models(models["a"], models["perturbed"], x, diff_tolerance=1e-3)
    assert report.exit_code == 1 and report.divergence.path_a == "fc2"
    ref = _metrics(_outputs(keras, models["a"], x)[-1], _outputs(keras, models["perturbed"], x)[-1])
    head = next(p for p in report.pairs if p.path_a == "head").outputs[0].error
    assert head.cosine == pytest.approx(ref["cosine"], rel=1e-3)


def test_a_model_b_of_other_inputs_is_one_clear_error(keras, models):
    """B is fed A's inputs: a B taking two inputs where A takes one fails as B's first call
    (exit 6, with the hint), not as a kerinspect bug."""
    import kerinspect
    from kerinspect.errors import InferenceError

    p, q = keras.Input((4,), name="p"), keras.Input((4,), name="q")
    two = keras.Model([p, q], keras.layers.Add(name="sum")([p, q]), name="two")
    with pytest.raises(InferenceError) as e:
        kerinspect.diff_models(models["a"], two, models["x"])
    assert e.value.rule == "inference-failed" and "of model B" in e.value.message
    assert "B is fed A's inputs" in e.value.hint


def test_spill_reads_back_every_byte_across_chunks():
    """A's held tensors go to files (several when larger than a chunk) and come back exact."""
    import os

    import tensorflow as tf

    from kerinspect.engine.diff import _Held, _Spill

    spill = _Spill()
    try:
        spill.chunk = 1000  # force several files per tensor
        x = tf.constant(np.random.default_rng(0).standard_normal((3, 37, 11)).astype("float32"))
        held = spill.put(x)
        assert isinstance(held, _Held) and len(held.files) > 1
        assert spill.put(x) is held  # the same tensor twice: one spill, two uses
        np.testing.assert_array_equal(spill.array(held), x.numpy())
        assert tf.reduce_all(spill.tensor(held) == x)
        spill.done([held])
        assert all(os.path.exists(f) for f in held.files)
        spill.done([held])
        assert held.files == [] and os.listdir(spill.dir) == []
        s = tf.constant([b"a", b"b"])
        assert spill.put(s) is s  # strings are held as they are
    finally:
        d = spill.dir
        spill.close()
    assert not os.path.exists(d)
