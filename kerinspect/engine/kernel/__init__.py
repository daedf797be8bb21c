"""The fused statistics kernel: one TensorFlow operation, in C++, that reads a float32
activation once for every statistic the compiled engine needs (``activation_stats.cc``:
per-sample per-unit sums, per-unit non-zero counts, mean, M2, minimum and maximum, all in
float64).

TensorFlow's own operations read each activation about five times on a CPU (the sum, the
squared deviations, the minimum, the maximum, the non-zero indicator): on ResNet50 those
reads cost more than the forward pass. XLA does not fuse sibling reductions on a CPU
(docs/PERFORMANCE.md, "One read per activation").

Built once per TensorFlow installation, with the system's C++ compiler against the
installed TensorFlow's headers: ``python -m kerinspect.engine.kernel`` (``make install``
runs it). The library goes to ``build/`` beside this file, named by a digest of the
source, the TensorFlow version and the compiler flags, so another TensorFlow never loads
a library built for an old one. :func:`load` (the compiled engine, in the worker) loads
it, or returns None: not built, built for another TensorFlow, or turned off with
``KERINSPECT_KERNEL=off``; the engine then computes the same statistics with
TensorFlow's operations (:func:`kerinspect.engine.compiled.tensor_partials`).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Any

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "activation_stats.cc")
BUILD_DIR = os.path.join(os.path.dirname(SOURCE), "build")
#: ``KERINSPECT_KERNEL=off`` (or ``0``, ``no``): never load the kernel (the engine's
#: TensorFlow operations instead; how the tests and ``make bench`` compare the two).
ENV = "KERINSPECT_KERNEL"
#: Beyond TensorFlow's own flags: optimised, position-independent, quiet about
#: TensorFlow's headers (their deprecation warnings); ``target_clones`` in the source
#: picks AVX-512, AVX2 or plain code for the CPU it runs on.
EXTRA_FLAGS = ("-O3", "-shared", "-fPIC", "-w")

_loaded: Any = None
_tried = False


def reads(dtype: str, rank: int) -> bool:
    """Whether the kernel reads an output of this dtype (its name: ``float32``) and rank:
    what ``activation_stats.cc`` registers (float32, rank >= 2). The compiled engine asks
    before using it, ``auto`` before counting an output's size against its limit."""
    return dtype == "float32" and rank >= 2


def _flags(tf: Any) -> list[str]:
    return [*tf.sysconfig.get_compile_flags(), *EXTRA_FLAGS]


def library_path(tf: Any) -> str:
    """Where the library for this TensorFlow (and this source) is, or goes."""
    digest = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        digest.update(f.read())
    digest.update(tf.__version__.encode())
    digest.update(" ".join(_flags(tf) + tf.sysconfig.get_link_flags()).encode())
    return os.path.join(BUILD_DIR, f"activation_stats-{digest.hexdigest()[:16]}.so")


def off() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("off", "0", "no", "false")


def load() -> Any:
    """The loaded operation library (its ``kerinspect_activation_stats``), or None (see
    the module's docstring). Loaded once per process."""
    global _loaded, _tried
    if _tried:
        return _loaded
    _tried = True
    if off():
        return None
    import tensorflow as tf

    path = library_path(tf)
    if not os.path.exists(path):
        return None
    try:
        _loaded = tf.load_op_library(path)
    except Exception:  # noqa: BLE001 - a library that does not load: TensorFlow's operations instead
        _loaded = None
    return _loaded


def build(compiler: str | None = None, quiet: bool = False) -> str:
    """Compile the kernel for the installed TensorFlow unless it is built; its path.
    Raises RuntimeError (one line, then the compiler's output) when it cannot."""
    import tensorflow as tf

    path = library_path(tf)
    if os.path.exists(path):
        return path
    cxx = compiler or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (install g++, or set CXX)")
    os.makedirs(BUILD_DIR, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=BUILD_DIR, suffix=".so.partial")
    os.close(fd)
    command = [cxx, *_flags(tf), SOURCE, "-o", partial, *tf.sysconfig.get_link_flags()]
    if not quiet:
        print(f"building the fused statistics kernel: {shlex.join(command)}", file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(partial)
        raise RuntimeError(f"{cxx} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    os.replace(partial, path)  # whole, or not at all
    for old in os.listdir(BUILD_DIR):  # libraries for another TensorFlow or source
        if old.startswith("activation_stats-") and os.path.join(BUILD_DIR, old) != path:
            os.unlink(os.path.join(BUILD_DIR, old))
    return path
