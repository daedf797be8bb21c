"""The isolated worker: ``python -m kerinspect.sandbox.worker REQUEST.json``.

Started only by :func:`kerinspect.sandbox.runner.run_worker`. It reads one JSON
request, does the job (scan, load, run), and writes JSON lines to the file
descriptor named by ``KERINSPECT_PROTOCOL_FD``:

* ``{"type": "phase", "phase": "start|scan|load|run", "network_isolated": bool}``
* ``{"type": "progress", "done": n, "total": m}``
* ``{"type": "result", "result": {...}}`` or
  ``{"type": "error", "exit_code": n, "rule": "...", "message": [...], "hint": [...] | null,
  "traceback": "..."}``, the message and hint as segments
  (:meth:`kerinspect.errors.Message.to_json`: text, and ``{"param": name}`` where they
  reference a parameter, so the parent can show it as the CLI's flag or the API's name)

A fork server (``KERINSPECT_FORK_FD`` set, :mod:`kerinspect.sandbox.forkserver`)
confines itself and imports TensorFlow, then forks one child per job the parent sends;
each child goes on below as a worker for its job (its request path, protocol pipe and
deadline come with the job).

A session (``KERINSPECT_SESSION_FD`` set, :class:`kerinspect.sandbox.session.WorkerSession`)
runs one job, ``accumulate``, that reads commands on that pipe and answers each with a
``result`` line (:mod:`kerinspect.engine.session`); its deadline is the parent's, per command.

Its stdout and stderr go to a log the parent reads only after a crash.
Test-only fault hook: ``KERINSPECT_TEST_FAULT=<fault>@<phase>`` (fault: segv,
hang, oom, exit, nohook) fires when the worker enters that phase; ``no-netns`` makes
the worker skip its network namespace, as on a kernel that refuses one; ``no-fallocate``
makes the dump writer use sparse files, as on a filesystem without ``fallocate``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import socket
import sys
import time
import traceback
from typing import Any

from kerinspect.errors import ExitCode, KerinspectError, escape_text, msg
from kerinspect.sandbox.forkserver import FORK_FD_ENV, control_socket, serve


class _Channel:
    def __init__(self, fd: int, namespace: bool):
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self.session_fd: int | None = None
        self.network_isolated = namespace and _network_isolated()

    def send(self, msg: dict[str, Any]) -> None:
        self._out.write(json.dumps(msg, allow_nan=False) + "\n")
        self._out.flush()

    def phase(self, name: str) -> None:
        self.send({"type": "phase", "phase": name, "network_isolated": self.network_isolated})
        _maybe_fault(name)

    def progress(self, done: int, total: int) -> None:
        self.send({"type": "progress", "done": done, "total": total})


def _network_isolated() -> bool:
    """True when this process's network namespace has no interface but loopback.

    (``/sys/class/net`` would show the host's: sysfs belongs to the mount namespace.)
    """
    try:
        return {name for _, name in socket.if_nameindex()} <= {"lo"}
    except OSError:
        return False


class _NoNetwork(socket.socket):
    def __init__(self, family: Any = -1, type: Any = -1, *args: Any, **kwargs: Any):
        if family in (socket.AF_UNIX,):
            super().__init__(family, type, *args, **kwargs)
            return
        raise PermissionError("network access is disabled in the kerinspect worker")


def _guard_network() -> None:
    """Defence in depth on top of the network namespace: no Python sockets."""
    socket.socket = _NoNetwork  # type: ignore[misc]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("network access is disabled in the kerinspect worker")

    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def _maybe_fault(phase: str) -> None:
    spec = os.environ.get("KERINSPECT_TEST_FAULT", "")
    fault, _, where = spec.partition("@")
    if not fault or (where and where != phase):
        return
    if fault == "segv":
        faulthandler._sigsegv()  # type: ignore[attr-defined]
    elif fault == "hang":
        time.sleep(1e6)
    elif fault == "oom":
        hog = []
        while True:
            hog.append(bytearray(64 << 20))
    elif fault == "exit":
        os._exit(3)
    elif fault == "nohook":  # a Keras release that no longer calls the engine's graph hook
        from kerinspect.engine.keras_adapter import simulate_keras_without_graph_hook

        simulate_keras_without_graph_hook()


def _dispatch(request: Any, channel: _Channel) -> dict[str, Any]:
    from kerinspect.engine.jobs import run_request
    from kerinspect.sandbox.protocol import parse_request

    parsed = parse_request(request)  # types and ranges, once; a bad request is a protocol error
    return run_request(parsed, channel)


def _import_keras() -> bool:
    """Import TensorFlow, Keras and the engine's modules ahead of the jobs (a fork
    server): whether the process may fork workers now. Not after a failed import (each
    job's own worker imports again and reports what fails), nor where TensorFlow's
    runtime started on import or another thread runs (a fork keeps only the forking
    thread; TensorFlow's runtime and CUDA do not survive it): the jobs then spawn their
    own workers."""
    try:
        from kerinspect.engine.jobs import warm_imports
        from kerinspect.engine.tfenv import import_keras, runtime_started

        import_keras()
        warm_imports()
    except Exception:  # noqa: BLE001 - each job's own worker imports it again and reports what fails
        return False
    # one thread: nothing runs (or holds a lock) beside the thread that forks
    return not runtime_started() and len(os.listdir("/proc/self/task")) == 1


def main(argv: list[str]) -> int:
    from .confine import confine

    limits = json.loads(os.environ.get("KERINSPECT_LIMITS", "{}"))
    fault = os.environ.get("KERINSPECT_TEST_FAULT")
    if fault == "no-netns":  # as where the kernel refuses one
        limits["isolate_network"] = False
    elif fault == "no-fallocate":  # as on filesystems without fallocate: sparse files, short writes
        from kerinspect.engine import dump_writer

        def sparse(fd: int, length: int) -> None:
            if length:
                os.ftruncate(fd, length)

        dump_writer.preallocate = sparse
    from kerinspect.engine.tfenv import lean_imports

    lean_imports()  # before anything imports TensorFlow
    fork = os.environ.get(FORK_FD_ENV)
    namespace = confine({**limits, "timeout": 0} if fork else limits)  # a child arms its own
    request_path = argv[1] if len(argv) > 1 else ""
    sys.stdout = sys.stderr  # stray prints from model code must not go anywhere useful
    server = control_socket(int(fork)) if fork else None  # made before the socket guard
    _guard_network()
    if server is not None:  # a fork server: this process imports TensorFlow, its children do the jobs
        if not _import_keras():
            return 0  # the parent's jobs start workers of their own
        job = serve(server, namespace)
        if job is None:
            return 0
        request_path, fd = job[0]["request"], job[1]
    else:
        fd = int(os.environ["KERINSPECT_PROTOCOL_FD"])
    os.set_inheritable(fd, False)  # processes the model might start do not get the channel
    channel = _Channel(fd, namespace)
    session = os.environ.get("KERINSPECT_SESSION_FD")  # a session's commands (engine/session.py)
    if session is not None:
        channel.session_fd = int(session)
        os.set_inheritable(channel.session_fd, False)
    try:
        with open(request_path) as f:
            request = json.load(f)
        channel.phase("start")
        result = _dispatch(request, channel)
        channel.send({"type": "result", "result": result})
        return 0
    except KerinspectError as e:
        channel.send(
            {
                "type": "error",
                "exit_code": int(e.exit_code),
                "rule": e.rule,
                "message": e.message_parts.to_json(),
                "hint": None if e.hint_parts is None else e.hint_parts.to_json(),
                "traceback": traceback.format_exc(),
            }
        )
    except MemoryError:
        channel.send(
            {
                "type": "error",
                "exit_code": int(ExitCode.CRASHED),
                "rule": "memory-limit",
                "message": msg(
                    "The worker ran out of memory (the {max_memory} limit was reached)."
                ).to_json(),
                "hint": msg("raise {max_memory}, or lower {batch_size}").to_json(),
                "traceback": traceback.format_exc(),
            }
        )
    except Exception as e:  # noqa: BLE001 - reported to the parent as an internal error
        channel.send(
            {
                "type": "error",
                "exit_code": int(ExitCode.INTERNAL),
                "rule": "internal",
                "message": f"unexpected {type(e).__name__} in the worker: {escape_text(str(e))}",
                "traceback": traceback.format_exc(),
            }
        )
    return 1


def _exit_now(code: int) -> None:
    """End the worker as soon as its answer is sent.

    A normal exit finalises the interpreter and tears TensorFlow down, which takes
    0.7 s after every job (measured with ResNet50, an LSTM and a transformer
    alike) while the parent waits for the end of the pipe. The answer is already
    written and flushed, job files are closed, and the parent removes the scratch
    directory, so nothing is lost by ``os._exit``. Under coverage the normal exit
    is kept: coverage writes its data at exit.
    """
    if "coverage" in sys.modules:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main(sys.argv))
