"""Rows laid out for a notebook: the aligned lines of a repr, a compact HTML table, a
pandas DataFrame.

Generic: it knows no report type. Each report (:mod:`kerinspect.report`,
:mod:`kerinspect.check_results`, :mod:`kerinspect.diff`) picks its rows and formats
its numbers (:mod:`kerinspect.numfmt`); this module lays them out. Stdlib only; pandas
(optional) is imported by :func:`data_frame` alone, when called. Every cell is
untrusted text (names come from model files): escaped for a terminal in reprs
(:func:`~kerinspect.errors.escape_text`), with :func:`html.escape` in HTML.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import escape_text

#: Entries a repr lists (flagged tensors, failed rules, diverged pairs) before "... and N more".
REPR_LISTED = 8


def repr_text(value: object, limit: int = 120) -> str:
    """Untrusted text for a repr: control characters escaped, cut to ``limit``."""
    return escape_text(str(value), limit)


def repr_listing(heading: str, entries: Sequence[tuple[str, str]], more: str) -> list[str]:
    """Lines of a repr listing ``(key, text)`` entries under ``heading`` (none when there
    are no entries): each key escaped, padded to the widest of the first
    :data:`REPR_LISTED` (60 characters at most), then its text (already escaped); after
    that many, ``... and N more (<more>)``."""
    if not entries:
        return []
    shown = [(repr_text(key, 60), text) for key, text in entries[:REPR_LISTED]]
    width = max(len(key) for key, _ in shown)
    lines = [heading, *(f"    {key:<{width}}  {text}" for key, text in shown)]
    if len(entries) > REPR_LISTED:
        lines.append(f"    ... and {len(entries) - REPR_LISTED} more ({more})")
    return lines


def html_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[str] = (),
    indents: Sequence[int] | None = None,
    caption: str | None = None,
) -> str:
    """A compact, self-contained HTML table: every cell and the caption escaped
    with :func:`html.escape` (cells are untrusted text); ``numeric`` columns right
    aligned; ``indents`` (one per row) indent the first cell by nesting depth."""
    num = set(numeric)
    right = "text-align:right"
    out = ['<table class="kerinspect" style="border-collapse:collapse;font-size:12px">']
    if caption:
        out.append(f'<caption style="text-align:left">{html.escape(caption)}</caption>')
    out.append(
        "<thead><tr>"
        + "".join(
            f'<th style="{right if c in num else "text-align:left"}">{html.escape(c)}</th>' for c in columns
        )
        + "</tr></thead><tbody>"
    )
    for i, row in enumerate(rows):
        cells = []
        for j, (c, v) in enumerate(zip(columns, row)):
            style = [right] if c in num else ["text-align:left"]
            if j == 0 and indents is not None and indents[i]:
                style.append(f"padding-left:{indents[i] * 1.2:.1f}em")
            cells.append(f'<td style="{";".join(style)}">{html.escape(v)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def data_frame(
    rows: Sequence[Mapping[str, Any]], *, index: str | None = None, counts: Iterable[str] = ()
) -> Any:
    """``to_pandas()``: a DataFrame of plain rows, indexed by the column ``index``;
    ``counts`` columns as nullable integers (a row without a count does not make the
    column float).

    Raises:
        ImportError: pandas is not installed (it is optional).
    """
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "to_pandas() needs pandas, which is not installed; install it with: pip install pandas"
        ) from None
    if not rows:
        return pandas.DataFrame()
    frame = pandas.DataFrame(list(rows))
    for column in counts:
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame.set_index(index) if index is not None else frame
