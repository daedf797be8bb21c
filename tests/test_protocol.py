"""The parent checks every message from the worker (which runs model code). No TF."""

from __future__ import annotations

import json

import pytest

from kerinspect.errors import ChildCrashError, ExitCode, escape_text
from kerinspect.sandbox.runner import _error_from, _parse_message


def line(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("msg", [
    {"type": "phase", "phase": "load", "network_isolated": True},
    {"type": "progress", "done": 3, "total": 9},
    {"type": "result", "result": {"report": {}}},
    {"type": "error", "exit_code": 5, "rule": "lambda-bytecode", "message": "no"},
    {"type": "error", "exit_code": 2, "rule": "usage", "message": [{"param": "samples"}, " is too large"],
     "hint": ["lower ", {"param": "samples"}]},
    {"type": "error", "exit_code": 8, "message": [], "hint": None},
])
def test_well_formed_messages_pass(msg):
    assert _parse_message(line(msg)) == msg


@pytest.mark.parametrize("raw", [
    b"not json",
    b"[1, 2]",
    line({"type": "surprise"}),
    line({"type": "progress", "done": "3", "total": 9}),
    line({"type": "progress", "done": True, "total": 9}),
    line({"type": "result", "result": []}),
    line({"type": "error", "exit_code": "5", "message": "x"}),
    line({"type": "error", "exit_code": 5, "message": "x", "rule": ["a"]}),
    # an error's message and hint: text, or segments of text and {"param": a known parameter}
    line({"type": "error", "exit_code": 5}),
    line({"type": "error", "exit_code": 5, "message": None}),
    line({"type": "error", "exit_code": 5, "message": {"param": "samples"}}),
    line({"type": "error", "exit_code": 5, "message": ["x", 3]}),
    line({"type": "error", "exit_code": 5, "message": [["samples"]]}),
    line({"type": "error", "exit_code": 5, "message": [{"param": "rm -rf /"}]}),
    line({"type": "error", "exit_code": 5, "message": [{"param": "\x1b]2;owned\x07"}]}),
    line({"type": "error", "exit_code": 5, "message": [{"param": ["samples"]}]}),
    line({"type": "error", "exit_code": 5, "message": [{"param": "samples", "flag": "--rm"}]}),
    line({"type": "error", "exit_code": 5, "message": ["x"] * 201}),
    line({"type": "error", "exit_code": 5, "message": "x", "hint": [{"param": "nope"}]}),
    line({"type": "error", "exit_code": 5, "message": "x", "hint": 7}),
    b"[" * 100000 + b"]" * 100000,
])
def test_malformed_messages_are_a_protocol_crash(raw):
    with pytest.raises(ChildCrashError) as e:
        _parse_message(raw)
    assert e.value.exit_code == ExitCode.CRASHED and e.value.rule == "protocol"


def test_worker_errors_keep_class_and_code_but_unknown_codes_are_internal():
    err = _error_from({"type": "error", "exit_code": 5, "rule": "x", "message": "m"})
    assert err.exit_code == ExitCode.REFUSED
    err = _error_from({"type": "error", "exit_code": 0, "rule": "x", "message": "m"})
    assert err.exit_code == ExitCode.INTERNAL  # a worker cannot report success as an error


def test_worker_errors_keep_their_parameter_references():
    err = _error_from({"type": "error", "exit_code": 2, "rule": "usage",
                       "message": [{"param": "samples"}, " is more than the 4 rows of x.npy"],
                       "hint": ["lower ", {"param": "samples"}, " or give more rows"]})
    assert err.message == "samples is more than the 4 rows of x.npy" and err.parameter == "samples"
    assert err.one_line(lambda p: "--" + p) == "--samples is more than the 4 rows of x.npy Hint: lower --samples or give more rows"


def test_a_worker_message_is_escaped_when_printed_whatever_its_segments():
    err = _error_from({"type": "error", "exit_code": 4, "rule": "load",
                       "message": ["bad \x1b[2J::error::x ", {"param": "input"}, "\n" + "y" * 3000]})
    line = err.one_line(lambda p: "--" + p)
    assert "\x1b" not in line and "\n" not in line and "::" not in line and "--input" in line
    assert len(line) == 2000  # MAX_LINE_CHARS, as for a plain message


def test_escape_text_defuses_every_workflow_form():
    out = escape_text("a::b ##[error] \u202e \ud800 \x9b")
    assert "::" not in out and "##[" not in out
    assert out == "a:\\x3ab #\\x23[error] \\u202e \\ud800 \\x9b"
