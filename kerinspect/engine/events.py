"""What the replay tells a visitor, typed: one call site, and every event it can send.

:class:`~kerinspect.engine.trace.Replayer` runs a model and reports each call of each
operation to a :class:`Visitor`; :func:`~kerinspect.engine.batches.run_batches` adds the
batch boundaries; the compiled engine (:mod:`kerinspect.engine.compiled`) records the
same events inside a trace and plays them back. Every event has a no-op default here,
so a visitor overrides the ones it needs and the replay calls each one directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kerinspect.engine.attention import Capture


@dataclass(frozen=True)
class CallSite:
    """One call of one operation, as the report will name it.

    ``in_graph`` is True for a node of a functional graph (what the graph replay
    runs), False for a layer called inside another layer's ``call`` (seen through
    the ``Layer.__call__`` hook). ``called`` is False for a sub-layer its parent
    built but did not call (it gets no ``produced`` event).
    """

    index: int  # position in call order across the whole (nested) run
    path: str
    name: str
    class_name: str
    call: int
    params: int
    depth: int
    container: bool
    output_names: tuple[str, ...]
    parent: str | None = None
    in_graph: bool = True
    called: bool = True


class Visitor:
    """Receives the events of a run, in this order for each call: :meth:`enter`,
    :meth:`consumed`, :meth:`arguments`, (:meth:`attention`), :meth:`produced`,
    (:meth:`model_output`); each batch between :meth:`start_batch` and :meth:`end_batch`.
    Every method does nothing unless overridden."""

    def start_batch(self, rows: int) -> None:
        """A batch of ``rows`` samples is about to run (eager batches and compiled ones)."""

    def end_batch(self) -> None:
        """The batch's calls have all been reported."""

    def batch_labels(self, labels: Any) -> None:
        """Before :meth:`start_batch`: the labels of the batch's samples (an array, one
        per sample), or None when the data holds none. Never fed to the model."""

    def enter(self, site: CallSite) -> None:
        """Before the operation runs (for a nested model: before its layers); also for a
        sub-layer its parent built but did not call (``site.called`` is False)."""

    def consumed(self, site: CallSite, op: Any, inputs: Sequence[Any]) -> None:
        """The operation and the tensors the call receives (flattened)."""

    def arguments(self, site: CallSite, op: Any, args: Any, kwargs: dict[str, Any]) -> None:
        """The call's own positional and keyword arguments (graph nodes and inner layer
        calls): what a shadow re-run of the call needs (see ``Replayer.quietly``)."""

    def attention(self, site: CallSite, capture: Capture) -> None:
        """Before :meth:`produced`, for every call of an attention layer: its
        probabilities (:class:`~kerinspect.engine.attention.Capture`)."""

    def produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        """The call's flattened outputs, once they exist (None for an absent optional one)."""

    def model_output(self, site: CallSite, k: int) -> None:
        """Output ``k`` of ``site`` is one of the top model's own outputs."""

    def gate(self) -> list[Any]:
        """In a traced run only: graph operations the next call must wait for (see
        ``Replayer._gated``); none by default."""
        return []
