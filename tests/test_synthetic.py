"""Honest synthetic inputs (issue 24, item 2): drawn from what the model knows about its
data, each one saying what it was drawn from, and every command that ran on them saying
so once on stderr (and ``check`` in its summary, JSON and JUnit).

The engine's rules are unit-tested on models built in this process; the rest goes through
the real CLI and worker, on one saved model with an adapted Normalization, a
Rescaling(1/255) and a TextVectorization, run once per command (module fixtures)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

WARNING = "kerinspect: warning: "
MEANS, STDS = np.array([500.0, 0.01, -3.0]), np.array([50.0, 0.005, 1.0])
WORDS = [f"w{i}" for i in range(60)]


@pytest.fixture(scope="module")
def inp(keras):
    from kerinspect.engine import inputs

    return inputs


def _batches(feed):
    return [np.concatenate(parts) for parts in zip(*feed.batches())]


def _features_model(keras):
    rng = np.random.default_rng(0)
    x = keras.Input((3,), name="features")
    norm = keras.layers.Normalization(name="norm")
    z = rng.standard_normal((400, 3))
    norm.adapt((MEANS + STDS * (z - z.mean(0)) / z.std(0)).astype("float32"))  # exactly MEANS, STDS
    return x, keras.layers.Dense(4, activation="relu", name="hidden1")(norm(x))


def _text_model(keras, length=16):
    rng = np.random.default_rng(1)
    corpus = [" ".join(rng.choice(WORDS, size=rng.integers(4, 14))) for _ in range(200)]
    t = keras.Input((1,), dtype="string", name="text")
    vec = keras.layers.TextVectorization(max_tokens=100, output_sequence_length=length, name="vec")
    vec.adapt(corpus)
    return t, keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(100, 4, name="emb")(vec(t)))


def _mixed(keras):
    """Three inputs, each with a layer that says what its data looks like."""
    x, h = _features_model(keras)
    img = keras.Input((8, 8, 3), name="image")
    c = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(keras.layers.Rescaling(1 / 255, name="rescale")(img))
    c = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    t, e = _text_model(keras)
    out = keras.layers.Dense(1, name="out")(keras.layers.Concatenate(name="cat")([h, c, e]))
    return keras.Model([x, img, t], out, name="mixed")


# ------------------------------------------------------------------ the drawing rules (in process)


def test_normalization_gives_each_feature_its_adapted_mean_and_std(inp, keras):
    x, h = _features_model(keras)
    spec = inp.input_specs(keras.Model(x, h))[0]
    feed = inp.synthetic_feed([spec], samples=2000, batch_size=500, seed=0)
    (data,) = _batches(feed)
    assert np.allclose(data.mean(0), MEANS, atol=5 * STDS / np.sqrt(2000) + 1e-9, rtol=0)
    assert np.allclose(data.std(0), STDS, rtol=0.1)
    assert feed.records[0].note == "normal(mean, std) of Normalization 'norm' (adapted, 3 features)"


def test_normalization_per_channel_broadcasts_over_the_image(inp, keras):
    x = keras.Input((4, 4, 2), name="image")
    norm = keras.layers.Normalization(mean=[100.0, -1.0], variance=[4.0, 0.25], name="norm")
    spec = inp.input_specs(keras.Model(x, norm(x)))[0]
    (data,) = _batches(inp.synthetic_feed([spec], samples=200, batch_size=200, seed=0))
    assert np.allclose(data.reshape(-1, 2).mean(0), [100, -1], atol=0.1)
    assert np.allclose(data.reshape(-1, 2).std(0), [2, 0.5], rtol=0.05)
    assert "(given, 2 features)" in spec.note


def test_inverted_normalization_is_not_a_data_rule(inp, keras):
    x = keras.Input((2,), name="x")
    norm = keras.layers.Normalization(mean=[100.0, 1.0], variance=[4.0, 1.0], invert=True)
    spec = inp.input_specs(keras.Model(x, norm(x)))[0]
    assert spec.normal is None and spec.note is None


@pytest.mark.parametrize(
    ("scale", "offset", "top", "note"),
    [
        (1 / 255, 0.0, 255, "uniform [0, 255]: the model rescales by 1/255 (Rescaling 'r')"),
        (1 / 16, 0.0, 16, "uniform [0, 16]: the model rescales by 1/16 (Rescaling 'r')"),
        (1 / 127.5, -1.0, 255, "uniform [0, 255]: the model rescales by 1/127.5 and offset -1 (Rescaling 'r')"),
    ],
)
def test_rescaling_draws_the_range_it_maps_onto_the_unit_interval(inp, keras, scale, offset, top, note):
    x = keras.Input((6, 6, 3), name="image")
    spec = inp.input_specs(keras.Model(x, keras.layers.Rescaling(scale, offset, name="r")(x)))[0]
    feed = inp.synthetic_feed([spec], samples=64, batch_size=64, seed=0)
    (data,) = _batches(feed)
    assert data.min() >= 0 and data.max() <= top and abs(data.mean() - top / 2) < top * 0.05
    assert feed.records[0].note == note


def test_uint8_pixels_before_a_rescaling_are_integers_in_range(inp, keras):
    x = keras.Input((4, 4, 3), dtype="uint8", name="image")
    spec = inp.input_specs(keras.Model(x, keras.layers.Rescaling(1 / 255)(x)))[0]
    (data,) = _batches(inp.synthetic_feed([spec], samples=64, batch_size=64, seed=0))
    assert data.dtype == np.uint8 and data.max() > 240 and spec.int_high == 256


def test_text_vectorization_gets_sentences_not_single_words(inp, keras):
    t, e = _text_model(keras, length=10)
    spec = inp.input_specs(keras.Model(t, e))[0]
    feed = inp.synthetic_feed([spec], samples=200, batch_size=200, seed=0)
    (data,) = _batches(feed)
    lengths = np.array([len(s.split()) for s in data.reshape(-1)])
    assert lengths.min() == 3 and lengths.max() == 10 and 5 < lengths.mean() < 8
    assert set(" ".join(data.reshape(-1)).split()) <= set(WORDS)
    assert feed.records[0].note.startswith("sentences of 3-10 words from TextVectorization 'vec' (")


def test_every_synthetic_input_has_a_note(inp, factories):
    feed = inp.synthetic_feed(inp.input_specs(factories.multi_io()), samples=2, batch_size=2, seed=0)
    notes = {r.name: r.note for r in feed.records}
    assert notes["numbers"] == "standard normal: nothing in the model says what its data looks like"
    assert notes["ids"].startswith("uniform integers in [0, 5) for Embedding ")


def test_new_draws_stay_independent_of_the_batch_size(inp, keras):
    specs = inp.input_specs(_mixed(keras))
    whole = _batches(inp.synthetic_feed(specs, samples=23, batch_size=23, seed=5))
    parts = _batches(inp.synthetic_feed(specs, samples=23, batch_size=4, seed=5))
    for a, b in zip(whole, parts):
        assert a.dtype == b.dtype and (a == b).all()


def test_hub_sequences_share_lengths_and_pad_after_them(inp):
    from kerinspect.engine.hub import InputHint

    ids = InputHint(100, None, None, "ids", "token_ids", start=2, end=3, pad=0)
    mask = InputHint(2, 1, None, "mask", "padding_mask")
    seg = InputHint(2, None, None, "seg", "segment_ids")
    specs = [
        inp.InputSpec(n, (None, 12), d, h.int_high, None, h.note, h.fill, note=h.note, sequence=h)
        for n, d, h in (("token_ids", "int32", ids), ("padding_mask", "bool", mask), ("segment_ids", "int32", seg))
    ]
    whole = _batches(inp.synthetic_feed(specs, samples=50, batch_size=50, seed=0))
    t, m, s = whole
    lengths = m.sum(1)
    assert m.dtype == bool and lengths.min() >= 3 and lengths.max() == 12 and len(set(lengths)) > 3
    assert (m == (np.arange(12)[None] < lengths[:, None])).all()  # ones, then zeros
    assert (t[:, 0] == 2).all() and (t[np.arange(50), lengths - 1] == 3).all() and (t[~m] == 0).all()
    assert (s == 0).all()
    parts = _batches(inp.synthetic_feed(specs, samples=50, batch_size=7, seed=0))
    assert all((a == b).all() for a, b in zip(whole, parts))


# ------------------------------------------------------------------ the warning and records (no TF)


def test_check_json_marks_synthetic_inputs():
    from kerinspect.check_results import CheckResult
    from kerinspect.provenance import InputRecord

    synthetic = CheckResult("m.keras", "passed", inputs=(InputRecord("x", (2, 3), "float32", "synthetic", 0, "n"),))
    data = CheckResult("m.keras", "passed", inputs=(InputRecord("x", (2, 3), "float32", "x.npy"),))
    assert synthetic.to_dict()["synthetic_inputs"] is True
    assert data.to_dict()["synthetic_inputs"] is False
    assert CheckResult.from_dict(synthetic.to_dict()) == synthetic


# ------------------------------------------------------------------ through the CLI and the worker


@pytest.fixture(scope="module")
def files(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    _mixed(keras).save(d / "mixed.keras")
    x, h = _features_model(keras)
    keras.Model(x, h, name="tabular").save(d / "tabular.keras")
    np.save(d / "rows.npy", (MEANS + STDS * np.random.default_rng(2).standard_normal((16, 3))).astype("float32"))
    return d


def _run(*args):
    from click.testing import CliRunner

    from kerinspect.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def _warnings(result):
    return [line for line in result.stderr.splitlines() if line.startswith(WARNING)]


@pytest.fixture(scope="module")
def mixed_summary(files):
    r = _run("summary", files / "mixed.keras", "--format", "json", "--samples", "64")
    assert r.exit_code == 0, r.stderr
    return r


def test_summary_draws_from_the_model_and_says_so(mixed_summary):
    report = json.loads(mixed_summary.stdout)
    inputs = {i["name"]: i for i in report["inputs"]}
    assert {i["source"] for i in inputs.values()} == {"synthetic"}
    assert inputs["features"]["note"].startswith("normal(mean, std) of Normalization 'norm'")
    assert inputs["image"]["note"] == "uniform [0, 255]: the model rescales by 1/255 (Rescaling 'rescale')"
    assert inputs["text"]["note"].startswith("sentences of 3-16 words from TextVectorization 'vec'")
    rows = {r["path"]: r["outputs"][0]["stats"] for r in report["layers"] if r["outputs"]}
    # each feature drawn from its adapted mean and std: the Normalization's output is standard
    assert abs(rows["norm"]["mean"]) < 0.3 and 0.7 < rows["norm"]["std"] < 1.3
    assert rows["features"]["mean"] == pytest.approx(MEANS.mean(), rel=0.05)
    assert rows["image"]["min"] >= 0 and rows["image"]["max"] <= 255
    assert rows["image"]["mean"] == pytest.approx(127.5, abs=5)
    # sentences, not one word each: padding well under 90%, the embedding not mostly zeros
    assert rows["vec"]["zero_fraction"] < 0.6
    assert rows["emb"]["zero_fraction"] < 0.5


def test_summary_warns_once_on_synthetic_inputs(mixed_summary):
    (line,) = _warnings(mixed_summary)
    assert line.startswith(f"{WARNING}ran on 64 synthetic samples, not your data (input 'features': normal(")
    assert "input 'image': uniform [0, 255]" in line and "input 'text': sentences of" in line
    assert line.endswith("; give your data with --input")


def test_summary_table_header_says_what_inputs_were_drawn_from(mixed_summary):
    """The table's header, rendered from the same run's JSON as the CLI renders it (no
    warning without synthetic inputs: tests/test_your_data.py, a check on a CSV)."""
    from tests.conftest import render_summary

    table = render_summary(json.loads(mixed_summary.stdout))
    assert (
        "input 'features': float32 (64, 3) (synthetic, seed=0: normal(mean, std) of Normalization 'norm' "
        "(adapted, 3 features))" in table
    )


@pytest.mark.parametrize("command", ["attention", "report"])
def test_attention_and_report_warn_once(files, tmp_path, command):
    extra = ["--out", tmp_path / "r.html", "--feature-maps", "0"] if command == "report" else []
    r = _run(command, files / "tabular.keras", "--samples", "8", *extra)
    assert r.exit_code == 0, r.stderr
    (line,) = _warnings(r)
    assert line.startswith(f"{WARNING}ran on 8 synthetic samples, not your data (input 'features': normal(")
    if command == "report":
        page = (tmp_path / "r.html").read_text()
        assert '<span class="badge"' in page and "synthetic inputs</span>" in page


def test_check_says_it_ran_on_noise_in_summary_junit_and_stderr(files, tmp_path):
    junit = tmp_path / "check.xml"
    r = _run("check", files / "tabular.keras", "--samples", "8", "--no-config", "--junit", junit)
    assert r.exit_code in (0, 1), r.stderr
    path = str(files / "tabular.keras")
    (line,) = _warnings(r)
    assert line.startswith(f"{WARNING}{path}: ran on 8 synthetic samples, not your data (input 'features'")
    assert line.endswith("; give your data with --input or 'input' in the configuration")
    assert "  inputs: ran on synthetic inputs (no --input or input = in the configuration): input 'features'" in r.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["kerinspect.inputs"].startswith("synthetic, seed=0: input 'features': normal(mean, std)")
    assert "synthetic samples, not your data" in suite.find("system-out").text
