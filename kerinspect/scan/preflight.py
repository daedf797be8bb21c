"""Pre-flight: find out what a model file is before anything parses it.

The format is sniffed from the bytes, not trusted from the extension: a ``.keras``
file must be a zip starting at offset 0 or HDF5 (older Keras wrote HDF5 whatever the
extension: it is read by its content, see :func:`content_note`), an ``.h5``/``.hdf5``
file must carry the HDF5 signature; a file that is both (a polyglot) is refused. Keras's own errors for bad files are often misleading ("File not
found" for a truncated zip); every loader failure becomes one
:class:`~kerinspect.errors.ModelLoadError` carrying the innermost cause.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from kerinspect.errors import InputFileError, PolicyError, escape_text

ZIP_MAGIC = b"PK\x03\x04"
ZIP_END = b"PK\x05\x06"  # end-of-central-directory record: where zip readers start
#: A zip end record sits in the last 22 + 65535 (comment) bytes of a file.
_ZIP_END_WINDOW = 22 + 65535
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_EXTENSIONS = (".keras",)
H5_EXTENSIONS = (".h5", ".hdf5")
#: Largest model file kerinspect opens by default (bytes).
DEFAULT_MAX_FILE_BYTES = 4 << 30


#: Bytes copied per read when a snapshot is taken.
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """A model path that passed the pre-flight checks.

    With a snapshot (:func:`preflight` ``snapshot_dir``), ``path`` is the private copy
    that everything after pre-flight reads, ``shown_path`` the user's path and
    ``sha256`` the hash of exactly the bytes copied.
    """

    path: str
    format: str  # "keras" (zip) or "h5"
    size: int
    sha256: str | None = None
    shown_path: str | None = None

    @property
    def shown(self) -> str:
        """The path as the user wrote it."""
        return self.shown_path if self.shown_path is not None else self.path


def _hdf5_signature_at(head: bytes) -> bool:
    """HDF5's superblock may sit at 0, 512, 1024, 2048... (user block)."""
    offset = 0
    while offset + len(HDF5_MAGIC) <= len(head):
        if head[offset : offset + len(HDF5_MAGIC)] == HDF5_MAGIC:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


def sniff(head: bytes) -> str:
    """``"keras"`` (zip), ``"h5"`` (HDF5), ``"empty"`` or ``"unknown"`` from leading bytes."""
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if _hdf5_signature_at(head):
        return "h5"
    return "unknown"


def preflight(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_FILE_BYTES, snapshot_dir: str | None = None
) -> ModelFile:
    """Check that ``path`` is a local regular file in a supported format.

    Never imports TensorFlow. Raises :class:`InputFileError` (exit 3) for a missing
    file, a directory, a device or FIFO, a remote URL, an empty or unknown file,
    or an extension that contradicts the content.

    With ``snapshot_dir`` (a private directory), the file is opened once and its bytes
    copied there while they are hashed; every check below, the static scan and Keras
    then read that copy, never the path again. Whoever can write the path (a shared
    folder, an unfinished download, a symlink they control) cannot swap or append
    bytes between the scan and the load. A file that changes while it is copied is
    refused (``model-changed``).
    """
    p = os.fspath(path)
    shown = escape_text(p)
    if "://" in p:
        raise InputFileError(
            f"Remote paths are not opened; download the file first. Received: path={shown}",
            rule="remote-path",
        )
    # One open, non-blocking (a FIFO cannot hang us, even one swapped in after a
    # check), then every question is asked of that descriptor.
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(
            f"Model file not found. Received: path={shown}", rule="model-not-found"
        ) from None
    except OSError as e:
        raise InputFileError(
            f"Cannot access model file: {e.strerror}. Received: path={shown}", rule="model-unreadable"
        ) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            if os.path.exists(os.path.join(p, "saved_model.pb")):
                raise InputFileError(
                    f"This is a TensorFlow SavedModel directory, which Keras 3 cannot load as a model. "
                    f"Received: path={shown}",
                    rule="savedmodel",
                    hint="re-save it from the code that built it with model.save('model.keras'), "
                    "or load it with tf_keras and save it as .keras",
                )
            raise InputFileError(
                f"Expected a model file, got a directory. Received: path={shown}", rule="not-a-file"
            )
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(
                f"Expected a regular file (not a FIFO, device or socket). Received: path={shown}",
                rule="not-a-file",
            )
        if st.st_size == 0:
            raise InputFileError(f"Model file is empty. Received: path={shown}", rule="empty-file")
        if st.st_size > max_bytes:
            raise PolicyError(
                f"Model file is {st.st_size:,} bytes, above the {max_bytes:,}-byte limit. "
                f"Received: path={shown}",
                rule="file-too-large",
            )
        head = os.pread(fd, 4096, 0)
        has_zip_end = _has_zip_end(fd, st.st_size)
        # what the file is, from its first and last bytes, before a byte of it is copied
        fmt = _format_of(head, has_zip_end, os.path.splitext(p)[1].lower(), shown)
        if snapshot_dir is None:
            return ModelFile(p, fmt, st.st_size)
        # Keras 2 wrote HDF5 whatever the extension: the copy of an HDF5 file named .keras
        # is named .h5, so that Keras reads it by its content too
        copy, digest = _snapshot(fd, st, snapshot_dir, "model.h5" if fmt == "h5" else "model.keras", shown)
    except OSError as e:
        raise InputFileError(
            f"Cannot read model file: {e.strerror}. Received: path={shown}", rule="model-unreadable"
        ) from None
    finally:
        os.close(fd)
    # everything after pre-flight reads the copy: it must be what was judged
    try:
        with open(copy, "rb") as f:
            copied_head = f.read(4096)
            copied_end = _has_zip_end(f.fileno(), st.st_size)
    except OSError as e:
        raise InputFileError(
            f"Cannot read the copy of the model file: {e.strerror}. Received: path={shown}",
            rule="model-unreadable",
        ) from None
    if (copied_head, copied_end) != (head, has_zip_end):
        raise InputFileError(
            f"The model file changed while it was being read. Received: path={shown}",
            rule="model-changed",
            hint="wait until whatever writes it has finished",
        )
    return ModelFile(copy, fmt, st.st_size, sha256=digest, shown_path=p)


def _format_of(head: bytes, has_zip_end: bool, ext: str, shown: str) -> str:
    """``keras`` or ``h5`` from the file's first bytes (``head``), whether it ends with a zip
    end record, and its extension; refuses polyglots, unknown formats and mismatches."""
    fmt = sniff(head)
    if fmt != "keras" and has_zip_end:
        # Zip readers find an archive from its end, so bytes of another format in
        # front still load as a .keras: a polyglot that scanners and loaders see
        # differently (SAFETY.md row 15).
        what = "an HDF5 file" if fmt == "h5" else "other bytes"
        raise PolicyError(
            f"The file is {what} with a zip archive hidden after it (a polyglot): zip data must start "
            f"at offset 0 and nothing else may be in the file. Received: path={shown}",
            rule="polyglot",
        )
    if fmt == "unknown":
        what = (
            "a Keras archive (no zip signature)" if ext in KERAS_EXTENSIONS else "a .keras zip or HDF5 file"
        )
        raise InputFileError(f"Not {what}. Received: path={shown}", rule="unknown-format")
    if ext in H5_EXTENSIONS and fmt != "h5":
        raise InputFileError(
            f"Extension {ext} but the content is a zip archive. Received: path={shown}",
            rule="format-mismatch",
            hint="rename it to .keras",
        )
    if ext not in KERAS_EXTENSIONS + H5_EXTENSIONS:
        raise InputFileError(
            f"Unsupported extension {ext or '(none)'!r}; expected .keras, .h5 or .hdf5 "
            f"(the content looks like {'a .keras zip' if fmt == 'keras' else 'HDF5'}). Received: path={shown}",
            rule="format-mismatch",
        )
    return fmt


def content_note(shown_path: str, fmt: str) -> str | None:
    """The report note for a file read by its content rather than its extension."""
    if os.path.splitext(shown_path)[1].lower() in KERAS_EXTENSIONS and fmt == "h5":
        return "the file is HDF5 under a .keras name (older Keras wrote HDF5 whatever the extension): read as .h5"
    return None


def _snapshot(fd: int, st: os.stat_result, into: str, name: str, shown: str) -> tuple[str, str]:
    """Copy the open file ``fd`` (``st`` its fstat) to ``into``/``name``, hashing what is
    copied; refuse it if it changed meanwhile. Returns the copy's path and the SHA-256."""
    import hashlib

    copy = os.path.join(into, name)
    h = hashlib.sha256()
    copied = 0
    out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        while copied <= st.st_size:  # one read past the end: a file that grew shows it
            chunk = os.pread(fd, _COPY_CHUNK, copied)
            if not chunk:
                break
            h.update(chunk)
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(out, view) :]
            except OSError as e:
                from kerinspect.errors import OutputError

                raise OutputError(
                    f"Cannot copy the model file ({st.st_size:,} bytes) into the temporary folder "
                    f"{escape_text(into)}: {e.strerror}. Received: path={shown}",
                    rule="snapshot-failed",
                    hint="set TMPDIR to a folder with room for a copy of the model",
                ) from None
            copied += len(chunk)
    finally:
        os.close(out)
    now = os.fstat(fd)
    if copied != st.st_size or (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise InputFileError(
            f"The model file changed while it was being read ({st.st_size:,} bytes when opened, "
            f"{copied:,} read). Received: path={shown}",
            rule="model-changed",
            hint="wait until whatever writes it has finished",
        )
    return copy, h.hexdigest()


def _has_zip_end(fd: int, size: int) -> bool:
    """True when the file ends with a zip end-of-central-directory record: the
    signature, then 18 bytes whose last two (the comment length) reach exactly the
    end of the file. (Four matching bytes inside HDF5 weights are not enough.)"""
    tail = os.pread(fd, _ZIP_END_WINDOW, max(0, size - _ZIP_END_WINDOW))
    at = tail.rfind(ZIP_END)
    while at >= 0:
        if at + 22 <= len(tail) and at + 22 + int.from_bytes(tail[at + 20 : at + 22], "little") == len(tail):
            return True
        at = tail.rfind(ZIP_END, 0, at)
    return False
