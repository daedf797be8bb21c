"""kerinspect dump: values against plain Keras, the manifest, and filesystem safety
(hostile names, refused directories, symlinks, disk full, atomic publishing)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from kerinspect.errors import ExitCode, InputFileError, OutputError, UsageError
from tests.conftest import ROOT
from tests.reference import reference_calls

ERROR_LINE = re.compile(r"^kerinspect: error\[[a-z0-9-]+\]: .+$")
FILE_NAME = re.compile(r"^[0-9]{2,}(-[0-9]+)?_[A-Za-z0-9._-]{1,64}_[0-9a-f]{8}\.npy$")
HOSTILE = ["..", "", "CON", "..\\..\\evil", "a\x00b", "ok\n::error title=pwned::x\x1b[2J", "A" * 300,
           "dense_1", "DENSE_1"]


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def one_line_error(result, code, rule):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), result.stderr
    assert f"error[{rule}]" in lines[0] and "Traceback" not in result.stderr
    return lines[0]


def tree_hash(root):
    """Names, types, modes, link targets and contents of everything under ``root``."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)}\0{st.st_mode}\0".encode())
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def leftovers(root):
    """Anything a failed run must not leave: .npy, .tmp, staging dirs, manifests."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.endswith((".npy", ".tmp")) or name.startswith(".kerinspect") or name == "manifest.json":
                found.append(os.path.join(dirpath, name))
    return found


def feed_arrays(model, n, seed=0):
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    return next(build_feed(model, None, RunSpec(samples=n, batch_size=n, seed=seed)).batches())


def dump(model, out, **kw):
    import kerinspect

    return kerinspect.dump_activations(model, out, **kw)


# -- values -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shared", "nested", "rnn_states", "attention"])
def test_every_dumped_tensor_equals_plain_keras(factories, tmp_path, name):
    """Stacked over three batches, each file equals plain Keras's output of that call."""
    model = factories.ALL[name]()
    batch = feed_arrays(model, 12, seed=4)
    d = dump(model, tmp_path / "out", samples=12, batch_size=5, seed=4)
    ref = reference_calls(model, batch)
    by_path: dict[str, list] = {}
    for t in d.tensors:
        by_path.setdefault(t["path"], []).append(t)
    inputs = {t["path"] for t in d.tensors if t["class_name"] == "InputLayer"}
    got_paths = set(by_path) - inputs
    assert set(ref) <= got_paths  # every call of the graph...
    # ... and the calls made inside those layers (their values: tests/test_deep.py)
    assert all(any(p.startswith(r + "/") for r in ref) for p in got_paths - set(ref)), got_paths - set(ref)
    for path, arrays in ref.items():
        entries = by_path[path]
        assert [t["output"] for t in entries] == list(range(len(arrays))), path
        for t, want in zip(entries, arrays):
            got = np.load(tmp_path / "out" / t["file"], allow_pickle=False)
            assert got.shape == want.shape == tuple(t["shape"]), (path, t["output"])
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{path}:{t['output_name']}")
    for i, x in enumerate(batch):  # the inputs used, as fed
        np.testing.assert_array_equal(d.inputs[d.manifest["inputs"][i]["name"]], x)
    for path in inputs:
        np.testing.assert_array_equal(d[path], batch[[s["name"] for s in d.manifest["inputs"]].index(path)])
    shared_keys = {t["key"] for t in d.tensors}
    if name == "shared":
        assert {"shared", "shared@1", "shared@2"} <= shared_keys
    if name == "rnn_states":
        assert {"lstm:output", "lstm:state_h", "lstm:state_c", "gru:state"} <= shared_keys


def test_manifest_contents(factories, saved, tmp_path):
    import keras

    import kerinspect

    d = dump(saved["multi_io"], tmp_path / "out", samples=10, batch_size=4, seed=2)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m == d.manifest
    assert (m["format"], m["schema_version"]) == ("kerinspect-dump", 1)
    assert m["kerinspect_version"] == kerinspect.__version__ and m["keras_version"] == keras.__version__
    with open(saved["multi_io"], "rb") as f:
        assert m["model"] == {"path": saved["multi_io"], "sha256": hashlib.sha256(f.read()).hexdigest(),
                              "format": "keras", "name": "multi_io", "class_name": "Functional"}
    assert (m["samples"], m["batch_size"]) == (10, 4)
    assert m["run"]["seed"] == 2 and m["run"]["input"] is None
    assert [(i["name"], i["shape"], i["dtype"], i["source"], i["seed"]) for i in m["inputs"]] == [
        ("numbers", [10, 4], "float32", "synthetic", 2), ("ids", [10, 3], "int32", "synthetic", 2)]
    report = kerinspect.inspect_model(saved["multi_io"], samples=10, batch_size=4, seed=2)
    want = {(r.path, k): o for r in report.layers for k, o in enumerate(r.outputs)}
    assert {(t["path"], t["output"]) for t in m["tensors"]} == set(want)
    total = 0
    for t in m["tensors"] + m["inputs"]:
        p = tmp_path / "out" / t["file"]
        assert FILE_NAME.match(p.name) and p.stat().st_size == t["bytes"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == t["sha256"]
        arr = np.load(p, allow_pickle=False)
        assert list(arr.shape) == t["shape"] and arr.dtype == np.dtype(t["dtype"])
        total += t["bytes"]
    assert m["total_bytes"] == total
    for t in m["tensors"]:  # the same streaming statistics as summary
        assert set(t) >= {"file", "layer", "path", "call", "output", "shape", "dtype", "stats", "source_dtype"}
        o = want[(t["path"], t["output"])]
        assert t["shape"] == list(o.shape) and t["source_dtype"] == o.dtype
        for key, value in o.stats.to_dict().items():
            if value is None:
                assert t["stats"][key] is None, (t["path"], key)
            else:
                assert t["stats"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (t["path"], key)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [t["file"] for t in m["tensors"]] + ["inputs", "manifest.json"])


def test_load_dump_round_trip_reproduces_the_dump(factories, tmp_path):
    import kerinspect

    model = factories.rnn_states()
    d = dump(model, tmp_path / "a", samples=9, batch_size=4, seed=5)
    again = kerinspect.load_dump(tmp_path / "a", verify=True)
    assert again.manifest == d.manifest and list(again) == list(d) and len(again) == len(d.tensors)
    arr = again["lstm:state_h"]
    assert isinstance(arr, np.memmap) and not arr.flags.writeable and arr.shape == (9, 4)
    assert again.entry("lstm:state_h")["file"] == again.entry(again.entry("lstm:state_h")["file"])["file"]
    # feeding the saved inputs back reproduces every tensor (exactly with the same batching)
    b = dump(model, tmp_path / "b", inputs=[again.inputs["seq"]], batch_size=4)
    c = dump(model, tmp_path / "c", inputs={"seq": again.inputs["seq"]}, batch_size=9)
    assert b.manifest["run"]["input"] == "array"
    for key in again:
        np.testing.assert_array_equal(b[key], again[key], err_msg=key)
        np.testing.assert_allclose(c[key], again[key], rtol=1e-5, atol=1e-7, err_msg=key)
    with pytest.raises(KeyError):
        again["no such layer"]


def test_load_dump_refuses_incomplete_tampered_and_hostile_dumps(factories, tmp_path):
    import kerinspect

    dump(factories.mlp(), tmp_path / "out", samples=3)
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    victim = tmp_path / "victim.npy"
    np.save(victim, np.arange(3))

    def expect(rule_text, manifest=None):
        if manifest is not None:
            (out / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(InputFileError) as e:
            kerinspect.load_dump(out, verify=True)
        assert rule_text in e.value.message and e.value.exit_code == ExitCode.NO_INPUT

    first = out / m["tensors"][0]["file"]
    data = first.read_bytes()
    first.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    expect("does not match its SHA-256")
    first.write_bytes(data)
    for bad in ("../victim.npy", "/tmp/x.npy", "inputs/../../victim.npy", "x.npy"):
        expect("is not kerinspect's", {**m, "tensors": [{**m["tensors"][0], "file": bad}]})
    first.unlink()
    os.symlink(victim, first)
    expect("is not a regular file", m)
    (out / "manifest.json").unlink()
    expect("no manifest.json")


def test_layers_globs_select_layer_paths(factories, tmp_path):
    model = factories.nested()
    everything = [t["path"] for t in dump(model, tmp_path / "all", samples=4).tensors]
    assert "block@1/proj" in everything and "seq/bn" in everything
    patterns = ("block*", "seq/bn", "x")
    d = dump(model, tmp_path / "some", samples=4, layers=patterns)
    want = [p for p in everything if any(fnmatch.fnmatchcase(p, pat) for pat in patterns)]
    assert [t["path"] for t in d.tensors] == want and "dense" not in want and "block@1/dense" in want
    assert d.manifest["run"]["layers"] == list(patterns)
    for t in d.tensors:  # the same bytes as in the full dump
        np.testing.assert_array_equal(d[t["key"]], np.load(tmp_path / "all" / t["file"]))


# -- dtypes -----------------------------------------------------------------------


def test_bfloat16_is_stored_as_float32_and_float16_as_is(keras, tmp_path):
    keras.utils.set_random_seed(3)
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(5, dtype="mixed_bfloat16", name="bf16")(x)
    h = keras.layers.Dense(4, dtype="mixed_float16", name="f16")(h)
    model = keras.Model(x, keras.layers.Dense(3, name="f32")(h))
    d = dump(model, tmp_path / "out", samples=7, batch_size=3)
    ref = reference_calls(model, feed_arrays(model, 7))
    entries = {t["path"]: t for t in d.tensors}
    assert (entries["bf16"]["dtype"], entries["bf16"]["source_dtype"]) == ("float32", "bfloat16")
    assert (entries["f16"]["dtype"], entries["f16"]["source_dtype"]) == ("float16", "float16")
    assert (entries["f32"]["dtype"], entries["f32"]["source_dtype"]) == ("float32", "float32")
    for path, t in entries.items():
        if path == "x":
            continue
        arr = np.load(tmp_path / "out" / t["file"], allow_pickle=False)
        assert arr.dtype == np.dtype(t["dtype"]) and arr.dtype.kind == "f"
        want = ref[path][0].astype(np.float32)
        assert str(ref[path][0].dtype) == t["source_dtype"]
        np.testing.assert_allclose(arr.astype(np.float32), want, rtol=1e-2, atol=1e-2)
        if path == "bf16":  # exact: bfloat16 -> float32 is lossless
            np.testing.assert_array_equal(arr, want)


def test_string_inputs_are_saved_and_string_tensors_skipped(keras, tmp_path):
    t = keras.Input((3,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["alpha", "beta", "gamma"], name="lookup")(t)
    model = keras.Model(t, keras.layers.Embedding(5, 2, name="emb")(ids))
    d = dump(model, tmp_path / "out", samples=5, batch_size=2)
    saved = d.inputs["words"]
    assert saved.dtype.kind == "U" and saved.shape == (5, 3)
    assert set(saved.reshape(-1)) <= {"alpha", "beta", "gamma"}
    [skipped] = d.manifest["skipped"]
    assert skipped["path"] == "words" and "string" in skipped["reason"]
    assert [t["path"] for t in d.tensors] == ["lookup", "emb"]
    index = {"alpha": 1, "beta": 2, "gamma": 3}  # 0 is the OOV index
    np.testing.assert_array_equal(d["lookup"], np.vectorize(index.get)(saved))


def test_a_tensor_without_a_batch_axis_is_skipped_with_a_reason(keras, tmp_path):
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.ops.mean(keras.layers.Dense(3, name="d")(x), axis=0))
    d = dump(model, tmp_path / "out", samples=6, batch_size=6)
    assert [(s["class_name"], s["reason"]) for s in d.manifest["skipped"]] == [
        ("Mean", "axis 0 is not the batch axis")]
    assert [t["path"] for t in d.tensors] == ["x", "d"]


# -- names --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hostile_model(keras, tmp_path_factory):
    """A saved chain of Dense layers renamed (in config.json only) to hostile names."""
    d = tmp_path_factory.mktemp("hostile")
    keras.utils.set_random_seed(1)
    x = keras.Input((4,), name="x")
    h = x
    for i in range(len(HOSTILE)):
        h = keras.layers.Dense(3, name=f"hostile_{i}")(h)
    keras.Model(x, h).save(d / "plain.keras")
    with zipfile.ZipFile(d / "plain.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    cfg = members["config.json"].decode()
    for i, name in enumerate(HOSTILE):
        cfg = cfg.replace(json.dumps(f"hostile_{i}"), json.dumps(name))
    members["config.json"] = cfg.encode()
    with zipfile.ZipFile(d / "hostile.keras", "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return d / "hostile.keras"


def test_hostile_layer_names_stay_inside_dir(hostile_model, tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    out = case / "out"
    r = run("dump", hostile_model, "--out", out, "--samples", "5", "--batch-size", "2")
    assert r.exit_code == 0, r.stderr
    assert os.listdir(case) == ["out"]  # nothing beside DIR (no "evil", no "..")
    m = json.loads((out / "manifest.json").read_text())
    assert [t["layer"] for t in m["tensors"]] == ["x"] + HOSTILE  # exact names, in JSON only
    files = []
    for dirpath, _dirs, filenames in os.walk(out):
        for name in filenames:
            p = os.path.join(dirpath, name)
            assert os.path.commonpath([os.path.realpath(p), str(out)]) == str(out)
            assert not os.path.islink(p)
            files.append(name)
    npy = [f for f in files if f.endswith(".npy")]
    assert len(npy) == len(m["tensors"]) + len(m["inputs"]) == len(set(f.casefold() for f in npy))
    assert all(FILE_NAME.match(f) and len(f.encode()) <= 100 for f in npy)
    assert "0002_layer_" in " ".join(npy)  # ".." and "" slug to "layer"
    for t in m["tensors"]:
        assert np.load(out / t["file"], allow_pickle=False).shape == (5, *t["shape"][1:])
    # printed names are escaped: no control characters, no workflow command at a line start
    assert "\x1b" not in r.stdout and "\x00" not in r.stdout
    assert not any(line.startswith("::") for line in r.stdout.splitlines())
    assert "ok\\n:\\x3aerror title=pwned:\\x3ax\\x1b[2J" in r.stdout


def test_file_names_are_unique_and_safe():
    from kerinspect.dump import input_file_name, tensor_file_name

    names = [tensor_file_name(i, 0, 1, n, "output") for i, n in enumerate(HOSTILE)]
    names += [tensor_file_name(20, k, 2, "lstm", n) for k, n in enumerate(("output", "state_h"))]
    names += [input_file_name(i, n) for i, n in enumerate(HOSTILE)]
    assert len({n.casefold() for n in names}) == len(names)
    for n in names:
        assert FILE_NAME.match(n) and len(n.encode()) <= 100 and "/" not in n and "\\" not in n
    # names equal up to case, or equal after sanitising, still differ in their hash
    a, b = tensor_file_name(1, 0, 1, "dense_1", "o"), tensor_file_name(1, 0, 1, "DENSE_1", "o")
    assert a[-12:-4] != b[-12:-4]


# -- the output directory -----------------------------------------------------------


def test_non_empty_dir_is_refused_untouched(saved, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "0001_dense_1_0123abcd.npy").write_bytes(b"mine")
    (out / "notes.txt").write_text("keep me")
    before = tree_hash(tmp_path)
    line = one_line_error(run("dump", saved["mlp"], "--out", out), 7, "out-not-empty")
    assert "--overwrite" in line
    assert tree_hash(tmp_path) == before
    # --overwrite replaces only a previous kerinspect dump: these files are not one
    one_line_error(run("dump", saved["mlp"], "--out", out, "--overwrite"), 7, "out-not-empty")
    assert tree_hash(tmp_path) == before


def test_symlinked_dir_is_refused(saved, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim.txt").write_text("precious")
    os.symlink(elsewhere, tmp_path / "out")
    before = tree_hash(tmp_path)
    for extra in ((), ("--overwrite",)):
        one_line_error(run("dump", saved["mlp"], "--out", tmp_path / "out", *extra), 7, "out-symlink")
        one_line_error(run("dump", saved["mlp"], "--out", f"{tmp_path / 'out'}/", *extra), 7, "out-symlink")
    assert tree_hash(tmp_path) == before and os.listdir(elsewhere) == ["victim.txt"]


def test_symlinked_target_is_refused(saved, tmp_path):
    out = tmp_path / "out"
    assert run("dump", saved["mlp"], "--out", out, "--samples", "4").exit_code == 0
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = out / json.loads((out / "manifest.json").read_text())["tensors"][1]["file"]
    target.unlink()
    os.symlink(victim, target)
    before = tree_hash(tmp_path)
    one_line_error(run("dump", saved["mlp"], "--out", out, "--samples", "4", "--overwrite"), 7, "out-symlink")
    assert tree_hash(tmp_path) == before and victim.read_text() == "precious"
    # a symlink in place of the manifest is refused too
    (out / "manifest.json").rename(tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", out / "manifest.json")
    before = tree_hash(tmp_path)
    one_line_error(run("dump", saved["mlp"], "--out", out, "--overwrite"), 7, "out-not-empty")
    assert tree_hash(tmp_path) == before


def test_files_planted_during_the_run_are_never_followed_or_replaced(factories, tmp_path):
    """Between write and publish, a symlink or a file appears at a final name:
    publish fails closed, writes nothing through it and leaves nothing of its own."""
    from kerinspect import dump as d
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    model = factories.mlp()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for case, plant, rule in (("link", lambda p: os.symlink(victim, p), "out-escape"),
                              ("file", lambda p: p.write_text("theirs"), "publish-failed")):
        out = tmp_path / case
        plan = d.prepare_dump(out)
        draft = d.write_dump(model, build_feed(model, None, RunSpec(samples=4)), plan["write"], RunSpec(engine="eager"))
        planted = out / draft["tensors"][1]["file"]
        plant(planted)
        with pytest.raises(OutputError) as e:
            d.publish_dump(plan, draft)
        assert e.value.exit_code == ExitCode.OUTPUT and e.value.rule == rule, e.value.message
        assert victim.read_text() == "precious"
        assert os.listdir(out) == [planted.name]  # only what was planted
        assert case == "link" or planted.read_text() == "theirs"


def test_overwrite_replaces_only_the_previous_dump(saved, tmp_path):
    out = tmp_path / "out"
    first = dump(saved["nested"], out, samples=4)
    before = tree_hash(out)
    with pytest.raises(OutputError) as e:  # a previous dump is still not replaced without overwrite
        dump(saved["nested"], out, samples=3)
    assert e.value.rule == "out-not-empty" and tree_hash(out) == before
    second = dump(saved["nested"], out, samples=3, layers=["seq*"], overwrite=True)
    assert {t["path"] for t in second.tensors} == {"seq", "seq/dense", "seq/bn"}
    assert sorted(os.listdir(out)) == sorted([t["file"] for t in second.tensors] + ["inputs", "manifest.json"])
    assert len(os.listdir(out / "inputs")) == 1 and len(first.tensors) > len(second.tensors)
    assert second["seq/bn"].shape[0] == 3
    (out / "extra.txt").write_text("not kerinspect's")
    before = tree_hash(out)
    with pytest.raises(OutputError) as e:
        dump(saved["nested"], out, samples=3, overwrite=True)
    assert e.value.rule == "out-not-empty" and "extra.txt" in e.value.message
    assert tree_hash(out) == before


def test_replace_failure_publishes_nothing(saved, tmp_path, monkeypatch):
    """The worker writes, the parent's publish fails: nothing published, nothing left."""
    model = saved["mlp"]

    def broken_replace(*args, **kwargs):
        raise OSError(5, "Input/output error")

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(os, "replace", broken_replace)
    for out in (tmp_path / "new", empty):
        with pytest.raises(OutputError) as e:
            dump(model, out, samples=4)
        assert e.value.exit_code == ExitCode.OUTPUT and "Input/output error" in e.value.message
    assert not (tmp_path / "new").exists()  # created by the run, removed with it
    assert os.listdir(empty) == [] and leftovers(tmp_path) == []


def test_failed_overwrite_restores_the_previous_dump(saved, tmp_path, monkeypatch):
    import kerinspect

    model = saved["nested"]
    out = tmp_path / "out"
    dump(model, out, samples=4)
    before = tree_hash(out)
    real_link = os.link
    calls = []

    def link_then_fail(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_link(*args, **kwargs)

    monkeypatch.setattr(os, "link", link_then_fail)
    with pytest.raises(OutputError) as e:
        dump(model, out, samples=5, overwrite=True)
    assert "No space left" in e.value.message and len(calls) > 3  # the rollback links too
    assert tree_hash(out) == before  # the previous dump is back, byte for byte
    assert kerinspect.load_dump(out, verify=True).manifest["samples"] == 4


def test_interrupted_run_leaves_nothing(factories, tmp_path, monkeypatch):
    from kerinspect.engine import dump_writer as w

    real = w._DumpWriter.end_batch
    seen = []

    def interrupt_on_second_batch(self):
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(w._DumpWriter, "end_batch", interrupt_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        dump(factories.mlp(), tmp_path / "out", samples=8, batch_size=2)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_max_bytes_refusal_names_the_needed_size(saved, tmp_path):
    need = dump(saved["mlp"], tmp_path / "probe", samples=6).manifest["total_bytes"]
    out = tmp_path / "out"
    line = one_line_error(run("dump", saved["mlp"], "-o", out, "-n", "6", "--max-bytes", need - 1), 7, "max-bytes")
    assert f"({need:,} bytes)" in line and f"({need - 1:,} bytes)" in line
    assert not out.exists()
    assert run("dump", saved["mlp"], "-o", out, "-n", "6", "--max-bytes", need).exit_code == 0
    one_line_error(run("dump", saved["mlp"], "-o", tmp_path / "x", "--max-bytes", "lots"), 2, "usage")


def test_parse_size():
    from kerinspect.dump import format_bytes, parse_size

    assert parse_size("2GiB") == parse_size("2G") == parse_size("2g") == 2 << 30
    assert parse_size("2GB") == 2_000_000_000 and parse_size("500M") == 500 << 20
    assert parse_size("1.5KiB") == 1536 and parse_size("1000") == parse_size(1000) == 1000
    for bad in ("", "0", "-1", "2 GiBs", "lots", "1iB"):
        with pytest.raises(UsageError):
            parse_size(bad)
    assert format_bytes(512) == "512 bytes" and format_bytes(3 << 30) == "3.0 GiB (3,221,225,472 bytes)"


# -- disk full ----------------------------------------------------------------------


def _limited_fsize(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow
@pytest.mark.parametrize("preallocate", ["fallocate", "sparse"])
def test_disk_full_exit_7_and_no_partial_file(saved, tmp_path, preallocate):
    """A real EFBIG from RLIMIT_FSIZE: from posix_fallocate, or (sparse files, as
    on filesystems without fallocate) from a short pwrite in the middle of the run."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if preallocate == "sparse":  # the worker writes sparse files (its fault hook)
        env["KERINSPECT_TEST_FAULT"] = "no-fallocate"
    r = subprocess.run(
        [sys.executable, "-m", "kerinspect", "dump", saved["mlp"], "--out", str(out),
         "--samples", "4096", "--batch-size", "256"],
        capture_output=True, text=True, cwd=ROOT, preexec_fn=_limited_fsize(64 << 10), env=env,
    )
    assert r.returncode == ExitCode.OUTPUT, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]) and "error[write-failed]" in lines[0], r.stderr
    assert "File too large" in lines[0] and "needs" in lines[0]
    assert not out.exists() and leftovers(tmp_path) == []


def test_write_all_raises_on_a_full_device():
    from kerinspect.safefs import write_all

    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            write_all(fd, np.zeros(1000, np.uint8), 0)
        assert e.value.errno == 28  # ENOSPC, never swallowed
    finally:
        os.close(fd)


# -- publish treats the staged files as untrusted -------------------------------------


def _staged(factories, tmp_path):
    from kerinspect import dump as d
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    model = factories.mlp()
    plan = d.prepare_dump(tmp_path / "out")
    return d, plan, d.write_dump(model, build_feed(model, None, RunSpec(samples=3)), plan["write"], RunSpec(engine="eager"))


def _tamper_name(draft, staging):
    draft["tensors"][0]["file"] = "../evil.npy"


def _tamper_symlink(draft, staging):
    f = os.path.join(staging, draft["tensors"][0]["file"])
    os.unlink(f)
    os.symlink(os.path.join(os.path.dirname(staging), "..", "victim"), f)


def _tamper_hardlink(draft, staging):
    f = os.path.join(staging, draft["tensors"][0]["file"])
    os.link(f, os.path.join(os.path.dirname(staging), "..", "extra-link"))


def _tamper_pickle(draft, staging):
    f = os.path.join(staging, draft["tensors"][0]["file"])
    np.save(f, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    draft["tensors"][0]["dtype"], draft["tensors"][0]["shape"] = "object", [3]


def _tamper_truncate(draft, staging):
    f = os.path.join(staging, draft["tensors"][0]["file"])
    os.truncate(f, os.path.getsize(f) - 4)


def _tamper_shape(draft, staging):
    draft["tensors"][0]["shape"][0] += 1


@pytest.mark.parametrize("tamper", [_tamper_name, _tamper_symlink, _tamper_hardlink, _tamper_pickle,
                                    _tamper_truncate, _tamper_shape])
def test_publish_rejects_tampered_staging(factories, tmp_path, tamper):
    (tmp_path / "victim").write_text("precious")
    d, plan, draft = _staged(factories, tmp_path)
    tamper(draft, plan["write"]["staging"])
    with pytest.raises(OutputError) as e:
        d.publish_dump(plan, draft)
    assert e.value.rule == "staging-invalid"
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.npy").exists()
    assert (tmp_path / "victim").read_text() == "precious"


def test_prepare_and_publish_never_import_tensorflow(tmp_path):
    code = (
        "import sys, kerinspect\nfrom kerinspect import dump as d\n"
        f"plan = d.prepare_dump({str(tmp_path / 'out')!r})\n"
        "d.publish_dump(plan, {'samples': 0, 'batch_size': 1, 'inputs': [], 'tensors': []})\n"
        f"kerinspect.load_dump({str(tmp_path / 'out')!r})\n"
        "print([m for m in ('tensorflow', 'keras') if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert os.listdir(tmp_path / "out") == ["manifest.json"]


# -- the command line -----------------------------------------------------------------


def test_cli_dump(saved, tmp_path):
    out = tmp_path / "out"
    r = run("dump", saved["rnn_states"], "--out", out, "-n", "5", "-b", "2", "--layers", "lstm", "-l", "gru")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    lines = r.stdout.splitlines()
    assert lines[0] == (f"Dumped 5 tensors of 2 layer calls and 1 input, 5 samples, "
                        f"{lines[0].split(', ')[2]}, to {out}")
    assert re.match(r"  0001-2_lstm_state_c_[0-9a-f]{8}\.npy +lstm:state_c +\(5, 4\) float32$", lines[3])
    assert lines[-1] == f"manifest: {out / 'manifest.json'}"
    line = one_line_error(run("dump", saved["rnn_states"], "--out", tmp_path / "o2", "--layers", "nope*"),
                          2, "layers-no-match")
    assert "'nope*'" in line and "lstm" in line and not (tmp_path / "o2").exists()
    one_line_error(run("dump", saved["rnn_states"]), 2, "usage")  # --out is required
    one_line_error(run("dump", tmp_path / "missing.keras", "--out", tmp_path / "o3"), 3, "model-not-found")
    assert not (tmp_path / "o3").exists()


def test_cli_interrupt_cleans_up(saved, tmp_path, monkeypatch):
    from kerinspect.engine import dump_writer as w

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(w._DumpWriter, "end_batch", interrupt)
    monkeypatch.setenv("KERINSPECT_ISOLATION", "off")  # the patched writer lives in this process
    r = run("dump", saved["mlp"], "--out", tmp_path / "out")
    assert r.exit_code == 130 and "interrupted" in r.stderr
    assert not (tmp_path / "out").exists()


def test_dump_help_imports_neither_tensorflow_nor_numpy():
    code = (
        "import sys\nfrom kerinspect.cli import main\nsys.argv = ['kerinspect', 'dump', '--help']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('imported:', [m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "--max-bytes SIZE" in r.stdout and r.stdout.strip().endswith("imported: []")


@pytest.mark.slow
def test_sigterm_mid_write_cleans_up(saved, tmp_path):
    """SIGTERM once files are being written: exit 130, nothing left in or beside DIR."""
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerinspect", "dump", saved["mlp"], "--out", str(out),
         "--samples", "2000000", "--batch-size", "8"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob(".kerinspect-staging-*/*.npy")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and stderr.strip() == "kerinspect: interrupted", stderr
    assert not out.exists() and leftovers(tmp_path) == []
