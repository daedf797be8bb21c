"""The report page's separability section (a run with labels): inline SVG, stdlib only.

:func:`separability_chart` draws each layer output's leave-one-out nearest-class-mean
accuracy along the depth, with the chance level; :func:`projection_svg` one output's
samples in 2-D (PCA, computed in the worker: :mod:`kerinspect.engine.separability`),
coloured by class, with a legend of the class names. Drawn in the style of
:mod:`kerinspect.render_html`'s depth chart; every name passes its :func:`text`.
"""

from __future__ import annotations

import html

from .figures import Pictures, Projection
from .htmltext import text
from .report import LayerRecord, ModelReport, Separability, tensor_key

#: Class colours (matplotlib's tab10); classes past ten reuse them.
CLASS_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

_ACCURACY = "#1f77b4"
_CHANCE = "#999"


def _points(report: ModelReport) -> list[tuple[LayerRecord, str, Separability]]:
    """Every output with a separability, containers left out, in graph order."""
    return [
        (layer, tensor_key(layer, t), t.separability)
        for layer in report.layers
        if not layer.container
        for t in layer.outputs
        if t.separability is not None
    ]


def separability_chart(report: ModelReport, marked: str | None = None) -> str:
    """Inline SVG: each output's separability accuracy (0 to 1) in graph order, the
    chance level as a dashed line; ``marked`` (an output's key: the last hidden
    layer) drawn as a ring."""
    points = _points(report)
    n = len(points)
    if not n:
        return '<p class="note">No layer output with a separability.</p>'
    left, right, top, h = 64, 16, 14, 200
    step = max(4.0, min(48.0, 1100 / n))
    width = max(600, int(left + right + step * max(n - 1, 1)))
    labelled = n <= 40  # layer names under the axis while they fit
    below = 50 if labelled else 0
    height = top + h + 60 + below

    def x(i: int) -> float:
        return left + step * i

    def y(v: float) -> float:
        return top + h * (1 - v)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="ki-separability" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
    ]
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        yy = y(v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    chance = report.labels.chance if report.labels is not None else None
    if chance is not None:
        yy = y(chance)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{_CHANCE}" '
            'stroke-width="1.5" stroke-dasharray="5,4"/>'
        )
    segs: list[list[str]] = [[]]
    for i, (_, _, sep) in enumerate(points):
        if sep.accuracy is None:
            segs.append([])
            continue
        segs[-1].append(f"{x(i):.1f},{y(sep.accuracy):.1f}")
    for seg in segs:
        if len(seg) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{_ACCURACY}" stroke-width="1.5" points="{" ".join(seg)}"/>'
            )
    for i, (layer, key, sep) in enumerate(points):
        if sep.accuracy is not None:
            yy = y(sep.accuracy)
            parts.append(f'<circle cx="{x(i):.1f}" cy="{yy:.1f}" r="3" fill="{_ACCURACY}"/>')
            if key == marked:
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{yy:.1f}" r="7" fill="none" stroke="#d62728" stroke-width="2"/>'
                )
        accuracy = "not computed" if sep.accuracy is None else f"{sep.accuracy:.3f}"
        fisher = "-" if sep.fisher is None else f"{sep.fisher:.4g}"
        tip = f"{key} ({layer.class_name})\naccuracy {accuracy} · chance {_fmt(sep.chance)} · Fisher {fisher}"
        if sep.note:
            tip += f"\n{sep.note}"
        parts.append(
            f'<rect x="{x(i) - step / 2:.1f}" y="{top}" width="{step:.1f}" height="{h}" '
            f'fill="transparent"><title>{text(tip, 600)}</title></rect>'
        )
    if labelled:
        for i, (_, key, _) in enumerate(points):
            parts.append(
                f'<text x="{x(i):.1f}" y="{top + h + 12}" text-anchor="end" '
                f'transform="rotate(-40 {x(i):.1f} {top + h + 12})">{text(key, 24)}</text>'
            )
    legend = [
        (_ACCURACY, "leave-one-out nearest-class-mean accuracy", ""),
        (_CHANCE, f"chance ({_fmt(chance)}: the largest class's share)", ' stroke-dasharray="5,4"'),
    ]
    lx = left
    for colour, label, dash in legend:
        parts.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="{height - 24}" y2="{height - 24}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{lx + 22}" y="{height - 20}">{html.escape(label)}</text>')
        lx += 300
    note = f"x: {n} layer outputs in graph order"
    if marked is not None:
        note += " · ring: the last hidden layer"
    parts.append(f'<text x="{left}" y="{height - 4}">{html.escape(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def projection_svg(p: Projection, classes: tuple[str, ...], *, size: int = 320) -> str:
    """Inline SVG: ``p``'s points coloured by class, with a legend of ``classes``."""
    if not p.points:
        return f'<p class="note">{text(p.note or "no points")}</p>'
    xs = [q[0] for q in p.points]
    ys = [q[1] for q in p.points]
    pad = 10
    lo_x, hi_x = min(xs), max(xs)
    lo_y, hi_y = min(ys), max(ys)
    span_x = (hi_x - lo_x) or 1.0
    span_y = (hi_y - lo_y) or 1.0
    rows = min(len(classes), 20)
    legend_w = 150
    height = max(size, 16 * rows + 2 * pad)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pca" width="{size + legend_w}" height="{height}" '
        f'viewBox="0 0 {size + legend_w} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="0.5" y="0.5" width="{size - 1}" height="{size - 1}" fill="#fff" stroke="#ddd"/>',
    ]
    for px, py, c in p.points:
        cx = pad + (px - lo_x) / span_x * (size - 2 * pad)
        cy = size - pad - (py - lo_y) / span_y * (size - 2 * pad)
        colour = CLASS_COLOURS[c % len(CLASS_COLOURS)]
        name = classes[c] if c < len(classes) else str(c)
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}" fill-opacity="0.8">'
            f"<title>{text(name)}</title></circle>"
        )
    for c in range(rows):
        yy = pad + 16 * c
        parts.append(
            f'<circle cx="{size + 14}" cy="{yy + 5}" r="4.5" fill="{CLASS_COLOURS[c % len(CLASS_COLOURS)]}"/>'
        )
        parts.append(f'<text x="{size + 24}" y="{yy + 9}">{text(classes[c], 24)}</text>')
    if len(classes) > rows:
        parts.append(f'<text x="{size + 10}" y="{pad + 16 * rows + 9}">... {len(classes) - rows} more</text>')
    parts.append("</svg>")
    return "".join(parts)


def separability_section(report: ModelReport, pictures: Pictures) -> str:
    """The page's ``separability`` section; empty without labels."""
    from .checks import last_hidden

    labels = report.labels
    if labels is None:
        return ""
    last = last_hidden(report)
    marked = None if last is None else tensor_key(*last)
    outputs = {layer.path: layer.outputs for layer in report.layers}
    figures = []
    for p in pictures.projections:
        explained = (
            ""
            if p.explained is None
            else f" · PCA axes hold {p.explained[0]:.0%} and {p.explained[1]:.0%} of the variance"
        )
        accuracy = "" if p.accuracy is None else f" · accuracy {p.accuracy:.2f}"
        name = text(p.path) if len(outputs.get(p.path, ())) <= 1 else f"{text(p.path)}:{text(p.tensor)}"
        figures.append(
            f'<figure class="projection"><figcaption>{name}{accuracy}{explained}'
            f"</figcaption>{projection_svg(p, labels.classes)}</figure>"
        )
    intro = (
        f"Labels: {len(labels.classes)} classes from {text(labels.source)}, {sum(labels.counts):,} samples. "
        "Each sample's vector is its output averaged over every axis but the batch and the last; "
        "accuracy is nearest-class-mean, leave-one-out (noise before the classifier: the problem lies "
        "before it; perfect separation early: something learned too quickly)."
    )
    return (
        f'<section id="separability"><h2>Separability of the classes along the depth</h2>'
        f'<p class="note">{intro}</p><div class="chart">{separability_chart(report, marked)}</div>'
        + (f'<h3>2-D projections (PCA)</h3><div class="grid">{"".join(figures)}</div>' if figures else "")
        + "</section>"
    )
