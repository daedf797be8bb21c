"""Goldens from real runs: every sample model through the real CLI and worker, once.

Each ``sample_models/*.keras`` runs once, as JSON (the session's shared run,
``sample_report`` in conftest); its table, rendered from that report with the CLI's
renderer on the CLI's pipe console, is compared with ``tests/golden/samples/<name>.txt``
(regenerate with ``KERINSPECT_REGEN_GOLDEN=1``, then review the diff), and its rows must
add up to its footer: one row per output tensor, layer calls and parameters as the footer
counts them, flagged rows as flagged. One test proves, for one model, that the CLI's own
table output is that rendering.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import ROOT, SAMPLES, kerinspect_cli, render_summary, sample_args

GOLDEN = ROOT / "tests" / "golden" / "samples"
REGEN = os.environ.get("KERINSPECT_REGEN_GOLDEN") == "1"
MODELS = sorted(p.stem for p in SAMPLES.glob("*.keras"))
FOOTER = re.compile(r"^(\d+) layer calls · ([\d,]+) parameters · (\d+) tensors, (\d+) flagged")


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_sample_model_table_is_golden_and_adds_up(name, sample_report):
    data = sample_report(name)
    text = render_summary(data)
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
    layers = [r for r in data["layers"] if r["class_name"] != "InputLayer"]
    assert len([r for r in layers if r["called"]]) == int(calls)
    assert sum(r["params"] for r in layers if r["call"] == 0 and not r["container"]) == int(params.replace(",", ""))
    assert sum(len(r["outputs"]) for r in data["layers"]) == int(tensors)


@pytest.mark.slow
def test_the_cli_prints_the_table_rendered_from_its_json(sample_report):
    """What the goldens rest on: for a model with custom classes, nested calls and
    attention, the table the CLI prints to a pipe is, byte for byte, the one rendered
    here from the JSON report of the same run."""
    out = kerinspect_cli(*sample_args("transformer"), env={"COLUMNS": "1000"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == render_summary(sample_report("transformer"))
