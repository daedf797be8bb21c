"""Defaults shared by the API, the CLI's parent process and the worker.

Nothing heavy is imported here: the parent process of ``kerinspect summary`` reads
these, and it never imports numpy or TensorFlow (that is the worker's job).
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_SAMPLES = 32
DEFAULT_BATCH_SIZE = 32
DEFAULT_SEED = 0
#: Size of every dynamic (None) axis of a synthetic input, unless overridden.
DEFAULT_DIM = 8

#: progress(samples_done, samples_total)
ProgressFn = Callable[[int, int], None]
