"""What ``--percentiles`` costs a run (issue 28 item 5, issue 29).

Each arm is a long-lived process that loads the model once, runs
:func:`kerinspect.inspect_model` on it once to warm up, then runs it again each time
it is told to; the arms take turns (a different one first each round), so the machine's
load hits them alike. Arms: ``off`` (this checkout, the default), ``on`` (this checkout,
``percentiles=True``) and, with ``--baseline DIR``, ``base`` (the kerinspect of another
checkout, e.g. main, with its defaults). A run is the whole in-process report: trace,
every batch, the host's merge. Printed: medians and minima of wall and CPU time (the
process's, all threads), and each arm against the first.

    python benchmarks/percentiles_cost.py sample_models/cnn.keras --samples 2048 --batch-size 64
    python benchmarks/percentiles_cost.py MODEL --engine eager --baseline ../main --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(model: str, engine: str, samples: int, batch: int, percentiles: bool) -> int:
    """One arm: warm up, say ready, then one timed run per line read."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.simplefilter("ignore")
    import kerinspect
    from kerinspect.engine.tfenv import import_keras

    keras = import_keras()
    loaded = keras.saving.load_model(model, compile=False)
    options = {"samples": samples, "batch_size": batch, "engine": engine, "seed": 0}
    if percentiles:  # only then: a baseline checkout may not know the option
        options["percentiles"] = True
    report = kerinspect.inspect_model(loaded, **options)
    print(json.dumps({"ready": kerinspect.__file__, "engine": report.engine}), flush=True)
    for _ in sys.stdin:
        wall, cpu = time.perf_counter(), time.process_time()
        kerinspect.inspect_model(loaded, **options)
        print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--engine", default="compiled", choices=("compiled", "eager"))
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--baseline", metavar="DIR", help="another checkout, run as the first arm")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--percentiles", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.model, args.engine, args.samples, args.batch_size, args.percentiles)

    arms = [("off", str(ROOT), False), ("on", str(ROOT), True)]
    if args.baseline:
        arms.insert(0, ("base", str(Path(args.baseline).resolve()), False))
    procs = {}
    for label, tree, pct in arms:
        cmd = [sys.executable, __file__, os.path.abspath(args.model), "--worker", "--engine", args.engine]
        cmd += ["--samples", str(args.samples), "--batch-size", str(args.batch_size)]
        cmd += ["--percentiles"] if pct else []
        env = {**os.environ, "PYTHONPATH": tree}
        procs[label] = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
    for label, p in procs.items():
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"arm {label!r} failed to start")
        print(label, json.loads(line))
    labels = [a[0] for a in arms]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    before = os.getloadavg()
    for r in range(args.rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            p = procs[label]
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("go\n")
            p.stdin.flush()
            runs[label].append(json.loads(p.stdout.readline()))
    after = os.getloadavg()
    print(
        f"{Path(args.model).name}, {args.engine}, {args.samples} samples in batches of {args.batch_size}, "
        f"{args.rounds} rounds; load average {before[0]:.2f} -> {after[0]:.2f}"
    )
    first = labels[0]
    for label in labels:
        row = []
        for key in ("wall", "cpu"):
            values = [t[key] for t in runs[label]]
            ref = statistics.median(t[key] for t in runs[first])
            row.append(
                f"{key} median {statistics.median(values):.3f} s (min {min(values):.3f}), "
                f"{statistics.median(values) / ref:.2f}x {first}"
            )
        print(f"  {label:5s} " + "; ".join(row))
    for p in procs.values():
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
