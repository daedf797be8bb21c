"""``python -m kerinspect``."""

from .cli import main

main()
