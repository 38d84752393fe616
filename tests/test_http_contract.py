"""The HTTP contract an intranet app builds on: problem details for every error, HTTP
semantics (405 with Allow, HEAD, no redirect, Retry-After), conditional GETs (ETag,
304), and an OpenAPI document that states every limit the server enforces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from world import csv_bytes, drop, drop_all, served_over_http, small_config, small_data

from shared.api import create_app
from shared.pipeline import precompute, retrain
from shared.settings import Config
from shared.storage import LocalFolderStore

CONFIG = small_config()
DATA = small_data()
SECRET = "do-not-echo-7f3a"  # sent in bad input; must never come back


def employee() -> str:
    return str(DATA.taken["User-Id"].iloc[0])


def training() -> str:
    return str(DATA.trainings["Training-Id"].iloc[0])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    store = LocalFolderStore(tmp_path_factory.mktemp("contract") / "store")
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    return TestClient(create_app(store, CONFIG))


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"] and isinstance(body["detail"], str) and body["detail"]
    assert SECRET not in response.text
    return dict(body)


JSON = {"content-type": "application/json"}
ERRORS: dict[str, tuple[dict[str, Any], int]] = {
    "unparsable body": (
        {
            "method": "POST",
            "url": "/recommendations",
            "content": '{"attributes": ' + "[" * 20_000 + "]" * 20_000 + "}",
            "headers": JSON,
        },
        400,
    ),
    "unknown employee": ({"method": "GET", "url": f"/recommendations/{SECRET}"}, 404),
    "unknown training": ({"method": "GET", "url": f"/trainings/{SECRET}/similar"}, 404),
    "no such path": ({"method": "GET", "url": f"/nothing/{SECRET}"}, 404),
    "wrong method": ({"method": "PUT", "url": "/health", "content": SECRET}, 405),
    "body too large": (
        {"method": "POST", "url": "/recommendations", "content": SECRET * 10_000, "headers": JSON},
        413,
    ),
    "not JSON": (
        {
            "method": "POST",
            "url": "/rank",
            "content": SECRET,
            "headers": {"content-type": "text/plain"},
        },
        415,
    ),
    "invalid parameter": (
        {"method": "GET", "url": f"/recommendations/{employee()}?n={SECRET}"},
        422,
    ),
    "n over the maximum": (
        {"method": "GET", "url": f"/recommendations/{employee()}?n=100000"},
        422,
    ),
    "unknown attribute": (
        {"method": "POST", "url": "/recommendations", "json": {"attributes": {SECRET: "x"}}},
        422,
    ),
    "unknown field": (
        {"method": "POST", "url": "/recommendations", "json": {"attributes": {}, SECRET: 1}},
        422,
    ),
    "an attribute value of a wrong type, under its name": (
        {"method": "POST", "url": "/recommendations", "json": {"attributes": {SECRET: 5}}},
        422,
    ),
    "unknown training filter": (
        {"method": "GET", "url": f"/recommendations/{employee()}?filter={SECRET}:x"},
        422,
    ),
    "malformed filter": (
        {"method": "GET", "url": f"/trainings/{training()}/similar?filter={SECRET}"},
        422,
    ),
    "unknown employee filter": (
        {"method": "GET", "url": f"/trainings/{training()}/audience?filter={SECRET}:x"},
        422,
    ),
    "both shapes of a rank": (
        {
            "method": "POST",
            "url": "/rank",
            "json": {"employee_id": employee(), "attributes": {}, "training_ids": [SECRET]},
        },
        422,
    ),
}


@pytest.mark.parametrize(("request_", "status"), ERRORS.values(), ids=ERRORS.keys())
def test_every_error_is_problem_details_without_the_input(
    client: TestClient, request_: dict[str, Any], status: int
) -> None:
    assert_problem(client.request(**request_), status)


def test_a_validation_error_lists_each_field_and_what_is_wrong(client: TestClient) -> None:
    body = assert_problem(client.get(f"/recommendations/{employee()}?n=0"), 422)
    assert body["errors"] == [
        {"loc": ["query", "n"], "type": "greater_than_equal", "msg": body["errors"][0]["msg"]}
    ]
    assert "query.n" in body["detail"]
    both = client.post(
        "/rank", json={"employee_id": employee(), "attributes": {}, "training_ids": ["T1"]}
    ).json()
    assert {e["type"] for e in both["errors"]} == {"extra_forbidden"}  # neither shape fits


def test_a_wrong_method_is_405_with_the_methods_allowed(client: TestClient) -> None:
    assert client.put("/health").headers["allow"] == "GET, HEAD"
    assert client.delete(f"/recommendations/{employee()}").headers["allow"] == "GET, HEAD"
    rank = client.get("/rank")
    assert_problem(rank, 405)
    assert rank.headers["allow"] == "POST"
    # The method is checked before the body: a POST without JSON to a GET-only path.
    assert_problem(client.post("/health", content=b"x"), 405)


@pytest.mark.parametrize(
    "path", ["/health", "/model", "/model/schema", f"/recommendations/{employee()}?n=3"]
)
def test_head_answers_as_get_without_a_body(client: TestClient, path: str) -> None:
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers.get("etag") == get.headers.get("etag")


def test_a_trailing_slash_is_a_404_not_a_redirect(client: TestClient) -> None:
    response = client.get(f"/recommendations/{employee()}/", follow_redirects=False)
    assert_problem(response, 404)
    assert "location" not in response.headers
    assert_problem(client.post("/rank/", json={}, follow_redirects=False), 404)


def test_503_says_when_to_retry(tmp_path: Path) -> None:
    config = Config.from_dict({**CONFIG.to_dict(), "serving": {"refresh_seconds": 45}})
    client = TestClient(create_app(LocalFolderStore(tmp_path), config))
    for path in (f"/recommendations/{employee()}", "/health", "/model"):
        response = client.get(path)
        assert_problem(response, 503)
        assert response.headers["retry-after"] == "45"
    assert client.get("/health").headers["cache-control"] == "no-store"


CACHED = [
    f"/recommendations/{employee()}",
    f"/recommendations/{employee()}?n=3&explain=true",
    f"/trainings/{training()}/similar",
    "/model",
    "/model/schema",
]


@pytest.mark.parametrize("path", CACHED)
def test_a_get_answer_is_revalidated_with_its_etag(client: TestClient, path: str) -> None:
    first = client.get(path)
    tag = first.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"')  # strong
    assert (
        first.headers["cache-control"] == f"private, max-age={int(CONFIG.serving.refresh_seconds)}"
    )
    assert client.get(path).headers["etag"] == tag  # the same answer, the same tag
    for sent in (tag, f'"other", W/{tag}', "*"):
        unchanged = client.get(path, headers={"If-None-Match": sent})
        assert unchanged.status_code == 304, sent
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == tag
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_different_question_has_a_different_etag(client: TestClient) -> None:
    tags = {
        client.get(f"/recommendations/{employee()}{query}").headers["etag"]
        for query in ("", "?n=3", "?explain=true", "?filter=provider:internal")
    }
    assert len(tags) == 4


def test_a_new_recommendations_version_changes_the_etag(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    drop_all(store, DATA, CONFIG)
    retrain(store, CONFIG)
    client = TestClient(create_app(store, CONFIG))
    path = f"/recommendations/{employee()}"
    before = client.get(path).headers["etag"]
    newcomer = DATA.users.iloc[[0]].assign(**{"User-Id": "777777"})
    drop(store, "users/more.csv", csv_bytes(pd.concat([DATA.users, newcomer])), CONFIG)
    precompute(store, CONFIG)
    after = client.get(path, headers={"If-None-Match": before})
    assert after.status_code == 200  # not 304: the version changed
    assert after.headers["etag"] != before


# --------------------------------------------------------------------- the schema


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def test_every_n_has_the_deployment_s_maximum(document: dict[str, Any]) -> None:
    limits = [
        p["schema"]["maximum"]
        for methods in document["paths"].values()
        for operation in methods.values()
        for p in operation.get("parameters", [])
        if p["name"] == "n"
    ]
    assert limits == [CONFIG.serving.max_n] * 3  # GET recommendations, similar, audience
    body = document["components"]["schemas"]["NewEmployee"]["properties"]["n"]
    assert body["maximum"] == CONFIG.serving.max_n
    too_large = document["paths"]["/rank"]["post"]["responses"]["413"]["description"]
    assert f"over {CONFIG.serving.max_body_bytes} bytes" in too_large


def test_rank_takes_exactly_one_of_two_shapes(document: dict[str, Any]) -> None:
    body = document["paths"]["/rank"]["post"]["requestBody"]["content"]["application/json"]
    assert [s["$ref"].rsplit("/", 1)[1] for s in body["schema"]["oneOf"]] == [
        "RankForEmployee",
        "RankForAttributes",
    ]
    schemas = document["components"]["schemas"]
    assert schemas["RankForEmployee"]["additionalProperties"] is False
    assert "employee_id" not in schemas["RankForAttributes"]["properties"]


def test_attribute_names_are_those_of_the_serving_model(
    client: TestClient, document: dict[str, Any]
) -> None:
    attributes = document["components"]["schemas"]["NewEmployee"]["properties"]["attributes"]
    assert sorted(attributes["properties"]) == sorted(CONFIG.contract.users.features)
    assert attributes["additionalProperties"] is False
    served = client.get("/model/schema").json()
    assert served["attributes"] == attributes
    multi = CONFIG.contract.users.multi_valued[0]
    assert {"type": "array"}.items() <= attributes["properties"][multi]["anyOf"][0].items()
    filters = document["components"]["schemas"]["NewEmployee"]["properties"]["filters"]
    assert filters["propertyNames"]["enum"] == list(CONFIG.contract.trainings.features)


def test_every_operation_documents_its_errors_as_problem_details(document: dict[str, Any]) -> None:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status in ("404", "405", "422", "503"):
                content = operation["responses"][status]["content"]
                assert list(content) == ["application/problem+json"], (path, method, status)
    assert document["paths"]["/health"]["get"]["responses"]["503"]["headers"]["Retry-After"]
    assert "Problem" in document["components"]["schemas"]


def test_answers_link_their_ids_to_the_operations_that_take_them(
    document: dict[str, Any],
) -> None:
    links = document["paths"]["/recommendations/{employee_id}"]["get"]["responses"]["200"]["links"]
    operations = {
        operation["operationId"]
        for methods in document["paths"].values()
        for operation in methods.values()
    }
    assert {link["operationId"] for link in links.values()} == {"post_rank", "get_similar"}
    assert {"post_rank", "get_similar"} <= operations
    assert json.dumps(links).count("$response.body#/") == 3


# --------------------------------------------------------------- the README client


def readme_client() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    after = readme.split("In Python, with the standard library only", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_python_client_works_and_reuses_its_etag(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    with served_over_http(client.app) as base_url:
        namespace: dict[str, Any] = {"BASE_URL": base_url, "EMPLOYEE_ID": employee()}
        exec(compile(readme_client(), "README.md", "exec"), namespace)
    answer = namespace["answer"]
    assert len(answer["trainings"]) == 5
    assert namespace["again"] is answer  # the 304: the cached answer, not a new download
    assert (
        namespace["ranked"]["trainings"][0]["training_id"] == answer["trainings"][0]["training_id"]
    )
    assert len(namespace["similar"]["trainings"]) == 3
    assert capsys.readouterr().out.count("\n") == 5  # a line per training, with its reason


def test_an_unexpected_error_is_a_500_in_the_same_shape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError(f"a bug with {SECRET}")

    monkeypatch.setattr("shared.api.routers.recommendations.recommend_known", broken)
    quiet = TestClient(client.app, raise_server_exceptions=False)
    assert_problem(quiet.get(f"/recommendations/{employee()}"), 500)
