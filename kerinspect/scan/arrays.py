"""Input files (``--input`` ``.npy``/``.npz``) checked before numpy reads them.

Inputs are untrusted like models: an ``.npz`` is a zip that may inflate a thousandfold,
a ``.npy`` header may declare gigabytes it does not hold, and a dtype may be one no model
input can take (complex: casting drops the imaginary part; object: pickle). The checks
use the zip's central directory and the ``.npy`` headers only (standard library, no
numpy), so nothing is inflated before it passes. Runs in the worker, which then reads
only the rows asked for (:func:`kerinspect.engine.inputs.load_arrays`).
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from dataclasses import dataclass
from typing import IO

from kerinspect.errors import InputFileError, Message, ModelLoadError, PolicyError, escape_text, msg
from kerinspect.scan.container import Limits, Reporter, check_members
from kerinspect.scan.npy import NpyDtype, read_npy_header

#: numpy kinds a model input can hold: bool, integers, floats, fixed-width strings.
INPUT_KINDS = "biufSU"
_KIND_NAMES = {
    "c": "complex",
    "O": "object (Python objects: pickle)",
    "V": "void/structured",
    "M": "datetime",
    "m": "timedelta",
}


@dataclass(frozen=True)
class ArrayEntry:
    """One array of an input file, as its header declares it.

    Attributes:
        name: the ``.npz`` key (``arr_0`` for a ``.npy``).
        member: the zip member holding it (None for a ``.npy``).
        shape, fortran_order, dtype: from the ``.npy`` header.
        data_offset: where the data starts (a ``.npy`` file; 0 inside a zip member).
    """

    name: str
    member: str | None
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: NpyDtype
    data_offset: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def check_input_file(path: str, limits: Limits | None = None) -> list[ArrayEntry]:
    """The arrays of ``path`` if every check passes; one clear error otherwise.

    Raises:
        InputFileError: not a regular file, not ``.npy``/``.npz``, a bad header, a dtype
            no input can hold (exit 3).
        PolicyError: a zip bomb, or a header declaring more bytes than stored (exit 5).
    """
    limits = limits or Limits()
    where = _received(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InputFileError(
            f"Cannot open the input file: {e.strerror}. " + where, rule="input-unreadable"
        ) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError("The input is not a regular file. " + where, rule="input-unreadable")
        head = f.read(4)
        f.seek(0)
        if head == b"PK\x03\x04":
            entries = _npz_entries(f, limits, path)
        else:
            entries = [_npy_entry(f, st.st_size, path)]
    for entry in entries:
        if entry.dtype.kind not in INPUT_KINDS or entry.dtype.hasobject:
            what = _KIND_NAMES.get(entry.dtype.kind, str(entry.dtype))
            raise InputFileError(
                f"Input array '{escape_text(entry.name, 80)}' has dtype {entry.dtype} ({what}), which no model input "
                f"takes: it would be cast (dropping the imaginary part) or unpickled. " + where,
                rule="input-dtype",
                hint="convert it to a real dtype first, e.g. np.real(a).astype('float32')",
            )
    return entries


def _received(path: str) -> Message:
    """``Received: input=PATH``, ``input`` referenced as the parameter (the CLI: ``--input``)."""
    return msg("Received: {input}={shown}", shown=escape_text(path))


def _npy_entry(f: IO[bytes], size: int, path: str) -> ArrayEntry:
    try:
        shape, fortran, dtype = read_npy_header(f)
    except (ValueError, OSError, EOFError) as e:
        raise InputFileError(
            f"Cannot read the input file as .npy/.npz: {escape_text(str(e), 120)}. " + _received(path),
            rule="input-unreadable",
        ) from None
    offset = f.tell()
    entry = ArrayEntry("arr_0", None, shape, fortran, dtype, offset)
    if entry.nbytes > size - offset:
        raise PolicyError(
            f"The input .npy declares shape {shape} ({entry.nbytes:,} bytes) but holds {size - offset:,}. "
            + _received(path),
            rule="input-shape-bomb",
        )
    return entry


def _npz_entries(f: IO[bytes], limits: Limits, path: str) -> list[ArrayEntry]:
    rep = Reporter(None)
    where = " " + _received(path)
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputFileError(
            f"The input .npz is not a valid zip: {escape_text(str(e), 120)}." + where, rule="input-unreadable"
        ) from None
    entries = []
    with zf:
        infos = zf.infolist()
        try:
            check_members(infos, limits, rep, "the input .npz")
        except (PolicyError, InputFileError) as e:
            e.message_parts += where
            if e.rule == "zip-bomb":
                e.hint = "save it uncompressed (np.savez, not np.savez_compressed), or fewer samples"
            raise
        except ModelLoadError as e:  # malformed zip members
            raise InputFileError(e.message_parts + where, rule="input-unreadable") from None
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or "/" in name or "\\" in name:
                raise InputFileError(
                    f"The input .npz member '{escape_text(name, 80)}' is not a plain .npy entry." + where,
                    rule="input-unreadable",
                )
            try:
                with zf.open(info) as m:
                    shape, fortran, dtype = read_npy_header(m)
                    header = m.tell()
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise InputFileError(
                    f"The input .npz member '{escape_text(name, 80)}' is not a valid .npy array "
                    f"({escape_text(str(e), 120)})." + where,
                    rule="input-unreadable",
                ) from None
            entry = ArrayEntry(name[: -len(".npy")], name, shape, fortran, dtype)
            if entry.nbytes > info.file_size - header:
                raise PolicyError(
                    f"The input .npz member '{escape_text(name, 80)}' declares shape {shape} "
                    f"({entry.nbytes:,} bytes) but holds {max(0, info.file_size - header):,}." + where,
                    rule="input-shape-bomb",
                )
            entries.append(entry)
    return entries
