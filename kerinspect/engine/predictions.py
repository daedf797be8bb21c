"""What the model saw and what it said, for the shown sample of ``kerinspect report``,
and the classifier outputs that ``report`` and ``diff`` rank.

**A classifier output** is one of the top model's own outputs of rank 2,
``(batch, classes)`` with at least 2 classes, of floats, that is one of:

* ``probabilities``: every row of every batch lies in [0, 1] and sums to 1 (within
  1e-3), or the layer that produced it ends in a softmax (a ``Softmax`` layer, an
  ``activation="softmax"``); its values are shown as they are;
* ``sigmoid``: the layer ends in a sigmoid and every value lies in [0, 1]:
  independent probabilities (multi-label), shown as they are (they need not sum to 1);
* ``logits``: anything else, when the run knows the classes' names with as many
  names as the output has classes (``class_names``, or a folder of images' label
  folders): softmax is applied to the shown sample's row, and the report says so.

Any other output (a regression head, an embedding) is not ranked. Top-1 does not
depend on the kind (softmax keeps the order), so it is counted for every
candidate during the run and kept for the outputs that turn out to be classifiers.

**The shown input** (:func:`input_picture`): an image input (rank 4 with 1, 3 or 4
channels, or a rank-3 grayscale input fed from image files) is sent as bytes 0-255,
``height x width x channels`` (1 or 3; an alpha channel is dropped), at most
:data:`MAX_INPUT_SIDE` a side (block means beyond). The fed values are mapped back
to pixels: images read from files by inverting ``preprocess``
(:func:`kerinspect.engine.images.unpreprocess`); other arrays by their range
(``[0, 255]`` as they are, ``[0, 1]`` times 255, ``[-1, 1]`` from -1..1), else scaled
from their minimum to their maximum; ``mapping`` says which. A string input is sent
as its text, integer token ids as the ids.

**Attention over an image's patches** (a ViT: keras-hub's ``ViTBackbone``, or a
``Conv2D(strides=patch)`` patch embedding and self-attention): when an attention
layer's keys are the ``rows x columns`` square patches of the shown image, or those
and a class token first (:func:`patch_grid`), :func:`patch_attention` gives the class
token's attention to each patch (else the mean over queries), averaged over heads:
the report draws it over the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerinspect.errors import DataError, escape_text, msg

#: Largest side of the shown input image.
MAX_INPUT_SIDE = 512
#: Longest text of a string input kept.
MAX_TEXT = 2000
#: Most classes a classifier output may have to be ranked.
MAX_CLASSES = 1_000_000
#: Most classes listed in the top-1 counts over all samples.
MAX_COUNTS = 20
#: Tolerance of "each row sums to 1".
SUM_TOLERANCE = 1e-3


def activation_of(op: Any) -> str | None:
    """The activation a layer ends in (``softmax``, ``sigmoid``, ``linear``...), or None."""
    cls = type(op).__name__
    if cls == "Softmax":
        return "softmax"
    act = getattr(op, "activation", None)
    if act is None:
        return None
    name = getattr(act, "__name__", None) or getattr(act, "name", None) or str(act)
    return str(name).lower()


def candidate(arr: np.ndarray) -> bool:
    """Whether a model output may be a classifier's (rank 2, floats, 2 or more classes)."""
    return arr.ndim == 2 and 2 <= arr.shape[1] <= MAX_CLASSES and arr.dtype.kind in "fV"


class Tally:
    """One candidate output over every batch: what its values look like, its top-1
    counts (and agreement with labels), and the shown sample's row."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.unit = True  # every value in [0, 1]
        self.sums_to_one = True  # and every row sums to 1
        self.counts = np.zeros(classes, np.int64)
        self.samples = 0
        self.labelled = 0
        self.correct = 0
        self.row: np.ndarray | None = None
        self.activation: str | None = None

    def update(self, arr: np.ndarray, row: int | None, labels: np.ndarray | None) -> np.ndarray:
        """Fold one batch in; return its top-1 classes."""
        a = np.asarray(arr, dtype=np.float64)
        finite = np.isfinite(a).all(axis=1)
        if self.unit:
            self.unit = bool(finite.all()) and bool(((a >= 0) & (a <= 1)).all())
        if self.unit and self.sums_to_one:
            self.sums_to_one = bool((np.abs(a.sum(axis=1) - 1) <= SUM_TOLERANCE).all())
        top1 = np.argmax(np.where(np.isfinite(a), a, -np.inf), axis=1)
        self.counts += np.bincount(top1[finite], minlength=self.classes)[: self.classes]
        self.samples += len(a)
        if labels is not None and labels.dtype.kind in "iu" and len(labels) == len(a):
            self.labelled += len(a)
            self.correct += int(np.count_nonzero(top1 == labels))
        if row is not None:
            self.row = a[row].copy()
        return top1

    def kind(self, names: int | None) -> str | None:
        """``probabilities``, ``sigmoid``, ``logits`` or None (see the module's docstring);
        ``names``: how many class names the run knows (None: none)."""
        if self.unit and (self.sums_to_one or self.activation == "softmax"):
            return "probabilities"
        if self.unit and self.activation == "sigmoid":
            return "sigmoid"
        if names == self.classes:
            return "logits"
        return None


class Agreement:
    """Top-1 of model A against model B on one output, over every batch (``diff``)."""

    def __init__(self, classes: int) -> None:
        self.a = Tally(classes)  # A's values: is it a classifier's output?
        self.agree = 0
        self.pairs: dict[tuple[int, int], int] = {}  # (A's class, B's) -> samples, where they differ

    def update(self, xa: np.ndarray, xb: np.ndarray) -> None:
        """Fold one batch of both models' outputs in (same shapes)."""
        ta = self.a.update(xa, None, None)
        b = np.asarray(xb, dtype=np.float64)
        tb = np.argmax(np.where(np.isfinite(b), b, -np.inf), axis=1)
        same = ta == tb
        self.agree += int(np.count_nonzero(same))
        for i, j in zip(ta[~same].tolist(), tb[~same].tolist()):
            self.pairs[(i, j)] = self.pairs.get((i, j), 0) + 1

    def most(self, n: int) -> list[tuple[int, int, int]]:
        """The ``n`` most frequent disagreements ``(A's class, B's class, samples)``."""
        ordered = sorted(self.pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(i, j, c) for (i, j), c in ordered[:n]]


def softmax(row: np.ndarray) -> np.ndarray:
    """Softmax of one row of logits (float64, stable)."""
    z = np.exp(row - np.max(row))
    return np.asarray(z / z.sum())


def ranked(row: np.ndarray, kind: str, k: int, names: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """The ``k`` most likely classes of one row: ``[{"class", "name", "probability"}]``,
    most likely first (ties: the lower class first)."""
    p = softmax(row) if kind == "logits" else row
    order = np.argsort(-p, kind="stable")[:k]
    return [
        {"class": int(i), "name": None if names is None else names[i], "probability": float(p[i])}
        for i in order
    ]


def summary(
    tally: Tally, kind: str, k: int, names: tuple[str, ...] | None, names_from: str | None
) -> dict[str, Any]:
    """The plain data of one classifier output (see :mod:`kerinspect.figures`)."""
    order = [int(i) for i in np.argsort(-tally.counts, kind="stable") if tally.counts[i] > 0][:MAX_COUNTS]
    return {
        "kind": kind,
        "activation": tally.activation,
        "classes": tally.classes,
        "names_from": names_from,
        # a row with NaN/Inf ranks nothing (the layer table flags it)
        "top": []
        if tally.row is None or not np.isfinite(tally.row).all()
        else ranked(tally.row, kind, k, names),
        "top1_counts": [
            {"class": i, "name": None if names is None else names[i], "count": int(tally.counts[i])}
            for i in order
        ],
        "samples": tally.samples,
        "labelled": tally.labelled,
        "correct": tally.correct,
    }


def output_classes(model: Any) -> list[tuple[str, int]]:
    """``(name, classes)`` of each of the model's rank-2 outputs with a known last axis."""
    out = []
    outputs = list(getattr(model, "outputs", None) or [])
    names = list(getattr(model, "output_names", None) or [])
    for k, t in enumerate(outputs):
        shape = getattr(t, "shape", None)
        if shape is not None and len(shape) == 2 and shape[-1] is not None and int(shape[-1]) >= 2:
            name = names[k] if len(names) == len(outputs) else getattr(t, "name", f"output_{k}")
            out.append((str(name), int(shape[-1])))
    return out


def check_class_names(outputs: list[tuple[str, int]], names: tuple[str, ...] | None) -> None:
    """Refuse ``names`` when there are classifier outputs, ``(name, classes)`` each
    (:func:`output_classes` before a run, the outputs ranked after it), and none has as
    many classes."""
    if names is None:
        return
    if not outputs or any(c == len(names) for _, c in outputs):
        return
    from kerinspect.classes import shown_names

    has = ", ".join(f"{escape_text(n, 60)!r} has {c}" for n, c in outputs[:4])
    if len(outputs) > 4:
        has += f" (and {len(outputs) - 4} more outputs)"
    raise DataError(
        msg(
            "{class_names} holds {n} names but the model's output {has} classes. "
            "Received: {class_names}={n} names ({shown})",
            n=len(names),
            has=has,
            shown=shown_names(names),
        ),
        rule="class-names",
        hint=msg("give one name per class, in class order"),
    )


# -- the shown input -------------------------------------------------------------------


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w, c = a.shape
    ph, pw = -(-h // f) * f, -(-w // f) * f
    padded = np.zeros((ph, pw, c), np.float64)
    counts = np.zeros((ph, pw, 1), np.float64)
    padded[:h, :w] = a
    counts[:h, :w] = 1
    total = padded.reshape(ph // f, f, pw // f, f, c).sum(axis=(1, 3))
    n = counts.reshape(ph // f, f, pw // f, f, 1).sum(axis=(1, 3))
    return np.asarray(total / np.maximum(n, 1))


def displayable(x: np.ndarray, preprocess: str | None) -> tuple[np.ndarray, str]:
    """Pixels 0-255 (float, not yet rounded) of one fed image ``(H, W, C)``, and how they
    were mapped (see the module's docstring). ``preprocess``: the mode images read from
    files were fed with, None for arrays."""
    a = np.asarray(x, dtype=np.float64)
    if preprocess is not None:
        from kerinspect.engine.images import unpreprocess

        if preprocess == "none":
            return a, "pixels 0-255 as fed (preprocess=none)"
        return unpreprocess(a, preprocess), f"pixels as read: preprocess={preprocess} undone"
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1:
        return a * 255.0, "values in [0, 1] times 255"
    if lo >= 0 and hi <= 255:
        return a, "values in [0, 255] as they are"
    if lo >= -1 and hi <= 1:
        return (a + 1) * 127.5, "values in [-1, 1] mapped to 0-255"
    span = hi - lo
    scaled = (a - lo) / span * 255.0 if span > 0 else np.zeros_like(a)
    return scaled, f"values scaled from their minimum {lo:.4g} to their maximum {hi:.4g}"


def input_picture(x: np.ndarray, preprocess: str | None) -> dict[str, Any]:
    """The shown image ``(H, W)`` or ``(H, W, C)`` as plain data (bytes 0-255, base64)."""
    import base64

    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    if c == 4:
        a = a[:, :, :3]
    elif c == 2:
        a = a[:, :, :1]
    pixels, mapping = displayable(a, preprocess)
    f = max(1, -(-max(h, w) // MAX_INPUT_SIDE))
    if f > 1:
        pixels = _block_mean(pixels, f)
    q = np.clip(np.rint(np.nan_to_num(pixels, nan=0.0)), 0, 255).astype(np.uint8)
    return {
        "kind": "image",
        "shape": [h, w, c],
        "height": int(q.shape[0]),
        "width": int(q.shape[1]),
        "channels": int(q.shape[2]),
        "mapping": mapping + (f", block means of {f}x{f} pixels" if f > 1 else ""),
        "pixels": base64.b64encode(q.tobytes()).decode("ascii"),
    }


def is_image(arr: np.ndarray, from_images: bool) -> bool:
    """Whether one input ``(batch, ...)`` is drawn as an image."""
    if arr.dtype.kind not in "fiuV":
        return False
    if arr.ndim == 4:
        return arr.shape[-1] in (1, 3, 4) and min(arr.shape[1:3]) >= 2
    return arr.ndim == 3 and from_images


# -- attention over an image's patches (ViT) ---------------------------------------------


def patch_grid(tokens: int, height: int, width: int) -> tuple[int, int, int, bool] | None:
    """``(rows, columns, patch size, class token)`` when ``tokens`` keys are the square
    patches of a ``height`` x ``width`` image (``rows * columns``), or those and a class
    token first (``rows * columns + 1``); None otherwise."""
    import math

    for extra in (0, 1):
        n = tokens - extra
        if n < 2:
            continue
        side = math.isqrt(height * width // n) if height * width % n == 0 else 0
        if side >= 1 and side * side * n == height * width and height % side == 0 and width % side == 0:
            return height // side, width // side, side, bool(extra)
    return None


def patch_attention(probs: np.ndarray, height: int, width: int) -> dict[str, Any] | None:
    """One sample's ``(heads, queries, keys)`` self-attention probabilities over an
    image's patch grid (:func:`patch_grid`): the class token's row when there is one,
    else the mean over queries, averaged over heads, as a ``rows x columns`` grid
    (None when the keys are no patch grid of the image)."""
    p = np.asarray(probs, dtype=np.float64)
    heads, queries, keys = p.shape
    grid = patch_grid(keys, height, width)
    if grid is None or queries != keys:
        return None
    rows, cols, side, cls = grid
    if cls:
        weights, what = p[:, 0, 1:].mean(axis=0), "the class token's attention to each patch"
    else:
        weights, what = p.mean(axis=(0, 1)), "the mean attention each patch receives over all queries"
    weights = np.nan_to_num(weights.reshape(rows, cols), nan=0.0)
    top = float(weights.max()) if weights.size else 0.0
    unit = weights / top if top > 0 else np.zeros_like(weights)
    import base64

    q = np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8)
    return {
        "grid": [rows, cols],
        "patch": side,
        "class_token": cls,
        "what": what + f", mean of {heads} heads",
        "max": top,
        "weights": [[float(v) for v in r] for r in weights],
        "height": rows,
        "width": cols,
        "pixels": base64.b64encode(q.tobytes()).decode("ascii"),
    }


def text_of(value: Any) -> str:
    """One string input's text (bytes decoded as UTF-8, replacing errors), cut to :data:`MAX_TEXT`."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value)[:MAX_TEXT]


__all__ = [
    "Agreement",
    "Tally",
    "activation_of",
    "candidate",
    "check_class_names",
    "input_picture",
    "is_image",
    "patch_attention",
    "patch_grid",
    "ranked",
    "softmax",
    "summary",
    "text_of",
]
