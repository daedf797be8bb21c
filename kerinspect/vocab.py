"""A vocabulary file (``vocab``): one token per line, line i is the text of id i.

Read by the parent before any worker starts (so a missing, unreadable, oversized or
non-UTF-8 file is one line and its exit code, never a worker's traceback) and again by
the worker that decodes the ids. Stdlib only.
"""

from __future__ import annotations

import os

from .errors import DataError, InputFileError, escape_text, msg

#: Largest vocabulary file read, in bytes (a 250k-token vocabulary is a few MB).
MAX_VOCAB_BYTES = 32 * 1024 * 1024


def read_vocabulary(path: str) -> tuple[str, ...]:
    """The tokens of the vocabulary file at ``path``, one per line (``\\n`` or
    ``\\r\\n``; a last line without a newline counts, an empty last line does not).

    Raises:
        InputFileError: the file is missing, not a regular file, or unreadable.
        DataError: it is larger than :data:`MAX_VOCAB_BYTES`, not UTF-8, or empty.
    """
    shown = escape_text(str(path), 300)
    try:
        with open(path, "rb") as f:
            if not os.path.isfile(path):
                raise IsADirectoryError(path)
            size = os.fstat(f.fileno()).st_size
            if size > MAX_VOCAB_BYTES:
                raise DataError(
                    msg(
                        "The vocabulary file is {size:,} bytes, over the {cap:,}-byte limit. Received: {vocab}={p}",
                        size=size,
                        cap=MAX_VOCAB_BYTES,
                        p=shown,
                    ),
                    hint="give one token per line, line i being the text of id i",
                    rule="vocab",
                )
            raw = f.read(MAX_VOCAB_BYTES + 1)
    except OSError as e:
        why = "does not exist" if isinstance(e, FileNotFoundError) else "cannot be read as a file"
        raise InputFileError(
            msg("The vocabulary file {why}. Received: {vocab}={p}", why=why, p=shown),
            hint="give a text file with one token per line, line i being the text of id i",
            rule="vocab",
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            msg(
                "The vocabulary file is not UTF-8 text (byte {byte} of line {line}). Received: {vocab}={p}",
                byte=e.start,
                line=line,
                p=shown,
            ),
            hint="save it as UTF-8, one token per line",
            rule="vocab",
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens = tuple(t[:-1] if t.endswith("\r") else t for t in lines)
    if not tokens:
        raise DataError(
            msg("The vocabulary file is empty. Received: {vocab}={p}", p=shown),
            hint="give one token per line, line i being the text of id i",
            rule="vocab",
        )
    return tokens


__all__ = ["MAX_VOCAB_BYTES", "read_vocabulary"]
