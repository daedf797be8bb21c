"""``check``'s gradient rules: ``vanishing-gradient`` and ``exploding-gradient``.

They judge the :class:`~kerinspect.gradients.GradientReport` the same worker computed
beside the model's report (:func:`kerinspect.api.inspect_with_gradients`), with the
flags ``kerinspect gradients`` shows: an output's gradient norm over the norm of the
gradient reaching the output layer's input (its ``ratio``) below ``vanishing_gradient``,
or above ``exploding_gradient`` (or a gradient holding NaN/Inf). Each layer output is one
tensor: failed when flagged, passed when it has a ratio and is not, not checked when it
has none (not float, not on the loss's path, no reference), or when it is the model's
input or output, which are never flagged, or when its layer is ignored.

Failures are listed **from the output backwards**: the first one is where gradients
start to vanish (or explode), the layer ``kerinspect gradients`` names, ignored layers
passed over. Pure: plain data in, :class:`~kerinspect.check_results.RuleResult` out.
"""

from __future__ import annotations

from collections.abc import Callable

from .check_results import Failure, RuleCounts, RuleResult
from .config import GRADIENT_RULES, CheckConfig
from .gradients import GradientLayer, GradientOutput, GradientReport
from .report import ModelReport


def loss_note(report: GradientReport) -> str:
    """What was differentiated, in one line (as the ``gradients`` header says it)."""
    loss = report.loss
    logits = ", from logits" if loss.from_logits else ""
    source = "the saved compile_config" if loss.source == "compile_config" else "--loss or loss ="
    labels = (
        "the model's own top prediction as the label" if loss.labels == "predicted" else "the data's labels"
    )
    value = "" if loss.value is None else f" = {loss.value:.4g}"
    return f"gradients of {loss.name}{logits} (from {source}){value}, with {labels}"


def _limit(rule: str, config: CheckConfig) -> float:
    return config.vanishing_gradient if rule == "vanishing-gradient" else config.exploding_gradient


def _failure(
    rule: str, layer: GradientLayer, out: GradientOutput, reference: float | None, limit: float
) -> Failure:
    g = out.gradient
    assert g is not None
    values = {
        "norm": g.norm,
        "ratio": g.ratio,
        "reference_norm": reference,
        "nan": g.nan,
        "inf": g.inf,
        "limit": limit,
    }
    if g.nan or g.inf:
        message = f"its gradient holds {g.nan:,} NaN and {g.inf:,} Inf values"
    else:
        side = "below" if rule == "vanishing-gradient" else "above"
        message = (
            f"gradient norm {g.norm:.3g} is {g.ratio:.3g}× the gradient reaching the output layer's "
            f"input ({side} {limit:g})"
        )
    return Failure(rule, layer.path, out.name, message, values)


def gradient_rules(
    gradients: GradientReport | None,
    report: ModelReport,
    config: CheckConfig,
    ignored: Callable[[str], bool],
) -> list[RuleResult]:
    """The gradient rules ``config`` asks for, in :data:`GRADIENT_RULES` order, over
    ``gradients`` (None: not computed, every rule ``not_checked`` with a note).
    ``report`` (the same run's) says which outputs are the model's own; ``ignored``
    tells an exempted layer path (``--ignore``)."""
    rules = config.gradient_rules
    if not rules:
        return []
    if gradients is None:
        return [
            RuleResult(
                rule,
                "gradients",
                "tensor",
                "not_checked",
                RuleCounts(),
                _limit(rule, config),
                note="no gradient report: the run did not differentiate the loss",
            )
            for rule in rules
        ]
    own = {(r.path, o.name) for r in report.layers for o in r.outputs if o.model_output}
    reference = gradients.reference.norm
    results = []
    for rule in rules:
        limit = _limit(rule, config)
        failed = passed = not_checked = n_ignored = 0
        failures: list[Failure] = []
        for layer in reversed(gradients.layers):  # from the output backwards
            skip = ignored(layer.path)
            for out in layer.outputs:
                g = out.gradient
                judged = (
                    g is not None
                    and g.ratio is not None
                    and layer.class_name != "InputLayer"
                    and (layer.path, out.name) not in own
                )
                if skip:
                    not_checked += 1
                    n_ignored += 1
                elif not judged:
                    not_checked += 1
                elif rule in out.flags:  # the rule is named after the flag
                    failed += 1
                    failures.append(_failure(rule, layer, out, reference, limit))
                else:
                    passed += 1
        counts = RuleCounts(failed, passed, not_checked, n_ignored)
        verdict = "failed" if failed else "passed" if passed else "not_checked"
        results.append(
            RuleResult(
                rule,
                "gradients",
                "tensor",
                verdict,
                counts,
                limit,
                tuple(failures),
                note=loss_note(gradients),
            )
        )
    return results


__all__ = ["GRADIENT_RULES", "gradient_rules", "loss_note"]
