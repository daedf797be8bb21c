"""The gate of ``kerinspect check``: its rules over a whole report, each with a
three-state verdict and counts.

Each tensor is judged by :mod:`kerinspect.verdicts` (the rules behind ``summary``'s
flags), with the gate's own thresholds; a rule can fail, pass, or not apply, and
what was not checked is counted, so that a skipped tensor never counts as a pass.
Then the rules over the whole model: weights, coverage, attention heads,
separability, gradients, and with a baseline its structure and drift.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from .check_results import CheckResult, Failure, FirstFault, RuleCounts, RuleResult
from .config import ATTENTION_RULES, OPTIONAL_RULES, CheckConfig
from .report import InputRecord, LayerRecord, ModelReport, TensorRecord, TensorStats, Thresholds, WeightRecord
from .verdicts import (  # noqa: F401 - a tensor's rules, importable from here too
    NARROW_FLOAT_HEADROOM,
    PROBABILITY_EXEMPT,
    RULES,
    Verdict,
    effective_max_abs,
    is_float_dtype,
    tensor_flags,
    tensor_verdicts,
)

if TYPE_CHECKING:  # the gate's gradient rules load lazily
    from .gradients import GradientReport

# -- the gate: kerinspect check ---------------------------------------------------

#: Rules of ``kerinspect check``, in report order. ``coverage`` fails when no
#: activation could be checked at all; ``structure`` and ``drift`` run only with a
#: baseline.
CHECK_RULES = ("nan", "inf", "exploding", "dead", "weight-nan", "weight-inf", "coverage")
BASELINE_RULES = ("structure", "drift")

#: A constant tensor (baseline std 0) may still move by this much relative to its
#: magnitude (float rounding across machines) before it counts as drift.
DRIFT_FLOOR = 1e-6

_CALL_SUFFIX = re.compile(r"@\d+(?=/|$)")


def layer_candidates(path: str) -> list[str]:
    """What an ignore pattern is matched against: the path, the path without call
    suffixes (``shared@1`` -> ``shared``), and every enclosing nested model of both."""
    out: list[str] = []
    for p in (path, _CALL_SUFFIX.sub("", path)):
        parts = p.split("/")
        for i in range(len(parts), 0, -1):
            c = "/".join(parts[:i])
            if c not in out:
                out.append(c)
    return out


def matching_pattern(path: str, patterns: Sequence[str]) -> str | None:
    """The first of ``patterns`` (fnmatch globs, case-sensitive) that exempts ``path``."""
    for pattern in patterns:
        for c in layer_candidates(path):
            if fnmatch.fnmatchcase(c, pattern):
                return pattern
    return None


def _verdict(counts: RuleCounts) -> str:
    if counts.failed:
        return Verdict.FAILED.value
    return Verdict.PASSED.value if counts.passed else Verdict.NOT_CHECKED.value


class _Tally:
    """Accumulates one rule's counts and failures."""

    def __init__(self, rule: str, target: str, unit: str, threshold: float | None = None):
        self.rule, self.target, self.unit, self.threshold = rule, target, unit, threshold
        self.failed = self.passed = self.not_checked = self.ignored = 0
        self.failures: list[Failure] = []

    def add(self, verdict: Verdict, failure: Callable[[], Failure] | None = None) -> None:
        """Count ``verdict``; on a failure, record ``failure()`` (built only then)."""
        if verdict is Verdict.FAILED:
            self.failed += 1
            if failure is not None:
                self.failures.append(failure())
        elif verdict is Verdict.PASSED:
            self.passed += 1
        else:
            self.not_checked += 1

    def skip_ignored(self) -> None:
        self.not_checked += 1
        self.ignored += 1

    def result(self) -> RuleResult:
        counts = RuleCounts(self.failed, self.passed, self.not_checked, self.ignored)
        return RuleResult(
            rule=self.rule,
            target=self.target,
            unit=self.unit,
            verdict=_verdict(counts),
            counts=counts,
            threshold=self.threshold,
            failures=tuple(self.failures),
        )


#: What each attention rule's failure says about a head.
_ATTENTION_FAILURES = {
    "uniform-attention": "attends to every key about equally: normalised entropy {min_entropy:.3g} or more "
    "on every query (limit {limit:g})",
    "collapsed-attention": "puts nearly all its weight on one key on every query: mean largest weight "
    "{max_weight:.3g} (limit {limit:g})",
    "single-key-attention": "has a single key: every weight is 1, whatever the inputs (a softmax over an "
    "axis of size 1?)",
}


def attention_tally(
    rule: str, report: ModelReport, thresholds: Thresholds, ignored: Callable[[str], bool]
) -> _Tally:
    """One attention rule (:data:`~kerinspect.config.ATTENTION_RULES`) over every head
    of every attention record: failed when the head carries the flag of the same name
    (judged by the run), passed when not, not checked when the probabilities are
    unavailable or, for entropy and weight, no query had two keys."""
    limit = {
        "uniform-attention": thresholds.uniform_attention_entropy,
        "collapsed-attention": thresholds.collapsed_attention_weight,
    }.get(rule)
    tally = _Tally(rule, "attention", "head", limit)
    for layer in report.layers:
        att = layer.attention
        if att is None:
            continue
        if ignored(layer.path):
            for _ in att.heads or (None,):
                tally.skip_ignored()
            continue
        if att.status != "ok":
            tally.add(Verdict.NOT_CHECKED)
            continue
        for head in att.heads:
            if rule in head.flags:
                values = {"head": head.head, "min_entropy": head.min_entropy, "max_weight": head.max_weight}
                if limit is not None:
                    values["limit"] = limit
                text = _ATTENTION_FAILURES[rule].format(
                    min_entropy=head.min_entropy or 0.0, max_weight=head.max_weight or 0.0, limit=limit or 0.0
                )
                msg = f"head {head.head} {text}"
                tally.add(Verdict.FAILED, partial(Failure, rule, layer.path, att.output, msg, values))
            elif rule != "single-key-attention" and head.entropy is None:
                tally.add(Verdict.NOT_CHECKED)
            else:
                tally.add(Verdict.PASSED)
    return tally


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _activation_failure(rule: str, layer: LayerRecord, out: TensorRecord, thresholds: Thresholds) -> Failure:
    st = out.stats
    assert st is not None
    values: dict[str, Any]
    if rule == "nan":
        msg = f"{st.nan_count:,} of {st.count:,} values are NaN"
        values = {"nan_count": st.nan_count, "count": st.count}
    elif rule == "inf":
        msg = f"{st.inf_count:,} of {st.count:,} values are +/-Inf"
        values = {"inf_count": st.inf_count, "count": st.count}
    elif rule == "exploding":
        limit = effective_max_abs(out.dtype, thresholds.max_abs)
        narrowed = f" ({out.dtype} limit)" if limit != thresholds.max_abs else ""
        msg = f"max |x| = {st.abs_max:.4g} > {limit:.4g}{narrowed}"
        values = {"abs_max": st.abs_max, "limit": limit}
    elif rule == "vanishing":
        rms, in_rms = st.magnitude or 0.0, layer.input_rms or 0.0
        ratio = rms / in_rms if in_rms else 0.0
        msg = (
            f"RMS {rms:.3g} is {ratio:.3g} of the input's RMS {in_rms:.3g} "
            f"(limit {thresholds.min_rms_ratio:g})"
        )
        values = {"rms": rms, "input_rms": in_rms, "ratio": ratio, "limit": thresholds.min_rms_ratio}
    elif rule == "saturated":
        share = st.saturated_fraction or 0.0
        bound = "one-hot" if layer.activation == "softmax" else f"at the bounds of {layer.activation}"
        what = "distributions" if layer.activation == "softmax" else "values"
        msg = f"{_pct(share)} of {what} are {bound} (limit {_pct(thresholds.max_saturated_fraction)})"
        values = {
            "saturated_fraction": share,
            "activation": layer.activation,
            "limit": thresholds.max_saturated_fraction,
        }
    elif rule == "constant":
        rms, spread = st.magnitude or 0.0, st.sample_spread or 0.0
        msg = (
            f"the same for every sample: spread across samples {spread:.3g} (RMS {rms:.3g}, "
            f"limit {thresholds.min_sample_spread:g} of it) while the input varies"
        )
        values = {
            "sample_spread": spread,
            "rms": rms,
            "input_spread": layer.input_spread,
            "limit": thresholds.min_sample_spread,
        }
    else:
        units = out.shape[-1] if out.shape else 0
        msg = (
            f"{_pct(st.dead_fraction or 0.0)} of {units:,} units are zero for every sample "
            f"(limit {_pct(thresholds.max_dead_fraction)})"
        )
        values = {"dead_fraction": st.dead_fraction, "units": units, "limit": thresholds.max_dead_fraction}
    return Failure(rule, layer.path, out.name, msg, values)


def _weight_failure(rule: str, w: WeightRecord) -> Failure:
    st = w.stats
    assert st is not None
    if rule == "weight-nan":
        return Failure(
            rule,
            w.layer,
            w.name,
            f"{st.nan_count:,} of {st.count:,} weight values are NaN",
            {"nan_count": st.nan_count, "count": st.count},
        )
    return Failure(
        rule,
        w.layer,
        w.name,
        f"{st.inf_count:,} of {st.count:,} weight values are +/-Inf",
        {"inf_count": st.inf_count, "count": st.count},
    )


def _non_finite(out: TensorRecord) -> bool:
    st = out.stats
    return st is not None and is_float_dtype(out.dtype) and (st.nan_count > 0 or st.inf_count > 0)


def first_fault(
    report: ModelReport, skip: Callable[[LayerRecord], bool] = lambda r: False
) -> FirstFault | None:
    """Where NaN/Inf starts: the first layer call in graph order with a non-finite
    output, descending into nested models (whose record precedes their layers and
    repeats their output) to the innermost such layer. ``skip`` leaves layers out
    (the ignored ones)."""
    layers = report.layers
    index = next(
        (i for i, r in enumerate(layers) if not skip(r) and any(_non_finite(o) for o in r.outputs)), None
    )
    if index is None:
        return None
    while layers[index].container:
        prefix = layers[index].path + "/"
        inner = next(
            (
                j
                for j in range(index + 1, len(layers))
                if layers[j].path.startswith(prefix)
                and not skip(layers[j])
                and any(_non_finite(o) for o in layers[j].outputs)
            ),
            None,
        )
        if inner is None:
            break
        index = inner
    record = layers[index]
    out = next(o for o in record.outputs if _non_finite(o))
    assert out.stats is not None
    owner = _CALL_SUFFIX.sub("", record.path)
    weights = tuple(
        w.name
        for w in report.weights
        if w.layer == owner and w.stats is not None and (w.stats.nan_count or w.stats.inf_count)
    )
    return FirstFault(
        layer=record.path,
        class_name=record.class_name,
        tensor=out.name,
        nan_count=out.stats.nan_count,
        inf_count=out.stats.inf_count,
        count=out.stats.count,
        weights=weights,
    )


def _structure_key(layer: LayerRecord) -> tuple[str, tuple[tuple[int, ...], ...]]:
    """Class and output shapes without the batch axis (it holds the sample count)."""
    return layer.class_name, tuple(tuple(o.shape[1:]) for o in layer.outputs)


def _fmt_shapes(shapes: Iterable[tuple[int, ...]]) -> str:
    return ", ".join("(None" + "".join(f", {d}" for d in s) + ")" for s in shapes)


def drift(
    current: TensorStats | None, baseline: TensorStats | None, tolerance: float
) -> tuple[Verdict, dict[str, Any]]:
    """Compare one tensor's statistics with its baseline.

    The scale is the baseline's standard deviation, floored at
    ``DRIFT_FLOOR * max(1, |baseline mean|)`` so that a constant tensor does not
    fail on float rounding. The tensor fails when its mean or its std moved by more
    than ``tolerance`` scales: ``|mean - mean_b| > tolerance * scale`` or
    ``|std - std_b| > tolerance * scale``; it also fails when finite values
    appeared or disappeared. Not checked when neither has finite values.
    """
    if current is None or baseline is None:
        return Verdict.NOT_CHECKED, {}
    cm, cs, bm, bs = current.mean, current.std, baseline.mean, baseline.std
    if cm is None and bm is None:
        return Verdict.NOT_CHECKED, {}
    if cm is None or bm is None or cs is None or bs is None:
        return Verdict.FAILED, {"mean": cm, "baseline_mean": bm, "std": cs, "baseline_std": bs}
    scale = max(bs, DRIFT_FLOOR * max(1.0, abs(bm)))
    dm, ds = abs(cm - bm) / scale, abs(cs - bs) / scale
    values = {
        "mean": cm,
        "baseline_mean": bm,
        "std": cs,
        "baseline_std": bs,
        "scale": scale,
        "mean_shift": dm,
        "std_shift": ds,
    }
    ok = dm <= tolerance and ds <= tolerance and math.isfinite(dm) and math.isfinite(ds)
    return (Verdict.PASSED if ok else Verdict.FAILED), values


def _drift_message(values: dict[str, Any]) -> str:
    if "scale" not in values:
        had = "had" if values.get("baseline_mean") is not None else "had no"
        return f"finite values changed: the baseline {had} finite values, this run " + (
            "has none" if values.get("mean") is None else "has some"
        )
    return (
        f"mean {values['baseline_mean']:.4g} -> {values['mean']:.4g} "
        f"({values['mean_shift']:.3g} baseline std), std {values['baseline_std']:.4g} -> "
        f"{values['std']:.4g} ({values['std_shift']:.3g} baseline std)"
    )


def _baseline_rules(
    report: ModelReport, baseline: ModelReport, config: CheckConfig, ignored: Callable[[str], bool]
) -> tuple[list[RuleResult], list[str]]:
    structure = _Tally("structure", "baseline", "layer")
    drifted = _Tally("drift", "baseline", "tensor", config.tolerance)
    warnings: list[str] = []
    base = {r.path: r for r in baseline.layers}
    cur = {r.path: r for r in report.layers}
    for r in report.layers:
        if ignored(r.path):
            structure.skip_ignored()
            for _ in r.outputs:
                drifted.skip_ignored()
            continue
        b = base.get(r.path)
        if b is None:
            structure.add(
                Verdict.FAILED,
                partial(
                    Failure,
                    "structure",
                    r.path,
                    None,
                    f"layer added ({r.class_name}, outputs {_fmt_shapes(_structure_key(r)[1])})",
                    {"change": "added", "class_name": r.class_name},
                ),
            )
            for _ in r.outputs:
                drifted.add(Verdict.NOT_CHECKED)
            continue
        (cc, cshapes), (bc, bshapes) = _structure_key(r), _structure_key(b)
        if (cc, cshapes) != (bc, bshapes):
            what = (
                f"class {bc} -> {cc}"
                if cc != bc
                else f"output shapes {_fmt_shapes(bshapes)} -> {_fmt_shapes(cshapes)}"
            )
            structure.add(
                Verdict.FAILED,
                partial(
                    Failure,
                    "structure",
                    r.path,
                    None,
                    what,
                    {"change": "changed", "class_name": r.class_name, "baseline_class_name": bc},
                ),
            )
            for _ in r.outputs:
                drifted.add(Verdict.NOT_CHECKED)
            continue
        structure.add(Verdict.PASSED)
        for out, bout in zip(r.outputs, b.outputs):
            verdict, values = drift(out.stats, bout.stats, config.tolerance)
            drifted.add(
                verdict,
                partial(Failure, "drift", r.path, out.name, _drift_message(values), values),
            )
    for b in baseline.layers:
        if b.path not in cur:
            if ignored(b.path):
                structure.skip_ignored()
            else:
                structure.add(
                    Verdict.FAILED,
                    partial(
                        Failure,
                        "structure",
                        b.path,
                        None,
                        f"layer removed (was {b.class_name})",
                        {"change": "removed", "baseline_class_name": b.class_name},
                    ),
                )
    differences = input_differences(report, baseline)
    if differences:
        warnings.append(f"the baseline was made on different inputs: {'; '.join(differences)}")
    return [structure.result(), drifted.result()], warnings


def _short(sha256: str) -> str:
    return sha256[:8] + "…"


def _file_shown(i: InputRecord) -> str:
    if i.sha256 is None:
        return i.source
    what = "sha256" if i.sha256_of != "listing" else "listing"
    return f"{i.source} {what} {_short(i.sha256)}"


def _same_file(now: InputRecord, base: InputRecord) -> bool:
    """Whether two file inputs are the same data: by content hash when both have one of
    the same kind, else by resolved path (a baseline written before hashes: its ``path``
    or, older still, its ``source`` as written)."""
    if now.sha256 is not None and base.sha256 is not None and now.sha256_of == base.sha256_of:
        return now.sha256 == base.sha256
    norm = os.path.normpath
    if base.path is not None and now.path is not None:
        return norm(base.path) == norm(now.path)
    ours = {norm(now.source), *(() if now.path is None else (norm(now.path),))}
    return norm(base.source) in ours


def input_differences(report: ModelReport, baseline: ModelReport) -> list[str]:
    """What differs between the inputs a baseline was made on and the report's, each as
    a phrase (``seed differs (baseline 0, now 3)``); empty when they are the same data.

    Per input: the shape (batch axis excepted) and dtype; then its origin: both
    synthetic with the same seed, or both from files with the same content (the path
    may be written differently, or be another copy: :func:`_same_file`), or both
    in-memory arrays (nothing recorded to compare). Then the number of samples.
    """
    out: list[str] = []
    now_names = [i.name for i in report.inputs]
    base_names = [i.name for i in baseline.inputs]
    if now_names != base_names:
        out.append(f"inputs differ (baseline {', '.join(base_names)}; now {', '.join(now_names)})")
    for now, base in zip(report.inputs, baseline.inputs):
        if now.shape[1:] != base.shape[1:]:
            out.append(f"input {now.name!r} shape differs (baseline {base.shape[1:]}, now {now.shape[1:]})")
        if now.dtype != base.dtype:
            out.append(f"input {now.name!r} dtype differs (baseline {base.dtype}, now {now.dtype})")
        now_synthetic, base_synthetic = now.source == "synthetic", base.source == "synthetic"
        if now_synthetic and base_synthetic:
            if now.seed != base.seed:
                out.append(f"seed differs (baseline {base.seed}, now {now.seed})")
            elif now.note != base.note:
                out.append(f"synthetic values drawn differently for {now.name!r}")
        elif now_synthetic:
            out.append(f"synthetic now, baseline ran on {base.source}")
        elif base_synthetic:
            out.append(f"{now.source} now, baseline ran on synthetic inputs")
        elif (now.source == "array") != (base.source == "array"):
            out.append(f"input differs (baseline {base.source}, now {now.source})")
        elif now.source != "array" and not _same_file(now, base):
            out.append(f"input file differs (baseline: {_file_shown(base)}, now: {_file_shown(now)})")
    if report.samples != baseline.samples:
        out.append(f"samples differ (baseline {baseline.samples}, now {report.samples})")
    return list(dict.fromkeys(out))  # one phrase for the inputs of one .npz


def last_hidden(report: ModelReport) -> tuple[LayerRecord, TensorRecord] | None:
    """The model's last hidden layer: the last output, in graph order, that has a
    separability and is neither a model input nor one of the model's own outputs,
    before the last of those; among the model's own layers (depth 0) first, at any
    depth when none of them qualifies (a model that is one nested model)."""
    end = max(
        (i for i, r in enumerate(report.layers) if any(o.model_output for o in r.outputs)), default=None
    )
    layers = report.layers if end is None else report.layers[:end]
    for top_only in (True, False):
        found = [
            (r, o)
            for r in layers
            if r.class_name != "InputLayer" and (r.depth == 0 or not top_only)
            for o in r.outputs
            if o.separability is not None and not o.model_output
        ]
        if found:
            return found[-1]
    return None


def separability_rule(report: ModelReport, minimum: float) -> RuleResult:
    """``separability``: the last hidden layer's (:func:`last_hidden`) separability
    accuracy is at least ``minimum``. Not checked, saying why, without labels or without
    such a layer, or when its accuracy was not computed."""
    tally = _Tally("separability", "model", "layer", minimum)
    note = None
    found = last_hidden(report) if report.labels is not None else None
    if report.labels is None:
        note = "no labels: the run had no labels file, label column or image folder in label subfolders"
    elif found is None:
        note = "no hidden layer output has a separability"
    elif found[1].separability is None or found[1].separability.accuracy is None:
        note = "the last hidden layer's accuracy was not computed"
    if note is not None or found is None:
        tally.add(Verdict.NOT_CHECKED)
        return dataclasses.replace(tally.result(), note=note)
    layer, out = found
    sep = out.separability
    assert sep is not None and sep.accuracy is not None
    accuracy, chance = sep.accuracy, sep.chance

    def failure() -> Failure:
        chance_text = "" if chance is None else f" (chance {chance:.2f})"
        return Failure(
            "separability",
            layer.path,
            out.name if len(layer.outputs) > 1 else None,
            f"last hidden layer separates the classes with accuracy {accuracy:.3f} < {minimum:g}{chance_text}",
            {"accuracy": accuracy, "chance": chance, "fisher": sep.fisher, "min_separability": minimum},
        )

    tally.add(Verdict.FAILED if accuracy < minimum else Verdict.PASSED, failure)
    return tally.result()


def run_checks(
    report: ModelReport,
    config: CheckConfig | None = None,
    *,
    baseline: ModelReport | None = None,
    path: str | None = None,
    gradients: GradientReport | None = None,
) -> CheckResult:
    """Apply the gate's rules to an inspected model.

    Pure: works on the plain-data report (statistics do not depend on thresholds,
    so they are re-judged here with ``config``'s), never prints, never raises for a
    bad model.

    Args:
        report: what :func:`kerinspect.inspect_model` returned.
        config: thresholds, ignore patterns and baseline tolerance (default
            settings when None).
        baseline: a report saved earlier (``kerinspect summary --format json``, read
            with :meth:`ModelReport.from_dict`); adds the ``structure`` and ``drift``
            rules.
        path: how to name the model (default: its file path, else its name).
        gradients: the same run's gradient report, which the gradient rules
            (``config.rules``) judge (:mod:`kerinspect.gradient_rules`).

    Returns:
        A :class:`~kerinspect.report.CheckResult`: per rule, a verdict and counts
        of failed / passed / not-checked tensors (ignored ones counted as not
        checked), the failures in graph order, and the layer where NaN/Inf starts.
    """
    config = config or CheckConfig()
    th = config.thresholds
    patterns = config.ignore
    hits: dict[str, int] = {p: 0 for p in patterns}
    cache: dict[str, bool] = {}

    def ignored(layer_path: str) -> bool:
        if layer_path not in cache:
            pattern = matching_pattern(layer_path, patterns) if patterns else None
            cache[layer_path] = pattern is not None
            if pattern is not None:
                hits[pattern] += 1
        return cache[layer_path]

    tallies = {
        "nan": _Tally("nan", "activations", "tensor"),
        "inf": _Tally("inf", "activations", "tensor"),
        "exploding": _Tally("exploding", "activations", "tensor", th.max_abs),
        "dead": _Tally("dead", "activations", "tensor", th.max_dead_fraction),
    }
    optional = {
        "vanishing": th.min_rms_ratio,
        "saturated": th.max_saturated_fraction,
        "constant": th.min_sample_spread,
    }
    for rule in OPTIONAL_RULES:  # off unless asked for, in this order
        if rule in config.rules:
            tallies[rule] = _Tally(rule, "activations", "tensor", optional[rule])
    ignored_layers: list[str] = []
    checked_tensors = 0
    for layer in report.layers:
        skip = ignored(layer.path)
        if skip:
            ignored_layers.append(layer.path)
        is_input = layer.class_name == "InputLayer"
        for out in layer.outputs:
            # The model's own outputs are always checked: a pattern in a pull request's
            # pyproject.toml, or a nested model named like an ignored layer, must not
            # hide NaN in what the model returns.
            if skip and not out.model_output:
                for t in tallies.values():
                    t.skip_ignored()
                continue
            verdicts = tensor_verdicts(
                out.dtype,
                out.stats,
                th,
                is_input=is_input,
                input_rms=layer.input_rms,
                input_spread=layer.input_spread,
                container=layer.container,
            )
            if not is_input and any(verdicts[rule] is not Verdict.NOT_CHECKED for rule in tallies):
                checked_tensors += 1  # inputs alone never make a model "covered"
            if layer.attention is not None and out.name == layer.attention.output:
                verdicts = {
                    r: Verdict.NOT_CHECKED if r in PROBABILITY_EXEMPT else v for r, v in verdicts.items()
                }
            for rule, tally in tallies.items():
                tally.add(
                    verdicts[rule],
                    partial(_activation_failure, rule, layer, out, th),
                )

    for rule in ATTENTION_RULES:  # off unless asked for, after the tensor rules
        if rule in config.rules:
            tallies[rule] = attention_tally(rule, report, th, ignored)

    wn = _Tally("weight-nan", "weights", "weight")
    wi = _Tally("weight-inf", "weights", "weight")
    for w in report.weights:
        if w.layer and ignored(w.layer):
            wn.skip_ignored()
            wi.skip_ignored()
            continue
        v = tensor_verdicts(w.dtype, w.stats, th, is_weight=True)
        wn.add(v["nan"], partial(_weight_failure, "weight-nan", w))
        wi.add(v["inf"], partial(_weight_failure, "weight-inf", w))

    tensors = sum(len(r.outputs) for r in report.layers)
    n_ignored = tallies["nan"].ignored
    coverage = _Tally("coverage", "model", "model")
    coverage.add(
        Verdict.PASSED if checked_tensors else Verdict.FAILED,
        partial(
            Failure,
            "coverage",
            "",
            None,
            f"no layer output could be checked: of {tensors:,} tensors, {n_ignored:,} are ignored and the "
            "rest are model inputs, not float, or hold no values",
            {"tensors": tensors, "checked": 0, "ignored": n_ignored},
        ),
    )

    rules = [t.result() for t in tallies.values()] + [wn.result(), wi.result(), coverage.result()]
    if "separability" in config.rules:
        rules.append(separability_rule(report, config.min_separability))
    if config.gradient_rules:
        from .gradient_rules import gradient_rules

        rules += gradient_rules(gradients, report, config, ignored)
    warnings: list[str] = []
    if baseline is not None:
        extra, notes = _baseline_rules(report, baseline, config, ignored)
        rules += extra
        warnings += notes
    warnings = [f"ignore pattern {p!r} matched no layer" for p, n in hits.items() if n == 0] + warnings
    warnings += [f"Keras: {w}" for w in report.warnings]

    fault = first_fault(report, skip=lambda r: ignored(r.path) and not any(o.model_output for o in r.outputs))
    status = "failed" if any(r.failed for r in rules) else "passed"
    settings = config.to_dict()
    return CheckResult(
        path=path or report.model.path or report.model.name,
        status=status,
        model=report.model,
        rules=tuple(rules),
        first_fault=fault,
        settings=settings,
        samples=report.samples,
        inputs=report.inputs,
        ignored_layers=tuple(ignored_layers),
        warnings=tuple(warnings),
    )
