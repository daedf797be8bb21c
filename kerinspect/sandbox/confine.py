"""Confinement the worker applies to itself as the first thing it does.

Done in the worker (not in a ``preexec_fn`` between fork and exec, which is unsafe
while the parent runs threads such as a progress bar):

* die with the parent: ``PR_SET_PDEATHSIG`` = SIGKILL, so a killed or cancelled
  kerinspect never leaves a worker behind; and an alarm at the deadline, so the
  worker ends even if the parent is stopped rather than killed;
* resource limits: no core dumps, ``RLIMIT_DATA`` (memory), ``RLIMIT_FSIZE``
  (largest file it may write);
* a private network namespace when the kernel allows it (root, or unprivileged
  user namespaces): the worker then has no network interface at all.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
from typing import Any

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
#: Seconds the worker outlives its deadline before its own alarm fires (the parent
#: normally kills it first, at the deadline).
ALARM_GRACE = 5

try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-Linux
    _LIBC = None


def _libc(name: str) -> Any:
    return getattr(_LIBC, name, None) if _LIBC is not None else None


def die_with_parent(parent_pid: int) -> None:
    """Get SIGKILL when the parent exits; exit now if it already has."""
    prctl = _libc("prctl")
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def clamped(limit: int, hard: int) -> int:
    """``limit`` lowered to an inherited hard limit: a process may lower its hard
    limit but never raise it, and CI containers or systemd units often set one.
    ``resource.RLIM_INFINITY`` (-1) means no inherited limit."""
    if hard == resource.RLIM_INFINITY or hard < 0:
        return limit
    return min(limit, hard)


def _lower(which: int, limit: int) -> None:
    """Set soft and hard ``which`` to ``limit``, never above the inherited hard limit."""
    _, hard = resource.getrlimit(which)
    value = clamped(limit, hard)
    resource.setrlimit(which, (value, value))


def set_limits(*, max_memory: int = 0, max_file_size: int = 0, timeout: float = 0) -> None:
    """No core dumps; optional memory, file-size and wall-clock limits (0 = none).

    Each limit is the smaller of kerinspect's and the one the worker inherited
    (``ulimit -d``/``ulimit -f`` of the caller): inherited limits are kept, never raised.
    """
    _lower(resource.RLIMIT_CORE, 0)
    if max_memory > 0:
        _lower(resource.RLIMIT_DATA, max_memory)
    if max_file_size > 0:
        _lower(resource.RLIMIT_FSIZE, max_file_size)
    arm_deadline(timeout)


def arm_deadline(timeout: float) -> None:
    """End this process ``timeout`` (plus :data:`ALARM_GRACE`) seconds from now; 0 = never."""
    if timeout > 0:
        signal.alarm(math.ceil(timeout) + ALARM_GRACE)  # default action: terminate


def isolate_network() -> bool:
    """Enter a new network namespace (no interfaces but a down loopback).

    Returns whether it worked; the worker's socket guard applies either way.
    """
    unshare = _libc("unshare")
    if unshare is None:
        return False
    if unshare(CLONE_NEWNET) == 0:
        return True
    return unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0


def confine(limits: dict[str, Any]) -> bool:
    """Apply everything above from the parent's plain-data ``limits``; returns
    whether the network namespace was entered."""
    parent = limits.get("parent_pid")
    if parent:
        die_with_parent(int(parent))
    set_limits(
        max_memory=int(limits.get("max_memory") or 0),
        max_file_size=int(limits.get("max_file_size") or 0),
        timeout=float(limits.get("timeout") or 0),
    )
    return isolate_network() if limits.get("isolate_network", True) else False
