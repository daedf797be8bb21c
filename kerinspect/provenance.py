"""Where a report's figures come from: the model file and how it was loaded
(:class:`ModelInfo`), the inputs it was fed (:class:`InputRecord`), and the process that
opened it (:class:`Isolation`).

Shared by every report (:mod:`kerinspect.report`, :mod:`kerinspect.check_results`,
:mod:`kerinspect.diff`), which import them from here; ``kerinspect.report`` re-exports
them. Frozen dataclasses of builtins with generated JSON (:mod:`kerinspect.records`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .records import Record, meta


@dataclass(frozen=True)
class ModelInfo(Record):
    """What was inspected: the file, its format and the loader that read it.

    ``loader`` is ``keras``, or ``keras+legacy-h5-upgrade`` (a legacy ``.h5``) /
    ``keras+legacy-archive-upgrade`` (a tf.keras 2.13-2.15 ``.keras``) when a Keras 2
    config was rewritten for Keras 3 first; ``notes`` lists what was changed."""

    name: str
    class_name: str
    path: str | None
    format: str
    params: int
    trainable_params: int
    keras_version: str
    loader: str = "keras"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputRecord(Record):
    """One model input as it was fed: its name, full shape, dtype and origin.

    ``source`` is ``"synthetic"`` (generated with ``seed`` from what the model knows
    about its data), the path of the file, folder or glob it came from as the user
    wrote it, or ``"array"``. ``note`` says what every synthetic input was drawn from
    (``"uniform [0, 255]: the model rescales by 1/255 (Rescaling 'rescaling')"``,
    ``"standard normal: nothing in the model says what its data looks like"``), or how
    the user's data was decoded (``images: 120 PNG files in 3 label folders, resized to
    28×28, grayscale, pixels 0-255 (preprocess=none)``).

    For inputs read from files, set by the parent (never by the worker): ``path``, the
    resolved absolute path (or pattern), and ``sha256``, a hash of the content, over
    what ``sha256_of`` says (``"file"``, ``"files"`` of a folder or glob, or a
    ``"listing"`` of sizes and times for more than 1 GiB; see
    :mod:`kerinspect.input_digest`). None for synthetic inputs and arrays, in reports
    written before they existed, and when the files could not be read.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str
    seed: int | None = None
    note: str | None = None
    path: str | None = field(default=None, metadata=meta(omit_none=True))
    sha256: str | None = field(default=None, metadata=meta(omit_none=True))
    sha256_of: str | None = field(
        default=None, metadata=meta(omit_none=True, choices=(None, "file", "files", "listing"))
    )


@dataclass(frozen=True)
class Isolation(Record):
    """How the model file was opened.

    Attributes:
        worker: in a disposable, confined worker process (False: in this process,
            ``KERINSPECT_ISOLATION=off`` or an in-memory model).
        network_namespace: the worker had a private network namespace (no interface).
        socket_guard: the worker refused Python sockets (always, in a worker).
    """

    worker: bool
    network_namespace: bool = False
    socket_guard: bool = False

    @property
    def partial(self) -> bool:
        """A worker ran, but the kernel refused it a network namespace."""
        return self.worker and not self.network_namespace


def synthetic_text(inputs: tuple[InputRecord, ...] | list[InputRecord]) -> str:
    """What the synthetic ones of ``inputs`` were drawn from, in one line
    (``input 'x': standard normal: ...; input 'y': ...``); empty when none is synthetic.
    Unescaped: notes name the model's layers, so every view escapes it."""
    return "; ".join(
        f"input '{i.name}': {i.note or 'drawn from the signature'}" for i in inputs if i.source == "synthetic"
    )


def synthetic_warning(
    inputs: tuple[InputRecord, ...] | list[InputRecord], samples: int, where: str = ""
) -> str:
    """The one warning a command prints when it ran on synthetic inputs (empty when it
    did not): how many samples, what they were drawn from, and how to give data
    instead. ``where`` names the model (``check`` of several models)."""
    drawn = synthetic_text(inputs)
    if not drawn:
        return ""
    give = "give your data with --input" + (" or 'input' in the configuration" if where else "")
    return f"{where}ran on {samples:,} synthetic samples, not your data ({drawn}); {give}"
