"""The README's example outputs are real output of the current code.

Each ``<!-- example: ... -->`` block is re-run through the real CLI and worker
(scripts/readme_examples.py); ``python scripts/readme_examples.py --update`` rewrites them.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import ROOT


def _script():
    spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "scripts" / "readme_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.isolated
@pytest.mark.slow
def test_readme_examples_are_real_output():
    script = _script()
    lines = (ROOT / "README.md").read_text(encoding="utf-8").split("\n")
    assert len(script.examples(lines)) >= 5  # summary, a flagged summary, check, weights, dump
    _, diff = script.refresh(lines)
    assert not diff, "README examples are stale; run `python scripts/readme_examples.py --update`:\n" + "\n".join(diff)


def test_an_example_marker_needs_a_text_block():
    script = _script()
    with pytest.raises(SystemExit):
        script.examples(["<!-- example: summary m.keras -->", "```sh", "```"])
    ex = script.examples(["<!-- example: summary m.keras --samples 4 ; skip=2 -->", "```text", "a", "b", "```"])
    assert ex[0].args == ["summary", "m.keras", "--samples", "4"] and ex[0].skip == 2
    assert (ex[0].start, ex[0].end) == (2, 4)


def test_outputs_match_up_to_another_cpus_rounding_only():
    same = _script().same_output
    line = "norm  LayerNormalization  0.999969  -1.412e-09   0.997  (max difference 2e-08) 1,024"
    assert same([line], [line.replace("-1.412e-09", "-4.802e-10").replace("2e-08", "0")])
    assert same(["min entropy 0.0001096"], ["min entropy   0.0001095"])  # spacing and the 4th digit
    assert not same([line], [line.replace("0.997", "0.897")])  # a real change
    assert not same([line], [line.replace("1,024", "1,124")])
    assert not same([line], [line.replace("norm ", "norms ")])
    assert not same(["12 layer calls"], ["12 layer calls", "more"])
    assert not same(["exit 0"], ["exit 1"])
