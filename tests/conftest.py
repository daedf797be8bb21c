"""Shared fixtures. TensorFlow is imported at most once per session, and only by
tests that ask for it (the ``keras`` fixture); the rest run without it.

Model files are opened the way users open them: through the real, isolated worker
process (kerinspect's default). Only in-memory ``keras.Model`` objects are inspected in
this process, which is what the API does for them too. ``KERINSPECT_ISOLATION`` from the
caller's environment is ignored here, so a developer's debugging switch cannot turn the
suite into an in-process one. Tests marked ``isolated`` are the ones whose subject is the
worker itself (crashes, limits, hostile files end to end).
"""

from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
REALWORLD = ROOT.parent / "shared" / "realworld"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERINSPECT_ISOLATION"] = "on"


@pytest.fixture(scope="session")
def keras():
    from kerinspect.engine.tfenv import import_keras

    k = import_keras()
    return k


@pytest.fixture(scope="session")
def factories(keras):
    from tests import model_factories

    return model_factories


@pytest.fixture(scope="session")
def saved(tmp_path_factory, factories):
    """Saved copies of every factory model, built once: ``saved["shared"]`` is a .keras path."""
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, build in factories.ALL.items():
        model = build()
        path = d / f"{name}.keras"
        model.save(path)
        out[name] = str(path)
    return out


# --- hostile model files for the static scan (built by tests/hostile.py) ---------------


@pytest.fixture(scope="session")
def hostile(tmp_path_factory, keras):
    """Every malicious and malformed model file of SAFETY.md (c), built once per session."""
    from tests import hostile as builder

    return builder.build(tmp_path_factory.mktemp("hostile"), keras)
