"""Backend tensors as the engine reads them: their dtype's name and their values.

A leaf of :mod:`kerinspect.engine`: the replay (:mod:`~kerinspect.engine.trace`), the
attention capture, the statistics and the writers all read tensors through these two
functions, so none of them needs another to do it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerinspect.engine.tfenv import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402 - imported (quietly) by import_keras


def tensor_dtype(t: Any) -> str:
    """Keras's standard name of a backend tensor's dtype (``float32``, ``string``...)."""
    return str(keras.backend.standardize_dtype(t.dtype))


def to_numpy(t: Any) -> np.ndarray:
    """A backend tensor as a numpy array (string tensors as object arrays of bytes).

    An eager tensor comes back as a read-only view of its own buffer, not a copy
    (Keras's ``convert_to_numpy`` copies: for ResNet50 at batch 16 that is 2.4 GB
    of copies per batch). The view keeps the buffer alive; nothing may write to it.
    """
    if isinstance(t, tf.Tensor):
        return np.asarray(t)
    return np.asarray(keras.ops.convert_to_numpy(t))
