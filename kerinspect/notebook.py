"""Reports in a notebook: concise reprs, lookup by path, tables for pandas and HTML.

The methods of :class:`~kerinspect.report.ModelReport`, :class:`~kerinspect.report.CheckResult`,
:class:`~kerinspect.report.CheckRun` and :class:`~kerinspect.diff.DiffReport` that a notebook uses (``repr(report)``,
``report["block/att"]``, ``report.flagged()``, ``report.to_pandas()``,
``_repr_html_``) are thin wrappers over the functions here. Pure: stdlib only;
pandas is imported by ``to_pandas`` alone, when called. Every name shown comes from
a model file and is untrusted text: it is escaped for a terminal
(:func:`~kerinspect.errors.escape_text`) in reprs and with :func:`html.escape` in HTML.
"""

from __future__ import annotations

import dataclasses
import difflib
import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import UsageError, escape_text
from .numfmt import fmt_cosine, fmt_count, fmt_error, fmt_float, fmt_fraction, fmt_mean, fmt_shape, fmt_sqnr

if TYPE_CHECKING:
    from .diff import DiffReport, OutputDiff, PairDiff, Sums
    from .report import CheckResult, CheckRun, LayerRecord, ModelInfo, ModelReport, RuleResult, TensorRecord

#: Flagged tensors (or failed rules) listed by a repr before "... and N more".
REPR_LISTED = 8


class NotFoundError(UsageError, KeyError):
    """A path (or rule, or model) that a report does not hold; both a
    :class:`~kerinspect.errors.UsageError` (exit 2) and a :class:`KeyError`."""

    default_rule = "not-found"

    def __str__(self) -> str:  # KeyError's would quote the whole message, and drop the hint
        return self.one_line()


def _t(text: object, limit: int = 120) -> str:
    return escape_text(str(text), limit)


def _not_found(what: str, key: str, known: Sequence[str], where: str) -> NotFoundError:
    close = difflib.get_close_matches(key, known, n=5, cutoff=0.6)
    close += [k for k in known if key and key in k and k not in close]  # a bare name: paths holding it
    close = close[:5]
    hint = ("did you mean " + ", ".join(repr(_t(c)) for c in close) + "?") if close else None
    return NotFoundError(f"No {what} {_t(key)!r} in {where}. Received: key={_t(key)!r}", hint=hint)


# -- ModelReport --------------------------------------------------------------------


def tensor_key(layer: LayerRecord, out: TensorRecord) -> str:
    """The key of one output, as :func:`kerinspect.activations` and dumps name it: the
    layer path for a single-output call, ``path:output`` otherwise."""
    return layer.path if len(layer.outputs) == 1 else f"{layer.path}:{out.name}"


def lookup(report: ModelReport, key: str) -> LayerRecord | TensorRecord:
    """``report[key]``: the layer call at path ``key`` (``"block/att"``, ``"shared@1"``),
    or one output of it as ``"path:output"`` (``"block/att:attention_scores"``).

    Raises:
        NotFoundError: (a ``KeyError``) no such path; the message lists close matches.
    """
    if not isinstance(key, str):
        raise TypeError(f"report keys are layer paths (str), got {type(key).__name__}")
    for layer in report.layers:
        if layer.path == key:
            return layer
    if ":" in key:
        path, name = key.rsplit(":", 1)
        for layer in report.layers:
            if layer.path == path:
                for out in layer.outputs:
                    if out.name == name:
                        return out
    known = [r.path for r in report.layers] + [
        tensor_key(r, o) for r in report.layers if len(r.outputs) > 1 for o in r.outputs
    ]
    raise _not_found("layer call", key, known, f"model {_t(report.model.name)!r}")


def contains(report: ModelReport, key: object) -> bool:
    """``key in report``: ``report[key]`` would succeed."""
    if not isinstance(key, str):
        return False
    try:
        lookup(report, key)
    except KeyError:
        return False
    return True


def flagged(report: ModelReport) -> tuple[LayerRecord, ...]:
    """The layer calls with at least one flagged output, in graph order."""
    return tuple(r for r in report.layers if any(o.flags for o in r.outputs))


def _flagged_lines(report: ModelReport) -> list[str]:
    pairs = [(tensor_key(r, o), o.flags) for r in report.layers for o in r.outputs if o.flags]
    if not pairs:
        return []
    width = min(max(len(_t(k, 60)) for k, _ in pairs[:REPR_LISTED]), 60)
    lines = ["  flagged:"]
    lines += [f"    {_t(k, 60):<{width}}  {_t(','.join(f))}" for k, f in pairs[:REPR_LISTED]]
    if len(pairs) > REPR_LISTED:
        lines.append(f"    ... and {len(pairs) - REPR_LISTED} more (report.flagged())")
    return lines


def report_repr(report: ModelReport) -> str:
    """A few lines: the model, the counts, and every flagged tensor (the first few)."""
    m = report.model
    where = f" from {_t(m.path, 200)}" if m.path else ""
    t = report.totals
    lines = [
        f"<ModelReport {_t(m.name)!r} ({_t(m.class_name)}){where}",
        f"  {fmt_count(report.samples)} samples · {fmt_count(t.layer_calls)} layer calls · "
        f"{fmt_count(t.params)} parameters · {fmt_count(t.tensors)} tensors, {fmt_count(t.flagged_tensors)} flagged",
        *_flagged_lines(report),
    ]
    return "\n".join(lines) + ">"


def layer_repr(layer: LayerRecord) -> str:
    """One line per output: shape, dtype, mean, std and flags."""
    head = f"<LayerRecord {_t(layer.path, 200)!r} ({_t(layer.class_name)}"
    head += f", call {layer.call}, depth {layer.depth}, {fmt_count(layer.params)} params)"
    if not layer.called:
        return head + " not called>"
    lines = [head]
    for o in layer.outputs:
        st = o.stats
        figures = f"mean {fmt_mean(st)} std {fmt_float(st.std)}" if st is not None else "no statistics"
        flags = f" [{_t(','.join(o.flags))}]" if o.flags else ""
        lines.append(f"  {_t(o.name)}: {fmt_shape(o.shape)} {_t(o.dtype)} {figures}{flags}")
    return "\n".join(lines) + ">"


#: ``to_pandas`` columns before the statistics (which follow in TensorStats order).
_FRAME_HEAD = ("path", "output", "layer", "class_name", "call", "depth", "parent", "container", "params")


def report_rows(report: ModelReport) -> list[dict[str, Any]]:
    """One plain dict per output tensor, in graph order (what ``to_pandas`` holds)."""
    from .report import TensorStats

    stat_names = [f.name for f in dataclasses.fields(TensorStats)]
    rows = []
    for r in report.layers:
        for o in r.outputs:
            row: dict[str, Any] = {
                "key": tensor_key(r, o),
                "path": r.path,
                "output": o.name,
                "layer": r.name,
                "class_name": r.class_name,
                "call": r.call,
                "depth": r.depth,
                "parent": r.parent,
                "container": r.container,
                "params": r.params,
                "shape": tuple(o.shape),
                "dtype": o.dtype,
            }
            for name in stat_names:
                row[name] = None if o.stats is None else getattr(o.stats, name)
            row["flags"] = ",".join(o.flags)
            row["model_output"] = o.model_output
            rows.append(row)
    return rows


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "to_pandas() needs pandas, which is not installed; install it with: pip install pandas"
        ) from None
    return pandas


def report_frame(report: ModelReport) -> Any:
    """``report.to_pandas()``: a DataFrame, one row per output tensor, indexed by key."""
    pd = _pandas()
    return pd.DataFrame(report_rows(report)).set_index("key") if report.layers else pd.DataFrame()


def html_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[str] = (),
    indents: Sequence[int] | None = None,
    caption: str | None = None,
) -> str:
    """A compact, self-contained HTML table: every cell and the caption escaped
    with :func:`html.escape` (cells are untrusted text); ``numeric`` columns right
    aligned; ``indents`` (one per row) indent the first cell by nesting depth."""
    num = set(numeric)
    right = "text-align:right"
    out = ['<table class="kerinspect" style="border-collapse:collapse;font-size:12px">']
    if caption:
        out.append(f'<caption style="text-align:left">{html.escape(caption)}</caption>')
    out.append(
        "<thead><tr>"
        + "".join(
            f'<th style="{right if c in num else "text-align:left"}">{html.escape(c)}</th>' for c in columns
        )
        + "</tr></thead><tbody>"
    )
    for i, row in enumerate(rows):
        cells = []
        for j, (c, v) in enumerate(zip(columns, row)):
            style = [right] if c in num else ["text-align:left"]
            if j == 0 and indents is not None and indents[i]:
                style.append(f"padding-left:{indents[i] * 1.2:.1f}em")
            cells.append(f'<td style="{";".join(style)}">{html.escape(v)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


_HTML_COLUMNS = ("Layer", "Class", "Output shape", "Params", "Mean", "Std", "Min", "Max", "Zeros", "NaN",
                 "Inf", "Dead", "Flags")  # fmt: skip
_HTML_NUMERIC = ("Params", "Mean", "Std", "Min", "Max", "Zeros", "NaN", "Inf", "Dead")


def report_html(report: ModelReport) -> str:
    """``report._repr_html_()``: the summary line, then one row per output tensor."""
    rows: list[list[str]] = []
    indents: list[int] = []
    for r in report.layers:
        params = "" if r.class_name == "InputLayer" else (
            ("shared" if r.params else "0") if r.call > 0 else fmt_count(r.params)
        )  # fmt: skip
        if not r.outputs:
            rows.append([r.path, r.class_name, "-" if r.called else "(not called)", params] + [""] * 9)
            indents.append(r.depth)
        for k, o in enumerate(r.outputs):
            st = o.stats
            label = r.path if len(r.outputs) == 1 else f"{r.path}:{o.name}"
            rows.append(
                [
                    label,
                    r.class_name if k == 0 else "",
                    fmt_shape(o.shape) + ("" if o.dtype == "float32" else f" {o.dtype}"),
                    params if k == 0 else "",
                    *(
                        [
                            fmt_mean(st),
                            fmt_float(st.std),
                            fmt_float(st.min),
                            fmt_float(st.max),
                            fmt_fraction(st.zero_fraction),
                            fmt_count(st.nan_count),
                            fmt_count(st.inf_count),
                            fmt_fraction(st.dead_fraction),
                        ]
                        if st is not None
                        else ["-"] * 8
                    ),  # fmt: skip
                    ",".join(o.flags),
                ]
            )
            indents.append(r.depth)
    m = report.model
    t = report.totals
    caption = (
        f"Model {m.name!r} ({m.class_name})" + (f" from {m.path}" if m.path else "")
        + f" · {report.samples:,} samples · {t.layer_calls:,} layer calls · {t.params:,} parameters"
        + f" · {t.tensors:,} tensors, {t.flagged_tensors:,} flagged"
    )  # fmt: skip
    return html_table(_HTML_COLUMNS, rows, numeric=_HTML_NUMERIC, indents=indents, caption=caption)


# -- check results ------------------------------------------------------------------

_VERDICT = {"failed": "FAIL", "passed": "pass", "not_checked": "skip"}


def _rule_counts(rule: RuleResult) -> str:
    c = rule.counts
    unit = rule.unit + ("s" if c.total != 1 else "")
    text = (
        f"{c.failed} of {c.total} {unit} failed" if rule.failed else f"{c.passed} of {c.total} {unit} passed"
    )
    return text + (f", {c.ignored} ignored" if c.ignored else "")


def check_lookup(result: CheckResult, key: str) -> RuleResult:
    """``result[rule]``: one rule's result (``"nan"``, ``"dead"``...)."""
    for r in result.rules:
        if r.rule == key:
            return r
    raise _not_found("rule", key, [r.rule for r in result.rules], f"the check of {_t(result.path)!r}")


def run_lookup(run: CheckRun, key: str) -> CheckResult:
    """``run[path]``: one model's result, by the path it was checked as."""
    for r in run.results:
        if r.path == key:
            return r
    raise _not_found("model", key, [r.path for r in run.results], "this check run")


def _result_lines(result: CheckResult, indent: str) -> list[str]:
    if result.error is not None:
        return [f"{indent}error[{_t(result.error.rule)}]: {_t(result.error.message, 300)}"]
    lines = []
    for rule in result.rules:
        if rule.failed:
            first = rule.failures[0] if rule.failures else None
            at = ""
            if first is not None:
                at = f"; first: {_t(first.layer, 80)}" + (f":{_t(first.tensor, 40)}" if first.tensor else "")
            lines.append(f"{indent}{_t(rule.rule)}: {_rule_counts(rule)}{at}")
    if result.first_fault is not None:
        f = result.first_fault
        lines.append(f"{indent}NaN/Inf starts at {_t(f.layer, 80)!r} ({_t(f.class_name)})")
    return lines


def result_repr(result: CheckResult) -> str:
    """The verdict, then each failed rule with its counts and first failure."""
    passed = sum(1 for r in result.rules if r.verdict == "passed")
    head = f"<CheckResult {_t(result.path, 200)!r}: {result.status} (exit {result.exit_code})"
    if result.error is None:
        head += f", {len(result.failed_rules)} rules failed, {passed} passed"
    return "\n".join([head, *_result_lines(result, "  ")]) + ">"


def run_repr(run: CheckRun) -> str:
    """The totals, then one line per model (failed and errors first) and its failed rules."""
    head = (
        f"<CheckRun {len(run.results)} models: {run.count('passed')} passed, {run.count('failed')} failed, "
        f"{run.count('error')} errors (exit {run.exit_code})"
    )
    order = {"failed": 0, "error": 1, "passed": 2}
    lines = [head]
    for r in sorted(run.results, key=lambda r: order.get(r.status, 3)):
        lines.append(f"  {r.status:<6}  {_t(r.path, 200)}")
        lines += _result_lines(r, "            ")
    return "\n".join(lines) + ">"


def check_rows(results: Iterable[CheckResult]) -> list[dict[str, Any]]:
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


def check_frame(results: Iterable[CheckResult]) -> Any:
    """``to_pandas()`` of check results: one row per (model, rule)."""
    frame = _pandas().DataFrame(check_rows(results))
    for column in ("failed", "passed", "not_checked", "ignored"):
        if column in frame:  # an error row has no counts: nullable integers, not floats
            frame[column] = frame[column].astype("Int64")
    return frame


_CHECK_COLUMNS = ("Model", "Rule", "Verdict", "Failed", "Passed", "Not checked", "First failure")


def check_html(results: Sequence[CheckResult], caption: str) -> str:
    """``_repr_html_()`` of check results: one row per (model, rule)."""
    rows = []
    for r in check_rows(results):
        if r["rule"] is None:
            rows.append([r["model"], "-", "error", "", "", "", r["error"]])
            continue
        rows.append(
            [
                r["model"],
                r["rule"],
                _VERDICT.get(r["verdict"], r["verdict"]),
                str(r["failed"]),
                str(r["passed"]),
                str(r["not_checked"]),
                r["first_failure"] or "",
            ]
        )
    return html_table(_CHECK_COLUMNS, rows, numeric=("Failed", "Passed", "Not checked"), caption=caption)


# -- diff results -------------------------------------------------------------------


def pair_key(pair: PairDiff, out: OutputDiff) -> str:
    """The key of one paired output: A's path for a single-output call, ``path:output`` otherwise."""
    return pair.path_a if len(pair.outputs) == 1 else f"{pair.path_a}:{out.name}"


def diff_lookup(report: DiffReport, key: str) -> PairDiff | OutputDiff:
    """``result[key]``: the pair whose path in A (or, failing that, in B) is ``key``, or
    one output of it as ``"path:output"``.

    Raises:
        NotFoundError: (a ``KeyError``) no such pair; the message lists close matches.
    """
    if not isinstance(key, str):
        raise TypeError(f"diff result keys are layer paths (str), got {type(key).__name__}")
    for attr in ("path_a", "path_b"):
        for pair in report.pairs:
            if getattr(pair, attr) == key:
                return pair
    if ":" in key:
        path, name = key.rsplit(":", 1)
        for pair in report.pairs:
            if path in (pair.path_a, pair.path_b):
                for out in pair.outputs:
                    if out.name == name:
                        return out
    known = [p.path_a for p in report.pairs]
    known += [p.path_b for p in report.pairs if p.path_b != p.path_a]
    known += [pair_key(p, o) for p in report.pairs if len(p.outputs) > 1 for o in p.outputs]
    where = f"the pairs of {_t(report.model_a.name)!r} and {_t(report.model_b.name)!r}"
    error = _not_found("pair", key, known, where)
    for side, unpaired in (("A", report.unpaired_a), ("B", report.unpaired_b)):
        if any(u.path == key for u in unpaired):
            error.hint = (
                f"{_t(key)!r} is a layer call of model {side} with no counterpart (unpaired_{side.lower()})"
            )
    raise error


def diff_contains(report: DiffReport, key: object) -> bool:
    """``key in result``: ``result[key]`` would succeed."""
    if not isinstance(key, str):
        return False
    try:
        diff_lookup(report, key)
    except KeyError:
        return False
    return True


def diverged(report: DiffReport, *, local: bool = False) -> tuple[PairDiff, ...]:
    """The pairs whose largest normalised error exceeds the tolerance, in A's graph
    order (containers included); ``local``: the layers' own errors (``local=True`` runs)."""
    if local and not report.local:
        raise UsageError(
            "diverged(local=True) needs the layers' own errors, which this diff did not compute. "
            "Received: local=False in the diff; run diff_models(..., local=True)"
        )
    out = []
    for pair in report.pairs:
        e = pair.local_error if local else pair.error
        if e is not None and e > report.tolerance:
            out.append(pair)
    return tuple(out)


def _side(info: ModelInfo, label: str) -> str:
    where = f" from {_t(info.path, 200)}" if info.path else ""
    return f"{label} {_t(info.name)!r} ({_t(info.class_name)}){where}"


def _verdict(report: DiffReport) -> str:
    return "outputs agree" if report.agree else "outputs differ"


def diff_repr(report: DiffReport) -> str:
    """The two models, the pairing, the first divergence, the verdict and the pairs above
    the tolerance (the first few)."""
    lines = [
        f"<DiffReport {_side(report.model_a, 'A')} vs {_side(report.model_b, 'B')}",
        f"  {fmt_count(report.samples)} samples · {_t(report.pairing_summary(), 200)} · "
        f"tolerance {report.tolerance:g}" + (" · local errors" if report.local else ""),
    ]
    for div in (report.divergence, report.local_divergence):
        if div is not None:
            lines.append(f"  {_t(div.sentence(report.tolerance), 400)}")
    verdict = f"  verdict: {_verdict(report)} (exit {report.exit_code})"
    lines.append(verdict + "".join(f"; {_t(f, 300)}" for f in report.failures[:3]))
    above = diverged(report)
    if above:
        width = min(max(len(_t(p.path_a, 60)) for p in above[:REPR_LISTED]), 60)
        lines.append(f"  diverged ({len(above)} pairs above tolerance):")
        for p in above[:REPR_LISTED]:
            local = f" (local {fmt_error(p.local_error)})" if report.local else ""
            b = "" if p.path_b == p.path_a else f"  B: {_t(p.path_b, 60)}"
            lines.append(f"    {_t(p.path_a, 60):<{width}}  {fmt_error(p.error)}{local}{b}")
        if len(above) > REPR_LISTED:
            lines.append(f"    ... and {len(above) - REPR_LISTED} more (result.diverged())")
    return "\n".join(lines) + ">"


#: The metric columns of ``to_pandas``; with ``local``, each again prefixed ``local_``.
DIFF_METRICS = ("cosine", "normalised_error", "sqnr_db", "max_abs_diff")


def _metrics(sums: Sums | None, prefix: str) -> dict[str, Any]:
    if sums is None:
        return {prefix + m: None for m in DIFF_METRICS}
    return {
        prefix + "cosine": sums.cosine,
        prefix + "normalised_error": sums.normalised_error,
        prefix + "sqnr_db": sums.sqnr_db,
        prefix + "max_abs_diff": sums.max_abs,
    }


def diff_rows(report: DiffReport) -> list[dict[str, Any]]:
    """One plain dict per paired output, in A's graph order (what ``to_pandas`` holds):
    both paths and classes, how they were paired, both shapes and dtypes, the metrics of
    the inherited error, with ``local`` those of the layer's own error (``local_...``),
    both sides' mean and std, ``diverged`` (normalised error above the tolerance) and ``note``."""
    rows = []
    for p in report.pairs:
        for o in p.outputs:
            row: dict[str, Any] = {
                "key": pair_key(p, o),
                "path_a": p.path_a,
                "path_b": p.path_b,
                "output": o.name,
                "class_a": p.class_a,
                "class_b": p.class_b,
                "paired_by": p.paired_by,
                "container": p.container,
                "policy_a": p.policy_a,
                "policy_b": p.policy_b,
                "shape_a": tuple(o.shape_a),
                "shape_b": tuple(o.shape_b),
                "dtype_a": o.dtype_a,
                "dtype_b": o.dtype_b,
                "model_output": o.model_output,
                **_metrics(o.error, ""),
                "count": None if o.error is None else o.error.count,
                "mismatched": None if o.error is None else o.error.mismatched,
            }
            if report.local:
                row.update(_metrics(o.local, "local_"))
            for side, st in (("a", o.stats_a), ("b", o.stats_b)):
                row[f"mean_{side}"] = None if st is None else st.mean
                row[f"std_{side}"] = None if st is None else st.std
            row["diverged"] = o.error is not None and o.error.normalised_error > report.tolerance
            row["note"] = o.note
            rows.append(row)
    return rows


def diff_frame(report: DiffReport) -> Any:
    """``result.to_pandas()``: a DataFrame, one row per paired output, indexed by key."""
    pd = _pandas()
    rows = diff_rows(report)
    return pd.DataFrame(rows).set_index("key") if rows else pd.DataFrame()


def diff_html(report: DiffReport) -> str:
    """``result._repr_html_()``: the verdict as caption, then one row per paired output."""
    columns = ["Layer", "B", "Class", "Paired by", "Output shape", "Cosine", "Norm. error", "SQNR dB",
               "Max |a-b|"]  # fmt: skip
    if report.local:
        columns.append("Local error")
    columns.append("Note")
    numeric = ("Cosine", "Norm. error", "SQNR dB", "Max |a-b|", "Local error")
    rows: list[list[str]] = []
    indents: list[int] = []
    for p in report.pairs:
        cls = p.class_a if p.class_a == p.class_b else f"{p.class_a}/{p.class_b}"
        for k, o in enumerate(p.outputs):
            shape = (
                fmt_shape(o.shape_a)
                if o.shape_a == o.shape_b
                else f"{fmt_shape(o.shape_a)} / {fmt_shape(o.shape_b)}"
            )
            e = o.error
            note = ["diverged"] if e is not None and e.normalised_error > report.tolerance else []
            note += [o.note] if o.note else []
            row = [
                pair_key(p, o),
                "" if p.path_b == p.path_a else p.path_b,
                cls if k == 0 else "",
                p.paired_by if k == 0 else "",
                shape,
                *(
                    [
                        fmt_cosine(e.cosine),
                        fmt_error(e.normalised_error),
                        fmt_sqnr(e.sqnr_db),
                        fmt_float(e.max_abs),
                    ]
                    if e is not None
                    else ["-"] * 4
                ),
            ]
            if report.local:
                row.append("-" if o.local is None else fmt_error(o.local.normalised_error))
            row.append("; ".join(note))
            rows.append(row)
            indents.append(p.path_a.count("/"))
    a, b = report.model_a, report.model_b
    caption = (
        f"Model A {a.name!r} vs B {b.name!r} · {report.samples:,} samples · {report.pairing_summary()}"
        f" · tolerance {report.tolerance:g} · {_verdict(report)} (exit {report.exit_code})"
    )
    if report.divergence is not None:
        caption += f" · {report.divergence.sentence(report.tolerance)}"
    return html_table(columns, rows, numeric=numeric, indents=indents, caption=caption)
