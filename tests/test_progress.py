"""Progress: events in order with their paths, log lines rate-limited with the right
figures, rich bars with their columns (and no colour under NO_COLOR), the CLI's pick."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

import pytest
from rich.console import Console

from shared.progress import (
    NO_PROGRESS,
    LogLines,
    Progress,
    ProgressEvent,
    Recording,
    RichBars,
    for_cli,
    tracked,
)

LOGGER = "shared.progress"


class FakeClock:
    """Seconds as the test sets them."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def summary(events: list[ProgressEvent]) -> list[tuple[str, tuple[str, ...], int]]:
    return [(e.kind, e.path, e.done) for e in events]


# --- the events -------------------------------------------------------------------------


def test_nested_steps_report_in_order_with_their_paths_and_reach_their_totals() -> None:
    clock = FakeClock()
    progress = Recording(clock)
    with progress.step("retrain", total=2, unit="splits") as retrain:
        for _ in range(2):
            with progress.step("fit", total=3, unit="epochs") as fit:
                for epoch in range(3):
                    clock.now += 1
                    fit.advance(note=f"epoch {epoch}")
            retrain.advance()

    fit_events = [e for e in progress.events if e.path == ("retrain", "fit")]
    assert summary(progress.events[:6]) == [
        ("start", ("retrain",), 0),
        ("start", ("retrain", "fit"), 0),
        ("advance", ("retrain", "fit"), 1),
        ("advance", ("retrain", "fit"), 2),
        ("advance", ("retrain", "fit"), 3),
        ("end", ("retrain", "fit"), 3),
    ]
    assert [e.kind for e in fit_events] == ["start", "advance", "advance", "advance", "end"] * 2
    assert progress.events[-1] == ProgressEvent("end", ("retrain",), 2, 2, "splits", None, 6.0)
    assert fit_events[4].note == "epoch 2" and fit_events[4].elapsed == 3.0


def test_a_total_given_later_and_a_note_stay_with_the_step() -> None:
    progress = Recording(FakeClock())
    with progress.step("parse", unit="rows") as step:
        step.advance(10, note="users.csv")
        step.set_total(40)
        step.advance(30)

    assert [(e.kind, e.done, e.total, e.note) for e in progress.events] == [
        ("start", 0, None, None),
        ("advance", 10, None, "users.csv"),
        ("advance", 10, 40, "users.csv"),
        ("advance", 40, 40, "users.csv"),
        ("end", 40, 40, "users.csv"),
    ]


def test_a_step_that_raises_is_marked_failed_and_the_error_goes_on() -> None:
    progress = Recording(FakeClock())
    with (
        pytest.raises(ValueError, match="bad row"),
        progress.step("outer"),
        progress.step("parse", total=10) as step,
    ):
        step.advance(4)
        raise ValueError("bad row 5")

    assert summary(progress.events) == [
        ("start", ("outer",), 0),
        ("start", ("outer", "parse"), 0),
        ("advance", ("outer", "parse"), 4),
        ("fail", ("outer", "parse"), 4),
        ("fail", ("outer",), 0),
    ]
    assert progress.events[3].note == "ValueError: bad row 5"
    # Both steps are closed: a new step is at the top again.
    with progress.step("next"):
        pass
    assert progress.events[-1].path == ("next",)


def test_tracked_counts_one_per_item_and_a_loop_left_early_is_not_a_failure() -> None:
    progress = Recording(FakeClock())
    assert list(tracked(progress, "load", ["a", "b", "c"], unit="files")) == ["a", "b", "c"]
    assert summary(progress.events)[-1] == ("end", ("load",), 3)
    assert progress.events[0].total == 3  # from len()

    progress = Recording(FakeClock())
    items = tracked(progress, "scan", iter(range(100)))
    for item in items:
        if item == 2:
            break
    items.close()  # what the interpreter does when the generator is dropped
    assert summary(progress.events)[-1] == ("end", ("scan",), 2)
    assert progress.events[0].total is None


def test_nobody_listening_costs_no_clock_read_no_event_and_no_count() -> None:
    def no_clock() -> float:
        raise AssertionError("the clock was read")

    step = Progress(no_clock).step("precompute", total=10)
    with step:
        step.advance(5, note="ignored")
        step.set_total(20)
    assert (step.done, step.total, step.note) == (0, 10, None)
    with NO_PROGRESS.step("fit") as fit:
        fit.advance()
    assert type(fit) is type(step)

    class Listener(Progress):
        def emit(self, event: ProgressEvent) -> None:
            pass

    # Overriding emit is all a renderer does to get real steps.
    with Listener(FakeClock()).step("fit") as listened:
        listened.advance(3)
    assert listened.done == 3


def test_importing_the_module_does_not_load_rich() -> None:
    code = "import sys, shared.progress; print('rich' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# --- log lines --------------------------------------------------------------------------


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_long_step_logs_a_start_at_most_one_line_every_few_seconds_and_an_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock(0.0)
    progress = LogLines(every=5.0, clock=clock)
    with progress.step("precompute", total=1000, unit="employees") as step:
        for i in range(1, 1001):
            clock.now = i / 50  # 1,000 advances over 20 s
            step.advance()

    logged = lines(caplog)
    assert logged[0] == "precompute: started (1,000 employees)"
    assert logged[-1] == "precompute: done, 1,000 employees in 20.0 s"
    middle = logged[1:-1]
    assert 1 <= len(middle) <= 5
    assert len(middle) == 4  # at 5, 10, 15 and 20 s
    assert middle[0] == "precompute: 250/1,000 employees (25%), 50 employees/s, about 15 s left"
    assert middle[-1] == "precompute: 1,000/1,000 employees (100%), 50 employees/s"  # no 0 s left


def test_a_progress_line_gives_count_percentage_rate_time_left_and_note(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock(1000.0)
    progress = LogLines(every=5.0, clock=clock)
    with progress.step("retrain"), progress.step("fit", total=10_000, unit="rows") as fit:
        clock.now += 4.9
        fit.advance(2_000)  # before 5 s: no line
        clock.now += 0.1
        fit.advance(500, note="best so far 0.123")

    assert lines(caplog)[2:] == [
        "retrain › fit: 2,500/10,000 rows (25%), 500 rows/s, about 15 s left; best so far 0.123",
        "retrain › fit: done, 2,500 rows in 5.0 s",
        "retrain: done in 5.0 s",
    ]


def test_with_no_total_a_line_has_no_percentage_and_no_time_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    with LogLines(every=1.0, clock=clock).step("parse", unit="rows") as step:
        clock.now += 64
        step.advance(128_000)

    assert lines(caplog) == [
        "parse: started",
        "parse: 128,000 rows, 2,000 rows/s",
        "parse: done, 128,000 rows in 1 min 04 s",
    ]


def test_a_failed_step_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    with pytest.raises(OSError), LogLines(clock=clock).step("upload", total=8) as step:
        step.advance(3)
        clock.now += 2.5
        raise OSError("disk full")

    last = caplog.records[-1]
    assert last.levelno == logging.WARNING
    assert last.getMessage() == "upload: failed after 2.5 s at 3/8: OSError: disk full"


# --- rich bars --------------------------------------------------------------------------

# SGR parameters that set a colour: 30-38 and 90-97 (foreground), 40-48 and 100-107
# (background). Cursor moves (\x1b[1A) and bold (\x1b[1m) are no colour.
SGR = re.compile(r"\x1b\[([0-9;]*)m")
COLOUR = {*range(30, 39), *range(40, 49), *range(90, 98), *range(100, 108)}


def has_colour(output: str) -> bool:
    return any(
        int(param) in COLOUR
        for params in SGR.findall(output)
        for param in params.split(";")
        if param
    )


def draw_a_failed_step(clock: FakeClock) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with (
        RichBars(console, clock=clock) as bars,
        pytest.raises(RuntimeError),
        bars.step("precompute", total=10, unit="employees") as step,
    ):
        for _ in range(5):
            clock.now += 1
            step.advance(note="chunk ok")
        raise RuntimeError("storage down")
    output = buffer.getvalue()
    return output


def test_a_bar_shows_name_counts_percentage_and_time_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    output = draw_a_failed_step(FakeClock())
    final = output.rsplit("precompute", 1)[-1]  # the last frame drawn

    assert "5/10" in final and "employees" in final and "50%" in final
    assert "0:00:05" in final  # 5 left at one a second (elapsed is 0:00:05 too)
    assert final.count("0:00:05") == 2
    assert "failed: RuntimeError: storage down" in final


def test_nested_bars_and_a_finished_bar_stay_readable() -> None:
    clock = FakeClock()
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with RichBars(console, clock=clock) as bars, bars.step("retrain", total=2) as retrain:
        for _ in range(2):
            for _ in tracked(bars, "fit [lightfm]", range(3), unit="epochs"):
                clock.now += 1
            retrain.advance()
    output = buffer.getvalue()
    assert "  fit [lightfm]" in output  # indented under its parent; brackets not markup
    final = output.rsplit("retrain", 1)[-1]
    assert "2/2" in final and "100%" in final


def test_output_printed_while_bars_are_drawn_stays_on_a_redirected_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with RichBars(console, clock=FakeClock()) as bars, bars.step("export", total=1) as step:
        print('{"employees": 3}')
        step.advance()
    assert capsys.readouterr().out == '{"employees": 3}\n'
    output = buffer.getvalue()
    assert "employees" not in output and "1/1" in output


def test_no_color_removes_the_colours_and_they_are_there_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert has_colour(draw_a_failed_step(FakeClock()))

    monkeypatch.setenv("NO_COLOR", "1")
    output = draw_a_failed_step(FakeClock())
    assert "5/10" in output  # still drawn
    assert not has_colour(output)
    assert "\x1b[3" not in output.replace("\x1b[3m", "") and "\x1b[9" not in output


# --- the command line's pick -------------------------------------------------------------


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("tty", "quiet", "json", "kind"),
    [
        (True, False, False, RichBars),
        (False, False, False, LogLines),
        (True, True, False, LogLines),
        (True, False, True, LogLines),
    ],
)
def test_the_cli_draws_bars_only_on_a_terminal_and_when_asked(
    tty: bool, quiet: bool, json: bool, kind: type[Progress]
) -> None:
    progress = for_cli(quiet=quiet, json=json, stream=Stream(tty))
    assert type(progress) is kind


def test_the_cli_bars_go_to_the_stream_given() -> None:
    stream = Stream(tty=True)
    with for_cli(stream=stream) as progress, progress.step("demo", total=1) as step:
        step.advance()
    assert "demo" in stream.getvalue() and "1/1" in stream.getvalue()


def test_a_counted_stream_counts_each_byte_once_however_often_it_is_read() -> None:
    from shared.progress import counted

    recording = Recording()
    data = bytes(range(256)) * 10_000  # 2.5 MB: several buffer fills
    with recording.step("read", len(data), "bytes") as step:
        stream = counted(io.BytesIO(data), step)
        assert stream.read(1000) == data[:1000]
        stream.seek(0)
        assert stream.read() == data  # read again from the start
        stream.seek(10)
        assert stream.read(5) == data[10:15]
    end = recording.events[-1]
    assert (end.kind, end.done, end.total) == ("end", len(data), len(data))
