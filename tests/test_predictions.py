"""``kerinspect report``'s shown input and top-k predictions, ``--class-names``, and
``diff``'s top-1 agreement.

References are independent of kerinspect: the image files decoded and resized with
TensorFlow here, ``model.predict`` of plain Keras, numpy's argsort/argmax/softmax.
The report's PNGs are decoded with ``tf.io.decode_png``. Each worker run is shared
by the tests that read its page (module-scoped fixtures).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.classes import parse_class_names, read_class_names
from kerinspect.cli import cli
from kerinspect.errors import DataError, InputFileError
from kerinspect.figures import png

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
DIGITS = SAMPLES / "digits.keras"
DIGIT_FOLDERS = SAMPLES / "data" / "digits"
REALWORLD = Path(__file__).resolve().parents[2] / "shared" / "realworld" / "wild"
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def embedded(page: Path) -> dict:
    text = page.read_text()
    return json.loads(re.search(r'id="kerinspect-report">(.*?)</script>', text).group(1))


def decode_uri(uri: str) -> np.ndarray:
    import tensorflow as tf

    assert uri.startswith("data:image/png;base64,")
    return tf.io.decode_png(base64.b64decode(uri.split(",", 1)[1])).numpy()


# -- no TensorFlow needed ------------------------------------------------------------


def test_class_names_plain_and_teachable_machine_layouts():
    assert parse_class_names("cat\ndog\n\n\n") == ("cat", "dog")
    assert parse_class_names("0 Naranja\n1 Negro\n2 Nada\n") == ("Naranja", "Negro", "Nada")
    assert parse_class_names("0 5 Galoon\n1 500ML\n") == ("5 Galoon", "500ML")
    # indices that are not 0, 1, 2... in order are part of the names
    assert parse_class_names("1 one\n0 zero\n") == ("1 one", "0 zero")
    with pytest.raises(ValueError, match="line 2"):
        parse_class_names("a\n\nb\n")


def test_class_names_file_errors(tmp_path):
    with pytest.raises(InputFileError):
        read_class_names(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="holds no names"):
        read_class_names(str(empty))
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(DataError, match="not UTF-8"):
        read_class_names(str(binary))


def test_what_counts_as_a_classifier_output():
    from kerinspect.engine.predictions import Tally, candidate, summary

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = Tally(4)
    t.update(probs, 2, None)
    assert t.kind(None) == "probabilities"
    t = Tally(4)
    t.activation = "sigmoid"
    t.update(1 / (1 + np.exp(-logits)), 0, None)
    assert t.kind(None) == "sigmoid"  # rows need not sum to 1
    t = Tally(4)
    t.activation = "linear"
    t.update(logits, 1, np.asarray([0, 1, 2, 3, 0, 1]))
    assert t.kind(None) is None and t.kind(3) is None and t.kind(4) == "logits"  # logits need the names
    top = summary(t, "logits", 2, ("a", "b", "c", "d"), "class_names")["top"]
    p = np.exp(logits[1] - logits[1].max()) / np.exp(logits[1] - logits[1].max()).sum()
    assert [r["class"] for r in top] == np.argsort(-p)[:2].tolist()
    assert t.correct == int(np.sum(logits.argmax(axis=1) == [0, 1, 2, 3, 0, 1])) and t.labelled == 6
    bad = Tally(4)
    bad.update(np.where(np.arange(4) == 1, np.nan, probs[0])[None], 0, None)
    assert summary(bad, "probabilities", 3, None, None)["top"] == []  # a NaN row ranks nothing
    assert not candidate(np.zeros((3, 1))) and not candidate(np.zeros((3, 4, 5))) and candidate(np.zeros((3, 2)))


def test_patch_grids_of_an_image():
    from kerinspect.engine.predictions import patch_grid

    assert patch_grid(196, 224, 224) == (14, 14, 16, False)
    assert patch_grid(197, 224, 224) == (14, 14, 16, True)  # ViT-B/16 with its class token
    assert patch_grid(50, 224, 224) == (7, 7, 32, True)
    assert patch_grid(8, 32, 64) == (2, 4, 16, False)  # not square: patches are
    assert patch_grid(10, 32, 32) is None and patch_grid(1, 32, 32) is None


def test_cli_refuses_a_bad_class_names_file_in_one_line(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("a\n\nb\n")
    r = run("report", DIGITS, "--class-names", blank, "-o", tmp_path / "x.html")
    assert r.exit_code == 9, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--class-names" in lines[0] and "line 2 is blank" in lines[0]
    r = run("diff", DIGITS, DIGITS, "--class-names", tmp_path / "missing.txt")
    assert r.exit_code == 3 and "--class-names" in r.stderr and "Traceback" not in r.output


def test_grey_and_rgb_pngs_decode_to_their_bytes(keras):
    import tensorflow as tf

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
    assert np.array_equal(tf.io.decode_png(png(3, 2, rgb.tobytes(), 3)).numpy(), rgb)
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    assert np.array_equal(tf.io.decode_png(png(3, 2, grey.tobytes(), 1)).numpy()[..., 0], grey)


# -- digits: an image folder with labels, through the worker ------------------------


def _digit_files() -> tuple[list[Path], np.ndarray]:
    folders = sorted(p for p in DIGIT_FOLDERS.iterdir() if p.is_dir())
    files, labels = [], []
    for index, folder in enumerate(folders):
        for f in sorted(folder.iterdir()):
            files.append(f)
            labels.append(index)
    return files, np.asarray(labels)


@pytest.fixture(scope="module")
def digits_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    names = tmp / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    page = tmp / "digits.html"
    r = run(
        "report", DIGITS, "--input", DIGIT_FOLDERS, "--sample", 13, "--top-k", 3, "--class-names", names, "-o", page
    )
    assert r.exit_code == 0, r.output
    return page


@pytest.fixture(scope="module")
def digits_reference(keras):
    import tensorflow as tf

    files, labels = _digit_files()
    x = np.stack(
        [
            tf.image.resize(tf.io.decode_png(f.read_bytes(), channels=1), (8, 8), method="bilinear").numpy()
            for f in files
        ]
    ).astype(np.float32)
    model = keras.saving.load_model(DIGITS)
    return x, labels, model.predict(x, verbose=0)


def test_the_shown_image_is_the_fed_sample(digits_page, digits_reference):
    x, _, _ = digits_reference
    data = embedded(digits_page)
    (shown,) = data["inputs"]
    assert shown["kind"] == "image" and shown["shape"] == [8, 8, 1]
    assert "preprocess=none" in shown["mapping"]  # fed 0-255: shown as fed
    pixels = decode_uri(shown["png"])
    assert pixels.shape == (8, 8, 1)
    assert np.abs(pixels.astype(np.int64) - np.rint(np.clip(x[13], 0, 255))).max() == 0


def test_top_k_is_plain_keras_argsort_with_the_class_names(digits_page, digits_reference):
    _, labels, probs = digits_reference
    data = embedded(digits_page)
    order = np.argsort(-probs[13], kind="stable")[:3]
    assert [p["class"] for p in data["predictions"]] == order.tolist()
    assert [p["name"] for p in data["predictions"]] == [NAMES[i] for i in order]
    np.testing.assert_allclose([p["probability"] for p in data["predictions"]], probs[13][order], rtol=1e-5)
    (out,) = data["classifier_outputs"]
    assert out["kind"] == "probabilities" and out["names_from"] == "class_names" and out["classes"] == 10
    top1 = probs.argmax(axis=1)
    counts = {c["class"]: c["count"] for c in out["top1_counts"]}
    assert counts == {int(c): int(n) for c, n in enumerate(np.bincount(top1, minlength=10)) if n}
    assert out["samples"] == out["labelled"] == len(labels)
    assert out["top1_accuracy"] == pytest.approx(float(np.mean(top1 == labels)))


def test_the_page_shows_the_input_beside_the_predictions(digits_page):
    page = digits_page.read_text()
    section = page.split('<section id="sample">', 1)[1].split("</section>", 1)[0]
    assert '<figure class="input"><img src="data:image/png;base64,' in section
    assert "names from --class-names" in section and "top-1 accuracy" in section
    maps = page.split('<section id="feature-maps">', 1)[1]
    assert maps.index('<figure class="input">') < maps.index('<figure class="fmap">')  # beside the maps


@pytest.mark.slow
def test_input_and_predictions_render_in_a_real_browser(digits_page, tmp_path):
    from tests.test_report_html import _browse, _console, _sizes

    dom, log = _browse(digits_page, tmp_path)
    assert _console(log) == []
    width, height = _sizes(dom)["input"]
    assert width == height == 226  # 8x8 pixels scaled up 28 times, and the 1px border
    assert re.search(r"<td>\d</td><td>(zero|one|two|three|four|five|six|seven|eight|nine)</td>", dom)


# -- arrays: an image to scale min-max, token ids, logits ----------------------------


@pytest.fixture(scope="module")
def mixed(keras, tmp_path_factory):
    """A model with an image input fed values outside any pixel range, a token input,
    and a linear (logits) head of 4 classes; its report with 4 class names."""
    tmp = tmp_path_factory.mktemp("mixed")
    keras.utils.set_random_seed(3)
    image = keras.Input((6, 5, 3), name="picture")
    tokens = keras.Input((7,), dtype="int32", name="ids")
    a = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(image))
    b = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 4, name="embed")(tokens))
    out = keras.layers.Dense(4, name="logits")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([image, tokens], out, name="mixed")
    model.save(tmp / "mixed.keras")
    rng = np.random.default_rng(0)
    x = {
        "picture": rng.uniform(-3, 5, (5, 6, 5, 3)).astype(np.float32),
        "ids": rng.integers(0, 50, (5, 7)).astype(np.int32),
    }
    np.savez(tmp / "inputs.npz", **x)
    (tmp / "names.txt").write_text("0 red\n1 green\n2 blue\n3 grey\n")
    page = tmp / "mixed.html"
    r = run(
        "report", tmp / "mixed.keras", "--input", tmp / "inputs.npz", "--sample", 2,
        "--class-names", tmp / "names.txt", "-o", page,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return embedded(page), x, model.predict([x["picture"], x["ids"]], verbose=0)


def test_an_array_image_is_scaled_min_max_and_says_so(mixed):
    data, x, _ = mixed
    shown = {i["name"]: i for i in data["inputs"]}
    picture = x["picture"][2].astype(np.float64)
    lo, hi = picture.min(), picture.max()
    assert shown["picture"]["mapping"].startswith("values scaled from their minimum")
    expected = np.rint((picture - lo) / (hi - lo) * 255)
    assert np.abs(decode_uri(shown["picture"]["png"]).astype(np.int64) - expected).max() <= 1
    assert shown["ids"] == {"name": "ids", "kind": "tokens", "tokens": x["ids"][2].tolist()}


def test_logits_get_softmax_and_the_names_file(mixed):
    data, _, logits = mixed
    (out,) = data["classifier_outputs"]
    assert out["kind"] == "logits" and out["activation"] == "linear"
    z = np.exp(logits[2] - logits[2].max())
    p = z / z.sum()
    order = np.argsort(-p, kind="stable")[:4]
    assert [q["class"] for q in data["predictions"]] == order.tolist()
    assert [q["name"] for q in data["predictions"]] == [("red", "green", "blue", "grey")[i] for i in order]
    np.testing.assert_allclose([q["probability"] for q in data["predictions"]], p[order], rtol=1e-5)
    assert out["labelled"] == 0 and out["top1_accuracy"] is None


def test_a_string_input_is_shown_as_its_text(keras, tmp_path):
    layers = keras.layers
    vectorize = layers.TextVectorization(max_tokens=50, output_sequence_length=6, name="tv")
    vectorize.adapt(["the cat sat on the mat", "a dog ran far away"])
    sentence = keras.Input((), dtype="string", name="sentence")
    pooled = layers.GlobalAveragePooling1D()(layers.Embedding(50, 8)(vectorize(sentence)))
    keras.Model(sentence, layers.Dense(3, activation="softmax")(pooled)).save(tmp_path / "text.keras")
    lines = ["the cat sat on the mat", "a dog ran <b>far</b> away & back"]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    page = tmp_path / "text.html"
    r = run("report", tmp_path / "text.keras", "--input", tmp_path / "lines.txt", "--sample", 1, "-o", page)
    assert r.exit_code == 0, r.output
    assert embedded(page)["inputs"] == [{"name": "sentence", "kind": "text", "text": lines[1]}]
    section = page.read_text().split('<section id="sample">', 1)[1].split("</section>", 1)[0]
    assert "a dog ran &lt;b&gt;far&lt;/b&gt; away &amp; back" in section and "<b>far" not in section


def test_class_names_that_fit_no_output_are_refused(tmp_path):
    names = tmp_path / "three.txt"
    names.write_text("a\nb\nc\n")
    r = run("report", DIGITS, "--class-names", names, "-o", tmp_path / "x.html")
    assert r.exit_code == 9, r.output
    line = r.stderr.strip()
    assert "\n" not in line and "holds 3 names" in line and "'digit' has 10 classes" in line


# -- a Teachable Machine export with its labels.txt ---------------------------------


def _teachable_machine() -> Path:
    found = sorted(REALWORLD.glob("teachable-machine-*/keras_model.h5")) if REALWORLD.is_dir() else []
    if not found:
        pytest.skip(f"no Teachable Machine model under {REALWORLD}")
    return found[0]


def test_teachable_machine_labels_name_the_classes_and_tf_pixels_are_undone(keras, tmp_path):
    import tensorflow as tf

    model = _teachable_machine()
    labels = parse_class_names((model.parent / "labels.txt").read_text())
    rng = np.random.default_rng(5)
    images = tmp_path / "images"
    images.mkdir()
    pixels = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    for i, img in enumerate(pixels):
        (images / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    page = tmp_path / "tm.html"
    r = run(
        "report", model, "--input", images, "--preprocess", "tf", "--feature-maps", 0,
        "--class-names", model.parent / "labels.txt", "-o", page,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = embedded(page)
    (shown,) = data["inputs"]
    assert "preprocess=tf undone" in shown["mapping"]
    assert np.abs(decode_uri(shown["png"]).astype(np.int64) - pixels[0]).max() <= 1
    assert sorted(p["name"] for p in data["predictions"]) == sorted(labels)
    assert sum(p["probability"] for p in data["predictions"]) == pytest.approx(1, abs=1e-3)


# -- diff: top-1 agreement ----------------------------------------------------------


def test_diff_top1_agreement_is_numpy_on_plain_keras_predictions(keras, digits_reference, tmp_path):
    x, _, probs_a = digits_reference
    model = keras.saving.load_model(DIGITS)
    w = model.get_layer("digit").get_weights()
    w[0] = w[0] + np.random.default_rng(0).normal(0, 0.15, w[0].shape).astype(np.float32)
    model.get_layer("digit").set_weights(w)
    model.save(tmp_path / "b.keras")
    probs_b = model.predict(x, verbose=0)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES))
    r = run("diff", DIGITS, tmp_path / "b.keras", "--input", DIGIT_FOLDERS, "--class-names", names, "--format", "json")
    assert r.exit_code == 1, r.output  # the weights differ beyond the tolerance
    report = json.loads(r.stdout)
    (out,) = [o for p in report["pairs"] for o in p["outputs"] if o["model_output"]]
    top1 = out["top1_agreement"]
    a, b = probs_a.argmax(axis=1), probs_b.argmax(axis=1)
    assert top1["fraction"] == pytest.approx(float(np.mean(a == b)))
    assert top1["agree"] == int(np.sum(a == b)) and top1["samples"] == len(a) and top1["classes"] == 10
    assert 0 < top1["agree"] < len(a)  # the perturbation changes some answers, not all
    pairs = {}
    for i, j in zip(a[a != b], b[a != b]):
        pairs[(int(i), int(j))] = pairs.get((int(i), int(j)), 0) + 1
    for d in top1["disagreements"]:
        assert pairs[(d["class_a"], d["class_b"])] == d["count"]
        assert (d["name_a"], d["name_b"]) == (NAMES[d["class_a"]], NAMES[d["class_b"]])
    # the table's and Markdown's footer says it too (the same JSON, read back as the CLI reads it)
    from kerinspect.diff import DiffReport
    from kerinspect.render_diff import diff_footer_lines

    lines = diff_footer_lines(DiffReport.from_dict(report))
    assert any(f"top-1 agreement of 'digit': {top1['agree']} of {len(a)} samples" in line for line in lines)


# -- a ViT: attention over the image's patch grid -------------------------------------


@pytest.fixture(scope="module")
def vit(keras, tmp_path_factory):
    """A hand-built ViT: Conv2D(stride=patch) patch embedding of a 32x32 image into 4x4
    patches, self-attention over the 16 patches, then a class token (the patches' mean)
    put first and self-attention over the 17 tokens; its report on 3 images."""
    tmp = tmp_path_factory.mktemp("vit")
    keras.utils.set_random_seed(4)
    layers = keras.layers
    image = keras.Input((32, 32, 3), name="pixels")
    patches = layers.Reshape((16, 12), name="tokens")(layers.Conv2D(12, 8, strides=8, name="patchify")(image))
    h = layers.MultiHeadAttention(2, 6, name="mha_patches")(patches, patches)
    cls = layers.Reshape((1, 12), name="cls")(layers.GlobalAveragePooling1D(name="mean")(h))
    seq = layers.Concatenate(axis=1, name="with_cls")([cls, h])
    h = layers.MultiHeadAttention(3, 4, name="mha_cls")(seq, seq)
    out = layers.Dense(3, activation="softmax", name="head")(layers.Flatten()(h))
    model = keras.Model(image, out, name="vit")
    model.save(tmp / "vit.keras")
    x = np.random.default_rng(1).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    np.save(tmp / "x.npy", x)
    page = tmp / "vit.html"
    r = run("report", tmp / "vit.keras", "--input", tmp / "x.npy", "--sample", 1, "-o", page)
    assert r.exit_code == 0, r.output
    # the reference: each attention layer's scores, by plain Keras, on the same arrays
    loaded = keras.saving.load_model(tmp / "vit.keras")
    g = loaded.get_layer
    t = g("tokens")(g("patchify")(x))  # eagerly, layer by layer
    h, first = g("mha_patches")(t, t, return_attention_scores=True)
    s = g("with_cls")([g("cls")(g("mean")(h)), h])
    _, second = g("mha_cls")(s, s, return_attention_scores=True)
    return page, x, (keras.ops.convert_to_numpy(first), keras.ops.convert_to_numpy(second))


def test_vit_patch_attention_is_plain_keras_scores_on_the_grid(vit):
    page, _, (first, second) = vit
    data = embedded(page)
    grids = {p["path"]: p for p in data["patch_attention"]}
    plain, with_cls = grids["mha_patches"], grids["mha_cls"]
    assert (plain["grid"], plain["patch"], plain["class_token"]) == ([4, 4], 8, False)
    assert (with_cls["grid"], with_cls["patch"], with_cls["class_token"]) == ([4, 4], 8, True)
    np.testing.assert_allclose(plain["weights"], first[1].mean(axis=(0, 1)).reshape(4, 4), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(with_cls["weights"], second[1][:, 0, 1:].mean(axis=0).reshape(4, 4), rtol=1e-4, atol=1e-7)


def test_vit_overlay_is_drawn_over_the_shown_image(vit, tmp_path):
    page, x, _ = vit
    text = page.read_text()
    section = text.split('<section id="attention">', 1)[1].split("</section>", 1)[0]
    assert "mha_cls (MultiHeadAttention) over the image's 4 x 4 patches" in section  # the last layer
    assert "class token first" in section
    data = embedded(page)
    (shown,) = data["inputs"]
    assert shown["mapping"] == "values in [0, 1] times 255"
    assert np.abs(decode_uri(shown["png"]).astype(np.int64) - np.rint(x[1] * 255)).max() <= 1
    from tests.test_report_html import _browse, _console, _sizes

    dom, log = _browse(page, tmp_path)
    assert _console(log) == []
    assert min(_sizes(dom)["patches"]) > 0
