"""``kerinspect dump``: chosen layer outputs saved as ``.npy`` files, and what was written."""

from __future__ import annotations

import os
from typing import Any

import click

from kerinspect import spec as sp
from kerinspect.cli.group import cli, debug_option
from kerinspect.cli.options import (
    ByteSize,
    SpecOption,
    beam_options,
    dump_engine_option,
    input_options,
    load_options,
    percentiles_option,
    spec_argument,
)
from kerinspect.cli.output import ProgressBar, stderr_console
from kerinspect.errors import escape_text
from kerinspect.spec import LoadOptions, RunSpec


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option("--out", "-o", required=True, metavar="DIR", help="Output directory (created if missing).")
@input_options
@click.option(
    "--layers",
    "-l",
    multiple=True,
    metavar="PATTERN",
    help="Dump only layer calls whose path matches this glob (repeatable): 'encoder/*', "
    "'lstm', 'shared@1'. Default: every layer call.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a previous kerinspect dump in DIR (only the files its manifest lists).",
)
@click.option(
    "--max-bytes",
    cls=SpecOption,
    spec_default=sp.DEFAULT_MAX_BYTES,
    shown=sp.DEFAULT_MAX_BYTES_TEXT,
    type=ByteSize(),
    help="Refuse a dump larger than this (tensors and inputs): 500M, 2GiB, 2GB, bytes.",
)
@dump_engine_option
@percentiles_option
@load_options
@beam_options
@debug_option
@spec_argument
def dump(
    model: str,
    out: str,
    input_file: str | None,
    overwrite: bool,
    spec: RunSpec,
    load: LoadOptions,
    runner: str | None = None,
    pipeline_options: tuple[str, ...] = (),
) -> None:
    """Run MODEL on sample inputs and save layer outputs as .npy files in DIR.

    One .npy per output tensor of every selected layer call, all samples stacked
    on axis 0, plus the inputs used (DIR/inputs/) and DIR/manifest.json, which
    maps each file to its layer. File names never come from layer names. A
    non-empty DIR is refused unless --overwrite; the dump is complete once
    manifest.json exists.

    \b
    Examples:
      kerinspect dump model.keras --out acts
      kerinspect dump model.keras -o acts --layers 'encoder/*' --samples 256
      kerinspect dump model.h5 -o acts --input batch.npz --overwrite
      kerinspect dump model.keras -o stats --input 'shards/*.tfrecord' --runner DirectRunner

    With --runner, statistics only: DIR/statistics.json, the selected layer calls'
    statistics over every record of the shards, computed on Apache Beam (summary's JSON);
    no .npy (every sample's activations of a dataset would not fit one machine).
    """
    if runner is not None or pipeline_options:
        from kerinspect.beam.pipeline import dump_statistics_on_beam

        path, data = dump_statistics_on_beam(
            model, out, input_file, runner, pipeline_options, spec=spec, load=load, overwrite=overwrite
        )
        tensors = sum(len(r["outputs"]) for r in data["layers"])
        click.echo(
            f"Dumped the statistics of {tensors} tensors of {len(data['layers'])} layer calls, "
            f"{data['samples']} samples, computed on Beam ({escape_text(str(runner), 40)}), "
            f"to {escape_text(path, 200)}"
        )
        return
    from kerinspect.api import dump_activations

    with ProgressBar(stderr_console()) as progress:
        result = dump_activations(
            model, out, input_file, spec=spec, overwrite=overwrite, progress=progress, load=load
        )
    _echo_dump(result, out)


def _echo_dump(result: Any, out: str) -> None:
    """What was written: one line per file (names escaped: they come from the model)."""
    from kerinspect.dump import MANIFEST, format_bytes

    m = result.manifest
    calls = len({t["index"] for t in m["tensors"]})
    n_in = len(m["inputs"])
    click.echo(
        f"Dumped {len(m['tensors'])} tensors of {calls} layer calls and {n_in} input{'s' * (n_in != 1)}, "
        f"{m['samples']} samples, {format_bytes(m['total_bytes'], exact=False)}, to {escape_text(out, 200)}"
    )
    rows = []
    for t in m["tensors"]:
        note = f" (from {t['source_dtype']})" if t["source_dtype"] != t["dtype"] else ""
        rows.append((t["file"], escape_text(t["key"], 80), t["shape"], t["dtype"] + note))
    for i in m["inputs"]:
        rows.append((i["file"], "input " + escape_text(i["name"], 74), i["shape"], i["dtype"]))
    w_file = max((len(r[0]) for r in rows), default=0)
    w_key = max((len(r[1]) for r in rows), default=0)
    for file, key, shape, dtype in rows:
        shown = "(" + ", ".join(map(str, shape)) + ")"
        click.echo(f"  {file:<{w_file}}  {key:<{w_key}}  {shown} {dtype}")
    for s in m["skipped"]:
        what = escape_text(f"{s['path']}:{s['output_name']}", 120)
        click.echo(f"  skipped {what}: {escape_text(s['reason'] or '', 120)}")
    if m.get("engine") not in (None, "eager"):
        click.echo(f"engine: {escape_text(m['engine'], 80)}")
    for note in m.get("notes") or ():
        click.echo(f"note: {escape_text(note, 400)}")
    click.echo(f"manifest: {escape_text(os.path.join(out, MANIFEST), 200)}")
