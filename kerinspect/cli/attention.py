"""``kerinspect attention``: the health of every attention head."""

from __future__ import annotations

import click

from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    attention_threshold_options,
    engine_option,
    input_options,
    load_options,
    output_options,
    sample_option,
    spec_argument,
    vocab_option,
)
from kerinspect.cli.output import ProgressBar, emit, stderr_console, warn_inputs
from kerinspect.spec import LoadOptions, RunSpec


@cli.command()
@click.argument("model", metavar="MODEL")
@input_options
@engine_option
@attention_threshold_options
@vocab_option
@sample_option("With a vocabulary: show the words of sample K (0-based) on each layer's axes.")
@load_options
@output_options
@debug_option
@spec_argument
def attention(
    model: str,
    input_file: str | None,
    fmt: str,
    width: int | None,
    spec: RunSpec,
    load: LoadOptions,
) -> None:
    """Run MODEL on sample inputs and show the health of every attention head.

    One table per attention layer call (MultiHeadAttention and its subclasses,
    GroupedQueryAttention, Attention, AdditiveAttention, and any layer call that
    computes a softmax over a keys axis: a custom layer's keras.ops.softmax, a
    Softmax or Activation('softmax') layer, a hidden Dense with a softmax; not the
    model's own output), at any depth, one row per head: mean normalised entropy
    (1: attends to everything equally), its minimum over queries, mean largest
    weight (1: one key takes all), weight on the first key (sink), weight on the
    query's own position (diagonal), and the largest row-sum error. Masked keys
    and fully masked query rows are left out. Flags: uniform-attention,
    collapsed-attention, single-key-attention (one key). The probabilities are those the model computes, even
    where a fused kernel never materialises them (recomputed and verified).

    When the model holds its vocabulary (TextVectorization, StringLookup,
    IntegerLookup, a keras-hub tokenizer) or --vocab gives one, each layer's
    title is followed by the words of one sample (--sample) on its axes.

    \b
    Examples:
      kerinspect attention model.keras
      kerinspect attention model.keras --input batch.npz --format json
      kerinspect attention ids.keras --input ids.npy --vocab vocab.txt --sample 2
    """
    from kerinspect.api import inspect_model

    with ProgressBar(stderr_console()) as progress:
        report = inspect_model(model, input_file, spec=spec, progress=progress, load=load)
    warn_inputs(report)
    from kerinspect.render import attention_json, render_attention_markdown, render_attention_table

    if fmt == "json":
        from kerinspect.render import render_json

        click.echo(render_json(attention_json(report)))
        return
    emit(report, fmt, width, render_attention_table, render_attention_markdown)
