"""Issue 16's hostile cases: what an attacker who can write the model's path, the
repository's files or the inputs can do to a run. Everything goes through the real
worker unless the case is about the parent process itself."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

import kerinspect
from kerinspect.errors import InputFileError
from tests.conftest import SAMPLES

pytestmark = pytest.mark.isolated

CNN = SAMPLES / "cnn.keras"
NAN = SAMPLES / "nan_model.keras"


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()



def _load(isolate=True):
    from kerinspect.spec import LoadOptions

    return LoadOptions(isolate=isolate)


@pytest.mark.parametrize("attack", ["replace", "append"])
def test_bytes_written_after_the_snapshot_are_never_loaded(tmp_path, attack):
    """The scan and the load read one private copy: replacing the path (or appending a
    zip to it) after pre-flight changes nothing that is loaded."""
    from kerinspect import api_jobs
    from kerinspect.report import ModelReport
    from kerinspect.spec import RunSpec

    path = tmp_path / "model.keras"
    shutil.copy(CNN, path)
    with api_jobs.snapshot(path) as model_file:
        assert model_file.sha256 == sha256(CNN) and model_file.shown == str(path)
        assert not os.path.samefile(model_file.path, path)
        if attack == "replace":
            shutil.copy(NAN, tmp_path / "swap.keras")
            os.replace(tmp_path / "swap.keras", path)
        else:
            with open(path, "ab") as f:
                f.write(open(NAN, "rb").read())
        result = api_jobs._job("inspect", model_file, None, RunSpec(samples=4), _load(), None)
    report = ModelReport.from_dict(result["report"])
    assert report.model.name == "cnn" and report.model.path == str(path)
    assert not [n for n in os.listdir(os.environ.get("TMPDIR", "/tmp")) if n.startswith(f"kerinspect-snapshot-{os.getpid()}-")]


def test_dump_hash_is_the_hash_of_what_was_loaded(tmp_path):
    """`dir/link/../m.keras`: the kernel resolves `link/..` through the link, a lexical
    normalisation does not. The manifest's hash and model are of the bytes loaded."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "other" / "sub").mkdir(parents=True)
    shutil.copy(CNN, tmp_path / "dir" / "m.keras")
    shutil.copy(NAN, tmp_path / "other" / "m.keras")
    (tmp_path / "dir" / "link").symlink_to(tmp_path / "other" / "sub")
    tricky = os.path.join(str(tmp_path), "dir", "link", "..", "m.keras")
    dump = kerinspect.dump_activations(tricky, tmp_path / "out", samples=2, load=_load())
    model = dump.manifest["model"]
    assert model["sha256"] == sha256(tmp_path / "other" / "m.keras")
    assert model["name"] == "nan_model" and model["path"] == tricky


def test_a_file_that_changes_while_it_is_copied_is_refused(tmp_path, monkeypatch):
    from kerinspect.scan import preflight as pf

    path = tmp_path / "model.keras"
    shutil.copy(CNN, path)
    real_pread = os.pread
    calls = []

    def growing(fd, n, offset):  # a writer appends while kerinspect reads
        calls.append(offset)
        if len(calls) == 2:
            with open(path, "ab") as f:
                f.write(b"x" * 100)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(pf, "_COPY_CHUNK", 4096)
    monkeypatch.setattr(pf.os, "pread", growing)
    snap = tmp_path / "snap"
    snap.mkdir()
    with pytest.raises(InputFileError) as e:
        pf.preflight(path, snapshot_dir=str(snap))
    assert e.value.rule == "model-changed" and "changed while it was being read" in e.value.message


# --- the parent reads repository content: every read ends in seconds, with one line ----------


def _check(tmp_path, *args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "kerinspect", "check", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or tmp_path, timeout=120)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "too-large"])
def test_a_baseline_that_is_not_a_small_regular_file_is_one_line(tmp_path, kind, monkeypatch):
    target = {"dev-zero": "/dev/zero", "fifo": str(tmp_path / "fifo.json"), "directory": str(tmp_path),
              "too-large": str(tmp_path / "big.json")}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    if kind == "too-large":
        with open(target, "wb") as f:
            f.truncate(300 << 20)  # sparse: 300 MB claimed, nothing allocated
    (tmp_path / "pyproject.toml").write_text(f'[tool.kerinspect.check]\nbaseline = "{target}"\n')
    out = _check(tmp_path, CNN, "--format", "json")
    assert out.returncode == 3, out.stderr
    error = json.loads(out.stdout)["models"][0]["error"]
    assert error["rule"] in ("baseline-unreadable", "baseline-invalid") and "Traceback" not in out.stderr


def test_a_config_nested_20000_deep_is_a_config_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.kerinspect.check]\nmax_abs = " + "[" * 20000 + "]" * 20000 + "\n")
    out = _check(tmp_path, CNN)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "error[config]" in out.stderr and "nest too deeply" in out.stderr


def test_an_input_fifo_never_blocks(tmp_path):
    import subprocess
    import sys

    os.mkfifo(tmp_path / "batch.npz")
    out = subprocess.run([sys.executable, "-m", "kerinspect", "summary", str(CNN), "-i", str(tmp_path / "batch.npz")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "error[input-unreadable]" in out.stderr


def test_globs_never_follow_symlinked_directories_into_loops(tmp_path):
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    shutil.copy(CNN, models / "cnn.keras")
    shutil.copy(SAMPLES / "dead_relu.keras", models / "sub" / "dead.keras")
    (models / "a").symlink_to(".")  # one loop
    (models / "sub" / "b").symlink_to("..")  # and a second
    out = _check(tmp_path, "models/**/*.keras", "--format", "json")
    assert out.returncode in (0, 1), out.stderr
    paths = sorted(m["path"] for m in json.loads(out.stdout)["models"])
    assert paths == ["models/cnn.keras", "models/sub/dead.keras"]


def test_glob_matches_what_python_glob_matches_without_links(tmp_path):
    import glob

    from kerinspect.gate import glob_files

    for rel in ("a/x.keras", "a/b/y.keras", "a/b/c/z.h5", ".hidden/h.keras", "a/.h.keras", "top.keras"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    for pattern in ("**/*.keras", "a/**/*", "*/b/*.keras", "a/*.keras", "**/*.h5", "a/b/[yz].*", "**"):
        p = str(tmp_path / pattern)
        expected = sorted(f for f in glob.glob(p, recursive=True) if os.path.isfile(f))
        assert sorted(glob_files(p)) == expected, pattern


# --- --input bombs and dtypes --------------------------------------------------------------


def _summary(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "kerinspect", "summary", str(NAN), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_an_npz_bomb_is_refused_before_it_is_inflated(tmp_path):
    import numpy as np

    np.savez_compressed(tmp_path / "bomb.npz", features=np.zeros((1 << 28,), np.float32))  # 1 GiB in ~1 MB
    assert os.path.getsize(tmp_path / "bomb.npz") < 2 << 20
    out = _summary("-i", tmp_path / "bomb.npz")
    assert out.returncode == 5 and "error[zip-bomb]" in out.stderr and out.stderr.count("\n") == 1


def test_an_npz_header_that_declares_more_than_it_holds_is_refused(tmp_path):
    import io
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ones((10, 8), np.float32))
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as z:
        z.writestr("features.npy", buf.getvalue().replace(b"(10, 8)", b"(99999999, 8)"))
    out = _summary("-i", tmp_path / "lie.npz")
    assert out.returncode == 5 and "error[input-shape-bomb]" in out.stderr


@pytest.mark.parametrize("dtype", ["complex64", "object"])
def test_complex_and_object_inputs_are_refused_not_cast(tmp_path, dtype):
    import numpy as np

    if dtype == "object":  # written by hand: np.save would pickle it, and we must never unpickle
        np.save(tmp_path / "x.npy", np.array([[1.0] * 8] * 4, dtype=object), allow_pickle=True)
    else:
        np.save(tmp_path / "x.npy", np.ones((4, 8), dtype))
    out = _summary("-i", tmp_path / "x.npy")
    assert out.returncode == 3 and "error[input-dtype]" in out.stderr and dtype.replace("64", "") in out.stderr


def test_in_memory_complex_arrays_are_refused_too(keras):
    import numpy as np

    from kerinspect.errors import InferenceError

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(InferenceError) as e:
        kerinspect.inspect_model(model, np.ones((4, 8), np.complex64))
    assert e.value.rule == "input-dtype"


def test_only_the_samples_asked_for_are_read(keras, tmp_path):
    import numpy as np

    from kerinspect.engine.inputs import InputSpec, load_arrays

    a = np.random.default_rng(0).standard_normal((5000, 8)).astype(np.float32)
    b = np.arange(5000 * 3, dtype=np.int64).reshape(5000, 3)
    np.savez_compressed(tmp_path / "x.npz", a=a, b=b)
    specs = [InputSpec("a", (None, 8), "float32"), InputSpec("b", (None, 3), "int64")]
    got = load_arrays(tmp_path / "x.npz", specs, max_rows=64)
    np.testing.assert_array_equal(got["a"], a[:64])
    np.testing.assert_array_equal(got["b"], b[:64])
    got = load_arrays(tmp_path / "x.npz", specs)
    assert got["a"].shape == (5000, 8)


# --- leftovers -----------------------------------------------------------------------------


@pytest.mark.parametrize("swap", ["out", "parent"])
def test_a_dump_whose_directory_is_swapped_for_a_symlink_leaves_nothing(tmp_path, monkeypatch, swap):
    """--out (or its parent) is swapped for a symlink after the worker staged every
    tensor: nothing is published, and the staging directory goes wherever it ended up."""
    from kerinspect import api_jobs
    from kerinspect.errors import OutputError

    (tmp_path / "p").mkdir()
    out = tmp_path / "p" / "acts"
    real_job = api_jobs._job

    def job_then_swap(*args, **kwargs):
        result = real_job(*args, **kwargs)
        victim = out if swap == "out" else tmp_path / "p"
        os.rename(victim, str(victim) + "-moved")
        os.symlink(str(victim) + "-moved", victim)
        return result

    monkeypatch.setattr(api_jobs, "_job", job_then_swap)
    moved = (tmp_path / "p" / "acts-moved") if swap == "out" else (tmp_path / "p-moved" / "acts")
    if swap == "out":  # DIR itself is a symlink now: refused, nothing published
        with pytest.raises(OutputError) as e:
            kerinspect.dump_activations(CNN, out, samples=4, load=_load())
        assert "nothing was published" in e.value.message
        assert os.listdir(moved) == []
    else:  # the same directory (same inode) under a moved parent: published there, complete
        dump = kerinspect.dump_activations(CNN, out, samples=4, load=_load())
        assert sorted(os.listdir(moved)) == sorted({"manifest.json", "inputs"} | {t["file"] for t in dump.manifest["tensors"]})
    left = [p for p in tmp_path.rglob(".kerinspect-staging-*")]
    assert left == []


def test_a_full_temp_folder_is_one_clear_line(tmp_path, monkeypatch):
    """The snapshot needs room for a copy of the model: when the temp folder has none,
    say so (exit 7) rather than 'cannot read the model'."""
    import errno

    from kerinspect.errors import OutputError
    from kerinspect.scan import preflight as pf

    real_write = os.write

    def full(fd, data):
        if fd > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(pf.os, "write", full)
    with pytest.raises(OutputError) as e:
        pf.preflight(CNN, snapshot_dir=str(tmp_path))
    assert e.value.rule == "snapshot-failed" and "No space left" in e.value.message and "TMPDIR" in e.value.hint
