"""Untrusted text for an HTML page (stdlib only): shared by the report page's
modules (:mod:`kerinspect.render_html`, :mod:`kerinspect.render_separability`)."""

from __future__ import annotations

import html
from typing import Any

from .errors import escape_text


def text(value: Any, limit: int = 200) -> str:
    """Untrusted text as HTML text or attribute value: control characters escaped and
    length bounded (:func:`kerinspect.errors.escape_text`), then HTML-escaped, quotes
    included."""
    return html.escape(escape_text(str(value), limit=limit), quote=True)
