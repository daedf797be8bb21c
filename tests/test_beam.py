"""kerinspect at dataset scale: ``summary --runner`` and ``kerinspect.beam.LayerStatistics``.

The reference is the single-process run of the same shards (``summary --input``) and
numpy's percentiles of plain-Keras activations. Every Beam run goes through the real
CLI (or the public PTransform) and the real isolated workers, with the network off for
everything but loopback (``tests/netblock/sitecustomize.py``, inherited by the Beam
worker processes): a local run downloads nothing. Each run's JSON is read by several
tests (one run per configuration, module-scoped)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil

import numpy as np
import pytest

from tests.conftest import SAMPLES, kerinspect_cli

beam = pytest.importorskip("apache_beam")

pytestmark = pytest.mark.slow
DIGITS = SAMPLES / "digits.keras"
NETBLOCK = pathlib.Path(__file__).resolve().parent / "netblock"
SHARDS, PER_SHARD = 3, 32  # whole batches of 32: the same batches in every split


def _held_out() -> np.ndarray:
    """The first 96 digits of scikit-learn's bundled set: digits.keras trained on the rest."""
    from sklearn.datasets import load_digits

    images = np.minimum(load_digits().images * 16, 255).astype("float32")
    return images[: SHARDS * PER_SHARD, ..., None]


def _write_shards(folder: pathlib.Path, images: np.ndarray, names) -> None:
    """The images as TFRecord shards of ``tf.train.Example`` (feature ``image``: 64 floats)."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    for s, name in enumerate(names):
        with tf.io.TFRecordWriter(str(folder / name)) as w:
            for img in images[s * PER_SHARD : (s + 1) * PER_SHARD]:
                feature = tf.train.Feature(float_list=tf.train.FloatList(value=img.reshape(-1)))
                w.write(tf.train.Example(features=tf.train.Features(feature={"image": feature})).SerializeToString())


@pytest.fixture(scope="module")
def data(tmp_path_factory, keras):
    root = tmp_path_factory.mktemp("beam")
    images = _held_out()
    _write_shards(root / "shards", images, [f"part-{s}.tfrecord" for s in range(SHARDS)])
    # the same records, the shards in the opposite order of their names
    _write_shards(root / "shuffled", images, [f"z-{SHARDS - 1 - s}.tfrecord" for s in range(SHARDS)])
    return root, images


def _offline_env(root: pathlib.Path) -> dict[str, str]:
    log = root / f"network-{len(list(root.glob('network-*')))}.log"
    return {
        "PYTHONPATH": os.pathsep.join([str(NETBLOCK), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "KERINSPECT_TEST_NETLOG": str(log),
    }


def _run(root, *args):
    env = _offline_env(root)
    r = kerinspect_cli("summary", DIGITS, *args, "--engine", "eager", "--percentiles", "--format", "json",
                       env=env, timeout=600)
    log = pathlib.Path(env["KERINSPECT_TEST_NETLOG"])
    lines = log.read_text().splitlines() if log.exists() else []
    return r, lines


@pytest.fixture(scope="module")
def runs(data):
    root, _ = data
    single, _ = _run(root, "--input", root / "shards" / "*.tfrecord")
    one, net_one = _run(root, "--input", root / "shards" / "*.tfrecord", "--runner", "DirectRunner")
    two, net_two = _run(
        root, "--input", root / "shuffled" / "*.tfrecord", "--runner", "DirectRunner",
        "--pipeline-option", "direct_num_workers=2", "--pipeline-option", "direct_running_mode=multi_processing",
    )
    return {"single": single, "one": one, "two": two, "net": {"one": net_one, "two": net_two}}


def _report(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _same_statistics(a, b, least=50):
    """Counts, min and max exact; every other figure within relative 1e-9 (of itself, or
    of the tensor's scale where it is near 0: a mean of ~1e-10 in a tensor of std 1)."""
    assert [la["path"] for la in a["layers"]] == [lb["path"] for lb in b["layers"]]
    compared = 0
    for la, lb in zip(a["layers"], b["layers"]):
        for ta, tb in zip(la["outputs"], lb["outputs"], strict=True):
            assert ta["shape"] == tb["shape"], la["path"]
            assert ta.get("flags") == tb.get("flags"), la["path"]
            sa, sb = ta.get("stats") or {}, tb.get("stats") or {}
            assert sa.keys() == sb.keys(), la["path"]
            scale = max(abs(sa.get(k) or 0.0) for k in ("std", "min", "max")) if sa else 0.0
            for k, va in sa.items():
                vb = sb[k]
                if k in ("count", "min", "max", "nan", "inf", "zeros", "dead_units") or not isinstance(va, float):
                    assert va == vb, (la["path"], k, va, vb)
                else:
                    assert abs(va - vb) <= 1e-9 * max(abs(va), abs(vb), scale), (la["path"], k, va, vb)
                compared += 1
    assert compared > least


def test_one_beam_worker_gives_the_single_process_report(runs):
    single, one = _report(runs["single"]), _report(runs["one"])
    _same_statistics(single, one)
    assert one["samples"] == single["samples"] == SHARDS * PER_SHARD
    assert one["inputs"][0]["shape"] == single["inputs"][0]["shape"] == [SHARDS * PER_SHARD, 8, 8, 1]
    assert one["inputs"][0]["sha256"] == single["inputs"][0]["sha256"]
    assert "read on Beam (DirectRunner)" in one["inputs"][0]["note"]
    assert one["isolation"]["worker"] is True and one["isolation"]["socket_guard"] is True


def test_two_workers_and_shuffled_shards_give_the_same_report(runs):
    _same_statistics(_report(runs["single"]), _report(runs["two"]))


def test_stderr_holds_nothing_of_beam(runs):
    """Beam's own logs (its workers' included) are not the user's: stderr stays empty."""
    for name in ("one", "two"):
        assert runs[name].stderr.strip() == "", runs[name].stderr


def test_nothing_is_downloaded(runs):
    """The blocker was loaded in the parent and every Beam worker process, and refused
    nothing: no connection left loopback (a Prism runner would fetch its binary)."""
    for lines in runs["net"].values():
        assert any(ln.startswith("loaded") for ln in lines), lines
        assert not [ln for ln in lines if ln.startswith("refused")], lines
    assert sum(ln.startswith("loaded") for ln in runs["net"]["two"]) >= 2  # the parent and its workers


def test_percentiles_match_numpy_on_plain_keras_activations(runs, data, keras):
    """p01, p50 and p99 of every float output, merged across Beam workers, within 1% of
    numpy's percentiles of the same layer's plain-Keras activations."""
    _, images = data
    model = keras.saving.load_model(DIGITS)
    report = _report(runs["two"])
    checked = 0
    for layer in model.layers[1:]:
        probe = keras.Model(model.inputs, layer.output)
        values = np.asarray(probe.predict(images, verbose=0), dtype=np.float64).reshape(-1)
        record = next(r for r in report["layers"] if r["path"] == layer.name)
        stats = record["outputs"][0]["stats"]
        scale = np.abs(values).max()
        for key, q in (("p01", 1), ("p50", 50), ("p99", 99)):
            expected = float(np.percentile(values, q))
            assert abs(stats[key] - expected) <= 0.01 * abs(expected) + 1e-6 * scale, (layer.name, key)
            checked += 1
    assert checked >= 15


def _write_json(report, path):
    with open(path, "w") as f:
        json.dump(report, f)


def test_the_ptransform_on_dicts_of_arrays(runs, data, tmp_path):
    """``LayerStatistics`` in a user's own pipeline, examples as dicts of arrays: the
    same figures as the single-process run of the same samples."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from kerinspect.beam import LayerStatistics
    from kerinspect.spec import RunSpec

    _, images = data
    out = tmp_path / "report.json"
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | beam.Create([{"image": img} for img in images], reshuffle=False)
            | LayerStatistics(str(DIGITS), RunSpec(engine="eager", percentiles=True))
            | beam.Map(_write_json, str(out))
        )
    report = json.loads(out.read_text())
    _same_statistics(_report(runs["single"]), report)
    assert report["samples"] == len(images)


def test_merge_is_exact_and_order_free():
    """States of parts merged in any order and grouping: counts, extremes and sketches
    exact; mean and M2 within float64 rounding; all against numpy on the whole."""
    from kerinspect.accumulators import KIND, VERSION, merge_states, stats_from_state, stats_state
    from kerinspect.stats import summarize

    rng = np.random.default_rng(3)
    whole = np.concatenate([rng.standard_cauchy((40, 6)), rng.normal(5, 2, (30, 6)), np.zeros((10, 6))])
    whole = whole.astype(np.float32)
    cuts = [0, 13, 40, 41, 80]

    def state(part):
        s = summarize(part, spread=True, sketch=True)
        return {"kind": KIND, "version": VERSION, "rows": len(part),
                "sites": [{"path": "d"}], "inputs": {}, "heads": {}, "largest": 0,
                "outputs": [[{"shape": list(part.shape), "dtype": "float32", "stats": stats_state(s)}]]}

    parts = [state(whole[a:b]) for a, b in zip(cuts, cuts[1:])]
    left = merge_states(merge_states(merge_states(parts[0], parts[1]), parts[2]), parts[3])
    right = merge_states(parts[3], merge_states(parts[2], merge_states(parts[1], parts[0])))
    for merged in (left, right):
        assert merged["rows"] == 80
        assert merged["outputs"][0][0]["shape"] == [80, 6]
        s = stats_from_state(merged["outputs"][0][0]["stats"])
        x = whole.astype(np.float64)
        assert s.count == x.size and s.min == x.min() and s.max == x.max()
        assert s.zeros == int((x == 0).sum())
        assert math.isclose(s.mean, x.mean(), rel_tol=1e-12)
        assert math.isclose(math.sqrt(s.m2 / s.finite), x.std(), rel_tol=1e-12)
        for got, q in zip(s.percentiles(), (1, 50, 99)):
            want = np.percentile(x, q)
            assert abs(got - want) <= 0.0078 * abs(want) + 1e-12
    a = stats_from_state(left["outputs"][0][0]["stats"])
    b = stats_from_state(right["outputs"][0][0]["stats"])
    assert np.array_equal(a.sketch.dense(), b.sketch.dense())
    assert np.array_equal(a.unit_mean, b.unit_mean) or np.allclose(a.unit_mean, b.unit_mean, rtol=1e-12)


def test_malformed_states_are_refused():
    from kerinspect.accumulators import array, empty_state, merge_states, unarray

    good = array(np.arange(4.0))
    assert np.array_equal(unarray(good), np.arange(4.0))
    for bad in ({**good, "dtype": "|O"}, {**good, "shape": [5]}, {**good, "shape": [-1]}, {**good, "data": "@@"}):
        with pytest.raises(ValueError):
            unarray(bad)
    with pytest.raises(ValueError):
        merge_states(empty_state(), {"kind": "other"})
    other = {**empty_state(), "rows": 1, "sites": [{"path": "x"}], "outputs": [[None]], "inputs": {}, "heads": {}}
    mine = {**other, "sites": [{"path": "y"}]}
    with pytest.raises(ValueError, match="different models"):
        merge_states(other, mine)


@pytest.mark.parametrize(
    "args, words",
    [
        (("--runner", "DirectRunner"), "give --input"),
        (("--input", "x/*.tfrecord", "--pipeline-option", "a=1"), "needs --runner"),
        (("--input", "{shards}", "--runner", "DirectRunner", "--samples", "5"), "--samples does not apply"),
        (("--input", "{shards}", "--runner", "DirectRunner", "--labels", "l.npy"), "does not take labels"),
        (("--input", "{digits_png}", "--runner", "DirectRunner"), "reads TFRecord shards"),
        (("--input", "nothing/*.tfrecord", "--runner", "DirectRunner"), "No file matches"),
        (("--input", "{shards}", "--runner", "DirectRunner", "--pipeline-option", "=3"), "KEY=VALUE"),
        (("--input", "{shards}", "--runner", "NoSuchRunner"), "Beam has no runner 'NoSuchRunner'"),
    ],
)
def test_refusals_before_any_pipeline(args, words, data):
    root, _ = data
    fill = {"shards": str(root / "shards" / "*.tfrecord"), "digits_png": str(SAMPLES / "data" / "digits" / "*" / "*")}
    r = kerinspect_cli("summary", DIGITS, *(a.format(**fill) for a in args))
    assert r.returncode in (2, 3), r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("workers", [(), ("--pipeline-option", "direct_num_workers=2",
                                         "--pipeline-option", "direct_running_mode=multi_processing")],
                         ids=["in-process", "two-worker-processes"])
def test_a_worker_error_is_the_command_s_own_line(data, tmp_path, workers):
    """Records that do not hold the model's input: the worker's error, exit 9, naming the
    user's shards (not the batch file the Beam worker wrote), whether Beam raised it in
    this process or brought it back as text from its worker processes."""
    import tensorflow as tf

    root, _ = data
    with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as w:
        for _ in range(3):
            f = tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))
            w.write(tf.train.Example(features=tf.train.Features(feature={"other": f})).SerializeToString())
    pattern = str(tmp_path / "*.tfrecord")
    r = kerinspect_cli("summary", DIGITS, "--input", pattern, "--runner", "DirectRunner", *workers,
                       env=_offline_env(root))
    assert r.returncode == 9, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"a batch of {pattern}" in lines[0] and "error[input-data]" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "while running" not in r.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_check_on_beam_gives_check_s_verdict(data):
    """``check --runner``: the same verdict as ``check`` on the same shards (a threshold
    that the digits' pixels exceed: both fail, at the same layers), exit 1 both."""
    root, _ = data
    args = ("check", DIGITS, "-i", root / "shards" / "*.tfrecord", "--max-abs", "100", "--format", "json",
            "--engine", "eager")
    here = kerinspect_cli(*args)
    there = kerinspect_cli(*args, "--runner", "DirectRunner", env=_offline_env(root), timeout=600)
    assert here.returncode == there.returncode == 1, (here.stderr, there.stderr)

    def verdicts(r):
        (model,) = json.loads(r.stdout)["models"]
        return model["status"], model["samples"], [
            (rule["rule"], rule["verdict"], rule["counts"], rule["failures"]) for rule in model["rules"]
        ]

    status, samples, rules = verdicts(here)
    exploding = next(r for r in rules if r[0] == "exploding")
    assert status == "failed" and samples == SHARDS * PER_SHARD
    assert exploding[1] == "failed" and exploding[3][0]["layer"] == "image"  # the pixels, 0-255
    assert verdicts(there) == (status, samples, rules)


def test_a_hostile_model_is_refused_as_without_beam(data, hostile):
    """The model is opened on the Beam worker through the same scan as the CLI's: a
    Lambda model (serialized bytecode) is refused with the same exit code and line,
    naming the user's file (not the Beam worker's private snapshot of it)."""
    root, _ = data
    args = ("summary", hostile["lambda.keras"], "--input", root / "shards" / "*.tfrecord")
    here = kerinspect_cli(*args)
    there = kerinspect_cli(*args, "--runner", "DirectRunner", env=_offline_env(root), timeout=600)
    assert here.returncode == there.returncode == 5, (here.stderr, there.stderr)  # refused by the scan
    assert there.stderr.strip() == here.stderr.strip()
    assert len(there.stderr.strip().splitlines()) == 1


def test_dump_on_beam_writes_statistics_only(runs, data, tmp_path):
    """``dump --runner``: DIR/statistics.json, the chosen layer calls' statistics (the
    single-process run's), no .npy; a second dump into it is refused before any pipeline."""
    root, _ = data
    out = tmp_path / "stats"
    args = ("dump", DIGITS, "-o", out, "--input", root / "shards" / "*.tfrecord", "--runner", "DirectRunner")
    r = kerinspect_cli(*args, "--layers", "conv*", "--engine", "eager", "--percentiles",
                       env=_offline_env(root), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "statistics of 1 tensors of 1 layer calls, 96 samples" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["statistics.json"]
    dumped = json.loads((out / "statistics.json").read_text())
    single = _report(runs["single"])
    assert [r["path"] for r in dumped["layers"]] == ["conv"]
    _same_statistics({"layers": [r for r in single["layers"] if r["path"] == "conv"]}, dumped, least=5)
    again = kerinspect_cli(*args)
    assert again.returncode == 7 and "--overwrite replaces it" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
