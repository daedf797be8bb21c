"""The ``kerinspect`` command line: parse options, call :mod:`kerinspect.api`, render, exit.

Heavy imports (TensorFlow, Keras, the engine) happen inside commands, so that
``kerinspect --help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console

from . import __version__
from .errors import ExitCode, KerinspectError, escape_text

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_state = {"debug": False}


def _debug_requested() -> bool:
    return _state["debug"] or os.environ.get("KERINSPECT_DEBUG") == "1"


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _state["debug"] = True


def fail(code: int, rule: str, message: str) -> NoReturn:
    """Print ``kerinspect: error[rule]: message`` on stderr and exit with ``code``."""
    click.echo(f"kerinspect: error[{rule}]: {message}", err=True)
    sys.exit(int(code))


class KerinspectGroup(click.Group):
    """Click group whose errors are one line each, with kerinspect's exit codes."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        _state["debug"] = False
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
            fail(e.exit_code, e.rule, e.one_line())
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
            help="Number of samples (synthetic default: 32; with --input: the first N).",
        ),
        click.option(
            "--batch-size",
            "-b",
            type=click.IntRange(min=1),
            default=32,
            show_default=True,
            help="Samples per forward pass; statistics are merged across batches.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic samples."),
        click.option(
            "--dim",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
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


def threshold_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option(
            "--max-abs",
            type=click.FloatRange(min=0, min_open=True),
            default=1e4,
            show_default=True,
            help="Flag 'exploding' when a finite |value| exceeds this "
            "(float16: at most a tenth of its range).",
        ),
        click.option(
            "--max-dead-fraction",
            type=click.FloatRange(0, 1),
            default=0.5,
            show_default=True,
            help="Flag 'dead' when this share of units is zero for every sample.",
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
@threshold_options
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="Output format (stdout).",
)
@click.option(
    "--width",
    type=click.IntRange(min=40),
    default=None,
    help="Table width in characters (default: the terminal's).",
)
@debug_option
def summary(
    model: str,
    input_file: str | None,
    samples: int | None,
    batch_size: int,
    seed: int,
    dim: int,
    shapes: tuple[str, ...],
    max_abs: float,
    max_dead_fraction: float,
    fmt: str,
    width: int | None,
) -> None:
    """Run MODEL (.keras or .h5) on sample inputs and show every layer call's output.

    One row per output tensor of every layer call, in graph order: shared layers
    once per call (name@1), nested models followed by their layers (outer/inner),
    every output of multi-output layers (lstm:state_h).

    \b
    Examples:
      kerinspect summary model.keras
      kerinspect summary model.keras --samples 256 --batch-size 64 --format json
      kerinspect summary model.h5 --input batch.npz
    """
    from .api import inspect_model
    from .report import Thresholds

    with _ProgressBar(stderr_console()) as progress:
        report = inspect_model(
            model,
            input_file,
            samples=samples,
            batch_size=batch_size,
            seed=seed,
            dim=dim,
            shapes=shapes,
            thresholds=Thresholds(max_abs, max_dead_fraction),
            progress=progress,
        )
    if fmt == "json":
        from .render import render_json

        click.echo(render_json(report))
    elif fmt == "markdown":
        from .render import render_markdown

        click.echo(render_markdown(report), nl=False)
    else:
        from .render import render_table

        console = stdout_console(width)
        # A terminal gets a table that fits; a pipe or file gets every column.
        render_table(report, console, fit=width is not None or console.is_terminal)


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="Output format (stdout).",
)
@click.option(
    "--width",
    type=click.IntRange(min=40),
    default=None,
    help="Table width in characters (default: the terminal's).",
)
@click.option(
    "--max-abs",
    type=click.FloatRange(min=0, min_open=True),
    default=1e4,
    show_default=True,
    help="Flag 'exploding' when a finite |weight| exceeds this (float16: at most a tenth of its range).",
)
@debug_option
def weights(model: str, fmt: str, width: int | None, max_abs: float) -> None:
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
    from .report import Thresholds
    from .weights import inspect_weights

    report = inspect_weights(model, Thresholds(max_abs=max_abs))
    if fmt == "json":
        from .render import render_json

        click.echo(render_json(report))
    elif fmt == "markdown":
        from .render import render_weights_markdown

        click.echo(render_weights_markdown(report), nl=False)
    else:
        from .render import render_weights_table

        console = stdout_console(width)
        render_weights_table(report, console, fit=width is not None or console.is_terminal)


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
            self.bar.start()
            self.task = self.bar.add_task("run", total=total)
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
