"""Words on attention (``tokens``), and the report's depth chart, colour scale and strips.

Every model file goes through the real CLI and worker; each page is made once per module
and read by several tests. The references are plain Keras (the model's own
``TextVectorization`` on the same sentence), numpy (the ids written to the input file),
and the page's DOM after chromium ran its script.
"""

from __future__ import annotations

import html
import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from kerinspect.errors import ExitCode
from kerinspect.render import attention_json, render_attention_markdown, render_attention_table
from kerinspect.words import PAD, sequence_text, token_label
from tests.conftest import SAMPLES, kerinspect_cli
from tests.test_report_html import _browse, _chromium, _console

TEXT_MODEL = SAMPLES / "text_attention.keras"
SENTENCES = SAMPLES / "data" / "sentences.txt"
#: The last line holds words the model never saw: [UNK].
SAMPLE = 39


def _embedded(page: Path) -> dict:
    text = page.read_text()
    return json.loads(text.split('id="kerinspect-report">', 1)[1].split("</script>", 1)[0])


def _attention(report: dict, path: str) -> dict:
    return next(r["attention"] for r in report["layers"] if r["path"] == path)


@pytest.fixture(scope="module")
def text_page(tmp_path_factory):
    """The report of the text model on the held-out sentences, drawing the last one."""
    out = tmp_path_factory.mktemp("words") / "text.html"
    run = kerinspect_cli(
        "report", TEXT_MODEL, "--input", SENTENCES, "--samples", "40", "--sample", SAMPLE, "-o", out
    )
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture(scope="module")
def text_dom(text_page, tmp_path_factory):
    _chromium()
    dom, log = _browse(text_page, tmp_path_factory.mktemp("profile"))
    assert _console(log) == []
    return dom


@pytest.fixture(scope="module")
def expected_words(keras):
    """What plain Keras makes of the drawn sentence: the vocabulary indexed by the ids
    the model's own TextVectorization computes."""
    import tensorflow as tf

    model = keras.models.load_model(TEXT_MODEL)
    layer = model.get_layer("vectorize")
    line = SENTENCES.read_text().splitlines()[SAMPLE]
    ids = np.asarray(layer(tf.constant([line])))[0]
    vocabulary = [str(v) for v in layer.get_vocabulary()]
    return [vocabulary[i] for i in ids]


@pytest.mark.slow
def test_report_json_tokens_are_the_vocabulary_at_the_ids_keras_computes(text_page, expected_words):
    assert "[UNK]" in expected_words and "" in expected_words  # the premise: OOV and padding
    tokens = _attention(_embedded(text_page)["report"], "self_attention")["tokens"]
    assert tokens["query"] == expected_words
    assert tokens["key"] == expected_words
    assert tokens["sample"] == SAMPLE
    assert tokens["pad"] == ""
    assert tokens["vocabulary"] == "TextVectorization 'vectorize'"
    assert tokens["reason"] is None


@pytest.mark.slow
def test_heatmap_axes_show_the_words_padding_marked(text_dom, expected_words):
    heat = text_dom.split('class="heat"', 1)[1].split("</svg>", 1)[0]
    rows = re.findall(r'<text class="query( pad)?"[^>]*>([^<]*)</text>', heat)
    columns = re.findall(r'<text class="key( pad)?"[^>]*>([^<]*)</text>', heat)
    shown = [PAD if w == "" else w for w in expected_words]
    assert [html.unescape(label) for _, label in rows] == shown
    assert [html.unescape(label) for _, label in columns] == shown
    for pad, label in rows + columns:  # padding marked (greyed), words not
        assert bool(pad) == (label == PAD)


def _png_indices(uri: str) -> tuple[int, int, bytes]:
    """(width, height, palette indices) of an 8-bit palette PNG without filters."""
    data = __import__("base64").b64decode(uri.split(",", 1)[1])
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
            assert body[8:10] == b"\x08\x03"  # 8-bit palette
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    rows = [raw[r * (width + 1) : (r + 1) * (width + 1)] for r in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, b"".join(row[1:] for row in rows)


def _heads(dom: str) -> list[tuple[float, bytes]]:
    """(the head's max weight from its caption, its heatmap's palette indices), per head."""
    out = []
    for fig in dom.split('<figure class="att">')[1:]:
        uri = re.search(r'<image href="(data:image/png;base64,[^"]+)"', fig).group(1)
        top = float(re.search(r'class="hmax">max ([0-9.e-]+)<', fig).group(1))
        out.append((top, _png_indices(uri)[2]))
    return out


def _scale(dom: str) -> float:
    return float(re.search(r'class="scale"[^>]*></span>([0-9.e-]+),', dom).group(1))


@pytest.mark.slow
def test_one_colour_scale_per_layer_each_head_with_its_max(text_dom):
    heads, scale = _heads(text_dom), _scale(text_dom)
    assert len(heads) == 2
    assert scale >= max(top for top, _ in heads)
    for top, pixels in heads:  # each head's brightest cell sits where its max falls on the shared scale
        assert abs(max(pixels) - round(255 * top / scale)) <= 3, (top, scale, max(pixels))


@pytest.fixture(scope="module")
def attention_page(tmp_path_factory):
    """The report of attention.keras on 4 synthetic samples with a vocab file of 50
    words: one worker run, read by the uniform-heads test (the page) and the test of
    the two id sequences (its embedded JSON report)."""
    folder = tmp_path_factory.mktemp("uniform")
    vocab = folder / "v.txt"
    vocab.write_text("\n".join(f"t{i}" for i in range(50)))
    out = folder / "attention.html"
    run = kerinspect_cli("report", SAMPLES / "attention.keras", "--samples", "4", "--vocab", vocab, "-o", out)
    assert run.returncode == 0, run.stderr
    return out


@pytest.mark.slow
def test_a_uniform_head_is_not_drawn_at_the_top_colour(attention_page, tmp_path_factory, keras):
    """attention.keras on synthetic ids: both heads uniform (each weight ~1/12, the
    user's 'all yellow' heads); its probabilities checked with plain Keras."""
    out = attention_page
    model = keras.models.load_model(SAMPLES / "attention.keras")
    ids = np.random.default_rng(0).integers(0, 12, (1, 12)).astype("int32")
    _, scores = model.predict([ids, ids], verbose=0)
    assert np.allclose(scores, 1 / 12, atol=0.01)  # the premise: uniform heads
    dom, _ = _browse(out, tmp_path_factory.mktemp("profile"))
    heads = _heads(dom)
    assert heads and all(abs(top - 1 / 12) < 0.01 for top, _ in heads)
    assert all(max(pixels) < 100 for _, pixels in heads)  # dark: far from the top colour (255)


@pytest.mark.slow
def test_depth_chart_names_its_layers_and_hovers_break_lines(text_dom, keras):
    chart = text_dom.split('id="ki-depth"', 1)[1].split("</svg>", 1)[0]
    names = [html.unescape(n) for n in re.findall(r'<text class="layer-name"[^>]*>([^<]*)<title>', chart)]
    model = keras.models.load_model(TEXT_MODEL)
    wanted = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
    # every layer named in graph order (a layer with inner calls, MultiHeadAttention, by them)
    named = [next(n for n in names if n == w or n.startswith(f"{w}/")) for w in wanted]
    assert sorted(named, key=names.index) == named
    titles = [html.unescape(t) for t in re.findall(r"<title>([^<]*)</title>", text_dom)]
    titles += [html.unescape(t) for t in re.findall(r' title="([^"]*)"', text_dom)]
    assert titles and not [t for t in titles if "\\n" in t]  # no literal escape anywhere
    hovers = re.findall(r'<rect class="hover"[^>]*><title>([^<]*)</title>', chart)
    assert hovers and all(len(html.unescape(h).split("\n")) == 2 for h in hovers)


@pytest.mark.slow
def test_feature_strips_beyond_the_embedding(text_page):
    page = text_page.read_text()
    drawn = re.findall(r"<h3>([^<:]+):output \((\w+)\)", page.split('id="feature-maps"', 1)[1])
    assert ("self_attention", "MultiHeadAttention") in drawn
    assert {c for _, c in drawn} >= {"Embedding", "MultiHeadAttention", "Add", "LayerNormalization"}


# -- --vocab: an id model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def id_model(tmp_path_factory, keras):
    """An id model (Embedding -> MultiHeadAttention -> pooling), its ids and a vocab file."""
    folder = tmp_path_factory.mktemp("ids")
    keras.utils.set_random_seed(3)
    ids = keras.Input((7,), dtype="int32", name="ids")
    h = keras.layers.Embedding(20, 8, name="embedding")(ids)
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    keras.Model(ids, keras.layers.Dense(2, name="out")(pooled)).save(folder / "ids.keras")
    words = ["<pad>", *(f"w{i}" for i in range(1, 20))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    batch = np.random.default_rng(5).integers(1, 20, (3, 7)).astype("int32")
    batch[0, 5:] = 0  # padded
    np.save(folder / "ids.npy", batch)
    return folder, words, batch


@pytest.fixture(scope="module")
def id_report(id_model):
    """The id model's report through the library and the real worker, with the vocab file."""
    from kerinspect import inspect_model

    folder, _, _ = id_model
    return inspect_model(str(folder / "ids.keras"), str(folder / "ids.npy"), vocab=str(folder / "vocab.txt"))


@pytest.mark.slow
def test_vocab_file_decodes_the_input_ids(id_model, id_report):
    _, words, batch = id_model
    tokens = attention_json(id_report)["layers"][0]["attention"]["tokens"]
    assert tokens["query"] == [words[i] for i in batch[0]] == tokens["key"]
    assert tokens["pad"] == "<pad>" and tokens["vocabulary"] == "vocab file vocab.txt"


@pytest.mark.slow
def test_attention_table_shows_the_words(id_model, id_report):
    _, words, batch = id_model
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_attention_table(id_report, console)
    line = " ".join(words[i] for i in batch[0][:5]) + " [pad] x2"
    assert f"tokens (sample 0, vocab file vocab.txt): {line}" in console.file.getvalue()
    markdown = render_attention_markdown(id_report)
    assert "tokens \\(sample 0" in markdown and "\\[pad\\] x2" in markdown


@pytest.mark.slow
def test_two_sequences_of_one_length_fall_back_to_positions(attention_page):
    """attention.keras has two id inputs of length 12 (tokens, positions): which one a
    vocab file decodes on the attention axes is unclear, so positions, and why."""
    tokens = _attention(_embedded(attention_page)["report"], "self_attention")["tokens"]
    assert tokens["query"] is None and tokens["key"] is None
    assert tokens["reason"] == "2 different token sequences of length 12"


def test_no_vocabulary_no_tokens(sample_report):
    attention = _attention(sample_report("attention"), "self_attention")
    assert attention["status"] == "ok" and "tokens" not in attention


# -- bad --vocab files: one line, their exit code, no worker ------------------------------


@pytest.mark.parametrize(
    "content, code, words",
    [
        (None, ExitCode.NO_INPUT, "does not exist"),
        ("dir", ExitCode.NO_INPUT, "cannot be read as a file"),
        (b"ok\n\xff\xfe bad\n", ExitCode.BAD_DATA, "not UTF-8 text (byte 3 of line 2)"),
        (b"", ExitCode.BAD_DATA, "is empty"),
    ],
)
def test_bad_vocab_is_one_line_and_its_exit_code(tmp_path, content, code, words):
    path = tmp_path / "vocab.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    run = kerinspect_cli("attention", SAMPLES / "attention.keras", "--vocab", path)
    assert run.returncode == code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert words in lines[0] and f"Received: --vocab={path}" in lines[0]


def test_oversized_vocab_is_refused_before_reading(tmp_path, monkeypatch):
    from kerinspect import vocab
    from kerinspect.errors import DataError

    path = tmp_path / "vocab.txt"
    path.write_text("a\nb\nc\n")
    monkeypatch.setattr(vocab, "MAX_VOCAB_BYTES", 4)
    with pytest.raises(DataError, match=r"6 bytes, over the 4-byte limit"):
        vocab.read_vocabulary(str(path))
    monkeypatch.undo()
    assert vocab.read_vocabulary(str(path)) == ("a", "b", "c")
    path.write_bytes(b"x\r\n\r\ny")  # CRLF, an empty token kept, no final newline
    assert vocab.read_vocabulary(str(path)) == ("x", "", "y")


def test_token_text_marks_padding_and_escapes():
    assert token_label("", "") == PAD and token_label("", None) == "''"
    assert token_label("a\nb", "") == "a\\nb"
    assert sequence_text(("the", "cat", "", "", ""), "") == "the cat [pad] x3"
    assert sequence_text(("", "x", ""), "") == "[pad] x [pad]"


# -- a keras-hub task: its tokenizer's vocabulary ---------------------------------------


@pytest.mark.slow
def test_a_hub_task_shows_its_tokenizers_words(keras, tmp_path):
    """A BertTextClassifier saved with its preprocessor: the lines go through it, and
    the attention axes show the tokenizer's words for the token ids (not the segment
    ids, also 8 long); the reference is keras-hub's own preprocessor."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(1)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(45))]
    pre = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocab), sequence_length=8
    )
    backbone = keras_hub.models.BertBackbone(50, 1, 2, 16, 32, max_sequence_length=8)
    keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=pre).save(
        tmp_path / "clf.keras"
    )
    (tmp_path / "lines.txt").write_text("w3 w7 nothing w3\nw1\n")
    run = kerinspect_cli(
        "attention", tmp_path / "clf.keras", "--input", tmp_path / "lines.txt", "--format", "json"
    )
    assert run.returncode == 0, run.stderr
    ids = np.asarray(pre(["w3 w7 nothing w3"])["token_ids"])[0]
    expected = [vocab[i] for i in ids]
    assert expected[:2] == ["[CLS]", "w3"] and "[UNK]" in expected and "[PAD]" in expected  # the premise
    layers = [r for r in json.loads(run.stdout)["layers"] if r["attention"]["status"] == "ok"]
    assert layers
    for r in layers:
        tokens = r["attention"]["tokens"]
        assert tokens["query"] == expected == tokens["key"]
        assert tokens["pad"] == "[PAD]" and tokens["vocabulary"] == "BertTokenizer (the model's tokenizer)"


def test_an_axis_of_another_length_keeps_its_positions(keras):
    """Queries pooled to 3 while the sample's ids are 5 long: positions, and why; keys of
    the ids' length: words. No vocabulary at all: no tokens."""
    from kerinspect.engine.events import CallSite
    from kerinspect.engine.tokens import TokenRecorder, Vocabulary
    from kerinspect.report import AttentionRecord

    vocabulary = Vocabulary(("<pad>", "a", "b"), "<pad>", "vocab file v.txt")
    recorder = TokenRecorder(1, vocabulary)
    site = CallSite(0, "ids", "ids", "InputLayer", 0, 0, 0, False, ("output",))
    recorder.start_batch(2)
    recorder.produced(site, [np.array([[2, 2, 2, 2, 2], [1, 2, 0, 0, 9]], dtype="int32")])
    record = AttentionRecord("attention_scores", "layer", "ok", None, shape=(2, 1, 3, 5))
    tokens = recorder.tokens_for(record)
    assert tokens.key == ("a", "b", "<pad>", "<pad>", "#9") and tokens.query is None
    assert tokens.reason == "queries: no token sequence of length 3 (the sample's have length 5)"
    assert TokenRecorder(0).tokens_for(record) is None
    assert TokenRecorder(5, vocabulary).tokens_for(record).reason == "the run had 0 samples, no sample 5"


@pytest.mark.slow
def test_the_drawn_samples_batch_runs_eagerly_under_auto(expected_words):
    """Ten batches: the compiled engine runs the rest (on a CPU from 8 batches), but the
    batch that holds the sample runs eagerly so its ids are seen; forced compiled, the
    axis keeps positions and says why."""
    args = ("attention", TEXT_MODEL, "--input", SENTENCES, "--samples", "40", "--batch-size", "4",
            "--sample", SAMPLE, "--format", "json")  # fmt: skip
    auto = kerinspect_cli(*args)
    assert auto.returncode == 0, auto.stderr
    assert _attention(json.loads(auto.stdout), "self_attention")["tokens"]["query"] == expected_words
    compiled = kerinspect_cli(*args, "--engine", "compiled")
    assert compiled.returncode == 0, compiled.stderr
    tokens = _attention(json.loads(compiled.stdout), "self_attention")["tokens"]
    assert tokens["query"] is None
    assert tokens["reason"] == "the sample's token ids were not seen (its batch ran on the compiled engine)"
