"""Deserialize a model file with Keras 3, translating every failure into one clear error.

Runs in the worker, after the static scan (:mod:`kerinspect.scan`) accepted the file.
Keras's own errors for bad files are often misleading ("File not found" for a
truncated zip); every loader failure becomes one
:class:`~kerinspect.errors.ModelLoadError` carrying the innermost cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from kerinspect.errors import (
    ChildCrashError,
    KerinspectError,
    Message,
    ModelLoadError,
    escape_text,
    msg,
    whole_sentences,
)
from kerinspect.scan.model import ScanResult
from kerinspect.scan.preflight import ModelFile
from kerinspect.spec import LoadOptions

#: The hint of a class that is neither Keras's nor loaded.
CUSTOM_OBJECTS_HINT = msg(
    "pass {custom_objects} FILE.py that defines or registers it (objects that file imports do not count)"
)


def innermost_message(exc: BaseException) -> str:
    """The most specific message in an exception chain.

    Keras wraps deserialization failures ("could not be deserialized properly")
    around the real cause; follow ``__cause__``/``__context__`` to the end.
    """
    seen = set()
    inner = exc
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    text = str(inner).strip() or type(inner).__name__
    # Keras appends the full offending config; it is long and attacker-controlled.
    for marker in ("\n\nconfig=", "\nconfig=", "\n\nException encountered:", "Full object config:"):
        head, sep, _ = text.partition(marker)
        if sep and head.strip():
            text = head
    return " ".join(text.split())


#: The module name the user's ``--custom-objects`` file runs as: what it defines has it.
CUSTOM_OBJECTS_MODULE = "kerinspect_custom_objects"


def defined_in_custom_objects(value: Any) -> bool:
    """Whether ``value`` was defined by the ``--custom-objects`` file itself (a class or
    function whose ``__module__`` is the file's), not imported by it."""
    return getattr(value, "__module__", None) == CUSTOM_OBJECTS_MODULE


def load_custom_objects(path: str) -> dict[str, Any]:
    """Run the user's ``--custom-objects`` file and collect what it defines.

    The file is the user's own trusted code. It may register classes with
    ``@keras.saving.register_keras_serializable``, define a ``custom_objects``
    dict, or just define classes and functions. Only what the file *defines* counts
    (:func:`defined_in_custom_objects`): an ``import keras_hub`` in it registers every
    keras-hub object with Keras, and none of them becomes "the user's own" by it; a
    ``custom_objects`` dict's entries count when the file defines them.
    """
    import runpy

    from kerinspect.engine.tfenv import import_keras

    import_keras()
    name = CUSTOM_OBJECTS_MODULE
    try:
        namespace = runpy.run_path(path, run_name=name)
    except Exception as e:  # noqa: BLE001 - the user's file failed: say where
        raise ModelLoadError(
            msg(
                "Running the {custom_objects} file failed: {kind}: {cause}. Received: {custom_objects}={path}",
                kind=type(e).__name__,
                cause=innermost_message(e),
                path=escape_text(path),
            ),
            rule="custom-objects-failed",
        ) from e
    explicit = namespace.get("custom_objects")
    if isinstance(explicit, dict):
        return {str(k): v for k, v in explicit.items() if defined_in_custom_objects(v)}
    return {
        k: v
        for k, v in namespace.items()
        if callable(v) and defined_in_custom_objects(v) and not k.startswith("_")
    }


def _out_of_memory(exc: BaseException) -> bool:
    """A MemoryError or TensorFlow's ResourceExhaustedError anywhere in the chain."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError) or type(e).__name__ == "ResourceExhaustedError":
            return True
        e = e.__cause__ or e.__context__
    return False


_UNKNOWN_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'")


_INIT_KWARG = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")

_INIT_MISSING = re.compile(
    r"(\w+)\.__init__\(\) missing \d+ required (?:positional|keyword-only) arguments?: ([^.]+)"
)


def known_cause_hint(message: str) -> str | Message | None:
    """A next step for loader failures whose cause is known from Keras's message."""
    import sys

    if "bad marshal data" in message or "unknown type code" in message:
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        return msg(
            "a Lambda layer's bytecode was compiled by another Python version than this one ({here}); "
            "run kerinspect under the Python that saved the model, or rebuild the Lambda from source "
            "in a {custom_objects} file",
            here=here,
        )
    init = _INIT_KWARG.search(message)
    if init:
        return (
            f"the custom class {init.group(1)}'s __init__ does not accept '{init.group(2)}', which Keras "
            "passes to every layer: give it **kwargs and pass them to super().__init__(**kwargs)"
        )
    missing = _INIT_MISSING.search(message)
    if missing:
        return (
            f"the file stores no value for {missing.group(2)}, which {missing.group(1)}.__init__ requires "
            "(its saved config holds only what the class's get_config returned), so no loader can rebuild "
            "the model from this file: re-save it with a get_config that returns the constructor arguments, "
            "or build the model in code and load only its weights"
        )
    if "did NOT create the state" in message or "does not have a `build()` method" in message:
        return msg(
            "a custom layer creates sub-layers whose weights only exist after a call: give it a build() "
            "method that builds them (or calls it once), in the {custom_objects} file"
        )
    return None


@dataclass(frozen=True)
class LoadedModel:
    """A deserialized model and how it was read."""

    model: Any
    #: "keras", or "keras+legacy-h5-upgrade" / "keras+legacy-archive-upgrade" when a Keras 2
    #: config (a legacy .h5, a tf.keras 2.13-2.15 .keras archive) was rewritten
    loader: str
    notes: tuple[str, ...] = ()
    #: the saved ``compile_config``'s ``loss`` as the file holds it (a name, a serialized
    #: loss, anything): data for ``gradients`` to judge, never deserialized here
    compile_loss: Any = None


def load_model(
    model_file: ModelFile,
    scanned: ScanResult,
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> LoadedModel:
    """Build the model the static scan judged, with Keras 3 (uncompiled): ``scanned.config``
    as it is, built the way ``scanned.build`` says (a Keras 2 config is already rewritten
    for Keras 3, :mod:`kerinspect.engine.legacy`); only the weights (and assets) are read
    from ``model_file``, never the config again. Every failure becomes a ModelLoadError."""
    from kerinspect.engine import keras_adapter as ka

    config, path = scanned.config, model_file.path
    changes = tuple(f"legacy config upgraded: {c}" for c in scanned.changes)
    try:
        if scanned.build == "h5":
            from kerinspect.engine.legacy import load_h5

            model = load_h5(
                path,
                config,
                safe_mode=safe_mode,
                custom_objects=custom_objects,
                cudnn="cudnn-rnn" in scanned.changes,
            )
            return LoadedModel(model, "keras+legacy-h5-upgrade" if changes else "keras", changes)
        if scanned.build == "keras2-archive":  # tf.keras 2.13-2.15 wrote it: Keras 3's weights layout
            from kerinspect.engine.legacy import load_keras2_archive

            model, backslash = load_keras2_archive(
                path, config, safe_mode=safe_mode, custom_objects=custom_objects
            )
            if backslash:
                changes = (*changes, "legacy config upgraded: windows-weight-paths")
            return LoadedModel(model, "keras+legacy-archive-upgrade", changes)
        model = ka.archive_model(path, config, custom_objects=custom_objects, safe_mode=safe_mode)
        return LoadedModel(model, "keras", tuple(f"config repaired: {c}" for c in scanned.changes))
    except MemoryError:
        raise  # the worker reports it as exit 8 (memory-limit), not as a bad file
    except KerinspectError:
        raise  # already one clear line (an op the legacy upgrade cannot convert)
    except Exception as e:  # noqa: BLE001 - every loader failure becomes one clear error
        inner = innermost_message(e)
        if _out_of_memory(e):
            raise ChildCrashError(
                f"Out of memory while loading the model (building its layers or reading its weights): "
                f"{inner}. Received: path={escape_text(model_file.path)}",
                rule="memory-limit",
                hint=msg("raise {max_memory} if the machine has room"),
            ) from e
        user = user_code_error(e, model_file.path)
        if user is not None:
            raise user from e
        unknown = _UNKNOWN_CLASS.search(inner)
        if unknown:
            raise ModelLoadError(
                f"Unknown layer class {escape_text(unknown.group(1))!r}: the model uses a custom class "
                f"that is not loaded. Received: path={escape_text(model_file.path)}",
                rule="unknown-class",
                hint=CUSTOM_OBJECTS_HINT,
            ) from e
        raise ModelLoadError(
            f"Keras could not load the model: {escape_text(whole_sentences(inner), 1500)}"
            f"{'' if inner.endswith(('.', '[...]')) else '.'} Received: path={escape_text(model_file.path)}",
            rule="load-failed",
            hint=known_cause_hint(inner),
        ) from e


def build_judged(
    model_file: ModelFile, scanned: ScanResult, *, safe_mode: bool, custom_objects: dict[str, Any] | None
) -> Any:
    """The model, weights not loaded, that :func:`load_model` builds from the judged config,
    built by the same code (Keras 3 archives by Keras's archive builder; ``.h5`` and tf.keras
    2.x archives by its legacy one)."""
    if scanned.build == "keras":
        from kerinspect.engine.keras_adapter import model_from_archive_config

        return model_from_archive_config(scanned.config, custom_objects=custom_objects, safe_mode=safe_mode)
    from kerinspect.engine.legacy import build_legacy

    return build_legacy(model_file.path, scanned.config, safe_mode=safe_mode, custom_objects=custom_objects)


def custom_objects(path: str | None) -> dict[str, Any] | None:
    """Import the user's ``--custom-objects`` file (their own, trusted code)."""
    if path is None:
        return None
    return load_custom_objects(path)


def scan_and_load(model_file: ModelFile, options: LoadOptions, phase: Any = None) -> LoadedModel:
    """Refuse what the static scan refuses, then deserialize with Keras.

    ``options``: its ``trust_model``, ``custom_objects`` (a file path), ``max_params``;
    ``phase``: called with the name of each step as it starts (``scan``, ``load``).
    """
    from kerinspect.scan import Limits, scan_model_file

    from .tfenv import import_keras

    trust = options.trust_model
    if phase is not None:
        phase("scan")
    custom = custom_objects(options.custom_objects)
    declared = set(custom or ())
    if custom is not None:  # what the file registers with @register_keras_serializable counts too
        registered = import_keras().saving.get_custom_objects()
        declared |= {k for k, v in registered.items() if defined_in_custom_objects(v)}
    limits = Limits(max_params=options.max_params)
    scanned = scan_model_file(
        model_file.path, model_file.format, limits, allow_code=trust, custom_classes=frozenset(declared)
    )
    if scanned.unknown_classes:
        _refuse_removed_layers(scanned, model_file.path)
        names = ", ".join(repr(escape_text(n, 80)) for n in scanned.unknown_classes[:5])
        raise ModelLoadError(
            f"Unknown layer class {names}: the model uses custom code that is not loaded "
            f"(custom objects are never imported from the file). "
            f"Received: path={escape_text(model_file.path)}",
            rule="unknown-class",
            hint=_unknown_hint(scanned.unknown_classes),
        )
    if scanned.hub_classes:  # registers keras-hub's classes for Keras's safe-mode lookup
        from kerinspect.engine.hub import import_keras_hub

        import_keras_hub(scanned.hub_classes, model_file.path)
    if trust:  # without it, the scan refused every Lambda's bytecode
        _refuse_foreign_bytecode(scanned.config, model_file.path)
    if phase is not None:
        phase("load")
    if scanned.hub_classes:  # their configs hold arguments, not layers: count what they build
        _check_hub_size(model_file, scanned, options, custom)
    loaded = load_model(model_file, scanned, safe_mode=not trust, custom_objects=custom)
    compile_config = scanned.config.get("compile_config")
    if isinstance(compile_config, dict) and compile_config.get("loss") is not None:
        loaded = replace(loaded, compile_loss=compile_config["loss"])
    return loaded


def _check_hub_size(
    model_file: ModelFile, scanned: ScanResult, options: LoadOptions, custom: dict[str, Any] | None
) -> None:
    """Count what the judged config builds, built as :func:`load_model` will build it but
    with deferred weights (:func:`kerinspect.engine.hub.check_size`); refuse it over
    ``max_params``. What cannot be counted is not built, unless the user trusts the file."""
    from kerinspect.engine.hub import check_size, shown_classes

    trust = options.trust_model
    _, error = check_size(
        lambda: build_judged(model_file, scanned, safe_mode=not trust, custom_objects=custom),
        scanned.hub_classes,
        options.max_params,
        model_file.path,
    )
    if error is not None and not trust:
        raise ModelLoadError(
            f"Keras could not build the model's keras-hub objects ({shown_classes(scanned.hub_classes)}) "
            f"with deferred weights, to count "
            f"their parameters before creating them: {escape_text(whole_sentences(innermost_message(error)), 600)} "
            f"Received: path={escape_text(model_file.path)}",
            rule="load-failed",
            hint=msg(
                "a file you trust loads with {trust_model}, uncounted (only {max_memory} bounds it then)"
            ),
        ) from error


#: Layers of Keras 1 (kept by Keras 2.0-2.1 in ``keras.legacy.layers``) that Keras 2.2
#: removed: ``class_name -> (what it was, what replaces it)``.
REMOVED_LAYERS: dict[str, tuple[str, str]] = {
    "Merge": (
        "Keras 1's merge layer",
        "Concatenate, Add, Multiply, Average, Maximum or Dot (the layer of its mode)",
    ),
    "MaxoutDense": ("Keras 1's maxout dense layer", "Dense layers and a Maximum"),
    "Highway": ("Keras 1's highway layer", "Dense layers (a transform and a carry gate) and Multiply/Add"),
}


def _modes(node: Any, class_name: str) -> list[str]:
    """The ``mode`` of every ``class_name`` object in a config."""
    if isinstance(node, list):
        return [m for v in node for m in _modes(v, class_name)]
    if not isinstance(node, dict):
        return []
    found = [m for v in node.values() for m in _modes(v, class_name)]
    cfg = node.get("config")
    if node.get("class_name") == class_name and isinstance(cfg, dict) and isinstance(cfg.get("mode"), str):
        found.insert(0, cfg["mode"])
    return found


def _refuse_removed_layers(scanned: ScanResult, path: str) -> None:
    """One line for a Keras 1 layer Keras 2.2 removed (not a custom class: no file of the
    user's can define it)."""
    removed = [n for n in scanned.unknown_classes if n in REMOVED_LAYERS]
    if not removed:
        return
    name = removed[0]
    what, instead = REMOVED_LAYERS[name]
    modes = sorted(set(_modes(scanned.config, name)))
    shown = f" (mode {', '.join(repr(escape_text(m, 20)) for m in modes[:4])})" if modes else ""
    raise ModelLoadError(
        f"Layer class {name!r}{shown} is {what}, removed in Keras 2.2: Keras 3 cannot build it, so this "
        f"model cannot be inspected. Received: path={escape_text(path)}",
        rule="removed-layer",
        hint=f"load the model with Keras 2.1 and re-save it with {instead} in its place",
    )


def _lambdas(node: Any) -> list[tuple[str, Any]]:
    """``(name, function)`` of every Lambda layer in a config."""
    if isinstance(node, list):
        return [x for v in node for x in _lambdas(v)]
    if not isinstance(node, dict):
        return []
    found = [x for v in node.values() for x in _lambdas(v)]
    cfg = node.get("config")
    if node.get("class_name") == "Lambda" and isinstance(cfg, dict):
        if cfg.get("function_type", "lambda") == "lambda":
            found.insert(0, (str(cfg.get("name", "?")), cfg.get("function")))
    return found


def _refuse_foreign_bytecode(config: dict[str, Any], path: str) -> None:
    """One line naming a Lambda whose bytecode another Python wrote, before Keras runs it
    with this interpreter's opcodes (:mod:`kerinspect.scan.bytecode`)."""
    from kerinspect.scan.bytecode import foreign_python, lambda_code, this_python

    for name, function in _lambdas(config):
        raw = lambda_code(function)
        origin = foreign_python(raw) if raw is not None else None
        if origin is None:
            continue
        raise ModelLoadError(
            f"The Lambda layer {escape_text(name, 120)!r} holds bytecode written by {origin} (as its "
            f"marshal'd code reads); this is Python {this_python()}, which cannot run it. "
            f"Received: path={escape_text(path)}",
            rule="lambda-python-version",
            hint=f"load the model with {'the Python that saved it' if origin.startswith('another') else origin}, "
            "or rebuild the model in code with the Lambda's function written out and load only its weights",
        )


_KERAS_TENSOR_IN_TF = "A KerasTensor cannot be used as input to a TensorFlow function"
#: ``tf.math.not_equal(`` in a line of the user's code: a dotted call.
_DOTTED_CALL = re.compile(r"\b([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\s*\(")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: set[int] = set()
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _innermost_user_frame(exc: BaseException) -> Any:
    """The innermost frame of the ``--custom-objects`` file's code in the tracebacks of
    ``exc``'s chain (the deepest exception's first), or None."""
    for e in reversed(_chain(exc)):
        frames = []
        tb = e.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        user = [f for f in frames if f.f_globals.get("__name__") == CUSTOM_OBJECTS_MODULE]
        if user:
            return user[-1]
    return None


def _tf_call_in(frame: Any) -> str | None:
    """The TensorFlow function the frame's current line calls (``tf.math.not_equal``),
    read from the user's own source: a dotted name whose first part is a TensorFlow
    module in the frame's namespace."""
    import linecache

    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
    for dotted in _DOTTED_CALL.findall(line):
        root = dotted.split(".", 1)[0]
        value = frame.f_locals.get(root, frame.f_globals.get(root))
        if str(getattr(value, "__name__", "")).split(".", 1)[0] == "tensorflow":
            return str(dotted)
    return None


def user_code_error(exc: BaseException, path: str) -> ModelLoadError | None:
    """A load failure raised inside the user's ``--custom-objects`` code, as one line that
    names the class and method (and, for a TensorFlow op called on Keras 3's symbolic
    tensors while the model is built, the op and its ``keras.ops`` counterpart); None when
    the failure did not come from their code."""
    frame = _innermost_user_frame(exc)
    if frame is None:
        return None
    where = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
    source = f"{escape_text(frame.f_code.co_filename.rsplit('/', 1)[-1], 120)}, line {frame.f_lineno}"
    inner = innermost_message(exc)
    if _KERAS_TENSOR_IN_TF in inner:
        op = _tf_call_in(frame)
        from .tfenv import import_keras

        ops = import_keras().ops
        name = op.rsplit(".", 1)[-1] if op else None
        use = f"keras.ops.{name}" if name and hasattr(ops, name) else "keras.ops functions or Keras layers"
        return ModelLoadError(
            f"{escape_text(where, 200)} calls a TensorFlow op{f' ({escape_text(op, 120)})' if op else ''} on a "
            f"symbolic tensor while the model is built ({source}): Keras 3 builds it with KerasTensors, "
            f"which TensorFlow functions do not take. Received: path={escape_text(path)}",
            rule="custom-code-tf-op",
            hint=msg("use {use} in {where}, in the {custom_objects} file", use=use, where=where),
        )
    return ModelLoadError(
        f"Keras could not load the model: {escape_text(whole_sentences(inner), 1200)}"
        f"{'' if inner.endswith(('.', '[...]')) else '.'} Raised in {escape_text(where, 200)} ({source}) "
        f"of the custom objects. Received: path={escape_text(path)}",
        rule="custom-code-failed",
        hint=known_cause_hint(inner) or msg("fix {where} in the {custom_objects} file", where=where),
    )


def _unknown_hint(names: tuple[str, ...]) -> str | Message:
    """Unknown keras-hub names are classes kerinspect's keras-hub allowlist does not hold."""
    hint: str | Message = CUSTOM_OBJECTS_HINT
    if any(n.startswith(("keras_hub>", "keras_nlp>")) for n in names):
        from kerinspect.engine.hub import HUB_INSTALL_HINT
        from kerinspect.scan.allowlist_hub import KERAS_HUB_VERSION

        hint = msg(
            "kerinspect accepts the keras-hub {version} classes ({install}); a class of another "
            "keras-hub version counts only where a {custom_objects} FILE.py defines it (importing "
            "keras_hub there declares nothing)",
            version=KERAS_HUB_VERSION,
            install=HUB_INSTALL_HINT,
        )
    return hint
