"""kerinspect at dataset scale: the same per-layer statistics on Apache Beam.

``pip install 'kerinspect[beam]'``. :class:`LayerStatistics` is a ``beam.PTransform``
from examples to the report; ``kerinspect summary MODEL --input 'shards/*.tfrecord'
--runner DirectRunner`` runs it from the command line (:mod:`kerinspect.beam.pipeline`).
This package is the only one that imports ``apache_beam`` (on first use: the CLI
imports :mod:`kerinspect.beam.pipeline` whether Beam is installed or not); it runs
where the pipeline runs, on the parent's side of the trust boundary: models are
opened by isolated workers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LayerStatistics"]


def __getattr__(name: str) -> Any:
    if name == "LayerStatistics":
        from kerinspect.beam.transform import LayerStatistics

        return LayerStatistics
    raise AttributeError(name)
