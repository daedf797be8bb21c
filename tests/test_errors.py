"""Errors reference parameters as data: the library names them (``batch_size``), the
CLI shows their flags (``--batch-size``); no message text is rewritten to get there."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import kerinspect
from kerinspect.cli import cli
from kerinspect.errors import ExitCode, KerinspectError, Message, Param, UsageError, msg
from kerinspect.spec import PARAMETERS, LoadOptions, SpecError, field_names
from tests.conftest import SAMPLES


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- the template -------------------------------------------------------------------


def test_a_template_keeps_parameters_and_formats_values_into_text():
    m = msg("{batch_size} must be at least 1. Received: {batch_size}={value}", value=0)
    assert m.segments == (Param("batch_size"), " must be at least 1. Received: ", Param("batch_size"), "=0")
    assert str(m) == "batch_size must be at least 1. Received: batch_size=0"
    assert m.render(lambda p: "--" + p.replace("_", "-")) == "--batch-size must be at least 1. Received: --batch-size=0"
    assert m.parameters == ("batch_size", "batch_size")
    assert str(msg("{n:,} of {name!r} {{literal}}", n=12345, name="x")) == "12,345 of 'x' {literal}"


def test_untrusted_text_in_a_value_is_never_read_as_a_template():
    m = msg("No layer {name} in the model.", name="{batch_size} {0} {__class__}")
    assert m.segments == ("No layer {batch_size} {0} {__class__} in the model.",)
    assert m.render(lambda p: "FLAG") == "No layer {batch_size} {0} {__class__} in the model."
    joined = "text {batch_size} " + msg("then {samples}")  # plain strings joined are literal too
    assert joined.segments == ("text {batch_size} then ", Param("samples"))


@pytest.mark.parametrize("template, values", [
    ("{} must be positive", {}),                     # positional
    ("{0} must be positive", {}),
    ("{thresholds.max_abs} is too low", {}),         # attribute access
    ("{samples!r} is bad", {}),                      # a parameter takes no conversion
    ("{samples:>8} is bad", {}),                     # nor a format
    ("nothing to say", {"value": 1}),                # a value the template does not use
])
def test_a_bad_template_is_a_programming_error_at_construction(template, values):
    with pytest.raises(ValueError):
        msg(template, **values)


def test_values_may_be_parameters_and_messages():
    name = Param("max_bytes")
    m = msg("{what} is above {limit}. {more}", what="The dump", limit=name, more=msg("Lower {samples}."))
    assert m.parameters == ("max_bytes", "samples")
    assert str(m) == "The dump is above max_bytes. Lower samples."
    for bad in ("", "0", "a.b", "x[0]", "evil\x1b[31m", "Batch"):
        with pytest.raises(ValueError):
            Param(bad)


def test_every_spec_field_is_a_parameter():
    from kerinspect.spec import RunSpec, Thresholds

    for cls in (RunSpec, Thresholds, LoadOptions):
        assert set(field_names(cls)) <= PARAMETERS


def test_json_round_trip_and_its_checks():
    m = msg("raise {max_memory}, or lower {batch_size}")
    assert m.to_json() == ["raise ", {"param": "max_memory"}, ", or lower ", {"param": "batch_size"}]
    assert Message.from_json(m.to_json()) == m
    assert Message.from_json("plain {batch_size}") == Message(["plain {batch_size}"])
    for bad in (None, 3, {"param": "seed"}, [1], [{"param": "evil\x1b[31m"}], [{"param": "seed", "x": 1}],
                [["seed"]], ["x"] * 201):
        with pytest.raises(ValueError):
            Message.from_json(bad, PARAMETERS)
    with pytest.raises(ValueError):  # a name the parent does not know: the worker sent a bad message
        Message.from_json([{"param": "not_a_parameter"}], PARAMETERS)
    assert Message.from_json([{"param": "not_a_parameter"}]).parameters == ("not_a_parameter",)


def test_every_template_in_the_source_references_known_parameters():
    """Every msg("...") template in kerinspect/: each field that is not given as a value
    names a parameter of spec.PARAMETERS (a typo such as {batch_sise} fails here)."""
    import ast
    import string

    from tests.conftest import ROOT

    seen = 0
    for path in sorted((ROOT / "kerinspect").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "msg"):
                continue
            template = node.args[0]
            if isinstance(template, ast.JoinedStr) or not isinstance(template, ast.Constant):
                raise AssertionError(f"{path}:{node.lineno}: a msg() template must be a literal string")
            values = {k.arg for k in node.keywords}
            fields = {f for _, f, _, _ in string.Formatter().parse(template.value) if f is not None}
            unknown = fields - values - PARAMETERS
            assert not unknown, f"{path.relative_to(ROOT)}:{node.lineno}: {sorted(unknown)} are no parameters"
            seen += 1
    assert seen > 40  # the scan found the templates


# -- the error ------------------------------------------------------------------------


def test_an_error_keeps_its_references_and_reads_as_text():
    e = UsageError(msg("{out} must name a directory"), hint=msg("pass {overwrite}"))
    assert e.message == "out must name a directory" and str(e) == e.message
    assert e.hint == "pass overwrite" and e.parameter == "out"
    assert e.one_line() == "out must name a directory Hint: pass overwrite"
    assert e.one_line(lambda p: f"<{p}>") == "<out> must name a directory Hint: pass <overwrite>"
    plain = KerinspectError("nothing to point at")
    assert plain.parameter is None and plain.hint is None and plain.one_line(lambda p: 1 / 0) == plain.message


def test_assigning_the_same_text_keeps_the_references_other_text_replaces_them():
    e = UsageError(msg("{samples} is too large"))
    e.message = e.message  # what a caller that rewrites some other text does when nothing matched
    assert e.message_parts.parameters == ("samples",)
    e.message = "samples is too large (2)"
    assert e.message_parts.parameters == () and e.message == "samples is too large (2)"
    e.hint = "a plain hint"
    assert e.hint_parts == Message(["a plain hint"])


def test_spec_errors_reference_their_field_when_it_is_a_parameter():
    with pytest.raises(SpecError) as e:
        LoadOptions(max_params=0)
    assert e.value.message == "max_params must be at least 1. Received: max_params=0"
    assert e.value.message_parts.parameters == ("max_params", "max_params") and e.value.parameter == "max_params"
    from kerinspect.sandbox.protocol import ModelRef

    with pytest.raises(SpecError) as e:  # a field of the worker's request: no parameter of the user's
        ModelRef("/m", "pickle", 1)
    assert e.value.message_parts.parameters == () and e.value.parameter == "format"


# -- the library names parameters, the CLI flags ----------------------------------------


def test_the_library_names_the_parameter_of_a_bad_value():
    with pytest.raises(SpecError) as e:
        kerinspect.inspect_model(str(SAMPLES / "cnn.keras"), batch_size=0)
    assert e.value.message == "batch_size must be at least 1. Received: batch_size=0"
    assert "--" not in e.value.message and e.value.parameter == "batch_size"


def test_a_bad_out_is_named_by_the_library_and_flagged_by_the_cli(tmp_path):
    with pytest.raises(UsageError) as e:
        kerinspect.dump_activations(str(SAMPLES / "cnn.keras"), "")
    assert e.value.message == "out must name a directory"
    r = run("dump", SAMPLES / "cnn.keras", "--out", "")
    assert r.exit_code == ExitCode.USAGE
    assert r.stderr == "kerinspect: error[usage]: --out must name a directory\n"


def test_a_refused_output_directory_names_out_and_overwrite_each_way(tmp_path):
    """A directory named like a template field is shown as it is: the path is a value."""
    out = tmp_path / "{max_bytes}"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(KerinspectError) as e:
        kerinspect.dump_activations(str(SAMPLES / "cnn.keras"), str(out))
    assert f"Received: out={out}" in e.value.message and "pass overwrite to replace" in e.value.hint
    assert "--" not in e.value.one_line()
    r = run("dump", SAMPLES / "cnn.keras", "--out", out)
    assert r.exit_code == ExitCode.OUTPUT
    (line,) = r.stderr.splitlines()
    assert f"Received: --out={out} Hint: choose a new directory, or pass --overwrite to replace" in line
    assert "{max_bytes}" in line and "--max-bytes" not in line and "out=" not in line.replace("--out=", "")


# -- errors raised in the worker ---------------------------------------------------------


@pytest.mark.isolated
def test_a_worker_error_referencing_a_parameter_shows_the_flag_or_the_name():
    """The static scan (in the worker) refuses a model above max_params; its hint
    crosses the process boundary as a reference, not as text."""
    with pytest.raises(KerinspectError) as e:
        kerinspect.inspect_model(str(SAMPLES / "cnn.keras"), load=LoadOptions(max_params=10))
    assert e.value.rule == "too-many-params" and e.value.exit_code == ExitCode.REFUSED
    assert e.value.hint == "raise max_params if this size is expected"
    assert e.value.hint_parts.parameters == ("max_params",)
    r = run("summary", SAMPLES / "cnn.keras", "--max-params", "10")
    assert r.exit_code == ExitCode.REFUSED
    assert r.stderr.rstrip().endswith("Hint: raise --max-params if this size is expected")
    assert "max_params" not in r.stderr
    # kerinspect check records a model's error as text: with the flag, too
    r = run("check", SAMPLES / "cnn.keras", "--max-params", "10", "--no-config", "--format", "json")
    (result,) = json.loads(r.stdout)["models"]
    assert result["error"]["message"].endswith("Hint: raise --max-params if this size is expected")


@pytest.mark.isolated
def test_an_input_file_the_worker_cannot_read_names_input_each_way(keras, tmp_path):
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"not an array at all")
    with pytest.raises(KerinspectError) as e:
        kerinspect.inspect_model(str(SAMPLES / "dead_relu.keras"), str(bad))
    assert e.value.rule == "input-unreadable" and f"Received: input={bad}" in e.value.message
    r = run("summary", SAMPLES / "dead_relu.keras", "--input", bad)
    assert r.exit_code == ExitCode.NO_INPUT
    assert f"Received: --input={bad}" in r.stderr and "input=" not in r.stderr.replace("--input=", "")


def test_worker_segments_are_rebuilt_and_untrusted_braces_stay_literal():
    from kerinspect.sandbox.runner import _error_from, _parse_message

    line = json.dumps({"type": "error", "exit_code": 2, "rule": "usage",
                       "message": ["layer {batch_size} wants a smaller ", {"param": "batch_size"}],
                       "hint": ["lower ", {"param": "batch_size"}]}).encode()
    err = _error_from(_parse_message(line))
    assert isinstance(err, UsageError)
    assert (err.message, err.hint) == ("layer {batch_size} wants a smaller batch_size", "lower batch_size")
    assert err.one_line(cli.flag) == "layer {batch_size} wants a smaller --batch-size Hint: lower --batch-size"
