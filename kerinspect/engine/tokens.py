"""The words on attention axes: token ids of one sample, decoded with a vocabulary.

A vocabulary comes from the model (a ``TextVectorization``, ``StringLookup`` or
``IntegerLookup`` layer at any depth, in ``int`` output mode: its outputs are ids into
``get_vocabulary()``; a keras-hub task's ``preprocessor.tokenizer``) or from the
run's ``vocab`` file (:mod:`kerinspect.vocab`). :class:`TokenRecorder` watches a run
(its :class:`~kerinspect.engine.statistics.StatsCollector` forwards the events) and
keeps, for the sample a report draws (``RunSpec.sample``), each decoded sequence:

* the output ids of every vocabulary layer (what the layer maps to words);
* with a vocabulary from outside the graph (``vocab``, a keras-hub tokenizer): the
  ids of every integer model input of rank 2 (``(batch, sequence)``).

After the run, :meth:`TokenRecorder.tokens_for` gives an attention record's
:class:`~kerinspect.report.AttentionTokens`: the sequence whose length is the query
(key) axis' length. No such sequence (the axis was pooled or reshaped), or two that
disagree: that axis has no words, and ``reason`` says why (positions are shown).
Only eager batches are seen: under ``engine="auto"`` the batch that holds the sample
runs eagerly when a vocabulary applies (:meth:`TokenRecorder.wants`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerinspect.engine.events import CallSite
from kerinspect.engine.tensors import to_numpy
from kerinspect.report import AttentionRecord, AttentionTokens
from kerinspect.stats import numeric_kind

#: Layer classes whose ``int`` outputs index ``get_vocabulary()``.
VOCABULARY_LAYERS = ("TextVectorization", "StringLookup", "IntegerLookup")
#: Longest sequence decoded (longer axes show positions).
MAX_TOKENS = 4096


@dataclass(frozen=True)
class Vocabulary:
    """Token texts by id, the padding token's text, and where they come from;
    ``inputs``: for a vocabulary from outside the graph, the names of the inputs it
    decodes (empty: every integer input)."""

    texts: tuple[str, ...]
    pad: str | None
    source: str
    inputs: tuple[str, ...] = ()

    def decode(self, ids: Any) -> tuple[str, ...]:
        """The text of each id (an id outside the vocabulary: ``#id``)."""
        n = len(self.texts)
        return tuple(self.texts[i] if 0 <= i < n else f"#{i}" for i in (int(v) for v in ids))


def _text(token: Any) -> str:
    if isinstance(token, bytes):
        return token.decode("utf-8", "replace")
    return str(token.item() if hasattr(token, "item") else token)


def layer_vocabulary(layer: Any) -> Vocabulary | None:
    """The vocabulary of a lookup layer whose outputs are ids (None otherwise)."""
    if type(layer).__name__ not in VOCABULARY_LAYERS or not hasattr(layer, "get_vocabulary"):
        return None
    try:
        config = layer.get_config()
        if config.get("output_mode", "int") != "int" or config.get("invert", False):
            return None
        texts = tuple(_text(t) for t in layer.get_vocabulary())
    except Exception:  # noqa: BLE001 - a layer without a readable vocabulary shows positions
        return None
    if type(layer).__name__ == "TextVectorization":
        pad: str | None = texts[0] if texts else None  # '' : the padding id 0
    else:
        mask = config.get("mask_token")
        pad = None if mask is None else _text(mask)
    return Vocabulary(texts, pad, f"{type(layer).__name__} {layer.name!r}")


def outside_vocabulary(model: Any, path: str | None) -> Vocabulary | None:
    """The vocabulary of the model's integer inputs: the ``vocab`` file at ``path``,
    else a keras-hub task's tokenizer (None: neither). A model with an input named
    ``token_ids`` (keras-hub's) has it decoded, not its segment ids or masks."""
    names = tuple(str(getattr(t, "name", "")) for t in getattr(model, "inputs", None) or ())
    inputs = ("token_ids",) if "token_ids" in names else ()
    if path is not None:
        from kerinspect.vocab import read_vocabulary

        texts = read_vocabulary(path)
        return Vocabulary(texts, texts[0], f"vocab file {os.path.basename(path)}", inputs)
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "get_vocabulary"):
        return None
    try:
        texts = tuple(_text(t) for t in tokenizer.get_vocabulary())
    except Exception:  # noqa: BLE001 - a tokenizer without a readable vocabulary shows positions
        return None
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad = texts[pad_id] if isinstance(pad_id, int) and 0 <= pad_id < len(texts) else None
    return Vocabulary(texts, pad, f"{type(tokenizer).__name__} (the model's tokenizer)", inputs)


class TokenRecorder:
    """Keeps the decoded token sequences of one sample (see the module's docstring)."""

    def __init__(
        self, sample: int, outside: Vocabulary | None = None, held: Vocabulary | None = None
    ) -> None:
        self.sample = sample
        self.outside = outside
        self.held = held  # the vocabulary of a layer the model holds (known before it runs)
        self.layers: dict[int, Vocabulary] = {}  # site index -> the vocabulary of its outputs
        self.sequences: list[tuple[Vocabulary, tuple[str, ...]]] = []
        self.offset = 0
        self.rows = 0
        self.seen = 0

    @classmethod
    def for_model(cls, model: Any, sample: int, vocab: str | None) -> TokenRecorder:
        """The recorder of a run of ``model`` drawing ``sample``, with the ``vocab`` file."""
        from kerinspect.engine.keras_adapter import all_layers

        held = next((v for v in map(layer_vocabulary, all_layers(model)) if v is not None), None)
        return cls(sample, outside_vocabulary(model, vocab), held)

    @property
    def active(self) -> bool:
        """Whether any vocabulary applies to this run."""
        return self.outside is not None or self.held is not None or bool(self.layers)

    def wants(self, rows: int) -> bool:
        """Whether the next batch, of ``rows`` samples, holds the sample whose ids are
        decoded (the compiled engine hands over no tensors: that batch runs eagerly)."""
        return self.active and self.seen <= self.sample < self.seen + rows

    def start_batch(self, rows: int) -> None:
        self.offset, self.rows = self.seen, rows
        self.seen += rows

    def consumed(self, site: CallSite, op: Any) -> None:
        if site.index not in self.layers:
            vocabulary = layer_vocabulary(op)
            if vocabulary is not None:
                self.layers[site.index] = vocabulary

    def produced(self, site: CallSite, tensors: Any) -> None:
        row = self.sample - self.offset
        if not 0 <= row < self.rows:
            return
        vocabulary = self.layers.get(site.index)
        outside = self.outside
        if vocabulary is None and site.class_name == "InputLayer" and outside is not None:
            vocabulary = outside if not outside.inputs or site.name in outside.inputs else None
        if vocabulary is None:
            return
        for t in tensors:
            if t is None or not hasattr(t, "shape"):
                continue
            arr = to_numpy(t)
            if arr.ndim == 2 and arr.shape[0] == self.rows and numeric_kind(arr.dtype) == "int":
                if arr.shape[1] <= MAX_TOKENS:
                    self.sequences.append((vocabulary, vocabulary.decode(np.asarray(arr[row]))))

    def _axis(self, n: int) -> tuple[tuple[Vocabulary, tuple[str, ...]] | None, str | None]:
        """The one decoded sequence of length ``n``, or why there is none."""
        found = [(v, s) for v, s in self.sequences if len(s) == n]
        if not self.sequences and self.sample >= self.seen:
            return None, f"the run had {self.seen} samples, no sample {self.sample}"
        if not self.sequences:
            return None, "the sample's token ids were not seen (its batch ran on the compiled engine)"
        if not found:
            lengths = ", ".join(map(str, sorted({len(s) for _, s in self.sequences})))
            return None, f"no token sequence of length {n} (the sample's have length {lengths})"
        if len({s for _, s in found}) > 1:
            return None, f"{len(found)} different token sequences of length {n}"
        return found[0], None

    def tokens_for(self, record: AttentionRecord) -> AttentionTokens | None:
        """The words on ``record``'s axes (None: no vocabulary applies to this run)."""
        if not self.active or record.status != "ok" or len(record.shape) != 4:
            return None
        (query, why_q), (key, why_k) = self._axis(record.shape[2]), self._axis(record.shape[3])
        used = query or key
        if why_q is not None and why_q == why_k:
            reasons = [why_q]
        else:
            reasons = [f"{axis}: {why}" for axis, why in (("queries", why_q), ("keys", why_k)) if why]
        vocabulary = used[0] if used else (self.outside or self.held or next(iter(self.layers.values())))
        return AttentionTokens(
            sample=self.sample,
            vocabulary=vocabulary.source,
            query=query[1] if query else None,
            key=key[1] if key else None,
            pad=vocabulary.pad,
            reason="; ".join(reasons) or None,
        )


__all__ = [
    "MAX_TOKENS",
    "VOCABULARY_LAYERS",
    "TokenRecorder",
    "Vocabulary",
    "layer_vocabulary",
    "outside_vocabulary",
]
