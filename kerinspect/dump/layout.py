"""The on-disk layout of a dump: its constants, file names and manifest.

Shared by every phase (plan, the writer in the worker, publish, the reader).
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import unicodedata
from typing import Any

from kerinspect.errors import Message, escape_text, msg
from kerinspect.safefs import O_READ

#: Layout of ``manifest.json``; bumped on incompatible changes.
DUMP_SCHEMA_VERSION = 1
DUMP_FORMAT = "kerinspect-dump"
MANIFEST = "manifest.json"
INPUTS_DIR = "inputs"
STAGING_PREFIX = ".kerinspect-staging-"
#: Default limit on the bytes one dump may write (tensors and inputs).
DEFAULT_MAX_BYTES = 2 << 30
#: Largest manifest read back (a previous dump's, or by :func:`~kerinspect.dump.load_dump`).
MAX_MANIFEST_BYTES = 64 << 20
#: numpy kinds of stored tensors: numbers and bools (``np.load(allow_pickle=False)``
#: reads them as they were); inputs may also be fixed-width strings.
STORED_KINDS = "biufc"
INPUT_KINDS = STORED_KINDS + "US"
#: Inside the staging dir: the previous dump, while publishing.
PREVIOUS = ".previous"

_FILE_RE = re.compile(r"[0-9]{2,}(-[0-9]+)?_[A-Za-z0-9._-]{1,64}_[0-9a-f]{8}\.npy")


def slug(text: str) -> str:
    """A file-name-safe fragment of ``text``: ASCII letters, digits, ``._-``; at most 64
    characters; never empty, never starting or ending with ``.``, ``_`` or ``-``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", unicodedata.normalize("NFC", text))[:64].strip("._-")
    return s or "layer"


def _hash8(*parts: object) -> str:
    text = "\x00".join(str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def tensor_file_name(index: int, output: int, n_outputs: int, path: str, output_name: str) -> str:
    """The file of output ``output`` of the layer call numbered ``index``.

    Unique by construction (the index and output number lead the name), even
    case-insensitively; the slug is only a reading aid and the hash tells apart
    names that slug the same.
    """
    label = path if n_outputs == 1 else f"{path}:{output_name}"
    lead = f"{index:04d}" if n_outputs == 1 else f"{index:04d}-{output}"
    return f"{lead}_{slug(label)}_{_hash8(index, path, output)}.npy"


def input_file_name(i: int, name: str) -> str:
    return f"{i:02d}_{slug(name)}_{_hash8('input', i, name)}.npy"


def is_own_file(rel: str) -> bool:
    """``rel`` is a name kerinspect gives its files (``X.npy`` or ``inputs/X.npy``)."""
    parts = rel.split("/")
    if len(parts) == 2 and parts[0] == INPUTS_DIR:
        parts = parts[1:]
    return len(parts) == 1 and _FILE_RE.fullmatch(parts[0]) is not None


def show_path(path: str) -> str:
    """A path for a message."""
    return escape_text(path, 200)


def received_out(shown: str) -> Message:
    """`` Received: out=DIR``, the end of a message about the output directory ``shown``
    (:func:`show_path`), ``out`` referenced as the parameter (the CLI says ``--out``)."""
    return msg(" Received: {out}={shown}", shown=shown)


def read_manifest_at(dfd: int) -> dict[str, Any]:
    """The ``manifest.json`` in directory ``dfd`` (no symlink, bounded size).

    Raises:
        OSError: it cannot be opened (FileNotFoundError: there is none).
        ValueError: it is not a kerinspect dump manifest.
    """
    fd = os.open(MANIFEST, O_READ, dir_fd=dfd)
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
            raise ValueError("not a regular file of a sane size")
        data = json.loads(f.read(MAX_MANIFEST_BYTES + 1))
    if not isinstance(data, dict) or data.get("format") != DUMP_FORMAT:
        raise ValueError("not a kerinspect dump manifest")
    return data
