"""keras-hub in the worker (``pip install 'kerinspect[hub]'``).

keras_hub is imported only for a file whose config uses keras-hub classes (the static
scan lists them: :attr:`kerinspect.scan.model.ScanResult.hub_classes`), before Keras
deserializes it: the import registers keras-hub's classes, which Keras's safe mode then
resolves by their registered names (``keras_hub>BertBackbone``). Other runs never pay
for the import.

It also knows what a keras-hub backbone's inputs mean, so that synthetic inputs are
meaningful (:func:`backbone_input_hints`): token ids below the vocabulary size, padding
masks of ones, segment ids below the number of segments, and no sequence longer than the
backbone's position table.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kerinspect.errors import ModelLoadError, escape_text

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
