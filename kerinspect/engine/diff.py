"""The worker side of ``kerinspect diff``: run two models on the same batches and
compare every paired layer call.

Both models are replayed by the engine's own :class:`~kerinspect.engine.trace.Replayer`
(every call of every operation, at every depth), on the same inputs, one batch at
a time: model A's paired outputs of the batch are held, spilled to private files
(:class:`_Spill`), until model B has produced their counterparts, each pair is reduced to mergeable :class:`~kerinspect.diff.Sums`
(and both sides' :mod:`~kerinspect.stats`), and released. Before the first batch,
one sample is run through each model to list its calls, which
:func:`~kerinspect.diff.pair_sites` pairs (path, then structure).

With ``local`` (shadow mode, as the numeric suites of PyTorch and TFLite have it),
each paired call of B is also re-run, unreported (:meth:`Replayer.quietly`), on
A's inputs of that call: A's output against that gives the layer's own error,
apart from what it inherited from the layers before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerinspect import __version__
from kerinspect.diff import (
    MAX_DISAGREEMENTS,
    DiffReport,
    Disagreement,
    OutputDiff,
    PairDiff,
    SiteKey,
    Sums,
    Top1Agreement,
    Unpaired,
    pair_sites,
)
from kerinspect.engine.events import CallSite, Visitor
from kerinspect.engine.predictions import Agreement, activation_of, candidate
from kerinspect.errors import InferenceError
from kerinspect.report import ModelInfo
from kerinspect.spec import RunSpec
from kerinspect.stats import RunningStats, numeric_kind, summarize

#: Values per block of the comparison's float64 scratch.
BLOCK = 1 << 20
#: Largest spill file (bytes) when the worker's RLIMIT_FSIZE does not set a smaller one.
SPILL_CHUNK = 1 << 30
#: Below this RLIMIT_FSIZE, A's tensors are held in memory rather than spilled.
SPILL_MIN_CHUNK = 1 << 20


class _Held:
    """One of A's tensors, spilled: its bytes in ``files`` (in order), and how to read them back."""

    __slots__ = ("files", "dtype", "shape", "dtype_name", "uses", "__weakref__")

    def __init__(
        self, files: list[str], dtype: np.dtype[Any], shape: tuple[int, ...], dtype_name: str
    ) -> None:
        self.files = files
        self.dtype = dtype
        self.shape = shape
        self.dtype_name = dtype_name
        self.uses = 0


class _Spill:
    """Model A's held tensors of a batch, kept out of the process's memory.

    Each numeric tensor A produces (or, for ``local``, consumes) at a paired call is
    written to private files in the temp folder (the worker's scratch ``TMPDIR``) and
    dropped from memory; B reads it back when its counterpart appears, and the files
    are removed once every reference to them was consumed (or at the next batch). The
    bytes read back are the tensor's own, so every figure is what it was in memory.
    A file never exceeds ``RLIMIT_FSIZE`` (a tensor larger than it spans several).
    Tensors that cannot be spilled (strings, non-eager values) are held as they are.
    """

    def __init__(self) -> None:
        import resource

        from kerinspect.sandbox import scratch

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limit = SPILL_CHUNK if soft == resource.RLIM_INFINITY or soft <= 0 else min(SPILL_CHUNK, soft)
        self.chunk = limit if limit >= SPILL_MIN_CHUNK else 0
        self.dir = scratch.make("activations") if self.chunk else ""
        self._count = 0
        self._live: dict[int, tuple[Any, _Held]] = {}  # id(tensor) -> (weak ref to it, its spill)

    def put(self, t: Any) -> Any:
        """``t`` spilled (a :class:`_Held`), or ``t`` itself when it cannot be."""
        import weakref

        from kerinspect.engine.tensors import tensor_dtype, tf

        if not self.chunk or not isinstance(t, tf.Tensor):
            return t
        seen = self._live.get(id(t))
        if seen is not None and seen[0]() is t:  # the same tensor, held twice (an output, then an input)
            seen[1].uses += 1
            return seen[1]
        try:
            arr = np.asarray(t)
        except Exception:  # noqa: BLE001 - not readable as numpy: held as it is
            return t
        if arr.dtype.hasobject or arr.dtype.itemsize == 0:
            return t
        raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        files: list[str] = []
        for start in range(0, max(raw.size, 1), self.chunk):
            self._count += 1
            path = os.path.join(self.dir, f"{self._count}.bin")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            files.append(path)
            try:
                view = raw[start : start + self.chunk].data
                while view.nbytes:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        held = _Held(files, arr.dtype, tuple(arr.shape), tensor_dtype(t))
        held.uses = 1
        try:
            self._live[id(t)] = (weakref.ref(t), held)
        except TypeError:  # no weak references: no sharing either
            pass
        return held

    def array(self, held: _Held) -> np.ndarray:
        """The spilled tensor's values, as a new numpy array."""
        nbytes = int(np.prod(held.shape, dtype=np.int64)) * held.dtype.itemsize
        buf = np.empty(nbytes, np.uint8)
        for i, path in enumerate(held.files):
            lo, hi = i * self.chunk, min(nbytes, (i + 1) * self.chunk)
            fd = os.open(path, os.O_RDONLY)
            try:
                pos = lo
                while pos < hi:
                    got = os.preadv(fd, [buf[pos:hi].data], pos - lo)
                    if got <= 0:
                        raise OSError(f"spill file {path} is short")
                    pos += got
            finally:
                os.close(fd)
        return buf.view(held.dtype).reshape(held.shape)

    def tensor(self, held: _Held) -> Any:
        """The spilled tensor, as a backend tensor again (for a shadow re-run)."""
        from kerinspect.engine.tensors import tf

        return tf.convert_to_tensor(self.array(held))

    def done(self, items: Sequence[Any]) -> None:
        """One reference to each spilled tensor in ``items`` is consumed; remove what is unreferenced."""
        for h in items:
            if isinstance(h, _Held):
                h.uses -= 1
                if h.uses <= 0:
                    self._remove(h)

    def _remove(self, held: _Held) -> None:
        for path in held.files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        held.files = []

    def clear(self) -> None:
        """Drop everything held (a new batch, or the end)."""
        for _, held in self._live.values():
            self._remove(held)
        self._live = {}
        if self.dir:
            for name in os.listdir(self.dir):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.dir, name))

    def close(self) -> None:
        self._live = {}
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""


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


class _Lister(Visitor):
    """Visitor of the one-sample pre-pass: every reported call, in graph order."""

    def __init__(self) -> None:
        self.sites: dict[int, Any] = {}
        self.order: list[int] = []  # site indices in the order their outputs appeared
        self.policies: dict[int, str | None] = {}
        self.activations: dict[int, str | None] = {}
        self.outputs: set[tuple[int, int]] = set()

    def enter(self, site: CallSite) -> None:
        self.sites.setdefault(site.index, site)

    def consumed(self, site: CallSite, op: Any, inputs: Sequence[Any]) -> None:
        self.policies[site.index] = _policy(op)
        self.activations[site.index] = activation_of(op)

    def produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        self.sites[site.index] = site  # output names are refined after the call
        self.order.append(site.index)

    def model_output(self, site: CallSite, k: int) -> None:
        self.outputs.add((site.index, k))


class _Side:
    """What is accumulated for one output of one pair."""

    __slots__ = (
        "shape_a",
        "shape_b",
        "dtype_a",
        "dtype_b",
        "stats_a",
        "stats_b",
        "error",
        "local",
        "note",
        "top1",
    )

    def __init__(self) -> None:
        self.shape_a: list[int] | None = None
        self.shape_b: list[int] | None = None
        self.dtype_a = self.dtype_b = ""
        self.stats_a: RunningStats | None = None
        self.stats_b: RunningStats | None = None
        self.error: Sums | None = None
        self.local: Sums | None = None
        self.note: str | None = None
        self.top1: Agreement | None = None


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


class _Recorder(Visitor):
    """Visitor of model A: keeps the batch's outputs (and, for ``local``, inputs) of paired
    calls, spilled out of memory (:class:`_Spill`) until B asks for them."""

    def __init__(self, paired: set[int], local: bool, spill: _Spill) -> None:
        self.paired = paired
        self.local = local
        self.spill = spill
        self.outputs: dict[int, list[Any]] = {}
        self.inputs: dict[int, list[Any]] = {}

    def release(self) -> None:
        """Drop what the batch before kept (before A runs, and once B has run)."""
        self.outputs = {}
        self.inputs = {}
        self.spill.clear()

    def consumed(self, site: CallSite, op: Any, inputs: Sequence[Any]) -> None:
        if self.local and site.index in self.paired:
            self.inputs[site.index] = [self.spill.put(t) for t in inputs]

    def produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        if site.index in self.paired:
            self.outputs[site.index] = [None if t is None else self.spill.put(t) for t in tensors]


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


class _Comparer(Visitor):
    """Visitor of model B: compares each paired call's outputs with A's, as they appear."""

    def __init__(self, recorder: _Recorder, pair_of_b: dict[int, int], local: bool) -> None:
        self.recorder = recorder
        self.pair_of_b = pair_of_b
        self.local = local
        self.acc: dict[tuple[int, int], _Side] = {}  # (A site index, output) -> figures
        self.local_notes: dict[int, str] = {}  # A site index -> why there is no local figure
        self.replayer: Any = None
        self.model_outputs: set[tuple[int, int]] = set()  # A's (site index, output), for top-1
        self.rows = 0
        self._inputs: dict[int, list[Any]] = {}
        self._pending: dict[int, tuple[Any, Any, dict[str, Any]]] = {}

    def start_batch(self, rows: int) -> None:
        self.rows = rows
        self._inputs = {}
        self._pending = {}

    def consumed(self, site: CallSite, op: Any, inputs: Sequence[Any]) -> None:
        if self.local and site.index in self.pair_of_b:
            self._inputs[site.index] = list(inputs)

    def arguments(self, site: CallSite, op: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if self.local and site.index in self.pair_of_b and not site.container:
            self._pending[site.index] = (op, args, kwargs)

    def produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        from kerinspect.engine.tensors import tensor_dtype, to_numpy

        ia = self.pair_of_b.get(site.index)
        if ia is None:
            return
        a_out = self.recorder.outputs.pop(ia, None)
        if a_out is None:
            return
        spill = self.recorder.spill
        shadow = self._shadow(site, ia) if self.local else None
        for k, (ta, tb) in enumerate(zip(a_out, tensors)):
            side = self.acc.setdefault((ia, k), _Side())
            if ta is None or tb is None:
                side.note = side.note or "absent output"
                continue
            if isinstance(ta, _Held):
                xa, dtype_a = spill.array(ta), ta.dtype_name
            else:
                xa, dtype_a = to_numpy(ta), tensor_dtype(ta)
            xb = to_numpy(tb)
            side.dtype_a, side.dtype_b = dtype_a, tensor_dtype(tb)
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
            if (ia, k) in self.model_outputs and candidate(xa) and len(xa) == self.rows:
                if side.top1 is None:
                    side.top1 = Agreement(int(xa.shape[1]))
                side.top1.update(xa, xb)
            if shadow is not None and k < len(shadow) and shadow[k] is not None:
                xs = to_numpy(shadow[k])
                if xs.shape == xa.shape and numeric_kind(xs.dtype) in ("float", "int", "bool"):
                    s = tensor_sums(xa, xs)
                    side.local = s if side.local is None else side.local.merged(s)
            del xa
        spill.done(a_out)
        del a_out, shadow

    def _shadow(self, site: CallSite, ia: int) -> list[Any] | None:
        """B's call re-run on A's inputs of the paired call (None: not possible, and why)."""
        from kerinspect.engine import keras_adapter as ka

        pending = self._pending.pop(site.index, None)
        b_in = self._inputs.pop(site.index, None)
        a_in = self.recorder.inputs.pop(ia, None)
        if a_in is not None:  # read back (only if it will be used), then let the files go
            spill, held = self.recorder.spill, a_in
            if not site.container and pending is not None and b_in is not None:
                a_in = [spill.tensor(t) if isinstance(t, _Held) else t for t in held]
            spill.done(held)
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
    from kerinspect.engine.batches import layer_failure
    from kerinspect.engine.trace import LayerCallError

    rows = len(batch[0]) if batch else 0
    try:
        replay(batch)
    except LayerCallError as e:
        hint = (
            "B is fed A's inputs: both must take the same input shapes and dtypes"
            if which == "B" and e.calls_done == 0
            else None
        )
        raise layer_failure(e, rows, which, hint) from e.cause


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


def _top1(
    agreement: Agreement | None, activation: str | None, names: tuple[str, ...] | None
) -> Top1Agreement | None:
    """The top-1 agreement of a model output that is a classifier's in A (None otherwise)."""
    if agreement is None:
        return None
    agreement.a.activation = activation
    fits = names if names is not None and len(names) == agreement.a.classes else None
    if agreement.a.kind(None if fits is None else len(fits)) is None:
        return None
    return Top1Agreement(
        agreement.agree,
        agreement.a.samples,
        agreement.a.classes,
        tuple(
            Disagreement(i, j, c, None if fits is None else fits[i], None if fits is None else fits[j])
            for i, j, c in agreement.most(MAX_DISAGREEMENTS)
        ),
    )


def diff_loaded(
    model_a: Any,
    model_b: Any,
    feed: Any,
    *,
    info_a: ModelInfo,
    info_b: ModelInfo,
    run: RunSpec,
    progress: Any = None,
) -> DiffReport:
    """Compare two loaded models on ``feed`` (built for ``model_a``), layer call by layer call.

    ``run``, whole: its ``diff_tolerance``, ``local`` (shadow mode) and ``depth``."""
    from kerinspect.engine.trace import Replayer

    tolerance, local = run.diff_tolerance, run.local

    caught: list[str] = []
    with contextlib.ExitStack() as stack:
        wlist = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        replay_a = Replayer(model_a, _Lister(), run)
        replay_b = Replayer(model_b, _Lister(), run)
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
        spill = stack.enter_context(contextlib.closing(_Spill()))
        recorder = _Recorder({ia for ia, _, _ in pairs}, local, spill)
        comparer = _Comparer(recorder, {ib: ia for ia, ib, _ in pairs}, local)
        comparer.replayer = replay_b
        comparer.model_outputs = la.outputs
        replay_a.visitor, replay_b.visitor = recorder, comparer
        done = 0
        for batch in feed.batches():
            rows = len(batch[0]) if batch else 0
            recorder.release()
            _run(replay_a, batch, "A")
            comparer.start_batch(rows)
            _run(replay_b, batch, "B")
            recorder.release()  # what B did not ask for
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
                    top1_agreement=_top1(side.top1, la.activations.get(ia), run.class_names),
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
