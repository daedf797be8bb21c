"""Issue 3's acceptance: crafted files, through the real CLI and worker, end in one line
with their exit code and rule id; none runs code, reads a file outside the model, writes
to HOME, hangs or prints a traceback.

The verdict on every crafted file (exit code, rule, where, message) is test_scan's, in
this process. Here, the plumbing around it: one file per kind of refusal (exit code,
rule, container) runs end to end, and every file the parent refuses before any worker
starts (pre-flight)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from tests.conftest import render_summary
from tests.hostile import HOSTILE_NAMES
from tests.test_scan import REFUSED

pytestmark = pytest.mark.isolated

LINE = re.compile(r"^kerinspect: error\[([a-z0-9-]+)\]: (.+)$")
#: where the parent's pre-flight answers before the scan (SAFETY.md rows 24 and 26)
PREFLIGHT = {"text.keras": (3, "unknown-format"), "empty.keras": (3, "empty-file")}
#: refused by the parent's pre-flight, before any worker starts: every one goes end to end
PREFLIGHT_STAGE = {*PREFLIGHT, "polyglot.keras", "polyglot.h5", "prepended.keras"}
#: refused by the static scan in the worker: one file for each (exit code, rule, container)
SCAN_STAGE = {
    "lambda.keras", "activation_get_file.keras", "tfsm_layer.keras", "activation_ops.keras",
    "torch_wrapper.keras", "module_os.keras", "string_lookup_path.keras", "node_string.keras",
    "huge_units.keras", "huge_input.keras", "zipslip.keras", "dup_config.keras", "encrypted.keras",
    "config_bomb.keras", "deep_json.keras", "appended.keras", "hidden_gap.keras", "h5_external.keras",
    "h5_shape_bomb.keras", "h5_softlink.keras", "truncated.keras", "no_config.keras", "no_weights.keras",
    "bad_json.keras",
    "lambda.h5", "huge_units.h5", "h5_extlink.h5", "h5_virtual.h5", "plain.h5",
}
END_TO_END = [r for r in REFUSED if r[0] in PREFLIGHT_STAGE | SCAN_STAGE]


def _kind(refused):
    name, code, rule, _ = refused
    return int(code), rule, name.rsplit(".", 1)[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("KERAS_HOME", str(h / ".keras"))
    return h


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_every_kind_of_refusal_is_run_end_to_end():
    assert {_kind(r) for r in END_TO_END} == {_kind(r) for r in REFUSED}
    scanned = [_kind(r) for r in END_TO_END if r[0] in SCAN_STAGE]
    assert len(scanned) == len(set(scanned)) == len(SCAN_STAGE)  # one file per kind, each in REFUSED


@pytest.mark.parametrize(("name", "code", "rule", "where"), END_TO_END, ids=[r[0] for r in END_TO_END])
def test_crafted_file_ends_in_one_line(hostile, home, name, code, rule, where):
    result = run("summary", hostile[name], "--timeout", "60", "--max-memory", "4G")
    code, rule = PREFLIGHT.get(name, (int(code), rule))
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    match = LINE.match(lines[0])
    assert match and match.group(1) == rule, lines[0]
    assert len(lines[0]) < 700 and "\x1b" not in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not hostile.canary.exists()
    assert list(home.iterdir()) == []


def test_trusted_lambda_runs_only_when_asked_and_still_isolated(hostile, home, monkeypatch):
    """Positive control for the refusals above: with --trust-model the payload
    runs (and says so loudly), inside the worker, with a scratch HOME."""
    monkeypatch.setenv("KI_CANARY", str(hostile.canary))
    refused = run("summary", hostile["lambda.keras"])
    assert refused.exit_code == 5 and not hostile.canary.exists()
    trusted = run("summary", hostile["lambda.keras"], "--trust-model", "-n", "2")
    try:
        assert "--trust-model: code stored in the model file may run" in trusted.stderr
        assert hostile.canary.exists(), trusted.stderr  # the payload really ran
    finally:
        hostile.canary.unlink(missing_ok=True)
    assert list(home.iterdir()) == []


@pytest.fixture(scope="module")
def hostile_names_run(keras, tmp_path_factory):
    """``summary -n 2 -f json`` of one model whose layers bear every name of
    ``HOSTILE_NAMES`` (Keras accepts them all: SAFETY.md finding 6), renamed in its
    config only as ``tests/hostile.py`` renames ``name_<tag>.keras`` (weights are keyed by
    position): one worker run that the tests of every name read."""
    from tests.hostile import members, write_zip

    d = tmp_path_factory.mktemp("hostile_names")
    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="x")
    h = x
    for i in range(len(HOSTILE_NAMES)):
        h = keras.layers.Dense(3, name=f"placeholder_{i}")(h)
    keras.Model(x, h, name="model").save(d / "placeholders.keras")
    content = members(d / "placeholders.keras")
    config = content["config.json"].decode()
    for i, tag in enumerate(sorted(HOSTILE_NAMES)):
        assert json.dumps(f"placeholder_{i}") in config
        config = config.replace(json.dumps(f"placeholder_{i}"), json.dumps(HOSTILE_NAMES[tag]))
    write_zip(d / "names.keras", {**content, "config.json": config.encode()})
    return run("summary", d / "names.keras", "-n", "2", "-f", "json")


@pytest.mark.parametrize("tag", sorted(HOSTILE_NAMES))
def test_hostile_layer_names_are_inspected_and_escaped(hostile_names_run, tag):
    result = hostile_names_run
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert HOSTILE_NAMES[tag] in [layer["name"] for layer in data["layers"]]
    # the table of `--width 300`, which the parent renders from this report
    table = render_summary(data, width=300)
    assert " layer calls · " in table  # (a whole table, footer included)
    assert "\x1b" not in table and "\x00" not in table
    assert not any(line.startswith("::") for line in table.splitlines())


def test_weights_mismatch_is_a_clear_load_error(hostile):
    result = run("summary", hostile["weights_mismatch.keras"])
    assert result.exit_code == 4, result.stderr
    assert "error[load-failed]" in result.stderr and "shape" in result.stderr


def test_every_command_refuses_through_the_worker(hostile, tmp_path):
    for args in (("check", hostile["lambda.keras"]), ("dump", hostile["lambda.keras"], "-o", tmp_path / "d")):
        result = run(*args)
        assert result.exit_code == 5, (args, result.stderr)
        # check reports a model it cannot inspect in its report (stdout); the others on stderr
        assert "lambda-bytecode" in (result.stdout if args[0] == "check" else result.stderr)
    assert not (tmp_path / "d").exists()
    # weights never deserializes, so a Lambda is no danger to it; HDF5 tricks still are
    assert run("weights", hostile["lambda.keras"]).exit_code == 0
    ext = run("weights", hostile["h5_external.keras"])
    assert ext.exit_code == 5 and "hdf5-external-storage" in ext.stderr


def test_savedmodel_directory_gets_a_diagnosis(keras, tmp_path):
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            return x * 2.0

    tf.saved_model.save(Doubler(), str(tmp_path / "sm"))
    result = run("summary", tmp_path / "sm")
    assert result.exit_code == 3 and "error[savedmodel]" in result.stderr
    assert "model.save('model.keras')" in result.stderr


def _custom_class_and_lambda(hostile, tmp_path):
    """``lambda.keras`` (bytecode in ``model/encoder/evil``) whose later ``head`` layer is
    a custom class, registered as ``Custom>Block``: the file needs both options."""
    from tests.hostile import with_config_edited

    def custom_head(config):
        (head,) = [layer for layer in config["config"]["layers"] if layer["config"].get("name") == "head"]
        head.update(module=None, class_name="Block", registered_name="Custom>Block")

    path = with_config_edited(hostile["lambda.keras"], tmp_path / "custom_and_lambda.keras", custom_head)
    source = tmp_path / "blocks.py"
    source.write_text(
        "import keras\n\n@keras.saving.register_keras_serializable(package='Custom')\n"
        "class Block(keras.layers.Dense):\n    pass\n"
    )
    return path, source


def test_a_file_needing_custom_objects_and_trust_says_both_in_one_line(hostile, home, tmp_path):
    path, source = _custom_class_and_lambda(hostile, tmp_path)
    both = run("summary", path)
    assert both.exit_code == 5, both.stderr
    (line,) = both.stderr.strip().splitlines()
    assert LINE.match(line) and line.startswith("kerinspect: error[lambda-bytecode]: ")
    assert "layer 'model/encoder/evil'" in line and "custom class 'Custom>Block', which is not loaded" in line
    assert "Hint: this file needs both --custom-objects FILE.py that defines 'Custom>Block'" in line
    assert "--trust-model" in line
    # with the class given, only the code is left to decide on
    code_only = run("summary", path, "--custom-objects", source)
    assert code_only.exit_code == 5, code_only.stderr
    (line,) = code_only.stderr.strip().splitlines()
    assert "error[lambda-bytecode]" in line and "Custom>Block" not in line and "--custom-objects" not in line
    assert "Hint: only if you trust this file: --trust-model" in line
    # trusting the file, only the class is missing
    class_only = run("summary", path, "--trust-model")
    assert class_only.exit_code == 4, class_only.stderr
    (line,) = class_only.stderr.strip().splitlines()[-1:]
    assert "error[unknown-class]" in line and "Custom>Block" in line and "--custom-objects" in line
    assert not hostile.canary.exists()
    assert list(home.iterdir()) == []
