"""Shared fixtures. TensorFlow is imported at most once per session, and only by
tests that ask for it (the ``keras`` fixture); the rest run without it.

Every model *file*, in every test, is opened the way users open it: through the real,
isolated worker process (kerinspect's default). Only in-memory ``keras.Model`` objects
are inspected in this process, which is what the API does for them too.
``KERINSPECT_ISOLATION`` from the caller's environment is ignored here, so a developer's
debugging switch cannot turn the suite into an in-process one.

The ``isolated`` marker switches nothing on: it marks the tests whose *subject* is the
worker/CLI process boundary itself (crashes, limits, timeouts, hostile files end to
end, what crosses the boundary). Those make their own runs.
"""

from __future__ import annotations

import collections
import os
import pathlib
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
REALWORLD = ROOT.parent / "shared" / "realworld"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERINSPECT_ISOLATION"] = "on"


# --- the suite's cost, made visible: every worker start is counted (sandbox/runner.py) ---
STARTS_LOG = "KERINSPECT_WORKER_STARTS_LOG"
STARTS_LABEL = "KERINSPECT_WORKER_STARTS_LABEL"


def pytest_configure(config):
    if not hasattr(config, "workerinput") and not os.environ.get(STARTS_LOG):  # the controller
        fd, path = tempfile.mkstemp(prefix="kerinspect-worker-starts-", suffix=".log")
        os.close(fd)
        os.environ[STARTS_LOG] = config._kerinspect_starts = path  # inherited by xdist workers


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    os.environ[STARTS_LABEL] = item.nodeid  # each start is written with the test that caused it
    yield
    os.environ.pop(STARTS_LABEL, None)


def pytest_terminal_summary(terminalreporter, config):
    path = getattr(config, "_kerinspect_starts", None)
    if not path or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        starts = [line.partition(" ")[2] for line in f.read().splitlines() if line]
    os.unlink(path)
    by_file = collections.Counter(label.split("::", 1)[0] or "(no test)" for label in starts)
    top = ", ".join(f"{name} {n}" for name, n in by_file.most_common(8))
    terminalreporter.write_line(f"kerinspect worker starts: {len(starts)} (most: {top})")


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
