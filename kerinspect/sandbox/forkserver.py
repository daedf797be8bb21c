"""A fork server: one worker that imports TensorFlow once, then forks a worker per job.

A small model's ``check`` is mostly the worker's start: Python, ``import tensorflow`` and
Keras (3-5 s of CPU here), against well under a second for its scan, load and run. When a
run has several jobs (``check`` of many models, :func:`kerinspect.sandbox.runner.forking`),
the parent starts one worker in this mode (``KERINSPECT_FORK_FD``): it confines itself
with the run's limits (deadline excepted), imports Keras, and never reads a model. For each
job the parent sends, on a ``SOCK_SEQPACKET`` socket, the job's scratch directory,
environment and request path with the write end of the job's own protocol pipe; the
server forks, and the child becomes an ordinary worker for that one job:

* its own process group (``setpgid``, done on both sides of the fork so the parent may
  kill the group as soon as it knows the pid), killed with the server (``PR_SET_PDEATHSIG``,
  which fork does not inherit), its own deadline (``alarm``, idem);
* its own scratch directory as working directory, ``HOME``, ``TMPDIR`` and caches, its
  stdout and stderr in its own ``worker.log``;
* its own network namespace (``unshare``, 0.6 ms here) where the server entered one, so
  concurrent jobs cannot reach each other (abstract Unix sockets belong to the namespace);
* the server's other confinement, inherited: resource limits, socket guard.

Forking is safe here because the server never ran a TensorFlow operation: TensorFlow
starts its thread pools and devices at the first one, which each child does for itself.
The server answers ``{"job": n, "pid": p}`` for each fork (``p`` -1 where it could not
fork: that job spawns its own worker) and ``{"pid": p, "code": c}``
when it has reaped a child (``code`` as :attr:`subprocess.Popen.returncode`: negative
for a signal); when the parent closes the socket it kills and reaps the children left,
and ends. (Killed itself, it takes its children along: they die with it.)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
from typing import Any

#: The environment variable naming the fork server's socket (its presence selects the mode).
FORK_FD_ENV = "KERINSPECT_FORK_FD"
#: The largest job message (a scratch path, an environment and a request path).
MAX_JOB_BYTES = 1 << 16


def control_socket(fd: int) -> socket.socket:
    """The socket the parent passed; made before the worker's socket guard."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=fd)
    sock.set_inheritable(False)
    return sock


def serve(sock: socket.socket, namespace: bool) -> tuple[dict[str, Any], int] | None:
    """Fork a worker for each job the parent sends. Returns in each child, with the job
    and its protocol pipe's write end, to go on as a worker; returns None in the server
    when the parent closes the socket. ``namespace``: the server entered a network
    namespace of its own, so each child enters one too."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up fd is written
    signal.set_wakeup_fd(wake_w)
    me = os.getpid()
    children: set[int] = set()
    try:
        while True:
            ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
            if wake_r in ready:
                os.read(wake_r, 4096)
                _reap(sock, children)
            if sock.fileno() not in ready:
                continue
            data, fds, _, _ = socket.recv_fds(sock, MAX_JOB_BYTES, 1)
            if not data:  # the parent is done: no child outlives the server
                for pid in children:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                for pid in children:
                    with contextlib.suppress(OSError):
                        os.waitpid(pid, 0)
                return None
            try:
                job = json.loads(data)
                number = int(job["id"])
            except (ValueError, KeyError, TypeError):
                job, number = None, -1
            if job is None or len(fds) != 1:  # the parent's jobs spawn their own workers
                for fd in fds:
                    os.close(fd)
                _send(sock, {"job": number, "pid": -1})
                continue
            fd = fds[0]
            try:
                pid = os.fork()
            except OSError:  # out of processes or memory: this job spawns its own worker
                os.close(fd)
                _send(sock, {"job": number, "pid": -1})
                continue
            if pid == 0:
                try:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for own in (wake_r, wake_w):
                        os.close(own)
                    sock.close()
                    _become_worker(job, me, namespace)
                except BaseException:  # noqa: BLE001 - the parent sees a worker that ended without a result
                    os._exit(1)
                return job, fd
            children.add(pid)
            with contextlib.suppress(OSError):  # the child may have done it already
                os.setpgid(pid, pid)
            os.close(fd)
            _send(sock, {"job": number, "pid": pid})
    finally:
        if os.getpid() == me:
            signal.set_wakeup_fd(-1)
            for own in (wake_r, wake_w):
                os.close(own)


def _reap(sock: socket.socket, children: set[int]) -> None:
    """Say the exit of each child that ended (reaped here: the server is their parent)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(sock, {"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: the loop sees the socket close
        sock.send(json.dumps(message).encode())


def _become_worker(job: dict[str, Any], server: int, namespace: bool) -> None:
    """The child's own process group, fate, network, directory, environment and log."""
    from kerinspect.engine.tfenv import quiet_environment, rehome_keras

    from .confine import arm_deadline, die_with_parent, isolate_network

    os.setpgid(0, 0)
    die_with_parent(server)
    arm_deadline(float(job.get("timeout") or 0))
    if namespace:  # the server could, so its child can; failing that, the server's (no interface either)
        isolate_network()
    scratch = job["scratch"]
    if sys.path and sys.path[0] == os.getcwd():  # ``-m`` put the server's directory first
        sys.path[0] = scratch
    os.chdir(scratch)
    os.environ.clear()
    os.environ.update(job["env"])
    quiet_environment()  # what the server's import set
    rehome_keras(job["env"]["KERAS_HOME"])
    tempfile.tempdir = None  # read again from TMPDIR: this job's
    log = os.open(os.path.join(scratch, "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for target in (1, 2):
        os.dup2(log, target)
    os.close(log)
