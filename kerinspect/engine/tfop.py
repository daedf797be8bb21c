"""Keras 3 stand-ins for tf.keras 2.x ``TFOpLambda`` / ``SlicingOpLambda`` layers.

tf.keras 2.x recorded every raw TensorFlow call on a symbolic tensor (``x + y``,
``tf.math.reduce_mean(x, axis=1)``, ``x[:, 0]``) as a ``TFOpLambda`` layer whose config
names the op (``"function": "math.reduce_mean"``); Keras 3 has no such class. The
legacy upgrade (:mod:`kerinspect.engine.legacy`) keeps those layers and loads them as
:class:`TFOpLambda` (Keras 3 classes of the same names), which compute each op with the equivalent ``keras.ops`` function.

Only the ops in :data:`OPS` are converted, looked up by name in that table: the op
name in the file is never resolved against TensorFlow (which is how tf_keras loads it,
and how a file could reach any TensorFlow function). Each op takes TensorFlow's own
argument names, as tf_keras stored them (``input_tensor``, ``axis``, ``y``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kerinspect.engine.tfenv import import_keras

keras = import_keras()
ops = keras.ops
_Layer: Any = keras.layers.Layer

__all__ = ["OPS", "SlicingOpLambda", "TFOpLambda", "custom_objects"]


def _binary(fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    return lambda x, y, name=None: fn(x, y)


def _unary(fn: Callable[[Any], Any]) -> Callable[..., Any]:
    return lambda x, name=None: fn(x)


def _reduce(fn: Callable[..., Any]) -> Callable[..., Any]:
    def reduce(input_tensor: Any, axis: Any = None, keepdims: bool = False, name: Any = None) -> Any:
        return fn(input_tensor, axis=_axis(axis), keepdims=bool(keepdims))

    return reduce


def _axis(axis: Any) -> Any:
    return tuple(axis) if isinstance(axis, list) else axis


def _transpose(a: Any, perm: Any = None, conjugate: bool = False, name: Any = None) -> Any:
    if conjugate:
        raise ValueError("transpose with conjugate=True is not converted")
    return ops.transpose(a, axes=None if perm is None else tuple(perm))


def _matmul(
    a: Any,
    b: Any,
    transpose_a: bool = False,
    transpose_b: bool = False,
    adjoint_a: bool = False,
    adjoint_b: bool = False,
    name: Any = None,
    **_: Any,
) -> Any:
    def last_two(t: Any) -> Any:
        axes = list(range(len(t.shape)))
        axes[-2], axes[-1] = axes[-1], axes[-2]
        return ops.transpose(t, axes=axes)

    if transpose_a or adjoint_a:
        a = last_two(a)
    if transpose_b or adjoint_b:
        b = last_two(b)
    return ops.matmul(a, b)


def _to_slice(spec: Any) -> Any:
    """tf_keras's ``_dict_to_slice``: ``{"start", "stop", "step"}`` back to a slice."""
    if isinstance(spec, dict) and set(spec) == {"start", "stop", "step"}:
        return slice(spec["start"], spec["stop"], spec["step"])
    if spec == "..." or spec is Ellipsis:  # see kerinspect.engine.legacy.ELLIPSIS
        return Ellipsis
    return spec


def _getitem(tensor: Any, slice_spec: Any, var: Any = None) -> Any:
    if isinstance(slice_spec, (list, tuple)):
        key: Any = tuple(_to_slice(s) for s in slice_spec)
    else:
        key = _to_slice(slice_spec)
    return tensor[key]


def _softmax(logits: Any, axis: Any = None, name: Any = None) -> Any:
    return ops.softmax(logits, axis=-1 if axis is None else axis)


def _leaky_relu(features: Any, alpha: float = 0.2, name: Any = None) -> Any:
    return ops.leaky_relu(features, negative_slope=alpha)


#: TensorFlow op name (as tf_keras saved it in ``function``) -> the same computation
#: in ``keras.ops``, called with TensorFlow's argument names.
OPS: dict[str, Callable[..., Any]] = {
    # arithmetic (``x + y`` is ``__operators__.add``; ``x * y`` is ``math.multiply``)
    "__operators__.add": _binary(ops.add),
    "math.add": _binary(ops.add),
    "math.add_v2": _binary(ops.add),
    "math.subtract": _binary(ops.subtract),
    "math.multiply": _binary(ops.multiply),
    "math.truediv": _binary(ops.true_divide),
    "math.divide": _binary(ops.divide),
    "math.floordiv": _binary(ops.floor_divide),
    "math.pow": _binary(ops.power),
    "math.maximum": _binary(ops.maximum),
    "math.minimum": _binary(ops.minimum),
    "math.squared_difference": _binary(lambda x, y: ops.square(ops.subtract(x, y))),
    # elementwise math
    "math.negative": _unary(ops.negative),
    "math.abs": _unary(ops.abs),
    "math.exp": _unary(ops.exp),
    "math.log": _unary(ops.log),
    "math.sqrt": _unary(ops.sqrt),
    "math.rsqrt": _unary(ops.rsqrt),
    "math.square": _unary(ops.square),
    "math.reciprocal": _unary(lambda x: ops.divide(1.0, x)),
    "math.sigmoid": _unary(ops.sigmoid),
    "math.tanh": _unary(ops.tanh),
    "math.sin": _unary(ops.sin),
    "math.cos": _unary(ops.cos),
    "math.erf": _unary(ops.erf),
    "math.softplus": _unary(ops.softplus),
    "nn.relu": lambda features, name=None: ops.relu(features),
    "nn.relu6": lambda features, name=None: ops.relu6(features),
    "nn.elu": lambda features, name=None: ops.elu(features),
    "nn.selu": lambda features, name=None: ops.selu(features),
    "nn.silu": lambda features, beta=1.0, name=None: ops.multiply(features, ops.sigmoid(beta * features)),
    "nn.gelu": lambda features, approximate=False, name=None: ops.gelu(
        features, approximate=bool(approximate)
    ),
    "nn.softmax": _softmax,
    "nn.leaky_relu": _leaky_relu,
    # reductions
    "math.reduce_mean": _reduce(ops.mean),
    "math.reduce_sum": _reduce(ops.sum),
    "math.reduce_max": _reduce(ops.max),
    "math.reduce_min": _reduce(ops.min),
    "math.reduce_prod": _reduce(ops.prod),
    "math.reduce_std": _reduce(ops.std),
    "math.reduce_variance": _reduce(ops.var),
    # shapes
    "reshape": lambda tensor, shape, name=None: ops.reshape(tensor, tuple(shape)),
    "transpose": _transpose,
    "compat.v1.transpose": _transpose,
    "concat": lambda values, axis, name=None: ops.concatenate(list(values), axis=axis),
    "stack": lambda values, axis=0, name=None: ops.stack(list(values), axis=axis),
    "expand_dims": lambda input, axis, name=None: ops.expand_dims(input, axis),  # noqa: A006
    "squeeze": lambda input, axis=None, name=None: ops.squeeze(input, axis=_axis(axis)),  # noqa: A006
    "compat.v1.squeeze": lambda input, axis=None, name=None, squeeze_dims=None: ops.squeeze(  # noqa: A006
        input, axis=_axis(axis if axis is not None else squeeze_dims)
    ),
    "linalg.matmul": _matmul,
    "__operators__.getitem": _getitem,
}


class TFOpLambda(_Layer):
    """One tf.keras 2.x ``TFOpLambda``/``SlicingOpLambda`` call, computed with ``keras.ops``.

    Args:
        function: the op's name as tf_keras saved it (``"math.reduce_mean"``); must
            be a key of :data:`OPS`.
        **kwargs: the usual layer arguments (``name``, ``dtype``, ``trainable``).
    """

    def __init__(self, function: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if function not in OPS:
            raise ValueError(f"kerinspect cannot convert the TensorFlow op tf.{function}")
        self.function = function
        self._op = OPS[function]

    def call(self, inputs: Any, **kwargs: Any) -> Any:
        """Apply the op: the first argument positional, the others by TensorFlow's names."""
        for key in ("name", "training", "mask"):
            kwargs.pop(key, None)
        return self._op(inputs, **kwargs)

    def get_config(self) -> dict[str, Any]:
        """The layer's config, with the op name (as tf_keras wrote it)."""
        return {**super().get_config(), "function": self.function}


class SlicingOpLambda(TFOpLambda):
    """tf.keras 2.x ``SlicingOpLambda`` (``x[...]``): the same, named as in the file."""


def custom_objects() -> dict[str, Any]:
    """The classes to pass to Keras for a config upgraded by :mod:`kerinspect.engine.legacy`."""
    return {"TFOpLambda": TFOpLambda, "SlicingOpLambda": SlicingOpLambda}
