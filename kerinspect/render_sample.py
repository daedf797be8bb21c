"""The shown sample of ``kerinspect report``: its inputs beside what each classifier
output said of it, and a ViT's attention over the image's patches (stdlib only; the
pictures come checked from :mod:`kerinspect.figures`, every untrusted string passes
:func:`kerinspect.htmltext.text`)."""

from __future__ import annotations

from .figures import PatchAttention, Pictures, Prediction, ShownInput, css_gradient, data_uri
from .htmltext import text
from .numfmt import fmt_float

SAMPLE_CSS = """
.sample{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table.top{border-collapse:collapse;font:12px/1.4 ui-monospace,monospace}
table.top td,table.top th{padding:1px 8px;text-align:left;white-space:nowrap}
table.top td.p{text-align:right}
.overlay{position:relative;display:inline-block}
.overlay img{display:block}
.overlay img.heat{position:absolute;left:0;top:0;opacity:.55;border-color:transparent}
.bar{display:inline-block;height:9px;background:#1f77b4;vertical-align:middle}
blockquote.text{margin:0;max-width:640px;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}
"""

#: Longest side, in CSS pixels, an input image is drawn at (small images are scaled
#: up by whole factors, pixelated; larger ones drawn at their own size up to this).
INPUT_SIDE = 224


def token_labels(tokens: tuple[int, ...]) -> list[str]:
    """How token ids are shown (as the ids; the one place to substitute words)."""
    return [str(t) for t in tokens]


def _input_figure(shown: ShownInput, side: int = INPUT_SIDE) -> str:
    if shown.image is not None:
        image = shown.image
        longest = max(image.width, image.height)
        scale = max(1, side // longest) if longest < side else side / longest
        w, h = round(image.width * scale), round(image.height * scale)
        shape = " x ".join(map(str, shown.shape))
        return (
            f'<figure class="input"><img src="{data_uri(image)}" width="{w}" height="{h}" '
            f'alt="input {text(shown.name)}"><figcaption>{text(shown.name)} ({shape})<br>'
            f'<span class="note">{text(shown.mapping)}</span></figcaption></figure>'
        )
    if shown.text is not None:
        body = text(shown.text, 2000)
    else:
        body = " ".join(text(t, 40) for t in token_labels(shown.tokens or ()))
        body = f"token ids: {body}"
    return f'<figure class="input"><blockquote class="text">{body}</blockquote><figcaption>{text(shown.name)}</figcaption></figure>'


_KINDS = {
    "probabilities": "the model's probabilities",
    "sigmoid": "sigmoid outputs: independent probabilities, they need not sum to 1",
    "logits": "logits: softmax applied here",
}


def _label(cls: int, name: str | None) -> str:
    return f"{cls} {text(name, 60)}" if name is not None and name != str(cls) else str(cls)


def _predictions(p: Prediction) -> str:
    rows = "".join(
        f"<tr><td>{cls}</td><td>{text(name, 60) if name is not None else '-'}</td>"
        f'<td class="p">{prob:.4f}</td><td><span class="bar" style="width:{max(1, round(prob * 120))}px">'
        "</span></td></tr>"
        for cls, name, prob in p.top
    )
    names = {"class_names": "names from --class-names", "labels": "names: the image folders' labels"}
    counts = ", ".join(f"{_label(c, n)}: {k}" for c, n, k in p.top1_counts)
    summary = f"top-1 over {p.samples} samples: {counts}"
    if p.accuracy is not None:
        summary += f" · top-1 accuracy {p.accuracy:.1%} ({p.correct} of {p.labelled} labelled samples)"
    return (
        f'<div class="pred"><h3>{text(p.path)}:{text(p.output)} · {p.classes} classes</h3>'
        f'<p class="note">{_KINDS.get(p.kind, text(p.kind))}'
        + (f" · {names[p.names_from]}" if p.names_from in names else "")
        + "</p>"
        + f'<table class="top"><tr><th>class</th><th>name</th><th>probability</th><th></th></tr>{rows}</table>'
        f'<p class="note">{summary}</p></div>'
    )


def sample_section(pictures: Pictures) -> str:
    """The shown sample's inputs beside what each classifier output said of it."""
    if not pictures.inputs and not pictures.predictions:
        return ""
    parts = "".join(_input_figure(i) for i in pictures.inputs)
    parts += "".join(_predictions(p) for p in pictures.predictions)
    return (
        f'<section id="sample"><h2>Sample {pictures.sample}: input and predictions</h2>'
        f'<div class="sample">{parts}</div></section>'
    )


def patch_overlay(pictures: Pictures) -> str:
    """The last attention layer over the image's patch grid, as a translucent heatmap
    over the shown image (a ViT); every layer's grid is in the embedded JSON."""
    image = next((i for i in pictures.inputs if i.image is not None), None)
    if image is None or image.image is None or not pictures.patches:
        return ""
    last: PatchAttention = pictures.patches[-1]
    base = image.image
    longest = max(base.width, base.height)
    scale = max(1, INPUT_SIDE // longest) if longest < INPUT_SIDE else INPUT_SIDE / longest
    w, h = round(base.width * scale), round(base.height * scale)
    rows, cols = last.grid
    return (
        f"<h3>{text(last.path)} ({text(last.class_name)}) over the image's {rows} x {cols} patches</h3>"
        f'<p class="note">{text(last.what)} ({last.patch} x {last.patch} pixels a patch'
        + (", class token first" if last.class_token else "")
        + f"), colour 0 to {fmt_float(last.max)} "
        f'<span class="scale" style="background:{css_gradient()}"></span>; the last of '
        f"{len(pictures.patches)} such attention layer calls (all are in the JSON: "
        "<code>patch_attention</code>)</p>"
        f'<figure class="patches"><div class="overlay"><img src="{data_uri(base)}" width="{w}" height="{h}" '
        f'alt="input"><img class="heat" src="{data_uri(last.image)}" width="{w}" height="{h}" '
        'alt="attention over the patches"></div></figure>'
    )


def thumbnail(pictures: Pictures) -> str:
    """The shown image, small, beside the feature maps."""
    image = next((i for i in pictures.inputs if i.image is not None), None)
    if image is None:
        return ""
    top = next((p.top[0] for p in pictures.predictions if p.top), None)
    said = f"<br>predicted {_label(top[0], top[1])} ({top[2]:.2f})" if top is not None else ""
    return f'<div class="grid">{_input_figure(image, 96).replace("</figcaption>", said + "</figcaption>", 1)}</div>'


__all__ = ["INPUT_SIDE", "SAMPLE_CSS", "patch_overlay", "sample_section", "thumbnail", "token_labels"]
