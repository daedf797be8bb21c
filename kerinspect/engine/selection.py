"""Choosing tensors by layer path, as ``dump`` and :func:`kerinspect.activations` do.

:class:`SelectingVisitor` is what the dump writer (:mod:`kerinspect.engine.dump_writer`)
and the in-memory arrays (:mod:`kerinspect.engine.activations`) share: layer paths
matched against glob patterns, each selected output named by :func:`tensor_key`, and
the tensors after the first batch (``fetch_keys``) that the compiled engine may return.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerinspect.dump.layout import STORED_KINDS
from kerinspect.engine.events import CallSite, Visitor
from kerinspect.errors import UsageError, escape_text, msg
from kerinspect.stats import numeric_kind


def tensor_key(path: str, names: Sequence[str], k: int, index: int, keys: set[str]) -> str:
    """The key of output ``k`` of the call at ``path`` (``index`` in call order), as
    dumps and :func:`kerinspect.activations` name it: the path for a single-output
    call, ``path:output`` otherwise (``lstm:state_h``, ``att:attention_scores``),
    ``#index`` added when it is already in ``keys`` (hostile names can collide:
    ``x@1`` and x's second call). The key is added to ``keys``."""
    key = path if len(names) == 1 else f"{path}:{names[k]}"
    if key in keys:
        key = f"{key}#{index}"
    keys.add(key)
    return key


def storable(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` as it will be stored: numbers and bools as-is (float16 too),
    bfloat16/float8 (ml_dtypes) upcast to float32; None when it cannot be stored
    without pickle (strings, objects)."""
    kind = arr.dtype.kind
    if kind in STORED_KINDS:
        return arr
    if kind == "V" and numeric_kind(arr.dtype) == "float":
        return arr.astype(np.float32)
    return None


class SelectingVisitor(Visitor):
    """What the dump writer and the in-memory activations share: layer paths selected by
    glob patterns (remembering which patterns matched), and errors raised while the model
    runs kept (``error``) for ``end_batch`` to re-raise, so that Keras's call wrappers
    cannot rewrap them. Subclasses define ``_produced(site, tensors)`` and fill
    ``slots``, keyed by ``(site index, output)``, in the first batch.

    After the first batch, the compiled engine (:class:`~kerinspect.engine.compiled.Chooser`)
    can run the rest: its traced function returns the tensors of ``fetch_keys()`` alone,
    and this visitor sees the same calls with those tensors (None for the others)."""

    def __init__(self, patterns: Sequence[str]):
        self.patterns = list(patterns)
        self.matched: set[str] = set()
        self.first = True
        self.rows = 0
        self.row0 = 0
        self.error: BaseException | None = None
        self.paths: list[str] = []  # every layer call's path, in call order (first batch)
        self.slots: dict[tuple[int, int], Any] = {}  # each has row_bytes

    def start_batch(self, rows: int) -> None:
        self.rows = rows

    def enter(self, site: CallSite) -> None:
        if self.first:
            self.paths.append(site.path)

    def fetch_keys(self) -> list[tuple[int, int]]:
        """The ``(site index, output)`` of the tensors written after the first batch."""
        return list(self.slots)

    def fetch_bytes(self) -> int:
        """Bytes of those tensors in a batch of the first batch's size."""
        return self.rows * sum(int(s.row_bytes) for s in self.slots.values())

    def _selected(self, path: str) -> bool:
        if not self.patterns:
            return True
        hit = [p for p in self.patterns if fnmatch.fnmatchcase(path, p)]
        self.matched.update(hit)
        return bool(hit)

    def check_matched(self, paths: Sequence[str]) -> None:
        """Raise ``layers-no-match`` for the first pattern that matched no layer call,
        listing the ``paths`` there are."""
        unmatched = [p for p in self.patterns if p not in self.matched]
        if not unmatched:
            return
        raise UsageError(
            msg(
                "{layers} pattern {first!r} matches no layer call. Received: {layers}={given!r}. Layer paths: {paths}",
                first=escape_text(unmatched[0], 100),
                given=[escape_text(p, 100) for p in self.patterns],
                paths=", ".join(escape_text(p, 60) for p in paths),
            ),
            rule="layers-no-match",
        )

    def produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        if self.error is not None:
            return
        try:
            self._produced(site, tensors)
        except Exception as e:  # noqa: BLE001 - re-raised by end_batch, outside Keras's wrappers
            self.error = e

    def _produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        raise NotImplementedError
