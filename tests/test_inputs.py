"""Synthetic samples from the signature, and validation of user-supplied arrays."""

from __future__ import annotations

import numpy as np
import pytest

from kerinspect.errors import ExitCode, InferenceError, InputFileError, UsageError


@pytest.fixture(scope="module")
def inp(keras):
    from kerinspect.engine import inputs

    return inputs


def batches(feed):
    return list(feed.batches())


def test_specs_read_dtype_shape_and_embedding_range(inp, factories):
    specs = inp.input_specs(factories.multi_io())
    assert [(s.name, s.shape, s.dtype) for s in specs] == [
        ("numbers", (None, 4), "float32"), ("ids", (None, 3), "int32")]
    assert specs[0].int_high is None and specs[1].int_high == 5


def test_embedding_range_found_through_nested_model(inp, keras):
    i = keras.Input((3,), dtype="int32")
    inner = keras.Model(i, keras.layers.Embedding(7, 2)(i))
    x = keras.Input((3,), dtype="int32", name="ids")
    spec = inp.input_specs(keras.Model(x, inner(x)))[0]
    assert spec.int_high == 7


def test_synthetic_is_seeded_typed_and_in_range(inp, factories):
    specs = inp.input_specs(factories.multi_io())
    a = batches(inp.synthetic_feed(specs, samples=50, batch_size=50, seed=1))[0]
    b = batches(inp.synthetic_feed(specs, samples=50, batch_size=50, seed=1))[0]
    c = batches(inp.synthetic_feed(specs, samples=50, batch_size=50, seed=2))[0]
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.float32 and a[1].dtype == np.int32
    assert a[1].min() == 0 and a[1].max() == 4  # [0, input_dim) and all values reached


def test_synthetic_samples_do_not_depend_on_batch_size(inp, factories):
    specs = inp.input_specs(factories.multi_io())
    whole = batches(inp.synthetic_feed(specs, samples=23, batch_size=23, seed=5))[0]
    parts = batches(inp.synthetic_feed(specs, samples=23, batch_size=4, seed=5))
    assert [len(p[0]) for p in parts] == [4, 4, 4, 4, 4, 3]
    for k in range(2):
        assert np.array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_dynamic_dims_default_and_overrides(inp, factories):
    specs = inp.input_specs(factories.dynamic())
    assert batches(inp.synthetic_feed(specs, samples=2, batch_size=2, seed=0))[0][0].shape == (2, 8, 3)
    assert batches(inp.synthetic_feed(specs, samples=2, batch_size=2, seed=0, dim=5))[0][0].shape == (2, 5, 3)
    shapes = inp.parse_shape_options(["x=11,3"], specs)
    feed = inp.synthetic_feed(specs, samples=2, batch_size=2, seed=0, shapes=shapes)
    assert batches(feed)[0][0].shape == (2, 11, 3)
    assert feed.records[0].shape == (2, 11, 3)
    assert inp.parse_shape_options(["4x3"], specs) == {"x": (4, 3)}


@pytest.mark.parametrize("bad", ["x=4,4", "x=4", "y=4,3", "x=a,3", "x=0,3"])
def test_bad_shape_options_are_usage_errors(inp, factories, bad):
    specs = inp.input_specs(factories.dynamic())
    with pytest.raises(UsageError) as e:
        shapes = inp.parse_shape_options([bad], specs)
        inp.synthetic_feed(specs, samples=1, batch_size=1, seed=0, shapes=shapes)
    assert e.value.exit_code == ExitCode.USAGE


def test_string_inputs_use_the_vocabulary(inp, keras):
    x = keras.Input((), dtype="string", name="text")
    lookup = keras.layers.StringLookup(vocabulary=["cat", "dog", "fish"])
    spec = inp.input_specs(keras.Model(x, lookup(x)))[0]
    assert spec.vocabulary == ("cat", "dog", "fish")
    arr = batches(inp.synthetic_feed([spec], samples=30, batch_size=30, seed=0))[0][0]
    assert set(arr.tolist()) == {"cat", "dog", "fish"}


def test_npy_and_npz_inputs(inp, factories, tmp_path):
    specs = inp.input_specs(factories.multi_io())
    nums, ids = np.ones((6, 4), np.float32), np.zeros((6, 3), np.int32)
    np.savez(tmp_path / "ok.npz", numbers=nums, ids=ids)
    arrays = inp.load_arrays(tmp_path / "ok.npz", specs)
    feed = inp.array_feed(arrays, specs, source="ok.npz", batch_size=4)
    got = batches(feed)
    assert [len(b[0]) for b in got] == [4, 2] and feed.samples == 6
    assert feed.records[1].shape == (6, 3) and feed.records[1].source == "ok.npz"
    one = inp.input_specs(factories.mlp())
    np.save(tmp_path / "x.npy", np.zeros((3, 6), np.float32))
    assert inp.load_arrays(tmp_path / "x.npy", one)["x"].shape == (3, 6)


@pytest.mark.parametrize(
    "arrays, rule",
    [
        ({"numbers": np.ones((6, 5), np.float32), "ids": np.zeros((6, 3), np.int32)}, "input-shape"),
        ({"numbers": np.ones((6,), np.float32), "ids": np.zeros((6, 3), np.int32)}, "input-shape"),
        ({"numbers": np.ones((6, 4), np.float32), "ids": np.zeros((5, 3), np.int32)}, "input-shape"),
        ({"numbers": np.ones((6, 4), np.float32), "ids": np.full((6, 3), 1.5)}, "input-dtype"),
        ({"numbers": np.ones((6, 4), np.float32), "ids": np.full((6, 3), 5)}, "input-range"),
        ({"numbers": np.ones((6, 4), np.float32), "ids": np.full((6, 3), -1)}, "input-range"),
        ({"numbers": np.array([["a"] * 4] * 6), "ids": np.zeros((6, 3), np.int32)}, "input-dtype"),
    ],
)
def test_bad_arrays_are_refused_with_a_rule(inp, factories, arrays, rule):
    specs = inp.input_specs(factories.multi_io())
    with pytest.raises(InferenceError) as e:
        inp.array_feed(arrays, specs, source="data.npz", batch_size=4)
    assert e.value.rule == rule and e.value.exit_code == ExitCode.INFERENCE
    assert "data.npz" in e.value.message


def test_file_problems(inp, factories, tmp_path):
    specs = inp.input_specs(factories.multi_io())
    with pytest.raises(InputFileError) as e:
        inp.load_arrays(tmp_path / "missing.npz", specs)
    assert e.value.exit_code == ExitCode.NO_INPUT
    np.save(tmp_path / "one.npy", np.zeros((2, 4)))
    with pytest.raises(InferenceError, match="2 inputs"):
        inp.load_arrays(tmp_path / "one.npy", specs)
    np.savez(tmp_path / "wrong.npz", numbers=np.zeros((2, 4)), idz=np.zeros((2, 3)))
    with pytest.raises(InferenceError, match="missing \\['ids'\\]; unknown \\['idz'\\]"):
        inp.load_arrays(tmp_path / "wrong.npz", specs)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputFileError, match="dtype object") as e:  # refused from its header: never unpickled
        inp.load_arrays(tmp_path / "obj.npy", specs[:1])
    assert e.value.rule == "input-dtype"
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputFileError):
        inp.load_arrays(tmp_path / "junk.npy", specs[:1])


def test_many_dynamic_axes_are_refused_before_allocating(inp, keras):
    """SAFETY row 32: a declared (None,)*12 input would be 8**12 elements per sample."""
    from kerinspect.errors import PolicyError

    spec = inp.input_specs(keras.Model(x := keras.Input((None,) * 12, name="x"), x))[0]
    with pytest.raises(PolicyError) as e:
        inp.synthetic_feed([spec], samples=1, batch_size=1, seed=0)
    assert e.value.rule == "input-too-large" and e.value.exit_code == ExitCode.REFUSED
    assert {"dim", "shapes"} <= set(e.value.hint_parts.parameters) and "--" not in e.value.hint


def test_negative_seed_is_a_usage_error(inp, factories):
    specs = inp.input_specs(factories.mlp())
    with pytest.raises(UsageError):
        inp.synthetic_feed(specs, samples=1, batch_size=1, seed=-1)
