"""Exit codes and the error family that carries them.

Every failure a user can cause (a bad file, a bad option, a model that cannot run)
is a :class:`KerinspectError` with a stable exit code and a short rule id. The CLI
prints it as one line, ``kerinspect: error[<rule>]: <message>``; anything else that
escapes is a bug and exits with :attr:`ExitCode.INTERNAL`.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable

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


class KerinspectError(Exception):
    """Base class of every error a user can cause.

    Attributes:
        exit_code: the process exit code for this failure.
        rule: a short, stable id naming what failed (``model-not-found``, ...).
        hint: an optional next step for the user.
    """

    exit_code: ExitCode = ExitCode.INTERNAL
    default_rule = "error"

    def __init__(self, message: str, *, rule: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.rule = rule or self.default_rule
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as one escaped line (no ``kerinspect:`` prefix)."""
        text = self.message
        if self.hint:
            text = f"{text} Hint: {self.hint}"
        return escape_text(text, MAX_LINE_CHARS)


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
