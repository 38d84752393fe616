"""An employee's recommendations (precomputed, or scored on the fly) and rankings."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from shared.api.dependencies import CurrentSnapshot, Settings, State, check_attributes, check_n
from shared.api.http import cached
from shared.api.schemas import (
    CACHED_GET,
    EmployeeId,
    EmployeeRecommendations,
    FilterQuery,
    LaneRecommendations,
    NewEmployee,
    NewEmployeeLaneRecommendations,
    NewEmployeeRecommendations,
    RankForEmployee,
    RankRequest,
    RankResponse,
)
from shared.rules import parse_filters
from shared.serving import rank_trainings, recommend_known, recommend_lane, recommend_new

router = APIRouter(tags=["recommendations"])


def query_filters(raw: tuple[str, ...]) -> dict[str, list[str]]:
    """``filter=provider:internal&filter=level:beginner,intermediate`` → attribute -> values."""
    return parse_filters(raw, ":", "filter")


@router.get(
    "/recommendations/{employee_id}",
    response_model=EmployeeRecommendations | LaneRecommendations,
    responses=CACHED_GET,
)
async def get_recommendations(
    request: Request,
    employee_id: EmployeeId,
    state: State,
    n: Annotated[int, Query(ge=1, description="how many trainings")] = 10,
    filter: FilterQuery = (),
    explain: Annotated[bool, Query(description="add the reasons")] = False,
    lane: Annotated[
        Literal["main", "skill-gap", "peers", "trending"],
        Query(description="main: the model's list; or a lane to show beside it"),
    ] = "main",
    target_role: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="skill-gap: the role aimed for (default: the employee's, from the "
            "employees extract)",
        ),
    ] = None,
) -> Response:
    """An employee's recommendations: trainings taken, retired or excluded never appear.

    Filters keep trainings whose attribute has one of the given values:
    `filter=provider:internal&filter=level:beginner,intermediate`.

    Lanes, for an intranet page to show side by side with the main list: `skill-gap`
    (trainings teaching the skills the employee's target role requires and they lack,
    ranked by the model, the gap named), `peers` (most taken by employees of the same
    department and grade) and `trending` (most taken lately); each training's
    explanation gives the reason, also as codes (gap, peers, trending).
    """
    # The hot path. A precomputed answer costs a fraction of a millisecond, less
    # than the hop to a worker thread, so it is computed on the event loop; only
    # storage I/O (a due pointer check, the first load) goes to a thread. The answer
    # is the response model already: serialized as it is, without re-validation.
    config = state.settings()
    check_n(n, config)
    snap = await state.snapshot()
    if lane != "main":
        lane_answer = recommend_lane(
            snap,
            employee_id,
            lane,
            n,
            filters=query_filters(filter),
            dismissed=state.cache().dismissed(employee_id),
            target_role=target_role,
        )
        body = lane_answer.model_dump_json().encode()
        return cached(request, body, config.serving.refresh_seconds)
    answer = recommend_known(
        snap,
        employee_id,
        n,
        filters=query_filters(filter),
        explain=explain,
        dismissed=state.cache().dismissed(employee_id),
    )
    return cached(request, answer.model_dump_json().encode(), config.serving.refresh_seconds)


@router.post(
    "/recommendations",
    response_model=NewEmployeeRecommendations | NewEmployeeLaneRecommendations,
)
def post_recommendations(
    body: NewEmployee, config: Settings, snap: CurrentSnapshot
) -> NewEmployeeRecommendations:
    """Recommendations for an employee described by their attributes and the trainings
    they took: a new hire, or anyone the precomputed lists do not hold yet. With
    `lane`, that lane (as for GET; `target_role` names the role for the skill gap)."""
    check_n(body.n, config)
    contract = check_attributes(snap, body.attributes, config)
    return recommend_new(
        snap,
        body.attributes,
        body.n,
        contract,
        body.exclude_training_ids,
        taken_training_ids=body.taken_training_ids,
        filters=body.filters,
        explain=body.explain,
        lane=None if body.lane == "main" else body.lane,
        target_role=body.target_role,
    )


@router.post("/rank", response_model=RankResponse)
def post_rank(body: RankRequest, config: Settings, snap: CurrentSnapshot) -> RankResponse:
    """A given list of trainings ordered for one employee: by id, or by attributes
    (exactly one of the two)."""
    employee_id = body.employee_id if isinstance(body, RankForEmployee) else None
    attributes = None if isinstance(body, RankForEmployee) else body.attributes
    contract = check_attributes(snap, attributes or {}, config)
    return rank_trainings(
        snap,
        body.training_ids,
        contract,
        employee_id=employee_id,
        attributes=attributes,
        explain=body.explain,
    )
