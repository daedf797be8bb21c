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

    ``source`` is ``"synthetic"`` (generated from the signature with ``seed``) or
    the path of the file, folder or glob it came from as the user wrote it, or
    ``"array"``. ``note`` says how synthetic values were drawn when the signature
    alone would mislead (a float input drawn as token ids for the ``Embedding`` it
    feeds), or how the user's data was decoded (``images: 120 PNG files in 3 label
    folders, resized to 28×28, grayscale, pixels 0-255 (preprocess=none)``).

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
