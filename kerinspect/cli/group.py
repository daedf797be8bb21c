"""The ``kerinspect`` group: the entry point, the ``--debug`` switch, and how errors
are printed: one line each, ``kerinspect: error[rule]: message``, with kerinspect's
exit codes, every parameter a library error references shown as its flag.

The commands register themselves on :data:`cli` (``kerinspect/cli/<command>.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import click

from kerinspect import __version__
from kerinspect.errors import ExitCode, KerinspectError, escape_text

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_state = {"debug": False}


def debug_requested() -> bool:
    """``--debug`` was given (or ``KERINSPECT_DEBUG=1``): show tracebacks, re-raise bugs."""
    return _state["debug"] or os.environ.get("KERINSPECT_DEBUG") == "1"


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _state["debug"] = True


def fail(code: int, rule: str, message: str) -> NoReturn:
    """Print ``kerinspect: error[rule]: message`` on stderr and exit with ``code``."""
    click.echo(f"kerinspect: error[{escape_text(rule, 60)}]: {message}", err=True)
    sys.exit(int(code))


def print_error(e: KerinspectError) -> None:
    """Print a library error as ``kerinspect: error[rule]: message Hint: ...`` on stderr,
    each parameter it references shown as its flag (:meth:`KerinspectGroup.flag`)."""
    click.echo(f"kerinspect: error[{escape_text(e.rule, 60)}]: {e.one_line(cli.flag)}", err=True)


class KerinspectGroup(click.Group):
    """Click group whose errors are one line each, with kerinspect's exit codes."""

    #: The command being run (:meth:`flag` looks at its options first).
    invoked: click.Command | None = None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        _state["debug"] = False
        self.invoked = None
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
            if debug_requested():
                traceback.print_exc()
                worker_tb = getattr(e, "worker_traceback", None)
                if worker_tb:
                    click.echo("--- in the isolated worker:\n" + worker_tb, err=True)
            fail(e.exit_code, e.rule, e.one_line(self.flag))
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if debug_requested():
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

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        self.invoked = command
        return name, command, rest

    def flag(self, parameter: str) -> str:
        """How the command line names a library parameter (:class:`kerinspect.errors.Param`):
        the longest flag of the option named after it (``batch_size``: ``--batch-size``),
        else the option that has its name as a flag (``input``: ``--input``, whose value
        is ``input_file``); the command being run is searched first, then every other.
        A parameter without a flag keeps its name."""
        commands = [self.invoked] if self.invoked is not None else []
        commands += [c for c in self.commands.values() if c is not self.invoked]
        options = [p for c in commands for p in c.params if isinstance(p, click.Option)]
        for option in options:
            if option.name == parameter:
                return max(option.opts, key=len)
        spelled = "--" + parameter.replace("_", "-")
        if any(spelled in option.opts for option in options):
            return spelled
        return parameter


@contextlib.contextmanager
def _warnings_as_lines() -> Any:
    """kerinspect's own warnings (:class:`~kerinspect.errors.PartialIsolationWarning`,
    :class:`~kerinspect.errors.InputWarning`) as one ``kerinspect: warning:`` line each on
    stderr, once per run, not Python's two-line ``file:line: Category: text`` form; an
    input warning names parameters by their flags."""
    import warnings

    from kerinspect.errors import InputWarning, PartialIsolationWarning

    shown = warnings.showwarning

    def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(message, InputWarning):
            click.echo(f"kerinspect: warning: {escape_text(message.parts.render(cli.flag), 1000)}", err=True)
        elif issubclass(category, PartialIsolationWarning):
            click.echo(f"kerinspect: warning: {message}", err=True)
        else:
            shown(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("once", PartialIsolationWarning)
        warnings.simplefilter("once", InputWarning)
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


@click.group(name="kerinspect", cls=KerinspectGroup, context_settings=CONTEXT)
@debug_option
@click.version_option(__version__, "--version", "-V", prog_name="kerinspect", message="%(prog)s %(version)s")
def cli() -> None:
    """See inside a saved Keras model: every layer call's output shape and the health of
    its values (zeros and dead units, NaN, Inf, exploding magnitudes).

    \b
    Exit codes: 0 ok, 1 checks failed, 2 usage error, 3 missing or unsupported file,
    4 malformed model, 5 refused by security policy, 6 inference error,
    7 output error, 8 worker crashed or timed out, 9 bad input data (a corrupt
    image, a bad CSV cell, NaN in an input), 70 internal error.
    """


def main() -> None:  # console-script entry point
    cli(prog_name="kerinspect")
