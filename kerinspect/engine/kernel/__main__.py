"""``python -m kerinspect.engine.kernel``: build the fused statistics kernel for the
installed TensorFlow (see :mod:`kerinspect.engine.kernel`); prints its path. Exit 1,
with the reason, when it cannot be built; kerinspect then runs without it."""

from __future__ import annotations

import sys

from kerinspect.engine.kernel import build
from kerinspect.engine.tfenv import import_keras


def main() -> int:
    import_keras()  # TensorFlow, quietly
    try:
        path = build()
    except (RuntimeError, OSError) as e:
        print(f"kerinspect: the fused statistics kernel was not built: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
