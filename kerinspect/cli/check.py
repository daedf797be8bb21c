"""``kerinspect check``: the CI gate, over one model or many (see :mod:`kerinspect.gate`)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from kerinspect import spec as sp
from kerinspect.cli.group import cli, debug_option, debug_requested
from kerinspect.cli.options import (
    beam_options,
    engine_option,
    gradient_options,
    input_options,
    is_given,
    load_options,
    percentiles_option,
    spec_float_option,
    threshold_options,
)
from kerinspect.cli.output import ProgressBar, stderr_console, stdout_console, warn_inputs, write_junit
from kerinspect.config import CHOOSABLE_RULES

#: check options that map onto :class:`kerinspect.config.CheckConfig` fields (the
#: configuration file's keys). Any other run option goes straight to the RunSpec.
_CHECK_SETTINGS = {
    "input_file": "input",
    "samples": "samples",
    "batch_size": "batch_size",
    "seed": "seed",
    "dim": "dim",
    "shapes": "shape",
    "preprocess": "preprocess",
    "label_column": "label_column",
    "labels": "labels",
    "min_separability": "min_separability",
    "max_abs": "max_abs",
    "max_dead_fraction": "max_dead_fraction",
    "min_rms_ratio": "min_rms_ratio",
    "max_saturated_fraction": "max_saturated_fraction",
    "min_sample_spread": "min_sample_spread",
    "rules": "rules",
    "ignore": "ignore",
    "baseline": "baseline",
    "tolerance": "tolerance",
    "loss": "loss",
    "from_logits": "from_logits",
    "vanishing_gradient": "vanishing_gradient",
    "exploding_gradient": "exploding_gradient",
}


@cli.command()
@click.argument("models", metavar="MODEL...", nargs=-1, required=True)
@input_options
@engine_option
@percentiles_option
@threshold_options
@click.option(
    "--rule",
    "rules",
    multiple=True,
    type=click.Choice(CHOOSABLE_RULES),
    help="Also run this optional rule (repeatable): vanishing, saturated, constant, "
    "uniform-attention, collapsed-attention, single-key-attention, separability "
    "(the last hidden layer's separability accuracy, with labels), vanishing-gradient, "
    "exploding-gradient (the loss's gradients, as 'kerinspect gradients' flags them). "
    "Replaces the configuration's 'rules'.",
)
@gradient_options
@spec_float_option(
    "--min-separability",
    default=sp.DEFAULT_MIN_SEPARABILITY,
    type=click.FloatRange(0, 1),
    help="--rule separability fails when the last hidden layer's leave-one-out nearest-class-mean "
    "accuracy is below this.",
)
@click.option(
    "--ignore",
    multiple=True,
    metavar="PATTERN",
    help="Exempt layers whose path matches this glob (repeatable). A match also exempts the "
    "layers inside a nested model and every call of a shared layer.",
)
@click.option(
    "--baseline",
    metavar="FILE",
    help="Compare with a report saved by 'kerinspect summary --format json': fail when the "
    "structure changed or a tensor's mean/std drifted beyond --tolerance.",
)
@spec_float_option(
    "--tolerance",
    default=sp.DEFAULT_TOLERANCE,
    type=click.FloatRange(min=0),
    help="Largest allowed move of a tensor's mean or std from the baseline, in baseline standard deviations.",
)
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="Read settings from this TOML file instead of the nearest pyproject.toml [tool.kerinspect.check].",
)
@click.option("--no-config", is_flag=True, help="Ignore pyproject.toml; use options and defaults only.")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format (stdout).",
)
@click.option("--junit", "junit_path", metavar="FILE", help="Also write the results as JUnit XML to FILE.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Check up to N models at once, each in its own worker (default: the number of cores, "
    "at most the number of models). Results keep the order of the models.",
)
@load_options
@beam_options
@debug_option
def check(
    models: tuple[str, ...],
    config_path: str | None,
    no_config: bool,
    fmt: str,
    junit_path: str | None,
    jobs: int | None,
    load: sp.LoadOptions,
    **options: Any,
) -> int:
    """Gate for CI: run each MODEL and fail when an activation holds NaN or Inf,
    explodes, or has too many dead units, or a weight holds NaN or Inf.

    MODEL may be a glob ('models/**/*.keras'). Settings come from the nearest
    pyproject.toml [tool.kerinspect.check] (or --config FILE); options override it.
    The report names the first layer where NaN/Inf appears. With GITHUB_ACTIONS=true,
    failures are also printed as ::error annotations (on stderr).

    \b
    Exit codes: 0 every rule passed for every model, 1 a rule failed; when a model
    cannot be inspected, the code of that error (3, 4, 5, 6, 8, 9, 70), which outranks 1;
    2 for a bad option or configuration file; 7 when --junit cannot be written.

    \b
    Examples:
      kerinspect check model.keras
      kerinspect check 'models/*.keras' --ignore 'augment*' --junit report.xml
      kerinspect check model.keras --baseline release/model.json --tolerance 0.05
      kerinspect check model.keras -i x.npy --labels y.npy --rule vanishing-gradient
      kerinspect check model.keras -i 'eval/*.tfrecord' --runner DirectRunner
    """
    from kerinspect.config import discover
    from kerinspect.errors import UsageError
    from kerinspect.gate import check_models

    if no_config and config_path:
        raise UsageError("--config and --no-config exclude each other", rule="usage")
    runner, pipeline_options = options.pop("runner", None), options.pop("pipeline_options", ())
    if pipeline_options and runner is None:
        raise UsageError("--pipeline-option needs --runner (the Beam runner to pass it to).", rule="usage")
    beam = None if runner is None else (runner, pipeline_options)
    config_file = discover(config_path, use_pyproject=not no_config)
    # defaults < configuration file < command line: an option not given is None here
    overrides = {key: options[param] for param, key in _CHECK_SETTINGS.items() if is_given(options[param])}
    run_options = {k: v for k, v in options.items() if k not in _CHECK_SETTINGS and is_given(v)}
    if load.custom_objects is not None:  # a load option that is also a configuration key
        overrides["custom_objects"] = load.custom_objects
    if "loss" in overrides or "from_logits" in overrides:  # a bad --loss: one line, before any model
        from kerinspect.losses import check_loss_options

        check_loss_options(overrides.get("loss"), bool(overrides.get("from_logits")))
    if overrides.get("baseline") and len(models) > 1:
        raise UsageError(
            "--baseline compares one model; for several, set 'baseline' per model in "
            "[[tool.kerinspect.check.models]]",
            rule="usage",
        )

    def early(result: Any) -> None:  # refused before any worker starts: said now, listed again below
        from kerinspect.errors import escape_text

        rule, path, text = (escape_text(t) for t in (result.error.rule, result.path, result.error.message))
        click.echo(f"kerinspect: error[{rule}]: {path}: {text}", err=True)

    with ProgressBar(stderr_console()) as progress, ProgressBar(stderr_console(), "models") as models_done:
        run = check_models(
            models,
            config_file,
            overrides,
            progress=progress,
            reraise=debug_requested(),
            load=load,
            run_options=run_options,
            name_parameter=cli.flag,  # a model's error shows flags, as every other error here
            jobs=jobs,
            on_early_error=early,
            on_model_done=models_done,
            beam=beam,
        )
    for result in run.results:  # once per model that ran on noise, naming it
        warn_inputs(result, f"{result.path}: ")
    code = run.exit_code
    if junit_path:
        from kerinspect._ci import junit_xml

        code = write_junit(junit_path, junit_xml(run), code)
    if fmt == "json":
        from kerinspect.render import render_json

        click.echo(render_json(run))
    else:
        from kerinspect.render import render_check

        render_check(run, stdout_console(None))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from kerinspect._ci import github_annotations

        sys.stdout.flush()
        for line in github_annotations(run):
            click.echo(line, err=True)
    return code
