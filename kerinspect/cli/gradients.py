"""``kerinspect gradients``: the loss's gradient at every layer call and every weight."""

from __future__ import annotations

import click

from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    depth_option,
    gradient_options,
    input_options,
    load_options,
    output_options,
    spec_argument,
)
from kerinspect.cli.output import ProgressBar, emit, stderr_console, warn_inputs
from kerinspect.spec import LoadOptions, RunSpec


@cli.command()
@click.argument("model", metavar="MODEL")
@input_options
@depth_option("Show", "the model's")
@gradient_options
@load_options
@output_options
@debug_option
@spec_argument
def gradients(
    model: str,
    input_file: str | None,
    fmt: str,
    width: int | None,
    spec: RunSpec,
    load: LoadOptions,
) -> None:
    """Differentiate the loss through MODEL on sample inputs: where do gradients vanish or explode?

    One row per output of every layer call (as in summary): the gradient of the
    mean loss over all samples with respect to that output (its norm, its ratio to
    the gradient norm at the output layer's input, RMS, largest magnitude, NaN/Inf counts); then
    every trainable weight's norm, its gradient's norm and their ratio; then the
    first layer, from the output backwards, where gradients vanish or explode.

    The loss is --loss, else the model's saved built-in loss (a custom loss's code
    is never run). Labels come from --labels, --label-column or image folders;
    without them, a classification loss takes the model's own top prediction as
    the label. Runs eagerly; mixed precision: no loss scale is applied.

    \b
    Examples:
      kerinspect gradients model.keras --loss sparse_categorical_crossentropy
      kerinspect gradients digits.keras -i data/digits/ --format json
      kerinspect gradients model.keras -i x.npy --labels y.npy --loss mse --training
    """
    from kerinspect.api import model_gradients

    with ProgressBar(stderr_console()) as progress:
        report = model_gradients(model, input_file, spec=spec, progress=progress, load=load)
    warn_inputs(report)
    from kerinspect.render_gradients import render_gradients_markdown, render_gradients_table

    emit(report, fmt, width, render_gradients_table, render_gradients_markdown)
