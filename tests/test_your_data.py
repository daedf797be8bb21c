"""The issue's case, end to end: a tabular model trained on real rows (scikit-learn's
bundled breast-cancer set, unscaled features as users feed them) whose first hidden
ReLU layer is dead on those rows (``sample_models/cancer_mlp.keras``, its rows in
``sample_models/data/cancer.csv``). ``check --input rows.csv`` flags that layer; the
default synthetic run does not see it, and says that it ran on synthetic inputs."""

from __future__ import annotations

import csv
import json

import numpy as np

from kerinspect.errors import ExitCode
from tests.conftest import ROOT, kerinspect_cli

MODEL = ROOT / "sample_models" / "cancer_mlp.keras"
ROWS = ROOT / "sample_models" / "data" / "cancer.csv"


def dead_layers(model):
    """The layers the ``dead`` rule failed, from a model's entry of the check JSON."""
    return {f["layer"] for r in model["rules"] if r["rule"] == "dead" for f in r["failures"]}


def test_the_first_hidden_layer_is_dead_on_the_real_rows_by_plain_keras(keras):
    """The premise, independent of kerinspect: plain Keras on the CSV's rows."""
    with open(ROWS, newline="") as f:
        rows = list(csv.DictReader(f))
    x = np.array([[float(r[k]) for k in r if k != "target"] for r in rows], np.float32)
    model = keras.saving.load_model(MODEL)
    hidden1 = keras.Model(model.inputs, model.get_layer("hidden1").output)
    assert not np.asarray(hidden1(x)).any()  # every unit 0 on every real row
    noise = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    assert np.asarray(hidden1(noise)).any(axis=0).all()  # every unit alive on noise


def test_check_on_the_real_rows_flags_the_dead_first_layer():
    out = kerinspect_cli("check", MODEL, "--input", ROWS, "--label-column", "target", "--format", "json")
    assert out.returncode == ExitCode.CHECKS_FAILED, out.stderr
    report = json.loads(out.stdout)
    assert "hidden1" in dead_layers(report["models"][0]), report
    assert report["models"][0]["inputs"][0]["shape"] == [200, 30]
    assert "synthetic" not in out.stderr


def test_the_synthetic_run_misses_it_and_says_it_ran_on_synthetic_inputs():
    out = kerinspect_cli("check", MODEL, "--format", "json")
    report = json.loads(out.stdout)
    assert "hidden1" not in dead_layers(report["models"][0])
    warnings = [line for line in out.stderr.splitlines() if "synthetic" in line]
    assert len(warnings) == 1 and warnings[0].startswith("kerinspect: warning:"), out.stderr
