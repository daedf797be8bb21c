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


def load_h5(
    path: str,
    config: dict[str, Any],
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> Any:
    """A ``.h5`` model built from ``config`` (the judged, upgraded ``model_config``), its
    weights read from the file by Keras's legacy loader."""
    import h5py

    from kerinspect.engine.keras_adapter import load_model_from_hdf5

    custom_objects = _with_tf_ops(config, path, custom_objects)
    judged = json.dumps(config)

    class _JudgedFile(h5py.File):
        """The file as Keras sees it: the same HDF5, with the judged config."""

        @property
        def attrs(self) -> Any:
            attrs = dict(super().attrs)
            attrs["model_config"] = judged
            return attrs

    with _JudgedFile(path, "r") as f:
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

    custom_objects = _with_tf_ops(config, path, custom_objects)
    # a copy: Keras's legacy loader edits the config it builds (batch_input_shape, axis)
    return model_from_legacy_config(copy.deepcopy(config), custom_objects=custom_objects, safe_mode=safe_mode)
