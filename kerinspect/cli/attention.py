"""``kerinspect attention``: the health of every attention head."""

from __future__ import annotations

from typing import Any

import click

from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    attention_threshold_options,
    engine_option,
    input_options,
    load_options,
    make_load_options,
    output_options,
    run_spec,
)
from kerinspect.cli.output import ProgressBar, emit, stderr_console


@cli.command()
@click.argument("model", metavar="MODEL")
@input_options
@engine_option
@attention_threshold_options
@load_options
@output_options
@debug_option
def attention(
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
    """Run MODEL on sample inputs and show the health of every attention head.

    One table per attention layer call (MultiHeadAttention and its subclasses,
    GroupedQueryAttention), at any depth, one row per head: mean normalised entropy
    (1: attends to everything equally), its minimum over queries, mean largest
    weight (1: one key takes all), weight on the first key (sink), weight on the
    query's own position (diagonal), and the largest row-sum error. Masked keys
    and fully masked query rows are left out. Flags: uniform-attention,
    collapsed-attention. The probabilities are those the model computes, even
    where a fused kernel never materialises them (recomputed and verified).

    \b
    Examples:
      kerinspect attention model.keras
      kerinspect attention model.keras --input batch.npz --format json
    """
    from kerinspect.api import inspect_model

    spec = run_spec(run_options)
    load = make_load_options(timeout, max_memory, custom_objects, trust_model, max_params)
    with ProgressBar(stderr_console()) as progress:
        report = inspect_model(model, input_file, spec=spec, progress=progress, load=load)
    from kerinspect.render import attention_json, render_attention_markdown, render_attention_table

    if fmt == "json":
        from kerinspect.render import render_json

        click.echo(render_json(attention_json(report)))
        return
    emit(report, fmt, width, render_attention_table, render_attention_markdown)
