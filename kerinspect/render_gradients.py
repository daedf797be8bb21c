"""``kerinspect gradients`` as a Rich table and as Markdown.

One row per output of every layer call (the gradient of the loss with respect to it:
norm, its ratio to the gradient norm at the output layer's input, RMS, largest magnitude, NaN/Inf, flags), then
one row per trainable weight (its norm, its gradient's norm, their ratio), then one
line each where gradients vanish or explode.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from .gradients import GradientReport
from .numfmt import fmt_float, fmt_shape
from .render import _md_cell, _md_code, _md_text, _table, fit_columns, input_origin, safe

COLUMNS = ("Layer", "Output", "Shape", "‖grad‖", "Ratio", "RMS", "Max |g|", "NaN/Inf", "Flags")
_NUMERIC = {"‖grad‖", "Ratio", "RMS", "Max |g|", "NaN/Inf"}
_PRIORITY = ("Layer", "‖grad‖", "Ratio", "Flags", "RMS", "Max |g|", "NaN/Inf", "Output", "Shape")
WEIGHT_COLUMNS = ("Weight", "Shape", "‖w‖", "‖grad‖", "‖grad‖/‖w‖")
#: Each weight's ``update_ratio``, when the model's file holds optimizer state.
UPDATE_COLUMN = "Update/‖w‖"
_WEIGHT_NUMERIC = {"‖w‖", "‖grad‖", "‖grad‖/‖w‖", UPDATE_COLUMN}


def header_lines(report: GradientReport) -> list[str]:
    """The model, the inputs, the loss and how it ran."""
    m = report.model
    where = f" from {safe(m.path)}" if m.path else ""
    lines = [
        f"Model {safe(m.name)!r} ({safe(m.class_name)}){where}",
        f"{report.samples} samples in batches of {report.batch_size} · ran eagerly under a gradient tape"
        + (" · training mode (Dropout, BatchNormalization...)" if report.training else " · inference mode"),
    ]
    for i in report.inputs:
        lines.append(
            f"input {safe(i.name)!r}: {safe(i.dtype)} {fmt_shape(i.shape)} ({input_origin(i, safe)})"
        )
    lines.append(loss_line(report))
    return lines


def loss_line(report: GradientReport) -> str:
    """The loss: its name, where it came from, its value, and whose labels."""
    loss = report.loss
    logits = ", from logits" if loss.from_logits else ""
    source = "the saved compile_config" if loss.source == "compile_config" else "--loss"
    labels = (
        "the model's own top prediction as the label" if loss.labels == "predicted" else "the data's labels"
    )
    return (
        f"loss: {safe(loss.name)}{logits} (from {source}) = {fmt_float(loss.value)}, with {labels}; "
        "gradients of the mean loss over all samples"
    )


def rows(report: GradientReport) -> list[tuple[bool, list[str]]]:
    """``(flagged, cells)`` per output of every call."""
    out = []
    for layer in report.layers:
        indent = "  " * layer.depth
        for o in layer.outputs:
            g = o.gradient
            name = f"{indent}{layer.path}"
            cells = [
                name,
                o.name,
                fmt_shape([-1 if d is None else d for d in o.shape]).replace("-1", "None"),
                fmt_float(g.norm) if g else "-",
                fmt_float(g.ratio) if g else "-",
                fmt_float(g.rms) if g else "-",
                fmt_float(g.max_abs) if g else "-",
                f"{g.nan}/{g.inf}" if g else "-",
                ", ".join(o.flags),
            ]
            out.append((bool(o.flags), cells))
    return out


def weight_columns(report: GradientReport) -> tuple[str, ...]:
    """The weight table's columns: with ``Update/‖w‖`` when the file's optimizer state gave it."""
    return WEIGHT_COLUMNS + ((UPDATE_COLUMN,) if report.optimizer_step.update is not None else ())


def weight_rows(report: GradientReport) -> list[list[str]]:
    update = report.optimizer_step.update is not None
    return [
        [w.path, fmt_shape(w.shape), fmt_float(w.norm), fmt_float(w.grad_norm), fmt_float(w.ratio)]
        + ([fmt_float(w.update_ratio)] if update else [])
        for w in report.weights
    ]


def optimizer_line(report: GradientReport) -> str | None:
    """What ``Update/‖w‖`` is (as ``kerinspect weights`` says it), when it was computed."""
    step = report.optimizer_step
    if step.update is None:
        return None
    rate = f"learning rate {fmt_float(step.learning_rate)}" + (
        f" ({safe(step.schedule)})" if step.schedule else ""
    )
    return (
        f"{UPDATE_COLUMN}: ‖Δw‖/‖w‖ of the saved optimizer's last step ({safe(step.class_name or '?')}, "
        f"{rate}): {safe(step.note)}"
    )


def render_gradients_table(report: GradientReport, console: Console, *, fit: bool = True) -> None:
    """Print the report as Rich tables (``fit``: within ``console.width``)."""
    for line in header_lines(report):
        console.print(Text(line))
    body = rows(report)
    cells = [c for _, c in body]
    shown = fit_columns(cells, console.width if fit else None, COLUMNS, _PRIORITY)
    _table(console, COLUMNS, shown, cells, ["red" if f else None for f, _ in body], _NUMERIC, ("Layer",))
    if report.weights:
        wcols = weight_columns(report)
        wcells = weight_rows(report)
        wshown = fit_columns(wcells, console.width if fit else None, wcols, wcols, ("Weight",))
        _table(console, wcols, wshown, wcells, [None] * len(wcells), _WEIGHT_NUMERIC, ("Weight",))
        update = optimizer_line(report)
        if update:
            console.print(Text(update))
    for line in report.verdict():
        flagged = report.vanishing is not None or report.exploding is not None
        console.print(Text(safe(line), style="red" if flagged else ""))


def render_gradients_markdown(report: GradientReport) -> str:
    """The report as GitHub-flavoured Markdown."""
    header = header_lines(report)
    out = [f"**{_md_text(header[0])}**", ""]
    out += [f"- {_md_text(line)}" for line in header[1:]]
    out += [
        "",
        "| " + " | ".join(_md_cell(c) for c in COLUMNS) + " |",
        "|" + "|".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + "|",
    ]
    for _, cells in rows(report):
        out.append(
            "| "
            + " | ".join([_md_code(cells[0].strip()), _md_code(cells[1])] + [_md_cell(c) for c in cells[2:]])
            + " |"
        )
    if report.weights:
        wcols = weight_columns(report)
        out += [
            "",
            "| " + " | ".join(wcols) + " |",
            "|" + "|".join("---:" if c in _WEIGHT_NUMERIC else "---" for c in wcols) + "|",
        ]
        for cells in weight_rows(report):
            out.append("| " + " | ".join([_md_code(cells[0])] + [_md_cell(c) for c in cells[1:]]) + " |")
        update = optimizer_line(report)
        if update:
            out += ["", _md_text(update)]
    out += [""] + [_md_text(line) for line in report.verdict()] + [""]
    return "\n".join(out)
