"""`kerinspect weights`: static weight health read with h5py only.

The first half needs no TensorFlow: files are written with h5py and zipfile (both
layouts, odd dtypes, hostile links and datasets), and hand-built reports are
rendered against golden text. The second half saves real Keras models and compares
every reported weight with numpy on Keras's own variables; one subprocess proves
that neither TensorFlow nor Keras is imported, also for a model whose custom layer
class does not exist there.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import zipfile

import h5py
import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from kerinspect.cli import cli
from kerinspect.errors import ModelLoadError, PolicyError
from kerinspect.render import render_json
from kerinspect.render_weights import render_weights_markdown, render_weights_table, weight_rows
from kerinspect.report import StateVariable, TensorStats, Thresholds, WeightRecord, WeightsReport
from kerinspect.scan import weight_names
from kerinspect.scan import weights as kw
from kerinspect.scan.weights import block_slices, dataset_stats, inspect_weights, var_names
from kerinspect.stats import summarize
from tests.conftest import REALWORLD, ROOT, SAMPLES, cli_table
from tests.test_cli import ERROR_LINE, assert_one_line_error
from tests.test_render import HOSTILE, check_golden

ALIBI = REALWORLD / "alibi-testing"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- files written by hand (no TensorFlow) -------------------------------------------


def write_legacy(path, layers, *, config=None, at_root=False, extra=None):
    """A legacy HDF5 file: ``model_weights/<layer>/<layer>/<var>:0`` (or at the root)."""
    with h5py.File(path, "w") as f:
        root = f if at_root else f.create_group("model_weights")
        root.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for lname, variables in layers.items():
            g = root.create_group(lname)
            g.attrs["weight_names"] = np.array([f"{lname}/{v}:0".encode() for v in variables])
            for v, arr in variables.items():
                g[f"{lname}/{v}:0"] = arr
        if config is not None:
            f.attrs["model_config"] = json.dumps(config)
        if extra is not None:
            extra(f, root)
    return path


def toy_config(layers):
    return {
        "class_name": "Functional",
        "config": {
            "name": "toy",
            "layers": [{"class_name": cls, "config": {"name": name}} for name, (cls, _) in layers.items()],
        },
    }


def write_keras3(path, layers, *, compression=zipfile.ZIP_STORED, extra=None, config=True, members=()):
    """A ``.keras`` zip whose ``model.weights.h5`` uses the Keras 3 layout.

    ``layers`` maps a layer name to ``(class_name, [arrays])``.
    """
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        used: dict[str, int] = {}
        for name, (cls, arrays) in layers.items():
            key = weight_names.snake(cls)
            used[key] = used.get(key, -1) + 1
            key = key if used[key] == 0 else f"{key}_{used[key]}"
            vg = f.create_group(f"layers/{key}/vars")
            vg.attrs["name"] = name
            for i, a in enumerate(arrays):
                vg.create_dataset(str(i), data=a)
        f.create_group("vars").attrs["name"] = "toy"
        if extra is not None:
            extra(f)
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        if config:
            z.writestr("config.json", json.dumps(toy_config(layers)))
        z.writestr("model.weights.h5", buf.getvalue())
        for name, data in members:
            z.writestr(name, data)
    return path


def by_name(report):
    return {w.name: w for w in report.weights}


def test_block_slices_cover_every_element_once():
    for shape, budget in [((50, 13), 7), ((10, 3), 7), ((4,), 2), ((2, 3, 5), 4), ((3, 2, 9), 5), ((0, 5), 4),
                          ((), 3), ((7, 1), 100)]:
        hits = np.zeros(shape, dtype=int)
        blocks = list(block_slices(shape, budget))
        for index in blocks:
            assert len(index) == len(shape)
            assert hits[index].size <= budget
            hits[index] += 1
        assert (hits == 1).all(), (shape, budget)
        if math.prod(shape) > budget:
            assert len(blocks) > 1


def test_sliced_stats_equal_the_whole_array(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 9)).astype(np.float32) * 3
    a[3, 4], a[17, 0], a[39, 8] = np.nan, np.inf, -np.inf
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.create_dataset("w", data=a, chunks=(7, 3), compression="gzip")
    sizes = []
    real = kw.summarize

    def spy(block):
        sizes.append(block.size)
        return real(block)

    monkeypatch.setattr(kw, "summarize", spy)
    with h5py.File(tmp_path / "w.h5") as f:
        dtype, shape, running = dataset_stats(f["w"], budget=20)
    assert (dtype, shape) == ("float32", (40, 9))
    assert len(sizes) == 20 and max(sizes) <= 20  # two rows at a time, never the whole array
    got, want = running.finalize(), summarize(a).finalize()
    for field in ("count", "mean", "std", "min", "max", "zero_fraction", "nan_count", "inf_count"):
        assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-12), field
    finite = a[np.isfinite(a)].astype(np.float64)
    assert running.l2_norm() == pytest.approx(np.linalg.norm(finite), rel=1e-12)
    assert (got.nan_count, got.inf_count) == (1, 2)


def test_legacy_h5_values_names_and_flags(tmp_path):
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(5, 3)).astype(np.float32)
    bias = np.array([0.5, np.nan, 1.0], np.float32)
    big = np.full((2, 2), 2e4, np.float32)
    layers = {"dense": {"kernel": kernel, "bias": bias}, "huge": {"kernel": big}}
    path = write_legacy(tmp_path / "m.h5", layers)
    report = inspect_weights(path)
    assert (report.format, report.layout) == ("h5", "legacy")
    assert [w.name for w in report.weights] == ["dense/kernel", "dense/bias", "huge/kernel"]
    assert [w.layer for w in report.weights] == ["dense", "dense", "huge"]
    w = by_name(report)
    assert w["dense/kernel"].stats.mean == pytest.approx(kernel.astype(np.float64).mean(), rel=1e-12)
    assert w["dense/kernel"].norm == pytest.approx(np.linalg.norm(kernel.astype(np.float64)), rel=1e-12)
    assert w["dense/bias"].flags == ("nan",) and w["dense/bias"].stats.nan_count == 1
    assert w["dense/bias"].norm == pytest.approx(math.hypot(0.5, 1.0))
    assert w["huge/kernel"].flags == ("exploding",)
    assert inspect_weights(path, Thresholds(max_abs=1e5)).weights[2].flags == ()
    assert report.totals.params == 15 + 3 + 4 and report.totals.flagged == 2
    # the same weights without the model_weights group (save_weights in Keras 2)
    only = inspect_weights(write_legacy(tmp_path / "w.h5", layers, at_root=True))
    assert [(x.name, x.stats) for x in only.weights] == [(x.name, x.stats) for x in report.weights]


def test_keras3_layout_names_from_class_and_config(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {
        "proj": ("Dense", [rng.normal(size=(4, 3)), np.zeros(3)]),
        "norm": ("BatchNormalization", [np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)]),
        "mystery": ("MyCustomLayer", [np.arange(6.0)]),
    }
    arrays = {k: (c, [np.asarray(a, np.float32) for a in v]) for k, (c, v) in arrays.items()}
    report = inspect_weights(write_keras3(tmp_path / "m.keras", arrays))
    assert (report.format, report.layout, report.model_name, report.saved_with) == (
        "keras", "keras3", "toy", "3.15.1")
    assert [w.name for w in report.weights] == [
        "proj/kernel", "proj/bias", "norm/gamma", "norm/beta", "norm/moving_mean", "norm/moving_variance",
        "mystery/vars/0",
    ]
    # without config.json the class comes from the group key (snake-cased class name)
    bare = inspect_weights(write_keras3(tmp_path / "bare.keras", arrays, config=False))
    assert [w.name for w in bare.weights] == [  # file order: batch_normalization, dense, my_custom_layer
        "norm/gamma", "norm/beta", "norm/moving_mean", "norm/moving_variance", "proj/kernel", "proj/bias",
        "mystery/vars/0",
    ]


def test_deflated_and_stored_members_agree(tmp_path):
    arrays = {"d": ("Dense", [np.arange(12.0, dtype=np.float32).reshape(3, 4), np.ones(4, np.float32)])}
    stored = write_keras3(tmp_path / "s.keras", arrays)
    deflated = write_keras3(tmp_path / "d.keras", arrays, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(deflated) as z:
        assert z.getinfo("model.weights.h5").compress_type == zipfile.ZIP_DEFLATED
    a, b = inspect_weights(stored), inspect_weights(deflated)
    assert a.weights == b.weights and a.weights[0].stats.max == 11.0


def test_stored_member_is_read_in_place(tmp_path, monkeypatch):
    """Keras stores model.weights.h5 uncompressed: it is read through a window on the
    archive, never copied into memory or to disk."""
    path = write_keras3(tmp_path / "s.keras", {"d": ("Dense", [np.ones((3, 4), np.float32)])})

    real_open = zipfile.ZipFile.open

    def guarded_open(self, name, *args, **kwargs):
        assert getattr(name, "filename", name) != "model.weights.h5", "the stored member was decompressed"
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", guarded_open)
    monkeypatch.setattr(kw.tempfile, "TemporaryFile", lambda *a, **k: pytest.fail("the member was copied"))
    assert inspect_weights(path).weights[0].stats.mean == 1.0


@pytest.mark.parametrize("kind", ["float16", "bfloat16-tagged", "bfloat16-legacy", "int8", "empty", "scalar",
                                  "string"])
def test_dtypes(tmp_path, kind):
    values = {
        "float16": np.array([[1.0, 7000.0], [-2.0, 0.5]], np.float16),
        "bfloat16-tagged": np.array([1.5, -2.0, 3.0], ml_dtypes.bfloat16),
        "bfloat16-legacy": np.array([1.5, -2.0, 3.0], ml_dtypes.bfloat16),
        "int8": np.array([[127, -128], [5, 0]], np.int8),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5, np.float64),
        "string": np.array([b"a", b"bc"]),
    }[kind]

    def extra(f):
        ds = f["layers/custom/vars"].create_dataset("0", data=values)
        if kind == "bfloat16-tagged":
            ds.attrs["dtype"] = "bfloat16"  # what Keras 3 writes

    if kind == "bfloat16-legacy":  # a legacy .h5 has no tag: a 2-byte opaque type is bfloat16
        report = inspect_weights(write_legacy(tmp_path / "m.h5", {"custom": {"w": values}}))
    else:
        report = inspect_weights(write_keras3(tmp_path / "m.keras", {"custom": ("Custom", [])}, extra=extra))
    (w,) = report.weights
    assert w.shape == values.shape
    if kind == "string":
        assert (w.dtype, w.stats, w.flags, w.norm) == ("string", None, (), None)
        return
    assert w.dtype == {"bfloat16-tagged": "bfloat16", "bfloat16-legacy": "bfloat16"}.get(kind, str(values.dtype))
    ref = values.astype(np.float64)
    assert w.stats.count == ref.size
    if ref.size:
        assert (w.stats.mean, w.stats.min, w.stats.max) == pytest.approx((ref.mean(), ref.min(), ref.max()))
        assert w.norm == pytest.approx(np.linalg.norm(ref))
    else:
        assert w.stats.mean is None and w.norm is None
    # float16 explodes above a tenth of its range; integers are never flagged
    assert w.flags == (("exploding",) if kind == "float16" else ())


def test_var_names():
    assert var_names("Dense", {"use_bias": False}, 1) == ["kernel"]
    assert var_names("Dense", None, 2) == ["kernel", "bias"]
    assert var_names("Dense", None, 1) == ["kernel"]
    assert var_names("BatchNormalization", {"scale": False, "center": True}, 3) == [
        "beta", "moving_mean", "moving_variance"]
    assert var_names("BatchNormalization", None, 3) is None  # ambiguous without the config
    assert var_names("LayerNormalization", {"rms_scaling": True}, 1) == ["gamma"]
    assert var_names("EinsumDense", {"bias_axes": "c"}, 2) == ["kernel", "bias"]
    int8 = {"use_bias": True, "dtype": {"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8"}}}
    assert var_names("Dense", int8, 3) == ["kernel", "bias", "kernel_scale"]
    assert var_names("Dense", None, 3) is None
    assert var_names("SomethingCustom", {}, 2) is None


# -- refusals ------------------------------------------------------------------------


def _fifo(tmp_path):
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    return str(fifo)


def _hostile(kind, target):
    """An ``extra`` hook adding one hostile object under a Keras 3 or legacy layer group."""

    def add(group):
        if kind == "external-link":
            group["1"] = h5py.ExternalLink(target, "/x")
        elif kind == "soft-link":
            group["1"] = h5py.SoftLink("/elsewhere")
        elif kind == "external-storage":
            group.create_dataset("1", shape=(4,), dtype="f4", external=[(target, 0, 16)])
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
            layout[:] = h5py.VirtualSource(target, "x", shape=(4,))
            group.create_virtual_dataset("1", layout)
        elif kind == "shape-bomb":  # declares 4 GiB, stores nothing
            group.create_dataset("1", shape=(1 << 16, 1 << 14), dtype="f4", chunks=(64, 64), compression="gzip")

    return add


RULES = {
    "external-link": "hdf5-link",
    "soft-link": "hdf5-link",
    "external-storage": "hdf5-external-storage",
    "virtual": "hdf5-virtual-dataset",
    "shape-bomb": "hdf5-shape-bomb",
}


def _hostile_file(tmp_path, container, kind, target):
    add = _hostile(kind, target)
    if container == "keras":
        return write_keras3(tmp_path / "m.keras", {"d": ("Dense", [np.ones(2, np.float32)])},
                            extra=lambda f: add(f["layers/dense/vars"]))
    return write_legacy(tmp_path / "m.h5", {"d": {"kernel": np.ones(2, np.float32)}},
                        extra=lambda f, root: add(root["d/d"]))


#: also through the CLI and worker: one file per (rule, container). The other .h5 kinds
#: run there in test_link_and_external_targets_are_never_opened.
CLI_RUNS = {("keras", "external-link"), ("keras", "external-storage"), ("keras", "virtual"),
            ("keras", "shape-bomb"), ("h5", "shape-bomb")}


def test_every_hostile_hdf5_rule_runs_through_the_cli_in_each_container():
    by_fifo = {("h5", kind) for kind in FIFO_KINDS}
    assert {(c, RULES[k]) for c, k in CLI_RUNS | by_fifo} == {(c, r) for c in ("keras", "h5") for r in RULES.values()}


@pytest.mark.parametrize("container", ["keras", "h5"])
@pytest.mark.parametrize("kind", sorted(RULES))
def test_hostile_hdf5_is_refused_with_exit_5(tmp_path, container, kind):
    target = str(tmp_path / "target.h5")
    with h5py.File(target, "w") as f:
        f["x"] = np.arange(4, dtype="f4")
    path = _hostile_file(tmp_path, container, kind, target)
    with pytest.raises(PolicyError) as e:
        inspect_weights(path)
    assert e.value.rule == RULES[kind] and e.value.exit_code == 5
    if (container, kind) in CLI_RUNS:
        assert_one_line_error(run("weights", path), 5, RULES[kind])


FIFO_KINDS = ["external-link", "external-storage", "virtual"]


@pytest.mark.parametrize("kind", FIFO_KINDS)
def test_link_and_external_targets_are_never_opened(tmp_path, kind):
    """The targets are FIFOs: opening one would block forever, so a run that ends
    (with the refusal, one line) never touched them."""
    path = _hostile_file(tmp_path, "h5", kind, _fifo(tmp_path))
    out = subprocess.run([sys.executable, "-m", "kerinspect", "weights", str(path)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 5 and f"error[{RULES[kind]}]" in out.stderr, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert ERROR_LINE.match(line) and "Traceback" not in out.stderr and out.stdout == "", out.stderr


def test_hard_link_cycle_is_visited_once(tmp_path):
    def loop(f, root):
        root["d/d"]["again"] = root["d"]  # a group containing its own parent

    report = inspect_weights(write_legacy(tmp_path / "m.h5", {"d": {"kernel": np.ones(2, np.float32)}},
                                          extra=loop))
    assert [w.name for w in report.weights] == ["d/kernel"]
    assert any("already read" in w for w in report.warnings)


def test_zip_problems(tmp_path):
    arrays = {"d": ("Dense", [np.ones(2, np.float32)])}
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = write_keras3(tmp_path / "dup.keras", arrays, members=[("model.weights.h5", b"other")])
    with pytest.raises(PolicyError, match="2 members named 'model.weights.h5'") as e:
        inspect_weights(dup)
    assert e.value.rule == "zip-duplicate"  # the static scan's check, limits and rule id
    with zipfile.ZipFile(tmp_path / "npz.keras", "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.npz", b"")
    with pytest.raises(ModelLoadError, match="model.weights.npz") as e:
        inspect_weights(tmp_path / "npz.keras")
    assert e.value.rule == "no-weights"
    good = write_keras3(tmp_path / "good.keras", arrays).read_bytes()
    (tmp_path / "cut.keras").write_bytes(good[: len(good) // 2])
    assert_one_line_error(run("weights", tmp_path / "cut.keras"), 4, "weights-unreadable")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.ones(3)
    assert_one_line_error(run("weights", tmp_path / "plain.h5"), 4, "no-weights")


def test_bad_config_json_falls_back_to_the_file(tmp_path):
    path = write_keras3(tmp_path / "m.keras", {"d": ("Dense", [np.ones((2, 2), np.float32)])}, config=False,
                        members=[("config.json", b"[" * 100000)])
    report = inspect_weights(path)
    assert [w.name for w in report.weights] == ["d/kernel"]
    assert report.model_name is None and "config.json is not valid JSON" in report.warnings[0]


# -- rendering a hand-built report -----------------------------------------------------


def st(mean, std, lo, hi, nan=0, inf=0, count=16):
    return TensorStats(count, mean, std, lo, hi, None if lo is None else max(abs(lo), abs(hi)), 0.0, nan, inf,
                       None)


def hand_built(layer_a="encoder/dense", layer_b="lstm") -> WeightsReport:
    w = (
        WeightRecord(layer_a, f"{layer_a}/kernel", (4, 8), "float32", st(0.01, 0.3, -0.9, 0.8), (), 2.4),
        WeightRecord(layer_a, f"{layer_a}/bias", (8,), "float32", st(None, None, None, None, nan=8), ("nan",),
                     None),
        WeightRecord(layer_b, f"{layer_b}/lstm_cell/kernel", (8, 16), "float16",
                     st(3.0, 900.0, -7000.0, 6600.0), ("exploding",), 1.2e4),
        WeightRecord(layer_b, f"{layer_b}/lstm_cell/bias", (16,), "float32", st(0.5, 0.5, 0.0, 1.0, inf=1),
                     ("inf",), 2.0),
        WeightRecord("embedding", "embedding/embeddings", (100, 4), "bfloat16", st(0.0, 0.05, -0.1, 0.1), (),
                     1.0),
        WeightRecord("lookup", "lookup/vars/0", (3,), "int64", st(1.0, 0.8, 0.0, 2.0), (), 2.236),
        WeightRecord("", "vars/0", (2,), "string", None, (), None),
    )
    # training state: listed apart, never summarised or flagged (a 1e9 sample count included)
    optimizer = (StateVariable("optimizer/vars/0", (), "int64"), StateVariable(f"optimizer/{layer_a}/m", (4, 8),
                                                                                "float32"))
    metrics = (StateVariable("metrics/mean/vars/0", (), "float32"), StateVariable("metrics/mean/vars/1", (),
                                                                                  "float32"))
    return WeightsReport("models/toy.keras", "keras", "keras3", w, Thresholds(), "toy", "Functional", "3.15.1",
                         kerinspect_version="0.1.0", optimizer=optimizer, metrics=metrics)


def weights_table(report, width=140, fit=True):
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, legacy_windows=False)
    render_weights_table(report, console, fit=fit)
    return buf.getvalue()


def test_weights_table_golden():
    text = weights_table(hand_built())
    check_golden("weights_table_140.txt", text)
    assert "(model)" in text and "lstm_cell/kernel" in text


def test_weights_narrow_table_golden():
    text = weights_table(hand_built(), width=80)
    check_golden("weights_table_80.txt", text)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "hidden to fit 80 columns" in text


def test_weights_markdown_golden():
    check_golden("weights.md", render_weights_markdown(hand_built()))


def test_weights_json_golden_and_round_trip():
    report = hand_built()
    text = render_json(report)
    check_golden("weights.json", text + "\n")
    data = json.loads(text)
    assert WeightsReport.from_dict(data) == report
    assert data["kind"] == "weights" and set(data["model"]) == {
        "path", "format", "layout", "name", "class_name", "saved_with"}
    assert data["totals"] == {"weights": 7, "params": 32 + 8 + 128 + 16 + 400 + 3 + 2, "flagged": 3}
    assert data["optimizer"][1] == {"name": "optimizer/encoder/dense/m", "shape": [4, 8], "dtype": "float32",
                                    "size": 32}
    assert [v["name"] for v in data["metrics"]] == ["metrics/mean/vars/0", "metrics/mean/vars/1"]
    assert not any("flags" in v or "stats" in v for v in data["optimizer"] + data["metrics"])
    old = {k: v for k, v in data.items() if k not in ("optimizer", "metrics")}  # a report from before
    assert WeightsReport.from_dict(old).optimizer == () and WeightsReport.from_dict(old).metrics == ()
    assert data["weights"][1]["norm"] is None and data["weights"][1]["stats"]["mean"] is None


def test_weight_record_json_without_norm_still_loads():
    old = {"layer": "d", "name": "d/kernel", "shape": [2], "dtype": "float32", "stats": None, "flags": []}
    assert WeightRecord.from_dict(old).norm is None


def test_weights_totals_add_up_from_rows():
    report = hand_built()
    rows = list(weight_rows(report))
    assert report.totals.params == sum(int(c[3].replace(",", "")) for _, c in rows)
    assert report.totals.flagged == sum(1 for _, c in rows if c[-1])
    lines = weights_table(report).strip().splitlines()
    assert "7 weights · 589 parameters · 3 flagged (exploding: 1, inf: 1, nan: 1)" in lines
    # the training state comes after, apart: its 4 variables are not in the weights' figures
    state = lines.index(next(line for line in lines if line.startswith("Training state")))
    assert lines.index("7 weights · 589 parameters · 3 flagged (exploding: 1, inf: 1, nan: 1)") < state
    assert lines[state] == ("Training state saved with the model: 2 optimizer variables (33 values) · "
                            "2 metric variables (2 values); not model weights, not checked")
    assert [line.split()[0] for line in lines[state + 3:]] == ["optimizer", "encoder/dense/m",
                                                               "metrics", "mean/vars/1"]


@pytest.mark.parametrize("render", ["table", "markdown"])
def test_weights_hostile_names_are_escaped(render):
    report = hand_built(layer_a=HOSTILE, layer_b="a\x00b\\c")
    text = weights_table(report, width=400) if render == "table" else render_weights_markdown(report)
    assert "\x1b" not in text and "\x00" not in text
    assert not any(line.lstrip("| ").startswith("::") for line in text.splitlines())
    assert "\\n:\\x3aerror" in text and "\\x1b[2J" in text
    assert json.loads(render_json(report))["weights"][0]["layer"] == HOSTILE
    assert json.loads(render_json(report))["optimizer"][1]["name"] == f"optimizer/{HOSTILE}/m"


# -- the CLI on sample models (no TensorFlow) ------------------------------------------


def test_cli_table_on_the_nan_sample():
    r = run("weights", SAMPLES / "nan_model.keras", "--width", "200")
    assert r.exit_code == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0] == "Weights of 'nan_model' (Functional) from " + str(SAMPLES / "nan_model.keras")
    nan_rows = [line for line in lines if line.rstrip().endswith("nan")]
    assert len(nan_rows) == 1 and nan_rows[0].split()[0] == "bias"  # the bias right after dense_nan's kernel
    dense_nan = lines.index(next(line for line in lines if line.startswith("dense_nan ")))
    assert lines[dense_nan + 1] == nan_rows[0]
    assert lines[-1] == "6 weights · 484 parameters · 1 flagged (nan: 1)"


def test_cli_json_and_markdown():
    r = run("weights", SAMPLES / "legacy_mlp.h5", "-f", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["model"] == {"path": str(SAMPLES / "legacy_mlp.h5"), "format": "h5", "layout": "legacy",
                             "name": "legacy_mlp", "class_name": "Sequential", "saved_with": "3.15.1"}
    assert [w["name"] for w in data["weights"]] == ["hidden/kernel", "hidden/bias", "out/kernel", "out/bias"]
    assert data["totals"] == {"weights": 4, "params": 5 * 12 + 12 + 12 * 3 + 3, "flagged": 0}
    assert set(data["weights"][0]) == {"layer", "name", "shape", "dtype", "stats", "flags", "norm", "update_ratio"}
    md = run("weights", SAMPLES / "exploding.keras", "--format", "markdown", "--max-abs", "5")
    assert md.exit_code == 0
    assert "| `dense_0` | `kernel` | (8, 16) | 128 |" in md.stdout and "exploding" in md.stdout


def test_cli_errors():
    assert_one_line_error(run("weights", "nope.keras"), 3, "model-not-found")
    assert_one_line_error(run("weights", SAMPLES / "nan_model.keras", "--max-abs", "0"), 2, "usage")
    assert_one_line_error(run("weights", SAMPLES / "nan_model.keras", "-f", "xml"), 2, "usage")


# -- real Keras models -----------------------------------------------------------------


def keras_reference(keras, model, prefix=""):
    """``{name: array}`` from Keras's own variables, named as the report names them:
    ``<layer path>/<variable path relative to the layer>``, nested models entered."""
    out = {}
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, (keras.Sequential, keras.Model)) and hasattr(layer, "layers") and layer.layers:
            out.update(keras_reference(keras, layer, path + "/"))
            continue
        for w in layer.weights:
            rel = w.path[len(layer.path) + 1 :] if w.path.startswith(layer.path + "/") else w.name
            out.setdefault(f"{path}/{rel}", np.asarray(keras.ops.convert_to_numpy(w.value)))
    return out


def assert_matches_keras(keras, report, model):
    ref = keras_reference(keras, model)
    got = by_name(report)
    assert sorted(got) == sorted(ref)
    for name, arr in ref.items():
        w = got[name]
        assert w.shape == arr.shape, name
        assert w.dtype == keras.backend.standardize_dtype(arr.dtype), name
        x = arr.astype(np.float64).reshape(-1)
        fin = x[np.isfinite(x)]
        assert w.stats.count == x.size
        assert (w.stats.nan_count, w.stats.inf_count) == (int(np.isnan(x).sum()), int(np.isinf(x).sum())), name
        if fin.size:
            want = (fin.mean(), fin.std(), fin.min(), fin.max(), np.linalg.norm(fin))
            have = (w.stats.mean, w.stats.std, w.stats.min, w.stats.max, w.norm)
            assert have == pytest.approx(want, rel=1e-9, abs=1e-12), name
    assert report.totals.params == model.count_params()


MODELS = ["mlp", "shared", "nested", "deep_nested", "rnn_states", "attention", "masked", "inference_mode",
          "multi_io", "sequential_no_input"]


@pytest.mark.parametrize("fmt", [".keras", ".h5"])
@pytest.mark.parametrize("name", MODELS)
def test_values_equal_keras_weights(factories, keras, tmp_path, name, fmt):
    model = factories.ALL[name]()
    rng = np.random.default_rng(3)  # fresh biases and BN statistics are constant: randomise
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    path = tmp_path / f"{name}{fmt}"
    model.save(path)
    report = inspect_weights(path)
    assert report.layout == ("keras3" if fmt == ".keras" else "legacy")
    assert_matches_keras(keras, report, model)
    assert not any("vars/" in w.name for w in report.weights)  # every built-in variable was named


def test_keras_and_h5_of_one_model_agree(factories, keras, tmp_path):
    model = factories.rnn_states()
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    a, b = inspect_weights(tmp_path / "m.keras"), inspect_weights(tmp_path / "m.h5")
    assert [(w.layer, w.name, w.stats) for w in a.weights] == [(w.layer, w.name, w.stats) for w in b.weights]


def test_same_names_and_values_as_summary(saved, keras):
    """`weights` (h5py) and `summary` (Keras's loaded variables) name weights alike and
    agree on their statistics, so their reports can be joined."""
    from kerinspect.api import inspect_model

    for name in ("nested", "attention", "inference_mode", "masked", "rnn_states"):
        summary = inspect_model(saved[name], samples=1).weights
        static = inspect_weights(saved[name]).weights
        assert [(w.layer, w.name) for w in summary] == [(w.layer, w.name) for w in static], name
        for a, b in zip(summary, static):
            assert a.stats == b.stats and a.flags == b.flags, a.name
            assert a.norm == pytest.approx(b.norm, rel=1e-12), a.name


def test_nan_and_inf_flag_the_right_weight(factories, keras, tmp_path):
    model = factories.nested()
    inner = model.get_layer("block").get_layer("proj")
    bn = model.get_layer("seq").get_layer("bn")
    k, b = inner.get_weights()
    k[2, 1] = np.inf
    inner.set_weights([k, b])
    g, beta, mean, var = bn.get_weights()
    var[0] = np.nan
    bn.set_weights([g, beta, mean, var])
    for fmt in (".keras", ".h5"):
        model.save(tmp_path / f"m{fmt}")
        flagged = {w.name: w.flags for w in inspect_weights(tmp_path / f"m{fmt}").weights if w.flags}
        assert flagged == {"block/proj/kernel": ("inf",), "seq/bn/moving_variance": ("nan",)}, fmt


def test_narrow_float_weights(keras, tmp_path):
    layers = keras.layers
    x = keras.Input((4,), name="x")
    h = layers.Dense(3, dtype="float16", name="half")(x)
    h = layers.Dense(3, dtype="bfloat16", name="brain")(h)
    h = layers.Dense(3, dtype="mixed_float16", name="mixed")(h)  # float32 variables, float16 compute
    model = keras.Model(x, h)
    half = model.get_layer("half")
    k, b = half.get_weights()
    k[0, 0] = 7000.0  # above a tenth of float16's range
    half.set_weights([k, b])
    for fmt in (".keras", ".h5"):
        model.save(tmp_path / f"m{fmt}")
        report = inspect_weights(tmp_path / f"m{fmt}")
        assert_matches_keras(keras, report, model)
        dtypes = {w.name: w.dtype for w in report.weights}
        assert dtypes == {"half/kernel": "float16", "half/bias": "float16", "brain/kernel": "bfloat16",
                          "brain/bias": "bfloat16", "mixed/kernel": "float32", "mixed/bias": "float32"}
        assert {w.name for w in report.weights if w.flags} == {"half/kernel"}


@pytest.mark.filterwarnings("ignore:Layer InputLayer does not have a `quantize` method")
def test_int8_quantized_dense(keras, tmp_path):
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Dense(3, name="q")(x))
    model.quantize("int8")
    model.save(tmp_path / "q.keras")
    report = inspect_weights(tmp_path / "q.keras")
    assert [(w.name, w.dtype, w.flags) for w in report.weights] == [
        ("q/kernel", "int8", ()), ("q/bias", "float32", ()), ("q/kernel_scale", "float32", ())]
    assert_matches_keras(keras, report, model)


def custom_layer_model(keras):
    @keras.saving.register_keras_serializable(package="kerinspect_test_only")
    class ScaledBlock(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(3, name="inner")

        def build(self, shape):
            self.inner.build(shape)
            self.scale = self.add_weight(shape=(3,), name="scale", initializer="ones")

        def call(self, x):
            return self.inner(x) * self.scale

    x = keras.Input((4,), name="x")
    model = keras.Model(x, ScaledBlock(name="blk")(x), name="custom")
    blk = model.get_layer("blk")
    blk.scale.assign(np.array([1.0, np.nan, 3.0], np.float32))
    return model


def test_no_tensorflow_and_custom_classes_not_needed(keras, tmp_path):
    """In a fresh process, where ScaledBlock was never defined: the CLI reports every
    weight, and neither TensorFlow nor Keras gets imported."""
    model = custom_layer_model(keras)
    model.save(tmp_path / "custom.keras")
    model.save(tmp_path / "custom.h5")
    expected = keras_reference(keras, model)
    code = (
        "import contextlib, io, json, sys\n"
        "from kerinspect.cli import main\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    buf = io.StringIO()\n"
        "    sys.argv = ['kerinspect', 'weights', p, '--format', 'json']\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n            main()\n        except SystemExit as e:\n            assert e.code in (0, None)\n"
        "    out[p] = json.loads(buf.getvalue())\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(json.dumps({'reports': out, 'heavy': heavy}))\n"
    )
    files = [str(tmp_path / "custom.keras"), str(tmp_path / "custom.h5"), str(SAMPLES / "attention.keras")]
    proc = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["heavy"] == []
    keras_file = WeightsReport.from_dict(result["reports"][files[0]])
    # nothing in the file says what class ScaledBlock or its `inner` attribute is, so
    # their variables keep their indices; the layer paths are still right
    renamed = {"blk/vars/0": "blk/scale", "blk/inner/vars/0": "blk/inner/kernel", "blk/inner/vars/1": "blk/inner/bias"}
    assert [w.name for w in keras_file.weights] == list(renamed)
    assert {w.layer for w in keras_file.weights} == {"blk"}
    assert by_name(keras_file)["blk/vars/0"].flags == ("nan",)
    h5_file = WeightsReport.from_dict(result["reports"][files[1]])
    assert [w.name for w in h5_file.weights] == list(renamed.values())  # a legacy .h5 stores the names
    for report, name_of in ((keras_file, renamed), (h5_file, {v: v for v in renamed.values()})):
        for w in report.weights:
            x = expected[name_of[w.name]].astype(np.float64)
            fin = x[np.isfinite(x)]
            assert (w.stats.mean, w.stats.max, w.norm) == pytest.approx(
                (fin.mean(), fin.max(), np.linalg.norm(fin)), rel=1e-9)
    attention = WeightsReport.from_dict(result["reports"][files[2]])
    assert "self_attention/query/kernel" in by_name(attention)


@pytest.mark.realworld
@pytest.mark.skipif(not ALIBI.is_dir(), reason="real-world models not present")
@pytest.mark.parametrize("path", sorted(ALIBI.glob("*.keras")) if ALIBI.is_dir() else [], ids=lambda p: p.name)
def test_realworld_keras_files_match_keras(keras, path):
    model = keras.saving.load_model(path, compile=False)
    assert_matches_keras(keras, inspect_weights(path), model)


@pytest.mark.realworld
@pytest.mark.slow
@pytest.mark.skipif(not ALIBI.is_dir(), reason="real-world models not present")
def test_realworld_legacy_h5_match_tf_keras(tmp_path):
    """Old tf.keras files (TF 1.15 and 2.18) against the legacy loader, tf_keras, in a
    separate process: same names (nested models as outer/inner) and values."""
    files = sorted(ALIBI.glob("*.h5"))
    code = (
        "import os, sys, numpy as np\n"
        "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
        "import tf_keras\n"
        "def walk(m, prefix, out):\n"
        "    for layer in m.layers:\n"
        "        path = prefix + layer.name\n"
        "        if hasattr(layer, 'layers') and layer.layers:\n"
        "            walk(layer, path + '/', out)\n"
        "            continue\n"
        "        for w in layer.weights:\n"
        "            rel = w.name.rsplit(':', 1)[0]\n"
        "            rel = rel[len(layer.name) + 1:] if rel.startswith(layer.name + '/') else rel\n"
        "            out[path + '/' + rel] = w.numpy()\n"
        "for i, p in enumerate(sys.argv[2:]):\n"
        "    out = {}\n"
        "    walk(tf_keras.models.load_model(p, compile=False), '', out)\n"
        "    np.savez(os.path.join(sys.argv[1], f'{i}.npz'), **out)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), *map(str, files)], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0 and "No module named 'tf_keras'" in proc.stderr:
        pytest.skip("tf_keras is not installed")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for i, path in enumerate(files):
        ref = dict(np.load(tmp_path / f"{i}.npz"))
        report = inspect_weights(path)
        assert [w.name for w in report.weights] == list(ref), path.name
        for w in report.weights:
            x = ref[w.name].astype(np.float64)
            assert w.shape == x.shape
            assert (w.stats.mean, w.stats.std, w.norm) == pytest.approx(
                (x.mean(), x.std(), np.linalg.norm(x)), rel=1e-9), w.name
        if path.name.startswith("iris-ae"):
            assert {w.layer for w in report.weights} == {"model/dense", "model/dense_1", "model_1/dense_2",
                                                         "model_1/dense_3"}



def test_optimizer_and_metric_state_is_not_listed_as_model_weights(keras, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    saved = tmp_path / "trained.keras"
    model.save(saved)
    # a metric's counters, as some Keras 3 saves keep them (metrics/mean/vars/1: 1e9 samples)
    h5_path = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(saved) as zf:
        h5_path.write_bytes(zf.read("model.weights.h5"))
        members = {n: zf.read(n) for n in zf.namelist() if n != "model.weights.h5"}
    with h5py.File(h5_path, "a") as h5:
        assert "optimizer" in h5
        vars_ = h5.create_group("metrics/mean/vars")
        vars_["0"], vars_["1"] = np.float32(3e9), np.float32(1e9)
    path = tmp_path / "with_metrics.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.write(h5_path, "model.weights.h5")
    report = inspect_weights(path)
    assert sorted(w.name for w in report.weights) == sorted(f"d/{v.name}" for v in model.weights)
    assert not any(w.flags for w in report.weights)
    assert [v.name for v in report.metrics] == ["metrics/mean/vars/0", "metrics/mean/vars/1"]
    assert [v.shape for v in report.optimizer] == [tuple(v.shape) for v in model.optimizer.variables]


def _trained_state(keras):
    """A model compiled with Adam and a metric, fitted one step on targets large enough
    that Adam's second moments exceed the ``exploding`` limit (were they weights)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, activation="relu", name="hidden")(x)
    model = keras.Model(x, keras.layers.Dense(1, name="out")(h), name="trained")
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    data = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
    model.fit(data, 1e5 * data.sum(1, keepdims=True), epochs=1, batch_size=64, verbose=0)
    return model


@pytest.mark.parametrize("fmt", [".keras", ".h5"])
def test_optimizer_state_of_a_trained_model_is_listed_apart(keras, tmp_path, fmt):
    model = _trained_state(keras)
    path = tmp_path / f"trained{fmt}"
    model.save(path)
    r = run("weights", path, "--format", "json")  # through the worker, as users run it
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    report = WeightsReport.from_dict(data)
    assert_matches_keras(keras, report, model)  # the model's rows: Keras's model.weights, by numpy
    assert data["totals"] == {"weights": len(model.weights), "params": model.count_params(), "flagged": 0}
    slots = model.optimizer.variables
    big = max(float(np.abs(keras.ops.convert_to_numpy(v.value)).max()) for v in slots)
    assert big > data["thresholds"]["max_abs"]  # a weight this large would be flagged exploding
    names = [f"optimizer/vars/{i}" for i in range(len(slots))] if fmt == ".keras" else [
        f"optimizer_weights/{v.path}" for v in slots]
    assert [v["name"] for v in data["optimizer"]] == names
    assert [(tuple(v["shape"]), v["dtype"]) for v in data["optimizer"]] == [(tuple(v.shape), v.dtype) for v in slots]
    assert data["metrics"] == []  # Keras 3 does not save compiled metrics' state
    assert not any("flags" in v for v in data["optimizer"])
    table = cli_table(render_weights_table, report, width=200)  # `--width 200`, rendered from this report
    assert f"{len(slots)} optimizer variables" in table and "not model weights" in table


def _tf_keras_trained(out):
    """A tf_keras (Keras 2) model compiled with a metric, trained one step and saved in
    both formats; its weights (``weights.npz``) and its optimizer and metric state
    (``state.json``) as tf_keras holds them. In this process, as test_legacy uses tf_keras."""
    k = pytest.importorskip("tf_keras")
    x = k.Input((4,), name="x")
    model = k.Model(x, k.layers.Dense(1, name="out")(k.layers.Dense(3, activation="relu", name="hidden")(x)))
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    data = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
    model.fit(data, 1e3 * data.sum(1, keepdims=True), epochs=1, batch_size=64, verbose=0)
    model.save(os.path.join(out, "k2.keras"))
    model.save(os.path.join(out, "k2.h5"))
    np.savez(os.path.join(out, "weights.npz"), **{w.name.rsplit(":", 1)[0]: w.numpy() for w in model.weights})
    with open(os.path.join(out, "state.json"), "w") as f:
        json.dump({
            "optimizer": [[v.name.rsplit(":", 1)[0], list(v.shape)] for v in model.optimizer.variables()],
            "metrics": [[float(v.numpy()) for v in m.variables] for m in model.metrics],
        }, f)


@pytest.mark.slow
def test_tf_keras_optimizer_and_metric_state_is_listed_apart(keras, tmp_path):
    """tf.keras 2.x keeps the compiled metrics' accumulators in a ``.keras`` file
    (``metrics/mean/vars/1``: the sample count, 64 here): listed apart, never flagged."""
    _tf_keras_trained(str(tmp_path))
    ref = dict(np.load(tmp_path / "weights.npz"))
    state = json.loads((tmp_path / "state.json").read_text())
    counts = [values[1] for values in state["metrics"]]
    assert counts == [64.0, 64.0]
    for fmt in ("keras", "h5"):
        r = run("weights", tmp_path / f"k2.{fmt}", "--format", "json", "--max-abs", "10")
        assert r.exit_code == 0, r.stderr
        data = json.loads(r.stdout)
        assert [w["name"] for w in data["weights"]] == list(ref), fmt
        for w in data["weights"]:
            x = ref[w["name"]].astype(np.float64)
            assert tuple(w["shape"]) == x.shape and w["flags"] == []
            assert (w["stats"]["mean"], w["stats"]["std"]) == pytest.approx((x.mean(), x.std()), rel=1e-9)
        assert data["totals"]["flagged"] == 0
        shapes = [tuple(shape) for _, shape in state["optimizer"]]
        assert [tuple(v["shape"]) for v in data["optimizer"]] == shapes, fmt
        if fmt == "h5":
            assert [v["name"] for v in data["optimizer"]] == [f"optimizer_weights/{n}" for n, _ in state["optimizer"]]
            assert data["metrics"] == []
        else:  # the loss's Mean and the mae wrapper: total and count each
            assert [v["name"] for v in data["metrics"]] == [
                "metrics/mean/vars/0", "metrics/mean/vars/1",
                "metrics/mean_metric_wrapper/vars/0", "metrics/mean_metric_wrapper/vars/1"]
