"""keras-hub models are counted before their weights exist (issue 23).

A saved keras-hub backbone stores its constructor arguments (``num_layers``,
``max_sequence_length``, ``vocabulary_size``...), not its layers. The worker builds the judged
config once with Keras's deferred variables (shapes only, nothing allocated) and refuses it
with exit 5 ``too-many-params`` when it would build more than ``--max-params``:

* every allowlisted keras-hub backbone, and every allowlisted task model built on one, at the
  small configs keras-hub's own tests use (``scripts/hub_small_configs.json``, with
  ``count_params()`` of a real build of each), is counted exactly;
* the issue's hostile files, built offline from tiny saved backbones (``max_sequence_length=3e9``
  in a BERT, a GPT-2 and a BERT nested in a ``BertTextClassifier``; ``num_layers=2000``), are
  refused with exit 5 through the real worker; the same backbones at a sane size load (the
  positive control), and the limit is the user's (``--max-params``);
* a config that asks for more layers than can be counted in time is refused, not left to run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from kerinspect.cli import cli
from kerinspect.errors import ExitCode
from kerinspect.scan import allowlist_hub
from tests.conftest import ROOT
from tests.hostile import members, with_config_edited

if importlib.util.find_spec("keras_hub") is None:
    pytest.skip("keras-hub is not installed (pip install 'kerinspect[hub]')", allow_module_level=True)

SMALL = json.loads((ROOT / "scripts" / "hub_small_configs.json").read_text())
CASES = [
    pytest.param(entry, id=f"{target.rpartition(':')[2]}-{i}")
    for section in ("classes", "tasks")
    for target, entries in SMALL[section].items()
    for i, entry in enumerate(entries)
]


@pytest.fixture(scope="module")
def keras_hub(keras):
    from kerinspect.engine.hub import import_keras_hub

    return import_keras_hub([], "")


def test_the_small_configs_cover_every_allowlisted_backbone(keras_hub):
    assert SMALL["keras_hub_version"].split(".")[:2] == keras_hub.__version__.split(".")[:2], (
        "keras-hub changed: run scripts/harvest_hub_configs.py against its checkout"
    )
    backbones = {t for name, t in allowlist_hub.CLASSES.items() if name.endswith("Backbone")}
    assert len(backbones) >= 70
    assert set(SMALL["classes"]) | set(SMALL["missing"]) == backbones
    assert len(SMALL["tasks"]) >= 70  # the task models built on them


@pytest.mark.parametrize("entry", CASES)
def test_the_deferred_count_is_count_params_of_a_real_build(keras_hub, entry):
    from kerinspect.engine.hub import deferred_count
    from kerinspect.engine.keras_adapter import model_from_archive_config

    count, error, out_of_time = deferred_count(lambda: model_from_archive_config(entry["config"]))
    assert (error, out_of_time) == (None, False)
    assert count == entry["count_params"]


# ------------------------------------------------------------------ hostile files end to end

SIZES = dict(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)


def _seq(config):
    config["config"]["max_sequence_length"] = 3e9  # JSON 3000000000.0, as the file


def _layers(config):  # 2,000 layers of width 1024: about 2.5e10 parameters
    config["config"].update(
        num_layers=2000, hidden_dim=1024, num_heads=4, intermediate_dim=4096, vocabulary_size=1000,
        max_sequence_length=512,
    )


@pytest.fixture(scope="module")
def files(keras, keras_hub, tmp_path_factory):
    """Tiny keras-hub models saved offline, and the issue's hostile edits of their config.json."""
    d = tmp_path_factory.mktemp("hub_size")
    keras.utils.set_random_seed(3)
    out = {}
    for name, cls in (("bert", keras_hub.models.BertBackbone), ("gpt2", keras_hub.models.GPT2Backbone)):
        cls(**SIZES).save(d / f"{name}.keras")
        out[name] = str(d / f"{name}.keras")
    sane = keras_hub.models.BertBackbone(  # the positive control: a plausible size
        vocabulary_size=1000, num_layers=4, num_heads=4, hidden_dim=128, intermediate_dim=512, max_sequence_length=64
    )
    sane.save(d / "bert_sane.keras")
    out["bert_sane"] = str(d / "bert_sane.keras")
    out["bert_sane_count"] = sane.count_params()
    task = keras_hub.models.BertTextClassifier(keras_hub.models.BertBackbone(**SIZES), num_classes=3, preprocessor=None)
    task.save(d / "task.keras")

    def nested_seq(config):
        config["config"]["backbone"]["config"]["max_sequence_length"] = 3e9

    out["bert_seq"] = with_config_edited(out["bert"], d / "bert_seq.keras", _seq)
    out["gpt2_seq"] = with_config_edited(out["gpt2"], d / "gpt2_seq.keras", _seq)
    out["bert_layers"] = with_config_edited(out["bert"], d / "bert_layers.keras", _layers)
    out["task_seq"] = with_config_edited(str(d / "task.keras"), d / "task_seq.keras", nested_seq)

    def nested_flux(config):  # a Sequential of a task that compiles itself, then the hostile BERT
        bert = json.loads(members(out["bert_seq"])["config.json"])
        flux = next(e for t, e in SMALL["tasks"].items() if t.endswith(":FluxTextToImage"))[0]["config"]
        config["config"]["layers"] = [flux, bert]

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(d / "plain.keras")
    out["nested_flux"] = with_config_edited(str(d / "plain.keras"), d / "nested_flux.keras", nested_flux)
    return out


def _cli(*args):
    started = time.perf_counter()
    result = CliRunner().invoke(cli, [*map(str, args), "--timeout", "300"])
    return result, time.perf_counter() - started


#: file -> (whether the count is a lower bound, the least and the most it may be)
HOSTILE = {
    "bert_seq": (False, 3e9 * 16, 3e9 * 16 * 1.001),  # the position table: 3e9 rows of width 16
    "gpt2_seq": (False, 3e9 * 16, 3e9 * 16 * 1.001),
    "task_seq": (False, 3e9 * 16, 3e9 * 16 * 1.001),
    # stopped soon after the count passed the limit (it is looked at every 0.2 s of CPU),
    # long before the 2,000 layers' 2.5e10
    "bert_layers": (True, 1e9, 5e9),
    "nested_flux": (True, 3e9 * 16, 3e9 * 16 * 1.001),  # a self-compiling task first does not stop the count
}


@pytest.mark.isolated
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sizes_exit_5_through_the_worker(files, name):
    result, elapsed = _cli("summary", files[name])
    assert result.exit_code == ExitCode.REFUSED, result.stderr
    line = result.stderr.strip()
    assert line.startswith("kerinspect: error[too-many-params]: ") and "\n" not in line, line
    found = re.search(r"builds (at least )?([\d,]+) parameters, above the limit of 1,000,000,000", line)
    assert found, line
    lower_bound, least, most = HOSTILE[name]
    assert bool(found.group(1)) == lower_bound and least <= int(found.group(2).replace(",", "")) <= most, line
    assert "before its weights are created" in line and "--max-params" in line, line
    assert elapsed < 120, elapsed  # (a real build of any of them needs 100 GB or more)


@pytest.mark.isolated
def test_the_same_backbone_at_a_sane_size_loads_and_the_limit_is_the_users(files):
    result, _ = _cli("summary", files["bert_sane"], "--format", "json", "--samples", "2")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["totals"]["params"] == files["bert_sane_count"]
    # the real build names its layers as in a fresh process, as if nothing had been counted
    paths = [r["path"] for r in report["layers"]]
    assert "transformer_layer_0/self_attention_layer/softmax" in paths, paths
    lower = files["bert_sane_count"] - 1
    result, _ = _cli("summary", files["bert_sane"], "--max-params", lower)
    assert result.exit_code == ExitCode.REFUSED, result.stderr
    assert f"builds {files['bert_sane_count']:,} parameters, above the limit of {lower:,}" in result.stderr


OFFSET = (  # a layer whose variable is made from a value: it cannot be deferred
    "import keras\nimport numpy as np\n\n\n"
    "@keras.saving.register_keras_serializable(package='hub_size')\n"
    "class Offset(keras.layers.Layer):\n"
    "    def build(self, shape):\n"
    "        self.offset = keras.Variable(np.ones(shape[-1:], 'float32'), trainable=False)\n\n"
    "    def call(self, x):\n"
    "        return x + self.offset\n"
)


@pytest.mark.isolated
def test_what_cannot_be_counted_is_not_built_unless_trusted(keras, keras_hub, tmp_path):
    """A keras-hub layer beside the user's own layer that the deferred build cannot make:
    one clear load error naming --trust-model, and with it the model loads."""
    import runpy

    code = tmp_path / "offset_layers.py"
    code.write_text(OFFSET)
    offset = runpy.run_path(str(code))["Offset"]
    x = keras.Input((8, 16), name="x")
    y = keras.layers.Add(name="add")([x, keras_hub.layers.PositionEmbedding(sequence_length=8, name="pos")(x)])
    keras.Model(x, offset(name="offset")(y)).save(tmp_path / "m.keras")
    result, _ = _cli("summary", tmp_path / "m.keras", "--custom-objects", code)
    assert result.exit_code == ExitCode.MALFORMED, result.stderr
    line = result.stderr.strip()
    assert line.startswith("kerinspect: error[load-failed]: ") and "with deferred weights" in line, line
    assert "--trust-model" in line and "stateless scope" in line, line
    result, _ = _cli("summary", tmp_path / "m.keras", "--custom-objects", code, "--trust-model", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert {r["path"] for r in json.loads(result.stdout)["layers"]} >= {"pos", "add", "offset"}


def test_a_config_that_cannot_be_counted_in_time_is_refused(keras, keras_hub, files):
    """Tiny layers, ``num_layers=10**12``: the count never passes the limit, the clock does;
    and the worker's own wall-clock alarm is left as it was."""
    from kerinspect.engine.hub import check_size
    from kerinspect.engine.keras_adapter import model_from_archive_config
    from kerinspect.errors import PolicyError

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the deferred build's clock runs on SIGVTALRM, in the main thread")
    config = json.loads(members(files["bert"])["config.json"])
    config["config"].update(num_layers=10**12, hidden_dim=2, num_heads=1, intermediate_dim=2)
    started = time.perf_counter()
    handler = signal.getsignal(signal.SIGVTALRM)
    signal.alarm(900)  # as the worker's wall-clock backstop (sandbox/confine.py)
    try:
        with pytest.raises(PolicyError) as info:
            check_size(lambda: model_from_archive_config(config), ["BertBackbone"], 10**9, "m.keras", seconds=2)
    finally:
        backstop = signal.alarm(0)
    assert time.perf_counter() - started < 20
    assert backstop > 800  # still set: the count's clock is another timer
    assert signal.getsignal(signal.SIGVTALRM) is handler and signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
    assert info.value.rule == "too-many-params" and "took more than 2 s of CPU" in info.value.message
    # and the same model at its own size is counted exactly afterwards (no variables left over)
    small = json.loads(members(files["bert"])["config.json"])
    count = check_size(lambda: model_from_archive_config(small), ["BertBackbone"], 10**9, "m.keras")
    assert count == (keras.saving.deserialize_keras_object(small).count_params(), None)
