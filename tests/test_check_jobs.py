"""``kerinspect check --jobs N``: models checked at once, each in its own worker, with the
output and exit code of the one-at-a-time run; what needs no model refused before any
worker starts (counted by the worker-start log of :mod:`kerinspect.sandbox.runner`,
``KERINSPECT_WORKER_STARTS_LOG``); no worker outlives an interrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from tests.conftest import ROOT, SAMPLES, reusing_runs

#: Four tiny models, one passing and three failing (dead units; NaN; exploding), and a
#: missing file (an error found before any worker): the run's order, which the output keeps.
#: This module's subject is how check starts workers: no fork server of the suite's (conftest).
SPAWNED_WORKERS = True

MODELS = ("classifier.keras", "dead_relu.keras", "missing.keras", "nan_model.keras", "exploding.keras")
STARTS = "KERINSPECT_WORKER_STARTS_LOG"


def starts(log):
    """The worker starts a run wrote to its log: ``[(command, tensorflow|no-tensorflow)]``."""
    if not log.exists():
        return []
    return [tuple(line.split(" ")[:2]) for line in log.read_text().splitlines() if line]


def check(*args, log, env=None):
    return CliRunner().invoke(cli, ["check", *map(str, args)], env={STARTS: str(log), "GITHUB_ACTIONS": None,
                                                                     **(env or {})})


@pytest.fixture(autouse=True)
def _hermetic_cwd(tmp_path, monkeypatch):
    work = tmp_path / "cwd"  # no pyproject.toml above it
    work.mkdir()
    monkeypatch.chdir(work)


#: The runs of :func:`runs` whose workers really ran (the table runs reuse their reports).
REAL = ((1, "json"), (2, "json"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same five models checked with ``--jobs 1`` and ``--jobs 2``, as JSON (with
    ``--junit``) and as a table: ``runs[(jobs, fmt)] = (exit_code, stdout, junit, starts)``.
    ``check`` renders its format from the results once every model is done, so the table
    run of each ``--jobs`` gets the reports of that ``--jobs``'s JSON run, whose workers
    really ran (:func:`tests.conftest.reusing_runs`): the jobs, their order, the output and
    the exit code are the parent's, as ever, and no worker starts twice for one report."""
    d = tmp_path_factory.mktemp("jobs")
    paths = [SAMPLES / name for name in MODELS]
    out = {}
    for jobs in (1, 2):
        worker_runs = {}
        for fmt in ("json", "table"):
            log, junit = d / f"starts-{jobs}-{fmt}.log", d / f"junit-{jobs}-{fmt}.xml"
            with reusing_runs(worker_runs):
                r = check(*paths, "--samples", "4", "--jobs", jobs, "--format", fmt, "--junit", junit, log=log)
            junit_text = junit.read_text().replace(f"junit-{jobs}-{fmt}", "junit")
            out[(jobs, fmt)] = (r.exit_code, r.stdout, junit_text, starts(log), r.stderr)
    return out


def test_jobs_2_prints_what_jobs_1_prints(runs):
    for fmt in ("json", "table"):
        (code1, out1, junit1, _, _), (code2, out2, junit2, _, _) = runs[(1, fmt)], runs[(2, fmt)]
        assert out1 == out2 and code1 == code2 == 3, fmt  # the missing file's 3 outranks failed rules (1)
        assert junit1 == junit2, fmt  # the JUnit files too
    data = json.loads(runs[(2, "json")][1])
    assert [m["path"] for m in data["models"]] == [str(SAMPLES / n) for n in MODELS]
    assert [m["status"] for m in data["models"]] == ["passed", "failed", "error", "failed", "failed"]
    table = runs[(2, "table")][1]
    assert table.rstrip().endswith("5 models · 1 passed · 3 failed · 1 error · exit 3")


def test_one_tensorflow_start_and_one_worker_per_model_that_runs(runs):
    """Four models run (the missing one never gets a worker), each in a worker forked
    from one fork server, the run's only TensorFlow start, whatever ``--jobs`` (the table
    runs start none: they reuse the reports of these)."""
    for key, (_, _, _, started, _) in runs.items():
        assert started == ([("inspect", "forked")] * 4 + [("fork-server", "tensorflow")] if key in REAL else []), key


def test_the_missing_model_is_said_before_the_workers_start(runs):
    for key, (*_, stderr) in runs.items():
        lines = stderr.splitlines()
        assert lines[0].startswith("kerinspect: error[model-not-found]: ") and "missing.keras" in lines[0], key


def test_missing_input_file_starts_no_worker(tmp_path):
    log = tmp_path / "starts.log"
    r = check(SAMPLES / "classifier.keras", SAMPLES / "dead_relu.keras", SAMPLES / "nan_model.keras",
              "--input", tmp_path / "nope.npy", "--format", "json", log=log)
    assert r.exit_code == 3, r.stderr
    data = json.loads(r.stdout)
    assert [m["error"]["rule"] for m in data["models"]] == ["input-not-found"] * 3
    assert starts(log) == []


def test_a_shape_the_archive_rules_out_starts_no_worker(tmp_path, monkeypatch):
    """``dead_relu`` takes 8 features, ``classifier`` 24: an ``.npy`` of (5, 8) feeds the
    first (its worker runs) and is refused for the second from its archive's config,
    before any worker, in the worker's own words (the same run with the early check
    off, judged by the worker after loading the model with Keras, says the same)."""
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32))
    log = tmp_path / "starts.log"
    args = (SAMPLES / "dead_relu.keras", SAMPLES / "classifier.keras", "--input", x, "--samples", "4",
            "--format", "json")
    r = check(*args, log=log)
    assert r.exit_code == 6, r.stderr
    first, second = json.loads(r.stdout)["models"]
    assert first["status"] == "failed"  # dead units, on the user's data
    expected = f"Input 'features' expects shape (None, 24), got (4, 8) (axis 1: 24 != 8). Received: --input='{x}'"
    assert second["error"] == {"exit_code": 6, "rule": "input-shape", "message": expected}
    assert starts(log) == [("inspect", "tensorflow")]  # the first model's only
    assert r.stderr.splitlines()[0] == f"kerinspect: error[input-shape]: {SAMPLES / 'classifier.keras'}: {expected}"

    # alone, the refused model starts nothing at all
    log_alone = tmp_path / "alone.log"
    r = check(SAMPLES / "classifier.keras", *args[2:], log=log_alone)
    assert r.exit_code == 6 and json.loads(r.stdout)["models"][0]["error"]["message"] == expected
    assert starts(log_alone) == []

    # the worker's own check, after Keras loaded the model, in the same words
    from kerinspect.scan import input_shapes

    monkeypatch.setattr(input_shapes, "declared_inputs", lambda path: None)
    log_worker = tmp_path / "worker.log"
    r = check(SAMPLES / "classifier.keras", *args[2:], log=log_worker)
    assert r.exit_code == 6 and json.loads(r.stdout)["models"][0]["error"]["message"] == expected
    assert starts(log_worker) == [("inspect", "tensorflow")]


def test_declared_inputs_match_keras(keras):
    """What the parent reads from each sample archive's config is what Keras builds:
    ``model.inputs``' names and shapes, in order (None where it does not read plainly)."""
    from kerinspect.scan.input_shapes import declared_inputs

    read = 0
    for path in sorted(SAMPLES.glob("*.keras")):
        declared = declared_inputs(str(path))
        if declared is None:
            continue
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception:  # noqa: BLE001 - custom layers: not loadable without their code
            continue
        assert declared == [(x.name, tuple(x.shape)) for x in model.inputs], path.name
        read += 1
    assert read >= 8


def _workers(pid):
    """The worker processes below ``pid``: its children and theirs (a fork server's)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if b"kerinspect.sandbox.worker" in cmd:
            parents[int(entry)] = ppid
    below = {pid}
    while grown := {p for p, pp in parents.items() if pp in below} - below:
        below |= grown
    return sorted(below - {pid})


def _running(pid):
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return bool(f.read())
    except OSError:
        return False


@pytest.mark.parametrize("jobs, sig", [("1", "SIGINT"), ("2", "SIGINT"), ("2", "SIGKILL")])
def test_interrupted_run_leaves_no_worker(tmp_path, jobs, sig):
    """Ctrl-C while the fork server and its workers live (``--jobs 2``: two hang, a third
    model waits its turn; ``--jobs 1``: one hangs): exit 130, one line, every worker and
    the server gone, no scratch left. A SIGKILLed kerinspect cannot clean up, but the
    server, seeing its socket close, kills its workers and ends."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "KERINSPECT_TEST_FAULT": "hang@start", "TMPDIR": str(scratch), STARTS: ""}
    models = [SAMPLES / n for n in ("classifier.keras", "dead_relu.keras", "nan_model.keras")]
    proc = subprocess.Popen([sys.executable, "-m", "kerinspect", "check", *map(str, models), "--jobs", jobs],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_workers(proc.pid)) < 1 + int(jobs) and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = _workers(proc.pid)
    assert len(seen) == 1 + int(jobs), "the workers never started"  # and never more than --jobs
    time.sleep(1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    if sig == "SIGKILL":
        deadline = time.monotonic() + 15
        while any(_running(pid) for pid in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in seen if _running(pid)] == []
        return
    assert proc.returncode == 130 and err.strip() == "kerinspect: interrupted"
    assert [pid for pid in seen if os.path.exists(f"/proc/{pid}")] == []
    assert os.listdir(scratch) == []


def _archive(path, config):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
    return str(path)


def _functional(inputs, refs):
    layers = [{"class_name": "InputLayer", "name": n, "config": {"name": n, "batch_shape": s}} for n, s in inputs]
    return {"class_name": "Functional", "config": {"layers": layers, "input_layers": refs}}


def test_declared_inputs_only_where_the_config_says_it_plainly(tmp_path):
    """No TensorFlow: hand-made archives. A Keras 2 config (``batch_input_shape``), a
    Sequential, a name that no InputLayer has, a boolean dimension: None (the worker judges)."""
    from kerinspect.scan.input_shapes import declared_inputs

    one = _archive(tmp_path / "one.keras", _functional([("x", [None, 3])], ["x", 0, 0]))
    assert declared_inputs(one) == [("x", (None, 3))]
    two = _archive(tmp_path / "two.keras", _functional([("b", [None, 2]), ("a", [4, None, 5])],
                                                       [["a", 0, 0], ["b", 0, 0]]))
    assert declared_inputs(two) == [("a", (4, None, 5)), ("b", (None, 2))]
    keras2 = _functional([("x", [None, 3])], ["x", 0, 0])
    keras2["config"]["layers"][0]["config"] = {"name": "x", "batch_input_shape": [None, 3]}
    for name, config in {"keras2": keras2, "sequential": {**keras2, "class_name": "Sequential"},
                         "unnamed": _functional([("x", [None, 3])], ["y", 0, 0]),
                         "bool": _functional([("x", [None, True])], ["x", 0, 0])}.items():
        assert declared_inputs(_archive(tmp_path / f"{name}.keras", config)) is None, name
    (tmp_path / "not_zip.keras").write_bytes(b"PK\x03\x04 not a zip")
    assert declared_inputs(str(tmp_path / "not_zip.keras")) is None


def test_input_shapes_against_npy_and_npz_headers(tmp_path):
    """The rows the worker reads (``samples``) in the shape shown; an ``.npz`` by input
    name; rank first; keys that do not match the inputs are left to the worker."""
    from kerinspect.errors import InferenceError
    from kerinspect.scan.input_shapes import check_input_shapes

    two = _archive(tmp_path / "two.keras", _functional([("a", [None, 3]), ("b", [None, 2, 2])],
                                                       [["a", 0, 0], ["b", 0, 0]]))
    np.savez(tmp_path / "ok.npz", a=np.zeros((6, 3), np.float32), b=np.zeros((6, 2, 2), np.float32))
    check_input_shapes(two, str(tmp_path / "ok.npz"), "ok.npz", None)
    np.savez(tmp_path / "rank.npz", a=np.zeros((6, 3), np.float32), b=np.zeros((6, 4), np.float32))
    with pytest.raises(InferenceError) as e:
        check_input_shapes(two, str(tmp_path / "rank.npz"), "rank.npz", 2)
    assert e.value.rule == "input-shape"
    assert str(e.value.message_parts) == "Input 'b' expects rank 3 (None, 2, 2), got shape (2, 4). Received: input='rank.npz'"
    np.savez(tmp_path / "keys.npz", a=np.zeros((6, 3), np.float32), c=np.zeros((6, 9), np.float32))
    check_input_shapes(two, str(tmp_path / "keys.npz"), "keys.npz", None)  # input-names: the worker's
    np.save(tmp_path / "one.npy", np.zeros((6, 3), np.float32))
    check_input_shapes(two, str(tmp_path / "one.npy"), "one.npy", None)  # one array, two inputs: the worker's


#: A ``--custom-objects`` module that records, in a file beside it, how the worker that
#: imports it is confined.
CONFINEMENT_PROBE = '''
import ctypes, json, os, resource, signal, socket, sys, tempfile
import keras
pdeathsig = ctypes.c_int(0)
ctypes.CDLL(None).prctl(2, ctypes.byref(pdeathsig), 0, 0, 0)  # PR_GET_PDEATHSIG
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    guard = "open"
except OSError as e:
    guard = type(e).__name__
def netns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None
fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # the listing's own
        pass
facts = {
    "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "cwd": os.getcwd(),
    "home": os.environ["HOME"], "tmpdir": os.environ["TMPDIR"], "tempfile": tempfile.gettempdir(),
    "keras_home": os.environ["KERAS_HOME"], "pdeathsig": pdeathsig.value, "sys_path0": sys.path[0],
    "keras_dir": keras.src.backend.config.keras_home(),
    "limits": [resource.getrlimit(r) for r in (resource.RLIMIT_DATA, resource.RLIMIT_CORE, resource.RLIMIT_FSIZE)],
    "alarm": signal.getitimer(signal.ITIMER_REAL)[0], "guard": guard,
    "interfaces": sorted(n for _, n in socket.if_nameindex()),
    "netns": netns("self"), "parent_netns": netns(os.getppid()),
    "sockets": sum(f.startswith("socket:") for f in fds), "pipes": sum(f.startswith("pipe:") for f in fds),
}
with open(os.path.join(OUT, f"{os.getpid()}.json"), "w") as f:
    json.dump(facts, f)
'''


def test_a_forked_worker_is_confined_as_a_spawned_one(tmp_path):
    """The same two models checked with the fork server (``--jobs 2``) and without it
    (``KERINSPECT_CHECK_FORK=0``): a worker forked for a job has what a spawned worker has
    (its own process group and scratch as home, temp and cwd; killed with its parent; the
    memory, core and file-size limits; a deadline armed; the socket guard; the same network
    interfaces; no socket and no other job's pipe), and the two forked workers share a
    parent, the server, and nothing else: each has a network namespace of its own, not
    the server's (where this kernel gives a spawned worker one)."""
    facts = {}
    for mode, env in (("forked", {}), ("spawned", {"KERINSPECT_CHECK_FORK": "0"})):
        out = tmp_path / mode
        out.mkdir()
        probe = tmp_path / f"probe_{mode}.py"
        probe.write_text(f"OUT = {str(out)!r}\n" + CONFINEMENT_PROBE)
        log = tmp_path / f"{mode}.log"
        r = check(SAMPLES / "classifier.keras", SAMPLES / "cancer_mlp.keras", "--custom-objects", probe,
                  "--samples", "4", "--jobs", "2", "--timeout", "300", "--format", "json", log=log, env=env)
        assert r.exit_code == 0, r.stdout + r.stderr
        facts[mode] = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
        assert len(facts[mode]) == 2, mode
        kind = "forked" if mode == "forked" else "tensorflow"
        assert starts(log) == [("inspect", kind)] * 2 + ([("fork-server", "tensorflow")] if kind == "forked" else [])
    forked, spawned = facts["forked"], facts["spawned"]
    assert {f["ppid"] for f in spawned} == {os.getpid()}  # check runs in this process (CliRunner)
    (server,) = {f["ppid"] for f in forked}
    assert server != os.getpid()
    for f in forked + spawned:
        assert f["pgid"] == f["pid"]
        assert f["cwd"] == f["home"] and f["tmpdir"] == f["tempfile"] == os.path.join(f["home"], "tmp")
        assert f["keras_home"] == f["keras_dir"] == os.path.join(f["home"], "keras")
        assert f["sys_path0"] == f["home"]
        assert f["pdeathsig"] == signal.SIGKILL
        assert 0 < f["alarm"] <= 300 + 5
        assert f["guard"] == "PermissionError" and f["sockets"] == 0
    assert forked[0]["home"] != forked[1]["home"]
    ours = os.readlink("/proc/self/ns/net")
    if all(f["netns"] != ours for f in spawned):  # namespaces allowed here
        # (a namespace's number is reused once it is gone: compare those that lived together)
        namespaces = [f["netns"] for f in forked] + [forked[0]["parent_netns"], ours]
        assert None not in namespaces and len(set(namespaces)) == len(namespaces), namespaces
    for key in ("limits", "interfaces", "pipes"):
        assert [f[key] for f in forked] == [f[key] for f in spawned], key


#: A ``--custom-objects`` module that crashes the worker of one model and hangs another's
#: (it reads which model from the worker's request, in its scratch directory).
FAULTS_PROBE = '''
import faulthandler, json, time
size = json.load(open("request.json"))["model"]["size"]  # the model's snapshot: known by its size
if size == CRASH:
    faulthandler._sigsegv()
if size == HANG:
    time.sleep(1e6)
'''


def test_a_forked_worker_that_crashes_or_hangs_ends_alone(tmp_path):
    """Through the fork server (``--jobs 2``): one model's worker crashes (SIGSEGV), one
    hangs past ``--timeout`` and is killed, and the server forks the third model's worker
    after the crash, which passes; each said as a spawned worker's would be."""
    models = [SAMPLES / n for n in ("dead_relu.keras", "nan_model.keras", "classifier.keras")]
    sizes = [os.path.getsize(m) for m in models]
    assert len(set(sizes)) == 3
    probe = tmp_path / "faults.py"
    probe.write_text(f"CRASH, HANG = {sizes[0]}, {sizes[1]}\n" + FAULTS_PROBE)
    log = tmp_path / "starts.log"
    r = check(*models, "--custom-objects", probe, "--samples", "4", "--jobs", "2", "--timeout", "15",
              "--format", "json", log=log)
    assert r.exit_code == 8, r.stderr
    crashed, hung, passed = json.loads(r.stdout)["models"]
    assert crashed["error"]["rule"] == "worker-crashed" and "SIGSEGV" in crashed["error"]["message"]
    assert hung["error"]["rule"] == "timeout" and "timed out after 15 s" in hung["error"]["message"]
    assert passed["status"] == "passed"
    assert sorted(starts(log)) == sorted([("inspect", "forked")] * 3 + [("fork-server", "tensorflow")])
