"""Bad user data named in the user's terms, through the real CLI and worker: an id out
of an Embedding's range at any depth (inside a custom layer, in an eager or a compiled
run) names the input, the id, the sample and the Embedding; NaN in input rows names the
samples (exit 9) and leaves nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from kerinspect.errors import ExitCode
from tests.conftest import SAMPLE_OPTIONS, kerinspect_cli


def one_error_line(out):
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerinspect: error["), out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    """Valid ids for sample_models/transformer.keras (vocabulary 40, 10 tokens) but for
    one id, 5000, in sample 37: the third batch of 16."""
    ids = np.random.default_rng(0).integers(0, 40, (40, 10)).astype("int32")
    ids[37, 2] = 5000
    path = tmp_path_factory.mktemp("ids") / "tokens.npy"
    np.save(path, ids)
    return path


@pytest.mark.parametrize("engine", ["eager", "compiled"])
def test_an_id_out_of_range_inside_a_custom_layer_names_input_id_sample_and_embedding(token_file, engine):
    out = kerinspect_cli("summary", "sample_models/transformer.keras", *SAMPLE_OPTIONS["transformer"],
                         "--input", token_file, "--batch-size", "16", "--engine", engine)
    assert out.returncode == ExitCode.INFERENCE, out.stderr
    line = one_error_line(out)
    assert line.startswith("kerinspect: error[input-range]: Input 'tokens' holds id 5000 in sample 37, "), line
    assert "out of range [0, 40) of Embedding 'embed/token_emb'" in line and "--input=" in line, line
    assert out.stdout == ""


@pytest.fixture(scope="module")
def mlp(tmp_path_factory, keras):
    d = tmp_path_factory.mktemp("nan")
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(3, activation="relu")(x)).save(d / "mlp.keras")
    rows = np.random.default_rng(1).normal(size=(40, 4)).astype("float32")
    rows[[21, 34], 1] = np.nan
    rows[30, 0] = np.inf
    np.save(d / "rows.npy", rows)
    return d


def test_nan_in_input_rows_names_the_samples_and_dump_writes_nothing(mlp):
    out = kerinspect_cli("dump", mlp / "mlp.keras", "--input", mlp / "rows.npy", "--batch-size", "16",
                         "--out", mlp / "acts")
    assert out.returncode == ExitCode.BAD_DATA, out.stderr
    line = one_error_line(out)
    # the second batch (16-31) is the first that holds any: its samples are named
    assert "error[input-nan]: Input 'x' holds NaN and Inf in samples 21, 30;" in line, line
    assert "--input=" in line and "Hint: drop or impute those samples" in line
    assert not (mlp / "acts").exists()


def test_check_finite_names_at_most_ten_samples(keras):
    from kerinspect.engine.inputs import check_finite
    from kerinspect.errors import DataError

    a = np.zeros((64, 3), np.float32)
    a[5:40:2, 2] = np.nan
    with pytest.raises(DataError) as e:
        check_finite("x", a, 128, "array")
    text = str(e.value)
    assert "Input 'x' holds NaN in samples 133, 135, 137, 139, 141, 143, 145, 147, 149, 151, ... " in text
    assert "(18 of samples 128 to 191)" in text
    check_finite("x", np.ones((3, 2), np.float32), 0, "array")  # finite: nothing raised
    check_finite("ids", np.array([[1, 2]], np.int32), 0, "array")  # integers are never NaN
