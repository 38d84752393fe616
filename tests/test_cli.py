"""The command line, run in-process on a local store."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from shared.cli import main

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
    assert code == 0 and out.count("\n") == 5

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


def published_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], *options: str) -> list[str]:
    """A store serving a model trained with the gate on; returns the base arguments."""
    data = tmp_path / "data"
    config = tmp_path / "gated.toml"
    config.write_text("[model]\nepochs = 8\nnum_threads = 1\nno_components = 16\n")
    base = ["--store", str(tmp_path / "store"), "--config", str(config), *options]
    assert run(capsys, *base, "generate", *SIZES, "--out", str(data))[0] == 0
    for kind in ("users", "trainings", "trainings-taken"):
        assert run(capsys, *base, "drop", str(data / f"{kind}.csv"), "--kind", kind)[0] == 0
    assert run(capsys, *base, "train")[0] == 0
    return base


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
