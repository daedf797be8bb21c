"""What ``kerinspect report`` needs beyond the statistics, computed in the worker.

:class:`PictureCollector` is the :class:`~kerinspect.engine.statistics.StatsCollector`
of a report: it also counts every output's value histogram (:mod:`kerinspect.bins`),
and, for one chosen sample (``RunSpec.sample``), keeps small plain pictures:

* **feature maps**: for a 4-D output ``(batch, H, W, C)`` of a convolution, a pooling
  or a layer that keeps the image's layout (:data:`SPATIAL_LAYERS`), the sample's
  channels with the largest variance (at most ``RunSpec.channels``), each
  downsampled by block means to at most :data:`MAX_MAP` pixels a side; for a 3-D
  sequence output ``(batch, T, C)`` (an embedding, a recurrent or attention layer, a
  normalisation, a residual sum, a Dense on every step...), a strip (one row per
  channel, time along the width, at most :data:`MAX_STRIP` wide); see
  :func:`_pictured`. Of the layers that qualify, ``RunSpec.feature_maps`` are kept,
  evenly spaced along the depth;
* **attention probabilities**: per attention layer and head, the sample's query x key
  matrix, summed over blocks of keys and averaged over blocks of queries down to at
  most :data:`MAX_ATTENTION` a side, with the token ids of the model's integer
  inputs for the axes;
* **the input and the predictions** (:mod:`kerinspect.engine.predictions`): the
  sample's inputs (an image as pixels, a text, token ids), and for every classifier
  output the sample's top ``RunSpec.top_k`` classes, with the top-1 counts over all
  samples (and the top-1 accuracy where the data has labels).

Each picture leaves the worker as bytes 0-255 (base64) with its value range: the
parent, which never imports numpy, only colours and encodes them
(:mod:`kerinspect.figures`). Nothing else of the sample is kept: the sample's
tensors are reduced as they appear and released with the batch.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerinspect.engine.events import CallSite
from kerinspect.engine.predictions import Tally, activation_of, candidate
from kerinspect.engine.statistics import PARALLEL_MIN_SIZE, StatsCollector
from kerinspect.engine.tensors import to_numpy
from kerinspect.errors import UsageError, escape_text, msg
from kerinspect.figures import UNIFORM_SHARE
from kerinspect.stats import RunningStats, numeric_kind, summarize

#: Largest side of a feature map picture, and width of a sequence strip.
MAX_MAP = 64
MAX_STRIP = 256
#: Largest side of an attention picture (queries and keys).
MAX_ATTENTION = 128
#: Most token ids kept of one integer input.
MAX_TOKENS = 4096
#: Most values of one sample of one input kept to be shown.
MAX_INPUT_VALUES = 1 << 24
#: Layer classes (besides convolutions and pooling) whose 4-D outputs keep an image's
#: ``(height, width, channels)`` layout, drawn as channel grids.
SPATIAL_LAYERS = (
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "Activation", "ReLU", "LeakyReLU",
    "PReLU", "ELU", "Add", "Concatenate", "Multiply", "Rescaling", "Normalization", "UpSampling2D",
    "ZeroPadding2D", "Cropping2D", "Resizing",
)  # fmt: skip
#: Layers whose output is their input at inference: not pictured twice.
PASS_THROUGH = (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "Identity", "ActivityRegularization",
)  # fmt: skip


def _bytes_of(unit: np.ndarray) -> str:
    """Values in [0, 1] as base64 bytes 0-255, row-major."""
    q = np.clip(np.rint(np.nan_to_num(unit, nan=0.0) * 255.0), 0, 255).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def _pool(a: np.ndarray, fy: int, fx: int, how: str = "mean") -> np.ndarray:
    """Block-reduce a 2-D array by ``fy`` x ``fx`` (a last partial block counts as one)."""
    h, w = a.shape
    ph, pw = -(-h // fy) * fy, -(-w // fx) * fx
    if (ph, pw) != (h, w):
        padded = np.zeros((ph, pw), dtype=np.float64)
        padded[:h, :w] = a
        counts = np.zeros((ph, pw), dtype=np.float64)
        counts[:h, :w] = 1
        total = padded.reshape(ph // fy, fy, pw // fx, fx).sum(axis=(1, 3))
        if how == "sum":
            return total
        return total / np.maximum(counts.reshape(ph // fy, fy, pw // fx, fx).sum(axis=(1, 3)), 1)
    blocks = a.astype(np.float64).reshape(h // fy, fy, w // fx, fx)
    return blocks.sum(axis=(1, 3)) if how == "sum" else blocks.mean(axis=(1, 3))


def _scale(a: np.ndarray) -> tuple[np.ndarray, float, float]:
    finite = a[np.isfinite(a)]
    if not finite.size:
        return np.zeros_like(a, dtype=np.float64), 0.0, 0.0
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo
    return ((a - lo) / span if span > 0 else np.zeros_like(a, dtype=np.float64)), lo, hi


def feature_map(arr: np.ndarray, channels: int) -> dict[str, Any] | None:
    """The picture of one sample's output (``arr`` without the batch axis): a grid of
    its top-variance channels (rank 3: ``H, W, C``) or a strip (rank 2: ``T, C``)."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 3:
        h, w, c = a.shape
        flat = a.reshape(h * w, c)
        var = np.nanvar(np.where(np.isfinite(flat), flat, np.nan), axis=0) if h * w else np.zeros(c)
        var = np.nan_to_num(var, nan=-1.0)
        order = [int(i) for i in np.argsort(-var, kind="stable")[:channels]]
        f = max(1, -(-max(h, w) // MAX_MAP))
        maps = [_pool(a[:, :, i], f, f) for i in order]
        stacked, lo, hi = _scale(np.stack(maps)) if maps else (np.zeros((0, 1, 1)), 0.0, 0.0)
        images = [
            {
                "label": f"ch {i}",
                "channel": i,
                "variance": float(var[i]),
                "height": int(stacked.shape[1]),
                "width": int(stacked.shape[2]),
                "pixels": _bytes_of(stacked[k]),
            }
            for k, i in enumerate(order)
        ]
        return {"kind": "grid", "shape": [h, w, c], "low": lo, "high": hi, "images": images}
    if a.ndim == 2:
        t, c = a.shape
        var = (
            np.nan_to_num(np.nanvar(np.where(np.isfinite(a), a, np.nan), axis=0), nan=-1.0)
            if t
            else np.zeros(c)
        )
        order = [int(i) for i in np.argsort(-var, kind="stable")[: max(channels, 1) * 4]]
        f = max(1, -(-t // MAX_STRIP))
        strip = _pool(a[:, order].T, 1, f) if order else np.zeros((0, 1))
        unit, lo, hi = _scale(strip)
        image = {
            "label": f"{len(order)} of {c} channels x {t} steps",
            "channel": -1,
            "variance": float(var[order].mean()) if order else 0.0,
            "height": int(unit.shape[0]),
            "width": int(unit.shape[1]),
            "pixels": _bytes_of(unit),
            "channels": order,
        }
        return {"kind": "strip", "shape": [t, c], "low": lo, "high": hi, "images": [image]}
    return None


def attention_picture(probs: np.ndarray) -> dict[str, Any]:
    """One sample's ``(heads, queries, keys)`` probabilities, pooled to at most
    :data:`MAX_ATTENTION` a side: keys summed (a pooled row still sums to 1), queries
    averaged. Every head on one colour scale (``scale``), each with its own ``max``:
    from 0 to the layer's largest weight, but at least :data:`UNIFORM_SHARE` times a
    uniform row's weight (1 / keys): a uniform head is drawn dark, at most at
    1/:data:`UNIFORM_SHARE` of the scale, beside a sharp head and alone alike."""
    p = np.asarray(probs, dtype=np.float64)
    heads, t, s = p.shape
    fq, fk = max(1, -(-t // MAX_ATTENTION)), max(1, -(-s // MAX_ATTENTION))
    pooled = [_pool(_pool(p[h], 1, fk, "sum"), fq, 1) for h in range(heads)]
    tops = []
    for one in pooled:
        finite = one[np.isfinite(one)]
        tops.append(float(finite.max()) if finite.size else 0.0)
    width = pooled[0].shape[1] if pooled else 1
    top = max(max(tops, default=0.0), min(1.0, UNIFORM_SHARE / max(width, 1)))
    images = [
        {
            "head": h,
            "height": int(one.shape[0]),
            "width": int(one.shape[1]),
            "max": tops[h],
            "pixels": _bytes_of(one / top if top > 0 else np.zeros_like(one)),
        }
        for h, one in enumerate(pooled)
    ]
    return {
        "heads": heads,
        "queries": t,
        "keys": s,
        "step_q": fq,
        "step_k": fk,
        "scale": top,
        "images": images,
    }


class PictureCollector(StatsCollector):
    """A :class:`StatsCollector` that also counts histograms and keeps one sample's
    pictures (see the module's docstring)."""

    def __init__(
        self,
        sample: int,
        feature_maps: int,
        channels: int,
        threads: int | None = None,
        *,
        top_k: int = 0,
    ) -> None:
        super().__init__(threads)
        self.sample = sample
        self.max_maps = feature_maps
        self.channels = channels
        self.top_k = top_k
        self.fed: list[tuple[str, np.ndarray]] = []  # (input path, the sample's row)
        self.tallies: dict[tuple[int, int], Tally] = {}  # (site index, output) of the model's outputs
        self.ends_in: dict[int, str | None] = {}  # site index -> the layer's activation
        self.labels: np.ndarray | None = None  # this batch's labels (batch_labels)
        self._produced: tuple[int, Any] | None = None
        self.patches: list[dict[str, Any]] = []  # attention over the image's patches, per layer call
        self.offset = 0  # samples in the batches before this one
        self.rows = 0
        self.seen = 0
        self.maps: list[tuple[int, dict[str, Any]]] = []  # (site index, picture)
        self.pictures_of_attention: list[tuple[int, dict[str, Any]]] = []
        self.tokens: list[list[int]] = []  # the sample's integer inputs, in graph order
        self._classes: dict[str, str] = {}  # call path -> class (to know a call's parent)

    def summarize(
        self, arr: np.ndarray, *, spread: bool = False, bounds: str | None = None, sketch: bool = False
    ) -> RunningStats | None:
        """As :meth:`StatsCollector.summarize`, with the histogram."""
        if self._threads < 2 or arr.size < PARALLEL_MIN_SIZE or numeric_kind(arr.dtype) is None:
            return summarize(arr, spread=spread, bounds=bounds, histogram=True, sketch=sketch)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="kerinspect-stats")
        return summarize(
            arr,
            parts=self._threads,
            map_fn=self._pool.map,
            spread=spread,
            bounds=bounds,
            histogram=True,
            sketch=sketch,
        )

    def batch_labels(self, labels: Any) -> None:
        super().batch_labels(labels)
        self.labels = None if labels is None else np.asarray(labels)  # for the top-1 accuracy

    def consumed(self, site: CallSite, op: Any, inputs: Any) -> None:
        super().consumed(site, op, inputs)
        if site.index not in self.ends_in:
            self.ends_in[site.index] = activation_of(op)

    def model_output(self, site: CallSite, k: int) -> None:
        super().model_output(site, k)
        if self._produced is None or self._produced[0] != site.index:
            return
        tensors = self._produced[1]
        t = tensors[k] if k < len(tensors) else None
        if t is None or not hasattr(t, "shape"):
            return
        arr = to_numpy(t)
        if not candidate(arr) or arr.shape[0] != self.rows:
            return
        tally = self.tallies.get((site.index, k))
        if tally is None:
            tally = self.tallies[(site.index, k)] = Tally(int(arr.shape[1]))
            tally.activation = self.ends_in.get(site.index)
        if tally.classes == arr.shape[1]:
            tally.update(arr, self._row(), self.labels)

    def start_batch(self, rows: int) -> None:
        self.offset = self.seen
        self.rows = rows
        self.seen += rows
        super().start_batch(rows)

    def enter(self, site: CallSite) -> None:
        super().enter(site)
        self._classes[site.path] = site.class_name

    def _row(self) -> int | None:
        """The chosen sample's row in this batch (None: not in it)."""
        k = self.sample - self.offset
        return k if 0 <= k < self.rows else None

    def produced(self, site: CallSite, tensors: Any) -> None:
        super().produced(site, tensors)
        self._produced = (site.index, tensors)  # for model_output, which follows
        row = self._row()
        if row is None:
            return
        cls = site.class_name
        for k, t in enumerate(tensors):
            if t is None or not hasattr(t, "shape"):
                continue
            arr = to_numpy(t)
            if arr.ndim < 1 or arr.shape[0] != self.rows:
                continue
            if cls == "InputLayer":
                value = np.array(arr[row])  # a copy (a string sample is a 0-d object array)
                if value.size <= MAX_INPUT_VALUES:
                    self.fed.append((site.path, value))
            kind = numeric_kind(arr.dtype)
            if cls == "InputLayer" and kind == "int" and arr.ndim == 2:
                self.tokens.append([int(v) for v in arr[row, :MAX_TOKENS]])
                continue
            # a container's output is its last inner call's, drawn there; an attention
            # layer's is drawn as its own (its inner projections are not)
            if kind != "float" or self.max_maps <= 0 or (site.container and not _is_attention(cls)):
                continue
            if not _pictured(site, arr.shape, _name(site, k), self._classes.get(site.parent or "", "")):
                continue
            picture = feature_map(arr[row], self.channels)
            if picture is not None:
                picture.update(path=site.path, tensor=_name(site, k), class_name=cls)
                self.maps.append((site.index, picture))

    def attention(self, site: CallSite, capture: Any) -> None:
        super().attention(site, capture)
        row = self._row()
        if row is None or capture.probs is None:
            return
        p = to_numpy(capture.probs)
        if p.ndim != 4 or p.shape[0] != self.rows:
            return
        picture = attention_picture(p[row])
        picture.update(path=site.path, class_name=site.class_name, source=capture.source)
        self.pictures_of_attention.append((site.index, picture))
        image = next((x for _, x in self.fed if x.ndim == 3 and x.shape[-1] in (1, 3, 4)), None)
        if image is not None:
            from .predictions import patch_attention

            grid = patch_attention(p[row], int(image.shape[0]), int(image.shape[1]))
            if grid is not None:
                grid.update(path=site.path, class_name=site.class_name)
                self.patches.append(grid)

    def end_batch(self) -> None:
        self._produced = None
        super().end_batch()

    def shown_inputs(self, preprocess: str | None) -> list[dict[str, Any]]:
        """The sample's inputs as they are shown: images, texts, token ids (see
        :mod:`kerinspect.engine.predictions`); ``preprocess``: the mode of images read
        from files, None for other inputs."""
        from .predictions import input_picture, is_image, text_of

        out: list[dict[str, Any]] = []
        for path, x in self.fed:
            batch = x[None]
            if is_image(batch, preprocess is not None):
                item = input_picture(x, preprocess)
            elif x.dtype.kind in "OSU" and x.size == 1:
                item = {"kind": "text", "text": text_of(x.reshape(-1)[0])}
            elif numeric_kind(x.dtype) == "int" and x.ndim == 1:
                item = {"kind": "tokens", "tokens": [int(v) for v in x[:MAX_TOKENS]]}
            else:
                continue
            item["name"] = path
            out.append(item)
        return out

    def classifiers(self) -> list[tuple[str, int]]:
        """``(path, classes)`` of the model outputs that are probabilities whatever
        their names (for :func:`~kerinspect.engine.predictions.check_class_names`)."""
        paths = {site.index: site.path for site in self.sites}
        return [
            (paths.get(i, str(i)), t.classes) for (i, _), t in sorted(self.tallies.items()) if t.kind(None)
        ]

    def predictions(
        self, names: tuple[str, ...] | None, names_from: str | None, label_classes: int | None = None
    ) -> list[dict[str, Any]]:
        """Every classifier output's ranking (see :mod:`kerinspect.engine.predictions`),
        in the model's output order; ``names`` apply to an output with as many classes.
        ``label_classes``: how many classes the data's labels index (a folder of images'
        label folders); an output with another count gets no accuracy."""
        from .predictions import summary

        out = []
        paths = {site.index: site for site in self.sites}
        for (index, k), tally in sorted(self.tallies.items()):
            fits = names if names is not None and len(names) == tally.classes else None
            kind = tally.kind(None if fits is None else len(fits))
            if kind is None:
                continue
            if label_classes is not None and label_classes != tally.classes:
                tally.labelled = tally.correct = 0
            item = summary(tally, kind, self.top_k, fits, names_from if fits is not None else None)
            site = paths.get(index)
            item["path"] = site.path if site is not None else str(index)
            item["output"] = _name(site, k) if site is not None else f"output_{k}"
            out.append(item)
        return out

    def pictures(self) -> dict[str, Any]:
        """The plain-data pictures (see :mod:`kerinspect.figures` for the schema)."""
        maps = self.maps
        if len(maps) > self.max_maps:  # evenly spaced along the depth, first and last included
            n = self.max_maps
            picks = sorted({round(i * (len(maps) - 1) / max(n - 1, 1)) for i in range(n)})
            maps = [maps[i] for i in picks]
        attention = []
        for _, picture in self.pictures_of_attention:
            t, s = picture["queries"], picture["keys"]
            picture["query_tokens"] = next((ids for ids in self.tokens if len(ids) == t), None)
            picture["key_tokens"] = next((ids for ids in self.tokens if len(ids) == s), None)
            attention.append(picture)
        return {
            "sample": self.sample,
            "feature_maps": [p for _, p in maps],
            "attention": attention,
            "patches": self.patches,
        }


def _pictured(site: CallSite, shape: tuple[int, ...], tensor: str, parent_class: str) -> bool:
    """Whether a float output (batch axis first) of this call has a feature picture: a
    grid for an image-shaped output of a convolution or a layer that keeps the image's
    layout (:data:`SPATIAL_LAYERS`, any pooling); a strip for any sequence ``(batch,
    steps, channels)`` (an Embedding, a recurrent or attention layer, a normalisation, a
    residual ``Add``, a Dense on every step...). Not: the inner projections of an
    attention layer (its output is drawn), layers that pass their input on unchanged
    at inference (:data:`PASS_THROUGH`), attention probabilities (heatmaps instead)."""
    cls = site.class_name
    if (
        cls == "InputLayer"
        or cls in PASS_THROUGH
        or tensor == "attention_scores"
        or _is_attention(parent_class)
    ):
        return False
    if len(shape) == 4:
        return ("Conv" in cls or "Pool" in cls or cls in SPATIAL_LAYERS) and shape[1] > 1 and shape[2] > 1
    return len(shape) == 3 and shape[1] > 1 and shape[2] > 1


def _is_attention(class_name: str) -> bool:
    """An attention layer by its class (``MultiHeadAttention``, ``GroupedQueryAttention``,
    keras-hub's ``CachedMultiHeadAttention``, ``Attention``...), not a block that holds one."""
    return class_name.endswith("Attention")


def projections(collector: StatsCollector, report: Any, layers: Sequence[str]) -> list[dict[str, Any]]:
    """2-D PCA projections, coloured by class, of the outputs ``layers`` names (layer
    paths, or ``path:output``), by default the model's last hidden layer
    (:func:`kerinspect.checks.last_hidden`) and the hidden output halfway to it; none
    without labels. Each: ``{"path", "tensor", "accuracy", "explained", "points"}``
    (:func:`kerinspect.engine.separability.projection`); an output whose vectors were
    not kept has no points and says why (``note``)."""
    from kerinspect.checks import last_hidden
    from kerinspect.engine.separability import projection
    from kerinspect.report import tensor_key

    if report.labels is None:
        return []
    candidates = [
        (r, o)
        for r in report.layers
        if r.class_name != "InputLayer" and not r.container
        for o in r.outputs
        if o.separability is not None and not o.model_output
    ]
    if layers:
        known = {
            tensor_key(r, o): (r, o) for r in report.layers for o in r.outputs if o.separability is not None
        }
        known.update(
            {r.path: (r, r.outputs[0]) for r in report.layers if r.outputs and r.outputs[0].separability}
        )
        missing = [p for p in layers if p not in known]
        if missing:
            raise UsageError(
                msg(
                    "{pca_layers} names {p!r}, which is no layer output with a separability. Received: "
                    "{pca_layers}={given}",
                    p=escape_text(missing[0], 200),
                    given=escape_text(",".join(layers), 300),
                ),
                hint="outputs with a separability: " + escape_text(", ".join(list(known)[:12]), 600),
            )
        chosen = [known[p] for p in dict.fromkeys(layers)]
    else:
        last = last_hidden(report)
        chosen = [] if last is None else [last]
        at = next(
            (n for n, c in enumerate(candidates) if last is not None and c[1] is last[1]), len(candidates)
        )
        before = candidates[:at]  # the hidden outputs before the last one: the middle of them
        if before:
            chosen.insert(0, before[len(before) // 2])
    index = {site.path: i for i, site in enumerate(collector.sites)}
    out = []
    for layer, tensor in chosen:
        i = index.get(layer.path)
        k = list(layer.outputs).index(tensor)
        acc = collector.separability.get((i, k)) if i is not None else None
        pooled = None if acc is None else acc.pooled_indices(collector.classes)
        figure = None if pooled is None else projection(*pooled)
        entry: dict[str, Any] = {
            "path": layer.path,
            "tensor": tensor.name,
            "accuracy": None if tensor.separability is None else tensor.separability.accuracy,
            "explained": None if figure is None else figure["explained"],
            "points": [] if figure is None else figure["points"],
        }
        if figure is None:
            entry["note"] = (
                acc.note if acc is not None else None
            ) or "no projection: too few samples or no variance"
        out.append(entry)
    return out


def _name(site: CallSite, k: int) -> str:
    names = site.output_names
    return names[k] if k < len(names) else f"output_{k}"


def check_sample(sample: int, samples: int, path: str | None) -> None:
    """Refuse a ``sample`` the run did not have."""
    if sample >= samples:
        raise UsageError(
            msg(
                "{sample}={k} is out of range: the run had {n} samples (0 to {last}). Received: path={path}",
                k=sample,
                n=samples,
                last=samples - 1,
                path=escape_text(path or "<in-memory model>"),
            ),
            hint=msg("choose a smaller {sample}, or run more {samples}"),
        )


def tensorflow_version() -> str:
    """TensorFlow's version, for the report page (``unknown`` if it cannot be read)."""
    try:
        from kerinspect.engine.tfenv import import_keras

        import_keras()
        import tensorflow as tf

        return str(tf.__version__)
    except Exception:  # noqa: BLE001 - a version string is only informative
        return "unknown"


__all__ = [
    "PictureCollector",
    "attention_picture",
    "check_sample",
    "feature_map",
    "projections",
    "tensorflow_version",
]
