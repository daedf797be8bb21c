"""Exit codes and the error family that carries them.

Every failure a user can cause (a bad file, a bad option, a model that cannot run)
is a :class:`KerinspectError` with a stable exit code and a short rule id. The CLI
prints it as one line, ``kerinspect: error[<rule>]: <message>``; anything else that
escapes is a bug and exits with :attr:`ExitCode.INTERNAL`.
"""

from __future__ import annotations

import enum
import re
import string
import unicodedata
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

#: Longest piece of untrusted text (a name, a value) shown in one message.
MAX_MESSAGE_CHARS = 500
#: Longest error line: room for a whole Keras explanation (which the loader keeps
#: whole, see :func:`whole_sentences`) plus the path and a hint.
MAX_LINE_CHARS = 2000

#: GitHub Actions' legacy workflow-command prefix, recognised anywhere in a log line.
LEGACY_COMMAND = "##["
#: The workflow-command delimiter GitHub's runner honours at the start of a line.
WORKFLOW_COMMAND = "::"


class ExitCode(enum.IntEnum):
    """Process exit codes. Stable: scripts and CI depend on them."""

    OK = 0
    CHECKS_FAILED = 1
    USAGE = 2
    NO_INPUT = 3
    MALFORMED = 4
    REFUSED = 5
    INFERENCE = 6
    OUTPUT = 7
    CRASHED = 8
    BAD_DATA = 9
    INTERNAL = 70


#: When several models give different codes (``kerinspect check``), the run exits
#: with the first of these that occurred: a kerinspect bug, then the signs of a
#: hostile or broken file, then a model that could not run or be found, then an
#: unwritable output. Any of them outranks 1: a model that could not be inspected
#: is never a pass, and "some checks failed" would hide that it was not checked.
EXIT_PRECEDENCE = (
    ExitCode.INTERNAL,
    ExitCode.CRASHED,
    ExitCode.REFUSED,
    ExitCode.MALFORMED,
    ExitCode.INFERENCE,
    ExitCode.BAD_DATA,
    ExitCode.NO_INPUT,
    ExitCode.OUTPUT,
    ExitCode.USAGE,
    ExitCode.CHECKS_FAILED,
    ExitCode.OK,
)


def worst_exit_code(codes: Iterable[int]) -> int:
    """The code a run exits with, by :data:`EXIT_PRECEDENCE` (0 when ``codes`` is empty).

    An unknown code (not an :class:`ExitCode`) ranks just below INTERNAL.
    """
    rank = {int(c): i for i, c in enumerate(EXIT_PRECEDENCE)}
    worst = int(ExitCode.OK)
    for code in codes:
        if rank.get(int(code), 0.5) < rank.get(worst, 0.5):
            worst = int(code)
    return worst


def escape_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Make untrusted text safe for one terminal or CI-log line.

    Control characters (newlines, ESC, NUL, ...) become Python escapes, so a layer
    name can neither break the line nor emit terminal or workflow commands; lone
    surrogates (possible in names read from JSON) become ``\\udxxx`` so that
    printing cannot fail, and invisible format characters (bidi overrides such as
    U+202E, zero-width spaces) are shown as ``\\u202e`` rather than reordering
    what is displayed. GitHub's runner honours ``::command::`` at the start of a
    line after trimming whitespace, and wrapped table cells can start a line, so no
    ``::`` survives anywhere (``:\\x3a``); it also honours the legacy
    ``##[command]`` form anywhere in a line, so ``##[`` becomes ``#\\x23[``.
    The result is cut to ``limit`` characters.
    """
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        elif 0xD800 <= code < 0xE000 or (code > 0x7F and unicodedata.category(ch) == "Cf"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    escaped = "".join(out).replace(LEGACY_COMMAND, "#\\x23[").replace(WORKFLOW_COMMAND, ":\\x3a")
    if len(escaped) > limit:
        escaped = escaped[: limit - 3] + "..."
    return escaped


def whole_sentences(text: str, limit: int = 1200) -> str:
    """``text``, or when longer than ``limit``, its whole sentences up to ``limit`` then
    ``[...]``: a cause is never cut mid-sentence (the end often says what to fix, so
    the limit is generous; it only guards against configs pasted into messages)."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind(". "), head.rfind("! "), head.rfind("? "), head.rfind(": "))
    return (head[: cut + 1] if cut > 0 else head.rsplit(" ", 1)[0]) + " [...]"


# -- messages that reference parameters ---------------------------------------------


#: What a parameter's name looks like (``batch_size``).
_PARAMETER_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class Param:
    """A reference to a parameter inside a :class:`Message`: the library shows its name
    (``batch_size``), the CLI its flag (``--batch-size``).

    Which names are parameters is :data:`kerinspect.spec.PARAMETERS` (the specs' fields
    and the API's own); this module, which every other imports, does not import it:
    ``tests/test_errors.py`` checks every template in the source against it, and a
    message from the worker is checked against it when it is read
    (:meth:`Message.from_json` ``known``).

    Raises:
        ValueError: ``name`` does not look like a parameter's name (``x[0]``, ``a.b``,
            an escape sequence from a malformed worker message).
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _PARAMETER_NAME.fullmatch(self.name):
            raise ValueError(f"not a parameter name: {self.name!r}")


#: Most segments a message may have (one from the worker is checked against it).
MAX_SEGMENTS = 200

#: How a parameter is shown: its name in, the text out (the CLI: its flag).
Namer = Callable[[str], str]


class Message:
    """Text whose parameter references are kept as data: a tuple of segments, each
    literal text (``str``) or a :class:`Param`. Build one with :func:`msg`; join with ``+``.

    ``str(message)`` shows parameters by name; :meth:`render` lets the caller name them.
    """

    __slots__ = ("segments",)

    def __init__(self, segments: Iterable[str | Param] = ()):
        merged: list[str | Param] = []
        for seg in segments:
            if isinstance(seg, str):
                if not seg:
                    continue
                if merged and isinstance(merged[-1], str):
                    merged[-1] += seg
                    continue
            elif not isinstance(seg, Param):
                raise TypeError(f"a message segment is text or a Param, not {type(seg).__name__}")
            merged.append(seg)
        self.segments: tuple[str | Param, ...] = tuple(merged)

    @property
    def parameters(self) -> tuple[str, ...]:
        """The names of the referenced parameters, in order (with repeats)."""
        return tuple(s.name for s in self.segments if isinstance(s, Param))

    def render(self, name: Namer | None = None) -> str:
        """The text, each parameter shown as ``name(parameter)`` (default: its name)."""
        return "".join(
            s if isinstance(s, str) else (s.name if name is None else name(s.name)) for s in self.segments
        )

    def to_json(self) -> list[str | dict[str, str]]:
        """Plain JSON: text as strings, a reference as ``{"param": name}``."""
        return [s if isinstance(s, str) else {"param": s.name} for s in self.segments]

    @classmethod
    def from_json(cls, data: Any, known: Collection[str] | None = None) -> Message:
        """The inverse of :meth:`to_json`; a string is one text segment.

        Raises:
            ValueError: not a string or a list of at most :data:`MAX_SEGMENTS` strings
                and ``{"param": name}`` objects, each naming a parameter (one of ``known``,
                when given).
        """
        if isinstance(data, str):
            return cls((data,))
        if not isinstance(data, list) or len(data) > MAX_SEGMENTS:
            raise ValueError(f"a message is a string or a list of at most {MAX_SEGMENTS} segments")
        segments: list[str | Param] = []
        for item in data:
            if isinstance(item, str):
                segments.append(item)
            elif isinstance(item, dict) and item.keys() == {"param"}:
                param = Param(item["param"])  # ValueError unless it looks like a parameter's name
                if known is not None and param.name not in known:
                    raise ValueError("a message segment names no known parameter")
                segments.append(param)
            else:
                raise ValueError('a message segment is a string or {"param": name}')
        return cls(segments)

    def replace_text(self, old: str, new: str) -> Message:
        """This message with ``old`` replaced by ``new`` in its text segments (a path the
        user would not recognise, say); parameter references are kept."""
        return Message(s.replace(old, new) if isinstance(s, str) else s for s in self.segments)

    @classmethod
    def of(cls, text: str | Message) -> Message:
        """``text`` as a message (a plain string is literal text, never a template)."""
        return text if isinstance(text, Message) else cls((text,))

    def __add__(self, other: str | Message) -> Message:
        if not isinstance(other, (str, Message)):
            return NotImplemented
        return Message((*self.segments, *Message.of(other).segments))

    def __radd__(self, other: str) -> Message:
        if not isinstance(other, str):
            return NotImplemented
        return Message((other, *self.segments))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.segments == self.segments

    def __hash__(self) -> int:
        return hash(self.segments)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"Message({list(self.segments)!r})"


_FORMATTER = string.Formatter()


def msg(template: str, /, **values: Any) -> Message:
    """A :class:`Message` from a literal ``template``, parsed once, here.

    A field given in ``values`` becomes text at once (``{count:,}`` and ``{name!r}``
    work as in :meth:`str.format`), so a value's own braces are never read as fields:
    untrusted text goes in ``values``, never into the template. A value that is a
    :class:`Param` or a :class:`Message` is spliced in as one. Every other field
    names a parameter and becomes a :class:`Param`::

        msg("{batch_size} must be at least 1. Received: {batch_size}={value}", value=0)

    Raises:
        ValueError: a field that is not in ``values`` is not a parameter's name, or
            carries a format or conversion, is positional or indexed; or a value is not
            used (programming errors). That each parameter field names one of
            :data:`kerinspect.spec.PARAMETERS` is checked by ``tests/test_errors.py``
            for every template in the source.
    """
    segments: list[str | Param] = []
    unused = set(values)
    for literal, field, spec, conversion in _FORMATTER.parse(template):
        segments.append(literal)
        if field is None:
            continue
        if field in values:
            unused.discard(field)
            value = values[field]
            if isinstance(value, (Param, Message)) and not spec and not conversion:
                segments.extend(Message.of(value).segments if isinstance(value, Message) else (value,))
                continue
            value = _FORMATTER.convert_field(value, conversion)
            segments.append(_FORMATTER.format_field(value, spec or ""))
            continue
        if spec or conversion:
            raise ValueError(f"the parameter field {{{field}}} takes no format or conversion: {template!r}")
        segments.append(Param(field))  # ValueError for '', '0', 'a.b', 'x[0]' and unknown names
    if unused:
        raise ValueError(f"values not used by the template {template!r}: {', '.join(sorted(unused))}")
    return Message(segments)


# -- the error family -----------------------------------------------------------------


class KerinspectError(Exception):
    """Base class of every error a user can cause.

    The message and hint are text, or a :class:`Message` that references parameters
    (:func:`msg`). ``message`` and ``hint`` read as text naming each parameter by its
    name, the Python API's view; :meth:`one_line` takes a ``name`` function for another
    view (the CLI shows flags).

    Attributes:
        exit_code: the process exit code for this failure.
        rule: a short, stable id naming what failed (``model-not-found``, ...).
        message: the message as text (parameters by name).
        hint: an optional next step for the user, as text.
        message_parts: the message as a :class:`Message`.
        hint_parts: the hint as a :class:`Message`, or None.
        parameter: the parameter the error is about: the one given, else the first
            the message references (None when it names none).
    """

    exit_code: ExitCode = ExitCode.INTERNAL
    default_rule = "error"

    def __init__(
        self,
        message: str | Message,
        *,
        rule: str | None = None,
        hint: str | Message | None = None,
        parameter: str | None = None,
    ):
        self.message_parts = Message.of(message)
        super().__init__(str(self.message_parts))
        self.rule = rule or self.default_rule
        self.hint_parts: Message | None = None if hint is None else Message.of(hint)
        self._parameter = parameter

    @property
    def message(self) -> str:
        return self.message_parts.render()

    @message.setter
    def message(self, text: str) -> None:
        # assigning the same text keeps the references; other text replaces them
        if text != self.message:
            self.message_parts = Message.of(text)

    def replace_text(self, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in the message's text (see :meth:`Message.replace_text`)."""
        self.message_parts = self.message_parts.replace_text(old, new)

    @property
    def hint(self) -> str | None:
        return None if self.hint_parts is None else self.hint_parts.render()

    @hint.setter
    def hint(self, text: str | None) -> None:
        if text != self.hint:
            self.hint_parts = None if text is None else Message.of(text)

    @property
    def parameter(self) -> str | None:
        if self._parameter is not None:
            return self._parameter
        return next(iter(self.message_parts.parameters), None)

    def render(self, name: Namer | None = None) -> str:
        """The message, then ``Hint: ...``, parameters shown by ``name`` (default: their
        names); not escaped."""
        text = self.message_parts.render(name)
        if self.hint_parts is not None and self.hint_parts.segments:
            text = f"{text} Hint: {self.hint_parts.render(name)}"
        return text

    def one_line(self, name: Namer | None = None) -> str:
        """The message and hint as one escaped line (no ``kerinspect:`` prefix),
        parameters shown by ``name`` (default: their names)."""
        return escape_text(self.render(name), MAX_LINE_CHARS)


class UsageError(KerinspectError):
    """A bad option or option value."""

    exit_code = ExitCode.USAGE
    default_rule = "usage"


class InputFileError(KerinspectError):
    """The model path is missing, not a regular file, or not a supported format."""

    exit_code = ExitCode.NO_INPUT
    default_rule = "input"


class ModelLoadError(KerinspectError):
    """The file is a model container but cannot be parsed or deserialized."""

    exit_code = ExitCode.MALFORMED
    default_rule = "load"


class PolicyError(KerinspectError):
    """The file was refused by kerinspect's security policy."""

    exit_code = ExitCode.REFUSED
    default_rule = "policy"


class InferenceError(KerinspectError):
    """The model loaded but running it failed (bad input shape, dtype, TF error)."""

    exit_code = ExitCode.INFERENCE
    default_rule = "inference"


class DataError(KerinspectError):
    """The user's input data cannot be read as samples: a corrupt image, a CSV row
    with a missing or non-numeric cell, a malformed TFRecord, NaN in an input. The
    message names the file and the row, line or image at fault."""

    exit_code = ExitCode.BAD_DATA
    default_rule = "input-data"


class OutputError(KerinspectError):
    """An output file or directory could not be written safely."""

    exit_code = ExitCode.OUTPUT
    default_rule = "output"


class ChildCrashError(KerinspectError):
    """The isolated worker process crashed, timed out or hit a resource limit."""

    exit_code = ExitCode.CRASHED
    default_rule = "crash"


class PartialIsolationWarning(UserWarning):
    """The worker ran, but without part of its confinement (no network namespace:
    only the Python socket guard stands between model code and the network). The CLI
    prints it as one ``kerinspect: warning:`` line; reports carry it as ``isolation``."""


class InputWarning(UserWarning):
    """What is fed may not be what the model expects (a model that rescales pixels by
    1/255 itself, fed pixels already in [0, 1]). ``parts`` is the :class:`Message`
    (parameters kept as references): the CLI prints it as one ``kerinspect: warning:``
    line naming flags; ``str()`` names parameters."""

    def __init__(self, parts: str | Message):
        self.parts = Message.of(parts)
        super().__init__(self.parts.render())


class NotFoundError(UsageError, KeyError):
    """A path (or rule, or model) that a report does not hold (``report["block/attn"]``);
    both a :class:`UsageError` (exit 2) and a :class:`KeyError`."""

    default_rule = "not-found"

    def __str__(self) -> str:  # KeyError's would quote the whole message, and drop the hint
        return self.one_line()

    @classmethod
    def of(cls, what: str, key: str, known: list[str], where: str) -> NotFoundError:
        """``No <what> '<key>' in <where>``, the hint naming the closest of ``known``
        (close spellings first, then the entries that hold ``key``, five at most)."""
        import difflib

        close = difflib.get_close_matches(key, known, n=5, cutoff=0.6)
        close += [k for k in known if key and key in k and k not in close]  # a bare name: paths holding it
        names = ", ".join(repr(escape_text(c, 120)) for c in close[:5])
        hint = f"did you mean {names}?" if close else None
        shown = escape_text(key, 120)
        return cls(f"No {what} {shown!r} in {where}. Received: key={shown!r}", hint=hint)
