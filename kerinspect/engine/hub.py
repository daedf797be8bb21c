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
meaningful (:func:`backbone_input_hints`): sequences of realistic lengths (token ids below
the vocabulary size, between the tokenizer's start and end tokens where a task's
preprocessor knows them, then padding; a padding mask that says where each sequence
ends; segment ids of one segment), never longer than the backbone's position table.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
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


#: CPU seconds the deferred build of :func:`check_size` may take. The largest keras-hub
#: presets (126 transformer layers) build in a few seconds; a config that asks for
#: thousands of layers does not, and is refused as too large rather than left to run
#: until the worker's timeout. CPU time, not wall time: a busy machine does not refuse a
#: model that a quiet one accepts.
COUNT_SECONDS = 30.0
#: How often (CPU seconds) the deferred build's running count and clock are looked at.
_WATCH_INTERVAL = 0.2


class _Stopped(BaseException):  # not caught by a layer's own `except Exception`
    pass


def _size(variable: Any) -> int:
    """A variable's parameters (a dropout's random state is none: ``count_params`` skips it)."""
    if getattr(variable, "name", None) == "seed_generator_state":
        return 0
    count = 1
    for dim in variable.shape:
        try:
            count *= int(dim)
        except (TypeError, ValueError):  # not a known size: counted by count_params, if built
            return 0
    return count


class _Watch:
    """Stops a deferred build (in the main thread, by ``SIGVTALRM`` every
    :data:`_WATCH_INTERVAL` s of CPU time) once the variables it created pass ``max_params``
    or it has used ``seconds`` of CPU: ``num_layers=10**12`` is refused as soon as its count
    passes the limit, not when the worker times out. Elsewhere than in the main thread it
    only counts."""

    def __init__(self, max_params: int, seconds: float) -> None:
        self.max_params, self.seconds = max_params, seconds
        self.total, self.seen, self.out_of_time = 0, 0, False
        self.end = time.process_time() + seconds

    def created(self) -> int:
        from keras.src.backend.common import global_state

        variables = global_state.get_global_attribute("uninitialized_variables", [])
        for variable in variables[self.seen :]:
            self.total += _size(variable)
        self.seen = len(variables)
        return self.total

    def _tick(self, signum: int, frame: Any) -> None:
        over = self.created() > self.max_params
        if over or time.process_time() > self.end:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)  # raise once: nothing fires during the unwinding
            self.out_of_time = not over
            raise _Stopped

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
            yield
            return
        # the CPU-time timer: the wall-clock one (SIGALRM) is the worker's own backstop
        # (sandbox/confine.py), which this must neither replace nor cancel
        previous = signal.signal(signal.SIGVTALRM, self._tick)
        try:
            timer = signal.setitimer(signal.ITIMER_VIRTUAL, _WATCH_INTERVAL, _WATCH_INTERVAL)
            try:
                yield
            finally:
                signal.setitimer(signal.ITIMER_VIRTUAL, *timer)
        finally:
            signal.signal(signal.SIGVTALRM, previous)


@contextlib.contextmanager
def _counting() -> Iterator[None]:
    """Keras as a deferred build needs it, and as it was afterwards:

    * nothing compiles: a keras-hub task compiles itself (``TextToImage`` whatever it is
      told), and an optimizer's variables cannot be deferred; none of them is counted. Every
      ``compile`` of ``keras.Model`` and its subclasses does nothing meanwhile;
    * Keras's name counters are restored, so that the real build names its layers as in a
      fresh process (``softmax``, not ``softmax_2``: reports and ``--layers`` paths);
    * the deferred variables are dropped, or the next build would initialize them;
    * warnings are not shown (the real build says what is worth saying)."""
    import keras
    from keras.src.backend.common import global_state

    def no_compile(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def models(cls: Any) -> Iterator[Any]:
        yield cls
        for sub in cls.__subclasses__():
            yield from models(sub)

    patched = [(c, c.__dict__["compile"]) for c in set(models(keras.Model)) if "compile" in c.__dict__]
    names = global_state.get_global_attribute("object_name_uids", None)
    saved_names = copy.copy(names) if names is not None else None
    global_state.set_global_attribute("uninitialized_variables", [])
    try:
        for cls, _ in patched:
            setattr(cls, "compile", no_compile)  # noqa: B010 - any class, typed as type
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for cls, original in patched:
            setattr(cls, "compile", original)  # noqa: B010
        global_state.set_global_attribute("object_name_uids", saved_names)
        global_state.set_global_attribute("uninitialized_variables", [])


def shown_classes(classes: Sequence[str]) -> str:
    """The keras-hub classes of a model, for a message: the first three, escaped."""
    return ", ".join(escape_text(n, 80) for n in classes[:3]) + (" ..." if len(classes) > 3 else "")


def deferred_count(
    build: Callable[[], Any], *, max_params: int | None = None, seconds: float = COUNT_SECONDS
) -> tuple[int, BaseException | None, bool]:
    """(parameters, None, False): ``count_params()`` of what ``build()`` builds (a model from
    its config, as the loader builds it), with Keras's deferred variables
    (``StatelessScope(initialize_variables=False)``): every layer is built and every
    variable gets its shape, none is allocated, so a size costs nothing. When the build
    fails, passes ``max_params`` or runs out of ``seconds`` (``_Watch``): (the sizes of the
    variables it had created, a lower bound of what the real build would allocate; the
    exception; whether it ran out of time)."""
    from keras.src.backend import StatelessScope

    watch = _Watch(max_params if max_params is not None else 2**63, seconds)
    with _counting():
        try:
            with StatelessScope(initialize_variables=False), watch.running():
                return int(build().count_params()), None, False
        except (Exception, _Stopped) as e:  # noqa: BLE001 - the caller decides what it means
            return watch.created(), e, watch.out_of_time


def check_size(
    build: Callable[[], Any],
    classes: Sequence[str],
    max_params: int,
    path: str,
    *,
    seconds: float = COUNT_SECONDS,
) -> tuple[int, BaseException | None]:
    """Refuse (exit 5, ``too-many-params``) a model with keras-hub objects that builds more
    than ``max_params`` parameters, counted by :func:`deferred_count` before any weight
    exists (a build stopped part-way is judged on what it had created), or whose deferred
    build takes more than ``seconds`` of CPU. Returns (the count, None), or (what was
    counted, the exception) when the deferred build failed below the limit: the caller
    decides whether what cannot be counted is built."""
    names = shown_classes(classes)
    count, error, out_of_time = deferred_count(build, max_params=max_params, seconds=seconds)
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
            f"Counting the parameters of the keras-hub model ({names}) took more than {seconds:g} s of CPU "
            f"(its config asks for that many layers); it is refused before its weights are created. "
            f"Received: path={escape_text(path)}",
            rule="too-many-params",
            hint="the largest keras-hub presets are counted in seconds: check num_layers and the other sizes",
        )
    return count, error


@dataclass(frozen=True)
class InputHint:
    """How to draw one input of a keras-hub backbone.

    Attributes:
        int_high: exclusive upper bound of the values.
        fill: every element takes this value (padding masks: 1) instead of a draw,
            where the input is not (batch, steps).
        max_len: the longest sequence the backbone takes (its position table).
        note: what the report's input line says.
        role: ``token_ids``, ``padding_mask`` or ``segment_ids``: drawn together, each
            sample a sequence of some length then padding
            (:func:`kerinspect.engine.inputs.sequence_lengths`).
        start: the token id each sequence starts with (the tokenizer's), if known.
        end: the token id each sequence ends with, if known.
        pad: the token id after the sequence (the tokenizer's, else 0).
    """

    int_high: int | None
    fill: int | None
    max_len: int | None
    note: str
    role: str | None = None
    start: int | None = None
    end: int | None = None
    pad: int = 0


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
    ``[0, vocabulary_size)``, ``*padding_mask`` ones over each sample's sequence, zeros
    after, ``*segment_ids`` 0; sequences at most ``max_sequence_length`` long, each of
    its own length (shared by the three). A task's preprocessor's tokenizer gives the
    start, end and padding token ids. Empty for other models."""
    backbone = backbone_of(model)
    if backbone is None:
        return {}
    who = type(backbone).__name__
    vocab = _positive_int(getattr(backbone, "vocabulary_size", None))
    segments = _positive_int(getattr(backbone, "num_segments", None))
    max_len = _positive_int(getattr(backbone, "max_sequence_length", None))
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    start, end, pad = (_token_id(tokenizer, f"{k}_token_id", vocab) for k in ("start", "end", "pad"))
    longest = f", at most max_sequence_length={max_len}" if max_len else ""
    ends = ""
    if start is not None or end is not None:
        ends = " from " + (f"start id {start}" if start is not None else "any id")
        ends += " to " + (f"end id {end}" if end is not None else "any id")
    lengths = f"sequences of 1/4 to all of the steps{longest}"
    hints: dict[str, InputHint] = {}
    for name in names:
        if name.endswith("token_ids") and vocab:
            hints[name] = InputHint(
                vocab,
                None,
                max_len,
                f"token ids in [0, {vocab}) for {who} (vocabulary_size): {lengths}{ends}, "
                f"then padding id {pad or 0}",
                "token_ids",
                start,
                end,
                pad or 0,
            )
        elif name.endswith("segment_ids") and segments:
            hints[name] = InputHint(
                segments, None, max_len, f"segment ids 0 (one segment) for {who}", "segment_ids"
            )
        elif name.endswith("padding_mask"):
            hints[name] = InputHint(
                2,
                1,
                max_len,
                f"padding mask for {who}: ones over each sample's sequence, zeros after",
                "padding_mask",
            )
    return hints


def _token_id(tokenizer: Any, attribute: str, vocab: int | None) -> int | None:
    value = getattr(tokenizer, attribute, None) if tokenizer is not None else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (vocab or 0):
        return value
    return None
