"""``python -m benchmarks NAME [--small] [options]`` — or ``all`` for every benchmark in turn.

Names: precompute, matrices, retrain, http, startup, quality, parse, drop, impact, enterprise.
Each prints its table (figures side by side, the ratio against its baseline, peak memory)
and whether each target is met. ``--small`` runs at small sizes in a minute or so;
``NAME --help`` lists the options of one benchmark.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

NAMES = (
    "precompute",
    "matrices",
    "retrain",
    "http",
    "startup",
    "quality",
    "parse",
    "drop",
    "impact",
    "enterprise",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name == "all":
        status = 0
        for each in NAMES:
            module = importlib.import_module(f"benchmarks.{each}")
            status |= module.main(rest)
        return status
    if name not in NAMES:
        print(f"unknown benchmark {name!r}; choose one of {', '.join(NAMES)} or all")
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
