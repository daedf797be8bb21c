"""The Keras internals behind ``kerinspect.engine.keras_adapter`` still behave as the
engine assumes, and a Keras that breaks them fails loudly (exit 70), never as a
report with no layers.

The drift tests run Keras's own ``Functional._run_through_graph`` (spied on, not
replaced) and the engine's replay on the same inputs: every run of every graph
must run the same operations, depth by depth in the same order, with bit-identical
outputs (RNN layers, which the replay runs as a ``tf.function``, to 1e-5). A Keras
release that changes its loop (order, nodes, what it skips) fails here first.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

from kerinspect.engine.events import Visitor
from tests.conftest import ROOT, SAMPLES

DRIFT_MODELS = ["mlp", "shared", "nested", "deep_nested", "rnn_states", "attention", "masked",
                "inference_mode", "multi_io", "dynamic", "sequential_no_input"]


def _batch(model, n=4, seed=2):
    from kerinspect.engine.feed import build_feed
    from kerinspect.spec import RunSpec

    return next(build_feed(model, None, RunSpec(samples=n, batch_size=n, seed=seed)).batches())


def keras_own_loop(model, batch, monkeypatch):
    """Run ``model`` with Keras's own node loop, recording ``(run, graph, operation,
    outputs)`` for every node it runs, in the order its calls return (``run`` numbers
    the loop's invocations: a graph called twice runs twice)."""
    from kerinspect.engine import keras_adapter as ka

    visits = []
    runs = iter(range(1 << 30))
    loop = ka.Functional._run_through_graph

    def spy(self, inputs, operation_fn=lambda op: op, call_fn=None):
        if call_fn is not None or any(ka.is_symbolic(x) for x in ka.flatten(inputs)):
            return loop(self, inputs, operation_fn=operation_fn, call_fn=call_fn)
        run = next(runs)

        def recording(op):
            fn = operation_fn(op)

            def call(*args, **kwargs):
                out = fn(*args, **kwargs)
                visits.append((run, self, op, [np.asarray(t) for t in ka.flatten(out)]))
                return out

            return call

        return loop(self, inputs, operation_fn=recording)

    with monkeypatch.context() as m:
        m.setattr(ka.Functional, "_run_through_graph", spy)
        struct = ka.pack_like(ka.inputs_struct(ka.graph_of(model)), list(batch))
        out = model(struct, training=False)
    return visits, [np.asarray(t) for t in ka.flatten(out)]


class _Produced(Visitor):
    def __init__(self):
        self.calls = []

    def produced(self, site, tensors):
        if site.class_name != "InputLayer" and site.in_graph:  # graph nodes: what Keras's loop runs
            self.calls.append((site, [np.asarray(t) for t in tensors]))


@pytest.mark.parametrize("name", DRIFT_MODELS)
def test_replay_runs_what_keras_own_loop_runs(factories, name, monkeypatch):
    from kerinspect.engine import keras_adapter as ka
    from kerinspect.engine.trace import Replayer, call_order, runs_a_loop

    model = factories.ALL[name]()
    batch = _batch(model)
    visits, keras_out = keras_own_loop(model, batch, monkeypatch)
    assert visits, "Keras ran the model without its Functional._run_through_graph"

    # Every run of every graph: the adapter enumerates the same operations, in the same order.
    graphs = {}
    for run in dict.fromkeys(r for r, _, _, _ in visits):
        graph = next(g for r, g, _, _ in visits if r == run)
        graphs[id(graph)] = graph
        ran = [op for r, _, op, _ in visits if r == run]
        planned = call_order(graph)
        assert len(planned) == len(ran), (name, graph.name)
        # Keras runs depth by depth, deepest first; the replay does too, and within a
        # depth (independent nodes) orders them as the report does.
        depth = {id(node): d for d, node in ka.graph_nodes(graph)}
        start = 0
        for d in sorted({depth[id(node)] for node, _, _ in planned}, reverse=True):
            group = [op for node, op, _ in planned if depth[id(node)] == d]
            assert [depth[id(node)] for node, _, _ in planned[start:start + len(group)]] == [d] * len(group)
            chunk = ran[start:start + len(group)]
            assert sorted(map(id, group)) == sorted(map(id, chunk)), (name, graph.name, d)
            start += len(group)
    nested = {id(ka.graph_of(op)) for g in graphs.values() for _, op, _ in call_order(g)
              if ka.is_graph_model(op) and ka.graph_of(op) is not None}
    assert nested <= set(graphs), "a nested graph Keras did not run through its loop"

    # The replay produces the same calls in the same order, with identical values.
    rec = _Produced()
    out = Replayer(model, rec)(batch)
    def keyed(items):
        seen, out = {}, {}
        for key, value in items:
            k = seen[key] = seen.get(key, -1) + 1
            out[key + (k,)] = value
        return out

    got_calls = keyed(((site.name, site.class_name), got) for site, got in rec.calls)
    keras_calls = keyed(((op.name, type(op).__name__), (op, want)) for _, _, op, want in visits)
    assert sorted(got_calls) == sorted(keras_calls), name
    for key, (op, want) in keras_calls.items():
        got = got_calls[key]
        if len(got) == len(want) + 1 and key[1] in ("MultiHeadAttention", "GroupedQueryAttention"):
            got = got[:-1]  # the attention probabilities the replay adds to a layer that did not return them
        assert len(got) == len(want), key
        for g, w in zip(got, want):
            # run as a tf.function by the replay (a Bidirectional's two RNNs too): same maths, fused kernels
            if runs_a_loop(op) or type(op).__name__ == "Bidirectional":
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=str(key))
            else:
                np.testing.assert_array_equal(g, w, err_msg=str(key))
    for g, w in zip([np.asarray(t) for t in ka.flatten(out)], keras_out):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_keras_is_in_the_tested_range():
    """pyproject.toml pins Keras to the range the adapter was tested with."""
    import tomllib

    from kerinspect.engine import keras_adapter as ka

    assert ka.in_tested_range(), ka.keras_version()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"keras{ka.TESTED_KERAS_SPEC}" in [d.replace(" ", "") for d in deps]
    assert ka.version_tuple("3.15.1") == (3, 15, 1) and ka.version_tuple("3.16.0.dev2025") == (3, 16, 0)
    assert not ka.in_tested_range("3.16.0") and not ka.in_tested_range("3.15.0")


# -- the self-check: a Keras that stops calling the hook -------------------------------


@pytest.fixture
def keras_without_hook(keras, monkeypatch):
    """This process's Keras, as a release that no longer calls ``_run_through_graph``
    on the instance (restored after the test)."""
    from kerinspect.engine import keras_adapter as ka

    monkeypatch.setattr(ka.Functional, "call", ka.Functional.call)  # undone at teardown
    ka.simulate_keras_without_graph_hook()


def _assert_drift_error(err):
    from kerinspect.engine import keras_adapter as ka
    from kerinspect.errors import ExitCode

    assert isinstance(err, ka.KerasDriftError)
    assert err.exit_code == ExitCode.INTERNAL == 70 and err.rule == "engine-hook"
    line = err.one_line()
    assert f"Keras {ka.keras_version()}" in line and f"keras{ka.TESTED_KERAS_SPEC}" in line
    assert "outside the range kerinspect is tested with" in line and "\n" not in line


@pytest.mark.parametrize("name", ["mlp", "nested", "sequential_no_input"])
def test_a_keras_that_skips_the_hook_fails_loudly(factories, keras_without_hook, name):
    import kerinspect
    from kerinspect.engine.trace import Replayer

    model = factories.ALL[name]()
    with pytest.raises(Exception) as info:
        Replayer(model, _Produced())(_batch(model))
    _assert_drift_error(info.value)
    assert repr(model.name) in info.value.message or "functional" in info.value.message
    with pytest.raises(Exception) as info:
        kerinspect.inspect_model(model, samples=4, batch_size=4)
    _assert_drift_error(info.value)


def test_a_hook_that_is_never_installed_fails_loudly(factories, monkeypatch):
    """The same when the adapter's hook install itself stops working."""
    from kerinspect.engine import keras_adapter as ka
    from kerinspect.engine.trace import Replayer

    monkeypatch.setattr(ka, "graph_hook", lambda graph, replay: contextlib.nullcontext())
    model = factories.nested()
    with pytest.raises(Exception) as info:
        Replayer(model, _Produced())(_batch(model))
    _assert_drift_error(info.value)
    assert "graph hook did not run for model 'nested_model'" in info.value.message


def test_a_nested_model_whose_hook_does_not_run_fails_loudly(factories, monkeypatch):
    """Only the inner graphs lose the hook: the outer replay must not report the
    nested model as one opaque layer."""
    from kerinspect.engine import keras_adapter as ka
    from kerinspect.engine.trace import Replayer

    model = factories.nested()
    real = ka.graph_hook
    monkeypatch.setattr(ka, "graph_hook", lambda graph, replay: (
        real(graph, replay) if graph is model else contextlib.nullcontext()))
    with pytest.raises(Exception) as info:
        Replayer(model, _Produced())(_batch(model))
    _assert_drift_error(info.value)
    assert "for model 'block'" in info.value.message


def test_a_replay_that_sees_no_layer_fails_loudly(factories, monkeypatch):
    """The hook runs, but Keras's nodes no longer name the tensors of its graph: no
    node is computable, so the replay would run nothing."""
    from kerinspect.engine import keras_adapter as ka
    from kerinspect.engine.trace import Replayer

    monkeypatch.setattr(ka, "node_input_tensors", lambda node: [object()])
    model = factories.mlp()
    with pytest.raises(Exception) as info:
        Replayer(model, _Produced())(_batch(model))
    _assert_drift_error(info.value)
    assert "saw no layer call although its graph has 2" in info.value.message


def test_a_subclassed_call_is_not_a_drift(keras):
    """A Functional subclass that overrides ``call`` (and so never runs its graph
    loop) is reported as Keras runs it, not as a Keras drift."""
    from kerinspect.engine.trace import Replayer

    class Doubling(keras.Model):
        def call(self, inputs, training=None):
            return inputs * 2.0

    x = keras.Input((3,), name="x")
    model = Doubling(x, keras.layers.Dense(2, name="d")(x))
    out = Replayer(model, _Produced())([np.ones((2, 3), "float32")])
    np.testing.assert_array_equal(np.asarray(out), np.full((2, 3), 2.0))


def test_the_cli_fails_with_exit_70_in_process(keras_without_hook, monkeypatch):
    from click.testing import CliRunner

    from kerinspect.cli import cli

    monkeypatch.setenv("KERINSPECT_ISOLATION", "off")  # the patched Keras lives in this process
    r = CliRunner().invoke(cli, ["summary", str(SAMPLES / "cnn.keras")])
    assert r.exit_code == 70, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerinspect: error[engine-hook]: "), r.stderr
    assert r.stdout == ""


@pytest.mark.isolated
@pytest.mark.slow
def test_the_cli_fails_with_exit_70_through_the_worker(tmp_path):
    """``kerinspect summary`` on a Keras that skips the hook: one line, exit 70."""
    env = {**os.environ, "KERINSPECT_TEST_FAULT": "nohook@run", "TMPDIR": str(tmp_path)}
    env.pop("KERINSPECT_ISOLATION", None)
    out = subprocess.run([sys.executable, "-m", "kerinspect", "summary", str(SAMPLES / "cnn.keras")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 70, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerinspect: error[engine-hook]: "), out.stderr
    assert "Keras 3." in lines[0] and "tested with (keras>=" in lines[0], lines[0]
    assert out.stdout == "" and "Traceback" not in out.stderr
