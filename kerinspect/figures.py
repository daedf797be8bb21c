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
                    "images": [{"head": int, "height", "width": int, "max": float,
                                "pixels": base64}]}],
     "projections": [{"path", "tensor": str, "accuracy": float | None,
                      "explained": [float, float] | None, "note": str (optional),
                      "points": [[x: float, y: float, class index: int]...]}]}

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


def png(width: int, height: int, pixels: bytes) -> bytes:
    """A palette PNG of ``height`` rows of ``width`` bytes (indices into :func:`palette`)."""
    if width <= 0 or height <= 0 or len(pixels) != width * height:
        raise ValueError("pixels do not match the picture's size")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + pixels[r * width : (r + 1) * width] for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    plte = b"".join(bytes(c) for c in _PALETTE)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", plte)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def data_uri(image: Image) -> str:
    """The picture as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png(image.width, image.height, image.pixels)).decode()


@dataclass(frozen=True)
class Image:
    """One checked picture: ``height`` rows of ``width`` palette indices."""

    width: int
    height: int
    pixels: bytes
    label: str = ""
    value: float | None = None  # variance of a channel, or a head's largest weight
    index: int = -1  # channel or head


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


def _image(d: Any, label: str, value: Any, index: Any) -> Image:
    width, height = _int(d["width"], 1, MAX_SIDE), _int(d["height"], 1, MAX_SIDE)
    try:
        pixels = base64.b64decode(_str(d["pixels"]), validate=True)
    except binascii.Error as e:
        raise ValueError("pixels are not base64") from e
    if len(pixels) != width * height:
        raise ValueError("pixels do not match the picture's size")
    return Image(width, height, pixels, label, None if value is None else _float(value), _int(index, -1))


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
            )
        )
    return Pictures(
        sample=_int(data["sample"]),
        tensorflow_version=_str(data.get("tensorflow_version", "")),
        feature_maps=tuple(maps),
        attention=tuple(attention),
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
    histograms), the sample's pictures, and the SHA-256 of the bytes that were loaded
    (None for an in-memory model)."""

    report: Any  # kerinspect.report.ModelReport
    pictures: Pictures
    sha256: str | None = None
