"""How token texts are shown (stdlib only): the one place that marks padding and
puts a sample's words on a line, for the ``attention`` command and the HTML report.

Token texts come from the model file or a vocab file: untrusted, so every one passes
:func:`kerinspect.errors.escape_text` (control characters escaped, length bounded).
"""

from __future__ import annotations

from .errors import escape_text
from .report import AttentionTokens

#: How a padding token is shown.
PAD = "[pad]"
#: Longest text of one token shown.
MAX_TOKEN_CHARS = 24


def token_label(token: str, pad: str | None) -> str:
    """One token as shown: :data:`PAD` for padding, ``''`` of no vocabulary as ``''``."""
    if pad is not None and token == pad:
        return PAD
    return escape_text(token, MAX_TOKEN_CHARS) if token else "''"


def is_pad(token: str, pad: str | None) -> bool:
    """Whether ``token`` is the padding token."""
    return pad is not None and token == pad


def sequence_text(tokens: tuple[str, ...], pad: str | None, limit: int = 400) -> str:
    """Tokens on one line, a run of padding shown once with its count (``[pad] x6``)."""
    parts: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while is_pad(tokens[i], pad) and j + 1 < len(tokens) and tokens[j + 1] == tokens[i]:
            j += 1
        label = token_label(tokens[i], pad)
        parts.append(f"{label} x{j - i + 1}" if j > i else label)
        i = j + 1
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def tokens_lines(tokens: AttentionTokens) -> list[str]:
    """What the ``attention`` command prints under a layer's title: the sample's words
    on the query axis (and the key axis when they differ), or why positions are shown."""
    where = f"sample {tokens.sample}, {escape_text(tokens.vocabulary, 120)}"
    out = []
    if tokens.query is not None and tokens.query == tokens.key:
        out.append(f"tokens ({where}): {sequence_text(tokens.query, tokens.pad)}")
    else:
        for axis, seq in (("query tokens", tokens.query), ("key tokens", tokens.key)):
            if seq is not None:
                out.append(f"{axis} ({where}): {sequence_text(seq, tokens.pad)}")
    if tokens.reason:
        out.append(f"positions shown: {escape_text(tokens.reason, 300)}")
    return out


__all__ = ["MAX_TOKEN_CHARS", "PAD", "is_pad", "sequence_text", "token_label", "tokens_lines"]
