"""The command line: output formats, one-line errors with exit codes, hygiene."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from tests.conftest import ROOT, SAMPLES, synthetic_warning_only

ERROR_LINE = re.compile(r"^kerinspect: error\[[a-z0-9-]+\]: .+$")


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def assert_one_line_error(result, code, rule=None):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    if rule:
        assert f"error[{rule}]" in lines[0]
    return lines[0]


# -- no TensorFlow needed ---------------------------------------------------------


def test_help_and_version_do_not_import_tensorflow():
    code = (
        "import sys\nfrom kerinspect.cli import main\n"
        "for args in (['--help'], ['--version'], ['summary', '--help']):\n"
        "    sys.argv = ['kerinspect', *args]\n"
        "    try:\n        main()\n    except SystemExit as e:\n        assert e.code in (0, None), e.code\n"
        "bad = [m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules]\n"
        "print('imported:', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("imported: []")



@pytest.mark.isolated
def test_parent_process_of_a_run_imports_no_numpy():
    """The parent of summary/check/weights only relays to the worker and renders: it
    imports neither TensorFlow nor numpy (0.1 s and 12 MB on every run). ``weights``
    takes the same path through the worker as summary, without TensorFlow there."""
    code = (
        "import contextlib, io, sys\nfrom kerinspect.cli import main\n"
        f"sys.argv = ['kerinspect', 'weights', {str(SAMPLES / 'cnn.keras')!r}]\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n        main()\n    except SystemExit as e:\n        assert e.code in (0, None), e.code\n"
        "assert 'conv' in out.getvalue()\n"
        "bad = [m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules]\n"
        "print('imported:', bad)\n"
    )
    env = {**os.environ, "KERINSPECT_ISOLATION": "on"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("imported: []")

def test_version():
    from kerinspect import __version__

    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"kerinspect {__version__}"


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name, command in cli.commands.items():
        r = run(name, "--help")
        assert r.exit_code == 0 and "Usage: " in r.stdout, name
        assert command.help and len(command.help) > 40, name
        assert f"kerinspect {name}" in readme, f"README does not show `kerinspect {name}`"


def test_unknown_option_is_one_line_exit_2():
    line = assert_one_line_error(run("summary", "m.keras", "--nope"), 2, "usage")
    assert "--nope" in line and "kerinspect summary --help" in line


def test_bad_option_value_is_exit_2():
    assert_one_line_error(run("summary", "m.keras", "--batch-size", "0"), 2, "usage")
    assert_one_line_error(run("summary", "m.keras", "--format", "xml"), 2, "usage")
    assert_one_line_error(run("nosuchcommand"), 2, "usage")


def test_missing_file_is_exit_3(tmp_path):
    line = assert_one_line_error(run("summary", tmp_path / "nope.keras"), 3, "model-not-found")
    assert "nope.keras" in line


@pytest.mark.parametrize(
    "name, content, code, rule",
    [
        ("text.keras", b"hello\n", 3, "unknown-format"),
        ("empty.keras", b"", 3, "empty-file"),
        ("model.txt", b"PK\x03\x04rest", 3, "format-mismatch"),
        # HDF5 under a .keras name is read by its content (then found broken here)
        ("h5_named.keras", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, 4, "bad-hdf5"),
        ("zip_named.h5", b"PK\x03\x04" + b"\0" * 100, 3, "format-mismatch"),
    ],
)
def test_bad_files_are_diagnosed_without_tensorflow(tmp_path, name, content, code, rule):
    p = tmp_path / name
    p.write_bytes(content)
    assert_one_line_error(run("summary", p), code, rule)


def test_directory_and_savedmodel_dir(tmp_path):
    assert_one_line_error(run("summary", tmp_path), 3, "not-a-file")
    (tmp_path / "saved_model.pb").write_bytes(b"x")
    line = assert_one_line_error(run("summary", tmp_path), 3, "savedmodel")
    assert "SavedModel" in line


def test_remote_path_refused():
    assert_one_line_error(run("summary", "hf://user/model.keras"), 3, "remote-path")


def test_hostile_path_is_escaped(tmp_path):
    line = assert_one_line_error(run("summary", tmp_path / "x\x1b[2Jy\n::error::z.keras"), 3)
    assert "\x1b" not in line and "\\x1b[2J" in line


# -- with TensorFlow --------------------------------------------------------------


def test_summary_table(keras):
    r = run("summary", SAMPLES / "nested_shared.keras", "--samples", "8", "--width", "200")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    for text in ("Model 'nested_shared' (Functional)", "shared@1", "encoder/enc_dense",
                 "encoder@1/enc_out", "synthetic, seed=0", "10 layer calls · 143 parameters"):
        assert text in out, text
    assert synthetic_warning_only(r.stderr), r.stderr


def test_summary_json_is_the_documented_contract(keras):
    r = run("summary", SAMPLES / "lstm_state.keras", "-f", "json", "--samples", "6", "-b", "4",
            "--dim", "5", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["model"]["format"] == "keras" and data["model"]["name"] == "lstm_state"
    assert data["inputs"] == [{"name": "sequence", "shape": [6, 5, 4], "dtype": "float32",
                               "source": "synthetic", "seed": 3,
                               "note": "standard normal: nothing in the model says what its data looks like"}]
    lstm = next(layer for layer in data["layers"] if layer["path"] == "lstm")
    assert [o["name"] for o in lstm["outputs"]] == ["output", "state_h", "state_c"]
    assert lstm["outputs"][0]["shape"] == [6, 5, 8] and lstm["call"] == 0
    assert data["samples"] == 6 and data["batch_size"] == 4


def test_summary_markdown(keras):
    r = run("summary", SAMPLES / "dead_relu.keras", "--format", "markdown")
    assert r.exit_code == 0
    assert "| `mostly_dead` | `Dense` |" in r.stdout and "| dead |" in r.stdout


def test_flags_in_sample_models(sample_report):
    def flags(name):
        return {layer["path"]: layer["outputs"][0]["flags"] for layer in sample_report(name)["layers"]}

    nan = flags("nan_model")
    assert nan["dense_ok"] == [] and nan["dense_nan"] == ["nan"] and nan["after_nan"] == ["nan"]
    assert flags("dead_relu")["mostly_dead"] == ["dead"]
    boom = flags("exploding")
    assert boom["dense_0"] == [] and boom["dense_3"] == ["exploding"]


def test_thresholds_are_options(keras):
    data = json.loads(run("summary", SAMPLES / "exploding.keras", "-f", "json", "--max-abs", "1e9").stdout)
    assert all(not o["flags"] for layer in data["layers"] for o in layer["outputs"])
    assert data["thresholds"]["max_abs"] == 1e9


def test_input_file(keras, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 8), np.float32))
    r = run("summary", SAMPLES / "dead_relu.keras", "--input", tmp_path / "x.npy", "-f", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["inputs"][0]["source"].endswith("x.npy") and data["inputs"][0]["shape"] == [3, 8]
    np.save(tmp_path / "bad.npy", np.zeros((3, 7), np.float32))
    line = assert_one_line_error(run("summary", SAMPLES / "dead_relu.keras", "-i", tmp_path / "bad.npy"),
                                 6, "input-shape")
    assert "'features'" in line and "bad.npy" in line
    assert_one_line_error(run("summary", SAMPLES / "dead_relu.keras", "-i", tmp_path / "none.npy"),
                          3, "input-not-found")
    assert_one_line_error(run("summary", SAMPLES / "dead_relu.keras", "-i", tmp_path / "x.npy",
                              "--shape", "8"), 2, "usage")


@pytest.mark.isolated
def test_corrupt_archive_is_exit_4_and_debug_shows_traceback(keras, tmp_path):
    raw = (SAMPLES / "cnn.keras").read_bytes()
    bad = tmp_path / "truncated.keras"
    bad.write_bytes(raw[: len(raw) // 2])
    assert_one_line_error(run("summary", bad), 4)
    r = run("summary", bad, "--debug")
    assert r.exit_code == 4 and "Traceback" in r.stderr


def test_unknown_layer_class_is_exit_4(keras, tmp_path):
    src = SAMPLES / "dead_relu.keras"
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["config.json"] = members["config.json"].replace(b'"Dense"', b'"TotallyCustomLayer"', 1)
    bad = tmp_path / "custom.keras"
    with zipfile.ZipFile(bad, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    line = assert_one_line_error(run("summary", bad), 4)
    assert "TotallyCustomLayer" in line and len(line) < 700


@pytest.mark.isolated
def test_no_tensorflow_log_lines_in_a_real_run():
    """A normal run prints the table on stdout and, on stderr, only that it ran on
    synthetic inputs: no TensorFlow log line."""
    env = {**os.environ}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = subprocess.run([sys.executable, "-m", "kerinspect", "summary", str(SAMPLES / "attention.keras")],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert synthetic_warning_only(out.stderr), out.stderr
    assert "self_attention:attention_scores" in out.stdout


def test_no_color_is_respected(keras, reuse):
    """The same run rendered twice (the second reuses the first's worker run: colour is
    the parent's business)."""
    args = ("summary", SAMPLES / "nan_model.keras", "--width", "200")
    colored = run(*args, env={"FORCE_COLOR": "1", "NO_COLOR": None}).stdout
    plain = run(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert "\x1b[31m" in colored  # flagged rows are red
    assert "\x1b[31m" not in plain


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "kerinspect", "--version"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("kerinspect ")


def test_readme_documents_exit_codes():
    from kerinspect.errors import ExitCode

    readme = pathlib.Path(ROOT / "README.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} |" in readme, code


def test_negative_seed_and_input_file_named_array(keras, tmp_path, monkeypatch):
    assert_one_line_error(run("summary", SAMPLES / "dead_relu.keras", "--seed", "-1"), 2, "usage")
    monkeypatch.chdir(tmp_path)
    with open("array", "wb") as f:  # a file literally named like the in-memory marker
        np.save(f, np.ones((3, 8), np.float32))
    r = run("summary", SAMPLES / "dead_relu.keras", "-i", "array", "-f", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["inputs"][0]["source"] == "array" and data["layers"][0]["outputs"][0]["stats"]["mean"] == 1.0


def test_keras_identity_is_checked():
    import types

    from kerinspect.engine.tfenv import check_keras
    from kerinspect.errors import UsageError

    def fake(name, version, backend="tensorflow"):
        return types.SimpleNamespace(__name__=name, __version__=version,
                                     backend=types.SimpleNamespace(backend=lambda: backend))

    check_keras(fake("keras", "3.15.1"))
    check_keras(fake("keras", "3.16.0.dev2026"))
    for bad in (fake("keras", "3.10.0"), fake("tf_keras", "2.21.0"), fake("keras", "3.15.1", "jax")):
        with pytest.raises(UsageError) as e:
            check_keras(bad)
        assert e.value.rule == "keras-version"


def test_progress_bar_draws_only_on_a_terminal():
    import io

    from rich.console import Console

    from kerinspect.cli import _ProgressBar

    out = io.StringIO()
    with _ProgressBar(Console(file=out, force_terminal=True, width=80)) as bar:
        bar(16, 160)
        bar(160, 160)
    assert "16/160" in out.getvalue() and "160/160" in out.getvalue()
    quiet = io.StringIO()
    with _ProgressBar(Console(file=quiet, force_terminal=False, width=80)) as bar:
        bar(16, 160)
    assert quiet.getvalue() == ""
    single = io.StringIO()
    with _ProgressBar(Console(file=single, force_terminal=True, width=80)) as bar:
        bar(16, 16)  # one batch: no bar at all
    assert single.getvalue() == ""


@pytest.mark.isolated
def test_progress_of_every_batch_comes_back_from_the_worker(keras):
    """The bar is fed by the worker's progress messages, batch by batch."""
    from kerinspect.api import LoadOptions, inspect_model

    seen = []
    inspect_model(
        SAMPLES / "lstm_state.keras", samples=10, batch_size=4,
        progress=lambda done, total: seen.append((done, total)), load=LoadOptions(isolate=True),
    )
    assert seen == [(4, 10), (8, 10), (10, 10)]
