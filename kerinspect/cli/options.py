"""The options the commands share, built once: what to feed the model
(:func:`input_options`), how the file is opened (:func:`load_options`), what is
flagged (:func:`threshold_options`), how the output looks (:func:`output_options`);
and their translation into the library's :class:`~kerinspect.spec.RunSpec` and
:class:`~kerinspect.spec.LoadOptions` (:func:`run_spec`, :func:`make_load_options`).

Every default lives in :mod:`kerinspect.spec`; an option is named after the spec
field it sets, which is also how :meth:`kerinspect.cli.group.KerinspectGroup.flag`
finds the flag of a parameter that an error references.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from kerinspect import spec as sp
from kerinspect.errors import KerinspectError


class SpecOption(click.Option):
    """An option whose default lives in :mod:`kerinspect.spec`.

    Click itself sees ``default=None``, so a value that is not None was given on the
    command line (``check`` relies on it: options override the configuration file);
    the help still shows the real default, ``spec_default`` (or its text ``shown``).
    """

    def __init__(self, *args: Any, spec_default: Any, shown: str | None = None, **kwargs: Any):
        kwargs["default"] = None
        super().__init__(*args, **kwargs)
        self.spec_default = spec_default
        self.shown = str(spec_default) if shown is None else shown

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        extra["default"] = self.shown
        return extra


def spec_float_option(
    *param_decls: str,
    default: float,
    type: click.ParamType,
    help: str,
    shown: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A float :class:`SpecOption`: a threshold or limit whose ``default`` lives in
    :mod:`kerinspect.spec`, shown in the help as ``f"{default:g}"`` (``1e-06``,
    ``600``) unless ``shown`` says otherwise."""
    return click.option(
        *param_decls,
        cls=SpecOption,
        spec_default=default,
        shown=f"{default:g}" if shown is None else shown,
        type=type,
        help=help,
    )


def is_given(value: Any) -> bool:
    """Whether an option was given: Click passes None (or ``()`` for a repeatable
    option) when it was not, since no option here has a Click default."""
    return value is not None and value != ()


def run_spec(options: dict[str, Any]) -> sp.RunSpec:
    """The :class:`~kerinspect.spec.RunSpec` of a command's run options, by name (the
    options are named after the spec's fields; ``max_abs`` and friends after those of
    its ``thresholds``). An option not given keeps the spec's default."""
    given = {k: v for k, v in options.items() if is_given(v)}
    limits = {k: given.pop(k) for k in sp.field_names(sp.Thresholds) if k in given}
    return sp.RunSpec(thresholds=sp.Thresholds(**limits), **given)


#: The run options (named after the fields of the RunSpec and of its Thresholds).
RUN_OPTIONS = frozenset((*sp.field_names(sp.RunSpec), *sp.field_names(sp.Thresholds)))


def spec_argument(f: Callable[..., Any]) -> Callable[..., Any]:
    """The command receives its run options as one ``spec`` argument (:func:`run_spec`);
    put it right above the command's ``def``."""

    @functools.wraps(f)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in RUN_OPTIONS}
        return f(*args, spec=run_spec(options), **kwargs)

    return gathered


def input_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that runs the model."""
    opts = [
        click.option(
            "--input",
            "-i",
            "input_file",
            metavar="FILE",
            help="Feed your data: a folder, glob or file of images (PNG, JPEG, BMP, GIF; "
            "subfolders are labels), a .txt of one sample per line, a .csv/.tsv with a header, "
            "TFRecord shards of tf.train.Example (a glob), or .npy/.npz (keyed by input name). "
            "Default: synthetic samples drawn from what the model knows about its data.",
        ),
        click.option(
            "--samples",
            "-n",
            type=click.IntRange(min=1),
            default=None,
            help=f"Number of samples (synthetic default: {sp.DEFAULT_SAMPLES}; with --input: the first N).",
        ),
        click.option(
            "--batch-size",
            "-b",
            cls=SpecOption,
            spec_default=sp.DEFAULT_BATCH_SIZE,
            type=click.IntRange(min=1),
            help="Samples per forward pass; statistics are merged across batches.",
        ),
        click.option(
            "--seed",
            cls=SpecOption,
            spec_default=sp.DEFAULT_SEED,
            type=click.IntRange(min=0),
            help="Seed of the synthetic samples.",
        ),
        click.option(
            "--dim",
            cls=SpecOption,
            spec_default=sp.DEFAULT_DIM,
            type=click.IntRange(min=1),
            help="Size of every dynamic (None) axis of synthetic inputs.",
        ),
        click.option(
            "--preprocess",
            cls=SpecOption,
            spec_default=sp.DEFAULT_PREPROCESS,
            type=click.Choice(sp.PREPROCESS_MODES),
            help="How image pixels (decoded as 0-255) are scaled, as keras.applications "
            "does outside the saved model: none (0-255), unit (0-1), tf (-1..1), "
            "caffe (BGR, mean subtracted), torch (ImageNet mean/std).",
        ),
        click.option(
            "--label-column",
            metavar="NAME",
            default=None,
            help="The CSV/TSV column or TFRecord feature that holds labels (not fed to the model).",
        ),
        click.option(
            "--labels",
            metavar="FILE",
            default=None,
            help="Labels of inputs that hold none (.npy, .txt, a table without --label-column): a .npy "
            "of integers or strings or a .txt of one label per line, one per sample. With labels, "
            "every layer output gets its separability (the Sep column).",
        ),
        click.option(
            "--shape",
            "shapes",
            multiple=True,
            metavar="[NAME=]D1,D2,...",
            help="Per-sample shape of a synthetic input, batch axis excluded "
            "(repeatable). Overrides --dim for that input.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


class ByteSize(click.ParamType):
    """``2GiB``, ``500M``, ``2GB`` or a plain byte count (see :func:`kerinspect.dump.parse_size`)."""

    name = "SIZE"

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from kerinspect.dump import parse_size

        try:
            return parse_size(value, minimum=self.minimum)
        except KerinspectError as e:
            self.fail(e.message, param, ctx)


class ClassNamesFile(click.ParamType):
    """A class names file, read into the names (:func:`kerinspect.classes.read_class_names`;
    its errors are kerinspect's own: exit 3 or 9, one line)."""

    name = "FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        from kerinspect.classes import read_class_names

        return read_class_names(value)


def class_names_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--class-names FILE``: the names of a classifier's classes."""
    return click.option(
        "--class-names",
        "class_names",
        type=ClassNamesFile(),
        default=None,
        help="Name the classes of a classifier output: FILE holds one name per line, in class "
        "order (Teachable Machine's labels.txt, '0 name' per line, works as it is). Default: the "
        "label folders' names of a folder of images with as many classes, else class indices.",
    )(f)


def worker_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Limits of the isolated worker process that opens the model file."""
    opts: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        spec_float_option(
            "--timeout",
            default=sp.DEFAULT_TIMEOUT,
            type=click.FloatRange(min=0),
            help="Seconds the isolated worker may take to load and run the model (0: no limit).",
        ),
        click.option(
            "--max-memory",
            type=ByteSize(minimum=0),
            default=None,
            metavar="SIZE",
            help="Memory limit of the worker, e.g. 8G (default: half the RAM; 0: no limit).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


#: The options of :func:`load_options`, given to the command as one ``load`` argument.
LOAD_OPTIONS = ("timeout", "max_memory", "max_params", "custom_objects", "trust_model")


def load_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """How model files are opened: isolation limits, size limit, explicit trust; the
    command receives them as one ``load`` argument (:func:`make_load_options`)."""

    @functools.wraps(f)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        return f(*args, load=make_load_options(**{k: kwargs.pop(k) for k in LOAD_OPTIONS}), **kwargs)

    opts = [
        click.option(
            "--max-params",
            cls=SpecOption,
            spec_default=sp.DEFAULT_MAX_PARAMS,
            type=click.IntRange(min=1),
            help="Refuse a model with more parameters, before any weight is created: estimated from "
            "its config, or counted by a shapes-only build for keras-hub models.",
        ),
        click.option(
            "--custom-objects",
            metavar="FILE.py",
            default=None,
            help="Python file that defines or registers the model's custom classes "
            "(your own code; imported in the worker before loading).",
        ),
        click.option(
            "--trust-model",
            is_flag=True,
            help="The file is yours and trusted: allow code in it (Lambda layers, functions), and "
            "build a keras-hub model whose size cannot be counted first. Still runs in the isolated worker.",
        ),
    ]
    for opt in reversed(opts):
        gathered = opt(gathered)
    return worker_options(gathered)


def make_load_options(
    timeout: float | None,
    max_memory: int | None,
    custom_objects: str | None = None,
    trust_model: bool = False,
    max_params: int | None = None,
) -> sp.LoadOptions:
    """LoadOptions from the CLI flags (None: not given, the spec's default); warns
    loudly on stderr when trust is given."""
    if trust_model:
        click.echo(
            "kerinspect: warning: --trust-model: code stored in the model file may run "
            "(safe_mode is off); it stays inside the isolated worker.",
            err=True,
        )
    return sp.LoadOptions.from_options(
        timeout=timeout,
        max_memory=max_memory,
        custom_objects=custom_objects,
        trust_model=trust_model,
        max_params=max_params,
    )


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--format table|json|markdown`` and ``--width``: see :func:`kerinspect.cli.output.emit`."""
    f = click.option(
        "--width",
        type=click.IntRange(min=40),
        default=None,
        help="Table width in characters (default: the terminal's).",
    )(f)
    return click.option(
        "--format",
        "-f",
        "fmt",
        type=click.Choice(["table", "json", "markdown"]),
        default="table",
        show_default=True,
        help="Output format (stdout).",
    )(f)


def threshold_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        spec_float_option(
            "--max-abs",
            default=sp.DEFAULT_MAX_ABS,
            type=click.FloatRange(min=0, min_open=True),
            shown=str(sp.DEFAULT_MAX_ABS),  # "10000.0", as its help has always read
            help="Flag 'exploding' when a finite |value| exceeds this "
            "(float16: at most a tenth of its range).",
        ),
        spec_float_option(
            "--max-dead-fraction",
            default=sp.DEFAULT_MAX_DEAD_FRACTION,
            type=click.FloatRange(0, 1),
            help="Flag 'dead' when this share of units is zero for every sample.",
        ),
        spec_float_option(
            "--min-rms-ratio",
            default=sp.DEFAULT_MIN_RMS_RATIO,
            type=click.FloatRange(0, 1),
            help="Flag 'vanishing' when an output's RMS is below this times the RMS of its layer's float input.",
        ),
        spec_float_option(
            "--max-saturated-fraction",
            default=sp.DEFAULT_MAX_SATURATED_FRACTION,
            type=click.FloatRange(0, 1),
            help="Flag 'saturated' when this share of a tanh/sigmoid/hard_sigmoid layer's values sit "
            "at its bounds (softmax: of its distributions are one-hot).",
        ),
        spec_float_option(
            "--min-sample-spread",
            default=sp.DEFAULT_MIN_SAMPLE_SPREAD,
            type=click.FloatRange(0, 1),
            help="Flag 'constant' when an output's spread across samples is at most this times its RMS "
            "while its layer's input varies.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def gradient_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """How ``gradients`` (and ``report --gradients``) differentiate: the loss, logits,
    training mode, and the two gradient thresholds."""
    opts: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--loss",
            metavar="NAME",
            default=None,
            help="A built-in Keras loss name (sparse_categorical_crossentropy, mse, ...). "
            "Default: the loss the model was saved compiled with, when it is a built-in one.",
        ),
        click.option(
            "--from-logits",
            is_flag=True,
            default=None,
            help="With --loss, a cross-entropy takes the model's output as logits (a head without softmax or sigmoid).",
        ),
        click.option(
            "--training",
            is_flag=True,
            default=None,
            help="Run Dropout, BatchNormalization (every layer with a training argument) in training mode.",
        ),
        spec_float_option(
            "--vanishing-gradient",
            default=sp.DEFAULT_VANISHING_GRADIENT,
            type=click.FloatRange(min=0, min_open=True),
            help="Flag 'vanishing-gradient' where an output's gradient norm is below this times the gradient norm at the output layer's input.",
        ),
        spec_float_option(
            "--exploding-gradient",
            default=sp.DEFAULT_EXPLODING_GRADIENT,
            type=click.FloatRange(min=0, min_open=True),
            help="Flag 'exploding-gradient' where an output's gradient norm is above this times the gradient norm at the output layer's input.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def depth_option(verb: str, own: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--depth N`` (RunSpec ``depth``): how many nesting levels of layer calls a command
    looks at; ``verb`` says what it does with them, ``own`` whose layers level 1 is."""
    level1 = f" (1: {own} own layers only)" if own else ""
    return click.option(
        "--depth",
        "-d",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help=f"{verb} layer calls nested at most N levels deep{level1}. Default: every call at every depth.",
    )


def _engine_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--engine`` (RunSpec ``engine``): how the batches run, said as ``help_text``."""
    return click.option(
        "--engine",
        cls=SpecOption,
        spec_default=sp.DEFAULT_ENGINE,
        type=click.Choice(sp.ENGINES),
        help=help_text,
    )


#: ``--engine`` of the commands that keep statistics (summary, check, attention).
engine_option = _engine_option(
    "How batches run: 'compiled' traces the instrumented model once and runs each batch "
    "as one graph, statistics computed on the device; 'eager' runs it layer by layer, "
    "statistics in numpy. 'auto' compiles on a GPU from 2 batches; on a CPU it runs the "
    f"first batch eagerly and compiles the rest from {sp.AUTO_COMPILE_MIN_BATCHES} batches "
    f"when no output is above {sp.AUTO_COMPILE_MAX_TENSOR_BYTES >> 20} MiB. "
    "A model that cannot be traced, or a batch with NaN/Inf, runs eagerly (with a note)."
)
#: ``--engine`` of ``dump``: how the batches after the first run.
dump_engine_option = _engine_option(
    "How batches run: the first always layer by layer (it chooses the tensors); "
    "'compiled' runs the rest as one traced graph that returns only the chosen tensors, "
    "'eager' layer by layer. 'auto' compiles them on a GPU; on a CPU from "
    f"{sp.AUTO_COMPILE_MIN_BATCHES} batches, when the chosen tensors of a batch hold at most "
    f"{sp.AUTO_COMPILE_MAX_FETCH_BYTES >> 20} MiB. Under 'auto' a model that cannot be "
    "traced runs eagerly (with a note); 'compiled' then fails (not-compiled)."
)


#: ``--percentiles`` (RunSpec ``percentiles``) of the commands that keep statistics.
percentiles_option = click.option(
    "--percentiles",
    is_flag=True,
    default=None,
    help="Also give every float output's 1st, 50th and 99th percentiles (p01, p50, p99 in "
    "the JSON stats, dump's in its manifest; within 0.78% of numpy's), from a mergeable "
    "quantile sketch. Off by default: "
    "it costs the compiled engine up to 1.4x its run time on a CPU (eager: about 1.1x).",
)


def attention_threshold_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Limits of the per-head attention flags."""
    opts = [
        spec_float_option(
            "--uniform-attention-entropy",
            default=sp.DEFAULT_UNIFORM_ATTENTION_ENTROPY,
            type=click.FloatRange(0, 1),
            help="Flag a head 'uniform-attention' when every query's normalised entropy is at least this.",
        ),
        spec_float_option(
            "--collapsed-attention-weight",
            default=sp.DEFAULT_COLLAPSED_ATTENTION_WEIGHT,
            type=click.FloatRange(0, 1),
            help="Flag a head 'collapsed-attention' when every query puts at least this weight on one key.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def vocab_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--vocab FILE``: the words of the model's token ids (``report``, ``attention``)."""
    return click.option(
        "--vocab",
        metavar="FILE",
        help="Decode the model's integer inputs with FILE (one token per line, line i: the text "
        "of id i) so attention axes show words. Default: the vocabulary the model holds "
        "(TextVectorization, StringLookup, IntegerLookup, a keras-hub tokenizer), if any.",
    )(f)


def sample_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--sample K``: the sample a command draws (``report``) or shows the words of
    (``attention``)."""
    return click.option(
        "--sample",
        "-k",
        cls=SpecOption,
        spec_default=sp.DEFAULT_SAMPLE,
        type=click.IntRange(min=0),
        metavar="K",
        help=help_text,
    )


def beam_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--runner NAME`` and ``--pipeline-option KEY=VALUE``: the run on Apache Beam
    (:mod:`kerinspect.beam`)."""
    f = click.option(
        "--pipeline-option",
        "pipeline_options",
        metavar="KEY=VALUE",
        multiple=True,
        help="A Beam pipeline option, passed through as --KEY=VALUE (repeatable): "
        "direct_num_workers=2, direct_running_mode=multi_processing, project=..., region=..., "
        "temp_location=gs://... (where the report is written for remote runners).",
    )(f)
    return click.option(
        "--runner",
        metavar="NAME",
        help="Run over the --input TFRecord shards on Apache Beam (pip install 'kerinspect[beam]'): "
        "DirectRunner (in-process, nothing downloaded), DataflowRunner, FlinkRunner, SparkRunner. "
        "The same report, statistics merged across Beam workers. Default: this machine, one worker.",
    )(f)
