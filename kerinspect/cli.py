"""The ``kerinspect`` command line: parse options, call :mod:`kerinspect.api`, render, exit.

Heavy imports (TensorFlow, Keras, the engine) happen inside commands, so that
``kerinspect --help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console

from . import __version__
from . import spec as sp
from .checks import OPTIONAL_RULES
from .errors import ExitCode, KerinspectError, UsageError, escape_text

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_state = {"debug": False}


def _debug_requested() -> bool:
    return _state["debug"] or os.environ.get("KERINSPECT_DEBUG") == "1"


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _state["debug"] = True


def fail(code: int, rule: str, message: str) -> NoReturn:
    """Print ``kerinspect: error[rule]: message`` on stderr and exit with ``code``."""
    click.echo(f"kerinspect: error[{escape_text(rule, 60)}]: {message}", err=True)
    sys.exit(int(code))


class KerinspectGroup(click.Group):
    """Click group whose errors are one line each, with kerinspect's exit codes."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        _state["debug"] = False
        with _terminate_as_interrupt(), _warnings_as_lines():
            return self._main(*args, **kwargs)

    def _main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.exceptions.NoArgsIsHelpError as e:  # pragma: no cover - click >= 8.2
            click.echo(e.ctx.get_help(), err=True)
            sys.exit(ExitCode.USAGE)
        except click.ClickException as e:
            where = ""
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                where = f" (see '{ctx.command_path} --help')"
            fail(ExitCode.USAGE, "usage", escape_text(e.format_message()) + where)
        except click.Abort:
            click.echo("kerinspect: interrupted", err=True)
            sys.exit(130)
        except KerinspectError as e:
            if _debug_requested():
                traceback.print_exc()
                worker_tb = getattr(e, "worker_traceback", None)
                if worker_tb:
                    click.echo("--- in the isolated worker:\n" + worker_tb, err=True)
            fail(e.exit_code, e.rule, _with_flag(self, e).one_line())
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if _debug_requested():
                traceback.print_exc()
            fail(
                ExitCode.INTERNAL,
                "internal",
                f"unexpected {type(e).__name__}: {escape_text(str(e))}. This is a kerinspect bug; "
                "run with --debug and report the traceback.",
            )
        if isinstance(rv, int) and rv:
            sys.exit(rv)
        return rv


def _with_flag(group: click.Group, e: KerinspectError) -> KerinspectError:
    """The library names parameters (``batch_size must be ...``); say the flag instead."""
    import re

    parameter = getattr(e, "parameter", None)
    if parameter is None and isinstance(e, UsageError):  # from the worker: the name is in the text
        lead = re.match(r"([a-z_]+)[ =]", e.message)
        parameter = lead.group(1) if lead else None
    if not parameter or e.message[len(parameter) : len(parameter) + 1] not in (" ", "="):
        return e
    for command in group.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.name == parameter and param.opts[0].startswith("-"):
                flag = max(param.opts, key=len)
                sep = " " if e.message[len(parameter)] == "=" else ""
                e.message = flag + sep + e.message[len(parameter) + (1 if sep else 0) :]
                return e
    return e


class SpecOption(click.Option):
    """An option whose default lives in :mod:`kerinspect.spec`.

    Click itself sees ``default=None``, so a value that is not None was given on the
    command line (``check`` relies on it: options override the configuration file);
    the help still shows the real default, ``spec_default`` (or its text ``shown``).
    """

    def __init__(self, *args: Any, spec_default: Any, shown: str | None = None, **kwargs: Any):
        kwargs["default"] = None
        super().__init__(*args, **kwargs)
        self.spec_default = spec_default
        self.shown = str(spec_default) if shown is None else shown

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        extra["default"] = self.shown
        return extra


def _given(value: Any) -> bool:
    """Whether an option was given: Click passes None (or ``()`` for a repeatable
    option) when it was not, since no option here has a Click default."""
    return value is not None and value != ()


def run_spec(options: dict[str, Any]) -> sp.RunSpec:
    """The :class:`~kerinspect.spec.RunSpec` of a command's run options, by name (the
    options are named after the spec's fields; ``max_abs`` and friends after those of
    its ``thresholds``). An option not given keeps the spec's default."""
    given = {k: v for k, v in options.items() if _given(v)}
    limits = {k: given.pop(k) for k in sp.field_names(sp.Thresholds) if k in given}
    return sp.RunSpec(thresholds=sp.Thresholds(**limits), **given)


@contextlib.contextmanager
def _warnings_as_lines() -> Any:
    """kerinspect's own warnings (:class:`~kerinspect.errors.PartialIsolationWarning`)
    as one ``kerinspect: warning:`` line on stderr, once per run, not Python's
    two-line ``file:line: Category: text`` form."""
    import warnings

    from .errors import PartialIsolationWarning

    shown = warnings.showwarning

    def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        if issubclass(category, PartialIsolationWarning):
            click.echo(f"kerinspect: warning: {message}", err=True)
        else:
            shown(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("once", PartialIsolationWarning)
        warnings.showwarning = show
        yield


class _terminate_as_interrupt:
    """SIGTERM and SIGHUP (a cancelled CI job, a closed terminal) raise
    KeyboardInterrupt while a command runs, so the worker's process group is killed
    and partial output removed, exactly as for Ctrl-C."""

    SIGNALS = ("SIGTERM", "SIGHUP")

    def __enter__(self) -> None:
        import signal

        def raise_interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        self.previous: dict[int, Any] = {}
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self.previous[sig] = signal.signal(sig, raise_interrupt)
            except ValueError:  # not the main thread (embedded use): leave signals alone
                pass

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def debug_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help="Show the full traceback on errors.",
    )(f)


def input_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that runs the model."""
    opts = [
        click.option(
            "--input",
            "-i",
            "input_file",
            metavar="FILE",
            help="Feed samples from FILE: .npy for a one-input model, .npz keyed by "
            "input name; axis 0 is the batch. Default: synthetic samples.",
        ),
        click.option(
            "--samples",
            "-n",
            type=click.IntRange(min=1),
            default=None,
            help=f"Number of samples (synthetic default: {sp.DEFAULT_SAMPLES}; with --input: the first N).",
        ),
        click.option(
            "--batch-size",
            "-b",
            cls=SpecOption,
            spec_default=sp.DEFAULT_BATCH_SIZE,
            type=click.IntRange(min=1),
            help="Samples per forward pass; statistics are merged across batches.",
        ),
        click.option(
            "--seed",
            cls=SpecOption,
            spec_default=sp.DEFAULT_SEED,
            type=click.IntRange(min=0),
            help="Seed of the synthetic samples.",
        ),
        click.option(
            "--dim",
            cls=SpecOption,
            spec_default=sp.DEFAULT_DIM,
            type=click.IntRange(min=1),
            help="Size of every dynamic (None) axis of synthetic inputs.",
        ),
        click.option(
            "--shape",
            "shapes",
            multiple=True,
            metavar="[NAME=]D1,D2,...",
            help="Per-sample shape of a synthetic input, batch axis excluded "
            "(repeatable). Overrides --dim for that input.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


class ByteSize(click.ParamType):
    """``2GiB``, ``500M``, ``2GB`` or a plain byte count (see :func:`kerinspect.dump.parse_size`)."""

    name = "SIZE"

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from .dump import parse_size

        try:
            return parse_size(value, minimum=self.minimum)
        except KerinspectError as e:
            self.fail(e.message, param, ctx)


def worker_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Limits of the isolated worker process that opens the model file."""
    opts = [
        click.option(
            "--timeout",
            cls=SpecOption,
            spec_default=sp.DEFAULT_TIMEOUT,
            shown=f"{sp.DEFAULT_TIMEOUT:g}",
            type=click.FloatRange(min=0),
            help="Seconds the isolated worker may take to load and run the model (0: no limit).",
        ),
        click.option(
            "--max-memory",
            type=ByteSize(minimum=0),
            default=None,
            metavar="SIZE",
            help="Memory limit of the worker, e.g. 8G (default: half the RAM; 0: no limit).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def load_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """How model files are opened: isolation limits, size limit, explicit trust."""
    opts = [
        click.option(
            "--max-params",
            cls=SpecOption,
            spec_default=sp.DEFAULT_MAX_PARAMS,
            type=click.IntRange(min=1),
            help="Refuse a model whose config declares more parameters (checked before anything is built).",
        ),
        click.option(
            "--custom-objects",
            metavar="FILE.py",
            default=None,
            help="Python file that defines or registers the model's custom classes "
            "(your own code; imported in the worker before loading).",
        ),
        click.option(
            "--trust-model",
            is_flag=True,
            help="The file is yours and trusted: allow code in it (Lambda layers, functions). "
            "Still runs in the isolated worker.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return worker_options(f)


def make_load_options(
    timeout: float | None,
    max_memory: int | None,
    custom_objects: str | None = None,
    trust_model: bool = False,
    max_params: int | None = None,
) -> sp.LoadOptions:
    """LoadOptions from the CLI flags (None: not given, the spec's default); warns
    loudly on stderr when trust is given."""
    if trust_model:
        click.echo(
            "kerinspect: warning: --trust-model: code stored in the model file may run "
            "(safe_mode is off); it stays inside the isolated worker.",
            err=True,
        )
    return sp.LoadOptions.from_options(
        timeout=timeout,
        max_memory=max_memory,
        custom_objects=custom_objects,
        trust_model=trust_model,
        max_params=max_params,
    )


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--format table|json|markdown`` and ``--width``: see :func:`emit`."""
    f = click.option(
        "--width",
        type=click.IntRange(min=40),
        default=None,
        help="Table width in characters (default: the terminal's).",
    )(f)
    return click.option(
        "--format",
        "-f",
        "fmt",
        type=click.Choice(["table", "json", "markdown"]),
        default="table",
        show_default=True,
        help="Output format (stdout).",
    )(f)


def emit(
    report: Any,
    fmt: str,
    width: int | None,
    table: Callable[..., None],
    markdown: Callable[[Any], str],
) -> None:
    """Print a report on stdout as JSON, Markdown, or a table. A terminal gets a table
    that fits its width; a pipe or file gets every column."""
    if fmt == "json":
        from .render import render_json

        click.echo(render_json(report))
    elif fmt == "markdown":
        click.echo(markdown(report), nl=False)
    else:
        console = stdout_console(width)
        table(report, console, fit=width is not None or console.is_terminal)


def threshold_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option(
            "--max-abs",
            cls=SpecOption,
            spec_default=sp.DEFAULT_MAX_ABS,
            type=click.FloatRange(min=0, min_open=True),
            help="Flag 'exploding' when a finite |value| exceeds this "
            "(float16: at most a tenth of its range).",
        ),
        click.option(
            "--max-dead-fraction",
            cls=SpecOption,
            spec_default=sp.DEFAULT_MAX_DEAD_FRACTION,
            type=click.FloatRange(0, 1),
            help="Flag 'dead' when this share of units is zero for every sample.",
        ),
        click.option(
            "--min-rms-ratio",
            cls=SpecOption,
            spec_default=sp.DEFAULT_MIN_RMS_RATIO,
            shown=f"{sp.DEFAULT_MIN_RMS_RATIO:g}",
            type=click.FloatRange(0, 1),
            help="Flag 'vanishing' when an output's RMS is below this times the RMS of its layer's float input.",
        ),
        click.option(
            "--max-saturated-fraction",
            cls=SpecOption,
            spec_default=sp.DEFAULT_MAX_SATURATED_FRACTION,
            type=click.FloatRange(0, 1),
            help="Flag 'saturated' when this share of a tanh/sigmoid/hard_sigmoid layer's values sit "
            "at its bounds (softmax: of its distributions are one-hot).",
        ),
        click.option(
            "--min-sample-spread",
            cls=SpecOption,
            spec_default=sp.DEFAULT_MIN_SAMPLE_SPREAD,
            shown=f"{sp.DEFAULT_MIN_SAMPLE_SPREAD:g}",
            type=click.FloatRange(0, 1),
            help="Flag 'constant' when an output's spread across samples is at most this times its RMS "
            "while its layer's input varies.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def depth_option(verb: str, own: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--depth N`` (RunSpec ``depth``): how many nesting levels of layer calls a command
    looks at; ``verb`` says what it does with them, ``own`` whose layers level 1 is."""
    level1 = f" (1: {own} own layers only)" if own else ""
    return click.option(
        "--depth",
        "-d",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help=f"{verb} layer calls nested at most N levels deep{level1}. Default: every call at every depth.",
    )


def _engine_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--engine`` (RunSpec ``engine``): how the batches run, said as ``help_text``."""
    return click.option(
        "--engine",
        cls=SpecOption,
        spec_default=sp.DEFAULT_ENGINE,
        type=click.Choice(sp.ENGINES),
        help=help_text,
    )


#: ``--engine`` of the commands that keep statistics (summary, check, attention).
engine_option = _engine_option(
    "How batches run: 'compiled' traces the instrumented model once and runs each batch "
    "as one graph, statistics computed on the device; 'eager' runs it layer by layer, "
    "statistics in numpy. 'auto' compiles on a GPU from 2 batches; on a CPU it runs the "
    f"first batch eagerly and compiles the rest from {sp.AUTO_COMPILE_MIN_BATCHES} batches "
    f"when no output is above {sp.AUTO_COMPILE_MAX_TENSOR_BYTES >> 20} MiB. "
    "A model that cannot be traced, or a batch with NaN/Inf, runs eagerly (with a note)."
)
#: ``--engine`` of ``dump``: how the batches after the first run.
dump_engine_option = _engine_option(
    "How batches run: the first always layer by layer (it chooses the tensors); "
    "'compiled' runs the rest as one traced graph that returns only the chosen tensors, "
    "'eager' layer by layer. 'auto' compiles them on a GPU; on a CPU from "
    f"{sp.AUTO_COMPILE_MIN_BATCHES} batches, when the chosen tensors of a batch hold at most "
    f"{sp.AUTO_COMPILE_MAX_FETCH_BYTES >> 20} MiB. Under 'auto' a model that cannot be "
    "traced runs eagerly (with a note); 'compiled' then fails (not-compiled)."
)


def attention_threshold_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Limits of the per-head attention flags."""
    opts = [
        click.option(
            "--uniform-attention-entropy",
            cls=SpecOption,
            spec_default=sp.DEFAULT_UNIFORM_ATTENTION_ENTROPY,
            type=click.FloatRange(0, 1),
            help="Flag a head 'uniform-attention' when every query's normalised entropy is at least this.",
        ),
        click.option(
            "--collapsed-attention-weight",
            cls=SpecOption,
            spec_default=sp.DEFAULT_COLLAPSED_ATTENTION_WEIGHT,
            type=click.FloatRange(0, 1),
            help="Flag a head 'collapsed-attention' when every query puts at least this weight on one key.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


#: Width given to a non-terminal stdout, so that piped tables keep every column.
PIPE_WIDTH = 1000


def stdout_console(width: int | None) -> Console:
    console = Console(width=width, highlight=False)
    if width is None and not console.is_terminal:
        console = Console(width=PIPE_WIDTH, highlight=False)
    return console


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


@click.group(name="kerinspect", cls=KerinspectGroup, context_settings=CONTEXT)
@debug_option
@click.version_option(__version__, "--version", "-V", prog_name="kerinspect", message="%(prog)s %(version)s")
def cli() -> None:
    """See inside a saved Keras model: every layer call's output shape and the health of
    its values (zeros and dead units, NaN, Inf, exploding magnitudes).

    \b
    Exit codes: 0 ok, 1 checks failed, 2 usage error, 3 missing or unsupported file,
    4 malformed model, 5 refused by security policy, 6 inference error,
    7 output error, 8 worker crashed or timed out, 70 internal error.
    """


@cli.command()
@click.argument("model", metavar="MODEL")
@input_options
@depth_option("Show", "the model's")
@engine_option
@threshold_options
@attention_threshold_options
@load_options
@output_options
@debug_option
def summary(
    model: str,
    input_file: str | None,
    timeout: float | None,
    max_memory: int | None,
    max_params: int | None,
    custom_objects: str | None,
    trust_model: bool,
    fmt: str,
    width: int | None,
    **run_options: Any,
) -> None:
    """Run MODEL (.keras or .h5) on sample inputs and show every layer call's output.

    One row per output tensor of every layer call, in call order: shared layers
    once per call (name@1), nested models, custom layers and subclassed models
    followed by the layers called inside them (outer/inner, indented), every output
    of multi-output layers (lstm:state_h), and the attention probabilities of every
    attention layer (att:attention_scores).

    \b
    Examples:
      kerinspect summary model.keras
      kerinspect summary model.keras --samples 256 --batch-size 64 --format json
      kerinspect summary model.h5 --input batch.npz
    """
    from .api import inspect_model

    spec = run_spec(run_options)
    load = make_load_options(timeout, max_memory, custom_objects, trust_model, max_params)
    with _ProgressBar(stderr_console()) as progress:
        report = inspect_model(model, input_file, spec=spec, progress=progress, load=load)
    from .render import render_markdown, render_table

    emit(report, fmt, width, render_table, render_markdown)


@cli.command()
@click.argument("model", metavar="MODEL")
@input_options
@engine_option
@attention_threshold_options
@load_options
@output_options
@debug_option
def attention(
    model: str,
    input_file: str | None,
    timeout: float | None,
    max_memory: int | None,
    max_params: int | None,
    custom_objects: str | None,
    trust_model: bool,
    fmt: str,
    width: int | None,
    **run_options: Any,
) -> None:
    """Run MODEL on sample inputs and show the health of every attention head.

    One table per attention layer call (MultiHeadAttention and its subclasses,
    GroupedQueryAttention), at any depth, one row per head: mean normalised entropy
    (1: attends to everything equally), its minimum over queries, mean largest
    weight (1: one key takes all), weight on the first key (sink), weight on the
    query's own position (diagonal), and the largest row-sum error. Masked keys
    and fully masked query rows are left out. Flags: uniform-attention,
    collapsed-attention. The probabilities are those the model computes, even
    where a fused kernel never materialises them (recomputed and verified).

    \b
    Examples:
      kerinspect attention model.keras
      kerinspect attention model.keras --input batch.npz --format json
    """
    from .api import inspect_model

    spec = run_spec(run_options)
    load = make_load_options(timeout, max_memory, custom_objects, trust_model, max_params)
    with _ProgressBar(stderr_console()) as progress:
        report = inspect_model(model, input_file, spec=spec, progress=progress, load=load)
    from .render import attention_json, render_attention_markdown, render_attention_table

    if fmt == "json":
        from .render import render_json

        click.echo(render_json(attention_json(report)))
        return
    emit(report, fmt, width, render_attention_table, render_attention_markdown)


@cli.command()
@click.argument("model", metavar="MODEL")
@output_options
@click.option(
    "--max-abs",
    cls=SpecOption,
    spec_default=sp.DEFAULT_MAX_ABS,
    type=click.FloatRange(min=0, min_open=True),
    help="Flag 'exploding' when a finite |weight| exceeds this (float16: at most a tenth of its range).",
)
@worker_options
@debug_option
def weights(
    model: str,
    fmt: str,
    width: int | None,
    max_abs: float | None,
    timeout: float | None,
    max_memory: int | None,
) -> None:
    """Read every weight of MODEL (.keras or .h5) and show its statistics and health
    (NaN, Inf, exploding magnitudes), without running or deserializing the model.

    The weights are read with h5py alone: no TensorFlow, no model code, and custom
    layer classes need not be importable. One row per weight, grouped by layer
    (outer/inner for layers of nested models). Exits 0 even when weights are flagged.

    \b
    Examples:
      kerinspect weights model.keras
      kerinspect weights legacy.h5 --format json
    """
    from .api import inspect_weights

    thresholds = sp.Thresholds.from_options(max_abs=max_abs)
    report = inspect_weights(model, thresholds, load=make_load_options(timeout, max_memory))
    from .render import render_weights_markdown, render_weights_table

    emit(report, fmt, width, render_weights_table, render_weights_markdown)


#: check options that map onto :class:`kerinspect.config.CheckConfig` fields (the
#: configuration file's keys). Any other run option goes straight to the RunSpec.
_CHECK_SETTINGS = {
    "input_file": "input",
    "samples": "samples",
    "batch_size": "batch_size",
    "seed": "seed",
    "dim": "dim",
    "shapes": "shape",
    "max_abs": "max_abs",
    "max_dead_fraction": "max_dead_fraction",
    "min_rms_ratio": "min_rms_ratio",
    "max_saturated_fraction": "max_saturated_fraction",
    "min_sample_spread": "min_sample_spread",
    "rules": "rules",
    "ignore": "ignore",
    "baseline": "baseline",
    "tolerance": "tolerance",
}


@cli.command()
@click.argument("models", metavar="MODEL...", nargs=-1, required=True)
@input_options
@engine_option
@threshold_options
@click.option(
    "--rule",
    "rules",
    multiple=True,
    type=click.Choice(OPTIONAL_RULES),
    help="Also run this optional rule (repeatable): vanishing, saturated, constant. "
    "Replaces the configuration's 'rules'.",
)
@click.option(
    "--ignore",
    multiple=True,
    metavar="PATTERN",
    help="Exempt layers whose path matches this glob (repeatable). A match also exempts the "
    "layers inside a nested model and every call of a shared layer.",
)
@click.option(
    "--baseline",
    metavar="FILE",
    help="Compare with a report saved by 'kerinspect summary --format json': fail when the "
    "structure changed or a tensor's mean/std drifted beyond --tolerance.",
)
@click.option(
    "--tolerance",
    cls=SpecOption,
    spec_default=sp.DEFAULT_TOLERANCE,
    type=click.FloatRange(min=0),
    help="Largest allowed move of a tensor's mean or std from the baseline, in baseline standard deviations.",
)
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="Read settings from this TOML file instead of the nearest pyproject.toml [tool.kerinspect.check].",
)
@click.option("--no-config", is_flag=True, help="Ignore pyproject.toml; use options and defaults only.")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format (stdout).",
)
@click.option("--junit", "junit_path", metavar="FILE", help="Also write the results as JUnit XML to FILE.")
@load_options
@debug_option
def check(
    models: tuple[str, ...],
    config_path: str | None,
    no_config: bool,
    fmt: str,
    junit_path: str | None,
    timeout: float | None,
    max_memory: int | None,
    max_params: int | None,
    custom_objects: str | None,
    trust_model: bool,
    **options: Any,
) -> int:
    """Gate for CI: run each MODEL and fail when an activation holds NaN or Inf,
    explodes, or has too many dead units, or a weight holds NaN or Inf.

    MODEL may be a glob ('models/**/*.keras'). Settings come from the nearest
    pyproject.toml [tool.kerinspect.check] (or --config FILE); options override it.
    The report names the first layer where NaN/Inf appears. With GITHUB_ACTIONS=true,
    failures are also printed as ::error annotations (on stderr).

    \b
    Exit codes: 0 every rule passed for every model, 1 a rule failed; when a model
    cannot be inspected, the code of that error (3, 4, 5, 6, 8, 70), which outranks 1;
    2 for a bad option or configuration file; 7 when --junit cannot be written.

    \b
    Examples:
      kerinspect check model.keras
      kerinspect check 'models/*.keras' --ignore 'augment*' --junit report.xml
      kerinspect check model.keras --baseline release/model.json --tolerance 0.05
    """
    from .config import discover
    from .errors import ExitCode, UsageError, worst_exit_code
    from .gate import check_models

    if no_config and config_path:
        raise UsageError("--config and --no-config exclude each other", rule="usage")
    config_file = discover(config_path, use_pyproject=not no_config)
    # defaults < configuration file < command line: an option not given is None here
    overrides = {key: options[param] for param, key in _CHECK_SETTINGS.items() if _given(options[param])}
    run_options = {k: v for k, v in options.items() if k not in _CHECK_SETTINGS and _given(v)}
    if overrides.get("baseline") and len(models) > 1:
        raise UsageError(
            "--baseline compares one model; for several, set 'baseline' per model in "
            "[[tool.kerinspect.check.models]]",
            rule="usage",
        )

    load = make_load_options(timeout, max_memory, custom_objects, trust_model, max_params)
    with _ProgressBar(stderr_console()) as progress:
        run = check_models(
            models,
            config_file,
            overrides,
            progress=progress,
            reraise=_debug_requested(),
            load=load,
            run_options=run_options,
        )
    code = run.exit_code
    if junit_path:
        from ._ci import junit_xml
        from .errors import OutputError

        try:
            _write_file(junit_path, junit_xml(run))
        except OutputError as e:
            click.echo(f"kerinspect: error[{e.rule}]: {e.one_line()}", err=True)
            code = worst_exit_code([code, ExitCode.OUTPUT])
    if fmt == "json":
        from .render import render_json

        click.echo(render_json(run))
    else:
        from .render import render_check

        render_check(run, stdout_console(None))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from ._ci import github_annotations

        sys.stdout.flush()
        for line in github_annotations(run):
            click.echo(line, err=True)
    return code


@cli.command()
@click.argument("model_a", metavar="A")
@click.argument("model_b", metavar="B")
@input_options
@depth_option("Compare", "the models'")
@click.option(
    "--tolerance",
    "diff_tolerance",
    cls=SpecOption,
    spec_default=sp.DEFAULT_DIFF_TOLERANCE,
    shown=f"{sp.DEFAULT_DIFF_TOLERANCE:g}",
    type=click.FloatRange(min=0),
    help="Largest normalised error |a-b|/|a| of an output for the models to agree; the first "
    "layer above it is where the divergence starts.",
)
@click.option(
    "--local",
    is_flag=True,
    default=None,
    help="Also run each layer of B on A's inputs of that layer (shadow mode): its own error, "
    "apart from the error it inherited.",
)
@click.option("--junit", "junit_path", metavar="FILE", help="Also write the verdict as JUnit XML to FILE.")
@load_options
@output_options
@debug_option
def diff(
    model_a: str,
    model_b: str,
    input_file: str | None,
    junit_path: str | None,
    timeout: float | None,
    max_memory: int | None,
    max_params: int | None,
    custom_objects: str | None,
    trust_model: bool,
    fmt: str,
    width: int | None,
    **run_options: Any,
) -> int:
    """Run models A and B on the same inputs and show, layer by layer, where B starts
    to disagree with A (a converted, quantized, fine-tuned or re-exported copy).

    Layer calls are paired by path, then by graph structure where names differ.
    Per pair and output: cosine similarity, normalised error |a-b|/|a|, SQNR in
    dB, max |a-b|, and both sides' mean and std, over every sample. The report
    names the first layer, in graph order, whose error exceeds --tolerance.

    \b
    Exit codes: 0 the models' outputs agree within --tolerance, 1 they do not;
    otherwise the code of the error (2, 3, 4, 5, 6, 8, 70); 7 when --junit cannot
    be written.

    \b
    Examples:
      kerinspect diff model.keras model_int8.keras
      kerinspect diff old.h5 new.keras --tolerance 1e-4 --local
      kerinspect diff a.keras b.keras --input batch.npz --format markdown --junit diff.xml
    """
    from .api import diff_models
    from .errors import ExitCode, OutputError, worst_exit_code

    spec = run_spec(run_options)
    load = make_load_options(timeout, max_memory, custom_objects, trust_model, max_params)
    with _ProgressBar(stderr_console()) as progress:
        report = diff_models(model_a, model_b, input_file, spec=spec, progress=progress, load=load)
    code = report.exit_code
    if junit_path:
        from .render_diff import diff_junit_xml

        try:
            _write_file(junit_path, diff_junit_xml(report))
        except OutputError as e:
            click.echo(f"kerinspect: error[{e.rule}]: {e.one_line()}", err=True)
            code = worst_exit_code([code, ExitCode.OUTPUT])
    from .render_diff import render_diff_markdown, render_diff_table

    emit(report, fmt, width, render_diff_table, render_diff_markdown)
    return code


def _write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`kerinspect.safefs.write_file_atomic`)."""
    from .safefs import write_file_atomic

    write_file_atomic(path, data)


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option("--out", "-o", required=True, metavar="DIR", help="Output directory (created if missing).")
@input_options
@click.option(
    "--layers",
    "-l",
    multiple=True,
    metavar="PATTERN",
    help="Dump only layer calls whose path matches this glob (repeatable): 'encoder/*', "
    "'lstm', 'shared@1'. Default: every layer call.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a previous kerinspect dump in DIR (only the files its manifest lists).",
)
@click.option(
    "--max-bytes",
    cls=SpecOption,
    spec_default=sp.DEFAULT_MAX_BYTES,
    shown=sp.DEFAULT_MAX_BYTES_TEXT,
    type=ByteSize(),
    help="Refuse a dump larger than this (tensors and inputs): 500M, 2GiB, 2GB, bytes.",
)
@dump_engine_option
@load_options
@debug_option
def dump(
    model: str,
    out: str,
    input_file: str | None,
    overwrite: bool,
    max_bytes: int | None,
    timeout: float | None,
    max_memory: int | None,
    max_params: int | None,
    custom_objects: str | None,
    trust_model: bool,
    **run_options: Any,
) -> None:
    """Run MODEL on sample inputs and save layer outputs as .npy files in DIR.

    One .npy per output tensor of every selected layer call, all samples stacked
    on axis 0, plus the inputs used (DIR/inputs/) and DIR/manifest.json, which
    maps each file to its layer. File names never come from layer names. A
    non-empty DIR is refused unless --overwrite; the dump is complete once
    manifest.json exists.

    \b
    Examples:
      kerinspect dump model.keras --out acts
      kerinspect dump model.keras -o acts --layers 'encoder/*' --samples 256
      kerinspect dump model.h5 -o acts --input batch.npz --overwrite
    """
    from .api import dump_activations

    spec = run_spec(run_options)
    load = make_load_options(timeout, max_memory, custom_objects, trust_model, max_params)
    limit = {} if max_bytes is None else {"max_bytes": max_bytes}
    with _ProgressBar(stderr_console()) as progress:
        result = dump_activations(
            model, out, input_file, spec=spec, overwrite=overwrite, progress=progress, load=load, **limit
        )
    _echo_dump(result, out)


def _echo_dump(result: Any, out: str) -> None:
    """What was written: one line per file (names escaped: they come from the model)."""
    from .dump import MANIFEST, format_bytes

    m = result.manifest
    calls = len({t["index"] for t in m["tensors"]})
    n_in = len(m["inputs"])
    click.echo(
        f"Dumped {len(m['tensors'])} tensors of {calls} layer calls and {n_in} input{'s' * (n_in != 1)}, "
        f"{m['samples']} samples, {format_bytes(m['total_bytes'], exact=False)}, to {escape_text(out, 200)}"
    )
    rows = []
    for t in m["tensors"]:
        note = f" (from {t['source_dtype']})" if t["source_dtype"] != t["dtype"] else ""
        rows.append((t["file"], escape_text(t["key"], 80), t["shape"], t["dtype"] + note))
    for i in m["inputs"]:
        rows.append((i["file"], "input " + escape_text(i["name"], 74), i["shape"], i["dtype"]))
    w_file = max((len(r[0]) for r in rows), default=0)
    w_key = max((len(r[1]) for r in rows), default=0)
    for file, key, shape, dtype in rows:
        shown = "(" + ", ".join(map(str, shape)) + ")"
        click.echo(f"  {file:<{w_file}}  {key:<{w_key}}  {shown} {dtype}")
    for s in m["skipped"]:
        what = escape_text(f"{s['path']}:{s['output_name']}", 120)
        click.echo(f"  skipped {what}: {escape_text(s['reason'] or '', 120)}")
    if m.get("engine") not in (None, "eager"):
        click.echo(f"engine: {escape_text(m['engine'], 80)}")
    for note in m.get("notes") or ():
        click.echo(f"note: {escape_text(note, 400)}")
    click.echo(f"manifest: {escape_text(os.path.join(out, MANIFEST), 200)}")


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option(
    "--out",
    "-o",
    metavar="FILE",
    help="Write the page to FILE. Default: the model's file name with .html, in the current directory.",
)
@input_options
@depth_option("Capture")
@click.option(
    "--sample",
    "-k",
    cls=SpecOption,
    spec_default=sp.DEFAULT_SAMPLE,
    type=click.IntRange(min=0),
    metavar="K",
    help="Draw the feature maps and attention probabilities of sample K (0-based).",
)
@click.option(
    "--feature-maps",
    cls=SpecOption,
    spec_default=sp.DEFAULT_FEATURE_MAPS,
    type=click.IntRange(min=0),
    metavar="N",
    help="Draw the feature maps of at most N layers, evenly spaced along the depth (0: none).",
)
@click.option(
    "--channels",
    cls=SpecOption,
    spec_default=sp.DEFAULT_CHANNELS,
    type=click.IntRange(min=1),
    metavar="N",
    help="Draw at most N channels (the most varied) of each feature map layer.",
)
@threshold_options
@attention_threshold_options
@load_options
@debug_option
def report(
    model: str,
    out: str | None,
    input_file: str | None,
    timeout: float | None,
    max_memory: int | None,
    max_params: int | None,
    custom_objects: str | None,
    trust_model: bool,
    **run_options: Any,
) -> None:
    """Run MODEL on sample inputs and write a self-contained HTML report.

    One file that opens offline in any browser (no CDN, nothing loaded from
    elsewhere): the layer table (nested blocks collapsible, filterable by flag),
    mean, std, max |x| and zero fraction along the depth, a value histogram per
    layer output, attention heatmaps per head and feature maps of one sample, and
    the full JSON report embedded.

    \b
    Examples:
      kerinspect report model.keras
      kerinspect report model.keras -o report.html --sample 3
      kerinspect report model.keras --feature-maps 0 --samples 8
    """
    import shlex

    from .api import inspect_for_report
    from .render_html import render_report

    spec = run_spec(run_options)
    load = make_load_options(timeout, max_memory, custom_objects, trust_model, max_params)
    target = out or os.path.splitext(os.path.basename(model.rstrip("/\\")))[0] + ".html"
    with _ProgressBar(stderr_console()) as progress:
        data = inspect_for_report(model, input_file, spec=spec, progress=progress, load=load)
    command = "kerinspect " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["report"] else None
    page = render_report(data, command=command).encode("utf-8")
    _write_file(target, page)
    from .units import format_bytes

    click.echo(f"Wrote {escape_text(target, 200)} ({format_bytes(len(page), exact=False)})", err=True)


class _ProgressBar:
    """``progress(done, total)`` callback drawing a Rich bar on stderr once a run
    turns out to have more than one batch; silent when stderr is not a terminal."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if done >= total or not self.console.is_terminal:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("running"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("samples"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task("run", total=total, completed=done)
            self.bar.start()  # after add_task: the first frame shows the batch already done
        self.bar.update(self.task, completed=done, total=total)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def main() -> None:  # console-script entry point
    cli(prog_name="kerinspect")


if __name__ == "__main__":  # pragma: no cover
    main()
