"""JSON as Keras parses it (``json.loads``), with size and depth caps checked first.

Every JSON document of a model file (``config.json``, ``metadata.json``, an HDF5
``model_config``) is parsed here before the config policy (:mod:`kerinspect.scan.policy`)
walks it: a config too large, too deep to parse, not valid text or JSON, or not an object
is one refusal or load error with its position.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kerinspect.scan.container import Limits, Reporter, show

__all__ = ["parse_json_object"]

_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _json_depth_exceeds(text: str, limit: int) -> bool:
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            if depth > limit:
                return True
        elif tok in "]}":
            depth -= 1
    return False


def parse_json_object(raw: bytes | str, what: str, limits: Limits, rep: Reporter) -> dict[str, Any]:
    """Parse like Keras does (``json.loads``), with size and depth caps first."""
    if len(raw) > limits.max_config_bytes:
        rep.policy(
            "config-too-large",
            f"{what} is {len(raw):,} bytes, above the {limits.max_config_bytes:,}-byte limit.",
        )
    if isinstance(raw, bytes):
        try:
            text = raw.decode(json.detect_encoding(raw))
        except UnicodeDecodeError as e:
            rep.malformed("bad-json", f"{what} is not valid text: {e.reason} at byte {e.start}.")
    else:
        text = raw
    if _json_depth_exceeds(text, limits.max_json_depth):
        rep.policy("json-too-deep", f"{what} nests deeper than {limits.max_json_depth} levels.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        rep.malformed(
            "bad-json",
            f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos}).",
        )
    except RecursionError:
        rep.policy("json-too-deep", f"{what} nests too deeply to parse.")
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        rep.malformed("bad-json", f"{what} is not valid JSON: {show(e)}.")
    if not isinstance(value, dict):
        stripped = text.lstrip()
        pos = len(text) - len(stripped)
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
        rep.malformed(
            "bad-json",
            f"{what} is not a JSON object: it holds a JSON {kind} at line {line} column {col} (char {pos}).",
        )
    return value
