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

from kerinspect.scan.container import (
    HDF5_MAGIC,
    Limits,
    Reporter,
    is_zip_too,
    open_regular,
    scan_hdf5_file,
    scan_keras_archive,
)
from kerinspect.scan.keras2 import keras2_archive
from kerinspect.scan.policy import ConfigScanner, ConfigSummary, parse_json_object

__all__ = ["ScanResult", "scan_model_file"]


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
        allow_code: see :func:`kerinspect.scan.policy.scan_config`.
        custom_classes: see :func:`kerinspect.scan.policy.scan_config`.

    Returns:
        The parsed config and what the scan learned about it.

    Raises:
        PolicyError: refused by the security policy (exit 5).
        ModelLoadError: malformed container or config (exit 4).
    """
    if fmt not in ("keras", "h5"):
        raise ValueError(f"fmt must be 'keras' or 'h5', got {fmt!r}")
    p = os.fspath(path)
    rep = Reporter(p)
    # Keras 2 tensor references ([layer, node, tensor] lists) are accepted only in
    # Keras 2 configs (HDF5, tf.keras 2.13-2.15 archives), which the loader rewrites
    # as tensors (engine/legacy.py).
    scanner = ConfigScanner(limits, allow_code, frozenset(custom_classes), rep, tensor_references=fmt == "h5")
    fp, size = open_regular(p, rep)
    with fp:
        if fmt == "keras":

            def judge(raw: bytes) -> tuple[dict[str, Any], ConfigSummary]:
                parsed = parse_json_object(raw, "config.json", limits, rep)
                keras2 = keras2_archive(parsed, keep_foreign_modules=True)
                if keras2 is not None:  # judged in the form the loader reads it (scan/keras2.py)
                    scanner.tensor_references = True
                    return parsed, scanner.run(keras2)
                return parsed, scanner.run(parsed)

            config, (params, names, unknown) = scan_keras_archive(fp, size, limits, rep, judge)
        else:
            if is_zip_too(fp):
                rep.policy(
                    "polyglot", "The HDF5 file also holds a zip archive (a .keras model appended to it)."
                )
            fp.seek(0)
            if fp.read(8) != HDF5_MAGIC:
                rep.policy("polyglot", "The HDF5 data does not start at offset 0 (a user block precedes it).")
            h5_config = scan_hdf5_file(
                fp,
                size,
                limits,
                rep,
                "The HDF5 file",
                parse_json=lambda text: parse_json_object(text, "model_config", limits, rep),
            )
            assert h5_config is not None
            config = h5_config
            params, names, unknown = scanner.run(config)
    return ScanResult(fmt, config, params, names, unknown, tuple(sorted(scanner.hub)))
