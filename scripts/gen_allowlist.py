"""Generate ``kerinspect/scan/allowlist.py`` from the installed Keras.

The static pre-scan (``kerinspect/scan.py``) must not import Keras, so the set
of Keras classes and functions it accepts is computed here, once, and committed.
Policy lives in ``kerinspect/scan/denylist.py``; this script only enumerates:

* classes: every public class (aliases included) that has ``from_config`` in
  the namespaces of ``_denylist.CLASS_NAMESPACES``, under its public module and
  its defining module, plus the raw-op classes of ``keras.src.ops.*`` (how a
  functional model records ``keras.ops.add(x, y)``), ``EXTRA_CLASSES`` and the
  layers defined in ``EXTRA_CLASS_PACKAGES``;
* functions: the public functions of ``_denylist.FUNCTION_NAMESPACES``, and the
  names Keras resolves for ``{"module": "builtins", "class_name": "function"}``;

minus every name in ``_denylist``. ``tests/test_scan.py`` regenerates the text
and compares it with the committed file, so a Keras upgrade that adds, renames
or removes a class fails the suite until this script is re-run.

When keras-hub is installed (``pip install 'kerinspect[hub]'``) it also writes
``kerinspect/scan/allowlist_hub.py``: every class keras-hub registers for
deserialization (``keras_hub>BertBackbone``, and the ``keras_nlp>`` aliases) with
its defining module, the few registered functions ``_denylist.HUB_FUNCTIONS``
allows, and the registered-name packages that importing keras_hub makes live
(``_denylist.HUB_IMPORTED_PACKAGES``). Without keras-hub that file is left as it is.

Usage::

    python scripts/gen_allowlist.py           # rewrite allowlist.py (and allowlist_hub.py)
    python scripts/gen_allowlist.py --check   # exit 1 if a committed file is stale
"""

from __future__ import annotations

import importlib
import os
import pathlib
import pkgutil
import sys
import types
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "kerinspect" / "scan" / "allowlist.py"
HUB_TARGET = ROOT / "kerinspect" / "scan" / "allowlist_hub.py"


def _import_keras() -> Any:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def _denylist() -> Any:
    sys.path.insert(0, str(ROOT))
    try:
        from kerinspect.scan import denylist as _denylist
    finally:
        sys.path.pop(0)
    return _denylist


def _is_denied_function(api_name: str, deny: Any) -> bool:
    module, _, name = api_name.rpartition(".")
    return (
        name in deny.EXCLUDED_FUNCTIONS
        or name in deny.DENIED_CLASSES
        or api_name in deny.NON_MODELING_APIS
        or any(module == p or module.startswith(p + ".") for p in deny.NON_MODELING_PREFIXES)
    )


def collect() -> dict[str, Any]:
    """Enumerate the allowed classes and functions of the installed Keras.

    Returns:
        ``{"keras_version", "classes": {module: set(names)}, "functions": {module: set(names)},
        "builtin_functions": set(names)}``.
    """
    keras = _import_keras()
    deny = _denylist()
    from keras.src import api_export
    from keras.src.ops.operation import Operation

    classes: dict[str, set[str]] = {}
    functions: dict[str, set[str]] = {}

    def add(table: dict[str, set[str]], module: str, name: str) -> None:
        table.setdefault(module, set()).add(name)

    def take_class(module: str, name: str, obj: type) -> None:
        if name in deny.DENIED_CLASSES or obj.__name__ in deny.DENIED_CLASSES:
            return
        if not obj.__module__.startswith("keras.") or not callable(getattr(obj, "from_config", None)):
            return
        add(classes, module, name)
        add(classes, obj.__module__, obj.__name__)

    for ns in deny.CLASS_NAMESPACES:
        for name, obj in vars(importlib.import_module(ns)).items():
            if not name.startswith("_") and isinstance(obj, type):
                take_class(ns, name, obj)
    for dotted in deny.EXTRA_CLASSES:
        module, _, name = dotted.rpartition(".")
        take_class(module, name, getattr(importlib.import_module(module), name))

    # Operation covers layers too: the raw-op classes of keras.src.ops.*, and the
    # private layers of the EXTRA_CLASS_PACKAGES, each under its defining module.
    for package in ("keras.src.ops", *deny.EXTRA_CLASS_PACKAGES):
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            if info.name.endswith("_test"):
                continue
            mod = importlib.import_module(f"{package}.{info.name}")
            for name, obj in vars(mod).items():
                if isinstance(obj, type) and issubclass(obj, Operation) and obj.__module__ == mod.__name__:
                    take_class(mod.__name__, name, obj)

    for ns in deny.FUNCTION_NAMESPACES:
        for name, obj in vars(importlib.import_module(ns)).items():
            if isinstance(obj, types.FunctionType) and not name.startswith("_"):
                if not _is_denied_function(f"{ns}.{name}", deny):
                    add(functions, ns, name)

    # {"module": "builtins", "class_name": "function", "config": NAME} is looked up as
    # keras.<m>.NAME for m in Keras's BUILTIN_MODULES, in set order: allow NAME only if
    # every module where it resolves gives an allowed function.
    candidates: dict[str, list[bool]] = {}
    for api_name, obj in api_export.REGISTERED_NAMES_TO_OBJS.items():
        parts = api_name.split(".")
        if len(parts) != 3 or parts[1] not in deny.BUILTIN_FUNCTION_MODULES:
            continue
        module, name = f"keras.{parts[1]}", parts[2]
        ok = isinstance(obj, types.FunctionType) and name in functions.get(module, set())
        candidates.setdefault(name, []).append(ok)
    builtin_functions = {name for name, oks in candidates.items() if all(oks)}

    return {
        "keras_version": keras.__version__,
        "classes": classes,
        "functions": functions,
        "builtin_functions": builtin_functions,
    }


def _frozenset_lines(names: set[str], indent: str) -> list[str]:
    if not names:
        return [f"{indent}frozenset(),"]
    out = [f"{indent}frozenset(", f"{indent}    {{"]
    out += [f'{indent}        "{n}",' for n in sorted(names)]
    out += [f"{indent}    }}", f"{indent}),"]
    return out


def _table_lines(var: str, doc: str, table: dict[str, set[str]]) -> list[str]:
    out = [f"#: {doc}", f"{var}: dict[str, frozenset[str]] = {{"]
    for module in sorted(table):
        out.append(f'    "{module}": frozenset(')
        out.append("        {")
        out += [f'            "{n}",' for n in sorted(table[module])]
        out.append("        }")
        out.append("    ),")
    out.append("}")
    return out


def render(data: dict[str, Any]) -> str:
    """The text of ``kerinspect/scan/allowlist.py`` for ``data`` from :func:`collect`."""
    lines = [
        f'"""Keras {data["keras_version"]} classes and functions the static scan accepts.',
        "",
        "GENERATED by scripts/gen_allowlist.py from the installed Keras minus",
        "kerinspect/scan/denylist.py. Do not edit by hand; re-run the script.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        f'KERAS_VERSION = "{data["keras_version"]}"',
        "",
    ]
    lines += _table_lines(
        "CLASSES", "module -> class names Keras resolves there (``config['module']``).", data["classes"]
    )
    lines.append("")
    lines += _table_lines(
        "FUNCTIONS", "module -> functions a ``class_name: function`` reference may name.", data["functions"]
    )
    lines.append("")
    lines.append("#: Names allowed for ``{'module': 'builtins', 'class_name': 'function'}``.")
    lines.append("BUILTIN_FUNCTIONS: frozenset[str] = frozenset(")
    lines.append("    {")
    lines += [f'        "{n}",' for n in sorted(data["builtin_functions"])]
    lines.append("    }")
    lines.append(")")
    return "\n".join(lines) + "\n"


def collect_hub() -> dict[str, Any] | None:
    """Enumerate keras-hub's registered classes and functions (None without keras-hub).

    Returns:
        ``{"version", "classes": {registered name: "module:Class"}, "functions": set(names),
        "packages": set(registered-name packages live after ``import keras_hub``)}``.
    """
    keras = _import_keras()
    deny = _denylist()
    try:
        import keras_hub
    except ImportError:
        return None
    classes: dict[str, str] = {}
    functions: set[str] = set()
    packages: set[str] = set()
    for name, obj in keras.saving.get_custom_objects().items():
        top = str(getattr(obj, "__module__", "")).split(".", 1)[0]
        if top not in deny.HUB_IMPORTED_PACKAGES:
            continue  # registered by someone else (a test, the user)
        package, sep, short = name.partition(">")
        packages.add(package if sep else name)
        if package not in deny.HUB_REGISTERED_PACKAGES or top != "keras_hub":
            continue  # tensorflow_text's Text> layers: live, never allowed
        if isinstance(obj, type):
            if obj.__name__ not in deny.HUB_DENIED_CLASSES and short not in deny.HUB_DENIED_CLASSES:
                classes[name] = f"{obj.__module__}:{obj.__name__}"
        elif short in deny.HUB_FUNCTIONS:
            functions.add(name)
    return {
        "version": keras_hub.__version__,
        "classes": classes,
        "functions": functions,
        "packages": packages,
    }


def _assigned_frozenset(var: str, names: set[str]) -> list[str]:
    if not names:
        return [f"{var}: frozenset[str] = frozenset()"]
    return [f"{var}: frozenset[str] = frozenset(", *_frozenset_lines(names, "")[1:-1], ")"]


def render_hub(data: dict[str, Any]) -> str:
    """The text of ``kerinspect/scan/allowlist_hub.py`` for ``data`` from :func:`collect_hub`."""
    lines = [
        f'"""keras-hub {data["version"]} classes and functions the static scan accepts.',
        "",
        "GENERATED by scripts/gen_allowlist.py from the installed keras-hub's registered",
        "serializable objects and the keras-hub part of kerinspect/scan/denylist.py.",
        "Do not edit by hand; re-run the script.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        f'KERAS_HUB_VERSION = "{data["version"]}"',
        "",
        "#: registered name -> ``module:Class`` it resolves to (the class's defining module).",
        "CLASSES: dict[str, str] = {",
    ]
    lines += [f'    "{n}": "{data["classes"][n]}",' for n in sorted(data["classes"])]
    lines.append("}")
    lines.append("")
    lines.append("#: Registered functions a ``{'class_name': 'function'}`` reference may name.")
    lines += _assigned_frozenset("FUNCTIONS", data["functions"])
    lines.append("")
    lines.append("#: Registered-name packages that resolve once the worker imports keras_hub.")
    lines += _assigned_frozenset("PACKAGES", data["packages"])
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    targets = [(TARGET, render(collect()))]
    hub = collect_hub()
    if hub is None:
        print(f"keras-hub is not installed: {HUB_TARGET.name} left as it is", file=sys.stderr)
    else:
        targets.append((HUB_TARGET, render_hub(hub)))
    if "--check" in argv:
        stale = [t for t, text in targets if not t.exists() or t.read_text() != text]
        for target in stale:
            print(f"{target} is stale: run python scripts/gen_allowlist.py", file=sys.stderr)
        return 1 if stale else 0
    for target, text in targets:
        target.write_text(text)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
