"""Rendering of hand-built reports against golden text, JSON round trips, escaping.

No TensorFlow. Regenerate the golden files after an intended change with
``KERINSPECT_REGEN_GOLDEN=1 pytest tests/test_render.py`` and review the diff.
"""

from __future__ import annotations

import io
import json
import os
import pathlib

import pytest
from rich.console import Console

from kerinspect.render import fit_columns, render_json, render_markdown, render_table, rows
from kerinspect.report import (
    InputRecord,
    LayerRecord,
    ModelInfo,
    ModelReport,
    TensorRecord,
    TensorStats,
    Thresholds,
)

GOLDEN = pathlib.Path(__file__).parent / "golden"
REGEN = os.environ.get("KERINSPECT_REGEN_GOLDEN") == "1"


def st(mean, std, lo, hi, zeros=0.0, nan=0, inf=0, dead=0.0, count=64):
    return TensorStats(count, mean, std, lo, hi, None if lo is None else max(abs(lo), abs(hi)),
                       zeros, nan, inf, dead)


def T(name, shape, stats, flags=(), dtype="float32"):
    return TensorRecord(name, shape, dtype, stats, flags)


def hand_built(name_a="dense", name_b="lstm") -> ModelReport:
    layers = (
        LayerRecord("x", "x", "InputLayer", 0, 0, outputs=(T("output", (8, 4), st(0.01, 1.0, -2.1, 2.3)),)),
        LayerRecord(name_a, name_a, "Dense", 0, 40,
                    outputs=(T("output", (8, 8), st(0.3, 0.5, 0.0, 2.0, zeros=0.6, dead=0.625), ("dead",)),)),
        LayerRecord(f"{name_a}@1", name_a, "Dense", 1, 40,
                    outputs=(T("output", (8, 8), st(0.2, 0.4, 0.0, 1.5, zeros=0.5, dead=0.25)),)),
        LayerRecord("enc", "enc", "Functional", 0, 12, container=True,
                    outputs=(T("output", (8, 3), st(None, None, None, None, nan=24), ("nan",)),)),
        LayerRecord("enc/inner", "inner", "Dense", 0, 12, depth=1,
                    outputs=(T("output", (8, 3), st(None, None, None, None, nan=24), ("nan",)),)),
        LayerRecord(name_b, name_b, "LSTM", 0, 96, outputs=(
            T("output", (8, 5, 4), st(1e-5, 0.02, -0.05, 0.05)),
            T("state_h", (8, 4), st(-3.2e5, 1.1e5, -4e5, 12345.678), ("exploding",)),
            T("state_c", (8, 4), st(0.0, 0.0, 0.0, 0.0, zeros=1.0, dead=1.0), ("dead",)),
        )),
        LayerRecord("ids", "ids", "Cast", 0, 0, outputs=(T("output", (8,), st(2.0, 1.0, 0, 4), dtype="int32"),)),
    )
    return ModelReport(
        model=ModelInfo("toy", "Functional", "models/toy.keras", "keras", 188, 188, "3.15.1"),
        inputs=(InputRecord("x", (8, 4), "float32", "synthetic", 0),),
        layers=layers, samples=8, batch_size=4, thresholds=Thresholds(), kerinspect_version="0.1.0",
    )


def table_text(report, width=140, fit=True):
    buf = io.StringIO()
    render_table(report, Console(file=buf, width=width, color_system=None, legacy_windows=False), fit=fit)
    return buf.getvalue()


def check_golden(name, text):
    path = GOLDEN / name
    if REGEN:
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; regenerate with KERINSPECT_REGEN_GOLDEN=1"


def test_table_golden():
    check_golden("table_140.txt", table_text(hand_built()))


def test_narrow_table_drops_low_priority_columns_golden():
    text = table_text(hand_built(), width=80)
    check_golden("table_80.txt", text)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "hidden to fit 80 columns" in text


def test_markdown_golden():
    check_golden("report.md", render_markdown(hand_built()))


def test_json_golden_and_round_trip():
    report = hand_built()
    text = render_json(report)
    check_golden("report.json", text + "\n")
    data = json.loads(text)
    assert ModelReport.from_dict(data) == report
    # NaN never appears: undefined statistics are null
    assert "NaN" not in text and data["layers"][3]["outputs"][0]["stats"]["mean"] is None


def test_json_contract_keys():
    data = json.loads(render_json(hand_built()))
    assert {"model", "inputs", "layers"} <= set(data)
    assert {"path", "name", "format", "params"} <= set(data["model"])
    assert set(data["inputs"][0]) >= {"name", "shape", "dtype", "source"}
    layer = data["layers"][5]
    assert set(layer) >= {"path", "name", "class_name", "call", "params", "outputs"}
    out = layer["outputs"][1]
    assert set(out) >= {"name", "shape", "dtype", "stats", "flags"}
    assert set(out["stats"]) == {"count", "mean", "std", "min", "max", "abs_max", "zero_fraction",
                                 "nan_count", "inf_count", "dead_fraction",
                                 "rms", "sample_spread", "saturated_fraction", "p01", "p50", "p99"}
    assert out["flags"] == ["exploding"]


def test_totals_add_up_from_rows():
    report = hand_built()
    t = report.totals
    calls = [r for r in report.layers if r.class_name != "InputLayer"]
    assert t.layer_calls == len(calls) == 6
    # shared second call and the container are not counted again
    assert t.params == 40 + 12 + 96 + 0
    assert t.tensors == sum(len(r.outputs) for r in report.layers) == 9
    assert t.flagged_tensors == sum(1 for _, o, _ in rows(report) if o is not None and o.flags) == 5
    footer = table_text(report).strip().splitlines()[-1]
    assert footer.startswith("6 layer calls · 148 parameters · 9 tensors, 5 flagged")


HOSTILE = "ok\n::error title=pwned::x\x1b[2J[bold red]boom[/]"


@pytest.mark.parametrize("render", ["table", "markdown"])
def test_hostile_names_are_escaped(render):
    report = hand_built(name_a=HOSTILE, name_b="a\x00b\\c")
    text = table_text(report, width=400) if render == "table" else render_markdown(report)
    assert "\x1b" not in text and "\x00" not in text
    assert not any(line.startswith("::") for line in text.splitlines())
    assert "\\n:\\x3aerror" in text and "\\x1b[2J" in text
    if render == "table":
        assert "[bold red]boom[/]" in text  # shown literally, not interpreted as markup


def test_json_keeps_exact_names():
    report = hand_built(name_a=HOSTILE)
    assert json.loads(render_json(report))["layers"][1]["name"] == HOSTILE


def test_unfit_table_keeps_every_column():
    text = table_text(hand_built(), width=1000, fit=False)
    header = text.splitlines()[3]
    for col in ("Layer", "Class", "Params", "Zeros", "Inf", "Flags"):
        assert col in header


def test_fit_columns_keeps_order_and_priority():
    cells = [["a" * 10, "Dense", "(1,)", "1", "1", "1", "1", "1", "1", "1", "1", "1", ""]]
    assert fit_columns(cells, None)[0] == "Layer"
    narrow = fit_columns(cells, 40)
    assert narrow[:2] == ["Layer", "Output shape"] and "Params" not in narrow


def workflow_command_lines(text: str) -> list[str]:
    """Lines GitHub's runner would take as commands: ``::`` after leading whitespace
    (ActionCommand.TryParseV2), or ``##[`` anywhere (TryParse)."""
    return [ln for ln in text.splitlines() if ln.lstrip().startswith("::") or "##[" in ln]


@pytest.mark.parametrize("name", [
    "::error title=PWNED::model is safe",          # a whole command, no newline needed
    "x" * 40 + "::warning::folded onto the next line",  # a wrap point lands before '::'
    "##[error]legacy form works anywhere",
    "::stop-commands::token",
])
def test_no_table_line_can_be_a_workflow_command(name):
    report = hand_built(name_a=name)
    for width in (80, 140, 400):
        assert workflow_command_lines(table_text(report, width=width)) == [], width
    assert workflow_command_lines(render_markdown(report)) == []


def test_invisible_and_bidi_characters_are_shown_escaped():
    report = hand_built(name_a="safe\u202egnp.exe\u200b")
    text = table_text(report, width=400)
    assert "\u202e" not in text and "\u200b" not in text
    assert "\\u202e" in text and "\\u200b" in text


def test_json_is_ascii_and_survives_lone_surrogates():
    name = "bad\ud800name\x9b[2J\u2028"
    text = render_json(hand_built(name_a=name))
    assert text.isascii()
    assert json.loads(text)["layers"][1]["name"] == name  # still exact after parsing


def test_markdown_names_cannot_make_links_images_or_html():
    report = hand_built(name_a="[click](http://evil.example) ![x](http://t.example/p.png) <img src=x>`|")
    md = render_markdown(report)
    row = next(line for line in md.splitlines() if "click" in line)
    cell = row.split(" | ")[0].removeprefix("| ")
    # the name is one code span: fenced by more backticks than it holds, pipes escaped
    assert cell.startswith("``") and cell.endswith("``") and "\\|" in cell
    header = md.splitlines()[0]
    assert "<img" not in header.replace("\\<img", "") and "](" not in header.replace("\\]\\(", "")


def test_a_mean_below_float32_resolution_is_shown_as_about_zero():
    """A LayerNormalization output's mean (1e-10..1e-9 of values near 1) is rounding
    noise whose digits differ between CPUs: the table shows ~0, the JSON the figure."""
    from types import SimpleNamespace

    from kerinspect.render import fmt_mean

    def st(mean, lo=-3.0, hi=2.5):
        return SimpleNamespace(mean=mean, min=lo, max=hi)

    assert fmt_mean(st(3.459e-10)) == "~0" and fmt_mean(st(-2.9e-6)) == "~0"
    assert fmt_mean(st(3.1e-6)) == "3.1e-06"  # above 1e-6 of the largest magnitude: shown
    assert fmt_mean(st(0.0)) == "0" and fmt_mean(st(1e-12, 0.0, 1e-11)) == "1e-12"
    assert fmt_mean(None) == "-" and fmt_mean(st(None)) == "-"


def test_a_mean_of_rounding_noise_reads_the_same_in_every_view():
    """One tensor whose mean is rounding noise around zero (a LayerNormalization output):
    the summary table, Markdown, the reprs, the notebook's HTML table, the HTML report and
    the diff table all show ``~0`` (:mod:`kerinspect.numfmt`); only the JSON keeps the figure."""
    from kerinspect.diff import DiffReport, OutputDiff, PairDiff, Sums
    from kerinspect.figures import Pictures, ReportData
    from kerinspect.render_diff import render_diff_markdown
    from kerinspect.render_html import render_report

    noise = TensorStats(64, -1.494e-09, 1.0, -2.0, 2.0, 2.0, 0.0, 0, 0, 0.0)
    ln = LayerRecord("ln", "ln", "LayerNormalization", 0, 16, outputs=(T("output", (8, 8), noise),))
    info = ModelInfo("toy", "Functional", None, "keras", 16, 16, "3.15.1")
    report = ModelReport(info, (), (ln,), 8, 8)
    page = render_report(ReportData(report, Pictures()))
    embedded = page.split('id="kerinspect-report">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["report"]["layers"][0]["outputs"][0]["stats"]["mean"] == -1.494e-09
    out = OutputDiff("output", (8, 8), (8, 8), "float32", "float32", noise, noise, Sums(64, 0, 1.0, 1.0, 1.0))
    diff = DiffReport(info, info, (), 8, 8, 1e-2, False, (PairDiff("ln", "ln", "LayerNormalization",
                                                                   "LayerNormalization", "path", (out,)),))
    views = {
        "table": next(line for line in table_text(report).splitlines() if line.startswith("ln ")),
        "markdown": next(line for line in render_markdown(report).splitlines() if "ln" in line),
        "repr": repr(ln),
        "notebook html": report._repr_html_(),
        "html report": page.replace(embedded, ""),
        "diff table": next(line for line in render_diff_markdown(diff).splitlines() if "LayerNorm" in line),
    }
    for view, text in views.items():
        assert "~0" in text and "1.494" not in text and "e-09" not in text, (view, text)
    assert "mean ~0 std 1" in views["repr"] and "mean ~0 · std 1" in views["html report"]
    assert ">~0</td>" in views["notebook html"] and ">~0</td>" in views["html report"]
    assert views["diff table"].count(" ~0 ") == 2  # Mean A and Mean B
