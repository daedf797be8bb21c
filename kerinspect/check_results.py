"""The results of ``kerinspect check``: per model, each rule's verdict, counts and
failures, where NaN/Inf starts, or why the model could not be checked.

Plain data (frozen dataclasses with generated JSON, :mod:`kerinspect.records`), written
by :func:`kerinspect.checks.run_checks` and :mod:`kerinspect.gate`, rendered by
:mod:`kerinspect.render` (text, JSON) and :mod:`kerinspect._ci` (JUnit, GitHub). In a
notebook a result prints as a few lines, indexes by rule (``result["nan"]``) or model
(``run["model.keras"]``) and turns into a table (``to_pandas()``, ``_repr_html_``).
Re-exported by :mod:`kerinspect.report`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import NotFoundError, worst_exit_code
from .provenance import InputRecord, ModelInfo
from .records import Record, meta
from .tables import data_frame, html_table, repr_text

#: Version of the ``kerinspect check --format json`` layout.
CHECK_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RuleCounts(Record):
    """How many tensors (or layers, or weights: see :attr:`RuleResult.unit`) a rule
    failed, passed, or could not check. ``ignored`` (exempted by ``--ignore``) are
    included in ``not_checked``: a skipped tensor never counts as a pass."""

    failed: int = 0
    passed: int = 0
    not_checked: int = 0
    ignored: int = 0

    @property
    def total(self) -> int:
        return self.failed + self.passed + self.not_checked


@dataclass(frozen=True)
class Failure(Record):
    """One tensor (or weight, or layer) that failed a rule.

    ``layer`` and ``tensor`` come from the model file and are untrusted text;
    ``message`` is plain English built from numbers; ``values`` holds those numbers.
    """

    rule: str
    layer: str
    tensor: str | None
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    #: the rule is its RuleResult's: left out (check results are written, never read back)
    JSON_KEYS = ("layer", "tensor", "message", "values")


@dataclass(frozen=True)
class RuleResult(Record):
    """One rule over one model: its verdict, coverage counts and failures.

    ``verdict`` is ``"failed"`` when anything failed, ``"passed"`` when something
    passed and nothing failed, ``"not_checked"`` when the rule applied to nothing.
    ``failures`` are in the order the problem spreads, so the first names where it
    starts: graph order, except for the gradient rules (``vanishing-gradient``,
    ``exploding-gradient``), from the model's output backwards as gradients flow.
    """

    rule: str
    target: str  # "activations", "weights", "model" (coverage), "baseline"
    unit: str  # what the counts count: "tensor", "weight", "layer" or "head" (attention rules)
    verdict: str
    counts: RuleCounts
    threshold: float | None = None
    failures: tuple[Failure, ...] = ()
    #: why a rule was not checked, when that needs saying (``separability`` without labels),
    #: or what it judged (the gradient rules: the loss differentiated and the labels)
    note: str | None = field(default=None, metadata=meta(omit_none=True))

    @property
    def failed(self) -> bool:
        return self.verdict == "failed"


@dataclass(frozen=True)
class FirstFault(Record):
    """The first layer call, in graph order, whose output holds NaN or Inf.

    Every layer before it produced finite values, so this is where the fault starts
    (for a nested model, the innermost such layer). ``weights`` lists that layer's
    weights that hold NaN or Inf themselves, a likely cause.
    """

    layer: str
    class_name: str
    tensor: str
    nan_count: int
    inf_count: int
    count: int
    weights: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelError(Record):
    """Why a model could not be checked (it then counts as an error, never a pass)."""

    exit_code: int
    rule: str
    message: str


@dataclass(frozen=True)
class CheckResult(Record):
    """The gate's verdict on one model (see :func:`kerinspect.checks.run_checks`).

    Attributes:
        path: the model as named on the command line (or its name, in memory).
        status: ``"passed"``, ``"failed"`` (a rule failed) or ``"error"`` (the model
            could not be inspected; see ``error``).
        model: what was inspected; None on error.
        rules: one result per rule, in a fixed order.
        first_fault: where NaN/Inf starts, if anywhere.
        settings: the effective settings (thresholds, ignore patterns, seed, ...).
        samples: the number of samples the model ran on.
        inputs: what was fed.
        ignored_layers: layer paths exempted by ``ignore`` patterns.
        warnings: things worth knowing that do not fail the gate.
        error: set when ``status`` is ``"error"``.
    """

    path: str
    status: str
    model: ModelInfo | None = None
    rules: tuple[RuleResult, ...] = ()
    first_fault: FirstFault | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    inputs: tuple[InputRecord, ...] = ()
    ignored_layers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    error: ModelError | None = None

    JSON_KEYS = ("path", "status", "exit_code", "model", "settings", "samples", "inputs", "synthetic_inputs",
                 "first_fault", "rules", "ignored_layers", "warnings", "error")  # fmt: skip

    @property
    def synthetic_inputs(self) -> bool:
        """The model ran on synthetic inputs (no ``input`` given): the gate judged noise
        drawn from what the model knows, not data."""
        return any(i.source == "synthetic" for i in self.inputs)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return 1 if self.status == "failed" else 0

    @property
    def failed_rules(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.rules if r.failed)

    def rule(self, name: str) -> RuleResult:
        """The result of rule ``name`` (KeyError if it was not run: see :meth:`__getitem__`)."""
        return self[name]

    # -- in a notebook ---------------------------------------------------------------

    def __repr__(self) -> str:
        """The verdict, then each failed rule with its counts and first failure."""
        passed = sum(1 for r in self.rules if r.verdict == "passed")
        head = f"<CheckResult {repr_text(self.path, 200)!r}: {self.status} (exit {self.exit_code})"
        if self.error is None:
            head += f", {len(self.failed_rules)} rules failed, {passed} passed"
        return "\n".join([head, *_result_lines(self, "  ")]) + ">"

    def __getitem__(self, rule: str) -> RuleResult:
        """``result["nan"]``: one rule's result.

        Raises:
            KeyError: the rule was not run (a :class:`~kerinspect.errors.NotFoundError`
                naming the rules that ran).
        """
        for r in self.rules:
            if r.rule == rule:
                return r
        raise NotFoundError.of(
            "rule", rule, [r.rule for r in self.rules], f"the check of {repr_text(self.path)!r}"
        )

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per rule: verdict, counts, threshold and the
        first failing layer. Raises ``ImportError`` without pandas."""
        return _frame([self])

    def _repr_html_(self) -> str:
        return _html([self], f"{self.path}: {self.status}")


@dataclass(frozen=True)
class CheckTotals(Record):
    """How many models a :class:`CheckRun` checked, and with which status."""

    models: int
    passed: int
    failed: int
    errors: int


@dataclass(frozen=True)
class CheckRun(Record):
    """Every model of one ``kerinspect check`` run."""

    results: tuple[CheckResult, ...] = field(metadata=meta(key="models"))
    config_file: str | None = None
    kerinspect_version: str = ""

    schema_version = CHECK_SCHEMA_VERSION
    JSON_KEYS = (
        "schema_version",
        "kerinspect_version",
        "passed",
        "exit_code",
        "config_file",
        "totals",
        "models",
    )

    @property
    def passed(self) -> bool:
        """Every model passed."""
        return self.exit_code == 0

    @property
    def totals(self) -> CheckTotals:
        return CheckTotals(len(self.results), self.count("passed"), self.count("failed"), self.count("error"))

    @property
    def exit_code(self) -> int:
        """By :data:`kerinspect.errors.EXIT_PRECEDENCE`: errors outrank failed checks."""
        return worst_exit_code(r.exit_code for r in self.results)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    # -- in a notebook ---------------------------------------------------------------

    def _summary(self) -> str:
        t = self.totals
        return f"{t.models} models: {t.passed} passed, {t.failed} failed, {t.errors} errors"

    def __repr__(self) -> str:
        """The totals, then one line per model (failed and errors first) and its failed rules."""
        order = {"failed": 0, "error": 1, "passed": 2}
        lines = [f"<CheckRun {self._summary()} (exit {self.exit_code})"]
        for r in sorted(self.results, key=lambda r: order.get(r.status, 3)):
            lines.append(f"  {r.status:<6}  {repr_text(r.path, 200)}")
            lines += _result_lines(r, "            ")
        return "\n".join(lines) + ">"

    def __getitem__(self, path: str) -> CheckResult:
        """``run["model.keras"]``: one model's result, by the path it was checked as
        (a :class:`~kerinspect.errors.NotFoundError`, a ``KeyError``, when none was)."""
        for r in self.results:
            if r.path == path:
                return r
        raise NotFoundError.of("model", path, [r.path for r in self.results], "this check run")

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per (model, rule). Raises ``ImportError``
        without pandas."""
        return _frame(self.results)

    def _repr_html_(self) -> str:
        return _html(self.results, self._summary())


# -- in a notebook -------------------------------------------------------------------


def _rule_counts(rule: RuleResult) -> str:
    c = rule.counts
    unit = rule.unit + ("s" if c.total != 1 else "")
    text = (
        f"{c.failed} of {c.total} {unit} failed" if rule.failed else f"{c.passed} of {c.total} {unit} passed"
    )
    return text + (f", {c.ignored} ignored" if c.ignored else "")


def _result_lines(result: CheckResult, indent: str) -> list[str]:
    """A result's failed rules (counts, first failure) and where NaN/Inf starts; or its error."""
    if result.error is not None:
        return [f"{indent}error[{repr_text(result.error.rule)}]: {repr_text(result.error.message, 300)}"]
    lines = []
    for rule in result.failed_rules:
        first = rule.failures[0] if rule.failures else None
        at = ""
        if first is not None:
            at = f"; first: {repr_text(first.layer, 80)}" + (
                f":{repr_text(first.tensor, 40)}" if first.tensor else ""
            )
        lines.append(f"{indent}{repr_text(rule.rule)}: {_rule_counts(rule)}{at}")
    if result.first_fault is not None:
        f = result.first_fault
        lines.append(f"{indent}NaN/Inf starts at {repr_text(f.layer, 80)!r} ({repr_text(f.class_name)})")
    return lines


def _rows(results: Iterable[CheckResult]) -> list[dict[str, Any]]:
    """One plain dict per (model, rule); a model that could not be checked gets one
    row with rule None and its error."""
    rows: list[dict[str, Any]] = []
    for res in results:
        if res.error is not None:
            rows.append({"model": res.path, "status": res.status, "rule": None, "verdict": "error",
                         "error": res.error.message})  # fmt: skip
            continue
        for rule in res.rules:
            first = rule.failures[0] if rule.failures else None
            rows.append(
                {
                    "model": res.path,
                    "status": res.status,
                    "rule": rule.rule,
                    "target": rule.target,
                    "unit": rule.unit,
                    "verdict": rule.verdict,
                    "failed": rule.counts.failed,
                    "passed": rule.counts.passed,
                    "not_checked": rule.counts.not_checked,
                    "ignored": rule.counts.ignored,
                    "threshold": rule.threshold,
                    "first_failure": None if first is None else first.layer,
                    "error": None,
                }
            )
    return rows


def _frame(results: Iterable[CheckResult]) -> Any:
    """``to_pandas()``: one row per (model, rule); an error row has no counts."""
    return data_frame(_rows(results), counts=("failed", "passed", "not_checked", "ignored"))


_VERDICT = {"failed": "FAIL", "passed": "pass", "not_checked": "skip"}
_COLUMNS = ("Model", "Rule", "Verdict", "Failed", "Passed", "Not checked", "First failure")


def _html(results: Sequence[CheckResult], caption: str) -> str:
    """``_repr_html_()``: one row per (model, rule)."""
    rows = []
    for r in _rows(results):
        if r["rule"] is None:
            rows.append([r["model"], "-", "error", "", "", "", r["error"]])
            continue
        counts = [str(r["failed"]), str(r["passed"]), str(r["not_checked"])]
        rows.append(
            [
                r["model"],
                r["rule"],
                _VERDICT.get(r["verdict"], r["verdict"]),
                *counts,
                r["first_failure"] or "",
            ]
        )
    return html_table(_COLUMNS, rows, numeric=("Failed", "Passed", "Not checked"), caption=caption)
