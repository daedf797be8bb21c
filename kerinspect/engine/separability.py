"""Separability: how well one layer's output tells the labelled classes apart.

Numpy only (no TensorFlow), so the statistics can be tested without a model.

Each sample's *vector* of an output is its mean over every axis but the batch axis and
the last one: a ``(batch, units)`` matrix (a ``(batch,)`` output is one unit;
:func:`sample_vectors`). Per output, over every labelled batch:

* :class:`ClassMoments` keeps per class and per unit the count, the mean and the sum
  of squared deviations from the mean (M2), merged batch by batch (Chan et al.):
  the Fisher ratio comes from these alone, however many samples ran;
* the vectors themselves are pooled (float64) while the run's budget allows
  (:data:`~kerinspect.spec.SEPARABILITY_MAX_BYTES` for all outputs together, first
  come first served): the leave-one-out accuracy needs each sample against the
  final class means. Past the budget an output's accuracy is None, with a note;
  an output that holds NaN or Inf has no figures at all, with a note.

Definitions (:func:`separability`), with classes ``c`` of ``n_c`` samples, class
means ``m_c``, overall mean ``m``:

* ``accuracy``: nearest-class-mean accuracy, Euclidean, leave-one-out: each sample
  is compared with every other class's mean and with its own class's mean *without
  it* (``(n_c m_c - x) / (n_c - 1)``); it is right when its own class is strictly
  the nearest or tied nearest with only classes of higher index (``argmin``: ties go
  to the lowest class index). A sample alone in its class has no class mean left:
  it counts as wrong;
* ``chance``: the largest class's share of the samples (what always answering the
  commonest class scores);
* ``fisher``: per unit, ``sum_c n_c (m_c - m)^2 / sum_c sum_{i in c} (x_i - m_c)^2``
  (between-class over within-class sum of squares), averaged over the units whose
  within-class sum is above zero. Units constant within every class (a dead unit, or
  one that separates perfectly) are left out; None when no unit is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from kerinspect.stats import numeric_kind

#: Points of a 2-D projection sent to the report (evenly spaced over the samples).
MAX_PROJECTED_POINTS = 500


def sample_vectors(arr: np.ndarray, rows: int) -> np.ndarray | None:
    """Each sample's vector of ``arr`` (a batch of ``rows`` samples on axis 0), as
    float64 ``(rows, units)``: the mean over every axis but the first and the last;
    None for a tensor without a batch axis or without float values (every float
    dtype counts, bfloat16 and float8 too, as in the compiled engine)."""
    if arr.ndim < 1 or arr.shape[0] != rows or numeric_kind(arr.dtype) != "float" or arr.size == 0:
        return None
    if arr.dtype.kind != "f":  # bfloat16, float8 (ml_dtypes): exactly in float32 first
        arr = arr.astype(np.float32)
    if arr.ndim == 1:
        return arr.astype(np.float64).reshape(-1, 1)
    if arr.ndim == 2:
        return arr.astype(np.float64)
    # summed in float64 without a float64 copy of the whole tensor
    return np.asarray(arr.mean(axis=tuple(range(1, arr.ndim - 1)), dtype=np.float64))


def label_value(x: Any) -> int | str:
    """One label as a plain value: an int, or text (bytes decoded as UTF-8)."""
    if isinstance(x, (bytes, np.bytes_)):
        return bytes(x).decode("utf-8", errors="replace")
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        return int(x)
    return str(x)


def sorted_classes(values: Iterable[int | str]) -> list[int | str]:
    """The distinct label values, sorted (numbers before text)."""
    return sorted(set(values), key=lambda v: (isinstance(v, str), v))


class ClassMoments:
    """Per class (any hashable label value) and per unit: count, mean and M2,
    mergeable across batches."""

    def __init__(self) -> None:
        self.count: dict[Any, int] = {}
        self.mean: dict[Any, np.ndarray] = {}
        self.m2: dict[Any, np.ndarray] = {}

    def add(self, vectors: np.ndarray, labels: Sequence[Any]) -> None:
        """Fold one batch: ``vectors`` ``(n, units)``, ``labels`` the n label values."""
        groups: dict[Any, list[int]] = {}
        for i, v in enumerate(labels):
            groups.setdefault(v, []).append(i)
        for label, index in groups.items():
            rows = vectors[index]
            part = ClassMoments()
            part.count[label] = len(rows)
            mean = rows.mean(axis=0)
            part.mean[label] = mean
            part.m2[label] = ((rows - mean) ** 2).sum(axis=0)
            self.merge(part)

    def merge(self, other: ClassMoments) -> None:
        """Fold ``other`` in (Chan et al.'s pairwise update, per class)."""
        for c, nb in other.count.items():
            na = self.count.get(c, 0)
            if na == 0:
                self.count[c] = nb
                self.mean[c] = other.mean[c].copy()
                self.m2[c] = other.m2[c].copy()
                continue
            n = na + nb
            delta = other.mean[c] - self.mean[c]
            self.mean[c] = self.mean[c] + delta * (nb / n)
            self.m2[c] = self.m2[c] + other.m2[c] + delta * delta * (na * nb / n)
            self.count[c] = n

    def fisher(self) -> float | None:
        """The Fisher ratio averaged over units (see the module docstring)."""
        classes = list(self.count)
        if len(classes) < 2:
            return None
        n = np.asarray([self.count[c] for c in classes], dtype=np.float64)
        means = np.stack([self.mean[c] for c in classes])
        overall = (n[:, None] * means).sum(axis=0) / n.sum()
        between = (n[:, None] * (means - overall) ** 2).sum(axis=0)
        within = np.stack([self.m2[c] for c in classes]).sum(axis=0)
        kept = within > 0
        if not kept.any():
            return None
        return float(np.mean(between[kept] / within[kept]))


def loo_accuracy(vectors: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Leave-one-out nearest-class-mean accuracy of ``vectors`` ``(n, units)`` whose
    classes are ``labels`` (indices below ``classes``); see the module docstring."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    sums = np.zeros((classes, vectors.shape[1]))
    np.add.at(sums, labels, vectors)
    present = counts > 0
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    correct = 0
    step = max(1, (1 << 22) // max(1, classes * vectors.shape[1]))
    for start in range(0, len(vectors), step):
        x, y = vectors[start : start + step], labels[start : start + step]
        d = ((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
        d[:, ~present] = np.inf
        at = np.arange(len(y))
        n = counts[y]
        # the distance to the class mean without the sample: (n / (n - 1))^2 |x - m_c|^2
        d[at, y] = np.where(n > 1, d[at, y] * np.square(n / np.maximum(n - 1, 1)), np.inf)
        correct += int((d.argmin(axis=1) == y).sum())
    return correct / len(vectors)


def projection(vectors: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
    """A 2-D PCA projection (SVD of the centered vectors) of at most
    :data:`MAX_PROJECTED_POINTS` samples, evenly spaced: ``{"points": [[x, y, class
    index]...], "explained": [share of the variance on each axis]}``; None when there
    are fewer than two samples or no variance."""
    if len(vectors) < 2:
        return None
    centered = vectors - vectors.mean(axis=0)
    try:
        _, s, vt = np.linalg.svd(centered, full_matrices=False)
    except np.linalg.LinAlgError:
        return None
    total = float((s * s).sum())
    if total <= 0 or not np.isfinite(total):
        return None
    axes = vt[:2]
    xy = centered @ axes.T
    if xy.shape[1] == 1:
        xy = np.concatenate([xy, np.zeros_like(xy)], axis=1)
    pick = np.unique(np.linspace(0, len(xy) - 1, min(len(xy), MAX_PROJECTED_POINTS)).round().astype(int))
    explained = [float(v * v / total) for v in s[:2]] + [0.0] * (2 - len(s[:2]))
    return {
        "points": [[float(xy[i, 0]), float(xy[i, 1]), int(labels[i])] for i in pick],
        "explained": explained,
    }


class OutputSeparability:
    """What one output keeps: its :class:`ClassMoments` and, while the budget allows,
    its pooled vectors with their labels."""

    def __init__(self) -> None:
        self.moments = ClassMoments()
        self.pooled: list[np.ndarray] | None = []
        self.labels: list[Any] = []
        self.note: str | None = None
        self.nonfinite = False

    def add(self, vectors: np.ndarray, labels: Sequence[Any], budget: Budget) -> None:
        if self.nonfinite:
            return
        if not np.isfinite(vectors).all():  # NaN or Inf: no figure would mean anything
            self.nonfinite = True
            self.moments = ClassMoments()
            if self.pooled:
                budget.give(sum(p.nbytes for p in self.pooled))
            self.pooled, self.labels = None, []
            self.note = "not computed: the output holds NaN or Inf"
            return
        self.moments.add(vectors, labels)
        if self.pooled is None:
            return
        if not budget.take(vectors.nbytes):
            budget.give(sum(p.nbytes for p in self.pooled))
            self.pooled = None
            self.labels = []
            self.note = (
                f"accuracy not computed: the pooled sample vectors of the run passed the "
                f"{budget.limit // (1 << 20):,} MiB budget"
            )
            return
        self.pooled.append(vectors)
        self.labels.extend(labels)

    def pooled_indices(self, classes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """``(vectors, class indices into classes)``, or None when not pooled."""
        if self.pooled is None or not self.pooled:
            return None
        index = {c: i for i, c in enumerate(classes)}
        return np.concatenate(self.pooled), np.asarray([index[v] for v in self.labels], dtype=np.int64)

    def result(self, classes: Sequence[Any]) -> dict[str, Any]:
        """``{"accuracy", "chance", "fisher"}`` (and ``note`` when accuracy is None)."""
        counts = [self.moments.count.get(c, 0) for c in classes]
        total = sum(counts)
        out: dict[str, Any] = {
            "accuracy": None,
            "chance": max(counts) / total if total else None,
            "fisher": None if self.nonfinite else self.moments.fisher(),
        }
        pooled = self.pooled_indices(classes)
        if pooled is not None:
            out["accuracy"] = loo_accuracy(pooled[0], pooled[1], len(classes))
        elif self.note is not None:
            out["note"] = self.note
        return out


class Budget:
    """Bytes of pooled vectors all outputs of a run may hold together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n
