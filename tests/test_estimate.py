"""The static parameter estimate (``kerinspect/scan/estimate/``) against Keras itself.

* Every layer class the allowlist accepts has a case in :data:`CASES` (a small instance,
  built with plain Keras inside a Functional model) or an explicit entry in
  :data:`EXCLUDED` with the reason. For each case the estimate from the serialized
  config equals ``model.count_params()`` exactly, the propagated output shapes equal
  Keras's, and the same layer inside a Sequential with only ``build_input_shape`` (no
  ``InputLayer``, no ``build_config``) estimates the same. A new Keras layer class with
  neither a formula nor an entry here fails :func:`test_every_allowlisted_layer_is_covered`.
* Crafted bombs of the families issue 16 found missing are refused through the real CLI
  and worker (exit 5, ``too-many-params``) before anything is built.
"""

from __future__ import annotations

import copy
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kerinspect.scan import estimate as est
from kerinspect.scan.allowlist import CLASSES

# ------------------------------------------------------------------ the case table


@dataclass(frozen=True)
class Case:
    """``make(layers)`` builds the layer; ``shapes`` are its inputs without the batch axis.

    ``call``: "one" (a tensor), "list" (merge layers: one list), "args" (attention:
    query, value[, key]) or "build" (cells, base classes: ``layer.build(shape)`` only).
    """

    cls: str
    make: Callable[[Any], Any]
    shapes: tuple[tuple[int | None, ...], ...]
    call: str = "one"
    dtypes: tuple[str, ...] = ()
    tag: str = ""
    needs: str = ""

    @property
    def id(self) -> str:
        return f"{self.cls}-{self.tag}" if self.tag else self.cls


def _c(cls: str, make: Callable[[Any], Any], *shapes: tuple[int | None, ...], **kw: Any) -> Case:
    return Case(cls, make, tuple(shapes), **kw)


def _named(name: str, *args: Any) -> Callable[[Any], Any]:
    """``make`` for ``keras.layers.<name>(*args)``."""
    return lambda L: getattr(L, name)(*args)


IMG = (8, 8, 3)
SEQ = (5, 4)
VOL = (4, 4, 4, 2)
SAME_SHAPE_IMAGE = [
    ("AugMix", lambda L: L.AugMix()),
    ("AutoContrast", lambda L: L.AutoContrast()),
    (
        "ContrastLimitedAdaptiveHistogramEqualization",
        lambda L: L.ContrastLimitedAdaptiveHistogramEqualization(),
    ),
    ("CutMix", lambda L: L.CutMix()),
    ("MaxNumBoundingBoxes", lambda L: L.MaxNumBoundingBoxes(max_number=3)),
    ("MixUp", lambda L: L.MixUp()),
    ("RandAugment", lambda L: L.RandAugment()),
    ("RandomBrightness", lambda L: L.RandomBrightness(0.2)),
    ("RandomColorDegeneration", lambda L: L.RandomColorDegeneration(0.2)),
    ("RandomColorJitter", lambda L: L.RandomColorJitter()),
    ("RandomContrast", lambda L: L.RandomContrast(0.2)),
    ("RandomElasticTransform", lambda L: L.RandomElasticTransform()),
    ("RandomErasing", lambda L: L.RandomErasing()),
    ("RandomFlip", lambda L: L.RandomFlip()),
    ("RandomGaussianBlur", lambda L: L.RandomGaussianBlur()),
    ("RandomGrayscale", lambda L: L.RandomGrayscale()),
    ("RandomHue", lambda L: L.RandomHue(0.2)),
    ("RandomInvert", lambda L: L.RandomInvert()),
    ("RandomPerspective", lambda L: L.RandomPerspective()),
    ("RandomPosterization", lambda L: L.RandomPosterization(4)),
    ("RandomRotation", lambda L: L.RandomRotation(0.2)),
    ("RandomSaturation", lambda L: L.RandomSaturation(0.2)),
    ("RandomSharpness", lambda L: L.RandomSharpness(0.2)),
    ("RandomShear", lambda L: L.RandomShear(0.2)),
    ("RandomTranslation", lambda L: L.RandomTranslation(0.2, 0.2)),
    ("RandomZoom", lambda L: L.RandomZoom(0.2)),
    ("Solarization", lambda L: L.Solarization()),
]
CASES: list[Case] = [
    *[_c(name, make, IMG) for name, make in SAME_SHAPE_IMAGE],
    # symbolically it returns its input tensor itself, which no Functional model can hold
    _c("Equalization", lambda L: L.Equalization(), IMG, call="build"),
    # activations, regularization, core
    _c("Activation", lambda L: L.Activation("relu"), SEQ),
    _c("ActivityRegularization", lambda L: L.ActivityRegularization(l1=0.1), SEQ),
    _c("AlphaDropout", lambda L: L.AlphaDropout(0.1), SEQ),
    _c("Dropout", lambda L: L.Dropout(0.5), SEQ),
    _c("GaussianDropout", lambda L: L.GaussianDropout(0.1), SEQ),
    _c("GaussianNoise", lambda L: L.GaussianNoise(0.1), SEQ),
    _c("SpatialDropout1D", lambda L: L.SpatialDropout1D(0.1), SEQ),
    _c("SpatialDropout2D", lambda L: L.SpatialDropout2D(0.1), IMG),
    _c("SpatialDropout3D", lambda L: L.SpatialDropout3D(0.1), VOL),
    _c("ELU", lambda L: L.ELU(), SEQ),
    _c("LeakyReLU", lambda L: L.LeakyReLU(), SEQ),
    _c("ReLU", lambda L: L.ReLU(), SEQ),
    _c("Softmax", lambda L: L.Softmax(), SEQ),
    _c("PReLU", lambda L: L.PReLU(), SEQ),
    _c("PReLU", lambda L: L.PReLU(shared_axes=[1]), IMG, tag="shared"),
    _c("Identity", lambda L: L.Identity(), SEQ),
    _c("Masking", lambda L: L.Masking(), SEQ),
    _c("Layer", lambda L: L.Layer(), (4,), call="build"),
    _c("Dense", lambda L: L.Dense(3), (4,)),
    _c("Dense", lambda L: L.Dense(3, use_bias=False), SEQ, tag="rank3"),
    _c("Dense", lambda L: L.Dense(3, lora_rank=2), (4,), tag="lora"),
    _c("EinsumDense", lambda L: L.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c"), (4,)),
    _c("EinsumDense", lambda L: L.EinsumDense("abc,cd->abd", output_shape=(None, 5)), (3, 4), tag="seq"),
    _c(
        "EinsumDense",
        lambda L: L.EinsumDense("...b,bc->...c", output_shape=5, bias_axes="c"),
        (2, 3, 4),
        tag="left",
    ),
    _c(
        "EinsumDense",
        lambda L: L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de"),
        (3, 4),
        tag="heads",
    ),
    _c(
        "EinsumDense",
        lambda L: L.EinsumDense("ab...,bc->ac...", output_shape=5, bias_axes="c"),
        (4, 3),
        tag="right",
    ),
    _c("EinsumDense", lambda L: L.EinsumDense("ab,bc->ac", output_shape=5, lora_rank=2), (4,), tag="lora"),
    _c("Embedding", lambda L: L.Embedding(10, 3), (4,), dtypes=("int32",)),
    _c("Embedding", lambda L: L.Embedding(10, 3, lora_rank=2), (4,), dtypes=("int32",), tag="lora"),
    _c("ReversibleEmbedding", lambda L: L.ReversibleEmbedding(10, 3), (4,), dtypes=("int32",)),
    _c(
        "ReversibleEmbedding",
        lambda L: L.ReversibleEmbedding(10, 3, tie_weights=False),
        (4,),
        dtypes=("int32",),
        tag="untied",
    ),
    # convolutions
    _c("Conv1D", lambda L: L.Conv1D(4, 3), (8, 3)),
    _c("Conv1D", lambda L: L.Conv1D(4, 3, padding="causal", dilation_rate=2), (8, 3), tag="causal"),
    _c("Conv1D", lambda L: L.Conv1D(6, 3, strides=2, groups=3, use_bias=False), (9, 3), tag="grouped"),
    _c("Conv2D", lambda L: L.Conv2D(4, 3, strides=2, padding="same"), IMG),
    _c("Conv2D", lambda L: L.Conv2D(4, (3, 2), groups=2), (8, 8, 4), tag="grouped"),
    _c("Conv3D", lambda L: L.Conv3D(2, 2), VOL),
    _c("Conv1DTranspose", lambda L: L.Conv1DTranspose(3, 3, strides=2), (5, 2)),
    _c("Conv2DTranspose", lambda L: L.Conv2DTranspose(3, 3, strides=2, padding="same"), (5, 5, 2)),
    _c(
        "Conv2DTranspose", lambda L: L.Conv2DTranspose(3, 3, strides=2, output_padding=1), (5, 5, 2), tag="op"
    ),
    _c("Conv3DTranspose", lambda L: L.Conv3DTranspose(2, 2, dilation_rate=1), (3, 3, 3, 2)),
    _c("DepthwiseConv1D", lambda L: L.DepthwiseConv1D(3, depth_multiplier=2), (8, 3)),
    _c("DepthwiseConv2D", lambda L: L.DepthwiseConv2D(3, strides=2), IMG),
    _c("SeparableConv1D", lambda L: L.SeparableConv1D(4, 3, depth_multiplier=2), (8, 3)),
    _c("SeparableConv2D", lambda L: L.SeparableConv2D(4, 3, padding="same"), IMG),
    _c("ConvLSTM1D", lambda L: L.ConvLSTM1D(3, 3), (4, 6, 2)),
    _c("ConvLSTM2D", lambda L: L.ConvLSTM2D(2, 3, padding="same", return_sequences=True), (3, 6, 6, 2)),
    _c("ConvLSTM2D", lambda L: L.ConvLSTM2D(2, 3, return_state=True), (3, 6, 6, 2), tag="state"),
    _c("ConvLSTM3D", lambda L: L.ConvLSTM3D(2, 2), (2, 4, 4, 4, 1)),
    # recurrent
    _c("SimpleRNN", lambda L: L.SimpleRNN(3), SEQ),
    _c("LSTM", lambda L: L.LSTM(3, return_sequences=True), SEQ),
    _c("LSTM", lambda L: L.LSTM(3, return_state=True, use_bias=False), SEQ, tag="state"),
    _c("GRU", lambda L: L.GRU(3), SEQ),
    _c("GRU", lambda L: L.GRU(3, reset_after=False, return_sequences=True), SEQ, tag="v1"),
    _c("SimpleRNNCell", lambda L: L.SimpleRNNCell(3), (4,), call="build"),
    _c("LSTMCell", lambda L: L.LSTMCell(3), (4,), call="build"),
    _c("GRUCell", lambda L: L.GRUCell(3), (4,), call="build"),
    _c("StackedRNNCells", lambda L: L.StackedRNNCells([L.LSTMCell(3), L.GRUCell(2)]), (4,), call="build"),
    _c("RNN", lambda L: L.RNN(L.LSTMCell(3)), SEQ),
    _c("RNN", lambda L: L.RNN([L.LSTMCell(3), L.GRUCell(2)], return_sequences=True), SEQ, tag="stacked"),
    _c("RNN", lambda L: L.RNN(L.SimpleRNNCell(2), return_state=True), SEQ, tag="state"),
    _c("Bidirectional", lambda L: L.Bidirectional(L.LSTM(3, return_sequences=True)), SEQ),
    _c(
        "Bidirectional",
        lambda L: L.Bidirectional(L.GRU(3), backward_layer=L.GRU(2, go_backwards=True), merge_mode="concat"),
        SEQ,
        tag="backward",
    ),
    _c("Bidirectional", lambda L: L.Bidirectional(L.RNN(L.LSTMCell(3)), merge_mode="sum"), SEQ, tag="cell"),
    _c("TimeDistributed", lambda L: L.TimeDistributed(L.Dense(3)), SEQ),
    _c("TimeDistributed", lambda L: L.TimeDistributed(L.Conv2D(2, 3)), (3, 6, 6, 2), tag="conv"),
    _c("Wrapper", lambda L: L.Wrapper(L.Dense(3)), (4,), call="build"),
    # normalization
    _c("BatchNormalization", lambda L: L.BatchNormalization(), IMG),
    _c("BatchNormalization", lambda L: L.BatchNormalization(axis=1, center=False), SEQ, tag="axis"),
    _c("LayerNormalization", lambda L: L.LayerNormalization(), SEQ),
    _c("LayerNormalization", lambda L: L.LayerNormalization(axis=[1, 2], center=False), SEQ, tag="axes"),
    _c("GroupNormalization", lambda L: L.GroupNormalization(groups=2), (6, 4)),
    _c("RMSNormalization", lambda L: L.RMSNormalization(), SEQ),
    _c("UnitNormalization", lambda L: L.UnitNormalization(), SEQ),
    _c("Normalization", lambda L: L.Normalization(), SEQ),
    _c("Normalization", lambda L: L.Normalization(axis=None), SEQ, tag="scalar"),
    _c("Normalization", lambda L: L.Normalization(axis=(1, 2)), SEQ, tag="axes"),
    _c("Normalization", lambda L: L.Normalization(mean=0.5, variance=2.0), SEQ, tag="given"),
    _c("SpectralNormalization", lambda L: L.SpectralNormalization(L.Dense(3)), (4,)),
    _c("SpectralNormalization", lambda L: L.SpectralNormalization(L.Conv2D(2, 3)), IMG, tag="conv"),
    _c("SpectralNormalization", lambda L: L.SpectralNormalization(L.Conv2DTranspose(2, 3)), IMG, tag="tconv"),
    # attention
    _c("Attention", lambda L: L.Attention(), (4, 3), (6, 3), call="list"),
    _c(
        "Attention",
        lambda L: L.Attention(use_scale=True, score_mode="concat"),
        (4, 3),
        (6, 3),
        call="list",
        tag="s",
    ),
    _c("AdditiveAttention", lambda L: L.AdditiveAttention(), (4, 3), (6, 3), call="list"),
    _c("MultiHeadAttention", lambda L: L.MultiHeadAttention(2, 3), (4, 5), (6, 5), call="args"),
    _c(
        "MultiHeadAttention",
        lambda L: L.MultiHeadAttention(2, 3, value_dim=4, output_shape=(2, 3), use_gate=True, use_bias=False),
        (4, 5),
        (6, 7),
        (6, 2),
        call="args",
        tag="full",
    ),
    _c(
        "GroupQueryAttention",
        lambda L: L.GroupQueryAttention(head_dim=2, num_query_heads=4, num_key_value_heads=2),
        (5, 6),
        (7, 6),
        call="args",
    ),
    _c(
        "GroupQueryAttention",
        lambda L: L.GroupQueryAttention(2, 4, 2, use_gate=True, use_bias=False),
        (5, 6),
        (7, 6),
        (7, 6),
        call="args",
        tag="gate",
    ),
    # pooling
    *[_c(f"MaxPooling{r}D", _named(f"MaxPooling{r}D", 2), s) for r, s in ((1, SEQ), (2, IMG), (3, VOL))],
    _c("MaxPooling2D", lambda L: L.MaxPooling2D(3, strides=2, padding="same"), IMG, tag="same"),
    *[
        _c(f"AveragePooling{r}D", _named(f"AveragePooling{r}D", 2), s)
        for r, s in ((1, SEQ), (2, IMG), (3, VOL))
    ],
    *[
        _c(f"Global{p}Pooling{r}D", _named(f"Global{p}Pooling{r}D"), s)
        for p in ("Max", "Average")
        for r, s in ((1, SEQ), (2, IMG), (3, VOL))
    ],
    _c("GlobalAveragePooling2D", lambda L: L.GlobalAveragePooling2D(keepdims=True), IMG, tag="keep"),
    *[
        _c(f"Adaptive{p}Pooling{r}D", _named(f"Adaptive{p}Pooling{r}D", 2), s)
        for p in ("Max", "Average")
        for r, s in ((1, (6, 3)), (2, IMG), (3, VOL))
    ],
    # reshaping
    _c("Cropping1D", lambda L: L.Cropping1D((1, 2)), (8, 3)),
    _c("Cropping2D", lambda L: L.Cropping2D(((1, 1), (2, 0))), IMG),
    _c("Cropping3D", lambda L: L.Cropping3D(1), (6, 6, 6, 2)),
    _c("ZeroPadding1D", lambda L: L.ZeroPadding1D((1, 2)), SEQ),
    _c("ZeroPadding2D", lambda L: L.ZeroPadding2D(((1, 2), (0, 1))), IMG),
    _c("ZeroPadding3D", lambda L: L.ZeroPadding3D(1), VOL),
    _c("UpSampling1D", lambda L: L.UpSampling1D(3), SEQ),
    _c("UpSampling2D", lambda L: L.UpSampling2D((2, 3)), IMG),
    _c("UpSampling3D", lambda L: L.UpSampling3D(2), VOL),
    _c("Flatten", lambda L: L.Flatten(), IMG),
    _c("Reshape", lambda L: L.Reshape((2, -1)), (3, 4)),
    _c("Permute", lambda L: L.Permute((2, 1)), (3, 4)),
    _c("RepeatVector", lambda L: L.RepeatVector(3), (4,)),
    # merging
    *[
        _c(name, _named(name), (4, 3), (4, 3), call="list")
        for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
    ],
    _c("Concatenate", lambda L: L.Concatenate(), (4, 3), (4, 2), call="list"),
    _c("Dot", lambda L: L.Dot(axes=1), (4,), (4,), call="list"),
    _c("Dot", lambda L: L.Dot(axes=(2, 2)), (3, 4), (5, 4), call="list", tag="seq"),
    # preprocessing
    _c("Rescaling", lambda L: L.Rescaling(0.5), IMG),
    _c("Resizing", lambda L: L.Resizing(4, 5), IMG),
    _c("CenterCrop", lambda L: L.CenterCrop(4, 5), IMG),
    _c("RandomCrop", lambda L: L.RandomCrop(4, 5), IMG),
    _c("CategoryEncoding", lambda L: L.CategoryEncoding(num_tokens=5), (3,), dtypes=("int32",)),
    _c("Hashing", lambda L: L.Hashing(num_bins=4), (3,), dtypes=("int32",)),
    _c(
        "HashedCrossing",
        lambda L: L.HashedCrossing(num_bins=5),
        (1,),
        (1,),
        call="list",
        dtypes=("int32", "int32"),
    ),
    _c("Discretization", lambda L: L.Discretization(bin_boundaries=[0.0, 1.0]), (3,)),
    _c("IntegerLookup", lambda L: L.IntegerLookup(vocabulary=[1, 2, 3]), (3,), dtypes=("int64",)),
    _c("StringLookup", lambda L: L.StringLookup(vocabulary=["a", "b"]), (3,), dtypes=("string",)),
    _c(
        "TextVectorization",
        lambda L: L.TextVectorization(vocabulary=["a", "b"], output_sequence_length=4),
        (1,),
        dtypes=("string",),
    ),
    _c("MelSpectrogram", lambda L: L.MelSpectrogram(), (1024,)),
    _c("STFTSpectrogram", lambda L: L.STFTSpectrogram(frame_length=16), (64, 1), needs="scipy"),
    _c("Pipeline", lambda L: L.Pipeline([L.Rescaling(0.5), L.RandomFlip()]), IMG),
]

#: (module, class) pairs outside ``keras.layers`` that are layers, with their cases
PRIVATE_CASES: list[Case] = [
    _c("LayerScale", lambda L: _private("keras.src.applications.convnext", "LayerScale")(1e-6, 4), (3, 4)),
    _c(
        "StochasticDepth",
        lambda L: _private("keras.src.applications.convnext", "StochasticDepth")(0.1),
        (3, 4),
    ),
    _c(
        "CustomScaleLayer",
        lambda L: _private("keras.src.applications.inception_resnet_v2", "CustomScaleLayer")(0.5),
        (3, 4),
        (3, 4),
        call="list",
    ),
]

#: allowlisted names that are not layer classes one can build and count; why
EXCLUDED = {
    "InputSpec": "not a layer (an input specification object)",
    "InputLayer": "in every case's model: keras.Input makes one (0 parameters, its shape is the input)",
}
#: aliases Keras resolves to the class of another name
ALIASES = {
    **{f"Convolution{r}D": f"Conv{r}D" for r in (1, 2, 3)},
    **{f"Convolution{r}DTranspose": f"Conv{r}DTranspose" for r in (1, 2, 3)},
    **{f"SeparableConvolution{r}D": f"SeparableConv{r}D" for r in (1, 2)},
    **{f"MaxPool{r}D": f"MaxPooling{r}D" for r in (1, 2, 3)},
    **{f"AvgPool{r}D": f"AveragePooling{r}D" for r in (1, 2, 3)},
    **{f"GlobalMaxPool{r}D": f"GlobalMaxPooling{r}D" for r in (1, 2, 3)},
    **{f"GlobalAvgPool{r}D": f"GlobalAveragePooling{r}D" for r in (1, 2, 3)},
    # keras.layers exports the class under a name that is not its own
    "GroupedQueryAttention": "GroupQueryAttention",
}
#: classes whose output shape the estimator does not propagate (weightless; the file's
#: stored shapes, and the next layer's build_config, stand in)
SHAPE_NOT_PROPAGATED = {"MelSpectrogram", "STFTSpectrogram"}

ALL_CASES = CASES + PRIVATE_CASES


def _private(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


#: layer classes that are models: walked layer by layer (tests/test_scan.py checks the
#: totals of the sample, factory and real-world models against Keras)
CONTAINERS = {"Model", "Sequential", "Functional"}


def _layer_modules() -> dict[str, frozenset[str]]:
    """Allowlisted modules that may hold layer classes."""
    prefixes = ("keras.src.layers.", "keras.src.applications.", "keras.src.models.")
    return {
        m: names
        for m, names in CLASSES.items()
        if m in ("keras", "keras.layers", "keras.models") or m.startswith(prefixes)
    }


# ------------------------------------------------------------------ helpers


def _shape_list(shape: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def _outputs(value: Any) -> list[list[int | None]]:
    if isinstance(value, (list, tuple)):
        return [_shape_list(v.shape) for v in value]
    if isinstance(value, dict):
        return [_shape_list(v.shape) for v in value.values()]
    return [_shape_list(value.shape)]


def _json(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


@dataclass
class Built:
    params: int
    model_config: dict[str, Any] | None  # serialize_keras_object(model), as config.json holds it
    layer_config: dict[str, Any]
    inputs: list[list[int | None]]
    outputs: list[list[int | None]] | None
    extra: dict[str, Any] = field(default_factory=dict)


def _build(keras: Any, case: Case) -> Built:
    L = keras.layers
    if case.needs:
        pytest.importorskip(case.needs)
    keras.utils.set_random_seed(0)
    layer = case.make(L)
    batched = [[None, *s] for s in case.shapes]
    if case.call == "build":
        layer.build(tuple(batched[0]))
        return Built(
            layer.count_params(), None, _json(keras.saving.serialize_keras_object(layer)), batched, None
        )
    dtypes = case.dtypes or ("float32",) * len(case.shapes)
    inputs = [keras.Input(shape=s, dtype=d) for s, d in zip(case.shapes, dtypes)]
    if case.call == "list":
        out = layer(inputs)
    elif case.call == "args":
        out = layer(*inputs[:2], key=inputs[2]) if len(inputs) > 2 else layer(*inputs)
    else:  # behind an Identity: a layer returning its input unchanged would make a cycle
        out = layer(L.Identity()(inputs[0]))
    model = keras.Model(inputs, out, name="m")
    config = _json(keras.saving.serialize_keras_object(model))
    layer_config = next(
        item for item in config["config"]["layers"] if item["config"].get("name") == layer.name
    )
    return Built(model.count_params(), config, layer_config, batched, _outputs(out))


# ------------------------------------------------------------------ the allowlist is covered


def test_every_allowlisted_layer_is_covered(keras):
    """A class Keras (or the allowlist generator) adds fails here until it has a formula
    (or is declared weightless) in estimate.py and a case (or an exclusion) here."""
    covered = {c.cls for c in ALL_CASES} | set(EXCLUDED) | set(ALIASES) | CONTAINERS
    missing: list[str] = []
    unknown_to_estimator: list[str] = []
    for module, names in _layer_modules().items():
        for name in sorted(names):
            obj = getattr(_import(module), name, None)
            if not (isinstance(obj, type) and issubclass(obj, keras.layers.Layer)) and name not in EXCLUDED:
                continue
            if name not in covered:
                missing.append(f"{module}.{name}")
            if name not in est.KNOWN and name not in EXCLUDED:
                unknown_to_estimator.append(f"{module}.{name}")
    assert not unknown_to_estimator, (
        f"layer classes with no formula nor weightless entry: {unknown_to_estimator}"
    )
    assert not missing, f"layer classes with no case in tests/test_estimate.py: {missing}"
    for alias, target in ALIASES.items():
        cls = getattr(keras.layers, alias, None) or getattr(keras.layers, target)
        assert cls is getattr(keras.layers, target) and alias in (cls.__name__, *dir(keras.layers)), alias
    # every weightless class really is one: a case proves it below (params == 0 is asserted there)
    assert est.WEIGHTLESS.isdisjoint(est.FORMULAS)


def _import(module: str) -> Any:
    import importlib

    return importlib.import_module(module)


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_estimate_equals_count_params(keras, case):
    built = _build(keras, case)
    if case.cls in est.WEIGHTLESS:
        assert built.params == 0, f"{case.cls} holds weights: it needs a formula"
    # the layer on its own, with the shapes propagated (legacy configs carry nothing else)
    bare = copy.deepcopy(built.layer_config)
    bare.pop("build_config", None)
    count, outs = est.estimate_layer(bare, list(built.inputs))
    if built.model_config is None:
        assert count == built.params
        return
    assert count == built.params, "propagated shapes"
    if case.cls in SHAPE_NOT_PROPAGATED:
        assert outs is None
    else:
        assert outs == built.outputs, "output shape"
    # the whole model as config.json holds it
    result = est.estimate(built.model_config, "m")
    assert result.params == built.params
    assert result.unknown == ()
    assert result.weight_bytes == 4 * built.params


@pytest.mark.parametrize(
    "case", [c for c in ALL_CASES if len(c.shapes) == 1 and c.call == "one"], ids=lambda c: c.id
)
def test_sequential_with_only_build_input_shape(keras, case):
    """Sequential without an InputLayer or per-layer build_config: the shape comes from
    ``build_input_shape`` (then the root build_config, then a legacy ``input_dim``)."""
    built = _build(keras, case)
    assert built.model_config is not None
    layer = copy.deepcopy(built.layer_config)
    for key in ("build_config", "inbound_nodes"):
        layer.pop(key, None)
    shape = built.inputs[0]
    seq = {"class_name": "Sequential", "config": {"name": "s", "layers": [layer], "build_input_shape": shape}}
    assert est.estimate(seq, "s").params == built.params
    seq["config"].pop("build_input_shape")
    seq["build_config"] = {"input_shape": shape}
    assert est.estimate(seq, "s").params == built.params
    if len(shape) == 2 and shape[1] is not None and "input_dim" not in layer["config"]:
        seq.pop("build_config")
        layer["config"]["input_dim"] = shape[1]
        assert est.estimate(seq, "s").params == built.params


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_class_names_estimate_like_their_class(keras, alias):
    case = next(c for c in ALL_CASES if c.cls == ALIASES[alias])
    built = _build(keras, case)
    layer = copy.deepcopy(built.layer_config)
    layer["class_name"] = alias
    assert est.estimate_layer(layer, list(built.inputs))[0] == built.params


# ------------------------------------------------------------------ lies and unknowns (no Keras)


def _functional(*layers: dict[str, Any], input_shape: list[int | None]) -> dict[str, Any]:
    def tensor(name: str, shape: list[int | None]) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"shape": shape, "keras_history": [name, 0, 0]}}

    items: list[dict[str, Any]] = [
        {
            "class_name": "InputLayer",
            "name": "in",
            "config": {"name": "in", "batch_shape": input_shape},
            "inbound_nodes": [],
        }
    ]
    prev = "in"
    for layer in layers:
        name = layer["config"]["name"]
        items.append(
            {**layer, "name": name, "inbound_nodes": [{"args": [tensor(prev, [None, 1])], "kwargs": {}}]}
        )
        prev = name
    return {
        "class_name": "Functional",
        "config": {"name": "m", "layers": items, "output_layers": [[prev, 0, 0]]},
    }


def test_stored_tensor_shapes_cannot_shrink_the_estimate():
    """The ``__keras_tensor__`` shapes in inbound_nodes claim (None, 1); Keras ignores them."""
    dense = {"class_name": "Dense", "config": {"name": "d", "units": 1000}}
    result = est.estimate(_functional(dense, input_shape=[None, 100_000]), "m")
    assert result.params == 100_000 * 1000 + 1000
    assert result.largest == (100_000 * 1000 + 1000, ("m", "d"))


def test_a_build_config_bigger_than_the_graph_counts():
    """Keras builds a layer from its build_config while deserializing it."""
    dense = {
        "class_name": "Dense",
        "config": {"name": "d", "units": 10},
        "build_config": {"input_shape": [None, 10**6]},
    }
    assert est.estimate(_functional(dense, input_shape=[None, 4]), "m").params == 10**7 + 10


def test_nested_cell_build_config_counts():
    cell = {"class_name": "LSTMCell", "config": {"units": 2}, "build_config": {"input_shape": [None, 1000]}}
    rnn = {"class_name": "RNN", "config": {"name": "r", "cell": cell}}
    assert est.estimate(_functional(rnn, input_shape=[None, 5, 3]), "m").params == 4 * 2 * (1000 + 2) + 8


def test_unknown_classes_count_their_declared_sizes():
    custom = {"class_name": "MyDense", "config": {"name": "c", "units": 1000}}
    result = est.estimate(_functional(custom, input_shape=[None, 5000]), "m")
    assert result.params == 5_000_000
    assert result.unknown == ((("m", "c"), "MyDense"),)
    hub = {
        "class_name": "TokenAndPositionEmbedding",
        "config": {"name": "t", "vocabulary_size": 50_000, "embedding_dim": 64},
    }
    assert est.estimate(_functional(hub, input_shape=[None, 8]), "m").params == 3_200_000
    plain = {"class_name": "MyScale", "config": {"name": "s", "factor": 3}}
    assert est.estimate(_functional(plain, input_shape=[None, 8]), "m").params == 0


def test_shape_alternatives_stay_linear():
    """Wrappers nested deep, each with its own build_config, stay cheap."""
    layer: dict[str, Any] = {"class_name": "Dense", "config": {"name": "d0", "units": 2}}
    for i in range(60):
        layer = {
            "class_name": "TimeDistributed",
            "config": {"name": f"t{i}", "layer": layer},
            "build_config": {"input_shape": [None, 2, i + 3]},
        }
    started = time.perf_counter()
    est.estimate({"class_name": "Sequential", "config": {"name": "s", "layers": [layer] * 50}}, "s")
    assert time.perf_counter() - started < 5


def test_past_the_budget_alternatives_are_merged_not_dropped(monkeypatch):
    monkeypatch.setattr(est, "_BUDGET", 0)
    dense = {
        "class_name": "Dense",
        "config": {"name": "d", "units": 10},
        "build_config": {"input_shape": [None, 10**6]},
    }
    assert est.estimate(_functional(dense, input_shape=[None, 4]), "m").params == 10**7 + 10
    lying = {"class_name": "Dense", "config": {"name": "d", "units": 1000}}
    assert est.estimate(_functional(lying, input_shape=[None, 100_000]), "m").params == 10**8 + 1000


def test_stft_kernels_follow_keras_build():
    """STFTSpectrogram needs scipy to be built (absent here): its build() makes real and
    imaginary kernels of shape (frame_length, 1, fft_length // 2 + 1), fft_length defaulting
    to the next power of two."""
    layer = {"class_name": "STFTSpectrogram", "config": {"name": "s", "frame_length": 17, "mode": "log"}}
    assert est.estimate_layer(layer, [[None, 64, 1]])[0] == 2 * 17 * (32 // 2 + 1)
    layer["config"].update(mode="real", fft_length=64)
    assert est.estimate_layer(layer, [[None, 64, 1]])[0] == 17 * 33


def test_memory_follows_the_variable_dtype():
    def dense(dtype: Any) -> dict[str, Any]:
        return {"class_name": "Dense", "config": {"name": "d", "units": 10, "dtype": dtype}}

    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float64"}}
    assert est.estimate(_functional(dense(policy), input_shape=[None, 9]), "m").weight_bytes == 100 * 8
    assert (
        est.estimate(_functional(dense("mixed_float16"), input_shape=[None, 9]), "m").weight_bytes == 100 * 4
    )
    assert est.estimate(_functional(dense("bfloat16"), input_shape=[None, 9]), "m").weight_bytes == 100 * 2


# ------------------------------------------------------------------ bombs through the real CLI


def _save(keras: Any, path: Any, model: Any) -> dict[str, Any]:
    model.save(path)
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))


def _rewrite(path: Any, config: dict[str, Any]) -> None:
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _layer(config: dict[str, Any], cls: str) -> dict[str, Any]:
    return next(item for item in config["config"]["layers"] if item["class_name"] == cls)


def _bombs(keras: Any, d: Any) -> dict[str, Any]:
    L = keras.layers
    out = {}

    p = d / "einsum.keras"  # 50,000 x 50,000: 2.5e9 parameters
    c = _save(
        keras, p, keras.Sequential([keras.Input((50_000,)), L.EinsumDense("ab,bc->ac", output_shape=3)])
    )
    _layer(c, "EinsumDense")["config"]["output_shape"] = 50_000
    _rewrite(p, c)
    out["einsum"] = p

    p = d / "rnn_cell.keras"  # RNN(cell=LSTMCell(units=10,000)): 4e8
    c = _save(keras, p, keras.Sequential([keras.Input((5, 4)), L.RNN(L.LSTMCell(3))]))
    _layer(c, "RNN")["config"]["cell"]["config"]["units"] = 10_000
    _rewrite(p, c)
    out["rnn_cell"] = p

    p = d / "convlstm.keras"  # ConvLSTM2D(filters=2,000): 1.4e8
    c = _save(keras, p, keras.Sequential([keras.Input((3, 6, 6, 2)), L.ConvLSTM2D(2, 3)]))
    _layer(c, "ConvLSTM2D")["config"]["filters"] = 2_000
    _rewrite(p, c)
    out["convlstm"] = p

    p = d / "spectral.keras"  # SpectralNormalization(Dense(10**8)): 5e8
    c = _save(keras, p, keras.Sequential([keras.Input((4,)), L.SpectralNormalization(L.Dense(3))]))
    _layer(c, "SpectralNormalization")["config"]["layer"]["config"]["units"] = 10**8
    _rewrite(p, c)
    out["spectral"] = p

    def headless(config: dict[str, Any]) -> dict[str, Any]:
        """The Sequential without its InputLayer and with no build_config anywhere."""
        config.pop("build_config", None)
        config["config"]["layers"] = [
            x for x in config["config"]["layers"] if x["class_name"] != "InputLayer"
        ]
        for x in config["config"]["layers"]:
            x.pop("build_config", None)
        config["config"].pop("build_input_shape", None)
        return config

    small = keras.Sequential([keras.Input((4,)), L.Dense(1000), L.Dense(2)])
    p = d / "build_input_shape.keras"  # Sequential.build((None, 10**6)) then Dense(1000): 1e9
    c = headless(_save(keras, p, small))
    c["config"]["build_input_shape"] = [None, 10**6]
    _rewrite(p, c)
    out["build_input_shape"] = p

    p = d / "root_build_config.keras"
    c = headless(_save(keras, p, small))
    c["build_config"] = {"input_shape": [None, 10**6]}
    _rewrite(p, c)
    out["root_build_config"] = p

    p = d / "input_dim.keras"  # legacy Dense(1000, input_dim=10**6)
    c = headless(_save(keras, p, small))
    c["config"]["layers"][0]["config"]["input_dim"] = 10**6
    _rewrite(p, c)
    out["input_dim"] = p
    return out


@pytest.fixture(scope="module")
def bombs(keras, tmp_path_factory):
    return _bombs(keras, tmp_path_factory.mktemp("bombs"))


BOMBS = ["einsum", "rnn_cell", "convlstm", "spectral", "build_input_shape", "root_build_config", "input_dim"]


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_estimated_above_a_million_and_refused_by_the_scan(bombs, name):
    from kerinspect.errors import PolicyError
    from kerinspect.scan import Limits, scan_model_file

    with zipfile.ZipFile(bombs[name]) as z:
        config = json.loads(z.read("config.json"))
    assert (est.estimate(config, "m").params or 0) > 10**8
    with pytest.raises(PolicyError) as e:  # what the worker runs before anything is built
        scan_model_file(bombs[name], "keras", Limits(max_params=1_000_000))
    assert (e.value.rule, e.value.exit_code) == ("too-many-params", 5)


@pytest.mark.isolated
def test_a_bomb_is_refused_before_anything_is_built(bombs, tmp_path, monkeypatch):
    """End to end for one of them (the scan's verdict on each is above): 10**9
    parameters, refused by the worker in seconds."""
    from click.testing import CliRunner

    from kerinspect.cli import cli

    monkeypatch.setenv("HOME", str(tmp_path))
    started = time.perf_counter()
    result = CliRunner().invoke(
        cli, ["summary", str(bombs["build_input_shape"]), "--max-params", "1000000", "--timeout", "60"]
    )
    elapsed = time.perf_counter() - started
    assert result.exit_code == 5, result.stderr
    assert "error[too-many-params]" in result.stderr, result.stderr
    assert elapsed < 60, elapsed
