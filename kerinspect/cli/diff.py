"""``kerinspect diff A B``: where model B starts to disagree with model A."""

from __future__ import annotations

import click

from kerinspect import spec as sp
from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    class_names_option,
    depth_option,
    input_options,
    load_options,
    output_options,
    spec_argument,
    spec_float_option,
)
from kerinspect.cli.output import ProgressBar, emit, stderr_console, write_junit
from kerinspect.spec import LoadOptions, RunSpec


@cli.command()
@click.argument("model_a", metavar="A")
@click.argument("model_b", metavar="B")
@input_options
@depth_option("Compare", "the models'")
@spec_float_option(
    "--tolerance",
    "diff_tolerance",
    default=sp.DEFAULT_DIFF_TOLERANCE,
    type=click.FloatRange(min=0),
    help="Largest normalised error |a-b|/|a| of an output for the models to agree; the first "
    "layer above it is where the divergence starts.",
)
@click.option(
    "--local",
    is_flag=True,
    default=None,
    help="Also run each layer of B on A's inputs of that layer (shadow mode): its own error, "
    "apart from the error it inherited.",
)
@class_names_option
@click.option("--junit", "junit_path", metavar="FILE", help="Also write the verdict as JUnit XML to FILE.")
@load_options
@output_options
@debug_option
@spec_argument
def diff(
    model_a: str,
    model_b: str,
    input_file: str | None,
    junit_path: str | None,
    fmt: str,
    width: int | None,
    spec: RunSpec,
    load: LoadOptions,
) -> int:
    """Run models A and B on the same inputs and show, layer by layer, where B starts
    to disagree with A (a converted, quantized, fine-tuned or re-exported copy).

    Layer calls are paired by path, then by graph structure where names differ.
    Per pair and output: cosine similarity, normalised error |a-b|/|a|, SQNR in
    dB, max |a-b|, and both sides' mean and std, over every sample. The report
    names the first layer, in graph order, whose error exceeds --tolerance. For
    a classifier output: how often B's top-1 class is A's.

    \b
    Exit codes: 0 the models' outputs agree within --tolerance, 1 they do not;
    otherwise the code of the error (2, 3, 4, 5, 6, 8, 70); 7 when --junit cannot
    be written.

    \b
    Examples:
      kerinspect diff model.keras model_int8.keras
      kerinspect diff old.h5 new.keras --tolerance 1e-4 --local
      kerinspect diff a.keras b.keras --input batch.npz --format markdown --junit diff.xml
    """
    from kerinspect.api import diff_models

    with ProgressBar(stderr_console()) as progress:
        report = diff_models(model_a, model_b, input_file, spec=spec, progress=progress, load=load)
    code = report.exit_code
    if junit_path:
        from kerinspect.render_diff import diff_junit_xml

        code = write_junit(junit_path, diff_junit_xml(report), code)
    from kerinspect.render_diff import render_diff_markdown, render_diff_table

    emit(report, fmt, width, render_diff_table, render_diff_markdown)
    return code
