"""Settings of ``kerinspect check``: defaults, a TOML file, per-model entries, options.

The file is the nearest ``pyproject.toml`` with a ``[tool.kerinspect.check]`` table,
searched upward from the working directory (as ruff does: a ``pyproject.toml``
without that table is passed over), or the file given with ``--config``. Keys mirror
the command's options::

    [tool.kerinspect.check]
    max_abs = 1e4
    max_dead_fraction = 0.5
    rules = ["vanishing", "constant"]   # optional rules to run too
    min_separability = 0.9              # with rules = ["separability"] and labels
    ignore = ["augment", "debug_*"]      # globs on layer paths
    samples = 32
    seed = 0

    [[tool.kerinspect.check.models]]     # per-model settings; first match wins
    path = "models/classifier*.keras"    # glob, relative to the file's directory
    input = "data/val_batch.npz"
    baseline = "release/classifier.json"
    custom_objects = "src/layers.py"     # as --custom-objects: your code, imported in the worker

Precedence, highest first: command-line options, the first ``[[models]]`` entry
whose ``path`` matches, the file's top-level keys, the built-in defaults. A list
(``ignore``, ``shape``) given at a higher level replaces the lower one. Relative
paths in a file (``input``, ``baseline``, ``custom_objects``, ``path``) are relative
to the file's directory.

Stdlib only (``tomllib``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError, escape_text
from .losses import LOSSES, loss_names
from .spec import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DIM,
    DEFAULT_EXPLODING_GRADIENT,
    DEFAULT_MAX_ABS,
    DEFAULT_MAX_DEAD_FRACTION,
    DEFAULT_MAX_SATURATED_FRACTION,
    DEFAULT_MIN_RMS_RATIO,
    DEFAULT_MIN_SAMPLE_SPREAD,
    DEFAULT_MIN_SEPARABILITY,
    DEFAULT_PREPROCESS,
    DEFAULT_SEED,
    DEFAULT_TOLERANCE,
    DEFAULT_VANISHING_GRADIENT,
    PREPROCESS_MODES,
    RunSpec,
    Thresholds,
)

#: Rules ``summary`` shows as flags but ``check`` runs only when asked (``--rule NAME``,
#: ``rules = [...]``): what the ``rules`` setting may name (the rules are in
#: :mod:`kerinspect.checks`, which reads its settings from here).
OPTIONAL_RULES = ("vanishing", "saturated", "constant")
#: Optional rules judged on attention heads (the flags ``summary`` and ``attention``
#: show), off by default as :data:`OPTIONAL_RULES`.
ATTENTION_RULES = ("uniform-attention", "collapsed-attention", "single-key-attention")
#: Optional rules of the whole model, not of each tensor (no flag in ``summary``):
#: ``separability`` gates the last hidden layer's separability accuracy (a run with
#: labels; :func:`kerinspect.checks.last_hidden`).
MODEL_RULES = ("separability",)
#: Optional rules judged on the loss's gradients (the flags of ``kerinspect gradients``):
#: a check that names one also differentiates the loss, in the same worker
#: (:mod:`kerinspect.gradient_rules`).
GRADIENT_RULES = ("vanishing-gradient", "exploding-gradient")
#: Every rule the ``rules`` setting may name.
CHOOSABLE_RULES = (*OPTIONAL_RULES, *ATTENTION_RULES, *MODEL_RULES, *GRADIENT_RULES)

_TABLE = ("tool", "kerinspect", "check")
#: Largest configuration file read (a pyproject.toml is a few KiB).
MAX_CONFIG_BYTES = 4 << 20


@dataclass(frozen=True)
class CheckConfig:
    """The effective settings for checking one model.

    Attributes:
        max_abs: a finite |x| above this fails ``exploding`` (narrow floats: see
            :func:`kerinspect.verdicts.effective_max_abs`).
        max_dead_fraction: a share of dead units at or above this fails ``dead``.
        min_rms_ratio, max_saturated_fraction, min_sample_spread: the limits of
            the optional rules ``vanishing``, ``saturated`` and ``constant``
            (see :func:`kerinspect.verdicts.tensor_verdicts`).
        rules: optional rules to run as well (:data:`CHOOSABLE_RULES`);
            they are off by default.
        min_separability: the ``separability`` rule fails when the last hidden
            layer's separability accuracy is below this.
        ignore: glob patterns on layer paths; a matching layer (and every layer
            inside it, and every call of it) is exempt from all rules.
        tolerance: how far a tensor's mean or std may move from the baseline, in
            baseline standard deviations (see :func:`kerinspect.checks.drift`).
        baseline: path of a ``kerinspect summary --format json`` file to compare with.
        samples, seed, batch_size, dim, shape, input, preprocess, label_column, labels: what
            the model runs on, as for ``kerinspect summary`` (``samples`` None: the
            default).
        custom_objects: path of a Python file that defines or registers the model's
            custom classes, as ``--custom-objects`` (it reaches
            :attr:`kerinspect.spec.LoadOptions.custom_objects`). It enables nothing the
            option alone would not: ``--trust-model`` has no key.
        loss, from_logits, vanishing_gradient, exploding_gradient: the gradient rules
            (:data:`GRADIENT_RULES`): the loss differentiated and the limits, as for
            ``kerinspect gradients`` (``loss`` None: the saved built-in loss).

    The defaults are those of :mod:`kerinspect.spec`.
    """

    max_abs: float = DEFAULT_MAX_ABS
    max_dead_fraction: float = DEFAULT_MAX_DEAD_FRACTION
    min_rms_ratio: float = DEFAULT_MIN_RMS_RATIO
    max_saturated_fraction: float = DEFAULT_MAX_SATURATED_FRACTION
    min_sample_spread: float = DEFAULT_MIN_SAMPLE_SPREAD
    min_separability: float = DEFAULT_MIN_SEPARABILITY
    rules: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    tolerance: float = DEFAULT_TOLERANCE
    baseline: str | None = None
    samples: int | None = None
    seed: int = DEFAULT_SEED
    batch_size: int = DEFAULT_BATCH_SIZE
    dim: int = DEFAULT_DIM
    shape: tuple[str, ...] = ()
    input: str | None = None
    preprocess: str = DEFAULT_PREPROCESS
    label_column: str | None = None
    labels: str | None = None
    custom_objects: str | None = None
    loss: str | None = None
    from_logits: bool = False
    vanishing_gradient: float = DEFAULT_VANISHING_GRADIENT
    exploding_gradient: float = DEFAULT_EXPLODING_GRADIENT

    @property
    def gradient_rules(self) -> tuple[str, ...]:
        """The gradient rules asked for (the run then differentiates the loss too)."""
        return tuple(r for r in GRADIENT_RULES if r in self.rules)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            max_abs=self.max_abs,
            max_dead_fraction=self.max_dead_fraction,
            min_rms_ratio=self.min_rms_ratio,
            max_saturated_fraction=self.max_saturated_fraction,
            min_sample_spread=self.min_sample_spread,
        )

    def run_spec(self, **options: Any) -> RunSpec:
        """The :class:`~kerinspect.spec.RunSpec` these settings describe, with ``options``
        (other RunSpec fields, as given on the command line) on top."""
        return RunSpec(
            samples=self.samples,
            batch_size=self.batch_size,
            seed=self.seed,
            dim=self.dim,
            shapes=self.shape,
            thresholds=self.thresholds,
            preprocess=self.preprocess,
            label_column=self.label_column,
            labels=self.labels,
            loss=self.loss,
            from_logits=self.from_logits,
            vanishing_gradient=self.vanishing_gradient,
            exploding_gradient=self.exploding_gradient,
            gradients=bool(self.gradient_rules),
            **options,
        )

    def replace(self, values: Mapping[str, Any]) -> CheckConfig:
        """A copy with ``values`` (already validated) in place of the current ones."""
        return dataclasses.replace(self, **dict(values))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ignore"] = list(self.ignore)
        d["rules"] = list(self.rules)
        d["shape"] = list(self.shape)
        return d


KEYS = tuple(f.name for f in dataclasses.fields(CheckConfig))
_PATH_KEYS = ("baseline", "input", "custom_objects", "labels")


def _where(source: str, table: str) -> str:
    return f"in {table} of {escape_text(source)}"


def validate(raw: Mapping[str, Any], *, source: str, table: str, base_dir: str | None) -> dict[str, Any]:
    """Check the types and ranges of settings read from a file; resolve relative paths.

    Raises:
        UsageError: an unknown key or a bad value, naming the file and the key.
    """
    out: dict[str, Any] = {}
    where = _where(source, table)
    for key, value in raw.items():
        if key not in KEYS:
            raise UsageError(
                f"Unknown key {escape_text(str(key))!r} {where}.",
                rule="config",
                hint=f"known keys: {', '.join(KEYS)}",
            )

        def bad(expected: str, key: str = key, value: Any = value) -> UsageError:
            return UsageError(
                f"Key {key!r} {where} must be {expected}. Received: {escape_text(repr(value), 80)}",
                rule="config",
            )

        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key == "max_abs":
            if not is_number or not value > 0 or not math.isfinite(value):
                raise bad("a positive number")
            out[key] = float(value)
        elif key in (
            "max_dead_fraction",
            "min_rms_ratio",
            "max_saturated_fraction",
            "min_sample_spread",
            "min_separability",
        ):
            if not is_number or not 0 <= value <= 1:
                raise bad("a number from 0 to 1")
            out[key] = float(value)
        elif key == "rules":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(
                isinstance(v, str) and v in CHOOSABLE_RULES for v in items
            ):
                raise bad("a list of rule names from " + ", ".join(repr(r) for r in CHOOSABLE_RULES))
            out[key] = tuple(dict.fromkeys(items))
        elif key in ("vanishing_gradient", "exploding_gradient"):
            if not is_number or not value > 0 or not math.isfinite(value):
                raise bad("a positive number")
            out[key] = float(value)
        elif key == "loss":
            if not isinstance(value, str) or value not in LOSSES:
                raise bad("a built-in Keras loss name (" + loss_names() + ")")
            out[key] = value
        elif key == "from_logits":
            if not isinstance(value, bool):
                raise bad("true or false")
            out[key] = value
        elif key == "tolerance":
            if not is_number or not value >= 0 or not math.isfinite(value):
                raise bad("a number >= 0")
            out[key] = float(value)
        elif key in ("samples", "batch_size", "dim"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad("an integer >= 1")
            out[key] = value
        elif key == "seed":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad("an integer >= 0")
            out[key] = value
        elif key in ("ignore", "shape"):
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise bad("a string or a list of strings")
            out[key] = tuple(items)
        elif key == "preprocess":
            if value not in PREPROCESS_MODES:
                raise bad("one of " + ", ".join(repr(m) for m in PREPROCESS_MODES))
            out[key] = value
        elif key == "label_column":
            if not isinstance(value, str) or not value:
                raise bad("a column name (string)")
            out[key] = value
        elif key in _PATH_KEYS:
            if not isinstance(value, str) or not value:
                raise bad("a file path (string)")
            out[key] = os.path.join(base_dir, value) if base_dir else value
    return out


@dataclass(frozen=True)
class ModelEntry:
    """A ``[[models]]`` entry: settings for the models whose path matches ``patterns``."""

    patterns: tuple[str, ...]
    settings: dict[str, Any]


@dataclass(frozen=True)
class ConfigFile:
    """Settings read from one TOML file (or none: :meth:`empty`)."""

    path: str | None
    base_dir: str
    settings: dict[str, Any]
    models: tuple[ModelEntry, ...] = ()

    @classmethod
    def empty(cls) -> ConfigFile:
        return cls(path=None, base_dir=os.getcwd(), settings={})

    def entry_for(self, model_path: str) -> ModelEntry | None:
        """The first ``[[models]]`` entry whose glob matches ``model_path``.

        Patterns are matched (case-sensitively, ``*`` also crossing ``/``) against
        the model's path relative to the file's directory, or its absolute path
        when the pattern is absolute.
        """
        absolute = os.path.abspath(model_path)
        rel = Path(os.path.relpath(absolute, self.base_dir)).as_posix()
        for entry in self.models:
            for pattern in entry.patterns:
                target = Path(absolute).as_posix() if os.path.isabs(pattern) else rel
                if fnmatch.fnmatchcase(target, pattern):
                    return entry
        return None

    def settings_for(self, model_path: str, overrides: Mapping[str, Any] | None = None) -> CheckConfig:
        """The effective :class:`CheckConfig` for one model: defaults, then the file's
        top-level keys, then its first matching ``[[models]]`` entry, then
        ``overrides`` (the command-line options that were given)."""
        config = CheckConfig().replace(self.settings)
        entry = self.entry_for(model_path)
        if entry is not None:
            config = config.replace(entry.settings)
        if overrides:
            config = config.replace(overrides)
        return config


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib

    from .safefs import ReadRefused, read_regular

    try:
        return tomllib.loads(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except ReadRefused as e:
        if e.kind == "missing":
            raise UsageError(
                f"Configuration file not found. Received: path={escape_text(path)}", rule="config"
            ) from None
        raise UsageError(
            f"Cannot use the configuration file: {e.reason}. Received: path={escape_text(path)}",
            rule="config",
        ) from None
    except RecursionError:
        raise UsageError(
            f"Configuration file is not valid TOML: its tables or arrays nest too deeply. "
            f"Received: path={escape_text(path)}",
            rule="config",
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(
            f"Configuration file is not valid TOML: {escape_text(str(e), 200)}. "
            f"Received: path={escape_text(path)}",
            rule="config",
        ) from None


def _check_table(data: Mapping[str, Any]) -> Any:
    node: Any = data
    for key in _TABLE:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def parse(data: Mapping[str, Any], *, path: str, table: str) -> ConfigFile:
    """Build a :class:`ConfigFile` from the parsed check table ``data``."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{table} of {escape_text(path)} must be a table.", rule="config")
    base_dir = os.path.dirname(os.path.abspath(path))
    top = {k: v for k, v in data.items() if k != "models"}
    settings = validate(top, source=path, table=table, base_dir=base_dir)
    entries = []
    raw_models = data.get("models", [])
    if not isinstance(raw_models, list):
        raise UsageError(
            f"'models' in {table} of {escape_text(path)} must be an array of tables ([[models]]).",
            rule="config",
        )
    for i, raw in enumerate(raw_models):
        where = f"{table}.models[{i}]"
        if not isinstance(raw, Mapping) or "path" not in raw:
            raise UsageError(f"{where} of {escape_text(path)} needs a 'path' key (a glob).", rule="config")
        patterns = [raw["path"]] if isinstance(raw["path"], str) else raw["path"]
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise UsageError(
                f"'path' in {where} of {escape_text(path)} must be a glob or a list of globs.", rule="config"
            )
        rest = {k: v for k, v in raw.items() if k != "path"}
        entries.append(
            ModelEntry(tuple(patterns), validate(rest, source=path, table=where, base_dir=base_dir))
        )
    return ConfigFile(path=path, base_dir=base_dir, settings=settings, models=tuple(entries))


def load_file(path: str | os.PathLike[str]) -> ConfigFile:
    """Read ``--config FILE``: a ``pyproject.toml`` (its ``[tool.kerinspect.check]``
    table) or any other TOML file whose top level holds the keys.

    Raises:
        UsageError: missing or unreadable file, invalid TOML, unknown keys, bad values.
    """
    p = os.fspath(path)
    data = _read_toml(p)
    if os.path.basename(p) == "pyproject.toml":
        table = _check_table(data)
        if table is None:
            raise UsageError(f"{escape_text(p)} has no [tool.kerinspect.check] table.", rule="config")
        return parse(table, path=p, table="[tool.kerinspect.check]")
    return parse(data, path=p, table="the top level")


def find_pyproject(start: str | os.PathLike[str] | None = None) -> str | None:
    """The nearest ``pyproject.toml`` with a ``[tool.kerinspect.check]`` table, from
    ``start`` (default: the working directory) up to the filesystem root."""
    here = Path(os.path.abspath(start if start is not None else os.getcwd()))
    for d in (here, *here.parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file() and _check_table(_read_toml(str(candidate))) is not None:
            return str(candidate)
    return None


def discover(config: str | None = None, *, use_pyproject: bool = True) -> ConfigFile:
    """The settings file for this run: ``config`` if given, else the nearest
    ``pyproject.toml`` with a check table (unless ``use_pyproject`` is False), else none."""
    if config is not None:
        return load_file(config)
    if use_pyproject:
        found = find_pyproject()
        if found is not None:
            return load_file(found)
    return ConfigFile.empty()
