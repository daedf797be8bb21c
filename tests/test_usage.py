"""Cheap errors first: options that contradict each other (or the inputs) are a usage
error in the parent, before any worker starts or TensorFlow is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from kerinspect.errors import ExitCode
from tests.conftest import ROOT, SAMPLES

CNN = str(SAMPLES / "cnn.keras")


def run_cli(tmp_path, *args):
    """The CLI in a fresh process, counting worker starts and reporting what it imported."""
    log = tmp_path / "starts.log"
    code = (
        "import sys\nfrom kerinspect.cli import main\n"
        f"sys.argv = ['kerinspect', *{[str(a) for a in args]!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('IMPORTED', sorted(m for m in ('tensorflow', 'numpy') if m in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "KERINSPECT_WORKER_STARTS_LOG": str(log)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    starts = log.read_text().splitlines() if log.exists() else []
    return out, starts


@pytest.mark.parametrize(
    "args, flag",
    [
        (["report", CNN, "--sample", "50", "--samples", "10"], "--sample"),
        (["summary", CNN, "--shape", "8,8,3", "--input", "{npy}"], "--shape"),
        (["dump", CNN, "--out", "{out}", "--shape", "8,8,3", "--input", "{npy}"], "--shape"),
        (["summary", CNN, "--preprocess", "unit", "--input", "{csv}"], "--preprocess"),
        (["summary", CNN, "--label-column", "y", "--input", "{images}"], "--label-column"),
        (["dump", CNN, "--out", "{out}", "--label-column", "y", "--input", "{npy}"], "--label-column"),
    ],
)
def test_conflicting_options_fail_before_any_worker_starts(tmp_path, args, flag):
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 3), "float32"))
    (tmp_path / "rows.csv").write_text("a,y\n1,0\n")
    (tmp_path / "images" / "cats").mkdir(parents=True)
    args = [a.format(npy=tmp_path / "x.npy", out=tmp_path / "out", csv=tmp_path / "rows.csv",
                     images=tmp_path / "images") for a in args]
    out, starts = run_cli(tmp_path, *args)
    assert out.returncode == ExitCode.USAGE, out.stderr
    error, imported = out.stderr.strip().splitlines()
    assert error.startswith("kerinspect: error[usage]: ") and flag in error, error
    assert starts == [] and imported == "IMPORTED []"  # no worker, no TensorFlow
    assert not (tmp_path / "out").exists()


def test_the_library_says_the_parameter():
    from kerinspect import inspect_model
    from kerinspect.spec import SpecError

    with pytest.raises(SpecError) as e:
        inspect_model(CNN, sample=50, samples=10)
    assert e.value.parameter == "sample" and e.value.message.startswith("sample=50 is out of range")
    assert "--" not in e.value.message
