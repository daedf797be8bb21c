"""The typed run spec (kerinspect.spec) and the worker request (kerinspect.sandbox.protocol).

No TensorFlow: the specs are stdlib-only, and the CLI tests stub the API out.
"""

from __future__ import annotations

import dataclasses
import json

import click
import pytest
from click.testing import CliRunner

from kerinspect import spec as sp
from kerinspect.cli import SpecOption, cli
from kerinspect.config import CheckConfig
from kerinspect.errors import ExitCode, KerinspectError, UsageError
from kerinspect.sandbox.protocol import InputsRef, ModelRef, Request, parse_request
from kerinspect.spec import LoadOptions, RunSpec, SpecError, Thresholds

MODEL = ModelRef("/abs/model.keras", "keras", 1234, shown_path="model.keras")

#: One non-default instance of every spec (each field away from its default where it can be).
EXAMPLES = [
    Thresholds(max_abs=5.0, max_dead_fraction=0.25),
    RunSpec(),
    RunSpec(samples=7, batch_size=3, seed=9, dim=4, shapes=("x=16,8", "4"), layers=("enc/*",),
            thresholds=Thresholds(max_abs=2.5)),
    RunSpec(shapes={"tokens": (12,), "image": (8, 8, 3)}),
    LoadOptions(isolate=False, timeout=5.5, max_memory=1 << 30, trust_model=True,
                custom_objects="/abs/custom.py", max_params=10),
    MODEL,
    InputsRef("arrays", "/tmp/x.npz", "array", by_name=True),
    Request("inspect", MODEL),
    Request("dump", MODEL, InputsRef("file", "/abs/b.npz", "b.npz"), RunSpec(samples=2),
            LoadOptions(isolate=True, timeout=0.0), write={"stage": "/s", "layers": ["a"], "max_bytes": 9}),
    Request("weights", MODEL, run=RunSpec(thresholds=Thresholds(max_abs=1e5))),
]


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__name__)
def test_every_spec_round_trips_through_json(value):
    text = json.dumps(value.to_json(), allow_nan=False)
    back = type(value).from_json(json.loads(text))
    assert back == value and type(back) is type(value)
    assert back.to_json() == value.to_json()


def test_json_keeps_the_report_layout_of_thresholds():
    assert Thresholds().to_dict() == {"max_abs": 1e4, "max_dead_fraction": 0.5,
                                      "min_rms_ratio": 1e-6, "max_saturated_fraction": 0.9,
                                      "min_sample_spread": 1e-6,
                                      "uniform_attention_entropy": 0.95, "collapsed_attention_weight": 0.95}
    assert Thresholds.from_dict({"max_abs": 3, "unknown": 1}) == Thresholds(max_abs=3.0)  # reports: lenient


def test_values_are_coerced_to_the_declared_types():
    run = RunSpec(shapes={"x": [16, 8]}, layers=["a", "b"], thresholds={"max_abs": 7})
    assert run.shapes == {"x": (16, 8)} and run.layers == ("a", "b")
    assert run.thresholds == Thresholds(max_abs=7.0) and isinstance(run.thresholds.max_abs, float)
    assert RunSpec(shapes=["x=1"]).shapes == ("x=1",)


def test_a_new_field_needs_no_serializer_or_validator():
    @dataclasses.dataclass(frozen=True)
    class WithHeads(RunSpec):
        max_heads: int = dataclasses.field(default=8, metadata=sp.at_least(1))

    value = WithHeads(max_heads=3, batch_size=4)
    assert WithHeads.from_json(json.loads(json.dumps(value.to_json()))) == value
    with pytest.raises(SpecError, match=r"^max_heads must be at least 1\. Received: max_heads=0$"):
        WithHeads(max_heads=0)


@pytest.mark.parametrize("make, parameter, words", [
    (lambda: RunSpec(batch_size=0), "batch_size", "batch_size must be at least 1. Received: batch_size=0"),
    (lambda: RunSpec(samples=0), "samples", "samples must be at least 1"),
    (lambda: RunSpec(seed=-1), "seed", "seed must be at least 0"),
    (lambda: RunSpec(dim=2.5), "dim", "dim must be an integer"),
    (lambda: RunSpec(samples=True), "samples", "samples must be an integer or null"),
    (lambda: RunSpec(shapes=[1, 2]), "shapes", "shapes must be a list of strings or a mapping"),
    (lambda: RunSpec(layers="enc/*"), "layers", "layers must be a list of strings"),
    (lambda: Thresholds(max_abs=0), "max_abs", "max_abs must be greater than 0"),
    (lambda: Thresholds(max_abs=float("nan")), "max_abs", "max_abs must be greater than 0"),
    (lambda: Thresholds(max_dead_fraction=1.5), "max_dead_fraction", "must be from 0 to 1"),
    (lambda: RunSpec(thresholds={"max_dead_fraction": -1}), "max_dead_fraction", "from 0 to 1"),
    (lambda: LoadOptions(timeout=-1), "timeout", "timeout must be at least 0"),
    (lambda: LoadOptions(timeout="10"), "timeout", "timeout must be a number"),
    (lambda: LoadOptions(max_params=0), "max_params", "max_params must be at least 1"),
    (lambda: LoadOptions(trust_model=1), "trust_model", "trust_model must be true or false"),
    (lambda: RunSpec.from_json({"batch_sise": 3}), "batch_sise", "RunSpec has no field 'batch_sise'"),
    (lambda: ModelRef.from_json({"path": "/m"}), "format", "ModelRef needs the field 'format'"),
    (lambda: ModelRef("/m", "pickle", 1), "format", "format must be one of 'keras', 'h5'"),
])
def test_validation_names_the_parameter(make, parameter, words):
    with pytest.raises(SpecError) as e:
        make()
    assert words in e.value.message
    assert e.value.parameter == parameter
    assert isinstance(e.value, UsageError) and e.value.exit_code == ExitCode.USAGE
    assert "--" not in e.value.message  # the library names parameters, not flags


@pytest.mark.parametrize("data, words", [
    ([1, 2], "Request must be a JSON object"),
    ({"command": "inspect"}, "needs the field 'model'"),
    ({"command": "rm", "model": MODEL.to_json()}, "command must be one of"),
    ({"command": "inspect", "model": MODEL.to_json(), "samples": 2}, "no field 'samples'"),
    ({"command": "inspect", "model": MODEL.to_json(), "run": {"batch_size": 0}}, "batch_size must be at least 1"),
    ({"command": "inspect", "model": MODEL.to_json(), "run": {"shapes": "x=1"}}, "shapes must be"),
    ({"command": "inspect", "model": {**MODEL.to_json(), "size": "big"}}, "size must be an integer"),
    ({"command": "inspect", "model": MODEL.to_json(), "inputs": {"kind": "url", "path": "p", "source": "s"}},
     "kind must be one of"),
])
def test_a_bad_request_is_a_protocol_error(data, words):
    with pytest.raises(KerinspectError) as e:
        parse_request(data)
    assert e.value.rule == "protocol" and e.value.exit_code == ExitCode.INTERNAL
    assert words in e.value.message


def test_the_worker_gets_a_typed_request():
    parsed = parse_request(json.loads(json.dumps(EXAMPLES[-2].to_json())))
    assert parsed.run.samples == 2 and parsed.write == {"stage": "/s", "layers": ["a"], "max_bytes": 9}
    assert parsed.inputs is not None and parsed.inputs.kind == "file"


# -- the CLI reads its defaults from the spec --------------------------------------------

#: Where each option's default is defined (a field default of a spec, or a constant).
def _spec_default(name: str):
    for cls in (RunSpec, Thresholds, LoadOptions):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name in fields:
            f = fields[name]
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return {
        "tolerance": CheckConfig().tolerance,
        "min_separability": CheckConfig().min_separability,
        "max_bytes": sp.DEFAULT_MAX_BYTES,
    }[name]


def _spec_options():
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, SpecOption):
                yield command.name, param


def test_cli_option_defaults_are_the_spec_constants():
    seen = set()
    for command, param in _spec_options():
        seen.add(param.name)
        assert param.default is None, (command, param.name)  # so that "given" is "not None"
        assert param.spec_default == _spec_default(param.name), (command, param.name)
    assert seen >= {"batch_size", "seed", "dim", "max_abs", "max_dead_fraction", "timeout",
                    "max_params", "tolerance", "max_bytes"}
    from kerinspect.dump import parse_size

    assert parse_size(sp.DEFAULT_MAX_BYTES_TEXT) == sp.DEFAULT_MAX_BYTES  # what --help shows


def test_no_cli_option_has_a_literal_default_for_a_spec_field():
    fields = {f.name for cls in (RunSpec, Thresholds, LoadOptions) for f in dataclasses.fields(cls)}
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.name in fields and not param.is_flag:
                unset = type(param.default).__name__ == "Sentinel"  # click >= 8.3: no default at all
                assert unset or param.default in (None, ()), (command.name, param.name, param.default)


def test_help_shows_the_spec_defaults():
    out = CliRunner().invoke(cli, ["summary", "--help"], terminal_width=200).output
    assert "[default: 32; x>=1]" in out and "[default: 10000.0; x>0]" in out and "[default: 600; x>=0]" in out


@pytest.mark.parametrize("command, flag, shown", [
    ("summary", "--min-rms-ratio", "[default: 1e-06; 0<=x<=1]"),
    ("summary", "--min-sample-spread", "[default: 1e-06; 0<=x<=1]"),
    ("gradients", "--vanishing-gradient", "[default: 0.001; x>0]"),
    ("gradients", "--exploding-gradient", "[default: 1000; x>0]"),
    ("weights", "--min-update-ratio", "[default: 1e-06; x>0]"),
    ("weights", "--max-update-ratio", "[default: 0.1; x>0]"),
    ("weights", "--max-abs", "[default: 10000.0; x>0]"),
    ("check", "--tolerance", "[default: 0.1; x>=0]"),
    ("check", "--min-separability", "[default: 0.5; 0<=x<=1]"),
    ("diff", "--tolerance", "[default: 0.01; x>=0]"),
    ("attention", "--collapsed-attention-weight", "[default: 0.95; 0<=x<=1]"),
])
def test_float_thresholds_show_their_default_as_written(command, flag, shown):
    """The float options (cli.options.spec_float_option) show the spec's default as one
    writes it (1e-06, 1000), and default to None for Click (given = not None)."""
    cmd = cli.commands[command]
    (param,) = [p for p in cmd.params if flag in p.opts]
    assert isinstance(param, SpecOption) and param.default is None
    decl, text = param.get_help_record(click.Context(cmd, info_name=command))
    assert decl.startswith(flag) and text.endswith(shown), (decl, text)


class _Captured(KerinspectError):
    exit_code = ExitCode.INFERENCE


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Stub kerinspect.api.inspect_model: record what the CLI asks for, then fail (exit 6).
    In a folder holding a real model as ``m.keras``: ``check`` pre-flights every model file
    before any worker (a missing one is its own error, exit 3)."""
    import shutil

    from tests.conftest import ROOT

    shutil.copy(ROOT / "sample_models" / "classifier.keras", tmp_path / "m.keras")
    monkeypatch.chdir(tmp_path)
    calls: list[dict] = []

    def fake(model, inputs=None, *, spec=None, progress=None, load=None, **options):
        calls.append({"model": model, "inputs": inputs, "spec": spec, "load": load, "options": options})
        raise _Captured("stub", rule="stub")

    monkeypatch.setattr("kerinspect.api.inspect_model", fake)
    return calls


def test_summary_without_options_runs_the_spec_defaults(captured):
    r = CliRunner().invoke(cli, ["summary", "m.keras"])
    assert r.exit_code == ExitCode.INFERENCE, r.output
    (call,) = captured
    assert call["spec"] == RunSpec() and call["load"] == LoadOptions() and call["options"] == {}


def test_summary_options_reach_the_spec(captured):
    args = ["summary", "m.keras", "-n", "5", "-b", "2", "--seed", "3", "--dim", "4", "--shape", "x=1,2",
            "--max-abs", "9", "--max-dead-fraction", "0.2", "--timeout", "7", "--max-params", "11"]
    CliRunner().invoke(cli, args)
    (call,) = captured
    assert call["spec"] == RunSpec(samples=5, batch_size=2, seed=3, dim=4, shapes=("x=1,2",),
                                   thresholds=Thresholds(9.0, 0.2))
    assert (call["load"].timeout, call["load"].max_params) == (7.0, 11)


def test_the_cli_names_the_flag_of_a_bad_parameter(monkeypatch):
    def fake(*args, **kwargs):
        RunSpec(batch_size=0)

    monkeypatch.setattr("kerinspect.api.inspect_model", fake)
    r = CliRunner().invoke(cli, ["summary", "m.keras"])
    assert r.exit_code == ExitCode.USAGE
    assert "error[usage]: --batch-size must be at least 1. Received: --batch-size=0" in r.stderr
    assert "batch_size" not in r.stderr


# -- check: defaults < configuration file < command line ------------------------------


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("seed = 3\nbatch_size = 7\nmax_abs = 5.0\ntolerance = 0.5\n")
    return str(path)


def _check(captured, *args):
    r = CliRunner().invoke(cli, ["check", "m.keras", *args])
    assert r.exit_code == ExitCode.INFERENCE, r.output
    (call,) = captured
    return call["spec"], r


def test_check_uses_the_config_file_when_a_flag_is_absent(captured, config):
    spec, r = _check(captured, "--config", config, "--format", "json")
    assert (spec.seed, spec.batch_size, spec.dim, spec.thresholds.max_abs) == (3, 7, sp.DEFAULT_DIM, 5.0)
    settings = json.loads(r.stdout)["models"][0]["settings"]
    assert settings["tolerance"] == 0.5 and settings["max_dead_fraction"] == sp.DEFAULT_MAX_DEAD_FRACTION


def test_check_flags_win_even_when_equal_to_the_default(captured, config):
    spec, r = _check(captured, "--config", config, "--seed", "0", "--batch-size", "32", "--max-abs", "10000",
                     "--tolerance", "0.1", "--format", "json")
    assert (spec.seed, spec.batch_size, spec.thresholds.max_abs) == (0, 32, 1e4)
    assert json.loads(r.stdout)["models"][0]["settings"]["tolerance"] == 0.1


def test_check_without_config_runs_the_defaults(captured):
    spec, _ = _check(captured, "--no-config")
    assert spec == RunSpec()


def test_the_parsed_spec_reaches_the_replay_whole(keras, monkeypatch):
    """A run option needs a field in spec.py, a flag in cli/ and the code that reads it:
    the spec the worker parsed reaches the replay (and the collector's caller) whole."""
    from kerinspect import api
    from kerinspect.engine import trace
    from kerinspect.spec import LoadOptions, RunSpec
    from tests.conftest import SAMPLES

    seen = []
    real_init = trace.Replayer.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen.append(self.run)

    monkeypatch.setattr(trace.Replayer, "__init__", spy)
    run = RunSpec(samples=3, seed=7, depth=1)
    api.inspect_model(str(SAMPLES / "cnn.keras"), spec=run, load=LoadOptions(isolate=False))
    assert seen and seen[-1] == run


def test_the_cli_names_flags_from_the_references_not_the_text():
    """The CLI shows a referenced parameter as its option's longest flag (found by the
    option's name, or by its flag where the value has another name: ``input`` is
    ``--input``, stored as ``input_file``); text that merely looks like a parameter
    stays as it is."""
    from kerinspect.cli import cli
    from kerinspect.errors import UsageError, msg

    e = UsageError(msg("{sample}={value} is out of range: the run had 32 samples.", value=99))
    assert e.message == "sample=99 is out of range: the run had 32 samples."
    assert e.one_line(cli.flag) == "--sample=99 is out of range: the run had 32 samples."
    e = UsageError(msg("Cannot read it. Received: {input}=x.npy"), hint=msg("lower {shapes}"))
    assert e.one_line(cli.flag) == "Cannot read it. Received: --input=x.npy Hint: lower --shape"
    untouched = UsageError("batch_size must be at least 1.")  # plain text: no reference
    assert untouched.one_line(cli.flag) == "batch_size must be at least 1."
