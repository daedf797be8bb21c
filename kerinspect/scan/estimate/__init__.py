"""Parameter, weight-memory and input-size estimates from a model config, without building it.

Owned by the static scan (:mod:`kerinspect.scan.policy`). Pure Python; never imports
TensorFlow, Keras or numpy.

What is counted
    Every layer class of the installed Keras (``allowlist.CLASSES["keras.layers"]`` and the
    private application layers there) is in exactly one of three groups:

    * **weightless** (:data:`WEIGHTLESS`): no variables by construction (activations,
      dropout, pooling, reshaping, merging, augmentation, lookups...). They count 0 and
      propagate a shape where one can be computed.
    * **estimated** (:data:`FORMULAS`): a formula per family that mirrors the layer's
      ``build()`` -- Dense, EinsumDense (the equation, ``output_shape`` and ``bias_axes``
      are parsed as Keras does), every convolution (1D/2D/3D, transposed, depthwise,
      separable, grouped), ConvLSTM1D/2D/3D, Embedding, ReversibleEmbedding, SimpleRNN/LSTM/GRU
      and their cells, ``RNN(cell=...)`` with nested or stacked cells, StackedRNNCells,
      Bidirectional, TimeDistributed, SpectralNormalization and other wrappers, every
      normalization, MultiHeadAttention, GroupedQueryAttention, (Additive)Attention, PReLU,
      STFTSpectrogram, LoRA adapters, ConvNeXt's LayerScale. Nested models are walked.
    * **unknown**: anything else (custom or third-party classes such as keras-hub). They
      may hold any number of parameters, so they are not silently counted as 0: the
      product of the size-like integers their config declares (:data:`SIZE_KEYS`: ``units``,
      ``filters``, ``output_dim``, ``input_dim``, ``vocabulary_size``, ``hidden_dim``...),
      times the input's last dimension when the config declares exactly one output-size
      key and no input size, is added as their guess. A custom layer declaring
      ``units=10**9`` is therefore refused by ``--max-params`` like a Dense would be; a
      custom layer declaring no size counts 0. Their class names are reported in
      :attr:`Estimate.unknown`. ``tests/test_estimate.py`` fails when a new Keras layer
      class is neither weightless nor estimated.

Shapes
    Input shapes come, in Keras's own order of precedence, from an ``InputLayer``
    (``batch_shape``/``batch_input_shape``/``shape``), the first layer's legacy
    ``input_shape``/``input_dim``/``batch_input_shape`` arguments, a Sequential's
    ``build_input_shape``, and the model's root ``build_config``; they are then propagated
    layer by layer (``keras_history`` links in Keras 3 functional configs, layer names in
    legacy ones). Because Keras builds a layer from its own ``build_config`` while it is
    deserialized, and the ``__keras_tensor__`` shapes stored in ``inbound_nodes`` are only
    claims of the file, each layer is evaluated on every candidate shape (propagated,
    ``build_config``, stored) and the largest count is kept: a crafted file cannot shrink
    the estimate by lying in one of them. Unknown dimensions count as 1, so where the
    config is vague the estimate is a lower bound; for the built-in layers of an honest
    config it equals ``count_params()`` (checked for every class by the tests).

Memory
    :attr:`Estimate.weight_bytes` is every counted parameter times the byte size of its
    layer's variable dtype (``float64``: 8, ``float16``/``bfloat16``: 2, otherwise 4;
    ``mixed_*`` policies keep float32 variables). Quantized layouts (int8/int4/float8
    policies) are counted as their float layout, which upper-bounds the packed kernels but
    omits the per-channel scales (a fraction of a percent).

The work stays linear in the config's size: past a global budget of evaluations, a layer's
alternative shapes are merged (dimension-wise maximum) into one evaluation.
"""

from kerinspect.scan.estimate._common import Shape, Tensors, layer_name
from kerinspect.scan.estimate.formulas import FORMULAS, Formula
from kerinspect.scan.estimate.shapes import WEIGHTLESS, ShapeFn
from kerinspect.scan.estimate.walk import KNOWN, SIZE_KEYS, Estimate, estimate, estimate_layer

#: how many layer evaluations alternative (non-propagated) shapes may take in one config
#: (read by the walker at call time)
_BUDGET = 200_000

__all__ = [
    "FORMULAS",
    "KNOWN",
    "SIZE_KEYS",
    "WEIGHTLESS",
    "Estimate",
    "Formula",
    "Shape",
    "ShapeFn",
    "Tensors",
    "estimate",
    "estimate_layer",
    "layer_name",
]
