"""Hostile and malformed model files, built offline at test time (SAFETY.md section (c)).

:func:`build` makes every file from one tiny random model saved by the
installed Keras, then mutates the zip, the JSON or the HDF5. Nothing is
committed and nothing touches the network. Payloads only write a canary file:
the path in ``$KI_CANARY``, else ``<dir>/CANARY``, which must never exist after
a refused file was handled. The positive controls in ``tests/test_scan.py``
point ``KI_CANARY`` elsewhere to prove each payload is live.

``conftest.py`` exposes the result as the session fixture ``hostile``.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import struct
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

CANARY_ENV = "KI_CANARY"

#: Layer names Keras accepts (SAFETY.md finding 6): each must scan fine, and come out escaped.
HOSTILE_NAMES = {
    "dotdot": "..",
    "empty": "",
    "con": "CON",
    "bslash": "..\\..\\evil",
    "nul": "a\x00b",
    "inject": "ok\n::error title=pwned::x\x1b[2J",
    "long": "A" * 300,
}


@dataclass(frozen=True)
class Hostile:
    """Where the fixtures are: ``hostile["lambda.keras"]`` is a path string."""

    dir: pathlib.Path
    canary: pathlib.Path
    secret: pathlib.Path
    savedmodel: pathlib.Path

    def __getitem__(self, name: str) -> str:
        path = self.dir / name
        assert path.exists(), f"no fixture {name}"
        return str(path)


def members(path: str | os.PathLike[str]) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path: str | os.PathLike[str], content: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in content.items():
            z.writestr(name, data)


def with_config_edited(src: str | os.PathLike[str], dst: str | os.PathLike[str], edit: Any) -> str:
    """A copy of the ``.keras`` archive ``src`` at ``dst`` whose ``config.json`` is
    ``edit(config)`` applied in place (every other member as it was); returns ``dst``."""
    content = members(src)
    config = json.loads(content["config.json"])
    edit(config)
    write_zip(dst, {**content, "config.json": json.dumps(config).encode()})
    return str(dst)


def copy_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _payload(default_canary: str) -> Any:
    """A lambda that writes the canary (its path read from the environment at call time)."""
    src = (
        "lambda x: (open(__import__('os').environ.get("
        f"{CANARY_ENV!r}, {default_canary!r}), 'w').write('pwned'), x)[1]"
    )
    return eval(src)  # builds the test payload itself


def _set_h5_config(path: str, config: dict[str, Any]) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps(config)


def _h5_config(path: str) -> dict[str, Any]:
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
    return json.loads(raw if isinstance(raw, str) else raw.decode())


class _Unseekable(io.RawIOBase):
    """A write-only stream zipfile cannot seek back in (so it writes data descriptors)."""

    def __init__(self, sink: Any):
        super().__init__()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return self._sink.write(b)


def _insert_gap(data: bytes, junk: bytes) -> bytes:
    """Hide ``junk`` between the first two members and fix every offset, so zipfile still reads it."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        split = sorted(i.header_offset for i in z.infolist())[1]
        central = z.start_dir + len(junk)
    out = bytearray(data[:split] + junk + data[split:])
    at = out.find(b"PK\x01\x02", central)
    while at >= 0:  # central directory entries: local header offset at +42
        (offset,) = struct.unpack_from("<I", out, at + 42)
        if offset >= split:
            struct.pack_into("<I", out, at + 42, offset + len(junk))
        at = out.find(b"PK\x01\x02", at + 46)
    eocd = out.rfind(b"PK\x05\x06")
    (cd_offset,) = struct.unpack_from("<I", out, eocd + 16)
    struct.pack_into("<I", out, eocd + 16, cd_offset + len(junk))
    return bytes(out)


def _patch_zip_flags(path: str, member: str, bit: int) -> None:
    """Set a general-purpose flag bit of one member in its local and central headers."""
    data = bytearray(pathlib.Path(path).read_bytes())
    name = member.encode()
    for sig, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (at := data.find(sig, start)) >= 0:
            if data[at + name_at : at + name_at + len(name)] == name:
                (flags,) = struct.unpack_from("<H", data, at + flag_at)
                struct.pack_into("<H", data, at + flag_at, flags | bit)
            start = at + 4
    pathlib.Path(path).write_bytes(bytes(data))


def build(d: pathlib.Path, keras: Any) -> Hostile:
    """Write every fixture into ``d`` and return their index."""
    import h5py

    def P(name: str) -> str:
        return str(d / name)

    canary = d / "CANARY"
    secret = d / "secret.bin"
    secret.write_bytes(np.arange(12, dtype="f4").tobytes())
    (d / "secret.txt").write_text("TOPSECRET\nhunter2\n")
    savedmodel = d / "sm"
    payload = _payload(str(canary))
    os.environ[CANARY_ENV] = P("build-time-canary")  # Keras traces the Lambda while saving
    try:
        keras.utils.set_random_seed(0)
        layers = keras.layers

        # --- good models, both formats
        inp = keras.Input((4,), name="x")
        out = layers.Dense(2, name="dense_2")(layers.Dense(3, name="dense_1")(inp))
        good = keras.Model(inp, out, name="model")
        good.save(P("good.keras"))
        good.save(P("good.h5"))
        from keras.src.saving import saving_lib

        saving_lib.save_model(good, P("npz_weights.keras"), weights_format="npz")
        base = members(P("good.keras"))
        cfg = json.loads(base["config.json"])

        def with_cfg(c: Any) -> dict[str, bytes]:
            return {**base, "config.json": json.dumps(c).encode()}

        # --- Lambda with marshal'd bytecode, nested: model/encoder/evil
        encoder = keras.Sequential(
            [keras.Input((4,)), layers.Dense(3, name="proj"), layers.Lambda(payload, name="evil")], name="encoder"
        )
        i2 = keras.Input((4,), name="x")
        lam = keras.Model(i2, layers.Dense(2, name="head")(encoder(i2)), name="model")
        lam.save(P("lambda.keras"))
        lam.save(P("lambda.h5"))

        # --- Keras-2-style legacy .h5 Lambda: func_dump list, function_type "lambda", no modules
        from keras.src.utils.python_utils import func_dump

        shutil.copy(P("good.h5"), P("lambda_legacy.h5"))
        legacy = _h5_config(P("lambda_legacy.h5"))
        code, defaults, closure = func_dump(payload)
        legacy["config"]["layers"].append(
            {
                "class_name": "Lambda",
                "name": "evil",
                "config": {
                    "name": "evil",
                    "trainable": True,
                    "dtype": "float32",
                    "function": [code, defaults, closure],
                    "function_type": "lambda",
                    "module": "__main__",
                    "output_shape": None,
                    "output_shape_type": "raw",
                    "output_shape_module": None,
                    "arguments": {},
                },
                "inbound_nodes": [[["dense_2", 0, 0, {}]]],
            }
        )
        legacy["config"]["output_layers"] = [["evil", 0, 0]]
        _set_h5_config(P("lambda_legacy.h5"), legacy)
    finally:
        os.environ.pop(CANARY_ENV, None)
    build_canary = pathlib.Path(P("build-time-canary"))
    if build_canary.exists():
        build_canary.unlink()

    # --- gadget Lambdas: function = a Keras API, its argument smuggled through inbound_nodes
    def gadget(name: str, module: str, fname: str, arguments: dict[str, Any], node_kwargs: dict[str, Any]) -> None:
        c = copy_json(cfg)
        c["config"]["layers"][2] = {
            "module": "keras.layers",
            "class_name": "Lambda",
            "registered_name": None,
            "name": "dense_2",
            "config": {
                "name": "dense_2",
                "trainable": True,
                "dtype": "float32",
                "arguments": arguments,
                "function": {"module": module, "class_name": "function", "config": fname, "registered_name": "function"},
            },
            "inbound_nodes": [{"args": [], "kwargs": node_kwargs}],
        }
        write_zip(P(name), with_cfg(c))

    gadget("gadget_unsafe.keras", "keras.config", "enable_unsafe_deserialization", {}, {})
    gadget("gadget_tfsm.keras", "keras.layers", "TFSMLayer", {"call_endpoint": "serving_default"}, {"inputs": str(savedmodel)})
    gadget("gadget_datasets.keras", "keras.datasets.mnist", "load_data", {}, {"inputs": "x.npz"})

    # --- config-level attacks on dense_1 (layers[1])
    def mutate(name: str, fn: Any) -> None:
        c = copy_json(cfg)
        fn(c["config"]["layers"][1])
        write_zip(P(name), with_cfg(c))

    def tfsm(layer: dict[str, Any]) -> None:
        layer.update(module="keras.layers", class_name="TFSMLayer")
        layer.pop("build_config", None)
        layer["config"] = {"name": "dense_1", "filepath": str(savedmodel), "call_endpoint": "serving_default"}

    mutate("tfsm_layer.keras", tfsm)
    mutate("module_os.keras", lambda layer: layer.update(module="os", class_name="system"))
    mutate("torch_wrapper.keras", lambda layer: layer.update(class_name="TorchModuleWrapper"))
    mutate(
        "activation_lambda.keras",
        lambda layer: layer["config"].update(activation={"class_name": "__lambda__", "config": {"code": "YQ=="}}),
    )
    mutate(
        "activation_get_file.keras",
        lambda layer: layer["config"].update(
            activation={"module": "keras.utils", "class_name": "function", "config": "get_file", "registered_name": None}
        ),
    )
    mutate(
        "activation_ops.keras",  # a real Keras function, but not on the allowlist
        lambda layer: layer["config"].update(
            activation={"module": "keras.ops", "class_name": "function", "config": "add", "registered_name": None}
        ),
    )
    mutate(
        "activation_relu_ref.keras",  # allowlisted: must pass
        lambda layer: layer["config"].update(
            activation={"module": "keras.activations", "class_name": "function", "config": "relu", "registered_name": None}
        ),
    )
    mutate(
        "initializer_os.keras",
        lambda layer: layer["config"].update(
            kernel_initializer={"module": "subprocess", "class_name": "Popen", "config": {}, "registered_name": None}
        ),
    )
    mutate(
        "node_string.keras",
        lambda layer: layer["inbound_nodes"][0]["kwargs"].update(training="/etc/passwd"),
    )
    mutate(
        "custom_layer.keras",  # a user's own layer from their package: unknown, not refused
        lambda layer: layer.update(module="my_project.layers", class_name="MyDense", registered_name="MyProject>MyDense"),
    )

    def td_lambda(layer: dict[str, Any]) -> None:  # a wrapper hiding bytecode one level down
        inner = {
            "module": "keras.layers",
            "class_name": "Lambda",
            "registered_name": None,
            "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {"code": "YQ=="}}},
        }
        layer.update(class_name="TimeDistributed")
        layer["config"] = {"name": "dense_1", "layer": inner}

    mutate("wrapped_lambda.keras", td_lambda)

    # StringLookup with a vocabulary *file path* (CVE-2025-12058)
    si = keras.Input((), dtype="string", name="s")
    lookup = keras.Model(si, keras.layers.StringLookup(vocabulary=["a", "b"], name="lookup")(si), name="model")
    lookup.save(P("string_lookup.keras"))
    sl = members(P("string_lookup.keras"))
    c = json.loads(sl["config.json"])
    c["config"]["layers"][1]["config"]["vocabulary"] = P("secret.txt")
    write_zip(P("string_lookup_path.keras"), {**sl, "config.json": json.dumps(c).encode()})

    # --- malformed containers
    raw = pathlib.Path(P("good.keras")).read_bytes()
    pathlib.Path(P("truncated.keras")).write_bytes(raw[: len(raw) // 2])
    pathlib.Path(P("empty.keras")).write_bytes(b"")
    pathlib.Path(P("text.keras")).write_text("hello\n")
    write_zip(P("no_config.keras"), {k: v for k, v in base.items() if k != "config.json"})
    write_zip(P("no_weights.keras"), {k: v for k, v in base.items() if k != "model.weights.h5"})
    write_zip(P("bad_json.keras"), {**base, "config.json": b'{"class_name": "Functional",\n "config": {not json'})
    write_zip(P("json_array.keras"), {**base, "config.json": b"  [1, 2, 3]"})
    c = copy_json(cfg)
    c["config"]["layers"][1]["class_name"] = "TotallyCustomLayer"
    write_zip(P("unknown_layer.keras"), with_cfg(c))
    c = copy_json(cfg)
    c["config"]["layers"][2]["config"]["units"] = 7  # stored kernel is (3, 2)
    write_zip(P("weights_mismatch.keras"), with_cfg(c))
    c = copy_json(cfg)
    c["config"]["layers"][1]["config"]["units"] = 10**9
    write_zip(P("huge_units.keras"), with_cfg(c))  # never run through Keras: it builds 5e9 parameters
    shutil.copy(P("good.h5"), P("huge_units.h5"))
    legacy = _h5_config(P("huge_units.h5"))
    legacy["config"]["layers"][1]["config"]["units"] = 10**9
    _set_h5_config(P("huge_units.h5"), legacy)
    c = copy_json(cfg)
    c["config"]["layers"][0]["config"]["batch_shape"] = [None, 100000, 100000]
    write_zip(P("huge_input.keras"), with_cfg(c))

    # --- container attacks
    write_zip(P("zipslip.keras"), {**base, "../../escape.txt": b"x", "/tmp/abs.txt": b"y"})
    write_zip(P("extra_member.keras"), {**base, "evil.py": b"import os"})
    with zipfile.ZipFile(P("dup_config.keras"), "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": the point of this fixture
        for name, data in base.items():  # benign config first, the Lambda config last
            z.writestr(name, data)
        z.writestr("config.json", members(P("lambda.keras"))["config.json"])
    pathlib.Path(P("polyglot.keras")).write_bytes(pathlib.Path(P("good.h5")).read_bytes() + raw)
    shutil.copy(P("polyglot.keras"), P("polyglot.h5"))
    pathlib.Path(P("prepended.keras")).write_bytes(b"#!/bin/sh\necho hi\n" + raw)
    pathlib.Path(P("appended.keras")).write_bytes(raw + b"trailing bytes")
    bomb = b'{"x":"' + b" " * (200 << 20) + b'"}'  # 200 MB -> ~200 KB deflated
    write_zip(P("config_bomb.keras"), {**base, "config.json": bomb}, zipfile.ZIP_DEFLATED)
    write_zip(P("deflated.keras"), base, zipfile.ZIP_DEFLATED)  # legit, just recompressed
    with open(P("streamed.keras"), "wb") as sink:  # legit: data descriptors and a zip64 extra
        with zipfile.ZipFile(_Unseekable(sink), "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in base.items():
                with z.open(name, "w", force_zip64=name == "model.weights.h5") as f:
                    f.write(data)
    pathlib.Path(P("hidden_gap.keras")).write_bytes(_insert_gap(raw, b"#!/bin/sh\nrm -rf ~\n"))
    shutil.copy(P("good.keras"), P("encrypted.keras"))
    _patch_zip_flags(P("encrypted.keras"), "config.json", 0x1)
    with zipfile.ZipFile(P("symlink.keras"), "w") as z:
        for name, data in base.items():
            z.writestr(name, data)
        link = zipfile.ZipInfo("assets/vocab.txt")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        z.writestr(link, "/etc/passwd")
    write_zip(P("assets_ok.keras"), {**base, "assets/layers/lookup/vocabulary.txt": b"a\nb\n"})
    write_zip(P("deep_json.keras"), {**base, "config.json": b"[" * 5000 + b"]" * 5000})

    # --- HDF5 attacks inside model.weights.h5
    def mutate_weights(name: str, fn: Any) -> None:
        w = P("_w.h5")
        pathlib.Path(w).write_bytes(base["model.weights.h5"])
        names: list[str] = []
        with h5py.File(w, "r") as f:
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        with h5py.File(w, "r+") as f:
            del f[names[0]]
            fn(f, names[0])
        write_zip(P(name), {**base, "model.weights.h5": pathlib.Path(w).read_bytes()})
        os.remove(w)

    mutate_weights(
        "h5_external.keras", lambda f, n: f.create_dataset(n, (4, 3), "f4", external=[(str(secret), 0, 48)])
    )
    mutate_weights(
        "h5_shape_bomb.keras",
        lambda f, n: f.create_dataset(n, shape=(2**40,), dtype="f8", chunks=(1 << 16,), compression="gzip", fillvalue=0.0),
    )
    mutate_weights("h5_softlink.keras", lambda f, n: f.__setitem__(n, h5py.SoftLink("/layers")))
    shutil.copy(P("good.h5"), P("h5_extlink.h5"))
    with h5py.File(P("h5_extlink.h5"), "r+") as f:
        del f["model_weights"]
        f["model_weights"] = h5py.ExternalLink(P("good.h5"), "/model_weights")
    with h5py.File(P("src.h5"), "w") as f:
        f["data"] = np.arange(12, dtype="f4").reshape(4, 3)
    shutil.copy(P("good.h5"), P("h5_virtual.h5"))
    with h5py.File(P("h5_virtual.h5"), "r+") as f:
        layout = h5py.VirtualLayout(shape=(4, 3), dtype="f4")
        layout[:] = h5py.VirtualSource(P("src.h5"), "data", shape=(4, 3))
        f.create_virtual_dataset("model_weights/stolen", layout)
    with h5py.File(P("plain.h5"), "w") as f:
        f["data"] = np.arange(10)  # HDF5 but not a model
    shutil.copy(P("good.h5"), P("bytes_config.h5"))  # h5py 2 / Keras 2 wrote bytes attributes
    with h5py.File(P("bytes_config.h5"), "r+") as f:
        text = f.attrs["model_config"]
        f.attrs["model_config"] = np.bytes_(text.encode() if isinstance(text, str) else text)

    # --- weird layer names: renamed in the config only (weights are keyed by position)
    def renamed(config: Any, old: str, new: str) -> bytes:
        return json.dumps(config).replace(json.dumps(old), json.dumps(new)).encode()

    tfsm_cfg = json.loads(members(P("tfsm_layer.keras"))["config.json"])
    for tag, new in HOSTILE_NAMES.items():
        write_zip(P(f"name_{tag}.keras"), {**base, "config.json": renamed(cfg, "dense_1", new)})
        write_zip(P(f"evil_name_{tag}.keras"), {**base, "config.json": renamed(tfsm_cfg, "dense_1", new)})
    write_zip(P("name_case.keras"), {**base, "config.json": renamed(cfg, "dense_2", "DENSE_1")})

    # --- non-files
    os.mkdir(P("dir.keras"))
    os.mkfifo(P("fifo.keras"))
    return Hostile(d, canary, secret, savedmodel)
