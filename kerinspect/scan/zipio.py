"""Read a stored (uncompressed) zip member in place, as a seekable file.

Keras stores ``model.weights.h5`` uncompressed inside a ``.keras`` archive; h5py
reads file-like objects, so the weights can be opened without copying them out.
Used by the static scan and by ``kerinspect weights``.
"""

from __future__ import annotations

import io
import struct
import zipfile
from typing import IO, Any

LOCAL_HEADER = b"PK\x03\x04"
LOCAL_HEADER_SIZE = 30


class ZipWindow(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``start`` of a binary file."""

    def __init__(self, f: IO[bytes], start: int, size: int):
        super().__init__()
        self._f = f
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        memoryview(b).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)


def stored_member_start(f: IO[bytes], info: zipfile.ZipInfo) -> int | None:
    """Where the data of a stored member starts in ``f``, from its local header; None
    when the header is missing or not a local file header (a corrupt archive)."""
    f.seek(info.header_offset)
    header = f.read(LOCAL_HEADER_SIZE)
    if len(header) != LOCAL_HEADER_SIZE or header[:4] != LOCAL_HEADER:
        return None
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + LOCAL_HEADER_SIZE + name_len + extra_len
