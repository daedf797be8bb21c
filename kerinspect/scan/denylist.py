"""What the static scan refuses by name, whatever the allowlist says.

Hand-written policy, read by :mod:`kerinspect.scan.policy` and by
``scripts/gen_allowlist.py`` (which drops these names when it generates
:mod:`kerinspect.scan.allowlist` from the installed Keras). Rule ids are stable.
"""

from __future__ import annotations

#: Keras classes that load or run code or files named by the model:
#: class name -> rule id. Refused anywhere in a config, as a class or as a
#: ``{"class_name": "function"}`` target. ``Lambda`` is lifted by ``allow_code``.
DENIED_CLASSES: dict[str, str] = {
    "Lambda": "lambda-layer",  # marshal'd bytecode or a call to any function (CVE-2024-3660, CVE-2025-8747)
    "TFSMLayer": "tfsm-layer",  # tf.saved_model.load(<path from config>) (CVE-2026-1462, keras PR #23654)
    "TorchModuleWrapper": "torch-wrapper",  # torch.load -> pickle (CVE-2025-49655)
    "JaxLayer": "jax-wrapper",  # wraps arbitrary JAX callables
    "FlaxLayer": "jax-wrapper",  # wraps an arbitrary Flax module
}

#: Keras's own ``NON_MODELING_APIS`` (keras/src/saving/serialization_lib.py, 3.15.1).
#: Keras refuses these even with ``safe_mode=False``; so does kerinspect.
NON_MODELING_APIS: frozenset[str] = frozenset(
    {
        "keras.backend.clear_session",
        "keras.config.enable_unsafe_deserialization",
        "keras.models.load_model",
        "keras.models.model_from_json",
        "keras.models.save_model",
        "keras.preprocessing.image_dataset_from_directory",
        "keras.preprocessing.image.load_img",
        "keras.preprocessing.image.save_img",
        "keras.preprocessing.text_dataset_from_directory",
        "keras.saving.deserialize_keras_object",
        "keras.saving.load_model",
        "keras.saving.load_weights",
        "keras.saving.register_keras_serializable",
        "keras.saving.save_model",
        "keras.saving.save_weights",
        "keras.saving.serialize_keras_object",
        "keras.utils.audio_dataset_from_directory",
        "keras.utils.clear_session",
        "keras.utils.deserialize_keras_object",
        "keras.utils.get_file",
        "keras.utils.image_dataset_from_directory",
        "keras.utils.load_img",
        "keras.utils.register_keras_serializable",
        "keras.utils.save_img",
        "keras.utils.serialize_keras_object",
        "keras.utils.text_dataset_from_directory",
    }
)

#: Keras namespaces whose functions touch files, the network, global state or
#: whole models (``keras.datasets.mnist.load_data`` downloads, applications
#: fetch weights, ``keras.config`` flips process-wide flags). A function
#: reference into them is refused even with ``allow_code``.
NON_MODELING_PREFIXES: tuple[str, ...] = (
    "keras.applications",
    "keras.backend",
    "keras.callbacks",
    "keras.config",
    "keras.datasets",
    "keras.export",
    "keras.legacy",
    "keras.preprocessing",
    "keras.saving",
    "keras.utils",
    "keras.visualization",
    "keras._legacy",
    "keras.src.applications",
    "keras.src.backend",
    "keras.src.callbacks",
    "keras.src.datasets",
    "keras.src.export",
    "keras.src.legacy",
    "keras.src.saving",
    "keras.src.utils",
    "keras.src.visualization",
)

#: Public namespaces whose classes the allowlist takes (with their aliases).
CLASS_NAMESPACES: tuple[str, ...] = (
    "keras",
    "keras.layers",
    "keras.models",
    "keras.initializers",
    "keras.regularizers",
    "keras.constraints",
    "keras.dtype_policies",
    "keras.mixed_precision",
    "keras.optimizers",
    "keras.optimizers.schedules",
    "keras.losses",
    "keras.metrics",
    "keras.quantizers",
    "keras.random",
)

#: Classes Keras serializes under their defining module because they have no
#: public name (besides the raw-op classes of ``keras.src.ops.*``).
EXTRA_CLASSES: tuple[str, ...] = ("keras.src.models.functional.Functional",)

#: Packages whose modules define private layers that stock Keras models use
#: (``LayerScale`` in ConvNeXt, ``CustomScaleLayer`` in InceptionResNetV2...).
#: Only their classes are allowed; their functions stay non-modeling.
EXTRA_CLASS_PACKAGES: tuple[str, ...] = ("keras.src.applications",)

#: Public namespaces whose functions may be referenced (activations, and the
#: losses/metrics a compile config names). ``keras.ops`` is left out on purpose.
FUNCTION_NAMESPACES: tuple[str, ...] = ("keras.activations", "keras.losses", "keras.metrics")

#: Keras's ``BUILTIN_MODULES``: where ``{"module": "builtins", "class_name": "function"}`` is looked up.
BUILTIN_FUNCTION_MODULES: tuple[str, ...] = (
    "activations",
    "constraints",
    "initializers",
    "losses",
    "metrics",
    "optimizers",
    "regularizers",
)

#: Function names that deserialize or look up arbitrary objects.
EXCLUDED_FUNCTIONS: frozenset[str] = frozenset({"get", "serialize", "deserialize"})

# --------------------------------------------------------------------------- keras-hub

#: Packages of the registered names (``registered_name: "keras_hub>BertBackbone"``) that
#: keras-hub's classes are registered under (``keras_nlp`` is its former name, still
#: registered as an alias). ``scripts/gen_allowlist.py`` lists these registrations in
#: :mod:`kerinspect.scan.allowlist_hub`.
HUB_REGISTERED_PACKAGES: tuple[str, ...] = ("keras_hub", "keras_nlp")

#: Top-level packages whose registrations become live in the worker when it imports
#: keras_hub (keras-hub imports tensorflow_text, which registers ``Text>`` layers).
#: Keras looks a ``registered_name`` up before anything else, so once keras_hub is
#: imported a name of these packages resolves wherever it appears: the scan allows
#: only the allowlisted ones.
HUB_IMPORTED_PACKAGES: tuple[str, ...] = ("keras_hub", "tensorflow_text")

#: The only keras-hub registered *functions* a config may reference (an activation).
#: The others (``upload_preset``, ``serialize``/``deserialize``/``get``, the vocabulary
#: trainers, ImageNet/COCO label helpers, ``version``) are not modeling functions.
HUB_FUNCTIONS: frozenset[str] = frozenset({"gelu_approximate"})

#: keras-hub classes refused by name (none today: every registered class is a backbone,
#: task, layer, preprocessor, tokenizer, converter, sampler or metric; what their configs
#: may hold is checked by the scan, see :data:`HUB_PATH_KEYS`).
HUB_DENIED_CLASSES: frozenset[str] = frozenset()

#: Config keys of keras-hub classes whose *string* value the class reads as a file:
#: tokenizers' ``vocabulary``/``merges`` (WordPiece, BytePair, ParSeq...), SentencePiece
#: ``proto``, Whisper's ``special_tokens``/``language_tokens`` (``json.load`` of a path).
#: A saved model keeps them in its archive's assets and writes ``null`` here.
HUB_PATH_KEYS: frozenset[str] = frozenset(
    {"vocabulary", "merges", "proto", "special_tokens", "language_tokens", "tokenizer_file", "spm_proto"}
)
