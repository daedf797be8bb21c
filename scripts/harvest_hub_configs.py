"""Collect small, valid configs of every allowlisted keras-hub backbone from keras-hub's tests.

keras-hub's own tests (``keras_hub/src/models/*/*_test.py``, not shipped in the wheel) build
tiny instances of each backbone (``self.init_kwargs``, ``self.backbone = XBackbone(...)``).
``tests/test_hub_size.py`` checks that the worker's deferred count of each (the size check
of :mod:`kerinspect.engine.hub`) equals ``count_params()`` of its real build, recorded here, so
they are copied once into
``scripts/hub_small_configs.json`` (the serialized config of each instance, as a ``.keras``
file stores it). Run it by hand against a checkout of keras-hub at the commit matching the
installed version; nothing reads the network or a path outside the project at run time::

    python scripts/harvest_hub_configs.py PATH/TO/keras-hub  [--commit SHA]

It executes each test module's ``setUp`` with a stand-in ``self`` (only keras-hub's own test
code, from the checkout you give it), instantiates what it finds, keeps the configs whose
class is an allowlisted ``*Backbone`` and, per class, one config of each distinct form
(keys, list lengths, strings, nested classes), plus ``EXTRA`` below for classes no test builds
on its own.

Then each allowlisted task class (``BertTextClassifier``, ``GemmaCausalLM``...) is built on the
first small config of its ``backbone_cls``, with ``preprocessor=None`` and ``num_classes=3``
where it takes one (``tasks`` in the file; a task that needs more is listed in
``tasks_skipped``). ``--tasks-only`` redoes just that part from the backbones already in the
file (no checkout needed).
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import pathlib
import re
import sys
import types
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "scripts" / "hub_small_configs.json"


def _setups(path: pathlib.Path) -> list[tuple[str, Any, Any]]:
    """(attribute, class or None, value) of what each test class's setUp puts on self."""
    text = path.read_text()
    tree = ast.parse(text)
    ns: dict[str, Any] = {"__name__": "harvest", "__file__": str(path)}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)):
            try:
                exec(compile(ast.Module([node], []), str(path), "exec"), ns)
            except Exception:  # noqa: BLE001 (a test-only import: not needed for setUp)
                pass
    main = re.findall(r"cls=(\w+Backbone)", text)
    cls = ns.get(main[0]) if main else None
    found: list[tuple[str, Any, Any]] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for fn in node.body:
            if not (isinstance(fn, ast.FunctionDef) and fn.name == "setUp"):
                continue
            fn = copy.deepcopy(fn)
            fn.decorator_list = []
            fn.body = [  # super().setUp(): the stand-in has no base class
                s for s in fn.body if not (isinstance(s, ast.Expr) and "super()" in ast.unparse(s))
            ] or [ast.Pass()]
            module = ast.fix_missing_locations(ast.Module([fn], []))
            local = dict(ns)
            exec(compile(module, str(path), "exec"), local)
            this = types.SimpleNamespace(get_test_data_dir=lambda: str(path.parent / "test_data"))
            try:
                local["setUp"](this)
            except Exception as e:  # noqa: BLE001
                print(f"skip {path.name}: setUp raised {type(e).__name__}", file=sys.stderr)
                continue
            for key, value in vars(this).items():
                found.append((key, cls, value))
    return found


def _form(config: Any) -> Any:
    """A config with its numbers blanked: two configs of one form fit the same polynomial."""
    if isinstance(config, dict):
        return {k: _form(v) for k, v in config.items() if k not in ("name", "dtype", "build_config")}
    if isinstance(config, list):
        return [_form(v) for v in config]
    if isinstance(config, (int, float)) and not isinstance(config, bool):
        return 0
    return config


#: classes that no test builds on its own: built here from the arguments keras-hub's docs give
EXTRA: dict[str, dict[str, Any]] = {}


def harvest(checkout: pathlib.Path, commit: str) -> dict[str, Any]:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import keras_hub
    from keras_hub.src.models.backbone import Backbone

    stub = types.ModuleType("keras_hub.src.tests.test_case")
    stub.TestCase = type("TestCase", (), {})  # type: ignore[attr-defined]
    sys.modules.setdefault("keras_hub.src.tests", types.ModuleType("keras_hub.src.tests"))
    sys.modules["keras_hub.src.tests.test_case"] = stub
    sys.path.insert(0, str(ROOT))
    from kerinspect.scan import allowlist_hub

    backbones = {
        name: target
        for name, target in allowlist_hub.CLASSES.items()
        if name.startswith("keras_hub>") and name.endswith("Backbone")
    }
    targets = set(backbones.values())
    out: dict[str, list[dict[str, Any]]] = {}
    seen: dict[str, list[Any]] = {}

    def keep(instance: Any, source: str) -> None:
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(instance)))
        target = f"{type(instance).__module__}:{type(instance).__name__}"
        if target not in targets:
            return
        form = _form(config)
        if form in seen.setdefault(target, []):
            return
        seen[target].append(form)
        out.setdefault(target, []).append(
            {"source": source, "count_params": int(instance.count_params()), "config": config}
        )

    for path in sorted(checkout.glob("keras_hub/src/models/*/*_test.py")):
        if "preset" in path.name:
            continue
        try:
            found = _setups(path)
        except Exception as e:  # noqa: BLE001
            print(f"skip {path.name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        rel = path.relative_to(checkout).as_posix()
        for key, cls, value in found:
            try:
                if isinstance(value, Backbone):
                    keep(value, f"{rel}: self.{key}")
                elif key.endswith("init_kwargs") and isinstance(value, dict) and cls is not None:
                    keep(cls(**value), f"{rel}: {cls.__name__}(**self.{key})")
            except Exception as e:  # noqa: BLE001
                print(f"skip {rel}: self.{key}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
    for name, kwargs in EXTRA.items():
        module, _, cls_name = backbones[name].partition(":")
        cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
        keep(cls(**kwargs), f"scripts/harvest_hub_configs.py: EXTRA[{name!r}]")
    missing = sorted(targets - set(out))
    return {
        "keras_hub_version": keras_hub.__version__,
        "keras_hub_commit": commit,
        "missing": missing,
        "classes": {t: out[t] for t in sorted(out)},
    }


#: arguments a task takes besides its backbone, when it requires them
TASK_ARGUMENTS: dict[str, Any] = {"num_classes": 3, "preprocessor": None, "depth_estimation_type": "relative"}


def harvest_tasks(data: dict[str, Any]) -> dict[str, Any]:
    """Small configs of every allowlisted task class, built on the harvested backbones."""
    import importlib
    import inspect

    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras_hub.src.models.task import Task

    sys.path.insert(0, str(ROOT))
    from kerinspect.scan import allowlist_hub

    tasks: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    for target in sorted(set(allowlist_hub.CLASSES.values())):
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            continue
        backbone_cls = getattr(cls, "backbone_cls", None)
        backbone_target = f"{backbone_cls.__module__}:{backbone_cls.__name__}" if backbone_cls else None
        if backbone_target not in data["classes"]:
            skipped[target] = "no backbone class, or no small config of it"
            continue
        small = data["classes"][backbone_target][0]
        params = inspect.signature(cls.__init__).parameters
        kwargs = {k: v for k, v in TASK_ARGUMENTS.items() if k in params}
        try:
            backbone = keras.saving.deserialize_keras_object(copy.deepcopy(small["config"]))
            task = cls(backbone=backbone, **kwargs)
            config = json.loads(json.dumps(keras.saving.serialize_keras_object(task)))
        except Exception as e:  # noqa: BLE001 (a task that needs more than a backbone)
            skipped[target] = f"{type(e).__name__}: {str(e)[:160]}"
            continue
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        source = f"{name}(backbone=<{small['source']}>{', ' + args if args else ''})"
        tasks[target] = [{"source": source, "count_params": int(task.count_params()), "config": config}]
    data["tasks"] = tasks
    data["tasks_skipped"] = skipped
    return data


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", type=pathlib.Path, nargs="?", help="a keras-hub source checkout")
    parser.add_argument("--commit", default="", help="the checkout's commit, recorded in the file")
    parser.add_argument("--tasks-only", action="store_true", help="only rebuild the task configs")
    args = parser.parse_args(argv)
    if args.tasks_only:
        data = json.loads(TARGET.read_text())
    elif args.checkout is None:
        parser.error("a keras-hub checkout is required (or --tasks-only)")
    else:
        data = harvest(args.checkout, args.commit)
    data = harvest_tasks(data)
    TARGET.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    n = sum(len(v) for v in data["classes"].values())
    print(f"wrote {TARGET}: {n} configs of {len(data['classes'])} classes; no config for {data['missing']}")
    print(f"{len(data['tasks'])} tasks; skipped {sorted(data['tasks_skipped'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
