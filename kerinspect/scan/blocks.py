"""Blocks of an array read one at a time, so memory stays bounded whatever its size
(:mod:`kerinspect.scan.weights`, :mod:`kerinspect.scan.optimizer_state`)."""

from __future__ import annotations

import math
from collections.abc import Iterator

#: Elements read and summarised at a time; peak memory is a few times this in bytes
#: (the float64 copy, the finite mask), whatever the size of the weight.
SLICE_ELEMENTS = 1 << 21


def block_slices(shape: tuple[int, ...], budget: int | None = None) -> Iterator[tuple[slice, ...]]:
    """Index tuples that cover an array of ``shape`` exactly once, in C order, each
    selecting at most ``budget`` elements (when a single element of the leading axes
    fits; otherwise one element). Blocks are runs of rows along axis 0; a row larger
    than the budget is split along the next axis, and so on. Ranks are kept (slices,
    not integers), so every block has the array's number of axes.
    """
    budget = max(1, SLICE_ELEMENTS if budget is None else budget)
    if not shape or math.prod(shape) <= budget:
        yield tuple(slice(None) for _ in shape)
        return
    row = math.prod(shape[1:])
    if row <= budget:
        rows = max(1, budget // max(row, 1))
        for start in range(0, shape[0], rows):
            yield (slice(start, min(start + rows, shape[0])),) + tuple(slice(None) for _ in shape[1:])
        return
    for i in range(shape[0]):
        for rest in block_slices(shape[1:], budget):
            yield (slice(i, i + 1), *rest)
