"""Shared fixtures. TensorFlow is imported at most once per session, and only by
tests that ask for it (the ``keras`` fixture); the rest run without it.

Every model *file*, in every test, is opened the way users open it: through the real,
isolated worker process (kerinspect's default). Only in-memory ``keras.Model`` objects
are inspected in this process, which is what the API does for them too.
``KERINSPECT_ISOLATION`` from the caller's environment is ignored here, so a developer's
debugging switch cannot turn the suite into an in-process one.

The ``isolated`` marker switches nothing on: it marks the tests whose *subject* is the
worker/CLI process boundary itself (crashes, limits, timeouts, hostile files end to
end, what crosses the boundary). Those make their own runs. A test that only reads the
report of a run shares it: :func:`sample_report` runs each sample model once per session
(across xdist workers too, :func:`once`), and test modules share their own runs likewise.
A test whose subject is the parent's side of a run (options, configuration, judging,
output) asks for :func:`reuse`: a run of the same request as one its module already
made gets that worker run's report instead of starting another worker.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
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


#: Seconds each test file took (its tests' setup, call and teardown), gathered where the
#: reports arrive: in the one process, or in the xdist controller.
_FILE_SECONDS: collections.Counter = collections.Counter()


def pytest_runtest_logreport(report):
    _FILE_SECONDS[report.nodeid.split("::", 1)[0]] += report.duration


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
        starts = [line.split(" ", 2)[1:] for line in f.read().splitlines() if line]
    os.unlink(path)
    by_file = collections.Counter((rest[1] if len(rest) > 1 else "").split("::", 1)[0] or "(no test)"
                                  for rest in starts)
    loaded = sum(rest[0] == "tensorflow" for rest in starts)
    forked = sum(rest[0] == "forked" for rest in starts)
    top = ", ".join(f"{name} {n}" for name, n in by_file.most_common(8))
    terminalreporter.write_line(
        f"kerinspect worker starts: {len(starts)}, {loaded} of them imported TensorFlow, {forked} were forked "
        f"from a fork server that had (most: {top})"
    )
    if config.getoption("verbose") < 1 and len(_FILE_SECONDS) > 1:
        return
    # per test file (``-v``, or a run of one file): where the suite's time and TensorFlow starts go
    tf_by_file = collections.Counter((rest[1] if len(rest) > 1 else "").split("::", 1)[0] or "(no test)"
                                     for rest in starts if rest[0] == "tensorflow")
    terminalreporter.write_line("kerinspect cost by test file: seconds, worker starts, TensorFlow starts")
    for name in sorted(set(_FILE_SECONDS) | set(by_file), key=lambda n: -_FILE_SECONDS.get(n, 0)):
        terminalreporter.write_line(f"  {_FILE_SECONDS.get(name, 0):7.1f}s {by_file[name]:4d} {tf_by_file[name]:4d}  {name}")


#: ``KERINSPECT_TEST_FORK=0``: every worker spawned, as a single run's is.
TEST_FORK_ENV = "KERINSPECT_TEST_FORK"


@pytest.fixture(scope="module", autouse=True)
def _one_tensorflow_start_per_module(request):
    """The workers this process starts for a test module are forked from one fork
    server (:func:`kerinspect.sandbox.runner.forking`, what ``check`` of several models
    does): one TensorFlow start per module rather than per run. A forked worker is the
    same worker (tests/test_check_jobs.py compares its confinement with a spawned one's),
    and runs made by a ``kerinspect`` subprocess, or with limits or an environment of
    their own, still spawn theirs. A module whose subject is how workers start sets
    ``SPAWNED_WORKERS = True``."""
    from kerinspect.sandbox.runner import forking

    spawn = getattr(request.module, "SPAWNED_WORKERS", False) or os.environ.get(TEST_FORK_ENV) == "0"
    with forking(2, fork=not spawn):
        yield


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


# --- runs made once per session, shared by the tests that only read their output -------


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, request):
    """A folder of this session shared by its xdist workers: a worker's basetemp is
    ``<the controller's basetemp>/popen-gwN``."""
    base = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):
        base = base.parent
    path = base / "kerinspect-shared"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def once(shared_dir):
    """``once(key, make)``: the JSON data ``make()`` returns, made by the first xdist
    worker that asks for ``key`` (the others wait for it, then read it back)."""
    memo: dict[str, object] = {}

    def get(key, make):
        if key not in memo:
            path = shared_dir / f"{key}.json"
            with open(shared_dir / f"{key}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.exists():
                    data = json.dumps(make())
                    (shared_dir / f"{key}.tmp").write_text(data)
                    os.replace(shared_dir / f"{key}.tmp", path)
            memo[key] = json.loads(path.read_text())
        return memo[key]

    return get


# --- one worker run per distinct request, in a module that asks for it ---------------


def _request_key(model, inputs, spec, load, options):
    """What a worker run of :func:`kerinspect.api.inspect_model` and its report depend on:
    the model file and the input file (each path as written, which the report shows, its
    resolved path and its content), the run spec, the load options (with the
    custom-objects file's content) and any other argument."""

    def file_key(p):
        if not isinstance(p, (str, os.PathLike)):
            return repr(p)
        path = os.path.realpath(p)
        digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest() if os.path.isfile(path) else None
        return os.fspath(p), path, digest

    custom = file_key(load.custom_objects) if load is not None and load.custom_objects else None
    return file_key(model), file_key(inputs), repr(spec), repr(load), custom, repr(sorted(options.items()))


@contextlib.contextmanager
def reusing_runs(runs):
    """Inside the block, ``check`` (and ``summary``, ``diff``) get the report of a worker run this
    module already made for the very same request (:func:`_request_key`) instead of
    starting another worker: the parent's side (options, configuration files, settings,
    judging, output, exit codes) runs as ever, on the report of a real worker run. A new
    request, or one that failed, starts a worker as usual. Tests whose subject is the run
    itself (determinism, what a whole run prints on stderr) do not use it. ``runs`` is a
    module's :func:`worker_runs` (with ``--dist loadfile`` a module runs in one process)."""
    from kerinspect import api

    real, real_diff = api.inspect_model, api.diff_models

    def inspect_model(model, inputs=None, *, spec=None, load=None, progress=None, **options):
        key = _request_key(model, inputs, spec, load, options)
        if key not in runs:
            runs[key] = real(model, inputs, spec=spec, load=load, progress=progress, **options)
        return runs[key]

    def diff_models(model_a, model_b, inputs=None, *, spec=None, load=None, progress=None, **options):
        key = ("diff", _request_key(model_a, inputs, spec, load, options), _request_key(model_b, None, None, None, {}))
        if key not in runs:
            runs[key] = real_diff(model_a, model_b, inputs, spec=spec, load=load, progress=progress, **options)
        return runs[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "inspect_model", inspect_model)
        mp.setattr(api, "diff_models", diff_models)
        yield


@pytest.fixture(scope="module")
def worker_runs():
    """The reports of this test module's worker runs, by request (see :func:`reusing_runs`)."""
    return {}


@pytest.fixture
def reuse(worker_runs):
    """The test's ``check``/``summary`` runs reuse this module's worker runs of the same
    request (:func:`reusing_runs`)."""
    with reusing_runs(worker_runs):
        yield


def kerinspect_cli(*args, env=None, timeout=300):
    """``python -m kerinspect ARGS`` in the project's root, stdout a pipe (as in CI)."""
    return subprocess.run([sys.executable, "-m", "kerinspect", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


def synthetic_warning_only(stderr):
    """Whether ``stderr`` of a run on synthetic inputs holds its one warning line saying
    so (``kerinspect: warning: ran on N synthetic samples, not your data ...``) and
    nothing else."""
    lines = stderr.splitlines()
    return len(lines) == 1 and lines[0].startswith("kerinspect: warning: ") and "synthetic samples" in lines[0]


#: Options a sample model needs (its custom classes).
SAMPLE_OPTIONS = {
    "transformer": ("--custom-objects", "sample_models/custom_layers.py"),
    "attention_kinds": ("--custom-objects", "sample_models/custom_layers.py"),
}
#: The run every test that only reads a sample model's report shares.
SAMPLE_RUN = ("--samples", "16")


def sample_args(name):
    return ("summary", f"sample_models/{name}.keras", *SAMPLE_RUN, *SAMPLE_OPTIONS.get(name, ()))


@pytest.fixture(scope="session")
def sample_report(once):
    """``sample_report("cnn")``: the JSON report (a dict) of
    ``kerinspect summary sample_models/cnn.keras --samples 16 --format json``, run once
    per session through the real CLI and worker."""

    def get(name):
        def make():
            out = kerinspect_cli(*sample_args(name), "--format", "json")
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        return once(f"summary-{name}", make)

    return get


def cli_table(render, report, width=None):
    """What the CLI prints when it renders ``report`` with the table renderer ``render``
    (``kerinspect.render.render_table``, ``render_weights_table``...): here, on a console
    set up as the CLI's for a pipe (``kerinspect/cli/output.py``) or, with ``width``, as
    for ``--width``."""
    from rich.console import Console

    from kerinspect.cli.output import PIPE_WIDTH

    buf = io.StringIO()
    console = Console(file=buf, width=width or PIPE_WIDTH, highlight=False)
    render(report, console, fit=width is not None)
    return buf.getvalue()


def render_summary(data, width=None):
    """The table ``kerinspect summary`` prints for the report ``data`` (its JSON, a dict)."""
    from kerinspect.render import render_table
    from kerinspect.report import ModelReport

    return cli_table(render_table, ModelReport.from_dict(data), width)
