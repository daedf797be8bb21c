"""Turn a :class:`~kerinspect.report.ModelReport` or
:class:`~kerinspect.report.WeightsReport` into a Rich table, Markdown or JSON.

Layer names come from the model file, so they are untrusted: every name is
escaped for Rich markup and for control characters before it is shown.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .errors import escape_text
from .report import LayerRecord, ModelReport, TensorRecord, WeightRecord, WeightsReport

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
_NUMERIC = {"Params", "Mean", "Std", "Min", "Max", "Zeros", "NaN", "Inf", "Dead"}


def safe(text: str) -> str:
    """Untrusted text for a terminal: control characters escaped, length bounded."""
    return escape_text(text, limit=200)


def fmt_float(x: float | None) -> str:
    """Four significant digits; ``-`` when undefined."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.4g}"


def fmt_fraction(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%"


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _params_cell(layer: LayerRecord) -> str:
    if layer.class_name == "InputLayer":
        return ""
    if layer.call > 0:
        return "shared" if layer.params else "0"
    text = fmt_count(layer.params)
    return f"({text})" if layer.container else text


def rows(report: ModelReport) -> Iterator[tuple[LayerRecord, TensorRecord | None, list[str]]]:
    """One row of plain cell strings per output tensor (per layer call if it has none)."""
    for layer in report.layers:
        outs: list[TensorRecord | None] = list(layer.outputs) or [None]
        multi = len(outs) > 1
        for k, out in enumerate(outs):
            label = safe(layer.path) + (f":{safe(out.name)}" if multi and out is not None else "")
            if out is None:
                yield layer, None, [label, layer.class_name, "-", _params_cell(layer)] + [""] * 9
                continue
            st = out.stats
            yield (
                layer,
                out,
                [
                    label,
                    safe(layer.class_name) if k == 0 else "",
                    fmt_shape(out.shape) + ("" if out.dtype == "float32" else f" {out.dtype}"),
                    _params_cell(layer) if k == 0 else "",
                    fmt_float(st.mean) if st else "-",
                    fmt_float(st.std) if st else "-",
                    fmt_float(st.min) if st else "-",
                    fmt_float(st.max) if st else "-",
                    fmt_fraction(st.zero_fraction) if st else "-",
                    fmt_count(st.nan_count) if st else "-",
                    fmt_count(st.inf_count) if st else "-",
                    fmt_fraction(st.dead_fraction) if st else "-",
                    ",".join(out.flags),
                ],
            )


def header_lines(report: ModelReport) -> list[str]:
    m = report.model
    where = f" from {safe(m.path)}" if m.path else ""
    loader = f"Keras {m.keras_version}" if m.loader == "keras" else f"{m.loader}"
    lines = [
        f"Model {safe(m.name)!r} ({m.class_name}){where}",
        f"format: {m.format} · loaded with {loader} · {report.samples} samples in batches of "
        f"{report.batch_size}",
    ]
    for i in report.inputs:
        origin = f"synthetic, seed={i.seed}" if i.source == "synthetic" else f"from {safe(i.source)}"
        lines.append(f"input {safe(i.name)!r}: {i.dtype} {fmt_shape(i.shape)} ({origin})")
    return lines


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
    for col in priority:
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
    shown = fit_columns([c for _, _, c in body], console.width if fit else None)
    styles = [
        "red" if out is not None and out.flags else ("dim" if layer.class_name == "InputLayer" else None)
        for layer, out, _ in body
    ]
    _table(console, COLUMNS, shown, [c for _, _, c in body], styles, _NUMERIC, ("Layer",))
    console.print(Text(footer_line(report)))
    _hidden_note(console, COLUMNS, shown)
    if report.warnings:
        console.print(Text(f"{len(report.warnings)} warning(s) from Keras; see --format json", style="dim"))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: ModelReport) -> str:
    """The report as GitHub-flavoured Markdown."""
    out = [f"**{_md_cell(header_lines(report)[0])}**", ""]
    out += [f"- {_md_cell(line)}" for line in header_lines(report)[1:]]
    out += [
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + "|",
    ]
    for _, _, cells in rows(report):
        out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    out += ["", _md_cell(footer_line(report)), ""]
    return "\n".join(out)


def render_json(report: ModelReport | WeightsReport | dict[str, Any]) -> str:
    """Stable JSON (see README "JSON output"); NaN never appears (undefined is null)."""
    data = report if isinstance(report, dict) else report.to_dict()
    return json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False)


# -- kerinspect weights -------------------------------------------------------------

WEIGHT_COLUMNS = (
    "Layer",
    "Weight",
    "Shape",
    "Params",
    "Mean",
    "Std",
    "Min",
    "Max",
    "L2 norm",
    "NaN",
    "Inf",
    "Flags",
)
_WEIGHT_NUMERIC = {"Params", "Mean", "Std", "Min", "Max", "L2 norm", "NaN", "Inf"}
#: Columns in the order they are dropped last-to-first when the table is too wide.
_WEIGHT_PRIORITY = (
    "Layer",
    "Weight",
    "Flags",
    "NaN",
    "Shape",
    "Mean",
    "Std",
    "Max",
    "Min",
    "Inf",
    "L2 norm",
    "Params",
)
_WEIGHT_FOLDED = ("Layer", "Weight")


def weight_rows(report: WeightsReport) -> Iterator[tuple[WeightRecord, list[str]]]:
    """One row of plain cell strings per weight. The layer is shown on the first of
    its rows only, and the weight's name relative to it (``lstm_cell/kernel``)."""
    previous: str | None = None
    for w in report.weights:
        layer = "" if w.layer == previous else (safe(w.layer) if w.layer else "(model)")
        previous = w.layer
        rel = w.name[len(w.layer) + 1 :] if w.layer and w.name.startswith(w.layer + "/") else w.name
        st = w.stats
        yield (
            w,
            [
                layer,
                safe(rel),
                fmt_shape(w.shape) + ("" if w.dtype == "float32" else f" {safe(w.dtype)}"),
                fmt_count(w.size),
                fmt_float(st.mean) if st else "-",
                fmt_float(st.std) if st else "-",
                fmt_float(st.min) if st else "-",
                fmt_float(st.max) if st else "-",
                fmt_float(w.norm),
                fmt_count(st.nan_count) if st else "-",
                fmt_count(st.inf_count) if st else "-",
                ",".join(w.flags),
            ],
        )


def weights_header_lines(report: WeightsReport) -> list[str]:
    what = f" of {safe(report.model_name)!r}" if report.model_name else ""
    if report.model_class:
        what += f" ({safe(report.model_class)})"
    saved = f" · saved with Keras {safe(report.saved_with)}" if report.saved_with else ""
    return [
        f"Weights{what} from {safe(report.path)}",
        f"format: {report.format} ({report.layout} layout){saved} · read with h5py only",
    ]


def weights_footer_line(report: WeightsReport) -> str:
    t = report.totals
    flags = Counter(f for w in report.weights for f in w.flags)
    detail = f" ({', '.join(f'{k}: {v}' for k, v in sorted(flags.items()))})" if flags else ""
    return (
        f"{fmt_count(t.weights)} weights · {fmt_count(t.params)} parameters · "
        f"{fmt_count(t.flagged)} flagged{detail}"
    )


def render_weights_table(report: WeightsReport, console: Console, *, fit: bool = True) -> None:
    """Print a weights report as a Rich table: header, one row per weight, footer.

    With ``fit`` the table is kept within ``console.width`` by leaving out the
    least important columns (named in a note).
    """
    for line in weights_header_lines(report):
        console.print(Text(line))
    body = list(weight_rows(report))
    cells = [c for _, c in body]
    shown = fit_columns(
        cells, console.width if fit else None, WEIGHT_COLUMNS, _WEIGHT_PRIORITY, _WEIGHT_FOLDED
    )
    styles = ["red" if w.flags else None for w, _ in body]
    _table(console, WEIGHT_COLUMNS, shown, cells, styles, _WEIGHT_NUMERIC, _WEIGHT_FOLDED)
    console.print(Text(weights_footer_line(report)))
    _hidden_note(console, WEIGHT_COLUMNS, shown)
    if report.warnings:
        console.print(Text(f"{len(report.warnings)} warning(s); see --format json", style="dim"))


def render_weights_markdown(report: WeightsReport) -> str:
    """A weights report as GitHub-flavoured Markdown."""
    header = weights_header_lines(report)
    out = [f"**{_md_cell(header[0])}**", ""]
    out += [f"- {_md_cell(line)}" for line in header[1:]]
    out += [
        "",
        "| " + " | ".join(WEIGHT_COLUMNS) + " |",
        "|" + "|".join("---:" if c in _WEIGHT_NUMERIC else "---" for c in WEIGHT_COLUMNS) + "|",
    ]
    for _, cells in weight_rows(report):
        out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    out += ["", _md_cell(weights_footer_line(report)), ""]
    return "\n".join(out)
