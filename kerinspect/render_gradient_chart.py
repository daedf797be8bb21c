"""The report page's gradient chart (``report --gradients``): inline SVG, stdlib only.

:func:`gradient_chart` draws the norm of the loss's gradient at every layer call's
output (log scale) on the x axis of the activation depth chart
(:func:`kerinspect.render_depth.depth_axis`: the same layer calls, the same names, the
same pixels), with the reference (the gradient reaching the output layer's input) and
the two thresholds drawn relative to it, the flagged outputs marked and the first one
from the output backwards (the one the verdict names) ringed. :func:`gradient_notes` is
the loss line and the verdict of ``kerinspect gradients``. Every name passes
:func:`~kerinspect.htmltext.text`.
"""

from __future__ import annotations

import html
import math

from .gradients import GradientOutput, GradientReport, Where
from .htmltext import text
from .numfmt import fmt_float
from .render_depth import depth_axis, depth_points
from .report import LayerRecord, ModelReport

_NORM = "#17becf"
_REFERENCE = "#555"
_VANISHING = "#ff7f0e"
_EXPLODING = "#d62728"
_BAND = {"vanishing-gradient": "#ffe0c2", "exploding-gradient": "#ffb3b3"}

#: The y axis reaches a threshold line at most this many decades beyond the data (an
#: extreme --vanishing-gradient would squash the data into a thin strip otherwise).
_THRESHOLD_DECADES = 3


def _gradient(report: GradientReport, path: str, name: str) -> GradientOutput | None:
    try:
        return report.output(path, name)
    except KeyError:
        return None


def _kind(out: GradientOutput | None) -> str | None:
    """The output's gradient flag (``vanishing-gradient``, ``exploding-gradient``) or None."""
    if out is None:
        return None
    return next((f for f in out.flags if f in _BAND), None)


def gradient_chart(report: ModelReport, gradients: GradientReport) -> str:
    """Inline SVG (``#ki-gradients``): see the module's docstring."""

    points = depth_points(report)
    if not points:
        return ""
    outs = [_gradient(gradients, layer.path, name) for layer, name, _ in points]
    norms = [o.gradient.norm if o is not None and o.gradient is not None else None for o in outs]
    shown = [v for v in norms if v is not None and math.isfinite(v) and v > 0]
    if not shown:
        return '<p class="note">No layer output has a non-zero gradient of the loss.</p>'
    axis = depth_axis([layer.path for layer, _, _ in points])
    left, right, top, h = axis.left, axis.right, 26, 200
    width, step, x = axis.width, axis.step, axis.x
    height = top + h + 6 + axis.label_room + 48
    ref = gradients.reference.norm
    vanish = gradients.thresholds.get("vanishing_gradient")
    explode = gradients.thresholds.get("exploding_gradient")
    lines = []  # (value, label, colour, dashed)
    if ref is not None and math.isfinite(ref) and ref > 0:
        lines.append((ref, "reference: the output layer's input", _REFERENCE, False))
        for limit, word, colour in (
            (vanish, "vanishing-gradient below", _VANISHING),
            (explode, "exploding-gradient above", _EXPLODING),
        ):
            if limit is not None and 0 < ref * limit < math.inf:
                lines.append((ref * limit, f"{word} {limit:g}×", colour, True))
    lo = math.floor(math.log10(min(shown)))
    hi = math.ceil(math.log10(max(shown)))
    for v, _, _, _ in lines:  # the lines in range, unless far from every point
        e = math.log10(v)
        if lo - _THRESHOLD_DECADES <= e <= hi + _THRESHOLD_DECADES:
            lo, hi = min(lo, math.floor(e)), max(hi, math.ceil(e))
    if hi <= lo:
        hi = lo + 1

    def y(v: float) -> float:
        return top + h * (hi - math.log10(v)) / (hi - lo)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="ki-gradients" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" style="display:block">'
    ]
    decades = max(1, math.ceil(12 * (hi - lo) / h))  # one label per 12 px at least
    for e in range(lo, hi + 1):
        yy = y(10.0**e)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        if (hi - e) % decades == 0:
            parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">1e{e}</text>')
    for i, o in enumerate(outs):  # flagged calls: a band, as the activation chart's
        kind = _kind(o)
        if kind is not None:
            parts.append(
                f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + h}" '
                f'stroke="{_BAND[kind]}" stroke-width="2"/>'
            )
    outside = []
    for v, label, colour, dashed in lines:
        if not 10.0**lo <= v <= 10.0**hi:
            outside.append(f"{label} ({'above' if v > 10.0**hi else 'below'} the chart)")
            continue
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        yy = y(v)
        parts.append(
            f'<line class="threshold" x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" '
            f'stroke="{colour}" stroke-width="1.2"{dash}/>'
        )
        parts.append(
            f'<text x="{width - right - 2}" y="{yy - 3:.1f}" text-anchor="end" fill="{colour}">'
            f"{html.escape(label)}</text>"
        )
    parts.append(
        f'<text x="{left}" y="{top - 10}" font-weight="bold">‖grad‖ of the loss at each output (log scale)</text>'
    )
    segs: list[list[str]] = [[]]
    for i, norm in enumerate(norms):
        if norm is None or not math.isfinite(norm) or norm <= 0:
            segs.append([])
            continue
        segs[-1].append(f"{x(i):.1f},{y(norm):.1f}")
    for seg in segs:
        if len(seg) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{_NORM}" stroke-width="1.5" points="{" ".join(seg)}"/>'
            )
    first = {_key(gradients.vanishing), _key(gradients.exploding)} - {None}
    for i, ((layer, name, _), o, norm) in enumerate(zip(points, outs, norms)):
        kind = _kind(o)
        if norm is not None and math.isfinite(norm) and norm > 0:
            colour = {None: _NORM, "vanishing-gradient": _VANISHING, "exploding-gradient": _EXPLODING}[kind]
            if _never_flagged(layer, name):  # hollow: the model's input and output
                cls, look = "point unflagged", f'r="3" fill="#fff" stroke="{_NORM}" stroke-width="1.5"'
            else:
                cls, look = (
                    f"point {kind}" if kind else "point",
                    f'r="{3.5 if kind else 2.5}" fill="{colour}"',
                )
            parts.append(f'<circle class="{cls}" cx="{x(i):.1f}" cy="{y(norm):.1f}" {look}/>')
            if (layer.path, name) in first:
                parts.append(
                    f'<circle class="first" cx="{x(i):.1f}" cy="{y(norm):.1f}" r="8" fill="none" '
                    f'stroke="{colour}" stroke-width="2"/>'
                )
        parts.append(
            f'<rect class="hover" x="{x(i) - step / 2:.1f}" y="{top}" width="{step:.1f}" height="{h}" '
            f'fill="transparent"><title>{_tip(layer.path, name, layer.class_name, o)}</title></rect>'
        )
    axis_y = top + h + 6
    for i, ((layer, _, _), o) in enumerate(zip(points, outs)):
        parts.append(axis.name(i, axis_y, layer.path, _kind(o) is not None))
    legend = [
        (_NORM, "‖grad‖ at each layer call's output"),
        (_VANISHING, "vanishing-gradient"),
        (_EXPLODING, "exploding-gradient"),
    ]
    lx = left
    for colour, label in legend:
        parts.append(f'<circle cx="{lx + 5}" cy="{height - 23}" r="4" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 14}" y="{height - 19}">{html.escape(label)}</text>')
        lx += 40 + 6 * len(label)
    parts.append(
        f'<circle cx="{lx + 5}" cy="{height - 23}" r="3.5" fill="#fff" stroke="{_NORM}" stroke-width="1.5"/>'
        f'<text x="{lx + 14}" y="{height - 19}">the model&#x27;s input and output: never flagged</text>'
    )
    note = (
        f"x: the {axis.n} layer calls of the chart above · ring: where gradients start to vanish or explode"
    )
    if outside:
        note += " · " + "; ".join(outside)
    parts.append(f'<text x="{left}" y="{height - 4}">{html.escape(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _never_flagged(layer: LayerRecord, name: str) -> bool:
    """The model's input and its output (the loss's own): shown, never flagged."""
    if layer.class_name == "InputLayer":
        return True
    return any(t.name == name and t.model_output for t in layer.outputs)


def _key(where: Where | None) -> tuple[str, str] | None:
    return None if where is None else (where.path, where.output)


def _tip(path: str, name: str, class_name: str, o: GradientOutput | None) -> str:
    """The hover text of one point, each line escaped, joined by a real line break."""
    head = text(f"{path}:{name} ({class_name})", 300)
    if o is None or o.gradient is None:
        return head + "&#10;no gradient: not a float output, or not on the loss's path"
    g = o.gradient
    line = (
        f"‖grad‖ {fmt_float(g.norm)} · ratio {fmt_float(g.ratio)} · RMS {fmt_float(g.rms)} · "
        f"max |g| {fmt_float(g.max_abs)} · NaN/Inf {g.nan}/{g.inf}"
    )
    flags = f"&#10;{text(', '.join(o.flags))}" if o.flags else ""
    return f"{head}&#10;{html.escape(line)}{flags}"


def gradient_notes(gradients: GradientReport) -> str:
    """The loss line and the verdict of ``kerinspect gradients``, as HTML."""
    from .render_gradients import loss_line

    flagged = gradients.vanishing is not None or gradients.exploding is not None
    verdict = "".join(
        f'<p class="verdict{" flagged" if flagged else ""}">{text(line, 600)}</p>'
        for line in gradients.verdict()
    )
    mode = "training mode" if gradients.training else "inference mode"
    return (
        f'<div id="ki-gradient-notes"><p class="note">Lower chart: the norm of the gradient of the loss '
        f"({mode}) at each layer call's output, with the reference (the gradient reaching the output "
        "layer's input) and the thresholds relative to it (see <code>kerinspect gradients</code>); "
        f"{text(loss_line(gradients), 600)}.</p>{verdict}</div>"
    )


__all__ = ["gradient_chart", "gradient_notes"]
