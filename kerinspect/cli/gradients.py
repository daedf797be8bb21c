"""``kerinspect gradients``: the loss's gradient at every layer call and every weight."""

from __future__ import annotations

import click

from kerinspect import spec as sp
from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    SpecOption,
    depth_option,
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
@click.option(
    "--loss",
    metavar="NAME",
    default=None,
    help="A built-in Keras loss name (sparse_categorical_crossentropy, mse, ...). "
    "Default: the loss the model was saved compiled with, when it is a built-in one.",
)
@click.option(
    "--from-logits",
    is_flag=True,
    default=None,
    help="With --loss, a cross-entropy takes the model's output as logits (a head without softmax or sigmoid).",
)
@click.option(
    "--training",
    is_flag=True,
    default=None,
    help="Run Dropout, BatchNormalization (every layer with a training argument) in training mode.",
)
@click.option(
    "--vanishing-gradient",
    cls=SpecOption,
    spec_default=sp.DEFAULT_VANISHING_GRADIENT,
    shown=f"{sp.DEFAULT_VANISHING_GRADIENT:g}",
    type=click.FloatRange(min=0, min_open=True),
    help="Flag 'vanishing-gradient' where an output's gradient norm is below this times the gradient norm at the output layer's input.",
)
@click.option(
    "--exploding-gradient",
    cls=SpecOption,
    spec_default=sp.DEFAULT_EXPLODING_GRADIENT,
    shown=f"{sp.DEFAULT_EXPLODING_GRADIENT:g}",
    type=click.FloatRange(min=0, min_open=True),
    help="Flag 'exploding-gradient' where an output's gradient norm is above this times the gradient norm at the output layer's input.",
)
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
