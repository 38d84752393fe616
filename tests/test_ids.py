"""One id rule: what the extracts accept, the API serves (emails, any script, '+', '@')."""

from __future__ import annotations

import io
from urllib.parse import quote

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from world import csv_bytes, drop, small_config, small_data

from shared.api import create_app
from shared.ids import MAX_ID_LENGTH, clean_id, id_problem
from shared.pipeline import retrain
from shared.schema import parse_extract
from shared.storage import LocalFolderStore

CONFIG = small_config()
DATA = small_data()
ZWSP, BOM, NBSP = "\u200b", "\ufeff", "\u00a0"


def employee_id(old: str) -> str:
    n = int(old)
    return (f"user.{n}+hr@corp.example.com", f"José.Ünal-{n}", f"李{n}", f"{n:06d}")[n % 4]


def training_id(old: str) -> str:
    return f"LMS+{old}@Ökonomie"


def with_new_ids(data: pd.DataFrame, columns: dict[str, object]) -> pd.DataFrame:
    return data.assign(**{c: data[c].map(f) for c, f in columns.items()})


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    store = LocalFolderStore(tmp_path_factory.mktemp("ids") / "store")
    users = with_new_ids(DATA.users, {"User-Id": employee_id})
    # What a spreadsheet leaves unseen: a zero-width space before some ids, a BOM or
    # a no-break space after others. The trainings taken name the same ids, clean.
    users["User-Id"] = [
        (ZWSP + i, i + BOM, i + NBSP, i)[n % 4] for n, i in enumerate(users["User-Id"])
    ]
    trainings = with_new_ids(DATA.trainings, {"Training-Id": training_id})
    taken = with_new_ids(DATA.taken, {"User-Id": employee_id, "Training-Id": training_id})
    for kind, frame in (("users", users), ("trainings", trainings), ("trainings-taken", taken)):
        assert drop(store, f"{kind}/{kind}.csv", csv_bytes(frame), CONFIG).status == "accepted"
    assert retrain(store, CONFIG).status == "published"
    return TestClient(create_app(store, CONFIG))


def test_invisible_and_control_characters_are_removed_from_read_ids() -> None:
    assert clean_id(f"{ZWSP} 00042{BOM}{NBSP}\t") == "00042"
    assert clean_id("a\x00b") == "ab"
    assert clean_id("user.42+hr@corp.example.com") == "user.42+hr@corp.example.com"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("x" * (MAX_ID_LENGTH + 1), f"longer than {MAX_ID_LENGTH}"),
        ("a/b", "contains /"),
        ("<b>", "contains < >"),
        ("José.Ünal@corp.example.com", None),
    ],
)
def test_ids_the_api_could_not_serve_are_named(text: str, reason: str | None) -> None:
    problem = id_problem(text)
    assert problem is None if reason is None else reason in str(problem)


def test_rows_with_ids_the_api_refuses_are_dropped_and_reported() -> None:
    users = DATA.users.head(5).copy()
    users.loc[1, "User-Id"] = "a/b"
    users.loc[3, "User-Id"] = "x" * (MAX_ID_LENGTH + 1)
    frame, report = parse_extract(
        "users", io.BytesIO(csv_bytes(users)), CONFIG.contract, "users.csv"
    )

    assert len(frame) == 3
    messages = sorted((p.line, p.message) for p in report.problems)
    assert messages == [
        (3, "identifier contains /, which the API refuses in an id: row dropped"),
        (5, f"identifier longer than {MAX_ID_LENGTH} characters: row dropped"),
    ]


def test_every_employee_and_training_of_the_extracts_is_served_over_http(
    client: TestClient,
) -> None:
    employees = [employee_id(u) for u in DATA.users["User-Id"]]
    trainings = [training_id(t) for t in DATA.trainings["Training-Id"]]
    for employee in employees:
        got = client.get(f"/recommendations/{quote(employee, safe='')}", params={"n": 3})
        assert got.status_code == 200, (employee, got.text)
        assert got.json()["employee_id"] == employee
        ranked = client.post("/rank", json={"employee_id": employee, "training_ids": trainings[:3]})
        assert ranked.status_code == 200, (employee, ranked.text)
        assert {t["training_id"] for t in ranked.json()["trainings"]} == set(trainings[:3])
    for training in trainings[:20]:
        similar = client.get(f"/trainings/{quote(training, safe='')}/similar", params={"n": 3})
        assert similar.status_code == 200, (training, similar.text)
        assert training not in {t["training_id"] for t in similar.json()["trainings"]}


def test_an_id_with_an_invisible_character_is_refused_in_a_request(client: TestClient) -> None:
    employee = employee_id(DATA.users["User-Id"].iloc[0])
    got = client.get(f"/recommendations/{quote(ZWSP + employee, safe='')}")
    assert got.status_code == 422
    body = {"employee_id": employee + NBSP, "training_ids": ["x"]}
    assert client.post("/rank", json=body).status_code == 422
