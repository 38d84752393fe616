"""Extracts that do not fit together are refused at drop, before anything serves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from world import csv_bytes, drop, drop_all, published, small_config, small_data

from shared.api import create_app
from shared.crosscheck import diagnose, ids_kept, taken_matches
from shared.layout import EXTRACTS_POINTER, RECOMMENDATIONS_POINTER, read_pointer
from shared.pipeline import precompute
from shared.settings import CrossChecks
from shared.storage import BlobStore

CONFIG = small_config()
DATA = small_data()
CHECKS = CrossChecks()


def resaved_by_a_spreadsheet(taken: pd.DataFrame) -> pd.DataFrame:
    """What Excel does to a CSV it opened and saved: ids that look like numbers lose
    their leading zeros."""
    return taken.assign(**{"User-Id": taken["User-Id"].astype(int).astype(str)})


# --- the pure checks ---------------------------------------------------------------------


def test_the_lost_leading_zeros_are_diagnosed() -> None:
    text = diagnose(np.array(["42", "7", "x9"]), pd.Index(["00042", "00007", "00001"]))
    assert text is not None
    assert "2 of the 3 unmatched ids match only without their leading zeros" in text
    assert "'42' for '00042'" in text and "re-saved by a spreadsheet" in text


@pytest.mark.parametrize(
    ("unmatched", "known", "label"),
    [
        (["42.0", "7.0"], ["42", "7"], "as whole numbers"),
        (["ab 12", "CD34"], ["AB12", "cd34"], "ignoring case and spaces"),
    ],
)
def test_other_spreadsheet_damage_is_diagnosed(
    unmatched: list[str], known: list[str], label: str
) -> None:
    text = diagnose(np.array(unmatched), pd.Index(known))
    assert text is not None and label in text


def test_ids_that_are_simply_different_get_no_diagnosis() -> None:
    assert diagnose(np.array(["A1", "B2"]), pd.Index(["C3", "D4"])) is None


def test_taken_rows_are_matched_on_each_side_and_on_both() -> None:
    taken = pd.DataFrame(
        {"user_id": ["u1", "u2", "u3", "u4"], "training_id": ["t1", "t1", "tX", "t2"]}
    )
    matches = taken_matches(taken, pd.Index(["u1", "u2", "u3"]), pd.Index(["t1", "t2"]), CHECKS)

    assert [(m.matched, m.total) for m in matches] == [(3, 4), (3, 4), (2, 4)]
    assert not any(m.ok for m in matches)  # 75 % and 50 %, under 90 %
    assert "2 of 4 trainings-taken rows whose employee and training are both known" in str(
        matches[2]
    )


def test_a_new_users_extract_keeping_few_of_the_current_ids_is_flagged() -> None:
    previous = pd.Index([f"{i:05d}" for i in range(1, 101)])
    new = pd.Index([str(i) for i in range(1, 101)])
    match = ids_kept(new, previous, "employees", CHECKS)
    assert (match.matched, match.total, match.ok) == (0, 100, False)
    assert match.diagnosis is not None and "leading zeros" in match.diagnosis
    assert ids_kept(previous[:80], previous, "employees", CHECKS).ok  # people leave


# --- at drop time -----------------------------------------------------------------------


def served_answers(store: BlobStore) -> list[bytes]:
    client = TestClient(create_app(store, CONFIG))
    employees = DATA.users["User-Id"].head(25).tolist()
    return [client.get(f"/recommendations/{e}", params={"n": 10}).content for e in employees]


def test_a_spreadsheet_resaved_trainings_taken_is_refused_and_nothing_changes(
    store: BlobStore,
) -> None:
    published(store, DATA, CONFIG)
    before = served_answers(store)
    pointers = (
        read_pointer(store, EXTRACTS_POINTER)[0],
        read_pointer(store, RECOMMENDATIONS_POINTER)[0],
    )

    result = drop(
        store,
        "trainings-taken/resaved.csv",
        csv_bytes(resaved_by_a_spreadsheet(DATA.taken)),
        CONFIG,
    )

    assert result.status == "rejected"
    text = " ".join(p["message"] for p in result.report["problems"])
    assert "the extracts do not fit together" in text
    assert "match only without their leading zeros" in text
    assert "export the ids as text" in text
    rates = {m["what"]: m["share"] for m in result.report["matches"]}
    assert rates["trainings-taken rows whose employee is in the current employees extract"] < 0.2
    assert store.exists("hr-extracts-rejected/trainings-taken/resaved.csv")
    # Nothing moved: the same extracts, the same recommendations, the same answers.
    assert read_pointer(store, EXTRACTS_POINTER)[0] == pointers[0]
    assert precompute(store, CONFIG).status == "unchanged"
    assert read_pointer(store, RECOMMENDATIONS_POINTER)[0] == pointers[1]
    assert served_answers(store) == before


def test_a_users_extract_whose_ids_changed_shape_is_refused(store: BlobStore) -> None:
    drop_all(store, DATA, CONFIG)
    users = DATA.users.assign(**{"User-Id": DATA.users["User-Id"].astype(int).astype(str)})

    result = drop(store, "users/resaved.csv", csv_bytes(users), CONFIG)

    assert result.status == "rejected"
    whats = [m["what"] for m in result.report["matches"] if not m["ok"]]
    assert whats == [
        "current trainings-taken rows whose employee is in this extract",
        "employees of the current extract still in this one",
    ]


def test_a_drop_that_fits_reports_its_match_rates(store: BlobStore) -> None:
    drop_all(store, DATA, CONFIG)
    fewer = DATA.taken.iloc[: len(DATA.taken) // 2]

    result = drop(store, "trainings-taken/half.csv", csv_bytes(fewer), CONFIG)

    assert result.status == "accepted"
    assert [m["share"] for m in result.report["matches"]] == [1.0, 1.0, 1.0]


def test_the_checks_can_be_loosened(store: BlobStore) -> None:
    config = small_config(contract={"checks": {"min_matched_rows": 0.0, "min_kept_ids": 0.0}})
    drop_all(store, DATA, config)
    resaved = csv_bytes(resaved_by_a_spreadsheet(DATA.taken))
    assert drop(store, "trainings-taken/resaved.csv", resaved, config).status == "accepted"


def test_a_missing_weight_column_with_a_minimum_names_the_column_the_file_has(
    store: BlobStore,
) -> None:
    config = small_config(contract={"taken": {"min_weight": 4}})
    taken = DATA.taken.rename(columns={"rating": "ratings"})

    result = drop(store, "trainings-taken/renamed.csv", csv_bytes(taken), config)

    assert result.status == "rejected"
    [problem] = result.report["problems"]
    assert problem["column"] == "rating"
    assert "min_weight 4" in problem["message"] and "the file has 'ratings'" in problem["message"]
    # Only the case and spacing differ: read as the configured column, and said so.
    taken = DATA.taken.rename(columns={"rating": " Rating"})
    result = drop(store, "trainings-taken/case.csv", csv_bytes(taken), config)
    assert result.status == "accepted"
    assert "column 'Rating' read as 'rating'" in result.report["problems"][0]["message"]


def test_a_drop_with_no_success_to_learn_from_is_refused(store: BlobStore) -> None:
    config = small_config(contract={"taken": {"min_weight": 6}})  # ratings go up to 5

    result = drop(store, "trainings-taken/all-low.csv", csv_bytes(DATA.taken), config)

    assert result.status == "rejected"
    assert "no row reaches contract.taken.min_weight 6" in result.report["problems"][0]["message"]
