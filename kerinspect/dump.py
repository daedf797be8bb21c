"""Activations to ``.npy`` files plus a ``manifest.json``, safely.

A dump is made in three phases that may run in different processes and share
only files and plain (JSON-able) data, so that the process that runs the model
never holds a handle on the real output directory (SAFETY.md R6):

1. :func:`prepare_dump` (parent, no TensorFlow): lock down ``DIR`` (refuse a
   symlink, a non-empty directory unless ``overwrite``, and with ``overwrite``
   anything but kerinspect's own previous dump) and create a private staging
   directory inside it, so that the final renames stay on one filesystem.
   Returns the *plan*.
2. :func:`write_dump` (the process that runs the model): replay the model batch
   by batch, write one preallocated ``.npy`` per selected tensor, and the inputs
   used, into the staging directory only. Returns a manifest *draft*.
3. :func:`publish_dump` (parent, no TensorFlow): treat the staged files as
   untrusted and check each one, move them to their final names without
   overwriting anything that is not the previous dump's, ``fsync``, write
   ``manifest.json`` last. :func:`abort_dump` undoes a run that failed before.

A dump is complete if and only if its ``manifest.json`` exists. File names are
``{index:04d}[-{output}]_{slug}_{hash8}.npy``: never a layer name, whose exact
text lives only in the manifest. :func:`load_dump` reads a finished dump.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import stat
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from .errors import InferenceError, InputFileError, OutputError, UsageError, escape_text
from .scan.npyio import read_npy_header
from .stats import RunningStats, numeric_kind, summarize

#: Layout of ``manifest.json``; bumped on incompatible changes.
DUMP_SCHEMA_VERSION = 1
DUMP_FORMAT = "kerinspect-dump"
MANIFEST = "manifest.json"
INPUTS_DIR = "inputs"
STAGING_PREFIX = ".kerinspect-staging-"
#: Default limit on the bytes one dump may write (tensors and inputs).
DEFAULT_MAX_BYTES = 2 << 30
#: Largest manifest read back (a previous dump's, or by :func:`load_dump`).
MAX_MANIFEST_BYTES = 64 << 20

_FILE_RE = re.compile(r"[0-9]{2,}(-[0-9]+)?_[A-Za-z0-9._-]{1,64}_[0-9a-f]{8}\.npy")
_STORED_KINDS = "biufc"  # numbers and bools: np.load(allow_pickle=False) reads them as they were
_INPUT_KINDS = _STORED_KINDS + "US"  # inputs may also be fixed-width strings
_PREVIOUS = ".previous"  # inside the staging dir: the previous dump, while publishing
_O_DIR = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

ProgressFn = Callable[[int, int], None]


# -- small helpers ----------------------------------------------------------------


def format_bytes(n: int, *, exact: bool = True) -> str:
    """``"3.2 GiB (3,435,973,836 bytes)"`` (``exact=False``: ``"3.2 GiB"``)."""
    value, unit = float(n), "bytes"
    for u in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, u
    if unit == "bytes":
        return f"{n:,} bytes"
    return f"{value:.1f} {unit} ({n:,} bytes)" if exact else f"{value:.1f} {unit}"


def parse_size(text: str | int, *, minimum: int = 1) -> int:
    """Parse a byte count: ``2000000``, ``512M`` or ``2GiB`` (binary), ``2GB`` (decimal).

    Raises:
        UsageError: the text is not a size of at least ``minimum`` bytes.
    """
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgt])(i)?)?(b)?\s*", str(text), re.IGNORECASE)
        if not m:
            raise UsageError(f"Not a size: {escape_text(str(text), 50)!r}; use e.g. 500M, 2GiB or 2000000000")
        number, unit, binary, b = m.groups()
        power = "kmgt".index(unit.lower()) + 1 if unit else 0
        base = 1000**power if (b and not binary) else 1024**power
        value = int(float(number) * base)
    if value < minimum:
        raise UsageError(
            f"A size must be at least {minimum} byte(s). Received: {escape_text(str(text), 50)!r}"
        )
    return value


def dtype_text(dtype: np.dtype) -> str:
    """A dtype as text that ``np.dtype()`` reads back: ``float32``, ``bool``, ``<U12``."""
    return dtype.name if dtype.kind in _STORED_KINDS else dtype.str


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


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a regular file, read in chunks. Opened non-blocking and checked
    with ``fstat``, so a FIFO put in the model's place cannot hang the parent.

    Raises:
        InputFileError: the file cannot be read, or is no longer a regular file.
    """
    shown = escape_text(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputFileError(
                    f"The model is no longer a regular file. Received: path={shown}", rule="not-a-file"
                )
            h = hashlib.file_digest(f, "sha256")
    except OSError as e:
        raise InputFileError(
            f"Cannot read the model file: {_os_reason(e)}. Received: path={shown}", rule="model-unreadable"
        ) from None
    return h.hexdigest()


def _is_own_file(rel: str) -> bool:
    """``rel`` is a name kerinspect gives its files (``X.npy`` or ``inputs/X.npy``)."""
    parts = rel.split("/")
    if len(parts) == 2 and parts[0] == INPUTS_DIR:
        parts = parts[1:]
    return len(parts) == 1 and _FILE_RE.fullmatch(parts[0]) is not None


def _shown(path: str) -> str:
    return escape_text(path, 200)


def _os_reason(e: OSError) -> str:
    if e.errno is not None:
        return f"{e.strerror or os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})"
    return str(e) or type(e).__name__


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header numpy itself would write for a C-order array."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # a header above 64 KiB needs format 2.0
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _write_all(fd: int, data: Any, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset``; a short write is retried, never ignored."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view, offset = view[n:], offset + n


def _preallocate(fd: int, length: int) -> None:
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


def _open_dir(path: str, expect: Sequence[int] | None = None, *, dir_fd: int | None = None) -> int:
    """Open a directory without following a symlink; check it is the one expected."""
    fd = os.open(path, _O_DIR, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or (expect is not None and [st.st_dev, st.st_ino] != list(expect)):
        os.close(fd)
        raise OSError(errno.ESTALE, "the directory was replaced during the run")
    return fd


def _rmtree_at(dir_fd: int, name: str) -> None:
    """Remove directory ``name`` (relative to ``dir_fd``) and its contents, never
    following a symlink (fd-based ``shutil.rmtree``, safe against symlink swaps)."""
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - not on Linux
        raise OSError(errno.ENOTSUP, "no symlink-safe rmtree on this platform")
    shutil.rmtree(name, dir_fd=dir_fd)


def _split(rel: str) -> tuple[str | None, str]:
    """``"inputs/x.npy"`` -> (``"inputs"``, ``"x.npy"``); ``"x.npy"`` -> (None, ``"x.npy"``)."""
    head, _, tail = rel.rpartition("/")
    return (head or None), tail


# -- phase 1: prepare (parent, no TensorFlow) ----------------------------------------


def prepare_dump(
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    layers: Sequence[str] = (),
    model_path: str | None = None,
    model_format: str = "in-memory",
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate and lock down the output directory; create the staging directory.

    Never imports TensorFlow. ``DIR`` is created with ``mkdir`` (not its parents)
    if missing. An existing ``DIR`` must be a real directory (not a symlink) and
    empty, or, with ``overwrite``, hold nothing but a previous kerinspect dump
    (the files its ``manifest.json`` lists, none of them a symlink).

    Args:
        out: the output directory.
        overwrite: allow replacing a previous kerinspect dump in ``out``.
        max_bytes: most bytes the write phase may write.
        layers: glob patterns on layer paths; empty selects every layer call.
        model_path: the model file, hashed here for the manifest (None: in-memory).
        model_format: ``"keras"``, ``"h5"`` or ``"in-memory"``, for the manifest.
        run: plain data describing the run (inputs, seed...), copied to the manifest.

    Returns:
        The plan: a JSON-able dict for :func:`publish_dump` and :func:`abort_dump`.
        ``plan["write"]`` is all :func:`write_dump` needs (it names only the
        staging directory).

    Raises:
        OutputError: the directory is unusable or refused (exit 7).
        UsageError: bad arguments.
    """
    raw = os.fspath(out)
    if not raw:
        raise UsageError("--out must name a directory")
    if int(max_bytes) < 1:
        raise UsageError(f"--max-bytes must be at least 1. Received: max_bytes={max_bytes}")
    # Read the model before touching the filesystem, so a failure leaves nothing behind.
    model: dict[str, Any] = {"path": model_path, "sha256": None, "format": model_format}
    if model_path is not None:
        model["sha256"] = file_sha256(model_path)
    path = os.path.abspath(raw)
    shown = _shown(raw)
    created = False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            os.mkdir(path, 0o755)
            created = True
        except FileExistsError:
            pass
        except OSError as e:
            raise OutputError(
                f"Cannot create the output directory: {_os_reason(e)}. Received: out={shown}",
                rule="out-not-writable",
                hint="its parent directory must exist and be writable",
            ) from None
        st = os.lstat(path)
    except OSError as e:
        raise OutputError(
            f"Cannot access the output directory: {_os_reason(e)}. Received: out={shown}",
            rule="out-not-writable",
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"The output directory is a symbolic link; refusing to write through it. Received: out={shown}",
            rule="out-symlink",
            hint="pass the real directory",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(
            f"The output path exists and is not a directory. Received: out={shown}", rule="out-not-dir"
        )
    try:
        dfd = _open_dir(path, [st.st_dev, st.st_ino])
    except OSError as e:
        raise OutputError(
            f"Cannot open the output directory: {_os_reason(e)}. Received: out={shown}",
            rule="out-not-writable",
        ) from None
    try:
        try:
            previous = _previous_dump(dfd, shown, overwrite)
        except OSError as e:
            raise OutputError(
                f"Cannot read the output directory: {_os_reason(e)}. Received: out={shown}",
                rule="out-not-writable",
            ) from None
        staging = STAGING_PREFIX + secrets.token_hex(8)
        try:
            os.mkdir(staging, 0o700, dir_fd=dfd)
            sst = os.stat(staging, dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            raise OutputError(
                f"Cannot write in the output directory: {_os_reason(e)}. Received: out={shown}",
                rule="out-not-writable",
            ) from None
    except BaseException:
        os.close(dfd)
        if created:
            try:
                os.rmdir(path)
            except OSError:
                pass
        raise
    os.close(dfd)
    return {
        "out": path,
        "out_id": [st.st_dev, st.st_ino],
        "created": created,
        "staging": staging,
        "staging_id": [sst.st_dev, sst.st_ino],
        "previous": previous,
        "model": model,
        "run": dict(run or {}),
        "write": {
            "staging": os.path.join(path, staging),
            "max_bytes": int(max_bytes),
            "layers": list(layers),
        },
    }


def _previous_dump(dfd: int, shown: str, overwrite: bool) -> list[str]:
    """The files of the previous dump that publishing will replace ([] if empty).

    Raises OutputError unless the directory is empty or (``overwrite``) holds
    only what a previous kerinspect manifest lists, as regular files.
    """
    entries = sorted(os.listdir(dfd))
    if not entries:
        return []
    if not overwrite:
        raise OutputError(
            f"The output directory is not empty ({len(entries)} entries); refusing to touch it. "
            f"Received: out={shown}",
            rule="out-not-empty",
            hint="choose a new directory, or pass --overwrite to replace a previous kerinspect dump",
        )
    listed = _read_previous_manifest(dfd, shown)
    found: list[str] = []
    for name in entries:
        if name == INPUTS_DIR:
            try:
                ist = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(ist.st_mode) or not stat.S_ISDIR(ist.st_mode):
                _refuse_entry(name, ist.st_mode, shown)
            ifd = _open_dir(name, [ist.st_dev, ist.st_ino], dir_fd=dfd)
            try:
                inner = sorted(os.listdir(ifd))
                for sub in inner:
                    _check_listed(ifd, sub, f"{INPUTS_DIR}/{sub}", listed, shown)
            finally:
                os.close(ifd)
            found += [f"{INPUTS_DIR}/{sub}" for sub in inner]
            continue
        _check_listed(dfd, name, name, listed, shown)
        found.append(name)
    found.sort(key=lambda rel: rel != MANIFEST)  # the manifest goes first
    return found


def _refuse_entry(rel: str, mode: int, shown: str) -> None:
    if stat.S_ISLNK(mode):
        raise OutputError(
            f"{escape_text(rel, 100)!r} in the output directory is a symbolic link; refusing to replace it. "
            f"Received: out={shown}",
            rule="out-symlink",
        )
    raise OutputError(
        f"The output directory holds {escape_text(rel, 100)!r}, which is not a regular file of the "
        f"previous kerinspect dump; refusing to overwrite. Received: out={shown}",
        rule="out-not-empty",
    )


def _check_listed(dir_fd: int, name: str, rel: str, listed: set[str], shown: str) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        _refuse_entry(rel, st.st_mode, shown)
    if rel not in listed:
        hint = None
        if name.startswith(STAGING_PREFIX):
            hint = "it was left by an interrupted kerinspect run; remove it"
        raise OutputError(
            f"The output directory holds {escape_text(rel, 100)!r}, which the previous dump's manifest "
            f"does not list; refusing to overwrite files kerinspect did not write. Received: out={shown}",
            rule="out-not-empty",
            hint=hint,
        )


def _read_previous_manifest(dfd: int, shown: str) -> set[str]:
    """Relative paths a previous kerinspect manifest in ``dfd`` lists (itself included)."""
    refuse = OutputError(
        f"The output directory is not empty and holds no kerinspect dump (no valid {MANIFEST}); "
        f"--overwrite only replaces a previous kerinspect dump. Received: out={shown}",
        rule="out-not-empty",
        hint="choose a new or empty directory",
    )
    try:
        manifest = _read_manifest_at(dfd)
    except (OSError, ValueError):
        raise refuse from None
    listed = {MANIFEST}
    for entry in list(manifest.get("tensors", [])) + list(manifest.get("inputs", [])):
        rel = entry.get("file") if isinstance(entry, dict) else None
        if isinstance(rel, str) and _is_own_file(rel):
            listed.add(rel)
    return listed


def _read_manifest_at(dfd: int) -> dict[str, Any]:
    fd = os.open(MANIFEST, _O_READ, dir_fd=dfd)
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
            raise ValueError("not a regular file of a sane size")
        data = json.loads(f.read(MAX_MANIFEST_BYTES + 1))
    if not isinstance(data, dict) or data.get("format") != DUMP_FORMAT:
        raise ValueError("not a kerinspect dump manifest")
    return data


# -- phase 2: write (the process that runs the model) --------------------------------


@dataclass
class _Slot:
    """One file being written: a selected tensor or a model input."""

    file: str  # relative to the staging dir: "X.npy" or "inputs/X.npy"
    shape: tuple[int, ...]  # per sample
    dtype: np.dtype
    meta: dict[str, Any]
    stats: RunningStats | None = None
    first: np.ndarray | None = None  # the first batch, until the files exist
    fd: int | None = None
    offset: int = 0

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def header(self, samples: int) -> bytes:
        return _npy_header(self.dtype, (samples, *self.shape))


def _storable(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` as it will be stored: numbers and bools as-is (float16 too),
    bfloat16/float8 (ml_dtypes) upcast to float32; None when it cannot be stored
    without pickle (strings, objects)."""
    kind = arr.dtype.kind
    if kind in _STORED_KINDS:
        return arr
    if kind == "V" and numeric_kind(arr.dtype) == "float":
        return arr.astype(np.float32)
    return None


def _storable_input(arr: np.ndarray, width: int) -> np.ndarray | None:
    """A fed batch as stored under ``inputs/``: strings become fixed-width ``U``/``S``."""
    if arr.dtype.kind in _INPUT_KINDS:
        return arr
    if arr.dtype.kind == "O":
        flat = arr.reshape(-1)
        if all(isinstance(v, bytes) for v in flat):
            return arr.astype(f"S{max(width, 1)}")
        if all(isinstance(v, (str, bytes)) for v in flat):
            return np.array(
                [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat],
                dtype=f"U{max(width, 1)}",
            ).reshape(arr.shape)
        return None
    return _storable(arr)


def _string_widths(feed: Any) -> dict[int, int]:
    """Longest string of each string input over the whole feed (one extra pass,
    only for models with string inputs), so their files can be preallocated."""
    idx = [i for i, r in enumerate(feed.records) if r.dtype == "string"]
    widths = dict.fromkeys(idx, 0)
    if idx:
        for batch in feed.batches():
            for i in idx:
                a = batch[i]
                if a.dtype.kind in "US":
                    widths[i] = max(widths[i], a.dtype.itemsize // (4 if a.dtype.kind == "U" else 1))
                else:
                    widths[i] = max([widths[i]] + [len(v) for v in a.reshape(-1)])
    return widths


class _DumpWriter:
    """Visitor: buffers the first batch, then sizes, preallocates and fills the files.

    Errors raised while the model runs are kept and re-raised at the end of the
    batch, so that Keras's call wrappers cannot rewrap them.
    """

    def __init__(self, staging: str, patterns: Sequence[str], max_bytes: int, feed: Any):
        self.staging = staging
        self.patterns = list(patterns)
        self.max_bytes = max_bytes
        self.feed = feed
        self.samples = int(feed.samples)
        self.sfd = _open_dir(staging)
        self.ifd: int | None = None
        self.slots: dict[tuple[int, int], _Slot] = {}
        self.input_slots: list[_Slot] = []
        self.skipped: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.matched: set[str] = set()
        self.keys: set[str] = set()
        self.first = True
        self.rows = 0
        self.row0 = 0
        self.inputs: list[np.ndarray] = []
        self.widths: dict[int, int] = {}
        self.total = 0
        self.error: BaseException | None = None

    # the feed tells the writer what it fed
    def tee(self, batches: Iterator[list[np.ndarray]]) -> Iterator[list[np.ndarray]]:
        for batch in batches:
            self.inputs = batch
            yield batch

    def start_batch(self, rows: int) -> None:
        self.rows = rows

    def _selected(self, path: str) -> bool:
        if not self.patterns:
            return True
        hit = [p for p in self.patterns if fnmatch.fnmatchcase(path, p)]
        self.matched.update(hit)
        return bool(hit)

    def enter(self, site: Any) -> None:
        if self.first:
            self.paths.append(site.path)

    def produced(self, site: Any, tensors: Sequence[Any]) -> None:
        if self.error is not None:
            return
        try:
            self._produced(site, tensors)
        except Exception as e:  # noqa: BLE001 - re-raised by end_batch, outside Keras's wrappers
            self.error = e

    def _produced(self, site: Any, tensors: Sequence[Any]) -> None:
        from .engine.trace import tensor_dtype, to_numpy

        if self.first and not self._selected(site.path):
            return
        names = list(site.output_names)
        if len(names) != len(tensors):
            names = [f"output_{k}" for k in range(len(tensors))]
        for k, t in enumerate(tensors):
            if not self.first:
                slot = self.slots.get((site.index, k))
                if slot is not None:
                    self._write(slot, to_numpy(t) if t is not None else None, f"{site.path}:{names[k]}")
                continue
            meta = {
                "index": site.index,
                "layer": site.name,
                "path": site.path,
                "class_name": site.class_name,
                "call": site.call,
                "output": k,
                "output_name": names[k],
            }
            if t is None:
                self.skipped.append({**meta, "source_dtype": None, "reason": "the layer produced no tensor"})
                continue
            source_dtype = tensor_dtype(t)
            arr = _storable(to_numpy(t))
            reason = None
            if arr is None:
                reason = f"{source_dtype} values cannot be stored as .npy without pickle"
            elif arr.ndim == 0 or arr.shape[0] != self.rows:
                reason = "axis 0 is not the batch axis"
            if arr is None or reason is not None:
                self.skipped.append({**meta, "source_dtype": source_dtype, "reason": reason})
                continue
            key = site.path if len(tensors) == 1 else f"{site.path}:{names[k]}"
            if key in self.keys:  # hostile names can collide ("x@1" and x's second call)
                key = f"{key}#{site.index}"
            self.keys.add(key)
            slot = _Slot(
                file=tensor_file_name(site.index, k, len(tensors), site.path, names[k]),
                shape=tuple(int(d) for d in arr.shape[1:]),
                dtype=arr.dtype,
                meta={"key": key, **meta, "source_dtype": source_dtype},
                stats=summarize(arr),
                first=arr,
            )
            self.slots[(site.index, k)] = slot

    def _write(self, slot: _Slot, arr: np.ndarray | None, what: str) -> None:
        stored = None if arr is None else _storable(arr)
        if stored is None or stored.shape != (self.rows, *slot.shape) or stored.dtype != slot.dtype:
            got = "nothing" if stored is None else f"{stored.dtype} {tuple(stored.shape)}"
            raise InferenceError(
                f"Tensor {escape_text(what, 200)!r} changed between batches: it was {slot.dtype} "
                f"(batch, {', '.join(map(str, slot.shape))}) and is now {got}; cannot stack it.",
                rule="dump-shape",
                hint="use --batch-size equal to --samples, or leave the layer out with --layers",
            )
        s = summarize(stored)
        if slot.stats is not None and s is not None:
            slot.stats.merge(s)
        self._pwrite(slot, stored)

    def _pwrite(self, slot: _Slot, arr: np.ndarray) -> None:
        assert slot.fd is not None
        data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        try:
            _write_all(slot.fd, data, slot.offset + self.row0 * slot.row_bytes)
        except OSError as e:
            raise self._write_error(e) from None

    def _write_error(self, e: OSError) -> OutputError:
        return OutputError(
            f"Cannot write the dump: {_os_reason(e)}; it needs {format_bytes(self.total)}. "
            f"Received: out={_shown(os.path.dirname(self.staging))}",
            rule="write-failed",
            hint="free some space or dump fewer layers (--layers) or samples (--samples)",
        )

    def end_batch(self) -> None:
        if self.error is not None:
            raise self.error
        if self.first:
            self._allocate()
            self.first = False
        for i, (slot, batch) in enumerate(zip(self.input_slots, self.inputs)):
            stored = _storable_input(np.asarray(batch), self.widths.get(i, 0))
            if stored is None or stored.shape != (self.rows, *slot.shape):
                raise InferenceError(
                    f"Input {escape_text(slot.meta['name'], 100)!r} changed shape between batches",
                    rule="dump-shape",
                )
            self._pwrite(slot, stored.astype(slot.dtype, copy=False))
        self.row0 += self.rows

    def _allocate(self) -> None:
        """After the first batch: check patterns and size, create and fill the files."""
        unmatched = [p for p in self.patterns if p not in self.matched]
        if unmatched:
            raise UsageError(
                f"--layers {escape_text(unmatched[0], 100)!r} matches no layer call. Layer paths: "
                + ", ".join(escape_text(p, 60) for p in self.paths),
                rule="layers-no-match",
            )
        for i, (record, batch) in enumerate(zip(self.feed.records, self.inputs)):
            stored = _storable_input(np.asarray(batch), self.widths.get(i, 0))
            if stored is None:
                raise InferenceError(
                    f"Input {escape_text(record.name, 100)!r} ({np.asarray(batch).dtype}) "
                    "cannot be saved without pickle",
                    rule="dump-input",
                )
            self.input_slots.append(
                _Slot(
                    file=f"{INPUTS_DIR}/{input_file_name(i, record.name)}",
                    shape=tuple(int(d) for d in stored.shape[1:]),
                    dtype=stored.dtype,
                    meta={
                        "name": record.name,
                        "model_dtype": record.dtype,
                        "source": record.source,
                        "seed": record.seed,
                    },
                )
            )
        slots = list(self.slots.values()) + self.input_slots
        self.total = sum(len(s.header(self.samples)) + self.samples * s.row_bytes for s in slots)
        where = f"Received: out={_shown(os.path.dirname(self.staging))}"
        if self.total > self.max_bytes:
            raise OutputError(
                f"The dump would need {format_bytes(self.total)} for {len(self.slots)} tensors and "
                f"{len(self.input_slots)} inputs of {self.samples} samples, above --max-bytes "
                f"{format_bytes(self.max_bytes)}. {where}",
                rule="max-bytes",
                hint="raise --max-bytes, or dump fewer layers (--layers) or samples (--samples)",
            )
        free = shutil.disk_usage(self.staging).free
        if self.total > free:
            raise OutputError(
                f"The dump needs {format_bytes(self.total)} but only {format_bytes(free)} is free. {where}",
                rule="disk-full",
                hint="free some space or dump fewer layers (--layers) or samples (--samples)",
            )
        try:
            if self.input_slots:
                os.mkdir(INPUTS_DIR, 0o755, dir_fd=self.sfd)
                self.ifd = _open_dir(INPUTS_DIR, dir_fd=self.sfd)
            for s in slots:
                head, name = _split(s.file)
                s.fd = os.open(name, _O_NEW, 0o644, dir_fd=self.ifd if head else self.sfd)
                header = s.header(self.samples)
                s.offset = len(header)
                _preallocate(s.fd, s.offset + self.samples * s.row_bytes)
                _write_all(s.fd, header, 0)
        except OSError as e:
            raise self._write_error(e) from None
        for s in self.slots.values():
            assert s.first is not None
            self._pwrite(s, s.first)
            s.first = None

    def draft_entries(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        tensors = []
        for s in sorted(self.slots.values(), key=lambda s: (s.meta["index"], s.meta["output"])):
            stats = None if s.stats is None else s.stats.finalize().to_dict()
            tensors.append(
                {
                    "file": s.file,
                    **s.meta,
                    "shape": [self.samples, *s.shape],
                    "dtype": dtype_text(s.dtype),
                    "stats": stats,
                }
            )
        inputs = [
            {"file": s.file, **s.meta, "shape": [self.samples, *s.shape], "dtype": dtype_text(s.dtype)}
            for s in self.input_slots
        ]
        return tensors, inputs

    def close(self) -> None:
        for s in list(self.slots.values()) + self.input_slots:
            if s.fd is not None:
                os.close(s.fd)
                s.fd = None
        for fd in (self.ifd, self.sfd):
            if fd is not None:
                os.close(fd)
        self.ifd = None


def write_dump(
    model: Any,
    feed: Any,
    job: Mapping[str, Any],
    *,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run ``model`` on ``feed`` and write the selected tensors into the staging dir.

    This is the phase that needs TensorFlow and runs untrusted model code; it
    only ever opens ``job["staging"]``. After the first batch it knows every
    selected tensor's per-sample shape and dtype: it checks the total size
    against ``job["max_bytes"]`` and the free space, preallocates one ``.npy``
    per tensor (``posix_fallocate``), then fills rows batch by batch with
    ``pwrite`` (not a memory map: mapped dirty pages count as resident memory,
    and a mapped write on a full disk is a SIGBUS, not an error). Inputs go to
    ``inputs/``. Nothing is deleted on failure: :func:`abort_dump` does that.

    Args:
        model: a built Keras model.
        feed: the :class:`~kerinspect.engine.inputs.Feed` to run.
        job: ``plan["write"]``: ``{"staging": path, "max_bytes": int, "layers": [patterns]}``.
        progress: called as ``progress(samples_done, samples_total)`` after each batch.

    Returns:
        The manifest draft (plain data) for :func:`publish_dump`.

    Raises:
        OutputError: too large, disk full, cannot write (exit 7).
        UsageError: a ``--layers`` pattern matches no layer call.
        InferenceError: the model failed to run.
    """
    from .engine.collect import run_batches_collecting_warnings
    from .engine.inputs import Feed
    from .engine.tfenv import import_keras

    keras = import_keras()
    try:
        writer = _DumpWriter(str(job["staging"]), list(job.get("layers") or ()), int(job["max_bytes"]), feed)
    except OSError as e:
        raise OutputError(
            f"Cannot open the staging directory: {_os_reason(e)}. "
            f"Received: staging={_shown(str(job['staging']))}",
            rule="write-failed",
        ) from None
    caught: list[str] = []
    try:
        writer.widths = _string_widths(feed)
        teed = Feed(feed.records, feed.samples, feed.batch_size, lambda: writer.tee(feed.batches()))
        caught = run_batches_collecting_warnings(model, teed, writer, progress)
        if writer.row0 != writer.samples:  # pragma: no cover - a feed that lies about its size
            raise InferenceError(f"Fed {writer.row0} samples, expected {writer.samples}", rule="dump-shape")
    finally:
        writer.close()
    tensors, inputs = writer.draft_entries()
    return {
        "keras_version": keras.__version__,
        "model": {"name": model.name, "class_name": type(model).__name__},
        "samples": writer.samples,
        "batch_size": int(feed.batch_size),
        "inputs": inputs,
        "tensors": tensors,
        "skipped": writer.skipped,
        "warnings": caught,
    }


# -- phase 3: publish (parent, no TensorFlow) ---------------------------------------


@dataclass
class _Staged:
    rel: str  # final path relative to DIR (== path relative to the staging dir)
    entry: dict[str, Any]
    kinds: str


@dataclass
class _Publish:
    dfd: int
    sfd: int
    moved: list[str] = field(default_factory=list)
    stashed: list[str] = field(default_factory=list)
    made_inputs: bool = False


def _bad(what: str) -> OutputError:
    return OutputError(f"The staged dump is invalid: {what}; nothing was published.", rule="staging-invalid")


def _check_draft(draft: Mapping[str, Any]) -> list[_Staged]:
    """The staged files a draft promises, after checking its plain data.

    The draft comes from the process that ran untrusted model code: every field
    that reaches the manifest or a path is checked here.
    """
    if not isinstance(draft, Mapping):
        raise _bad("the draft is not an object")
    out: list[_Staged] = []
    seen: set[str] = set()
    for group, kinds in (("tensors", _STORED_KINDS), ("inputs", _INPUT_KINDS)):
        entries = draft.get(group)
        if not isinstance(entries, list):
            raise _bad(f"{group} is not a list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise _bad(f"an entry of {group} is not an object")
            rel = entry.get("file")
            if (
                not isinstance(rel, str)
                or not _is_own_file(rel)
                or ((group == "inputs") != rel.startswith(INPUTS_DIR + "/"))
            ):
                raise _bad(f"bad file name {escape_text(str(rel), 100)!r}")
            folded = unicodedata.normalize("NFC", rel).casefold()
            if folded in seen:
                raise _bad(f"file name {rel!r} appears twice")
            seen.add(folded)
            shape = entry.get("shape")
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or not shape:
                raise _bad(f"bad shape for {rel!r}")
            try:
                dtype = np.dtype(str(entry.get("dtype")))
            except (TypeError, ValueError, SyntaxError):  # np.dtype parses strings: "f4,(2," is a SyntaxError
                raise _bad(f"bad dtype for {rel!r}") from None
            if dtype.kind not in kinds or dtype.hasobject:
                raise _bad(f"dtype {dtype} of {rel!r} is not allowed")
            want = "key" if group == "tensors" else "name"
            if not isinstance(entry.get(want), str):
                raise _bad(f"{rel!r} has no {want}")
            for key, value in entry.items():
                if key == "stats":
                    _check_stats(value, rel)
                elif key not in ("shape",) and not (value is None or type(value) in (str, int)):
                    raise _bad(f"field {escape_text(str(key), 50)!r} of {rel!r} is not plain data")
            out.append(_Staged(rel, entry, kinds))
    for key in ("samples", "batch_size"):
        if type(draft.get(key)) is not int:
            raise _bad(f"{key} is not an integer")
    return out


def _check_stats(value: Any, rel: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _bad(f"stats of {rel!r} are not an object")
    for v in value.values():
        if not (v is None or (type(v) in (int, float) and math.isfinite(v))):
            raise _bad(f"stats of {rel!r} hold a non-finite or non-numeric value")


def _verify_staged(sfd: int, item: _Staged) -> None:
    """Open a staged file (no symlink, one link), check its header against the
    draft, check its size, hash it and fsync it."""
    head, name = _split(item.rel)
    parent = _open_dir(head, dir_fd=sfd) if head else sfd
    try:
        fd = os.open(name, _O_READ, dir_fd=parent)
    except OSError as e:
        raise _bad(f"{item.rel!r} cannot be opened ({_os_reason(e)})") from None
    finally:
        if head:
            os.close(parent)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise _bad(f"{item.rel!r} is not a regular file with one link")
        try:
            shape, fortran, dtype = read_npy_header(f)
        except ValueError as e:
            raise _bad(f"{item.rel!r} has no valid .npy header ({e})") from None
        want_shape, want_dtype = tuple(item.entry["shape"]), np.dtype(item.entry["dtype"])
        if fortran or tuple(shape) != want_shape or dtype != want_dtype or dtype.hasobject:
            raise _bad(f"{item.rel!r} holds {dtype} {tuple(shape)}, not {want_dtype} {want_shape}")
        size = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if st.st_size != size:
            raise _bad(f"{item.rel!r} is {st.st_size} bytes, not {size}")
        f.seek(0)
        h = hashlib.file_digest(f, "sha256")
        os.fsync(fd)
    item.entry["sha256"] = h.hexdigest()
    item.entry["bytes"] = size


def _move_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
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


def _subdir(parent_fd: int, name: str, *, create: bool) -> tuple[int, bool]:
    made = False
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            made = True
        except FileExistsError:
            pass
    return _open_dir(name, dir_fd=parent_fd), made


def publish_dump(plan: Mapping[str, Any], draft: Mapping[str, Any]) -> dict[str, Any]:
    """Check the staged files, move them into ``DIR``, write ``manifest.json`` last.

    Never imports TensorFlow. Treats the draft and the staged files as untrusted:
    names must be kerinspect's own pattern, each file a regular single-link file
    whose ``.npy`` header matches the draft (``allow_pickle`` never needed) and
    whose size is exact. Files move with ``link`` + ``unlink`` (never replacing
    anything); with ``overwrite`` the previous dump's files are first moved
    aside into the staging dir and put back if publishing fails. On any failure
    everything this call moved is removed, the staging dir too
    (:func:`abort_dump`), and an :class:`OutputError` is raised.

    Args:
        plan: from :func:`prepare_dump`.
        draft: from :func:`write_dump`.

    Returns:
        The manifest, as written.
    """
    shown = _shown(plan["out"])
    try:
        return _publish(plan, draft, shown)
    except OSError as e:
        abort_dump(plan)
        raise OutputError(
            f"Cannot publish the dump: {_os_reason(e)}; nothing was published. Received: out={shown}",
            rule="publish-failed",
        ) from None
    except BaseException:
        abort_dump(plan)
        raise


def _publish(plan: Mapping[str, Any], draft: Mapping[str, Any], shown: str) -> dict[str, Any]:
    items = _check_draft(draft)
    dfd = _open_dir(plan["out"], plan["out_id"])
    try:
        sfd = _open_dir(plan["staging"], plan["staging_id"], dir_fd=dfd)
    except BaseException:
        os.close(dfd)
        raise
    state = _Publish(dfd, sfd)
    try:
        for item in items:
            _verify_staged(sfd, item)
        # --max-bytes is enforced here too: the writer ran model code
        total = sum(os.stat(item.rel, dir_fd=sfd, follow_symlinks=False).st_size for item in items)
        limit = int(plan["write"]["max_bytes"])
        if total > limit:
            raise OutputError(
                f"The dump would be {format_bytes(total)}, above --max-bytes {format_bytes(limit)}; "
                f"nothing was published. Received: out={shown}",
                rule="too-large",
            )
        real_out = os.path.realpath(plan["out"])
        for item in items:
            target = os.path.realpath(os.path.join(real_out, item.rel))
            if os.path.commonpath([real_out, target]) != real_out:  # belt and braces: names are checked
                raise OutputError(
                    f"{item.rel!r} would resolve outside the output directory (a symbolic link appeared "
                    f"there during the run?); nothing was published. Received: out={shown}",
                    rule="out-escape",
                )
        manifest = _manifest(plan, draft, items)
        text = _manifest_text(manifest)
        try:
            _swap_in(plan, items, text, state)
        except BaseException:
            _roll_back(state)
            raise
    finally:
        os.close(sfd)
        os.close(dfd)
    abort_dump({**plan, "created": False})  # the staging dir (and the previous dump in it) goes
    return manifest


def _manifest_text(manifest: Mapping[str, Any]) -> str:
    """Indented JSON, ASCII only, with lists of integers (shapes) on one line.

    Raw newlines occur only between JSON tokens (strings escape theirs), so the
    substitution cannot touch a string's content.
    """
    text = json.dumps(manifest, indent=1, ensure_ascii=True, allow_nan=False)
    text = re.sub(
        r"\[\n\s*(-?[0-9]+(?:,\n\s*-?[0-9]+)*)\n\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    )
    return text + "\n"


def _swap_in(plan: Mapping[str, Any], items: list[_Staged], text: str, st: _Publish) -> None:
    dfd, sfd = st.dfd, st.sfd
    shown = _shown(plan["out"])
    previous = [rel for rel in plan.get("previous", []) if isinstance(rel, str)]
    if previous:  # move the previous dump aside (manifest first): it comes back on failure
        pfd, _ = _subdir(sfd, _PREVIOUS, create=True)
        try:
            pifd, _ = _subdir(pfd, INPUTS_DIR, create=True)
            try:
                for rel in previous:
                    if rel != MANIFEST and not _is_own_file(rel):
                        continue
                    head, name = _split(rel)
                    src_fd = _open_dir(head, dir_fd=dfd) if head else dfd
                    try:
                        try:
                            fst = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if not stat.S_ISREG(fst.st_mode):
                            _refuse_entry(rel, fst.st_mode, shown)
                        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=pifd if head else pfd)
                        st.stashed.append(rel)
                    finally:
                        if head:
                            os.close(src_fd)
            finally:
                os.close(pifd)
        finally:
            os.close(pfd)
    ifd = sifd = None
    try:
        if any(item.rel.startswith(INPUTS_DIR + "/") for item in items):
            ifd, st.made_inputs = _subdir(dfd, INPUTS_DIR, create=True)
            sifd = _open_dir(INPUTS_DIR, dir_fd=sfd)
        for item in items:
            head, name = _split(item.rel)
            if head:
                assert ifd is not None and sifd is not None
                _move_noreplace(sifd, name, ifd, name)
            else:
                _move_noreplace(sfd, name, dfd, name)
            st.moved.append(item.rel)
        if ifd is not None:
            os.fsync(ifd)
        os.fsync(dfd)
        fd = os.open(MANIFEST, _O_NEW, 0o644, dir_fd=sfd)
        with open(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(MANIFEST, MANIFEST, src_dir_fd=sfd, dst_dir_fd=dfd)
        st.moved.append(MANIFEST)
        os.fsync(dfd)
    finally:
        for fd_ in (ifd, sifd):
            if fd_ is not None:
                os.close(fd_)


def _roll_back(st: _Publish) -> None:
    """Undo :func:`_swap_in`: remove what it moved in, put the previous dump back."""
    for rel in reversed(st.moved):
        head, name = _split(rel)
        try:
            if head:
                fd = _open_dir(head, dir_fd=st.dfd)
                try:
                    os.unlink(name, dir_fd=fd)
                finally:
                    os.close(fd)
            else:
                os.unlink(name, dir_fd=st.dfd)
        except OSError:
            pass
    for rel in st.stashed:
        head, name = _split(rel)
        try:
            pfd = _open_dir(f"{_PREVIOUS}/{head}" if head else _PREVIOUS, dir_fd=st.sfd)
            dst = _open_dir(head, dir_fd=st.dfd) if head else st.dfd
            try:
                _move_noreplace(pfd, name, dst, name)
            finally:
                os.close(pfd)
                if head:
                    os.close(dst)
        except OSError:
            pass
    if st.made_inputs:
        try:
            os.rmdir(INPUTS_DIR, dir_fd=st.dfd)
        except OSError:
            pass
    try:
        os.fsync(st.dfd)
    except OSError:
        pass


def _manifest(plan: Mapping[str, Any], draft: Mapping[str, Any], items: list[_Staged]) -> dict[str, Any]:
    def text(v: Any) -> str | None:
        return v if isinstance(v, str) else None

    model = dict(plan.get("model") or {})
    dm = draft.get("model")
    dm = dm if isinstance(dm, dict) else {}
    model["name"] = text(dm.get("name"))
    model["class_name"] = text(dm.get("class_name"))
    tensors = [i.entry for i in items if not i.rel.startswith(INPUTS_DIR + "/")]
    inputs = [i.entry for i in items if i.rel.startswith(INPUTS_DIR + "/")]
    skipped = []
    for entry in draft.get("skipped") or []:
        if isinstance(entry, dict):
            skipped.append({str(k): v for k, v in entry.items() if v is None or type(v) in (str, int)})
    return {
        "format": DUMP_FORMAT,
        "schema_version": DUMP_SCHEMA_VERSION,
        "kerinspect_version": __version__,
        "keras_version": text(draft.get("keras_version")),
        "model": model,
        "run": plan.get("run") or {},
        "samples": draft["samples"],
        "batch_size": draft["batch_size"],
        "inputs": inputs,
        "tensors": tensors,
        "skipped": skipped,
        "warnings": [w for w in draft.get("warnings") or [] if isinstance(w, str)],
        "total_bytes": sum(int(i.entry["bytes"]) for i in items),
    }


def abort_dump(plan: Mapping[str, Any]) -> None:
    """Undo :func:`prepare_dump`: remove the staging dir and everything in it, and
    ``DIR`` itself if this run created it and it is empty. Never raises."""
    try:
        dfd = _open_dir(plan["out"], plan["out_id"])
    except (OSError, KeyError):
        return
    try:
        try:
            _rmtree_at(dfd, plan["staging"])
        except OSError:
            pass
        if plan.get("created") and not os.listdir(dfd):
            os.rmdir(plan["out"])
    except OSError:
        pass
    finally:
        os.close(dfd)


# -- reading a dump ---------------------------------------------------------------


class Dump(Mapping[str, np.ndarray]):
    """A finished dump: its manifest and its arrays, opened lazily.

    A mapping from tensor key to array: the key is the layer path for a
    single-output call (``encoder/dense``, ``shared@1``) and ``path:output`` for
    each output of a multi-output one (``lstm:state_h``), as in ``summary``. File
    names work as keys too. Arrays are read-only memory maps
    (``np.load(..., mmap_mode="r", allow_pickle=False)``).

    Attributes:
        path: the dump directory.
        manifest: the parsed ``manifest.json``.
    """

    def __init__(self, path: str, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self._by_key: dict[str, dict[str, Any]] = {}
        for entry in manifest["tensors"]:
            self._by_key.setdefault(entry["key"], entry)
        self._by_file = {e["file"]: e for e in manifest["tensors"]}
        self._cache: dict[str, np.ndarray] = {}

    @property
    def tensors(self) -> list[dict[str, Any]]:
        """The manifest's tensor entries, in graph order."""
        return list(self.manifest["tensors"])

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """The inputs the dump was made from, by input name (feed them back to
        ``dump_activations`` or ``inspect_model`` to reproduce it)."""
        return {e["name"]: self._load(e["file"]) for e in self.manifest["inputs"]}

    def entry(self, key: str) -> dict[str, Any]:
        """The manifest entry of a tensor key or file name."""
        if key in self._by_key:
            return self._by_key[key]
        if key in self._by_file:
            return self._by_file[key]
        raise KeyError(key)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._load(self.entry(key)["file"])

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def _load(self, rel: str) -> np.ndarray:
        if rel not in self._cache:
            full = os.path.join(self.path, *rel.split("/"))
            try:
                self._cache[rel] = np.load(full, mmap_mode="r", allow_pickle=False)
            except ValueError:  # an empty array cannot be memory-mapped
                self._cache[rel] = np.load(full, allow_pickle=False)
        return self._cache[rel]

    def __repr__(self) -> str:
        return f"Dump({self.path!r}, {len(self.manifest['tensors'])} tensors, {self.manifest['samples']} samples)"


def load_dump(path: str | os.PathLike[str], *, verify: bool = False) -> Dump:
    """Open a dump written by ``kerinspect dump`` / ``dump_activations``.

    Reads only ``manifest.json`` at once; arrays open on access. Every file the
    manifest names must be kerinspect's own file-name pattern and a regular file
    inside the directory (not a symlink), so a hand-edited or hostile manifest
    cannot point elsewhere.

    Args:
        path: the dump directory.
        verify: also check every file's SHA-256 against the manifest (reads all data).

    Returns:
        A :class:`Dump`.

    Raises:
        InputFileError: not a complete kerinspect dump, or a file fails the checks (exit 3).
    """
    p = os.fspath(path)
    shown = _shown(p)

    def bad(what: str, rule: str = "bad-dump") -> InputFileError:
        return InputFileError(f"Not a valid kerinspect dump: {what}. Received: path={shown}", rule=rule)

    try:
        dfd = os.open(p, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise bad(f"cannot open the directory ({_os_reason(e)})", "dump-not-found") from None
    try:
        try:
            manifest = _read_manifest_at(dfd)
        except FileNotFoundError:
            raise bad(f"no {MANIFEST} (an incomplete or interrupted dump?)") from None
        except (OSError, ValueError) as err:
            raise bad(f"unreadable {MANIFEST} ({escape_text(str(err), 100)})") from None
        if manifest.get("schema_version") != DUMP_SCHEMA_VERSION:
            raise bad(f"schema_version {manifest.get('schema_version')!r} is not {DUMP_SCHEMA_VERSION}")
        for group in ("tensors", "inputs"):
            entries = manifest.get(group)
            if not isinstance(entries, list) or not all(isinstance(x, dict) for x in entries):
                raise bad(f"{group} is not a list of objects")
            for entry in entries:
                rel = entry.get("file")
                if not isinstance(rel, str) or not _is_own_file(rel):
                    raise bad(f"file name {escape_text(str(rel), 100)!r} is not kerinspect's")
                head, _ = _split(rel)
                try:
                    fst = os.stat(rel, dir_fd=dfd, follow_symlinks=False)
                except OSError as err:
                    raise bad(f"{rel!r} is missing ({_os_reason(err)})") from None
                if head:
                    hst = os.stat(head, dir_fd=dfd, follow_symlinks=False)
                    if not stat.S_ISDIR(hst.st_mode):
                        raise bad(f"{head!r} is not a directory")
                if not stat.S_ISREG(fst.st_mode):
                    raise bad(f"{rel!r} is not a regular file")
                if group == "tensors" and not isinstance(entry.get("key"), str):
                    raise bad(f"{rel!r} has no key")
                if verify and entry.get("sha256") != _sha256_at(dfd, rel):
                    raise bad(f"{rel!r} does not match its SHA-256")
    finally:
        os.close(dfd)
    return Dump(p, manifest)


def _sha256_at(dfd: int, rel: str) -> str:
    head, name = _split(rel)
    parent = _open_dir(head, dir_fd=dfd) if head else dfd
    try:
        fd = os.open(name, _O_READ, dir_fd=parent)
    finally:
        if head:
            os.close(parent)
    with open(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
