"""Activations to ``.npy`` files plus a ``manifest.json``, safely.

A dump is made in three phases that may run in different processes and share
only files and plain (JSON-able) data, so that the process that runs the model
never holds a handle on the real output directory (SAFETY.md R6):

1. :func:`prepare_dump` (parent, no TensorFlow; :mod:`kerinspect.dump.plan`):
   lock down ``DIR`` (refuse a symlink, a non-empty directory unless
   ``overwrite``, and with ``overwrite`` anything but kerinspect's own previous
   dump) and create a private staging directory inside it, so that the final
   renames stay on one filesystem. Returns the *plan*.
2. :func:`write_dump` (the process that runs the model;
   :mod:`kerinspect.engine.dump_writer`): replay the model batch by batch,
   write one preallocated ``.npy`` per selected tensor, and the inputs used,
   into the staging directory only. Returns a manifest *draft*.
3. :func:`publish_dump` (parent, no TensorFlow; :mod:`kerinspect.dump.publish`):
   treat the staged files as untrusted and check each one, move them to their
   final names without overwriting anything that is not the previous dump's,
   ``fsync``, write ``manifest.json`` last. :func:`abort_dump` undoes a run
   that failed before.

A dump is complete if and only if its ``manifest.json`` exists. File names are
``{index:04d}[-{output}]_{slug}_{hash8}.npy`` (:mod:`kerinspect.dump.layout`):
never a layer name, whose exact text lives only in the manifest.
:func:`load_dump` (:mod:`kerinspect.dump.read`) reads a finished dump.

Importing this package imports neither numpy nor Keras: :func:`write_dump`,
:class:`Dump` and :func:`load_dump` are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kerinspect.dump.layout import (
    DEFAULT_MAX_BYTES,
    DUMP_FORMAT,
    DUMP_SCHEMA_VERSION,
    INPUTS_DIR,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    STAGING_PREFIX,
    input_file_name,
    slug,
    tensor_file_name,
)
from kerinspect.dump.plan import file_sha256, prepare_dump
from kerinspect.dump.publish import abort_dump, publish_dump
from kerinspect.units import format_bytes, parse_size

if TYPE_CHECKING:
    from kerinspect.dump.read import Dump, load_dump
    from kerinspect.engine.dump_writer import write_dump

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DUMP_FORMAT",
    "DUMP_SCHEMA_VERSION",
    "INPUTS_DIR",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "STAGING_PREFIX",
    "Dump",
    "abort_dump",
    "file_sha256",
    "format_bytes",
    "input_file_name",
    "load_dump",
    "parse_size",
    "prepare_dump",
    "publish_dump",
    "slug",
    "tensor_file_name",
    "write_dump",
]

#: name -> module, imported on first use (numpy for the reader, Keras for the writer)
_LAZY = {
    "Dump": "kerinspect.dump.read",
    "load_dump": "kerinspect.dump.read",
    "write_dump": "kerinspect.engine.dump_writer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kerinspect.dump' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
