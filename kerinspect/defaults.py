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

#: Parameters a model's config may declare (``--max-params``), estimated statically.
DEFAULT_MAX_PARAMS = 1_000_000_000
#: Elements in one sample of one input: checked on the declared shape by the scan,
#: and again on the concrete shape synthetic inputs get (``--dim``/``--shape``).
MAX_INPUT_ELEMENTS = 1 << 26
