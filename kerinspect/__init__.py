"""kerinspect: see inside a saved Keras model.

The public API is imported lazily so that ``import kerinspect`` (and the CLI's
``--help``) never pulls in TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_LAZY = {
    "activations": "api",
    "inspect_model": "api",
    "dump_activations": "api",
    "diff_models": "api",
    "model_gradients": "api",
    "LoadOptions": "api",
    "run_checks": "checks",
    "load_dump": "dump",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kerinspect' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
