"""The static scan of one model file: may Keras be allowed to open it at all?

It reads the container (``.keras`` zip or ``.h5``) with ``zipfile``, ``json``
and ``h5py`` only (no TensorFlow, no Keras): first the container
(:mod:`kerinspect.scan.container`: members, layout, HDF5 links and datasets),
then the config (:mod:`kerinspect.scan.policy`), which is judged before
libhdf5 ever parses the weights of a ``.keras`` archive.

Parsing HDF5 goes through libhdf5, which can crash or hang on crafted files
(SAFETY.md finding 2): call :func:`scan_model_file` from the isolated loader
process, not from the CLI process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kerinspect.errors import KerinspectError
from kerinspect.scan.container import (
    HDF5_MAGIC,
    Limits,
    Reporter,
    is_zip_too,
    open_regular,
    scan_hdf5_file,
    scan_keras_archive,
)
from kerinspect.scan.json_caps import parse_json_object
from kerinspect.scan.keras2 import keras2_archive
from kerinspect.scan.policy import ConfigScanner
from kerinspect.scan.upgrade import h5_config_as_built, keras3_config_as_built, upgrade_config

__all__ = ["BUILDS", "ScanResult", "scan_model_file"]


#: How the loader builds a model (:attr:`ScanResult.build`).
BUILDS = ("keras", "keras2-archive", "h5")


@dataclass(frozen=True)
class ScanResult:
    """What the scan learned about a file it did not refuse, and what the loader builds.

    Attributes:
        format: ``"keras"`` (zip) or ``"h5"``.
        config: the model config the scan judged, in the form the loader builds it
            (a Keras 2 config already rewritten for Keras 3): the loader builds this
            very config and reads none from the file (see :func:`scan_model_file`).
        build: how the loader builds it: ``keras`` (a Keras 3 archive, Keras's own
            deserialization), ``keras2-archive`` (a tf.keras 2.13-2.15 or tf_keras
            archive: Keras's legacy loader) or ``h5`` (Keras's legacy HDF5 loader).
        changes: how a Keras 2 config was rewritten (:mod:`kerinspect.scan.upgrade`),
            each kind once, for the report's notes.
        estimated_params: parameters estimated from the config (None if not a model).
        class_names: every class the config references, sorted, for diagnostics.
        unknown_classes: classes (and custom functions) neither allowlisted nor declared
            in ``custom_classes``; the loader must not load the model while any remain.
        hub_classes: the allowlisted keras-hub classes and functions the config uses
            (registered names, ``keras_hub>BertBackbone``): the loader imports keras_hub
            for them (:mod:`kerinspect.scan.allowlist_hub`).
    """

    format: str
    config: dict[str, Any]
    estimated_params: int | None
    class_names: tuple[str, ...]
    unknown_classes: tuple[str, ...]
    hub_classes: tuple[str, ...] = ()
    build: str = "keras"
    changes: tuple[str, ...] = ()


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

    One judged config: from the same bytes (``config.json`` and ``metadata.json`` of an
    archive, ``model_config`` and ``keras_version`` of an HDF5 file) the scan decides how
    the loader will build the model (:attr:`ScanResult.build`), rewrites the config
    exactly as that build needs (:mod:`kerinspect.scan.keras2`,
    :mod:`kerinspect.scan.upgrade`), judges the rewritten config, and returns it as
    :attr:`ScanResult.config` for the loader to build as it is.

    Args:
        path: the model file (already through :func:`kerinspect.scan.preflight.preflight`).
        fmt: ``"keras"`` for a ``.keras`` zip, ``"h5"`` for legacy HDF5.
        limits: resource caps.
        allow_code: see :func:`kerinspect.scan.policy.scan_config`.
        custom_classes: see :func:`kerinspect.scan.policy.scan_config`.

    Returns:
        The config to build and what the scan learned about it.

    Raises:
        PolicyError: refused by the security policy (exit 5).
        ModelLoadError: malformed container or config (exit 4).
    """
    if fmt not in ("keras", "h5"):
        raise ValueError(f"fmt must be 'keras' or 'h5', got {fmt!r}")
    p = os.fspath(path)
    rep = Reporter(p)
    # Keras 2 tensor references ([layer, node, tensor] lists) are accepted only in
    # Keras 2 configs (HDF5, tf.keras 2.13-2.15 archives), which are rewritten as tensors
    # (scan/upgrade.py) before they are judged.
    scanner = ConfigScanner(limits, allow_code, frozenset(custom_classes), rep, tensor_references=fmt == "h5")
    fp, size = open_regular(p, rep)
    with fp:
        if fmt == "keras":

            def judge(raw: bytes, metadata: bytes | None) -> tuple[str, dict[str, Any], tuple[str, ...]]:
                parsed = parse_json_object(raw, "config.json", limits, rep)
                scanner.check_shape(parsed)
                keras2 = keras2_archive(parsed, keras_version=_keras_version(metadata, limits, rep))
                if keras2 is None:
                    repaired, changes = _rewritten(keras3_config_as_built, parsed, rep)
                    return "keras", repaired, changes
                # judged in the form the loader builds: Keras 2's, upgraded. The modules the
                # Keras 2 form drops are judged first, as written (the loader imports none)
                scanner.check_modules(parsed)
                upgraded, changes = _rewritten(upgrade_config, keras2, rep)
                scanner.tensor_references = True
                return "keras2-archive", upgraded, ("keras2-archive", *changes)

            build, config, changes = scan_keras_archive(fp, size, limits, rep, judge)
        else:
            if is_zip_too(fp):
                rep.policy(
                    "polyglot", "The HDF5 file also holds a zip archive (a .keras model appended to it)."
                )
            fp.seek(0)
            if fp.read(8) != HDF5_MAGIC:
                rep.policy("polyglot", "The HDF5 data does not start at offset 0 (a user block precedes it).")
            found = scan_hdf5_file(
                fp,
                size,
                limits,
                rep,
                "The HDF5 file",
                parse_json=lambda text: parse_json_object(text, "model_config", limits, rep),
            )
            assert found is not None
            scanner.check_shape(found[0])
            build, (config, changes) = "h5", _rewritten(h5_config_as_built, found, rep)
        params, names, unknown = scanner.run(config)
    return ScanResult(fmt, config, params, names, unknown, tuple(sorted(scanner.hub)), build, changes)


def _rewritten(rewrite: Any, args: Any, rep: Reporter) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``rewrite(*args)``: a Keras 2 config as Keras 3 builds it (:mod:`kerinspect.scan.upgrade`),
    before it is judged; a config too broken to rewrite is malformed (exit 4)."""
    args = args if isinstance(args, tuple) else (args,)
    try:
        result: tuple[dict[str, Any], tuple[str, ...]] = rewrite(*args)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        rep.malformed("bad-config", f"The Keras 2 config cannot be read as a model ({type(e).__name__}).")
    return result


def _keras_version(metadata: bytes | None, limits: Limits, rep: Reporter) -> Any:
    """``metadata.json``'s ``keras_version`` (None without one: Keras itself does not need
    the file, so a malformed one says nothing of the config)."""
    if metadata is None:
        return None
    try:
        parsed = parse_json_object(metadata, "metadata.json", limits, rep)
    except KerinspectError:
        return None
    return parsed.get("keras_version")
