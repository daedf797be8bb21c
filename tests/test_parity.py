"""One job per command: the same call on a ``keras.Model`` object (run in this process)
and on its saved file (run in the isolated worker) gives the same result.

Each case runs the public API twice with the same non-default options (``depth``,
``engine``, ``layers``, ``samples``, ...) and compares everything but where the model
came from (its path, format, the worker's confinement): statistics within float
rounding, everything else exactly. Where an option changes what is captured, the
result is also checked against what the option means (``depth=1``: no nested call),
so that both paths ignoring an option cannot pass as parity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kerinspect

#: Keys that say where the model came from, not what it computed.
PROVENANCE = {"path", "format", "loader", "notes", "sha256", "isolation"}
REL, ABS = 1e-6, 1e-9


def _model(keras, scale: float = 1.0):
    """Token ids -> embedding -> a nested block (attention, norm, dense) -> pooled head.
    ``scale`` multiplies the head's kernel (model B of a diff)."""
    layers = keras.layers
    # as in a fresh process (the worker's): the names Keras gives the layers an attention layer
    # makes itself (its softmax) would otherwise count what earlier tests built
    keras.backend.clear_session()
    keras.utils.set_random_seed(11)
    x = keras.Input((6, 8), name="h")
    a = layers.MultiHeadAttention(2, 4, name="att")(x, x)
    h = layers.LayerNormalization(name="norm")(layers.Add(name="res")([x, a]))
    block = keras.Model(x, layers.Dense(8, activation="relu", name="ffn")(h), name="block")
    t = keras.Input((6,), dtype="int32", name="tokens")
    e = layers.Embedding(20, 8, name="emb")(t)
    pooled = layers.GlobalAveragePooling1D(name="pool")(block(e))
    model = keras.Model(t, layers.Dense(3, name="head")(pooled), name="parity")
    if scale != 1.0:
        kernel, bias = model.get_layer("head").get_weights()
        model.get_layer("head").set_weights([kernel * scale, bias])
    return model


@pytest.fixture(scope="module")
def models(keras, tmp_path_factory):
    """Model A and B (B's head scaled), as objects and as saved files."""
    d = tmp_path_factory.mktemp("parity")
    a, b = _model(keras), _model(keras, scale=1.01)
    a.save(d / "a.keras")
    b.save(d / "b.keras")
    return {"a": a, "b": b, "a_file": str(d / "a.keras"), "b_file": str(d / "b.keras")}


def assert_same(got, want, where="result"):
    """``got`` equals ``want`` (plain JSON data): floats within rounding, provenance keys skipped."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        keys = set(want) - PROVENANCE
        assert set(got) - PROVENANCE == keys, f"{where}: keys {sorted(set(got) ^ set(want))}"
        for k in keys:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} != {want!r}"
        assert math.isclose(got, want, rel_tol=REL, abs_tol=ABS), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _paths(report_dict):
    return [r["path"] for r in report_dict["layers"]]


# -- the cases: each runs one public function on the object, then on the file ----------


def _inspect(models, which, **options):
    return kerinspect.inspect_model(models[which], **options).to_dict()


def case_inspect_depth_compiled(models, which):
    got = _inspect(models, which, depth=1, engine="compiled", samples=24, batch_size=8, seed=5)
    assert got["engine"].startswith("compiled") and got["max_depth"] == 1
    assert not [p for p in _paths(got) if "/" in p]  # depth 1: the block is one row
    return got


def case_inspect_deep_eager(models, which):
    from kerinspect.spec import Thresholds

    got = _inspect(models, which, engine="eager", samples=10, batch_size=4, seed=3, thresholds=Thresholds(max_abs=2.0))
    assert got["engine"] == "eager" and "block/att" in _paths(got)
    return got


def case_attention(models, which):
    from kerinspect.render import attention_json

    report = kerinspect.inspect_model(models[which], samples=12, batch_size=5, engine="compiled")
    got = attention_json(report)
    assert [r["path"] for r in got["layers"]] == ["block/att"]
    return got


def case_report(models, which):
    from kerinspect.api import inspect_for_report

    data = inspect_for_report(models[which], samples=9, batch_size=4, sample=6, feature_maps=2, depth=2)
    assert data.pictures.sample == 6 and [p.path for p in data.pictures.attention] == ["block/att"]
    return {"report": data.report.to_dict(), "pictures": _plain(data.pictures)}


def case_dump_compiled_layers(models, which, tmp_path):
    out = tmp_path / f"dump-{which}"
    dump = kerinspect.dump_activations(
        models[which], out, samples=40, batch_size=4, layers=["block/*", "head"], engine="compiled"
    )
    m = dump.manifest
    assert m["engine"] == "eager, then compiled (CPU)", m["engine"]
    keys = [t["key"] for t in m["tensors"]]
    assert keys and all(k.startswith("block/") or k == "head" for k in keys)
    arrays = {k: np.asarray(dump[k]).tolist() for k in dump}
    manifest = {k: m[k] for k in ("samples", "batch_size", "engine", "notes", "skipped", "run")}
    manifest["tensors"] = [{k: v for k, v in t.items() if k != "sha256"} for t in m["tensors"]]
    return {"manifest": manifest, "arrays": arrays}


def case_activations_depth(models, which):
    x = np.random.default_rng(2).integers(0, 20, (10, 6)).astype("int32")
    got = kerinspect.activations(models[which], x, layers="*", depth=1, batch_size=3, engine="eager")
    assert "block" in got and not [k for k in got if "/" in k]  # depth 1: nothing inside the block
    return {k: v.tolist() for k, v in got.items()}


def case_diff_depth_local(models, which):
    a, b = ("a", "b") if which == "a" else ("a_file", "b_file")
    report = kerinspect.diff_models(
        models[a], models[b], samples=12, batch_size=5, depth=1, local=True, diff_tolerance=1e-4
    )
    got = report.to_dict()
    paths = [p["path_a"] for p in got["pairs"]]
    assert "block" in paths and not [p for p in paths if "/" in p]  # depth 1
    assert got["divergence"]["path_a"] == "head"
    return got


CASES = {
    "inspect-depth-compiled": case_inspect_depth_compiled,
    "inspect-deep-eager": case_inspect_deep_eager,
    "attention": case_attention,
    "report": case_report,
    "dump-compiled-layers": case_dump_compiled_layers,
    "activations-depth": case_activations_depth,
    "diff-depth-local": case_diff_depth_local,
}


def _plain(obj):
    """A dataclass tree (the report's pictures) as plain data."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    return obj


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_model_object_and_its_file_give_the_same_result(models, name, tmp_path):
    case = CASES[name]
    kwargs = {"tmp_path": tmp_path} if "tmp_path" in case.__code__.co_varnames else {}
    in_memory = case(models, "a", **kwargs)
    from_file = case(models, "a_file", **kwargs)
    assert_same(from_file, in_memory, name)
