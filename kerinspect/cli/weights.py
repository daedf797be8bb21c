"""``kerinspect weights``: every weight's statistics, read without running the model."""

from __future__ import annotations

import click

from kerinspect import spec as sp
from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    make_load_options,
    output_options,
    spec_float_option,
    worker_options,
)
from kerinspect.cli.output import emit


@cli.command()
@click.argument("model", metavar="MODEL")
@output_options
@spec_float_option(
    "--max-abs",
    default=sp.DEFAULT_MAX_ABS,
    type=click.FloatRange(min=0, min_open=True),
    shown=str(sp.DEFAULT_MAX_ABS),  # "10000.0", as its help has always read
    help="Flag 'exploding' when a finite |weight| exceeds this (float16: at most a tenth of its range).",
)
@spec_float_option(
    "--min-update-ratio",
    default=sp.DEFAULT_MIN_UPDATE_RATIO,
    type=click.FloatRange(min=0, min_open=True),
    help="Flag 'update-too-small' where the optimizer's last step moved a weight by less than this times its norm.",
)
@spec_float_option(
    "--max-update-ratio",
    default=sp.DEFAULT_MAX_UPDATE_RATIO,
    type=click.FloatRange(min=0, min_open=True),
    help="Flag 'update-too-large' where the optimizer's last step moved a weight by more than this times its norm.",
)
@worker_options
@debug_option
def weights(
    model: str,
    fmt: str,
    width: int | None,
    max_abs: float | None,
    min_update_ratio: float | None,
    max_update_ratio: float | None,
    timeout: float | None,
    max_memory: int | None,
) -> None:
    """Read every weight of MODEL (.keras or .h5) and show its statistics and health
    (NaN, Inf, exploding magnitudes), without running or deserializing the model.

    The weights are read with h5py alone: no TensorFlow, no model code, and custom
    layer classes need not be importable. One row per weight, grouped by layer
    (outer/inner for layers of nested models). Exits 0 even when weights are flagged.

    A trained model saved with its optimizer state (Adam, AdamW, SGD with momentum,
    RMSprop, Adagrad) also gets each weight's Update/‖w‖: the norm of the change the
    optimizer's last step made to it over the weight's norm (healthy: around 1e-3).

    \b
    Examples:
      kerinspect weights model.keras
      kerinspect weights legacy.h5 --format json
    """
    from kerinspect.api import inspect_weights

    thresholds = sp.Thresholds.from_options(max_abs=max_abs)
    report = inspect_weights(
        model,
        thresholds,
        load=make_load_options(timeout, max_memory),
        min_update_ratio=min_update_ratio,
        max_update_ratio=max_update_ratio,
    )
    from kerinspect.render_weights import render_weights_markdown, render_weights_table

    emit(report, fmt, width, render_weights_table, render_weights_markdown)
