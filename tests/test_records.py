"""The JSON of reports, generated from their dataclass fields (:mod:`kerinspect.records`).

``golden/check.json`` and ``golden/diff.json`` were written by the hand-written
``to_dict`` methods that the generic one replaced, from the reports built below: the
layout is byte for byte theirs (key order, null for an undefined figure, sums written
exactly, computed keys). The reader keeps what older reports may lack and refuses what a
worker may not send (its output is checked, not trusted). No TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import pytest

from kerinspect.diff import DiffReport, OutputDiff, PairDiff, Sums, Unpaired
from kerinspect.report import (
    AttentionRecord,
    CheckResult,
    CheckRun,
    Failure,
    FirstFault,
    HeadStats,
    InputRecord,
    Isolation,
    LayerRecord,
    ModelError,
    ModelInfo,
    ModelReport,
    RuleCounts,
    RuleResult,
    TensorRecord,
    TensorStats,
)

GOLDEN = pathlib.Path(__file__).parent / "golden"
REGEN = os.environ.get("KERINSPECT_REGEN_GOLDEN") == "1"
NAN, INF = math.nan, math.inf
INFO = ModelInfo("m", "Functional", None, "keras", 10, 5, "3.0", loader="keras+legacy-h5-upgrade",
                 notes=("legacy config upgraded: x", "y"))  # fmt: skip
HISTOGRAM = (0,) * 40 + (3, 0, 2) + (0,) * 122
STATS = TensorStats(10, NAN, INF, -INF, 2, None, 0.5, 1, 2, None, rms=NAN, sample_spread=0, histogram=HISTOGRAM,
                    p01=-1.5, p50=0.25, p99=2.0)


def check_run() -> CheckRun:
    failure = Failure("drift", "l", None, "msg", {"a": INF, "b": 1, "c": None, "d": "s", "e": NAN, "g": 2})
    failed = CheckResult(
        "p", "failed", INFO,
        (RuleResult("drift", "baseline", "tensor", "failed", RuleCounts(1, 2, 3, 4), INF, (failure,)),
         RuleResult("nan", "activations", "tensor", "passed", RuleCounts(0, 5), None)),
        FirstFault("l", "Dense", "out", 1, 2, 3, ("w1",)), {"max_abs": INF, "ignore": ["a"], "x": None, "n": 3},
        4, (InputRecord("x", (4, 2), "float32", "synthetic", 0),), ("i",), ("w",),
    )  # fmt: skip
    error = CheckResult("q.keras", "error", error=ModelError(3, "not-found", "No such file"))
    return CheckRun((failed, error), config_file="pyproject.toml", kerinspect_version="9.9")


def diff_report() -> DiffReport:
    sums = Sums(5, 1, 1.0, INF, 2.0, INF, 3.0)  # mismatched: metrics undefined; an overflowed sum
    same = Sums(4, 0, 2.0, 2.0, 2.0, 0.0, 0.0)
    out = OutputDiff("out", (2, 3), (2, 3), "float32", "float16", STATS, None, sums, same, note="n", model_output=True)
    pair = PairDiff("a/b", "a/c", "Dense", "EinsumDense", "structure", (out, out), container=False,
                    policy_a="float32", policy_b="mixed_float16")  # fmt: skip
    inputs = (InputRecord("x", (4, 2), "float32", "synthetic", 0, "note"),)
    return DiffReport(INFO, INFO, inputs, 4, 2, 1e-3, True, (pair,), (Unpaired("u", "Dense"),), (), ("w",),
                      "1.0", Isolation(True, False, True))  # fmt: skip


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN:
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text(), f"{name}: regenerate with KERINSPECT_REGEN_GOLDEN=1 and review"


def test_check_json_is_golden():
    text = json.dumps(check_run().to_dict(), indent=2)
    check_golden("check.json", text)
    data = json.loads(text)
    assert list(data) == ["schema_version", "kerinspect_version", "passed", "exit_code", "config_file", "totals",
                          "models"]  # fmt: skip
    assert data["totals"] == {"models": 2, "passed": 0, "failed": 1, "errors": 1} and data["exit_code"] == 3
    failure = data["models"][0]["rules"][0]["failures"][0]
    assert "rule" not in failure and failure["values"] == {"a": None, "b": 1, "c": None, "d": "s", "e": None, "g": 2}
    assert data["models"][0]["settings"]["max_abs"] is None and data["models"][0]["rules"][0]["threshold"] is None


def test_diff_json_is_golden_and_reads_back():
    report = diff_report()
    text = json.dumps(report.to_dict(), indent=2)
    check_golden("diff.json", text)
    data = json.loads(text)
    error = data["pairs"][0]["outputs"][0]["error"]
    # undefined metrics are null; the sums are exact (JSON's Infinity), so they read back
    assert (error["cosine"], error["normalised_error"], error["sqnr_db"]) == (None, None, None)
    assert error["sums"] == {"aa": 1.0, "bb": INF, "ab": 2.0, "dd": INF} and error["max_abs_diff"] == 3.0
    assert data["divergence"] == {"path_a": "a/b", "path_b": "a/c", "class_name": "Dense/EinsumDense",
                                  "output": "out", "normalised_error": None, "kind": "inherited"}  # fmt: skip
    assert data["pairing"] == "1 pair (1 by structure); unpaired: 1 in A, 0 in B"
    stats = data["pairs"][0]["outputs"][0]["stats_a"]
    assert stats["histogram"] == {"bins": "signed-log2-half-octave", "first": 40, "counts": [3, 0, 2]}
    assert stats["min"] is None and stats["max"] == 2.0 and isinstance(stats["sample_spread"], float)
    back = DiffReport.from_dict(data)
    assert json.dumps(back.to_dict(), indent=2) == text
    assert back.pairs[0].outputs[0].error == Sums(5, 1, 1.0, INF, 2.0, INF, 3.0)
    assert back.pairs[0].outputs[0].stats_a.histogram == HISTOGRAM


def test_older_reports_load_with_the_defaults():
    layer = LayerRecord.from_dict({"path": "d", "name": "d", "class_name": "Dense", "call": 0, "params": 1,
                                   "outputs": [{"name": "o", "shape": [2], "dtype": "float32", "stats": None,
                                                "flags": []}]})  # fmt: skip
    assert layer == LayerRecord("d", "d", "Dense", 0, 1, outputs=(TensorRecord("o", (2,), "float32", None),))
    assert HeadStats.from_dict({"head": 1}) == HeadStats(1, None, None, None, None, None, None)
    assert AttentionRecord.from_dict({}) == AttentionRecord(None, "layer", "ok", None)
    out = OutputDiff.from_dict({"name": "o", "shape_a": [1], "shape_b": [1], "dtype_a": "f", "dtype_b": "f"})
    assert (out.stats_a, out.stats_b, out.error, out.local, out.note) == (None, None, None, None, None)
    minimal = {"model": INFO.to_dict(), "inputs": [], "layers": [], "samples": 1, "batch_size": 1}
    assert ModelReport.from_dict(minimal) == ModelReport(INFO, (), (), 1, 1)
    assert ModelReport.from_dict({**minimal, "totals": "ignored", "newer_key": 1}) == ModelReport(INFO, (), (), 1, 1)


def _mutated(path: tuple, value: object) -> dict:
    data = json.loads(json.dumps(diff_report().to_dict()))
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("pairs",), KeyError, KeyError),  # a key every version writes
        (("pairs", 0, "outputs", 0, "error", "sums"), KeyError, KeyError),
        (("pairs", 0, "outputs", 0, "error", "sums", "dd"), KeyError, KeyError),
        (("samples",), "4", TypeError),
        (("samples",), 4.5, TypeError),
        (("local",), 1, TypeError),
        (("warnings",), "w", TypeError),
        (("pairs", 0, "paired_by"), "guess", ValueError),
        (("pairs", 0, "outputs", 0, "stats_a", "histogram"), {"bins": "other"}, ValueError),
        (("pairs", 0, "outputs", 0, "stats_a", "count"), True, TypeError),
        (("model_a",), [], TypeError),
    ],
)
def test_a_malformed_result_is_refused(path, value, error):
    with pytest.raises(error):
        DiffReport.from_dict(_mutated(path, value))


def test_the_parent_turns_a_malformed_worker_report_into_a_protocol_error():
    from kerinspect.api import _from_worker
    from kerinspect.errors import ChildCrashError

    with pytest.raises(ChildCrashError) as caught:
        _from_worker(DiffReport.from_dict, {"diff": _mutated(("samples",), "4")}, "diff")
    assert caught.value.rule == "protocol"
