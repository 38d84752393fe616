"""HTTP input, personal data, CORS, secrets and access: what an intranet caller can send and see.

Property-based first: schemathesis generates requests from the app's own OpenAPI
schema (valid and invalid ones) for every operation and checks each answer against
the schema. Then the limits one by one, each with the 4xx and the message it must
give; then what answers must never contain (anyone's name, other employees); CORS;
secrets in the tracked files; the Functions auth level.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from httpx2 import Response
from schemathesis.checks import CHECKS as CHECKS_REGISTRY
from schemathesis.checks import load_all_checks
from world import drop_all, small_config, small_data

from shared.api import create_app
from shared.ids import MAX_ID_LENGTH
from shared.pipeline import retrain
from shared.settings import Config
from shared.storage import LocalFolderStore

REPO = Path(__file__).resolve().parents[1]
CONFIG = small_config()
DATA = small_data()
MAX_BODY = CONFIG.serving.max_body_bytes
MAX_N = CONFIG.serving.max_n
NEW_EMPLOYEE = {"ou": "development", "skills": ["python", "sql"], "language": "english"}
EMPLOYEE_IDS = frozenset(DATA.users["User-Id"].astype(str))
NAMES = sorted(set(DATA.users["name"].astype(str)))

# The app resolves its store on the first request, so it (and its schema, which names
# the configured attributes until a model serves) can exist at import, for
# schemathesis to make one test per operation; the module fixture publishes a
# version before any request is sent.
_STORE: dict[str, LocalFolderStore] = {}
APP = create_app(lambda: _STORE["store"], CONFIG)
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5XX"]
SCHEMATHESIS_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261129,
        # Invalid data may also be refused as too large (413, documented): a list of
        # over a thousand ids of up to 128 characters is past the body limit first.
        "checks": {
            "negative_data_rejection": {"expected-statuses": REFUSALS},
            # Valid data may be too large all the same: the body limit is in bytes, which
            # JSON Schema cannot state (the 413's description says it); e.g. a batch of
            # a thousand events with long ids.
            "positive_data_acceptance": {
                "expected-statuses": ["2XX", "3XX", 401, 403, 404, 409, 413, 429, "5XX"]
            },
        },
        "phases": {name: {"enabled": True} for name in ("examples", "coverage", "fuzzing")},
    }
)
EXAMPLES: Counter[str] = Counter()  # schemathesis cases run, per operation
SCHEMATHESIS_MAX_EXAMPLES = 60  # per operation, on top of its explicit and coverage cases
load_all_checks()
# Every check schemathesis has, but for those that need what this API does not have:
# authentication (ignored_auth, object_level_authorization) and resources created
# and deleted (use_after_free, ensure_resource_availability).
CHECKS = [
    check
    for check in CHECKS_REGISTRY.get_all()
    if check.__name__
    not in {
        "ignored_auth",
        "object_level_authorization",
        "use_after_free",
        "ensure_resource_availability",
    }
]


@pytest.fixture(scope="module", autouse=True)
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFolderStore]:
    """One trained and precomputed version behind APP for the whole module."""
    store = LocalFolderStore(tmp_path_factory.mktemp("security") / "store")
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    _STORE["store"] = store
    yield store
    if EXAMPLES:
        print(f"\nschemathesis cases run: {dict(EXAMPLES)} ({sum(EXAMPLES.values())} in all)")


SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP, config=SCHEMATHESIS_CONFIG)


@pytest.fixture
def client(published: LocalFolderStore) -> TestClient:
    return TestClient(APP)


def employee() -> str:
    return str(DATA.taken["User-Id"].iloc[0])


def training() -> str:
    return str(DATA.trainings["Training-Id"].iloc[0])


# ---------------------------------------------------------------- schemathesis


SETTINGS = hypothesis.settings(
    max_examples=SCHEMATHESIS_MAX_EXAMPLES,
    deadline=None,
    # No shrinking and no example database: a bounded, repeatable run (the seed is
    # fixed above); a failure is reported as found, with its curl command.
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@SCHEMA.parametrize()
@SETTINGS
def test_every_operation_answers_as_its_schema_says(case: schemathesis.Case[Any]) -> None:
    """Examples, coverage (every boundary, every undeclared method, every wrong content
    type) and fuzzing: no 5xx, documented status codes, bodies and headers, invalid
    input refused, valid input accepted."""
    EXAMPLES[case.operation.label] += 1
    case.call_and_validate(checks=CHECKS)


def test_walking_the_links_between_operations_holds_the_contract() -> None:
    """Stateful: ids taken from answers (an employee's first training, its neighbours)
    fed to the operations the schema links them to, with every check."""
    # Generated ids are rarely employees: the walk also starts from a known one.
    path = SCHEMA.raw_schema["paths"]["/recommendations/{employee_id}"]["get"]
    path["parameters"][0]["schema"]["examples"] = [employee()]
    machine = SCHEMA.as_state_machine()
    calls: Counter[str] = Counter()

    class Walk(machine):  # type: ignore[misc, valid-type]
        def validate_response(
            self, response: Any, case: schemathesis.Case[Any], **kwargs: Any
        ) -> None:
            calls[f"{case.operation.label} {response.status_code}"] += 1
            case.validate_response(response, checks=CHECKS)

    Walk.run(
        settings=hypothesis.settings(
            max_examples=80,
            stateful_step_count=6,
            deadline=None,
            database=None,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
    print(f"\nstateful calls: {dict(calls)}")
    answered = {"GET /recommendations/{employee_id} 200", "POST /rank 200"}
    answered |= {"GET /trainings/{training_id}/similar 200"}
    assert answered <= set(calls), f"links that led to no answer: {dict(calls)}"


# ---------------------------------------------------------------- limits


def problem(response: Response) -> str:
    """The error of a 4xx (problem details: its detail, and each field in error)."""
    body = response.json()
    return json.dumps([body["detail"], body.get("errors")]).lower()


JSON = {"content-type": "application/json"}


def json_post(path: str, body: bytes | str) -> dict[str, Any]:
    raw = body.encode() if isinstance(body, str) else body
    return {"method": "POST", "url": path, "content": raw, "headers": JSON}


LONG_ID = "a" * (MAX_ID_LENGTH + 1)  # one over the id rule's cap


def post(body: object, path: str = "/recommendations") -> dict[str, Any]:
    return json_post(path, json.dumps(body))


def rank(**fields: object) -> dict[str, Any]:
    return post({"employee_id": employee(), "training_ids": [training()], **fields}, "/rank")


# (request, status, fragments the message must contain, lower-case)
LIMITS: dict[str, tuple[dict[str, Any], int, tuple[str, ...]]] = {
    # Path: employee_id and training_id follow the id rule of shared.ids (any script,
    # at most MAX_ID_LENGTH characters, no invisible, control or markup characters).
    "employee id over the length cap": (
        {"method": "GET", "url": f"/recommendations/{LONG_ID}"},
        422,
        ('"employee_id"', f"at most {MAX_ID_LENGTH} characters"),
    ),
    "employee id with a zero-width space": (
        {"method": "GET", "url": "/recommendations/%E2%80%8B000001"},
        422,
        ('"employee_id"', "pattern"),
    ),
    "employee id with a no-break space": (
        {"method": "GET", "url": "/recommendations/00%C2%A00001"},
        422,
        ('"employee_id"',),
    ),
    "employee id with a NUL byte": (
        {"method": "GET", "url": "/recommendations/a%00b"},
        422,
        ('"employee_id"',),
    ),
    "employee id with markup": (
        {"method": "GET", "url": "/recommendations/%3Cscript%3E"},
        422,
        ('"employee_id"',),
    ),
    "employee id climbing folders": (
        {"method": "GET", "url": "/recommendations/..%2F..%2Fmodel"},
        404,
        ("not found",),
    ),
    "employee id in the rank body": (
        post({"employee_id": "../x", "training_ids": [training()]}, "/rank"),
        422,
        ('"employee_id"', "pattern"),
    ),
    "training id over the length cap": (
        {"method": "GET", "url": f"/trainings/{LONG_ID}/similar"},
        422,
        ('"training_id"',),
    ),
    "training id with a backslash": (
        {"method": "GET", "url": "/trainings/T%5Cx/similar"},
        422,
        ('"training_id"',),
    ),
    # n: 1 … max_n, an integer.
    "n negative": (
        {"method": "GET", "url": f"/recommendations/{employee()}?n=-5"},
        422,
        ('"n"', "greater than or equal to 1"),
    ),
    "n over max_n on similar": (
        {"method": "GET", "url": f"/trainings/{training()}/similar?n={MAX_N + 1}"},
        422,
        (f"n={MAX_N + 1}", f"maximum of {MAX_N}"),
    ),
    "n far over max_n": (
        {"method": "GET", "url": f"/recommendations/{employee()}?n={'9' * 30}"},
        422,
        (f"maximum of {MAX_N}",),
    ),
    "n a decimal": (
        {"method": "GET", "url": f"/recommendations/{employee()}?n=1.5"},
        422,
        ('"n"', "integer"),
    ),
    "n empty": (
        {"method": "GET", "url": f"/recommendations/{employee()}?n="},
        422,
        ('"n"', "integer"),
    ),
    "n over max_n in a body": (
        post({"attributes": NEW_EMPLOYEE, "n": MAX_N + 1}),
        422,
        (f"maximum of {MAX_N}",),
    ),
    "n negative in a body": (
        post({"attributes": NEW_EMPLOYEE, "n": -1}),
        422,
        ('"n"',),
    ),
    # Sizes of what a body holds.
    "too many attributes": (
        post({"attributes": {f"a{i}": "x" for i in range(51)}}),
        422,
        ('"attributes"', "at most 50"),
    ),
    "too many values of one attribute": (
        post({"attributes": {"career interests": ["data"] * 101}}),
        422,
        ('"career interests"', "at most 100"),
    ),
    "attribute value over 1000 characters": (
        post({"attributes": {"ou": "x" * 1001}}),
        422,
        ('"ou"', "at most 1000 characters"),
    ),
    "list value over 200 characters": (
        post({"attributes": {"skills": ["x" * 201]}}),
        422,
        ('"skills"', "at most 200 characters"),
    ),
    "attribute name over 64 characters": (
        post({"attributes": {"k" * 65: "x"}}),
        422,
        ("at most 64 characters",),
    ),
    "too many excluded trainings": (
        post({"attributes": NEW_EMPLOYEE, "exclude_training_ids": ["T1"] * 1001}),
        422,
        ('"exclude_training_ids"', "at most 1000"),
    ),
    "too many filter values": (
        post({"attributes": NEW_EMPLOYEE, "filters": {"provider": ["x"] * 51}}),
        422,
        ('"provider"', "at most 50"),
    ),
    "too many trainings to rank": (
        post({"employee_id": employee(), "training_ids": ["T1"] * 1001}, "/rank"),
        422,
        ('"training_ids"', "at most 1000"),
    ),
    # Attributes the model does not use, sensitive ones included: refused, never ignored.
    "unknown attribute": (
        post({"attributes": {**NEW_EMPLOYEE, "salary": "100k"}}),
        422,
        ("1 attribute name(s) the model does not use", "it uses ['career interests'"),
    ),
    "sensitive attribute": (
        post({"attributes": {**NEW_EMPLOYEE, "gender": "female"}}),
        422,
        ("does not use",),
    ),
    "unknown attribute in rank": (
        post({"attributes": {"salary": "100k"}, "training_ids": [training()]}, "/rank"),
        422,
        ("does not use",),
    ),
    # Wrong types.
    "number instead of a string": (
        post({"attributes": {"ou": 42}}),
        422,
        ('"ou"', "valid string"),
    ),
    "null attribute value": (
        post({"attributes": {"ou": None}}),
        422,
        ('"ou"', "valid string"),
    ),
    "null attributes": (
        post({"attributes": None}),
        422,
        ('"attributes"', "valid dictionary"),
    ),
    "n a word": (
        post({"attributes": NEW_EMPLOYEE, "n": "ten"}),
        422,
        ('"n"', "integer"),
    ),
    "n null": (
        post({"attributes": NEW_EMPLOYEE, "n": None}),
        422,
        ('"n"', "integer"),
    ),
    "excluded trainings a string": (
        post({"attributes": NEW_EMPLOYEE, "exclude_training_ids": "T00001"}),
        422,
        ('"exclude_training_ids"', "valid list"),
    ),
    "training ids numbers": (
        post({"employee_id": employee(), "training_ids": [1, 2]}, "/rank"),
        422,
        ('"training_ids"', "valid string"),
    ),
    # Fields nobody defined.
    # An unknown field is not named back (the client's input): its place reads "*".
    "extra field in rank": (rank(top_secret=True), 422, ('"*"', "extra inputs")),
    "field in the wrong case": (
        post({"attributes": NEW_EMPLOYEE, "N": 10}),
        422,
        ('["body", "*"]', "extra inputs"),
    ),
    # Not JSON, or JSON that is not an object.
    "truncated JSON": (
        json_post("/recommendations", '{"attributes": {"ou": "sales"'),
        422,
        ("json",),
    ),
    "single-quoted JSON": (
        json_post("/recommendations", "{'attributes': {}}"),
        422,
        ("json",),
    ),
    "JSON array": (json_post("/recommendations", "[]"), 422, ("valid dictionary",)),
    "empty body": (json_post("/recommendations", ""), 422, ('"body"', "required")),
    # Python's json module reads these non-standard literals; they must still be a 4xx.
    "NaN for n": (
        json_post("/recommendations", '{"attributes": {}, "n": NaN}'),
        422,
        ('"n"',),
    ),
    "Infinity for a value": (
        json_post("/recommendations", '{"attributes": {"ou": Infinity}}'),
        422,
        ('"ou"',),
    ),
    "deeply nested JSON": (
        json_post("/recommendations", '{"attributes": ' + "[" * 20_000 + "]" * 20_000 + "}"),
        400,
        ("body",),
    ),
    # Wrong content types: the message must say what the API expects.
    "JSON sent as text/plain": (
        {
            "method": "POST",
            "url": "/recommendations",
            "content": json.dumps({"attributes": NEW_EMPLOYEE}).encode(),
            "headers": {"content-type": "text/plain"},
        },
        415,
        ("application/json",),
    ),
    "a form": (
        {"method": "POST", "url": "/recommendations", "data": {"attributes": "ou=sales"}},
        415,
        ("application/json",),
    ),
    "XML": (
        {
            "method": "POST",
            "url": "/recommendations",
            "content": b"<attributes><ou>sales</ou></attributes>",
            "headers": {"content-type": "application/xml"},
        },
        415,
        ("application/json",),
    ),
}


@pytest.mark.parametrize(("request_", "status", "fragments"), LIMITS.values(), ids=LIMITS.keys())
def test_a_request_over_a_limit_gets_a_4xx_naming_the_problem(
    client: TestClient, request_: dict[str, Any], status: int, fragments: tuple[str, ...]
) -> None:
    response = client.request(**request_)
    # 415 or 422 are both a clear answer to a wrong content type; anything else is not.
    accepted = {415, 422} if status == 415 else {status}
    assert response.status_code in accepted, (response.status_code, response.text[:300])
    message = problem(response)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"the message {message[:300]!r} does not name {missing}"


def test_the_limits_are_limits_not_less(client: TestClient) -> None:
    """Exactly at each limit is accepted: the 4xx above start one past it."""
    at_limit = {
        "attributes": {**NEW_EMPLOYEE, "skills": ["python"] * 100, "ou": "x" * 1000},
        "n": MAX_N,
        "exclude_training_ids": ["T1"] * 1000,
    }
    body = json.dumps(at_limit).encode()
    assert client.post("/recommendations", content=body, headers=JSON).status_code == 200
    padded = body.ljust(MAX_BODY)  # trailing spaces are valid JSON
    assert len(padded) == MAX_BODY
    assert client.post("/recommendations", content=padded, headers=JSON).status_code == 200
    assert client.get(f"/recommendations/{'a' * 64}").status_code == 404  # valid, unknown
    assert client.get(f"/recommendations/{employee()}?n={MAX_N}").status_code == 200


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    yield b'{"attributes": {"ou": "'
    for _ in range(total // size):
        yield b"x" * size


@pytest.mark.parametrize("streamed", [False, True], ids=["declared length", "chunked"])
def test_a_body_over_max_body_bytes_is_a_413(client: TestClient, streamed: bool) -> None:
    """Refused by size whether the length is declared or only seen while streaming."""
    if streamed:
        # A generator body goes out chunked, without Content-Length.
        response = client.post("/recommendations", content=_chunks(4 * MAX_BODY), headers=JSON)
    else:
        body = json.dumps({"attributes": {"ou": "x" * (MAX_BODY + 1)}}).encode()
        response = client.post("/recommendations", content=body, headers=JSON)
    assert response.status_code == 413, (response.status_code, response.text[:300])
    assert f"over {MAX_BODY} bytes" in problem(response)


# ---------------------------------------------------------------- personal data


def strings_in(value: Any) -> Iterator[str]:
    """Every key and string value of a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, str):
        yield value


def employee_ids_in(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9._-]+", text)) & EMPLOYEE_IDS


def sample_employees() -> list[str]:
    ids = sorted(EMPLOYEE_IDS)
    return ids[:: max(1, len(ids) // 15)]


def test_recommendations_echo_only_the_requested_employee_and_no_personal_data(
    client: TestClient,
) -> None:
    """The answer names one employee, the one asked for, and nobody's name, age or gender."""
    genders = set(DATA.users["gender"].astype(str).str.lower())
    for employee_id in sample_employees():
        response = client.get(f"/recommendations/{employee_id}?explain=true&n={MAX_N}")
        assert response.status_code == 200
        body = response.json()
        assert body["employee_id"] == employee_id
        assert employee_ids_in(response.text) == {employee_id}
        words = {s.lower() for s in strings_in(body)}
        assert not words & {"name", "age", "gender"}, "a personal field in the answer"
        assert not words & genders
        assert not [name for name in NAMES if name in response.text]


def test_no_endpoint_shows_anyone_s_name_or_another_employee(client: TestClient) -> None:
    """Every endpoint, docs and errors included: no name, no employee but the one asked for."""
    asked = employee()
    responses = {
        "GET /recommendations/{id}": client.get(f"/recommendations/{asked}?explain=true"),
        "POST /recommendations": client.post(
            "/recommendations", json={"attributes": NEW_EMPLOYEE, "explain": True}
        ),
        "POST /rank": client.post(
            "/rank",
            json={"employee_id": asked, "training_ids": [training()], "explain": True},
        ),
        "GET /trainings/{id}/similar": client.get(f"/trainings/{training()}/similar"),
        "GET /model": client.get("/model"),
        "GET /health": client.get("/health"),
        "GET /openapi.json": client.get("/openapi.json"),
        "GET /docs": client.get("/docs"),
        "404 unknown employee": client.get("/recommendations/999999999"),
        "404 unknown training": client.get("/trainings/NOPE/similar"),
        "422 unknown attribute": client.post(
            "/recommendations", json={"attributes": {"salary": "x"}}
        ),
    }
    # The schema's examples hold made-up ids that may exist in the synthetic extract.
    documentation = {"GET /openapi.json", "GET /docs"}
    for name, response in responses.items():
        assert response.status_code < 500, name
        leaked = [person for person in NAMES if person in response.text]
        assert not leaked, f"{name} shows {leaked[:3]}"
        others = employee_ids_in(response.text) - {asked}
        assert name in documentation or not others, f"{name} shows other employees {others}"


def test_the_404_for_an_unknown_employee_lists_nobody(client: TestClient) -> None:
    response = client.get("/recommendations/999999")
    assert response.status_code == 404
    assert employee_ids_in(response.text) == set()
    assert "999999" not in problem(response)  # not even the id asked for: no input echoed


# ---------------------------------------------------------------- CORS

INTRANET = "https://intranet.example"
ELSEWHERE = "https://elsewhere.example"


def cors_client(store: LocalFolderStore, origins: tuple[str, ...]) -> TestClient:
    config = Config.from_dict({**CONFIG.to_dict(), "serving": {"cors_origins": list(origins)}})
    return TestClient(create_app(store, config))


def cross_origin(client: TestClient, method: str, origin: str) -> Response:
    headers = {"origin": origin}
    if method == "GET":
        return client.get(f"/recommendations/{employee()}", headers=headers)
    if method == "POST":
        return client.post("/recommendations", json={"attributes": NEW_EMPLOYEE}, headers=headers)
    preflight = {
        **headers,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    return client.options("/recommendations", headers=preflight)


@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
def test_cors_is_off_by_default(published: LocalFolderStore, method: str) -> None:
    client = TestClient(create_app(published, CONFIG))
    response = cross_origin(client, method, INTRANET)
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
@pytest.mark.parametrize(("origin", "allowed"), [(INTRANET, True), (ELSEWHERE, False)])
def test_cors_allows_only_the_configured_origins(
    published: LocalFolderStore, method: str, origin: str, allowed: bool
) -> None:
    client = cors_client(published, (INTRANET,))
    response = cross_origin(client, method, origin)
    if allowed:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == INTRANET
    else:
        assert "access-control-allow-origin" not in response.headers
        if method == "OPTIONS":
            assert response.status_code == 400  # the preflight itself is refused
    # Never a wildcard, never cookies: callers authenticate with a function key.
    assert response.headers.get("access-control-allow-origin") != "*"
    assert "access-control-allow-credentials" not in response.headers


# ---------------------------------------------------------------- secrets and access

# Azurite's account key is published in Microsoft's documentation: a fixture, not a secret.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Written so that this file does not match itself: each needs a value after the name.
SECRET_PATTERNS = {
    "storage account key": re.compile(r"AccountKey=([A-Za-z0-9+/]{20,}={0,2})"),
    "shared access key": re.compile(r"SharedAccessKey=([A-Za-z0-9+/]{20,}={0,2})"),
    "SAS signature": re.compile(r"[?&;\"' ]sig=([A-Za-z0-9%+/]{16,}(?:%3D|=){0,2})"),
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
}


def tracked_files() -> list[Path]:
    """The files git tracks (read-only: ``git ls-files``)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False, timeout=30
    )
    assert listed.returncode == 0, f"the secret scan needs a git checkout: {listed.stderr!r}"
    return [REPO / name for name in listed.stdout.decode().split("\0") if name]


def secrets_in(text: str) -> list[str]:
    found = []
    for kind, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.group(1) if match.groups() else match.group(0)
            if value != AZURITE_KEY:
                found.append(f"{kind}: {value[:12]}…")
    return found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};",
            0,
        ),
        ("AccountKey=" + "Q" * 86 + "==;EndpointSuffix=core.windows.net", 1),
        ("https://acct.blob.core.windows.net/c/b?sv=2024-11-04&s" + "ig=" + "a%2Bb" * 10, 1),
        ("-----BEGIN " + "RSA PRIVATE KEY-----\nMIIE…", 1),
        ("UseDevelopmentStorage=true", 0),
    ],
    ids=["Azurite key", "account key", "SAS token", "private key", "development storage"],
)
def test_the_secret_scanner_finds_what_it_should(text: str, found: int) -> None:
    """The scan below is only as good as its patterns: they catch real shapes."""
    assert len(secrets_in(text)) == found


def test_no_secret_in_any_tracked_file() -> None:
    files = tracked_files()
    assert REPO / "shared" / "api" / "__init__.py" in files, "git ls-files listed nothing useful"
    found = {
        str(path.relative_to(REPO)): hits
        for path in files
        if path.is_file() and (hits := secrets_in(path.read_text("utf-8", errors="ignore")))
    }
    assert not found, f"secrets in tracked files: {found}"


def test_local_settings_stay_local() -> None:
    """local.settings.json (real keys, locally) is ignored; the sample holds no secret."""
    tracked = {str(path.relative_to(REPO)) for path in tracked_files()}
    assert "local.settings.json" not in tracked
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "local.settings.json"], cwd=REPO, check=False, timeout=30
    )
    assert ignored.returncode == 0, "local.settings.json is not git-ignored"
    sample = REPO / "local.settings.sample.json"
    values: dict[str, str] = json.loads(sample.read_text("utf-8"))["Values"]
    assert not secrets_in(sample.read_text("utf-8"))
    for name, value in values.items():
        # Connection settings point at Azurite or are left empty for the developer.
        if "Storage" in name and "__" not in name:
            assert value in {"", "UseDevelopmentStorage=true"} or AZURITE_KEY in value, name


def test_every_http_function_needs_a_function_key(
    function_bindings: dict[str, list[dict[str, Any]]],
) -> None:
    """No HTTP trigger is anonymous: callers send x-functions-key (host keys in Azure)."""
    triggers = [
        binding
        for bindings in function_bindings.values()
        for binding in bindings
        if binding["type"] == "httpTrigger"
    ]
    assert triggers, "no HTTP trigger found"
    assert {t["authLevel"] for t in triggers} == {"FUNCTION"}
