"""``gradients``: the gradient of the loss at every layer call's outputs and every weight.

The model runs through the same eager replay as ``summary``
(:class:`~kerinspect.engine.trace.Replayer`) inside a ``tf.GradientTape``: every float
tensor a call produces is watched as it appears (:class:`GradientRecorder`, a visitor),
then one ``tape.gradient`` gives the gradient of the batch's mean loss with respect to
each of them and to every trainable weight. Only eager replay: the compiled engine is
not used here.

**How batches combine.** Every figure is that of the gradient of the mean loss over
all the run's samples, as if they were one batch, computed batch by batch: a batch of
``b`` of ``n`` samples contributes its mean-loss gradient times ``b / n``. For a weight
that is the sum over batches; for an output, whose elements belong to one sample each,
the scaled per-batch gradients are its parts, merged like the activation statistics
(sum of squares, largest magnitude, NaN and Inf counts). Figures do not depend on
``batch_size`` (BatchNormalization in training mode excepted).

**The loss, never code from the file**: a name of :data:`LOSSES` (``run.loss``), or the
saved ``compile_config``'s loss when it is one of them (a name, or a built-in loss class
serialized with its ``from_logits``); anything else is refused with a hint naming the
option. Labels come from the feed (``--labels``, ``--label-column``, image folders);
without them, a classification loss takes the model's own top prediction as the label.
Mixed precision: no loss scale is applied (the gradients are those of the loss itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerinspect.engine import keras_adapter as ka
from kerinspect.engine.events import CallSite, Visitor
from kerinspect.engine.inputs import Feed
from kerinspect.engine.tensors import tensor_dtype
from kerinspect.engine.tfenv import import_keras
from kerinspect.errors import DataError, UsageError, escape_text, msg
from kerinspect.losses import CLASS_LOSSES, LOGITS_LOSSES, LOSSES, check_loss_options, loss_names
from kerinspect.spec import ProgressFn, RunSpec

keras = import_keras()
import tensorflow as tf  # noqa: E402 - imported (quietly) by import_keras


@dataclass(frozen=True)
class Loss:
    """The loss a run differentiates: ``name`` (a :data:`LOSSES` value), ``from_logits``
    and ``source`` (``loss`` option or ``compile_config``)."""

    name: str
    from_logits: bool = False
    source: str = "loss"

    def fn(self) -> Any:
        if self.name in LOGITS_LOSSES:
            return lambda y, p: keras.losses.get(self.name)(y, p, from_logits=self.from_logits)
        return keras.losses.get(self.name)

    @property
    def classes(self) -> bool:
        return self.name in CLASS_LOSSES


def choose_loss(option: str | None, saved: Any, from_logits: bool = False) -> Loss:
    """The run's :class:`Loss`: ``option`` (``run.loss``) first, else the saved
    ``compile_config`` loss ``saved`` when it is a built-in one (data, never
    deserialized; it says itself whether it takes logits: ``from_logits`` applies to
    ``option``). Raises :class:`UsageError` naming the option otherwise."""
    names = loss_names()
    if option is not None:
        check_loss_options(option, from_logits)
        return Loss(LOSSES[option], from_logits)
    if isinstance(saved, str) and saved in LOSSES:
        return Loss(LOSSES[saved], from_logits and LOSSES[saved] in LOGITS_LOSSES, "compile_config")
    if (
        isinstance(saved, dict)
        and saved.get("class_name") in LOSSES
        and saved.get("module") in (None, "keras.losses")
    ):
        config = saved.get("config")
        config = config if isinstance(config, dict) else {}
        return Loss(LOSSES[saved["class_name"]], bool(config.get("from_logits", False)), "compile_config")
    if saved is None:
        text = msg(
            "The model has no saved loss to differentiate: give one with {loss}. Received: {loss}=None"
        )
    else:
        shown = (
            saved
            if isinstance(saved, str)
            else (saved.get("class_name") if isinstance(saved, dict) else type(saved).__name__)
        )
        text = msg(
            "The model's saved loss {shown!r} is not a built-in Keras loss (a custom loss's code is "
            "never run): give one with {loss}.",
            shown=escape_text(str(shown), 80),
        )
    raise UsageError(text, parameter="loss", hint=msg("{loss} takes one of {names}", names=names))


# -- statistics ------------------------------------------------------------------------


@dataclass
class GradStats:
    """Mergeable statistics of one output's gradient (float64 sums)."""

    count: int = 0
    sum_sq: float = 0.0
    max_abs: float = 0.0
    nan: int = 0
    inf: int = 0

    def add(self, g: np.ndarray) -> None:
        g = np.asarray(g, np.float64)
        finite = np.isfinite(g)
        self.count += g.size
        self.nan += int(np.isnan(g).sum())
        self.inf += int(np.isinf(g).sum())
        good = g[finite]
        if good.size:
            self.sum_sq += float(np.dot(good.ravel(), good.ravel()))
            self.max_abs = max(self.max_abs, float(np.abs(good).max()))

    def record(self) -> dict[str, Any]:
        norm = math.sqrt(self.sum_sq)
        return {
            "norm": norm,
            "rms": math.sqrt(self.sum_sq / self.count) if self.count else None,
            "max_abs": self.max_abs,
            "nan": self.nan,
            "inf": self.inf,
        }


@dataclass
class _Output:
    name: str
    dtype: str = ""
    shape: tuple[int | None, ...] = ()
    stats: GradStats | None = None  # None: not float, or not on the loss's path
    model_output: bool = False
    reference: bool = False  # an input of the model's output call: what ratios are relative to


@dataclass
class _Call:
    site: CallSite
    outputs: list[_Output] = field(default_factory=list)


class GradientRecorder(Visitor):
    """Watches every float tensor the replay produces on the current tape, and keeps
    one batch's tensors until :meth:`take`."""

    def __init__(self) -> None:
        self.tape: Any = None
        self.calls: dict[str, _Call] = {}  # by path, in call order
        self.watched: list[tuple[str, int, Any]] = []
        self._inputs: dict[str, list[int]] = {}  # top-level call -> ids of its input tensors
        self._output_calls: set[str] = set()

    def consumed(self, site: CallSite, op: Any, inputs: Sequence[Any]) -> None:
        if site.depth == 0:
            self._inputs[site.path] = [id(t) for t in inputs if t is not None]

    def enter(self, site: CallSite) -> None:
        if site.called and site.path not in self.calls:
            self.calls[site.path] = _Call(site)

    def produced(self, site: CallSite, tensors: Sequence[Any]) -> None:
        call = self.calls.setdefault(site.path, _Call(site))
        call.site = site
        for k, t in enumerate(tensors):
            if k >= len(call.outputs):
                name = site.output_names[k] if k < len(site.output_names) else f"output_{k}"
                call.outputs.append(_Output(name))
            out = call.outputs[k]
            if t is None or not tf.is_tensor(t):
                continue
            out.dtype = tensor_dtype(t)
            out.shape = (None, *tuple(t.shape)[1:])
            if t.dtype.is_floating and self.tape is not None:
                self.tape.watch(t)
                self.watched.append((site.path, k, t))

    def model_output(self, site: CallSite, k: int) -> None:
        call = self.calls.get(site.path)
        if call is not None and k < len(call.outputs):
            call.outputs[k].model_output = True
            self._output_calls.add(site.path)

    def take(self) -> list[tuple[str, int, Any]]:
        """The batch's watched tensors (and no longer held here); the outputs that feed
        the model's output calls are marked as the reference of every ratio."""
        watched, self.watched = self.watched, []
        feeding = {i for path in self._output_calls for i in self._inputs.get(path, ())}
        for path, k, t in watched:
            if id(t) in feeding and path not in self._output_calls:
                self.calls[path].outputs[k].reference = True
        self._inputs = {}
        return watched


# -- the run ------------------------------------------------------------------------


def _labels_for(loss: Loss, labels: Any, prediction: Any) -> tuple[Any, bool]:
    """The batch's ``y_true`` for ``loss``, and whether it is the model's own prediction."""
    pred = np.asarray(prediction)
    width = pred.shape[-1] if pred.ndim > 1 else 1
    predicted = labels is None
    if predicted:
        if not loss.classes:
            raise UsageError(
                msg(
                    "The loss {name!r} needs labels, and the inputs hold none. Received: {loss}={name!r}",
                    name=loss.name,
                ),
                parameter="labels",
                hint=msg(
                    "give them with {labels} or {label_column}, or use inputs that hold them (image folders)"
                ),
            )
        if width == 1:
            scores = pred if not loss.from_logits else 1 / (1 + np.exp(-pred))
            return (scores > 0.5).astype(np.float32), True
        y = pred.argmax(axis=-1)
    else:
        y = np.asarray(labels)
        if y.dtype == object:  # a labels file's values, as Python objects
            y = np.asarray(y.tolist())
        if y.dtype.kind in "US":  # a table's column: numbers written as text
            try:
                y = y.astype(np.float64)
            except ValueError:
                pass
        if y.dtype.kind not in "biuf":
            raise DataError(
                msg(
                    "The labels are not numbers (their dtype is {dtype}): the loss {name!r} needs numeric labels.",
                    dtype=str(y.dtype),
                    name=loss.name,
                ),
                hint=msg("give class indices with {labels}"),
            )
    if loss.name == "sparse_categorical_crossentropy" or not loss.classes or width == 1:
        y = y.astype(np.float32)
        if y.ndim < pred.ndim and loss.name != "sparse_categorical_crossentropy":
            y = y.reshape(y.shape + (1,) * (pred.ndim - y.ndim))
        return y, predicted
    if y.ndim == pred.ndim:  # already one-hot
        return y.astype(np.float32), predicted
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= width):
        raise DataError(
            msg(
                "Label {value} is out of range for a classifier output of {width} classes.",
                value=int(y.max() if y.max() >= width else y.min()),
                width=width,
            ),
            hint=msg("{labels} must hold class indices from 0"),
        )
    return np.eye(width, dtype=np.float32)[y], predicted


def gradients_loaded(
    model: Any,
    feed: Feed,
    run: RunSpec,
    saved_loss: Any = None,
    progress: ProgressFn | None = None,
    *,
    file: str | None = None,
) -> dict[str, Any]:
    """Run ``model`` on every batch of ``feed`` under a gradient tape: the ``gradients``
    result as plain data (see the module's docstring for what each figure is). With
    ``run.training`` the model's non-trainable weights (moving statistics) are restored
    afterwards. ``file``: the model's file, whose saved optimizer state gives each
    weight's ``update_ratio`` (:func:`saved_updates`)."""

    # training mode updates BatchNormalization's moving statistics: put them back after
    kept = [(v, v.numpy()) for v in model.non_trainable_weights] if run.training else []
    try:
        result = _gradients(model, feed, run, saved_loss, progress)
    finally:
        for v, value in kept:
            v.assign(value)
    return {**result, **saved_updates(model, file, result["weights"])}


def saved_updates(model: Any, file: str | None, weights: list[dict[str, Any]]) -> dict[str, Any]:
    """Each weight's ``update_ratio``, the last optimizer step's ``‖Δw‖/‖w‖`` read from
    the optimizer state saved in ``file`` (numpy, :func:`kerinspect.scan.weights.model_updates`,
    the arithmetic of ``kerinspect weights``), and the ``optimizer_step`` record. The
    optimizer's slots follow ``model.trainable_variables``; ``weights`` (the result's,
    in :func:`~kerinspect.engine.trace.weight_paths` order) are matched to them by variable."""
    from kerinspect.engine.trace import weight_paths
    from kerinspect.errors import KerinspectError
    from kerinspect.scan.optimizer_state import step_record, trainable_updates
    from kerinspect.scan.weights import model_updates

    trainable = list(model.trainable_variables)
    ratios: list[float | None]
    if file is None:  # a model object: its own optimizer, the same arithmetic as its file's
        ratios, step = trainable_updates(
            [np.asarray(v.numpy()) for v in trainable], *_own_optimizer(model), keras.__version__
        )
    else:
        try:
            ratios, step = model_updates(file, [np.asarray(v.numpy()) for v in trainable])
        except (KerinspectError, OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            ratios = [None] * len(trainable)
            step = step_record(reason=f"the optimizer state could not be read ({escape_text(str(e), 200)})")
    by_id = {id(v): r for v, r in zip(trainable, ratios)}
    by_name = {name: by_id.get(id(w)) for _, name, w in weight_paths(model) if w.trainable}
    return {
        "weights": [{**w, "update_ratio": by_name.get(w["path"])} for w in weights],
        "optimizer_step": step.to_dict(),
    }


def _own_optimizer(model: Any) -> tuple[list[Any], Any]:
    """A model object's optimizer as its saved file would hold it: the variables' values
    and a config with ``compile_config.optimizer``; nothing when it has none built."""
    opt = getattr(model, "optimizer", None)
    if opt is None or not getattr(opt, "built", False):
        return [], None
    state = [np.asarray(v.numpy()) for v in opt.variables]
    return state, {
        "compile_config": {"optimizer": keras.optimizers.serialize(opt)},
        "class_name": "Functional",
    }


def _gradients(
    model: Any, feed: Feed, run: RunSpec, saved_loss: Any, progress: ProgressFn | None
) -> dict[str, Any]:
    from kerinspect.engine.batches import layer_failure
    from kerinspect.engine.trace import LayerCallError, Replayer, weight_paths

    loss = choose_loss(run.loss, saved_loss, run.from_logits)
    outputs = ka.flatten(getattr(model, "outputs", None) or [None])
    if len(outputs) > 1:
        raise UsageError(
            "gradients differentiates one loss on one output, and the model has several. "
            f"Received: a model with {len(outputs)} outputs",
            hint="save the sub-model of the output to study, keras.Model(model.inputs, model.outputs[k])",
        )
    loss_fn = loss.fn()
    recorder = GradientRecorder()
    replay = Replayer(model, recorder, run, attention=False)
    variables = [(layer, name, w) for layer, name, w in weight_paths(model) if w.trainable]
    weight_grads = [np.zeros(tuple(w.shape), np.float64) for _, _, w in variables]
    weight_nan = [0] * len(variables)
    n, done, loss_sum, predicted = feed.samples, 0, 0.0, False
    for batch, labels in feed.labelled_batches():
        rows = len(batch[0]) if batch else 0
        scale = rows / n
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for _, _, w in variables:
                tape.watch(w.value if hasattr(w, "value") else w)
            recorder.tape = tape
            try:
                out = replay(batch)
            except LayerCallError as e:
                raise layer_failure(e, rows, start=done, feed=feed, batch=batch) from e.cause
            recorder.tape = None
            pred = ka.flatten(out)[0]
            y, predicted_now = _labels_for(loss, labels, pred)
            predicted = predicted or predicted_now
            # identity: Keras's crossentropy would read a softmax's cached logits and skip
            # the output itself, which would then get no gradient of its own
            value = keras.ops.mean(loss_fn(tf.constant(y), tf.identity(tf.cast(pred, tf.float32))))
        watched = recorder.take()
        sources = [t for _, _, t in watched] + [
            w.value if hasattr(w, "value") else w for _, _, w in variables
        ]
        grads = tape.gradient(value, sources, unconnected_gradients=tf.UnconnectedGradients.NONE)
        loss_sum += float(value) * rows
        for (path, k, _), g in zip(watched, grads[: len(watched)]):
            if g is None:
                continue
            out_rec = recorder.calls[path].outputs[k]
            if out_rec.stats is None:
                out_rec.stats = GradStats()
            out_rec.stats.add(np.asarray(g) * scale)
        for i, g in enumerate(grads[len(watched) :]):
            if g is not None:
                a = np.asarray(tf.convert_to_tensor(g), np.float64) * scale
                weight_nan[i] += int((~np.isfinite(a)).sum())
                weight_grads[i] += a
        del watched, grads, sources, tape, out, pred
        done += rows
        if progress is not None:
            progress(done, n)
    return _result(recorder, variables, weight_grads, weight_nan, loss, loss_sum / max(n, 1), predicted, run)


def _result(
    recorder: GradientRecorder,
    variables: list[tuple[str, str, Any]],
    weight_grads: list[np.ndarray],
    weight_nan: list[int],
    loss: Loss,
    loss_value: float,
    predicted: bool,
    run: RunSpec,
) -> dict[str, Any]:
    """The plain-data result: calls, weights, and where gradients vanish or explode."""
    output_norm, fed, fed_by = None, 0.0, []
    for call in recorder.calls.values():
        for out in call.outputs:
            if out.model_output and out.stats is not None:
                output_norm = out.stats.record()["norm"]
            if out.reference and out.stats is not None:
                fed += out.stats.sum_sq
                fed_by.append({"path": call.site.path, "output": out.name})
    # the gradient reaching the output layer's inputs: a classifier's saturated softmax
    # (a confident model) shrinks every gradient below it alike, and says nothing of depth
    reference = math.sqrt(fed) if fed > 0 else output_norm
    if not fed > 0:
        fed_by = [
            {"path": c.site.path, "output": o.name}
            for c in recorder.calls.values()
            for o in c.outputs
            if o.model_output
        ]
    layers = []
    for call in recorder.calls.values():
        site = call.site
        outs = []
        for out in call.outputs:
            grad = out.stats.record() if out.stats is not None else None
            flags: list[str] = []
            if grad is not None and reference and (site.class_name == "InputLayer" or out.model_output):
                grad["ratio"] = grad["norm"] / reference  # the model's input, the loss's own: never flagged
            elif grad is not None and reference:
                grad["ratio"] = grad["norm"] / reference
                if grad["nan"] or grad["inf"] or grad["ratio"] > run.exploding_gradient:
                    flags.append("exploding-gradient")
                elif grad["ratio"] < run.vanishing_gradient:
                    flags.append("vanishing-gradient")
            elif grad is not None:
                grad["ratio"] = None
            outs.append(
                {
                    "name": out.name,
                    "shape": list(out.shape),
                    "dtype": out.dtype,
                    "gradient": grad,
                    "flags": flags,
                }
            )
        layers.append(
            {
                "path": site.path,
                "name": site.name,
                "class_name": site.class_name,
                "call": site.call,
                "depth": site.depth,
                "parent": site.parent,
                "outputs": outs,
            }
        )
    weights = []
    for (layer, name, w), g, bad in zip(variables, weight_grads, weight_nan):
        norm = float(np.linalg.norm(np.asarray(w.numpy(), np.float64)))
        grad_norm = float(np.linalg.norm(np.where(np.isfinite(g), g, 0.0)))
        weights.append(
            {
                "path": name,
                "layer": layer,
                "shape": list(w.shape),
                "norm": norm,
                "grad_norm": grad_norm,
                "ratio": grad_norm / norm if norm > 0 else None,
                "nonfinite": bad,
            }
        )
    return {
        "loss": {
            "name": loss.name,
            "from_logits": loss.from_logits,
            "source": loss.source,
            "value": loss_value if math.isfinite(loss_value) else None,
            "labels": "predicted" if predicted else "data",
        },
        "training": run.training,
        "output_gradient_norm": output_norm,
        "reference": {"norm": reference, "outputs": fed_by},
        "thresholds": {
            "vanishing_gradient": run.vanishing_gradient,
            "exploding_gradient": run.exploding_gradient,
        },
        "layers": layers,
        "weights": weights,
        "vanishing": _first(layers, "vanishing-gradient"),
        "exploding": _first(layers, "exploding-gradient"),
    }


def _first(layers: list[dict[str, Any]], flag: str) -> dict[str, Any] | None:
    """From the output backwards, the first call whose output is flagged ``flag``."""
    for layer in reversed(layers):
        for out in layer["outputs"]:
            if flag in out["flags"]:
                return {"path": layer["path"], "output": out["name"], "ratio": out["gradient"]["ratio"]}
    return None
