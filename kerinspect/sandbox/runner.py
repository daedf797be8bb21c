"""Run model loading and inference in an isolated, disposable worker process.

A model file is untrusted input: libhdf5 can crash or hang on a malformed file,
one config field can ask for gigabytes, and ``safe_mode`` is a denylist with
known gaps (../shared/SAFETY.md). So the parent (which never imports TensorFlow)
runs every step that parses the model in a child process:

* its own session and process group, killed as a whole on timeout or exit;
* a scrubbed environment: ``KERAS_BACKEND=tensorflow``, no ``TF_USE_LEGACY_KERAS``,
  ``HOME``/``KERAS_HOME``/``TMPDIR`` in a private scratch directory;
* ``RLIMIT_DATA`` (memory) and ``RLIMIT_CORE=0``; a new network namespace where the
  kernel allows it, and a socket guard inside the worker in any case;
* results come back as JSON lines on a private pipe, never through stdout.

A crash, hang or resource-limit hit becomes :class:`ChildCrashError` (exit 8)
with one clear line saying what the worker was doing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kerinspect.errors import (
    ChildCrashError,
    DataError,
    ExitCode,
    InferenceError,
    InputFileError,
    KerinspectError,
    Message,
    ModelLoadError,
    OutputError,
    PolicyError,
    UsageError,
    escape_text,
    msg,
)
from kerinspect.sandbox import scratch as scratch_dirs
from kerinspect.sandbox.forkserver import FORK_FD_ENV
from kerinspect.spec import PARAMETERS

#: Environment variables passed through to the worker (everything else is dropped).
_PASSTHROUGH_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "SYSTEMROOT",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "OPENBLAS_NUM_THREADS",
    "KERINSPECT_TEST_FAULT",
    "KERINSPECT_KERNEL",  # off: the compiled engine without its fused kernel (engine/kernel)
    "COVERAGE_PROCESS_START",
)
_ERROR_CLASSES: dict[int, type[KerinspectError]] = {
    ExitCode.USAGE: UsageError,
    ExitCode.NO_INPUT: InputFileError,
    ExitCode.MALFORMED: ModelLoadError,
    ExitCode.REFUSED: PolicyError,
    ExitCode.INFERENCE: InferenceError,
    ExitCode.OUTPUT: OutputError,
    ExitCode.CRASHED: ChildCrashError,
    ExitCode.BAD_DATA: DataError,
}
#: How each worker phase reads in "the worker crashed while ..." messages.
PHASES = {
    "starting": "starting",
    "start": "starting",
    "scan": "scanning the model file",
    "read": "reading the weights",
    "load": "loading the model",
    "run": "running the model",
}


def _cgroup_memory_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 or v1), if it has one."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return None


def default_max_memory() -> int:
    """Half of the memory this process may use (bytes): physical RAM, or the
    container's cgroup limit when lower, so a clean limit error comes before the
    kernel's OOM killer."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        total = 16 << 30
    cgroup = _cgroup_memory_limit()
    return min(total, cgroup) // 2 if cgroup else total // 2


@dataclass(frozen=True)
class WorkerLimits:
    """Resources the worker may use.

    Attributes:
        timeout: wall-clock seconds for the whole job (load + run); 0 = none.
        max_memory: bytes of data segment (``RLIMIT_DATA``); 0 = none.
        max_file_size: largest file the worker may write (``RLIMIT_FSIZE``); 0 = none.
        isolate_network: try a private network namespace (no interfaces).
    """

    timeout: float = 600.0
    max_memory: int = field(default_factory=default_max_memory)
    max_file_size: int = 0
    isolate_network: bool = True

    @classmethod
    def of(cls, load: Any, max_file_size: int = 0) -> WorkerLimits:
        """The limits a :class:`~kerinspect.spec.LoadOptions` asks for (its ``max_memory``
        None: :func:`default_max_memory`)."""
        memory = default_max_memory() if load.max_memory is None else load.max_memory
        return cls(timeout=load.timeout, max_memory=memory, max_file_size=max_file_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "timeout": self.timeout,
            "max_memory": self.max_memory,
            "max_file_size": self.max_file_size,
            "isolate_network": self.isolate_network,
            "parent_pid": os.getpid(),
        }


@dataclass
class WorkerOutcome:
    """What a finished worker sent back."""

    result: dict[str, Any]
    network_isolated: bool


def _passed_through() -> dict[str, str]:
    """This process's values of :data:`_PASSTHROUGH_ENV`."""
    return {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}


def _worker_env(scratch: str) -> dict[str, str]:
    env = _passed_through()
    # the directory holding the kerinspect package (this file is kerinspect/sandbox/runner.py)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env.update(
        PYTHONPATH=package_parent,
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="3",
        HOME=scratch,
        KERAS_HOME=os.path.join(scratch, "keras"),
        TMPDIR=os.path.join(scratch, "tmp"),
        XDG_CACHE_HOME=os.path.join(scratch, "cache"),
        MPLCONFIGDIR=os.path.join(scratch, "cache"),
        NO_PROXY="*",
    )
    # The worker's numpy work is level-1 BLAS on cache-sized blocks (stats.summarize):
    # OpenBLAS threads only slow it down there (0.83 s instead of 0.58 s for one ResNet50
    # batch) and their spinning competes with TensorFlow's own pools. Unless set by the user.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    for d in ("keras", "tmp", "cache"):
        os.makedirs(os.path.join(scratch, d), exist_ok=True)
    return env


#: Longest line the worker may send (a whole report is one line).
MAX_MESSAGE_BYTES = 256 << 20
_MESSAGE_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "phase": {"phase": str},
    "progress": {"done": int, "total": int},
    "result": {"result": dict},
    "error": {"exit_code": int},
}


def _protocol_error(what: str) -> ChildCrashError:
    return ChildCrashError(
        f"The worker broke the protocol ({what}); its result was discarded.", rule="protocol"
    )


def _parse_message(line: bytes) -> dict[str, Any]:
    """One JSON line from the worker, checked against :data:`_MESSAGE_FIELDS`. The
    worker runs model code, so nothing it sends is trusted to have the right shape."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        raise _protocol_error("a line that is not JSON") from None
    fields = _MESSAGE_FIELDS.get(str(msg.get("type"))) if isinstance(msg, dict) else None
    if fields is None:
        raise _protocol_error("a message of unknown type")
    for key, kind in fields.items():
        if not isinstance(msg.get(key), kind) or isinstance(msg.get(key), bool):
            raise _protocol_error(f"a {msg['type']} message without a valid {key!r}")
    if msg["type"] == "error":
        for key in ("rule", "traceback"):
            if msg.get(key) is not None and not isinstance(msg[key], str):
                raise _protocol_error(f"an error message with a non-text {key!r}")
        for key in ("message", "hint"):  # text, or segments referencing known parameters
            if key == "hint" and msg.get(key) is None:
                continue
            try:
                Message.from_json(msg.get(key), PARAMETERS)
            except ValueError:
                raise _protocol_error(f"an error message without a valid {key!r}") from None
    return msg


def _error_from(msg: dict[str, Any]) -> KerinspectError:
    """The worker's error (a message checked by :func:`_parse_message`), rebuilt as the
    same class, its message and hint keeping their parameter references."""
    cls = _ERROR_CLASSES.get(msg["exit_code"], KerinspectError)
    hint = msg.get("hint")
    err = cls(
        Message.from_json(msg["message"], PARAMETERS),
        rule=msg.get("rule"),
        hint=None if hint is None else Message.from_json(hint, PARAMETERS),
    )
    if cls is KerinspectError:
        err.exit_code = ExitCode.INTERNAL
    tb = msg.get("traceback")
    if tb:
        err.worker_traceback = tb  # type: ignore[attr-defined]
    return err


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return escape_text(" | ".join(kept), limit=300)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


#: Where each worker start is counted, one line each when the worker is done (``command
#: tensorflow|no-tensorflow|forked label``: whether it got as far as loading a model, which
#: imports TensorFlow, or stopped before, at the scan or reading weights; or was forked by a
#: fork server, counted itself as ``fork-server tensorflow``): set by whoever wants to
#: see what a session of many runs costs (the test suite: ``tests/conftest.py``);
#: ``KERINSPECT_WORKER_STARTS_LABEL`` is written beside it (the current test).
WORKER_STARTS_LOG_ENV = "KERINSPECT_WORKER_STARTS_LOG"
WORKER_STARTS_LABEL_ENV = "KERINSPECT_WORKER_STARTS_LABEL"


def _count_start(request: dict[str, Any], phase: str, forked: bool = False) -> None:
    log = os.environ.get(WORKER_STARTS_LOG_ENV)
    if not log:
        return
    label = " ".join(os.environ.get(WORKER_STARTS_LABEL_ENV, "").split())
    loaded = "tensorflow" if phase in (PHASES["load"], PHASES["run"]) else "no-tensorflow"
    if forked:  # a fork server's child: TensorFlow was imported once, by the server
        loaded = "forked"
    with contextlib.suppress(OSError), open(log, "a", encoding="utf-8") as f:
        f.write(f"{request.get('command', '?')} {loaded} {label}\n")


class _Started:
    """A worker process started for one job, its scratch directory and the protocol
    channel it writes to (``read_fd`` here): spawned, or forked by ``server`` (a
    :class:`_ForkServer` of the same limits) when one is given and still serves."""

    def __init__(
        self,
        limits: WorkerLimits,
        scratch_parent: str | None,
        request: dict[str, Any],
        session: bool = False,
        server: _ForkServer | None = None,
    ):
        self.scratch = scratch_dirs.make("worker", scratch_parent)
        self.request_path = os.path.join(self.scratch, "request.json")
        self.read_fd, self.command_fd = -1, -1
        read_fd, write_fd = os.pipe()
        session_read = -1
        try:
            with open(self.request_path, "w") as f:
                json.dump(request, f)
            env = _worker_env(self.scratch)
            forked = (
                None
                if server is None
                else server.fork(self.scratch, env, self.request_path, write_fd, limits.timeout)
            )
            if forked is not None:
                self.proc: subprocess.Popen[bytes] | _Forked = forked
            else:
                env["KERINSPECT_PROTOCOL_FD"] = str(write_fd)
                env["KERINSPECT_LIMITS"] = json.dumps(limits.to_dict())
                passed = [write_fd]
                if session:  # commands on a pipe (kerinspect/sandbox/session.py)
                    session_read, self.command_fd = os.pipe()
                    env[SESSION_FD_ENV] = str(session_read)
                    passed.append(session_read)
                self.proc = _spawn(self.scratch, env, passed, [self.request_path])
            self.read_fd = read_fd
            read_fd = -1
            _track(self.proc.pid)
        except BaseException:
            self.close()
            raise
        finally:
            for fd in (read_fd, write_fd, session_read):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    @property
    def forked(self) -> bool:
        return isinstance(self.proc, _Forked)

    def close(self) -> None:
        """Kill what is left of the worker's process group, remove its scratch."""
        proc = getattr(self, "proc", None)
        if proc is not None:
            _end(proc)
        for fd in (self.read_fd, self.command_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.read_fd = self.command_fd = -1
        shutil.rmtree(self.scratch, ignore_errors=True)


def _spawn(scratch: str, env: dict[str, str], passed: list[int], args: list[str]) -> subprocess.Popen[bytes]:
    """A new worker process (``python -m kerinspect.sandbox.worker ARGS``) in its own
    session, its output in ``scratch/worker.log``."""
    with open(os.path.join(scratch, "worker.log"), "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "kerinspect.sandbox.worker", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=scratch,
            pass_fds=tuple(passed),
            start_new_session=True,
            close_fds=True,
        )


def _track(pid: int) -> None:
    """Count ``pid``'s group among the live ones (:func:`kill_all`); killed at once
    when :func:`kill_all` came first."""
    with _LIVE_LOCK:
        _LIVE.add(pid)
        if _STOPPED[0]:  # started after kill_all: ends at once, its job with it
            _kill_group(pid)


def _end(proc: subprocess.Popen[bytes] | _Forked) -> None:
    """Kill ``proc``'s process group (nothing the model started may outlive the job),
    wait for it, and forget it."""
    _kill_group(proc.pid)
    if proc.poll() is None:
        proc.wait()
    with _LIVE_LOCK:
        _LIVE.discard(proc.pid)


class _Forked:
    """A worker forked by a :class:`_ForkServer`: what :func:`run_worker` uses of a
    :class:`subprocess.Popen` (the server reports its exit, since it is the parent)."""

    def __init__(self, server: _ForkServer, pid: int):
        self.server, self.pid = server, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
        return self.returncode


class _ForkServer:
    """A worker that imported TensorFlow once and forks a worker per job
    (:mod:`kerinspect.sandbox.forkserver`), for jobs of these limits. Its jobs' workers
    are its children: it reports their ends, and :func:`kill_all` kills them, not it, so
    that it reaps them (it ends with the :func:`forking` block)."""

    def __init__(self, key: tuple[Any, ...], limits: WorkerLimits, scratch_parent: str | None):
        self.key = key
        self.scratch = scratch_dirs.make("worker", scratch_parent)
        self.cond = threading.Condition()
        self.pids: dict[int, int] = {}  # job number -> pid
        self.codes: dict[int, int] = {}  # pid -> exit code
        self.jobs = 0
        self.closed = False
        self.sending = threading.Lock()  # not the condition: the listener must not wait on a send
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = _worker_env(self.scratch)
            env[FORK_FD_ENV] = str(theirs.fileno())
            # no parent-death signal: it follows the thread that spawns (with --jobs N, a
            # pool thread that ends before the run does); the server ends at the socket's
            # end instead, which comes when this process ends, however it ends
            env["KERINSPECT_LIMITS"] = json.dumps({**limits.to_dict(), "parent_pid": 0})
            self.proc = _spawn(self.scratch, env, [theirs.fileno()], [])
        except BaseException:
            mine.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self.sock = mine
        threading.Thread(target=self._listen, name="kerinspect-fork-server", daemon=True).start()

    def _listen(self) -> None:
        """Record what the server says (each fork's pid, each child's exit) until it ends."""
        try:
            while data := self.sock.recv(4096):
                said = json.loads(data)
                with self.cond:
                    if "job" in said:
                        self.pids[int(said["job"])] = int(said["pid"])
                    else:
                        self.codes[int(said["pid"])] = int(said["code"])
                    self.cond.notify_all()
        except (OSError, ValueError, KeyError, TypeError):
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def fork(
        self, scratch: str, env: dict[str, str], request_path: str, write_fd: int, timeout: float
    ) -> _Forked | None:
        """A worker forked for this job, writing to ``write_fd``, its deadline ``timeout``
        seconds from its start (0: none); None when the server is gone (the job then
        starts its own worker)."""
        with self.cond:
            if self.closed:
                return None
            job, self.jobs = self.jobs, self.jobs + 1
        message = {"id": job, "scratch": scratch, "env": env, "request": request_path, "timeout": timeout}
        try:
            with self.sending:
                socket.send_fds(self.sock, [json.dumps(message).encode()], [write_fd])
        except OSError:
            return None
        with self.cond:  # the first job waits for the server's import; the deadline starts after
            ready = self.cond.wait_for(lambda: job in self.pids or self.closed, SERVER_START_WAIT)
            pid = self.pids.pop(job, -1)
            if not ready:  # stuck: this job and the next start their own workers
                self.closed = True
        if not ready:
            _kill_group(self.proc.pid)
        return None if pid < 0 else _Forked(self, pid)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The child's exit code once it ended (within ``timeout`` seconds; None: wait);
        killed (``-SIGKILL``) when the server ended first, which kills its children."""
        with self.cond:
            self.cond.wait_for(lambda: pid in self.codes or self.closed, timeout)
            if pid in self.codes:
                return self.codes.pop(pid)
            return -signal.SIGKILL if self.closed else None

    def close(self) -> None:
        """End the server: told by the socket's end, it kills and reaps the children left,
        then exits (killed after :data:`SERVER_GRACE` seconds); remove its scratch."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        try:
            self.proc.wait(timeout=SERVER_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc.pid)
            self.proc.wait()
        self.sock.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


#: Seconds a fork server has to end once told (then it is killed).
SERVER_GRACE = 10
#: Most seconds a job waits for its fork (the first, for the server's TensorFlow import);
#: a server that takes longer is given up, and the jobs start their own workers.
SERVER_START_WAIT = 300


#: The environment variable naming the pipe a session worker reads its commands from.
SESSION_FD_ENV = "KERINSPECT_SESSION_FD"
#: Process groups of the workers alive now (:func:`kill_all`).
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()
#: Set by :func:`kill_all` until the :func:`forking` block ends.
_STOPPED = [False]


def _server_key(limits: WorkerLimits, scratch_parent: str | None) -> tuple[Any, ...]:
    """What a fork server's children share with it, so what a job must match to be forked
    from it: the limits it confined itself with (the deadline is each child's own), where
    scratch lives, and the environment it was started with (read at import by numpy,
    TensorFlow and the worker's test faults)."""
    return (dataclasses.replace(limits, timeout=0), scratch_parent, tuple(_passed_through().items()))


class _Forking:
    """The :func:`forking` blocks (nested: the innermost says whether jobs are forked)
    and their fork server: started by the first job that may be forked, used by the jobs
    of the same :func:`_server_key`, ended with the outermost of the forking blocks
    around that first job."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blocks: list[bool] = []
        self.server: _ForkServer | None = None
        self.server_depth = 0  # the block whose end ends the server

    def server_for(self, limits: WorkerLimits, scratch_parent: str | None) -> _ForkServer | None:
        key = _server_key(limits, scratch_parent)
        with self.lock:
            if not self.blocks or not self.blocks[-1]:
                return None
            if self.server is None and not _STOPPED[0]:
                with contextlib.suppress(OSError):
                    self.server = _ForkServer(key, limits, scratch_parent)
                # owned by the outermost of the forking blocks around this job
                self.server_depth = len(self.blocks)
                while self.server_depth > 1 and self.blocks[self.server_depth - 2]:
                    self.server_depth -= 1
            server = self.server
        return server if server is not None and server.key == key else None

    def enter(self, fork: bool, jobs: int) -> None:
        """A block that forks where ``fork`` is set and it has 2 jobs or more, or the
        block around it forks."""
        with self.lock:
            self.blocks.append(fork and (jobs >= 2 or (bool(self.blocks) and self.blocks[-1])))

    def leave(self) -> None:
        with self.lock:
            depth = len(self.blocks)
            self.blocks.pop()
            server = None
            if self.server_depth >= depth:
                server, self.server, self.server_depth = self.server, None, 0
        if server is not None:
            server.close()
            _count_start({"command": "fork-server"}, PHASES["load"])  # it imported TensorFlow


_FORKING = _Forking()


@contextlib.contextmanager
def forking(jobs: int, fork: bool = True) -> Iterator[None]:
    """Within the block, the calls of :func:`run_worker` share one TensorFlow start:
    the first starts a fork server (:mod:`kerinspect.sandbox.forkserver`), a worker that
    confines itself with that job's limits and imports TensorFlow, and every job of the
    same limits and environment gets a worker forked from it, as isolated as a new one
    (its own process group, scratch, environment, log, protocol pipe and deadline).

    Only where ``fork`` is set and ``jobs`` is 2 or more (one job gains nothing from a
    server), or an enclosing block forks already (the test suite keeps one per test
    module); the server ends with the outermost forking block. A block with ``fork``
    False spawns every job's worker, whatever encloses it."""
    _FORKING.enter(fork, jobs)
    with _LIVE_LOCK:
        _STOPPED[0] = False
    try:
        yield
    finally:
        _FORKING.leave()
        with _LIVE_LOCK:
            _STOPPED[0] = False


def kill_all() -> None:
    """Kill every job's worker of this process now (a fork server is left to reap its
    children; it ends with its block): the jobs waiting on them end with
    :class:`ChildCrashError`, and a worker started after this, until the
    :func:`forking` block ends, is killed as it starts. For a parent interrupted
    while several jobs run at once (call it inside that block)."""
    with _LIVE_LOCK:
        _STOPPED[0] = True
        groups = list(_LIVE)
    for pid in groups:
        _kill_group(pid)


def run_worker(
    request: dict[str, Any],
    limits: WorkerLimits | None = None,
    *,
    on_message: Callable[[dict[str, Any]], None] | None = None,
    scratch_parent: str | None = None,
) -> WorkerOutcome:
    """Run ``request`` in a fresh worker process and return its result.

    Args:
        request: the job, as plain JSON data (see :mod:`kerinspect.sandbox.worker`).
        limits: timeout, memory and network isolation.
        on_message: called with every progress/phase message as it arrives.
        scratch_parent: where the private scratch directory is created.

    Raises:
        KerinspectError: the worker's own error (same class and exit code), or
            :class:`ChildCrashError` when it crashed, timed out or hit a limit.
    """
    limits = limits or WorkerLimits()
    scratch_dirs.sweep(scratch_parent)  # what a SIGKILLed earlier run left behind
    started = _Started(limits, scratch_parent, request, server=_FORKING.server_for(limits, scratch_parent))
    phase = "starting"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    isolated = False
    proc, log_path = started.proc, os.path.join(started.scratch, "worker.log")
    try:
        deadline = time.monotonic() + limits.timeout if limits.timeout > 0 else None
        buf = bytearray()
        try:
            with os.fdopen(started.read_fd, "rb", buffering=0) as pipe:
                started.read_fd = -1
                while True:
                    wait = None if deadline is None else deadline - time.monotonic()
                    if wait is not None and wait <= 0:
                        raise TimeoutError
                    ready, _, _ = select.select([pipe], [], [], wait)
                    if not ready:
                        continue
                    chunk = pipe.read(1 << 16)
                    if not chunk:
                        break
                    scan_from = len(buf)
                    buf += chunk
                    start = 0
                    while (end := buf.find(b"\n", max(start, scan_from))) >= 0:
                        message = _parse_message(bytes(buf[start:end]))
                        start = end + 1
                        kind = message["type"]
                        if kind == "phase":
                            phase = PHASES.get(message["phase"], "working")
                            isolated = message.get("network_isolated") is True
                        elif kind == "result":
                            result = message["result"]
                        elif kind == "error":
                            error = message
                        if on_message is not None:
                            on_message(message)
                    del buf[:start]
                    if len(buf) > MAX_MESSAGE_BYTES:
                        raise _protocol_error(f"a message longer than {MAX_MESSAGE_BYTES:,} bytes")
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                proc.wait(timeout=remaining)
        except ChildCrashError:
            _kill_group(proc.pid)
            proc.wait()
            raise
        except (TimeoutError, subprocess.TimeoutExpired):
            _kill_group(proc.pid)
            proc.wait()
            raise ChildCrashError(
                f"The worker timed out after {limits.timeout:g} s while {phase}; it was killed.",
                rule="timeout",
                hint=msg("raise {timeout} if the model is just slow"),
            ) from None
        finally:
            _end(proc)
        code = proc.wait()
        if error is not None:
            raise _error_from(error)
        if result is not None and code == 0:
            return WorkerOutcome(result, isolated)
        if code < 0:
            sig = signal.Signals(-code).name
            hint = None
            if -code == signal.SIGKILL:
                hint = msg("it was killed, often by the kernel when out of memory; see {max_memory}")
            raise ChildCrashError(
                f"The worker crashed ({sig}) while {phase}.", rule="worker-crashed", hint=hint
            )
        detail = _tail(log_path)
        if "MemoryError" in detail or "RESOURCE_EXHAUSTED" in detail or "bad_alloc" in detail:
            raise ChildCrashError(
                f"The worker ran out of memory while {phase} (limit {limits.max_memory:,} bytes).",
                rule="memory-limit",
                hint=msg("raise {max_memory} if the machine has room"),
            )
        raise ChildCrashError(
            f"The worker exited with status {code} while {phase} without a result"
            + (f": {detail}" if detail else "."),
            rule="worker-failed",
        )
    finally:
        started.close()
        _count_start(request, phase, started.forked)
