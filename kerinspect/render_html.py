"""``kerinspect report``: one self-contained, offline HTML page (stdlib only).

Everything is written here as text: the layer table as HTML, the depth chart and the
histograms as inline SVG, the pictures as PNG data URIs (:mod:`kerinspect.figures`),
the report as JSON in a ``<script type="application/json">`` block. No template
engine, no plotting library, no CDN, no web font. The page's Content-Security-Policy
forbids every load but ``data:`` images, and allows one script: the page's own,
by its SHA-256 (so even a name that escaped its escaping could not run a script).

Every untrusted string (layer names, paths, dtypes, notes: they come from the model
file) passes :func:`text`: control characters escaped and length bounded
(:func:`kerinspect.errors.escape_text`), then HTML-escaped, quotes included.

:func:`html_table` is the layer table alone (no script needed). In a notebook a report
shows its own plainer table (``ModelReport._repr_html_``, :mod:`kerinspect.tables`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Iterable
from typing import Any

from . import bins
from .errors import escape_text
from .figures import UNIFORM_SHARE, AttentionMap, FeatureMap, Pictures, ReportData, css_gradient, data_uri
from .htmltext import text
from .numfmt import fmt_float, fmt_fraction, fmt_mean
from .render_depth import depth_axis, depth_points
from .render_sample import SAMPLE_CSS, patch_overlay, sample_section, thumbnail
from .report import AttentionTokens, LayerRecord, ModelReport
from .words import MAX_TOKEN_CHARS, is_pad, token_label

#: Longest layer name written under the depth chart (the hover shows it whole).

#: Colours of the depth chart's series.
_SERIES = (
    ("abs_max", "max |x|", "#d62728"),
    ("std", "std", "#1f77b4"),
    ("mean", "|mean|", "#2ca02c"),
)

TABLE_CSS = """
.ki-table{border-collapse:collapse;font:12px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.ki-table th,.ki-table td{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
.ki-table th{background:#f4f4f4;position:sticky;top:0}
.ki-table td.l,.ki-table th.l{text-align:left}
.ki-table tr.flagged td{background:#fff1f0}
.ki-table tr.flagged td.flags{color:#b00020;font-weight:600}
.ki-table tr.container td.l:first-child{font-weight:600}
.ki-table tr.hidden{display:none}
.ki-table button.tg{border:0;background:none;cursor:pointer;padding:0 4px 0 0;font:inherit}
"""

PAGE_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fff}
header,section{padding:12px 24px}
header{background:#fafafa;border-bottom:1px solid #ddd}
h1{font-size:20px;margin:0 0 6px}
h2{font-size:17px;margin:18px 0 8px;border-bottom:1px solid #eee}
h3{font-size:14px;margin:14px 0 6px;font-family:ui-monospace,monospace}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0;font-size:13px}
dl.meta dt{color:#666}
dl.meta dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
.scroll{overflow:auto;max-height:70vh;border:1px solid #eee}
.chart{overflow-x:auto}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;font-size:11px;font-family:ui-monospace,monospace}
figure img{display:block;image-rendering:pixelated;border:1px solid #ccc}
.hist figcaption{max-width:260px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.scale{display:inline-block;width:120px;height:10px;vertical-align:middle;margin:0 6px}
.note{color:#666;font-size:12px}
.badge{background:#b45309;color:#fff;border-radius:3px;padding:0 5px;font-weight:bold}
.verdict{margin:4px 0;font-weight:600}
.verdict.flagged{color:#b00020}
code{font-family:ui-monospace,monospace}
"""

#: The page's one script: collapse nested blocks, filter rows by flag.
SCRIPT = """
(function(){
  var t=document.getElementById('ki-layers');if(!t)return;
  var rows=Array.prototype.slice.call(t.querySelectorAll('tbody tr'));
  var closed={};
  var sel=document.getElementById('ki-filter');
  function update(){
    var want=sel?sel.value:'';
    rows.forEach(function(r){
      var anc=(r.getAttribute('data-anc')||'').split(' ');
      var hide=anc.some(function(a){return a&&closed[a];});
      var flags=(r.getAttribute('data-flags')||'').split(' ');
      if(want==='*'&&!r.getAttribute('data-flags'))hide=true;
      if(want&&want!=='*'&&flags.indexOf(want)<0)hide=true;
      r.classList.toggle('hidden',hide);
    });
  }
  t.addEventListener('click',function(e){
    var b=e.target.closest('button.tg');if(!b)return;
    var id=b.getAttribute('data-id');closed[id]=!closed[id];
    b.textContent=closed[id]?'\\u25b8':'\\u25be';update();
  });
  if(sel)sel.addEventListener('change',update);
  document.body.setAttribute('data-ready','1');
  window.addEventListener('load',function(){
    var out=[];
    [['table','#ki-layers'],['depth','#ki-depth'],['gradients','#ki-gradients'],['histogram','#ki-histograms svg'],
     ['heatmap','svg.heat'],['featuremap','figure.fmap img'],['input','figure.input img'],['patches','figure.patches img.heat']].forEach(function(p){
      var e=document.querySelector(p[1]);var r=e?e.getBoundingClientRect():{width:0,height:0};
      out.push(p[0]+':'+Math.round(r.width)+'x'+Math.round(r.height));
    });
    document.body.setAttribute('data-rendered',out.join(' '));
  });
})();
"""


def script_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>``
    or ``&`` (so no ``</script>`` or ``<!--``), ASCII only (no U+2028)."""
    raw = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


# -- the layer table ----------------------------------------------------------------


def _ancestors(report: ModelReport) -> list[list[int]]:
    """Per layer call, the indices of the container calls it is nested in."""
    index = {layer.path: i for i, layer in enumerate(report.layers) if layer.container}
    out = []
    for layer in report.layers:
        chain: list[int] = []
        parent = layer.parent
        while parent is not None and parent in index and index[parent] not in chain:
            chain.append(index[parent])
            parent = report.layers[index[parent]].parent
        out.append(chain)
    return out


def html_table(report: ModelReport, *, table_id: str = "ki-layers", style: bool = True) -> str:
    """The layer table as ``summary`` shows it (one row per output tensor), as an HTML
    fragment: flagged rows highlighted, nested rows indented, with its own ``<style>``
    (``style=False``: without). Needs no script; :func:`render_report` adds collapsing
    and the flag filter."""
    from .render import columns_of, rows

    columns = columns_of(report)  # with Sep when the run had labels
    ancestors = _ancestors(report)
    position = {id(layer): i for i, layer in enumerate(report.layers)}
    head = "".join(
        f'<th class="{"l" if c in ("Layer", "Class", "Output shape", "Flags") else ""}">{html.escape(c)}</th>'
        for c in columns
    )
    body = []
    seen_toggle: set[int] = set()
    for layer, out, cells in rows(report):
        i = position[id(layer)]
        flags = out.flags if out is not None else ()
        classes = [c for c in ("flagged" if flags else "", "container" if layer.container else "") if c]
        toggle = ""
        if layer.container and i not in seen_toggle:
            seen_toggle.add(i)
            toggle = f'<button class="tg" data-id="{i}" title="collapse">\u25be</button>'
        tds = []
        for col, cell in zip(columns, cells):
            if col == "Layer":
                pad = 12 * layer.depth
                tds.append(
                    f'<td class="l" style="padding-left:{pad + 8}px">{toggle}{html.escape(cell.strip())}</td>'
                )
            elif col in ("Class", "Output shape"):
                tds.append(f'<td class="l">{html.escape(cell)}</td>')
            elif col == "Flags":
                tds.append(f'<td class="l flags">{html.escape(cell)}</td>')
            else:
                tds.append(f"<td>{html.escape(cell)}</td>")
        attrs = f' data-anc="{" ".join(str(a) for a in ancestors[i])}"'
        if flags:
            attrs += f' data-flags="{text(" ".join(flags))}"'
        if classes:
            attrs += f' class="{" ".join(classes)}"'
        body.append(f"<tr{attrs}>{''.join(tds)}</tr>")
    css = f"<style>{TABLE_CSS}</style>" if style else ""
    return (
        f'{css}<table class="ki-table" id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


# -- the depth chart -----------------------------------------------------------------


def depth_chart(report: ModelReport) -> str:
    """Inline SVG: max |x|, std and |mean| (log scale) and the zero fraction (linear)
    of every layer call, in graph order; flagged calls marked in red."""
    points = depth_points(report)
    n = len(points)
    if not n:
        return '<p class="note">No layer output with numeric statistics.</p>'
    axis = depth_axis([layer.path for layer, _, _ in points])
    left, right, top = axis.left, axis.right, 14
    step, width, every, x = axis.step, axis.width, axis.every, axis.x
    h1, gap, h2 = 220, 36, 80
    height = top + h1 + gap + h2 + axis.label_room + 40
    values = [
        abs(v)
        for _, _, s in points
        for v in (s.abs_max, s.std, s.mean)
        if v is not None and math.isfinite(v) and v != 0
    ]
    lo = math.floor(math.log10(min(values))) if values else -1
    hi = math.ceil(math.log10(max(values))) if values else 1
    if hi <= lo:
        hi = lo + 1

    def y_log(v: float) -> float:
        return top + h1 * (hi - math.log10(v)) / (hi - lo)

    def y_zero(f: float) -> float:
        return top + h1 + gap + h2 * (1 - f)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="ki-depth" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
    ]
    decades = max(1, math.ceil(12 * (hi - lo) / h1))  # one label per 12 px at least
    for e in range(lo, hi + 1):  # decades
        yy = y_log(10.0**e)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        if (hi - e) % decades == 0:
            parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">1e{e}</text>')
    for f in (0.0, 0.5, 1.0):
        yy = y_zero(f)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{int(f * 100)}%</text>')
    parts.append(f'<text x="4" y="{top + h1 + gap - 8}">zero fraction</text>')
    for i, (layer, _, _) in enumerate(points):
        flagged = any(t.flags for t in layer.outputs)
        if flagged:
            parts.append(
                f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + h1 + gap + h2}" '
                'stroke="#ffb3b3" stroke-width="2"/>'
            )
    for key, _, colour in _SERIES:
        segs: list[list[str]] = [[]]
        for i, (_, _, s) in enumerate(points):
            v = getattr(s, key)
            if v is None or not math.isfinite(v) or v == 0:
                segs.append([])
                continue
            segs[-1].append(f"{x(i):.1f},{y_log(abs(v)):.1f}")
        for seg in segs:
            if len(seg) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(seg)}"/>'
                )
            elif seg:
                xs, ys = seg[0].split(",")
                parts.append(f'<circle cx="{xs}" cy="{ys}" r="2" fill="{colour}"/>')
    zeros = [
        f"{x(i):.1f},{y_zero(s.zero_fraction):.1f}"
        for i, (_, _, s) in enumerate(points)
        if s.zero_fraction is not None
    ]
    if zeros:
        parts.append(
            f'<polyline fill="none" stroke="#9467bd" stroke-width="1.5" points="{" ".join(zeros)}"/>'
        )
    axis_y = top + h1 + gap + h2 + 6
    for i, (layer, name, s) in enumerate(points):  # hover targets, and the names on the axis
        # each line escaped on its own, joined by a real line break (an escaped one shows as "\n")
        tip = "&#10;".join(
            (
                text(f"{layer.path}:{name} ({layer.class_name})", 300),
                f"mean {fmt_mean(s)} · std {fmt_float(s.std)} · max|x| {fmt_float(s.abs_max)} · "
                f"zeros {fmt_fraction(s.zero_fraction)}",
            )
        )
        parts.append(
            f'<rect class="hover" x="{x(i) - step / 2:.1f}" y="{top}" width="{step:.1f}" height="{h1 + gap + h2}" '
            f'fill="transparent"><title>{tip}</title></rect>'
        )
        parts.append(axis.name(i, axis_y, layer.path, any(t.flags for t in layer.outputs)))
    legend_x = left
    for _, label, colour in (*_SERIES, ("zero_fraction", "zero fraction", "#9467bd")):
        parts.append(f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{height - 5}">{html.escape(label)}</text>')
        legend_x += 110
    parts.append(
        f'<text x="{legend_x}" y="{height - 5}" fill="#c00">red: flagged layer call · x: {n} layer calls in graph order'
        + (f", 1 in {every} named" if every > 1 else "")
        + "</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


# -- histograms ----------------------------------------------------------------------


def _edge(v: float) -> str:
    if v == 0:
        return "0"
    if math.isinf(v):
        return "-inf" if v < 0 else "inf"
    return f"{v:.2g}"


def histogram_svg(counts: tuple[int, ...], *, width: int = 240, height: int = 56) -> str:
    """Inline SVG bars of one histogram (:mod:`kerinspect.bins`), from its first to its
    last non-empty bin (the zero bin always shown, marked)."""
    nonzero = [i for i, c in enumerate(counts) if c]
    if not nonzero:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'
    first, last = min(nonzero[0], bins.ZERO), max(nonzero[-1], bins.ZERO)
    shown = counts[first : last + 1]
    top = max(shown)
    bar = width / len(shown)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="h" width="{width}" height="{height + 14}" '
        f'viewBox="0 0 {width} {height + 14}" font-family="sans-serif" font-size="9">'
    ]
    for k, c in enumerate(shown):
        index = first + k
        low, high = bins.bin_range(index)
        colour = "#888" if index == bins.ZERO else ("#1f77b4" if index > bins.ZERO else "#ff7f0e")
        h = 0 if not c else max(1.0, height * c / top)
        label = "exactly 0" if index == bins.ZERO else f"[{_edge(low)}, {_edge(high)})"
        parts.append(
            f'<rect x="{k * bar:.2f}" y="{height - h:.2f}" width="{max(bar - 0.5, 0.5):.2f}" height="{h:.2f}" '
            f'fill="{colour}"><title>{label}: {c:,}</title></rect>'
        )
    low, _ = bins.bin_range(first)
    _, high = bins.bin_range(last)
    zx = (bins.ZERO - first + 0.5) * bar
    parts.append(
        f'<line x1="{zx:.1f}" x2="{zx:.1f}" y1="0" y2="{height}" stroke="#bbb" stroke-dasharray="2,2"/>'
    )
    parts.append(f'<text x="0" y="{height + 11}">{_edge(low if first != bins.ZERO else 0.0)}</text>')
    parts.append(f'<text x="{zx:.1f}" y="{height + 11}" text-anchor="middle">0</text>')
    parts.append(
        f'<text x="{width}" y="{height + 11}" text-anchor="end">{_edge(high if last != bins.ZERO else 0.0)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _histograms(report: ModelReport) -> str:
    figures = []
    for layer in report.layers:
        if layer.container:
            continue
        for t in layer.outputs:
            if t.stats is None or t.stats.histogram is None:
                continue
            name = layer.path + (f":{t.name}" if len(layer.outputs) > 1 else "")
            flagged = " flagged" if t.flags else ""
            figures.append(
                f'<figure class="hist{flagged}">{histogram_svg(t.stats.histogram)}'
                f'<figcaption title="{text(name)}">{text(name)}</figcaption></figure>'
            )
    if not figures:
        return '<p class="note">No histograms in this report.</p>'
    return f'<div class="grid" id="ki-histograms">{"".join(figures)}</div>'


# -- pictures ------------------------------------------------------------------------


def _feature_map(m: FeatureMap) -> str:
    scale = (
        f'<span class="note">{fmt_float(m.low)}<span class="scale" style="background:{css_gradient()}"></span>'
        f"{fmt_float(m.high)}</span>"
    )
    title = f"{text(m.path)}:{text(m.tensor)} ({text(m.class_name)}) · sample shape ({', '.join(map(str, m.shape))})"
    figs = []
    for image in m.images:
        if m.kind == "grid":
            side = 96
            w, h = side, max(1, round(side * image.height / image.width))
        else:
            w = min(900, max(image.width * 4, 300))
            h = min(400, max(image.height * 6, 24))
        figs.append(
            f'<figure class="fmap"><img src="{data_uri(image)}" width="{w}" height="{h}" alt="{text(image.label)}">'
            f"<figcaption>{text(image.label)}</figcaption></figure>"
        )
    what = (
        f"top {len(m.images)} channels by variance, one colour scale"
        if m.kind == "grid"
        else "one row per channel (top by variance), time left to right"
    )
    return f'<h3>{title}</h3><p class="note">{what}: {scale}</p><div class="grid">{"".join(figs)}</div>'


def _ticks(
    tokens: tuple[int, ...] | None, words: tuple[str, ...] | None, pad: str | None, n: int, step: int
) -> list[tuple[int, str, bool]]:
    """Axis labels ``(cell, label, padding)``, each label escaped for one line (HTML
    escaping is the caller's): the word (or else the token id, else the position) at the
    start of every labelled cell (at most ~32 ids; up to 64 words)."""
    every = max(1, math.ceil(n / (64 if words is not None else 32)))
    out = []
    for cell in range(0, n, every):
        position = cell * step
        if words is not None and position < len(words):
            out.append((cell, token_label(words[position], pad), is_pad(words[position], pad)))
        elif tokens is not None and position < len(tokens):
            out.append((cell, str(tokens[position]), False))
        else:
            out.append((cell, str(position), False))
    return out


def _heatmap(a: AttentionMap, k: int, words: AttentionTokens | None) -> str:
    image = a.images[k]
    cell = max(2, min(16, 320 // max(image.width, image.height)))
    w, h = image.width * cell, image.height * cell
    pad = words.pad if words is not None else None
    keys = _ticks(a.key_tokens, words.key if words else None, pad, image.width, a.step_k)
    queries = _ticks(a.query_tokens, words.query if words else None, pad, image.height, a.step_q)
    longest = max((len(label) for _, label, _ in (*keys, *queries)), default=2)
    left = top = max(44, 10 + round(5.6 * min(longest, MAX_TOKEN_CHARS)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="heat" width="{left + w + 4}" height="{top + h + 4}" '
        f'font-family="ui-monospace,monospace" font-size="9">'
        f'<image href="{data_uri(image)}" x="{left}" y="{top}" width="{w}" height="{h}" '
        'preserveAspectRatio="none" style="image-rendering:pixelated"/>'
    ]
    grey = ' fill="#999" font-style="italic"'
    for c, label, padding in keys:
        cx = left + (c + 0.5) * cell + 3
        parts.append(
            f'<text class="key{" pad" if padding else ""}"{grey if padding else ""} transform="translate({cx:.1f},{top - 4}) rotate(-90)">'
            f"{html.escape(label, quote=True)}</text>"
        )
    for r, label, padding in queries:
        cy = top + (r + 0.5) * cell + 3
        parts.append(
            f'<text class="query{" pad" if padding else ""}"{grey if padding else ""} x="{left - 4}" y="{cy:.1f}" text-anchor="end">'
            f"{html.escape(label, quote=True)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _attention(a: AttentionMap, layer: LayerRecord | None) -> str:
    stats: dict[int, Any] = {}
    words = None
    if layer is not None and layer.attention is not None:
        stats = {h.head: h for h in layer.attention.heads}
        words = layer.attention.tokens
    pooled = ""
    if a.step_q > 1 or a.step_k > 1:
        pooled = f" · pooled by {a.step_q} queries x {a.step_k} keys (keys summed, queries averaged)"
    if words is not None and (words.query is not None or words.key is not None):
        axes = f"words of sample {words.sample} ({text(words.vocabulary)}; padding grey)"
    else:
        axes = "token ids" if a.query_tokens is not None or a.key_tokens is not None else "positions"
    if words is not None and words.reason:
        axes += f" · positions shown: {text(words.reason, 300)}"
    top = a.scale if a.scale is not None else max((image.value or 0.0 for image in a.images), default=0.0)
    figs = []
    for k, image in enumerate(a.images):
        h = stats.get(image.index)
        detail = ""
        if h is not None:
            detail = (
                f"entropy {fmt_float(h.entropy)} · max weight {fmt_float(h.max_weight)} · sink {fmt_float(h.sink)}"
                + (f" · diagonal {fmt_float(h.diagonal)}" if h.diagonal is not None else "")
                + (f" · <b>{text(','.join(h.flags))}</b>" if h.flags else "")
            )
        figs.append(
            f'<figure class="att">{_heatmap(a, k, words)}<figcaption>head {image.index} · '
            f'<span class="hmax">max {fmt_float(image.value)}</span><br>{detail}</figcaption></figure>'
        )
    return (
        f"<h3>{text(a.path)} ({text(a.class_name)})</h3>"
        f'<p class="note">{a.heads} heads · {a.queries} queries (rows) x {a.keys} keys (columns) · '
        f"axes: {axes}{pooled} · probabilities {text(a.source)}<br>"
        f'colour: 0<span class="scale" style="background:{css_gradient()}"></span>{fmt_float(top)}, '
        f"one scale for the layer's heads (its top at least {UNIFORM_SHARE:g}x a uniform weight: "
        "a uniform head is dark)</p>"
        f'<div class="grid">{"".join(figs)}</div>'
    )


# -- the page ------------------------------------------------------------------------


def _meta(rows: Iterable[tuple[str, str]]) -> str:
    return '<dl class="meta">' + "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _header(data: ReportData, command: str | None, version: str) -> str:
    r = data.report
    m = r.model
    inputs = "<br>".join(
        f"{text(i.name)}: {text(i.dtype)} ({', '.join(map(str, i.shape))}) · "
        + (f"synthetic, seed={i.seed}" if i.source == "synthetic" else f"from {text(i.source)}")
        + ((": " if i.source == "synthetic" else "; ") + text(i.note) if i.note else "")
        for i in r.inputs
    )
    if any(i.source == "synthetic" for i in r.inputs):  # the figures below are not of the user's data
        inputs = (
            '<span class="badge" title="no --input: drawn from what the model knows about its data">'
            "synthetic inputs</span> not your data; give it with <code>--input</code><br>" + inputs
        )
    rows = [
        ("model", f"{text(m.name)} ({text(m.class_name)}) · {m.params:,} parameters"),
        ("file", text(m.path or "(in memory)", 500)),
        ("SHA-256", text(data.sha256 or "-")),
        ("format", f"{text(m.format)} · loader {text(m.loader)}"),
        (
            "versions",
            f"Keras {text(m.keras_version)} · TensorFlow {text(data.pictures.tensorflow_version or '-')} · "
            f"kerinspect {text(version)}",
        ),
        ("inputs", inputs or "-"),
        (
            "run",
            f"{r.samples} samples in batches of {r.batch_size} · pictures of sample {data.pictures.sample}",
        ),
    ]
    if command:
        rows.append(("command", text(command, 2000)))
    for note in m.notes:
        rows.append(("note", text(note)))
    return f"<header><h1>kerinspect report: {text(m.name)}</h1>{_meta(rows)}</header>"


def _flag_filter(report: ModelReport) -> str:
    flags = sorted({f for layer in report.layers for t in layer.outputs for f in t.flags})
    options = '<option value="">all rows</option><option value="*">flagged rows</option>' + "".join(
        f'<option value="{text(f)}">{text(f)}</option>' for f in flags
    )
    return f'<label>Show <select id="ki-filter">{options}</select></label>'


def _depth_section(data: ReportData) -> str:
    """Health along the depth: the activations' chart and, with the gradient report,
    the gradients' on the same x axis, under it in the same scrolling box."""
    chart = depth_chart(data.report)
    if data.gradients is None:
        return (
            f'<section id="depth"><h2>Health along the depth</h2><div class="chart">{chart}</div></section>'
        )
    from .render_gradient_chart import gradient_chart, gradient_notes

    return (
        f'<section id="depth"><h2>Health along the depth</h2>'
        f'<div class="chart">{chart}{gradient_chart(data.report, data.gradients)}</div>'
        f"{gradient_notes(data.gradients)}</section>"
    )


def render_report(data: ReportData, *, command: str | None = None) -> str:
    """The whole page (see the module's docstring)."""
    from . import __version__
    from .render import footer_line
    from .render_separability import separability_section

    report: ModelReport = data.report
    pictures: Pictures = data.pictures
    by_path = {layer.path: layer for layer in report.layers}
    attention = patch_overlay(pictures) + (
        "".join(_attention(a, by_path.get(a.path)) for a in pictures.attention)
        or '<p class="note">No attention layer, or no probabilities captured.</p>'
    )
    maps = (
        "".join(_feature_map(m) for m in pictures.feature_maps)
        or '<p class="note">No convolution or sequence output to draw.</p>'
    )
    embedded = {
        "report": report.to_dict(),
        "file": {"sha256": data.sha256},
        "command": command,
        "sample": pictures.sample,
        "tensorflow_version": pictures.tensorflow_version,
        "inputs": [i.to_dict() for i in pictures.inputs],
        # the first classifier output's top classes of the shown sample; all of them below
        "predictions": pictures.predictions[0].ranked() if pictures.predictions else [],
        "classifier_outputs": [p.to_dict() for p in pictures.predictions],
        "patch_attention": [p.to_dict() for p in pictures.patches],
    }
    if data.gradients is not None:
        embedded["gradients"] = data.gradients.to_dict()
    title = f"kerinspect report: {escape_text(report.model.name, limit=200)}"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_csp()}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}{TABLE_CSS}{SAMPLE_CSS}</style></head><body>"
        f"{_header(data, command, __version__)}"
        f"{sample_section(pictures)}"
        f'<section id="layers"><h2>Layers</h2><p>{_flag_filter(report)} '
        f'<span class="note">{text(footer_line(report), 600)}</span></p>'
        f'<div class="scroll">{html_table(report, style=False)}</div></section>'
        f"{_depth_section(data)}"
        f"{separability_section(report, pictures)}"
        f'<section id="histograms"><h2>Value histograms</h2><p class="note">Per layer output: signed '
        "log-magnitude bins, two per octave, and an exact-zero bin (grey); negative values orange, "
        f"positive blue; counts over all samples.</p>{_histograms(report)}</section>"
        f'<section id="attention"><h2>Attention (sample {pictures.sample})</h2>{attention}</section>'
        f'<section id="feature-maps"><h2>Feature maps (sample {pictures.sample})</h2>'
        f"{thumbnail(pictures) if pictures.feature_maps else ''}{maps}</section>"
        f'<script type="application/json" id="kerinspect-report">{script_json(embedded)}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
