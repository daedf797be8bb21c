"""keras-hub models (``pip install 'kerinspect[hub]'``): tiny BertBackbone and GPT2Backbone
built offline with random weights (no preset, nothing downloaded), saved to ``.keras`` and
opened the way users open them, through the real worker, with no option beyond the file.

Every inner call of each TransformerEncoder/TransformerDecoder is a row whose tensor equals
a plain-Keras replay of keras-hub's ``call`` by hand; the attention probabilities equal the
attention layer's own ``return_attention_scores=True``; the final outputs equal
``model.predict``. The scan side (allowlist, file and URL values, a missing keras-hub)
needs no TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from kerinspect.errors import ExitCode, KerinspectError, ModelLoadError, PolicyError
from kerinspect.scan import scan_model_file
from tests.conftest import ROOT
from tests.hostile import members, with_config_edited

if importlib.util.find_spec("keras_hub") is None:
    pytest.skip("keras-hub is not installed (pip install 'kerinspect[hub]')", allow_module_level=True)

VOCAB, HEADS, HIDDEN, MAX_LEN = 100, 2, 16, 16
BATCH, SEQ = 6, 10
RTOL, ATOL = 2e-3, 1e-5


@pytest.fixture(scope="module")
def keras_hub(keras):
    return pytest.importorskip("keras_hub")


@pytest.fixture(scope="module")
def models(keras, keras_hub, tmp_path_factory):
    """``{"bert": (model, path), "gpt2": (model, path)}``, each saved once."""
    d = tmp_path_factory.mktemp("hub")
    sizes = dict(vocabulary_size=VOCAB, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN,
                 intermediate_dim=32, max_sequence_length=MAX_LEN)
    keras.utils.set_random_seed(7)
    out = {}
    for name, cls in (("bert", keras_hub.models.BertBackbone), ("gpt2", keras_hub.models.GPT2Backbone)):
        model = cls(**sizes)
        path = d / f"{name}.keras"
        model.save(path)
        out[name] = (model, str(path))
    return out


def _inputs(kind):
    """Token ids, segment ids and a padding mask that pads the last 3 tokens of 2 samples."""
    rng = np.random.default_rng(5)
    padding = np.ones((BATCH, SEQ), "int32")
    padding[-2:, -3:] = 0
    data = {"token_ids": rng.integers(0, VOCAB, (BATCH, SEQ)).astype("int32"), "padding_mask": padding}
    if kind == "bert":
        data["segment_ids"] = (np.arange(SEQ)[None, :] >= SEQ // 2).repeat(BATCH, 0).astype("int32")
    return data


def _summary(path, *args):
    from click.testing import CliRunner

    from kerinspect.cli import cli

    r = CliRunner().invoke(cli, ["summary", path, "--format", "json", *args])
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _self_mask(padding, causal):
    """keras-hub's merged self-attention mask, by hand: key j is visible to query i."""
    mask = np.repeat(padding[:, None, :], padding.shape[1], axis=1)
    if causal:
        mask = np.minimum(mask, np.tril(np.ones(mask.shape[1:], "int32"))[None])
    return mask


def _blocks(model):
    return [layer for layer in model.layers if layer.name.startswith("transformer_layer_")]


# ------------------------------------------------------------------ the replay by hand


def _bert_by_hand(model, data):
    """Every inner tensor of BertBackbone, from its sub-layers called as keras-hub's code does."""
    ref = {}
    tok = ref["token_embedding"] = model.get_layer("token_embedding")(data["token_ids"])
    pos = ref["position_embedding"] = model.get_layer("position_embedding")(tok)
    seg = ref["segment_embedding"] = model.get_layer("segment_embedding")(data["segment_ids"])
    x = ref["embeddings_add"] = model.get_layer("embeddings_add")((tok, pos, seg))
    x = ref["embeddings_layer_norm"] = model.get_layer("embeddings_layer_norm")(x)
    mask = _self_mask(data["padding_mask"], causal=False)
    for block in _blocks(model):
        x = _encoder_by_hand(block, x, mask, ref)
    ref["pooled_dense"] = model.get_layer("pooled_dense")(x[:, 0, :])
    return {k: np.asarray(v) for k, v in ref.items()}, mask


def _attention_by_hand(att, x, mask, where, ref):
    a, scores = att(query=x, value=x, attention_mask=mask, return_attention_scores=True)
    ref[f"{where}:output"], ref[f"{where}:attention_scores"] = a, scores
    for sub in (att._query_dense, att._key_dense, att._value_dense):
        ref[f"{where}/{sub.name}"] = sub(x)
    return a


def _encoder_by_hand(block, x, mask, ref):
    """keras-hub TransformerEncoder.call (normalize_first=False) at inference."""
    b = block.name
    assert not block.normalize_first
    a = _attention_by_hand(block._self_attention_layer, x, mask, f"{b}/{block._self_attention_layer.name}", ref)
    ref[f"{b}/{block._self_attention_dropout.name}"] = a
    h = ref[f"{b}/{block._self_attention_layer_norm.name}"] = block._self_attention_layer_norm(x + a)
    f = ref[f"{b}/{block._feedforward_intermediate_dense.name}"] = block._feedforward_intermediate_dense(h)
    f = ref[f"{b}/{block._feedforward_output_dense.name}"] = block._feedforward_output_dense(f)
    ref[f"{b}/{block._feedforward_dropout.name}"] = f
    out = ref[f"{b}/{block._feedforward_layer_norm.name}"] = ref[b] = block._feedforward_layer_norm(h + f)
    return out


def _gpt2_by_hand(model, data):
    ref = {}
    tok = ref["token_embedding"] = model.get_layer("token_embedding")(data["token_ids"])
    pos = ref["position_embedding"] = model.get_layer("position_embedding")(tok)
    x = ref["embeddings_add"] = model.get_layer("embeddings_add")((tok, pos))
    mask = _self_mask(data["padding_mask"], causal=True)
    for block in _blocks(model):
        x = _decoder_by_hand(block, x, mask, ref)
    ref["layer_norm"] = model.get_layer("layer_norm")(x)
    return {k: np.asarray(v) for k, v in ref.items()}, mask


def _decoder_by_hand(block, x, mask, ref):
    """keras-hub TransformerDecoder.call (normalize_first=True, no cross-attention, no cache)."""
    b = block.name
    assert block.normalize_first
    n = ref[f"{b}/{block._self_attention_layer_norm.name}"] = block._self_attention_layer_norm(x)
    a = _attention_by_hand(block._self_attention_layer, n, mask, f"{b}/{block._self_attention_layer.name}", ref)
    ref[f"{b}/{block._self_attention_dropout.name}"] = a
    h = x + a
    n2 = ref[f"{b}/{block._feedforward_layer_norm.name}"] = block._feedforward_layer_norm(h)
    f = ref[f"{b}/{block._feedforward_intermediate_dense.name}"] = block._feedforward_intermediate_dense(n2)
    f = ref[f"{b}/{block._feedforward_output_dense.name}"] = block._feedforward_output_dense(f)
    ref[f"{b}/{block._feedforward_dropout.name}"] = f
    ref[b] = h + f
    return h + f


BY_HAND = {"bert": _bert_by_hand, "gpt2": _gpt2_by_hand}


def _inner_paths(model):
    """Every sub-layer each transformer block calls at inference, as kerinspect names it."""
    paths = []
    for block in _blocks(model):
        att = block._self_attention_layer
        subs = [block._self_attention_layer_norm, block._self_attention_dropout,
                block._feedforward_intermediate_dense, block._feedforward_output_dense,
                block._feedforward_dropout, block._feedforward_layer_norm]
        paths.append(f"{block.name}/{att.name}")
        paths += [f"{block.name}/{s.name}" for s in subs]
        paths += [f"{block.name}/{att.name}/{s.name}"
                  for s in (att._query_dense, att._key_dense, att._value_dense, att._output_dense)]
    return paths


# ------------------------------------------------------------------ tests: the worker, the file alone


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_backbone_loads_with_no_option_and_synthetic_inputs_are_meaningful(models, kind):
    model, path = models[kind]
    report = _summary(path)
    assert report["model"]["class_name"] == type(model).__name__
    inputs = {i["name"]: i for i in report["inputs"]}
    cls = type(model).__name__
    assert inputs["token_ids"]["note"].startswith(f"token ids in [0, {VOCAB}) for {cls} (vocabulary_size): ")
    assert inputs["padding_mask"]["note"] == f"padding mask for {cls}: ones over each sample's sequence, zeros after"
    rows = {r["path"]: r for r in report["layers"]}
    ids = rows["token_ids"]["outputs"][0]["stats"]
    assert 0 <= ids["min"] and ids["max"] < VOCAB and float(ids["max"]).is_integer() and ids["std"] > 0
    mask = rows["padding_mask"]["outputs"][0]["stats"]  # sequences of 2 to 8 of the 8 steps, then padding
    assert mask["min"] == 0 and mask["max"] == 1 and 0.4 < mask["mean"] < 0.9
    if kind == "bert":
        assert inputs["segment_ids"]["note"] == f"segment ids 0 (one segment) for {cls}"
        seg = rows["segment_ids"]["outputs"][0]["stats"]
        assert seg["min"] == 0 and seg["max"] == 0
    # every inner call of every transformer block is a row, under its block
    for p in _inner_paths(model):
        assert p in rows, p
        assert rows[p]["called"] and rows[p]["depth"] >= 1, p
        assert rows[p]["parent"] == p.rsplit("/", 1)[0], p
    for block in _blocks(model):
        att = rows[f"{block.name}/{block._self_attention_layer.name}"]
        names = [o["name"] for o in att["outputs"]]
        assert names == ["output", "attention_scores"], names
        assert att["outputs"][1]["shape"] == [32, HEADS, 8, 8]  # (batch, heads, queries, keys)
        assert len(att["attention"]["heads"]) == HEADS
        if kind == "gpt2":  # causal: the upper triangle, 28 of the 64 weights of each head, is exactly 0
            assert att["outputs"][1]["stats"]["zero_fraction"] >= 28 / 64  # and the padded keys


def test_sequence_length_stays_within_the_position_table(models):
    """--dim beyond max_sequence_length would overrun the position embedding: it is capped."""
    _, path = models["gpt2"]
    report = _summary(path, "--dim", "40", "--samples", "2")
    assert {tuple(i["shape"]) for i in report["inputs"]} == {(2, MAX_LEN)}


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_inner_tensors_and_attention_match_plain_keras(models, kind, tmp_path):
    """The same inputs (with padding) through --input: every inner tensor equals the replay
    by hand, elementwise (kerinspect.activations) and in the report's statistics."""
    import kerinspect

    model, path = models[kind]
    data = _inputs(kind)
    npz = tmp_path / "x.npz"
    np.savez(npz, **data)
    ref, mask = BY_HAND[kind](model, data)
    acts = kerinspect.activations(path, str(npz))
    for key, want in ref.items():
        got = acts[key if key in acts else f"{key}:output"]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=key)
    # the attention probabilities: masked keys (padding; the future, for GPT2) get exactly 0
    for block in _blocks(model):
        scores = acts[f"{block.name}/{block._self_attention_layer.name}:attention_scores"]
        assert scores.shape == (BATCH, HEADS, SEQ, SEQ)
        hidden = np.broadcast_to(mask[:, None] == 0, scores.shape)
        assert np.all(scores[hidden] == 0) and hidden.any()
        np.testing.assert_allclose(scores.sum(-1), 1, rtol=1e-5)
        if kind == "gpt2":
            assert np.all(np.triu(scores, k=1) == 0)
    # the final outputs are model.predict's
    out = model.predict(data, verbose=0)
    last = {"bert": {"sequence_output": _blocks(model)[-1].name, "pooled_output": "pooled_dense"},
            "gpt2": {"sequence_output": "layer_norm"}}[kind]
    for name, key in last.items():
        got = acts[key if key in acts else f"{key}:output"]
        np.testing.assert_allclose(got, out[name] if isinstance(out, dict) else out, rtol=RTOL, atol=ATOL)
    # the report's statistics of the same tensors, through the CLI
    rows = {r["path"]: r for r in _summary(path, "--input", str(npz))["layers"]}
    for key, want in ref.items():
        row_path, _, output = key.partition(":")
        st = next(o for o in rows[row_path]["outputs"] if o["name"] == (output or "output"))["stats"]
        np.testing.assert_allclose([st["mean"], st["std"], st["min"], st["max"]],
                                   [want.mean(), want.std(), want.min(), want.max()],
                                   rtol=RTOL, atol=ATOL, err_msg=key)


# ------------------------------------------------------------------ where keras_hub is imported


def test_scan_never_imports_keras_hub_and_the_worker_only_when_needed(keras, models, tmp_path):
    _, path = models["bert"]
    plain = str(tmp_path / "plain.keras")
    x = keras.Input((3,))
    keras.Model(x, keras.layers.Dense(2)(x)).save(plain)
    code = (
        "import sys\n"
        "from kerinspect.scan import scan_model_file\n"
        f"r = scan_model_file({path!r}, 'keras')\n"
        "print(r.hub_classes, 'keras_hub' in sys.modules, 'keras' in sys.modules)\n"
        "from kerinspect.engine.load import scan_and_load\n"
        "from kerinspect.scan.preflight import ModelFile\n"
        "from kerinspect.spec import LoadOptions\n"
        "import os\n"
        f"for p in ({plain!r}, {path!r}):\n"
        "    scan_and_load(ModelFile(p, 'keras', os.path.getsize(p)), LoadOptions())\n"
        "    print('keras_hub' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["('keras_hub>BertBackbone',) False False", "False", "True"]


def test_without_keras_hub_the_error_names_the_extra(models, monkeypatch):
    from kerinspect.engine.load import scan_and_load
    from kerinspect.scan.preflight import ModelFile
    from kerinspect.spec import LoadOptions

    _, path = models["bert"]
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # `import keras_hub` raises ImportError
    import os

    with pytest.raises(ModelLoadError) as info:
        scan_and_load(ModelFile(path, "keras", os.path.getsize(path)), LoadOptions())
    e = info.value
    assert e.rule == "keras-hub-missing" and e.exit_code == ExitCode.MALFORMED
    line = e.one_line()
    assert "'keras_hub>BertBackbone'" in line and "pip install 'kerinspect[hub]'" in line
    assert "\n" not in line


def test_missing_hub_message_tells_not_installed_from_broken():
    from kerinspect.engine.hub import missing_hub_error

    absent = ModuleNotFoundError("No module named 'keras_hub'", name="keras_hub")
    e = missing_hub_error(["keras_hub>BertBackbone"], "m.keras", absent)
    assert "keras-hub is not installed" in e.message and e.hint == "pip install 'kerinspect[hub]'"
    broken = ImportError("libtensorflow_text.so: cannot open shared object file")
    assert "failed to import (ImportError: libtensorflow_text.so" in missing_hub_error(["x"], "m", broken).message


# ------------------------------------------------------------------ the static scan of keras-hub configs


@pytest.fixture(scope="module")
def task_file(keras, keras_hub, tmp_path_factory):
    """A BertTextClassifier with its preprocessor and tokenizer (vocabulary in the assets)."""
    keras.utils.set_random_seed(1)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    pre = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocab), sequence_length=8
    )
    backbone = keras_hub.models.BertBackbone(VOCAB, 1, HEADS, HIDDEN, 32, max_sequence_length=MAX_LEN)
    path = tmp_path_factory.mktemp("hub_task") / "clf.keras"
    keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=pre).save(path)
    return str(path)


def _tokenizer(config):
    return config["config"]["preprocessor"]["config"]["tokenizer"]


def test_a_saved_task_passes_the_scan_with_its_hub_classes(task_file):
    r = scan_model_file(task_file, "keras")
    assert not r.unknown_classes
    assert set(r.hub_classes) == {"keras_hub>BertBackbone", "keras_hub>BertTextClassifier",
                                  "keras_hub>BertTextClassifierPreprocessor", "keras_hub>BertTokenizer"}
    assert _tokenizer(json.loads(members(task_file)["config.json"]))["config"]["config_file"] == "tokenizer.json"


def test_a_saved_task_runs_with_no_option(task_file):
    report = _summary(task_file, "--samples", "2")
    assert report["model"]["class_name"] == "BertTextClassifier"
    assert any(r["path"].endswith("/self_attention_layer") for r in report["layers"])


HOSTILE_VALUES = [
    # (key, value) set in the tokenizer's config: what keras-hub tokenizers would open
    ("vocabulary", "https://example.com/vocab.txt"),
    ("vocabulary", "secret"),  # a relative path: still outside the archive
    ("merges", "hf://org/model/merges.txt"),
    ("proto", "gs://bucket/tokenizer.spm"),
    ("special_tokens", "tokens"),  # Whisper's json.load(special_tokens) of a path
    ("language_tokens", "/etc/passwd"),
    ("config_file", "../../etc/tokenizer.json"),
    ("config_file", "/home/u/tokenizer.json"),
    ("oov_token", "kaggle://org/model/1"),
    ("oov_token", "file:///etc/passwd"),
    ("suffix_indicator", "~/.ssh/id_rsa"),
    ("lowercase", "vocab.model"),
]


@pytest.mark.parametrize("key, value", HOSTILE_VALUES)
def test_a_file_or_url_in_a_hub_config_is_refused(task_file, tmp_path, key, value):
    def edit(config):
        _tokenizer(config)["config"][key] = value

    path = with_config_edited(task_file, tmp_path / "evil.keras", edit)
    with pytest.raises(PolicyError) as info:
        scan_model_file(path, "keras")
    assert info.value.rule == "file-path-argument" and info.value.exit_code == ExitCode.REFUSED
    assert key in info.value.message and "tokenizer" in info.value.message


def test_a_url_in_a_backbone_config_is_refused_end_to_end(models, tmp_path):
    from click.testing import CliRunner

    from kerinspect.cli import cli

    def edit(config):
        config["config"]["name"] = "https://example.com/x"

    path = with_config_edited(models["bert"][1], tmp_path / "evil.keras", edit)
    r = CliRunner().invoke(cli, ["summary", path])
    assert r.exit_code == ExitCode.REFUSED
    assert "error[file-path-argument]" in r.stderr and "https://example.com/x" in r.stderr


@pytest.mark.parametrize(
    "edit, unknown",
    [
        # a keras-hub module that holds no registered class: Keras would import it and take the name
        (lambda c: c.update(module="keras_hub.src.utils.preset_utils", class_name="PresetLoader",
                            registered_name=None), "PresetLoader"),
        # tensorflow_text's Text> layers become resolvable once keras_hub is imported: not allowed
        (lambda c: c.update(registered_name="Text>WordpieceTokenizer"), "Text>WordpieceTokenizer"),
        # a registered name this keras-hub does not have
        (lambda c: c.update(registered_name="keras_hub>NoSuchBackbone"), "keras_hub>NoSuchBackbone"),
    ],
)
def test_hub_names_outside_the_allowlist_are_unknown(models, tmp_path, edit, unknown):
    path = with_config_edited(models["bert"][1], tmp_path / "odd.keras", edit)
    r = scan_model_file(path, "keras")
    assert r.unknown_classes == (unknown,)


def test_non_modeling_hub_functions_are_refused(models, tmp_path):
    def edit(config):
        config["config"]["dtype"] = {"module": "builtins", "class_name": "function",
                                     "config": "keras_hub>upload_preset", "registered_name": "function"}

    path = with_config_edited(models["bert"][1], tmp_path / "fn.keras", edit)
    with pytest.raises(KerinspectError) as info:
        scan_model_file(path, "keras")
    assert info.value.rule == "function-reference"


def test_hub_rules_apply_only_inside_hub_configs():
    """A plain Keras layer named like a file is not a keras-hub argument."""
    from kerinspect.scan import scan_config

    dense = {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
             "config": {"name": "vocab.txt", "units": 2}, "build_config": {"input_shape": [None, 3]}}
    model = {"module": "keras", "class_name": "Sequential", "registered_name": None,
             "config": {"name": "m", "layers": [dense]}}
    params, _, unknown = scan_config(model)
    assert not unknown and params == 8
