"""``kerinspect report``: the histogram bins, escaping, and the page in a real browser.

The browser tests drive Debian's ``chromium`` headless (``--dump-dom`` after the
page's script ran, console messages on stderr). Without chromium they are skipped
on a developer's machine and FAIL on CI (``CI=true``), with the command to install it.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kerinspect import bins, stats
from kerinspect.cli import cli
from kerinspect.figures import Pictures, ReportData, parse_pictures, png
from kerinspect.render_html import html_table, render_report, script_json
from kerinspect.report import LayerRecord, ModelInfo, ModelReport, TensorRecord, TensorStats
from tests.hostile import members, write_zip

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
INSTALL = "apt-get update && apt-get install -y chromium"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


# -- histogram ---------------------------------------------------------------------


def _reference_bins(x: np.ndarray) -> np.ndarray:
    out = np.zeros(bins.BINS, dtype=np.int64)
    for v in x.ravel().astype(np.float64):
        b = bins.bin_of(float(v))
        if b is not None:
            out[b] += 1
    return out


def test_histogram_matches_reference_and_merges_exactly():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((260, 600)) * np.exp(4 * rng.standard_normal((260, 600)))).astype(np.float32)
    x[0, :40] = 0
    x[1, :3] = [np.nan, np.inf, -np.inf]
    x[2, :4] = [1e30, -1e-30, 2.0**-22, -(2.0**21)]
    one = stats.summarize(x, histogram=True)
    assert one is not None and one.hist is not None
    assert np.array_equal(one.hist, _reference_bins(x))  # per-value bins, independent of numpy's frexp
    assert int(one.hist.sum()) == x.size - 3 and int(one.hist[bins.ZERO]) == one.zeros
    with ThreadPoolExecutor(3) as pool:
        parts = stats.summarize(x, histogram=True, parts=3, map_fn=pool.map)
    merged = stats.RunningStats()
    for start in range(0, 260, 37):  # uneven batches
        part = stats.summarize(x[start : start + 37], histogram=True)
        assert part is not None
        merged.merge(part)
    assert parts is not None and np.array_equal(parts.hist, one.hist)
    assert merged.finalize().histogram == one.finalize().histogram
    back = TensorStats.from_dict(json.loads(json.dumps(one.finalize().to_dict())))
    assert back.histogram == one.finalize().histogram
    assert stats.summarize(x).finalize().to_dict().keys() == {  # type: ignore[union-attr]
        k for k in back.to_dict() if k != "histogram"
    }


def test_bin_edges_hold_their_values():
    for v in (1.0, 0.7, 0.71, -3.5, 1e-9, 5e8, 2.0**-21, 2.0**-20):
        low, high = bins.bin_range(bins.bin_of(v))  # type: ignore[arg-type]
        assert low <= v < high or (v < 0 and low < v <= high), (v, low, high)
    assert bins.bin_of(0.0) == bins.ZERO and bins.bin_of(math.nan) is None


# -- escaping ----------------------------------------------------------------------


def _stats() -> TensorStats:
    return TensorStats(
        4,
        0.5,
        0.1,
        0.0,
        1.0,
        1.0,
        0.25,
        0,
        0,
        None,
        histogram=(0,) * (bins.ZERO) + (1,) * 3 + (0,) * (bins.BINS - bins.ZERO - 3),
    )


def _hostile_report() -> ModelReport:
    out = TensorRecord("</script><script>alert(1)</script>", (2, 2), "float32", _stats(), ("exploding",))
    layers = (
        LayerRecord(HOSTILE, HOSTILE, "Dense<b>", 0, 4, outputs=(out,)),
        LayerRecord("</script>", "</script>", "Dense", 0, 0, outputs=(out,)),
    )
    info = ModelInfo("<title>x</title>", "Functional", "/tmp/<i>.keras", "keras", 4, 4, "3.15.1")
    return ModelReport(info, (), layers, 2, 2)


def test_untrusted_names_stay_text():
    page = render_report(ReportData(_hostile_report(), Pictures()), command="kerinspect report '<b>'")
    body = page.split("<body>", 1)[1]
    assert "<img" not in body and "<b>" not in body and "<i>" not in body
    assert page.count("<script") == 2  # the JSON block and the page's own script
    assert page.count("</script>") == 2
    assert html.escape(HOSTILE, quote=True) in page
    assert "<title>kerinspect report: &lt;title&gt;x&lt;/title&gt;</title>" in page
    embedded = page.split('id="kerinspect-report">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["report"]["layers"][0]["path"] == HOSTILE  # the JSON keeps the exact name
    assert "<" not in script_json({"a": "</script><!--\u2028"}).replace("\\u003c", "")
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    table = html_table(_hostile_report())
    assert "<img" not in table and "flagged" in table


def test_pictures_are_checked_and_encoded():
    with pytest.raises((KeyError, TypeError, ValueError)):
        parse_pictures({"sample": 0, "feature_maps": [], "attention": [{"path": "a"}]})
    bad = {"width": 2, "height": 2, "pixels": "AAA=", "head": 0, "max": 1.0}
    with pytest.raises(ValueError):
        parse_pictures({"sample": 0, "feature_maps": [], "attention": [{**_att(), "images": [bad]}]})
    data = png(3, 2, bytes(range(6)))
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and b"PLTE" in data


def _att() -> dict:
    return {
        "path": "a",
        "class_name": "MHA",
        "source": "layer",
        "heads": 1,
        "queries": 2,
        "keys": 2,
        "step_q": 1,
        "step_k": 1,
    }


# -- the page in a real browser ----------------------------------------------------


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        message = f"chromium is not installed: run `{INSTALL}` (as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return exe


def _browse(page: Path, tmp: Path) -> tuple[str, str]:
    """(DOM after the page's scripts ran, chromium's console log)."""
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--window-size=1280,2000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _screenshot(page, tmp)
    return proc.stdout, proc.stderr


#: Where the browser tests leave a screenshot of every page they load (the tests'
#: artifacts, to look at after a run): ``$KERINSPECT_TEST_ARTIFACTS``, else ``build/``.
ARTIFACTS = Path(os.environ.get("KERINSPECT_TEST_ARTIFACTS") or Path(__file__).parents[1] / "build" / "test-artifacts")


def _screenshot(page: Path, tmp: Path) -> None:
    """A full-page screenshot of ``page`` in :data:`ARTIFACTS`, named after the page's
    test (the pages themselves live in temporary folders)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", page.stem).split(" ")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test.split("::")[-1])[:120] + "-" + page.stem + ".png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp / 'profile-shot'}",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
            "--window-size=1280,2400",
            f"--screenshot={ARTIFACTS / name}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and (ARTIFACTS / name).stat().st_size > 0, proc.stderr[-2000:]


def _console(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line or "Refused" in line or "Uncaught" in line]


def _sizes(dom: str) -> dict[str, tuple[int, int]]:
    found = re.search(r'data-rendered="([^"]*)"', dom)
    assert found, "the page's script did not run"
    return {k: tuple(map(int, v.split("x"))) for k, v in (p.split(":") for p in found.group(1).split())}  # type: ignore[misc]


def _report(model: Path, out: Path, *extra: str) -> Path:
    result = CliRunner().invoke(cli, ["report", str(model), "-o", str(out), "--samples", "4", *extra])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sample", ["attention", "cnn"])
def test_report_renders_in_a_real_browser(sample, tmp_path):
    _chromium()
    page = _report(SAMPLES / f"{sample}.keras", tmp_path / f"{sample}.html")
    dom, log = _browse(page, tmp_path)
    assert _console(log) == []  # no script error, no refused (remote) load
    sizes = _sizes(dom)
    wanted = ["table", "depth", "histogram", "heatmap" if sample == "attention" else "featuremap"]
    if sample == "attention":
        wanted.append("featuremap")  # the embedding's strip
    for part in wanted:
        assert min(sizes[part]) > 0, (part, sizes)
    text = page.read_text()
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing loaded from elsewhere
    embedded = json.loads(text.split('id="kerinspect-report">', 1)[1].split("</script>", 1)[0])
    assert embedded["report"]["layers"][1]["outputs"][0]["stats"]["histogram"]["bins"] == bins.SCHEME


@pytest.mark.slow
def test_hostile_layer_names_run_no_script(tmp_path, keras):
    _chromium()
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name=HOSTILE)(inputs)
    out = keras.layers.Dense(2, name="PLACEHOLDER")(hidden)
    plain, model_path = tmp_path / "plain.keras", tmp_path / "hostile.keras"
    keras.Model(inputs, out, name="hostile").save(plain)
    content = members(plain)  # a crafted file: quotes, comment openers (Keras refuses '/')
    script = "<svg onload=\"document.title='pwned'\"><!--"
    content["config.json"] = content["config.json"].replace(b"PLACEHOLDER", json.dumps(script)[1:-1].encode())
    write_zip(model_path, content)
    page = _report(model_path, tmp_path / "hostile.html")
    dom, log = _browse(page, tmp_path)
    assert "<title>kerinspect report: hostile</title>" in dom  # the title is unchanged
    assert 'src="x"' not in dom and "pwned" not in dom.split("<title>", 1)[1].split("</title>", 1)[0]
    assert _console(log) == []
    assert min(_sizes(dom)["table"]) > 0
    assert html.escape(HOSTILE, quote=True) in dom or html.escape(HOSTILE, quote=False) in dom
