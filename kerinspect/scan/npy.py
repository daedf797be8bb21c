"""``.npy`` headers read and checked as numpy reads them, without numpy.

Used by the static scan (the arrays of ``model.weights.npz``) and by the dump's
publish phase (the staged files), both of which must judge ``.npy`` files
before anything loads them, and never unpickle. numpy is imported only for a
dtype that is not a plain number, bool, string or object type (structured,
sub-array, datetime, ``float128``...), to read it exactly as numpy would.
"""

from __future__ import annotations

import ast
import io
import re
import struct
import sys
import tokenize
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["NpyDtype", "npy_dtype", "read_npy_header"]

NPY_MAGIC = b"\x93NUMPY"
#: version -> (header length format, encoding), as numpy reads them (1.0 and 2.0 only).
_NPY_VERSIONS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1")}
#: numpy's own cap on the header text (``max_header_size``).
MAX_NPY_HEADER = 10_000
_NATIVE = "<" if sys.byteorder == "little" else ">"
_PLAIN_DESCR = re.compile(r"([<>|=]?)([biufcSUO])([0-9]*)")
_PLAIN_SIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8), "c": (8, 16)}
_POINTER = struct.calcsize("P")
#: dtype names as ``np.dtype(...).name`` writes them (the dump's manifest), as typestrs.
_PLAIN_NAMES = {
    "bool": "b1",
    **{f"int{8 * n}": f"i{n}" for n in (1, 2, 4, 8)},
    **{f"uint{8 * n}": f"u{n}" for n in (1, 2, 4, 8)},
    **{f"float{8 * n}": f"f{n}" for n in (2, 4, 8)},
    **{f"complex{8 * n}": f"c{n}" for n in (8, 16)},
}


@dataclass(frozen=True)
class NpyDtype:
    """What kerinspect needs to know of a ``.npy`` dtype, without numpy.

    Attributes:
        kind: numpy's kind character (``f``, ``i``, ``U``, ``O``, ``V``...).
        itemsize: bytes per element.
        byteorder: ``<``, ``>`` or ``|`` (not applicable); never ``=``.
        hasobject: elements are (or contain) Python objects: reading needs pickle.
    """

    kind: str
    itemsize: int
    byteorder: str
    hasobject: bool

    @property
    def key(self) -> tuple[str, str, int]:
        """Equal keys mean equal dtypes (for the plain kinds ``biufcSU``)."""
        return self.byteorder, self.kind, self.itemsize

    def __str__(self) -> str:
        """``float32``, ``bool``, ``<U12``, ``|S5``, ``object``; else the typestr (``>i8``)."""
        names = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex"}
        if self.kind in names and self.byteorder in ("|", _NATIVE):
            return names[self.kind] + (str(8 * self.itemsize) if self.kind != "b" else "")
        if self.kind == "O":
            return "object"
        size = self.itemsize // 4 if self.kind == "U" else self.itemsize
        return f"{self.byteorder}{self.kind}{size}"


def npy_dtype(descr: Any) -> NpyDtype:
    """The :class:`NpyDtype` of a header's ``descr`` (or of a dtype name or string).

    Plain typestrs (``<f4``, ``|b1``, ``<U12``, ``|S5``, ``|O``) and names
    (``float32``, ``bool``) are read here; anything else (structured, sub-array, datetime, ``float128``...) is left to
    numpy, imported only then.

    Raises:
        ValueError: not a dtype numpy understands.
    """
    m = _PLAIN_DESCR.fullmatch(_PLAIN_NAMES.get(descr, descr)) if isinstance(descr, str) else None
    if m is not None:
        order, kind, digits = m.groups()
        n = int(digits) if digits else 0
        if kind == "O" and digits in ("", str(_POINTER)):
            return NpyDtype("O", _POINTER, "|", True)
        if kind in "SU" and n >= 1:
            itemsize = n * (4 if kind == "U" else 1)
            return NpyDtype(kind, itemsize, "|" if kind == "S" else _order(order), False)
        if n in _PLAIN_SIZES.get(kind, ()):
            return NpyDtype(kind, n, "|" if n == 1 else _order(order), False)
    return _numpy_dtype(descr)


def _order(order: str) -> str:
    return order if order in ("<", ">") else _NATIVE


def _numpy_dtype(descr: Any) -> NpyDtype:
    import numpy as np

    try:
        dt = np.lib.format.descr_to_dtype(descr)
    except (TypeError, ValueError, SyntaxError) as e:  # np.dtype parses strings: "f4,(2," is a SyntaxError
        raise ValueError(f"descr is not a valid dtype descriptor: {descr!r}") from e
    order = _NATIVE if dt.byteorder == "=" else dt.byteorder
    return NpyDtype(dt.kind, int(dt.itemsize), order, bool(dt.hasobject))


def _read_exact(f: IO[bytes], size: int, what: str) -> bytes:
    data = b""
    while len(data) < size:
        chunk = f.read(size - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) != size:
        raise ValueError(f"EOF: reading {what}, expected {size} bytes got {len(data)}")
    return data


def _filter_header(text: str) -> str:
    """Drop the ``L`` suffix Python 2 wrote after integers (as numpy does)."""
    tokens = []
    last_was_number = False
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if not (last_was_number and token.type == tokenize.NAME and token.string == "L"):
            tokens.append(token)
        last_was_number = token.type == tokenize.NUMBER
    return tokenize.untokenize(tokens)


def read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, NpyDtype]:
    """Shape, Fortran order and dtype of the ``.npy`` stream at ``f``'s position,
    checked as numpy checks them, without numpy (and without ever unpickling).

    Leaves ``f`` at the first data byte.

    Raises:
        ValueError: not a ``.npy`` stream of format 1.0 or 2.0, or a bad header.
    """
    magic = _read_exact(f, len(NPY_MAGIC) + 2, "magic string")
    if magic[:-2] != NPY_MAGIC:
        raise ValueError(f"the magic string is not correct; expected {NPY_MAGIC!r}, got {magic[:-2]!r}")
    version = (magic[-2], magic[-1])
    if version not in _NPY_VERSIONS:
        raise ValueError(f"unsupported .npy version {version}")
    length_format, encoding = _NPY_VERSIONS[version]
    (length,) = struct.unpack(
        length_format, _read_exact(f, struct.calcsize(length_format), "array header length")
    )
    text = _read_exact(f, length, "array header").decode(encoding)
    if len(text) > MAX_NPY_HEADER:
        raise ValueError(f"Header info length ({len(text)}) is large and may not be safe to load securely.")
    try:
        d = ast.literal_eval(text)
    except SyntaxError:
        try:
            d = ast.literal_eval(_filter_header(text))
        except SyntaxError as e:
            raise ValueError(f"Cannot parse header: {text!r}") from e
    if not isinstance(d, dict):
        raise ValueError(f"Header is not a dictionary: {d!r}")
    if d.keys() != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"Header does not contain the correct keys: {sorted(d.keys())!r}")
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(x, int) for x in shape):
        raise ValueError(f"shape is not valid: {shape!r}")
    if not isinstance(d["fortran_order"], bool):
        raise ValueError(f"fortran_order is not a valid bool: {d['fortran_order']!r}")
    return shape, d["fortran_order"], npy_dtype(d["descr"])
