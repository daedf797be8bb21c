"""Default limits shared by the static scan, the inputs and the command line.

Stdlib only, imported by the parent and the worker alike.
"""

from __future__ import annotations

#: Parameters a model's config may declare (``--max-params``), estimated statically.
DEFAULT_MAX_PARAMS = 1_000_000_000
#: Elements in one sample of one input: checked on the declared shape by the scan,
#: and again on the concrete shape synthetic inputs get (``--dim``/``--shape``).
MAX_INPUT_ELEMENTS = 1 << 26
