"""Per training: the trainings close to it, and the employees likely to take it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from shared.api.dependencies import Cache, CurrentSnapshot, Settings, check_n
from shared.api.http import cached
from shared.api.routers.recommendations import query_filters
from shared.api.schemas import (
    CACHED_GET,
    EmployeeFilterQuery,
    FilterQuery,
    SimilarTrainings,
    TrainingId,
)
from shared.audience import TrainingAudience, audience
from shared.serving import similar_trainings

router = APIRouter(tags=["trainings"])


@router.get(
    "/trainings/{training_id}/similar", response_model=SimilarTrainings, responses=CACHED_GET
)
def get_similar(
    request: Request,
    training_id: TrainingId,
    config: Settings,
    snap: CurrentSnapshot,
    n: Annotated[int, Query(ge=1)] = 10,
    filter: FilterQuery = (),
) -> Response:
    """Trainings closest to a training in the model's space; a new one gets neighbours too."""
    check_n(n, config)
    answer = similar_trainings(snap, training_id, n, filters=query_filters(filter))
    return cached(request, answer.model_dump_json().encode(), config.serving.refresh_seconds)


@router.get(
    "/trainings/{training_id}/audience", response_model=TrainingAudience, responses=CACHED_GET
)
def get_audience(
    request: Request,
    training_id: TrainingId,
    config: Settings,
    cache: Cache,
    snap: CurrentSnapshot,
    n: Annotated[int, Query(ge=1)] = 10,
    filter: EmployeeFilterQuery = (),
) -> Response:
    """The employees most likely to take a training, with a reason each; those who took
    it or dismissed it are left out. A training added since the last retrain has an
    audience too, from its attributes. Filters keep employees with one of the values of
    an attribute: `filter=ou:finance&filter=grade:G3,G4`.

    Personal data: employee ids (no names), for the L&D team that invites."""
    check_n(n, config)
    answer = audience(
        snap,
        training_id,
        n,
        filters=query_filters(filter),
        dismissed_by=cache.dismissed_by(training_id),
    )
    return cached(request, answer.model_dump_json().encode(), config.serving.refresh_seconds)
