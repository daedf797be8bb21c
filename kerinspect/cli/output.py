"""Where a command's output goes: reports on stdout (:func:`emit`: a table, Markdown
or JSON), the progress bar and warnings on stderr (:class:`ProgressBar`,
:func:`warn_inputs`), files written atomically (:func:`write_file`, :func:`write_junit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

#: Width given to a non-terminal stdout, so that piped tables keep every column.
PIPE_WIDTH = 1000


def stdout_console(width: int | None) -> Console:
    console = Console(width=width, highlight=False)
    if width is None and not console.is_terminal:
        console = Console(width=PIPE_WIDTH, highlight=False)
    return console


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


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
        from kerinspect.render import render_json

        click.echo(render_json(report))
    elif fmt == "markdown":
        click.echo(markdown(report), nl=False)
    else:
        console = stdout_console(width)
        table(report, console, fit=width is not None or console.is_terminal)


def warn(message: str) -> None:
    """One ``kerinspect: warning:`` line on stderr (escaped: it may name the model's layers)."""
    from kerinspect.errors import escape_text

    click.echo(f"kerinspect: warning: {escape_text(message, 2000)}", err=True)


def warn_inputs(report: Any, where: str = "") -> None:
    """Warn, in one line, when ``report`` (a :class:`~kerinspect.report.ModelReport` or
    :class:`~kerinspect.check_results.CheckResult`) ran on synthetic inputs: how many
    samples, what they were drawn from, how to give data. ``where`` names the model
    (``check``). Nothing for a run on the user's data."""
    from kerinspect.provenance import synthetic_warning

    text = synthetic_warning(report.inputs, report.samples, where)
    if text:
        warn(text)


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`kerinspect.safefs.write_file_atomic`)."""
    from kerinspect.safefs import write_file_atomic

    write_file_atomic(path, data)


def write_junit(path: str, xml: bytes, code: int) -> int:
    """Write ``--junit`` XML to ``path``; the exit code is ``code``, or when the file
    cannot be written (the error printed) the worse of ``code`` and 7."""
    from kerinspect.cli.group import print_error
    from kerinspect.errors import ExitCode, OutputError, worst_exit_code

    try:
        write_file(path, xml)
    except OutputError as e:
        print_error(e)
        return worst_exit_code([code, ExitCode.OUTPUT])
    return code


class ProgressBar:
    """``progress(done, total)`` callback drawing a Rich bar on stderr once a run
    turns out to have more than one batch; silent when stderr is not a terminal."""

    def __init__(self, console: Console, unit: str = "samples"):
        self.console = console
        self.unit = unit  # what ``done`` counts: samples of one run, or models (check --jobs)
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
                TextColumn(self.unit),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task("run", total=total, completed=done)
            self.bar.start()  # after add_task: the first frame shows the batch already done
        self.bar.update(self.task, completed=done, total=total)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
