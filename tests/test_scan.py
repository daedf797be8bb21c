"""The static pre-scan: hostile files refused with the right rule, good ones passed.

Fixtures come from ``tests/hostile.py`` (the ``hostile`` session fixture). Positive
controls prove each payload is live: cheap ones in-process (zipfile/h5py read what
the scan refuses), the Keras ones in one throwaway subprocess (marked slow).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import zipfile

import pytest

from kerinspect.errors import (
    ExitCode,
    InputFileError,
    KerinspectError,
    ModelLoadError,
    PolicyError,
    escape_text,
)
from kerinspect.scan import Limits, ScanResult, scan_config, scan_model_file
from kerinspect.scan import allowlist as _allowlist
from kerinspect.scan import denylist as _denylist
from tests.conftest import REALWORLD, ROOT, SAMPLES
from tests.hostile import HOSTILE_NAMES

REALWORLD_FILES = (
    sorted(p for p in (REALWORLD / "alibi-testing").iterdir() if p.is_file()) if REALWORLD.is_dir() else []
)
CONTROL_CHARS = [chr(c) for c in range(0x20)] + ["\x7f"]


def fmt_of(path: str | os.PathLike[str]) -> str:
    return "keras" if str(path).endswith(".keras") else "h5"


def refusal(path: str, **kwargs) -> KerinspectError:
    with pytest.raises(KerinspectError) as info:
        scan_model_file(path, fmt_of(path), **kwargs)
    return info.value


# fixture, exit code, rule, where (layer path, member or HDF5 object named in the message)
REFUSED = [
    ("lambda.keras", ExitCode.REFUSED, "lambda-bytecode", "layer 'model/encoder/evil'"),
    ("lambda.h5", ExitCode.REFUSED, "lambda-bytecode", "layer 'model/encoder/evil'"),
    ("lambda_legacy.h5", ExitCode.REFUSED, "lambda-bytecode", "layer 'model/evil'"),
    ("wrapped_lambda.keras", ExitCode.REFUSED, "lambda-bytecode", "layer 'model/dense_1/evil'"),
    ("activation_lambda.keras", ExitCode.REFUSED, "lambda-bytecode", "config.layers[1].config.activation"),
    ("gadget_unsafe.keras", ExitCode.REFUSED, "non-modeling-api", "layer 'model/dense_2'"),
    ("gadget_tfsm.keras", ExitCode.REFUSED, "tfsm-layer", "layer 'model/dense_2'"),
    ("gadget_datasets.keras", ExitCode.REFUSED, "non-modeling-api", "layer 'model/dense_2'"),
    ("activation_get_file.keras", ExitCode.REFUSED, "non-modeling-api", "layer 'model/dense_1'"),
    ("activation_ops.keras", ExitCode.REFUSED, "function-reference", "layer 'model/dense_1'"),
    ("tfsm_layer.keras", ExitCode.REFUSED, "tfsm-layer", "layer 'model/dense_1'"),
    ("torch_wrapper.keras", ExitCode.REFUSED, "torch-wrapper", "layer 'model/dense_1'"),
    ("module_os.keras", ExitCode.REFUSED, "non-keras-module", "layer 'model/dense_1'"),
    ("initializer_os.keras", ExitCode.REFUSED, "non-keras-module", "config.layers[1].config.kernel_initializer"),
    ("string_lookup_path.keras", ExitCode.REFUSED, "file-path-argument", "layer 'model/lookup'"),
    ("node_string.keras", ExitCode.REFUSED, "node-string-argument", "inbound_nodes[0].kwargs.training"),
    ("huge_units.keras", ExitCode.REFUSED, "too-many-params", "layer 'model/dense_1'"),
    ("huge_units.h5", ExitCode.REFUSED, "too-many-params", "layer 'model/dense_1'"),
    ("huge_input.keras", ExitCode.REFUSED, "input-too-large", "model/x"),
    ("zipslip.keras", ExitCode.REFUSED, "zip-member", "'../../escape.txt'"),
    ("extra_member.keras", ExitCode.REFUSED, "zip-member", "'evil.py'"),
    ("symlink.keras", ExitCode.REFUSED, "zip-member", "symbolic link"),
    ("dup_config.keras", ExitCode.REFUSED, "zip-duplicate", "'config.json'"),
    ("encrypted.keras", ExitCode.MALFORMED, "zip-encrypted", "'config.json'"),  # SAFETY row 16
    ("config_bomb.keras", ExitCode.REFUSED, "zip-bomb", "'config.json'"),
    ("deep_json.keras", ExitCode.REFUSED, "json-too-deep", "config.json"),
    ("polyglot.keras", ExitCode.REFUSED, "polyglot", "HDF5"),
    ("polyglot.h5", ExitCode.REFUSED, "polyglot", "zip"),
    ("prepended.keras", ExitCode.REFUSED, "polyglot", "zip"),
    ("appended.keras", ExitCode.REFUSED, "polyglot", "after its zip end record"),
    ("hidden_gap.keras", ExitCode.REFUSED, "zip-layout", "'config.json'"),
    ("h5_external.keras", ExitCode.REFUSED, "hdf5-external-storage", "'layers/dense/vars/0'"),
    ("h5_shape_bomb.keras", ExitCode.REFUSED, "hdf5-shape-bomb", "'layers/dense/vars/0'"),
    ("h5_softlink.keras", ExitCode.REFUSED, "hdf5-link", "'layers/dense/vars/0'"),
    ("h5_extlink.h5", ExitCode.REFUSED, "hdf5-link", "'model_weights'"),
    ("h5_virtual.h5", ExitCode.REFUSED, "hdf5-virtual-dataset", "'model_weights/stolen'"),
    ("truncated.keras", ExitCode.MALFORMED, "not-a-zip", "not a valid zip archive"),
    ("empty.keras", ExitCode.MALFORMED, "not-a-zip", "not a valid zip archive"),
    ("text.keras", ExitCode.MALFORMED, "not-a-zip", "not a valid zip archive"),
    ("no_config.keras", ExitCode.MALFORMED, "no-config", "config.json"),
    ("no_weights.keras", ExitCode.MALFORMED, "no-weights", "model.weights.h5"),
    ("bad_json.keras", ExitCode.MALFORMED, "bad-json", "line 2 column 13"),
    ("json_array.keras", ExitCode.MALFORMED, "bad-json", "JSON array at line 1 column 3"),
    ("plain.h5", ExitCode.MALFORMED, "no-model-config", "model_config"),
]

GOOD_FIXTURES = [
    "good.keras",
    "good.h5",
    "bytes_config.h5",
    "deflated.keras",
    "streamed.keras",
    "npz_weights.keras",
    "assets_ok.keras",
    "string_lookup.keras",
    "activation_relu_ref.keras",
    "weights_mismatch.keras",  # broken, but only Keras can tell: the scan has no objection
    "name_case.keras",
    *(f"name_{tag}.keras" for tag in HOSTILE_NAMES),
]


@pytest.mark.parametrize(("name", "code", "rule", "where"), REFUSED, ids=[r[0] for r in REFUSED])
def test_hostile_file_is_refused(hostile, name, code, rule, where):
    err = refusal(hostile[name])
    assert (err.exit_code, err.rule) == (code, rule), err.message
    assert isinstance(err, PolicyError if code == ExitCode.REFUSED else ModelLoadError)
    assert where in err.message
    assert err.message.endswith(f"Received: path={escape_text(hostile[name])}")
    assert not any(c in err.message for c in CONTROL_CHARS)
    assert not hostile.canary.exists()


@pytest.mark.parametrize("name", GOOD_FIXTURES)
def test_good_fixture_passes(hostile, name):
    result = scan_model_file(hostile[name], fmt_of(name))
    assert isinstance(result, ScanResult)
    assert result.format == fmt_of(name)
    assert result.unknown_classes == ()
    assert "Dense" in result.class_names or name == "string_lookup.keras"
    assert result.config["class_name"] in ("Functional", "Model")
    assert not hostile.canary.exists()


def test_scan_result_is_plain_data(hostile):
    result = scan_model_file(hostile["good.keras"], "keras")
    assert result.estimated_params == 4 * 3 + 3 + 3 * 2 + 2
    assert pickle.loads(pickle.dumps(result)) == result  # crosses the loader-process boundary as is
    assert json.loads(json.dumps(dataclasses.asdict(result)))["config"] == result.config
    assert result.config == json.loads(zipfile.ZipFile(hostile["good.keras"]).read("config.json"))


@pytest.mark.parametrize("tag", sorted(HOSTILE_NAMES))
def test_hostile_layer_name_comes_out_escaped(hostile, tag):
    err = refusal(hostile[f"evil_name_{tag}.keras"])
    assert err.rule == "tfsm-layer"
    name = HOSTILE_NAMES[tag]
    assert f"layer 'model/{escape_text(name, 120)}'" in err.message
    assert not any(c in err.message for c in CONTROL_CHARS)
    assert not any(c in err.one_line() for c in CONTROL_CHARS)


def test_unknown_classes_are_reported_not_refused(hostile):
    assert scan_model_file(hostile["unknown_layer.keras"], "keras").unknown_classes == ("TotallyCustomLayer",)
    # keras.* modules are resolved by Keras itself: declaring the name as custom cannot help
    declared = scan_model_file(hostile["unknown_layer.keras"], "keras", custom_classes={"TotallyCustomLayer"})
    assert declared.unknown_classes == ("TotallyCustomLayer",)
    custom = hostile["custom_layer.keras"]
    assert scan_model_file(custom, "keras").unknown_classes == ("MyProject>MyDense",)
    for declared_name in ("MyProject>MyDense", "MyDense"):
        assert scan_model_file(custom, "keras", custom_classes={declared_name}).unknown_classes == ()


def test_trust_model_lifts_code_refusals_only(hostile):
    for name in ("lambda.keras", "lambda.h5", "lambda_legacy.h5", "activation_lambda.keras", "activation_ops.keras"):
        result = scan_model_file(hostile[name], fmt_of(name), allow_code=True)
        assert result.unknown_classes == (), name
    for name, rule in [
        ("gadget_tfsm.keras", "tfsm-layer"),
        ("gadget_unsafe.keras", "non-modeling-api"),
        ("gadget_datasets.keras", "non-modeling-api"),
        ("tfsm_layer.keras", "tfsm-layer"),
        ("module_os.keras", "non-keras-module"),
        ("string_lookup_path.keras", "file-path-argument"),
        ("node_string.keras", "node-string-argument"),
        ("h5_external.keras", "hdf5-external-storage"),
    ]:
        assert refusal(hostile[name], allow_code=True).rule == rule, name


# ------------------------------------------------------------------ limits (patched down, never gigabytes)

LIMIT_CASES = [
    ("good.keras", {"max_config_bytes": 64}, "config-too-large"),
    ("good.keras", {"max_metadata_bytes": 16}, "config-too-large"),
    ("good.h5", {"max_config_bytes": 64}, "config-too-large"),
    ("deflated.keras", {"compression_floor_bytes": 0, "max_compression_ratio": 1.5}, "zip-bomb"),
    ("good.keras", {"max_total_uncompressed": 1000}, "zip-bomb"),
    ("good.keras", {"max_zip_members": 2}, "zip-member"),
    ("good.keras", {"max_json_depth": 3}, "json-too-deep"),
    ("good.keras", {"max_params": 22}, "too-many-params"),
    ("good.h5", {"max_params": 22}, "too-many-params"),
    ("good.keras", {"max_input_elements": 3}, "input-too-large"),
    ("good.keras", {"max_declared_weight_bytes": 16}, "hdf5-shape-bomb"),
    ("good.h5", {"max_declared_weight_bytes": 16}, "hdf5-shape-bomb"),
    ("good.keras", {"compression_floor_bytes": 0, "max_hdf5_expansion": 0.5}, "hdf5-shape-bomb"),
    ("npz_weights.keras", {"max_declared_weight_bytes": 4}, "npz-shape-bomb"),
]


@pytest.mark.parametrize(("name", "patch", "rule"), LIMIT_CASES, ids=[f"{c[0]}-{c[2]}-{next(iter(c[1]))}" for c in LIMIT_CASES])
def test_patched_limit_is_enforced(hostile, name, patch, rule):
    assert scan_model_file(hostile[name], fmt_of(name)).unknown_classes == ()  # passes at the defaults
    limits = dataclasses.replace(Limits(), **patch)
    err = refusal(hostile[name], limits=limits)
    assert (err.rule, err.exit_code) == (rule, ExitCode.REFUSED)


def test_params_at_exactly_the_limit_pass(hostile):
    assert scan_model_file(hostile["good.keras"], "keras", Limits(max_params=23)).estimated_params == 23


# ------------------------------------------------------------------ scan_config on hand-written configs


def _legacy_sequential(units: int, features: int) -> dict:
    return {
        "class_name": "Sequential",
        "config": {
            "name": "seq",
            "layers": [
                {"class_name": "Dense", "config": {"name": "a", "units": units, "batch_input_shape": [None, features]}},
                {"class_name": "Dense", "config": {"name": "b", "units": 2}},
            ],
        },
    }


def test_legacy_config_without_build_config_propagates_shapes():
    params, names, unknown = scan_config(_legacy_sequential(30, 7))
    assert params == 7 * 30 + 30 + 30 * 2 + 2
    assert (names, unknown) == (("Dense", "Sequential"), ())
    # neither dimension alone is big; only their product, known through propagation, is
    with pytest.raises(PolicyError) as info:
        scan_config(_legacy_sequential(100_000, 100_000))
    assert info.value.rule == "too-many-params"
    assert "layer 'seq/a'" in info.value.message
    assert "Received" not in info.value.message


def test_compile_config_is_inert_but_still_checked_for_attacks(hostile):
    cfg = json.loads(zipfile.ZipFile(hostile["good.keras"]).read("config.json"))
    cfg["compile_config"] = {
        "loss": {"module": "my_project.losses", "class_name": "function", "config": "my_loss", "registered_name": "my_loss"},
        "metrics": [{"module": "my_project.metrics", "class_name": "MyMetric", "config": {}, "registered_name": None}],
    }
    assert scan_config(cfg)[2] == ()  # compile=False never deserializes the top-level compile_config
    cfg["compile_config"]["optimizer"] = {"module": "os", "class_name": "system", "config": {}}
    with pytest.raises(PolicyError, match="module 'os'"):
        scan_config(cfg)


@pytest.mark.parametrize(
    "config",
    [{"class_name": "Functional"}, {"class_name": 3, "config": {}}, {"config": {"layers": []}}],
    ids=["no-config", "int-class", "no-class"],
)
def test_config_that_is_not_a_model_is_malformed(config):
    with pytest.raises(ModelLoadError) as info:
        scan_config(config)
    assert info.value.rule == "bad-config"


def test_scan_config_checks_every_nested_dict():
    cfg = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "m",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "Dense",
                    "config": {
                        "name": "d",
                        "units": 2,
                        "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}},
                        "kernel_regularizer": {
                            "module": "keras.regularizers",
                            "class_name": "L2",
                            "config": {"l2": {"module": "builtins", "class_name": "eval", "config": {}}},
                        },
                    },
                }
            ],
        },
    }
    with pytest.raises(PolicyError) as info:
        scan_config(cfg)
    assert info.value.rule == "non-keras-module"
    assert "layer 'm/d'" in info.value.message


# ------------------------------------------------------------------ good models from elsewhere


SAMPLE_FILES = sorted(SAMPLES.glob("*.keras")) + [SAMPLES / "legacy_mlp.h5"]


#: Sample models whose classes are the user's own (sample_models/custom_layers.py): the
#: scan reports them unknown (they load with --custom-objects) and estimates them by policy.
CUSTOM_SAMPLES = {"transformer.keras": ("kerinspect_samples>TokenAndPositionEmbedding",
                                        "kerinspect_samples>TransformerBlock"),
                  "attention_kinds.keras": ("kerinspect_samples>AttentionPooling",)}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_models_pass_with_exact_param_estimate(keras, path):
    result = scan_model_file(path, fmt_of(path))
    if path.name in CUSTOM_SAMPLES:
        assert result.unknown_classes == CUSTOM_SAMPLES[path.name]
        return
    assert result.unknown_classes == ()
    model = keras.saving.load_model(path, compile=False)
    assert result.estimated_params == model.count_params()


def test_every_factory_model_passes_with_exact_param_estimate(keras, factories, saved, tmp_path):
    for name, path in saved.items():
        result = scan_model_file(path, "keras")
        assert result.unknown_classes == (), name
        model = keras.saving.load_model(path, compile=False)
        assert result.estimated_params == model.count_params(), name


def _zoo(keras):
    """One model with every layer the estimator has a formula for."""
    layers = keras.layers
    img = keras.Input((9, 9, 3), name="img")
    h = layers.Conv2D(4, 3, padding="same", name="conv")(img)
    h = layers.Conv2D(4, 3, groups=2, strides=2, name="grouped")(h)
    h = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(h)
    h = layers.SeparableConv2D(5, 2, name="sep")(h)
    h = layers.Conv2DTranspose(3, 2, name="tconv")(h)
    h = layers.BatchNormalization(center=False, name="bn")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    vol = keras.Input((4, 4, 4, 2), name="vol")
    v = layers.Conv3D(2, 2, use_bias=False, name="conv3")(vol)
    v = layers.Flatten(name="flat")(v)
    seq = keras.Input((6, 5), name="seq")
    s = layers.Conv1D(4, 2, name="conv1")(seq)
    s = layers.SimpleRNN(3, return_sequences=True, name="srnn")(s)
    s = layers.GRU(4, reset_after=False, return_sequences=True, name="gru")(s)
    s = layers.Bidirectional(layers.LSTM(2, return_sequences=True), name="bi")(s)
    s = layers.TimeDistributed(layers.Dense(3), name="td")(s)
    s = layers.LayerNormalization(name="ln")(s)
    s = layers.MultiHeadAttention(2, 3, value_dim=4, name="mha")(s, s)
    s = layers.GlobalMaxPooling1D(name="gmp")(s)
    tok = keras.Input((7,), dtype="int32", name="tok")
    t = layers.Flatten(name="tflat")(layers.Embedding(11, 3, name="emb")(tok))
    h = layers.Concatenate(name="cat")([h, v, s, t])
    return keras.Model([img, vol, seq, tok], layers.Dense(2, name="out")(h), name="zoo")


def test_estimator_formulas_match_keras_in_both_formats(keras, tmp_path):
    keras.utils.set_random_seed(0)
    model = _zoo(keras)
    model.save(tmp_path / "zoo.keras")
    model.save(tmp_path / "zoo.h5")
    expected = model.count_params()
    assert scan_model_file(tmp_path / "zoo.keras", "keras").estimated_params == expected
    assert scan_model_file(tmp_path / "zoo.h5", "h5").estimated_params == expected


@pytest.mark.slow
def test_keras_applications_pass_in_both_formats(keras, tmp_path):
    """Stock architectures use private layers (ConvNeXt's LayerScale) and Normalization."""
    for name, build in [
        ("effnet", lambda: keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=3)),
        ("convnext", lambda: keras.applications.ConvNeXtTiny(input_shape=(32, 32, 3), weights=None, classes=3)),
    ]:
        model = build()
        for fmt in ("keras", "h5"):
            model.save(tmp_path / f"{name}.{fmt}")
            result = scan_model_file(tmp_path / f"{name}.{fmt}", fmt)
            assert result.unknown_classes == (), name
            if name == "effnet":
                assert result.estimated_params == model.count_params()
            else:  # LayerScale has no formula: a lower bound, within 0.1%
                assert 0.999 * model.count_params() <= result.estimated_params <= model.count_params()


@pytest.mark.realworld
@pytest.mark.skipif(not REALWORLD_FILES, reason="../shared/realworld is absent")
@pytest.mark.parametrize("path", REALWORLD_FILES, ids=lambda p: p.name)
def test_realworld_files_pass(keras, path):
    result = scan_model_file(path, fmt_of(path))
    assert result.unknown_classes == ()
    assert result.estimated_params and result.estimated_params > 0
    if path.suffix == ".keras":
        assert result.estimated_params == keras.saving.load_model(path, compile=False).count_params()
    else:  # Keras 3 cannot load these legacy files; the same model saved as .keras must agree
        twin = next(path.parent.glob(path.name.split("-tf")[0] + "-tf*.keras"))
        assert result.estimated_params == scan_model_file(twin, "keras").estimated_params


# ------------------------------------------------------------------ non-files never hang


@pytest.mark.parametrize("name", ["fifo.keras", "dir.keras"])
def test_non_regular_files_are_refused_without_blocking(hostile, name):
    def hung(signum, frame):
        raise TimeoutError(f"scan_model_file blocked on {name}")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(InputFileError) as info:
            scan_model_file(hostile[name], "keras")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert info.value.rule == "not-a-file"


def test_unknown_format_is_a_programming_error(hostile):
    with pytest.raises(ValueError):
        scan_model_file(hostile["good.keras"], "zip")


# ------------------------------------------------------------------ no TensorFlow, no Keras


def test_scan_imports_neither_tensorflow_nor_keras():
    code = textwrap.dedent(
        f"""
        import sys
        from kerinspect.scan import scan_model_file
        for path in {[str(p) for p in SAMPLE_FILES]!r}:
            scan_model_file(path, "keras" if path.endswith(".keras") else "h5")
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
        assert not heavy, heavy
        print("ok", len({[str(p) for p in SAMPLE_FILES]!r}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", str(len(SAMPLE_FILES))]


# ------------------------------------------------------------------ the allowlist matches the installed Keras


def _generator():
    spec = importlib.util.spec_from_file_location("gen_allowlist", ROOT / "scripts" / "gen_allowlist.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_allowlist_matches_installed_keras(keras):
    gen = _generator()
    committed = (ROOT / "kerinspect" / "scan" / "allowlist.py").read_text()
    assert gen.render(gen.collect()) == committed, "stale: run python scripts/gen_allowlist.py"
    assert _allowlist.KERAS_VERSION == keras.__version__


def test_committed_hub_allowlist_matches_installed_keras_hub(keras):
    """kerinspect/scan/allowlist_hub.py is what the generator makes from the installed
    keras-hub (skipped without it: pip install 'kerinspect[hub]')."""
    keras_hub = pytest.importorskip("keras_hub")
    from kerinspect.scan import allowlist_hub

    gen = _generator()
    committed = (ROOT / "kerinspect" / "scan" / "allowlist_hub.py").read_text()
    assert gen.render_hub(gen.collect_hub()) == committed, "stale: run python scripts/gen_allowlist.py"
    assert allowlist_hub.KERAS_HUB_VERSION == keras_hub.__version__
    assert allowlist_hub.CLASSES["keras_hub>BertBackbone"] == "keras_hub.src.models.bert.bert_backbone:BertBackbone"
    assert allowlist_hub.FUNCTIONS == {"keras_hub>gelu_approximate", "keras_nlp>gelu_approximate"}
    assert not any(name.startswith("Text>") for name in allowlist_hub.CLASSES)  # live, never allowed
    assert "Text" in allowlist_hub.PACKAGES


def test_denylist_matches_keras_and_is_excluded(keras):
    from keras.src.saving import serialization_lib

    assert serialization_lib.NON_MODELING_APIS == _denylist.NON_MODELING_APIS
    assert set(serialization_lib.BUILTIN_MODULES) == set(_denylist.BUILTIN_FUNCTION_MODULES)
    for name in _denylist.DENIED_CLASSES:
        assert hasattr(keras.layers, name), name  # the names are real Keras classes...
        assert not any(name in names for names in _allowlist.CLASSES.values()), name  # ...and not allowed
    for excluded in _denylist.EXCLUDED_FUNCTIONS:
        assert not any(excluded in names for names in _allowlist.FUNCTIONS.values())
        assert excluded not in _allowlist.BUILTIN_FUNCTIONS
    assert "Dense" in _allowlist.CLASSES["keras.layers"]
    assert "Functional" in _allowlist.CLASSES["keras.src.models.functional"]


# ------------------------------------------------------------------ positive controls: the payloads are live


def test_container_fixtures_are_live(hostile):
    import h5py
    import numpy as np

    # zipfile (and so Keras) reads the *last* config.json: the Lambda one
    assert b'"Lambda"' in zipfile.ZipFile(hostile["dup_config.keras"]).read("config.json")
    # a polyglot opens as both formats
    assert zipfile.ZipFile(hostile["polyglot.keras"]).read("config.json")
    with h5py.File(hostile["polyglot.keras"], "r") as f:
        assert "model_config" in f.attrs
    assert zipfile.ZipFile(hostile["appended.keras"]).read("config.json")
    assert zipfile.ZipFile(hostile["prepended.keras"]).read("config.json")
    assert zipfile.ZipFile(hostile["hidden_gap.keras"]).testzip() is None  # every member still reads fine
    # zipslip names are really in the archive; the bomb really declares 200 MB
    names = zipfile.ZipFile(hostile["zipslip.keras"]).namelist()
    assert {"../../escape.txt", "/tmp/abs.txt"} <= set(names)
    assert zipfile.ZipFile(hostile["config_bomb.keras"]).getinfo("config.json").file_size > 200 << 20
    with pytest.raises(RuntimeError, match="password"):
        zipfile.ZipFile(hostile["encrypted.keras"]).read("config.json")
    # HDF5: the external dataset reads the secret, the virtual one another file, the link resolves
    with zipfile.ZipFile(hostile["h5_external.keras"]) as z, h5py.File(z.open("model.weights.h5"), "r") as f:
        ds = f["layers/dense/vars/0"]
        assert ds.external
    with h5py.File(hostile["h5_virtual.h5"], "r") as f:
        assert f["model_weights/stolen"][()].tolist() == np.arange(12).reshape(4, 3).tolist()
    with h5py.File(hostile["h5_extlink.h5"], "r") as f:
        assert f.get("model_weights", getlink=True).__class__ is h5py.ExternalLink
        assert len(f["model_weights"].keys()) > 0
    with zipfile.ZipFile(hostile["h5_shape_bomb.keras"]) as z, h5py.File(z.open("model.weights.h5"), "r") as f:
        assert f["layers/dense/vars/0"].shape == (2**40,)


def test_external_storage_fixture_reads_the_secret(hostile, tmp_path):
    import h5py
    import numpy as np

    weights = tmp_path / "w.h5"
    weights.write_bytes(zipfile.ZipFile(hostile["h5_external.keras"]).read("model.weights.h5"))
    with h5py.File(weights, "r") as f:
        assert f["layers/dense/vars/0"][()].ravel().tolist() == np.arange(12, dtype="f4").tolist()


CONTROLS = r"""
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import keras, tensorflow as tf
import keras.src.datasets.mnist as mnist

paths, out_dir = json.loads(sys.argv[1]), sys.argv[2]
results, calls = {}, []

class Intercepted(Exception):
    pass

def record(kind):
    def fake(*args, **kwargs):
        calls.append([kind, [str(a) for a in args], {k: str(v) for k, v in kwargs.items()}])
        raise Intercepted(kind)
    return fake

tf.saved_model.load = record("saved_model.load")
mnist.get_file = record("get_file")

def run(name, safe_mode):
    try:
        model = keras.saving.load_model(paths[name], safe_mode=safe_mode, compile=False)
        extra = {}
        if name == "string_lookup_path.keras":
            extra["vocabulary"] = [str(w) for w in model.get_layer("lookup").get_vocabulary()]
        results[name] = {"loaded": True, **extra}
    except BaseException as e:
        results[name] = {"loaded": False, "error": f"{type(e).__name__}: {e}"[:300]}

for name in ("lambda.keras", "lambda.h5", "lambda_legacy.h5"):
    os.environ["KI_CANARY"] = os.path.join(out_dir, name + ".canary")
    run(name, safe_mode=False)
for name in ("gadget_tfsm.keras", "gadget_datasets.keras"):  # Keras's own safe mode does not stop these
    run(name, safe_mode=True)
run("string_lookup_path.keras", safe_mode=False)
print(json.dumps({"results": results, "calls": calls}))
"""


@pytest.mark.slow
def test_keras_payloads_are_live_in_a_throwaway_process(hostile, tmp_path):
    names = ["lambda.keras", "lambda.h5", "lambda_legacy.h5", "gadget_tfsm.keras", "gadget_datasets.keras",
             "string_lookup_path.keras"]
    paths = {n: hostile[n] for n in names}
    env = {**os.environ, "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / ".keras"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", CONTROLS, json.dumps(paths), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("lambda.keras", "lambda.h5", "lambda_legacy.h5"):  # the bytecode ran
        assert (tmp_path / f"{name}.canary").read_text() == "pwned", report["results"][name]
    kinds = {call[0]: call for call in report["calls"]}
    assert str(hostile.savedmodel) in kinds["saved_model.load"][1]  # TFSMLayer gadget, under safe_mode=True
    assert "storage.googleapis.com" in json.dumps(kinds["get_file"])  # mnist gadget: a download
    assert "TOPSECRET" in report["results"]["string_lookup_path.keras"]["vocabulary"]
    assert not hostile.canary.exists()


# ------------------------------------------------------------------ code and custom classes together


def _code_and_custom(custom_first, function=None):
    lam = {"class_name": "Lambda", "module": "keras.layers", "inbound_nodes": [],
           "config": {"name": "lam", "function": function or {"class_name": "__lambda__", "config": {"code": "YQ=="}}}}
    block = {"class_name": "Block", "module": None, "registered_name": "Custom>Block", "config": {"name": "b"},
             "inbound_nodes": []}
    return {"class_name": "Functional", "config": {"name": "m", "layers": [block, lam] if custom_first else [lam, block]}}


@pytest.mark.parametrize("custom_first", [True, False])
def test_code_and_an_unknown_class_are_named_in_one_refusal(custom_first):
    """A file that needs both --custom-objects and --trust-model says so at once,
    whichever comes first in the config (issue 11 item 5)."""
    with pytest.raises(PolicyError) as info:
        scan_config(_code_and_custom(custom_first))
    e = info.value
    assert e.rule == "lambda-bytecode" and "(layer 'm/lam', at config.layers[" in e.message
    assert "the model also uses custom class 'Custom>Block', which is not loaded" in e.message
    assert "custom_objects FILE.py that defines 'Custom>Block'" in e.hint and "trust_model" in e.hint
    assert e.hint_parts.parameters == ("custom_objects", "trust_model")  # the CLI shows their flags
    # the class declared: the code alone is refused, as before
    with pytest.raises(PolicyError) as info:
        scan_config(_code_and_custom(custom_first), custom_classes={"Custom>Block"})
    assert "Custom>Block" not in info.value.message and info.value.hint == "only if you trust this file: trust_model"
    # the code trusted: the class is reported unknown (for the loader's one line)
    assert scan_config(_code_and_custom(custom_first), allow_code=True)[2] == ("Custom>Block",)


def test_a_registered_function_and_an_unknown_class_need_only_custom_objects():
    function = {"class_name": "function", "module": "builtins", "config": "vae>sampling", "registered_name": "function"}
    with pytest.raises(PolicyError) as info:
        scan_config(_code_and_custom(False, function))
    assert info.value.rule == "function-reference" and "'Custom>Block'" in info.value.message
    assert info.value.hint == ("pass custom_objects FILE.py that defines 'Custom>Block' and defines and "
                               "registers the function")
    assert scan_config(_code_and_custom(False, function), custom_classes={"Custom>Block", "vae>sampling"})[2] == ()


# ------------------------------------------------------------------ tf.keras 2.13-2.15 archives


def _keras2_archive(path, layer):
    """A ``.keras`` archive as tf.keras 2.13-2.15 wrote it: a Keras 2 config in the new
    serialization form, its model class from ``keras.src.engine.functional``."""
    import io

    import h5py

    def entry(cls, name, config, nodes, **extra):
        return {"module": "keras.layers", "class_name": cls, "registered_name": None, "name": name,
                "config": {"name": name, **config}, "inbound_nodes": nodes, **extra}

    layers = [entry("InputLayer", "x", {"batch_input_shape": [None, 4], "dtype": "float32"}, []), layer(entry)]
    config = {"module": "keras.src.engine.functional", "class_name": "Functional", "registered_name": None,
              "config": {"name": "model", "layers": layers, "input_layers": [["x", 0, 0]],
                         "output_layers": [[layers[-1]["name"], 0, 0]]}}
    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_group("layers")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "2.15.0"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", weights.getvalue())
    return path


_MHA = {"num_heads": 2, "key_dim": 2}
KERAS2_ARCHIVES = {
    # name: (the last layer, given the entry builder; None when it scans, else the rule)
    "dense": (lambda e: e("Dense", "d", {"units": 3}, [[["x", 0, 0, {}]]]), None),
    "mha-reference": (lambda e: e("MultiHeadAttention", "mha", _MHA, [[["x", 0, 0, {"value": ["x", 0, 0]}]]]), None),
    "mha-string": (lambda e: e("MultiHeadAttention", "mha", _MHA, [[["x", 0, 0, {"value": "/etc/passwd"}]]]),
                   "node-string-argument"),
    "module-os": (lambda e: e("system", "d", {}, [[["x", 0, 0, {}]]], module="os"), "non-keras-module"),
    "lambda": (lambda e: e("Lambda", "lam", {"function": ["YQ==", None, None], "function_type": "lambda"},
                           [[["x", 0, 0, {}]]]), "lambda-bytecode"),
}


@pytest.mark.parametrize("name", sorted(KERAS2_ARCHIVES))
def test_keras2_archives_are_judged_as_the_loader_reads_them(tmp_path, name):
    """The Keras 2 config of a tf.keras 2.13-2.15 archive is scanned in the form the
    loader reads it (scan/keras2.py): Keras 2 tensor references pass, strings, foreign
    modules and bytecode are refused as in any other file."""
    layer, rule = KERAS2_ARCHIVES[name]
    path = _keras2_archive(tmp_path / f"{name}.keras", layer)
    if rule is None:
        result = scan_model_file(path, "keras")
        assert result.unknown_classes == ()
        # Dense 4x3 + 3; attention: query, key, value 4x2x2 + 2x2 each, output 2x2x4 + 4
        assert result.estimated_params == (15 if name == "dense" else 3 * (16 + 4) + 16 + 4)
        return
    with pytest.raises(PolicyError) as info:
        scan_model_file(path, "keras")
    assert info.value.rule == rule


def test_a_keras2_archive_custom_class_is_unknown_by_its_registered_name(tmp_path):
    path = _keras2_archive(tmp_path / "custom.keras", lambda e: e(
        "Block", "b", {}, [[["x", 0, 0, {}]]], module="my_project.layers", registered_name="Custom>Block"))
    assert scan_model_file(path, "keras").unknown_classes == ("Custom>Block",)
    assert scan_model_file(path, "keras", custom_classes={"Custom>Block"}).unknown_classes == ()
