"""A worker that stays: one isolated worker, many commands (:mod:`kerinspect.beam`).

:func:`~kerinspect.sandbox.runner.run_worker` gives a worker one job and waits for its
end. A :class:`WorkerSession` starts the same worker (the same confinement, scrubbed
environment, scratch directory, limits and protocol checks) with a ``session``
request (``accumulate``: :mod:`kerinspect.engine.session`): it scans and loads the
model once, then reads commands, one JSON line each, on a pipe of its own, and answers
each with one ``result`` (or ``error``) line on its protocol channel. Data files go
into the worker's scratch directory (:attr:`WorkerSession.directory`), which it may
read; the parent never reads a file the worker wrote.

``limits.timeout`` applies to each command (the first includes the scan and load),
enforced here: the worker itself runs without an alarm. Stdlib only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import time
from typing import Any

from kerinspect.errors import ChildCrashError, msg

from .runner import (
    _LIVE,
    _LIVE_LOCK,
    MAX_MESSAGE_BYTES,
    PHASES,
    WorkerLimits,
    _count_start,
    _error_from,
    _kill_group,
    _parse_message,
    _protocol_error,
    _Started,
    _tail,
)


class WorkerSession:
    """One worker, kept for many commands (see the module's docstring).

    Args:
        request: the session's job, as plain JSON data (``command`` ``accumulate``).
        limits: as for :func:`~kerinspect.sandbox.runner.run_worker`; ``timeout`` per command.
    """

    def __init__(self, request: dict[str, Any], limits: WorkerLimits | None = None):
        self.limits = limits or WorkerLimits()
        self._request = request
        self._started = _Started(dataclasses.replace(self.limits, timeout=0), None, request, session=True)
        self._pipe = os.fdopen(self._started.read_fd, "rb", buffering=0)
        self._started.read_fd = -1
        self._buf = bytearray()
        self.phase = PHASES["starting"]
        self.network_isolated = False
        self._closed = False

    @property
    def directory(self) -> str:
        """Where the parent writes the files the worker reads (the worker's own directory)."""
        return self._started.scratch

    def batch(self, path: str) -> int:
        """Run every sample of ``path`` (a file in :attr:`directory`): the rows it held."""
        answer = self._ask({"op": "batch", "path": path})
        rows = answer.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise _protocol_error("a batch answer without its rows")
        return rows

    def flush(self) -> dict[str, Any]:
        """The statistics since the last flush, unfinished (checked by the caller)."""
        answer = self._ask({"op": "flush"})
        if not isinstance(answer.get("state"), dict):
            raise _protocol_error("a flush answer without a state")
        return answer["state"]

    def close(self) -> None:
        """End the session: the worker finishes its job and exits; what is left is killed."""
        if self._closed:
            return
        self._closed = True
        proc = self._started.proc
        try:
            if self._started.command_fd >= 0:
                os.close(self._started.command_fd)
                self._started.command_fd = -1
            with contextlib.suppress(ChildCrashError, TimeoutError, OSError):
                self._read(time.monotonic() + 30)  # its last answer; then its exit
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()
            _kill_group(proc.pid)
            with _LIVE_LOCK:
                _LIVE.discard(proc.pid)
            self._started.close()
            _count_start(self._request, self.phase)

    def __enter__(self) -> WorkerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol ------------------------------------------------------------------

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise ChildCrashError("The worker session was closed.", rule="worker-failed")
        deadline = time.monotonic() + self.limits.timeout if self.limits.timeout > 0 else None
        line = (json.dumps(command) + "\n").encode()
        try:
            os.write(self._started.command_fd, line)
        except OSError:  # it ended (its scan refused the file...): its answer says why
            pass
        try:
            return self._read(deadline)
        except TimeoutError:
            _kill_group(self._started.proc.pid)
            raise ChildCrashError(
                f"The worker timed out after {self.limits.timeout:g} s while {self.phase}; it was killed.",
                rule="timeout",
                hint=msg("raise {timeout} if the model is just slow"),
            ) from None

    def _read(self, deadline: float | None) -> dict[str, Any]:
        """The next ``result`` message's result (phases and progress noted on the way);
        the worker's error raised as its own class; a crash as :class:`ChildCrashError`."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                message = _parse_message(bytes(self._buf[:end]))
                del self._buf[: end + 1]
                kind = message["type"]
                if kind == "phase":
                    self.phase = PHASES.get(message["phase"], "working")
                    self.network_isolated = message.get("network_isolated") is True
                elif kind == "result":
                    return message["result"]
                elif kind == "error":
                    raise _error_from(message)
                continue
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._pipe], [], [], wait)
            if not ready:
                continue
            chunk = self._pipe.read(1 << 16)
            if not chunk:
                raise self._ended()
            self._buf += chunk
            if len(self._buf) > MAX_MESSAGE_BYTES:
                raise _protocol_error(f"a message longer than {MAX_MESSAGE_BYTES:,} bytes")

    def _ended(self) -> ChildCrashError:
        """Why the worker's channel closed without an answer."""
        proc = self._started.proc
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        code = proc.returncode
        if code is not None and code < 0:
            return ChildCrashError(
                f"The worker crashed (signal {-code}) while {self.phase}.", rule="worker-crashed"
            )
        detail = _tail(os.path.join(self._started.scratch, "worker.log"))
        return ChildCrashError(
            f"The worker exited with status {code} while {self.phase} without an answer"
            + (f": {detail}" if detail else "."),
            rule="worker-failed",
        )
