"""`config check`: the four silent mistakes found in real extracts, each with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from world import csv_bytes, drop_all, small_config, small_data

from shared import cli
from shared.configcheck import check
from shared.settings import Config, load_config
from shared.storage import LocalFolderStore

DATA = small_data()


def frames(**changes: pd.DataFrame) -> dict[str, pd.DataFrame]:
    base = {"users": DATA.users, "trainings": DATA.trainings, "trainings-taken": DATA.taken}
    return {**base, **changes}


def test_the_synthetic_extracts_with_the_defaults_have_no_finding() -> None:
    assert check(Config(), frames()) == []


def test_a_numeric_column_used_without_bands_is_found_with_bands_to_add() -> None:
    config = Config.from_dict(
        {"contract": {"users": {"features": ["ou", "skills", "language", "grade", "los"]}}}
    )
    [finding] = check(config, frames())

    assert (finding.kind, finding.column) == ("users", "los")
    assert "used without bands" in finding.message
    assert finding.fix.startswith("[contract.users.bands] los = [")
    # The fix, applied, is silent.
    edges = json.loads(finding.fix.split("=", 1)[1].split("(")[0])
    fixed = Config.from_dict(
        {
            "contract": {
                "users": {
                    "features": ["ou", "skills", "language", "grade", "los"],
                    "bands": {"los": edges},
                }
            }
        }
    )
    assert check(fixed, frames()) == []


def test_a_multi_valued_column_with_another_delimiter_is_found() -> None:
    users = DATA.users.assign(skills=DATA.users["skills"].str.replace(";", ",", regex=False))
    [finding] = check(Config(), frames(users=users))

    assert (finding.kind, finding.column) == ("users", "skills")
    assert "hold ','" in finding.message and "';'" in finding.message
    assert finding.fix == "[contract.users.delimiters] skills = ','"
    fixed = Config.from_dict({"contract": {"users": {"delimiters": {"skills": ","}}}})
    assert check(fixed, frames(users=users)) == []


def test_configured_columns_absent_from_a_file_are_found_with_what_the_file_has() -> None:
    trainings = DATA.trainings.rename(columns={"provider": "Provider"})
    taken = DATA.taken.drop(columns=["date"])
    found = check(Config(), frames(trainings=trainings, **{"trainings-taken": taken}))

    assert [(f.kind, f.column) for f in found] == [
        ("trainings", "provider"),
        ("trainings-taken", "date"),
    ]
    assert "the file has 'Provider'" in found[0].message


def test_a_department_column_that_is_no_attribute_is_found() -> None:
    config = Config.from_dict({"contract": {"department": "division"}})
    [finding] = check(config, frames())

    assert finding.column == "division"
    assert "is not an employee attribute" in finding.message
    assert "'ou'" in finding.fix


def test_config_check_on_a_folder_exits_1_with_the_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    users = DATA.users.assign(skills=DATA.users["skills"].str.replace(";", "|", regex=False))
    (folder / "Users 2026-11.csv").write_bytes(csv_bytes(users))
    (folder / "trainings.csv").write_bytes(csv_bytes(DATA.trainings))
    (folder / "export.csv").write_bytes(csv_bytes(DATA.taken))  # kind from its columns

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--json", "config", "check", "--extracts", str(folder)], environ={})

    assert exit_info.value.code == cli.EXIT_FINDINGS == 1
    out = json.loads(capsys.readouterr().out)
    assert out["checked"] == ["trainings", "trainings-taken", "users"]
    assert [f["column"] for f in out["findings"]] == ["skills"]


def test_config_show_prints_the_effective_configuration_merged_with_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "partial.toml"
    path.write_text('[contract.users]\nid = "emp"\nfeatures = ["ou", "skills"]\n')

    assert cli.main(["config", "show", "--config", str(path)], environ={}) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown == load_config(path).to_dict()
    assert shown["contract"]["users"]["multi_valued"] == ["skills"]


def test_config_check_reads_the_store_s_current_extracts_and_exits_0_when_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalFolderStore(tmp_path / "store")
    drop_all(store, DATA, small_config())

    code = cli.main(["--store", str(tmp_path / "store"), "config", "check"], environ={})

    assert code == 0
    assert capsys.readouterr().out.strip() == (
        "checked trainings, trainings-taken, users: no finding"
    )
