"""Import Keras 3 on TensorFlow, quietly, exactly once.

TensorFlow's C++ and absl logs go straight to stderr at import time; they must be
silenced through the environment *before* the first import. kerinspect always
uses Keras 3 on the TensorFlow backend, never ``tf.keras`` (which may be the
legacy ``tf_keras`` package when ``TF_USE_LEGACY_KERAS`` is set).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

_keras: Any = None

#: Packages that TensorFlow and Keras import at start only when installed, for what a
#: worker never does: Keras's scikit-learn wrappers (``tensorflow`` imports
#: ``keras._tf_keras``, which imports them, 0.6 s) and its pandas DataFrame input
#: (``keras.src.trainers.data_adapters``, 0.45 s): a quarter of ``import tensorflow``.
#: :func:`lean_imports` leaves them out of the worker's import (see :func:`_without`).
OPTIONAL_PACKAGES = ("sklearn", "pandas")
_lean = False


def lean_imports() -> None:
    """Import Keras without :data:`OPTIONAL_PACKAGES` (the isolated worker, which hands
    Keras neither a DataFrame nor a scikit-learn estimator). Not in-process: a notebook
    that fits a model on a DataFrame after ``import kerinspect`` needs Keras's pandas."""
    global _lean
    _lean = True


@contextlib.contextmanager
def _without(names: tuple[str, ...]) -> Iterator[None]:
    """Make ``import NAME`` fail (ImportError) for the packages ``names`` not yet
    imported, during the block: TensorFlow and Keras import them under ``try``, and
    go on without. After the block they import again as usual (a ``--custom-objects``
    module that needs pandas gets it); Keras keeps its own "not installed" for them."""
    blocked = [n for n in names if n not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's own "not found"
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def quiet_environment(env: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Set the variables that keep TensorFlow silent and on the right backend."""
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    env["KERAS_BACKEND"] = "tensorflow"


@contextlib.contextmanager
def _captured_stderr_fd() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the duration of the block.

    TensorFlow 2.21 logs through absl before ``absl::InitializeLog()`` runs, and
    those lines ignore ``TF_CPP_MIN_LOG_LEVEL`` (tensorflow/tensorflow#100442).
    Only an fd-level redirect hides them. If the block fails, what was captured
    is written back so a broken installation still explains itself.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_keras() -> Any:
    """Import and return Keras 3 (TensorFlow backend) with logging silenced."""
    global _keras
    if _keras is not None:
        return _keras
    quiet_environment()
    optional = _without(OPTIONAL_PACKAGES) if _lean else contextlib.nullcontext()
    with _captured_stderr_fd(), warnings.catch_warnings(), optional:
        warnings.simplefilter("ignore")
        import keras
        import tensorflow as tf
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TensorFlow
        pass
    tf.get_logger().setLevel(logging.ERROR)
    tf.autograph.set_verbosity(0)
    check_keras(keras)
    _keras = keras
    return keras


def rehome_keras(path: str) -> None:
    """Point an imported Keras at ``path`` as its home (its config and file cache): Keras
    reads ``KERAS_HOME`` once, at import, and a forked worker has its own scratch."""
    config = sys.modules.get("keras.src.backend.config")
    if config is not None and hasattr(config, "_KERAS_DIR"):
        setattr(config, "_KERAS_DIR", path)  # noqa: B010 - a private module attribute


def runtime_started() -> bool:
    """Whether TensorFlow's runtime (eager context: thread pools, devices) has started in
    this process. Importing TensorFlow and Keras does not start it; a process that forks
    workers (sandbox/forkserver.py) must not have started it, as TensorFlow's runtime
    and CUDA do not survive a fork."""
    from tensorflow.python.eager import context

    ctx = context.context_safe()
    return ctx is not None and bool(getattr(ctx, "_initialized", True))


#: The oldest Keras whose loader kerinspect relies on (safe_mode on .h5, CVE fixes).
MIN_KERAS = (3, 15, 1)


def check_keras(keras: Any) -> None:
    """Refuse to run on anything but Keras 3 (>= :data:`MIN_KERAS`) on TensorFlow.

    ``tf.keras`` can be the legacy Keras 2 package (``TF_USE_LEGACY_KERAS``), whose
    .h5 loader ran Lambda code under safe_mode; a pinned dependency can also be
    overridden in a user's environment.
    """
    from kerinspect.errors import UsageError

    version = str(getattr(keras, "__version__", "0"))
    parts = tuple(int(p) if p.isdigit() else 0 for p in version.split("+")[0].split(".")[:3])
    backend = keras.backend.backend() if hasattr(keras, "backend") else "?"
    if keras.__name__ != "keras" or parts < MIN_KERAS or backend != "tensorflow":
        raise UsageError(
            f"kerinspect needs Keras >= {'.'.join(map(str, MIN_KERAS))} on the TensorFlow backend; "
            f"found {keras.__name__} {version} on {backend}.",
            rule="keras-version",
            hint="pip install 'keras>=3.15.1' 'tensorflow==2.21.*'",
        )
