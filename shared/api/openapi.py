"""The OpenAPI document as the contract: every limit the server enforces, per deployment.

FastAPI writes the document from the routes; what only the deployment knows is
added here, each time the serving model changes: the maximum of ``n``
(``serving.max_n``), the attribute names and value types of the serving model's
contract (anything else is a 422), problem details for every error, ``oneOf`` for
the two shapes of ``POST /rank``, and links from an answer to the operations that
take its ids (a client, or a stateful test, can walk them).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from shared.api.dependencies import ServingState
from shared.api.http import Problem
from shared.api.schemas import attributes_schema
from shared.ids import SPACES
from shared.serving import contract_of
from shared.settings import EntityColumns, ServingOptions

FIRST_TRAINING = "$response.body#/trainings/0/training_id"
LINKS: dict[tuple[str, str], dict[str, Any]] = {
    ("/recommendations/{employee_id}", "get"): {
        "RankThem": {
            "operationId": "post_rank",
            "description": "the employee's first recommendation, ranked for them",
            "requestBody": {
                "employee_id": "$response.body#/employee_id",
                "training_ids": [FIRST_TRAINING],
            },
        },
        "SimilarToFirst": {
            "operationId": "get_similar",
            "parameters": {"training_id": FIRST_TRAINING},
        },
    },
    ("/recommendations", "post"): {
        "SimilarToFirst": {
            "operationId": "get_similar",
            "parameters": {"training_id": FIRST_TRAINING},
        },
        "RankThem": {
            "operationId": "post_rank",
            "requestBody": {
                "attributes": "$request.body#/attributes",
                "training_ids": [FIRST_TRAINING],
            },
        },
    },
    ("/trainings/{training_id}/similar", "get"): {
        "SimilarToFirst": {
            "operationId": "get_similar",
            "parameters": {"training_id": FIRST_TRAINING},
        },
        "AudienceOfFirst": {
            "operationId": "get_audience",
            "parameters": {"training_id": FIRST_TRAINING},
        },
    },
    ("/trainings/{training_id}/audience", "get"): {
        "RecommendationsOfFirst": {
            "operationId": "get_recommendations",
            "description": "the recommendations of the audience's first employee",
            "parameters": {"employee_id": "$response.body#/employees/0/employee_id"},
        },
    },
}


def install(app: FastAPI, state: ServingState) -> None:
    """Serve the completed document at ``app.openapi_url`` (rebuilt when the model
    changes)."""
    built: dict[str | None, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        base = FastAPI.openapi(app)  # FastAPI's own, cached on the app
        served = _served(state)
        key = served.key if served else None
        if key not in built:
            built.clear()
            built[key] = complete(base, state.settings().serving, served)
        return built[key]

    app.openapi = openapi  # type: ignore[method-assign]


@dataclass(frozen=True)
class Served:
    """What the schema says of the serving model (or, before one, of the configured
    contract the next one will read): employee attributes, and training attributes
    that filters may name."""

    key: str
    users: EntityColumns
    filterable: list[str]


def _served(state: ServingState) -> Served | None:
    """Read from what is loaded, never from storage: the document is built on the event
    loop, where a pointer check or a first load would stall every request."""
    try:
        snap = state.cache().latest()
    except Exception:  # no store yet: the configured contract
        snap = None
    try:
        if snap is not None:
            columns = snap.bundle.metadata.item_attribute_columns
            return Served(snap.versions["model_version"], contract_of(snap).users, columns)
        contract = state.settings().contract
        return Served("configured", contract.users, list(contract.trainings.features))
    except Exception:  # no settings either: names left open
        return None


def complete(
    base: dict[str, Any], serving: ServingOptions, served: Served | None
) -> dict[str, Any]:
    """FastAPI's document with the deployment's limits and names, problem details and
    links."""
    max_n = serving.max_n
    document = copy.deepcopy(base)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    schemas["NewEmployee"]["properties"]["n"]["maximum"] = max_n
    if served is not None:
        for name in ("NewEmployee", "RankForAttributes"):
            schemas[name]["properties"]["attributes"] = attributes_schema(served.users)
        names = {"enum": served.filterable}
        schemas["NewEmployee"]["properties"]["filters"]["propertyNames"] = names
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                _limit_parameter(parameter, max_n, served, path.endswith("/audience"))
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body and "anyOf" in body["schema"]:
                body["schema"]["oneOf"] = body["schema"].pop("anyOf")  # exactly one shape
            if (path, method) in LINKS:
                operation["responses"]["200"]["links"] = LINKS[(path, method)]
            if "requestBody" in operation:  # JSON Schema has no keyword for a body's bytes
                too_large = f"request body over {serving.max_body_bytes} bytes (max_body_bytes)"
                operation["responses"]["413"]["description"] = too_large
    return document


def _limit_parameter(
    parameter: dict[str, Any], max_n: int, served: Served | None, employees: bool
) -> None:
    if parameter["name"] == "n":
        parameter["schema"]["maximum"] = max_n
    elif parameter["name"] == "filter" and served is not None:
        # An attribute (of the employees for an audience, else of the trainings), then
        # at least one value that is not blank.
        filterable = served.users.features if employees else served.filterable
        names = "|".join(re.escape(name) for name in filterable)
        value = f"[^{re.escape(SPACES)},]"
        parameter["schema"]["items"]["pattern"] = f"^ *(?:{names}) *:.*{value}.*$"
