"""An employee's recommendations (precomputed, or scored on the fly) and rankings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from shared.api.dependencies import CurrentSnapshot, Settings, State, check_attributes, check_n
from shared.api.schemas import (
    EmployeeRecommendations,
    FilterQuery,
    NewEmployee,
    NewEmployeeRecommendations,
    RankRequest,
    RankResponse,
)
from shared.ids import ID_DESCRIPTION, ID_PATTERN, MAX_ID_LENGTH
from shared.rules import parse_filters
from shared.serving import rank_trainings, recommend_known, recommend_new

router = APIRouter(tags=["recommendations"])


def query_filters(raw: tuple[str, ...]) -> dict[str, list[str]]:
    """``filter=provider:internal&filter=level:beginner,intermediate`` → attribute -> values."""
    return parse_filters(raw, ":", "filter")


@router.get("/recommendations/{employee_id}", response_model=EmployeeRecommendations)
async def get_recommendations(
    employee_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            pattern=ID_PATTERN,
            description=f"the employee's id: {ID_DESCRIPTION}",
        ),
    ],
    state: State,
    n: Annotated[int, Query(ge=1, description="how many trainings")] = 10,
    filter: FilterQuery = (),
    explain: Annotated[bool, Query(description="add the reasons")] = False,
) -> Response:
    """An employee's recommendations: trainings taken, retired or excluded never appear.

    Filters keep trainings whose attribute has one of the given values:
    `filter=provider:internal&filter=level:beginner,intermediate`.
    """
    # The hot path. A precomputed answer costs a fraction of a millisecond, less
    # than the hop to a worker thread, so it is computed on the event loop; only
    # storage I/O (a due pointer check, the first load) goes to a thread. The answer
    # is the response model already: serialized as it is, without re-validation.
    check_n(n, state.settings())
    snap = await state.snapshot()
    answer = recommend_known(snap, employee_id, n, filters=query_filters(filter), explain=explain)
    return Response(answer.model_dump_json(), media_type="application/json")


@router.post("/recommendations", response_model=NewEmployeeRecommendations)
def post_recommendations(
    body: NewEmployee, config: Settings, snap: CurrentSnapshot
) -> NewEmployeeRecommendations:
    """Recommendations for an employee described by their attributes and the trainings
    they took: a new hire, or anyone the precomputed lists do not hold yet."""
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
    )


@router.post("/rank", response_model=RankResponse)
def post_rank(body: RankRequest, config: Settings, snap: CurrentSnapshot) -> RankResponse:
    """A given list of trainings ordered for one employee (by id, or by attributes)."""
    if (body.employee_id is None) == (body.attributes is None):
        from fastapi import HTTPException

        raise HTTPException(422, "give exactly one of employee_id and attributes")
    contract = check_attributes(snap, body.attributes or {}, config)
    return rank_trainings(
        snap,
        body.training_ids,
        contract,
        employee_id=body.employee_id,
        attributes=body.attributes,
        explain=body.explain,
    )
