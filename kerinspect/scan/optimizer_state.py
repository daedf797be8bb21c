"""The step an optimizer last applied, from its saved state: numpy arithmetic, no TensorFlow.

A ``.keras`` file of a compiled, trained model keeps its optimizer's variables in
``model.weights.h5`` (``optimizer/vars/<i>``) and its class and hyperparameters in
``config.json`` (``compile_config.optimizer``). Keras 3 orders the variables (read in
``keras/src/optimizers/base_optimizer.py`` and each optimizer's ``build``; checked on
saved files):

* ``0``: ``iterations``, the number of steps applied (int64);
* ``1``: the learning rate, when it is a float (Keras 3 only: a schedule has no
  variable, and tf.keras 2.13-2.15 ``.keras`` files keep the rate in the config);
* then the slots, one ``add_optimizer_variables`` call after another, each call's
  slots interleaved per trainable variable in ``model.trainable_variables`` order:
  Adam/AdamW ``(momentum, velocity)`` per variable, then ``velocity_hat`` per variable
  with ``amsgrad``; SGD ``momentum`` (only when ``momentum != 0``); RMSprop
  ``velocity``, then ``momentum`` (``momentum > 0``), then ``average_gradient``
  (``centered``); Adagrad ``accumulator``.

**The update** of a weight is the change the optimizer's *last applied* step (step
``t = iterations``) made to it, ``Δ = w_t − w_{t−1}``; ``update_ratio = ‖Δ‖ / ‖w_t‖``
with ``w_t`` the saved weight. That step used the learning rate ``lr`` of the saved
variable, or the schedule evaluated at ``t − 1`` (Keras calls it with the counter before
the increment). Exact where the saved state determines it:

* Adam, AdamW (and ``amsgrad``): ``Δ = −lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`` (Keras's
  own form, ε added to ``√v``; ``v`` is ``velocity_hat`` with ``amsgrad``);
* SGD with momentum (not Nesterov): Keras 3's momentum variable *is* the applied
  change, ``Δ = m``;
* RMSprop with momentum: its momentum variable is the applied increment, ``Δ = −mom``;
* weight decay (AdamW, or any optimizer given ``weight_decay``) is applied before the
  step, ``w ← w·(1 − wd·lr)``: with ``w_t`` saved, ``w_{t−1} = (w_t − Δ_step)/(1 − wd·lr)``.

Estimates, where the gradient is not stored (``|g|`` replaced by its running RMS):

* RMSprop without momentum: ``|Δ| ≈ lr·√v / √(v + ε)`` (centered: ``√(v − ḡ² + ε)``);
* Adagrad: ``|Δ| ≈ lr·√((acc − acc₀)/t) / √(acc + ε)``, ``acc₀`` the initial
  accumulator value (the accumulator holds ``acc₀ + Σ g²`` over ``t`` steps);
* SGD with Nesterov momentum: ``Δ = μ·m − lr·g``, taken as ``m`` (exact when two
  consecutive gradients agree).

Not computed (``update_ratio`` null, with a one-line reason): plain SGD (no state but
the rate: ``Δ = −lr·g``), other or custom optimizers, unknown schedules, EMA or
gradient accumulation, and slots that do not line up with the trainable weights.
``exclude_from_weight_decay`` is not saved: decay is taken to apply to every variable.
Every array is read a block at a time (:func:`kerinspect.scan.blocks.block_slices`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerinspect.errors import escape_text
from kerinspect.report import OptimizerStep
from kerinspect.scan.blocks import block_slices
from kerinspect.scan.weight_names import Scope, class_of, inner_config

__all__ = [
    "NO_STATE",
    "SUPPORTED",
    "SavedOptimizer",
    "Unavailable",
    "learning_rate_at",
    "read_optimizer",
    "step_record",
    "trainable_updates",
    "update_flags",
    "weights_updates",
]

#: Hyperparameter defaults of the optimizers understood (Keras 3's), by class.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "Adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
    "AdamW": {
        "learning_rate": 0.001,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-7,
        "amsgrad": False,
        "weight_decay": 0.004,
    },
    "SGD": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "RMSprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
    "Adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
}
SUPPORTED = tuple(_DEFAULTS)
_BY_LOWER = {k.lower(): k for k in SUPPORTED}


class Unavailable(Exception):
    """The update cannot be computed; ``str(e)`` says why in one line."""


@dataclass(frozen=True)
class SavedOptimizer:
    """An optimizer's saved state, its slots per trainable variable (index ``i`` of
    ``model.trainable_variables``), and how to turn them into the last step's update.

    Attributes:
        class_name: ``Adam``, ``AdamW``, ``SGD``, ``RMSprop`` or ``Adagrad``.
        iterations: steps applied (``t``).
        learning_rate: the rate the last step used.
        schedule: the class of the learning-rate schedule, or None for a constant rate.
        exact: whether the update is the step itself, or an estimate (module docstring).
        slots: per trainable variable, its slot arrays by name (HDF5 datasets or arrays).
    """

    class_name: str
    iterations: int
    learning_rate: float
    schedule: str | None
    exact: bool
    config: dict[str, Any] = field(repr=False)
    slots: tuple[dict[str, Any], ...] = field(repr=False)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The shape of each trainable variable, as its slots have it."""
        return [tuple(int(d) for d in next(iter(s.values())).shape) for s in self.slots]

    def describe(self) -> str:
        """One line: what the update is."""
        if self.exact:
            return f"the step {self.class_name} applied last (step {self.iterations}), from its saved moments"
        how = {
            "SGD": "the Nesterov step taken as the momentum (exact when consecutive gradients agree)",
            "RMSprop": "the gradient's size taken as its running RMS",
            "Adagrad": "the gradient's size taken as the accumulator's RMS over the steps",
        }[self.class_name]
        return f"an estimate of step {self.iterations}: {how}"

    def update_ratio(self, i: int, weight: Any) -> float | None:
        """``‖Δ‖ / ‖w‖`` of trainable variable ``i`` whose saved value is ``weight`` (an
        HDF5 dataset or an array of the slots' shape); None when ‖w‖ is 0 or not finite."""

        slots = self.slots[i]
        shape = tuple(int(d) for d in weight.shape)
        step = self._step_fn()
        wd = float(self.config.get("weight_decay") or 0.0)
        keep = 1.0 - wd * self.learning_rate
        upd_sq = w_sq = 0.0
        for index in block_slices(shape):
            w = np.asarray(weight[index] if index else weight[()], np.float64)
            got = {k: np.asarray(v[index] if index else v[()], np.float64) for k, v in slots.items()}
            delta = step(got)
            if wd and keep != 0:
                delta = w - (w - delta) / keep  # w_{t-1} = (w_t - step) / (1 - wd·lr)
            upd_sq += float(np.sum(np.square(delta)))
            w_sq += float(np.sum(np.square(w[np.isfinite(w)])))
        if not (math.isfinite(upd_sq) and math.isfinite(w_sq)) or w_sq <= 0:
            return None
        return math.sqrt(upd_sq) / math.sqrt(w_sq)

    def _step_fn(self) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """The optimizer's own step (before weight decay) from a block of its slots."""
        c, lr, t = self.config, self.learning_rate, self.iterations
        if self.class_name in ("Adam", "AdamW"):
            b1, b2, eps = float(c["beta_1"]), float(c["beta_2"]), float(c["epsilon"])
            alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            v_name = "velocity_hat" if c.get("amsgrad") else "velocity"
            return lambda s: -s["momentum"] * alpha / (np.sqrt(s[v_name]) + eps)
        if self.class_name == "SGD":
            return lambda s: s["momentum"]
        if self.class_name == "RMSprop":
            eps = float(c["epsilon"])
            if float(c["momentum"]) > 0:
                return lambda s: -s["momentum"]
            if c.get("centered"):
                return lambda s: (
                    -lr
                    * np.sqrt(s["velocity"])
                    / np.sqrt(np.maximum(s["velocity"] - s["average_gradient"] ** 2 + eps, 0))
                )
            return lambda s: -lr * np.sqrt(s["velocity"]) / np.sqrt(s["velocity"] + eps)
        acc0, eps = float(c["initial_accumulator_value"]), float(c["epsilon"])
        return lambda s: (
            -lr
            * np.sqrt(np.maximum(s["accumulator"] - acc0, 0) / max(t, 1))
            / np.sqrt(s["accumulator"] + eps)
        )


def update_flags(ratio: float | None, shape: tuple[int, ...], low: float, high: float) -> tuple[str, ...]:
    """``update-too-small`` below ``low``, ``update-too-large`` above ``high``, for weights
    of two axes or more (kernels, embeddings). Biases and normalisation scales are not
    flagged: they start at 0 or 1 and move by about the learning rate per step whatever
    the health of training (Adam's first step moves a zero bias by its whole size)."""
    if ratio is None or len(shape) < 2:
        return ()
    if ratio < low:
        return ("update-too-small",)
    if ratio > high:
        return ("update-too-large",)
    return ()


# -- the optimizer's class and hyperparameters -----------------------------------------


def _class_and_config(saved: Any) -> tuple[str, dict[str, Any]]:
    """The optimizer class (one of :data:`SUPPORTED`) and its config with Keras's defaults
    filled in, from ``compile_config.optimizer`` (data, never deserialized)."""
    if isinstance(saved, str):
        name = _BY_LOWER.get(saved.lower())
        if name is None:
            raise Unavailable(
                f"the optimizer {_short(saved)!r} is not one kerinspect reads ({', '.join(SUPPORTED)})"
            )
        return name, dict(_DEFAULTS[name])
    if not isinstance(saved, dict):
        raise Unavailable("the saved compile_config names no optimizer")
    klass = saved.get("class_name")
    module = saved.get("module")
    if not isinstance(klass, str):
        raise Unavailable("the saved optimizer has no class name")
    klass = klass.removeprefix("Custom>")  # tf.keras 2.11-2.15 new optimizers
    if module not in (None, "keras.optimizers") or klass not in _DEFAULTS:
        raise Unavailable(
            f"the optimizer {_short(klass)!r} is not one kerinspect reads ({', '.join(SUPPORTED)})"
        )
    inner = saved.get("config")
    config = dict(_DEFAULTS[klass])
    if isinstance(inner, dict):
        config.update({k: v for k, v in inner.items() if v is not None or k == "weight_decay"})
    if klass == "AdamW" and config.get("weight_decay") is None:
        config["weight_decay"] = _DEFAULTS["AdamW"]["weight_decay"]
    if config.get("use_ema"):
        raise Unavailable("the optimizer keeps moving averages of the weights (use_ema): not computed")
    if config.get("gradient_accumulation_steps"):
        raise Unavailable("the optimizer accumulates gradients over steps: not computed")
    for key, value in config.items():
        if key != "learning_rate" and key in _DEFAULTS[klass] and not isinstance(value, (int, float, bool)):
            raise Unavailable(f"the optimizer's {key} is not a number")
    wd = config.get("weight_decay")
    if wd is not None and not isinstance(wd, (int, float)):
        raise Unavailable("the optimizer's weight_decay is not a number")
    return klass, config


def _short(text: str) -> str:
    return escape_text(text, 60)


# -- learning-rate schedules -----------------------------------------------------------


def _num(cfg: dict[str, Any], key: str, default: Any = None) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unavailable(f"the schedule's {key} is not a number")
    return float(value)


def learning_rate_at(schedule: Any, step: int) -> tuple[float, str]:
    """A serialized Keras ``LearningRateSchedule`` evaluated at ``step`` in numpy (float64),
    with its class name: ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay,
    PolynomialDecay, CosineDecay (with warmup) and CosineDecayRestarts, as Keras 3
    computes them. Raises :class:`Unavailable` for any other."""
    if not isinstance(schedule, dict) or not isinstance(schedule.get("class_name"), str):
        raise Unavailable("the learning rate is neither a number nor a serialized schedule")
    name = schedule["class_name"]
    cfg = schedule.get("config")
    if schedule.get("module") not in (None, "keras.optimizers.schedules") or not isinstance(cfg, dict):
        raise Unavailable(f"the learning-rate schedule {_short(name)!r} is not one kerinspect computes")
    s = float(step)
    if name in ("ExponentialDecay", "InverseTimeDecay"):
        lr0, steps, rate = (
            _num(cfg, "initial_learning_rate"),
            _num(cfg, "decay_steps"),
            _num(cfg, "decay_rate"),
        )
        p = s / steps
        if cfg.get("staircase"):
            p = math.floor(p)
        return (lr0 * rate**p if name == "ExponentialDecay" else lr0 / (1 + rate * p)), name
    if name == "PiecewiseConstantDecay":
        bounds, values = cfg.get("boundaries"), cfg.get("values")
        if not (isinstance(bounds, list) and isinstance(values, list) and len(values) == len(bounds) + 1):
            raise Unavailable("the PiecewiseConstantDecay schedule's boundaries and values do not match")
        b = [_num({"b": x}, "b") for x in bounds]
        v = [_num({"v": x}, "v") for x in values]
        k = next((i for i, x in enumerate(b) if s <= x), len(b))
        return v[k], name
    if name == "PolynomialDecay":
        lr0, steps = _num(cfg, "initial_learning_rate"), _num(cfg, "decay_steps")
        end, power = _num(cfg, "end_learning_rate", 0.0001), _num(cfg, "power", 1.0)
        if cfg.get("cycle"):
            steps *= 1.0 if s == 0 else math.ceil(s / steps)
        else:
            s = min(s, steps)
        return (lr0 - end) * (1 - s / steps) ** power + end, name
    if name == "CosineDecay":
        lr0, steps, alpha = (
            _num(cfg, "initial_learning_rate"),
            _num(cfg, "decay_steps"),
            _num(cfg, "alpha", 0.0),
        )

        def decay(step: float, start: float) -> float:
            return start * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / steps)) + alpha)

        if cfg.get("warmup_target") is None:
            return decay(min(s, steps), lr0), name
        target, warm = _num(cfg, "warmup_target"), _num(cfg, "warmup_steps", 0)
        s = min(s, steps + warm)
        if s < warm:
            return (target - lr0) * (s / warm) + lr0, name
        return decay(s - warm, target), name
    if name == "CosineDecayRestarts":
        lr0, first = _num(cfg, "initial_learning_rate"), _num(cfg, "first_decay_steps")
        t_mul, m_mul, alpha = _num(cfg, "t_mul", 2.0), _num(cfg, "m_mul", 1.0), _num(cfg, "alpha", 0.0)
        frac = s / first
        if t_mul == 1.0:
            restart = math.floor(frac)
            frac -= restart
        else:
            restart = math.floor(math.log(1.0 - frac * (1.0 - t_mul)) / math.log(t_mul))
            done = (1.0 - t_mul**restart) / (1.0 - t_mul)
            frac = (frac - done) / t_mul**restart
        cosine = 0.5 * m_mul**restart * (1.0 + math.cos(math.pi * frac))
        return lr0 * ((1 - alpha) * cosine + alpha), name
    raise Unavailable(f"the learning-rate schedule {_short(name)!r} is not one kerinspect computes")


# -- the slots ---------------------------------------------------------------------------


def _groups(klass: str, config: dict[str, Any]) -> list[tuple[str, ...]]:
    """The slot names of one trainable variable, by ``add_optimizer_variables`` call."""
    if klass in ("Adam", "AdamW"):
        extra: list[tuple[str, ...]] = [("velocity_hat",)] if config.get("amsgrad") else []
        return [("momentum", "velocity"), *extra]
    if klass == "SGD":
        return [("momentum",)] if float(config["momentum"]) != 0 else []
    if klass == "RMSprop":
        groups: list[tuple[str, ...]] = [("velocity",)]
        if float(config["momentum"]) > 0:
            groups.append(("momentum",))
        if config.get("centered"):
            groups.append(("average_gradient",))
        return groups
    return [("accumulator",)]


def _scalar(dataset: Any) -> float | None:
    if tuple(dataset.shape or ()) != ():
        return None
    value = np.asarray(dataset[()])
    return float(value) if value.dtype.kind in "fiu" else None


def read_optimizer(variables: Sequence[Any], saved: Any, *, keras2: bool = False) -> SavedOptimizer:
    """The saved optimizer: ``variables`` are its saved variables in order (the HDF5
    datasets ``optimizer/vars/0``, ``1``...), ``saved`` is ``compile_config.optimizer``;
    ``keras2``: written by tf.keras 2.13-2.15 (no learning-rate variable).

    Raises:
        Unavailable: an optimizer or schedule not understood, plain SGD, no steps yet,
            or variables that do not fit the optimizer's layout.
    """
    klass, config = _class_and_config(saved)
    if not variables:
        raise Unavailable("the optimizer saved no variables")
    iterations = _scalar(variables[0])
    if iterations is None or iterations != int(iterations) or iterations < 0:
        raise Unavailable("the optimizer's first variable is not its step counter")
    t = int(iterations)
    lr_config = config.get("learning_rate")
    rest = list(variables[1:])
    schedule = None
    if isinstance(lr_config, dict):
        lr, schedule = learning_rate_at(lr_config, max(t - 1, 0))
    elif not keras2 and rest and _scalar(rest[0]) is not None:
        lr = float(_scalar(rest[0]) or 0.0)
        rest = rest[1:]
    elif isinstance(lr_config, (int, float)) and not isinstance(lr_config, bool):
        lr = float(lr_config)
    else:
        raise Unavailable("the learning rate is neither saved nor a number in the config")
    groups = _groups(klass, config)
    if not groups:
        raise Unavailable(
            "plain SGD (no momentum) keeps no state but the rate: its step, -lr·g, needs the gradient"
        )
    if t == 0:
        raise Unavailable("the optimizer has not applied a step yet (iterations = 0)")
    per_var = sum(len(g) for g in groups)
    if len(rest) % per_var:
        raise Unavailable(f"{len(rest)} slot variables do not fit {klass}'s {per_var} per trainable weight")
    n = len(rest) // per_var
    slots: list[dict[str, Any]] = [{} for _ in range(n)]
    base = 0
    for group in groups:
        for i in range(n):
            for k, name in enumerate(group):
                slots[i][name] = rest[base + i * len(group) + k]
        base += n * len(group)
    for i, s in enumerate(slots):
        shapes = {tuple(v.shape or ()) for v in s.values()}
        if len(shapes) != 1:
            raise Unavailable(f"the slots of trainable weight {i} have different shapes")
    exact = klass in ("Adam", "AdamW") or (
        (klass == "SGD" and not config.get("nesterov"))
        or (klass == "RMSprop" and float(config["momentum"]) > 0)
    )
    return SavedOptimizer(klass, t, lr, schedule, exact, config, tuple(slots))


# -- the weights it applies to ---------------------------------------------------------

#: Variables no optimizer updates, by their name in the ``weights`` report.
_NOT_TRAINED = frozenset({"moving_mean", "moving_variance"})
#: Layer classes whose variables are all non-trainable state.
_STATE_LAYERS = frozenset({"Normalization"})
#: Model classes whose config orders the layers (a subclassed model's file does not).
_ORDERED_MODELS = frozenset({"Functional", "Sequential", "Model"})

NO_STATE = "no optimizer state saved (the model was not compiled, or saved with include_optimizer=False)"


def step_record(saved: SavedOptimizer | None = None, reason: str | None = None) -> OptimizerStep:
    """The report's :class:`~kerinspect.report.OptimizerStep`: what was computed, or why not."""
    if saved is None:
        return OptimizerStep(note=reason or NO_STATE)
    return OptimizerStep(
        class_name=saved.class_name,
        iterations=saved.iterations,
        learning_rate=saved.learning_rate,
        schedule=saved.schedule,
        update="exact" if saved.exact else "estimate",
        note=saved.describe(),
    )


def _trained(layer: str, name: str, dtype: str, config: Any) -> bool:
    """Whether a weight (as the ``weights`` report names it) is one the optimizer
    updates: a float variable, not a moving statistic or a random generator's state,
    in no layer the config marks ``trainable: false``."""
    if "float" not in dtype:
        return False
    segments = name.split("/")
    if segments[-1] in _NOT_TRAINED or "seed_generator" in segments:
        return False
    if inner_config(config).get("trainable") is False:
        return False
    scope = Scope.of(config)
    for seg in layer.split("/") if layer else ():
        entry = scope.by_name.get(seg) if scope is not None else None
        if entry is None:
            break
        if inner_config(entry).get("trainable") is False or class_of(entry) in _STATE_LAYERS:
            return False
        scope = Scope.of(entry)
    return True


def _saved(state: Sequence[Any], config: Any, saved_with: str | None) -> SavedOptimizer:
    """The file's optimizer from its saved variables ``state`` and ``config.json``."""
    if not state:
        raise Unavailable(NO_STATE)
    compile_config = config.get("compile_config") if isinstance(config, dict) else None
    if not isinstance(compile_config, dict) or compile_config.get("optimizer") is None:
        raise Unavailable("optimizer state saved, but not its class (no compile_config in config.json)")
    keras2 = isinstance(saved_with, str) and saved_with.startswith("2.")
    return read_optimizer(state, compile_config["optimizer"], keras2=keras2)


def _ratios(
    saved: SavedOptimizer, weights: Sequence[Any], found: str
) -> tuple[list[float | None], OptimizerStep]:
    """``update_ratio`` of each of ``weights``, the trainable variables in order (datasets
    or arrays), once their shapes match the optimizer's slots one for one."""
    shapes = [tuple(int(d) for d in w.shape) for w in weights]
    if shapes != saved.shapes:
        raise Unavailable(
            f"the optimizer's slots for {len(saved.shapes)} weights do not line up with the "
            f"{len(shapes)} trainable weights {found}"
        )
    return [saved.update_ratio(i, w) for i, w in enumerate(weights)], step_record(saved)


def _guarded(
    compute: Callable[[], tuple[list[float | None], OptimizerStep]], n: int
) -> tuple[list[float | None], OptimizerStep]:
    """``compute()``, or ``n`` Nones and the one-line reason when it cannot be done."""
    try:
        return compute()
    except Unavailable as e:
        return [None] * n, step_record(reason=str(e))
    except (ValueError, TypeError, OSError) as e:  # a slot that is not numeric, unreadable
        return [None] * n, step_record(
            reason=f"the optimizer's variables could not be read ({_short(str(e))})"
        )


def weights_updates(
    weights: Sequence[tuple[str, str, str, Any]],
    state: Sequence[Any],
    config: Any,
    saved_with: str | None,
) -> tuple[list[float | None], OptimizerStep]:
    """``update_ratio`` of each weight of the ``weights`` report, and its record.

    Args:
        weights: ``(layer, name, dtype, dataset)`` per weight, in model order.
        state: the optimizer's saved variables (``optimizer/vars/<i>``) in order.
        config: the parsed ``config.json`` (its ``compile_config.optimizer``, and the
            layers' order and ``trainable`` flags).
        saved_with: the Keras version that wrote the file.

    The trainable weights, in order, are matched to the optimizer's slots by position
    (``model.trainable_variables`` order); their shapes must agree one for one, else
    nothing is computed and the record says why.
    """

    def compute() -> tuple[list[float | None], OptimizerStep]:
        saved = _saved(state, config, saved_with)
        if class_of(config) not in _ORDERED_MODELS:
            raise Unavailable(
                "the file does not say in which order a subclassed model's weights reach the optimizer"
            )
        trained = [
            i for i, (layer, name, dtype, _) in enumerate(weights) if _trained(layer, name, dtype, config)
        ]
        got, step = _ratios(saved, [weights[i][3] for i in trained], "found in the file")
        ratios: list[float | None] = [None] * len(weights)
        for i, r in zip(trained, got):
            ratios[i] = r
        return ratios, step

    return _guarded(compute, len(weights))


def trainable_updates(
    weights: Sequence[Any], state: Sequence[Any], config: Any, saved_with: str | None
) -> tuple[list[float | None], OptimizerStep]:
    """``update_ratio`` of each of a loaded model's ``trainable_variables`` (their values,
    in order), from the optimizer state saved in its file (``state``, ``config``)."""
    return _guarded(lambda: _ratios(_saved(state, config, saved_with), weights, "of the model"), len(weights))
