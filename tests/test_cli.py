"""The command line, run in-process on a local store."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import EXIT_BROKEN_PIPE, main

ROOT = Path(__file__).resolve().parent.parent

SIZES = ["--users", "300", "--trainings", "50", "--interactions", "3000", "--seed", "2"]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    # Tiny data: the gate (tested in test_registry) could refuse a 5-epoch model.
    path.write_text(
        "[model]\nepochs = 5\nnum_threads = 1\nno_components = 16\n[gate]\nenabled = false\n"
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_shows_a_known_and_a_new_employee(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    base = ["--store", store, "--config", str(config_file)]
    code, out, _ = run(capsys, *base, "demo", *SIZES, "--out", str(tmp_path / "data"))
    assert code == 0
    assert "served: " in out and "oracle" in out
    assert "employees with a history: " in out and "new employees: " in out
    assert "known employee" in out and "new employee" in out
    assert "regime history" in out  # the default synthetic world

    code, out, _ = run(capsys, *base, "--json", "demo", *SIZES, "--out", str(tmp_path / "data"))
    assert code == 0
    result = json.loads(out)
    assert len(result["known"]["trainings"]) == 10
    assert len(result["new"]["trainings"]) == 10


def demo_command(tmp_path: Path, config_file: Path, *options: str) -> list[str]:
    store, data = str(tmp_path / "store"), str(tmp_path / "data")
    return [sys.executable, "-m", "shared", "--store", store, "--config", str(config_file),
            *options, "demo", *SIZES, "--out", data]  # fmt: skip


def test_the_demo_redirected_writes_a_line_per_step(tmp_path: Path, config_file: Path) -> None:
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        code = subprocess.run(
            demo_command(tmp_path, config_file), cwd=ROOT, stdout=out, stderr=out, check=False
        ).returncode
    text = log.read_text()
    assert code == 0, text
    for line in (
        "INFO shared.progress: generate: started",
        "INFO shared.progress: drop: done, 3 extracts in",
        "INFO shared.progress: read the extracts: done, ",
        "INFO shared.progress: evaluate: started (",
        "INFO shared.progress: evaluate › fit: started (5 epochs)",
        "INFO shared.progress: refit on all the data › fit: done, ",
        "INFO shared.progress: score: done, 300 employees in ",
        "INFO shared.progress: export: done, 300 employees in ",
        "INFO shared.progress: upload: done in ",
    ):
        assert line in text, line
    assert "known employee" in text  # and the result, as before


def test_the_demo_on_a_terminal_draws_a_bar_per_step_with_time_left(
    tmp_path: Path, config_file: Path
) -> None:
    # `script` gives the command a terminal and records what it drew.
    command = " ".join(demo_command(tmp_path, config_file))
    drawn = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert drawn.returncode == 0, drawn.stdout[-3000:]
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.stdout)  # colours, cursor moves
    assert "INFO shared.progress" not in screen  # bars, not log lines
    for step in ("generate", "drop", "read the extracts", "evaluate", "score", "export"):
        assert re.search(rf"{step} +━+ +\d+/\d+", screen), step
    assert re.search(r"━+ +\d+/\d+ +\w* +\d+% +\d:\d\d:\d\d +\d:\d\d:\d\d", screen)
    assert "known employee" in screen


def test_json_and_quiet_print_the_result_alone(tmp_path: Path, config_file: Path) -> None:
    for option in ("--json", "--quiet"):
        result = subprocess.run(
            demo_command(tmp_path, config_file, option),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", option
    assert set(json.loads(subprocess.run(
        demo_command(tmp_path, config_file, "--json"), cwd=ROOT, capture_output=True, text=True,
        check=True).stdout)) == {"model_version", "evaluation", "known", "new"}  # fmt: skip


def test_each_command_on_generated_extracts(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    base = ["--store", str(tmp_path / "store"), "--config", str(config_file)]
    assert run(capsys, *base, "generate", *SIZES, "--out", str(data))[0] == 0
    for kind in ("users", "trainings", "trainings-taken"):
        code, out, _ = run(capsys, *base, "drop", str(data / f"{kind}.csv"), "--kind", kind)
        assert (code, out.split(":")[0]) == (0, "accepted")

    code, out, _ = run(capsys, *base, "train", "--oracle", str(data / "oracle.json"))
    assert code == 0 and "published model" in out and "oracle" in out

    code, out, _ = run(capsys, *base, "--json", "evaluate")
    assert code == 0
    assert set(json.loads(out)["results"]) == {"known", "cold-start"}

    code, out, _ = run(capsys, *base, "--json", "recommend", "000001", "-n", "3")
    assert code == 0 and len(json.loads(out)["trainings"]) == 3

    code, out, _ = run(capsys, *base, "recommend", "--attr", "skills=python;sql", "--attr", "ou=it")
    assert code == 0 and "employee {" in out and "ranked by" in out

    code, out, _ = run(
        capsys, *base, "--json", "recommend", "--attr", "ou=it", "--taken", "T00001,T00002"
    )
    answer = json.loads(out)
    assert code == 0 and answer["taken_training_ids"] == ["T00001", "T00002"]
    assert not {"T00001", "T00002"} & {t["training_id"] for t in answer["trainings"]}

    code, out, _ = run(capsys, *base, "similar", "T00001", "-n", "4")
    assert code == 0
    rows = [line.split()[:2] for line in out.splitlines() if re.match(r"\d+ +T\d+ ", line)]
    assert [rank for rank, _ in rows] == ["1", "2", "3", "4"]

    code, out, _ = run(capsys, *base, "precompute")
    assert code == 0 and out.startswith("unchanged")

    code, out, _ = run(capsys, *base, "models", "list")
    header, row = out.splitlines()[:2]
    assert code == 0 and "serves known / new" in header and "p@k new" in header
    code, shown, _ = run(capsys, *base, "--json", "models", "show")
    serving = json.loads(shown)["serving"]
    names = " / ".join(serving[p]["scorer"]["name"] for p in ("known", "cold-start"))
    assert names in row and "serving" in row
    code, out, _ = run(capsys, *base, "models", "show")
    assert code == 0 and "served by    employees with a history: " in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["recommend", "nobody"], "no recommendations have been computed yet"),
        (["drop", "missing.csv"], "No such file or directory"),
        (["recommend", "--attr", "skills"], "expected column=value"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "--store", str(tmp_path / "store"), *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert err.startswith("error: ")


def test_a_rejected_drop_exits_2_with_the_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "users.csv"
    bad.write_bytes(b"name;Age\nAda;36\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(tmp_path / "store"), "drop", str(bad), "--kind", "users"])
    out, _ = capsys.readouterr()
    assert exit_info.value.code == 2
    assert "rejected" in out and "column 'User-Id'" in out and "line 1" in out


def publish(tmp_path: Path, *options: str) -> list[str]:
    """A store serving a model trained with the gate on; returns the base arguments."""
    data = tmp_path / "data"
    config = tmp_path / "gated.toml"
    config.write_text("[model]\nepochs = 8\nnum_threads = 1\nno_components = 16\n")
    base = ["--store", str(tmp_path / "store"), "--config", str(config), *options]
    assert main([*base, "generate", *SIZES, "--out", str(data)]) == 0
    for kind in ("users", "trainings", "trainings-taken"):
        assert main([*base, "drop", str(data / f"{kind}.csv"), "--kind", kind]) == 0
    assert main([*base, "train"]) == 0
    return base


def published_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], *options: str) -> list[str]:
    base = publish(tmp_path, *options)
    capsys.readouterr()  # the set-up's output is not the test's
    return base


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """One published store for the tests that only read it: the base arguments."""
    with contextlib.redirect_stdout(io.StringIO()):
        return publish(tmp_path_factory.mktemp("serving"))


def test_global_options_go_before_or_after_the_command(
    serving: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # serving is --store and --config: all before, then all after the command.
    before = run(capsys, *serving, "--json", "recommend", "000001", "-n", "3")
    after = run(capsys, "recommend", "000001", "-n", "3", *serving, "--json")
    assert after == before
    assert before[0] == 0 and len(json.loads(before[1])["trainings"]) == 3
    # Split: an option given before is not reset by the command's absent copy of it.
    split = run(capsys, "--json", "models", "list", *serving)
    assert split == run(capsys, *serving, "models", "list", "--json")
    assert split[0] == 0 and json.loads(split[1])


def test_ids_on_the_command_line_are_trimmed_like_the_extracts(
    serving: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    clean = run(capsys, *serving, "--json", "recommend", "000001", "-n", "3")
    assert clean[0] == 0
    # Spaces, a tab and a zero-width space, as a spreadsheet or a web page leaves them.
    assert run(capsys, *serving, "--json", "recommend", " 000001\u200b ", "-n", "3") == clean
    assert run(capsys, *serving, "similar", "\tT00001 ") == run(
        capsys, *serving, "similar", "T00001"
    )
    code, out, _ = run(
        capsys, *serving, "--json", "recommend", "--attr", "ou=it", "--taken", " T00001 , T00002"
    )
    assert code == 0 and json.loads(out)["taken_training_ids"] == ["T00001", "T00002"]
    with pytest.raises(SystemExit) as exit_info:  # nothing left: refused, not a new employee
        main([*serving, "recommend", " "])
    assert exit_info.value.code == 2 and "empty identifier" in capsys.readouterr().err


@pytest.mark.parametrize("unbuffered", [False, True])
def test_a_reader_that_stops_early_ends_the_command_quietly(
    serving: list[str], unbuffered: bool
) -> None:
    # Buffered, the answer fails at the last flush; unbuffered, in the command's print().
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env |= {"PYTHONUNBUFFERED": "1"} if unbuffered else {}
    # `| head -c 10` once head has its bytes and is gone. Its read end is closed before
    # the command starts: reading a few bytes first would race the command, whose whole
    # answer fits in the pipe's buffer (then no write ever fails).
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "shared", *serving, "--json", "recommend", "000001"],
            cwd=ROOT,
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
    assert done.stderr == ""
    assert done.returncode == EXIT_BROKEN_PIPE == 141


def test_train_exits_3_and_says_why_when_the_candidate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = published_store(tmp_path, capsys)
    # Trainings taken at random, uniformly: nothing, not even popularity, predicts them,
    # so the candidate serves worse than the serving version for everyone.
    taken = (tmp_path / "data" / "trainings-taken.csv").read_text().splitlines()
    rows = [line.split(",") for line in taken[1:]]
    pick = random.Random(0)
    trainings = [f"T{pick.randint(1, 50):05d}" for _ in rows]
    pairs = zip(trainings, rows, strict=True)
    shuffled = [taken[0], *(",".join([row[0], t, *row[2:]]) for t, row in pairs)]
    path = tmp_path / "shuffled" / "trainings-taken.csv"
    path.parent.mkdir()
    path.write_text("\n".join(shuffled) + "\n")
    assert run(capsys, *base, "drop", str(path), "--kind", "trainings-taken")[0] == 0

    with pytest.raises(SystemExit) as exit_info:
        main([*base, "train"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 3
    assert out.startswith("rejected model ")
    assert err.startswith("rejected: known: precision@10 ")
    assert "cold-start: precision@10" in err and "vs serving" in err
    assert "published" not in out


def test_train_exits_4_when_another_retrain_holds_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.layout import RETRAIN_LOCK
    from shared.storage import LocalFolderStore

    base = published_store(tmp_path, capsys)
    lock = LocalFolderStore(tmp_path / "store").lease(RETRAIN_LOCK, seconds=60)
    with lock, pytest.raises(SystemExit) as exit_info:
        main([*base, "train"])
    out, _ = capsys.readouterr()
    assert exit_info.value.code == 4
    assert "nothing published" in out


def test_tune_writes_a_configuration_that_train_uses(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    base = ["--store", str(tmp_path / "store"), "--config", str(config_file)]
    assert run(capsys, *base, "generate", *SIZES, "--out", str(data))[0] == 0
    for kind in ("users", "trainings", "trainings-taken"):
        assert run(capsys, *base, "drop", str(data / f"{kind}.csv"), "--kind", kind)[0] == 0
    tuned = tmp_path / "tuned.toml"
    code, out, _ = run(capsys, *base, "tune", "--budget", "2", "--out", str(tuned))
    assert code == 0 and "base" in out and tuned.exists()
    code, out, _ = run(capsys, "--store", str(tmp_path / "store"), "--config", str(tuned), "train")
    assert code == 0 and "published model" in out
    with pytest.raises(SystemExit):  # argparse refuses a budget below 1
        main([*base, "tune", "--budget", "0"])


LONG_TITLE = (
    "Negotiating Cross-Border Supplier Agreements under International Commercial Law "
    "for Procurement Specialists and Their Managers (Advanced Workshop)"
)


def test_a_long_title_wraps_between_words_never_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.answers import Training
    from shared.cli import _trainings_table

    items = [
        Training(rank=1, training_id="T00001", title=LONG_TITLE, attributes={}, score=1.5),
        Training(rank=2, training_id="T00002", title="Short", attributes={}, score=0.25),
    ]
    text = _trainings_table(items)  # stdout is not a terminal here: 100 columns, plain
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "\x1b[" not in text
    assert len([line for line in lines if "T00001" not in line and line.strip()]) >= 3  # wrapped
    cells = {"#", "training", "title", "score", "1", "2", "T00001", "T00002", "1.500", "0.250"}
    allowed = cells | {"Short"} | set(LONG_TITLE.split())
    for token in text.split():  # every word whole: none cut, none with an ellipsis
        assert token in allowed or set(token) == {"─"}, token
    assert lines[-1].split() == ["2", "T00002", "Short", "0.250"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tables_have_colours_on_a_terminal_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.table import Table

    from shared.cli import rendered

    table = Table("#", "title")
    table.add_row("1", "Python")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in rendered(table, Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    coloured = re.findall(r"\x1b\[([0-9;]*)m", rendered(table, Terminal()))
    assert not [code for code in coloured if re.search(r"(^|;)(3[0-7]|9[0-7]|38)(;|$)", code)]
    assert "\x1b[" not in rendered(table, io.StringIO())
