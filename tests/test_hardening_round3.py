"""Hardening round 3 (issue 23): the scan judges exactly what the loader builds.

Every case is a file built here, offline, and opened the way a user opens it (the CLI and
its worker), with a positive control beside it: the same construction without the attack
loads. The cases:

* a Keras 3 archive whose ``metadata.json`` says Keras 2.15 and whose ``Add`` layer has a
  ``registered_name`` of ``Lambda``: the loader builds the Keras 2 form, where the
  registered name becomes the class, so the scan must judge that form;
* a plain ``keras_hub>WhisperTokenizer`` string as a Lambda's function, with a FIFO for
  the tokenizer to open;
* a ``--custom-objects`` file that imports keras_hub, beside a Lambda calling a keras-hub
  function by its registered name;
* a tf.keras 2.x archive whose weights are larger than the worker may write to a file;
* a 4 GiB sparse file that is not a model;
* and, by construction, that the loader builds the very config the scan judged.
"""

from __future__ import annotations

import base64
import json
import marshal
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from kerinspect.errors import ExitCode
from tests.conftest import ROOT

pytestmark = pytest.mark.isolated


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "kerinspect", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


def rule_of(out):
    line = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    return line.split("error[", 1)[1].split("]", 1)[0] if "error[" in line else None


def rewrite_archive(src, dst, edit_config, metadata=None):
    """A copy of the .keras archive ``src`` whose config.json is ``edit_config(config)``
    and whose metadata.json is ``metadata`` (when given)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "config.json":
                config = json.loads(data)
                edit_config(config)
                data = json.dumps(config).encode()
            elif info.filename == "metadata.json" and metadata is not None:
                data = json.dumps({**json.loads(data), **metadata}).encode()
            zout.writestr(info, data)
    return str(dst)


@pytest.fixture(scope="module")
def add_model(keras, tmp_path_factory):
    """A Keras 3 archive: x -> two Dense -> Add -> Dense."""
    layers = keras.layers
    keras.utils.set_random_seed(3)
    x = keras.Input((4,), name="x")
    a = layers.Dense(3, activation="relu", name="a")(x)
    b = layers.Dense(3, name="b")(x)
    out = layers.Dense(2, name="out")(layers.Add(name="add")([a, b]))
    path = tmp_path_factory.mktemp("round3") / "add.keras"
    keras.Model(x, out, name="m").save(path)
    return str(path)


def disguise(function, arguments=None):
    """``edit_config``: the Add layer claims to be a registered ``Lambda`` calling ``function``."""

    def edit(config):
        layer = next(lay for lay in config["config"]["layers"] if lay["class_name"] == "Add")
        layer["registered_name"] = "Lambda"
        layer["config"]["function"] = function
        if arguments is not None:
            layer["config"]["arguments"] = arguments

    return edit


def _payload():  # pragma: no cover - serialized, never run by the tests
    open(os.environ.get("KI_CANARY", "/nonexistent/canary"), "w").write("ran")


KERAS2_BYTECODE = [base64.b64encode(marshal.dumps(_payload.__code__)).decode(), None, None]


def test_a_keras2_version_makes_the_scan_judge_the_form_the_loader_builds(add_model, tmp_path):
    canary = tmp_path / "canary"
    evil = rewrite_archive(add_model, tmp_path / "evil.keras", disguise(KERAS2_BYTECODE), {"keras_version": "2.15.0"})
    out = cli("summary", evil, "-n", "2", env={"KI_CANARY": str(canary)})
    assert out.returncode == ExitCode.REFUSED and rule_of(out) == "lambda-bytecode", out.stderr
    assert "add" in out.stderr and not canary.exists()
    # controls: the same disguise in a Keras 3 archive is judged, and built, as the Add it
    # says it is (which Keras refuses for its extra argument); a Keras 2 version without
    # the disguise is built as Keras 2
    plain = rewrite_archive(add_model, tmp_path / "plain.keras", disguise(KERAS2_BYTECODE))
    out = cli("summary", plain, "-n", "2", env={"KI_CANARY": str(canary)})
    assert out.returncode == ExitCode.MALFORMED and rule_of(out) == "load-failed", out.stderr
    assert not canary.exists()
    keras2 = rewrite_archive(add_model, tmp_path / "keras2.keras", lambda c: None, {"keras_version": "2.15.0"})
    out = cli("summary", keras2, "-n", "2", "-f", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"]["loader"] == "keras+legacy-archive-upgrade"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_a_registered_class_named_by_a_string_is_refused_and_its_path_never_opened(add_model, tmp_path):
    pytest.importorskip("keras_hub")
    fifo = tmp_path / "special_tokens"
    os.mkfifo(fifo)
    arguments = {"vocabulary": {"a": 0}, "merges": [], "special_tokens": str(fifo)}

    def as_activation(config):  # the class named where Keras resolves a string: an activation
        config["config"]["layers"][1]["config"]["activation"] = "keras_hub>WhisperTokenizer"

    cases = [  # (how, metadata, the rules that may refuse it)
        (disguise("keras_hub>WhisperTokenizer", arguments), {"keras_version": "2.15.0"},
         {"lambda-layer", "registered-class-string"}),
        (disguise("keras_hub>WhisperTokenizer", arguments), None, {"registered-class-string"}),
        (as_activation, None, {"registered-class-string"}),
        (as_activation, {"keras_version": "2.15.0"}, {"registered-class-string"}),
    ]
    for i, (how, metadata, rules) in enumerate(cases):
        evil = rewrite_archive(add_model, tmp_path / f"whisper{i}.keras", how, metadata)
        started = time.monotonic()
        out = cli("summary", evil, "-n", "2", "--timeout", "120")
        assert out.returncode == ExitCode.REFUSED and rule_of(out) in rules, (i, out.stderr)
        assert time.monotonic() - started < 100  # the worker never blocked opening the FIFO
    # control: the same archive without the string loads, as Keras 3's and as Keras 2's
    for i, metadata in enumerate((None, {"keras_version": "2.15.0"})):
        plain = rewrite_archive(add_model, tmp_path / f"plain{i}.keras", lambda c: None, metadata)
        assert cli("summary", plain, "-n", "2").returncode == 0


@pytest.fixture(scope="module")
def registered_lambda(keras, tmp_path_factory):
    """A Keras 3 archive whose Lambda calls the registered function ``mine>double``, and a
    ``--custom-objects`` file that imports keras_hub and defines that function."""
    d = tmp_path_factory.mktemp("custom")

    @keras.saving.register_keras_serializable(package="mine", name="double")
    def double(x):
        return x * 2

    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Lambda(double, name="twice")(x), name="m")
    model.save(d / "double.keras")
    custom = d / "custom_objects.py"
    custom.write_text(
        "import keras\nimport keras_hub  # registers every keras-hub object with Keras\n\n"
        "@keras.saving.register_keras_serializable(package='mine', name='double')\n"
        "def double(x):\n    return x * 2\n"
    )
    return {"model": str(d / "double.keras"), "custom": str(custom)}


def test_custom_objects_count_what_the_file_defines_never_what_it_imports(registered_lambda, tmp_path):
    pytest.importorskip("keras_hub")
    model, custom = registered_lambda["model"], registered_lambda["custom"]
    target = tmp_path / "written.model"

    def to_hub(config):
        layer = next(lay for lay in config["config"]["layers"] if lay["class_name"] == "Lambda")["config"]
        layer["function"]["config"] = "keras_hub>compute_sentence_piece_proto"
        layer["arguments"] = {"vocabulary_size": 8, "proto_output_file": str(target)}

    evil = rewrite_archive(model, tmp_path / "hub_fn.keras", to_hub)
    out = cli("summary", evil, "-n", "2", "--custom-objects", custom)
    assert out.returncode == ExitCode.REFUSED and rule_of(out) == "function-reference", out.stderr
    assert not target.exists()
    # positive control: the function the file defines (and registers) is the user's own
    out = cli("summary", model, "-n", "3", "--custom-objects", custom, "-f", "json")
    assert out.returncode == 0, out.stderr
    twice = next(r for r in json.loads(out.stdout)["layers"] if r["path"] == "twice")
    given = next(r for r in json.loads(out.stdout)["layers"] if r["path"] == "x")
    assert twice["outputs"][0]["stats"]["max"] == pytest.approx(2 * given["outputs"][0]["stats"]["max"])
    assert cli("summary", model, "-n", "2").returncode == ExitCode.REFUSED  # without the file: refused


def test_load_custom_objects_keeps_only_what_the_file_defines(keras, tmp_path):
    from kerinspect.engine.load import load_custom_objects

    f = tmp_path / "objects.py"
    f.write_text("from json import loads\nfrom keras.layers import Dense\n\n"
                 "def mine(x):\n    return x\n\nclass Layer2(Dense):\n    pass\n\n"
                 "custom_objects = {'loads': loads, 'Dense': Dense, 'mine': mine, 'Layer2': Layer2}\n")
    assert set(load_custom_objects(str(f))) == {"mine", "Layer2"}
    f.write_text("from json import loads\n\ndef mine(x):\n    return x\n")
    assert set(load_custom_objects(str(f))) == {"mine"}


@pytest.mark.slow
def test_a_tf_keras_archive_above_the_workers_file_limit_loads(tmp_path):
    """The worker may write no file above 64 MiB; a tf.keras 2.x archive's weights are
    converted in memory (this one: 68 MB)."""
    tfk = pytest.importorskip("tf_keras")
    x = tfk.Input((4100,), name="x")
    model = tfk.Model(x, tfk.layers.Dense(4100, name="wide")(x), name="wide")
    path = tmp_path / "wide.keras"
    model.save(path)
    assert os.path.getsize(path) > 64 << 20
    out = cli("summary", path, "-n", "2", "-f", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["model"]["loader"] == "keras+legacy-archive-upgrade" and report["model"]["params"] == 4100 * 4101


def test_a_file_that_is_not_a_model_is_refused_before_it_is_copied(tmp_path):
    from kerinspect.errors import InputFileError
    from kerinspect.scan.preflight import DEFAULT_MAX_FILE_BYTES, preflight

    big = tmp_path / "big.keras"
    with open(big, "wb") as f:
        f.write(b"not a model at all")
        f.truncate(DEFAULT_MAX_FILE_BYTES)  # sparse: 4 GiB that take no room
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    started = time.monotonic()
    with pytest.raises(InputFileError) as e:
        preflight(big, snapshot_dir=str(snapshot))
    assert e.value.rule == "unknown-format" and time.monotonic() - started < 5
    assert list(snapshot.iterdir()) == []  # not a byte copied
    out = cli("summary", big)
    assert out.returncode == ExitCode.NO_INPUT and rule_of(out) == "unknown-format"
    # positive control: a model is copied, and the copy is what is read
    good = shutil.copy(ROOT / "sample_models" / "cnn.keras", tmp_path / "cnn.keras")
    model_file = preflight(good, snapshot_dir=str(snapshot))
    assert model_file.path.startswith(str(snapshot)) and model_file.format == "keras"


# -- by construction: the loader builds the config it is handed ------------------------


def _builds(keras, tmp_path):
    """One file per way the loader builds a model: a Keras 3 archive, a tf.keras 2.x
    archive, a .h5 file; each a Dense with a relu."""
    keras.utils.set_random_seed(1)
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Dense(3, activation="relu", name="d")(x), name="m")
    model.save(tmp_path / "k3.keras")
    model.save(tmp_path / "k3.h5")
    files = {"keras": tmp_path / "k3.keras", "h5": tmp_path / "k3.h5"}
    try:
        import tf_keras as tfk
    except ImportError:
        return files
    xi = tfk.Input((4,), name="x")
    tfk.Model(xi, tfk.layers.Dense(3, activation="relu", name="d")(xi), name="m").save(tmp_path / "k2.keras")
    files["keras2-archive"] = tmp_path / "k2.keras"
    return files


def test_the_loader_builds_the_config_the_scan_judged_and_reads_none_from_the_file(keras, tmp_path):
    """The loader's only config is the one it is handed: a judged config that differs
    from the file's (the Dense's activation) is what gets built, for every way of building.
    There is no second reading of the file's config to compare with, so none can differ."""
    from kerinspect.engine.load import load_model
    from kerinspect.scan import scan_model_file
    from kerinspect.scan.preflight import preflight

    def dense(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Dense":
                return node
            return next((d for d in map(dense, node.values()) if d is not None), None)
        if isinstance(node, list):
            return next((d for d in map(dense, node) if d is not None), None)
        return None

    builds = _builds(keras, tmp_path)
    assert {"keras", "h5"} <= set(builds)
    for build, path in builds.items():
        model_file = preflight(path)
        scanned = scan_model_file(model_file.path, model_file.format)
        assert scanned.build == build
        assert dense(scanned.config)["config"]["activation"] == "relu"
        dense(scanned.config)["config"]["activation"] = "tanh"  # what the "judged" config says
        model = load_model(model_file, scanned).model
        assert model.get_layer("d").activation.__name__ == "tanh", build
    # the file itself still says relu: Keras's own loader builds that
    assert keras.saving.load_model(builds["keras"], compile=False).get_layer("d").activation.__name__ == "relu"
