"""Peak memory of ``kerinspect dump`` as ``--samples`` grows (issue 4: flat within 25%).

Each run happens in a fresh wrapper process that starts the dump as its own child
and reports ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the wrapper's only
child is the dump, so runs never share a maximum. ``--naive`` adds, for contrast,
a dump that keeps every activation in memory and saves at the end (what the
engine avoids), to show the measurement can see growth.

    python benchmarks/dump_rss.py                    # 256 and 4096 samples
    python benchmarks/dump_rss.py --samples 128 --factor 16 --naive

Exit status 1 when the growth exceeds ``--limit`` (default 25%).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def build_model(path: pathlib.Path) -> None:
    """A small CNN with large activations: about 270 KiB of float32 per sample."""
    sys.path.insert(0, str(ROOT))
    from kerinspect.engine.tfenv import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    x = keras.Input((32, 32, 3), name="image")
    h = x
    for i in range(4):
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name=f"conv{i}")(h)
    out = keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(h))
    keras.Model(x, out, name="bench_cnn").save(path)


NAIVE = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from kerinspect.engine.batches import run_batches
from kerinspect.engine.feed import build_feed
from kerinspect.spec import RunSpec
from kerinspect.engine.load import load_model
from kerinspect.scan.preflight import preflight
from kerinspect.engine.events import Visitor
from kerinspect.engine.tensors import to_numpy
model = load_model(preflight({model!r}))
class Keep(Visitor):
    def __init__(self): self.arrays = {{}}
    def produced(self, site, tensors):
        for k, t in enumerate(tensors):
            self.arrays.setdefault((site.index, k), []).append(to_numpy(t))
keep = Keep()
run_batches(model, build_feed(model, None, RunSpec(samples={samples}, batch_size={batch})), keep, RunSpec(engine="eager"))
for (i, k), parts in keep.arrays.items():
    np.save({out!r} + f"/{{i:04d}}-{{k}}.npy", np.concatenate(parts), allow_pickle=False)
"""


def measure(cmd: list[str]) -> int:
    """Peak RSS (KiB) of ``cmd``, run as the only child of a fresh wrapper process."""
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "r = subprocess.run(json.loads(sys.argv[1]), stdout=subprocess.DEVNULL)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(
        [sys.executable, "-c", wrapper, json.dumps(cmd)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    code, kib = res.stdout.split()
    if code != "0":
        raise SystemExit(f"run failed ({code}): {' '.join(cmd)}\n{res.stderr}")
    return int(kib)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=256, help="the smaller run (default 256)")
    ap.add_argument("--factor", type=int, default=16, help="the larger run is this many times more")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=float, default=0.25, help="largest accepted growth (default 0.25)")
    ap.add_argument("--naive", action="store_true", help="also measure an all-in-memory dump")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = pathlib.Path(tempfile.mkdtemp(prefix="kerinspect-bench-"))
    try:
        model = work / "bench_cnn.keras"
        build_model(model)
        sizes = [args.samples, args.samples * args.factor]
        rows = []
        for n in sizes:
            out = work / f"dump_{n}"
            cmd = [
                sys.executable,
                "-m",
                "kerinspect",
                "dump",
                str(model),
                "--out",
                str(out),
                "--samples",
                str(n),
                "--batch-size",
                str(args.batch_size),
                "--max-bytes",
                "64GiB",
            ]
            kib = measure(cmd)
            size = json.loads((out / "manifest.json").read_text())["total_bytes"]
            rows.append(("kerinspect dump", n, size, kib))
            shutil.rmtree(out)
        if args.naive:
            for n in sizes:
                out = work / f"naive_{n}"
                out.mkdir()
                code = NAIVE.format(
                    root=str(ROOT), model=str(model), samples=n, batch=args.batch_size, out=str(out)
                )
                kib = measure([sys.executable, "-c", code])
                size = sum(p.stat().st_size for p in out.iterdir())
                rows.append(("naive (in memory)", n, size, kib))
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'what':<18} {'samples':>8} {'written':>12} {'peak RSS':>12}")
    for what, n, size, kib in rows:
        print(f"{what:<18} {n:>8} {size / 2**20:>9.1f} MiB {kib / 1024:>8.1f} MiB")
    small, large = rows[0][3], rows[1][3]
    growth = large / small - 1
    print(f"kerinspect dump: {args.factor}x samples -> peak RSS {growth:+.1%} (limit {args.limit:.0%})")
    if args.naive:
        print(f"naive: {args.factor}x samples -> peak RSS {rows[3][3] / rows[2][3] - 1:+.1%}")
    return 0 if growth <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
