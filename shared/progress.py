"""How far a long task has got: one interface the use cases report to, several renderers.

A use case takes a ``Progress`` (``NO_PROGRESS`` by default) and reports its steps::

    with progress.step("precompute", total=n, unit="employees") as step:
        for chunk in chunks:
            ...
            step.advance(len(chunk))  # or step.advance(1, note="validation precision 0.1234")

Leaving the block ends the step; an exception marks it failed and propagates. Steps
nest (a fit inside a retrain): their path is ``("retrain", "fit")``. ``step.set_total(n)``
gives or changes the total later; a note stays shown until the next one replaces it.

Every call becomes a ``ProgressEvent`` passed to ``Progress.emit``, the one method a
renderer overrides:

- ``Progress`` / ``NO_PROGRESS``: reports to nobody; its steps' ``advance`` does nothing.
- ``Recording``: keeps the events in ``events`` (tests).
- ``LogLines``: ``logging`` lines (logger ``shared.progress``, INFO): one when a step
  starts and ends, and at most one every ``every`` seconds per step in between, with
  count, percentage, rate and time left. For CI logs, redirected output and the Azure
  Functions log stream; a failure is a WARNING.
- ``RichBars``: ``rich`` bars on a terminal, one per running step; a context manager.
  ``rich`` is imported only here, when one is built: the Functions app never loads it.

``for_cli`` picks the renderer for the command line; ``tracked`` wraps an iterable in a
step. A ``Progress`` follows one thread of steps: steps opened concurrently from several
threads would see each other as parents.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable, Generator, Iterable, Sized
from dataclasses import dataclass
from types import TracebackType
from typing import IO, TYPE_CHECKING, BinaryIO, Literal, Self, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as Bars
    from rich.progress import TaskID

Kind = Literal["start", "advance", "end", "fail"]
Clock = Callable[[], float]
T = TypeVar("T")
REFRESHES_PER_SECOND = 1
SEPARATOR = " › "  # between the names of nested steps, in log lines


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One report: a step started, advanced (or got a total), ended or failed.

    ``done`` and ``total`` count ``unit``s (``total`` None when unknown); ``note`` is the
    step's latest note, or the error for "fail"; ``elapsed`` is seconds since the start.
    """

    kind: Kind
    path: tuple[str, ...]
    done: int
    total: int | None
    unit: str
    note: str | None
    elapsed: float


class Step:
    """A running step, made by ``Progress.step`` and used as a context manager."""

    __slots__ = ("_progress", "_started", "done", "name", "note", "path", "total", "unit")

    def __init__(self, progress: Progress, name: str, total: int | None, unit: str) -> None:
        self._progress = progress
        self.name, self.total, self.unit = name, total, unit
        self.path: tuple[str, ...] = (name,)
        self.done = 0
        self.note: str | None = None
        self._started = 0.0

    def advance(self, n: int = 1, note: str | None = None) -> None:
        """Count ``n`` more units done; ``note`` replaces the text shown beside the count."""
        self.done += n
        if note is not None:
            self.note = note
        self._emit("advance")

    def set_total(self, total: int | None) -> None:
        """Give (or change) how many units the step will count."""
        self.total = total
        self._emit("advance")

    def __enter__(self) -> Self:
        running = self._progress._running
        if running:
            self.path = (*running[-1].path, self.name)
        running.append(self)
        self._started = self._progress._clock()
        self._emit("start")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress._running.remove(self)
        # A generator closed early (a loop over ``tracked`` left with break) has not failed.
        if error is None or isinstance(error, GeneratorExit):
            self._emit("end")
        else:
            self.note = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self._emit("fail")

    def _emit(self, kind: Kind) -> None:
        elapsed = self._progress._clock() - self._started
        event = ProgressEvent(kind, self.path, self.done, self.total, self.unit, self.note, elapsed)
        self._progress.emit(event)


class _Unheard(Step):
    """A step nobody listens to: no clock read, no event, no count (fits call it per epoch)."""

    __slots__ = ()

    def advance(self, n: int = 1, note: str | None = None) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


class Progress:
    """What a use case reports to. This base class reports to nobody (the default).

    A renderer overrides ``emit``; ``clock`` (seconds) times the steps. Every progress is
    a context manager, so the command line can open whichever ``for_cli`` returns.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._running: list[Step] = []

    def step(self, name: str, total: int | None = None, unit: str = "") -> Step:
        """A step named ``name`` counting ``total`` ``unit``s (None: unknown yet)."""
        if type(self).emit is Progress.emit:  # nobody listens: skip the bookkeeping
            return _Unheard(self, name, total, unit)
        return Step(self, name, total, unit)

    def emit(self, event: ProgressEvent) -> None:
        """Receive one event; the base class ignores it."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


NO_PROGRESS = Progress()


class Recording(Progress):
    """Keeps every event, in order, in ``events``."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        super().__init__(clock)
        self.events: list[ProgressEvent] = []

    def emit(self, event: ProgressEvent) -> None:
        self.events.append(event)


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}" if unit else f"{n:,}"


def _amount(done: int, total: int | None, unit: str) -> str:
    return _count(done, unit) if total is None else f"{done:,}/{_count(total, unit)}"


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"


def _duration(seconds: float, digits: int = 1) -> str:
    if seconds < 60:
        return f"{seconds:.{digits}f} s"
    minutes, whole = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {whole:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _line(event: ProgressEvent) -> str:
    """``1,234/10,000 rows (12%), 3,210 rows/s, about 3 s left; <note>``."""
    done, total, unit = event.done, event.total, event.unit
    parts = [_amount(done, total, unit)]
    if total:
        parts[0] += f" ({100 * done // total}%)"  # floored: never 100% before the end
    if event.elapsed > 0 and done > 0:
        rate = done / event.elapsed
        parts.append(f"{_rate(rate)} {unit}/s" if unit else f"{_rate(rate)}/s")
        if total is not None and done < total:
            parts.append(f"about {_duration((total - done) / rate, 0)} left")
    text = ", ".join(parts)
    return f"{text}; {event.note}" if event.note else text


class LogLines(Progress):
    """Log lines: start, end, and at most one progress line per ``every`` seconds a step."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        every: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.logger = logger or logging.getLogger(__name__)
        self.every = every
        self._last: dict[tuple[str, ...], float] = {}  # elapsed at a step's latest line

    def emit(self, event: ProgressEvent) -> None:
        where = SEPARATOR.join(event.path)
        if event.kind == "start":
            self._last[event.path] = 0.0
            total = f" ({_count(event.total, event.unit)})" if event.total is not None else ""
            self.logger.info("%s: started%s", where, total)
        elif event.kind == "advance":
            if event.elapsed - self._last.get(event.path, 0.0) < self.every:
                return
            self._last[event.path] = event.elapsed
            self.logger.info("%s: %s", where, _line(event))
        elif event.kind == "end":
            self._last.pop(event.path, None)
            counted = event.done > 0 or event.total is not None
            amount = f", {_count(event.done, event.unit)}" if counted else ""
            self.logger.info("%s: done%s in %s", where, amount, _duration(event.elapsed))
        else:
            self._last.pop(event.path, None)
            self.logger.warning(
                "%s: failed after %s at %s: %s",
                where,
                _duration(event.elapsed),
                _amount(event.done, event.total, event.unit),
                event.note,
            )


class RichBars(Progress):
    """``rich`` bars, one per running step; a nested step's bar goes when it ends.

    Columns: name, bar, done/total, unit, percentage, time elapsed, time left, note.
    Writes to ``console`` (a new one on stderr by default, which honours ``NO_COLOR``).
    """

    def __init__(self, console: Console | None = None, *, clock: Clock = time.monotonic) -> None:
        from rich import progress as rp
        from rich.console import Console

        super().__init__(clock)
        self._bars: Bars = rp.Progress(
            # markup=False: a name or note with [brackets] is shown as written
            rp.TextColumn("{task.description}", markup=False),
            rp.BarColumn(),
            rp.MofNCompleteColumn(),
            rp.TextColumn("{task.fields[unit]}", markup=False),
            rp.TaskProgressColumn(),
            rp.TimeElapsedColumn(),
            rp.TimeRemainingColumn(),
            rp.TextColumn("{task.fields[note]}", markup=False),
            console=console or Console(stderr=True),
            get_time=clock,
            # While bars are drawn, rich sends prints through its console so they land
            # above the bars: right when stdout is the same terminal, wrong when it is
            # redirected (``> out.json``), where the output must go to the file.
            redirect_stdout=sys.stdout.isatty(),
            # Redrawn once a second, not rich's ten times: each redraw renders every bar
            # (5 % of a retrain at ten a second, 1 % at two: benchmarks retrain).
            refresh_per_second=REFRESHES_PER_SECOND,
        )
        self._tasks: dict[tuple[str, ...], TaskID] = {}

    def __enter__(self) -> Self:
        self._bars.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bars.stop()

    def emit(self, event: ProgressEvent) -> None:
        note = event.note or ""
        if event.kind == "start":
            name = "  " * (len(event.path) - 1) + event.path[-1]
            self._tasks[event.path] = self._bars.add_task(
                name, total=event.total, unit=event.unit, note=note
            )
            return
        task = self._tasks[event.path]
        if event.kind == "advance":
            self._bars.update(task, completed=event.done, total=event.total, note=note)
        elif event.kind == "end":
            del self._tasks[event.path]
            if len(event.path) > 1:
                self._bars.remove_task(task)
            else:  # a top-level bar stays, full, as the record of the step
                total = event.done if event.total is None else event.total
                done = event.done
                if total == 0:  # nothing counted: one step, done
                    done = total = 1
                self._bars.update(task, completed=done, total=total, note=note)
        else:  # failed: the bar stays where it stopped
            del self._tasks[event.path]
            self._bars.update(task, note=f"failed: {note}")


def for_cli(*, quiet: bool = False, json: bool = False, stream: IO[str] | None = None) -> Progress:
    """The command line's progress: bars on a terminal, else log lines.

    ``quiet`` or ``json`` (or ``stream``, stderr by default, not a terminal): ``LogLines``,
    which print nothing unless logging shows INFO (``-v``); a failure is a WARNING.
    """
    stream = sys.stderr if stream is None else stream
    if quiet or json or not stream.isatty():
        return LogLines()
    from rich.console import Console

    return RichBars(Console(file=stream))


class _Counted(io.RawIOBase):
    """A seekable binary stream whose bytes read count into a step, each byte once
    however often it is read again (the furthest position reached)."""

    def __init__(self, stream: BinaryIO, step: Step) -> None:
        self.stream, self.step, self.furthest = stream, step, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        piece = self.stream.read(len(buffer))
        buffer[: len(piece)] = piece
        reached = self.stream.tell()
        if reached > self.furthest:
            self.step.advance(reached - self.furthest)
            self.furthest = reached
        return len(piece)

    def close(self) -> None:
        self.stream.close()
        super().close()


def counted(stream: BinaryIO, step: Step) -> BinaryIO:
    """``stream`` as it is read, counted into ``step`` (in bytes: a step over files)."""
    return io.BufferedReader(_Counted(stream, step), buffer_size=1 << 20)


def tracked(
    progress: Progress, name: str, items: Iterable[T], total: int | None = None, unit: str = ""
) -> Generator[T, None, None]:
    """Yield ``items`` inside a step that counts one per item (``total``: their ``len``)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with progress.step(name, total, unit) as step:
        for item in items:
            yield item
            step.advance()
