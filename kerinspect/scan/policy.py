"""The config policy: may Keras deserialize this model config at all?

One pass over every dict and list of a parsed model config (``config.json`` or
an HDF5 ``model_config``), after JSON parsing with size and depth caps
(:func:`kerinspect.scan.json_caps.parse_json_object`). Refused, with a stable rule id and the layer path:
``Lambda`` layers and marshal'd bytecode, function references outside a small
allowlist, ``TFSMLayer``/``TorchModuleWrapper``, modules outside Keras,
file-path arguments, strings smuggled into ``inbound_nodes`` (SAFETY.md rows
1-15); models too big to build (a parameter estimate from the config) or to
feed (elements per sample of a declared input).

A Keras 2 tensor passed to a call by keyword is stored as a reference
``[layer_name, node_index, tensor_index]`` in a list-form node's kwargs
(``mha(x, x)`` saves ``{"value": ["x", 0, 0]}``): exactly that shape, naming a layer
of the same graph (:func:`is_tensor_reference`), is a tensor, not a string argument.
tf.keras 2.x ``TFOpLambda``/``SlicingOpLambda`` layers name a TensorFlow op that the
loader computes from its own table (never resolved against TensorFlow); their calls
may pass the op's ``name`` string.

Classes that are neither allowed nor dangerous (a user's custom layer) are not
refused: they are reported back as unknown for the loader. The known Keras
classes are listed in the generated :mod:`kerinspect.scan.allowlist`; what is
refused by name is in :mod:`kerinspect.scan.denylist`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

from kerinspect.errors import Message, msg
from kerinspect.scan import allowlist as _allowlist
from kerinspect.scan import allowlist_hub as _allowlist_hub
from kerinspect.scan import denylist as _denylist
from kerinspect.scan.container import Limits, Reporter, show
from kerinspect.scan.estimate import estimate, layer_name
from kerinspect.scan.keras2 import is_keras_or_tf_keras

__all__ = ["ConfigScanner", "ConfigSummary", "is_tensor_reference", "scan_config"]

#: ``(estimated_params, class_names, unknown_classes)``
ConfigSummary = tuple[int | None, tuple[str, ...], tuple[str, ...]]

#: ``class_name`` markers Keras decodes itself (tensors, slices, tuples...), not classes.
_MARKERS = frozenset(
    {
        "__keras_tensor__",
        "__tensor__",
        "__numpy__",
        "__bytes__",
        "__ellipsis__",
        "__slice__",
        "__tuple__",
        "TensorShape",
    }
)
#: Legacy-HDF5 JSON objects that ``json_utils.decode`` turns into TF objects while parsing.
_TF_DECODED = frozenset({"TypeSpec", "CompositeTensor", "__typespec__"})
#: Config keys whose *string* value Keras treats as a file path or URL (CVE-2025-12058 and kin).
_PATH_KEYS = frozenset(
    {
        "vocabulary",
        "vocabulary_file",
        "vocab_file",
        "merges",
        "merges_file",
        "filepath",
        "file_path",
        "path",
        "fname",
        "origin",
        "url",
        "cache_dir",
        "cache_subdir",
        "directory",
        "export_dir",
        "saved_model_dir",
        "model_file",
        "proto",
        "weights",
    }
)
#: Packages whose classes or functions are never part of a model config.
_FOREIGN_PACKAGES = frozenset(
    {
        "tensorflow",
        "tf_keras",
        "tf",
        "torch",
        "jax",
        "flax",
        "numpy",
        "scipy",
        "h5py",
        "pandas",
        "requests",
        "urllib3",
        "setuptools",
        "pip",
        "dill",
        "cloudpickle",
        "joblib",
        "IPython",
    }
)

#: tf.keras 2.x raw-TensorFlow-op layers (the loader converts them, see engine/tfop.py).
TF_OP_CLASSES = frozenset({"TFOpLambda", "SlicingOpLambda"})
#: How an Ellipsis travels in a TFOpLambda's node once upgraded (``scan/upgrade.py``).
TF_OP_ELLIPSIS = "..."
#: Where tf.keras 2.13-2.15 ``.keras`` archives put their model classes (Keras 3: keras.src.models).
_KERAS2_ARCHIVE_MODULES = ("keras.src.engine.", "keras.engine.")
_MODEL_CLASS_NAMES = frozenset({"Functional", "Sequential", "Model"})
#: tf_keras's layer name for a constant first argument of a call.
_CONSTANT_VALUE = "_CONSTANT_VALUE"

_ALL_CLASS_NAMES: frozenset[str] = frozenset().union(*_allowlist.CLASSES.values())
#: ``(module, class_name)`` of every allowlisted keras-hub class, as Keras finds it when no
#: registered name resolves (``importlib.import_module(module)``, then the name in it).
_HUB_MODULE_CLASSES: frozenset[tuple[str, str]] = frozenset(
    (module, name) for module, _, name in (v.partition(":") for v in _allowlist_hub.CLASSES.values())
)
#: The top-level packages of keras-hub's modules (its former name included).
_HUB_MODULE_PACKAGES = frozenset(_denylist.HUB_REGISTERED_PACKAGES)
#: Strings in a keras-hub class's config that name a file or URL: a scheme (http(s)://,
#: gs://, hf://, kaggle://, s3://...), ``file:``, an absolute or home path, a ``..`` step,
#: or a vocabulary/proto/merges/config file name. keras-hub tokenizers open such strings.
_HUB_FILE_VALUE = re.compile(
    r"""^\s*(?:[A-Za-z][A-Za-z0-9+.-]*://|file:|/|~|\\|[A-Za-z]:[\\/])"""
    r"""|(?:^|[\\/])\.\.(?:[\\/]|$)"""
    r"""|\.(?:txt|model|json|spm|vocab|proto|pb|bin|tiktoken|h5|keras|npy|npz|zip|tar|gz)\s*$""",
    re.I,
)
#: A preset's own file name (``"config_file": "tokenizer.json"``): keras-hub reads it only in
#: ``from_preset``, inside the preset directory, never when deserializing a config.
_HUB_CONFIG_FILE = re.compile(r"^[A-Za-z0-9_-]+\.json$")
#: A registered object's name (``keras_hub>WhisperTokenizer``, ``MyPackage>my_fn``): a plain
#: string like it anywhere in a config is resolved by Keras from its registry when a layer
#: deserializes that field (an activation, a Lambda's function...).
_REGISTERED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*>[A-Za-z_][A-Za-z0-9_]*")
#: Keys whose string Keras resolves itself, judged with their object (:meth:`ConfigScanner._check_object`).
_OBJECT_KEYS = ("class_name", "module", "registered_name")
_STDLIB: frozenset[str] = frozenset(sys.stdlib_module_names) - {"__main__"}


# --------------------------------------------------------------------------- helpers


def _loc_text(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return show(out or "$", 160)


def _package(module: str) -> str:
    return module.split(".", 1)[0]


def _is_keras_module(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_tensor_reference(x: Any, layer_names: frozenset[str] | set[str]) -> bool:
    """Exactly ``[layer_name, node_index, tensor_index]`` naming a layer of the graph:
    how Keras 2 stored a tensor passed to a call by keyword."""
    return (
        isinstance(x, list)
        and len(x) == 3
        and isinstance(x[0], str)
        and x[0] in layer_names
        and _is_int(x[1])
        and _is_int(x[2])
    )


def graph_layer_names(layers: list[Any]) -> frozenset[str]:
    """The names of the layers of one functional config's ``layers`` list."""
    names = set()
    for lay in layers:
        if isinstance(lay, dict):
            cfg = lay.get("config")
            name = lay.get("name", cfg.get("name") if isinstance(cfg, dict) else None)
            if isinstance(name, str):
                names.add(name)
    return frozenset(names)


# --------------------------------------------------------------------------- config walk


#: The next step for code a file would run.
_TRUST_HINT = msg("only if you trust this file: {trust_model}")
#: A kept refusal: ``(rule, what, layer path, loc, hint, needs_trust)``.
_CodeRefusal = tuple[str, str, tuple[str, ...], tuple[str | int, ...], str | Message | None, bool]


class ConfigScanner:
    """One pass over every dict and list of a model config."""

    def __init__(
        self,
        limits: Limits,
        allow_code: bool,
        custom_classes: frozenset[str],
        rep: Reporter,
        *,
        tensor_references: bool = True,
    ) -> None:
        self.limits = limits
        self.allow_code = allow_code
        self.custom = custom_classes
        self.rep = rep
        self.class_names: set[str] = set()
        self.unknown: set[str] = set()
        #: Accept Keras 2 tensor references in list-form nodes (legacy .h5 configs,
        #: which the loader rewrites as tensors); off for .keras archives.
        self.tensor_references = tensor_references
        self._graphs: list[frozenset[str]] = [frozenset()]
        #: allowlisted keras-hub classes and functions the config uses (the loader
        #: imports keras_hub for them), and the config dicts of those objects
        self.hub: set[str] = set()
        self._hub_nodes: set[int] = set()
        self._in_hub = 0
        #: the first refusal that --trust-model lifts (code the file would run), kept
        #: until the walk ends so that its message can also name the custom classes
        #: the file needs: ``(rule, what, path, loc, hint, needs_trust)``
        self._code_refusal: _CodeRefusal | None = None

    # -- entry points
    def check_shape(self, config: Any) -> None:
        """Refuse a config that does not describe a model (not an object, no
        ``class_name`` and ``config``)."""
        if not isinstance(config, dict):
            self.rep.malformed("bad-config", "The model config is not a JSON object.")
        if not isinstance(config.get("class_name"), str) or not isinstance(config.get("config"), dict):
            self.rep.malformed(
                "bad-config",
                "The model config has no 'class_name' and 'config': it does not describe a model.",
            )

    def check_modules(self, config: Any) -> None:
        """Judge the ``module`` of every object in ``config`` as written: a Keras 2
        archive's config names modules that its Keras 2 form (what is built, and judged
        whole by :meth:`run`) drops. The loader imports none of them, but one outside
        Keras (``os``) marks a hostile file, refused as such."""

        def walk(node: Any, loc: tuple[str | int, ...]) -> None:
            if isinstance(node, list):
                for i, item in enumerate(node):
                    walk(item, (*loc, i))
            elif isinstance(node, dict):
                module, cn = node.get("module"), node.get("class_name")
                if isinstance(module, str) and "class_name" in node and not is_keras_or_tf_keras(module):
                    what = (
                        f"function '{show(node.get('config'))}'"
                        if cn == "function"
                        else f"class '{show(cn)}'"
                    )
                    self._check_module(module, what, (), loc)
                for key, value in node.items():
                    walk(value, (*loc, key))

        walk(config, ())

    def run(self, config: Any) -> ConfigSummary:
        self.check_shape(config)
        root = config["config"].get("name")
        root_name = root if isinstance(root, str) else "model"
        self._walk(config, (), (root_name,), inert=False)
        self._raise_code_refusal()
        params = self._check_size(config, root_name)
        return params, tuple(sorted(self.class_names)), tuple(sorted(self.unknown))

    def _check_size(self, config: dict[str, Any], root_name: str) -> int | None:
        est = estimate(config, root_name)
        limits = self.limits
        for path, key, shp, elements in est.inputs:
            if elements > limits.max_input_elements:
                self.rep.policy(
                    "input-too-large",
                    f"Input '{'/'.join(show(p, 120) for p in path)}' declares {elements:,} elements per sample "
                    f"({key}={show(shp)}), above the limit of {limits.max_input_elements:,}.",
                )
        if est.params is not None and est.params > limits.max_params:
            count, where = est.largest
            self.rep.policy(
                "too-many-params",
                f"The model declares about {est.params:,} parameters, above the limit of {limits.max_params:,} "
                f"(largest: layer '{'/'.join(show(p, 120) for p in where)}' with {count:,}); "
                "it is refused before anything is built.",
                hint=msg("raise {max_params} if this size is expected"),
            )
        return est.params

    # -- messages
    def _where(self, layer_path: tuple[str, ...], loc: tuple[str | int, ...]) -> str:
        if not layer_path:
            return f"(at {_loc_text(loc)})"
        shown = "/".join(show(p, 120) for p in layer_path)
        return f"(layer '{shown}', at {_loc_text(loc)})"

    def refuse(
        self,
        rule: str,
        what: str,
        layer_path: tuple[str, ...],
        loc: tuple[str | int, ...],
        hint: str | Message | None = None,
    ) -> NoReturn:
        self.rep.policy(rule, f"{what} {self._where(layer_path, loc)}.", hint=hint)

    def malformed(self, what: str, layer_path: tuple[str, ...], loc: tuple[str | int, ...]) -> NoReturn:
        self.rep.malformed("bad-config", f"{what} {self._where(layer_path, loc)}.")

    def refuse_code(
        self,
        rule: str,
        what: str,
        layer_path: tuple[str, ...],
        loc: tuple[str | int, ...],
        hint: str | Message | None = _TRUST_HINT,
        *,
        needs_trust: bool = True,
    ) -> None:
        """A refusal of code the file would run (lifted by --trust-model, or for a
        registered function by --custom-objects): the first one is raised when the
        walk ends (:meth:`_raise_code_refusal`), the rest of the config still walked."""
        if self._code_refusal is None:
            self._code_refusal = (rule, what, layer_path, loc, hint, needs_trust)

    def _raise_code_refusal(self) -> None:
        """Raise the kept code refusal; when the file also uses classes that are not
        loaded, one line says that it needs --custom-objects too."""
        if self._code_refusal is None:
            return
        rule, what, layer_path, loc, hint, needs_trust = self._code_refusal
        if not self.unknown:
            self.refuse(rule, what, layer_path, loc, hint=hint)
        names = sorted(self.unknown)
        shown = ", ".join(repr(show(n, 80)) for n in names[:5]) + (", ..." if len(names) > 5 else "")
        plural = len(names) > 1
        self.rep.policy(
            rule,
            f"{what} {self._where(layer_path, loc)}; the model also uses custom class{'es' if plural else ''} "
            f"{shown}, which {'are' if plural else 'is'} not loaded.",
            hint=msg(
                "this file needs both {custom_objects} FILE.py that defines {shown} and, only if you trust "
                "this file, {trust_model}",
                shown=shown,
            )
            if needs_trust
            else msg(
                "pass {custom_objects} FILE.py that defines {shown} and defines and registers the function",
                shown=shown,
            ),
        )

    # -- the walk
    def _walk(self, node: Any, loc: tuple[str | int, ...], path: tuple[str, ...], inert: bool) -> None:
        if len(loc) > self.limits.max_json_depth:
            self.refuse(
                "json-too-deep",
                f"The config nests deeper than {self.limits.max_json_depth} levels",
                path,
                loc,
            )
        if isinstance(node, list):
            for i, item in enumerate(node):
                self._walk(item, (*loc, i), path, inert)
            return
        if not isinstance(node, dict):
            return
        if "class_name" in node:
            self._check_object(node, loc, path, inert)
        hub = id(node) in self._hub_nodes
        self._in_hub += hub
        function_node = node.get("class_name") == "function"  # its config: _check_function's
        for key, value in node.items():
            sub = (*loc, key)
            if (
                isinstance(value, str)
                and key not in _OBJECT_KEYS
                and not (function_node and key == "config")
                and _REGISTERED_NAME.fullmatch(value)
            ):
                self._check_registered_string(value, path, sub, inert)
            if self._in_hub and isinstance(value, str) and isinstance(key, str):
                self._check_hub_string(key, value, path, sub)
            if isinstance(value, str) and isinstance(key, str) and key.lower() in _PATH_KEYS and value:
                self.refuse(
                    "file-path-argument",
                    f"Argument '{show(key, 40)}' names a file or URL ({show(value, 120)!s}); "
                    "Keras would read it from outside the model file (CVE-2025-12058)",
                    path,
                    sub,
                )
            if key == "inbound_nodes":
                self._check_nodes(value, sub, path, node.get("class_name") in TF_OP_CLASSES)
            child_inert = inert or (loc == () and key == "compile_config")
            if key in ("layers", "cells") and isinstance(value, list):
                self._graphs.append(graph_layer_names(value) if self.tensor_references else frozenset())
                try:
                    for i, item in enumerate(value):
                        self._walk(item, (*sub, i), (*path, layer_name(item, i)), child_inert)
                finally:
                    self._graphs.pop()
            elif key in ("layer", "forward_layer", "backward_layer", "cell") and isinstance(value, dict):
                self._walk(value, sub, (*path, layer_name(value, key)), child_inert)
            else:
                self._walk(value, sub, path, child_inert)
        self._in_hub -= hub

    def _check_registered_string(
        self, name: str, path: tuple[str, ...], loc: tuple[str | int, ...], inert: bool
    ) -> None:
        """A plain string that names a registered object (``package>Name``), wherever it
        sits: Keras resolves it from its registry when the layer deserializes that field,
        and calls what it finds with arguments of the layer's choosing (a Lambda calls its
        function with the call's tensors). It is the user's own (declared), an allowlisted
        keras-hub function (an activation), or it is refused: an allowlisted keras-hub
        class named this way would be built with arguments the scan never judged (a
        tokenizer opening a path the model names); any other name is an unknown object."""
        if inert or name in self.custom:
            return
        if name in _allowlist_hub.FUNCTIONS:
            self.hub.add(name)
            return
        if name in _allowlist_hub.CLASSES:
            self.refuse_code(
                "registered-class-string",
                f"The config names the registered class {show(name, 120)!s} in a plain string, which Keras "
                "would resolve and call with arguments kerinspect cannot judge",
                path,
                loc,
            )
            return
        self.unknown.add(name)

    def _check_hub_string(
        self, key: str, value: str, path: tuple[str, ...], loc: tuple[str | int, ...]
    ) -> None:
        """Inside a keras-hub object's config: refuse a string that names a file or URL
        (keras-hub tokenizers open a string ``vocabulary``, ``merges``, ``proto``...)."""
        if key in ("class_name", "module", "registered_name") or not value:
            return
        if key == "config_file" and _HUB_CONFIG_FILE.match(value):
            return
        if key.lower() in _denylist.HUB_PATH_KEYS or _HUB_FILE_VALUE.search(value):
            self.refuse(
                "file-path-argument",
                f"keras-hub argument '{show(key, 40)}' names a file or URL ({show(value, 120)!s}); "
                "keras-hub would read it from outside the model file",
                path,
                loc,
            )

    def _hub_verdict(self, cn: str, module: str | None, reg: str | None) -> str | None:
        """``"hub"`` for an allowlisted keras-hub class, ``"unknown"`` for a keras-hub name
        the allowlist does not hold, None when the object is not keras-hub's.

        Keras resolves ``registered_name`` first, from the registry, which holds keras-hub's
        (and tensorflow_text's) classes once the worker imports keras_hub: such a name decides
        whatever ``module`` says. Otherwise Keras imports ``module`` and takes ``class_name``
        from it."""
        package, sep, _ = (reg or "").partition(">")
        if sep and package in _allowlist_hub.PACKAGES:
            return "hub" if reg in _allowlist_hub.CLASSES else "unknown"
        if reg is None and module is None:  # a Keras 2 form: the legacy loader looks the name up
            package, sep, _ = cn.partition(">")
            if sep and package in _allowlist_hub.PACKAGES:
                return "hub" if cn in _allowlist_hub.CLASSES else "unknown"
        if module is not None and _package(module) in _HUB_MODULE_PACKAGES:
            return "hub" if (module, cn) in _HUB_MODULE_CLASSES else "unknown"
        return None

    def _check_object(
        self, node: dict[str, Any], loc: tuple[str | int, ...], path: tuple[str, ...], inert: bool
    ) -> None:
        cn, module, reg = node.get("class_name"), node.get("module"), node.get("registered_name")
        if (
            not isinstance(cn, str)
            or not isinstance(module, (str, type(None)))
            or not isinstance(reg, (str, type(None)))
        ):
            self.malformed("'class_name', 'module' and 'registered_name' must be strings", path, loc)
        if cn in _MARKERS:
            return
        if cn == "__lambda__":
            if not (self.allow_code or inert):
                self.refuse_code(
                    "lambda-bytecode",
                    "Serialized Python bytecode (__lambda__) would run when the model is loaded",
                    path,
                    loc,
                )
            return
        if cn == "function":
            verdict = self._check_function(node, loc, path, inert)
            if verdict == "code" and not (self.allow_code or inert):
                self.refuse_code(
                    "function-reference",
                    f"The config calls function '{show(module)}.{show(node.get('config'))}', "
                    "which is not on kerinspect's allowlist of Keras functions",
                    path,
                    loc,
                )
            return
        self.class_names.add(cn)
        if module is not None:
            self._check_module(module, f"class '{show(cn)}'", path, loc)
            if module.startswith(_KERAS2_ARCHIVE_MODULES) and cn in _MODEL_CLASS_NAMES:
                self.rep.malformed(
                    "keras2-archive",
                    f"This .keras archive was written by tf.keras 2.13-2.15 (class '{show(cn)}' from module "
                    f"'{show(module)}'), whose archive layout Keras 3 does not read.",
                    hint="open it with tf_keras (Keras 2) and save it as .h5, which kerinspect reads",
                )
        if cn in TF_OP_CLASSES and (module is None or _is_keras_module(module)):
            return  # computed by the loader from its own op table, by the op's name
        denied = _denylist.DENIED_CLASSES.get(cn)
        if denied == "lambda-layer":
            self._check_lambda(node, loc, path)
        elif denied:
            self.refuse(denied, f"{show(cn)} loads or runs code or files named by the model", path, loc)
        if denied:  # only a Lambda under allow_code gets here: a Keras class, if Keras's module
            allowed = module is None or _is_keras_module(module)
        elif cn in _TF_DECODED:
            allowed = False
        elif module is None:
            allowed = cn in _ALL_CLASS_NAMES
        elif _is_keras_module(module):
            allowed = cn in _allowlist.CLASSES.get(module, ())
        else:
            allowed = False
        hub = None if denied else self._hub_verdict(cn, module, reg)
        if hub is not None:
            allowed = hub == "hub"
            if allowed and not inert:
                self.hub.add(reg if reg in _allowlist_hub.CLASSES else cn)
                self._hub_nodes.add(id(node))
        if allowed or inert:
            return
        # Keras resolves a keras.* module itself; custom objects only win through registered_name.
        vouchable = {reg} if module is not None and _is_keras_module(module) else {cn, reg}
        if not (vouchable & self.custom):
            self.unknown.add(reg if reg and reg != cn and ">" in reg else cn)

    def _check_module(
        self, module: str, what: str, path: tuple[str, ...], loc: tuple[str | int, ...]
    ) -> None:
        pkg = _package(module)
        if not _is_keras_module(module) and (pkg in _STDLIB or pkg in _FOREIGN_PACKAGES or not module):
            self.refuse(
                "non-keras-module",
                f"The config loads {what} from module '{show(module)}', which is not part of Keras",
                path,
                loc,
            )

    def _check_function(
        self, node: dict[str, Any], loc: tuple[str | int, ...], path: tuple[str, ...], inert: bool
    ) -> str:
        """Refuse gadget references; return "ok", "code" (needs allow_code) or "custom"."""
        name, module, reg = node.get("config"), node.get("module"), node.get("registered_name")
        if not isinstance(name, str):
            self.malformed("A function reference must name its function with a string 'config'", path, loc)
        denied = _denylist.DENIED_CLASSES.get(name)
        if denied and denied != "lambda-layer":
            self.refuse(
                denied,
                f"The config calls {show(name)}, which loads code or files named by the model",
                path,
                loc,
            )
        if module is None:
            if not (inert or {name, reg} & self.custom):
                self.unknown.add(name)
            return "custom"
        if module == "builtins":
            if name in _allowlist.BUILTIN_FUNCTIONS:
                return "ok"
            if name in _allowlist_hub.FUNCTIONS:  # keras-hub's registered activation
                if not inert:
                    self.hub.add(name)
                return "ok"
            # Keras 3 writes a registered function (``package>name``) as a builtins
            # reference; Keras's safe mode resolves it from the user's registration.
            return "declared" if name in self.custom else "code"
        self._check_module(module, f"function '{show(name)}'", path, loc)
        if _is_keras_module(module):
            api = f"{module}.{name}"
            if api in _denylist.NON_MODELING_APIS or any(
                module == p or module.startswith(p + ".") for p in _denylist.NON_MODELING_PREFIXES
            ):
                self.refuse(
                    "non-modeling-api",
                    f"The config calls '{show(api)}', which is not a modeling function "
                    "(it touches files, the network or global state)",
                    path,
                    loc,
                )
            if denied == "lambda-layer":
                return "code"
            return "ok" if name in _allowlist.FUNCTIONS.get(module, ()) else "code"
        if not (inert or {name, reg} & self.custom):
            self.unknown.add(reg if reg and ">" in reg else name)
        return "custom"

    def _check_lambda(self, node: dict[str, Any], loc: tuple[str | int, ...], path: tuple[str, ...]) -> None:
        inner = node.get("config")
        inner = inner if isinstance(inner, dict) else {}
        bytecode = False
        for key in ("function", "output_shape"):
            value = inner.get(key)
            if isinstance(value, dict) and value.get("class_name") == "__lambda__":
                bytecode = True
            elif isinstance(value, (list, str)) and inner.get(f"{key}_type") == "lambda":
                bytecode = True  # Keras 2 func_dump: [base64 marshal code, defaults, closure]
            elif key == "function" and isinstance(value, list):
                bytecode = True  # what legacy_h5 turns into __lambda__ regardless of function_type
        if bytecode:
            if not self.allow_code:
                self.refuse_code(
                    "lambda-bytecode",
                    "Lambda layer holds serialized Python bytecode that would run when the model is loaded",
                    path,
                    loc,
                )
            return
        function = inner.get("function")
        if isinstance(function, dict) and function.get("class_name") == "function":
            verdict = self._check_function(function, (*loc, "config", "function"), path, inert=False)
            if self.allow_code:
                return
            if verdict == "declared":
                return  # the user's --custom-objects registers it: their own code, not the file's
            if verdict != "ok":
                registered = function.get("module") == "builtins" and ">" in str(function.get("config"))
                self.refuse_code(
                    "function-reference",
                    f"Lambda layer calls '{show(function.get('module'))}.{show(function.get('config'))}', "
                    "which is not on kerinspect's allowlist of Keras functions",
                    path,
                    loc,
                    hint=msg(
                        "it is a registered function: pass {custom_objects} FILE.py that defines and "
                        "registers it (or, only if you trust this file, {trust_model} with that file)"
                    )
                    if registered
                    else _TRUST_HINT,
                    needs_trust=not registered,
                )
                return
        legacy_module = inner.get("module")
        if isinstance(legacy_module, str) and legacy_module:
            self._check_module(legacy_module, "a Lambda function", path, (*loc, "config", "module"))
        if not self.allow_code:
            self.refuse_code("lambda-layer", "Lambda layers run arbitrary functions when loaded", path, loc)

    # -- inbound nodes: tensors, numbers, flags; never strings
    def _check_nodes(
        self, nodes: Any, loc: tuple[str | int, ...], path: tuple[str, ...], tf_op: bool = False
    ) -> None:
        if not isinstance(nodes, list):
            return
        for i, node in enumerate(nodes):
            sub = (*loc, i)
            if isinstance(node, dict):
                self._node_value(node.get("args"), (*sub, "args"), path, tf_op=tf_op)
                kwargs = node.get("kwargs")
                if tf_op and isinstance(kwargs, dict):  # a Keras 2 TFOpLambda's node, upgraded
                    self._legacy_kwargs(kwargs, (*sub, "kwargs"), path, tf_op)
                else:
                    self._node_value(kwargs, (*sub, "kwargs"), path)
            elif isinstance(node, list):
                # Keras 2: [[layer_name, node_index, tensor_index, kwargs], ...]; a
                # TFOpLambda keeps its first argument's structure (one entry, or nested).
                self._legacy_node(node, sub, path, tf_op)

    def _legacy_node(self, data: Any, loc: tuple[str | int, ...], path: tuple[str, ...], tf_op: bool) -> None:
        if isinstance(data, list) and data and isinstance(data[0], str) and 3 <= len(data) <= 4:
            # an entry: the name is looked up among created layers (never passed on)
            self._node_value(data[1] if data[0] != _CONSTANT_VALUE else data[1:3], (*loc, 1), path)
            if data[0] != _CONSTANT_VALUE:
                self._node_value(data[2], (*loc, 2), path)
            if len(data) == 4:
                self._legacy_kwargs(data[3], (*loc, 3), path, tf_op)
        elif isinstance(data, list):
            for j, entry in enumerate(data):
                self._legacy_node(entry, (*loc, j), path, tf_op)
        else:
            self._node_value(data, loc, path)

    def _legacy_kwargs(
        self, kwargs: Any, loc: tuple[str | int, ...], path: tuple[str, ...], tf_op: bool
    ) -> None:
        if not isinstance(kwargs, dict):
            self._node_value(kwargs, loc, path)
            return
        for key, item in kwargs.items():
            if tf_op and key == "name" and isinstance(item, (str, type(None))):
                continue  # a TensorFlow op's own name (``tf.transpose(x, name="t")``)
            self._node_value(item, (*loc, key), path, refs=self._graphs[-1], tf_op=tf_op)

    def _node_value(
        self,
        value: Any,
        loc: tuple[str | int, ...],
        path: tuple[str, ...],
        refs: frozenset[str] = frozenset(),
        *,
        tf_op: bool = False,
    ) -> None:
        if refs and is_tensor_reference(value, refs):
            return  # a Keras 2 reference to a tensor of this graph
        if tf_op and value == TF_OP_ELLIPSIS:
            return  # ``x[..., 0]``'s Ellipsis in an upgraded TFOpLambda node (scan/upgrade.py)
        if isinstance(value, str):
            self.refuse(
                "node-string-argument",
                f"A layer call passes the string {show(value, 120)!s} as an argument; built-in layers "
                "take tensors and flags, and strings here feed file paths to gadget functions",
                path,
                loc,
            )
        if isinstance(value, list):
            for i, item in enumerate(value):
                self._node_value(item, (*loc, i), path, refs, tf_op=tf_op)
        elif isinstance(value, dict):
            cn = value.get("class_name")
            if cn in ("__keras_tensor__", "__lambda__"):
                return  # a tensor (shape, dtype, keras_history), or bytecode the walk refuses
            for key, item in value.items():
                if key == "dtype" and cn in ("__numpy__", "__tensor__") and isinstance(item, str):
                    continue
                if key == "config" and cn in ("__numpy__", "__tensor__") and isinstance(item, dict):
                    # Keras 3: {"class_name": "__tensor__", "config": {"value": [...], "dtype": "float32"}}
                    for k, v in item.items():
                        if not (k == "dtype" and isinstance(v, str)):
                            self._node_value(v, (*loc, key, k), path)
                    continue
                if key in ("class_name", "module", "registered_name") and isinstance(item, (str, type(None))):
                    continue
                if key == "config" and cn == "function":
                    continue  # a function reference, checked by the walk
                self._node_value(item, (*loc, key), path, refs, tf_op=tf_op)


# --------------------------------------------------------------------------- public API


def scan_config(
    config: dict[str, Any],
    limits: Limits = Limits(),  # noqa: B008 - frozen, immutable default
    *,
    allow_code: bool = False,
    custom_classes: Iterable[str] = frozenset(),
) -> ConfigSummary:
    """Scan a parsed model config (``config.json`` or an HDF5 ``model_config``).

    Walks every dict and list, refusing code, gadget references, foreign modules,
    file-path arguments and strings in ``inbound_nodes``; then estimates the
    parameters and the size of each declared input.

    Args:
        config: the parsed JSON object.
        limits: resource caps.
        allow_code: the user's ``--trust-model`` opt-in; lifts the refusal of
            ``Lambda`` layers, bytecode and non-allowlisted Keras function references
            only (never of TFSMLayer, non-modeling APIs or foreign modules).
        custom_classes: class (or registered) names the user supplies code for.

    Returns:
        ``(estimated_params, class_names, unknown_classes)``.

    Raises:
        PolicyError: a security refusal (exit 5), with a rule id and the layer path.
        ModelLoadError: the config is not a model config (exit 4).
    """
    rep = Reporter(None)
    return ConfigScanner(limits, allow_code, frozenset(custom_classes), rep).run(config)
