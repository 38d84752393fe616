"""The HTTP contract: request and response bodies, parameters, documented errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from shared.answers import (
    EmployeeRecommendations,
    NewEmployeeRecommendations,
    RankResponse,
    SimilarTrainings,
    Versions,
)
from shared.ids import ID_DESCRIPTION, ID_PATTERN, MAX_ID_LENGTH

__all__ = [
    "EmployeeRecommendations",
    "NewEmployeeRecommendations",
    "RankResponse",
    "SimilarTrainings",
    "Versions",
]

# The one id rule of shared.ids: what the extracts accept, the API serves.
Id = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=ID_PATTERN,
        description=ID_DESCRIPTION,
    ),
]
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
    n: int = Field(10, ge=1)
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


class RankRequest(BaseModel):
    """An employee (by id, or by attributes for a new one) and the trainings to order."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"employee_id": "000123", "training_ids": ["T00001", "T00042"]}]
        },
    )

    employee_id: Id | None = None
    attributes: AttributeValues | None = Field(None, max_length=MAX_ATTRIBUTES)
    training_ids: list[Id] = Field(min_length=1, max_length=1000)
    explain: bool = False


class Scorers(BaseModel):
    known: str = Field(description="the scorer of employees with a history")
    new: str = Field(description="the scorer of new employees (no training taken yet)")


class Health(BaseModel):
    status: str
    versions: Versions | None = None
    scorers: Scorers | None = None
    model_age_seconds: float | None = None
    recommendations_age_seconds: float | None = None
    last_error: str | None = None


FilterQuery = Annotated[
    tuple[str, ...],
    Query(
        max_length=20,
        description="attribute:value[,value…], repeatable, e.g. provider:internal",
        json_schema_extra={"items": {"type": "string", "pattern": r"^[^:]{1,64}:.{1,500}$"}},
    ),
]


class ErrorResponse(BaseModel):
    """Every error: one sentence, or (422 from validation) the list of what is wrong."""

    detail: str | list[dict[str, Any]]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "body cannot be parsed"),
        (404, "unknown employee or training"),
        (413, "request body too large"),
        (415, "not JSON"),
        (422, "invalid parameter or body"),
        (503, "nothing published yet, or storage unavailable"),
    )
}
