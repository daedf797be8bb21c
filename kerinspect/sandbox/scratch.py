"""Private scratch directories of a run, and the sweep that removes a killed run's.

Every directory a run makes in the temp folder (the worker's scratch HOME with its
``request.json``, in-memory inputs handed to the worker, the model snapshot, the dump
:func:`kerinspect.activations` reads back from a model file) is named
``kerinspect-<kind>-<pid>-<random>`` after the kerinspect process that owns it. A run
removes its own in ``finally``; a run that was SIGKILLed cannot, so each new run first
sweeps the directories whose owner process is gone. A directory whose pid is alive (the
owner, or an unrelated process that reused the pid) is left alone: the sweep may miss a
leftover, never remove a live run's files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile

KINDS = ("worker", "inputs", "snapshot", "activations", "beam")
_NAME = re.compile(rf"kerinspect-(?:{'|'.join(KINDS)})-(\d+)-[A-Za-z0-9_]+\Z")


def make(kind: str, parent: str | None = None) -> str:
    """A new private (0700) directory for ``kind``, owned by this process."""
    if kind not in KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}")
    return tempfile.mkdtemp(prefix=f"kerinspect-{kind}-{os.getpid()}-", dir=parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep(parent: str | None = None) -> list[str]:
    """Remove scratch directories under ``parent`` (default: the temp folder) whose
    owner process no longer exists; returns the names removed. Only directories of
    this user, named as :func:`make` names them, are touched; symlinks never."""
    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        m = _NAME.match(entry.name)
        if not m or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                continue
            shutil.rmtree(entry.path)
            removed.append(entry.name)
    return removed
