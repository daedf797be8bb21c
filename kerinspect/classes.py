"""The names of a classifier's classes, read from a file (stdlib only, parent side).

Two layouts are read, one name per line, in class order:

* plain names (``cat``, ``dog``, ...), as Keras examples and most exports write them;
* Teachable Machine's ``labels.txt``: the class index, a space, the name
  (``0 Naranja``, ``1 Negro``). A file is read this way only when every line starts
  with its own index (0, 1, 2, ... in order): ``0 5 Galoon`` names class 0 ``5 Galoon``.

Blank lines at the end are ignored; a blank line between names is an error (it
would shift every later class).
"""

from __future__ import annotations

import re

from .errors import DataError, InputFileError, escape_text, msg

#: Largest class names file read, in bytes, and most classes.
MAX_BYTES = 16 << 20
MAX_CLASSES = 1_000_000
#: Longest name kept (longer ones are cut, with an ellipsis, where they are shown).
MAX_NAME = 200

_INDEXED = re.compile(r"(\d+)[ \t]+(\S.*)")


def parse_class_names(text: str) -> tuple[str, ...]:
    """The names in ``text`` (see the module's docstring); ``()`` when it holds none.

    Raises:
        ValueError: a blank line between names (the message says which line).
    """
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line:
            raise ValueError(f"line {number} is blank")
    indexed = [_INDEXED.fullmatch(line) for line in lines]
    if lines and all(m is not None and int(m.group(1)) == k for k, m in enumerate(indexed)):
        return tuple(m.group(2).strip() for m in indexed if m is not None)
    return tuple(lines)


def read_class_names(path: str) -> tuple[str, ...]:
    """Read a class names file (see the module's docstring).

    Raises:
        InputFileError: the file cannot be read (exit 3).
        DataError: it holds no names, a blank line between names, too many, or is not
            UTF-8 text (exit 9).
    """
    shown = escape_text(path, 200)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise InputFileError(
            msg(
                "Cannot read the class names file: {why}. Received: {class_names}={p}",
                why=escape_text(e.strerror or str(e), 100),
                p=shown,
            ),
            rule="class-names",
        ) from None
    bad = None
    if len(raw) > MAX_BYTES:
        bad = f"it is larger than {MAX_BYTES >> 20} MiB"
    else:
        try:
            names = parse_class_names(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            bad = "it is not UTF-8 text"
        except ValueError as e:
            bad = f"{e}, which would shift the names after it"
        else:
            if not names:
                bad = "it holds no names"
            elif len(names) > MAX_CLASSES:
                bad = f"it holds more than {MAX_CLASSES:,} names"
            else:
                return names
    raise DataError(
        msg("Cannot use the class names file: {why}. Received: {class_names}={p}", why=bad, p=shown),
        rule="class-names",
        hint=msg("give one name per line, in class order (or Teachable Machine's labels.txt: '0 name')"),
    )


def shown_names(names: tuple[str, ...], limit: int = 3) -> str:
    """The first names of ``names`` for a message: ``'cat', 'dog', 'bird' (+7 more)``."""
    head = ", ".join(repr(escape_text(n, 40)) for n in names[:limit])
    return head + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


__all__ = ["parse_class_names", "read_class_names", "shown_names"]
