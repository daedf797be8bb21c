"""Separability per layer output, end to end through the real worker: on the digits model
fed its labelled image folder, each output's separability in the JSON equals numpy's on
plain-Keras activations of the same images (decoded here as Keras would: PNG, grayscale,
bilinear to 8x8), the eager and compiled engines agree, ``--labels`` gives labels to
arrays (and its mistakes are one line each), ``check --rule separability`` gates the last
hidden layer, and the report draws it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from kerinspect.errors import ExitCode
from tests.conftest import ROOT, kerinspect_cli
from tests.test_separability_stats import fisher_reference, loo_reference

DIGITS = ROOT / "sample_models" / "digits.keras"
FOLDER = ROOT / "sample_models" / "data" / "digits"
CANCER = ROOT / "sample_models" / "cancer_mlp.keras"
ROWS = ROOT / "sample_models" / "data" / "cancer.csv"


def summary_json(*args):
    out = kerinspect_cli("summary", *args, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def pca_page(tmp_path_factory):
    """``report`` of the digits on their folder, projecting ``pool`` and ``digit``: one
    worker run whose page the report tests read and whose embedded JSON report is
    :func:`eager`."""
    page = tmp_path_factory.mktemp("sep") / "r.html"
    out = kerinspect_cli("report", DIGITS, "-i", FOLDER, "--batch-size", "8", "-o", page, "--pca-layers", "pool,digit")
    assert out.returncode == 0, out.stderr
    return page


@pytest.fixture(scope="module")
def eager(pca_page):
    """The eager engine's report of the digits (5 batches of 8: ``report`` runs them
    eagerly), as ``summary --format json`` writes it: the page embeds it."""
    text = pca_page.read_text()
    report = json.loads(text.split('id="kerinspect-report">', 1)[1].split("</script>", 1)[0])["report"]
    assert report["engine"] == "eager", report["engine"]
    return report


@pytest.fixture(scope="module")
def compiled():
    return summary_json(DIGITS, "--input", FOLDER, "--engine", "compiled", "--batch-size", "8")


@pytest.fixture(scope="module")
def reference(keras):
    """Per layer, ``(accuracy, fisher)`` of numpy on plain-Keras outputs; and the labels."""
    import tensorflow as tf

    images, labels = [], []
    for c, name in enumerate(sorted(os.listdir(FOLDER))):
        for f in sorted(os.listdir(FOLDER / name)):
            img = tf.io.decode_png((FOLDER / name / f).read_bytes(), channels=1)
            images.append(tf.image.resize(img, (8, 8), method="bilinear").numpy())
            labels.append(c)
    x, y = np.stack(images).astype(np.float32), np.array(labels)
    model = keras.saving.load_model(DIGITS)
    out = {"image": x}
    for layer in model.layers[1:]:
        out[layer.name] = np.asarray(keras.Model(model.inputs, layer.output)(x))
    figures = {}
    for name, a in out.items():
        v = a.astype(np.float64)
        v = v.mean(axis=tuple(range(1, v.ndim - 1))) if v.ndim > 2 else v
        figures[name] = (loo_reference(v, y), fisher_reference(v, y))
    return figures, y


def separability(report):
    return {layer["path"]: layer["outputs"][0]["separability"] for layer in report["layers"]}


def test_every_output_equals_numpy_on_plain_keras_activations(eager, reference):
    figures, y = reference
    got = separability(eager)
    assert set(got) == set(figures)
    for path, (accuracy, fisher) in figures.items():
        assert got[path]["accuracy"] == accuracy, path
        assert got[path]["fisher"] == pytest.approx(fisher, rel=1e-6), path
        assert got[path]["chance"] == pytest.approx(np.bincount(y).max() / len(y))
    assert eager["labels"] == {
        "source": "folders",
        "classes": [str(d) for d in range(10)],
        "counts": np.bincount(y).tolist(),
    }


def test_the_last_hidden_layer_separates_and_the_input_does_not(eager):
    got = separability(eager)
    chance = got["image"]["chance"]
    assert got["flatten"]["accuracy"] >= 0.8 > 4 * chance
    assert got["image"]["accuracy"] <= chance < got["conv"]["accuracy"] + chance
    assert got["flatten"]["fisher"] > got["image"]["fisher"]


def test_the_compiled_engine_agrees_with_the_eager_one(eager, compiled):
    assert compiled["engine"].startswith("compiled"), compiled["engine"]
    a, b = separability(eager), separability(compiled)
    assert a.keys() == b.keys()
    for path in a:
        assert b[path]["accuracy"] == a[path]["accuracy"], path
        assert b[path]["fisher"] == pytest.approx(a[path]["fisher"], rel=1e-6), path


def test_the_summary_table_has_a_sep_column_and_says_where_the_labels_came_from(eager):
    from tests.conftest import render_summary

    table = render_summary(eager)
    assert "labels: 10 classes from folders (40 samples)" in table and "chance 0.15" in table
    header = next(line for line in table.splitlines() if line.startswith("Layer"))
    assert header.split()[-2:] == ["Sep", "Flags"]
    flatten = next(line for line in table.splitlines() if line.startswith("flatten"))
    assert f"{separability(eager)['flatten']['accuracy']:.2f}" in flatten


def test_markdown_has_the_sep_column_and_the_labels_line(eager):
    from kerinspect.render import render_markdown
    from kerinspect.report import ModelReport

    md = render_markdown(ModelReport.from_dict(eager)).splitlines()
    assert "| Dead | Sep | Flags |" in next(line for line in md if line.startswith("| Layer"))
    flatten = next(line for line in md if line.startswith("| `flatten`"))
    assert flatten.split("|")[-3].strip() == f"{separability(eager)['flatten']['accuracy']:.2f}"
    assert any(line.startswith("- labels: 10 classes from folders") for line in md)


# -- labels for arrays -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cancer_rows():
    import csv

    with open(ROWS, newline="") as f:
        rows = list(csv.DictReader(f))
    x = np.array([[float(r[k]) for k in r if k != "target"] for r in rows], np.float32)
    return x, np.array(["malignant" if r["target"] == "0" else "benign" for r in rows])


def test_the_api_takes_labels_as_an_array_for_array_inputs(tmp_path, cancer_rows):
    import kerinspect

    x, names = cancer_rows
    path = tmp_path / "rows.npy"
    np.save(path, x)
    report = kerinspect.inspect_model(str(CANCER), str(path), labels=names)
    assert report.labels.source == "array"
    assert report.labels.classes == ("benign", "malignant")  # sorted
    sep = report["features"].outputs[0].separability
    y = (names == "malignant").astype(int)
    assert sep.accuracy == loo_reference(x.astype(np.float64), y)
    assert sep.fisher == pytest.approx(fisher_reference(x.astype(np.float64), y), rel=1e-6)


def test_a_labels_file_with_too_few_labels_is_one_line_exit_9(tmp_path, cancer_rows):
    x, names = cancer_rows
    np.save(tmp_path / "rows.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(names[:150]) + "\n")
    out = kerinspect_cli("summary", CANCER, "-i", tmp_path / "rows.npy", "--labels", tmp_path / "labels.txt")
    assert out.returncode == ExitCode.BAD_DATA, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "holds 150 labels; the input fed 200 samples" in out.stderr and "--labels=" in out.stderr


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--labels", "nowhere.npy", "-i", "sample_models/data/cancer.csv"), ExitCode.NO_INPUT, "not found"),
        (("--labels", "sample_models/data/cancer.csv", "-i", "sample_models/data/cancer.csv"), ExitCode.NO_INPUT,
         "must be a .npy or a .txt"),  # fmt: skip
        (("--labels", "README.md"), ExitCode.USAGE, "synthetic inputs have no classes"),
        (("--labels", "README.md", "-i", "sample_models/data/digits"), ExitCode.USAGE, "labelled by its subfolders"),
        (("--labels", "README.md", "-i", "sample_models/data/cancer.csv", "--label-column", "target"),
         ExitCode.USAGE, "use one"),  # fmt: skip
    ],
)
def test_labels_mistakes_are_one_line_before_any_worker(args, code, words, tmp_path):
    starts = tmp_path / "starts.log"
    out = kerinspect_cli("summary", CANCER, *args, env={"KERINSPECT_WORKER_STARTS_LOG": str(starts)})
    assert out.returncode == code, out.stderr
    assert out.stderr.count("\n") == 1 and words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not starts.exists() or not starts.read_text().strip()  # refused in the parent


# -- check -------------------------------------------------------------------------------


def test_check_fails_a_high_threshold_on_the_last_hidden_layer():
    out = kerinspect_cli(
        "check", DIGITS, "-i", FOLDER, "--rule", "separability", "--min-separability", "0.99",
        "--no-config", "--format", "json",
    )  # fmt: skip
    assert out.returncode == ExitCode.CHECKS_FAILED, out.stderr
    rule = next(r for r in json.loads(out.stdout)["models"][0]["rules"] if r["rule"] == "separability")
    assert rule["verdict"] == "failed" and rule["threshold"] == 0.99
    assert [f["layer"] for f in rule["failures"]] == ["flatten"]  # the last layer before the softmax output


def test_check_passes_a_low_threshold_and_skips_without_labels(eager, sample_report):
    from kerinspect.checks import run_checks
    from kerinspect.config import CheckConfig
    from kerinspect.report import ModelReport

    config = CheckConfig(rules=("separability",), min_separability=0.5)
    rule = next(r for r in run_checks(ModelReport.from_dict(eager), config).rules if r.rule == "separability")
    assert rule.verdict == "passed" and rule.counts.passed == 1
    unlabelled = ModelReport.from_dict(sample_report("cnn"))
    result = run_checks(unlabelled, config)
    rule = next(r for r in result.rules if r.rule == "separability")
    assert rule.verdict == "not_checked" and "no labels" in rule.note
    assert result.status == "passed"


def test_the_rule_and_its_threshold_come_from_pyproject(tmp_path):
    from kerinspect.config import discover

    (tmp_path / "pyproject.toml").write_text(
        '[tool.kerinspect.check]\nrules = ["separability"]\nmin_separability = 0.8\nlabels = "y.npy"\n'
    )
    config = discover(str(tmp_path / "pyproject.toml")).settings_for("m.keras")
    assert config.rules == ("separability",) and config.min_separability == 0.8
    assert config.labels == str(tmp_path / "y.npy")
    assert config.run_spec().labels == str(tmp_path / "y.npy")


# -- report ------------------------------------------------------------------------------


def test_the_report_draws_accuracy_along_the_depth_and_two_projections(tmp_path):
    import re

    page = tmp_path / "r.html"
    out = kerinspect_cli("report", DIGITS, "-i", FOLDER, "-o", page)
    assert out.returncode == 0, out.stderr
    html = page.read_text()
    section = html[html.index('<section id="separability">') :]
    section = section[: section.index("</section>")]
    assert 'id="ki-separability"' in section
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", section)
    assert [c.split(" ")[0] for c in captions] == ["conv", "flatten"]  # a middle one, the last hidden one
    for svg in re.findall(r'<svg[^>]*class="pca".*?</svg>', section):
        assert svg.count("<circle") == 40 + 10  # every sample, and the legend's ten classes
        assert all(f">{d}</text>" in svg for d in range(10))


def test_pca_layers_picks_the_projected_outputs_and_an_unknown_one_is_one_line(pca_page, tmp_path):
    import re

    html = pca_page.read_text()
    section = html[html.index('<section id="separability">') :]
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", section[: section.index("</section>")])
    assert [c.split(" ")[0] for c in captions] == ["pool", "digit"]
    out = kerinspect_cli("report", DIGITS, "-i", FOLDER, "-o", tmp_path / "x.html", "--pca-layers", "nope")
    assert out.returncode == ExitCode.USAGE and out.stderr.count("\n") == 1, out.stderr
    assert "--pca-layers names 'nope'" in out.stderr and "flatten" in out.stderr
    assert not (tmp_path / "x.html").exists()
