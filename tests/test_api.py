"""The HTTP API through the real FastAPI app (TestClient), on a local store."""

from __future__ import annotations

import inspect
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import URLError

import pandas as pd
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from world import csv_bytes, drop, drop_all, small_config, small_data

from shared.api import create_app
from shared.api.routers import events, recommendations, status, trainings
from shared.api.schemas import EmployeeRecommendations
from shared.ids import MAX_ID_LENGTH
from shared.layout import RECOMMENDATIONS_POINTER, read_pointer
from shared.pipeline import precompute, retrain
from shared.serving import ServingCache
from shared.storage import LocalFolderStore

CONFIG = small_config()
DATA = small_data()
NEW_EMPLOYEE = {
    "ou": "development",
    "skills": ["python", "sql"],
    "language": "english",
    "grade": "G3",
    "career interests": "data",
}


def publish(folder: Path) -> tuple[LocalFolderStore, TestClient]:
    store = LocalFolderStore(folder / "store")
    drop_all(store, DATA, CONFIG)
    retrain(store, CONFIG)
    return store, TestClient(create_app(store, CONFIG))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalFolderStore, TestClient]:
    """One published store for the read-only tests of this module."""
    return publish(tmp_path_factory.mktemp("api"))


@pytest.fixture
def client(served: tuple[LocalFolderStore, TestClient]) -> TestClient:
    return served[1]


def known_employee() -> str:
    return str(DATA.taken["User-Id"].iloc[0])


def test_known_employee_gets_the_precomputed_list(client: TestClient) -> None:
    employee = known_employee()
    response = client.get(f"/recommendations/{employee}", params={"n": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["employee_id"] == employee
    assert {"model_version", "data_version", "recommendations_version"} <= set(body)
    trainings = body["trainings"]
    assert [t["rank"] for t in trainings] == [1, 2, 3, 4, 5]
    scores = [t["score"] for t in trainings]
    assert scores == sorted(scores, reverse=True)
    taken = set(DATA.taken.loc[DATA.taken["User-Id"] == employee, "Training-Id"])
    assert not {t["training_id"] for t in trainings} & taken
    first = trainings[0]
    title = DATA.trainings.set_index("Training-Id").loc[first["training_id"], "Training Title"]
    assert first["title"] == title
    assert set(first["attributes"]) == set(CONFIG.contract.trainings.features)


@pytest.mark.parametrize("query", ["n=5", "n=3&explain=true"])
def test_the_get_body_is_exactly_its_response_model(client: TestClient, query: str) -> None:
    # GET /recommendations returns its JSON without FastAPI's re-validation (the hot
    # path): the body must be what the documented model would have produced.
    response = client.get(f"/recommendations/{known_employee()}?{query}")
    body = response.json()
    assert response.status_code == 200
    assert body == EmployeeRecommendations.model_validate(body).model_dump(mode="json")


def test_no_dependency_hops_to_a_worker_thread(client: TestClient) -> None:
    # FastAPI runs a sync dependency in the thread pool: on the hot GET that hop cost
    # more than the answer (480 vs 170 µs per request, measured in-process). Every
    # dependency is async; the GET handler too (a sync one would be a hop of its own).
    def dependencies(dependant: Dependant) -> Iterator[Dependant]:
        for sub in dependant.dependencies:
            yield sub
            yield from dependencies(sub)

    routes = [
        route
        for module in (recommendations, trainings, events, status)
        for route in module.router.routes
        if isinstance(route, APIRoute)
    ]
    assert len(routes) == len(client.app.openapi()["paths"])  # type: ignore[attr-defined]
    sync = [
        f"{route.path}: {sub.call.__name__}"
        for route in routes
        for sub in dependencies(route.dependant)
        if sub.call is not None and not inspect.iscoroutinefunction(sub.call)
    ]
    assert sync == []
    get = next(r for r in routes if r.path == "/recommendations/{employee_id}")
    assert inspect.iscoroutinefunction(get.endpoint)


def test_unknown_employee_is_a_404_that_says_how_to_score_a_new_one(client: TestClient) -> None:
    response = client.get("/recommendations/123456789")
    assert response.status_code == 404
    assert "POST their attributes to /recommendations" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/recommendations/000001?n=0", 422),
        ("/recommendations/000001?n=101", 422),
        ("/recommendations/000001?n=abc", 422),
        ("/recommendations/" + "9" * (MAX_ID_LENGTH + 1), 422),
        ("/recommendations/bad%3Cid%3E", 422),  # markup: no id carries it
        ("/recommendations/%20padded", 422),  # ids have no surrounding spaces
        ("/trainings/T00001/similar?n=-1", 422),
    ],
)
def test_bad_parameters_get_a_clear_4xx(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.json()["detail"]


def test_new_employee_is_scored_from_attributes_and_unknown_values_reported(
    client: TestClient,
) -> None:
    attributes = {**NEW_EMPLOYEE, "skills": ["python", "cobol"]}
    response = client.post("/recommendations", json={"attributes": attributes, "n": 4})
    assert response.status_code == 200
    body = response.json()
    assert len(body["trainings"]) == 4
    assert body["ignored_values"] == ["skills:cobol"]


def test_new_employee_recommendations_follow_their_skills(client: TestClient) -> None:
    def skills_of(skill: str) -> list[str]:
        body = client.post(
            "/recommendations", json={"attributes": {**NEW_EMPLOYEE, "skills": [skill]}, "n": 10}
        ).json()
        return [t["attributes"]["main skill"] for t in body["trainings"]]

    assert skills_of("python") != skills_of("negotiation")


ATTRIBUTE_COLUMNS = ["ou", "skills", "language", "grade", "career interests"]


def without_scores(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.items() if k != "score"} for t in answer["trainings"]]


def test_posting_an_employee_s_attributes_and_history_gives_their_precomputed_list(
    client: TestClient,
) -> None:
    taken = DATA.taken.groupby("User-Id")["Training-Id"].apply(list)
    employees = DATA.users.set_index("User-Id")
    checked = 0
    for employee in [*taken.index[:40], *employees.index.difference(taken.index)[:5]]:
        row = employees.loc[employee]
        attributes = {column: str(row[column]) for column in ATTRIBUTE_COLUMNS}
        history = taken.get(employee, [])
        posted = client.post(
            "/recommendations",
            json={"attributes": attributes, "taken_training_ids": history, "n": 10},
        ).json()
        precomputed = client.get(f"/recommendations/{employee}", params={"n": 10}).json()
        assert posted["scorer"] == precomputed["scorer"]
        # The same list; scores to float32 precision (BLAS sums a block of employees in
        # another order than one employee's product).
        assert without_scores(posted) == without_scores(precomputed), employee
        assert [t["score"] for t in posted["trainings"]] == pytest.approx(
            [t["score"] for t in precomputed["trainings"]], abs=1e-5
        )
        assert not {t["training_id"] for t in posted["trainings"]} & set(history)
        checked += 1
    assert checked == 45


def test_a_new_hire_s_first_completions_shape_their_list(client: TestClient) -> None:
    before = client.post("/recommendations", json={"attributes": NEW_EMPLOYEE, "n": 10}).json()
    took = [t["training_id"] for t in before["trainings"][:2]]
    after = client.post(
        "/recommendations",
        json={"attributes": NEW_EMPLOYEE, "n": 10, "taken_training_ids": [*took, "NOT-IN-CATALOG"]},
    ).json()
    assert not set(took) & {t["training_id"] for t in after["trainings"]}
    assert after["unknown_training_ids"] == ["NOT-IN-CATALOG"]
    served = client.get("/health").json()["scorers"]
    assert after["scorer"] == served["known"]  # with a history, served as known employees


def test_new_employee_excluded_trainings_are_not_returned(client: TestClient) -> None:
    first = client.post("/recommendations", json={"attributes": NEW_EMPLOYEE, "n": 3}).json()
    excluded = [t["training_id"] for t in first["trainings"]]
    again = client.post(
        "/recommendations",
        json={"attributes": NEW_EMPLOYEE, "n": 3, "exclude_training_ids": excluded},
    ).json()
    assert not {t["training_id"] for t in again["trainings"]} & set(excluded)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"attributes": "python"},
        {"attributes": {"shoe size": "42"}},
        {"attributes": NEW_EMPLOYEE, "n": 0},
        {"attributes": NEW_EMPLOYEE, "n": 1000},
        {"attributes": NEW_EMPLOYEE, "unexpected": True},
        {"attributes": {"skills": ["x"] * 101}},
    ],
)
def test_malformed_bodies_get_a_422_naming_the_problem(client: TestClient, body: object) -> None:
    response = client.post("/recommendations", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_not_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/recommendations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_similar_trainings(client: TestClient) -> None:
    training = str(DATA.trainings["Training-Id"].iloc[0])
    response = client.get(f"/trainings/{training}/similar", params={"n": 5})
    assert response.status_code == 200
    ids = [t["training_id"] for t in response.json()["trainings"]]
    assert len(ids) == 5
    assert training not in ids
    assert client.get("/trainings/NOPE/similar").status_code == 404


def test_health_and_model(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["model_age_seconds"] >= 0
    model = client.get("/model").json()
    assert model["version"] == health["versions"]["model_version"]
    assert model["evaluation"]["results"]["known"]["served"]["precision"] > 0
    assert model["gate"]["decision"] == "accepted"
    # Which scorer serves whom, the same in /health, /model and the answers.
    served = {p: v["scorer"] for p, v in model["served"].items()}
    assert health["scorers"] == {"known": served["known"], "new": served["cold-start"]}
    known = client.get(f"/recommendations/{known_employee()}").json()
    assert known["scorer"] == served["known"]
    new = client.post("/recommendations", json={"attributes": NEW_EMPLOYEE}).json()
    assert new["scorer"] == served["cold-start"]
    assert model["data"]["counts"]["employees"] == len(DATA.users)


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/recommendations/{employee_id}", "/recommendations", "/health", "/model"} <= set(
        schema["paths"]
    )
    assert client.get("/docs").status_code == 200


def test_nothing_published_yet_is_a_503_not_a_500(tmp_path: Path) -> None:
    client = TestClient(create_app(LocalFolderStore(tmp_path), CONFIG))
    assert client.get("/recommendations/000001").status_code == 503
    assert client.get("/health").status_code == 503


def test_a_new_version_is_served_without_restart_and_a_broken_one_never(tmp_path: Path) -> None:
    store, client = publish(tmp_path)
    before = client.get("/health").json()["versions"]
    newcomer = DATA.users.iloc[[0]].assign(**{"User-Id": "777777"})
    drop(store, "users/more.csv", csv_bytes(pd.concat([DATA.users, newcomer])), CONFIG)
    precompute(store, CONFIG)
    assert client.get("/recommendations/777777").status_code == 200
    after = client.get("/health").json()["versions"]
    assert after["recommendations_version"] != before["recommendations_version"]

    # A pointer naming a version whose files are corrupted: the instance keeps serving.
    pointer, _ = read_pointer(store, RECOMMENDATIONS_POINTER)
    store.write("recommendations/broken/top.npz", b"not an npz")
    store.write("recommendations/broken/meta.json", b"{}")
    store.write(RECOMMENDATIONS_POINTER, json.dumps({**pointer, "version": "broken"}).encode())
    assert client.get("/recommendations/777777").status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert "recommendations/broken/top.npz: not an .npz archive" in health["last_error"]
    assert health["versions"] == after


def test_the_cache_answers_without_storage_io_only_until_a_check_is_due(
    served: tuple[LocalFolderStore, TestClient],
) -> None:
    # GET answers on the event loop only from ready(); anything that needs storage
    # (the first load, a due pointer check) goes through current() in a thread.
    store, _ = served
    patient = ServingCache(store, refresh_seconds=3600)
    assert patient.ready() is None
    snapshot = patient.current()
    assert patient.ready() is snapshot
    eager = ServingCache(store, refresh_seconds=0)
    eager.current()
    assert eager.ready() is None


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        body: bytes = response.read()
        return body.decode()


def test_uvicorn_serves_the_api_and_its_docs(
    served: tuple[LocalFolderStore, TestClient], tmp_path: Path
) -> None:
    """`python -m shared serve` really listens: /docs and a recommendation over loopback."""
    store, _ = served
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "shared", "--store", str(store.root), "serve"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                docs = fetch(f"{base}/docs")
                break
            except (URLError, ConnectionError):
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "uvicorn did not answer within 30 s"
                time.sleep(0.2)
        assert "swagger" in docs.lower()
        answer = json.loads(fetch(f"{base}/recommendations/{known_employee()}"))
        assert answer["trainings"]
    finally:
        server.terminate()
        server.wait(timeout=10)
