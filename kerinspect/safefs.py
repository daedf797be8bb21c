"""Filesystem helpers that never follow a symlink nor replace what they did not write.

Standard library only. Used by the dump's three phases (:mod:`kerinspect.dump`,
:mod:`kerinspect.engine.dump_writer`) and by the CLI's own file writes
(:func:`write_file_atomic`). Directories are opened with ``O_NOFOLLOW`` and
checked by ``(st_dev, st_ino)``; files are created with ``O_EXCL``; moves go
through ``link`` + ``unlink`` so they cannot replace an existing name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from typing import Any

from kerinspect.errors import OutputError, escape_text

#: ``open`` flags: a directory (never a symlink), a new file, an existing file (never a symlink).
O_DIR = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def os_reason(e: OSError) -> str:
    """``"No space left on device (ENOSPC)"``: an OSError as a reason in a message."""
    if e.errno is not None:
        return f"{e.strerror or os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})"
    return str(e) or type(e).__name__


def open_dir(path: str, expect: Sequence[int] | None = None, *, dir_fd: int | None = None) -> int:
    """Open a directory without following a symlink; check it is the one expected
    (``expect``: its ``[st_dev, st_ino]``)."""
    fd = os.open(path, O_DIR, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or (expect is not None and [st.st_dev, st.st_ino] != list(expect)):
        os.close(fd)
        raise OSError(errno.ESTALE, "the directory was replaced during the run")
    return fd


def subdir(parent_fd: int, name: str, *, create: bool) -> tuple[int, bool]:
    """Open directory ``name`` of ``parent_fd`` (made first if ``create``); also say whether it was made."""
    made = False
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            made = True
        except FileExistsError:
            pass
    return open_dir(name, dir_fd=parent_fd), made


def rmtree_at(dir_fd: int, name: str) -> None:
    """Remove directory ``name`` (relative to ``dir_fd``) and its contents, never
    following a symlink (fd-based ``shutil.rmtree``, safe against symlink swaps)."""
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - not on Linux
        raise OSError(errno.ENOTSUP, "no symlink-safe rmtree on this platform")
    shutil.rmtree(name, dir_fd=dir_fd)


def split_rel(rel: str) -> tuple[str | None, str]:
    """``"inputs/x.npy"`` -> (``"inputs"``, ``"x.npy"``); ``"x.npy"`` -> (None, ``"x.npy"``)."""
    head, _, tail = rel.rpartition("/")
    return (head or None), tail


def move_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Move a file between directories without ever replacing ``dst``."""
    try:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        try:  # a filesystem without hard links: check, then rename (a small race, no better option)
            os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            return
        raise FileExistsError(errno.EEXIST, "File exists", dst) from None
    os.unlink(src, dir_fd=src_fd)


def sha256_at(dfd: int, rel: str) -> str:
    """SHA-256 of file ``rel`` (``name`` or ``dir/name``) under ``dfd``, no symlink followed."""
    head, name = split_rel(rel)
    parent = open_dir(head, dir_fd=dfd) if head else dfd
    try:
        fd = os.open(name, O_READ, dir_fd=parent)
    finally:
        if head:
            os.close(parent)
    with open(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_all(fd: int, data: Any, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset``; a short write is retried, never ignored."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view, offset = view[n:], offset + n


def preallocate(fd: int, length: int) -> None:
    """Reserve ``length`` bytes, so a full disk fails here rather than mid-run."""
    if length <= 0:
        return
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, length)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    os.ftruncate(fd, length)


def write_file_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory,
    so a reader never sees half a file.

    Raises:
        OutputError: the file cannot be written (rule ``output-unwritable``, exit 7).
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".kerinspect-", suffix=".tmp", dir=directory)
    except OSError as e:
        raise OutputError(
            f"Cannot write {escape_text(path)}: {e.strerror}.", rule="output-unwritable"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(
            f"Cannot write {escape_text(path)}: {e.strerror}.", rule="output-unwritable"
        ) from None


class ReadRefused(Exception):
    """:func:`read_regular` could not or would not read a file; ``reason`` is a phrase
    for the caller's own error (which knows the file's role and its exit code)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind  # "missing", "not-regular", "too-large", "unreadable"
        self.reason = reason


def check_regular(path: str) -> os.stat_result:
    """``stat`` of ``path`` (symlinks followed once, as ``open`` does) if it is a
    regular file, through a non-blocking open: a FIFO or device never blocks the
    caller, even one swapped in after a check. Raises :class:`ReadRefused`."""
    fd = _open_nonblocking(path)
    try:
        return _fstat_regular(fd)
    finally:
        os.close(fd)


def read_regular(path: str, max_bytes: int) -> bytes:
    """All of ``path``'s bytes, for files the parent reads from a repository or a shared
    folder (a baseline, a config file): a regular file only, opened non-blocking, at most
    ``max_bytes`` read whatever ``st_size`` claims (``/dev/zero`` and a file that grows
    while read end in :class:`ReadRefused`, never in unbounded memory or a hang)."""
    fd = _open_nonblocking(path)
    try:
        st = _fstat_regular(fd)
        if st.st_size > max_bytes:
            raise ReadRefused("too-large", f"it is {st.st_size:,} bytes, above the {max_bytes:,}-byte limit")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ReadRefused("too-large", f"it holds more than the {max_bytes:,}-byte limit")
        return b"".join(chunks)
    except OSError as e:
        raise ReadRefused("unreadable", f"it cannot be read: {os_reason(e)}") from None
    finally:
        os.close(fd)


def open_regular(path: str) -> Any:
    """``path`` opened for reading in binary mode if it is a regular file (symlinks
    followed once), through a non-blocking open then ``fstat`` of that descriptor: a
    FIFO or device never blocks the caller. Raises :class:`ReadRefused`."""
    fd = _open_nonblocking(path)
    try:
        _fstat_regular(fd)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_nonblocking(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ReadRefused("missing", "it does not exist") from None
    except OSError as e:
        raise ReadRefused("unreadable", f"it cannot be opened: {os_reason(e)}") from None


def _fstat_regular(fd: int) -> os.stat_result:
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise ReadRefused("not-regular", "it is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ReadRefused("not-regular", "it is not a regular file (a FIFO, device or socket)")
    return st
