"""The issue's case, end to end: a tabular model trained on real rows (scikit-learn's
bundled breast-cancer set, unscaled features as users feed them) whose first hidden
ReLU layer is dead on those rows. ``check --input rows.csv`` flags that layer; the
default synthetic run does not see it, and says that it ran on synthetic inputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from kerinspect.errors import ExitCode
from tests.conftest import kerinspect_cli

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def cancer(tmp_path_factory, keras):
    """The model and its rows (as a CSV with a header and a label column). After
    training, hidden1's kernel is made negative (as a diverged update leaves it): every
    feature is positive, so each unit is 0 on every real row, while standard-normal
    rows, half negative, still switch it on."""
    d = tmp_path_factory.mktemp("cancer")
    data = sklearn_datasets.load_breast_cancer()
    x, y = data.data.astype("float32"), data.target
    keras.utils.set_random_seed(0)
    inp = keras.Input((x.shape[1],), name="features")
    h = keras.layers.Dense(16, activation="relu", name="hidden1")(inp)
    h = keras.layers.Dense(16, activation="relu", name="hidden2")(h)
    out = keras.layers.Dense(1, activation="sigmoid", name="malignant")(h)
    model = keras.Model(inp, out, name="cancer_mlp")
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    kernel, bias = model.get_layer("hidden1").get_weights()
    model.get_layer("hidden1").set_weights([-np.abs(kernel), np.zeros_like(bias)])
    model.save(d / "cancer.keras")
    names = [n.replace(" ", "_") for n in data.feature_names]
    with open(d / "rows.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*names, "target"])
        for row, label in zip(x, y):
            w.writerow([*(repr(float(v)) for v in row), int(label)])
    relu = np.maximum(x @ -np.abs(kernel), 0)
    assert not relu.any()  # independent of kerinspect: dead on every real row
    return d


def dead_layers(model):
    """The layers the ``dead`` rule failed, from a model's entry of the check JSON."""
    return {f["layer"] for r in model["rules"] if r["rule"] == "dead" for f in r["failures"]}


def test_check_on_the_real_rows_flags_the_dead_first_layer(cancer):
    out = kerinspect_cli("check", cancer / "cancer.keras", "--input", cancer / "rows.csv",
                         "--label-column", "target", "--format", "json")
    assert out.returncode == ExitCode.CHECKS_FAILED, out.stderr
    report = json.loads(out.stdout)
    assert "hidden1" in dead_layers(report["models"][0]), report
    assert "synthetic" not in out.stderr


def test_the_synthetic_run_misses_it_and_says_it_ran_on_synthetic_inputs(cancer):
    out = kerinspect_cli("check", cancer / "cancer.keras", "--format", "json")
    report = json.loads(out.stdout)
    assert "hidden1" not in dead_layers(report["models"][0])
    warnings = [line for line in out.stderr.splitlines() if "synthetic" in line]
    assert len(warnings) == 1 and warnings[0].startswith("kerinspect: warning:"), out.stderr
