"""``kerinspect gradients`` (issue 27): every gradient figure against ``tf.GradientTape`` on
plain Keras (a custom layer with nested sub-layers, a shared layer called twice, several
batches merged), the flags (a deep sigmoid network vanishes, a scaled-up kernel explodes,
a healthy network neither), the loss and labels (the saved compile_config's, the model's
own prediction) and the errors. Models are saved and run through the real worker; each
run is shared by the tests that read it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests import gradient_models
from tests.conftest import SAMPLES, kerinspect_cli

LAYERS = str(Path(__file__).with_name("gradient_layers.py"))
ROWS, FEATURES, CLASSES = 24, 5, 3
RTOL = 1e-3


def _custom(keras):
    """Input -> Block(dense_a -> Inner(dense_b, tanh)) -> shared Dense twice -> softmax head."""
    from tests.gradient_layers import Block

    keras.utils.set_random_seed(27)
    x = keras.Input((FEATURES,), name="x")
    block = Block(6, name="block")(x)
    shared = keras.layers.Dense(6, activation="tanh", name="shared")
    h = shared(shared(block))
    out = keras.layers.Dense(CLASSES, activation="softmax", name="head")(h)
    return keras.Model(x, out, name="custom")


def _reference(model, x, y, keras):
    """The gradient of the mean loss over all rows (one batch), by hand with plain Keras:
    every intermediate tensor watched on a tape, the loss written out as -mean(log p_y)."""
    import tensorflow as tf

    block, shared, head = model.get_layer("block"), model.get_layer("shared"), model.get_layer("head")
    with tf.GradientTape(persistent=True) as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        a = block.dense_a(xt)
        b = block.inner.dense_b(a)
        inner = tf.tanh(b)
        s0 = shared(inner)
        s1 = shared(s0)
        p = head(s1)
        loss = -tf.reduce_mean(tf.math.log(tf.gather(p, y, axis=1, batch_dims=1)))
        # at the output itself the gradient is that of Keras's own function, which
        # renormalises the probabilities (identity: it would otherwise read the
        # softmax's cached logits and never touch p)
        keras_loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, tf.identity(p)))
    named = {
        "x": xt,
        "block/dense_a": a,
        "block/inner/dense_b": b,
        "block/inner": inner,
        "block": inner,
        "shared": s0,
        "shared@1": s1,
    }
    grads = dict(zip(named, tape.gradient(loss, list(named.values()))))
    grads["head"] = tape.gradient(keras_loss, p)
    weights = dict(
        zip([w.path for w in model.trainable_weights], tape.gradient(loss, model.trainable_weights))
    )
    return {k: np.asarray(g, np.float64) for k, g in grads.items()}, {
        k: np.asarray(g, np.float64) for k, g in weights.items()
    }


@pytest.fixture(scope="module")
def custom(keras, tmp_path_factory):
    """The saved custom model, its data, the reference gradients and one worker run
    (batches of 8 of 24 rows: three batches merged)."""
    import kerinspect

    folder = tmp_path_factory.mktemp("grad")
    path = folder / "custom.keras"
    model = _custom(keras)
    model.save(path)
    rng = np.random.default_rng(27)
    x = rng.normal(size=(ROWS, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, ROWS)
    np.save(folder / "y.npy", y)
    report = kerinspect.model_gradients(
        str(path),
        x,
        labels=str(folder / "y.npy"),
        loss="sparse_categorical_crossentropy",
        batch_size=8,
        load=kerinspect.LoadOptions(custom_objects=LAYERS),
    )
    outputs, weights = _reference(model, x, y, keras)
    return {"report": report, "outputs": outputs, "weights": weights, "model": model, "x": x, "y": y}


def test_every_output_gradient_equals_the_tape(custom):
    report = custom["report"]
    for path, g in custom["outputs"].items():
        got = report.output(path).gradient
        assert got is not None, path
        np.testing.assert_allclose(got.norm, np.linalg.norm(g), rtol=RTOL, err_msg=path)
        np.testing.assert_allclose(got.rms, np.sqrt(np.mean(g**2)), rtol=RTOL, err_msg=path)
        np.testing.assert_allclose(got.max_abs, np.abs(g).max(), rtol=RTOL, err_msg=path)
        assert (got.nan, got.inf) == (0, 0)
    # ratios are relative to the gradient reaching the output layer's input (shared@1)
    reference = np.linalg.norm(custom["outputs"]["shared@1"])
    np.testing.assert_allclose(report.reference.norm, reference, rtol=RTOL)
    assert report.reference.outputs == ({"path": "shared@1", "output": "output"},)
    for path in ("block/dense_a", "shared", "head"):
        want = np.linalg.norm(custom["outputs"][path]) / reference
        np.testing.assert_allclose(report.output(path).gradient.ratio, want, rtol=RTOL, err_msg=path)
    np.testing.assert_allclose(
        report.output_gradient_norm, np.linalg.norm(custom["outputs"]["head"]), rtol=RTOL
    )


def test_a_shared_layer_has_one_gradient_per_call(custom):
    report = custom["report"]
    first, second = report.output("shared").gradient, report.output("shared@1").gradient
    assert first.norm != pytest.approx(second.norm, rel=1e-2)  # two calls, two gradients


def test_every_weight_gradient_equals_the_tape(custom):
    report, model = custom["report"], custom["model"]
    assert [w.path for w in report.weights] == [v.path for v in model.trainable_weights]
    for variable in model.trainable_weights:
        got, g = report.weight(variable.path), custom["weights"][variable.path]
        norm = np.linalg.norm(np.asarray(variable.numpy(), np.float64))
        np.testing.assert_allclose(got.norm, norm, rtol=1e-6, err_msg=variable.path)
        np.testing.assert_allclose(got.grad_norm, np.linalg.norm(g), rtol=RTOL, err_msg=variable.path)
        if norm > 0:
            np.testing.assert_allclose(got.ratio, np.linalg.norm(g) / norm, rtol=RTOL, err_msg=variable.path)
        else:  # a zero-initialised bias: no ratio
            assert got.ratio is None


def test_a_model_object_and_its_file_agree(custom):
    """The same job in this process (a keras.Model) as in the worker (its file)."""
    import kerinspect

    here = kerinspect.model_gradients(
        custom["model"], custom["x"], labels=custom["y"], loss="sparse_categorical_crossentropy", batch_size=8
    ).to_dict()
    there = custom["report"].to_dict()
    for key in ("model", "inputs", "isolation"):
        here.pop(key, None), there.pop(key, None)
    assert _rounded(here) == _rounded(there)


def _rounded(data):
    """JSON data with every float to 6 significant digits (threads may sum in another order)."""
    if isinstance(data, float):
        return float(f"{data:.6g}")
    if isinstance(data, dict):
        return {k: _rounded(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_rounded(v) for v in data]
    return data


def test_the_loss_and_labels_are_said(custom):
    loss = custom["report"].loss
    assert (loss.name, loss.source, loss.labels, loss.from_logits) == (
        "sparse_categorical_crossentropy",
        "loss",
        "data",
        False,
    )
    assert custom["report"].samples == ROWS


# -- flags --------------------------------------------------------------------------


def _run_json(path, x_path, *extra):
    r = kerinspect_cli("gradients", path, "-i", x_path, "--format", "json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r


@pytest.fixture(scope="module")
def flagged(keras, tmp_path_factory):
    """Three saved models run through the CLI: a deep sigmoid network, a ReLU network
    with one kernel scaled up 1e4 times, and a healthy ReLU network."""
    folder = tmp_path_factory.mktemp("flags")
    x_path, y_path = folder / "x.npy", folder / "y.npy"
    rng = np.random.default_rng(1)
    np.save(x_path, rng.normal(size=(32, 8)).astype("float32"))
    np.save(y_path, rng.integers(0, 2, 32))
    sigmoid, exploding, healthy = (gradient_models.sigmoid(keras), gradient_models.exploding(keras),
                                   gradient_models.healthy(keras))  # fmt: skip
    classify = ("--loss", "sparse_categorical_crossentropy")
    runs = {}
    for model, extra in (
        (sigmoid, classify),
        (exploding, ("--loss", "mse", "--labels", y_path)),
        (healthy, classify),
    ):
        path = folder / f"{model.name}.keras"
        model.save(path)
        runs[model.name] = _run_json(path, x_path, *extra)
    return runs


def _flags(data):
    return {layer["path"]: layer["outputs"][0]["flags"] for layer in data["layers"]}


def test_a_deep_sigmoid_network_vanishes_on_its_early_layers(flagged):
    data, r = flagged["sigmoid"]
    flags = _flags(data)
    assert flags["d0"] == flags["d1"] == ["vanishing-gradient"]
    assert flags["d11"] == flags["out"] == []
    assert data["exploding"] is None
    first = data["vanishing"]["path"]
    # the first flagged from the output backwards: every call before it is flagged too
    order = [layer["path"] for layer in data["layers"] if layer["class_name"] != "InputLayer"]
    assert all(flags[p] == ["vanishing-gradient"] for p in order[: order.index(first) + 1])
    assert all(flags[p] == [] for p in order[order.index(first) + 1 :])


def test_a_scaled_up_kernel_explodes_where_it_starts(flagged):
    data, _ = flagged["exploding"]
    flags = _flags(data)
    assert data["exploding"]["path"] == "d2"  # d3's kernel multiplies the gradient reaching d2's output
    assert flags["d2"] == flags["d0"] == ["exploding-gradient"]
    assert flags["d3"] == flags["out"] == []


def test_a_healthy_network_is_not_flagged(flagged):
    data, r = flagged["healthy"]
    assert all(not out["flags"] for layer in data["layers"] for out in layer["outputs"])
    assert data["vanishing"] is None and data["exploding"] is None
    assert data["loss"]["labels"] == "predicted"  # no labels: the model's own top class


def test_the_table_and_markdown_name_where_gradients_vanish(flagged):
    import io

    from rich.console import Console

    from kerinspect.gradients import GradientReport
    from kerinspect.render_gradients import render_gradients_markdown, render_gradients_table

    data, _ = flagged["sigmoid"]
    report = GradientReport.from_dict(data)
    first = data["vanishing"]["path"]
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_gradients_table(report, console, fit=False)
    text = console.file.getvalue()
    assert f"Gradients vanish from '{first}' (output) backwards" in text
    assert text.count("vanishing-gradient") == sum(f == ["vanishing-gradient"] for f in _flags(data).values())
    markdown = render_gradients_markdown(report)
    assert "Gradients vanish from" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| Layer"))
    assert len(re.split(r"(?<!\\)\|", header)) - 2 == 9  # 9 cells: "Max |g|"'s pipe is escaped


# -- the loss, from the file ---------------------------------------------------------------


def test_the_saved_compile_config_loss_and_the_folder_labels_are_used():
    r = kerinspect_cli(
        "gradients", SAMPLES / "digits.keras", "-i", SAMPLES / "data" / "digits", "--format", "json"
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["loss"]["name"] == "sparse_categorical_crossentropy"
    assert data["loss"]["source"] == "compile_config" and data["loss"]["labels"] == "data"
    assert data["output_gradient_norm"] > 0
    assert [w["path"] for w in data["weights"]] == ["conv/kernel", "conv/bias", "digit/kernel", "digit/bias"]


# -- errors ----------------------------------------------------------------------------


def _one_line(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("kerinspect: error")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_an_unknown_loss_is_one_line_before_any_worker():
    line = _one_line(kerinspect_cli("gradients", SAMPLES / "classifier.keras", "--loss", "my_loss"), 2)
    assert "Unknown loss 'my_loss'" in line and "--loss" in line


def test_a_model_without_a_saved_loss_asks_for_one():
    line = _one_line(kerinspect_cli("gradients", SAMPLES / "classifier.keras"), 2)
    assert "no saved loss" in line and "--loss" in line


def test_a_regression_loss_without_labels_asks_for_them():
    line = _one_line(kerinspect_cli("gradients", SAMPLES / "classifier.keras", "--loss", "mse"), 2)
    assert "needs labels" in line and "--labels" in line


# -- training mode -------------------------------------------------------------------------


def test_training_mode_runs_batch_normalization_on_the_batch(keras):
    """A model object (this process): with ``training``, BatchNormalization normalises by
    the batch's statistics, as ``model(x, training=True)`` under a tape does; the moving
    statistics it updates are put back."""
    import tensorflow as tf

    import kerinspect

    keras.utils.set_random_seed(5)
    x_in = keras.Input((4,))
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(6, name="dense")(x_in))
    model = keras.Model(x_in, keras.layers.Dense(CLASSES, activation="softmax", name="out")(h))
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(16, 4)) * 3 + 2).astype("float32")
    y = rng.integers(0, CLASSES, 16)
    moving = model.get_layer("bn").moving_mean.numpy().copy()
    got = {}
    for training in (False, True):
        report = kerinspect.model_gradients(
            model, x, labels=y, loss="sparse_categorical_crossentropy", training=training, batch_size=16
        )
        got[training] = report.weight("dense/kernel").grad_norm
        np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), moving)
        with tf.GradientTape() as tape:
            p = model(x, training=training)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, tf.identity(p)))
        kernel = model.get_layer("dense").kernel
        want = np.linalg.norm(np.asarray(tape.gradient(loss, kernel), np.float64))
        np.testing.assert_allclose(got[training], want, rtol=RTOL)
        model.get_layer("bn").moving_mean.assign(moving)  # the reference's training call moved it
    assert got[True] != pytest.approx(got[False], rel=1e-2)


def test_from_logits_differentiates_the_cross_entropy_of_logits(keras):
    """A head without softmax (this process): ``from_logits`` gives Keras's own
    cross-entropy of logits, at the head and below."""
    import tensorflow as tf

    import kerinspect

    keras.utils.set_random_seed(6)
    x_in = keras.Input((4,))
    h = keras.layers.Dense(5, activation="relu", name="hidden")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(CLASSES, name="logits")(h))
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(12, 4)).astype("float32"), rng.integers(0, CLASSES, 12)
    report = kerinspect.model_gradients(
        model, x, labels=y, loss="sparse_categorical_crossentropy", from_logits=True, batch_size=5
    )
    with tf.GradientTape() as tape:
        logits = model(x)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    g_logits, g_kernel = tape.gradient(loss, [logits, model.get_layer("hidden").kernel])
    assert report.loss.from_logits and report.loss.value == pytest.approx(float(loss), rel=RTOL)
    np.testing.assert_allclose(report.output("logits").gradient.norm, np.linalg.norm(g_logits), rtol=RTOL)
    np.testing.assert_allclose(report.weight("hidden/kernel").grad_norm, np.linalg.norm(g_kernel), rtol=RTOL)
