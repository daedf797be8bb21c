"""Static pre-scan of a saved model, before anything is deserialized.

This module owns the decision "may Keras be allowed to open this file at all".
It reads the container (``.keras`` zip or ``.h5``) with ``zipfile``, ``json``
and ``h5py`` only (no TensorFlow, no Keras), and refuses, with a stable rule id:

* containers that are malformed, ambiguous (duplicate members, polyglots,
  hidden bytes between members) or bombs (compression ratio, declared sizes);
* configs that would run code or read files while loading: ``Lambda`` layers
  and marshal'd bytecode, function references outside a small allowlist,
  ``TFSMLayer``/``TorchModuleWrapper``, modules outside Keras, file-path
  arguments, strings smuggled into ``inbound_nodes`` (SAFETY.md rows 1-15);
* models too big to build (a parameter estimate from the config) or to feed
  (elements per sample of a declared input);
* HDF5 weights with external storage, soft/external links, virtual datasets
  or shape bombs.

Classes that are neither allowed nor dangerous (a user's custom layer) are not
refused here: they come back in :attr:`ScanResult.unknown_classes` for the
loader to report. The known Keras classes are listed in the generated
:mod:`kerinspect.scan.allowlist`; what is refused by name is in
:mod:`kerinspect.scan.denylist`.

Parsing HDF5 goes through libhdf5, which can crash or hang on crafted files
(SAFETY.md finding 2): call :func:`scan_model_file` from the isolated loader
process, not from the CLI process.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import struct
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any, NoReturn

from kerinspect.defaults import DEFAULT_MAX_PARAMS, MAX_INPUT_ELEMENTS
from kerinspect.errors import InputFileError, KerinspectError, ModelLoadError, PolicyError, escape_text

from . import allowlist as _allowlist
from . import denylist as _denylist
from .estimate import estimate, layer_name
from .npyio import read_npy_header
from .zipio import ZipWindow, stored_member_start

__all__ = ["Limits", "ScanResult", "scan_config", "scan_model_file"]

ZIP_LOCAL_MAGIC = b"PK\x03\x04"
ZIP_EOCD_MAGIC = b"PK\x05\x06"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_H5_MEMBER = "model.weights.h5"
WEIGHTS_NPZ_MEMBER = "model.weights.npz"
_TOP_MEMBERS = frozenset({CONFIG_MEMBER, METADATA_MEMBER, WEIGHTS_H5_MEMBER, WEIGHTS_NPZ_MEMBER})
_ASSETS_PREFIX = "assets/"

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
#: HDF5 filters libhdf5 ships with (deflate, shuffle, fletcher32, szip, nbit,
#: scaleoffset) plus LZF from h5py. Anything else makes libhdf5 search plugin paths.
_HDF5_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})

_ALL_CLASS_NAMES: frozenset[str] = frozenset().union(*_allowlist.CLASSES.values())
_STDLIB: frozenset[str] = frozenset(sys.stdlib_module_names) - {"__main__"}
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


@dataclass(frozen=True)
class Limits:
    """Resource caps of the static scan. Defaults suit a CI gate; tests patch them down.

    Attributes:
        max_config_bytes: largest ``config.json`` / HDF5 ``model_config``.
        max_metadata_bytes: largest ``metadata.json``.
        max_compression_ratio: largest uncompressed/compressed ratio of a zip member
            that inflates to more than ``compression_floor_bytes``.
        compression_floor_bytes: members at most this big are not ratio-checked.
        max_total_uncompressed: sum of the declared sizes of all zip members.
        max_zip_members: number of entries in a ``.keras`` archive (or its npz).
        max_json_depth: nesting depth of a config.
        max_params: parameters estimated from the config (``--max-params``).
        max_input_elements: elements per sample of one declared input.
        max_declared_weight_bytes: declared bytes (shape x itemsize) of one weight array.
        max_hdf5_expansion: declared bytes over bytes stored for one HDF5 dataset that
            is bigger than ``compression_floor_bytes``.
    """

    max_config_bytes: int = 16 << 20
    max_metadata_bytes: int = 64 << 10
    max_compression_ratio: float = 100.0
    compression_floor_bytes: int = 1 << 20
    max_total_uncompressed: int = 8 << 30
    max_zip_members: int = 10_000
    max_json_depth: int = 100
    max_params: int = DEFAULT_MAX_PARAMS
    max_input_elements: int = MAX_INPUT_ELEMENTS
    max_declared_weight_bytes: int = 4 << 30
    max_hdf5_expansion: float = 1000.0


@dataclass(frozen=True)
class ScanResult:
    """What the scan learned about a file it did not refuse.

    Attributes:
        format: ``"keras"`` (zip) or ``"h5"``.
        config: the parsed model config, i.e. what Keras will deserialize.
        estimated_params: parameters estimated from the config (None if not a model).
        class_names: every class the config references, sorted, for diagnostics.
        unknown_classes: classes (and custom functions) neither allowlisted nor declared
            in ``custom_classes``; the loader must not load the model while any remain.
    """

    format: str
    config: dict[str, Any]
    estimated_params: int | None
    class_names: tuple[str, ...]
    unknown_classes: tuple[str, ...]


# --------------------------------------------------------------------------- helpers


def _show(text: object, limit: int = 200) -> str:
    return escape_text(str(text), limit)


class _Reporter:
    """Builds errors that end with ``Received: path=...`` when a file is known."""

    def __init__(self, path: str | None):
        self.received = f" Received: path={escape_text(path)}" if path is not None else ""

    def fail(
        self, cls: type[KerinspectError], rule: str, message: str, *, hint: str | None = None
    ) -> NoReturn:
        raise cls(f"{message}{self.received}", rule=rule, hint=hint)

    def policy(self, rule: str, message: str, *, hint: str | None = None) -> NoReturn:
        self.fail(PolicyError, rule, message, hint=hint)

    def malformed(self, rule: str, message: str, *, hint: str | None = None) -> NoReturn:
        self.fail(ModelLoadError, rule, message, hint=hint)


def _loc_text(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return _show(out or "$", 160)


def _package(module: str) -> str:
    return module.split(".", 1)[0]


def _is_keras_module(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


# --------------------------------------------------------------------------- JSON


def _json_depth_exceeds(text: str, limit: int) -> bool:
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            if depth > limit:
                return True
        elif tok in "]}":
            depth -= 1
    return False


def _parse_json_object(raw: bytes | str, what: str, limits: Limits, rep: _Reporter) -> dict[str, Any]:
    """Parse like Keras does (``json.loads``), with size and depth caps first."""
    if len(raw) > limits.max_config_bytes:
        rep.policy(
            "config-too-large",
            f"{what} is {len(raw):,} bytes, above the {limits.max_config_bytes:,}-byte limit.",
        )
    if isinstance(raw, bytes):
        try:
            text = raw.decode(json.detect_encoding(raw))
        except UnicodeDecodeError as e:
            rep.malformed("bad-json", f"{what} is not valid text: {e.reason} at byte {e.start}.")
    else:
        text = raw
    if _json_depth_exceeds(text, limits.max_json_depth):
        rep.policy("json-too-deep", f"{what} nests deeper than {limits.max_json_depth} levels.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        rep.malformed(
            "bad-json",
            f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos}).",
        )
    except RecursionError:
        rep.policy("json-too-deep", f"{what} nests too deeply to parse.")
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        rep.malformed("bad-json", f"{what} is not valid JSON: {_show(e)}.")
    if not isinstance(value, dict):
        stripped = text.lstrip()
        pos = len(text) - len(stripped)
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
        rep.malformed(
            "bad-json",
            f"{what} is not a JSON object: it holds a JSON {kind} at line {line} column {col} (char {pos}).",
        )
    return value


# --------------------------------------------------------------------------- config walk


class _ConfigScanner:
    """One pass over every dict and list of a model config."""

    def __init__(
        self, limits: Limits, allow_code: bool, custom_classes: frozenset[str], rep: _Reporter
    ) -> None:
        self.limits = limits
        self.allow_code = allow_code
        self.custom = custom_classes
        self.rep = rep
        self.class_names: set[str] = set()
        self.unknown: set[str] = set()

    # -- entry point
    def run(self, config: Any) -> tuple[int | None, tuple[str, ...], tuple[str, ...]]:
        if not isinstance(config, dict):
            self.rep.malformed("bad-config", "The model config is not a JSON object.")
        if not isinstance(config.get("class_name"), str) or not isinstance(config.get("config"), dict):
            self.rep.malformed(
                "bad-config",
                "The model config has no 'class_name' and 'config': it does not describe a model.",
            )
        root = config["config"].get("name")
        root_name = root if isinstance(root, str) else "model"
        self._walk(config, (), (root_name,), inert=False)
        params = self._check_size(config, root_name)
        return params, tuple(sorted(self.class_names)), tuple(sorted(self.unknown))

    def _check_size(self, config: dict[str, Any], root_name: str) -> int | None:
        est = estimate(config, root_name)
        limits = self.limits
        for path, key, shp, elements in est.inputs:
            if elements > limits.max_input_elements:
                self.rep.policy(
                    "input-too-large",
                    f"Input '{'/'.join(_show(p, 120) for p in path)}' declares {elements:,} elements per sample "
                    f"({key}={_show(shp)}), above the limit of {limits.max_input_elements:,}.",
                )
        if est.params is not None and est.params > limits.max_params:
            count, where = est.largest
            self.rep.policy(
                "too-many-params",
                f"The model declares about {est.params:,} parameters, above the limit of {limits.max_params:,} "
                f"(largest: layer '{'/'.join(_show(p, 120) for p in where)}' with {count:,}); "
                "it is refused before anything is built.",
                hint="raise --max-params if this size is expected",
            )
        return est.params

    # -- messages
    def _where(self, layer_path: tuple[str, ...], loc: tuple[str | int, ...]) -> str:
        shown = "/".join(_show(p, 120) for p in layer_path)
        return f"(layer '{shown}', at {_loc_text(loc)})"

    def refuse(
        self,
        rule: str,
        what: str,
        layer_path: tuple[str, ...],
        loc: tuple[str | int, ...],
        hint: str | None = None,
    ) -> NoReturn:
        self.rep.policy(rule, f"{what} {self._where(layer_path, loc)}.", hint=hint)

    def malformed(self, what: str, layer_path: tuple[str, ...], loc: tuple[str | int, ...]) -> NoReturn:
        self.rep.malformed("bad-config", f"{what} {self._where(layer_path, loc)}.")

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
        for key, value in node.items():
            sub = (*loc, key)
            if isinstance(value, str) and isinstance(key, str) and key.lower() in _PATH_KEYS and value:
                self.refuse(
                    "file-path-argument",
                    f"Argument '{_show(key, 40)}' names a file or URL ({_show(value, 120)!s}); "
                    "Keras would read it from outside the model file (CVE-2025-12058)",
                    path,
                    sub,
                )
            if key == "inbound_nodes":
                self._check_nodes(value, sub, path)
            child_inert = inert or (loc == () and key == "compile_config")
            if key in ("layers", "cells") and isinstance(value, list):
                for i, item in enumerate(value):
                    self._walk(item, (*sub, i), (*path, layer_name(item, i)), child_inert)
            elif key in ("layer", "forward_layer", "backward_layer", "cell") and isinstance(value, dict):
                self._walk(value, sub, (*path, layer_name(value, key)), child_inert)
            else:
                self._walk(value, sub, path, child_inert)

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
                self.refuse(
                    "lambda-bytecode",
                    "Serialized Python bytecode (__lambda__) would run when the model is loaded",
                    path,
                    loc,
                    hint="only if you trust this file: --trust-model",
                )
            return
        if cn == "function":
            verdict = self._check_function(node, loc, path, inert)
            if verdict == "code" and not (self.allow_code or inert):
                self.refuse(
                    "function-reference",
                    f"The config calls function '{_show(module)}.{_show(node.get('config'))}', "
                    "which is not on kerinspect's allowlist of Keras functions",
                    path,
                    loc,
                    hint="only if you trust this file: --trust-model",
                )
            return
        self.class_names.add(cn)
        if module is not None:
            self._check_module(module, f"class '{_show(cn)}'", path, loc)
        denied = _denylist.DENIED_CLASSES.get(cn)
        if denied == "lambda-layer":
            self._check_lambda(node, loc, path)
        elif denied:
            self.refuse(denied, f"{_show(cn)} loads or runs code or files named by the model", path, loc)
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
                f"The config loads {what} from module '{_show(module)}', which is not part of Keras",
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
                f"The config calls {_show(name)}, which loads code or files named by the model",
                path,
                loc,
            )
        if module is None:
            if not (inert or {name, reg} & self.custom):
                self.unknown.add(name)
            return "custom"
        if module == "builtins":
            return "ok" if name in _allowlist.BUILTIN_FUNCTIONS else "code"
        self._check_module(module, f"function '{_show(name)}'", path, loc)
        if _is_keras_module(module):
            api = f"{module}.{name}"
            if api in _denylist.NON_MODELING_APIS or any(
                module == p or module.startswith(p + ".") for p in _denylist.NON_MODELING_PREFIXES
            ):
                self.refuse(
                    "non-modeling-api",
                    f"The config calls '{_show(api)}', which is not a modeling function "
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
        hint = "only if you trust this file: --trust-model"
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
            if self.allow_code:
                return
            self.refuse(
                "lambda-bytecode",
                "Lambda layer holds serialized Python bytecode that would run when the model is loaded",
                path,
                loc,
                hint=hint,
            )
        function = inner.get("function")
        if isinstance(function, dict) and function.get("class_name") == "function":
            verdict = self._check_function(function, (*loc, "config", "function"), path, inert=False)
            if self.allow_code:
                return
            if verdict != "ok":
                self.refuse(
                    "function-reference",
                    f"Lambda layer calls '{_show(function.get('module'))}.{_show(function.get('config'))}', "
                    "which is not on kerinspect's allowlist of Keras functions",
                    path,
                    loc,
                    hint=hint,
                )
        legacy_module = inner.get("module")
        if isinstance(legacy_module, str) and legacy_module:
            self._check_module(legacy_module, "a Lambda function", path, (*loc, "config", "module"))
        if self.allow_code:
            return
        self.refuse("lambda-layer", "Lambda layers run arbitrary functions when loaded", path, loc, hint=hint)

    # -- inbound nodes: tensors, numbers, flags; never strings
    def _check_nodes(self, nodes: Any, loc: tuple[str | int, ...], path: tuple[str, ...]) -> None:
        if not isinstance(nodes, list):
            return
        for i, node in enumerate(nodes):
            sub = (*loc, i)
            if isinstance(node, dict):
                self._node_value(node.get("args"), (*sub, "args"), path)
                self._node_value(node.get("kwargs"), (*sub, "kwargs"), path)
            elif isinstance(node, list):  # Keras 2: [[layer_name, node_index, tensor_index, kwargs], ...]
                for j, entry in enumerate(node):
                    if isinstance(entry, list) and entry and isinstance(entry[0], str):
                        self._node_value(entry[1:], (*sub, j), path)
                    else:
                        self._node_value(entry, (*sub, j), path)

    def _node_value(self, value: Any, loc: tuple[str | int, ...], path: tuple[str, ...]) -> None:
        if isinstance(value, str):
            self.refuse(
                "node-string-argument",
                f"A layer call passes the string {_show(value, 120)!s} as an argument; built-in layers "
                "take tensors and flags, and strings here feed file paths to gadget functions",
                path,
                loc,
            )
        if isinstance(value, list):
            for i, item in enumerate(value):
                self._node_value(item, (*loc, i), path)
        elif isinstance(value, dict):
            cn = value.get("class_name")
            if cn in ("__keras_tensor__", "__lambda__"):
                return  # a tensor (shape, dtype, keras_history), or bytecode the walk refuses
            for key, item in value.items():
                if key == "dtype" and cn in ("__numpy__", "__tensor__") and isinstance(item, str):
                    continue
                if key in ("class_name", "module", "registered_name") and isinstance(item, (str, type(None))):
                    continue
                if key == "config" and cn == "function":
                    continue  # a function reference, checked by the walk
                self._node_value(item, (*loc, key), path)


# --------------------------------------------------------------------------- zip


def _zip_name_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if info.orig_filename != name:
        return "its name contains a NUL byte"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "it is a symbolic link"
    if name in _TOP_MEMBERS:
        return None
    if not name.startswith(_ASSETS_PREFIX) or name == _ASSETS_PREFIX:
        return "it is not one of config.json, metadata.json, model.weights.h5|.npz or assets/..."
    parts = name[len(_ASSETS_PREFIX) :].split("/")
    if parts[-1] == "" and info.is_dir():
        parts = parts[:-1]
    for part in parts:
        if (
            part in ("", ".", "..")
            or "\\" in part
            or ":" in part
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in part)
        ):
            return "its asset path is not a plain relative path"
    return None


def _check_members(infos: list[zipfile.ZipInfo], limits: Limits, rep: _Reporter, archive: str) -> None:
    """Per-entry checks from the central directory, before any member is read."""
    if len(infos) > limits.max_zip_members:
        rep.policy(
            "zip-member",
            f"{archive} has {len(infos):,} entries, above the limit of {limits.max_zip_members:,}.",
        )
    counts = Counter(i.filename for i in infos)
    dupes = sorted(n for n, c in counts.items() if c > 1)
    if dupes:
        rep.policy(
            "zip-duplicate",
            f"{archive} holds {counts[dupes[0]]} members named '{_show(dupes[0])}'; readers disagree on which one counts.",
        )
    total = 0
    for info in infos:
        shown = _show(info.filename)
        if info.flag_bits & 0x1:
            rep.malformed(
                "zip-encrypted", f"{archive} member '{shown}' is encrypted and cannot be inspected."
            )
        if info.compress_type not in _ZIP_METHODS:
            rep.malformed(
                "not-a-zip",
                f"{archive} member '{shown}' uses unsupported compression method {info.compress_type}.",
            )
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            rep.malformed("not-a-zip", f"{archive} member '{shown}' is corrupt (stored sizes disagree).")
        if (
            info.file_size > limits.compression_floor_bytes
            and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1)
        ):
            rep.policy(
                "zip-bomb",
                f"{archive} member '{shown}' inflates from {info.compress_size:,} to {info.file_size:,} bytes "
                f"(more than {limits.max_compression_ratio:g}x).",
            )
        total += info.file_size
    if total > limits.max_total_uncompressed:
        rep.policy(
            "zip-bomb",
            f"{archive} declares {total:,} uncompressed bytes, above the limit of {limits.max_total_uncompressed:,}.",
        )


def _check_layout(
    fp: IO[bytes],
    size: int,
    infos: list[zipfile.ZipInfo],
    start_dir: int | None,
    rep: _Reporter,
    archive: str,
) -> None:
    """Members must tile the file from offset 0 to the central directory, and the
    end record must end the file: no prepended, hidden or appended bytes."""
    pos = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset != pos:
            if pos == 0:
                rep.policy(
                    "polyglot",
                    f"{archive} does not start with its first member (it starts {info.header_offset:,} bytes in): "
                    "the file is something else with a zip appended.",
                )
            rep.policy(
                "zip-layout",
                f"{archive} member '{_show(info.filename)}' starts at byte {info.header_offset:,}, expected {pos:,} "
                "(overlapping members or hidden bytes between them).",
            )
        fp.seek(pos)
        header = fp.read(30)
        if len(header) < 30 or header[:4] != ZIP_LOCAL_MAGIC:
            rep.malformed(
                "not-a-zip", f"{archive} is corrupt: no local header for member '{_show(info.filename)}'."
            )
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        pos = info.header_offset + 30 + name_len + extra_len + info.compress_size
        if info.flag_bits & 0x08:  # data descriptor: [signature] crc, sizes (8 bytes each with zip64)
            fp.seek(info.header_offset + 30 + name_len)
            zip64 = _has_zip64_extra(fp.read(extra_len))
            fp.seek(pos)
            pos += 4 if fp.read(4) == b"PK\x07\x08" else 0
            pos += 20 if zip64 else 12
    if start_dir is not None and infos and pos != start_dir:
        rep.policy(
            "zip-layout", f"{archive} has {start_dir - pos:,} unaccounted bytes before its central directory."
        )
    tail_len = min(size, 22 + 0xFFFF)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    at = tail.rfind(ZIP_EOCD_MAGIC)
    if at < 0 or at + 22 > len(tail):
        rep.malformed("not-a-zip", f"{archive} is not a valid zip archive (no end record).")
    (comment_len,) = struct.unpack("<H", tail[at + 20 : at + 22])
    if at + 22 + comment_len != len(tail):
        rep.policy(
            "polyglot", f"{archive} has {len(tail) - at - 22 - comment_len:,} bytes after its zip end record."
        )


def _has_zip64_extra(extra: bytes) -> bool:
    at = 0
    while at + 4 <= len(extra):
        header_id, length = struct.unpack("<HH", extra[at : at + 4])
        if header_id == 0x0001:
            return True
        at += 4 + length
    return False


def _open_zip(fp: IO[bytes], rep: _Reporter, archive: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(fp)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        ValueError,
        OSError,
        NotImplementedError,
    ) as e:
        rep.malformed(
            "not-a-zip",
            f"{archive} is not a valid zip archive (truncated or corrupt: {_show(e, 120)}).",
            hint="re-save the model with model.save('model.keras')",
        )


def _member_stream(fp: IO[bytes], zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """A seekable stream of one member: a window for stored members, else inflated in memory."""
    if info.compress_type == zipfile.ZIP_STORED:
        start = stored_member_start(fp, info)
        if start is not None:
            return io.BufferedReader(ZipWindow(fp, start, info.file_size))
    return io.BytesIO(zf.read(info))


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, rep: _Reporter) -> bytes:
    try:
        with zf.open(info) as f:
            data = f.read(cap + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        rep.malformed(
            "not-a-zip", f"Archive member '{_show(info.filename)}' cannot be read ({_show(e, 120)})."
        )
    return data


_ConfigSummary = tuple[int | None, tuple[str, ...], tuple[str, ...]]


def _scan_keras_zip(
    fp: IO[bytes], size: int, limits: Limits, rep: _Reporter, scanner: _ConfigScanner
) -> tuple[dict[str, Any], _ConfigSummary]:
    fp.seek(0)
    head = fp.read(8)
    zf = _open_zip(fp, rep, "The .keras archive")
    with zf:
        infos = zf.infolist()
        if not head.startswith(ZIP_LOCAL_MAGIC):
            what = "HDF5 data" if head.startswith(HDF5_MAGIC) else "other data"
            rep.policy(
                "polyglot",
                f"The file starts with {what}, not with a zip member, but also holds a zip archive.",
            )
        _check_members(infos, limits, rep, "The .keras archive")
        for info in infos:
            problem = _zip_name_problem(info)
            if problem:
                rep.policy("zip-member", f"Archive member '{_show(info.filename)}' is refused: {problem}.")
        _check_layout(fp, size, infos, getattr(zf, "start_dir", None), rep, "The .keras archive")
        names = {i.filename: i for i in infos}
        if CONFIG_MEMBER not in names:
            rep.malformed(
                "no-config", "The .keras archive has no config.json: it is not a saved Keras model."
            )
        if WEIGHTS_H5_MEMBER in names and WEIGHTS_NPZ_MEMBER in names:
            rep.policy("zip-member", "The .keras archive holds both model.weights.h5 and model.weights.npz.")
        weights = names.get(WEIGHTS_H5_MEMBER) or names.get(WEIGHTS_NPZ_MEMBER)
        if weights is None:
            rep.malformed(
                "no-weights", "Expected a model.weights.h5 or model.weights.npz file in the .keras archive."
            )
        meta = names.get(METADATA_MEMBER)
        if meta is not None and meta.file_size > limits.max_metadata_bytes:
            rep.policy(
                "config-too-large",
                f"metadata.json is {meta.file_size:,} bytes, above the {limits.max_metadata_bytes:,}-byte limit.",
            )
        cfg_info = names[CONFIG_MEMBER]
        if cfg_info.file_size > limits.max_config_bytes:
            rep.policy(
                "config-too-large",
                f"config.json is {cfg_info.file_size:,} bytes, above the {limits.max_config_bytes:,}-byte limit.",
            )
        config = _parse_json_object(
            _read_member(zf, cfg_info, limits.max_config_bytes, rep), "config.json", limits, rep
        )
        # The config is judged before libhdf5 ever parses the weights.
        summary = scanner.run(config)
        stream = _member_stream(fp, zf, weights)
        if weights.filename == WEIGHTS_H5_MEMBER:
            with stream:
                _scan_hdf5_file(stream, weights.file_size, limits, rep, "model.weights.h5", need_config=False)
        else:
            with stream:
                _scan_npz(stream, weights.file_size, limits, rep)
    return config, summary


# --------------------------------------------------------------------------- npz weights


def _scan_npz(stream: IO[bytes], size: int, limits: Limits, rep: _Reporter) -> None:

    archive = "model.weights.npz"
    zf = _open_zip(stream, rep, archive)
    with zf:
        infos = zf.infolist()
        _check_members(infos, limits, rep, archive)
        _check_layout(stream, size, infos, getattr(zf, "start_dir", None), rep, archive)
        for info in infos:
            name = info.filename
            if (
                info.orig_filename != name
                or not name.endswith(".npy")
                or name.startswith("/")
                or "\\" in name
                or any(part in ("", ".", "..") for part in name.split("/"))
            ):
                rep.policy("zip-member", f"{archive} member '{_show(name)}' is not a plain .npy entry.")
            try:
                with zf.open(info) as f:
                    shape, _, dtype = read_npy_header(f)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as e:
                rep.malformed(
                    "bad-weights",
                    f"{archive} member '{_show(name)}' is not a valid .npy array ({_show(e, 120)}).",
                )
            declared = math.prod(shape) * dtype.itemsize
            if declared > limits.max_declared_weight_bytes or (
                not dtype.hasobject and declared > info.file_size
            ):
                rep.policy(
                    "npz-shape-bomb",
                    f"{archive} member '{_show(name)}' declares shape {shape} ({declared:,} bytes): "
                    + _bomb_reason(declared, info.file_size, limits.max_declared_weight_bytes)
                    + ".",
                )


# --------------------------------------------------------------------------- HDF5


def _h5_text_attr(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "size", 0) == 1:
        return _h5_text_attr(value.reshape(()).item() if shape else value.item())
    return None


def _scan_hdf5_file(
    src: IO[bytes], size: int, limits: Limits, rep: _Reporter, what: str, *, need_config: bool
) -> dict[str, Any] | None:
    """Refuse links, external or virtual storage and shape bombs; return ``model_config`` if asked."""
    import h5py

    src.seek(0)
    if src.read(8) != HDF5_MAGIC:
        rep.malformed("bad-hdf5", f"{what} is not an HDF5 file (no signature at offset 0).")
    src.seek(0)
    try:
        f = h5py.File(src, "r")
    except Exception as e:  # noqa: BLE001 - libhdf5 raises many types for a corrupt file
        rep.malformed("bad-hdf5", f"{what} cannot be opened as HDF5 ({_show(e, 160)}).")
    with f:
        found: list[tuple[str, str]] = []

        def visit(name: str, link: Any) -> bool | None:
            if isinstance(link, h5py.ExternalLink):
                found.append(("hdf5-link", f"{what} holds an external link '{_show(name)}' to another file"))
            elif isinstance(link, h5py.SoftLink):
                found.append(
                    ("hdf5-link", f"{what} holds a soft link '{_show(name)}' -> '{_show(link.path)}'")
                )
            else:
                obj = f.get(name)
                if isinstance(obj, h5py.Dataset):
                    problem = dataset_problem(obj, name, limits, what, file_size=size)
                    if problem:
                        found.append(problem)
            return True if found else None

        try:
            f.visititems_links(visit)
        except KerinspectError:
            raise
        except Exception as e:  # noqa: BLE001
            rep.malformed("bad-hdf5", f"{what} is corrupt ({_show(e, 160)}).")
        if found:
            rule, message = found[0]
            rep.policy(rule, message + ".")
        if not need_config:
            return None
        try:
            raw = f.attrs.get("model_config")
        except Exception as e:  # noqa: BLE001
            rep.malformed("bad-hdf5", f"{what} has an unreadable model_config attribute ({_show(e, 160)}).")
        if raw is None:
            rep.malformed(
                "no-model-config",
                f"{what} has no Keras model_config: it holds weights or other data, not a saved model.",
            )
        try:
            text = _h5_text_attr(raw)
        except UnicodeDecodeError as e:
            rep.malformed("bad-json", f"model_config is not valid UTF-8 text: {e.reason} at byte {e.start}.")
        if text is None:
            rep.malformed("bad-json", "model_config is not a text attribute.")
        config = _parse_json_object(text, "model_config", limits, rep)
        link = f.get("model_weights", getlink=True)
        if link is None:
            rep.malformed("no-weights", f"{what} has no model_weights group.")
        return config


def dataset_problem(
    ds: Any, name: str, limits: Limits, what: str, *, file_size: int | None = None
) -> tuple[str, str] | None:
    """Why reading this HDF5 dataset is refused, as ``(rule, message)``, or None.

    Only metadata is read: external storage or a virtual dataset (the data lives
    in other files), a filter that needs a plugin library, or a declared size far
    above what is stored (a shape bomb). Shared by the scan and ``kerinspect weights``.
    """
    shown = _show(name)
    if ds.external:
        return "hdf5-external-storage", f"{what} dataset '{shown}' keeps its data in external file(s)"
    if ds.is_virtual:
        return "hdf5-virtual-dataset", f"{what} dataset '{shown}' is a virtual dataset mapping other files"
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _HDF5_FILTERS:
            return (
                "hdf5-filter",
                f"{what} dataset '{shown}' uses HDF5 filter {code}, which needs a plugin library",
            )
    shape = ds.shape or ()
    declared = math.prod(shape) * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    if declared > limits.max_declared_weight_bytes or (
        declared > limits.compression_floor_bytes and declared > limits.max_hdf5_expansion * max(stored, 1)
    ):
        return (
            "hdf5-shape-bomb",
            f"{what} dataset '{shown}' declares shape {_show(shape)} ({declared:,} bytes): "
            + _bomb_reason(declared, stored, limits.max_declared_weight_bytes)
            + (f" (the file has {file_size:,} bytes)" if file_size else ""),
        )
    return None


def _bomb_reason(declared: int, stored: int, limit: int) -> str:
    if declared > limit:
        return f"above the {limit:,}-byte limit for one weight array"
    return f"far more than the {stored:,} bytes it stores"


def _is_zip_too(fp: IO[bytes]) -> bool:
    try:
        with zipfile.ZipFile(fp) as zf:
            infos = zf.infolist()
            if not infos:
                return False
            fp.seek(infos[0].header_offset)
            return fp.read(4) == ZIP_LOCAL_MAGIC
    except Exception:  # noqa: BLE001 - anything zipfile rejects is not a zip
        return False


# --------------------------------------------------------------------------- public API


def _open_regular(path: str, rep: _Reporter) -> tuple[IO[bytes], int]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        rep.fail(InputFileError, "model-unreadable", f"Cannot open the model file: {e.strerror}.")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        rep.fail(
            InputFileError, "not-a-file", "Expected a regular file (not a FIFO, device, socket or directory)."
        )
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st.st_size


def scan_config(
    config: dict[str, Any],
    limits: Limits = Limits(),  # noqa: B008 - frozen, immutable default
    *,
    allow_code: bool = False,
    custom_classes: Iterable[str] = frozenset(),
) -> tuple[int | None, tuple[str, ...], tuple[str, ...]]:
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
    rep = _Reporter(None)
    return _ConfigScanner(limits, allow_code, frozenset(custom_classes), rep).run(config)


def scan_model_file(
    path: str | os.PathLike[str],
    fmt: str,
    limits: Limits = Limits(),  # noqa: B008 - frozen, immutable default
    *,
    allow_code: bool = False,
    custom_classes: Iterable[str] = frozenset(),
) -> ScanResult:
    """Statically scan a model file before Keras may deserialize it.

    Never imports TensorFlow or Keras, and never reads a weight array.

    Args:
        path: the model file (already through :func:`kerinspect.scan.preflight.preflight`).
        fmt: ``"keras"`` for a ``.keras`` zip, ``"h5"`` for legacy HDF5.
        limits: resource caps.
        allow_code: see :func:`scan_config`.
        custom_classes: see :func:`scan_config`.

    Returns:
        The parsed config and what the scan learned about it.

    Raises:
        PolicyError: refused by the security policy (exit 5).
        ModelLoadError: malformed container or config (exit 4).
    """
    if fmt not in ("keras", "h5"):
        raise ValueError(f"fmt must be 'keras' or 'h5', got {fmt!r}")
    p = os.fspath(path)
    rep = _Reporter(p)
    scanner = _ConfigScanner(limits, allow_code, frozenset(custom_classes), rep)
    fp, size = _open_regular(p, rep)
    with fp:
        if fmt == "keras":
            config, (params, names, unknown) = _scan_keras_zip(fp, size, limits, rep, scanner)
        else:
            if _is_zip_too(fp):
                rep.policy(
                    "polyglot", "The HDF5 file also holds a zip archive (a .keras model appended to it)."
                )
            fp.seek(0)
            if fp.read(8) != HDF5_MAGIC:
                rep.policy("polyglot", "The HDF5 data does not start at offset 0 (a user block precedes it).")
            h5_config = _scan_hdf5_file(fp, size, limits, rep, "The HDF5 file", need_config=True)
            assert h5_config is not None
            config = h5_config
            params, names, unknown = scanner.run(config)
    return ScanResult(fmt, config, params, names, unknown)
