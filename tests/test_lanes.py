"""Lanes beside the main list: the skill gap to a target role (roles extract), what
peers took, what is trending; through the drop, the precompute and the real API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from world import csv_bytes, drop, published, small_config, small_data

from shared import cli
from shared.api import create_app
from shared.pipeline import precompute
from shared.storage import LocalFolderStore

CONFIG = small_config()
DATA = small_data()
ROLES = pd.DataFrame(
    {
        "Role-Id": ["R-DATA", "R-RISK"],
        "Role Title": ["Data Analyst", "Risk Officer"],
        "skills": ["SQL; Python;statistics;power bi", "risk management;negotiation;excel"],
    }
)
ROLE_SKILLS = {"R-DATA": {"sql", "python", "statistics", "power bi"}}
USERS = DATA.users.assign(
    **{"target role": np.where(np.arange(len(DATA.users)) % 3 == 0, "R-DATA", "")}
)
EMPLOYEES = USERS["User-Id"].astype(str)
WITH_ROLE = EMPLOYEES[USERS["target role"] == "R-DATA"].tolist()
WITHOUT_ROLE = EMPLOYEES[USERS["target role"] == ""].tolist()
MAIN_SKILL = dict(zip(DATA.trainings["Training-Id"], DATA.trainings["main skill"], strict=True))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalFolderStore:
    store = published(LocalFolderStore(tmp_path_factory.mktemp("lanes")), DATA, CONFIG)
    assert drop(store, "users/with-roles.csv", csv_bytes(USERS), CONFIG).status == "accepted"
    assert drop(store, "roles/roles.csv", csv_bytes(ROLES), CONFIG).status == "accepted"
    assert precompute(store, CONFIG).status == "computed"
    return store


@pytest.fixture(scope="module")
def client(store: LocalFolderStore) -> TestClient:
    return TestClient(create_app(store, CONFIG))


def lane(client: TestClient, employee: str, name: str, **params: Any) -> Any:
    return client.get(f"/recommendations/{employee}", params={"lane": name, **params})


def taken_by(employee: str) -> set[str]:
    return set(DATA.taken.loc[DATA.taken["User-Id"] == employee, "Training-Id"])


def skills_of(employee: str) -> set[str]:
    cell = USERS.loc[USERS["User-Id"] == employee, "skills"].iloc[0]
    return {s.strip().lower() for s in cell.split(";") if s.strip()}


def test_the_skill_gap_lane_returns_only_trainings_teaching_a_gap_skill_named(
    client: TestClient,
) -> None:
    answered = 0
    for employee in WITH_ROLE[:40]:
        got = lane(client, employee, "skill-gap", n=60)
        assert got.status_code == 200, got.text
        body = got.json()
        gap = ROLE_SKILLS["R-DATA"] - skills_of(employee)
        assert set(body["gap"]) == gap and body["target_role_title"] == "Data Analyst"
        expected = {
            t for t, skill in MAIN_SKILL.items() if skill in gap and t not in taken_by(employee)
        }
        ids = [t["training_id"] for t in body["trainings"]]
        assert set(ids) == expected  # all of them, and nothing else
        for t in body["trainings"]:
            reasons = t["explanation"]["reasons"]
            assert reasons == [{"code": "gap", "value": MAIN_SKILL[t["training_id"]]}]
            assert "Data Analyst" in t["explanation"]["text"]
        scores = [t["score"] for t in body["trainings"]]
        assert scores == sorted(scores, reverse=True)  # ranked by the model
        answered += bool(ids)
    assert answered >= 20


def test_the_target_role_can_be_given_and_its_absence_is_explained(client: TestClient) -> None:
    employee = WITHOUT_ROLE[0]
    missing = lane(client, employee, "skill-gap")
    assert missing.status_code == 409 and "target_role" in missing.json()["detail"]
    given = lane(client, employee, "skill-gap", target_role="R-RISK").json()
    assert given["target_role"] == "R-RISK"
    assert set(given["gap"]) <= {"risk management", "negotiation", "excel"}
    unknown = lane(client, employee, "skill-gap", target_role="R-NOPE")
    assert unknown.status_code == 404 and "R-NOPE" not in unknown.text  # never echoed


def test_the_peers_lane_counts_employees_of_the_same_department_and_grade(
    client: TestClient,
) -> None:
    taken = DATA.taken.merge(USERS[["User-Id", "ou", "grade"]], on="User-Id")
    for employee in EMPLOYEES.iloc[::37]:
        me = USERS.loc[USERS["User-Id"] == employee].iloc[0]
        peers = taken[(taken["ou"] == me["ou"]) & (taken["grade"] == me["grade"])]
        counts = peers.groupby("Training-Id")["User-Id"].nunique()
        counts = counts.drop(list(taken_by(employee)), errors="ignore")
        body = lane(client, employee, "peers", n=5).json()
        got = {
            t["training_id"]: int(t["explanation"]["reasons"][0]["value"])
            for t in body["trainings"]
        }
        assert got == {t: int(counts[t]) for t in got}  # the counts are right
        assert sorted(got.values(), reverse=True) == sorted(counts, reverse=True)[: len(got)]
        assert body["lane"] == "peers" and ".peers." in body["recommendation_id"]


def test_the_trending_lane_ranks_what_was_taken_lately(client: TestClient) -> None:
    dates = pd.to_datetime(DATA.taken["date"])
    recent = DATA.taken[dates >= dates.max() - pd.Timedelta(days=CONFIG.lanes.trending_days)]
    counts = recent["Training-Id"].value_counts()
    employee = EMPLOYEES.iloc[5]
    body = lane(client, employee, "trending", n=10).json()
    got = [
        (t["training_id"], int(t["explanation"]["reasons"][0]["value"])) for t in body["trainings"]
    ]
    assert got and all(counts[t] == c for t, c in got)
    assert not {t for t, _ in got} & taken_by(employee)
    left = counts.drop(list(taken_by(employee)), errors="ignore")
    assert [c for _, c in got] == sorted(left, reverse=True)[: len(got)]


def test_without_a_roles_extract_the_skill_gap_lane_says_so(tmp_path: Path) -> None:
    store = published(LocalFolderStore(tmp_path), DATA, CONFIG)
    client = TestClient(create_app(store, CONFIG))
    got = lane(client, str(EMPLOYEES.iloc[0]), "skill-gap")
    assert got.status_code == 409
    assert got.headers["content-type"] == "application/problem+json"
    assert "roles" in got.json()["detail"]
    assert lane(client, str(EMPLOYEES.iloc[0]), "peers").status_code == 200
    assert lane(client, str(EMPLOYEES.iloc[0]), "nope").status_code == 422


def test_a_roles_extract_without_its_skills_is_rejected(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    result = drop(store, "roles/bad.csv", csv_bytes(ROLES.drop(columns="skills")), CONFIG)
    assert result.status == "rejected" and "skills" in json.dumps(result.report)
    # Recognised by its columns too, wherever it is dropped.
    assert drop(store, "from-hr.csv", csv_bytes(ROLES), CONFIG).kind == "roles"


def test_the_command_line_shows_a_lane(store: LocalFolderStore, capsys: Any) -> None:
    root = str(store.root)
    assert cli.main(["--store", root, "recommend", WITH_ROLE[0], "--lane", "skill-gap"]) == 0
    assert "lacking" in capsys.readouterr().out
    out = ["--store", root, "--json", "recommend", WITH_ROLE[0], "--lane", "peers"]
    assert cli.main(out) == 0
    assert json.loads(capsys.readouterr().out)["lane"] == "peers"
    assert cli.main(["--store", root, "recommend", "--lane", "peers"]) != 0


def test_a_dismissed_training_leaves_the_lanes_too(client: TestClient) -> None:
    employee = str(EMPLOYEES.iloc[11])
    first = lane(client, employee, "trending", n=3).json()
    dismissed = first["trainings"][0]["training_id"]
    event = {
        "key": "lanes-dismiss-1",
        "recommendation_id": first["recommendation_id"],
        "employee_id": employee,
        "training_id": dismissed,
        "type": "dismissed",
        "position": 1,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    assert client.post("/events", json={"events": [event]}).status_code == 202
    after = lane(client, employee, "trending", n=3).json()
    assert dismissed not in [t["training_id"] for t in after["trainings"]]
    assert len(after["trainings"]) == 3


def test_a_posted_employee_gets_the_same_lanes_as_from_the_extract(client: TestClient) -> None:
    employee = WITH_ROLE[1]
    me = USERS.loc[USERS["User-Id"] == employee].iloc[0]
    attributes = {c: str(me[c]) for c in ("ou", "skills", "language", "grade", "career interests")}
    posted = {"attributes": attributes, "taken_training_ids": sorted(taken_by(employee)), "n": 8}
    for name, extra in (("peers", {}), ("skill-gap", {"target_role": "R-DATA"})):
        got = client.post("/recommendations", json={**posted, "lane": name, **extra})
        assert got.status_code == 200, got.text
        stored = lane(client, employee, name, n=8).json()
        assert got.json()["lane"] == name
        assert [t["training_id"] for t in got.json()["trainings"]] == [
            t["training_id"] for t in stored["trainings"]
        ]
        assert got.json().get("gap") == stored.get("gap")
    # Without a target role, a posted employee's skill gap says what is missing.
    missing = client.post("/recommendations", json={**posted, "lane": "skill-gap"})
    assert missing.status_code == 409 and "target_role" in missing.json()["detail"]
