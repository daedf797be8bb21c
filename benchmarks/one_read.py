"""What reading each activation once would buy the compiled engine (issue 29, item 1).

    python benchmarks/one_read.py [--model resnet50|encoder] [--batch 16] [--calls 7] [--arms A,B]

One process: the model (ResNet50 or the bench's 4-block encoder, built offline, no
weights file), then every arm traced and called once (the first call: trace and
compile, reported apart), then ``--calls`` rounds of one call per arm, a different arm
first each round. Medians per batch, and each arm against ``plain``:

- ``plain``: the model as a ``tf.function`` (``training=False``).
- ``capture``: the engine's replay (every call, as the compiled engine traces it)
  returning only each output's float32 sum: the cost of materialising every output.
- ``before``: the statistics before issue 29 (:func:`reduce_partials`).
- ``partials``: the engine's :func:`~kerinspect.engine.compiled.tensor_partials` as it is
  (with the fused kernel of :mod:`kerinspect.engine.kernel` when it is built).
- ``partials-tf``: the same without the kernel (TensorFlow's operations only).
- ``partials-xla``: the same operations, each tensor's in its own XLA computation
  (``jit_compile=True``), fused into as few reads as XLA manages.
- ``whole-xla``: the whole traced function (model and statistics) compiled by XLA.
- ``capture-xla``: ``capture`` compiled by XLA.
- ``eager``: today's eager engine on the same batch (the replay and the numpy statistics).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402


def build(name: str) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    if name == "resnet50":
        return keras.applications.ResNet50(weights=None)
    import tempfile

    import _cases

    with tempfile.TemporaryDirectory() as d:
        _cases.build(d)
        return keras.saving.load_model(os.path.join(d, f"{name}.keras"), compile=False)


def reduce_partials(x: Any, bounds: Any, vectors: bool = False, sketch: bool = False) -> dict[str, Any]:
    """:func:`~kerinspect.engine.compiled.tensor_partials` before issue 29 (commit
    c1ca622), float and integer tensors, no ``vectors``: the per-sample sums and the
    per-unit non-zero counts as ``reduce_sum`` over the middle (all but the last) axes."""
    import tensorflow as tf

    from kerinspect.engine.compiled import _reduced_dtype, _saturated, sketch_cells
    from kerinspect.stats import BOUNDED

    shape = tf.shape(x, out_type=tf.int64)
    wide = _reduced_dtype(x.dtype)
    if wide is None:
        return {"shape": shape}
    rank = x.shape.rank
    v = tf.cast(x, wide)
    nonzero = tf.not_equal(x, tf.zeros([], x.dtype))
    out: dict[str, Any] = {"shape": shape}
    if rank >= 2:
        sums = tf.reduce_sum(v, axis=list(range(1, rank - 1))) if rank > 2 else v
        total = tf.reduce_sum(sums)
        middle = float(max(x.shape[1:-1].num_elements(), 1))
        means = tf.cast(sums, tf.float64) / middle
        unit_mean = tf.reduce_mean(means, axis=0)
        out["units"] = tf.stack(
            [unit_mean, tf.reduce_sum(tf.math.squared_difference(means, unit_mean), axis=0)]
        )
        out["nonzero"] = tf.reduce_sum(tf.cast(nonzero, tf.int32), axis=list(range(rank - 1)))
    else:
        total = tf.reduce_sum(v)
        out["total"] = total
        out["nonzero"] = tf.reduce_sum(tf.cast(nonzero, tf.int32))
    mean = total / tf.cast(tf.size(v, out_type=tf.int64), wide)
    m2 = tf.reduce_sum(tf.math.squared_difference(v, mean))
    out["moments"] = tf.stack([mean, m2, tf.reduce_min(v), tf.reduce_max(v)])
    if bounds in BOUNDED and not (bounds == "softmax" and rank < 2):
        out["saturated"] = _saturated(v, bounds)
    if sketch and x.dtype.is_floating:
        out["cells"] = sketch_cells(x)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet50", choices=["resnet50", "encoder", "blocks"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calls", type=int, default=7)
    parser.add_argument("--arms", default="plain,capture,before,partials")
    args = parser.parse_args()

    import tensorflow as tf

    from kerinspect.engine import compiled as C
    from kerinspect.spec import RunSpec

    model = build(args.model)
    rng = np.random.default_rng(0)
    if args.model == "resnet50":
        batch = [rng.standard_normal((args.batch, 224, 224, 3)).astype("float32")]
    else:
        batch = [rng.integers(0, 8000, (args.batch, 128)).astype("int32")]
    run = RunSpec(engine="compiled", samples=args.batch, batch_size=args.batch)

    def capture_partials(x: Any, bounds: Any, vectors: bool = False, sketch: bool = False) -> dict[str, Any]:
        if not x.dtype.is_floating:
            return {"shape": tf.shape(x, out_type=tf.int64)}
        return {"shape": tf.shape(x, out_type=tf.int64), "total": tf.reduce_sum(tf.cast(x, tf.float32))}

    today = C.tensor_partials
    from concurrent.futures import ThreadPoolExecutor

    from kerinspect.stats import summarize

    pool = ThreadPoolExecutor(2)
    held: list[Any] = []

    def host_stats(a: np.ndarray) -> np.ndarray:
        s = summarize(a, parts=2 if a.size >= 1 << 18 else 1, map_fn=pool.map, spread=a.ndim >= 2)
        held.append(s)
        if len(held) > 400:
            held.clear()
        return np.float64(s.count if s is not None else 0)

    def numpy_partials(x: Any, bounds: Any, vectors: bool = False, sketch: bool = False) -> dict[str, Any]:
        out = {"shape": tf.shape(x, out_type=tf.int64)}
        if x.dtype.is_floating:
            out["n"] = tf.numpy_function(host_stats, [x], tf.float64, stateful=True)
        return out
    jitted: dict[tuple[Any, ...], Any] = {}

    def xla_partials(x: Any, bounds: Any, vectors: bool = False, sketch: bool = False) -> dict[str, Any]:
        key = (bounds, vectors, sketch)
        if key not in jitted:
            jitted[key] = tf.function(
                lambda t: today(t, bounds, vectors, sketch), jit_compile=True, autograph=False
            )
        return jitted[key](x)

    C._fused_kernel()  # looked up once: built (make install) or not

    def tf_partials(x: Any, bounds: Any, vectors: bool = False, sketch: bool = False) -> dict[str, Any]:
        saved = C._FUSED[:]
        C._FUSED[:] = [None]
        try:
            return today(x, bounds, vectors, sketch)
        finally:
            C._FUSED[:] = saved

    forms = {
        "partials-tf": (tf_partials, False),
        "capture": (capture_partials, False),
        "numpy": (numpy_partials, False),
        "before": (reduce_partials, False),
        "partials": (today, False),
        "partials-xla": (xla_partials, False),
        "whole-xla": (today, True),
        "capture-xla": (capture_partials, True),
    }
    arms: dict[str, Any] = {}
    first: dict[str, float] = {}
    for name in args.arms.split(","):
        t0 = time.perf_counter()
        if name == "plain":
            fn = tf.function(lambda t: model(t, training=False), autograph=False)
            arms[name] = lambda fn=fn: fn(tf.convert_to_tensor(batch[0])).numpy()
        elif name == "eager":
            import kerinspect

            arms[name] = lambda: kerinspect.inspect_model(
                model, batch[0], engine="eager", batch_size=args.batch
            )
        else:
            partials, jit = forms[name]
            C.tensor_partials = partials  # read by the recorder at trace time only
            replay = C.CompiledReplay(model, run, jit=jit)
            arms[name] = replay
            try:
                replay(batch)
            finally:
                C.tensor_partials = today
            first[name] = time.perf_counter() - t0
            continue
        arms[name]()
        first[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {n: [] for n in arms}
    names = list(arms)
    for r in range(args.calls):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            arm = arms[name]
            arm(batch) if isinstance(arm, C.CompiledReplay) else arm()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain"]) if "plain" in times else None
    print(f"{args.model}, batch {args.batch}, {args.calls} calls per arm; load {os.getloadavg()}")
    print(f"{'arm':<14}{'first call s':>14}{'median s':>10}{'min s':>8}{'x plain':>9}")
    for name in names:
        med = statistics.median(times[name])
        ratio = f"{med / base:9.2f}" if base else ""
        print(f"{name:<14}{first[name]:14.2f}{med:10.3f}{min(times[name]):8.3f}{ratio}")


if __name__ == "__main__":
    main()
