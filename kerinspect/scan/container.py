"""The containers of a saved model, checked before anything reads their content.

One module, one set of limits (:class:`Limits`) for every container kerinspect
opens: the ``.keras`` zip (members, names, layout: no duplicates, polyglots,
hidden bytes or bombs), the ``model.weights.npz`` inside it (``.npy`` headers
read without numpy: :mod:`kerinspect.scan.npy`), and HDF5 (links, external or virtual storage, plugin
filters, shape bombs). Used by the static scan (:mod:`kerinspect.scan.model`)
and by ``kerinspect weights`` (:mod:`kerinspect.scan.weights`).

Standard library at import; h5py only inside the HDF5 functions.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, NoReturn, TypeVar

from kerinspect.errors import (
    InputFileError,
    KerinspectError,
    Message,
    ModelLoadError,
    PolicyError,
    escape_text,
)
from kerinspect.scan.npy import read_npy_header
from kerinspect.spec import DEFAULT_MAX_PARAMS, MAX_INPUT_ELEMENTS

ZIP_LOCAL_MAGIC = b"PK\x03\x04"
ZIP_EOCD_MAGIC = b"PK\x05\x06"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
LOCAL_HEADER_SIZE = 30

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_H5_MEMBER = "model.weights.h5"
WEIGHTS_NPZ_MEMBER = "model.weights.npz"
_TOP_MEMBERS = frozenset({CONFIG_MEMBER, METADATA_MEMBER, WEIGHTS_H5_MEMBER, WEIGHTS_NPZ_MEMBER})
_ASSETS_PREFIX = "assets/"

#: HDF5 filters libhdf5 ships with (deflate, shuffle, fletcher32, szip, nbit,
#: scaleoffset) plus LZF from h5py. Anything else makes libhdf5 search plugin paths.
_HDF5_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})

_T = TypeVar("_T")


@dataclass(frozen=True)
class Limits:
    """Resource caps of the static scan. Defaults suit a CI gate; tests patch them down.

    Attributes:
        max_config_bytes: largest ``config.json`` / HDF5 ``model_config``.
        max_metadata_bytes: largest ``metadata.json``.
        max_compression_ratio: largest uncompressed/compressed ratio of a zip member
            that inflates to more than ``compression_floor_bytes``.
        compression_floor_bytes: members at most this big are not ratio-checked.
        max_total_uncompressed: sum of the declared sizes of all zip members.
        max_zip_members: number of entries in a ``.keras`` archive (or its npz).
        max_json_depth: nesting depth of a config.
        max_params: parameters estimated from the config (``--max-params``).
        max_input_elements: elements per sample of one declared input.
        max_declared_weight_bytes: declared bytes (shape x itemsize) of one weight array.
        max_hdf5_expansion: declared bytes over bytes stored for one HDF5 dataset that
            is bigger than ``compression_floor_bytes``.
    """

    max_config_bytes: int = 16 << 20
    max_metadata_bytes: int = 64 << 10
    max_compression_ratio: float = 100.0
    compression_floor_bytes: int = 1 << 20
    max_total_uncompressed: int = 8 << 30
    max_zip_members: int = 10_000
    max_json_depth: int = 100
    max_params: int = DEFAULT_MAX_PARAMS
    max_input_elements: int = MAX_INPUT_ELEMENTS
    max_declared_weight_bytes: int = 4 << 30
    max_hdf5_expansion: float = 1000.0


# --------------------------------------------------------------------------- errors


def show(text: object, limit: int = 200) -> str:
    """Untrusted text, escaped and cut, for a message."""
    return escape_text(str(text), limit)


class Reporter:
    """Builds errors that end with ``Received: path=...`` when a file is known."""

    def __init__(self, path: str | None):
        self.received = f" Received: path={escape_text(path)}" if path is not None else ""

    def fail(
        self,
        cls: type[KerinspectError],
        rule: str,
        message: str | Message,
        *,
        hint: str | Message | None = None,
    ) -> NoReturn:
        raise cls(message + self.received, rule=rule, hint=hint)

    def policy(self, rule: str, message: str | Message, *, hint: str | Message | None = None) -> NoReturn:
        self.fail(PolicyError, rule, message, hint=hint)

    def malformed(self, rule: str, message: str | Message, *, hint: str | Message | None = None) -> NoReturn:
        self.fail(ModelLoadError, rule, message, hint=hint)


def open_regular(path: str, rep: Reporter) -> tuple[IO[bytes], int]:
    """Open ``path`` for reading if it is a regular file (a FIFO cannot block the open)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        rep.fail(InputFileError, "model-unreadable", f"Cannot open the model file: {e.strerror}.")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        rep.fail(
            InputFileError, "not-a-file", "Expected a regular file (not a FIFO, device, socket or directory)."
        )
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st.st_size


# --------------------------------------------------------------------------- zip


class ZipWindow(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``start`` of a binary file.

    Keras stores ``model.weights.h5`` uncompressed inside a ``.keras`` archive; h5py
    reads file-like objects, so the weights can be opened without copying them out.
    """

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
    if len(header) != LOCAL_HEADER_SIZE or header[:4] != ZIP_LOCAL_MAGIC:
        return None
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + LOCAL_HEADER_SIZE + name_len + extra_len


def zip_name_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member name is refused in a ``.keras`` archive (None: it is fine)."""
    name = info.filename
    if info.orig_filename != name:
        return "its name contains a NUL byte"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "it is a symbolic link"
    if name in _TOP_MEMBERS:
        return None
    if not name.startswith(_ASSETS_PREFIX) or name == _ASSETS_PREFIX:
        return "it is not one of config.json, metadata.json, model.weights.h5|.npz or assets/..."
    parts = name[len(_ASSETS_PREFIX) :].split("/")
    if parts[-1] == "" and info.is_dir():
        parts = parts[:-1]
    for part in parts:
        if (
            part in ("", ".", "..")
            or "\\" in part
            or ":" in part
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in part)
        ):
            return "its asset path is not a plain relative path"
    return None


def check_members(infos: list[zipfile.ZipInfo], limits: Limits, rep: Reporter, archive: str) -> None:
    """Per-entry checks from the central directory, before any member is read:
    entry count, duplicate names, encryption, compression method, sizes, bombs."""
    if len(infos) > limits.max_zip_members:
        rep.policy(
            "zip-member",
            f"{archive} has {len(infos):,} entries, above the limit of {limits.max_zip_members:,}.",
        )
    counts = Counter(i.filename for i in infos)
    dupes = sorted(n for n, c in counts.items() if c > 1)
    if dupes:
        rep.policy(
            "zip-duplicate",
            f"{archive} holds {counts[dupes[0]]} members named '{show(dupes[0])}'; readers disagree on which one counts.",
        )
    total = 0
    for info in infos:
        shown = show(info.filename)
        if info.flag_bits & 0x1:
            rep.malformed(
                "zip-encrypted", f"{archive} member '{shown}' is encrypted and cannot be inspected."
            )
        if info.compress_type not in _ZIP_METHODS:
            rep.malformed(
                "not-a-zip",
                f"{archive} member '{shown}' uses unsupported compression method {info.compress_type}.",
            )
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            rep.malformed("not-a-zip", f"{archive} member '{shown}' is corrupt (stored sizes disagree).")
        if (
            info.file_size > limits.compression_floor_bytes
            and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1)
        ):
            rep.policy(
                "zip-bomb",
                f"{archive} member '{shown}' inflates from {info.compress_size:,} to {info.file_size:,} bytes "
                f"(more than {limits.max_compression_ratio:g}x).",
            )
        total += info.file_size
    if total > limits.max_total_uncompressed:
        rep.policy(
            "zip-bomb",
            f"{archive} declares {total:,} uncompressed bytes, above the limit of {limits.max_total_uncompressed:,}.",
        )


def check_layout(
    fp: IO[bytes],
    size: int,
    infos: list[zipfile.ZipInfo],
    start_dir: int | None,
    rep: Reporter,
    archive: str,
) -> None:
    """Members must tile the file from offset 0 to the central directory, and the
    end record must end the file: no prepended, hidden or appended bytes."""
    pos = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset != pos:
            if pos == 0:
                rep.policy(
                    "polyglot",
                    f"{archive} does not start with its first member (it starts {info.header_offset:,} bytes in): "
                    "the file is something else with a zip appended.",
                )
            rep.policy(
                "zip-layout",
                f"{archive} member '{show(info.filename)}' starts at byte {info.header_offset:,}, expected {pos:,} "
                "(overlapping members or hidden bytes between them).",
            )
        fp.seek(pos)
        header = fp.read(LOCAL_HEADER_SIZE)
        if len(header) < LOCAL_HEADER_SIZE or header[:4] != ZIP_LOCAL_MAGIC:
            rep.malformed(
                "not-a-zip", f"{archive} is corrupt: no local header for member '{show(info.filename)}'."
            )
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        pos = info.header_offset + LOCAL_HEADER_SIZE + name_len + extra_len + info.compress_size
        if info.flag_bits & 0x08:  # data descriptor: [signature] crc, sizes (8 bytes each with zip64)
            fp.seek(info.header_offset + LOCAL_HEADER_SIZE + name_len)
            zip64 = _has_zip64_extra(fp.read(extra_len))
            fp.seek(pos)
            pos += 4 if fp.read(4) == b"PK\x07\x08" else 0
            pos += 20 if zip64 else 12
    if start_dir is not None and infos and pos != start_dir:
        rep.policy(
            "zip-layout", f"{archive} has {start_dir - pos:,} unaccounted bytes before its central directory."
        )
    tail_len = min(size, 22 + 0xFFFF)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    at = tail.rfind(ZIP_EOCD_MAGIC)
    if at < 0 or at + 22 > len(tail):
        rep.malformed("not-a-zip", f"{archive} is not a valid zip archive (no end record).")
    (comment_len,) = struct.unpack("<H", tail[at + 20 : at + 22])
    if at + 22 + comment_len != len(tail):
        rep.policy(
            "polyglot", f"{archive} has {len(tail) - at - 22 - comment_len:,} bytes after its zip end record."
        )


def _has_zip64_extra(extra: bytes) -> bool:
    at = 0
    while at + 4 <= len(extra):
        header_id, length = struct.unpack("<HH", extra[at : at + 4])
        if header_id == 0x0001:
            return True
        at += 4 + length
    return False


def open_zip(fp: IO[bytes], rep: Reporter, archive: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(fp)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        ValueError,
        OSError,
        NotImplementedError,
    ) as e:
        rep.malformed(
            "not-a-zip",
            f"{archive} is not a valid zip archive (truncated or corrupt: {show(e, 120)}).",
            hint="re-save the model with model.save('model.keras')",
        )


def member_stream(fp: IO[bytes], zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """A seekable stream of one member: a window for stored members, else inflated in memory."""
    if info.compress_type == zipfile.ZIP_STORED:
        start = stored_member_start(fp, info)
        if start is not None:
            return io.BufferedReader(ZipWindow(fp, start, info.file_size))
    return io.BytesIO(zf.read(info))


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, rep: Reporter) -> bytes:
    """At most ``cap + 1`` bytes of a member (the caller compares with ``cap``)."""
    try:
        with zf.open(info) as f:
            data = f.read(cap + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        rep.malformed("not-a-zip", f"Archive member '{show(info.filename)}' cannot be read ({show(e, 120)}).")
    return data


def is_zip_too(fp: IO[bytes]) -> bool:
    """``fp`` (an HDF5 file) also holds a zip archive whose first member is where it says."""
    try:
        with zipfile.ZipFile(fp) as zf:
            infos = zf.infolist()
            if not infos:
                return False
            fp.seek(infos[0].header_offset)
            return fp.read(4) == ZIP_LOCAL_MAGIC
    except Exception:  # noqa: BLE001 - anything zipfile rejects is not a zip
        return False


def scan_keras_archive(
    fp: IO[bytes],
    size: int,
    limits: Limits,
    rep: Reporter,
    judge_config: Callable[[bytes, bytes | None], _T],
) -> _T:
    """Check a ``.keras`` archive: members, names and layout, then ``config.json``
    through ``judge_config(config bytes, metadata.json bytes or None)`` (the config is
    judged before libhdf5 ever parses the weights), then the weights member (HDF5 or npz).

    Returns:
        What ``judge_config`` returned.
    """
    fp.seek(0)
    head = fp.read(8)
    zf = open_zip(fp, rep, "The .keras archive")
    with zf:
        infos = zf.infolist()
        if not head.startswith(ZIP_LOCAL_MAGIC):
            what = "HDF5 data" if head.startswith(HDF5_MAGIC) else "other data"
            rep.policy(
                "polyglot",
                f"The file starts with {what}, not with a zip member, but also holds a zip archive.",
            )
        check_members(infos, limits, rep, "The .keras archive")
        for info in infos:
            problem = zip_name_problem(info)
            if problem:
                rep.policy("zip-member", f"Archive member '{show(info.filename)}' is refused: {problem}.")
        check_layout(fp, size, infos, getattr(zf, "start_dir", None), rep, "The .keras archive")
        names = {i.filename: i for i in infos}
        if CONFIG_MEMBER not in names:
            rep.malformed(
                "no-config", "The .keras archive has no config.json: it is not a saved Keras model."
            )
        if WEIGHTS_H5_MEMBER in names and WEIGHTS_NPZ_MEMBER in names:
            rep.policy("zip-member", "The .keras archive holds both model.weights.h5 and model.weights.npz.")
        weights = names.get(WEIGHTS_H5_MEMBER) or names.get(WEIGHTS_NPZ_MEMBER)
        if weights is None:
            rep.malformed(
                "no-weights", "Expected a model.weights.h5 or model.weights.npz file in the .keras archive."
            )
        meta = names.get(METADATA_MEMBER)
        if meta is not None and meta.file_size > limits.max_metadata_bytes:
            rep.policy(
                "config-too-large",
                f"metadata.json is {meta.file_size:,} bytes, above the {limits.max_metadata_bytes:,}-byte limit.",
            )
        cfg_info = names[CONFIG_MEMBER]
        if cfg_info.file_size > limits.max_config_bytes:
            rep.policy(
                "config-too-large",
                f"config.json is {cfg_info.file_size:,} bytes, above the {limits.max_config_bytes:,}-byte limit.",
            )
        metadata = None if meta is None else read_member(zf, meta, limits.max_metadata_bytes, rep)
        verdict = judge_config(read_member(zf, cfg_info, limits.max_config_bytes, rep), metadata)
        stream = member_stream(fp, zf, weights)
        if weights.filename == WEIGHTS_H5_MEMBER:
            with stream:
                scan_hdf5_file(stream, weights.file_size, limits, rep, "model.weights.h5", parse_json=None)
        else:
            with stream:
                scan_npz(stream, weights.file_size, limits, rep)
    return verdict


# --------------------------------------------------------------------------- npz weights


def bomb_reason(declared: int, stored: int, limit: int) -> str:
    if declared > limit:
        return f"above the {limit:,}-byte limit for one weight array"
    return f"far more than the {stored:,} bytes it stores"


def scan_npz(stream: IO[bytes], size: int, limits: Limits, rep: Reporter) -> None:
    """``model.weights.npz``: a clean zip of plain ``.npy`` entries whose headers
    declare no more than they store."""
    archive = WEIGHTS_NPZ_MEMBER
    zf = open_zip(stream, rep, archive)
    with zf:
        infos = zf.infolist()
        check_members(infos, limits, rep, archive)
        check_layout(stream, size, infos, getattr(zf, "start_dir", None), rep, archive)
        for info in infos:
            name = info.filename
            if (
                info.orig_filename != name
                or not name.endswith(".npy")
                or name.startswith("/")
                or "\\" in name
                or any(part in ("", ".", "..") for part in name.split("/"))
            ):
                rep.policy("zip-member", f"{archive} member '{show(name)}' is not a plain .npy entry.")
            try:
                with zf.open(info) as f:
                    shape, _, dtype = read_npy_header(f)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as e:
                rep.malformed(
                    "bad-weights",
                    f"{archive} member '{show(name)}' is not a valid .npy array ({show(e, 120)}).",
                )
            declared = math.prod(shape) * dtype.itemsize
            if declared > limits.max_declared_weight_bytes or (
                not dtype.hasobject and declared > info.file_size
            ):
                rep.policy(
                    "npz-shape-bomb",
                    f"{archive} member '{show(name)}' declares shape {shape} ({declared:,} bytes): "
                    + bomb_reason(declared, info.file_size, limits.max_declared_weight_bytes)
                    + ".",
                )


# --------------------------------------------------------------------------- HDF5


def h5_text_attr(value: Any) -> str | None:
    """An HDF5 attribute as text (str, bytes, or a one-element array of either)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "size", 0) == 1:
        return h5_text_attr(value.reshape(()).item() if shape else value.item())
    return None


def scan_hdf5_file(
    src: IO[bytes],
    size: int,
    limits: Limits,
    rep: Reporter,
    what: str,
    *,
    parse_json: Callable[[str], dict[str, Any]] | None,
) -> tuple[dict[str, Any], str | None] | None:
    """Refuse links, external or virtual storage and shape bombs.

    With ``parse_json`` (a legacy ``.h5`` model), also read the ``model_config``
    attribute, parse it with ``parse_json`` and return it with the ``keras_version``
    attribute (None when absent or not text).
    """
    import h5py

    src.seek(0)
    if src.read(8) != HDF5_MAGIC:
        rep.malformed("bad-hdf5", f"{what} is not an HDF5 file (no signature at offset 0).")
    src.seek(0)
    try:
        f = h5py.File(src, "r")
    except Exception as e:  # noqa: BLE001 - libhdf5 raises many types for a corrupt file
        rep.malformed("bad-hdf5", f"{what} cannot be opened as HDF5 ({show(e, 160)}).")
    with f:
        found: list[tuple[str, str]] = []

        def visit(name: str, link: Any) -> bool | None:
            if isinstance(link, h5py.ExternalLink):
                found.append(("hdf5-link", f"{what} holds an external link '{show(name)}' to another file"))
            elif isinstance(link, h5py.SoftLink):
                found.append(("hdf5-link", f"{what} holds a soft link '{show(name)}' -> '{show(link.path)}'"))
            else:
                obj = f.get(name)
                if isinstance(obj, h5py.Dataset):
                    problem = dataset_problem(obj, name, limits, what, file_size=size)
                    if problem:
                        found.append(problem)
            return True if found else None

        try:
            f.visititems_links(visit)
        except KerinspectError:
            raise
        except Exception as e:  # noqa: BLE001
            rep.malformed("bad-hdf5", f"{what} is corrupt ({show(e, 160)}).")
        if found:
            rule, message = found[0]
            rep.policy(rule, message + ".")
        if parse_json is None:
            return None
        try:
            raw = f.attrs.get("model_config")
        except Exception as e:  # noqa: BLE001
            rep.malformed("bad-hdf5", f"{what} has an unreadable model_config attribute ({show(e, 160)}).")
        if raw is None:
            rep.malformed(
                "no-model-config",
                f"{what} has no Keras model_config: it holds weights or other data, not a saved model.",
            )
        try:
            text = h5_text_attr(raw)
        except UnicodeDecodeError as e:
            rep.malformed("bad-json", f"model_config is not valid UTF-8 text: {e.reason} at byte {e.start}.")
        if text is None:
            rep.malformed("bad-json", "model_config is not a text attribute.")
        config = parse_json(text)
        link = f.get("model_weights", getlink=True)
        if link is None:
            rep.malformed("no-weights", f"{what} has no model_weights group.")
        try:
            version = h5_text_attr(f.attrs.get("keras_version"))
        except Exception:  # noqa: BLE001 - not text: no version (the config says the rest)
            version = None
        return config, version


def dataset_problem(
    ds: Any, name: str, limits: Limits, what: str, *, file_size: int | None = None
) -> tuple[str, str] | None:
    """Why reading this HDF5 dataset is refused, as ``(rule, message)``, or None.

    Only metadata is read: external storage or a virtual dataset (the data lives
    in other files), a filter that needs a plugin library, or a declared size far
    above what is stored (a shape bomb). Shared by the scan and ``kerinspect weights``.
    """
    shown = show(name)
    if ds.external:
        return "hdf5-external-storage", f"{what} dataset '{shown}' keeps its data in external file(s)"
    if ds.is_virtual:
        return "hdf5-virtual-dataset", f"{what} dataset '{shown}' is a virtual dataset mapping other files"
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _HDF5_FILTERS:
            return (
                "hdf5-filter",
                f"{what} dataset '{shown}' uses HDF5 filter {code}, which needs a plugin library",
            )
    shape = ds.shape or ()
    declared = math.prod(shape) * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    if declared > limits.max_declared_weight_bytes or (
        declared > limits.compression_floor_bytes and declared > limits.max_hdf5_expansion * max(stored, 1)
    ):
        return (
            "hdf5-shape-bomb",
            f"{what} dataset '{shown}' declares shape {show(shape)} ({declared:,} bytes): "
            + bomb_reason(declared, stored, limits.max_declared_weight_bytes)
            + (f" (the file has {file_size:,} bytes)" if file_size else ""),
        )
    return None
