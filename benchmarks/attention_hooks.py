"""What observing every softmax costs a model that has none (issue 26).

The replay shadows ``tf.nn.softmax`` (and watches ``Softmax`` layers and
``Attention``/``AdditiveAttention`` calls) for every batch. A model without any of them
must run as fast as before. This measures, in one process so that the machine's load
affects both alike, the replay of a softmax-free model (Conv1D, 6 x Dense +
LayerNormalization over 100 steps, batches of 16) with the attention hooks on and off
(``Replayer(..., attention=False)``), interleaved, and prints the medians and the
minima (on a shared machine, other processes only ever add time: compare the minima).

    python benchmarks/attention_hooks.py            # 15 rounds of 10 batches each
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batches", type=int, default=10)
    args = ap.parse_args()
    import numpy as np

    from kerinspect.engine.events import Visitor
    from kerinspect.engine.tfenv import import_keras
    from kerinspect.engine.trace import Replayer

    keras = import_keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x_in = keras.Input((100, 32))
    h = layers.Conv1D(64, 3, activation="relu")(x_in)
    for _ in range(6):
        h = layers.LayerNormalization()(layers.Dense(64, activation="relu")(h))
    model = keras.Model(x_in, layers.Dense(4)(layers.GlobalAveragePooling1D()(h)))
    with tempfile.TemporaryDirectory() as d:  # as the worker would: a loaded file
        model.save(Path(d) / "m.keras")
        model = keras.saving.load_model(Path(d) / "m.keras")
    x = np.random.default_rng(0).normal(size=(16, 100, 32)).astype("float32")
    runs = {"hooks on": Replayer(model, Visitor()), "hooks off": Replayer(model, Visitor(), attention=False)}
    for r in runs.values():
        for _ in range(3):
            r([x])
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, r in runs.items():
            t = time.perf_counter()
            for _ in range(args.batches):
                r([x])
            times[name].append((time.perf_counter() - t) / args.batches)
    for name, ts in times.items():
        print(f"{name:9}  median {statistics.median(ts) * 1e3:7.2f} ms/batch  min {min(ts) * 1e3:7.2f}")
    on, off = (statistics.median(times[k]) for k in ("hooks on", "hooks off"))
    low_on, low_off = (min(times[k]) for k in ("hooks on", "hooks off"))
    print(f"on/off: {on / off:.3f} (medians), {low_on / low_off:.3f} (minima)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
