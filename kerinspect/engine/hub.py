"""keras-hub in the worker (``pip install 'kerinspect[hub]'``).

keras_hub is imported only for a file whose config uses keras-hub classes (the static
scan lists them: :attr:`kerinspect.scan.model.ScanResult.hub_classes`), before Keras
deserializes it: the import registers keras-hub's classes, which Keras's safe mode then
resolves by their registered names (``keras_hub>BertBackbone``). Other runs never pay
for the import.

A keras-hub object's config holds its constructor arguments (``num_layers``,
``max_sequence_length``...), not its layers, so the static estimate cannot see what it
builds. Before its weights are created, :func:`check_size` builds the judged config once
with Keras's deferred variables (shapes only, nothing allocated) and refuses it when
``count_params()`` passes ``max_params``, within a time budget (``num_layers=10**12``
cannot loop until the timeout).

It also knows what a keras-hub backbone's inputs mean, so that synthetic inputs are
meaningful (:func:`backbone_input_hints`): token ids below the vocabulary size, padding
masks of ones, segment ids below the number of segments, and no sequence longer than the
backbone's position table.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kerinspect.errors import ModelLoadError, PolicyError, escape_text, msg

#: What to install when a model needs keras-hub.
HUB_INSTALL_HINT = "pip install 'kerinspect[hub]'"


def missing_hub_error(
    classes: Sequence[str], path: str, cause: BaseException | None = None
) -> ModelLoadError:
    """The one-line error for a model that needs keras-hub where it cannot be imported."""
    names = ", ".join(repr(escape_text(n, 80)) for n in classes[:5]) or "keras-hub classes"
    more = f" and {len(classes) - 5} more" if len(classes) > 5 else ""
    if cause is None or (isinstance(cause, ModuleNotFoundError) and cause.name == "keras_hub"):
        why = "keras-hub is not installed"
    else:
        why = f"keras-hub failed to import ({type(cause).__name__}: {escape_text(str(cause), 300)})"
    return ModelLoadError(
        f"The model uses keras-hub classes ({names}{more}), but {why}. Received: path={escape_text(path)}",
        rule="keras-hub-missing",
        hint=HUB_INSTALL_HINT,
    )


def import_keras_hub(classes: Sequence[str], path: str) -> Any:
    """Import keras_hub (quietly: TensorFlow Text logs at import), or raise
    :func:`missing_hub_error`. Keras is imported first, on the TensorFlow backend."""
    from kerinspect.engine.tfenv import _captured_stderr_fd, import_keras

    import_keras()
    try:
        with _captured_stderr_fd(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import keras_hub
    except ImportError as e:
        raise missing_hub_error(classes, path, e) from e
    return keras_hub


#: Seconds the deferred build of :func:`check_size` may take. The largest keras-hub
#: presets (126 transformer layers) build in a few seconds; a config that asks for
#: thousands of layers does not, and is refused as too large rather than left to run
#: until the worker's timeout.
COUNT_SECONDS = 30.0
#: How often the deferred build's running count and clock are looked at.
_WATCH_INTERVAL = 0.2


class _Stopped(BaseException):  # not caught by a layer's own `except Exception`
    pass


def _size(variable: Any) -> int:
    """A variable's parameters (a dropout's random state is none: ``count_params`` skips it)."""
    if getattr(variable, "name", None) == "seed_generator_state":
        return 0
    count = 1
    for dim in variable.shape:
        count *= int(dim)
    return count


def _uncompiled(node: Any) -> Any:
    """A copy of a serialized config that compiles nothing: its keras-hub task models get
    ``compile=False`` (a task compiles by default) and no ``compile_config`` is kept (the
    loader does not compile either); an optimizer's variables cannot be deferred, and none
    of them is counted."""
    if isinstance(node, list):
        return [_uncompiled(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _uncompiled(v) for k, v in node.items() if k != "compile_config"}
    hub = sys.modules.get("keras_hub")
    name = node.get("registered_name")
    if hub is not None and isinstance(name, str) and isinstance(out.get("config"), dict):
        from keras.saving import get_registered_object

        cls = get_registered_object(name)
        if isinstance(cls, type) and issubclass(cls, hub.models.Task):
            out["config"]["compile"] = False
    return out


class _Watch:
    """Stops a deferred build (in the main thread, by ``SIGVTALRM`` every
    :data:`_WATCH_INTERVAL` s of CPU time) once the variables it created pass ``max_params`` or it has
    run ``seconds``: ``num_layers=10**12`` is refused as soon as its count passes the limit,
    not when the worker times out. Elsewhere than in the main thread it only counts."""

    def __init__(self, max_params: int, seconds: float) -> None:
        self.max_params, self.seconds = max_params, seconds
        self.total, self.seen, self.out_of_time = 0, 0, False
        self.end = time.monotonic() + seconds

    def created(self) -> int:
        from keras.src.backend.common import global_state

        variables = global_state.get_global_attribute("uninitialized_variables", [])
        for variable in variables[self.seen :]:
            self.total += _size(variable)
        self.seen = len(variables)
        return self.total

    def _tick(self, signum: int, frame: Any) -> None:
        if self.created() > self.max_params:
            raise _Stopped
        if time.monotonic() > self.end:
            self.out_of_time = True
            raise _Stopped

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
            yield
            return
        # the CPU-time timer: the wall-clock one (SIGALRM) is the worker's own backstop
        # (sandbox/confine.py), which this must neither replace nor cancel
        previous = signal.signal(signal.SIGVTALRM, self._tick)
        timer = signal.setitimer(signal.ITIMER_VIRTUAL, _WATCH_INTERVAL, _WATCH_INTERVAL)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_VIRTUAL, *timer)
            signal.signal(signal.SIGVTALRM, previous)


def _in_compile(error: BaseException) -> bool:
    """Whether ``error`` was raised inside a ``compile`` call: a task model that compiles
    itself whatever it is told (``TextToImage``) creates its optimizer's variables, which
    cannot be deferred, after every layer is built."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "compile":
            return True
        tb = tb.tb_next
    return False


def deferred_count(
    config: dict[str, Any],
    *,
    safe_mode: bool,
    custom_objects: dict[str, Any] | None,
    max_params: int | None = None,
    seconds: float = COUNT_SECONDS,
) -> tuple[int, BaseException | None, bool]:
    """(parameters, None, False): ``count_params()`` of the object a serialized config
    builds, with Keras's deferred variables (``StatelessScope(initialize_variables=False)``):
    every layer is built and every variable gets its shape, none is allocated, so a size
    costs nothing. When the build fails, passes ``max_params`` or runs out of ``seconds``
    (``_Watch``): (the sizes of the variables it had created, a lower bound of what the
    real build would allocate; the exception; whether it ran out of time)."""
    from keras.src.backend import StatelessScope
    from keras.src.backend.common import global_state

    from kerinspect.engine.tfenv import import_keras

    keras = import_keras()
    watch = _Watch(max_params if max_params is not None else 2**63, seconds)
    global_state.set_global_attribute("uninitialized_variables", [])
    try:
        with watch.running(), StatelessScope(initialize_variables=False), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the real build, next, says what is worth saying
            built = keras.saving.deserialize_keras_object(
                _uncompiled(config), custom_objects=custom_objects, safe_mode=safe_mode
            )
            return int(built.count_params()), None, False
    except (Exception, _Stopped) as e:  # noqa: BLE001 - the caller decides what it means
        if isinstance(e, ValueError) and _in_compile(e):  # every layer was built: counted whole
            return watch.created(), None, False
        return watch.created(), e, watch.out_of_time
    finally:  # the deferred variables, which the next build would otherwise initialize
        global_state.set_global_attribute("uninitialized_variables", [])


def check_size(
    config: dict[str, Any],
    classes: Sequence[str],
    max_params: int,
    path: str,
    *,
    safe_mode: bool,
    custom_objects: dict[str, Any] | None,
    seconds: float = COUNT_SECONDS,
) -> int | None:
    """Refuse (exit 5, ``too-many-params``) a config with keras-hub objects that builds
    more than ``max_params`` parameters, counted by :func:`deferred_count` before any
    weight exists (a build stopped part-way is judged on what it had created), or whose
    deferred build takes more than ``seconds``. Returns the count, or None when the
    deferred build failed below the limit (the real build then says why, in its words)."""
    names = ", ".join(escape_text(n, 80) for n in classes[:3]) + (" ..." if len(classes) > 3 else "")
    count, error, out_of_time = deferred_count(
        config, safe_mode=safe_mode, custom_objects=custom_objects, max_params=max_params, seconds=seconds
    )
    if isinstance(error, MemoryError):
        raise error
    if count > max_params:
        raise PolicyError(
            f"The model builds {'at least ' if error is not None else ''}{count:,} parameters, above the limit "
            f"of {max_params:,} (counted from the arguments of its keras-hub objects, {names}, with deferred "
            f"weights); it is refused before its weights are created. Received: path={escape_text(path)}",
            rule="too-many-params",
            hint=msg("raise {max_params} if this size is expected"),
        )
    if out_of_time:
        raise PolicyError(
            f"Counting the parameters of the keras-hub model ({names}) took more than {seconds:g} s "
            f"(its config asks for that many layers); it is refused before its weights are created. "
            f"Received: path={escape_text(path)}",
            rule="too-many-params",
            hint="the largest keras-hub presets are counted in seconds: check num_layers and the other sizes",
        )
    return count if error is None else None


@dataclass(frozen=True)
class InputHint:
    """How to draw one input of a keras-hub backbone.

    Attributes:
        int_high: exclusive upper bound of the values.
        fill: every element takes this value (padding masks: 1) instead of a draw.
        max_len: the longest sequence the backbone takes (its position table).
        note: what the report's input line says.
    """

    int_high: int | None
    fill: int | None
    max_len: int | None
    note: str


def backbone_of(model: Any) -> Any:
    """The keras-hub backbone ``model`` is or holds (a task's ``backbone``), else None.

    Never imports keras_hub: a model of keras-hub classes was loaded only after it was."""
    hub = sys.modules.get("keras_hub")
    if hub is None:
        return None
    backbone_class = hub.models.Backbone
    if isinstance(model, backbone_class):
        return model
    inner = getattr(model, "backbone", None)
    return inner if isinstance(inner, backbone_class) else None


def _positive_int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None


def backbone_input_hints(model: Any, names: Sequence[str]) -> dict[str, InputHint]:
    """Input name -> :class:`InputHint` for the inputs (``names``) of a keras-hub backbone
    (or of a task holding one) that keras-hub names by role: ``*token_ids`` in
    ``[0, vocabulary_size)``, ``*padding_mask`` all ones, ``*segment_ids`` in
    ``[0, num_segments)``; sequences at most ``max_sequence_length`` long. Empty for
    other models."""
    backbone = backbone_of(model)
    if backbone is None:
        return {}
    who = type(backbone).__name__
    vocab = _positive_int(getattr(backbone, "vocabulary_size", None))
    segments = _positive_int(getattr(backbone, "num_segments", None))
    max_len = _positive_int(getattr(backbone, "max_sequence_length", None))
    longest = f"; sequences of at most max_sequence_length={max_len}" if max_len else ""
    hints: dict[str, InputHint] = {}
    for name in names:
        if name.endswith("token_ids") and vocab:
            hints[name] = InputHint(
                vocab,
                None,
                max_len,
                f"drawn as token ids in [0, {vocab}) for {who} (vocabulary_size{longest})",
            )
        elif name.endswith("segment_ids") and segments:
            hints[name] = InputHint(
                segments, None, max_len, f"drawn as segment ids in [0, {segments}) for {who} (num_segments)"
            )
        elif name.endswith("padding_mask"):
            hints[name] = InputHint(2, 1, max_len, f"all ones (no padding) for {who}")
    return hints
