"""What every benchmark shares: timing, peak memory, the printed table, cached data.

Timing is ``time.perf_counter`` wall time of the call alone. Peak memory is what
``tracemalloc`` saw allocated at most during the call, above what was allocated
when it started (numpy and scipy report their arrays to tracemalloc; BLAS work
buffers are not included). Tracing slows pure-Python code down, so a measured call
is timed untraced and its peak taken from a second, traced run, unless the caller
says that one run is enough (numpy-heavy code, where tracing costs nothing).
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "var" / "benchmarks"  # /var/ is ignored by git
MiB = 1024 * 1024
T = TypeVar("T")


@dataclass
class Measure:
    """One measured call: wall seconds and the traced peak of new allocations."""

    seconds: float
    peak_bytes: int | None
    result: Any = None


def measure(fn: Callable[[], T], *, memory: str = "same", repeat: int = 1) -> tuple[T, Measure]:
    """Time ``fn()``; ``memory``: ``"same"`` (traced while timed), ``"separate"`` or ``"none"``.

    With ``repeat`` > 1 the best wall time is kept (the machine is shared; the best
    run is the one least disturbed).
    """
    best = float("inf")
    peak: int | None = None
    result: Any = None
    for _ in range(max(repeat, 1)):
        gc.collect()
        traced = memory == "same" and peak is None
        if traced:
            tracemalloc.start()
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - started
        if traced:
            peak = tracemalloc.get_traced_memory()[1] - before
            tracemalloc.stop()
        best = min(best, elapsed)
    if memory == "separate":
        result = None
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
    return result, Measure(best, peak, result)


@dataclass
class Row:
    what: str
    seconds: float
    peak_bytes: int | None = None
    note: str = ""
    baseline: bool = False
    ratio: bool = True  # False: a part of a whole, not an alternative to the baseline


@dataclass
class Table:
    """The printed result of a benchmark: figures side by side, ratio against the baseline."""

    title: str
    rows: list[Row] = field(default_factory=list)
    targets: list[tuple[str, bool, str]] = field(default_factory=list)  # (target, met, detail)
    notes: list[str] = field(default_factory=list)
    result: Any = None  # what was computed, for the smoke tests to check

    def add(
        self,
        what: str,
        m: Measure | float,
        note: str = "",
        *,
        baseline: bool = False,
        peak_bytes: int | None = None,
        ratio: bool = True,
    ) -> Row:
        seconds = m.seconds if isinstance(m, Measure) else float(m)
        peak = m.peak_bytes if isinstance(m, Measure) else peak_bytes
        row = Row(what, seconds, peak, note, baseline, ratio)
        self.rows.append(row)
        return row

    def target(self, text: str, met: bool, detail: str = "") -> None:
        self.targets.append((text, met, detail))

    @property
    def baseline(self) -> Row | None:
        return next((r for r in self.rows if r.baseline), None)

    def render(self) -> str:
        base = self.baseline
        header = ["what", "seconds", "vs baseline", "peak MiB", "note"]
        lines = [header]
        for row in self.rows:
            if base is None or row.seconds <= 0 or not row.ratio:
                ratio = ""
            elif row is base:
                ratio = "1.0x (baseline)"
            else:
                ratio = _ratio(base.seconds, row.seconds)
            peak = "" if row.peak_bytes is None else f"{row.peak_bytes / MiB:,.1f}"
            lines.append([row.what, f"{row.seconds:,.3f}", ratio, peak, row.note])
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = [self.title, "=" * len(self.title)]
        for n, line in enumerate(lines):
            cells = [
                cell.rjust(w) if 0 < i < 4 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ]
            out.append("  ".join(cells).rstrip())
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        for text, met, detail in self.targets:
            out.append(
                f"target {text}: {'MET' if met else 'NOT MET'}{f' ({detail})' if detail else ''}"
            )
        out.extend(self.notes)
        return "\n".join(out)

    def print(self) -> None:
        print(self.render(), flush=True)
        print(flush=True)

    @property
    def all_met(self) -> bool:
        return all(met for _, met, _ in self.targets)


def _ratio(baseline: float, seconds: float) -> str:
    factor = baseline / seconds
    return f"{factor:,.1f}x faster" if factor >= 1 else f"{1 / factor:,.2f}x slower"


def rss_reset(pid: int | str = "self") -> None:
    """Restart the kernel's peak-RSS record of a process (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")


def rss_peak(pid: int | str = "self") -> int | None:
    """Peak resident memory of a process in bytes since start or :func:`rss_reset` (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if pid == "self":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return None


def machine() -> str:
    """One line about where the figures come from."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    except ImportError:  # pragma: no cover
        blas = "unknown"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}, BLAS {blas}; load average {load}"
    )


def header(name: str, sizes: str) -> None:
    print(f"# benchmark {name}: {sizes}", flush=True)
    print(f"# {machine()}", flush=True)


def log(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


def synthetic_csvs(
    n_users: int, n_trainings: int, n_interactions: int, seed: int = 0, *, root: Path = CACHE
) -> dict[str, Path]:
    """The three extracts (and the oracle) of :func:`shared.synthetic.generate`, cached.

    Generating 100,000 employees takes a minute or two, so each size is written once
    under ``var/benchmarks/data/`` and reused.
    """
    folder = root / "data" / f"{n_users}-{n_trainings}-{n_interactions}-{seed}"
    kinds = ("users", "trainings", "trainings-taken")
    paths = {kind: folder / f"{kind}.csv" for kind in kinds}
    if not all(p.exists() for p in paths.values()):
        from shared.synthetic import generate, write_csvs

        started = time.perf_counter()
        log(f"generating {n_users:,} employees / {n_trainings:,} trainings (cached in {folder})")
        data = generate(n_users, n_trainings, n_interactions, seed=seed)
        tmp = folder.with_name(folder.name + ".tmp")
        written = write_csvs(data, tmp)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
        log(f"generated in {time.perf_counter() - started:.1f} s")
        del written
    return paths


def fmt_int(n: int) -> str:
    return f"{n:,}"


def parse_sizes(argv: Sequence[str] | None, small: dict[str, int], full: dict[str, int]) -> Any:
    """Shared command line: ``--small`` or explicit sizes (``--users 1000`` …)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="quick run at small sizes")
    for name, value in full.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value:,}"
        )
    args = parser.parse_args(argv)
    sizes = dict(small if args.small else full)
    for name in full:
        given = getattr(args, name)
        if given is not None:
            sizes[name] = given
    return sizes
