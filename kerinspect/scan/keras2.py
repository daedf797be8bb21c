"""tf.keras 2.13-2.15 ``.keras`` archives: their config, in the form the loader builds.

Those archives hold Keras 2 layer configs (``batch_input_shape``...) in the new
serialization form, naming modules Keras 3 does not have
(``keras.src.engine.functional``). Such a config is built as the Keras 2 config it is,
in the form Keras 2 wrote to ``.h5`` files (:func:`as_keras2_config`), upgraded for
Keras 3 (:mod:`kerinspect.scan.upgrade`). The static scan decides whether an archive is
one (:func:`keras2_archive`: a Keras 2 model module in its config, or a 2.x
``keras_version`` in its ``metadata.json``), converts it, judges the result and hands it
to the loader (:func:`kerinspect.engine.legacy.load_keras2_archive`), which builds it as it
is. The modules the conversion drops are judged before it, as written
(:meth:`kerinspect.scan.policy.ConfigScanner.check_modules`). Pure Python.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KERAS2_ARCHIVE_MODULES", "as_keras2_config", "keras2_archive", "written_by_keras2"]

#: Where tf.keras 2.13-2.15 archives name their model classes (Keras 3: ``keras.src.models``),
#: and tf_keras (the Keras 2 package of TensorFlow 2.16+), which writes the same archives.
KERAS2_ARCHIVE_MODULES = ("keras.src.engine.", "keras.engine.", "tf_keras.src.engine.", "tf_keras.engine.")


#: Model classes, whose ``module`` tells a Keras 2 archive apart.
_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})


def written_by_keras2(keras_version: Any) -> bool:
    """True for an archive's ``metadata.json`` ``keras_version`` of Keras 2 (``2.15.0``)."""
    if not isinstance(keras_version, str):
        return False
    major = keras_version.strip().split(".", 1)[0]
    return major.isdigit() and int(major) < 3


def _names_a_keras2_model(node: Any) -> bool:
    """A model class anywhere in the config from a Keras 2 module (a tf_keras Sequential
    is ``module: keras`` at the top, but a model nested in it names its engine module)."""
    if isinstance(node, list):
        return any(_names_a_keras2_model(v) for v in node)
    if not isinstance(node, dict):
        return False
    module = node.get("module")
    if (
        node.get("class_name") in _MODEL_CLASSES
        and isinstance(module, str)
        and module.startswith(KERAS2_ARCHIVE_MODULES)
    ):
        return True
    return any(_names_a_keras2_model(v) for v in node.values())


def keras2_archive(config: Any, *, keras_version: Any = None) -> dict[str, Any] | None:
    """The Keras 2 form of a tf.keras 2.13-2.15 (or tf_keras) archive's config, else
    None (a Keras 3 archive, or not a model config). An archive is Keras 2's when a
    model class in its config names a Keras 2 module, or its ``keras_version`` (from
    ``metadata.json``, when the caller read it) is 2.x."""
    if not isinstance(config, dict):
        return None
    if not (_names_a_keras2_model(config) or written_by_keras2(keras_version)):
        return None
    converted = as_keras2_config(config)
    assert isinstance(converted, dict)
    return converted


def as_keras2_config(node: Any) -> Any:
    """A copy in Keras 2's ``.h5`` form: no ``module`` or ``registered_name``; a
    registered ``package>Name`` that differs from the class name becomes the class
    name (as Keras 2 wrote it there). Keras's legacy loader then finds every class by
    that name among Keras's own classes, the registered ones and the user's custom
    objects."""
    if isinstance(node, list):
        return [as_keras2_config(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_keras2_config(v) for k, v in node.items()}
    if "class_name" in out:
        registered = out.pop("registered_name", None)
        out.pop("module", None)
        if isinstance(registered, str) and registered and registered != out["class_name"]:
            out["class_name"] = registered
    return out


def is_keras_or_tf_keras(module: Any) -> bool:
    """Keras's own module, or tf_keras's (Keras 2): dropped from a Keras 2 archive's config,
    as the loader never imports it."""
    return isinstance(module, str) and any(
        module == p or module.startswith(p + ".") for p in ("keras", "tf_keras")
    )
