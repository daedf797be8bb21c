"""The ``kerinspect`` command line: parse options, call :mod:`kerinspect.api`, render, exit.

One module per command (``summary``, ``attention``, ``weights``, ``check``, ``diff``,
``dump``, ``report``), each registering itself on the group of :mod:`.group`, which
also prints errors (library parameters shown as flags); :mod:`.options` holds the
options the commands share, :mod:`.output` where their output goes.

Heavy imports (TensorFlow, Keras, the engine) happen inside commands, so that
``kerinspect --help`` and ``--version`` answer at once.
"""

from __future__ import annotations

from kerinspect.cli import attention, check, diff, dump, gradients, report, summary, weights  # noqa: F401 - register the commands
from kerinspect.cli.group import cli, main
from kerinspect.cli.options import SpecOption, run_spec
from kerinspect.cli.output import ProgressBar

#: The progress bar's name before the package split (tests use it).
_ProgressBar = ProgressBar

__all__ = ["ProgressBar", "SpecOption", "cli", "main", "run_spec"]
