"""The pictures of a report, checked and encoded in the parent (stdlib only).

The worker (:mod:`kerinspect.engine.pictures`) sends each picture as bytes 0-255
(base64), row-major, with its size and value range. Here they are checked (the
worker runs model code: what it sends is data to verify, not to trust) and turned
into PNG files with a colour palette, written with ``zlib`` and ``struct``: no
numpy, no imaging library.

Schema of the worker's ``pictures``::

    {"sample": int, "tensorflow_version": str,
     "feature_maps": [{"path", "tensor", "class_name": str, "kind": "grid" | "strip",
                       "shape": [int...], "low": float, "high": float,
                       "images": [{"label": str, "channel": int, "variance": float,
                                   "height": int, "width": int, "pixels": base64}]}],
     "attention": [{"path", "class_name", "source": str, "heads", "queries", "keys",
                    "step_q", "step_k": int, "query_tokens", "key_tokens": [int] | None,
                    "scale": float (the top of the colour scale every head shares),
                    "images": [{"head": int, "height", "width": int, "max": float,
                                "pixels": base64}]}],
     "inputs": [{"name": str, "kind": "image", "shape": [int...], "height", "width",
                 "channels": int (1 or 3), "mapping": str, "pixels": base64 (H x W x C)}
                | {"name", "kind": "text", "text": str}
                | {"name", "kind": "tokens", "tokens": [int]}],
     "predictions": [{"path", "output": str, "kind": "probabilities" | "sigmoid" | "logits",
                      "activation": str | None, "classes": int, "names_from": str | None,
                      "top": [{"class": int, "name": str | None, "probability": float}],
                      "top1_counts": [{"class": int, "name": str | None, "count": int}],
                      "samples", "labelled", "correct": int}],

     "patches": [{"path", "class_name", "what": str, "grid": [rows, cols], "patch": int,
                  "class_token": bool, "max": float, "weights": [[float]],
                  "height", "width": int, "pixels": base64}],
     "projections": [{"path", "tensor": str, "accuracy": float | None,
                      "explained": [float, float] | None, "note": str (optional),
                      "points": [[x: float, y: float, class index: int]...]}]}

(``inputs``, ``predictions``, ``patches`` and ``projections`` are read as empty when absent.)

``projections`` (a run with labels) are 2-D PCA projections of layer outputs
(:func:`kerinspect.engine.pictures.projections`), at most
:data:`MAX_PROJECTED_POINTS` points each; the class indices index the report's
``labels.classes``.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

#: The attention colour scale reaches at least this many times a uniform weight (1 /
#: keys), so that a uniform head is drawn dark (:func:`kerinspect.engine.pictures.attention_picture`).
UNIFORM_SHARE = 4.0

#: Largest side of any picture the parent accepts.
MAX_SIDE = 1024

#: Anchor colours of the palette (viridis, sampled), interpolated to 256 entries.
_VIRIDIS = (
    (68, 1, 84),
    (72, 40, 120),
    (62, 74, 137),
    (49, 104, 142),
    (38, 130, 142),
    (31, 158, 137),
    (53, 183, 121),
    (109, 205, 89),
    (180, 222, 44),
    (253, 231, 37),
)


def palette() -> list[tuple[int, int, int]]:
    """256 RGB colours from dark (0) to bright (255)."""
    out = []
    n = len(_VIRIDIS) - 1
    for i in range(256):
        pos = i / 255 * n
        k = min(int(pos), n - 1)
        f = pos - k
        a, b = _VIRIDIS[k], _VIRIDIS[k + 1]
        out.append(tuple(round(a[c] + (b[c] - a[c]) * f) for c in range(3)))
    return out  # type: ignore[return-value]


_PALETTE = palette()


def css_gradient() -> str:
    """The palette as a CSS ``linear-gradient`` (for colour scale bars)."""
    stops = ", ".join(f"rgb{c}" for c in _VIRIDIS)
    return f"linear-gradient(to right, {stops})"


def png(width: int, height: int, pixels: bytes, channels: int = 0) -> bytes:
    """A PNG of ``height`` rows of ``width`` pixels: palette indices into :func:`palette`
    (``channels`` 0, one byte a pixel), grey levels (1) or RGB (3 bytes a pixel)."""
    size = max(channels, 1)
    if width <= 0 or height <= 0 or channels not in (0, 1, 3) or len(pixels) != width * height * size:
        raise ValueError("pixels do not match the picture's size")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = width * size
    raw = b"".join(b"\x00" + pixels[r * row : (r + 1) * row] for r in range(height))
    colour = {0: 3, 1: 0, 3: 2}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    plte = chunk(b"PLTE", b"".join(bytes(c) for c in _PALETTE)) if channels == 0 else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + plte
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def data_uri(image: Image) -> str:
    """The picture as a ``data:image/png;base64,...`` URI."""
    encoded = png(image.width, image.height, image.pixels, image.channels)
    return "data:image/png;base64," + base64.b64encode(encoded).decode()


@dataclass(frozen=True)
class Image:
    """One checked picture: ``height`` rows of ``width`` palette indices."""

    width: int
    height: int
    pixels: bytes
    label: str = ""
    value: float | None = None  # variance of a channel, or a head's largest weight
    index: int = -1  # channel or head
    channels: int = 0  # 0: palette indices; 1: grey levels; 3: RGB


@dataclass(frozen=True)
class FeatureMap:
    path: str
    tensor: str
    class_name: str
    kind: str
    shape: tuple[int, ...]
    low: float
    high: float
    images: tuple[Image, ...]


@dataclass(frozen=True)
class AttentionMap:
    path: str
    class_name: str
    source: str
    heads: int
    queries: int
    keys: int
    step_q: int
    step_k: int
    query_tokens: tuple[int, ...] | None
    key_tokens: tuple[int, ...] | None
    images: tuple[Image, ...]
    scale: float | None = None  # top of the colour scale shared by the heads (None: each head's max)


@dataclass(frozen=True)
class ShownInput:
    """One input of the shown sample: an ``image`` (pixels 0-255, ``mapping`` says how
    the fed values became them), a ``text`` or ``tokens`` (ids)."""

    name: str
    kind: str
    image: Image | None = None
    shape: tuple[int, ...] = ()
    mapping: str = ""
    text: str | None = None
    tokens: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the page's embedded JSON (an image as a PNG data URI)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.image is not None:
            out.update(shape=list(self.shape), mapping=self.mapping, png=data_uri(self.image))
        if self.text is not None:
            out["text"] = self.text
        if self.tokens is not None:
            out["tokens"] = list(self.tokens)
        return out


@dataclass(frozen=True)
class Prediction:
    """One classifier output of the run (see :mod:`kerinspect.engine.predictions`):
    the shown sample's most likely classes, ``(class, name, probability)``, and the
    top-1 counts over all samples, ``(class, name, count)``."""

    path: str
    output: str
    kind: str
    activation: str | None
    classes: int
    names_from: str | None
    top: tuple[tuple[int, str | None, float], ...]
    top1_counts: tuple[tuple[int, str | None, int], ...]
    samples: int
    labelled: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy over the labelled samples (None: none had a label)."""
        return self.correct / self.labelled if self.labelled else None

    def ranked(self) -> list[dict[str, Any]]:
        """The shown sample's top classes as JSON: ``[{"class", "name", "probability"}]``."""
        return [{"class": c, "name": n, "probability": p} for c, n, p in self.top]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the page's embedded JSON."""
        return {
            "path": self.path,
            "output": self.output,
            "kind": self.kind,
            "activation": self.activation,
            "classes": self.classes,
            "names_from": self.names_from,
            "predictions": self.ranked(),
            "top1_counts": [{"class": c, "name": n, "count": k} for c, n, k in self.top1_counts],
            "samples": self.samples,
            "labelled": self.labelled,
            "top1_accuracy": self.accuracy,
        }


@dataclass(frozen=True)
class PatchAttention:
    """One attention layer's weights over the shown image's patch grid (a ViT; see
    :mod:`kerinspect.engine.predictions`): ``image`` is the grid, one palette pixel per
    patch, scaled to the largest weight ``max``."""

    path: str
    class_name: str
    what: str
    grid: tuple[int, int]
    patch: int
    class_token: bool
    max: float
    weights: tuple[tuple[float, ...], ...]
    image: Image

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the page's embedded JSON."""
        return {
            "path": self.path,
            "class_name": self.class_name,
            "what": self.what,
            "grid": list(self.grid),
            "patch": self.patch,
            "class_token": self.class_token,
            "weights": [list(r) for r in self.weights],
        }


#: Points of one projection the parent accepts (the worker sends at most 500).
MAX_PROJECTED_POINTS = 2000


@dataclass(frozen=True)
class Projection:
    """One layer output's samples in 2-D (PCA), each with its class index."""

    path: str
    tensor: str
    accuracy: float | None
    explained: tuple[float, float] | None
    points: tuple[tuple[float, float, int], ...]
    note: str | None = None


@dataclass(frozen=True)
class Pictures:
    """Everything ``kerinspect report`` draws beyond the report itself."""

    sample: int = 0
    tensorflow_version: str = ""
    feature_maps: tuple[FeatureMap, ...] = ()
    attention: tuple[AttentionMap, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[ShownInput, ...] = ()
    predictions: tuple[Prediction, ...] = ()
    patches: tuple[PatchAttention, ...] = ()
    projections: tuple[Projection, ...] = ()


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("expected a string")
    return v


def _int(v: Any, lo: int = 0, hi: int = 1 << 40) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError("expected an integer in range")
    return v


def _float(v: Any) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError("expected a finite number")
    return float(v)


def _image(d: Any, label: str, value: Any, index: Any, channels: int = 0) -> Image:
    width, height = _int(d["width"], 1, MAX_SIDE), _int(d["height"], 1, MAX_SIDE)
    try:
        pixels = base64.b64decode(_str(d["pixels"]), validate=True)
    except binascii.Error as e:
        raise ValueError("pixels are not base64") from e
    if len(pixels) != width * height * max(channels, 1):
        raise ValueError("pixels do not match the picture's size")
    value = None if value is None else _float(value)
    return Image(width, height, pixels, label, value, _int(index, -1), channels)


def _name_or_none(v: Any) -> str | None:
    return None if v is None else _str(v)


def _shown_input(d: Any) -> ShownInput:
    name, kind = _str(d["name"]), _str(d["kind"])
    if kind == "image":
        channels = _int(d["channels"], 1, 3)
        if channels == 2:
            raise ValueError("an image has 1 or 3 channels")
        image = _image(d, name, None, -1, channels)
        return ShownInput(name, kind, image, tuple(_int(s) for s in d["shape"]), _str(d["mapping"]))
    if kind == "text":
        return ShownInput(name, kind, text=_str(d["text"]))
    if kind == "tokens":
        return ShownInput(name, kind, tokens=_tokens(d["tokens"]))
    raise ValueError("unknown input kind")


def _patches(d: Any) -> PatchAttention:
    rows, cols = (_int(v, 1, MAX_SIDE) for v in d["grid"])
    image = _image(d, _str(d["path"]), d["max"], -1)
    if (image.height, image.width) != (rows, cols):
        raise ValueError("the patch picture does not match its grid")
    weights = tuple(tuple(_float(v) for v in r) for r in d["weights"])
    if len(weights) != rows or any(len(r) != cols for r in weights):
        raise ValueError("the patch weights do not match their grid")
    if not isinstance(d["class_token"], bool):
        raise TypeError("class_token must be true or false")
    return PatchAttention(
        _str(d["path"]),
        _str(d["class_name"]),
        _str(d["what"]),
        (rows, cols),
        _int(d["patch"], 1),
        d["class_token"],
        _float(d["max"]),
        weights,
        image,
    )


def _prediction(d: Any) -> Prediction:
    kind = _str(d["kind"])
    if kind not in ("probabilities", "sigmoid", "logits"):
        raise ValueError("unknown classifier kind")
    classes = _int(d["classes"], 2)
    top = tuple(
        (_int(t["class"], 0, classes - 1), _name_or_none(t["name"]), _float(t["probability"]))
        for t in d["top"]
    )
    counts = tuple(
        (_int(t["class"], 0, classes - 1), _name_or_none(t["name"]), _int(t["count"]))
        for t in d["top1_counts"]
    )
    samples, labelled = _int(d["samples"]), _int(d["labelled"])
    correct = _int(d["correct"], 0, labelled)
    return Prediction(
        _str(d["path"]),
        _str(d["output"]),
        kind,
        _name_or_none(d["activation"]),
        classes,
        _name_or_none(d["names_from"]),
        top,
        counts,
        samples,
        labelled,
        correct,
    )


def _tokens(v: Any) -> tuple[int, ...] | None:
    if v is None:
        return None
    if not isinstance(v, list):
        raise TypeError("tokens must be a list")
    return tuple(_int(t, -(1 << 62), 1 << 62) for t in v)


def parse_pictures(data: Any) -> Pictures:
    """Check the worker's ``pictures`` (see the module's docstring).

    Raises:
        KeyError, TypeError, ValueError: malformed (the caller makes it a protocol error).
    """
    if not isinstance(data, dict):
        raise TypeError("pictures must be an object")
    maps = []
    for m in data["feature_maps"]:
        kind = _str(m["kind"])
        if kind not in ("grid", "strip"):
            raise ValueError("unknown feature map kind")
        images = tuple(_image(i, _str(i["label"]), i["variance"], i["channel"]) for i in m["images"])
        maps.append(
            FeatureMap(
                _str(m["path"]),
                _str(m["tensor"]),
                _str(m["class_name"]),
                kind,
                tuple(_int(s) for s in m["shape"]),
                _float(m["low"]),
                _float(m["high"]),
                images,
            )
        )
    attention = []
    for a in data["attention"]:
        images = tuple(_image(i, f"head {_int(i['head'])}", i["max"], i["head"]) for i in a["images"])
        attention.append(
            AttentionMap(
                _str(a["path"]),
                _str(a["class_name"]),
                _str(a["source"]),
                _int(a["heads"]),
                _int(a["queries"]),
                _int(a["keys"]),
                _int(a["step_q"], 1),
                _int(a["step_k"], 1),
                _tokens(a.get("query_tokens")),
                _tokens(a.get("key_tokens")),
                images,
                None if a.get("scale") is None else _float(a["scale"]),
            )
        )
    return Pictures(
        sample=_int(data["sample"]),
        tensorflow_version=_str(data.get("tensorflow_version", "")),
        feature_maps=tuple(maps),
        attention=tuple(attention),
        inputs=tuple(_shown_input(i) for i in data.get("inputs", [])),
        predictions=tuple(_prediction(p) for p in data.get("predictions", [])),
        patches=tuple(_patches(p) for p in data.get("patches", [])),
        projections=tuple(_projection(p) for p in data.get("projections", [])),
    )


def _projection(p: Any) -> Projection:
    points = p["points"]
    if not isinstance(points, list) or len(points) > MAX_PROJECTED_POINTS:
        raise ValueError("too many projected points")
    explained = p["explained"]
    return Projection(
        _str(p["path"]),
        _str(p["tensor"]),
        None if p["accuracy"] is None else _float(p["accuracy"]),
        None if explained is None else (_float(explained[0]), _float(explained[1])),
        tuple((_float(q[0]), _float(q[1]), _int(q[2], 0, 1 << 20)) for q in points),
        None if p.get("note") is None else _str(p["note"]),
    )


@dataclass(frozen=True)
class ReportData:
    """What :func:`kerinspect.api.inspect_for_report` returns: the report (with the
    histograms), the sample's pictures, the SHA-256 of the bytes that were loaded
    (None for an in-memory model) and, with ``gradients``, the gradient report."""

    report: Any  # kerinspect.report.ModelReport
    pictures: Pictures
    sha256: str | None = None
    gradients: Any = None  # kerinspect.gradients.GradientReport
