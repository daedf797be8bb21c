"""What the user's ``--input`` was, in the parent: its resolved path and a content hash.

A report's inputs say where they came from (:class:`kerinspect.provenance.InputRecord`);
``kerinspect check`` compares them with the baseline's by content, not by how the path
was written (``./x.npz``, ``x.npz`` and ``data/x.npz`` from another folder are one file).
The parent computes this before the worker starts and sets it on the report after the
worker returns (the worker runs model code: it could claim any hash).

``sha256`` is, by ``sha256_of``:

``"file"``
    the SHA-256 of the file's bytes (one ``.npy``/``.npz``/image/CSV file);
``"files"``
    for a folder or a glob: the SHA-256 of the lines ``<relative path>\\0<file sha256>\\n``
    over every regular file, sorted by relative path (``/``-separated; relative to the
    folder, or to the pattern's folder before its first wildcard), so the same files
    elsewhere give the same digest;
``"listing"``
    when the files hold more than :data:`MAX_HASHED_BYTES` together: the SHA-256 of the
    lines ``<relative path>\\0<size>\\0<mtime in ns>\\n`` (a cheap stand-in: it changes
    when a file is replaced or touched, and never equals a content hash).

Stdlib only (``hashlib``, streamed): the parent never imports numpy on the CLI path.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from dataclasses import dataclass

#: Above this many bytes in all, inputs are fingerprinted by their listing, not hashed.
MAX_HASHED_BYTES = 1 << 30
#: Most files a folder or glob digest visits (beyond that: no digest).
MAX_FILES = 1_000_000

SHA256_OF = ("file", "files", "listing")


@dataclass(frozen=True)
class InputDigest:
    """The resolved ``path`` of the inputs and their ``sha256`` (``sha256_of`` says over
    what; both None when the files could not be read: the worker reports that)."""

    path: str
    sha256: str | None = None
    sha256_of: str | None = None


def digest_inputs(kind: str, path: str) -> InputDigest:
    """The digest of a ``file``, ``folder`` or ``pattern`` (an absolute path or pattern,
    as :class:`kerinspect.sandbox.protocol.InputsRef` holds it). Never raises for a file
    that cannot be read: its digest is unknown."""
    try:
        if kind == "file":
            fd = _open_regular(path)
            if fd is None:
                return InputDigest(path)
            st = os.fstat(fd)
            if st.st_size > MAX_HASHED_BYTES:
                os.close(fd)
                return InputDigest(path, _listing([(os.path.basename(path), st)]), "listing")
            return InputDigest(path, _sha256_fd(fd), "file")
        files = _folder_files(path) if kind == "folder" else _pattern_files(path)
        if files is None:
            return InputDigest(path)
        stats = []
        for rel, full in files:
            try:
                st = os.stat(full)
            except OSError:
                return InputDigest(path)
            if stat.S_ISREG(st.st_mode):
                stats.append((rel, full, st))
        if sum(st.st_size for _, _, st in stats) > MAX_HASHED_BYTES:
            return InputDigest(path, _listing([(rel, st) for rel, _, st in stats]), "listing")
        h = hashlib.sha256()
        for rel, full, _ in stats:
            fd = _open_regular(full)
            if fd is None:
                return InputDigest(path)
            h.update(f"{rel}\0{_sha256_fd(fd)}\n".encode("utf-8", "surrogateescape"))
        return InputDigest(path, h.hexdigest(), "files")
    except OSError:
        return InputDigest(path)


def _open_regular(path: str) -> int | None:
    """A read descriptor on ``path`` if it is a regular file (opened non-blocking: a FIFO
    swapped in never hangs the parent), else None."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _sha256_fd(fd: int) -> str:
    with open(fd, "rb") as f:  # closes fd
        return hashlib.file_digest(f, "sha256").hexdigest()


def _listing(entries: list[tuple[str, os.stat_result]]) -> str:
    h = hashlib.sha256()
    for rel, st in entries:
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _posix(rel: str) -> str:
    return rel.replace(os.sep, "/")


def _folder_files(folder: str) -> list[tuple[str, str]] | None:
    """Every file under ``folder`` (symlinked folders not entered), sorted by relative path."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in names:
            full = os.path.join(root, name)
            found.append((_posix(os.path.relpath(full, folder)), full))
            if len(found) > MAX_FILES:
                return None
    return sorted(found)


def _pattern_files(pattern: str) -> list[tuple[str, str]] | None:
    """The files ``pattern`` matches (``**`` recursive), relative to its folder before the
    first wildcard, sorted."""
    parts = pattern.split(os.sep)
    fixed = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))
    base = os.sep.join(parts[:fixed]) or os.sep
    found = []
    for full in glob.iglob(pattern, recursive=True):
        if os.path.isfile(full):
            found.append((_posix(os.path.relpath(full, base)), full))
            if len(found) > MAX_FILES:
                return None
    return sorted(found)
