"""``kerinspect summary``: every layer call's outputs and their health, as a table."""

from __future__ import annotations

from typing import Any

import click

from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    attention_threshold_options,
    depth_option,
    engine_option,
    input_options,
    load_options,
    make_load_options,
    output_options,
    run_spec,
    threshold_options,
)
from kerinspect.cli.output import ProgressBar, emit, stderr_console


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
    from kerinspect.api import inspect_model

    spec = run_spec(run_options)
    load = make_load_options(timeout, max_memory, custom_objects, trust_model, max_params)
    with ProgressBar(stderr_console()) as progress:
        report = inspect_model(model, input_file, spec=spec, progress=progress, load=load)
    from kerinspect.render import render_markdown, render_table

    emit(report, fmt, width, render_table, render_markdown)
