"""Render a :class:`~kerinspect.diff.DiffReport`: Rich table, Markdown, JUnit XML.

Layer names and paths come from the model files: every one is escaped (control
characters, Rich markup, Markdown punctuation, XML) before it is shown.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text

from ._ci import xml_text
from .diff import DiffReport, OutputDiff, PairDiff, fmt_metrics
from .numfmt import fmt_cosine, fmt_error, fmt_float, fmt_mean, fmt_shape, fmt_sqnr
from .render import _hidden_note, _md_cell, _md_code, _md_text, _table, fit_columns, input_origin, safe

#: Columns of the diff table (``Local`` only with ``--local``; ``B dtype`` only when a policy differs).
DIFF_COLUMNS = (
    "Layer",
    "Class",
    "Paired",
    "Output",
    "Cosine",
    "Error",
    "Local",
    "SQNR dB",
    "Max |a-b|",
    "Mean A",
    "Mean B",
    "Std A",
    "Std B",
    "B dtype",
)
_DIFF_NUMERIC = {"Cosine", "Error", "Local", "SQNR dB", "Max |a-b|", "Mean A", "Mean B", "Std A", "Std B"}
#: What stays when the terminal is narrow, most important first.
_DIFF_PRIORITY = (
    "Layer",
    "Error",
    "Local",
    "Cosine",
    "SQNR dB",
    "Max |a-b|",
    "Class",
    "B dtype",
    "Output",
    "Paired",
    "Mean A",
    "Mean B",
    "Std A",
    "Std B",
)


def layer_cell(pair: PairDiff) -> str:
    return pair.path_a if pair.path_a == pair.path_b else f"{pair.path_a} -> {pair.path_b}"


def _class_cell(pair: PairDiff) -> str:
    return pair.class_a if pair.class_a == pair.class_b else f"{pair.class_a} -> {pair.class_b}"


def _policies_differ(report: DiffReport) -> bool:
    return any(p.policy_a != p.policy_b for p in report.pairs)


def columns(report: DiffReport) -> tuple[str, ...]:
    """The table's columns for this report."""
    drop = set()
    if not report.local:
        drop.add("Local")
    if not _policies_differ(report):
        drop.add("B dtype")
    if all(o.name == "output" for p in report.pairs for o in p.outputs):
        drop.add("Output")
    return tuple(c for c in DIFF_COLUMNS if c not in drop)


def diff_rows(report: DiffReport) -> Iterator[tuple[PairDiff, OutputDiff, list[str]]]:
    """One row per output of every pair: plain cells in :data:`DIFF_COLUMNS` order (unescaped)."""
    for pair in report.pairs:
        for k, o in enumerate(pair.outputs):
            cosine, error, sqnr, max_abs = fmt_metrics(o.error)
            local = "-" if o.local is None else fmt_error(o.local.normalised_error)
            if o.error is None and o.note:
                error = o.note
            first = k == 0
            policy = pair.policy_b if pair.policy_b != pair.policy_a else ""
            yield (
                pair,
                o,
                [
                    safe(layer_cell(pair)) if first else "",
                    safe(_class_cell(pair)) if first else "",
                    pair.paired_by if first else "",
                    "" if o.name == "output" else safe(o.name),
                    cosine,
                    error,
                    local,
                    sqnr,
                    max_abs,
                    fmt_mean(o.stats_a),
                    fmt_mean(o.stats_b),
                    fmt_float(None if o.stats_a is None else o.stats_a.std),
                    fmt_float(None if o.stats_b is None else o.stats_b.std),
                    safe(policy or "") if first else "",
                ],
            )


def _model_line(tag: str, report: DiffReport) -> str:
    m = report.model_a if tag == "A" else report.model_b
    where = f" from {safe(m.path)}" if m.path else ""
    loader = "" if m.loader == "keras" else f" ({safe(m.loader)})"
    return f"{tag}: model {safe(m.name)!r} ({safe(m.class_name)}){where} · {safe(m.format)}{loader}"


def diff_header_lines(report: DiffReport) -> list[str]:
    lines = [_model_line("A", report), _model_line("B", report)]
    for i in report.inputs:
        lines.append(
            f"input {safe(i.name)!r}: {safe(i.dtype)} {fmt_shape(i.shape)} ({input_origin(i, safe)})"
        )
    lines.append(
        f"{report.samples} samples in batches of {report.batch_size}, the same for both · "
        f"Error: normalised error |a-b|/|a| of B as it runs (inherited)"
        + (" · Local: B's layer on A's inputs (its own)" if report.local else "")
    )
    return lines


def _class(cls: int, name: str | None) -> str:
    return f"{cls} ({safe(name)})" if name is not None and name != str(cls) else str(cls)


def top1_lines(report: DiffReport) -> list[str]:
    """One line per classifier model output: how often B's top-1 class is A's, and the
    most frequent disagreements."""
    lines = []
    for p, o in report.model_outputs():
        t = o.top1_agreement
        if t is None or t.fraction is None:
            continue
        name = p.path_a + ("" if o.name == "output" else f":{o.name}")
        line = f"top-1 agreement of '{safe(name)}': {t.agree} of {t.samples} samples ({t.fraction:.1%})"
        if t.disagreements:
            line += "; most frequent, A -> B: " + ", ".join(
                f"{_class(d.class_a, d.name_a)} -> {_class(d.class_b, d.name_b)} ({d.count})"
                for d in t.disagreements
            )
        lines.append(line)
    return lines


def diff_footer_lines(report: DiffReport) -> list[str]:
    """The verdict lines (escaped for a terminal, plain text otherwise)."""
    tol = report.tolerance
    lines = [f"{report.pairing_summary()} · tolerance {tol:g}"]
    div = report.divergence
    lines.append(safe(div.sentence(tol)) if div else f"no layer's error exceeds the tolerance {tol:g}")
    if report.local:
        ld = report.local_divergence
        lines.append(safe(ld.sentence(tol)) if ld else f"no layer's own (local) error exceeds {tol:g}")
    policies: dict[str, list[str]] = {}
    for p in report.pairs:
        if p.policy_b != p.policy_a and p.policy_b is not None and not p.container:
            policies.setdefault(p.policy_b, []).append(p.path_b)
    for policy, paths in policies.items():
        shown = ", ".join(f"'{safe(x)}'" for x in paths[:20]) + (
            f" and {len(paths) - 20} more" if len(paths) > 20 else ""
        )
        lines.append(f"B's layers with dtype policy {safe(policy)}: {shown}")
    for tag, unpaired in (("A", report.unpaired_a), ("B", report.unpaired_b)):
        if unpaired:
            names = ", ".join(f"'{safe(u.path)}' ({safe(u.class_name)})" for u in unpaired[:20])
            more = f" and {len(unpaired) - 20} more" if len(unpaired) > 20 else ""
            lines.append(f"only in {tag}: {names}{more}")
    lines += top1_lines(report)
    if report.agree:
        lines.append(f"the models' outputs agree within the tolerance {tol:g} (exit 0)")
    else:
        lines.append("the models' outputs disagree (exit 1): " + "; ".join(safe(f) for f in report.failures))
    return lines


def render_diff_table(report: DiffReport, console: Console, *, fit: bool = True) -> None:
    """Print the diff as a Rich table: header, one row per paired output, verdict."""
    cols = columns(report)
    for line in diff_header_lines(report):
        console.print(Text(line))
    body = list(diff_rows(report))
    index = [DIFF_COLUMNS.index(c) for c in cols]
    cells = [[row[i] for i in index] for _, _, row in body]
    shown = fit_columns(
        cells, console.width if fit else None, cols, tuple(c for c in _DIFF_PRIORITY if c in cols)
    )
    div = report.divergence
    styles: list[str | None] = []
    for pair, o, _ in body:
        err = None if o.error is None else o.error.normalised_error
        if div is not None and pair.path_a == div.path_a and o.name == div.output:
            styles.append("bold red")
        elif err is not None and err > report.tolerance:
            styles.append("red")
        else:
            styles.append("dim" if pair.class_a == "InputLayer" else None)
    _table(console, cols, shown, cells, styles, _DIFF_NUMERIC, ("Layer",))
    for line in diff_footer_lines(report):
        console.print(Text(line))
    _hidden_note(console, cols, shown)
    if report.warnings:
        console.print(Text(f"{len(report.warnings)} warning(s) from Keras; see --format json", style="dim"))


def render_diff_markdown(report: DiffReport) -> str:
    """The diff as GitHub-flavoured Markdown (for a PR comment)."""
    cols = columns(report)
    index = [DIFF_COLUMNS.index(c) for c in cols]
    head = diff_header_lines(report)
    out = [f"**{_md_text(head[0])}**  ", f"**{_md_text(head[1])}**", ""]
    out += [f"- {_md_text(line)}" for line in head[2:]]
    out += ["", "| " + " | ".join(_md_cell(c) for c in cols) + " |"]
    out.append("|" + "|".join("---:" if c in _DIFF_NUMERIC else "---" for c in cols) + "|")
    for _, _, row in diff_rows(report):
        cells = [row[i] for i in index]
        named = [
            _md_code(c) if col in ("Layer", "Class", "Output", "B dtype") else _md_cell(c)
            for col, c in zip(cols, cells)
        ]
        out.append("| " + " | ".join(named) + " |")
    out.append("")
    out += [f"- {_md_text(line)}" for line in diff_footer_lines(report)]
    out.append("")
    return "\n".join(out)


def diff_junit_xml(report: DiffReport) -> bytes:
    """JUnit XML: one test case per output of model A (``<failure>`` when its error
    exceeds the tolerance or it was not compared), with the divergence in the message."""
    root = ET.Element("testsuites", name="kerinspect diff")
    name = xml_text(
        f"{report.model_a.path or report.model_a.name} vs {report.model_b.path or report.model_b.name}", 500
    )
    suite = ET.SubElement(root, "testsuite", name=name)
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("tolerance", f"{report.tolerance:g}"),
        ("samples", str(report.samples)),
        ("pairing", report.pairing_summary()),
        ("local", str(report.local).lower()),
    ):
        ET.SubElement(props, "property", name=key, value=xml_text(value, 500))
    div = report.divergence
    tests = failures = 0
    outputs = report.model_outputs()
    for pair, o in outputs:
        tests += 1
        label = pair.path_a + ("" if o.name == "output" else f":{o.name}")
        case = ET.SubElement(suite, "testcase", classname=name, name=xml_text(f"output {label}", 500))
        err = None if o.error is None else o.error.normalised_error
        if err is None or not err <= report.tolerance:
            failures += 1
            what = (
                o.note or "not compared"
                if err is None
                else f"normalised error {fmt_error(err)} > tolerance {report.tolerance:g}"
            )
            message = f"{label}: {what}" + (f"; {div.sentence(report.tolerance)}" if div else "")
            fail = ET.SubElement(case, "failure", type="diff", message=xml_text(message, 1000))
            fail.text = xml_text(message, 4000)
        else:
            ET.SubElement(case, "system-out").text = xml_text(
                f"cosine {fmt_cosine(o.error.cosine)}, normalised error {fmt_error(err)}, "  # type: ignore[union-attr]
                f"SQNR {fmt_sqnr(o.error.sqnr_db)} dB",  # type: ignore[union-attr]
                1000,
            )
    if not outputs:
        tests += 1
        failures += 1
        case = ET.SubElement(suite, "testcase", classname=name, name="outputs")
        ET.SubElement(
            case, "failure", type="diff", message="no output of model A was paired with an output of model B"
        )
    for element in (suite, root):
        element.set("tests", str(tests))
        element.set("failures", str(failures))
        element.set("errors", "0")
        element.set("skipped", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
