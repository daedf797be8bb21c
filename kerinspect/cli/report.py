"""``kerinspect report``: one self-contained HTML page (see :mod:`kerinspect.render_html`)."""

from __future__ import annotations

import os
import sys

import click

from kerinspect import spec as sp
from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    SpecOption,
    attention_threshold_options,
    class_names_option,
    depth_option,
    gradient_options,
    input_options,
    load_options,
    percentiles_option,
    sample_option,
    spec_argument,
    threshold_options,
    vocab_option,
)
from kerinspect.cli.output import ProgressBar, stderr_console, warn_inputs, write_file
from kerinspect.errors import escape_text
from kerinspect.spec import LoadOptions, RunSpec


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
@sample_option("Draw the feature maps and attention probabilities of sample K (0-based).")
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
@click.option(
    "--top-k",
    cls=SpecOption,
    spec_default=sp.DEFAULT_TOP_K,
    type=click.IntRange(min=0),
    metavar="K",
    help="List the K most likely classes of the shown sample for each classifier output (0: none).",
)
@class_names_option
@click.option(
    "--pca-layers",
    metavar="PATH,...",
    default=None,
    callback=lambda ctx, param, value: None if value is None else tuple(p for p in value.split(",") if p),
    help="With labels: project the outputs of these layer paths (comma-separated; path:output for one "
    "output of several) in 2-D (PCA), coloured by class. Default: the last hidden layer and a middle one.",
)
@percentiles_option
@threshold_options
@attention_threshold_options
@vocab_option
@click.option(
    "--gradients",
    is_flag=True,
    default=None,
    help="Also differentiate the loss, as the gradients command does (--loss, --from-logits, "
    "--training, the gradient thresholds), and draw the gradient norm along the depth.",
)
@gradient_options
@load_options
@debug_option
@spec_argument
def report(
    model: str,
    out: str | None,
    input_file: str | None,
    spec: RunSpec,
    load: LoadOptions,
) -> None:
    """Run MODEL on sample inputs and write a self-contained HTML report.

    One file that opens offline in any browser (no CDN, nothing loaded from
    elsewhere): the layer table (nested blocks collapsible, filterable by flag),
    mean, std, max |x| and zero fraction along the depth, a value histogram per
    layer output, one sample's input (an image, a text) with its top classes for
    each classifier output, its attention heatmaps per head and feature maps, and
    the full JSON report embedded. With --gradients, also the gradient norm of the
    loss along the depth under the activation chart, with where it vanishes or
    explodes (see the gradients command).

    \b
    Examples:
      kerinspect report model.keras
      kerinspect report model.keras -o report.html --sample 3
      kerinspect report model.keras --feature-maps 0 --samples 8
      kerinspect report keras_model.h5 --input photos/ --preprocess tf --class-names labels.txt
      kerinspect report model.keras --input data/images/   (labels: separability and PCA)
      kerinspect report digits.keras -i data/digits/ --gradients
    """
    import shlex

    from kerinspect.api import inspect_for_report
    from kerinspect.render_html import render_report

    target = out or os.path.splitext(os.path.basename(model.rstrip("/\\")))[0] + ".html"
    with ProgressBar(stderr_console()) as progress:
        data = inspect_for_report(model, input_file, spec=spec, progress=progress, load=load)
    warn_inputs(data.report)
    command = "kerinspect " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["report"] else None
    page = render_report(data, command=command).encode("utf-8")
    write_file(target, page)
    from kerinspect.units import format_bytes

    click.echo(f"Wrote {escape_text(target, 200)} ({format_bytes(len(page), exact=False)})", err=True)
