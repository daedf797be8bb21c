"""The x axis the report's depth charts share (the activations', the gradients'): one
point per layer call in graph order, its names under the axis, so charts drawn one above
the other line up (:mod:`kerinspect.render_html`, :mod:`kerinspect.render_gradient_chart`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .htmltext import text
from .report import LayerRecord, ModelReport, TensorStats

_AXIS_NAME_CHARS = 28


def depth_points(report: ModelReport) -> list[tuple[LayerRecord, str, TensorStats]]:
    """One point per layer call (its first output with statistics), containers and
    inputs left out, in graph order: the x axis of the depth charts."""
    out = []
    for layer in report.layers:
        if layer.container:
            continue
        for t in layer.outputs:
            if t.stats is not None and t.stats.count and t.stats.mean is not None:
                out.append((layer, t.name, t.stats))
                break
    return out


@dataclass(frozen=True)
class DepthAxis:
    """The x axis of the depth charts (the activations', the gradients'): ``n`` layer
    calls ``step`` px apart from ``left``, one in ``every`` named under the axis, in
    ``label_room`` px; charts on one axis line up when drawn one above the other."""

    n: int
    left: int
    right: int
    step: float
    width: int
    every: int
    label_room: int

    def x(self, i: int) -> float:
        return self.left + self.step * i

    def name(self, i: int, y: float, path: str, red: bool) -> str:
        """The layer name under the axis at point ``i`` (empty where none is written)."""
        if i % self.every:
            return ""
        fill = ' fill="#c00"' if red else ""
        return (
            f'<text class="layer-name"{fill} text-anchor="end" font-size="10" '
            f'transform="translate({self.x(i) + 3:.1f},{y}) rotate(-60)">'
            f"{text(path, _AXIS_NAME_CHARS)}<title>{text(path, 300)}</title></text>"
        )


def depth_axis(paths: list[str]) -> DepthAxis:
    """The axis of the layer calls ``paths`` (not empty), in graph order."""
    n = len(paths)
    left, right = 64, 16
    # 24 px a call, spread over the chart's 900 px when few; 1100 px in all when many
    step = max(4.0, min(1100 / n, max(24.0, (900 - left - right) / max(n - 1, 1))))
    width = max(900, int(left + right + step * max(n - 1, 1)))
    every = max(1, math.ceil(12 / step))  # one name per 12 px at least: no overlap
    # the names are rotated by 60 degrees: about 4 px of height a character
    label_room = 10 + round(3.9 * min(max(len(p) for p in paths), _AXIS_NAME_CHARS))
    return DepthAxis(n, left, right, step, width, every, label_room)
