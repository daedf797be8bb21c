"""``kerinspect check``: the CI gate. Rules and verdicts, first fault, ignore patterns,
configuration files, JSON / JUnit / GitHub-annotation output, baselines, exit codes.

The models here are built for this file only (the summary tests never saw them):
NaN that starts at a raw op with clean weights, NaN that starts inside a nested
model, dead and exploding layers, integer-only tensors, a NaN weight, a layer with
a hostile name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from kerinspect.errors import ExitCode, UsageError, escape_text, worst_exit_code
from kerinspect.report import (
    InputRecord,
    LayerRecord,
    ModelInfo,
    ModelReport,
    TensorRecord,
    TensorStats,
    WeightRecord,
)
from tests.conftest import ROOT, reusing_runs

HOSTILE = "ok\n::error title=pwned::x\x1b[2J%0A,a:b ##[error]forged"
SAMPLES = ("--samples", "8")


def run(*args, env=None):
    env = {"GITHUB_ACTIONS": None, **(env or {})}
    return CliRunner().invoke(cli, ["check", *(str(a) for a in args)], env=env)


def run_json(*args, code=None, env=None):
    r = run(*args, "--format", "json", env=env)
    if code is not None:
        assert r.exit_code == code, (r.exit_code, r.stdout[-2000:], r.stderr)
    return json.loads(r.stdout), r


def rules_of(model_json):
    return {r["rule"]: r for r in model_json["rules"]}


@pytest.fixture(autouse=True)
def _hermetic_cwd(tmp_path, monkeypatch):
    """No pyproject.toml above the working directory unless a test writes one."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


# -- pure: no TensorFlow --------------------------------------------------------


def _stats(**kw):
    base = dict(count=8, mean=0.0, std=1.0, min=-1.0, max=1.0, abs_max=1.0, zero_fraction=0.0,
                nan_count=0, inf_count=0, dead_fraction=0.0)
    base.update(kw)
    return TensorStats(**base)


def _layer(path, cls="Dense", dtype="float32", container=False, **kw):
    stats = None if kw.pop("no_stats", False) else _stats(**kw)
    out = TensorRecord("output", (8, 4), dtype, stats)
    return LayerRecord(path, path.rsplit("/", 1)[-1], cls, 0, 0, path.count("/"), container, (out,))


def _report(layers, weights=()):
    info = ModelInfo("m", "Functional", None, "in-memory", 0, 0, "3")
    return ModelReport(info, (InputRecord("x", (8, 4), "float32", "synthetic", 0),), tuple(layers), 8, 8,
                       weights=tuple(weights))


def test_counts_are_three_state_and_ignored_is_never_a_pass():
    from kerinspect.checks import run_checks
    from kerinspect.config import CheckConfig

    layers = [_layer("x", "InputLayer"), _layer("ids", "InputLayer", dtype="int32"),
              _layer("a"), _layer("b", nan_count=3, abs_max=None), _layer("skipme", dead_fraction=1.0)]
    res = run_checks(_report(layers), CheckConfig(ignore=("skip*",)))
    nan, dead = res.rule("nan"), res.rule("dead")
    assert (nan.counts.failed, nan.counts.passed, nan.counts.not_checked, nan.counts.ignored) == (1, 2, 2, 1)
    assert nan.counts.total == len(layers) and nan.verdict == "failed"
    # inputs are not checked for dead units; the ignored dead layer does not fail
    assert (dead.counts.failed, dead.counts.passed, dead.counts.not_checked) == (0, 2, 3)
    assert res.rule("exploding").counts.not_checked == 3  # int, no finite values, ignored
    assert res.ignored_layers == ("skipme",) and res.status == "failed"
    assert [f.layer for f in nan.failures] == ["b"]


def test_nothing_checked_fails_coverage():
    from kerinspect.checks import run_checks
    from kerinspect.config import CheckConfig

    res = run_checks(_report([_layer("a"), _layer("b")]), CheckConfig(ignore=("*",)))
    assert res.rule("nan").verdict == "not_checked"
    assert res.rule("coverage").verdict == "failed" and res.status == "failed"
    ints = run_checks(_report([_layer("i", dtype="int32"), _layer("j", dtype="int64")]))
    assert ints.rule("coverage").failed and ints.rule("nan").counts.not_checked == 2


def test_first_fault_descends_into_nested_models_and_names_bad_weights():
    from kerinspect.checks import run_checks

    layers = [_layer("x", "InputLayer"), _layer("stem"),
              _layer("block", "Functional", container=True, nan_count=2),
              _layer("block/clean"), _layer("block/inner", nan_count=2), _layer("head", nan_count=8)]
    weights = [WeightRecord("block/inner", "block/inner/bias", (4,), "float32", _stats(count=4, nan_count=1)),
               WeightRecord("stem", "stem/bias", (4,), "float32", _stats(count=4))]
    res = run_checks(_report(layers, weights))
    assert res.first_fault.layer == "block/inner" and res.first_fault.weights == ("block/inner/bias",)
    assert [f.layer for f in res.rule("nan").failures] == ["block", "block/inner", "head"]
    assert [f.tensor for f in res.rule("weight-nan").failures] == ["block/inner/bias"]
    assert res.rule("weight-inf").verdict == "passed"


def test_ignore_patterns_cover_calls_and_nested_layers():
    from kerinspect.checks import matching_pattern

    assert matching_pattern("shared@2", ["shared"]) == "shared"
    assert matching_pattern("enc@1/dense", ["enc"]) == "enc"
    assert matching_pattern("enc/dense", ["enc/d*"]) == "enc/d*"
    assert matching_pattern("encoder_2/dense", ["enc"]) is None
    assert matching_pattern("Dense", ["dense"]) is None  # case-sensitive


def test_drift_tolerance_is_in_baseline_standard_deviations():
    from kerinspect.checks import Verdict, drift

    base = _stats(mean=1.0, std=2.0)
    assert drift(_stats(mean=1.19, std=2.0), base, 0.1)[0] is Verdict.PASSED  # 0.095 std
    verdict, values = drift(_stats(mean=1.21, std=2.0), base, 0.1)
    assert verdict is Verdict.FAILED and values["mean_shift"] == pytest.approx(0.105)
    assert drift(_stats(mean=1.0, std=2.3), base, 0.1)[0] is Verdict.FAILED  # std moved 0.15 std
    # a constant tensor is floored, not divided by zero; rounding noise passes
    const = _stats(mean=5.0, std=0.0)
    assert drift(_stats(mean=5.0 + 1e-9, std=0.0), const, 0.1)[0] is Verdict.PASSED
    assert drift(_stats(mean=5.1, std=0.0), const, 0.1)[0] is Verdict.FAILED
    assert drift(_stats(mean=None, std=None), base, 0.1)[0] is Verdict.FAILED  # finite values vanished
    assert drift(_stats(mean=None, std=None), _stats(mean=None, std=None), 0.1)[0] is Verdict.NOT_CHECKED


def test_exit_code_precedence():
    assert worst_exit_code([]) == 0
    assert worst_exit_code([0, 1, 0]) == 1
    assert worst_exit_code([1, 3, 0]) == 3
    assert worst_exit_code([3, 5, 1]) == 5
    assert worst_exit_code([6, 4]) == 4
    assert worst_exit_code([1, 8, 70]) == 70


def test_escape_text_neutralises_legacy_workflow_commands_and_surrogates():
    out = escape_text("a##[error]b###[x\ud800")
    assert "##[" not in out and out == "a#\\x23[error]b##\\x23[x\\ud800"
    out.encode("utf-8")  # printable


def test_github_escaping():
    from kerinspect._ci import gh_data, gh_property

    assert gh_property("a,b:c%d") == "a%2Cb%3Ac%25d"
    assert gh_data("50% a:b,c") == "50%25 a:b,c"
    assert "\n" not in gh_data("x\ny") and "\x1b" not in gh_property("\x1b[2J")


def test_config_validation(tmp_path):
    from kerinspect.config import load_file

    bad = tmp_path / "k.toml"
    for text, words in [("max_abz = 3", "max_abz"), ("max_dead_fraction = 2", "0 to 1"),
                        ("samples = true", "integer"), ("ignore = [1]", "strings"),
                        ("[[models]]\ninput = 'x.npz'", "path"), ("max_abs = ", "TOML"),
                        ("[[models]]\npath = '*'\ncustom_objects = ['a.py']", "'custom_objects'")]:
        bad.write_text(text)
        with pytest.raises(UsageError) as e:
            load_file(bad)
        assert words in str(e.value), text
    with pytest.raises(UsageError, match="not found"):
        load_file(tmp_path / "absent.toml")


def test_settings_precedence(tmp_path):
    from kerinspect.config import load_file

    cfg = tmp_path / "k.toml"
    cfg.write_text('max_abs = 5.0\nseed = 3\nignore = ["a"]\ncustom_objects = "layers.py"\n'
                   '[[models]]\npath = "models/special*.keras"\nseed = 4\ninput = "data/x.npz"\n'
                   'custom_objects = "models/special.py"\n')
    f = load_file(cfg)
    plain = f.settings_for(str(tmp_path / "models" / "other.keras"))
    special = f.settings_for(str(tmp_path / "models" / "special_1.keras"))
    assert (plain.max_abs, plain.seed, plain.ignore, plain.input) == (5.0, 3, ("a",), None)
    assert special.seed == 4 and special.input == str(tmp_path / "data" / "x.npz")
    assert plain.custom_objects == str(tmp_path / "layers.py")  # relative to the file, like input
    assert special.custom_objects == str(tmp_path / "models" / "special.py")
    over = f.settings_for(str(tmp_path / "models" / "special_1.keras"), {"seed": 9, "ignore": ("b",)})
    assert (over.seed, over.ignore, over.max_abs) == (9, ("b",), 5.0)


def test_pyproject_without_the_table_is_passed_over(tmp_path):
    from kerinspect.config import find_pyproject

    (tmp_path / "pyproject.toml").write_text('[tool.kerinspect.check]\nseed = 1\n')
    sub = tmp_path / "pkg" / "deep"
    sub.mkdir(parents=True)
    (tmp_path / "pkg" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_pyproject(sub) == str(tmp_path / "pyproject.toml")


def _fed(source, *, seed=None, sha=None, path=None, of="file", samples=8, shape=(8, 4)):
    inputs = (InputRecord("x", shape, "float32", source, seed, path=path, sha256=sha,
                          sha256_of=None if sha is None else of),)
    return dataclasses.replace(_report([_layer("a")]), inputs=inputs, samples=samples)


def test_baseline_inputs_are_compared_by_content_and_the_difference_is_named():
    from kerinspect.checks import input_differences

    a, b = "1a2b3c4d" + "0" * 56, "9f8e7d6c" + "0" * 56
    base = _fed("data/a.npz", sha=a, path="/repo/data/a.npz")
    # the same bytes, however the path is written or wherever the copy is: the same inputs
    assert input_differences(_fed("./a.npz", sha=a, path="/repo/data/a.npz"), base) == []
    assert input_differences(_fed("/elsewhere/copy.npz", sha=a, path="/elsewhere/copy.npz"), base) == []
    assert input_differences(_fed("data/b.npz", sha=b, path="/repo/data/b.npz"), base) == [
        "input file differs (baseline: data/a.npz sha256 1a2b3c4d…, now: data/b.npz sha256 9f8e7d6c…)"]
    synthetic = _fed("synthetic", seed=0)
    assert input_differences(_fed("synthetic", seed=3), synthetic) == ["seed differs (baseline 0, now 3)"]
    assert input_differences(_fed("synthetic", seed=0, samples=32, shape=(32, 4)), synthetic) == [
        "samples differ (baseline 8, now 32)"]
    assert input_differences(_fed("synthetic", seed=0, shape=(8, 5)), synthetic) == [
        "input 'x' shape differs (baseline (4,), now (5,))"]
    assert input_differences(synthetic, base) == ["synthetic now, baseline ran on data/a.npz"]
    assert input_differences(base, synthetic) == ["data/a.npz now, baseline ran on synthetic inputs"]
    # a baseline written before hashes: the resolved path, or the path as written
    assert input_differences(_fed("a.npz", sha=a, path="/repo/data/a.npz"), _fed("/repo/data/a.npz")) == []
    assert input_differences(_fed("./data/a.npz", sha=a, path="/repo/data/a.npz"), _fed("data/a.npz")) == []
    assert input_differences(_fed("data/b.npz", sha=b, path="/repo/data/b.npz"), _fed("data/a.npz")) == [
        "input file differs (baseline: data/a.npz, now: data/b.npz sha256 9f8e7d6c…)"]
    # hashes of different kinds (a listing above 1 GiB) are not compared: the paths are
    listing = _fed("big", sha=b, path="/repo/big", of="listing")
    assert input_differences(listing, _fed("big", sha=a, path="/repo/big", of="files")) == []
    assert input_differences(listing, _fed("big", sha=a, path="/repo/big", of="listing")) == [
        "input file differs (baseline: big listing 1a2b3c4d…, now: big listing 9f8e7d6c…)"]
    # old reports read back: the fields absent are unknown
    old = {k: v for k, v in base.inputs[0].to_dict().items() if k not in ("path", "sha256", "sha256_of")}
    assert InputRecord.from_dict(old).sha256 is None and "sha256" not in synthetic.inputs[0].to_dict()


def test_the_parent_sets_input_hashes_whatever_the_worker_claims():
    from kerinspect import api_jobs
    from kerinspect.input_digest import InputDigest

    claimed = _fed("synthetic", seed=0, sha="f" * 64, path="/forged")
    assert api_jobs._with_input_digest(claimed, None).inputs[0] == _fed("synthetic", seed=0).inputs[0]
    got = api_jobs._with_input_digest(_fed("x.npz", sha="f" * 64, path="/forged"),
                                      InputDigest("/repo/x.npz", "a" * 64, "file")).inputs[0]
    assert (got.source, got.path, got.sha256, got.sha256_of) == ("x.npz", "/repo/x.npz", "a" * 64, "file")


def test_input_digest_of_a_file_a_folder_and_a_glob(tmp_path, monkeypatch):
    import hashlib

    from kerinspect import input_digest
    from kerinspect.input_digest import digest_inputs

    one = tmp_path / "one.npz"
    one.write_bytes(b"abc")
    assert digest_inputs("file", str(one)) == input_digest.InputDigest(
        str(one), hashlib.sha256(b"abc").hexdigest(), "file")
    for where in ("a", "b"):
        (tmp_path / where / "cats").mkdir(parents=True)
        (tmp_path / where / "cats" / "1.png").write_bytes(b"x")
        (tmp_path / where / "2.png").write_bytes(b"y")
    a, b = digest_inputs("folder", str(tmp_path / "a")), digest_inputs("folder", str(tmp_path / "b"))
    lines = "".join(f"{rel}\0{hashlib.sha256(data).hexdigest()}\n" for rel, data in
                    [("2.png", b"y"), ("cats/1.png", b"x")])
    assert a.sha256 == b.sha256 == hashlib.sha256(lines.encode()).hexdigest() and a.sha256_of == "files"
    assert digest_inputs("pattern", str(tmp_path / "a" / "**" / "*.png")).sha256 == a.sha256
    (tmp_path / "b" / "2.png").write_bytes(b"z")
    assert digest_inputs("folder", str(tmp_path / "b")).sha256 != a.sha256
    monkeypatch.setattr(input_digest, "MAX_HASHED_BYTES", 1)  # 2 bytes in all: listed, not hashed
    listed = digest_inputs("folder", str(tmp_path / "a"))
    assert listed.sha256_of == "listing" and listed.sha256 != a.sha256
    assert digest_inputs("file", str(tmp_path / "gone.npz")) == input_digest.InputDigest(str(tmp_path / "gone.npz"))


def test_pre_commit_hook_definition():
    text = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert re.search(r"^- id: kerinspect-check$", text, re.M)
    assert re.search(r"^\s+entry: kerinspect check$", text, re.M)
    assert re.search(r"^\s+language: python$", text, re.M)
    files = re.search(r"^\s+files: '(.+)'$", text, re.M).group(1)
    assert re.search(files, "models/a.keras") and re.search(files, "legacy/b.h5")
    assert not re.search(files, "notes.txt") and not re.search(files, "model.keras.bak")


def test_readme_documents_check():
    readme = (ROOT / "README.md").read_text()
    for text in ("kerinspect check", "[tool.kerinspect.check]", "--junit", "--baseline", "GITHUB_ACTIONS",
                 ".pre-commit-hooks.yaml", "pre-commit", "runs-on"):
        assert text in readme, text


def test_missing_file_is_exit_3_without_tensorflow(tmp_path):
    r = run(tmp_path / "nope.keras")
    assert r.exit_code == 3
    assert "ERROR" in r.stdout and "model-not-found" in r.stdout and "exit 3" in r.stdout
    data, _ = run_json(tmp_path / "nope.keras", code=3)
    assert data["models"][0]["status"] == "error" and data["models"][0]["error"]["rule"] == "model-not-found"
    assert data["passed"] is False


def test_help_and_missing_files_do_not_import_tensorflow(tmp_path):
    code = (
        "import sys\nfrom kerinspect.cli import main\n"
        f"for args in (['check', '--help'], ['check', {str(tmp_path / 'gone.keras')!r}, 'nothing*.keras']):\n"
        "    sys.argv = ['kerinspect', *args]\n"
        "    try:\n        main()\n    except SystemExit as e:\n        print('exit', e.code or 0)\n"
        "    else:\n        print('exit', 0)\n"
        "print('imported:', [m for m in ('tensorflow', 'keras') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = out.stdout.strip().splitlines()
    assert "exit 0" in lines and "exit 3" in lines, out.stdout + out.stderr
    assert lines[-1] == "imported: []"


def test_usage_errors(tmp_path):
    assert run().exit_code == 2
    assert run("a.keras", "--config", tmp_path / "none.toml").exit_code == 2
    r = run("a.keras", "b.keras", "--baseline", "x.json")
    assert r.exit_code == 2 and "--baseline" in r.stderr


# -- with TensorFlow ------------------------------------------------------------


@pytest.fixture(scope="module")
def models(once, shared_dir, request):
    """Seeded tiny models, saved once per session (in a folder every xdist worker
    shares, so that the shared run below names the same paths). The summary tests
    never built these."""

    def make():
        d = shared_dir / "check_models"
        d.mkdir(exist_ok=True)
        return {name: str(path) for name, path in _build(request.getfixturevalue("keras"), d).items()}

    return {name: pathlib.Path(path) for name, path in once("check-models", make).items()}


def _build(keras, d):
    layers, ops = keras.layers, keras.ops
    out = {}

    def save(name, model):
        path = d / f"{name}.keras"
        model.save(path)
        out[name] = path
        return model

    def seed():
        keras.utils.set_random_seed(1234)

    # NaN starts at a raw op (sqrt of negatives) while every weight is finite
    seed()
    x = keras.Input((6,), name="features")
    h = layers.Dense(5, activation="tanh", name="encode")(x)
    neg = layers.Dense(4, bias_initializer=keras.initializers.Constant(-50.0), name="shift")(h)
    r = ops.sqrt(neg)
    h2 = layers.Dense(3, name="mix")(r)
    save("nan_op", keras.Model(x, layers.Softmax(name="probs")(h2), name="nan_op"))

    # NaN starts inside a nested model
    seed()
    i = keras.Input((4,))
    block = keras.Model(i, ops.log(layers.Dense(4, bias_initializer=keras.initializers.Constant(-50.0),
                                                name="inner_neg")(i)), name="block")
    x = keras.Input((4,), name="x")
    save("nested_nan", keras.Model(x, layers.Dense(2, name="head")(block(layers.Dense(4, name="stem")(x))),
                                   name="nested_nan"))

    # half the units of a ReLU layer never fire; the last layer is fine
    seed()
    x = keras.Input((5,), name="x")
    gate = layers.Dense(8, activation="relu", name="gate_relu")
    m = keras.Model(x, layers.Dense(2, name="logits")(gate(x)), name="dying")
    k, b = gate.get_weights()
    b[:6] = -50.0
    gate.set_weights([k, b])
    save("dead", m)

    # activations around 1e6
    seed()
    x = keras.Input((3,), name="x")
    amp = layers.Dense(4, name="amp")
    m = keras.Model(x, layers.Dense(1, name="out")(amp(x)), name="loud")
    k, b = amp.get_weights()
    amp.set_weights([k * 1e6, b])
    save("exploding", m)

    # clean, and the baseline family: same structure with a perturbed layer, one with a wider layer
    def clean(width=6, scale=1.0):
        seed()
        x = keras.Input((5,), name="x")
        h1 = layers.Dense(width, activation="tanh", name="h1")
        h2 = layers.Dense(3, name="h2")
        m = keras.Model(x, h2(h1(x)), name="clean")
        k, b = h2.get_weights()
        h2.set_weights([k * scale, b])
        return m

    save("clean", clean())
    save("perturbed", clean(scale=1.5))
    save("wider", clean(width=7))

    # integer tensors only (not checked), and integer next to float
    seed()
    ids = keras.Input((4,), dtype="int32", name="ids")
    save("int_only", keras.Model(ids, ops.multiply(ops.add(ids, 3), 2), name="int_only"))
    seed()
    ids = keras.Input((4,), dtype="int32", name="ids")
    e = layers.Flatten(name="flat")(layers.Embedding(10, 3, name="emb")(ids))
    save("int_mixed", keras.Model(ids, [layers.Dense(2, name="dense")(e), ops.add(ids, 1)], name="int_mixed"))

    # a NaN in a weight
    seed()
    x = keras.Input((4,), name="x")
    bad = layers.Dense(3, name="w_bad")
    m = keras.Model(x, layers.Dense(2, name="after")(bad(x)), name="nan_weight")
    k, b = bad.get_weights()
    k[2, 1] = np.nan
    bad.set_weights([k, b])
    save("nan_weight", m)

    # a hostile layer name on the layer where NaN starts, in a hostile file name
    seed()
    x = keras.Input((4,), name="x")
    evil = layers.Dense(3, name=HOSTILE)
    m = keras.Model(x, layers.Dense(2, name="after")(evil(x)), name="hostile")
    k, b = evil.get_weights()
    b[0] = np.nan
    evil.set_weights([k, b])
    m.save(d / "evil,name:1%0A.keras")
    out["hostile"] = d / "evil,name:1%0A.keras"
    return out


#: The models of the shared run, in its order; a missing file comes before the last.
SHARED = ("nan_op", "nested_nan", "dead", "exploding", "clean", "int_mixed", "int_only", "nan_weight", "hostile")


@pytest.fixture(scope="module")
def shared(models, once, shared_dir, worker_runs):
    """The one run the tests that only read verdicts share: ``check`` of every model above
    and a missing file, ``--samples 8``, JSON on stdout, ``--junit``, and ``GITHUB_ACTIONS``
    annotations on stderr. ``{"args", "exit_code", "stdout", "stderr", "junit"}``. Its
    worker runs are kept for the tests that :func:`reuse` them."""

    def make():
        junit = shared_dir / "check-shared-junit.xml"
        cwd = shared_dir / "check-cwd"  # no pyproject.toml above it
        cwd.mkdir(exist_ok=True)
        args = [str(models[name]) for name in SHARED]
        args.insert(-1, str(shared_dir / "missing.keras"))
        with pytest.MonkeyPatch.context() as mp, reusing_runs(worker_runs):
            mp.chdir(cwd)
            r = run(*args, *SAMPLES, "--format", "json", "--junit", junit, env={"GITHUB_ACTIONS": "true"})
        return {"args": args, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                "junit": junit.read_text()}

    return once("check-shared", make)


@pytest.fixture(scope="module")
def checked(models, shared):
    """``checked("dead")``: that model's result in the shared run's JSON."""
    results = {m["path"]: m for m in json.loads(shared["stdout"])["models"]}
    return lambda name: results[str(models[name])]


@pytest.fixture(scope="module")
def reports(models, shared, worker_runs):
    """``reports("dead")``: that model's report from the worker run of ``check MODEL
    --samples 8`` (the same request: :func:`kerinspect.api.inspect_model` with the run
    spec and load options the CLI derives from those options and no configuration file).
    The shared run already made it for its models; another model gets its own run, kept
    for the tests that :func:`reuse` runs. ``check`` judges each model's report with
    :func:`kerinspect.run_checks` (:func:`kerinspect.gate.check_model`: inspect, then
    judge), so the tests about the judging under other settings re-judge this one report
    (:func:`judged`) instead of starting a worker per setting."""
    from kerinspect import api
    from kerinspect.config import ConfigFile
    from kerinspect.spec import LoadOptions

    def get(name):
        path = str(models[name])
        spec = ConfigFile.empty().settings_for(path, {"samples": 8}).run_spec()
        with reusing_runs(worker_runs):
            report = api.inspect_model(path, None, spec=spec, load=LoadOptions())
        assert isinstance(report, ModelReport)
        return report

    return get


def judged(models, reports, name, baseline=None, **options):
    """``check MODEL --samples 8 OPTIONS --format json`` for one model, judged as the CLI
    judges it: the settings the CLI derives from no configuration file and these options,
    then :func:`kerinspect.run_checks` on the model's report (what ``check_model`` does
    after its worker run). ``(the JSON as run_json returns it, exit code, table text)``;
    the text is what ``check`` prints for a pipe."""
    import io

    from rich.console import Console

    from kerinspect.check_results import CheckRun
    from kerinspect.checks import run_checks
    from kerinspect.cli.output import PIPE_WIDTH
    from kerinspect.config import ConfigFile
    from kerinspect.gate import load_baseline
    from kerinspect.render import render_check, render_json

    path = str(models[name])
    if baseline is not None:
        options["baseline"] = str(baseline)
    config = ConfigFile.empty().settings_for(path, {"samples": 8, **options})
    base = load_baseline(config.baseline) if config.baseline else None
    run = CheckRun((run_checks(reports(name), config, baseline=base, path=path),))
    buf = io.StringIO()
    render_check(run, Console(file=buf, width=PIPE_WIDTH, highlight=False))
    return json.loads(render_json(run)), run.exit_code, buf.getvalue()


def test_nan_exits_1_and_names_the_layer_where_it_starts(models, checked, reuse):
    m = checked("nan_op")
    assert m["status"] == "failed" and m["exit_code"] == 1
    assert m["first_fault"]["layer"] == "sqrt" and m["first_fault"]["weights"] == []
    nan = rules_of(m)["nan"]
    assert nan["verdict"] == "failed" and [f["layer"] for f in nan["failures"]] == ["sqrt", "mix", "probs"]
    assert rules_of(m)["weight-nan"]["verdict"] == "passed"
    text = run(models["nan_op"], *SAMPLES)
    assert text.exit_code == 1 and "NaN starts at layer 'sqrt' (Sqrt)" in text.stdout
    assert text.stdout.index("FAIL nan") < text.stdout.index("pass inf")  # failures first
    assert "::error" not in text.stderr  # without GITHUB_ACTIONS there are no annotations


def test_nan_inside_a_nested_model(checked):
    assert checked("nested_nan")["exit_code"] == 1
    assert checked("nested_nan")["first_fault"]["layer"] == "block/log"


def test_clean_model_exits_0(models, checked):
    r = run(models["clean"], *SAMPLES)
    assert r.exit_code == 0, r.stdout
    assert r.stdout.startswith("PASSED ") and "7 rules passed" in r.stdout
    assert r.stdout.rstrip().endswith("1 model · 1 passed · 0 failed · 0 errors · exit 0")
    # nothing on stderr but the one line saying the gate ran on synthetic inputs
    (line,) = r.stderr.splitlines()
    assert line.startswith("kerinspect: warning: ") and "synthetic samples, not your data" in line
    assert checked("clean")["exit_code"] == 0
    assert all(rule["verdict"] == "passed" for rule in checked("clean")["rules"])


def test_dead_and_exploding(models, checked, reports, reuse):
    assert checked("dead")["exit_code"] == 1
    dead = rules_of(checked("dead"))["dead"]
    assert [f["layer"] for f in dead["failures"]] == ["gate_relu"]
    assert dead["failures"][0]["values"]["dead_fraction"] == pytest.approx(0.75)
    assert dead["threshold"] == 0.5
    assert judged(models, reports, "dead", max_dead_fraction=0.8)[1] == 0  # judged again

    assert checked("exploding")["exit_code"] == 1
    boom = rules_of(checked("exploding"))["exploding"]
    assert boom["failures"][0]["layer"] == "amp" and boom["failures"][0]["values"]["abs_max"] > 1e4
    run_json(models["exploding"], *SAMPLES, "--max-abs", "1e12", code=0)


def test_integer_tensors_are_not_checked(checked):
    assert checked("int_mixed")["exit_code"] == 0
    nan = rules_of(checked("int_mixed"))["nan"]["counts"]
    assert (nan["not_checked"], nan["passed"]) == (2, 3)  # ids, add: int; emb, flat, dense: float
    assert checked("int_only")["exit_code"] == 1
    rules = rules_of(checked("int_only"))
    assert rules["nan"]["verdict"] == "not_checked" and rules["nan"]["counts"]["passed"] == 0
    assert rules["coverage"]["verdict"] == "failed"


def test_nan_weight(checked):
    m = checked("nan_weight")
    assert m["exit_code"] == 1
    wn = rules_of(m)["weight-nan"]
    assert [(f["layer"], f["tensor"]) for f in wn["failures"]] == [("w_bad", "w_bad/kernel")]
    assert wn["failures"][0]["values"]["nan_count"] == 1
    assert m["first_fault"]["layer"] == "w_bad" and m["first_fault"]["weights"] == ["w_bad/kernel"]


def test_ignore(models, reports):
    data, code, _ = judged(models, reports, "dead", ignore=("gate_*",))
    assert code == 0
    m = data["models"][0]
    assert m["ignored_layers"] == ["gate_relu"]
    assert rules_of(m)["dead"]["counts"]["ignored"] == 1
    assert rules_of(m)["weight-nan"]["counts"]["ignored"] == 2  # kernel and bias
    data, code, _ = judged(models, reports, "dead", ignore=("nothing_here",))
    assert code == 1
    assert any("nothing_here" in w for w in data["models"][0]["warnings"])
    # ignoring the layer where NaN starts does not hide the layers it flows into
    data, code, _ = judged(models, reports, "nan_op", ignore=("sqrt",))
    assert code == 1
    assert data["models"][0]["first_fault"]["layer"] == "mix"


def test_pyproject_discovery_and_option_precedence(models, tmp_path, monkeypatch, reuse):
    root = tmp_path / "repo"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.kerinspect.check]\nignore = ["gate_relu"]\nmax_abs = 1e12\n'
        "samples = 8\n"
    )
    monkeypatch.chdir(root / "src" / "deep")
    data, _ = run_json(models["dead"], code=0)
    assert data["config_file"] == str(root / "pyproject.toml")
    assert data["models"][0]["settings"]["ignore"] == ["gate_relu"] and data["models"][0]["samples"] == 8
    run_json(models["exploding"], code=0)  # max_abs from the file
    run_json(models["exploding"], "--max-abs", "1e4", code=1)  # the option wins
    run_json(models["dead"], "--ignore", "logits", code=1)  # an option list replaces the file's
    data, _ = run_json(models["dead"], "--no-config", *SAMPLES, code=1)
    assert data["config_file"] is None
    (root / "pyproject.toml").write_text("[tool.kerinspect.check]\nmax_abss = 1\n")
    r = run(models["dead"])
    assert r.exit_code == 2 and "max_abss" in r.stderr and r.stdout == ""


def test_config_file_option_and_per_model_inputs(models, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    np.save(data_dir / "ones.npy", np.ones((12, 5), np.float32))
    cfg = tmp_path / "gate.toml"
    cfg.write_text(
        'samples = 8\nmax_dead_fraction = 0.9\n\n[[models]]\npath = "*/clean.keras"\ninput = "data/ones.npy"\n'
    )
    mdir = tmp_path / "m"
    mdir.mkdir()
    shutil.copy(models["clean"], mdir / "clean.keras")
    shutil.copy(models["dead"], mdir / "dead.keras")
    data, _ = run_json(mdir / "clean.keras", mdir / "dead.keras", "--config", cfg, code=0)
    clean, dead = data["models"]
    assert clean["inputs"][0]["source"] == str(data_dir / "ones.npy") and clean["samples"] == 8
    assert dead["inputs"][0]["source"] == "synthetic" and dead["samples"] == 8
    assert dead["settings"]["max_dead_fraction"] == 0.9


def test_junit_xml(shared):
    args = shared["args"]  # the missing file is the last but one
    assert shared["exit_code"] == 3
    data = json.loads(shared["stdout"])
    root = ET.fromstring(shared["junit"])
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites[:-1]] == args[:-1]  # the last: the hostile name, escaped
    failures = errors = tests = 0
    for suite, model in zip(suites, data["models"], strict=True):
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == len(suite.findall("testcase/failure"))
        assert int(suite.get("errors")) == len(suite.findall("testcase/error"))
        if model["status"] == "error":
            assert [c.get("name") for c in cases] == ["inspect"]
        else:
            assert [c.get("name") for c in cases] == [rule["rule"] for rule in model["rules"]]
            assert int(suite.get("failures")) == sum(rule["verdict"] == "failed" for rule in model["rules"])
        failures, errors, tests = failures + int(suite.get("failures")), errors + int(suite.get("errors")), \
            tests + len(cases)
    assert (int(root.get("tests")), int(root.get("failures")), int(root.get("errors"))) == (tests, failures, errors)
    assert errors == 1 and failures == sum(
        rule["verdict"] == "failed" for m in data["models"] for rule in m["rules"]
    )
    nan_case = suites[SHARED.index("nan_op")].find("testcase[@name='nan']/failure")
    assert "layer 'sqrt'" in nan_case.get("message") and "layer 'mix' output 'output'" in nan_case.text
    assert suites[-2].find("testcase/error").get("type") == "model-not-found"
    assert "\x1b" not in shared["junit"] and "##[" not in shared["junit"]


def test_unwritable_junit_is_exit_7_and_outranks_failed_checks(models, tmp_path, reuse):
    r = run(models["dead"], *SAMPLES, "--junit", tmp_path / "no" / "such" / "dir.xml")
    assert r.exit_code == 7 and "error[output-unwritable]" in r.stderr
    assert "FAILED" in r.stdout  # the verdicts are still shown
    assert not list(tmp_path.rglob("*.tmp"))


def _runner_commands(text):
    """Workflow commands the GitHub runner would execute from ``text``: lines starting
    (after leading whitespace) with ``::``, and legacy ``##[`` commands anywhere."""
    v2, legacy = [], []
    for line in re.split(r"\r\n|\r|\n", text):
        if "##[" in line:
            legacy.append(line)
        stripped = line.lstrip()
        if stripped.startswith("::"):
            end = stripped.index("::", 2)
            info, data = stripped[2:end], stripped[end + 2:]
            name, _, props = info.partition(" ")
            unesc = lambda s: s.replace("%3A", ":").replace("%2C", ",").replace("%0D", "\r") \
                .replace("%0A", "\n").replace("%25", "%")  # noqa: E731
            properties = dict(p.split("=", 1) for p in props.split(",") if p)
            v2.append((name, {k: unesc(v) for k, v in properties.items()},
                       data.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")))
    return v2, legacy


def test_github_annotations_cannot_be_forged(models, checked, shared, reuse):
    r = run(models["hostile"], *SAMPLES, env={"GITHUB_ACTIONS": "true"})  # the table on stdout
    assert r.exit_code == 1
    failed = [rule["rule"] for rule in checked("hostile")["rules"] if rule["verdict"] == "failed"]
    assert {"nan", "weight-nan"} <= set(failed)
    for stream in (r.stdout, r.stderr, shared["stdout"], shared["stderr"]):
        assert "\x1b" not in stream and "\r" not in stream
    assert _runner_commands(r.stdout) == ([], [])
    commands, legacy = _runner_commands(r.stderr)
    assert legacy == []
    assert [c[0] for c in commands] == ["error"] * len(failed)
    assert [c[1] for c in commands] == [{"file": str(models["hostile"]), "title": f"kerinspect check: {rule}"}
                                        for rule in failed]
    nan_message = commands[failed.index("nan")][2]
    assert nan_message.startswith("NaN starts at layer 'ok\\n:\\x3aerror title=pwned:\\x3ax\\x1b[2J%0A,a:b #\\x23[error]")
    assert "\n" not in nan_message
    # the JSON output stays parseable and carries the exact name, but no runnable command
    assert checked("hostile")["first_fault"]["layer"] == HOSTILE
    assert _runner_commands(shared["stdout"]) == ([], [])
    # many models: each failed rule and each error is one annotation, on its own model's file
    commands, legacy = _runner_commands(shared["stderr"])
    assert legacy == [] and {c[0] for c in commands} == {"error"}
    expected = []
    for m in json.loads(shared["stdout"])["models"]:
        titles = ["error"] if m["status"] == "error" else [x["rule"] for x in m["rules"] if x["verdict"] == "failed"]
        expected += [{"file": m["path"], "title": f"kerinspect check: {title}"} for title in titles]
    assert [c[1] for c in commands] == expected
    # without GITHUB_ACTIONS there are no annotations: test_nan_exits_1_and_names_the_layer_where_it_starts


def test_baseline(models, reports, tmp_path, reuse):
    base = tmp_path / "release.json"
    r = CliRunner().invoke(cli, ["summary", str(models["clean"]), "--format", "json", *SAMPLES])
    assert r.exit_code == 0
    base.write_text(r.stdout)
    data, _ = run_json(models["clean"], *SAMPLES, "--baseline", base, code=0)
    rules = rules_of(data["models"][0])
    assert rules["structure"]["verdict"] == "passed" and rules["drift"]["verdict"] == "passed"
    assert rules["drift"]["counts"]["passed"] == 3 and rules["drift"]["threshold"] == 0.1

    data, r = run_json(models["perturbed"], *SAMPLES, "--baseline", base, code=1)
    drift = rules_of(data["models"][0])["drift"]
    assert rules_of(data["models"][0])["structure"]["verdict"] == "passed"
    assert [f["layer"] for f in drift["failures"]] == ["h2"]  # h1 is untouched
    assert drift["failures"][0]["values"]["std_shift"] > 0.1
    # the same model's report judged again (the table; another tolerance)
    data, code, text = judged(models, reports, "perturbed", base)
    assert code == 1 and [f["layer"] for f in rules_of(data["models"][0])["drift"]["failures"]] == ["h2"]
    assert "first drifted layer 'h2'" in text
    assert judged(models, reports, "perturbed", base, tolerance=100)[1] == 0

    data, _ = run_json(models["wider"], *SAMPLES, "--baseline", base, code=1)
    structure = rules_of(data["models"][0])["structure"]
    assert [f["layer"] for f in structure["failures"]] == ["h1"]
    assert "(None, 6) -> (None, 7)" in structure["failures"][0]["message"]

    # each difference named, in one warning (a run of its own; it may drift too)
    data, _ = run_json(models["clean"], "--samples", "16", "--seed", "3", "--baseline", base)
    assert data["models"][0]["warnings"] == [
        "the baseline was made on different inputs: seed differs (baseline 0, now 3); "
        "samples differ (baseline 8, now 16)"]
    data, _ = run_json(models["clean"], "--baseline", tmp_path / "none.json", code=3)
    assert data["models"][0]["error"]["rule"] == "baseline-not-found"
    (tmp_path / "bad.json").write_text('{"schema_version": 1}')
    data, _ = run_json(models["clean"], "--baseline", tmp_path / "bad.json", code=3)
    assert data["models"][0]["error"]["rule"] == "baseline-invalid"


def test_baseline_inputs_are_the_same_file_from_another_folder(models, tmp_path, monkeypatch, reuse):
    """A baseline made with ``--input data/x.npz`` in the project, checked from elsewhere
    through a configuration whose ``input = "x.npz"`` is relative to its own folder: the
    same bytes, so no warning; another file is named with its hash."""
    import hashlib

    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(proj / "data" / "x.npz", rng.normal(size=(8, 5)).astype(np.float32))
    np.savez(proj / "data" / "y.npz", rng.normal(size=(8, 5)).astype(np.float32))
    monkeypatch.chdir(proj)
    r = CliRunner().invoke(cli, ["summary", str(models["clean"]), "--input", "data/x.npz", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    (proj / "release.json").write_text(r.stdout)
    (proj / "data" / "gate.toml").write_text('input = "x.npz"\nbaseline = "../release.json"\n')
    elsewhere = tmp_path / "ci"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data, r = run_json(models["clean"], "--config", "../proj/data/gate.toml", code=0)
    model = data["models"][0]
    assert model["warnings"] == [] and model["inputs"][0]["source"] == str(proj / "data" / "x.npz")
    x_sha = hashlib.sha256((proj / "data" / "x.npz").read_bytes()).hexdigest()
    assert (model["inputs"][0]["sha256"], model["inputs"][0]["sha256_of"]) == (x_sha, "file")
    assert model["inputs"][0]["path"] == str(proj / "data" / "x.npz")
    data, _ = run_json(models["clean"], "--config", "../proj/data/gate.toml", "--input", "../proj/data/y.npz")
    y_sha = hashlib.sha256((proj / "data" / "y.npz").read_bytes()).hexdigest()
    assert data["models"][0]["warnings"] == [
        f"the baseline was made on different inputs: input file differs (baseline: data/x.npz sha256 "
        f"{x_sha[:8]}…, now: ../proj/data/y.npz sha256 {y_sha[:8]}…)"]


def test_custom_objects_from_the_configuration(tmp_path):
    """``custom_objects`` at the top level and per ``[[models]]`` entry, each relative to
    the file, loads a model with custom layers through the worker; a bad value is a usage
    error naming the key; ``--custom-objects`` wins over both."""
    for folder in ("a", "b", "code"):
        (tmp_path / folder).mkdir()
    for folder in ("a", "b"):
        shutil.copy(ROOT / "sample_models" / "transformer.keras", tmp_path / folder / "transformer.keras")
    shutil.copy(ROOT / "sample_models" / "custom_layers.py", tmp_path / "code" / "layers.py")
    shutil.copy(ROOT / "sample_models" / "custom_layers.py", tmp_path / "b" / "own_layers.py")
    cfg = tmp_path / "gate.toml"
    cfg.write_text('samples = 2\ncustom_objects = "code/layers.py"\n\n'
                   '[[models]]\npath = "b/*.keras"\ncustom_objects = "b/own_layers.py"\n')
    models_ = [tmp_path / "a" / "transformer.keras", tmp_path / "b" / "transformer.keras"]
    data, r = run_json(*models_, "--config", cfg, code=0)
    assert [m["settings"]["custom_objects"] for m in data["models"]] == [
        str(tmp_path / "code" / "layers.py"), str(tmp_path / "b" / "own_layers.py")]
    assert all(m["status"] == "passed" for m in data["models"])
    # the option wins (its missing file is refused before any worker starts)
    data, _ = run_json(*models_, "--config", cfg, "--custom-objects", tmp_path / "nope.py", code=3)
    assert {m["error"]["rule"] for m in data["models"]} == {"custom-objects-not-found"}
    cfg.write_text("[[models]]\npath = '*'\ncustom_objects = 7\n")
    r = run(*models_, "--config", cfg)
    assert r.exit_code == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert "Key 'custom_objects' in the top level.models[0] of" in r.stderr and str(cfg) in r.stderr


def test_deterministic(models, checked):
    """A model's results do not depend on the run: the shared run's, again in worker runs
    of their own (this test reuses no run); another seed changes the figures but not the
    verdicts, in a run of two."""
    first = [checked("nan_op"), checked("dead")]
    again = run(models["nan_op"], models["dead"], *SAMPLES, "--format", "json")
    assert again.exit_code == 1, again.stderr
    assert json.loads(again.stdout)["models"] == first
    other = run(models["nan_op"], models["dead"], *SAMPLES, "--seed", "5", "--format", "json").stdout
    assert json.loads(other)["models"] != first
    verdicts = [[(r["rule"], r["verdict"]) for r in m["rules"]] for m in json.loads(other)["models"]]
    assert verdicts == [[(r["rule"], r["verdict"]) for r in m["rules"]] for m in first]


def test_multiple_models_globs_and_precedence(models, tmp_path, reuse):
    d = tmp_path / "many"
    d.mkdir()
    for name in ("clean", "dead", "nan_op"):
        shutil.copy(models[name], d / f"{name}.keras")
    data, _ = run_json(f"{d}/*.keras", d / "clean.keras", *SAMPLES, code=1)  # duplicates checked once
    assert [m["path"] for m in data["models"]] == [str(d / n) for n in ("clean.keras", "dead.keras",
                                                                        "nan_op.keras")]
    assert data["totals"] == {"models": 3, "passed": 1, "failed": 2, "errors": 0}
    # a missing model outranks failed checks, and the others are still checked
    data, r = run_json(d / "dead.keras", d / "gone.keras", f"{d}/nothing*.keras", *SAMPLES, code=3)
    assert [m["status"] for m in data["models"]] == ["failed", "error", "error"]
    assert data["models"][2]["error"]["rule"] == "no-match"
    text = run(d / "dead.keras", d / "gone.keras", *SAMPLES).stdout
    assert text.index("FAILED") < text.index("ERROR")
    assert text.rstrip().endswith("2 models · 0 passed · 1 failed · 1 error · exit 3")
    (d / "broken.keras").write_bytes((d / "clean.keras").read_bytes()[:200])
    data, _ = run_json(d / "broken.keras", d / "gone.keras", d / "clean.keras", *SAMPLES, code=4)
    assert [m["exit_code"] for m in data["models"]] == [4, 3, 0]


def test_python_api(reports):
    import kerinspect
    from kerinspect.config import CheckConfig

    report = reports("dead")  # kerinspect.inspect_model(path, samples=8), shared
    result = kerinspect.run_checks(report, CheckConfig(max_dead_fraction=0.8))
    assert result.status == "passed" and result.exit_code == 0
    assert kerinspect.run_checks(report).rule("dead").failures[0].layer == "gate_relu"
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["status"] == "passed"


def test_exit_code_is_documented_in_help():
    r = CliRunner().invoke(cli, ["check", "--help"])
    assert r.exit_code == 0 and "outranks 1" in r.stdout and "--junit" in r.stdout
    text = " ".join(r.stdout.split())
    documented = text[text.index("Exit codes:") : text.index("Examples:")]
    # every exit code the tool can return is documented, and no other number is
    assert {int(n) for n in re.findall(r"\b\d+\b", documented)} == {int(c) for c in ExitCode}


def test_ignore_cannot_hide_nan_in_what_the_model_returns(models, reuse):
    """A whole network wrapped in a nested model named like an ignored layer
    (say, from a pull request's pyproject.toml) still fails: the model's own
    outputs are never exempt, and input rows alone never cover a model."""
    data, _ = run_json(models["nested_nan"], *SAMPLES, "--ignore", "block*", code=1)
    model = data["models"][0]
    nan = next(r for r in model["rules"] if r["rule"] == "nan")
    assert nan["verdict"] == "failed"
    assert model["first_fault"]["layer"] == "head"  # the ignored block's NaN, where it is not exempt
    everything, _ = run_json(models["clean"], *SAMPLES, "--ignore", "*", code=0)
    rules = {r["rule"]: r["verdict"] for r in everything["models"][0]["rules"]}
    assert rules["nan"] == "passed"  # the output was still checked ...
    assert rules["coverage"] == "passed"  # ... so the model is covered
