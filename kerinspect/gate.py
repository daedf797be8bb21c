"""``kerinspect check`` without the command line: models in, a :class:`CheckRun` out.

Expands globs, works out each model's settings (:mod:`kerinspect.config`), inspects
it through :func:`kerinspect.api.inspect_model` (whatever process that runs in),
reads its baseline, and judges the plain-data report with
:func:`kerinspect.checks.run_checks`. A model that cannot be inspected becomes an
``error`` result carrying its exit code, and the other models are still checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import __version__
from .config import CheckConfig, ConfigFile
from .errors import ExitCode, InputFileError, KerinspectError, Namer, escape_text
from .report import SCHEMA_VERSION, CheckResult, CheckRun, ModelError, ModelReport

#: Largest baseline JSON file read (bytes).
MAX_BASELINE_BYTES = 256 << 20
#: Longest error message kept in a result (renderers cut further for one line).
MAX_ERROR_CHARS = 2000

_GLOB_CHARS = "*?["


#: Most directory entries one glob may visit: a pattern over a huge tree ends, with an error.
MAX_GLOB_ENTRIES = 1_000_000


def glob_files(pattern: str) -> list[str]:
    """Files matching ``pattern`` as :func:`glob.glob` with ``recursive=True`` finds them
    (``**`` spans directories; names starting with ``.`` match only a pattern that says
    so), except that ``**`` never descends into a symlinked directory: a link back up
    (``models/a -> .``) cannot make a loop nor list one model many times."""
    import fnmatch
    import re

    drive_root = os.sep if pattern.startswith(os.sep) else ""
    parts = [p for p in pattern.split(os.sep) if p]
    first_magic = next((i for i, p in enumerate(parts) if any(c in p for c in _GLOB_CHARS)), len(parts))
    base = drive_root + os.sep.join(parts[:first_magic])
    rest = parts[first_magic:]
    budget = [MAX_GLOB_ENTRIES]
    found: list[str] = []

    def entries(d: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(d or ".") as it:
                listed = list(it)
        except OSError:
            return []
        budget[0] -= len(listed)
        if budget[0] < 0:
            raise InputFileError(
                f"The pattern visits more than {MAX_GLOB_ENTRIES:,} directory entries. "
                f"Received: pattern={escape_text(pattern)}",
                rule="glob-too-large",
            )
        return listed

    def visible(name: str, seg: str) -> bool:
        return not name.startswith(".") or seg.startswith(".")

    def walk(d: str, segs: list[str]) -> None:
        if not segs:
            if os.path.isfile(d):
                found.append(d)
            return
        seg, more = segs[0], segs[1:]
        if seg == "**":
            walk(d, more)  # zero directories
            for e in entries(d):
                if not visible(e.name, ""):
                    continue
                if e.is_dir(follow_symlinks=False):
                    walk(os.path.join(d, e.name), segs)
                elif not more:  # a trailing ** matches the files themselves
                    walk(os.path.join(d, e.name), [])
            return
        if not any(c in seg for c in _GLOB_CHARS):
            walk(os.path.join(d, seg), more)
            return
        rx = re.compile(fnmatch.translate(seg))
        for e in entries(d):
            if rx.match(e.name) and visible(e.name, seg):
                walk(os.path.join(d, e.name), more)

    walk(base, rest)
    return list(dict.fromkeys(found))


def expand(models: Sequence[str]) -> list[tuple[str, ModelError | None]]:
    """Model arguments to distinct paths, in order; each glob's matches sorted.

    An argument that names an existing path is taken literally even if it contains
    glob characters. A glob that matches nothing, and a path that does not exist, are
    kept: the first becomes a ``no-match`` error here, the second fails (exit 3) when
    inspected. Neither is ever silently dropped.
    """
    out: list[tuple[str, ModelError | None]] = []
    seen: set[str] = set()

    def add(path: str, error: ModelError | None = None) -> None:
        key = os.path.realpath(path)  # one model reached through two links runs once
        if key not in seen:
            seen.add(key)
            out.append((path, error))

    for arg in models:
        if os.path.lexists(arg) or not any(c in arg for c in _GLOB_CHARS):
            add(arg)
            continue
        matches = sorted(glob_files(arg))
        if not matches:
            add(
                arg,
                ModelError(
                    int(ExitCode.NO_INPUT),
                    "no-match",
                    f"No file matches the pattern. Received: pattern={arg}",
                ),
            )
        for m in matches:
            add(m)
    return out


def load_baseline(path: str) -> ModelReport:
    """Read a report saved with ``kerinspect summary --format json``.

    Raises:
        InputFileError: the file is missing, too big, or not such a report (exit 3).
    """
    from .safefs import ReadRefused, read_regular

    shown = escape_text(path)
    try:
        data = json.loads(read_regular(path, MAX_BASELINE_BYTES))
    except ReadRefused as e:
        if e.kind == "missing":
            raise InputFileError(
                f"Baseline file not found. Received: path={shown}", rule="baseline-not-found"
            ) from None
        raise InputFileError(
            f"Cannot use the baseline file: {e.reason}. Received: path={shown}",
            rule="baseline-invalid" if e.kind == "too-large" else "baseline-unreadable",
        ) from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise InputFileError(
            f"Baseline file is not JSON: {escape_text(str(e), 120)}. Received: path={shown}",
            rule="baseline-invalid",
        ) from None
    hint = "make it with `kerinspect summary MODEL --format json > baseline.json`"
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise InputFileError(
            f"Baseline file is not a kerinspect summary report (schema_version {SCHEMA_VERSION}). "
            f"Received: path={shown}",
            rule="baseline-invalid",
            hint=hint,
        )
    try:
        return ModelReport.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputFileError(
            f"Baseline report is incomplete ({type(e).__name__}: {escape_text(str(e), 80)}). "
            f"Received: path={shown}",
            rule="baseline-invalid",
            hint=hint,
        ) from None


def _error_text(e: KerinspectError, name_parameter: Namer | None = None) -> str:
    text = e.render(name_parameter)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def error_result(path: str, error: ModelError, config: CheckConfig | None = None) -> CheckResult:
    settings = {} if config is None else config.to_dict()
    return CheckResult(path=path, status="error", settings=settings, error=error)


def check_model(
    path: str,
    config: CheckConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    reraise: bool = False,
    load: Any = None,
    run_options: Mapping[str, Any] | None = None,
    name_parameter: Namer | None = None,
) -> CheckResult:
    """Inspect and judge one model file; never raises for a bad model.

    Args:
        path: the model file.
        config: its effective settings.
        progress: passed to :func:`kerinspect.api.inspect_model`.
        load: :class:`kerinspect.spec.LoadOptions` (isolation limits, trust); its
            ``custom_objects``, when set, wins over ``config.custom_objects``.
        reraise: let unexpected exceptions (kerinspect bugs) propagate instead of
            recording them as an INTERNAL error (``--debug``).
        run_options: fields of :class:`kerinspect.spec.RunSpec` that the settings
            file does not know, set on top of ``config`` (new run options need no
            configuration key to reach the model).
        name_parameter: how an error's message shows a parameter it references
            (default: by name, ``max_params``; the CLI passes its flags, ``--max-params``).
    """
    from . import api
    from .checks import run_checks
    from .spec import LoadOptions

    load = load if load is not None else LoadOptions()
    if load.custom_objects is None and config.custom_objects is not None:
        load = load.replace(custom_objects=config.custom_objects)
    try:
        baseline = load_baseline(config.baseline) if config.baseline else None
        spec = config.run_spec(**(run_options or {}))
        gradients = None
        if spec.gradients:  # a gradient rule: the loss differentiated in the same worker
            report, gradients = api.inspect_with_gradients(
                path, config.input, spec=spec, progress=progress, load=load
            )
        else:
            report = api.inspect_model(path, config.input, spec=spec, progress=progress, load=load)
        return run_checks(report, config, baseline=baseline, path=path, gradients=gradients)
    except KerinspectError as e:
        return error_result(
            path, ModelError(int(e.exit_code), e.rule, _error_text(e, name_parameter)), config
        )
    except Exception as e:  # noqa: BLE001 - one model's bug must not hide the others' verdicts
        if reraise:
            raise
        message = (
            f"unexpected {type(e).__name__}: {str(e)[:MAX_ERROR_CHARS]}. This is a kerinspect bug; "
            "run with --debug and report the traceback."
        )
        return error_result(path, ModelError(int(ExitCode.INTERNAL), "internal", message), config)


def check_models(
    models: Sequence[str],
    config_file: ConfigFile | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    reraise: bool = False,
    load: Any = None,
    run_options: Mapping[str, Any] | None = None,
    name_parameter: Namer | None = None,
) -> CheckRun:
    """Check every model named (paths or globs) and collect the verdicts.

    Args:
        models: paths or glob patterns (``**`` recurses).
        config_file: settings from a file (default: none).
        overrides: settings given as options; they win over the file.
        progress: per-batch progress callback.
        reraise: see :func:`check_model`.
        load: see :func:`check_model`.
        run_options: see :func:`check_model`.
        name_parameter: see :func:`check_model`.
    """
    config_file = config_file or ConfigFile.empty()
    results = []
    for path, error in expand(models):
        if error is not None:
            results.append(error_result(path, error))
            continue
        config = config_file.settings_for(path, overrides)
        results.append(
            check_model(
                path,
                config,
                progress=progress,
                reraise=reraise,
                load=load,
                run_options=run_options,
                name_parameter=name_parameter,
            )
        )
    return CheckRun(tuple(results), config_file=config_file.path, kerinspect_version=__version__)
