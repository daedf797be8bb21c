"""The built-in Keras losses ``gradients`` may differentiate, by every name Keras saves
them under: stdlib only, so the parent refuses an unknown ``loss`` before any worker
starts, and the worker (:mod:`kerinspect.engine.gradients`) reads a saved
``compile_config``'s loss against the same table. No loss code ever comes from a file.
"""

from __future__ import annotations

from kerinspect.errors import UsageError, escape_text, msg

#: Losses whose labels are classes (``sparse``: indices; else one-hot or 0/1): without
#: labels, the model's top prediction is one.
CLASS_LOSSES = frozenset(
    {
        "binary_crossentropy",
        "binary_focal_crossentropy",
        "categorical_crossentropy",
        "categorical_focal_crossentropy",
        "sparse_categorical_crossentropy",
        "categorical_hinge",
        "hinge",
        "squared_hinge",
    }
)
#: Losses whose labels are values.
VALUE_LOSSES = (
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "huber",
    "log_cosh",
    "poisson",
    "kl_divergence",
    "cosine_similarity",
)
#: Built-in Keras losses by every name Keras saves them under (function names, their
#: aliases, class names): the canonical function name.
LOSSES: dict[str, str] = {
    **{n: n for n in (*VALUE_LOSSES, *sorted(CLASS_LOSSES))},
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "kld": "kl_divergence",
    "logcosh": "log_cosh",
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
    "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error",
    "BinaryCrossentropy": "binary_crossentropy",
    "BinaryFocalCrossentropy": "binary_focal_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "CategoricalFocalCrossentropy": "categorical_focal_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "CategoricalHinge": "categorical_hinge",
    "Hinge": "hinge",
    "SquaredHinge": "squared_hinge",
    "Huber": "huber",
    "LogCosh": "log_cosh",
    "Poisson": "poisson",
    "KLDivergence": "kl_divergence",
    "CosineSimilarity": "cosine_similarity",
}
LOGITS_LOSSES = {n for n in CLASS_LOSSES if "crossentropy" in n}


def loss_names() -> str:
    """The lower-case names, for a hint."""
    return ", ".join(sorted(n for n in LOSSES if n.islower()))


def check_loss(name: str) -> str:
    """``name`` when it is one of :data:`LOSSES`; else :class:`UsageError` naming ``loss``."""
    if name not in LOSSES:
        raise UsageError(
            msg(
                "Unknown loss {value!r}: {loss} takes a built-in Keras loss name (a custom loss's code is "
                "never run). Received: {loss}={value!r}",
                value=escape_text(name, 80),
            ),
            parameter="loss",
            hint=f"one of {loss_names()}",
        )
    return name


def check_loss_options(name: str | None, from_logits: bool = False) -> None:
    """Refuse an unknown ``loss`` (:func:`check_loss`), and ``from_logits`` with a loss
    that is not a cross-entropy (:data:`LOGITS_LOSSES`): before any worker starts."""
    if name is None:
        return
    check_loss(name)
    if from_logits and LOSSES[name] not in LOGITS_LOSSES:
        raise UsageError(
            msg(
                "{from_logits} applies to the cross-entropies only. Received: {loss}={name!r}",
                name=escape_text(name, 80),
            ),
            parameter="from_logits",
        )
