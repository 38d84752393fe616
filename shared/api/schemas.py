"""The HTTP contract: request and response bodies, parameters, documented errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
MAX_ATTRIBUTES = 50
MAX_VALUES = 100


class Contribution(BaseModel):
    attribute: str
    value: str
    contribution: float


class TrainingTaken(BaseModel):
    training_id: str
    title: str
    contribution: float


class Explanation(BaseModel):
    text: str = Field(description="the reason in plain words")
    employee_attributes: list[Contribution]
    training_attributes: list[Contribution]
    trainings_taken: list[TrainingTaken] = Field(
        default_factory=list, description="trainings the employee took that led to this one"
    )


class Training(BaseModel):
    rank: int
    training_id: str
    title: str
    attributes: dict[str, str]
    score: float
    pinned: bool = Field(False, description="put first by a business rule")
    explanation: Explanation | None = None


class RankedTraining(Training):
    taken: bool = Field(description="the employee already took it")
    recommendable: bool = Field(description="neither taken, retired nor excluded")


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


class Versions(BaseModel):
    model_version: str
    data_version: str
    recommendations_version: str


SCORER_DESCRIPTION = (
    "what ranked this answer: 'model', the model with a popularity prior ('model + "
    "popularity', 'model + department popularity'), or a baseline alone ('popularity', "
    "'department popularity'), as chosen on held-out data for employees with a history "
    "and for new employees"
)


class EmployeeRecommendations(Versions):
    employee_id: str
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[Training]


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
    taken_training_ids: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=1000,
        description="trainings the employee already took: they shape the list and are never "
        "recommended (an employee of the extracts posted with their attributes and these "
        "gets their precomputed list)",
    )
    exclude_training_ids: list[Annotated[str, Field(max_length=64)]] = Field(
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

    employee_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    attributes: AttributeValues | None = Field(None, max_length=MAX_ATTRIBUTES)
    training_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=1000
    )
    explain: bool = False


class RankResponse(Versions):
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[RankedTraining]
    unknown_training_ids: list[str] = Field(description="ids not in the model's catalog")
    ignored_values: list[str]


class NewEmployeeRecommendations(Versions):
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[Training]
    ignored_values: list[str] = Field(description="attribute values the model has never seen")
    unknown_training_ids: list[str] = Field(
        default_factory=list, description="taken trainings not in the model's catalog (ignored)"
    )


class SimilarTrainings(Versions):
    training_id: str
    scorer: str = Field("similarity", description="cosine of the trainings' representations")
    trainings: list[Training]


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
