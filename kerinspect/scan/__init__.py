"""The static side of kerinspect: what a model file is, and whether Keras may open it.

Runs before anything is deserialized and never imports TensorFlow or Keras:
:mod:`~kerinspect.scan.preflight` (what the file is), :mod:`~kerinspect.scan.container`
(zip, npz and HDF5 checks, one set of :class:`Limits`), :mod:`~kerinspect.scan.policy`
(the config walk, allow/deny lists), :mod:`~kerinspect.scan.model` (the two together:
:func:`scan_model_file`) and :mod:`~kerinspect.scan.weights` (``kerinspect weights``).

The names below are imported on first use, so that importing
:mod:`kerinspect.scan.preflight` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kerinspect.scan.container import Limits
    from kerinspect.scan.model import ScanResult, scan_model_file
    from kerinspect.scan.policy import scan_config

__all__ = ["Limits", "ScanResult", "scan_config", "scan_model_file"]

_LAZY = {
    "Limits": "container",
    "ScanResult": "model",
    "scan_model_file": "model",
    "scan_config": "policy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kerinspect.scan' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kerinspect.scan.{module}"), name)
