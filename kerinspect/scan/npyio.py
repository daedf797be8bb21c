"""Read a ``.npy`` header without reading its data (or ever unpickling anything)."""

from __future__ import annotations

from typing import IO

import numpy as np


def read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of the ``.npy`` stream at ``f``'s position.

    Raises:
        ValueError: not a ``.npy`` stream of format 1.0 or 2.0 (numpy's own errors
            for a bad magic string or header are ValueErrors too).
    """
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), bool(fortran), dtype
