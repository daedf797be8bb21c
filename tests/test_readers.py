"""``--input`` takes what users have: image folders, images and globs, text, CSV/TSV and
TFRecord shards, decoded in the worker (:mod:`kerinspect.engine.readers`).

Each format runs through the real worker on models built here, and every layer call's
statistics equal plain Keras on arrays decoded independently here (TensorFlow's own
decoders per format, numpy for the hand-written GIF and BMP). Bad data is one line,
exit 9, through the real CLI, and a dump that fails on its third batch leaves nothing.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from kerinspect.errors import ExitCode
from kerinspect.spec import RunSpec

RTOL = 2e-3


# ------------------------------------------------------------------ writers the test owns


def bmp_bytes(rgb):
    """A 24-bit BMP, bottom-up rows, BGR, each row padded to 4 bytes."""
    h, w, _ = rgb.shape
    row = (w * 3 + 3) // 4 * 4
    pixels = b"".join(rgb[y, :, ::-1].tobytes().ljust(row, b"\0") for y in range(h - 1, -1, -1))
    head = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return head + dib + pixels


def gif_bytes(index, palette):
    """A one-frame GIF of palette ``index``es: 9-bit LZW codes, all literals, a clear
    code every 250 so the code width never grows."""
    h, w = index.shape
    out = b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF7, 0, 0) + palette.astype(np.uint8).tobytes()
    out += b"," + struct.pack("<HHHHB", 0, 0, w, h, 0)
    codes = []
    for i, p in enumerate(index.reshape(-1)):
        if i % 250 == 0:
            codes.append(256)
        codes.append(int(p))
    codes.append(257)
    bits = nbits = 0
    data = bytearray()
    for c in codes:
        bits |= c << nbits
        nbits += 9
        while nbits >= 8:
            data.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        data.append(bits)
    out += bytes([8]) + b"".join(bytes([len(data[k:k + 255])]) + data[k:k + 255] for k in range(0, len(data), 255))
    return out + b"\x00;"


# ------------------------------------------------------------------ models and data, built once


@pytest.fixture(scope="module")
def built(keras, tmp_path_factory):
    """Models saved to ``.keras`` and data in every format, with the arrays each should decode to."""
    import tensorflow as tf

    d = tmp_path_factory.mktemp("readers")
    keras.utils.set_random_seed(3)
    L = keras.layers
    out = {"dir": d}

    x = keras.Input((16, 16, 3), name="image")
    h = L.Conv2D(4, 3, activation="relu")(x)
    cnn = keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
    x = keras.Input((16, 16, 1), name="image")
    h = L.Conv2D(2, 3)(L.Rescaling(1 / 255)(x))
    gray = keras.Model(x, L.Dense(2)(L.Flatten()(h)))
    x = keras.Input((4,), name="features")
    mlp = keras.Model(x, L.Dense(2)(L.Dense(8, activation="relu")(x)))
    a, b = keras.Input((1,), name="age"), keras.Input((1,), name="height")
    two = keras.Model([a, b], L.Dense(1)(L.Concatenate()([a, b])))
    vec = L.TextVectorization(max_tokens=20, output_sequence_length=5)
    vec.adapt(["the cat sat", "a dog ran far", "the dog sat on the mat"])
    s = keras.Input((), dtype="string", name="text")
    strings = keras.Model(s, L.Dense(2)(L.GlobalAveragePooling1D()(L.Embedding(20, 4)(vec(s)))))
    for name, m in (("cnn", cnn), ("gray", gray), ("mlp", mlp), ("two", two), ("strings", strings)):
        m.save(d / f"{name}.keras")
        out[name] = (m, str(d / f"{name}.keras"))

    rng = np.random.default_rng(0)

    def rgb(hh, ww):
        return rng.integers(0, 256, (hh, ww, 3), dtype=np.uint8)

    # an RGB folder with labels: every format, sizes that need resizing, a nested folder
    root = d / "pets"
    for sub in ("cats", "dogs/sub"):
        (root / sub).mkdir(parents=True)
    a_png, b_jpg, c_bmp, e_png = rgb(20, 24), rgb(16, 16), rgb(10, 12), rgb(16, 16)
    (root / "cats/a.png").write_bytes(tf.io.encode_png(a_png).numpy())
    (root / "cats/b.jpg").write_bytes(tf.io.encode_jpeg(b_jpg, quality=90).numpy())
    (root / "dogs/c.bmp").write_bytes(bmp_bytes(c_bmp))
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    gif_index = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    (root / "dogs/d.gif").write_bytes(gif_bytes(gif_index, palette))
    (root / "dogs/sub/e.PNG").write_bytes(tf.io.encode_png(e_png).numpy())
    (root / "dogs/notes.txt").write_text("not an image")

    def resized(img):
        return tf.image.resize(tf.constant(img), (16, 16), method="bilinear").numpy().astype(np.float32)

    decoded = [
        tf.io.decode_png((root / "cats/a.png").read_bytes(), channels=3).numpy(),
        tf.io.decode_jpeg((root / "cats/b.jpg").read_bytes(), channels=3).numpy(),
        c_bmp,
        palette[gif_index],
        e_png,
    ]
    out["pets"] = (str(root), np.stack([resized(i) for i in decoded]))

    # a grayscale folder without labels
    gdir = d / "gray"
    gdir.mkdir()
    g = [rng.integers(0, 256, (16, 16, 1), dtype=np.uint8) for _ in range(3)]
    for i, img in enumerate(g):
        (gdir / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    out["gray_dir"] = (str(gdir), np.stack(g).astype(np.float32))

    # tables
    feats = rng.standard_normal((7, 4)).astype(np.float32)
    with open(d / "rows.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f1", "f2", "name", "f3", "target", "f4"])
        for i, r in enumerate(feats):
            w.writerow([repr(float(r[0])), repr(float(r[1])), f"n{i}", repr(float(r[2])), i % 2, repr(float(r[3]))])
    out["rows"] = (str(d / "rows.csv"), feats)
    ages = rng.uniform(1, 90, (5, 1)).astype(np.float32)
    heights = rng.uniform(100, 200, (5, 1)).astype(np.float32)
    with open(d / "people.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["height", "age"])
        w.writerows([[repr(float(hh[0])), repr(float(aa[0]))] for aa, hh in zip(ages, heights)])
    out["people"] = (str(d / "people.tsv"), [ages, heights])

    # TFRecord shards of the two-input model, with a label feature
    def example(age, height, label):
        feature = {
            "age": tf.train.Feature(float_list=tf.train.FloatList(value=[age])),
            "height": tf.train.Feature(float_list=tf.train.FloatList(value=[height])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    (d / "shards").mkdir()
    for k, rows in enumerate((range(0, 3), range(3, 5))):
        with tf.io.TFRecordWriter(str(d / "shards" / f"part-{k}.tfrecord")) as wr:
            for i in rows:
                wr.write(example(float(ages[i, 0]), float(heights[i, 0]), i))
    out["shards"] = (str(d / "shards" / "part-*.tfrecord"), [ages, heights])

    lines = ["the cat sat", "", "a dog ran", "the mat on the dog", "sat"]
    (d / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out["lines"] = (str(d / "lines.txt"), np.array([t for t in lines if t], dtype=object))
    return out


def assert_stats_match(report, model, inputs):
    """Every layer call's output statistics equal plain Keras on ``inputs`` (relative 2e-3)."""
    from tests.reference import reference_calls

    ref = reference_calls(model, inputs)
    checked = 0
    for row in report.layers:
        if row.path not in ref:
            continue
        for out, arr in zip(row.outputs, ref[row.path]):
            arr = np.asarray(arr, np.float64)
            for got, want in ((out.stats.mean, arr.mean()), (out.stats.std, arr.std()),
                              (out.stats.min, arr.min()), (out.stats.max, arr.max())):
                assert got == pytest.approx(want, rel=RTOL, abs=1e-5), (row.path, got, want)
            checked += 1
    assert checked >= 2


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(r, code):
    assert r.exit_code == code, (r.exit_code, r.stderr, r.stdout)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerinspect: error["), r.stderr
    return lines[0]


# ------------------------------------------------------------------ each format, through the worker


def test_image_folder_with_labels_matches_keras(built):
    from kerinspect import inspect_model

    model, path = built["cnn"]
    folder, pixels = built["pets"]
    report = inspect_model(path, folder, spec=RunSpec(batch_size=2))
    assert report.samples == 5
    rec = report.inputs[0]
    assert rec.source == folder and rec.shape == (5, 16, 16, 3)
    assert rec.note.startswith("images: 5 BMP/GIF/JPEG/PNG files in 2 label folders, resized to 16×16, RGB")
    assert_stats_match(report, model, [pixels])


def test_grayscale_preprocess_and_the_rescaling_warning(built):
    model, path = built["gray"]
    folder, pixels = built["gray_dir"]
    r = run_cli("summary", path, "--input", folder, "--preprocess", "unit", "--format", "json")
    assert r.exit_code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("kerinspect: warning:")]
    assert warnings == [
        "kerinspect: warning: input 'image': the model rescales by 1/255 (expects pixels in [0, 255]) "
        "but --preprocess unit feeds [0, 1]"
    ]
    from kerinspect.report import ModelReport

    report = ModelReport.from_dict(json.loads(r.stdout))
    assert "grayscale" in report.inputs[0].note and "preprocess=unit" in report.inputs[0].note
    assert_stats_match(report, model, [pixels / np.float32(255)])


def test_csv_numeric_columns_with_a_label_column(built):
    from kerinspect import inspect_model

    model, path = built["mlp"]
    rows, feats = built["rows"]
    report = inspect_model(path, rows, spec=RunSpec(batch_size=3, label_column="target", samples=6))
    assert report.samples == 6
    assert report.inputs[0].note == "csv: 4 numeric columns of rows.csv, 6 rows (label column 'target')"
    assert_stats_match(report, model, [feats[:6]])


def test_tsv_columns_named_like_the_inputs(built):
    from kerinspect import inspect_model

    model, path = built["two"]
    table, (ages, heights) = built["people"]
    report = inspect_model(path, table, spec=RunSpec(batch_size=2))
    assert [r.shape for r in report.inputs] == [(5, 1), (5, 1)]
    assert_stats_match(report, model, [ages, heights])


def test_tfrecord_shards_by_glob(built):
    from kerinspect import inspect_model

    model, path = built["two"]
    pattern, (ages, heights) = built["shards"]
    report = inspect_model(path, pattern, spec=RunSpec(batch_size=2, label_column="label"))
    assert report.samples == 5 and "2 shards" in report.inputs[0].note
    assert_stats_match(report, model, [ages, heights])


def test_text_lines_feed_a_string_input(built):
    from kerinspect import inspect_model

    model, path = built["strings"]
    text, lines = built["lines"]
    report = inspect_model(path, text, spec=RunSpec(batch_size=3))
    assert report.samples == 4 and report.inputs[0].shape == (4,)
    assert_stats_match(report, model, [lines])


def test_feed_keeps_labels_without_feeding_them(built):
    from kerinspect.engine.feed import build_feed

    model, _ = built["cnn"]
    feed = build_feed(model, built["pets"][0], RunSpec(batch_size=2))
    assert feed.labels == ("cats", "dogs") and feed.samples == 5 and feed.n_batches == 3
    got = list(feed.labelled_batches())
    assert [len(x[0]) for x, _ in got] == [2, 2, 1]
    assert np.concatenate([y for _, y in got]).tolist() == [0, 0, 1, 1, 1]
    model, _ = built["mlp"]
    feed = build_feed(model, built["rows"][0], RunSpec(batch_size=4, label_column="target"))
    assert feed.labels is None
    assert np.concatenate([y for _, y in feed.labelled_batches()]).tolist() == ["0", "1", "0", "1", "0", "1", "0"]


# ------------------------------------------------------------------ keras-hub: text through the saved preprocessor


@pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None, reason="keras-hub is not installed")
def test_text_through_a_keras_hub_preprocessor(keras, tmp_path):
    import keras_hub

    keras.utils.set_random_seed(1)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "dog"]
    pre = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocab), sequence_length=8
    )
    backbone = keras_hub.models.BertBackbone(len(vocab), 1, 2, 16, 32, max_sequence_length=16)
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=pre)
    path = tmp_path / "clf.keras"
    model.save(path)
    (tmp_path / "t.txt").write_text("the cat sat\nthe dog\n")
    r = run_cli("summary", path, "--input", tmp_path / "t.txt", "--format", "json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    x = pre(np.array(["the cat sat", "the dog"]))
    pred = np.asarray(model(x, training=False), np.float64)
    assert {i["name"]: tuple(i["shape"]) for i in report["inputs"]} == {
        "token_ids": (2, 8), "padding_mask": (2, 8), "segment_ids": (2, 8)}
    final = report["layers"][-1]["outputs"][0]["stats"]
    assert final["mean"] == pytest.approx(pred.mean(), rel=RTOL, abs=1e-6)
    assert final["max"] == pytest.approx(pred.max(), rel=RTOL, abs=1e-6)


# ------------------------------------------------------------------ bad data: one line, its exit code, nothing left


def test_corrupt_jpeg_in_the_third_batch_of_a_dump_leaves_nothing(built, tmp_path):
    import shutil

    folder = tmp_path / "imgs"
    shutil.copytree(built["pets"][0], folder)
    (folder / "dogs/sub/z.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(300))
    out = tmp_path / "acts"
    r = run_cli("dump", built["cnn"][1], "--input", folder, "--batch-size", "2", "-o", out)
    line = one_error_line(r, ExitCode.BAD_DATA)
    assert "error[input-data]" in line and "z.jpg" in line
    assert not out.exists()


def test_csv_missing_cell_and_non_numeric_cell(built, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d\n1,2,3,4\n1,,3,4\n")
    line = one_error_line(run_cli("summary", built["mlp"][1], "--input", bad), ExitCode.BAD_DATA)
    assert "Line 3 of" in line and "bad.csv" in line and "column 'b' is missing" in line


def test_non_numeric_cell_is_named(built, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d\n1,2,3,4\n1,2,x7,4\n")
    r = run_cli("check", built["mlp"][1], "--input", bad, "--format", "json")
    assert r.exit_code == ExitCode.BAD_DATA, r.stderr  # check reports a model's error in its results
    (error,) = [res["error"] for res in json.loads(r.stdout)["models"]]
    assert error["exit_code"] == 9 and error["rule"] == "input-data"
    assert "Line 3 of" in error["message"] and "column 'c' holds 'x7', not a number" in error["message"]


def test_text_for_an_image_model(built):
    line = one_error_line(run_cli("summary", built["cnn"][1], "--input", built["lines"][0]), ExitCode.BAD_DATA)
    assert "lines.txt" in line and "'image' float32 (None, 16, 16, 3)" in line


def test_a_fifo_in_a_folder_is_refused(built, tmp_path):
    folder = tmp_path / "withfifo"
    (folder / "a").mkdir(parents=True)
    os.mkfifo(folder / "a" / "x.png")
    line = one_error_line(run_cli("summary", built["cnn"][1], "--input", folder), ExitCode.BAD_DATA)
    assert "x.png is not a regular file" in line


def test_unknown_extension_and_unmatched_glob_fail_in_the_parent(built, tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    line = one_error_line(run_cli("summary", built["mlp"][1], "--input", tmp_path / "x.parquet"), ExitCode.NO_INPUT)
    assert "'.parquet'" in line and ".csv/.tsv" in line and "--input" in line
    line = one_error_line(run_cli("summary", built["mlp"][1], "--input", tmp_path / "*.png"), ExitCode.NO_INPUT)
    assert "No file matches" in line
