"""The real-world corpus (``../shared/realworld/wild/``): files other people saved with
other TensorFlow/Keras versions get what its README says a user should get.

Files that ``tf_keras`` (the official Keras 2 loader) opens are inspected through the
worker and match ``tf_keras`` layer by layer; the others fail in one complete line.
Every test skips when the folder is absent (users who clone the project lack it).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import kerinspect
from kerinspect.cli import cli
from tests.conftest import REALWORLD
from tests.test_cli import assert_one_line_error
from tests.test_legacy import assert_every_call_matches, tf_keras_calls
from tests.test_legacy import tfk as tfk  # noqa: PLC0414 - the tf_keras fixture, shared

WILD = REALWORLD / "wild"
pytestmark = [
    pytest.mark.realworld,
    pytest.mark.skipif(not WILD.is_dir(), reason="../shared/realworld/wild is absent"),
]

#: README row -> (file, what the upgrade must have done, a class the report must hold)
TF_KERAS_FILES = {
    "szakdogawebapp": ("szakdogawebapp/transformer_model.h5", {"tf-op-layer", "mha-build-shapes"}, "TFOpLambda"),
    "geolife": (
        "geolife-trajectories/transformer_model.h5",
        {"tf-op-layer", "call-tensor-arguments", "mha-build-shapes"},
        "MultiHeadAttention",
    ),
    "exoplanet": (
        "using-ml-for-rapid-validation-of-exoplanet-candidates/transformer_model.keras",
        {"tf-op-layer", "call-tensor-arguments"},
        "MultiHeadAttention",
    ),
    "gru-time-major": ("stpredict_final09/keras_model_gru_3.h5", {"rnn-time-major"}, "GRU"),
}
TEACHABLE = sorted(WILD.glob("teachable-machine-*/keras_model.h5")) if WILD.is_dir() else []


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _inspect_and_compare(tfk, path, tmp_path, samples):
    ref = tfk.models.load_model(path, compile=False)
    x = np.random.default_rng(0).standard_normal((samples, *ref.input_shape[1:])).astype("float32")
    np.save(tmp_path / "x.npy", x)
    report = kerinspect.inspect_model(str(path), str(tmp_path / "x.npy"))
    assert report.model.params == ref.count_params()
    pred = ref.predict(x, verbose=0)
    final = report.layers[-1].outputs[0]
    assert final.shape == pred.shape
    assert final.stats.mean == pytest.approx(float(pred.mean()), rel=2e-3, abs=1e-6)
    assert_every_call_matches(report, tf_keras_calls(tfk, ref, [x]), path.name, rel=2e-3, abs_=1e-5)
    return report


@pytest.mark.isolated
@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(TF_KERAS_FILES))
def test_tf_keras_files_inspect_and_match_tf_keras(tfk, key, tmp_path):
    rel, changes, cls = TF_KERAS_FILES[key]
    report = _inspect_and_compare(tfk, WILD / rel, tmp_path, samples=8)
    notes = " ".join(report.model.notes)
    assert report.model.loader == "keras+legacy-h5-upgrade"
    for change in changes:
        assert f"legacy config upgraded: {change}" in notes, (key, report.model.notes)
    assert cls in {r.class_name for r in report.layers}
    if key == "exoplanet":  # HDF5 under a .keras name: read by content, and said so
        assert report.model.format == "h5" and "HDF5 under a .keras name" in report.model.notes[0]


@pytest.mark.isolated
@pytest.mark.slow
@pytest.mark.skipif(not TEACHABLE, reason="no Teachable Machine export in ../shared/realworld")
def test_teachable_machine_export_inspects_and_matches_tf_keras(tfk, tmp_path):
    # the three exports share one architecture; one comparison layer by layer, the
    # others through the CLI (params as tf_keras counts them)
    report = _inspect_and_compare(tfk, TEACHABLE[0], tmp_path, samples=2)
    assert report.layers[0].outputs[0].shape[1:] == (224, 224, 3)
    assert "legacy config upgraded: depthwise-groups" in report.model.notes
    assert sum(r.class_name == "DepthwiseConv2D" for r in report.layers) == 17


@pytest.mark.isolated
@pytest.mark.parametrize(
    "rel, rule, words",
    [
        ("arrhythmia/transformer_model.keras", "unknown-class", ("TransformerBlock", "--custom-objects")),
        ("lamogan-travel-rs/recommender_model.keras", "unknown-class", ("RecommenderNet", "--custom-objects")),
        ("food-recommender/recommendation_model.keras", "unknown-class", ("RecommenderNet",)),
        ("food-recommender/recommendation_model.h5", "unknown-class", ("RecommenderNet",)),
        ("ncf_ner_model/ncf_model.keras", "keras2-archive", ("2.15", "tf_keras")),
    ],
)
def test_files_needing_code_or_an_old_layout_fail_in_one_line(rel, rule, words):
    line = assert_one_line_error(run("summary", WILD / rel), 4, rule)
    for word in words:
        assert word in line, line


def test_savedmodel_directory_fails_in_one_line():
    path = REALWORLD / "alibi-testing" / "iris-ffn-tf2.2.0-savedmodel"
    if not path.is_dir():
        pytest.skip("no SavedModel in ../shared/realworld")
    line = assert_one_line_error(run("summary", path), 3, "savedmodel")
    assert "SavedModel" in line and "Hint:" in line
