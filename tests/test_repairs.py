"""Real-world files that failed to load (issue 26 part 4), each rebuilt offline as its Keras
version wrote it: converted and inspected (equal to an independent reference where
weights matter), or refused in one line that names the fix.

- a Keras 2.2 ``.h5`` with ``CuDNNLSTM``/``CuDNNGRU`` (one in a ``Bidirectional``):
  LSTM/GRU with converted weights, equal to a numpy forward pass with CuDNN's semantics
  on the file's own weights; a Keras 2.1 ``Merge`` is named as the removed layer it is;
- a Lambda whose bytecode another Python wrote (bytes that Python 3.10 and 3.12 wrote,
  kept here): named with that Python, with ``--trust-model``, before any of it runs;
- ``Attention(score_mode="dot")``, which Keras's legacy loader turned into the function
  ``keras.layers.dot``: loads in every path (Keras 3 ``.h5``, Keras 2 ``.h5``, tf_keras
  archive, Keras 3 archive) and computes dot attention;
- a Keras 3 ``Dropout`` with an integer ``noise_shape``, in an archive and an ``.h5``;
- a tf.keras 2.12 ``.h5`` named ``.keras`` whose custom ``compute_mask`` calls
  ``tf.math.not_equal``: the error names the class, the method, the op and its
  ``keras.ops`` counterpart (with which the same file then loads).
"""

from __future__ import annotations

import json
import sys
import textwrap
import zipfile

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import kerinspect
from kerinspect.cli import cli
from tests.test_cli import assert_one_line_error
from tests.test_legacy import tfk as tfk  # noqa: PLC0414 - the tf_keras fixture, shared


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_keras2_h5(path, model_config, weights, keras_version="2.2.4"):
    """An ``.h5`` file as Keras 2 wrote it: ``model_config`` and ``keras_version`` root
    attributes, ``model_weights/<layer>/`` groups naming their arrays in ``weight_names``
    (``{layer: [(weight name, array), ...]}``, in the model's layer order)."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = keras_version.encode()
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(model_config).encode()
        g = f.create_group("model_weights")
        g.attrs["keras_version"] = keras_version.encode()
        g.attrs["backend"] = b"tensorflow"
        g.attrs["layer_names"] = [name.encode() for name in weights]
        for layer, arrays in weights.items():
            lg = g.create_group(layer)
            lg.attrs["weight_names"] = [n.encode() for n, _ in arrays]
            for n, a in arrays:
                lg.create_dataset(n, data=a)
    return str(path)


# -- CuDNNLSTM / CuDNNGRU (Keras 2.2) ------------------------------------------------


def _init(cls, **config):
    return {"class_name": cls, "config": config}


def cudnn_config(cls, name, units, **extra):
    """A Keras 2.2.4 ``CuDNNLSTM``/``CuDNNGRU`` config, every key its get_config wrote."""
    config = {
        "name": name,
        "trainable": True,
        **extra,
        "return_sequences": True,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "units": units,
        "kernel_initializer": _init("VarianceScaling", scale=1.0, mode="fan_avg", distribution="uniform", seed=None),
        "recurrent_initializer": _init("Orthogonal", gain=1.0, seed=None),
        "bias_initializer": _init("Zeros"),
        "kernel_regularizer": None,
        "recurrent_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "recurrent_constraint": None,
        "bias_constraint": None,
    }
    if cls == "CuDNNLSTM":
        config["unit_forget_bias"] = True
    return _init(cls, **config)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gate_matrices(kernel, recurrent, gates):
    """Each gate's matrices as CuDNN multiplies them: Keras 2.2's CuDNN layers flattened
    each gate's kernel block (``tf.reshape(kernel_i, (-1,))``) into CuDNN's parameter
    buffer, which CuDNN reads as a row-major ``(units, inputs)`` matrix ``W`` (``W @ x``)."""
    units, inputs = recurrent.shape[0], kernel.shape[0]
    w = [kernel[:, g * units : (g + 1) * units].reshape(-1).reshape(units, inputs) for g in range(gates)]
    r = [recurrent[:, g * units : (g + 1) * units].reshape(-1).reshape(units, units) for g in range(gates)]
    return w, r


def cudnn_lstm(x, kernel, recurrent, bias):
    """CuDNN's LSTM (gates i, f, c, o; input and recurrent biases both added)."""
    units = recurrent.shape[0]
    w, r = _gate_matrices(kernel, recurrent, 4)
    bw, br = np.split(bias, 2)
    h = c = np.zeros((x.shape[0], units))
    out = []
    for t in range(x.shape[1]):
        z = [x[:, t] @ w[g].T + bw[g * units : (g + 1) * units] + h @ r[g].T + br[g * units : (g + 1) * units]
             for g in range(4)]
        c = _sigmoid(z[1]) * c + _sigmoid(z[0]) * np.tanh(z[2])
        h = _sigmoid(z[3]) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def cudnn_gru(x, kernel, recurrent, bias):
    """CuDNN's GRU: Keras 2.2 kept gates z, r, h in its weights and handed CuDNN r, z, h;
    the reset gate multiplies the recurrent term after its bias."""
    units = recurrent.shape[0]
    w, r = _gate_matrices(kernel, recurrent, 3)
    bw, br = np.split(bias, 2)
    b = lambda v, g: v[g * units : (g + 1) * units]  # noqa: E731
    h = np.zeros((x.shape[0], units))
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = _sigmoid(xt @ w[0].T + b(bw, 0) + h @ r[0].T + b(br, 0))
        reset = _sigmoid(xt @ w[1].T + b(bw, 1) + h @ r[1].T + b(br, 1))
        hh = np.tanh(xt @ w[2].T + b(bw, 2) + reset * (h @ r[2].T + b(br, 2)))
        h = (1 - z) * hh + z * h
        out.append(h)
    return np.stack(out, axis=1)


@pytest.fixture(scope="module")
def cudnn_file(tmp_path_factory):
    """Sequential: Bidirectional(CuDNNLSTM(4)) -> CuDNNLSTM(5) -> CuDNNGRU(3), as Keras 2.2.4
    saved it, with random weights in CuDNN's layout; and numpy's outputs of each layer."""
    rng = np.random.default_rng(7)
    d, steps = 3, 6

    def weights(inputs, units, gates, scale=0.6):
        return (rng.normal(0, scale, (inputs, gates * units)).astype("float32"),
                rng.normal(0, scale, (units, gates * units)).astype("float32"),
                rng.normal(0, 0.3, (2 * gates * units,)).astype("float32"))

    fwd, bwd, lstm, gru = weights(d, 4, 4), weights(d, 4, 4), weights(8, 5, 4), weights(5, 3, 3)
    config = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": [
        _init("Bidirectional", name="bidirectional_1", trainable=True, batch_input_shape=[None, steps, d],
              dtype="float32", layer=cudnn_config("CuDNNLSTM", "cu_dnnlstm_1", 4), merge_mode="concat"),
        cudnn_config("CuDNNLSTM", "cu_dnnlstm_2", 5),
        cudnn_config("CuDNNGRU", "cu_dnngru_1", 3),
    ]}}
    names = ("kernel:0", "recurrent_kernel:0", "bias:0")
    path = write_keras2_h5(tmp_path_factory.mktemp("cudnn") / "cudnn.h5", config, {
        "bidirectional_1": [(f"bidirectional_1/{side}_cu_dnnlstm_1/{n}", a)
                            for side, ws in (("forward", fwd), ("backward", bwd)) for n, a in zip(names, ws)],
        "cu_dnnlstm_2": [(f"cu_dnnlstm_2/{n}", a) for n, a in zip(names, lstm)],
        "cu_dnngru_1": [(f"cu_dnngru_1/{n}", a) for n, a in zip(names, gru)],
    })
    x = rng.normal(0, 1, (5, steps, d)).astype("float32")
    np.save(path + ".x.npy", x)
    x64 = x.astype(np.float64)
    w64 = lambda ws: [a.astype(np.float64) for a in ws]  # noqa: E731
    bi = np.concatenate([cudnn_lstm(x64, *w64(fwd)), cudnn_lstm(x64[:, ::-1], *w64(bwd))[:, ::-1]], axis=-1)
    second = cudnn_lstm(bi, *w64(lstm))
    reference = {"bidirectional_1": bi, "cu_dnnlstm_2": second, "cu_dnngru_1": cudnn_gru(second, *w64(gru))}
    return path, reference


def test_cudnn_layers_become_lstm_and_gru_with_their_weights(cudnn_file):
    path, reference = cudnn_file
    report = kerinspect.inspect_model(path, path + ".x.npy")
    layers = {r.path: r for r in report.layers}
    assert "legacy config upgraded: cudnn-rnn" in report.model.notes
    assert [layers[n].class_name for n in reference] == ["Bidirectional", "LSTM", "GRU"]
    assert report.model.params == sum(int(np.prod(s)) for s in (
        (3, 16), (4, 16), (16,), (3, 16), (4, 16), (16,), (8, 20), (5, 20), (20,), (5, 9), (3, 9), (2, 9)))
    for name, want in reference.items():
        got = layers[name].outputs[0]
        assert got.shape == want.shape, name
        for key, value in (("mean", want.mean()), ("std", want.std()), ("min", want.min()), ("max", want.max())):
            assert getattr(got.stats, key) == pytest.approx(float(value), rel=1e-4, abs=1e-5), (name, key)


def test_a_keras1_merge_is_named_as_the_removed_layer_it_is(tmp_path):
    inp = lambda n: {"name": n, "class_name": "InputLayer", "inbound_nodes": [],  # noqa: E731
                     "config": {"batch_input_shape": [None, 4], "dtype": "float32", "sparse": False, "name": n}}
    merge = {"name": "merge_1", "class_name": "Merge", "inbound_nodes": [[["a", 0, 0, {}], ["b", 0, 0, {}]]],
             "config": {"name": "merge_1", "layers": None, "mode": "concat", "concat_axis": -1, "dot_axes": -1,
                        "output_shape": None, "output_mask": None, "arguments": {}, "node_indices": None,
                        "tensor_indices": None, "mode_type": "raw"}}
    config = {"class_name": "Model", "config": {"name": "model_1", "layers": [inp("a"), inp("b"), merge],
              "input_layers": [["a", 0, 0], ["b", 0, 0]], "output_layers": [["merge_1", 0, 0]]}}
    path = write_keras2_h5(tmp_path / "merge.h5", config, {"a": [], "b": [], "merge_1": []}, "2.1.6")
    line = assert_one_line_error(run("summary", path), 4, "removed-layer")
    for words in ("'Merge' (mode 'concat')", "Keras 1's merge layer", "removed in Keras 2.2", "cannot be inspected",
                  "Hint: load the model with Keras 2.1", "Concatenate, Add"):
        assert words in line, line
    assert "--custom-objects" not in line


# -- a Lambda's bytecode from another Python -----------------------------------------

#: ``marshal.dumps((lambda x: x / 255.0).__code__)``, base64, as Python 3.10.13 wrote it
PY310_LAMBDA = (
    "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAfABkARsAUwApAk7nAAAAAADgb0CpACkB2gF4cgIAAAByAgAAANoIPHN0cmlu"
    "Zz7aCDxsYW1iZGE+AgAAAHMCAAAACAA="
)
#: ``marshal.dumps((lambda t: t[:, 0]).__code__)``, base64, as Python 3.12.1 wrote it: it
#: unmarshals in 3.11, and running it there crashes the interpreter
PY312_LAMBDA = (
    "4wEAAAAAAAAAAAAAAAMAAAADAAAA8xQAAACXAHwAZABkAIUCZAFmAhkAAABTACkCTukAAAAAqQApAdoBdHMBAAAAIPoIPHN0cmlu"
    "Zz76CDxsYW1iZGE+cgYAAAACAAAAcw4AAACAAMgByiHIUcgkyQeAAPMAAAAA"
)


@pytest.fixture(scope="module")
def lambda_archive(keras, tmp_path_factory):
    """A Keras 3 archive with one Lambda, saved here, its config's bytecode swappable."""
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    inp = keras.Input((3, 4))
    keras.Model(inp, keras.layers.Lambda(lambda x: x / 255.0, name="scale")(inp)).save(path)
    return path


def _with_code(src, dst, code):
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    (layer,) = [lay for lay in config["config"]["layers"] if lay["class_name"] == "Lambda"]
    layer["config"]["function"]["config"]["code"] = code
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            z.writestr(n, json.dumps(config) if n == "config.json" else data)
    return dst


def trusted_error(path):
    """The one error line of ``summary PATH --trust-model``, after the trust warning."""
    result = run("summary", path, "--trust-model")
    warning, *rest = result.stderr.splitlines()
    assert warning.startswith("kerinspect: warning: --trust-model: code stored in the model file may run")
    result.stderr_bytes = "\n".join(rest).encode()  # what assert_one_line_error reads
    return assert_one_line_error(result, 4, "lambda-python-version")


@pytest.mark.skipif((3, 8) <= sys.version_info[:2] <= (3, 10), reason="this Python wrote such bytecode")
def test_a_lambda_from_python_3_10_is_named_with_its_python(lambda_archive, tmp_path):
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    path = _with_code(lambda_archive, tmp_path / "py310.keras", PY310_LAMBDA)
    line = trusted_error(path)
    for words in ("Lambda layer 'scale'", "written by Python 3.8 to 3.10", f"this is Python {here}",
                  "Hint: load the model with Python 3.8 to 3.10"):
        assert words in line, line
    # a Keras 2 .h5 stores it as [code, defaults, closure]
    config = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": [
        {"class_name": "Lambda", "config": {"name": "lambda_1", "trainable": True, "batch_input_shape": [None, 4],
         "dtype": "float32", "function": [PY310_LAMBDA, None, None], "function_type": "lambda",
         "output_shape": None, "output_shape_type": "raw", "arguments": {}}}]}}
    h5 = write_keras2_h5(tmp_path / "lambda.h5", config, {"lambda_1": []}, "2.3.1")
    line = trusted_error(h5)
    assert "Lambda layer 'lambda_1'" in line and "Python 3.8 to 3.10" in line


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="3.12 bytecode unmarshals as 3.11's only")
def test_a_lambda_whose_bytecode_unmarshals_but_is_not_this_pythons_is_refused(lambda_archive, tmp_path):
    path = _with_code(lambda_archive, tmp_path / "py312.keras", PY312_LAMBDA)
    line = trusted_error(path)
    assert "written by another Python version" in line and "Hint: load the model with the Python that saved it" in line


def test_this_pythons_lambda_still_loads_with_trust(lambda_archive):
    result = run("summary", lambda_archive, "--trust-model", "--samples", "2", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert "Lambda" in {r["class_name"] for r in json.loads(result.stdout)["layers"]}


# -- Attention(score_mode="dot") in every load path, Dropout's integer noise_shape ---------


@pytest.fixture(scope="module")
def attention_files(keras, tfk, tmp_path_factory):
    """The same dot-attention model saved by every writer a load path serves, and its inputs."""
    d = tmp_path_factory.mktemp("attention")
    rng = np.random.default_rng(3)
    q, v = rng.normal(size=(4, 5, 8)).astype("float32"), rng.normal(size=(4, 7, 8)).astype("float32")
    np.savez(d / "x.npz", q=q, v=v)

    def build(lib):
        qi, vi = lib.Input((5, 8), name="q"), lib.Input((7, 8), name="v")
        return lib.Model([qi, vi], lib.layers.Attention(score_mode="dot", name="att")([qi, vi]))

    k3 = build(keras)
    k3.save(d / "keras3.keras")
    k3.save(d / "keras39.h5")
    with h5py.File(d / "keras39.h5", "a") as f:  # Keras 3.9 wrote the same file
        f.attrs["keras_version"] = "3.9.0"
    k2 = build(tfk)
    k2.save(d / "keras2.h5", save_format="h5")
    k2.save(d / "tf_keras.keras")
    reference = np.asarray(k3.predict([q, v], verbose=0))  # Keras's own dot attention
    return d, reference


@pytest.fixture(scope="module")
def dot_attention_outputs(attention_files):
    """``{file name: (shape, stats)}`` of the ``att`` output of each file, two files per
    worker run: ``kerinspect.diff_models`` loads both of its models in one worker, each
    through its own load path, and reports each side's statistics on the same inputs."""
    d, _ = attention_files
    out = {}
    for a, b in (("keras39.h5", "keras2.h5"), ("tf_keras.keras", "keras3.keras")):
        diff = kerinspect.diff_models(str(d / a), str(d / b), str(d / "x.npz"))
        (pair,) = [p for p in diff.pairs if (p.path_a, p.path_b) == ("att", "att")]
        o = next(o for o in pair.outputs if o.name == "output")  # (its attention scores: another)
        out[a], out[b] = (o.shape_a, o.stats_a), (o.shape_b, o.stats_b)
    return out


@pytest.mark.parametrize("name", ["keras39.h5", "keras2.h5", "tf_keras.keras", "keras3.keras"])
def test_dot_attention_loads_as_dot_attention_in_every_path(attention_files, dot_attention_outputs, name):
    _, reference = attention_files
    shape, stats = dot_attention_outputs[name]
    assert tuple(shape) == reference.shape
    for key, want in (("mean", reference.mean()), ("std", reference.std()), ("min", reference.min())):
        assert getattr(stats, key) == pytest.approx(float(want), rel=1e-4, abs=1e-6), (name, key)


@pytest.fixture(scope="module")
def dropout_files(keras, tmp_path_factory):
    """A Keras 3 model whose Dropout has ``noise_shape: 3``, as Keras 3.9 saved it: an archive
    and an ``.h5``."""
    d = tmp_path_factory.mktemp("dropout")
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Dropout(0.5, name="drop")(inp)))
    model.save(d / "saved.keras")
    model.save(d / "drop.h5")
    with zipfile.ZipFile(d / "saved.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dropout":
            layer["config"]["noise_shape"] = 3
    with zipfile.ZipFile(d / "drop.keras", "w") as z:
        for n, data in members.items():
            z.writestr(n, json.dumps(config) if n == "config.json" else data)
    with h5py.File(d / "drop.h5", "a") as f:
        f.attrs["keras_version"] = "3.9.0"
        f.attrs["model_config"] = json.dumps(config)
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    np.save(d / "x.npy", x)
    return d, np.asarray(model.predict(x, verbose=0))


@pytest.mark.parametrize("name, note", [("drop.keras", "config repaired: dropout-noise-shape"),
                                        ("drop.h5", "legacy config upgraded: dropout-noise-shape")])
def test_an_integer_dropout_noise_shape_is_repaired_in_every_path(dropout_files, name, note):
    d, reference = dropout_files
    report = kerinspect.inspect_model(str(d / name), str(d / "x.npy"))
    assert note in report.model.notes
    final = report.layers[-1].outputs[0].stats
    assert final.mean == pytest.approx(float(reference.mean()), rel=1e-5, abs=1e-6)


# -- a custom class calling a TensorFlow op on symbolic tensors -------------------------

POSITIONAL = '''
import tensorflow as tf
import keras


class PositionalEmbedding(keras.layers.Layer):
    def __init__(self, sequence_length, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_embeddings = keras.layers.Embedding(vocab_size, embed_dim)
        self.position_embeddings = keras.layers.Embedding(sequence_length, embed_dim)
        self.sequence_length, self.vocab_size, self.embed_dim = sequence_length, vocab_size, embed_dim

    def call(self, inputs):
        positions = tf.range(start=0, limit=tf.shape(inputs)[-1], delta=1)
        return self.token_embeddings(inputs) + self.position_embeddings(positions)

    def compute_mask(self, inputs, mask=None):
        return {not_equal}(inputs, 0)

    def get_config(self):
        config = super().get_config()
        config.update(sequence_length=self.sequence_length, vocab_size=self.vocab_size, embed_dim=self.embed_dim)
        return config
'''


@pytest.fixture(scope="module")
def positional_file(tfk, tmp_path_factory):
    """The model as tf.keras 2.12 saved it: HDF5 under a ``.keras`` name, its class the
    repository's (which calls ``tf.math.not_equal``, fine in tf.keras)."""
    d = tmp_path_factory.mktemp("positional")
    namespace: dict = {}
    exec(textwrap.dedent(POSITIONAL.format(not_equal="tf.math.not_equal")).replace("import keras", "import tf_keras as keras"),
         namespace)
    cls = namespace["PositionalEmbedding"]
    tokens = tfk.Input((6,), dtype="int64", name="tokens")
    h = cls(6, 20, 4, name="pos")(tokens)
    model = tfk.Model(tokens, tfk.layers.Dense(2, name="out")(tfk.layers.GlobalAveragePooling1D(name="gap")(h)))
    path = d / "translator.keras"
    model.save(path, save_format="h5")
    with h5py.File(path, "a") as f:
        f.attrs["keras_version"] = "2.12.0"
    for name, op in (("custom_tf.py", "tf.math.not_equal"), ("custom_ops.py", "keras.ops.not_equal")):
        (d / name).write_text(POSITIONAL.format(not_equal=op))
    return d, path


def test_a_tf_op_in_a_custom_class_is_named_with_its_class_method_and_fix(positional_file):
    d, path = positional_file
    line = assert_one_line_error(run("summary", path, "--custom-objects", d / "custom_tf.py"), 4, "custom-code-tf-op")
    for words in ("PositionalEmbedding.compute_mask calls a TensorFlow op (tf.math.not_equal) on a symbolic tensor",
                  "(custom_tf.py, line 18)",
                  "Hint: use keras.ops.not_equal in PositionalEmbedding.compute_mask, in the --custom-objects file"):
        assert words in line, line
    # the fix the hint names: the same file loads and is inspected
    result = run("summary", path, "--custom-objects", d / "custom_ops.py", "--samples", "2", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert {"pos", "gap", "out"} <= {r["path"] for r in json.loads(result.stdout)["layers"]}
