"""Byte counts as people write them: ``2GiB``, ``500M``, ``2GB``, ``2000000``."""

from __future__ import annotations

import re

from kerinspect.errors import UsageError, escape_text

__all__ = ["format_bytes", "parse_size"]


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
