"""An ``--input`` array whose shape the model cannot take, found before any worker starts.

The worker compares each input array with the model's signature once the model is
loaded (:func:`kerinspect.engine.inputs.validate_array`), which costs a worker and a
TensorFlow start. When both sides can be read without them, the parent compares first:

* the model: a Keras 3 ``.keras`` archive of a Functional model, whose ``config.json``
  names its inputs (``input_layers``) and each ``InputLayer``'s ``batch_shape``;
* the inputs: an ``.npy``/``.npz`` file, its shapes from the ``.npy`` headers
  (:func:`kerinspect.scan.arrays.check_input_file`: standard library, nothing inflated).

Only a certain mismatch is reported, with the words and exit code of the worker's own
check; anything else (an ``.h5`` model, which only libhdf5 reads and so only the
worker; a subclassed model; names that do not match; a file the checks refuse) is left
to the worker, which judges every file again. Python's ``zipfile`` and ``json`` only,
with the static scan's caps (:class:`~kerinspect.scan.container.Limits`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from typing import Any

from kerinspect.errors import InferenceError, msg

Shape = tuple[int | None, ...]


def fmt_declared(shape: Sequence[int | None]) -> str:
    """A declared shape as Keras prints it: ``(None, 8)``, ``(None,)``."""
    return (
        "(" + ", ".join("None" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")
    )


def shape_error(name: str, declared: Shape, got: tuple[int, ...], source: str) -> InferenceError | None:
    """The error for an array of shape ``got`` fed to input ``name`` declared ``declared``
    (batch axis first, None: any), or None when it fits."""
    where = msg("Received: {input}={source!r}", source=source)
    if len(got) != len(declared):
        return InferenceError(
            f"Input {name!r} expects rank {len(declared)} {fmt_declared(declared)}, got shape {got}. "
            + where,
            rule="input-shape",
        )
    for axis, (d, g) in enumerate(zip(declared, got)):
        if d is not None and d != g:
            return InferenceError(
                f"Input {name!r} expects shape {fmt_declared(declared)}, got {got} "
                f"(axis {axis}: {d} != {g}). " + where,
                rule="input-shape",
            )
    return None


def declared_inputs(model_path: str) -> list[tuple[str, Shape]] | None:
    """``[(name, batch_shape)]`` of a Keras 3 Functional model saved as ``.keras``, in
    the order of its inputs; None when the archive does not say it plainly."""
    from kerinspect.scan.container import Limits, Reporter, check_members, read_member
    from kerinspect.scan.json_caps import parse_json_object

    limits, rep = Limits(), Reporter(None)
    try:
        with open(model_path, "rb") as f, zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            check_members(infos, limits, rep, "the model archive")
            found = [i for i in infos if i.filename == "config.json"]
            if len(found) != 1:
                return None
            raw = read_member(zf, found[0], limits.max_config_bytes, rep)
            config = parse_json_object(raw, "config.json", limits, rep)
    except Exception:  # noqa: BLE001 - the worker's scan says what is wrong with the file
        return None
    return _functional_inputs(config)


def _functional_inputs(config: dict[str, Any]) -> list[tuple[str, Shape]] | None:
    if config.get("class_name") != "Functional" or not isinstance(config.get("config"), dict):
        return None
    inner = config["config"]
    refs, layers = inner.get("input_layers"), inner.get("layers")
    if not isinstance(refs, list) or not isinstance(layers, list) or not refs:
        return None
    if isinstance(refs[0], str):  # one input: ["name", 0, 0]
        refs = [refs]
    shapes: dict[str, Shape] = {}
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("class_name") != "InputLayer":
            continue
        cfg = layer.get("config")
        shape = cfg.get("batch_shape") if isinstance(cfg, dict) else None
        name = layer.get("name")
        if not isinstance(name, str) or not isinstance(shape, list):
            return None
        if not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape):
            return None
        shapes[name] = tuple(shape)
    out = []
    for ref in refs:
        if not isinstance(ref, list) or not ref or ref[0] not in shapes or ref[1:] not in ([0, 0], []):
            return None
        out.append((ref[0], shapes[ref[0]]))
    return out if len({n for n, _ in out}) == len(out) else None


def check_input_shapes(model_path: str, input_path: str, source: str, max_rows: int | None) -> None:
    """Raise the worker's ``input-shape`` error when the arrays of ``input_path`` (an
    ``.npy``/``.npz`` file the user named ``source``) cannot feed the model saved at
    ``model_path``, as far as both can be read here; else nothing (see the module).
    ``max_rows``: the rows the worker reads (``samples``; None: all)."""
    from kerinspect.scan.arrays import check_input_file

    if not input_path.lower().endswith((".npy", ".npz")):
        return
    declared = declared_inputs(model_path)
    if declared is None:
        return
    try:
        entries = check_input_file(input_path)
    except Exception:  # noqa: BLE001 - the worker's read of the file says what is wrong
        return
    if entries[0].member is None:  # .npy: one array for a one-input model
        if len(declared) != 1:
            return
        pairs = [(declared[0], entries[0])]
    elif len(declared) == 1 and len(entries) == 1:
        pairs = [(declared[0], entries[0])]
    else:
        by_key = {e.name: e for e in entries}
        if set(by_key) != {n for n, _ in declared}:
            return
        pairs = [((n, s), by_key[n]) for n, s in declared]
    for (name, shape), entry in pairs:
        got = entry.shape
        # the worker reads the first max_rows rows (a Fortran-order .npz member: all)
        if max_rows is not None and got and not (entry.member is not None and entry.fortran_order):
            got = (min(got[0], max_rows), *got[1:])
        error = shape_error(name, shape, tuple(got), source)
        if error is not None:
            raise error
