"""Run the README's examples and compare (or, with ``--update``, replace) their output.

An example is a fenced ``text`` block right after a marker line::

    <!-- example: summary sample_models/attention.keras --samples 64 -->

The marker's words are the arguments of ``kerinspect``; options after `` ; `` say how to
show the output: ``skip=N`` drops its first N lines, ``stream=stderr`` shows stderr instead of
stdout. Every example runs as a user runs it: the real CLI in a subprocess, model files
opened by the isolated worker, in a scratch directory that holds a copy of
``sample_models/`` (so ``--out acts`` writes nothing into the project).

    python scripts/readme_examples.py            # exit 1 and a diff when the README is stale
    python scripts/readme_examples.py --update   # rewrite the blocks from real runs
    python scripts/readme_examples.py --update --only 'check'   # only the examples whose
                                                 # marker holds this text

An example matches its real output when every line has the same words, and the same
numbers up to float rounding across CPUs (:func:`same_output`): a LayerNormalization
mean of -1.4e-09 on one machine is -4.8e-10 on another, and neither is stale.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- example: (?P<args>.+?)(?: ; (?P<opts>.+?))? -->$")


@dataclass
class Example:
    args: list[str]
    skip: int
    stream: str
    start: int  # index of the first line inside the fence
    end: int  # index of the closing fence


def examples(lines: list[str]) -> list[Example]:
    found = []
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        opts = dict(o.split("=", 1) for o in (m.group("opts") or "").split() if "=" in o)
        if i + 1 >= len(lines) or lines[i + 1] != "```text":
            raise SystemExit(f"README.md:{i + 1}: an example marker must be followed by a ```text block")
        end = lines.index("```", i + 2)
        found.append(
            Example(
                shlex.split(m.group("args")),
                int(opts.get("skip", 0)),
                opts.get("stream", "stdout"),
                i + 2,
                end,
            )
        )
    return found


#: A number in a line of output: ``12``, ``-1.494e-09``, ``0.2946``, ``1,024``.
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
#: Numbers this close are the same figure computed by another CPU: below ABS they are
#: rounding noise around zero (float32's epsilon is 1.2e-07), above it they agree to
#: REL (a table shows four significant digits).
ABS, REL = 1e-6, 5e-3


def same_output(old: list[str], new: list[str]) -> bool:
    """``old`` and ``new`` say the same: the same lines of the same words (spacing aside),
    numbers equal up to :data:`ABS`/:data:`REL`."""
    return len(old) == len(new) and all(_same_line(a, b) for a, b in zip(old, new))


def _same_line(a: str, b: str) -> bool:
    words_a, words_b = a.split(), b.split()
    if len(words_a) != len(words_b):
        return False
    for x, y in zip(words_a, words_b):
        if NUMBER.split(x) != NUMBER.split(y):  # the text around the numbers
            return False
        for m, n in zip(NUMBER.findall(x), NUMBER.findall(y)):
            u, v = float(m.replace(",", "")), float(n.replace(",", ""))
            if not (abs(u - v) <= ABS or abs(u - v) <= REL * max(abs(u), abs(v))):
                return False
    return True


def run(example: Example, cwd: Path) -> list[str]:
    # the caller's KERINSPECT_ settings stay out, but for counting worker starts (tests/conftest.py)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KERINSPECT_") or k.startswith("KERINSPECT_WORKER_STARTS_")
    }
    env.update(COLUMNS="1000", NO_COLOR="1", KERINSPECT_ISOLATION="on")
    proc = subprocess.run(
        [sys.executable, "-m", "kerinspect", *example.args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = proc.stderr if example.stream == "stderr" else proc.stdout
    if example.stream == "stdout" and proc.returncode not in (0, 1, 3) or not text.strip():
        raise SystemExit(f"kerinspect {shlex.join(example.args)} exited {proc.returncode}:\n{proc.stderr}")
    return [line.rstrip() for line in text.rstrip("\n").split("\n")][example.skip :]


def refresh(lines: list[str], only: str | None = None) -> tuple[list[str], list[str]]:
    """The README with every example's output replaced by a real run, and a diff
    (``only``: just the examples whose arguments hold this text)."""
    new = list(lines)
    diff: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kerinspect-readme-") as tmp:
        shutil.copytree(ROOT / "sample_models", Path(tmp) / "sample_models")
        for ex in reversed(examples(lines)):
            if only is not None and only not in shlex.join(ex.args):
                continue
            out = run(ex, Path(tmp))
            old = lines[ex.start : ex.end]
            if same_output(old, out):
                continue  # the same output up to another CPU's rounding: left as it is
            diff[:0] = difflib.unified_diff(old, out, f"README.md:{ex.start + 1}", "real output", lineterm="")
            new[ex.start : ex.end] = out
            shutil.rmtree(Path(tmp) / "acts", ignore_errors=True)
    return new, diff


def main(argv: list[str]) -> int:
    lines = README.read_text(encoding="utf-8").split("\n")
    only = argv[argv.index("--only") + 1] if "--only" in argv[:-1] else None
    new, diff = refresh(lines, only)
    if "--update" in argv:
        README.write_text("\n".join(new), encoding="utf-8")
        print(f"README.md: {len(examples(lines))} examples, {'updated' if diff else 'already current'}")
        return 0
    print("\n".join(diff) or f"README.md: {len(examples(lines))} examples match real output")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
