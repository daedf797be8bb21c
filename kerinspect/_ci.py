"""What ``kerinspect check`` tells CI systems: headlines, GitHub annotations, JUnit XML.

Pure functions over a :class:`~kerinspect.report.CheckRun` (stdlib only). Layer
names, weight names and paths come from untrusted files; every one passes through
:func:`kerinspect.errors.escape_text` (control characters, lone surrogates and
GitHub's legacy ``##[`` command prefix made inert) before any format-specific
escaping, so a name can forge neither a workflow command, nor a terminal escape,
nor invalid XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .errors import escape_text
from .provenance import synthetic_text
from .report import CheckResult, CheckRun, Failure, RuleResult

#: Most failures listed under one rule in text and JUnit output.
MAX_LISTED = 200

_RULE_TITLES = {
    "nan": "NaN in activations",
    "inf": "Inf in activations",
    "exploding": "exploding activations",
    "dead": "dead units",
    "vanishing": "vanishing activations",
    "saturated": "saturated activations",
    "constant": "outputs that ignore the input",
    "weight-nan": "NaN in weights",
    "weight-inf": "Inf in weights",
    "coverage": "nothing checked",
    "structure": "structure changed from the baseline",
    "drift": "statistics drifted from the baseline",
    "vanishing-gradient": "vanishing gradients",
    "exploding-gradient": "exploding gradients",
}
#: The gradient rules' headline verb.
_GRADIENT_VERBS = {"vanishing-gradient": "vanish", "exploding-gradient": "explode"}


def rule_title(rule: str) -> str:
    return _RULE_TITLES.get(rule, rule)


def failure_text(f: Failure) -> str:
    """One failure as plain text (unescaped: callers escape for their medium)."""
    if f.rule in ("weight-nan", "weight-inf"):
        return f"weight '{f.tensor}' of layer '{f.layer}': {f.message}"
    if not f.layer:
        return f.message
    where = f"layer '{f.layer}'" + (f" output '{f.tensor}'" if f.tensor is not None else "")
    return f"{where}: {f.message}"


def headline(result: CheckResult, rule: RuleResult) -> str:
    """One sentence saying why ``rule`` failed for this model (unescaped)."""
    n = len(rule.failures)
    unit = rule.unit + ("s" if n != 1 else "")
    ff = result.first_fault
    kind = {"nan": "NaN", "inf": "Inf"}.get(rule.rule)
    if kind and ff is not None and (ff.nan_count if kind == "NaN" else ff.inf_count):
        count = ff.nan_count if kind == "NaN" else ff.inf_count
        text = (
            f"{kind} starts at layer '{ff.layer}' ({ff.class_name}): {count:,} of {ff.count:,} values "
            f"of output '{ff.tensor}'"
        )
        if ff.weights:
            text += f"; non-finite weights there: {', '.join(ff.weights)}"
        return f"{text} ({n:,} {unit} fail)"
    if not rule.failures:
        return rule_title(rule.rule)
    verb = _GRADIENT_VERBS.get(rule.rule)
    if verb is not None:  # failures from the output backwards: the first is where it starts
        f = rule.failures[0]
        fail = "fails" if n == 1 else "fail"
        return f"Gradients {verb} from layer '{f.layer}' output '{f.tensor}' backwards: {f.message} ({n:,} {unit} {fail})"
    first = failure_text(rule.failures[0])
    if rule.rule == "drift":
        first = "first drifted " + first
    return first + (f" (and {n - 1:,} more {rule.unit}{'s' if n > 2 else ''})" if n > 1 else "")


def error_text(result: CheckResult) -> str:
    e = result.error
    assert e is not None
    return f"cannot check this model (exit {e.exit_code}, {e.rule}): {e.message}"


# -- GitHub Actions -------------------------------------------------------------


def gh_data(text: str, limit: int = 1000) -> str:
    """Escape the message part of a workflow command (after ``::``)."""
    safe = escape_text(text, limit)
    return safe.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def gh_property(text: str, limit: int = 300) -> str:
    """Escape a property value of a workflow command (``file=...,title=...``)."""
    return gh_data(text, limit).replace(":", "%3A").replace(",", "%2C")


def _annotation(path: str, title: str, message: str) -> str:
    return f"::error file={gh_property(path)},title={gh_property(title)}::{gh_data(message)}"


def github_annotations(run: CheckRun) -> list[str]:
    """``::error`` lines: one per failed rule of each model, one per model that could
    not be inspected. Each is exactly one line, whatever the names contain."""
    lines = []
    for result in run.results:
        if result.error is not None:
            lines.append(_annotation(result.path, "kerinspect check: error", error_text(result)))
            continue
        for rule in result.failed_rules:
            lines.append(_annotation(result.path, f"kerinspect check: {rule.rule}", headline(result, rule)))
    return lines


# -- JUnit XML ------------------------------------------------------------------


def xml_text(text: str, limit: int = 2000) -> str:
    """Text XML 1.0 can hold: escape_text removes controls and surrogates;
    U+FFFE and U+FFFF are not XML characters either."""
    return escape_text(text, limit).replace("\ufffe", "\\ufffe").replace("\uffff", "\\uffff")


def _counts_line(rule: RuleResult) -> str:
    c = rule.counts
    ignored = f" ({c.ignored:,} ignored)" if c.ignored else ""
    return f"{rule.unit}s: {c.failed:,} failed, {c.passed:,} passed, {c.not_checked:,} not checked{ignored}"


def _inputs_property(result: CheckResult) -> str:
    """The ``kerinspect.inputs`` property: ``synthetic, seed=0: input 'x': ...`` or the
    file the inputs came from (unescaped)."""
    if result.synthetic_inputs:
        return f"synthetic, seed={result.inputs[0].seed}: {synthetic_text(result.inputs)}"
    return "from " + ", ".join(sorted({i.source for i in result.inputs}))


def junit_xml(run: CheckRun) -> bytes:
    """The run as JUnit XML: one ``<testsuite>`` per model, one ``<testcase>`` per
    rule (``<failure>`` listing the layers and values; ``<skipped>`` when the rule
    applied to nothing); a model that could not be inspected is one ``inspect``
    test case with an ``<error>``."""
    root = ET.Element("testsuites", name="kerinspect check")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in run.results:
        name = xml_text(result.path, 500)
        suite = ET.SubElement(root, "testsuite", name=name)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        props = ET.SubElement(suite, "properties")
        if result.model is not None:
            ET.SubElement(props, "property", name="model", value=xml_text(result.model.name, 300))
        for key in ("samples", "seed", "max_abs", "max_dead_fraction", "ignore", "baseline", "tolerance"):
            value = result.samples if key == "samples" else result.settings.get(key)
            if key == "tolerance" and not result.settings.get("baseline"):
                continue
            if value not in (None, [], ()):
                ET.SubElement(props, "property", name=key, value=xml_text(str(value), 500))
        if result.inputs:
            origin = _inputs_property(result)
            ET.SubElement(props, "property", name="kerinspect.inputs", value=xml_text(origin, 1000))
            if result.synthetic_inputs:
                ET.SubElement(suite, "system-out").text = xml_text(
                    f"kerinspect: ran on {result.samples:,} synthetic samples, not your data "
                    "(no --input or input = in the configuration): " + synthetic_text(result.inputs),
                    4000,
                )
        if result.error is not None:
            counts["tests"] += 1
            counts["errors"] += 1
            case = ET.SubElement(suite, "testcase", classname=name, name="inspect")
            err = ET.SubElement(
                case, "error", type=xml_text(result.error.rule, 100), message=xml_text(error_text(result))
            )
            err.text = xml_text(error_text(result), 4000)
        for rule in result.rules:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=name, name=rule.rule)
            if rule.failed:
                counts["failures"] += 1
                fail = ET.SubElement(
                    case, "failure", type=rule.rule, message=xml_text(headline(result, rule), 1000)
                )
                lines = [xml_text(failure_text(f), 1000) for f in rule.failures[:MAX_LISTED]]
                if len(rule.failures) > MAX_LISTED:
                    lines.append(f"... and {len(rule.failures) - MAX_LISTED:,} more (see --format json)")
                lines.append(_counts_line(rule))
                fail.text = "\n".join(lines)
            elif rule.verdict == "not_checked":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=f"nothing this rule applies to; {_counts_line(rule)}")
            else:
                ET.SubElement(case, "system-out").text = _counts_line(rule)
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
