"""kerinspect: see inside a saved Keras model.

The public API is imported lazily so that ``import kerinspect`` (and the CLI's
``--help``) never pulls in TensorFlow.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "inspect_model", "run_checks"]


def __getattr__(name: str) -> Any:
    if name == "inspect_model":
        from .api import inspect_model

        return inspect_model
    if name == "run_checks":
        from .checks import run_checks

        return run_checks
    raise AttributeError(f"module 'kerinspect' has no attribute {name!r}")
