"""Which Python wrote a Lambda layer's bytecode, as far as its bytes tell (pure stdlib).

Keras saves a Lambda's function as ``marshal.dumps(code)``, base64-encoded: Keras 3 in
``{"class_name": "__lambda__", "config": {"code": ...}}``, Keras 2 as ``function: [code,
defaults, closure]`` with ``function_type: "lambda"``. Marshal data carries no version
(the ``.pyc`` magic number is not there), and code objects change from one Python to
the next: another Python's code fails to unmarshal ("bad marshal data"), or unmarshals
and then runs its bytecode with this interpreter's opcode table (a wrong result, an
exception such as ``StopIteration``, or a crash).

What the bytes do tell, read without unmarshalling them (:func:`foreign_python`):

- the number of 32-bit fields before ``co_code``: six for Python 3.8 to 3.10
  (``nlocals`` among them), five for Python 3.11 and later (and 3.7 and older);
- for this Python's layout, whether the bytecode is this interpreter's: every opcode is
  one it defines, each followed by its inline cache entries (zero in saved code), and
  ``RESUME`` (whose number differs between releases) opens it.

A function that passes is not proven to be this Python's; one that fails is not.
"""

from __future__ import annotations

import binascii
import codecs
import dis
import marshal
import sys
from typing import Any

__all__ = ["foreign_python", "lambda_code", "this_python"]

_CODE, _BYTES, _REF = ord("c"), ord("s"), 0x80
#: What may come before ``RESUME`` in this Python's functions (cells, generators).
_BEFORE_RESUME = frozenset(
    dis.opmap[n] for n in ("MAKE_CELL", "COPY_FREE_VARS", "RETURN_GENERATOR", "POP_TOP") if n in dis.opmap
)
#: ``RESUME``'s opcode in the releases that have it.
_RESUME = {151: "3.11 or 3.12", 149: "3.13"}


def this_python() -> str:
    """``3.11``: the running interpreter."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _layout(raw: bytes) -> tuple[int, bytes] | None:
    """``(32-bit fields before co_code, co_code)`` of a marshal'd code object, or None."""
    if len(raw) < 32 or raw[0] & ~_REF != _CODE:
        return None
    for fields in (6, 5):
        at = 1 + 4 * fields
        if raw[at] & ~_REF == _BYTES:
            n = int.from_bytes(raw[at + 1 : at + 5], "little")
            if 0 < n <= len(raw) - at - 5:
                return fields, raw[at + 5 : at + 5 + n]
    return None


def _cache_entries(op: int) -> int:
    entries: Any = getattr(dis, "_inline_cache_entries", None)
    if isinstance(entries, dict):
        return int(entries.get(op, 0))
    if isinstance(entries, list | tuple) and op < len(entries):
        return int(entries[op])
    return 0


def _this_interpreters(code: bytes) -> bool:
    """Whether ``code`` reads as this interpreter's bytecode (see the module docstring)."""
    resume = dis.opmap.get("RESUME")
    units = [code[i : i + 2] for i in range(0, len(code) - 1, 2)]
    i, seen_resume = 0, resume is None
    while i < len(units):
        op = units[i][0]
        if op == resume:
            seen_resume = True
        elif not seen_resume and op not in _BEFORE_RESUME:
            return False  # RESUME opens a function, after its cell set-up at most
        if dis.opname[op].startswith("<"):
            return False
        caches = _cache_entries(op)
        if any(u != b"\0\0" for u in units[i + 1 : i + 1 + caches]):
            return False
        i += 1 + caches
    return seen_resume


def _resume_release(code: bytes) -> str | None:
    for i in range(0, min(len(code), 10), 2):
        if code[i] in _RESUME:
            return _RESUME[code[i]]
    return None


def foreign_python(raw: bytes) -> str | None:
    """None when ``raw`` (a marshal'd code object) reads as this Python's; else what is
    known of the Python that wrote it: ``"Python 3.8 to 3.10"``, ``"Python 3.13"``, or
    ``"another Python version"``."""
    mine = _layout(marshal.dumps((lambda: None).__code__))
    found = _layout(raw)
    if mine is None or found is None:
        return None if found is None and _loads(raw) else "another Python version"
    fields, code = found
    if fields != mine[0]:
        return "Python 3.8 to 3.10" if fields == 6 else "another Python version"
    if fields == 5 and not _this_interpreters(code):
        release = _resume_release(code)
        return (
            f"Python {release}"
            if release and release != _RESUME.get(dis.opmap.get("RESUME", -1))
            else ("another Python version")
        )
    return None if _loads(raw) else "another Python version"


def _loads(raw: bytes) -> bool:
    try:
        marshal.loads(raw)
    except (ValueError, EOFError, TypeError):
        return False
    return True


def lambda_code(function: Any) -> bytes | None:
    """The marshal'd bytes of a Lambda config's ``function`` (Keras 3's ``__lambda__``
    dict, Keras 2's ``[code, defaults, closure]`` list or bare code string), decoded as
    Keras's ``func_load`` decodes them; None for a function given by name."""
    code: Any = None
    if isinstance(function, dict) and function.get("class_name") == "__lambda__":
        cfg = function.get("config")
        code = cfg.get("code") if isinstance(cfg, dict) else None
    elif isinstance(function, list | tuple) and function:
        code = function[0]
    elif isinstance(function, str):
        code = function
    if not isinstance(code, str):
        return None
    try:
        return codecs.decode(code.encode("ascii"), "base64")
    except (UnicodeEncodeError, binascii.Error):
        return code.encode("raw_unicode_escape")
