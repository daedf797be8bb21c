"""The layout is the rule: ruff refuses an import in the wrong place (docs/ARCHITECTURE.md).

Each case lints one line as if it were a file at a given path (``--stdin-filename``), so
the per-directory ruff configs (pyproject.toml, kerinspect/*/ruff.toml) are what decide.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.conftest import SAMPLES as SAMPLES_DIR

RUFF = shutil.which("ruff", path=str(ROOT / ".venv" / "bin")) or shutil.which("ruff")

CASES = [
    # (where, code, allowed)
    ("kerinspect/report.py", "import tensorflow as tf\nprint(tf)\n", False),
    ("kerinspect/report.py", "import keras\nprint(keras)\n", False),
    ("kerinspect/api.py", "import h5py\nprint(h5py)\n", False),
    ("kerinspect/api.py", "import numpy as np\nprint(np)\n", False),  # parent path: lazily only
    ("kerinspect/api.py", "def f():\n    import numpy as np\n    return np\n", True),
    ("kerinspect/gate.py", "import click\nprint(click)\n", False),
    ("kerinspect/cli/group.py", "import click\nprint(click)\n", True),
    ("kerinspect/cli/dump.py", "import rich\nprint(rich)\n", True),
    ("kerinspect/cli/dump.py", "import numpy as np\nprint(np)\n", False),
    ("kerinspect/scan/policy.py", "import keras\nprint(keras)\n", False),
    ("kerinspect/scan/policy.py", "def f():\n    import tensorflow as tf\n    return tf\n", False),
    ("kerinspect/scan/container.py", "import h5py\nprint(h5py)\n", True),
    ("kerinspect/sandbox/runner.py", "import numpy as np\nprint(np)\n", False),
    ("kerinspect/sandbox/runner.py", "import keras\nprint(keras)\n", False),
    ("kerinspect/engine/trace.py", "import keras\nimport numpy as np\nimport tensorflow as tf\nprint(keras, np, tf)\n", True),
    ("kerinspect/engine/trace.py", "import rich\nprint(rich)\n", False),
    ("kerinspect/engine/hub.py", "def f():\n    import keras_hub\n    return keras_hub\n", True),
    ("kerinspect/scan/policy.py", "def f():\n    import keras_hub\n    return keras_hub\n", False),
    ("kerinspect/sandbox/worker.py", "import keras_hub\nprint(keras_hub)\n", False),
    ("kerinspect/api.py", "def f():\n    import keras_hub\n    return keras_hub\n", False),
]


@pytest.mark.skipif(RUFF is None, reason="ruff is a dev dependency")
@pytest.mark.parametrize("where, code, allowed", CASES)
def test_ruff_enforces_who_may_import_what(where, code, allowed):
    out = subprocess.run([RUFF, "check", "--no-cache", "--select", "TID", "--stdin-filename", where, "-"],
                         input=code, capture_output=True, text=True, cwd=ROOT)
    assert (out.returncode == 0) == allowed, out.stdout + out.stderr


def test_the_parent_of_a_run_imports_no_tensorflow_keras_numpy_or_h5py(tmp_path):
    """What `kerinspect summary` loads in its own process, up to the worker's answer."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['kerinspect', 'summary', sys.argv[1], '-f', 'json']\n"
        "try:\n    runpy.run_module('kerinspect', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('LOADED', sorted(m for m in ('tensorflow', 'keras', 'numpy', 'h5py') if m in sys.modules), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "sample_models" / "cnn.keras")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "LOADED []"


def _imports() -> dict[str, set[str]]:
    """Every kerinspect module and the kerinspect modules it imports anywhere (function-local
    and ``TYPE_CHECKING`` imports included), resolved to the modules that exist."""
    import ast

    files = {}
    for path in (ROOT / "kerinspect").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        resolved = set()
        for target in targets:
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                resolved.add(target)
        graph[name] = resolved
    return graph


#: Plain data: what every view reads. None of it may import a view (render*, the CLI) or Rich.
DATA = ("report", "check_results", "provenance", "diff", "records", "numfmt", "tables", "checks", "config")


@pytest.mark.parametrize("name", DATA)
def test_data_modules_import_no_presentation(name):
    graph = _imports()
    seen, todo = set(), [f"kerinspect.{name}"]
    while todo:  # everything it imports, directly or not
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    views = sorted(m for m in seen if m.startswith(("kerinspect.render", "kerinspect.cli", "kerinspect._ci")))
    assert not views, f"kerinspect.{name} imports {views}"


def test_no_import_circle():
    """A circle of imports marks a helper in the wrong module."""
    graph = _imports()
    for start in graph:
        path, todo, seen = {start: [start]}, [start], set()
        while todo:
            module = todo.pop()
            for target in graph[module]:
                assert target != start, "import circle: " + " -> ".join([*path[module], start])
                if target not in seen:
                    seen.add(target)
                    path[target] = [*path[module], target]
                    todo.append(target)


def test_the_worker_imports_tensorflow_only_to_run_a_model(tmp_path):
    """``weights`` and a file the static scan refuses never import TensorFlow in the worker
    (a hostile file costs the scan, not a TensorFlow start): run_request in a fresh process."""
    import shutil
    import zipfile

    refused = tmp_path / "extra.keras"
    shutil.copy(SAMPLES_DIR / "cnn.keras", refused)
    with zipfile.ZipFile(refused, "a") as z:
        z.writestr("evil.py", "print('hi')")
    code = (
        "import sys\n"
        "from kerinspect.engine.jobs import QuietChannel, run_request\n"
        "from kerinspect.errors import PolicyError\n"
        "from kerinspect.sandbox.protocol import ModelRef, Request\n"
        "def ref(p): import os; return ModelRef(p, 'keras', os.path.getsize(p))\n"
        "run_request(Request('weights', ref(sys.argv[1])), QuietChannel())\n"
        "try:\n    run_request(Request('inspect', ref(sys.argv[2])), QuietChannel())\n"
        "except PolicyError as e:\n    print('REFUSED', e.rule)\n"
        "print('LOADED', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(SAMPLES_DIR / "cnn.keras"), str(refused)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-3:] == ["REFUSED zip-member", "LOADED []", ""]
