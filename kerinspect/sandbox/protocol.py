"""The request the parent sends the worker: its schema, and its one validation.

The parent (:mod:`kerinspect.api`) builds a :class:`Request` and writes
``request.to_json()`` for the worker (:mod:`kerinspect.sandbox.runner`); the worker
(:mod:`kerinspect.sandbox.worker`) reads it back with :func:`parse_request`, which
checks every type and range. The job functions of :mod:`kerinspect.engine.jobs`
receive the typed :class:`Request`, never a raw dict. A request that does not parse
is a protocol error (exit 70): the parent wrote it, so it is a kerinspect bug.

Serialisation is generic (:class:`kerinspect.spec.Spec`): a new field of
:class:`~kerinspect.spec.RunSpec` travels without any edit here. Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kerinspect.errors import KerinspectError
from kerinspect.spec import LoadOptions, RunSpec, Spec, SpecError, one_of

#: The jobs of :data:`kerinspect.engine.jobs.JOBS`.
COMMANDS = ("inspect", "dump", "weights", "report", "diff", "gradients", "accumulate", "finish")
#: The messages the worker sends back (checked by :mod:`kerinspect.sandbox.runner`).
MESSAGE_TYPES = ("phase", "progress", "result", "error")


@dataclass(frozen=True)
class ModelRef(Spec):
    """The model file, as the parent's pre-flight found it.

    Attributes:
        path: absolute path the worker opens.
        format: ``"keras"`` or ``"h5"``.
        size: bytes.
        shown_path: the path as the user wrote it, for reports and messages.
    """

    path: str
    format: str = field(metadata=one_of("keras", "h5"))
    size: int = field(metadata={"min": 0})
    shown_path: str | None = None


@dataclass(frozen=True)
class InputsRef(Spec):
    """User inputs the worker can read: a file, a folder or a glob pattern the user
    named (checked by the parent to exist, be a regular file, or match), or in-memory
    arrays the parent saved without pickle to an ``.npz``.

    Attributes:
        kind: ``"file"``, ``"folder"``, ``"pattern"`` or ``"arrays"``.
        path: absolute path of the file or folder, or the absolute pattern.
        source: how the report names the inputs (the user's path, or ``"array"``).
        by_name: for ``arrays``: keyed by input name (else in ``model.inputs`` order).
    """

    kind: str = field(metadata=one_of("file", "folder", "pattern", "arrays"))
    path: str
    source: str
    by_name: bool = False


@dataclass(frozen=True)
class Request(Spec):
    """One job for the worker.

    Attributes:
        command: which job of :data:`kerinspect.engine.jobs.JOBS`.
        model: the model file.
        inputs: user inputs (None: synthetic).
        run: what to feed and how to judge it.
        load: how to open the file (the job uses ``trust_model``, ``custom_objects``
            (checked to exist by the parent), ``max_params``).
        write: ``dump``: the write job of :func:`kerinspect.dump.prepare_dump`
            (``plan["write"]``), passed through untouched; ``finish``: ``{"state_file":
            path}``, the merged statistics (:mod:`kerinspect.engine.session`).
        model_b: ``diff`` only: the second model file (compared with ``model``).
    """

    command: str = field(metadata=one_of(*COMMANDS))
    model: ModelRef
    inputs: InputsRef | None = None
    run: RunSpec = field(default_factory=RunSpec)
    load: LoadOptions = field(default_factory=LoadOptions)
    write: dict[str, Any] | None = None
    model_b: ModelRef | None = None


def parse_request(data: Any) -> Request:
    """The worker's one check of what the parent sent.

    Raises:
        KerinspectError: rule ``protocol``, exit 70, naming the bad field.
    """
    try:
        return Request.from_json(data)
    except SpecError as e:
        raise KerinspectError(
            f"The worker received a malformed request: {e.message}", rule="protocol"
        ) from None
