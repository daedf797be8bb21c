"""``kerinspect weights``: every weight's statistics, read without running the model."""

from __future__ import annotations

import click

from kerinspect import spec as sp
from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    SpecOption,
    make_load_options,
    output_options,
    worker_options,
)
from kerinspect.cli.output import emit


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
    from kerinspect.api import inspect_weights

    thresholds = sp.Thresholds.from_options(max_abs=max_abs)
    report = inspect_weights(model, thresholds, load=make_load_options(timeout, max_memory))
    from kerinspect.render import render_weights_markdown, render_weights_table

    emit(report, fmt, width, render_weights_table, render_weights_markdown)
