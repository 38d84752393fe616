"""Peak memory of reading a trainings-taken extract, against the file's size.

A trainings-taken file of ``rows`` rows (100,000 employees x 5,000 trainings, a
rating and a date each) is parsed and validated against the known ids in a fresh
interpreter, read from disk a piece at a time; its peak resident memory over what the
interpreter held before (VmHWM) is compared with the file's size. Target: at most 4x
the file (a 2 GB Functions instance then reads a few hundred MB:
``contract.limits.max_bytes`` is 256 MiB), from 13x before the cells were read as codes
(1 M rows, measured). ``benchmarks drop`` measures the same through the blob trigger.

    python -m benchmarks parse            # 1 M and 10 M rows
    python -m benchmarks parse --small    # 100,000 and 1 M rows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, REPO, Table, header, log

FULL = (1_000_000, 10_000_000)
SMALL = (100_000, 1_000_000)
TARGET = 4.0  # peak over the loaded bytes, in file sizes

_MEASURE = """
import json, sys, time
import pandas as pd
from shared.schema import parse_taken
from shared.settings import DataContract, Limits
stream = open(sys.argv[1], "rb")
users = pd.Index([f"{i:06d}" for i in range(1, 100_001)])
trainings = pd.Index([f"T{i:05d}" for i in range(1, 5_001)])
# The size limit raised: 10 M rows (257 MiB) are just over the default one.
contract = DataContract(limits=Limits(max_bytes=stream.seek(0, 2)))
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
started = time.perf_counter()
frame, report = parse_taken(stream, contract, "taken.csv", users, trainings)
seconds = time.perf_counter() - started
print(json.dumps({"peak": status("VmHWM:") - before, "seconds": seconds,
                  "rows": report.rows_read, "kept": report.rows_kept}))
"""


def taken_csv(rows: int, folder: Path = CACHE / "parse") -> Path:
    """A trainings-taken extract of ``rows`` rows (cached: same rows, same file)."""
    path = folder / f"taken-{rows}.csv"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with path.open("w") as out:
        out.write("User-Id,Training-Id,rating,date\n")
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            users, trainings = rng.integers(1, 100_001, n), rng.integers(1, 5_001, n)
            ratings, days = rng.integers(1, 6, n), rng.integers(1, 29, n)
            out.write(
                "".join(
                    f"{u:06d},T{t:05d},{r},2025-03-{d:02d}\n"
                    for u, t, r, d in zip(users, trainings, ratings, days, strict=True)
                )
            )
    return path


def run(sizes: Sequence[int]) -> Table:
    table = Table("parse + validate a trainings-taken extract, streamed: peak memory over the file")
    ratios = []
    for rows in sizes:
        path = taken_csv(rows)
        log(f"{rows:,} rows: parsing in a fresh interpreter")
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        measured = json.loads(out)
        size = path.stat().st_size
        ratio = measured["peak"] / size
        ratios.append(ratio)
        table.add(
            f"{rows:,} rows ({size / 2**20:,.0f} MiB)",
            measured["seconds"],
            f"{ratio:.1f}x the file; {measured['kept']:,} rows kept",
            peak_bytes=measured["peak"],
            ratio=False,
        )
    worst = max(ratios)
    table.target(f"peak <= {TARGET:g}x the file", worst <= TARGET, f"worst {worst:.1f}x")
    table.result = ratios
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks parse")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else FULL
    header("parse", ", ".join(f"{n:,} rows" for n in sizes))
    table = run(sizes)
    table.print()
    return 0 if table.all_met else 1
