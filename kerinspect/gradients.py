"""The ``gradients`` report: plain data, as the worker's job returns it.

What each figure is, and how batches combine, is in
:mod:`kerinspect.engine.gradients`: the gradient of the mean loss over all the run's
samples, at every layer call's outputs and every trainable weight. Frozen dataclasses of
builtins with generated JSON (:mod:`kerinspect.records`): the worker's output is read
back through :meth:`GradientReport.from_dict`, checked, not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .provenance import InputRecord, Isolation, ModelInfo
from .records import Record, meta
from .report import OptimizerStep


@dataclass(frozen=True)
class GradientStats(Record):
    """One output's gradient: its norm, RMS, largest magnitude, NaN and Inf counts,
    and ``ratio``, its norm over the reference's (:class:`Reference`; None without one)."""

    norm: float
    rms: float | None
    max_abs: float
    nan: int
    inf: int
    ratio: float | None = None


@dataclass(frozen=True)
class GradientOutput(Record):
    """One output of a call; ``gradient`` is None for a non-float output or one the
    loss does not depend on."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    gradient: GradientStats | None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class GradientLayer(Record):
    """One layer call, as ``summary`` names it (``shared@1``, ``block/inner``)."""

    path: str
    name: str
    class_name: str
    call: int
    depth: int
    parent: str | None
    outputs: tuple[GradientOutput, ...]


@dataclass(frozen=True)
class GradientWeight(Record):
    """One trainable weight: its norm, its gradient's norm and their ratio;
    ``nonfinite``: NaN or Inf elements of its gradient (left out of ``grad_norm``)."""

    path: str
    layer: str
    shape: tuple[int, ...]
    norm: float
    grad_norm: float
    ratio: float | None
    nonfinite: int = 0
    #: ``‖Δw‖/‖w‖`` of the last step of the optimizer state saved with the model
    #: (:class:`~kerinspect.report.OptimizerStep`); None without one
    update_ratio: float | None = None


@dataclass(frozen=True)
class LossInfo(Record):
    """The loss differentiated: a built-in name, ``from_logits``, where it came from
    (``loss``: the option; ``compile_config``: the file's), its mean value, and
    whether the labels were the data's or the model's own top prediction."""

    name: str
    from_logits: bool
    source: str = field(metadata=meta(choices=("loss", "compile_config")))
    value: float | None
    labels: str = field(metadata=meta(choices=("data", "predicted")))


@dataclass(frozen=True)
class Where(Record):
    """The first call from the output backwards with a flagged output."""

    path: str
    output: str
    ratio: float | None


@dataclass(frozen=True)
class Reference(Record):
    """What every ratio is relative to: the gradient norm of the outputs that feed the
    model's output layer (``outputs``: each ``{"path", "output"}``), else of the model's
    output itself."""

    norm: float | None
    outputs: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class GradientReport(Record):
    """What ``kerinspect gradients`` found (see the module docstring)."""

    model: ModelInfo
    inputs: tuple[InputRecord, ...]
    samples: int
    batch_size: int
    engine: str
    loss: LossInfo
    training: bool
    output_gradient_norm: float | None
    reference: Reference
    thresholds: dict[str, float]
    layers: tuple[GradientLayer, ...]
    weights: tuple[GradientWeight, ...]
    vanishing: Where | None
    exploding: Where | None
    warnings: tuple[str, ...] = ()
    kerinspect_version: str = ""
    isolation: Isolation | None = field(default=None, metadata=meta(omit_none=True))
    #: what each weight's ``update_ratio`` comes from, or why there is none
    optimizer_step: OptimizerStep = field(default_factory=OptimizerStep)

    def verdict(self) -> list[str]:
        """One line each where gradients vanish and where they explode, or that they do neither."""
        lines = []
        if self.exploding is not None:
            lines.append(
                f"Gradients explode from {self.exploding.path!r} ({self.exploding.output}) backwards: "
                f"its gradient norm is {_ratio(self.exploding.ratio)} the output layer's input's "
                f"(above {self.thresholds.get('exploding_gradient')})."
            )
        if self.vanishing is not None:
            lines.append(
                f"Gradients vanish from {self.vanishing.path!r} ({self.vanishing.output}) backwards: "
                f"its gradient norm is {_ratio(self.vanishing.ratio)} the output layer's input's "
                f"(below {self.thresholds.get('vanishing_gradient')})."
            )
        if not lines:
            lines.append("No output's gradient vanishes or explodes.")
        return lines

    def output(self, path: str, name: str | None = None) -> GradientOutput:
        """The output ``name`` (default: the first) of the call ``path``; KeyError if none."""
        for layer in self.layers:
            if layer.path == path:
                for out in layer.outputs:
                    if name is None or out.name == name:
                        return out
        raise KeyError(path if name is None else f"{path}:{name}")

    def weight(self, path: str) -> GradientWeight:
        """The weight named ``path``; KeyError if none."""
        for w in self.weights:
            if w.path == path:
                return w
        raise KeyError(path)


def _ratio(r: float | None) -> str:
    return "undefined" if r is None else f"{r:.3g}×"


__all__ = [
    "GradientLayer",
    "GradientOutput",
    "GradientReport",
    "GradientStats",
    "GradientWeight",
    "LossInfo",
    "Where",
]
