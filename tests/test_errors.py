"""Errors reference parameters as data: the library names them (``batch_size``), the
CLI shows their flags (``--batch-size``); no message text is rewritten to get there."""

from __future__ import annotations

import pytest

import kerinspect
from kerinspect.errors import KerinspectError, Message, Param, UsageError, msg
from kerinspect.spec import PARAMETERS, LoadOptions, SpecError, field_names
from tests.conftest import SAMPLES

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
    ("{batch_sise} must be positive", {}),          # a typo: not a parameter
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
    with pytest.raises(ValueError):
        Param("not_a_parameter")


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
            Message.from_json(bad)


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
