"""``kerinspect check --rule vanishing-gradient --rule exploding-gradient`` (issue 27, item 5).

One ``check`` run over six saved models (the settings of each from one configuration
file, as a project would write them) gives the JSON, the JUnit file and the GitHub
annotations; a deep sigmoid network fails ``vanishing-gradient`` at the layer that
``kerinspect gradients`` names, with figures equal to ``tf.GradientTape`` on plain Keras;
a scaled-up kernel fails ``exploding-gradient`` where it starts; a healthy network passes
both; without the rules the sigmoid network passes; a model whose loss cannot be chosen is
the error ``gradients`` gives. Every model file is opened by the real worker (one per
model: the gradient pass runs in the check's own worker)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from tests import gradient_models

RTOL = 1e-3
SPARSE = "sparse_categorical_crossentropy"
GRADIENT_RULES = ("vanishing-gradient", "exploding-gradient")


def check(*args, env=None):
    env = {"GITHUB_ACTIONS": None, **(env or {})}
    return CliRunner().invoke(cli, ["check", *(str(a) for a in args)], env=env)


def rules_of(model_json):
    return {r["rule"]: r for r in model_json["rules"]}


CONFIG = """\
[tool.kerinspect.check]
input = "x.npy"

[[tool.kerinspect.check.models]]
path = ["sigmoid.keras", "healthy.keras"]
rules = ["vanishing-gradient", "exploding-gradient"]
loss = "sparse_categorical_crossentropy"      # labels: the model's own top prediction

[[tool.kerinspect.check.models]]
path = "exploding.keras"
rules = ["vanishing-gradient", "exploding-gradient"]
loss = "mse"
labels = "y.npy"
exploding_gradient = 1e3
vanishing_gradient = 1e-3

[[tool.kerinspect.check.models]]
path = "regression_without_labels.keras"
rules = ["vanishing-gradient"]
loss = "mse"

[[tool.kerinspect.check.models]]
path = "no_loss.keras"
rules = ["exploding-gradient"]
"""


@pytest.fixture(scope="module")
def folder(keras, tmp_path_factory):
    """The saved models, their inputs and labels, and the configuration file."""
    d = tmp_path_factory.mktemp("gradcheck")
    rng = np.random.default_rng(1)
    np.save(d / "x.npy", rng.normal(size=(32, 8)).astype("float32"))
    np.save(d / "y.npy", rng.integers(0, 2, 32))
    for build in (gradient_models.sigmoid, gradient_models.exploding, gradient_models.healthy):
        model = build(keras)
        model.save(d / f"{model.name}.keras")
    shutil.copy(d / "sigmoid.keras", d / "plain.keras")  # no [[models]] entry: default rules
    shutil.copy(d / "healthy.keras", d / "regression_without_labels.keras")
    shutil.copy(d / "healthy.keras", d / "no_loss.keras")  # saved without compiling: no loss
    (d / "pyproject.toml").write_text(CONFIG)
    return d


MODELS = ("sigmoid", "plain", "exploding", "healthy", "regression_without_labels", "no_loss")


@pytest.fixture(scope="module")
def run(folder):
    """One check over the six models: JSON on stdout, JUnit, GitHub annotations on stderr."""
    paths = [folder / f"{m}.keras" for m in MODELS]
    r = check(*paths, "--config", folder / "pyproject.toml", "--format", "json",
              "--junit", folder / "junit.xml", env={"GITHUB_ACTIONS": "true"})  # fmt: skip
    data = json.loads(r.stdout)
    by = {m: data["models"][i] for i, m in enumerate(MODELS)}
    return {"result": r, "data": data, "by": by, "junit": ET.parse(folder / "junit.xml").getroot()}


def _reference(keras, path, x, labels=None, loss="sparse"):
    """Every Dense output's gradient norm over the norm of the gradient reaching the head's
    input, by hand on plain Keras (the file loaded here, its layers called in turn under a
    tape); without ``labels``, the model's own top class is the label."""
    import tensorflow as tf

    model = keras.saving.load_model(path)
    hidden = [layer for layer in model.layers if layer.name.startswith("d")]
    with tf.GradientTape() as tape:
        h, outs = tf.constant(x), {}
        for layer in hidden:
            h = layer(h)
            tape.watch(h)
            outs[layer.name] = h
        p = model.get_layer("out")(h)
        if loss == "sparse":
            y = np.argmax(p.numpy(), axis=-1) if labels is None else labels
            value = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, tf.identity(p)))
        else:
            y = labels.astype("float32").reshape(-1, 1)
            value = tf.reduce_mean(tf.square(y - p))
    grads = dict(zip(outs, tape.gradient(value, list(outs.values()))))
    norms = {k: float(np.linalg.norm(np.asarray(g, np.float64))) for k, g in grads.items()}
    last = hidden[-1].name
    return {k: (n, n / norms[last]) for k, n in norms.items()}


def _first_backwards(reference, below=None, above=None):
    """From the output backwards, the first layer whose ratio is past the limit."""
    for name in reversed(list(reference)):
        ratio = reference[name][1]
        if (below is not None and ratio < below) or (above is not None and ratio > above):
            return name
    return None


def test_the_run_exits_with_its_worst_code_and_every_model_has_a_verdict(run):
    by = run["by"]
    assert run["result"].exit_code == 2  # two models cannot be checked: errors outrank failures
    assert {m: by[m]["status"] for m in MODELS} == {
        "sigmoid": "failed",
        "plain": "passed",
        "exploding": "failed",
        "healthy": "passed",
        "regression_without_labels": "error",
        "no_loss": "error",
    }
    assert by["sigmoid"]["exit_code"] == by["exploding"]["exit_code"] == 1


def test_a_deep_sigmoid_network_fails_vanishing_gradient_where_gradients_names_it(run, folder, keras):
    rule = rules_of(run["by"]["sigmoid"])["vanishing-gradient"]
    assert rule["verdict"] == "failed" and rule["threshold"] == 1e-3
    # kerinspect gradients on the same model, inputs and loss names the same layer
    g = CliRunner().invoke(cli, ["gradients", str(folder / "sigmoid.keras"), "-i", str(folder / "x.npy"),
                                 "--loss", SPARSE, "--format", "json"])  # fmt: skip
    assert g.exit_code == 0, g.stderr
    named = json.loads(g.stdout)["vanishing"]["path"]
    assert rule["failures"][0]["layer"] == named
    # and the figures are the tape's, on plain Keras
    reference = _reference(keras, folder / "sigmoid.keras", np.load(folder / "x.npy"))
    assert named == _first_backwards(reference, below=1e-3) != "d0"
    failed = [f["layer"] for f in rule["failures"]]
    assert failed == [k for k in reversed(reference) if reference[k][1] < 1e-3]  # from the output backwards
    assert failed[-1] == "d0"
    for f in rule["failures"]:
        norm, ratio = reference[f["layer"]]
        np.testing.assert_allclose(f["values"]["norm"], norm, rtol=RTOL, err_msg=f["layer"])
        np.testing.assert_allclose(f["values"]["ratio"], ratio, rtol=RTOL, err_msg=f["layer"])
        assert f["values"]["limit"] == 1e-3 and f["tensor"] == "output"
    # 14 outputs: the input and the model's output are never judged
    assert rule["counts"] == {"failed": len(failed), "passed": 12 - len(failed), "not_checked": 2, "ignored": 0}
    assert rules_of(run["by"]["sigmoid"])["exploding-gradient"]["verdict"] == "passed"


def test_a_scaled_up_kernel_fails_exploding_gradient_where_it_starts(run, folder, keras):
    rule = rules_of(run["by"]["exploding"])["exploding-gradient"]
    assert rule["verdict"] == "failed"
    reference = _reference(
        keras, folder / "exploding.keras", np.load(folder / "x.npy"), np.load(folder / "y.npy"), loss="mse"
    )
    # d3's kernel multiplies the gradient reaching d2's output: it explodes from there down
    assert [f["layer"] for f in rule["failures"]] == ["d2", "d1", "d0"]
    assert _first_backwards(reference, above=1e3) == "d2"
    np.testing.assert_allclose(rule["failures"][0]["values"]["ratio"], reference["d2"][1], rtol=RTOL)
    assert rules_of(run["by"]["exploding"])["vanishing-gradient"]["verdict"] == "passed"
    assert "mean_squared_error" in rule["note"] and "the data's labels" in rule["note"]


def test_a_healthy_network_passes_both(run):
    rules = rules_of(run["by"]["healthy"])
    for name in GRADIENT_RULES:
        assert rules[name]["verdict"] == "passed" and rules[name]["failures"] == []
        assert rules[name]["counts"]["passed"] == 3  # d0, d1, d2


def test_the_rules_are_off_by_default(run):
    plain = run["by"]["plain"]  # the sigmoid network, no rules asked for
    assert plain["status"] == "passed"
    assert not set(GRADIENT_RULES) & set(rules_of(plain))


def test_a_loss_that_cannot_be_chosen_is_the_error_gradients_gives(run):
    by = run["by"]
    no_loss, unlabelled = by["no_loss"]["error"], by["regression_without_labels"]["error"]
    assert no_loss["exit_code"] == unlabelled["exit_code"] == 2
    assert no_loss["rule"] == unlabelled["rule"] == "usage"
    assert no_loss["message"].startswith("The model has no saved loss to differentiate: give one with --loss.")
    assert unlabelled["message"].startswith("The loss 'mean_squared_error' needs labels")
    assert "--labels" in unlabelled["message"]
    assert "Traceback" not in run["result"].stderr


def test_json_shape(run):
    sigmoid = run["by"]["sigmoid"]
    rule = rules_of(sigmoid)["vanishing-gradient"]
    assert set(rule) == {"rule", "target", "unit", "verdict", "counts", "threshold", "failures", "note"}
    assert (rule["target"], rule["unit"]) == ("gradients", "tensor")
    assert set(rule["failures"][0]) == {"layer", "tensor", "message", "values"}
    assert set(rule["failures"][0]["values"]) == {"norm", "ratio", "reference_norm", "nan", "inf", "limit"}
    assert rule["note"].startswith(f"gradients of {SPARSE} (from --loss or loss =) = ")
    assert rule["note"].endswith("with the model's own top prediction as the label")
    # the gradient rules come last, in a fixed order; the settings say what was differentiated
    assert [r["rule"] for r in sigmoid["rules"]][-2:] == list(GRADIENT_RULES)
    settings = sigmoid["settings"]
    assert (settings["loss"], settings["from_logits"]) == (SPARSE, False)
    assert (settings["vanishing_gradient"], settings["exploding_gradient"]) == (1e-3, 1e3)


def test_github_annotations_and_junit_name_where_gradients_vanish(run):
    first = rules_of(run["by"]["sigmoid"])["vanishing-gradient"]["failures"][0]["layer"]
    lines = [line for line in run["result"].stderr.splitlines() if line.startswith("::error")]
    vanishing = [line for line in lines if "title=kerinspect check%3A vanishing-gradient" in line]
    assert len(vanishing) == 1
    assert f"::Gradients vanish from layer '{first}' output 'output' backwards: gradient norm" in vanishing[0]
    assert any("title=kerinspect check%3A exploding-gradient" in line and "layer 'd2'" in line for line in lines)
    suite = next(s for s in run["junit"] if s.get("name").endswith("sigmoid.keras"))
    case = next(c for c in suite if c.get("name") == "vanishing-gradient")
    assert case.find("failure").get("message").startswith(f"Gradients vanish from layer '{first}'")


def test_the_table_says_where_gradients_vanish_ignoring_a_layer(folder):
    """The table, with --ignore and the options on the command line (no configuration)."""
    r = check(folder / "sigmoid.keras", "-i", folder / "x.npy", "--no-config", "--loss", SPARSE,
              "--rule", "vanishing-gradient", "--ignore", "d6")  # fmt: skip
    assert r.exit_code == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("  FAIL vanishing-gradient") and "(1 ignored)" in line for line in lines)
    # d6 is where they vanish (the JSON run); ignored, the finding moves to the next one down
    assert "      -> Gradients vanish from layer 'd5' output 'output' backwards: gradient norm" in r.stdout
    assert f"      -> gradients of {SPARSE} (from --loss or loss =) = " in r.stdout
    assert "exploding-gradient" not in r.stdout


def test_a_bad_loss_option_is_one_line_before_any_model(tmp_path):
    # the model does not exist: a model's own error would be exit 3
    for args, text in (
        (("--loss", "my_loss"), "Unknown loss 'my_loss'"),
        (("--loss", "mse", "--from-logits"), "--from-logits applies to the cross-entropies only"),
    ):
        r = check(tmp_path / "missing.keras", "--rule", "vanishing-gradient", "--no-config", *args)
        assert r.exit_code == 2, r.stdout + r.stderr
        assert text in r.stderr and r.stdout == "" and "Traceback" not in r.stderr


def test_a_bad_configuration_key_is_a_usage_error(tmp_path):
    for line, text in (('loss = "my_loss"', "Key 'loss'"), ("vanishing_gradient = -1", "Key 'vanishing_gradient'"),
                       ('rules = ["vanishing-gradients"]', "Key 'rules'")):  # fmt: skip
        config = tmp_path / "check.toml"
        config.write_text(line + "\n")
        r = check(tmp_path / "missing.keras", "--config", config)
        assert r.exit_code == 2 and text in r.stderr, r.stderr
