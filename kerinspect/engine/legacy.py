"""Build models whose config Keras 2 wrote: legacy ``.h5`` files and tf.keras 2.13-2.15
(or tf_keras) ``.keras`` archives, from the config the static scan judged.

The scan (:mod:`kerinspect.scan.model`) reads the config, rewrites a Keras 2 config into
what Keras 3 builds (:mod:`kerinspect.scan.upgrade`, whose docstring lists every kind of
change), judges that rewritten config and hands it over; the functions here build
exactly that config and read nothing of it from the file again: what is judged is what
is built. Only the weights come from the file:

``.h5``
    Keras's legacy HDF5 loader reads the file's ``model_weights`` group; the
    ``model_config`` attribute it would read is the judged config.
tf.keras 2.13-2.15 ``.keras`` archives
    Keras's legacy loader builds the judged config (``module`` and ``registered_name``
    dropped, as Keras 2 wrote ``.h5`` files); the archive's ``model.weights.h5`` has Keras
    3's layout and is converted in memory, never on disk (the worker may write no file
    above 64 MiB): the optimizer and metric state left out, and (``windows-weight-paths``)
    the ``\\`` joins of group names that tf.keras on Windows wrote become ``/``.

Keras 2's ``CuDNNLSTM``/``CuDNNGRU`` (``cudnn-rnn``: the config already names ``LSTM``/``GRU``)
keep CuDNN's weights in the file; :func:`cudnn_weights` converts them, as Keras 2's
``preprocess_weights_for_loading`` did, in an in-memory copy of the ``.h5`` file.

Keras's legacy deserializer turns a config's string that names a function of
``keras.layers`` (``Attention(score_mode="dot")``) into that function; every build here
shadows such strings (:func:`_legacy_objects`), so they reach the layer as strings.

TFOpLambda layers (``tf-op-layer``) are loaded as
:class:`kerinspect.engine.tfop.TFOpLambda`; an op outside its table fails the load with
one line naming it (``unsupported-tf-op``).
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from typing import Any

from kerinspect.errors import ModelLoadError, escape_text
from kerinspect.scan.upgrade import tf_op_functions


def _with_tf_ops(config: dict[str, Any], path: str, custom_objects: dict[str, Any] | None) -> Any:
    """``custom_objects`` plus kerinspect's TFOpLambda classes when the config has such
    layers; one line naming the op when one cannot be converted."""
    ops = tf_op_functions(config)
    if not ops:
        return custom_objects
    from kerinspect.engine import tfop

    unsupported = [(layer, fn) for layer, fn in ops if fn not in tfop.OPS]
    if unsupported:
        layer, fn = unsupported[0]
        raise ModelLoadError(
            f"Layer {escape_text(layer, 120)!r} is a tf.keras 2.x TFOpLambda calling the TensorFlow op "
            f"tf.{escape_text(fn, 120)}, which kerinspect cannot convert to Keras 3 "
            f"({len(unsupported)} such layer{'s' if len(unsupported) > 1 else ''}). Received: path={escape_text(path)}",
            rule="unsupported-tf-op",
            hint="load it with tf_keras and re-save it from code that uses keras.ops or Keras layers",
        )
    return {**tfop.custom_objects(), **(custom_objects or {})}


#: Keys whose string value Keras's legacy loader *should* resolve to a function by name
#: (a Lambda's named function): never shadowed.
_FUNCTION_KEYS = frozenset({"name", "function", "output_shape", "mask"})


def _config_strings(node: Any) -> set[str]:
    """Every string value of every class config in ``node`` (what Keras's legacy
    deserializer looks up as a function name), its ``name`` and Lambda keys aside."""
    found: set[str] = set()
    if isinstance(node, list):
        for v in node:
            found |= _config_strings(v)
    elif isinstance(node, dict):
        cfg = node.get("config")
        if "class_name" in node and isinstance(cfg, dict):
            found |= {v for k, v in cfg.items() if isinstance(v, str) and k not in _FUNCTION_KEYS}
        for v in node.values():
            found |= _config_strings(v)
    return found


def _legacy_objects(config: dict[str, Any], path: str, custom_objects: dict[str, Any] | None) -> Any:
    """The custom objects a legacy build passes to Keras: the user's, kerinspect's
    TFOpLambda classes (:func:`_with_tf_ops`), and each config string that Keras's legacy
    deserializer would turn into a ``keras.layers`` function (``"dot"``) mapped to itself,
    so that it stays the string the layer was saved with (a name the user's own objects
    define keeps resolving to theirs)."""
    from kerinspect.engine.keras_adapter import legacy_function_names

    objects = _with_tf_ops(config, path, custom_objects)
    shadowed = (_config_strings(config) & legacy_function_names()) - set(objects or ())
    if not shadowed:
        return objects
    return {**{s: s for s in shadowed}, **(objects or {})}


def cudnn_weights(kernel: Any, recurrent: Any, bias: Any) -> tuple[Any, Any, Any]:
    """Keras 2 ``CuDNNLSTM``/``CuDNNGRU`` weights as ``LSTM``/``GRU(reset_after=True)``
    weights, as Keras 2's ``preprocess_weights_for_loading`` converted them.

    CuDNN flattened each gate's ``(input_dim, units)`` kernel in C order and read it as a
    ``(units, input_dim)`` matrix; each gate's recurrent kernel is transposed; its bias
    holds the input biases then the recurrent ones (``2 * gates * units``): LSTM adds
    them, GRU (``reset_after``) keeps both as ``(2, 3 * units)``. Gates are in Keras's
    order in the file (i, f, c, o; z, r, h) and stay so.
    """
    import numpy as np

    units = recurrent.shape[0]
    gates = recurrent.shape[1] // units
    k = np.hstack([g.T.reshape(g.shape, order="F") for g in np.hsplit(kernel, gates)])
    r = np.hstack([g.T for g in np.hsplit(recurrent, gates)])
    b = np.sum(np.split(bias, 2), axis=0) if gates == 4 else bias.reshape((2, -1))
    return k, r, b


def _is_cudnn_triple(group: Any, names: list[str]) -> bool:
    """``[kernel, recurrent_kernel, bias]`` with CuDNN's bias: 1-D and twice the gates."""
    ends = [n.rsplit("/", 1)[-1].split(":", 1)[0] for n in names]
    if ends != ["kernel", "recurrent_kernel", "bias"]:
        return False
    kernel, recurrent, bias = (group[n] for n in names)
    return (
        len(recurrent.shape) == 2
        and recurrent.shape[1] in (3 * recurrent.shape[0], 4 * recurrent.shape[0])
        and len(kernel.shape) == 2
        and kernel.shape[1] == recurrent.shape[1]
        and bias.shape == (2 * recurrent.shape[1],)
    )


def _with_cudnn_weights(path: str) -> io.BytesIO:
    """An in-memory copy of the ``.h5`` file whose CuDNN weight triples (every layer group
    under ``model_weights``, a Bidirectional's two included) are converted by
    :func:`cudnn_weights`; everything else copied as it is."""
    import h5py
    import numpy as np

    target = io.BytesIO()
    with h5py.File(path, "r", locking=False) as f, h5py.File(target, "w", locking=False) as g:
        for key, value in f.attrs.items():
            g.attrs[key] = value
        f.copy(f["model_weights"], g, "model_weights")
        weights = g["model_weights"]
        for layer in weights.attrs.get("layer_names", []):
            group = weights[layer.decode() if isinstance(layer, bytes) else layer]
            names = [
                n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])
            ]
            for i in range(0, len(names) - 2):
                triple = names[i : i + 3]
                if not _is_cudnn_triple(group, triple):
                    continue
                converted = cudnn_weights(*(np.asarray(group[n]) for n in triple))
                for name, value in zip(triple, converted, strict=True):
                    del group[name]
                    group.create_dataset(name, data=value)
    target.seek(0)
    return target


def load_h5(
    path: str,
    config: dict[str, Any],
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
    cudnn: bool = False,
) -> Any:
    """A ``.h5`` model built from ``config`` (the judged, upgraded ``model_config``), its
    weights read from the file by Keras's legacy loader (``cudnn``: the upgrade turned
    CuDNN layers into LSTM/GRU, whose weights are converted first, in memory)."""
    import h5py

    from kerinspect.engine.keras_adapter import load_model_from_hdf5

    custom_objects = _legacy_objects(config, path, custom_objects)
    judged = json.dumps(config)

    class _JudgedFile(h5py.File):
        """The file as Keras sees it: the same HDF5, with the judged config."""

        @property
        def attrs(self) -> Any:
            attrs = dict(super().attrs)
            attrs["model_config"] = judged
            return attrs

    source: Any = _with_cudnn_weights(path) if cudnn else path
    with _JudgedFile(source, "r") as f:
        return load_model_from_hdf5(f, custom_objects=custom_objects, safe_mode=safe_mode)


def _converted_weights(path: str) -> tuple[io.BytesIO, bool]:
    """The archive's ``model.weights.h5`` as Keras 3 names its groups, without the training
    state (:func:`kerinspect.scan.weight_layouts.normalized_copy`: every link and dataset
    checked), in memory. Returns the copy and whether any name had a backslash."""
    import h5py

    from kerinspect.scan.weight_layouts import normalized_copy

    with zipfile.ZipFile(path) as zf:
        member = io.BytesIO(zf.read("model.weights.h5"))
    target = io.BytesIO()
    with h5py.File(member, "r", locking=False) as f, h5py.File(target, "w", locking=False) as g:
        backslash = normalized_copy(f, g, training_state=False)
    del member
    target.seek(0)
    return target, backslash


def load_keras2_archive(
    path: str,
    config: dict[str, Any],
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> tuple[Any, bool]:
    """A tf.keras 2.13-2.15 ``.keras`` archive's model built from ``config`` (the judged
    Keras 2 config, upgraded), its weights converted in memory: ``(model, whether the
    weights file named its groups with backslashes)``."""
    from kerinspect.engine.keras_adapter import load_weights

    weights, backslash = _converted_weights(path)
    model = build_legacy(path, config, safe_mode=safe_mode, custom_objects=custom_objects)
    load_weights(model, weights)
    return model, backslash


def build_legacy(
    path: str,
    config: dict[str, Any],
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> Any:
    """A model (weights not loaded) from a judged Keras 2 config (an ``.h5``'s
    ``model_config`` or a tf.keras 2.x archive's, upgraded), built as Keras's legacy loader
    builds one, TFOpLambda layers included."""
    from kerinspect.engine.keras_adapter import model_from_legacy_config

    custom_objects = _legacy_objects(config, path, custom_objects)
    # a copy: Keras's legacy loader edits the config it builds (batch_input_shape, axis)
    return model_from_legacy_config(copy.deepcopy(config), custom_objects=custom_objects, safe_mode=safe_mode)
