"""Health rules over tensor statistics, each with a three-state verdict.

A rule can fail, pass, or not apply ("not checked": an integer tensor cannot hold
NaN, a tensor with no finite values has no magnitude). ``summary`` shows the
failed rules as flags; ``check`` turns them into a gate, counting what was
checked so that a skipped tensor never counts as a pass.
"""

from __future__ import annotations

import enum

from .report import TensorStats, Thresholds

#: Rule names, in the order flags are shown.
RULES = ("nan", "inf", "exploding", "dead")

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


class Verdict(str, enum.Enum):
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
) -> dict[str, Verdict]:
    """Apply every rule in :data:`RULES` to one tensor's statistics.

    Only float tensors are checked (integers cannot be NaN, Inf or explode; their
    "dead" units are ids, not activations). Model inputs and weights are not
    checked for dead units: zero columns there are data or sparsity, not a
    layer's fault.
    """
    nc = Verdict.NOT_CHECKED
    if stats is None or not is_float_dtype(dtype) or stats.count == 0:
        return {rule: nc for rule in RULES}

    def v(failed: bool) -> Verdict:
        return Verdict.FAILED if failed else Verdict.PASSED

    limit = effective_max_abs(dtype, thresholds.max_abs)
    return {
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
) -> tuple[str, ...]:
    """The names of the rules this tensor fails, in :data:`RULES` order."""
    verdicts = tensor_verdicts(dtype, stats, thresholds, is_input=is_input, is_weight=is_weight)
    return tuple(rule for rule in RULES if verdicts[rule] is Verdict.FAILED)
