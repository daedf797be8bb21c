"""One tensor's health rules, each with a three-state verdict, and its flags.

A rule can fail, pass, or not apply ("not checked": an integer tensor cannot hold
NaN, a tensor with no finite values has no magnitude). ``summary`` shows the
failed rules as flags (:func:`tensor_flags`, computed in the worker); ``check``
(:mod:`kerinspect.checks`) re-judges every tensor with its own thresholds
(:func:`tensor_verdicts`) and counts what was checked, so that a skipped tensor
never counts as a pass.
"""

from __future__ import annotations

import enum

from .config import OPTIONAL_RULES
from .report import TensorStats, Thresholds

#: Rule names, in the order flags are shown; the last ones are :data:`OPTIONAL_RULES`
#: (``summary`` shows them as flags, ``check`` runs them only when asked).
RULES = ("nan", "inf", "exploding", "dead", *OPTIONAL_RULES)

#: Largest finite value of the narrow float dtypes (float32/64 are not narrowed).
_NARROW_FLOAT_MAX = {
    "float16": 65504.0,
    "bfloat16": 3.3895313892515355e38,
    "float8_e4m3fn": 448.0,
    "float8_e4m3fnuz": 240.0,
    "float8_e5m2": 57344.0,
    "float8_e5m2fnuz": 57344.0,
}

#: A narrow-float tensor is "exploding" above its dtype's largest value divided by this.
NARROW_FLOAT_HEADROOM = 10


class Verdict(enum.StrEnum):
    FAILED = "failed"
    PASSED = "passed"
    NOT_CHECKED = "not_checked"


def is_float_dtype(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def effective_max_abs(dtype: str, max_abs: float) -> float:
    """The exploding threshold for ``dtype``: ``max_abs``, lowered for narrow floats
    to a tenth of the dtype's largest value (float16: 6550.4), where overflow to
    Inf is near long before 1e4."""
    narrow = _NARROW_FLOAT_MAX.get(dtype)
    if narrow is None:
        return max_abs
    return min(max_abs, narrow / NARROW_FLOAT_HEADROOM)


def tensor_verdicts(
    dtype: str,
    stats: TensorStats | None,
    thresholds: Thresholds,
    *,
    is_input: bool = False,
    is_weight: bool = False,
    input_rms: float | None = None,
    input_spread: float | None = None,
    container: bool = False,
) -> dict[str, Verdict]:
    """Apply every rule in :data:`RULES` to one tensor's statistics.

    Only float tensors are checked (integers cannot be NaN, Inf or explode; their
    "dead" units are ids, not activations). Model inputs and weights are not
    checked for dead units: zero columns there are data or sparsity, not a
    layer's fault.

    The rules relative to the call's input (``input_rms``, ``input_spread``: see
    :class:`~kerinspect.report.LayerRecord`) and ``saturated`` apply to layer
    outputs only, never to inputs, weights or a ``container`` (a nested model's
    record repeats the output of a layer inside it, which carries the flag):

    * ``vanishing``: the output's RMS is below ``min_rms_ratio`` times the RMS of
      the call's float input (not checked without a float input of non-zero RMS);
    * ``saturated``: the share of values at the bounds of the layer's bounded
      activation is at least ``max_saturated_fraction``;
    * ``constant``: the output's spread across samples is at most
      ``min_sample_spread`` times its RMS, while the call's input varies by more
      than that (``input_spread``, the largest spread across samples of its
      inputs, is above ``min_sample_spread`` times the output's RMS). Not checked
      when the input's variation is already that small (an input that does not
      vary, or one whose values vanished upstream): the flag lands where the
      variation is lost, not on every layer after it.
    """
    nc = Verdict.NOT_CHECKED
    if stats is None or not is_float_dtype(dtype) or stats.count == 0:
        return {rule: nc for rule in RULES}

    def v(failed: bool) -> Verdict:
        return Verdict.FAILED if failed else Verdict.PASSED

    layer_output = not (is_input or is_weight or container)
    rms = stats.magnitude
    vanishing = nc
    if layer_output and rms is not None and input_rms is not None and input_rms > 0:
        vanishing = v(rms < thresholds.min_rms_ratio * input_rms)
    saturated = nc
    if layer_output and stats.saturated_fraction is not None:
        saturated = v(stats.saturated_fraction >= thresholds.max_saturated_fraction)
    constant = nc
    if (
        layer_output
        and rms is not None
        and stats.sample_spread is not None
        and input_spread is not None
        and input_spread > thresholds.min_sample_spread * rms
    ):
        constant = v(stats.sample_spread <= thresholds.min_sample_spread * rms)
    limit = effective_max_abs(dtype, thresholds.max_abs)
    return {
        "vanishing": vanishing,
        "saturated": saturated,
        "constant": constant,
        "nan": v(stats.nan_count > 0),
        "inf": v(stats.inf_count > 0),
        "exploding": nc if stats.abs_max is None else v(stats.abs_max > limit),
        "dead": (
            nc
            if is_input or is_weight or stats.dead_fraction is None
            else v(stats.dead_fraction >= thresholds.max_dead_fraction)
        ),
    }


def tensor_flags(
    dtype: str,
    stats: TensorStats | None,
    thresholds: Thresholds,
    *,
    is_input: bool = False,
    is_weight: bool = False,
    input_rms: float | None = None,
    input_spread: float | None = None,
    container: bool = False,
) -> tuple[str, ...]:
    """The names of the rules this tensor fails, in :data:`RULES` order (the
    arguments are those of :func:`tensor_verdicts`)."""
    verdicts = tensor_verdicts(
        dtype,
        stats,
        thresholds,
        is_input=is_input,
        is_weight=is_weight,
        input_rms=input_rms,
        input_spread=input_spread,
        container=container,
    )
    return tuple(rule for rule in RULES if verdicts[rule] is Verdict.FAILED)


#: Rules an attention layer's probabilities are exempt from: a distribution over keys
#: that are not its last axis (``(batch, steps, 1)`` of a softmax over time) has the
#: same mean for every sample by construction; its health is in the head figures.
PROBABILITY_EXEMPT = frozenset({"constant"})
