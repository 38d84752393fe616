"""What serving answers: the trainings recommended, ranked or found similar, with the
versions that produced them. Built by :mod:`shared.serving`, answered as they are by the
HTTP API (its response schemas) and printed by the command line.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Contribution(BaseModel):
    attribute: str
    value: str
    contribution: float


class TrainingTaken(BaseModel):
    training_id: str
    title: str
    contribution: float


class Reason(BaseModel):
    """A reason as a code and a value, for a page that words (and translates) its own."""

    code: str = Field(
        description="history (a training taken), skill, interest, department, grade, "
        "language, attribute (another employee attribute), popular, new, pinned; in lanes: "
        "gap (a skill the target role requires), peers, trending"
    )
    value: str = Field(
        description="the training id taken, the attribute's value, the skill, or (peers, "
        "trending) how many took it"
    )


class Explanation(BaseModel):
    text: str = Field(description="the reason in plain words")
    employee_attributes: list[Contribution]
    training_attributes: list[Contribution]
    trainings_taken: list[TrainingTaken] = Field(
        default_factory=list, description="trainings the employee took that led to this one"
    )
    reasons: list[Reason] = Field(default_factory=list, description="the reasons, as codes")
    match: int | None = Field(
        None,
        description="the score on a scale people read: 100 for the best of the list, 0 for "
        "the catalog's median training for this employee (the raw score is for machines)",
    )
    strength: str | None = Field(None, description="the match in a word: strong, good, fair")


class Training(BaseModel):
    rank: int
    training_id: str
    title: str
    attributes: dict[str, str]
    score: float
    pinned: bool = Field(False, description="put first by a business rule")
    new: bool = Field(
        False,
        description="added to the catalog since the model was trained: scored from its "
        "attributes until the next retrain",
    )
    explanation: Explanation | None = None


class RankedTraining(Training):
    taken: bool = Field(description="the employee already took it")
    recommendable: bool = Field(description="neither taken, retired nor excluded")


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


class Answer(Versions):
    recommendation_id: str = Field(
        description="this answer's id, to send back with feedback events (POST /events): "
        "<model version>.<scorer>.<digest>; the same answer keeps the same id"
    )


class EmployeeRecommendations(Answer):
    employee_id: str
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[Training]


class LaneFields(BaseModel):
    lane: str = Field(
        description="skill-gap: trainings teaching a skill the target role requires and the "
        "employee lacks, ranked by the model; peers: most taken by employees of the same "
        "department and grade; trending: most taken lately"
    )
    target_role: str | None = Field(None, description="skill-gap: the role aimed for")
    target_role_title: str | None = None
    gap: list[str] | None = Field(
        None, description="skill-gap: the skills the role requires that the employee lacks"
    )


class LaneRecommendations(EmployeeRecommendations, LaneFields):
    pass


class RankResponse(Answer):
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[RankedTraining]
    unknown_training_ids: list[str] = Field(description="ids not in the model's catalog")
    ignored_values: list[str]


class NewEmployeeRecommendations(Answer):
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[Training]
    ignored_values: list[str] = Field(description="attribute values the model has never seen")
    unknown_training_ids: list[str] = Field(
        default_factory=list, description="taken trainings not in the model's catalog (ignored)"
    )


class NewEmployeeLaneRecommendations(NewEmployeeRecommendations, LaneFields):
    pass


class SimilarTrainings(Answer):
    training_id: str
    scorer: str = Field("similarity", description="cosine of the trainings' representations")
    trainings: list[Training]
