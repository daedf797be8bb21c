"""kerinspect: see inside a saved Keras model.

The public API is imported lazily so that ``import kerinspect`` (and the CLI's
``--help``) never pulls in TensorFlow.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "dump_activations", "inspect_model", "load_dump"]


def __getattr__(name: str) -> Any:
    if name == "inspect_model":
        from .api import inspect_model

        return inspect_model
    if name == "dump_activations":
        from .api import dump_activations

        return dump_activations
    if name == "load_dump":
        from .dump import load_dump

        return load_dump
    raise AttributeError(f"module 'kerinspect' has no attribute {name!r}")
