"""``kerinspect summary``: every layer call's outputs and their health, as a table."""

from __future__ import annotations

import click

from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    attention_threshold_options,
    beam_options,
    depth_option,
    engine_option,
    input_options,
    load_options,
    output_options,
    percentiles_option,
    spec_argument,
    threshold_options,
)
from kerinspect.cli.output import ProgressBar, emit, stderr_console, warn_inputs
from kerinspect.spec import LoadOptions, RunSpec


@cli.command()
@click.argument("model", metavar="MODEL")
@input_options
@depth_option("Show", "the model's")
@engine_option
@percentiles_option
@threshold_options
@attention_threshold_options
@load_options
@beam_options
@output_options
@debug_option
@spec_argument
def summary(
    model: str,
    input_file: str | None,
    fmt: str,
    width: int | None,
    spec: RunSpec,
    load: LoadOptions,
    runner: str | None = None,
    pipeline_options: tuple[str, ...] = (),
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
      kerinspect summary model.keras --input 'shards/*.tfrecord' --runner DirectRunner \\
          --pipeline-option direct_num_workers=2
    """
    from kerinspect.api import inspect_model
    from kerinspect.beam.pipeline import inspect_on_beam

    if runner is not None or pipeline_options:
        report = inspect_on_beam(model, input_file, runner, pipeline_options, spec=spec, load=load)
    else:
        with ProgressBar(stderr_console()) as progress:
            report = inspect_model(model, input_file, spec=spec, progress=progress, load=load)
    warn_inputs(report)
    from kerinspect.render import render_markdown, render_table

    emit(report, fmt, width, render_table, render_markdown)
