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
import threading
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


def _load_for(config: CheckConfig, load: Any) -> Any:
    """``load`` (:class:`kerinspect.spec.LoadOptions`) whose ``custom_objects``, when
    unset, is the configuration's."""
    from .spec import LoadOptions

    load = load if load is not None else LoadOptions()
    if load.custom_objects is None and config.custom_objects is not None:
        load = load.replace(custom_objects=config.custom_objects)
    return load


def _as_result(
    path: str, config: CheckConfig, e: Exception, reraise: bool, name_parameter: Namer | None
) -> CheckResult:
    """The ``error`` result of a model that could not be inspected."""
    if isinstance(e, KerinspectError):
        return error_result(
            path, ModelError(int(e.exit_code), e.rule, _error_text(e, name_parameter)), config
        )
    if reraise:
        raise e
    message = (
        f"unexpected {type(e).__name__}: {str(e)[:MAX_ERROR_CHARS]}. This is a kerinspect bug; "
        "run with --debug and report the traceback."
    )
    return error_result(path, ModelError(int(ExitCode.INTERNAL), "internal", message), config)


def check_model(
    path: str,
    config: CheckConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    reraise: bool = False,
    load: Any = None,
    run_options: Mapping[str, Any] | None = None,
    name_parameter: Namer | None = None,
    baseline: ModelReport | None = None,
    beam: tuple[str | None, Sequence[str]] | None = None,
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
        baseline: ``config.baseline`` already read (default: read here).
        beam: ``(runner, pipeline options)``: the report computed on Apache Beam over
            the input's TFRecord shards (:func:`kerinspect.beam.pipeline.inspect_on_beam`).
    """
    from . import api
    from .checks import run_checks

    try:
        if baseline is None and config.baseline:
            baseline = load_baseline(config.baseline)
        spec = config.run_spec(**(run_options or {}))
        load = _load_for(config, load)
        gradients = None
        if beam is not None:
            from .beam.pipeline import inspect_on_beam

            report = inspect_on_beam(path, config.input, beam[0], beam[1], spec=spec, load=load)
        elif spec.gradients:  # a gradient rule: the loss differentiated in the same worker
            report, gradients = api.inspect_with_gradients(
                path, config.input, spec=spec, progress=progress, load=load
            )
        else:
            report = api.inspect_model(path, config.input, spec=spec, progress=progress, load=load)
        return run_checks(report, config, baseline=baseline, path=path, gradients=gradients)
    except Exception as e:  # noqa: BLE001 - one model's bug must not hide the others' verdicts
        return _as_result(path, config, e, reraise, name_parameter)


def _before_worker(
    path: str,
    config: CheckConfig,
    load: Any,
    run_options: Mapping[str, Any] | None,
    reraise: bool,
    name_parameter: Namer | None,
) -> CheckResult | ModelReport | None:
    """What :func:`check_model` would refuse before the model's worker starts (see
    :func:`kerinspect.api.check_before_worker`), as its ``error`` result; else the
    baseline read (or None)."""
    from . import api

    try:
        baseline = load_baseline(config.baseline) if config.baseline else None
        api.check_before_worker(
            path, config.input, spec=config.run_spec(**(run_options or {})), load=_load_for(config, load)
        )
        return baseline
    except Exception as e:  # noqa: BLE001 - as check_model
        return _as_result(path, config, e, reraise, name_parameter)


def default_jobs(models: int) -> int:
    """``--jobs`` when not given: one per core this process may run on, at most one per
    model (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, models))


#: ``0`` turns the fork server off (:func:`kerinspect.sandbox.runner.forking`): each
#: model then starts its own worker, for ``make bench`` to measure what the server buys.
FORK_ENV = "KERINSPECT_CHECK_FORK"


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
    jobs: int | None = 1,
    on_early_error: Callable[[CheckResult], None] | None = None,
    on_model_done: Callable[[int, int], None] | None = None,
    beam: tuple[str | None, Sequence[str]] | None = None,
) -> CheckRun:
    """Check every model named (paths or globs) and collect the verdicts.

    First, for every model and before any worker starts, what needs no worker is
    checked (:func:`kerinspect.api.check_before_worker`, the baseline): a model that
    fails there gets its ``error`` result and no worker. Then the others run, up to
    ``jobs`` at once, each in its own worker; the results keep the order of ``models``.

    Args:
        models: paths or glob patterns (``**`` recurses).
        config_file: settings from a file (default: none).
        overrides: settings given as options; they win over the file.
        progress: per-batch progress callback (only while one model runs at a time).
        reraise: see :func:`check_model`.
        load: see :func:`check_model`.
        run_options: see :func:`check_model`.
        name_parameter: see :func:`check_model`.
        jobs: models checked at once (None: :func:`default_jobs`).
        on_early_error: called with each ``error`` result found before the first
            worker starts, when workers follow (to say it at once).
        on_model_done: called as ``(models_done, models_to_run)`` after each model
            that ran in a worker, when several run at once (else ``progress`` is called).
        beam: see :func:`check_model`; models then run one at a time (each pipeline
            has its own workers), no worker started ahead.
    """
    from .sandbox.runner import forking, kill_all

    config_file = config_file or ConfigFile.empty()
    results: list[CheckResult | None] = []
    todo: list[tuple[int, str, CheckConfig, ModelReport | None]] = []
    for path, error in expand(models):
        if error is not None:
            results.append(error_result(path, error))
            continue
        config = config_file.settings_for(path, overrides)
        early = _before_worker(path, config, load, run_options, reraise, name_parameter)
        if isinstance(early, CheckResult):
            results.append(early)
            continue
        todo.append((len(results), path, config, early))
        results.append(None)
    if todo and on_early_error is not None:
        for r in results:
            if r is not None and r.status == "error":
                on_early_error(r)
    jobs = default_jobs(len(todo)) if jobs is None else max(1, min(jobs, len(todo) or 1))
    if beam is not None:
        jobs = 1
    done = [0]
    counting = threading.Lock()

    def one(item: tuple[int, str, CheckConfig, ModelReport | None]) -> None:
        index, path, config, baseline = item
        results[index] = check_model(
            path,
            config,
            progress=progress if jobs == 1 else None,
            reraise=reraise,
            load=load,
            run_options=run_options,
            name_parameter=name_parameter,
            baseline=baseline,
            beam=beam,
        )
        with counting:
            done[0] += 1
            if on_model_done is not None and jobs > 1:
                on_model_done(done[0], len(todo))

    with forking(len(todo), beam is None and os.environ.get(FORK_ENV) != "0"):
        if on_model_done is not None and jobs > 1:
            on_model_done(0, len(todo))  # the bar shows from the start
        if jobs == 1:
            for item in todo:
                one(item)
        else:
            _in_parallel(one, todo, jobs, kill_all)
    return CheckRun(
        tuple(r for r in results if r is not None),
        config_file=config_file.path,
        kerinspect_version=__version__,
    )


def _in_parallel(
    one: Callable[[Any], None], items: Sequence[Any], jobs: int, kill_all: Callable[[], None]
) -> None:
    """``one(item)`` for every item, ``jobs`` at a time in threads (each waits on its own
    worker process). Interrupted (Ctrl-C, SIGTERM), or when ``one`` raises (``--debug``),
    the jobs not started are dropped and every worker is killed before this returns:
    none outlives the run."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="kerinspect-check")
    futures = [pool.submit(one, item) for item in items]
    try:
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in finished:
            f.result()  # raise the first error (a kerinspect bug under --debug)
    except BaseException:
        for f in futures:
            f.cancel()
        kill_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
