"""Turn a :class:`~kerinspect.report.ModelReport` or
:class:`~kerinspect.report.WeightsReport` into a Rich table, Markdown or JSON.

Layer names come from the model file, so they are untrusted: every name is
escaped for Rich markup and for control characters before it is shown.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import _ci
from .errors import LEGACY_COMMAND, escape_text
from .numfmt import fmt_count, fmt_float, fmt_fraction, fmt_mean, fmt_shape
from .provenance import synthetic_text
from .report import (
    AttentionRecord,
    CheckResult,
    CheckRun,
    HeadStats,
    InputRecord,
    LayerRecord,
    ModelReport,
    RuleResult,
    TensorRecord,
    WeightsReport,
)

COLUMNS = (
    "Layer",
    "Class",
    "Output shape",
    "Params",
    "Mean",
    "Std",
    "Min",
    "Max",
    "Zeros",
    "NaN",
    "Inf",
    "Dead",
    "Flags",
)
_NUMERIC = {"Params", "Mean", "Std", "Min", "Max", "Zeros", "NaN", "Inf", "Dead", "Sep"}
#: The separability column (a run with labels only): each output's leave-one-out
#: nearest-class-mean accuracy (:class:`~kerinspect.report.Separability`).
SEP_COLUMN = "Sep"


def columns_of(report: ModelReport) -> tuple[str, ...]:
    """The table's columns: :data:`COLUMNS`, with :data:`SEP_COLUMN` before ``Flags``
    when the run had labels."""
    if report.labels is None:
        return COLUMNS
    return (*COLUMNS[:-1], SEP_COLUMN, COLUMNS[-1])


def fmt_separability(out: TensorRecord) -> str:
    """An output's separability accuracy (``0.93``), ``-`` when not computed, empty
    when it has none (not float, no batch axis)."""
    sep = out.separability
    if sep is None:
        return ""
    return "-" if sep.accuracy is None else f"{sep.accuracy:.2f}"


def labels_line(report: ModelReport) -> str | None:
    """``labels: 10 classes from folders (40 samples), chance 0.15`` (None without labels)."""
    lab = report.labels
    if lab is None:
        return None
    chance = "-" if lab.chance is None else f"{lab.chance:.2f}"
    return (
        f"labels: {len(lab.classes)} classes from {safe(lab.source)} ({fmt_count(sum(lab.counts))} samples); "
        f"sep = leave-one-out nearest-class-mean accuracy, chance {chance} (the largest class's share)"
    )


def safe(text: str) -> str:
    """Untrusted text for a terminal: control characters escaped, length bounded."""
    return escape_text(text, limit=200)


def _params_cell(layer: LayerRecord) -> str:
    if layer.class_name == "InputLayer":
        return ""
    if layer.call > 0:
        return "shared" if layer.params else "0"
    text = fmt_count(layer.params)
    return f"({text})" if layer.container else text


def rows(report: ModelReport) -> Iterator[tuple[LayerRecord, TensorRecord | None, list[str]]]:
    """One row of plain cell strings per output tensor (per layer call if it has none),
    in :func:`columns_of` order."""
    labelled = report.labels is not None
    for layer in report.layers:
        outs: list[TensorRecord | None] = list(layer.outputs) or [None]
        multi = len(outs) > 1
        indent = "  " * layer.depth  # rows indented by nesting depth
        for k, out in enumerate(outs):
            label = indent + safe(layer.path) + (f":{safe(out.name)}" if multi and out is not None else "")
            if out is None:
                shape = "-" if layer.called else "(not called)"
                blanks = 10 if labelled else 9
                yield layer, None, [label, safe(layer.class_name), shape, _params_cell(layer)] + [""] * blanks
                continue
            st = out.stats
            yield (
                layer,
                out,
                [
                    label,
                    safe(layer.class_name) if k == 0 else "",
                    fmt_shape(out.shape) + ("" if out.dtype == "float32" else f" {safe(out.dtype)}"),
                    _params_cell(layer) if k == 0 else "",
                    fmt_mean(st),
                    fmt_float(st.std) if st else "-",
                    fmt_float(st.min) if st else "-",
                    fmt_float(st.max) if st else "-",
                    fmt_fraction(st.zero_fraction) if st else "-",
                    fmt_count(st.nan_count) if st else "-",
                    fmt_count(st.inf_count) if st else "-",
                    fmt_fraction(st.dead_fraction) if st else "-",
                    *([fmt_separability(out)] if labelled else []),
                    ",".join(out.flags),
                ],
            )


def loader_text(report: ModelReport) -> str:
    m = report.model
    text = f"Keras {safe(m.keras_version)}"
    prefix = "legacy config upgraded: "
    if m.loader in ("keras+legacy-h5-upgrade", "keras+legacy-archive-upgrade"):
        changes = ", ".join(safe(n.removeprefix(prefix)) for n in m.notes if n.startswith(prefix))
        text += f" (legacy Keras 2 config upgraded: {changes})"
    elif m.loader != "keras":
        text += f" ({safe(m.loader)})"
    for note in m.notes:  # how the file was read (by its content, ...)
        if not note.startswith(prefix):
            text += f"; {safe(note)}"
    return text


def input_origin(i: InputRecord, esc: Callable[[str], str]) -> str:
    """Where an input came from, for a header: ``synthetic, seed=0: <what it was drawn
    from>`` or ``from <path>`` (with its note); ``esc`` escapes for the medium."""
    if i.source == "synthetic":
        return f"synthetic, seed={i.seed}" + (f": {esc(i.note)}" if i.note else "")
    return f"from {esc(i.source)}" + (f"; {esc(i.note)}" if i.note else "")


def header_lines(report: ModelReport) -> list[str]:
    m = report.model
    where = f" from {safe(m.path)}" if m.path else ""
    lines = [
        f"Model {safe(m.name)!r} ({safe(m.class_name)}){where}",
        f"format: {safe(m.format)} · loaded with {loader_text(report)} · {report.samples} samples in "
        f"batches of {report.batch_size}"
        # the engine, where it is not the plain eager one (see --engine)
        + (f" · ran {safe(report.engine)}" if report.engine not in ("", "eager") else ""),
    ]
    for i in report.inputs:
        lines.append(
            f"input {safe(i.name)!r}: {safe(i.dtype)} {fmt_shape(i.shape)} ({input_origin(i, safe)})"
        )
    labels = labels_line(report)
    if labels is not None:
        lines.append(labels)
    if report.max_depth is not None:
        lines.append(f"depth: layer calls nested at most {report.max_depth} level(s) deep are shown")
    return lines


def attention_notes(report: ModelReport) -> list[str]:
    """One line per attention layer call whose probabilities could not be captured."""
    return [
        f"attention {safe(r.path)!r}: unavailable ({safe(r.attention.reason or 'unknown reason')})"
        for r in report.layers
        if r.attention is not None and r.attention.status != "ok"
    ]


def footer_line(report: ModelReport) -> str:
    t = report.totals
    flags = Counter(f for r in report.layers for o in r.outputs for f in o.flags)
    detail = f" ({', '.join(f'{k}: {v}' for k, v in sorted(flags.items()))})" if flags else ""
    return (
        f"{fmt_count(t.layer_calls)} layer calls · {fmt_count(t.params)} parameters · "
        f"{fmt_count(t.tensors)} tensors, {fmt_count(t.flagged_tensors)} flagged{detail}"
    )


#: Columns in the order they are dropped last-to-first when the table is too wide.
_PRIORITY = (
    "Layer",
    "Output shape",
    "Flags",
    "NaN",
    "Mean",
    "Std",
    "Dead",
    "Class",
    "Max",
    "Min",
    "Inf",
    "Zeros",
    "Params",
    "Sep",
)
_GAP = 2  # characters between columns


def fit_columns(
    cells: list[list[str]],
    width: int | None,
    columns: tuple[str, ...] = COLUMNS,
    priority: tuple[str, ...] = _PRIORITY,
    folded: tuple[str, ...] = ("Layer",),
) -> list[str]:
    """The columns to show: all of them when they fit in ``width`` (or ``width`` is
    None), else the most important ones that fit, in their usual order.

    ``priority[0]`` is always shown; ``folded`` columns wrap, so they count at most
    48 characters.
    """
    natural = {c: max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)}
    if width is None or sum(natural.values()) + _GAP * (len(columns) - 1) <= width:
        return list(columns)
    chosen: set[str] = set()
    used = -_GAP
    for col in (c for c in priority if c in natural):
        need = (min(natural[col], _FOLD_MAX) if col in folded else natural[col]) + _GAP
        if col == priority[0] or used + need <= width:
            chosen.add(col)
            used += need
    return [c for c in columns if c in chosen]


_FOLD_MAX = 48  # a folded column (a layer path) is never narrower than this, or its longest cell


def _table(
    console: Console,
    columns: tuple[str, ...],
    shown: list[str],
    body: list[list[str]],
    styles: list[str | None],
    numeric: set[str],
    folded: tuple[str, ...],
) -> None:
    """Print the ``shown`` columns of ``body`` (plain cells, escaped here for markup)."""
    index = [columns.index(c) for c in shown]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in shown:
        if col in folded:  # paths are never cut: they wrap beyond 48 characters
            i = columns.index(col)
            table.add_column(
                col, overflow="fold", min_width=min(max([len(c[i]) for c in body] + [5]), _FOLD_MAX)
            )
        else:
            table.add_column(col, justify="right" if col in numeric else "left", no_wrap=True)
    for cells, style in zip(body, styles):
        table.add_row(*(escape(cells[i]) for i in index), style=style)
    console.print(table)


def _hidden_note(console: Console, columns: tuple[str, ...], shown: list[str]) -> None:
    hidden = [c for c in columns if c not in shown]
    if hidden:
        console.print(
            Text(
                f"(hidden to fit {console.width} columns: {', '.join(hidden)}; use --width or --format json)",
                style="dim",
            )
        )


def render_table(report: ModelReport, console: Console, *, fit: bool = True) -> None:
    """Print the report as a Rich table: header, one row per tensor, footer.

    With ``fit`` the table is kept within ``console.width`` by leaving out the
    least important columns (named in a note); without, every column is shown
    (give the console a generous width).
    """
    for line in header_lines(report):
        console.print(Text(line))
    body = list(rows(report))
    columns = columns_of(report)
    shown = fit_columns([c for _, _, c in body], console.width if fit else None, columns)
    styles = [
        "red" if out is not None and out.flags else ("dim" if layer.class_name == "InputLayer" else None)
        for layer, out, _ in body
    ]
    _table(console, columns, shown, [c for _, _, c in body], styles, _NUMERIC, ("Layer",))
    console.print(Text(footer_line(report)))
    for line in attention_notes(report):
        console.print(Text(line, style="yellow"))
    _hidden_note(console, columns, shown)
    if report.warnings:
        console.print(Text(f"{len(report.warnings)} warning(s) from Keras; see --format json", style="dim"))


_MD_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~&])")


def _md_cell(text: str) -> str:
    """Text of kerinspect's own (numbers, shapes): only table pipes need escaping."""
    return text.replace("|", "\\|")


def _md_text(text: str) -> str:
    """Text that may come from the model (names, paths) outside a table cell: every
    Markdown/HTML punctuation character is backslash-escaped, so a name cannot make a
    link, an image, a tag or emphasis in a PR comment."""
    return _MD_PUNCTUATION.sub(r"\\\1", text)


def _md_code(text: str) -> str:
    """A name as a table-cell code span: inert to Markdown and HTML. The fence is one
    backtick longer than any run of backticks inside; pipes stay escaped (GFM splits
    cells on them even in code spans)."""
    if not text:
        return ""
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def render_markdown(report: ModelReport) -> str:
    """The report as GitHub-flavoured Markdown."""
    out = [f"**{_md_text(header_lines(report)[0])}**", ""]
    out += [f"- {_md_text(line)}" for line in header_lines(report)[1:]]
    columns = columns_of(report)
    out += [
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if c in _NUMERIC else "---" for c in columns) + "|",
    ]
    for _, _, cells in rows(report):
        named = [_md_code(cells[0]), _md_code(cells[1])] + [_md_cell(c) for c in cells[2:]]
        out.append("| " + " | ".join(named) + " |")
    out += ["", _md_cell(footer_line(report)), ""]
    out += [f"- {_md_text(line)}" for line in attention_notes(report)]
    return "\n".join(out)


def render_json(report: ModelReport | WeightsReport | CheckRun | dict[str, Any]) -> str:
    """Stable JSON (see README "JSON output"); NaN never appears (undefined is null).

    ``##[`` (GitHub's legacy workflow-command prefix, honoured anywhere in a log
    line) can only occur inside strings here; it is written ``#\\u0023[``, which
    decodes to the same text.
    """
    data = report if isinstance(report, dict) else report.to_dict()
    # ASCII only: names round-trip exactly, while lone surrogates, C1 controls and
    # bidi overrides from a model file can neither break stdout nor a terminal.
    text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=True)
    return text.replace(LEGACY_COMMAND, "#\\u0023[")


# -- kerinspect check -------------------------------------------------------------

_STATUS_STYLE = {"failed": "bold red", "error": "bold magenta", "passed": "bold green"}
_STATUS_ORDER = {"failed": 0, "error": 1, "passed": 2}
_VERDICT_WORD = {"failed": ("FAIL", "red"), "passed": ("pass", "green"), "not_checked": ("skip", "yellow")}

#: Failures listed under a rule in the text summary.
LISTED_FAILURES = 5


def _line(console: Console, *parts: str | tuple[str, str]) -> None:
    # soft_wrap: Rich never breaks a line, so no printed line can start with
    # text from the model (a wrapped "::error::" would be a workflow command).
    console.print(Text.assemble(*parts), soft_wrap=True)


def _model_title(result: CheckResult) -> str:
    if result.model is None:
        return ""
    seed = result.settings.get("seed")
    synthetic = any(i.source == "synthetic" for i in result.inputs)
    fed = f"{result.samples:,} samples" + (f", seed {seed}" if synthetic else "")
    return f" · model '{safe(result.model.name)}' ({safe(result.model.class_name)}) · {fed}"


def _inputs_line(result: CheckResult) -> str:
    """Said of a model that ran on synthetic inputs: the gate judged noise, not data."""
    if not result.synthetic_inputs:
        return ""
    return "ran on synthetic inputs (no --input or input = in the configuration): " + safe(
        synthetic_text(result.inputs)
    )


def _coverage(result: CheckResult) -> str:
    nan = next((r for r in result.rules if r.rule == "nan"), None)
    if nan is None:
        return ""
    c = nan.counts
    checked = c.failed + c.passed
    text = f"{checked:,} of {c.total:,} tensors checked"
    return text + (f", {c.ignored:,} ignored" if c.ignored else "")


def _rule_lines(console: Console, result: CheckResult, rule: RuleResult) -> None:
    word, style = _VERDICT_WORD.get(rule.verdict, ("?", ""))
    c = rule.counts
    ignored = f" ({c.ignored:,} ignored)" if c.ignored else ""
    _line(
        console,
        "  ",
        (word, style),
        f" {rule.rule:<11} {c.failed:,} failed, {c.passed:,} passed, {c.not_checked:,} not checked{ignored}"
        f" ({rule.unit}s)",
    )
    if rule.note is not None:
        _line(console, "      -> ", escape_text(rule.note))
    if not rule.failed:
        return
    head = _ci.headline(result, rule)
    if len(rule.failures) != 1 or head != _ci.failure_text(rule.failures[0]):
        _line(console, "      -> ", escape_text(head))
    for f in rule.failures[:LISTED_FAILURES]:
        _line(console, "      - ", escape_text(_ci.failure_text(f)))
    if len(rule.failures) > LISTED_FAILURES:
        _line(console, f"      - ... and {len(rule.failures) - LISTED_FAILURES:,} more (see --format json)")


def render_check(run: CheckRun, console: Console) -> None:
    """The check run for a terminal or CI log: models with problems first (each
    failed rule with its first failures), passes in one line each, then a totals
    line. Every line starts with kerinspect's own text, never a name."""
    for result in sorted(run.results, key=lambda r: _STATUS_ORDER.get(r.status, 3)):
        label = (result.status.upper() + " ").ljust(7)
        head: list[str | tuple[str, str]] = [
            (label, _STATUS_STYLE.get(result.status, "")),
            " ",
            safe(result.path),
        ]
        if result.error is not None:
            e = result.error
            _line(console, *head, f" · exit {e.exit_code} · {safe(e.rule)}: ", escape_text(e.message))
            continue
        head.append(_model_title(result))
        inputs = _inputs_line(result)
        if result.status == "passed":
            passed = sum(1 for r in result.rules if r.verdict == "passed")
            skipped = sum(1 for r in result.rules if r.verdict == "not_checked")
            extra = f", {skipped} not applicable" if skipped else ""
            _line(console, *head, f" · {passed} rules passed{extra} · {_coverage(result)}")
            if inputs:
                _line(console, ("  inputs: ", "yellow"), inputs)
        else:
            _line(console, *head, f" · {_coverage(result)}")
            if inputs:
                _line(console, ("  inputs: ", "yellow"), inputs)
            order = sorted(result.rules, key=lambda r: 0 if r.failed else 1)
            for rule in order:
                _rule_lines(console, result, rule)
        for w in result.warnings:
            _line(console, ("  warning: ", "yellow"), escape_text(w, limit=600))  # paths, hashes: longer
    total = len(run.results)
    parts = [f"{total} model{'s' if total != 1 else ''}", f"{run.count('passed')} passed"]
    parts += [
        f"{run.count('failed')} failed",
        f"{run.count('error')} error{'s' if run.count('error') != 1 else ''}",
    ]
    code = run.exit_code
    _line(
        console,
        ("kerinspect check: ", "bold"),
        " · ".join(parts) + " · ",
        (f"exit {code}", "bold green" if code == 0 else "bold red"),
    )


# -- kerinspect attention -----------------------------------------------------------

ATTENTION_COLUMNS = (
    "Head",
    "Entropy",
    "Min entropy",
    "Max weight",
    "Sink",
    "Diagonal",
    "Row-sum err",
    "Flags",
)
_ATTENTION_NUMERIC = {"Head", "Entropy", "Min entropy", "Max weight", "Sink", "Diagonal", "Row-sum err"}
_ATTENTION_PRIORITY = (
    "Head",
    "Entropy",
    "Flags",
    "Max weight",
    "Sink",
    "Diagonal",
    "Min entropy",
    "Row-sum err",
)


def attention_layers(report: ModelReport) -> list[LayerRecord]:
    """The layer calls that carry attention statistics, in call order."""
    return [r for r in report.layers if r.attention is not None]


def _source_text(att: AttentionRecord) -> str:
    if att.source == "recomputed":
        diff = "" if att.max_difference is None else f" (max difference {att.max_difference:.2g})"
        return "recomputed on the explicit path, matched the fused output" + diff
    if att.source == "softmax":
        return f"a softmax the layer computed (as its {att.output or 'output'})"
    return "computed by the layer"


def attention_title(layer: LayerRecord) -> str:
    """The line above one attention layer's table."""
    att = layer.attention
    assert att is not None
    head = f"{safe(layer.path)} ({safe(layer.class_name)})"
    if att.status != "ok":
        return f"{head} · attention: unavailable ({safe(att.reason or 'unknown reason')})"
    return (
        f"{head} · probabilities {fmt_shape(att.shape)} · {_source_text(att)} · "
        f"{fmt_count(att.queries)} query rows"
    )


def _token_lines(layer: LayerRecord) -> list[str]:
    """The sample's words on the layer's axes (none without a vocabulary)."""
    from .words import tokens_lines

    att = layer.attention
    return [] if att is None or att.tokens is None else tokens_lines(att.tokens)


def head_rows(layer: LayerRecord) -> Iterator[tuple[HeadStats, list[str]]]:
    """One row of plain cells per head."""
    att = layer.attention
    for h in att.heads if att is not None else ():
        yield (
            h,
            [
                str(h.head),
                fmt_float(h.entropy),
                fmt_float(h.min_entropy),
                fmt_float(h.max_weight),
                fmt_float(h.sink),
                fmt_float(h.diagonal),
                fmt_float(h.row_sum_error),
                ",".join(h.flags),
            ],
        )


def attention_footer(report: ModelReport) -> str:
    layers = attention_layers(report)
    heads = [h for r in layers if r.attention is not None for h in r.attention.heads]
    flags = Counter(f for h in heads for f in h.flags)
    detail = f" ({', '.join(f'{k}: {v}' for k, v in sorted(flags.items()))})" if flags else ""
    unavailable = sum(1 for r in layers if r.attention is not None and r.attention.status != "ok")
    extra = f", {unavailable} unavailable" if unavailable else ""
    return (
        f"{fmt_count(len(layers))} attention layer call{'s' if len(layers) != 1 else ''}{extra} · "
        f"{fmt_count(len(heads))} heads, "
        f"{sum(1 for h in heads if h.flags)} flagged{detail}"
    )


def render_attention_table(report: ModelReport, console: Console, *, fit: bool = True) -> None:
    """Print one table per attention layer call, one row per head (``kerinspect attention``)."""
    for line in header_lines(report):
        console.print(Text(line))
    layers = attention_layers(report)
    if not layers:
        console.print(Text("no attention layer was called"))
    for layer in layers:
        console.print(Text(""))
        console.print(Text(attention_title(layer), style="bold"), soft_wrap=True)
        for line in _token_lines(layer):
            console.print(Text(line), soft_wrap=True)
        body = list(head_rows(layer))
        if not body:
            continue
        cells = [c for _, c in body]
        shown = fit_columns(cells, console.width if fit else None, ATTENTION_COLUMNS, _ATTENTION_PRIORITY, ())
        styles = ["red" if h.flags else None for h, _ in body]
        _table(console, ATTENTION_COLUMNS, shown, cells, styles, _ATTENTION_NUMERIC, ())
    console.print(Text(attention_footer(report)))


def render_attention_markdown(report: ModelReport) -> str:
    """``kerinspect attention`` as GitHub-flavoured Markdown."""
    out = [f"**{_md_text(header_lines(report)[0])}**", ""]
    out += [f"- {_md_text(line)}" for line in header_lines(report)[1:]]
    for layer in attention_layers(report):
        out += ["", f"**{_md_text(attention_title(layer))}**", ""]
        words = _token_lines(layer)
        out += [f"{_md_text(line)}  " for line in words] + ([""] if words else [])
        body = list(head_rows(layer))
        if not body:
            continue
        out += [
            "| " + " | ".join(ATTENTION_COLUMNS) + " |",
            "|" + "|".join("---:" if c in _ATTENTION_NUMERIC else "---" for c in ATTENTION_COLUMNS) + "|",
        ]
        out += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for _, cells in body]
    out += ["", _md_cell(attention_footer(report)), ""]
    return "\n".join(out)


def attention_json(report: ModelReport) -> dict[str, Any]:
    """``kerinspect attention --format json``: the model, its inputs, and every
    attention layer call with its ``heads`` (the same records as the full report's)."""
    data = report.to_dict()
    return {
        "schema_version": data["schema_version"],
        "kerinspect_version": data["kerinspect_version"],
        "model": data["model"],
        "inputs": data["inputs"],
        "samples": data["samples"],
        "thresholds": data["thresholds"],
        "layers": [
            {k: r[k] for k in ("path", "name", "class_name", "call", "depth", "parent", "attention")}
            for r in data["layers"]
            if r.get("attention") is not None
        ],
    }
