"""Update ratios from the saved optimizer state (issue 27, item 3): ``kerinspect weights``
(h5py and numpy, no TensorFlow) and ``kerinspect gradients`` report, per weight, the size of
the optimizer's last step over the weight's size.

Small models are trained in plain Keras on numpy data; the weights before and after the
LAST step are recorded, then the model is saved. Through the real worker:

* Adam, AdamW, Adam(amsgrad), SGD(momentum), RMSprop(momentum) and the schedules: the
  update ratio equals ``‖w_after − w_before‖ / ‖w_after‖`` (relative 1e-3);
* RMSprop, Adagrad and SGD(nesterov) (estimates): it equals the documented estimate
  computed here by hand from ``optimizer.variables``;
* the learning rate is the Keras schedule called at the last step;
* no optimizer state, plain SGD, a frozen layer, a huge learning rate (flagged), the JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import kerinspect_cli

RTOL = 1e-3
STEPS = 8  # training steps before the last one (2 epochs of 4 batches)


def _model(keras, frozen=False):
    keras.utils.set_random_seed(3)
    x = keras.Input((5,), name="x")
    h = keras.layers.Dense(8, activation="relu", name="d1", trainable=not frozen)(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = keras.layers.Dense(3, name="d2")(h)
    return keras.Model(x, out, name="net")


def _optimizers(keras):
    sch = keras.optimizers.schedules
    return {
        "adam": lambda: keras.optimizers.Adam(1e-2),
        "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.5),
        "amsgrad": lambda: keras.optimizers.Adam(1e-2, amsgrad=True),
        "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        "rmsprop_momentum": lambda: keras.optimizers.RMSprop(1e-3, momentum=0.9),
        "exponential": lambda: keras.optimizers.Adam(sch.ExponentialDecay(1e-2, 3, 0.5)),
        "cosine_warmup": lambda: keras.optimizers.SGD(
            sch.CosineDecay(1e-3, 20, warmup_target=1e-2, warmup_steps=10), momentum=0.9
        ),
        "nesterov": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        "rmsprop": lambda: keras.optimizers.RMSprop(1e-3),
        "adagrad": lambda: keras.optimizers.Adagrad(0.05),
        "plain_sgd": lambda: keras.optimizers.SGD(0.05),
        "huge_lr": lambda: keras.optimizers.Adam(5.0),
        "frozen": lambda: keras.optimizers.Adam(1e-2),
    }


EXACT = (
    "adam",
    "adamw",
    "amsgrad",
    "sgd_momentum",
    "rmsprop_momentum",
    "exponential",
    "cosine_warmup",
    "frozen",
)


def _trained(keras, name, make, path):
    """Train ``STEPS`` steps then one more, save; what the test compares against."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")
    model = _model(keras, frozen=name == "frozen")
    opt = make()
    model.compile(opt, "mse", run_eagerly=True)  # tiny: tracing would cost more than it saves
    model.fit(x, y, batch_size=8, epochs=STEPS // 4, verbose=0)
    before = {v.path: v.numpy().astype(np.float64) for v in model.trainable_variables}
    model.train_on_batch(x[:8], y[:8])
    after = {v.path: v.numpy().astype(np.float64) for v in model.trainable_variables}
    slots = {v.path: v.numpy().astype(np.float64) for v in opt.variables}
    t = int(opt.iterations.numpy())
    lr = opt._learning_rate
    rate = float(lr(t - 1)) if callable(lr) else float(np.asarray(lr))
    model.save(path)
    np.save(path.with_suffix(".x.npy"), x[:8])
    return {
        "path": str(path),
        "before": before,
        "after": after,
        "slots": slots,
        "opt": opt.name,
        "iterations": t,
        "rate": rate,
        "config": opt.get_config(),
        "model": model,
        "x": x[:8],
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, keras):
    """Every optimizer's model, trained and saved, and its ``weights`` report (one worker
    run per file, through the public API)."""
    from kerinspect.api import inspect_weights

    d = tmp_path_factory.mktemp("optimizer_state")
    out = {}
    for name, make in _optimizers(keras).items():
        rec = _trained(keras, name, make, d / f"{name}.keras")
        rec["report"] = inspect_weights(rec["path"]).to_dict()
        out[name] = rec
    bare = _model(keras)
    bare.save(d / "uncompiled.keras")
    out["uncompiled"] = {
        "path": str(d / "uncompiled.keras"),
        "report": inspect_weights(d / "uncompiled.keras").to_dict(),
    }
    return out


def _ratios(report):
    return {w["name"]: w["update_ratio"] for w in report["weights"]}


def _norm(a):
    return float(np.linalg.norm(a))


@pytest.mark.parametrize("name", EXACT)
def test_exact_update_ratio_is_the_last_step(trained, name):
    rec = trained[name]
    got = _ratios(rec["report"])
    assert rec["report"]["optimizer_step"]["update"] == "exact"
    for path, w in rec["after"].items():
        want = _norm(w - rec["before"][path]) / _norm(w)
        assert got[path] == pytest.approx(want, rel=RTOL), path
    # moving statistics are not trained, and get none
    assert got["bn/moving_mean"] is None and got["bn/moving_variance"] is None


def test_a_frozen_layer_has_no_update_and_the_others_line_up(trained):
    got = _ratios(trained["frozen"]["report"])
    assert got["d1/kernel"] is None and got["d1/bias"] is None
    assert got["d2/kernel"] is not None and "d1/kernel" not in trained["frozen"]["after"]


def _slot(rec, path, kind):
    return rec["slots"][f"{rec['opt']}/{path.replace('/', '_')}_{kind}"]


def test_estimates_equal_the_hand_computation_from_the_optimizer_variables(trained):
    for name in ("rmsprop", "adagrad", "nesterov"):
        rec = trained[name]
        cfg, lr, t = rec["config"], rec["rate"], rec["iterations"]
        step = rec["report"]["optimizer_step"]
        assert step["update"] == "estimate" and step["class_name"] in ("RMSprop", "Adagrad", "SGD")
        got = _ratios(rec["report"])
        for path, w in rec["after"].items():
            if name == "rmsprop":  # |g| ~ sqrt(v): lr * sqrt(v) / sqrt(v + eps)
                v = _slot(rec, path, "velocity")
                delta = lr * np.sqrt(v) / np.sqrt(v + cfg["epsilon"])
            elif name == "adagrad":  # |g| ~ RMS over the t steps of the accumulator's sum
                acc = _slot(rec, path, "accumulator")
                g = np.sqrt(np.maximum(acc - cfg["initial_accumulator_value"], 0) / t)
                delta = lr * g / np.sqrt(acc + cfg["epsilon"])
            else:  # Nesterov: the step taken as the momentum
                delta = _slot(rec, path, "momentum")
            assert got[path] == pytest.approx(_norm(delta) / _norm(w), rel=RTOL), (name, path)


@pytest.mark.parametrize("name", ["exponential", "cosine_warmup", "adam"])
def test_the_learning_rate_is_the_one_of_the_last_step(trained, name):
    rec = trained[name]
    step = rec["report"]["optimizer_step"]
    assert step["iterations"] == rec["iterations"] == STEPS + 1
    assert step["learning_rate"] == pytest.approx(rec["rate"], rel=1e-6)
    assert step["schedule"] == {"exponential": "ExponentialDecay", "cosine_warmup": "CosineDecay"}.get(name)


def test_without_optimizer_state_the_ratio_is_null_and_the_report_says_why(trained):
    for name, words in (("uncompiled", "no optimizer state saved"), ("plain_sgd", "plain SGD")):
        report = trained[name]["report"]
        assert all(w["update_ratio"] is None for w in report["weights"])
        assert report["optimizer_step"]["update"] is None and words in report["optimizer_step"]["note"]
        assert not any(f.startswith("update-") for w in report["weights"] for f in w["flags"])


def test_a_huge_learning_rate_is_flagged_and_the_json_has_its_shape(trained):
    r = kerinspect_cli("weights", trained["huge_lr"]["path"], "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["update_thresholds"] == {"min_update_ratio": 1e-6, "max_update_ratio": 0.1}
    assert set(data["optimizer_step"]) == {
        "class_name",
        "iterations",
        "learning_rate",
        "schedule",
        "update",
        "note",
    }
    kernel = next(w for w in data["weights"] if w["name"] == "d1/kernel")
    assert kernel["update_ratio"] > 0.1 and "update-too-large" in kernel["flags"]
    assert data["totals"]["flagged"] >= 1
    assert all("update_ratio" in w for w in data["weights"])


def test_the_table_shows_the_column_and_the_thresholds_are_options(trained):
    path = trained["adam"]["path"]
    r = kerinspect_cli(
        "weights", path, "--min-update-ratio", "0.5", "--max-update-ratio", "0.9", "--width", "200"
    )
    assert r.returncode == 0, r.stderr
    assert "Update/‖w‖" in r.stdout and "optimizer: Adam · 9 steps · learning rate 0.01" in r.stdout
    kernel = next(line for line in r.stdout.splitlines() if line.startswith("d1 "))
    want = trained["adam"]["report"]["weights"][0]["update_ratio"]
    assert f"{want:.4g}" in kernel and "update-too-small" in kernel
    bad = kerinspect_cli("weights", path, "--min-update-ratio", "0.5", "--max-update-ratio", "0.1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 2 and "--min-update-ratio" in bad.stderr


def test_gradients_shows_the_same_update_ratios(trained):
    rec = trained["adamw"]
    x = rec["path"].replace(".keras", ".x.npy")  # labels: the model's own top class (any loss will do)
    args = ("-i", x, "--loss", "sparse_categorical_crossentropy", "--from-logits", "--format", "json")
    r = kerinspect_cli("gradients", rec["path"], *args)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["optimizer_step"]["class_name"] == "AdamW" and data["optimizer_step"]["update"] == "exact"
    got = {w["path"]: w["update_ratio"] for w in data["weights"]}
    assert set(got) == set(rec["after"])
    for path, w in rec["after"].items():
        assert got[path] == pytest.approx(_norm(w - rec["before"][path]) / _norm(w), rel=RTOL), path


# -- the schedules in numpy against Keras's own (no worker: pure arithmetic) -------------


def test_every_schedule_equals_keras_at_every_step(keras):
    from kerinspect.scan.optimizer_state import learning_rate_at

    sch = keras.optimizers.schedules
    schedules = [
        sch.ExponentialDecay(0.1, 7, 0.6),
        sch.ExponentialDecay(0.1, 7, 0.6, staircase=True),
        sch.InverseTimeDecay(0.1, 5, 0.5),
        sch.InverseTimeDecay(0.1, 5, 0.5, staircase=True),
        sch.PiecewiseConstantDecay([3, 10], [0.1, 0.05, 0.01]),
        sch.PolynomialDecay(0.1, 20, 0.001, power=2.0),
        sch.PolynomialDecay(0.1, 8, 0.001, cycle=True),
        sch.CosineDecay(0.1, 20, alpha=0.1),
        sch.CosineDecay(0.01, 20, warmup_target=0.1, warmup_steps=5),
        sch.CosineDecayRestarts(0.1, 6),
        sch.CosineDecayRestarts(0.1, 6, t_mul=1.0, m_mul=0.5, alpha=0.05),
    ]
    for s in schedules:
        saved = keras.optimizers.schedules.serialize(s)
        for step in (0, 1, 3, 4, 5, 9, 10, 11, 17, 30, 100):
            got, name = learning_rate_at(json.loads(json.dumps(saved)), step)
            assert name == type(s).__name__
            assert got == pytest.approx(float(s(step)), rel=1e-5, abs=1e-9), (name, step)


def test_an_unknown_optimizer_or_schedule_is_a_reason_not_a_crash():
    from kerinspect.scan.optimizer_state import Unavailable, learning_rate_at, read_optimizer

    iterations = np.array(3, np.int64)
    with pytest.raises(Unavailable, match="not one kerinspect reads"):
        read_optimizer([iterations], {"module": "keras.optimizers", "class_name": "Lion", "config": {}})
    with pytest.raises(Unavailable, match="not one kerinspect computes"):
        learning_rate_at({"module": "my.module", "class_name": "Mine", "config": {}}, 3)
    with pytest.raises(Unavailable, match="do not fit"):
        read_optimizer([iterations, np.array(0.1, np.float32), np.zeros(3)], "adam")


def test_a_model_object_gets_the_update_ratios_of_its_file(trained):
    """In this process, from the model's own optimizer: the same figures as its file's."""
    from kerinspect.api import model_gradients

    rec = trained["rmsprop"]
    here = model_gradients(rec["model"], rec["x"], loss="sparse_categorical_crossentropy", from_logits=True)
    assert here.optimizer_step.to_dict() == rec["report"]["optimizer_step"]
    want = _ratios(rec["report"])
    for w in here.weights:
        assert w.update_ratio == pytest.approx(want[w.path], rel=1e-6), w.path
