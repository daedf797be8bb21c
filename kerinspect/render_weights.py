"""``kerinspect weights`` as a Rich table and as Markdown.

One row per weight (grouped by layer), a footer of totals, then the training state
saved beside the weights. With a trained model's optimizer state, a line says what the
``Update/‖w‖`` column is (:mod:`kerinspect.scan.optimizer_state`), and the column shows
each weight's ``update_ratio``; without one, the table is as before (the JSON's
``optimizer_step`` says why there is none).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text

from .numfmt import fmt_count, fmt_float, fmt_mean, fmt_shape
from .render import _hidden_note, _md_cell, _md_code, _md_text, _table, fit_columns, safe
from .report import WeightRecord, WeightsReport

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
#: The column of each weight's ``update_ratio``, after "L2 norm", when it was computed.
UPDATE_COLUMN = "Update/‖w‖"


def weight_columns(report: WeightsReport) -> tuple[str, ...]:
    """The table's columns: :data:`WEIGHT_COLUMNS`, with :data:`UPDATE_COLUMN` when the
    optimizer's last step was computed."""
    if report.optimizer_step.update is None:
        return WEIGHT_COLUMNS
    at = WEIGHT_COLUMNS.index("L2 norm") + 1
    return WEIGHT_COLUMNS[:at] + (UPDATE_COLUMN,) + WEIGHT_COLUMNS[at:]


def _priority(columns: tuple[str, ...]) -> tuple[str, ...]:
    if UPDATE_COLUMN not in columns:
        return _WEIGHT_PRIORITY
    at = _WEIGHT_PRIORITY.index("Flags") + 1
    return _WEIGHT_PRIORITY[:at] + (UPDATE_COLUMN,) + _WEIGHT_PRIORITY[at:]


def weight_rows(report: WeightsReport) -> Iterator[tuple[WeightRecord, list[str]]]:
    """One row of plain cell strings per weight. The layer is shown on the first of
    its rows only, and the weight's name relative to it (``lstm_cell/kernel``)."""
    previous: str | None = None
    update = report.optimizer_step.update is not None
    for w in report.weights:
        layer = "" if w.layer == previous else (safe(w.layer) if w.layer else "(model)")
        previous = w.layer
        rel = w.name[len(w.layer) + 1 :] if w.layer and w.name.startswith(w.layer + "/") else w.name
        st = w.stats
        cells = [
            layer,
            safe(rel),
            fmt_shape(w.shape) + ("" if w.dtype == "float32" else f" {safe(w.dtype)}"),
            fmt_count(w.size),
            fmt_mean(st),
            fmt_float(st.std) if st else "-",
            fmt_float(st.min) if st else "-",
            fmt_float(st.max) if st else "-",
            fmt_float(w.norm),
            *([fmt_float(w.update_ratio)] if update else []),
            fmt_count(st.nan_count) if st else "-",
            fmt_count(st.inf_count) if st else "-",
            ",".join(w.flags),
        ]
        yield w, cells


def weights_header_lines(report: WeightsReport) -> list[str]:
    what = f" of {safe(report.model_name)!r}" if report.model_name else ""
    if report.model_class:
        what += f" ({safe(report.model_class)})"
    saved = f" · saved with Keras {safe(report.saved_with)}" if report.saved_with else ""
    line = optimizer_line(report)
    return [
        f"Weights{what} from {safe(report.path)}",
        f"format: {report.format} ({report.layout} layout){saved} · read with h5py only",
        *([line] if line else []),
    ]


def optimizer_line(report: WeightsReport) -> str | None:
    """What the Update/‖w‖ column is (the optimizer, its steps and learning rate), or
    why there is none although optimizer state was saved; None without any."""
    step = report.optimizer_step
    if step.update is None:
        return (
            f"optimizer state saved, no {UPDATE_COLUMN}: {safe(step.note)}"
            if report.optimizer and step.note
            else None
        )
    rate = f"learning rate {fmt_float(step.learning_rate)}"
    if step.schedule:
        rate += f" ({safe(step.schedule)} at step {fmt_count(max((step.iterations or 1) - 1, 0))})"
    return (
        f"optimizer: {safe(step.class_name or '?')} · {fmt_count(step.iterations or 0)} steps · {rate} · "
        f"{UPDATE_COLUMN} = ‖Δw‖/‖w‖ of {safe(step.note)}"
    )


def weights_footer_line(report: WeightsReport) -> str:
    t = report.totals
    flags = Counter(f for w in report.weights for f in w.flags)
    detail = f" ({', '.join(f'{k}: {v}' for k, v in sorted(flags.items()))})" if flags else ""
    return (
        f"{fmt_count(t.weights)} weights · {fmt_count(t.params)} parameters · "
        f"{fmt_count(t.flagged)} flagged{detail}"
    )


#: The training-state section: variables saved beside the weights (optimizer, metrics).
STATE_COLUMNS = ("State", "Variable", "Shape", "Values")
_STATE_NUMERIC = {"Values"}
_STATE_PRIORITY = ("Variable", "State", "Shape", "Values")
_STATE_FOLDED = ("State", "Variable")
#: How each kind of state names its group in the file (shown once, on its first row).
_STATE_PREFIXES = {"optimizer": ("optimizer/", "optimizer_weights/"), "metrics": ("metrics/",)}


def state_rows(report: WeightsReport) -> Iterator[list[str]]:
    """One row of plain cells per training-state variable: its kind (``optimizer``,
    ``metrics``) on the first row of each, the variable's path in that group."""
    for kind, variables in (("optimizer", report.optimizer), ("metrics", report.metrics)):
        for i, v in enumerate(variables):
            rel = v.name
            for prefix in _STATE_PREFIXES[kind]:
                if rel.startswith(prefix):
                    rel = rel[len(prefix) :]
                    break
            shape = fmt_shape(v.shape) + ("" if v.dtype == "float32" else f" {safe(v.dtype)}")
            yield ["" if i else kind, safe(rel), shape, fmt_count(v.size)]


def state_line(report: WeightsReport) -> str:
    """What the training-state section holds, and that it is not checked."""
    parts = [
        f"{fmt_count(len(found))} {what} variable{'' if len(found) == 1 else 's'} ({fmt_count(sum(v.size for v in found))} values)"
        for what, found in (("optimizer", report.optimizer), ("metric", report.metrics))
        if found
    ]
    return f"Training state saved with the model: {' · '.join(parts)}; not model weights, not checked"


def render_weights_table(report: WeightsReport, console: Console, *, fit: bool = True) -> None:
    """Print a weights report as a Rich table: header, one row per weight, footer.

    With ``fit`` the table is kept within ``console.width`` by leaving out the
    least important columns (named in a note).
    """
    for line in weights_header_lines(report):
        console.print(Text(line))
    columns = weight_columns(report)
    body = list(weight_rows(report))
    cells = [c for _, c in body]
    shown = fit_columns(cells, console.width if fit else None, columns, _priority(columns), _WEIGHT_FOLDED)
    styles = ["red" if w.flags else None for w, _ in body]
    _table(console, columns, shown, cells, styles, _WEIGHT_NUMERIC | {UPDATE_COLUMN}, _WEIGHT_FOLDED)
    console.print(Text(weights_footer_line(report)))
    _hidden_note(console, columns, shown)
    if report.optimizer or report.metrics:
        console.print()
        console.print(Text(state_line(report)))
        state = list(state_rows(report))
        shown = fit_columns(
            state, console.width if fit else None, STATE_COLUMNS, _STATE_PRIORITY, _STATE_FOLDED
        )
        _table(console, STATE_COLUMNS, shown, state, [None] * len(state), _STATE_NUMERIC, _STATE_FOLDED)
        _hidden_note(console, STATE_COLUMNS, shown)
    if report.warnings:
        console.print(Text(f"{len(report.warnings)} warning(s); see --format json", style="dim"))


def render_weights_markdown(report: WeightsReport) -> str:
    """A weights report as GitHub-flavoured Markdown."""
    header = weights_header_lines(report)
    columns = weight_columns(report)
    numeric = _WEIGHT_NUMERIC | {UPDATE_COLUMN}
    out = [f"**{_md_text(header[0])}**", ""]
    out += [f"- {_md_text(line)}" for line in header[1:]]
    out += [
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|",
    ]
    for _, cells in weight_rows(report):
        named = [_md_code(cells[0]), _md_code(cells[1])] + [_md_cell(c) for c in cells[2:]]
        out.append("| " + " | ".join(named) + " |")
    out += ["", _md_cell(weights_footer_line(report)), ""]
    if report.optimizer or report.metrics:
        out += [
            _md_cell(state_line(report)),
            "",
            "| " + " | ".join(STATE_COLUMNS) + " |",
            "|" + "|".join("---:" if c in _STATE_NUMERIC else "---" for c in STATE_COLUMNS) + "|",
        ]
        for cells in state_rows(report):
            out.append(
                "| "
                + " | ".join([_md_cell(cells[0]), _md_code(cells[1])] + [_md_cell(c) for c in cells[2:]])
                + " |"
            )
        out.append("")
    return "\n".join(out)
