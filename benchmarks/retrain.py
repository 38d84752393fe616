"""Retrain end to end, and where the time goes besides LightFM's own fitting.

One :func:`shared.pipeline.retrain` over a local-folder store holding the accepted
synthetic extracts: read, validate, build the matrices, then on each of the
evaluation's repeated splits fit with early stopping, choose each population's scorer
on validation data and measure it (and the baselines) on test data; gate, refit on
everything, export, publish (bundle, card), precompute every employee's candidates
and the CSV export.

The baseline is the bare fitting inside it: the time spent in ``LightFM.fit_partial``
(the evaluation fits' epochs plus the final refit's). Every other step is timed by
wrapping the functions that do it (exclusive times: a step's children are not
counted twice), so the table says where the rest goes.

Targets: the whole retrain ≤ 1.5x the bare fitting; the process's peak RSS ≤ 1 GiB
(at 100,000 x 5,000: 855 MiB, the evaluation's; it was 1,994 MiB when the CSV export was
one frame of strings); progress ≤ 2 % of the retrain: every event drawn as ``rich`` bars
(on a terminal that is not shown) and as log lines, its cost the time spent drawing
them plus the CPU time of the bars' refresh thread.

    python -m benchmarks retrain                 # 100,000 employees x 5,000 trainings
    python -m benchmarks retrain --small         # 10,000 employees
    python -m benchmarks retrain --epochs 10     # cap the epochs (early stopping decides below it)
    python -m benchmarks retrain --profile FILE  # also write a pyinstrument profile (text)
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, Table, header, log, rss_peak, rss_reset, synthetic_csvs
from shared.progress import LogLines, Progress, ProgressEvent, RichBars

FULL = {"users": 100_000, "trainings": 5_000, "interactions": 1_000_000}
SMALL = {"users": 10_000, "trainings": 1_000, "interactions": 100_000}
BARE_FIT = "LightFM.fit_partial: the bare fitting (the evaluation's fits + the final refit)"


class DrawnProgress(Progress):
    """Every event drawn twice, as bars and as log lines (into memory), the time it took
    counted: what progress costs a run on a terminal and in a log at once."""

    def __init__(self) -> None:
        from rich.console import Console

        super().__init__()
        self.bars = RichBars(Console(file=io.StringIO(), force_terminal=True, width=120))
        logger = logging.getLogger("benchmarks.retrain.progress")
        logger.propagate, logger.handlers = False, [logging.StreamHandler(io.StringIO())]
        logger.setLevel(logging.INFO)
        self.lines = LogLines(logger)
        self.seconds, self.events, self.epochs = 0.0, 0, 0

    def emit(self, event: ProgressEvent) -> None:
        started = time.perf_counter()
        self.bars.emit(event)
        self.lines.emit(event)
        self.seconds += time.perf_counter() - started
        self.events += 1
        self.epochs += event.kind == "advance" and event.path[-1] == "fit"

    def refresh_seconds(self) -> float:
        """CPU time of the bars' refresh thread so far (Linux)."""
        thread = self.bars._bars.live._refresh_thread
        if thread is None or thread.ident is None:
            return 0.0
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class Phases:
    """Exclusive wall time per wrapped function, by label (main thread only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.peaks: dict[str, int] = {}  # the process's peak RSS when the step last ended
        self._stack: list[list[Any]] = []
        self._patches: list[tuple[Any, str, Any]] = []
        self._thread = threading.get_ident()

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._thread:
                return original(*args, **kwargs)
            started = time.perf_counter()
            self._stack.append([label, 0.0])
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                _, children = self._stack.pop()
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed - children
                self.calls[label] = self.calls.get(label, 0) + 1
                self.peaks[label] = rss_peak() or 0
                if self._stack:
                    self._stack[-1][1] += elapsed

        setattr(owner, attr, timed)
        self._patches.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._patches):
            setattr(owner, attr, original)
        self._patches.clear()


def instrument(phases: Phases) -> None:
    import pandas as pd
    from lightfm import LightFM

    from shared import azureml, modeling, pipeline, storage, table, training
    from shared.bundle import ModelBundle

    targets: list[tuple[Any, str, str]] = [
        (pipeline, "retrain", "retrain: the rest (lease, result)"),
        (pipeline, "load_current_data", "read + validate the three extracts (parse_all)"),
        (modeling, "train_model", "train_model: the rest"),
        (modeling, "build_dataset", "build the matrices (build_dataset)"),
        (modeling, "evaluate_candidate", "evaluation: the rest (splits, populations)"),
        (modeling, "training_rows", "fold-out rows (employees described by part of a history)"),
        (modeling, "fit", "fit loop: the rest (best-epoch copies)"),
        (LightFM, "fit_partial", BARE_FIT),
        (training, "factors_of", "per epoch: factors from features"),
        (training, "precision_per_row", "per epoch: validation precision@k"),
        (modeling, "_choose", "evaluation: choosing each population's scorer (validation)"),
        (modeling, "_measure_test", "evaluation: test metrics of the served scorer and baselines"),
        (modeling, "bundle_from_fit", "export the bundle"),
        (modeling, "_distribution_of", "export: top-k spread over the catalog (for_all)"),
        (pipeline, "gate_candidate", "quality gate"),
        (pipeline, "publish", "publish: the rest (pointer, metadata)"),
        (ModelBundle, "to_bytes", "publish: bundle to npz (compressed)"),
        (pipeline, "render_card", "publish: model card (matplotlib)"),
        (pipeline, "precompute", "precompute: the rest (pointer, meta)"),
        (pipeline, "compute_recommendations", "precompute: every employee's candidates"),
        (table.CsvExport, "write", "precompute: CSV export frames (a piece at a time)"),
        (table.RecommendationTable, "to_bytes", "precompute: table to npz (compressed)"),
        (pd.DataFrame, "to_csv", "precompute: CSV text"),
        (storage.LocalFolderStore, "write", "store writes (local folder)"),
        (storage.LocalFolderStore, "read", "store reads (local folder)"),
        (azureml, "register_pending", "Azure ML registration (skipped: no settings)"),
    ]
    for owner, attr, label in targets:
        phases.wrap(owner, attr, label)


def prepare_store(sizes: dict[str, int], config: Any, folder: Path, root: Path = CACHE) -> Any:
    """A fresh local-folder store with the three synthetic extracts accepted (not timed)."""
    from shared.pipeline import drop_extract
    from shared.storage import LocalFolderStore

    paths = synthetic_csvs(sizes["users"], sizes["trainings"], sizes["interactions"], root=root)
    if folder.exists():
        shutil.rmtree(folder)
    store = LocalFolderStore(folder)
    for kind in ("users", "trainings", "trainings-taken"):
        with paths[kind].open("rb") as f:
            result = drop_extract(store, f"{kind}/{kind}.csv", f, config)
        if result.status != "accepted":
            raise RuntimeError(f"{kind}: {result.status} {result.report}")
    return store


def run(
    sizes: dict[str, int],
    *,
    epochs: int | None = None,
    gate: bool = True,
    root: Path = CACHE,
    profile: Path | None = None,
    config: Any = None,
) -> Table:
    from shared.azureml import registrar
    from shared.pipeline import retrain
    from shared.settings import Config

    config = config or Config()
    updates: dict[str, Any] = {}
    if epochs is not None:
        updates["model"] = config.model.model_copy(update={"epochs": epochs})
    if not gate:
        updates["gate"] = config.gate.model_copy(update={"enabled": False})
    config = config.model_copy(update=updates)
    header(
        "retrain",
        f"{sizes['users']:,} employees, {sizes['trainings']:,} trainings, "
        f"{sizes['interactions']:,} trainings taken; {config.model.no_components} factors, "
        f"at most {config.model.epochs} epochs, early stopping "
        f"{'on' if config.model.early_stopping else 'off'}, local-folder store",
    )
    folder = root / "retrain-store"
    log(f"accepting the extracts into {folder} (not timed)")
    store = prepare_store(sizes, config, folder, root)

    phases = Phases()
    instrument(phases)
    progress = DrawnProgress()

    log("retrain")
    profiler = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.01)
        profiler.start()
    rss_reset()
    started = time.perf_counter()
    try:
        with progress.bars:
            result = retrain(store, config, registrar=registrar({}), progress=progress)
            drawing = progress.seconds + progress.refresh_seconds()
    finally:
        total = time.perf_counter() - started
        phases.restore()
        if profiler is not None:
            profiler.stop()
    if profiler is not None and profile is not None:
        profile.write_text(profiler.output_text(unicode=False, color=False), encoding="utf-8")
        log(f"profile written to {profile}")

    bare = phases.seconds.get(BARE_FIT, 0.0)
    table = Table(
        f"retrain end to end: {sizes['users']:,} employees x {sizes['trainings']:,} trainings, "
        f"{sizes['interactions']:,} taken, local-folder store ({result.status})"
    )
    fits = phases.calls.get(BARE_FIT, 0)
    table.add(BARE_FIT, bare, f"{fits} epochs in all", baseline=True)
    table.add(
        "retrain total",
        total,
        "everything below, end to end; peak MiB: the process's peak RSS during it",
        peak_bytes=rss_peak(),
    )
    accounted = 0.0
    for label, seconds in sorted(phases.seconds.items(), key=lambda item: -item[1]):
        if label == BARE_FIT:
            accounted += seconds
            continue
        accounted += seconds
        calls = phases.calls[label]
        table.add(
            f"  {label}",
            seconds,
            f"{seconds / total:.1%} of the total" + (f", {calls} calls" if calls > 1 else ""),
            ratio=False,
            peak_bytes=phases.peaks.get(label),
        )
    rest = total - accounted
    table.add("  not attributed", rest, f"{rest / total:.1%} of the total", ratio=False)
    table.add(
        "  progress: drawing bars and log lines (included above)",
        drawing,
        f"{drawing / total:.2%} of the total; {progress.events:,} events, {progress.epochs} epochs",
        ratio=False,
    )
    ratio = total / bare if bare else float("inf")
    table.target(
        "retrain total <= 1.5x the bare fitting",
        ratio <= 1.5,
        f"{ratio:.2f}x; the rest is {total - bare:,.1f} s",
    )
    table.target("progress <= 2% of the retrain", drawing <= 0.02 * total, f"{drawing / total:.2%}")
    peak = rss_peak()
    if peak is not None:
        # Issue 16: a retrain that fits a 2 GB Flex Consumption instance with room to spare.
        table.target(
            "retrain peak RSS <= 1 GiB (the whole process)",
            peak <= 1024 * 1024 * 1024,
            f"{peak / 1024 / 1024:,.0f} MiB",
        )
    if result.status != "published":
        table.notes.append(
            f"the candidate was {result.status}: no publish nor precompute in this run"
        )
    table.notes.append(
        "seconds of a step exclude the wrapped steps it calls; peak MiB is the kernel's record "
        "of the process's peak RSS (VmHWM) when the step ended — it only grows, so the step "
        "where it jumps is the one that needed the memory (tracemalloc would slow the Python "
        "parts measured)"
    )
    table.result = {"result": result, "phases": phases, "total": total, "bare": bare}
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="retrain end to end")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--users", type=int)
    parser.add_argument("--trainings", type=int)
    parser.add_argument("--interactions", type=int)
    parser.add_argument("--epochs", type=int, help="cap the epochs (default: the configuration's)")
    parser.add_argument("--no-gate", action="store_true", help="publish whatever the metrics")
    parser.add_argument("--profile", type=Path, help="write a pyinstrument text profile here")
    args = parser.parse_args(argv)
    sizes = dict(SMALL if args.small else FULL)
    for name in sizes:
        if getattr(args, name) is not None:
            sizes[name] = getattr(args, name)
    table = run(sizes, epochs=args.epochs, gate=not args.no_gate, profile=args.profile)
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
