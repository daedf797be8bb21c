"""``kerinspect report --gradients`` (issue 27, item 5): the gradient norm along the depth,
on the activation chart's x axis.

Every figure is compared with ``tf.GradientTape`` on plain Keras (the page's embedded
JSON to 1e-3; the SVG's points to the chart's pixel precision, read back through its own
decade grid); a deep sigmoid network's page marks vanishing from the layer the
``gradients`` command names; the errors are ``gradients``'s; the page renders in headless
Chromium. Saved models run through the CLI and the real worker, each run shared by the
tests that read it."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLES, kerinspect_cli

ROWS, FEATURES, CLASSES = 24, 6, 3
RTOL = 1e-3
SCCE = ("--loss", "sparse_categorical_crossentropy")


def _embedded(page: str) -> dict:
    return json.loads(page.split('id="kerinspect-report">', 1)[1].split("</script>", 1)[0])


def _svg(page: str, svg_id: str) -> str:
    return re.search(rf'<svg [^>]*id="{svg_id}".*?</svg>', page, re.S).group(0)


def _names(svg: str) -> dict[str, float]:
    """The layer names under a depth chart's axis, by the x of their point."""
    found = re.findall(r'class="layer-name"[^>]*translate\(([\d.]+),[\d.]+\) rotate\(-60\)">([^<]*)<', svg)
    return {html.unescape(name): float(x) - 3 for x, name in found}


def _points(svg: str) -> dict[float, tuple[float, str]]:
    """The gradient chart's points: ``{cx: (cy, class)}``."""
    found = re.findall(r'<circle class="(point[^"]*)" cx="([\d.]+)" cy="([\d.]+)"', svg)
    return {float(cx): (float(cy), cls) for cls, cx, cy in found}


def _log_scale(svg: str):
    """The chart's own y scale, from two of its decade labels: y -> log10(value)."""
    labels = [(float(y) - 4, int(e)) for y, e in re.findall(r'<text x="\d+" y="([\d.]+)" text-anchor="end">1e(-?\d+)<', svg)]
    (y1, e1), (y2, e2) = labels[0], labels[-1]
    return lambda y: e1 + (y - y1) * (e2 - e1) / (y2 - y1), abs(y2 - y1) / abs(e2 - e1)


def _run_page(path: Path, out: Path, *args) -> str:
    r = kerinspect_cli("report", path, "-o", out, "--feature-maps", "0", *args)
    assert r.returncode == 0, r.stderr
    return out.read_text(encoding="utf-8")


# -- figures against the tape --------------------------------------------------------------


def _small(keras):
    keras.utils.set_random_seed(11)
    x = keras.Input((FEATURES,), name="x")
    a = keras.layers.Dense(8, activation="tanh", name="a")(x)
    b = keras.layers.Dense(8, activation="sigmoid", name="b")(a)
    out = keras.layers.Dense(CLASSES, activation="softmax", name="head")(b)
    return keras.Model(x, out, name="small")


def _tape(model, x, y, keras):
    """The gradient of the mean loss over all rows at each output, with plain Keras."""
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        a = model.get_layer("a")(xt)
        b = model.get_layer("b")(a)
        p = model.get_layer("head")(b)
        # identity: Keras's cross-entropy would otherwise read the softmax's cached logits
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, tf.identity(p)))
    named = {"x": xt, "a": a, "b": b, "head": p}
    grads = {k: np.asarray(g, np.float64) for k, g in zip(named, tape.gradient(loss, list(named.values())))}
    return grads, float(loss)


@pytest.fixture(scope="module")
def small(keras, tmp_path_factory):
    """A saved 3-layer classifier, its data and labels, the tape's gradients, and one
    ``report --gradients`` page (batches of 8 of 24 rows: three batches merged)."""
    folder = tmp_path_factory.mktemp("report-gradients")
    model = _small(keras)
    model.save(folder / "small.keras")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(ROWS, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, ROWS)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    page = _run_page(
        folder / "small.keras",
        folder / "small.html",
        "-i",
        folder / "x.npy",
        "--labels",
        folder / "y.npy",
        *SCCE,
        "--batch-size",
        "8",
        "--gradients",
    )
    grads, loss = _tape(model, x, y, keras)
    return {"page": page, "grads": grads, "loss": loss, "model": model, "x": x, "y": y}


def test_the_embedded_gradients_equal_the_tape(small):
    data = _embedded(small["page"])["gradients"]
    by_path = {layer["path"]: layer["outputs"][0]["gradient"] for layer in data["layers"]}
    for path, g in small["grads"].items():
        np.testing.assert_allclose(by_path[path]["norm"], np.linalg.norm(g), rtol=RTOL, err_msg=path)
        np.testing.assert_allclose(by_path[path]["rms"], np.sqrt(np.mean(g**2)), rtol=RTOL, err_msg=path)
    reference = np.linalg.norm(small["grads"]["b"])  # the output layer's input
    np.testing.assert_allclose(data["reference"]["norm"], reference, rtol=RTOL)
    np.testing.assert_allclose(by_path["a"]["ratio"], np.linalg.norm(small["grads"]["a"]) / reference, rtol=RTOL)
    assert data["loss"]["labels"] == "data" and data["loss"]["source"] == "loss"
    np.testing.assert_allclose(data["loss"]["value"], small["loss"], rtol=RTOL)
    assert data["samples"] == ROWS and data["batch_size"] == 8


def test_the_chart_plots_the_tape_norms_on_the_activation_charts_axis(small):
    page = small["page"]
    depth, chart = _svg(page, "ki-depth"), _svg(page, "ki-gradients")
    names = _names(chart)
    assert names == _names(depth)  # the same layer calls, the same names, at the same x
    assert list(names) == ["x", "a", "b", "head"]
    points = _points(chart)
    assert set(points) == set(names.values())
    to_log, px_per_decade = _log_scale(chart)
    for path, g in small["grads"].items():
        cy, _ = points[names[path]]
        # the SVG holds 0.1 px: compare at that precision
        want = math.log10(np.linalg.norm(g))
        assert abs(to_log(cy) - want) * px_per_decade <= 0.15, (path, 10 ** to_log(cy), 10**want)
    assert re.search(r'class="threshold"[^>]*stroke-dasharray', chart)  # the thresholds drawn
    # the reference line sits at the tape's norm at the output layer's input
    ref_y = float(re.findall(r'<line class="threshold" x1="\d+" x2="\d+" y1="([\d.]+)"', chart)[0])
    assert abs(to_log(ref_y) - math.log10(np.linalg.norm(small["grads"]["b"]))) * px_per_decade <= 0.15


def test_the_loss_line_and_the_verdict_are_on_the_page(small):
    page = small["page"]
    notes = page.split('id="ki-gradient-notes"', 1)[1].split("</div>", 1)[0]
    assert f"loss: sparse_categorical_crossentropy (from --loss) = {small['loss']:.4g}" in notes
    assert "with the data&#x27;s labels" in notes or "with the data's labels" in notes
    assert "No output&#x27;s gradient vanishes or explodes." in notes


def test_a_model_object_gives_the_same_gradients_and_no_gradients_leaves_the_page_as_it_was(small):
    """The same job in this process (a keras.Model); rendered without its gradient
    report, the page has no trace of it."""
    import dataclasses

    from kerinspect.api import inspect_for_report
    from kerinspect.render_html import render_report

    data = inspect_for_report(
        small["model"],
        small["x"],
        labels=small["y"],
        gradients=True,
        loss="sparse_categorical_crossentropy",
        batch_size=8,
        feature_maps=0,
    )
    there = _embedded(small["page"])["gradients"]
    for got, want in zip(data.gradients.layers, there["layers"]):
        assert got.path == want["path"]
        np.testing.assert_allclose(got.outputs[0].gradient.norm, want["outputs"][0]["gradient"]["norm"], rtol=1e-5)
    plain = render_report(dataclasses.replace(data, gradients=None))
    assert 'id="ki-gradients"' not in plain and "ki-gradient-notes" not in plain
    assert "gradients" not in _embedded(plain)
    assert 'id="ki-gradients"' in render_report(data)


def test_training_applies_to_the_gradient_pass_only(keras):
    """--training: the gradients are those of ``model(x, training=True)`` under a tape,
    the activations those of inference mode, and the moving statistics are kept (a model
    object: the same job in this process)."""
    import tensorflow as tf

    from kerinspect.api import inspect_for_report

    keras.utils.set_random_seed(8)
    x_in = keras.Input((4,), name="x")
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(6, name="dense")(x_in))
    model = keras.Model(x_in, keras.layers.Dense(CLASSES, activation="softmax", name="out")(h))
    rng = np.random.default_rng(8)
    x = (rng.normal(size=(16, 4)) * 3 + 2).astype("float32")
    y = rng.integers(0, CLASSES, 16)
    moving = model.get_layer("bn").moving_mean.numpy().copy()
    data = inspect_for_report(
        model, x, labels=y, gradients=True, training=True, loss="sparse_categorical_crossentropy",
        batch_size=16, feature_maps=0,
    )
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), moving)
    bn = next(layer for layer in data.report.layers if layer.path == "bn").outputs[0].stats
    inference = np.asarray(keras.Model(x_in, h)(x, training=False), np.float64)
    np.testing.assert_allclose(bn.mean, inference.mean(), rtol=1e-4)
    with tf.GradientTape() as tape:
        p = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, tf.identity(p)))
    kernel = model.get_layer("dense").kernel
    want = np.linalg.norm(np.asarray(tape.gradient(loss, kernel), np.float64))
    assert data.gradients.training
    np.testing.assert_allclose(data.gradients.weight("dense/kernel").grad_norm, want, rtol=RTOL)


def test_a_threshold_far_from_every_point_is_named_not_drawn(small):
    """A --vanishing-gradient of 1e-30 would squash the points into a strip: the line is
    left off the chart and the legend says where it is."""
    import dataclasses

    from kerinspect.gradients import GradientReport
    from kerinspect.render_gradient_chart import gradient_chart
    from kerinspect.report import ModelReport

    data = _embedded(small["page"])
    grads = GradientReport.from_dict(data["gradients"])
    far = dataclasses.replace(grads, thresholds={"vanishing_gradient": 1e-30, "exploding_gradient": 1e3})
    chart = gradient_chart(ModelReport.from_dict(data["report"]), far)
    assert chart.count('class="threshold"') == 2  # the reference and the exploding line
    assert "vanishing-gradient below 1e-30× (below the chart)" in chart
    decades = [int(e) for e in re.findall(r'text-anchor="end">1e(-?\d+)<', chart)]
    assert min(decades) > -10


# -- flags: the page says what the gradients command says ----------------------------------


@pytest.fixture(scope="module")
def sigmoid(keras, tmp_path_factory):
    """A 12-layer sigmoid MLP: its ``gradients --format json`` and its report page."""
    folder = tmp_path_factory.mktemp("report-sigmoid")
    keras.utils.set_random_seed(3)
    x = keras.Input((8,), name="x")
    h = x
    for i in range(12):
        h = keras.layers.Dense(32, activation="sigmoid", name=f"d{i}")(h)
    model = keras.Model(x, keras.layers.Dense(CLASSES, activation="softmax", name="out")(h), name="sigmoid")
    model.save(folder / "sigmoid.keras")
    np.save(folder / "x.npy", np.random.default_rng(1).normal(size=(32, 8)).astype("float32"))
    r = kerinspect_cli("gradients", folder / "sigmoid.keras", "-i", folder / "x.npy", *SCCE, "--format", "json")
    assert r.returncode == 0, r.stderr
    page = _run_page(folder / "sigmoid.keras", folder / "sigmoid.html", "-i", folder / "x.npy", *SCCE, "--gradients")
    return json.loads(r.stdout), page


def test_a_deep_sigmoid_page_marks_vanishing_from_the_layer_the_gradients_command_names(sigmoid):
    from kerinspect.gradients import GradientReport

    command, page = sigmoid
    first = command["vanishing"]["path"]
    assert first in {f"d{i}" for i in range(12)} and command["exploding"] is None
    embedded = _embedded(page)["gradients"]
    assert embedded["vanishing"] == command["vanishing"]
    chart = _svg(page, "ki-gradients")
    names, points = _names(chart), _points(chart)
    flagged = {
        layer["path"] for layer in command["layers"] if "vanishing-gradient" in layer["outputs"][0]["flags"]
    }
    marked = {name for name, x in names.items() if "vanishing-gradient" in points[x][1]}
    assert marked == flagged and first in marked and "d11" not in marked
    # the ring sits on the layer the command names
    ring = re.search(r'<circle class="first" cx="([\d.]+)"', chart)
    assert ring and float(ring.group(1)) == names[first]
    # the command's own verdict line, word for word
    verdict = GradientReport.from_dict(command).verdict()
    notes = html.unescape(page.split('id="ki-gradient-notes"', 1)[1].split("</div>", 1)[0])
    assert verdict == [f"Gradients vanish from '{first}' (output) backwards: " + verdict[0].split("backwards: ")[1]]
    assert verdict[0] in notes
    # the names of the flagged calls are red under the axis
    red = set(re.findall(r'class="layer-name" fill="#c00"[^>]*>([^<]*)<', chart))
    assert red == flagged


# -- errors: those of gradients ----------------------------------------------------------------


def _error(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("kerinspect: error")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_a_model_without_a_saved_loss_is_the_gradients_commands_line(tmp_path):
    model = SAMPLES / "classifier.keras"
    report = _error(kerinspect_cli("report", model, "--gradients", "-o", tmp_path / "p.html"), 2)
    assert report == _error(kerinspect_cli("gradients", model), 2)
    assert "no saved loss" in report and "--loss" in report
    assert not (tmp_path / "p.html").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (("--gradients", "--loss", "my_loss"), ("Unknown loss 'my_loss'", "--loss")),
        (("--loss", "mse"), ("--loss applies to the gradient chart", "--gradients")),
        (("--training",), ("--training applies", "--gradients")),
        (("--vanishing-gradient", "0.01"), ("--vanishing-gradient applies", "--gradients")),
    ],
)
def test_gradient_options_are_refused_in_one_line_before_any_worker(args, words, tmp_path):
    from click.testing import CliRunner

    from kerinspect.cli import cli

    result = CliRunner().invoke(cli, ["report", str(SAMPLES / "classifier.keras"), "-o", str(tmp_path / "p.html"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("kerinspect: error")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr
    assert not (tmp_path / "p.html").exists()


# -- in a real browser ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_gradient_chart_renders_in_a_real_browser(tmp_path):
    """digits.keras on its own data: the section renders (a screenshot in the test
    artifacts), no console error, one point per layer call with a gradient."""
    from tests.test_report_html import _browse, _chromium, _console, _sizes

    _chromium()
    page_path = tmp_path / "digits-gradients.html"
    page = _run_page(SAMPLES / "digits.keras", page_path, "-i", SAMPLES / "data" / "digits", "--gradients")
    dom, log = _browse(page_path, tmp_path)
    assert _console(log) == []
    sizes = _sizes(dom)
    assert min(sizes["gradients"]) > 0 and sizes["gradients"][0] == sizes["depth"][0], sizes
    chart = _svg(page, "ki-gradients")
    layers = _embedded(page)["gradients"]["layers"]
    assert len(_points(chart)) == sum(1 for layer in layers if layer["outputs"][0]["gradient"]) == 6
    assert _embedded(page)["gradients"]["loss"]["source"] == "compile_config"
