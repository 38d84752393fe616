"""The HTTP contract: request and response bodies, parameters, documented errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from shared.answers import (
    EmployeeRecommendations,
    LaneRecommendations,
    NewEmployeeLaneRecommendations,
    NewEmployeeRecommendations,
    RankResponse,
    SimilarTrainings,
    Versions,
)
from shared.api.http import PROBLEM_JSON
from shared.ids import (  # the one id rule: what the extracts accept, the API serves
    ID_DESCRIPTION,
    ID_PATTERN,
    MAX_ID_LENGTH,
    Id,
    WholeNumber,
)
from shared.settings import EntityColumns

__all__ = [
    "EmployeeRecommendations",
    "LaneRecommendations",
    "NewEmployeeLaneRecommendations",
    "NewEmployeeRecommendations",
    "RankResponse",
    "SimilarTrainings",
    "Versions",
]


def _path_id(what: str) -> Any:
    """A path segment that is an id (the one rule of shared.ids), documented."""
    return Path(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=ID_PATTERN,
        description=f"the {what}'s id: {ID_DESCRIPTION}",
    )


EmployeeId = Annotated[str, _path_id("employee")]
TrainingId = Annotated[str, _path_id("training")]
INTEGER, TEXT = {"type": "integer"}, {"type": "string"}
RETRY_AFTER = {"Retry-After": {"description": "seconds before retrying", "schema": INTEGER}}
CACHING = {
    "ETag": {"description": "strong validator of this answer", "schema": TEXT},
    "Cache-Control": {"description": "private, max-age=<refresh seconds>", "schema": TEXT},
}
CACHED_GET: dict[int | str, dict[str, Any]] = {
    200: {"headers": CACHING},
    304: {"description": "unchanged since the ETag sent in If-None-Match (no body)"},
}
MAX_ATTRIBUTES = 50


MAX_VALUES = 100


FilterValues = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=200)]], Field(min_length=1, max_length=50)
]
Filters = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], FilterValues],
    Field(
        max_length=20,
        description="training attribute -> accepted values, e.g. "
        '{"provider": ["internal"], "level": ["beginner", "intermediate"]}',
    ),
]
AttributeValues = dict[
    Annotated[str, Field(min_length=1, max_length=64)],
    Annotated[str, Field(max_length=1000)]
    | Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=MAX_VALUES)],
]


class NewEmployee(BaseModel):
    """A new employee's attributes, keyed by the employees extract's column names."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "attributes": {
                        "ou": "development",
                        "skills": ["python", "sql"],
                        "language": "english",
                        "grade": "G3",
                        "career interests": "data",
                    },
                    "n": 10,
                }
            ]
        },
    )

    attributes: AttributeValues = Field(max_length=MAX_ATTRIBUTES)
    n: WholeNumber = Field(10, ge=1)
    taken_training_ids: list[Id] = Field(
        default_factory=list,
        max_length=1000,
        description="trainings the employee already took: they shape the list and are never "
        "recommended (an employee of the extracts posted with their attributes and these "
        "gets their precomputed list)",
    )
    exclude_training_ids: list[Id] = Field(
        default_factory=list,
        max_length=1000,
        description="trainings never to recommend (e.g. already assigned); they do not shape "
        "the list (use taken_training_ids for what the employee took)",
    )
    filters: Filters = Field(default_factory=dict)
    explain: bool = Field(False, description="add the reasons of each recommendation")
    lane: Literal["main", "skill-gap", "peers", "trending"] = Field(
        "main", description="main: the model's list; or a lane to show beside it"
    )
    target_role: str | None = Field(
        None, min_length=1, max_length=200, description="skill-gap: the role aimed for"
    )


class _Rank(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    training_ids: list[Id] = Field(min_length=1, max_length=1000)
    explain: bool = False


class RankForEmployee(_Rank):
    """Trainings to order for an employee of the extracts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"employee_id": "000123", "training_ids": ["T00001", "T00042"]}]
        }
    )

    employee_id: Id


class RankForAttributes(_Rank):
    """Trainings to order for an employee described by their attributes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"attributes": {"ou": "development"}, "training_ids": ["T00001"]}]
        }
    )

    attributes: AttributeValues = Field(max_length=MAX_ATTRIBUTES)


# Exactly one of the two shapes (each forbids the other's field): oneOf in the schema.
RankRequest = RankForEmployee | RankForAttributes


class AttributesSchema(Versions):
    attributes: dict[str, Any] = Field(
        description="JSON Schema of the attributes object the serving model reads"
    )


def attributes_schema(columns: EntityColumns) -> dict[str, Any]:
    """The JSON Schema of an employee's attributes under the model's data contract: the
    names it reads, and what each holds. Values are text (a number as text for a banded
    column); a multi-valued column also takes a list."""
    properties: dict[str, Any] = {}
    for name in columns.features:
        text: dict[str, Any] = {"type": "string", "maxLength": 1000}
        if name in columns.bands:
            edges = ", ".join(f"{e:g}" for e in columns.bands[name])
            properties[name] = {**text, "description": f"a number, cut into bands at {edges}"}
        elif name in columns.multi_valued:
            values = {"type": "array", "items": {"type": "string", "maxLength": 200}}
            properties[name] = {
                "anyOf": [values | {"maxItems": MAX_VALUES}, text],
                "description": "several values: a list, or one text with the delimiter",
            }
        else:
            properties[name] = {**text, "description": "one value"}
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "maxProperties": MAX_ATTRIBUTES,
    }


class Scorers(BaseModel):
    known: str = Field(description="the scorer of employees with a history")
    new: str = Field(description="the scorer of new employees (no training taken yet)")


class RetrainJob(BaseModel):
    name: str
    status: str = Field(description="Azure ML's state (Queued, Running, Completed, Failed…)")
    result: str | None = Field(None, description="how the retrain ended: published, rejected")
    version: str | None = None
    error: str | None = None
    submitted_at: str | None = None
    ended_at: str | None = None
    studio_url: str | None = None


class Health(BaseModel):
    status: str
    versions: Versions | None = None
    scorers: Scorers | None = None
    model_age_seconds: float | None = None
    recommendations_age_seconds: float | None = None
    last_error: str | None = None
    impact_warning: str | None = Field(
        None, description="the newest model version is clicked clearly less than the one before"
    )
    retrain_job: RetrainJob | None = Field(
        None, description="the last retrain submitted to Azure ML (RETRAIN_RUNNER=azureml)"
    )


FILTER_ITEMS = {"type": "string", "maxLength": 600, "pattern": r"^[^:]{1,64}:.{1,500}$"}
FilterQuery = Annotated[
    tuple[str, ...],
    Query(
        max_length=20,
        description="training attribute:value[,value…], repeatable, e.g. provider:internal",
        json_schema_extra={"items": FILTER_ITEMS},
    ),
]
EmployeeFilterQuery = Annotated[
    tuple[str, ...],
    Query(
        max_length=20,
        description="employee attribute:value[,value…], repeatable, e.g. ou:finance",
        json_schema_extra={"items": FILTER_ITEMS},
    ),
]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": text,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        **({"headers": RETRY_AFTER} if code == 503 else {}),
    }
    for code, text in (
        (400, "body cannot be parsed (e.g. JSON nested too deep)"),
        (404, "unknown employee or training, or no such path"),
        (405, "method not allowed: the Allow header lists the methods of the path"),
        (413, "request body too large"),
        (
            409,
            "the lane cannot answer with the current data (no roles extract, no dates, no "
            "target role…): the detail says what is missing",
        ),
        (415, "not JSON"),
        (
            422,
            "invalid parameter, or a body that is not JSON or not valid (errors: each field "
            "and what is wrong), or an attribute the serving model does not use (GET "
            "/model/schema lists them)",
        ),
        (503, "nothing published yet, or storage unavailable: retry after Retry-After"),
    )
}
