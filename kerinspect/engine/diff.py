"""The worker side of ``kerinspect diff``: run two models on the same batches and
compare every paired layer call.

Both models are replayed by the engine's own :class:`~kerinspect.engine.trace.Replayer`
(every call of every operation, at every depth), on the same inputs, one batch at
a time: model A's paired outputs of the batch are held until model B has produced
their counterparts, each pair is reduced to mergeable :class:`~kerinspect.diff.Sums`
(and both sides' :mod:`~kerinspect.stats`), and released. Before the first batch,
one sample is run through each model to list its calls, which
:func:`~kerinspect.diff.pair_sites` pairs (path, then structure).

With ``local`` (shadow mode, as the numeric suites of PyTorch and TFLite have it),
each paired call of B is also re-run, unreported (:meth:`Replayer.quietly`), on
A's inputs of that call: A's output against that gives the layer's own error,
apart from what it inherited from the layers before.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerinspect import __version__
from kerinspect.diff import DiffReport, OutputDiff, PairDiff, SiteKey, Sums, Unpaired, pair_sites
from kerinspect.errors import InferenceError
from kerinspect.report import ModelInfo
from kerinspect.stats import RunningStats, numeric_kind, summarize

#: Values per block of the comparison's float64 scratch.
BLOCK = 1 << 20


def tensor_sums(a: np.ndarray, b: np.ndarray) -> Sums:
    """The :class:`~kerinspect.diff.Sums` of one pair of same-shaped numeric arrays."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    count = mismatched = 0
    aa = bb = ab = dd = 0.0
    max_abs = 0.0
    for start in range(0, fa.size, BLOCK):
        x = fa[start : start + BLOCK].astype(np.float64)
        y = fb[start : start + BLOCK].astype(np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.all():
            bad_x, bad_y = x[~ok], y[~ok]
            same = (bad_x == bad_y) | (np.isnan(bad_x) & np.isnan(bad_y))
            mismatched += int(np.count_nonzero(~same))
            x, y = x[ok], y[ok]
        d = x - y
        count += int(x.size)
        aa += float(np.einsum("i,i->", x, x))
        bb += float(np.einsum("i,i->", y, y))
        ab += float(np.einsum("i,i->", x, y))
        dd += float(np.einsum("i,i->", d, d))
        if d.size:
            max_abs = max(max_abs, float(np.max(np.abs(d))))
    return Sums(count, mismatched, aa, bb, ab, dd, max_abs)


def _policy(op: Any) -> str | None:
    policy = getattr(op, "dtype_policy", None)
    name = getattr(policy, "name", None)
    return str(name) if name is not None else None


class _Lister:
    """Visitor of the one-sample pre-pass: every reported call, in graph order."""

    def __init__(self) -> None:
        self.sites: dict[int, Any] = {}
        self.order: list[int] = []  # site indices in the order their outputs appeared
        self.policies: dict[int, str | None] = {}
        self.outputs: set[tuple[int, int]] = set()

    def enter(self, site: Any) -> None:
        self.sites.setdefault(site.index, site)

    def consumed(self, site: Any, op: Any, inputs: Sequence[Any]) -> None:
        self.policies[site.index] = _policy(op)

    def produced(self, site: Any, tensors: Sequence[Any]) -> None:
        self.sites[site.index] = site  # output names are refined after the call
        self.order.append(site.index)

    def model_output(self, site: Any, k: int) -> None:
        self.outputs.add((site.index, k))


class _Side:
    """What is accumulated for one output of one pair."""

    __slots__ = ("shape_a", "shape_b", "dtype_a", "dtype_b", "stats_a", "stats_b", "error", "local", "note")

    def __init__(self) -> None:
        self.shape_a: list[int] | None = None
        self.shape_b: list[int] | None = None
        self.dtype_a = self.dtype_b = ""
        self.stats_a: RunningStats | None = None
        self.stats_b: RunningStats | None = None
        self.error: Sums | None = None
        self.local: Sums | None = None
        self.note: str | None = None


def _grow(shape: list[int] | None, arr: np.ndarray, rows: int) -> list[int]:
    now = list(arr.shape)
    if shape is None:
        return now
    if shape and now and now[0] == rows and shape[1:] == now[1:]:
        shape[0] += now[0]
    return shape


def _merge_stats(acc: RunningStats | None, arr: np.ndarray) -> RunningStats | None:
    s = summarize(arr)
    if acc is None or s is None:
        return s if acc is None else acc
    return acc.merge(s)


class _Recorder:
    """Visitor of model A: keeps the batch's outputs (and, for ``local``, inputs) of paired calls."""

    def __init__(self, paired: set[int], local: bool) -> None:
        self.paired = paired
        self.local = local
        self.outputs: dict[int, list[Any]] = {}
        self.inputs: dict[int, list[Any]] = {}

    def start_batch(self) -> None:
        self.outputs = {}
        self.inputs = {}

    def enter(self, site: Any) -> None:
        pass

    def consumed(self, site: Any, op: Any, inputs: Sequence[Any]) -> None:
        if self.local and site.index in self.paired:
            self.inputs[site.index] = list(inputs)

    def produced(self, site: Any, tensors: Sequence[Any]) -> None:
        if site.index in self.paired:
            self.outputs[site.index] = list(tensors)


def _is_tensor(t: Any) -> bool:
    return hasattr(t, "shape") and hasattr(t, "dtype")


def _swap(structure: Any, sub: dict[int, Any]) -> Any:
    """``structure`` (args or kwargs) with the tensors in ``sub`` (by id) replaced."""
    if isinstance(structure, (list, tuple)):
        swapped = [_swap(x, sub) for x in structure]
        return swapped if isinstance(structure, list) else type(structure)(swapped)
    if isinstance(structure, dict):
        return {k: _swap(v, sub) for k, v in structure.items()}
    return sub.get(id(structure), structure)


class _Comparer:
    """Visitor of model B: compares each paired call's outputs with A's, as they appear."""

    def __init__(self, recorder: _Recorder, pair_of_b: dict[int, int], local: bool) -> None:
        self.recorder = recorder
        self.pair_of_b = pair_of_b
        self.local = local
        self.acc: dict[tuple[int, int], _Side] = {}  # (A site index, output) -> figures
        self.local_notes: dict[int, str] = {}  # A site index -> why there is no local figure
        self.replayer: Any = None
        self.rows = 0
        self._inputs: dict[int, list[Any]] = {}
        self._pending: dict[int, tuple[Any, Any, dict[str, Any]]] = {}

    def start_batch(self, rows: int) -> None:
        self.rows = rows
        self._inputs = {}
        self._pending = {}

    def enter(self, site: Any) -> None:
        pass

    def consumed(self, site: Any, op: Any, inputs: Sequence[Any]) -> None:
        if self.local and site.index in self.pair_of_b:
            self._inputs[site.index] = list(inputs)

    def arguments(self, site: Any, op: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if self.local and site.index in self.pair_of_b and not site.container:
            self._pending[site.index] = (op, args, kwargs)

    def produced(self, site: Any, tensors: Sequence[Any]) -> None:
        from kerinspect.engine.trace import tensor_dtype, to_numpy

        ia = self.pair_of_b.get(site.index)
        if ia is None:
            return
        a_out = self.recorder.outputs.pop(ia, None)
        if a_out is None:
            return
        shadow = self._shadow(site, ia) if self.local else None
        for k, (ta, tb) in enumerate(zip(a_out, tensors)):
            side = self.acc.setdefault((ia, k), _Side())
            if ta is None or tb is None:
                side.note = side.note or "absent output"
                continue
            xa, xb = to_numpy(ta), to_numpy(tb)
            side.dtype_a, side.dtype_b = tensor_dtype(ta), tensor_dtype(tb)
            side.shape_a = _grow(side.shape_a, xa, self.rows)
            side.shape_b = _grow(side.shape_b, xb, self.rows)
            kinds = (numeric_kind(xa.dtype), numeric_kind(xb.dtype))
            if any(kind not in ("float", "int", "bool") for kind in kinds):
                side.note = "not numeric"
                continue
            side.stats_a = _merge_stats(side.stats_a, xa)
            side.stats_b = _merge_stats(side.stats_b, xb)
            if xa.shape != xb.shape:
                side.note = f"shapes differ: {tuple(xa.shape)} vs {tuple(xb.shape)}"
                continue
            sums = tensor_sums(xa, xb)
            side.error = sums if side.error is None else side.error.merged(sums)
            if shadow is not None and k < len(shadow) and shadow[k] is not None:
                xs = to_numpy(shadow[k])
                if xs.shape == xa.shape and numeric_kind(xs.dtype) in ("float", "int", "bool"):
                    s = tensor_sums(xa, xs)
                    side.local = s if side.local is None else side.local.merged(s)
        del a_out

    def _shadow(self, site: Any, ia: int) -> list[Any] | None:
        """B's call re-run on A's inputs of the paired call (None: not possible, and why)."""
        from kerinspect.engine import keras_adapter as ka

        pending = self._pending.pop(site.index, None)
        b_in = self._inputs.pop(site.index, None)
        a_in = self.recorder.inputs.pop(ia, None)
        if site.container:
            self.local_notes.setdefault(ia, "a nested model: see its layers")
            return None
        if pending is None or b_in is None or a_in is None:
            self.local_notes.setdefault(ia, "its arguments were not seen")
            return None
        sub: dict[int, Any] = {}
        for tb, ta in zip(b_in, a_in):
            if _is_tensor(tb) and _is_tensor(ta) and tuple(tb.shape) == tuple(ta.shape):
                sub[id(tb)] = ta
        if len(b_in) != len(a_in) or not sub:
            self.local_notes.setdefault(ia, "its inputs do not match A's")
            return None
        op, args, kwargs = pending
        try:
            with self.replayer.quietly():
                out = op(*_swap(list(args), sub), **_swap(dict(kwargs), sub))
        except Exception as e:  # noqa: BLE001 - the figure is left out, and why said
            from kerinspect.errors import escape_text

            self.local_notes.setdefault(ia, f"re-running it on A's inputs failed: {escape_text(str(e), 200)}")
            return None
        return ka.flatten(out)


def _run(replay: Any, batch: list[Any], which: str) -> None:
    """One batch through one model; a failing layer is an InferenceError naming the model."""
    from kerinspect.engine.load import innermost_message
    from kerinspect.engine.trace import LayerCallError

    rows = len(batch[0]) if batch else 0
    try:
        replay(batch)
    except LayerCallError as e:
        cause = innermost_message(e.cause)
        if "ResourceExhausted" in type(e.cause).__name__ or "OOM" in cause:
            raise InferenceError(
                f"Out of memory running layer {e.site.path!r} of model {which} (batch of {rows}).",
                rule="oom",
                hint="try a smaller --batch-size",
            ) from e.cause
        raise InferenceError(
            f"Running layer {e.site.path!r} ({e.site.class_name}) of model {which} failed "
            f"({e.calls_done} layer calls before it succeeded): {cause}",
            rule="inference-failed",
            hint="B is fed A's inputs: both must take the same input shapes and dtypes"
            if which == "B" and e.calls_done == 0
            else None,
        ) from e.cause


def _keys(lister: _Lister) -> tuple[list[int], list[SiteKey]]:
    """Called sites in graph order (first appearance: enter order), with their keys."""
    indices = sorted(i for i, s in lister.sites.items() if s.called)
    keys = [
        SiteKey(
            lister.sites[i].path,
            lister.sites[i].class_name,
            len(lister.sites[i].output_names),
            lister.sites[i].container,
        )
        for i in indices
    ]
    return indices, keys


def model_info(model: Any, path: str | None, fmt: str, loader: str, notes: tuple[str, ...]) -> ModelInfo:
    from kerinspect.engine.tfenv import import_keras

    keras = import_keras()
    return ModelInfo(
        name=model.name,
        class_name=type(model).__name__,
        path=path,
        format=fmt,
        params=int(model.count_params()),
        trainable_params=int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        keras_version=keras.__version__,
        loader=loader,
        notes=notes,
    )


def diff_loaded(
    model_a: Any,
    model_b: Any,
    feed: Any,
    *,
    info_a: ModelInfo,
    info_b: ModelInfo,
    tolerance: float,
    local: bool = False,
    max_depth: int | None = None,
    progress: Any = None,
) -> DiffReport:
    """Compare two loaded models on ``feed`` (built for ``model_a``), layer call by layer call."""
    from kerinspect.engine.trace import Replayer

    caught: list[str] = []
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        replay_a = Replayer(model_a, _Lister(), max_depth=max_depth)
        replay_b = Replayer(model_b, _Lister(), max_depth=max_depth)
        first = next(iter(feed.batches()), None)
        if first is None:
            raise InferenceError("There are no samples to compare", rule="no-samples")
        one = [x[:1] for x in first]
        listers = []
        for replay, which in ((replay_a, "A"), (replay_b, "B")):
            lister = _Lister()
            replay.visitor = lister
            _run(replay, one, which)
            listers.append(lister)
        la, lb = listers
        idx_a, keys_a = _keys(la)
        idx_b, keys_b = _keys(lb)
        pairing = pair_sites(keys_a, keys_b)
        pairs = [(idx_a[i], idx_b[j], how) for i, j, how in pairing.pairs]
        recorder = _Recorder({ia for ia, _, _ in pairs}, local)
        comparer = _Comparer(recorder, {ib: ia for ia, ib, _ in pairs}, local)
        comparer.replayer = replay_b
        replay_a.visitor, replay_b.visitor = recorder, comparer
        done = 0
        for batch in feed.batches():
            rows = len(batch[0]) if batch else 0
            recorder.start_batch()
            _run(replay_a, batch, "A")
            comparer.start_batch(rows)
            _run(replay_b, batch, "B")
            recorder.start_batch()  # release what B did not ask for
            done += rows
            if progress is not None:
                progress(done, feed.samples)
        for w in wlist:
            text = " ".join(str(w.message).split())
            if text not in caught:
                caught.append(text)

    rank = {i: k for k, i in enumerate(dict.fromkeys(la.order))}  # A's graph order: outputs produced
    records = []
    for ia, ib, how in sorted(pairs, key=lambda p: rank.get(p[0], len(rank))):
        sa, sb = la.sites[ia], lb.sites[ib]
        outputs = []
        for k, name in enumerate(sa.output_names):
            side = comparer.acc.get((ia, k))
            if side is None:
                missing = "B has no such output" if k >= len(sb.output_names) else "not compared"
                outputs.append(
                    OutputDiff(
                        name,
                        (),
                        (),
                        "",
                        "",
                        None,
                        None,
                        None,
                        note=missing,
                        model_output=(ia, k) in la.outputs,
                    )
                )
                continue
            note = side.note
            wants_local = local and sa.class_name != "InputLayer" and not sa.container
            if wants_local and side.local is None and side.error is not None and note is None:
                note = comparer.local_notes.get(ia, "no local figure")
            outputs.append(
                OutputDiff(
                    name,
                    tuple(side.shape_a or ()),
                    tuple(side.shape_b or ()),
                    side.dtype_a,
                    side.dtype_b,
                    None if side.stats_a is None else side.stats_a.finalize(),
                    None if side.stats_b is None else side.stats_b.finalize(),
                    side.error,
                    side.local,
                    note=note,
                    model_output=(ia, k) in la.outputs,
                )
            )
        records.append(
            PairDiff(
                sa.path,
                sb.path,
                sa.class_name,
                sb.class_name,
                how,
                tuple(outputs),
                container=sa.container,
                policy_a=la.policies.get(ia),
                policy_b=lb.policies.get(ib),
            )
        )
    return DiffReport(
        model_a=info_a,
        model_b=info_b,
        inputs=feed.records,
        samples=feed.samples,
        batch_size=feed.batch_size,
        tolerance=tolerance,
        local=local,
        pairs=tuple(records),
        unpaired_a=tuple(Unpaired(keys_a[i].path, keys_a[i].class_name) for i in pairing.unpaired_a),
        unpaired_b=tuple(Unpaired(keys_b[j].path, keys_b[j].class_name) for j in pairing.unpaired_b),
        warnings=tuple(caught),
        kerinspect_version=__version__,
    )
