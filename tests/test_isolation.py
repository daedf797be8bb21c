"""The worker process: crashes, hangs and memory exhaustion end in one line and
exit 8 with no stray process; the environment and network are contained."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.isolated

CNN = str(SAMPLES / "cnn.keras")


def kerinspect(*args, env=None, timeout=120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "kerinspect", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=full_env, timeout=timeout)


def workers_alive(marker: str) -> list[str]:
    """Command lines of live processes whose request lives under ``marker``."""
    alive = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            alive.append(cmd)
    return alive


@pytest.mark.parametrize(
    "fault, rule, text",
    [
        ("segv@load", "worker-crashed", "crashed (SIGSEGV) while loading the model"),
        ("oom@load", "memory-limit", "ran out of memory"),
        ("exit@start", "worker-failed", "exited with status 3"),
    ],
)
def test_worker_failures_are_exit_8_one_line(tmp_path, fault, rule, text):
    out = kerinspect("summary", CNN, "--max-memory", "1G",
                     env={"KERINSPECT_TEST_FAULT": fault, "TMPDIR": str(tmp_path)})
    assert out.returncode == 8, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"error[{rule}]" in lines[0] and text in lines[0], out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert workers_alive(str(tmp_path)) == []
    assert os.listdir(tmp_path) == []  # the scratch directory is removed


def test_hang_is_killed_at_the_timeout_with_its_process_group(tmp_path):
    start = time.monotonic()
    # 20 s: the model must load before the timeout (8 s on a busy 2-core machine) for the
    # hang to be the run's
    out = kerinspect("summary", CNN, "--timeout", "20",
                     env={"KERINSPECT_TEST_FAULT": "hang@run", "TMPDIR": str(tmp_path)})
    assert time.monotonic() - start < 90
    assert out.returncode == 8 and "error[timeout]" in out.stderr
    assert "while running the model" in out.stderr
    assert workers_alive(str(tmp_path)) == []


def test_debug_shows_the_worker_traceback(tmp_path):
    bad = tmp_path / "t.keras"
    bad.write_bytes((SAMPLES / "cnn.keras").read_bytes()[:3000])
    out = kerinspect("summary", bad, "--debug")
    assert out.returncode == 4
    assert "in the isolated worker" in out.stderr and "Traceback" in out.stderr


def test_legacy_keras_env_is_scrubbed():
    """TF_USE_LEGACY_KERAS would make tf.keras the Keras 2 package, whose .h5
    loader ignored safe_mode; the worker never sees it."""
    out = kerinspect("summary", SAMPLES / "legacy_mlp.h5", "-f", "json", "-n", "2",
                     env={"TF_USE_LEGACY_KERAS": "1"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"]["keras_version"].startswith("3.")


def test_worker_has_no_network_and_a_scratch_home(keras, tmp_path):
    from kerinspect.sandbox.runner import WorkerLimits, _worker_env, run_worker

    probe = ("import json, os, socket\n"
             "from kerinspect.sandbox.confine import confine\n"
             "entered = confine(json.loads(os.environ['KERINSPECT_LIMITS']))\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); net = 'open'\n"
             "except OSError as e:\n    net = type(e).__name__\n"
             "names = sorted(n for _, n in socket.if_nameindex())\n"
             "print(json.dumps({'net': net, 'home': os.environ['HOME'], 'entered': entered, 'ifs': names}))\n")
    env = _worker_env(str(tmp_path))
    env["KERINSPECT_LIMITS"] = json.dumps(WorkerLimits(timeout=30).to_dict())
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    result = json.loads(out.stdout)
    assert result["home"] == str(tmp_path)
    assert result["net"] != "open"
    if result["entered"]:  # a private namespace: nothing but loopback
        assert result["ifs"] == ["lo"]
    outcome = run_worker({"command": "inspect", "model": {"path": CNN, "format": "keras",
                                                          "size": os.path.getsize(CNN)}, "run": {"samples": 2}})
    assert outcome.result["report"]["samples"] == 2
    assert outcome.network_isolated == result["entered"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_worker_never_outlives_kerinspect(tmp_path, sig):
    """A cancelled CI job (SIGTERM), a closed terminal (SIGHUP) or a hard kill of
    kerinspect must not leave a hung worker holding memory."""
    import signal

    env = {**os.environ, "KERINSPECT_TEST_FAULT": "hang@run", "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "kerinspect", "summary", CNN], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not workers_alive(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers_alive(str(tmp_path)), "the worker never started"
    time.sleep(3)  # let it reach the hang
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while workers_alive(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers_alive(str(tmp_path)) == []
    if sig != "SIGKILL":  # cleaned up like Ctrl-C: one line, 130, no scratch left
        assert proc.returncode == 130 and err.strip() == "kerinspect: interrupted"
        assert os.listdir(tmp_path) == []
    else:  # a killed kerinspect cannot clean up: its scratch (request.json) stays, until the next run
        left = [n for n in os.listdir(tmp_path) if n.startswith("kerinspect-")]
        assert left and all(f"-{proc.pid}-" in n for n in left)
        out = subprocess.run([sys.executable, "-m", "kerinspect", "summary", CNN, "-f", "json"], cwd=ROOT,
                             env={**env, "KERINSPECT_TEST_FAULT": ""}, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert os.listdir(tmp_path) == []


def test_sweep_spares_live_runs_and_other_files(tmp_path):
    from kerinspect.sandbox import scratch

    mine = scratch.make("worker", str(tmp_path))  # this process: alive
    dead = tmp_path / "kerinspect-inputs-999999999-abc"  # no such pid
    dead.mkdir()
    (dead / "x").write_text("x")
    unrelated = tmp_path / "kerinspect-other-999999999-abc"
    unrelated.mkdir()
    link = tmp_path / "kerinspect-worker-999999998-lnk"
    link.symlink_to(unrelated)
    assert scratch.sweep(str(tmp_path)) == ["kerinspect-inputs-999999999-abc"]
    assert os.path.isdir(mine) and unrelated.is_dir() and link.is_symlink() and not dead.exists()


def test_custom_objects_file(keras, tmp_path):
    """A custom class: refused with a hint without its code, inspected with it."""
    code = (
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='demo')\n"
        "class Scale(keras.layers.Layer):\n"
        "    def __init__(self, factor=2.0, **kw):\n"
        "        super().__init__(**kw)\n        self.factor = factor\n"
        "    def call(self, x):\n        return x * self.factor\n"
        "    def get_config(self):\n        return {**super().get_config(), 'factor': self.factor}\n"
    )
    layer_file = tmp_path / "layers_demo.py"
    layer_file.write_text(code)
    # built here (Keras is imported already), the class registered only while it is saved
    registered = keras.saving.get_custom_objects()
    before = dict(registered)
    try:
        scale = runpy.run_path(str(layer_file))["Scale"]
        x = keras.Input((3,), name="x")
        m = keras.Model(x, scale(3.0, name="scale")(keras.layers.Dense(2, name="d")(x)))
        m.save(tmp_path / "custom.keras")
    finally:
        registered.clear()
        registered.update(before)
    out = kerinspect("summary", tmp_path / "custom.keras")
    assert out.returncode == 4
    assert "error[unknown-class]" in out.stderr and "--custom-objects" in out.stderr
    out = kerinspect("summary", tmp_path / "custom.keras", "--custom-objects", layer_file, "-f", "json")
    assert out.returncode == 0, out.stderr
    rows = {r["path"]: r for r in json.loads(out.stdout)["layers"]}
    assert rows["scale"]["class_name"] == "Scale"
    d, s = rows["d"]["outputs"][0]["stats"], rows["scale"]["outputs"][0]["stats"]
    assert s["mean"] == pytest.approx(3.0 * d["mean"], rel=1e-5)
    missing = kerinspect("summary", tmp_path / "custom.keras", "--custom-objects", tmp_path / "nope.py")
    assert missing.returncode == 3 and "custom-objects-not-found" in missing.stderr


def test_every_command_gives_the_same_answer_through_the_worker(keras, tmp_path, monkeypatch):
    """The worker changes where the work happens, not its result."""
    import numpy as np

    import kerinspect
    from kerinspect.api import LoadOptions, inspect_weights

    model = str(SAMPLES / "nested_shared.keras")
    worker, local = LoadOptions(isolate=True), LoadOptions(isolate=False)
    a = kerinspect.inspect_model(model, samples=8, batch_size=3, load=worker)
    b = kerinspect.inspect_model(model, samples=8, batch_size=3, load=local)
    assert a.isolation.worker and not b.isolation.worker  # where it ran, and nothing else, differs
    assert {**a.to_dict(), "isolation": None} == {**b.to_dict(), "isolation": None}
    wa, wb = inspect_weights(model, load=worker), inspect_weights(model, load=local)
    assert wa.isolation.worker and not wb.isolation.worker
    assert {**wa.to_dict(), "isolation": None} == {**wb.to_dict(), "isolation": None}
    d1 = kerinspect.dump_activations(model, tmp_path / "w", samples=8, batch_size=3, load=worker)
    d2 = kerinspect.dump_activations(model, tmp_path / "l", samples=8, batch_size=3, load=local)
    assert [t["key"] for t in d1.manifest["tensors"]] == [t["key"] for t in d2.manifest["tensors"]]
    for t in d1.manifest["tensors"]:
        np.testing.assert_array_equal(d1[t["key"]], d2[t["key"]])
    out = kerinspect_cli_json("check", SAMPLES / "nan_model.keras", "-f", "json")
    assert out["models"][0]["first_fault"]["layer"] == "dense_nan"


def kerinspect_cli_json(*args):
    out = kerinspect(*args)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def test_worker_blas_is_single_threaded_unless_the_user_says(monkeypatch, tmp_path):
    """stats.summarize's per-block dot products are slower with OpenBLAS threads, which
    also spin against TensorFlow's pools; a user's own setting is kept."""
    from kerinspect.sandbox.runner import _worker_env

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert _worker_env(str(tmp_path))["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    assert _worker_env(str(tmp_path))["OPENBLAS_NUM_THREADS"] == "4"


def _limited(which: str, kib: int):
    """preexec_fn that sets soft and hard ``RLIMIT_<which>`` as ``ulimit -<x> kib`` does."""
    import resource

    limit = getattr(resource, f"RLIMIT_{which}")

    def apply():
        resource.setrlimit(limit, (kib * 1024, kib * 1024))

    return apply


def test_inherited_limits_are_kept_not_raised():
    """The worker lowers limits, never raises them: the caller's hard limit wins."""
    import resource

    from kerinspect.sandbox.confine import clamped

    assert clamped(12 << 30, 8 << 30) == 8 << 30
    assert clamped(4 << 30, 8 << 30) == 4 << 30
    assert clamped(4 << 30, resource.RLIM_INFINITY) == 4 << 30


@pytest.mark.slow
def test_summary_under_a_lower_inherited_memory_limit(tmp_path):
    """`(ulimit -d 8000000; kerinspect summary cnn.keras)`: a CI container's limit below
    kerinspect's default (half the RAM) used to stop the worker from starting."""
    out = subprocess.run([sys.executable, "-m", "kerinspect", "summary", CNN, "-f", "json"], capture_output=True,
                         text=True, cwd=ROOT, timeout=300, preexec_fn=_limited("DATA", 8_000_000))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"]["name"] == "cnn"


@pytest.mark.slow
def test_dump_under_a_lower_inherited_file_size_limit(tmp_path):
    """`(ulimit -f 100000; kerinspect dump cnn.keras --out d)`: the dump's own file-size
    limit (--max-bytes, 2 GiB) is above the caller's 100 MB."""
    out = subprocess.run([sys.executable, "-m", "kerinspect", "dump", CNN, "--out", str(tmp_path / "d")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         preexec_fn=_limited("FSIZE", 100_000))
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["tensors"] and all((tmp_path / "d" / t["file"]).is_file() for t in manifest["tensors"])


def test_worker_imports_this_kerinspect(tmp_path):
    """The worker's PYTHONPATH is the directory that holds the running kerinspect package,
    so a source checkout's worker runs the same code as its parent."""
    import kerinspect
    from kerinspect.sandbox.runner import _worker_env

    env = _worker_env(str(tmp_path))
    assert os.path.samefile(env["PYTHONPATH"], os.path.dirname(os.path.dirname(kerinspect.__file__)))


def test_partial_isolation_is_said_once_and_recorded(tmp_path):
    """Where the kernel refuses a network namespace, the user is told (one line on stderr)
    and the JSON says so; with the namespace, nothing is said and the JSON says that too."""
    out = kerinspect("summary", CNN, "-f", "json", env={"KERINSPECT_TEST_FAULT": "no-netns"})
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.strip().splitlines() if "synthetic samples" not in line]
    assert len(lines) == 1 and lines[0].startswith("kerinspect: warning: ") and "network namespace" in lines[0]
    assert json.loads(out.stdout)["isolation"] == {"worker": True, "network_namespace": False, "socket_guard": True}
    out = kerinspect("weights", CNN, "-f", "json")
    assert out.returncode == 0
    isolation = json.loads(out.stdout)["isolation"]
    assert isolation["worker"] and isolation["socket_guard"]
    assert (out.stderr == "") == isolation["network_namespace"]  # silent exactly when fully isolated


PROBE = """
import sys
before = sorted(n for n in ("sklearn", "pandas") if n in sys.modules)
import pandas, sklearn
from keras.src.trainers.data_adapters import array_slicing
raise ValueError(f"before={before} keras_has_pandas={array_slicing.pandas is not None} imported={pandas.__name__}")
"""


def test_the_worker_imports_keras_without_sklearn_and_pandas_and_a_module_may_still_import_them(tmp_path):
    """TensorFlow imports Keras's scikit-learn wrappers and Keras its pandas support when
    installed (a quarter of a worker's start); the worker leaves them out, and a
    --custom-objects module that needs them still gets them. In-process (a notebook)
    Keras keeps its pandas."""
    pytest.importorskip("pandas")
    pytest.importorskip("sklearn")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = kerinspect("summary", CNN, "--custom-objects", probe)
    assert out.returncode == 4, out.stderr
    assert "before=[] keras_has_pandas=False imported=pandas" in out.stderr, out.stderr
    inproc = subprocess.run(
        [sys.executable, "-c", "from kerinspect.engine.tfenv import import_keras; import_keras(); "
         "from keras.src.trainers.data_adapters import array_slicing; print(array_slicing.pandas is not None)"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert inproc.stdout.strip() == "True", inproc.stderr
