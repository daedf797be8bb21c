"""Goldens from real runs: every sample model through the real CLI and worker.

The table of each ``sample_models/*.keras`` run is compared with
``tests/golden/samples/<name>.txt`` (regenerate with ``KERINSPECT_REGEN_GOLDEN=1``, then
review the diff), and its rows must add up to its footer: one row per output tensor,
layer calls and parameters as the footer counts them, flagged rows as flagged.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLES

GOLDEN = ROOT / "tests" / "golden" / "samples"
REGEN = os.environ.get("KERINSPECT_REGEN_GOLDEN") == "1"
MODELS = sorted(p.stem for p in SAMPLES.glob("*.keras"))
FOOTER = re.compile(r"^(\d+) layer calls · ([\d,]+) parameters · (\d+) tensors, (\d+) flagged")


#: Options a sample model needs (its custom classes).
OPTIONS = {"transformer": ("--custom-objects", "sample_models/custom_layers.py")}


def run(*args):
    out = subprocess.run([sys.executable, "-m", "kerinspect", *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env={**os.environ, "COLUMNS": "1000"})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_sample_model_table_is_golden_and_adds_up(name):
    import json

    text = run("summary", f"sample_models/{name}.keras", "--samples", "16", *OPTIONS.get(name, ()))
    path = GOLDEN / f"{name}.txt"
    if REGEN:
        path.write_text(text)
    assert text == path.read_text(), f"{name}: regenerate with KERINSPECT_REGEN_GOLDEN=1 and review"
    lines = [line.rstrip() for line in text.splitlines()]
    header = next(i for i, line in enumerate(lines) if line.startswith("Layer "))
    footer = next(i for i, line in enumerate(lines) if FOOTER.match(line))
    calls, params, tensors, flagged = FOOTER.match(lines[footer]).groups()
    rows = lines[header + 2 : footer]  # after the header's rule line
    called = [r for r in rows if "(not called)" not in r]  # a built sub-layer the run did not call
    assert len(called) == int(tensors)
    columns = lines[header]
    flags_at = columns.index("Flags")
    assert sum(1 for r in rows if r[flags_at:].strip()) == int(flagged)
    data = json.loads(run("summary", f"sample_models/{name}.keras", "--samples", "16", "-f", "json",
                          *OPTIONS.get(name, ())))
    layers = [r for r in data["layers"] if r["class_name"] != "InputLayer"]
    assert len([r for r in layers if r["called"]]) == int(calls)
    assert sum(r["params"] for r in layers if r["call"] == 0 and not r["container"]) == int(params.replace(",", ""))
    assert sum(len(r["outputs"]) for r in data["layers"]) == int(tensors)
